//! The `helm template` stand-in (`scripts/helm`, on helm-python-sdk): the same command line
//! and output as the real helm for what tidemark uses, and clear refusals for the rest.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde_yaml::Value;
use tidemark_e2e::{
    HttpServer, Run, helm_in, helm_standin, index_yaml, package_metrics_lite, run_ok,
    workspace_root,
};

fn fleet_example() -> PathBuf {
    workspace_root().join("fleet-repo-example")
}

/// `helm ARGS` in the example fleet repo (so that `charts/...` and `values/...` resolve).
fn helm(args: &[&str]) -> Result<Run> {
    helm_in(args, &fleet_example())
}

/// `helm ARGS` that must succeed with nothing on stderr; returns stdout.
fn helm_ok(args: &[&str]) -> Result<String> {
    let run = helm(args)?;
    assert_eq!(run.code, Some(0), "helm {args:?}: {run:?}");
    assert_eq!(run.stderr, "", "helm {args:?}");
    Ok(run.stdout)
}

/// `helm ARGS` that must fail like helm does: exit 1, `Error: ` on stderr, nothing on stdout.
/// Returns stderr.
fn helm_err(args: &[&str], dir: &Path) -> Result<String> {
    let run = helm_in(args, dir)?;
    assert_eq!(run.code, Some(1), "helm {args:?}: {run:?}");
    assert_eq!(run.stdout, "", "helm {args:?}");
    assert!(
        run.stderr.starts_with("Error: "),
        "helm {args:?}: {}",
        run.stderr
    );
    Ok(run.stderr)
}

/// One document of `helm template`'s output.
#[derive(Debug)]
struct Doc {
    /// The template it came from (`# Source:`).
    source: String,
    yaml: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.yaml["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.yaml["metadata"]["name"].as_str().unwrap_or_default()
    }
    fn namespace(&self) -> Option<&str> {
        self.yaml["metadata"]["namespace"].as_str()
    }
}

/// Splits `helm template` output the way it is written: every document is
/// `---\n# Source: PATH\nYAML\n`, nothing else.
fn docs(stdout: &str) -> Result<Vec<Doc>> {
    assert!(
        stdout.ends_with('\n') && !stdout.ends_with("\n\n"),
        "{stdout:?}"
    );
    let body = stdout
        .strip_prefix("---\n")
        .with_context(|| format!("output does not start with ---: {stdout:?}"))?;
    body.split("\n---\n")
        .map(|chunk| {
            let (first, yaml) = chunk.split_once('\n').unwrap_or((chunk, ""));
            let source = first
                .strip_prefix("# Source: ")
                .with_context(|| format!("document without # Source: {chunk:?}"))?;
            Ok(Doc {
                source: source.to_string(),
                yaml: serde_yaml::from_str(yaml).with_context(|| format!("in {source}"))?,
            })
        })
        .collect()
}

fn kinds(docs: &[Doc]) -> Vec<&str> {
    docs.iter().map(Doc::kind).collect()
}

fn find<'a>(docs: &'a [Doc], kind: &str) -> &'a Doc {
    let found = docs.iter().find(|d| d.kind() == kind);
    assert!(found.is_some(), "no {kind} in {:?}", kinds(docs));
    found.unwrap_or(&docs[0])
}

/// A YAML document embedded as a string (a ConfigMap's data entry).
fn embedded(doc: &Doc, key: &str) -> Result<Value> {
    let text = doc.yaml["data"][key].as_str().context("no such data key")?;
    Ok(serde_yaml::from_str(text)?)
}

fn write(dir: &Path, path: &str, text: &str) -> Result<()> {
    let path = dir.join(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)?;
    Ok(())
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn renders_metrics_lite_with_values_files_and_namespace_in_install_order() -> Result<()> {
    let out = helm_ok(&[
        "template",
        "metrics-lite",
        "charts/metrics-lite",
        "--namespace",
        "monitoring",
        "-f",
        "values/metrics-lite/common.yaml",
        "-f",
        "values/metrics-lite/prod.yaml",
    ])?;
    let docs = docs(&out)?;
    // Helm's InstallOrder: PodDisruptionBudget, ServiceAccount, ConfigMap, Service, Deployment.
    assert_eq!(
        kinds(&docs),
        [
            "PodDisruptionBudget",
            "ServiceAccount",
            "ConfigMap",
            "Service",
            "Deployment"
        ]
    );
    let sources: Vec<&str> = docs.iter().map(|d| d.source.as_str()).collect();
    assert_eq!(
        sources,
        [
            "metrics-lite/templates/poddisruptionbudget.yaml",
            "metrics-lite/templates/serviceaccount.yaml",
            "metrics-lite/templates/configmap.yaml",
            "metrics-lite/templates/service.yaml",
            "metrics-lite/templates/deployment.yaml",
        ]
    );
    for doc in &docs {
        assert_eq!(doc.name(), "metrics-lite", "{doc:?}");
        assert_eq!(doc.namespace(), Some("monitoring"), "{doc:?}");
        let labels = &doc.yaml["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/instance"], "metrics-lite");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm");
        assert_eq!(labels["helm.sh/chart"], "metrics-lite-0.3.0");
    }

    let deployment = &find(&docs, "Deployment").yaml;
    assert_eq!(deployment["spec"]["replicas"], 3, "prod.yaml sets 3");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"], "registry.example.com/metrics-lite:1.4.0",
        "the tag defaults to the chart's appVersion"
    );
    assert_eq!(container["resources"]["requests"]["cpu"], "200m");
    assert_eq!(container["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(pod["serviceAccountName"], "metrics-lite");
    let checksum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(checksum.len(), 64, "{checksum}");

    let config = embedded(find(&docs, "ConfigMap"), "metrics-lite.yaml")?;
    assert_eq!(config["retention"], "24h", "prod.yaml over common.yaml");
    assert_eq!(config["scrapeInterval"], "15s");
    assert_eq!(config["logLevel"], "info", "the chart's default");
    assert_eq!(
        find(&docs, "PodDisruptionBudget").yaml["spec"]["maxUnavailable"],
        1
    );
    assert_eq!(
        find(&docs, "Service").yaml["spec"]["ports"][0]["port"],
        8080
    );
    Ok(())
}

#[test]
fn renders_node_agent_with_cluster_scoped_rbac_and_interspersed_flags() -> Result<()> {
    // Flags before, between and after the positionals, in every syntax cobra accepts.
    let out = helm_ok(&[
        "-n",
        "kube-system",
        "template",
        "--values=values/node-agent/common.yaml",
        "node-agent",
        "-fvalues/node-agent/prod.yaml",
        "charts/node-agent",
        "--include-crds=false",
    ])?;
    let docs = docs(&out)?;
    assert_eq!(
        kinds(&docs),
        [
            "ServiceAccount",
            "ConfigMap",
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet"
        ]
    );
    // Both RBAC objects come from one file, split into two documents.
    for doc in &docs[2..4] {
        assert_eq!(doc.source, "node-agent/templates/rbac.yaml");
        assert_eq!(doc.name(), "kube-system-node-agent");
        assert_eq!(doc.namespace(), None, "cluster-scoped");
    }
    let binding = &find(&docs, "ClusterRoleBinding").yaml;
    assert_eq!(binding["subjects"][0]["name"], "node-agent");
    assert_eq!(binding["subjects"][0]["namespace"], "kube-system");

    let daemonset = find(&docs, "DaemonSet");
    assert_eq!(daemonset.namespace(), Some("kube-system"));
    let spec = &daemonset.yaml["spec"];
    assert_eq!(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 3);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    assert_eq!(
        pod["containers"][0]["resources"]["limits"]["memory"],
        "192Mi"
    );
    let config = embedded(find(&docs, "ConfigMap"), "node-agent.yaml")?;
    assert_eq!(config["mode"], "metrics");
    assert_eq!(config["interval"], "15s");
    assert_eq!(
        config["outputs"][0]["url"],
        "http://metrics-lite.monitoring.svc:8080/ingest"
    );
    assert_eq!(
        config["collectors"][3], "network",
        "the chart's default list"
    );

    // Without a release name and namespace: helm's "release-name" and "default".
    let docs = self::docs(&helm_ok(&["template", "charts/node-agent"])?)?;
    let daemonset = find(&docs, "DaemonSet");
    assert_eq!(daemonset.name(), "release-name");
    assert_eq!(daemonset.namespace(), Some("default"));
    assert_eq!(find(&docs, "ClusterRole").name(), "default-release-name");
    Ok(())
}

#[test]
fn values_files_merge_in_order_and_null_deletes_a_chart_default() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write(
        dir.path(),
        "first.yaml",
        "replicas: 2\nconfig:\n  logLevel: debug\n  externalLabels: {team: a}\n",
    )?;
    write(
        dir.path(),
        "second.yaml",
        "replicas: 4\nconfig:\n  retention: null\n  externalLabels: {tier: b}\nserviceAccount: {create: false}\n",
    )?;
    let chart = path_str(&fleet_example().join("charts/metrics-lite"));
    let first = path_str(&dir.path().join("first.yaml"));
    let second = path_str(&dir.path().join("second.yaml"));

    let docs = docs(&helm_ok(&[
        "template", "m", &chart, "-f", &first, "-f", &second,
    ])?)?;
    assert_eq!(
        find(&docs, "Deployment").yaml["spec"]["replicas"],
        4,
        "the later file wins"
    );
    let config = embedded(find(&docs, "ConfigMap"), "metrics-lite.yaml")?;
    assert_eq!(config["logLevel"], "debug", "from the first file");
    assert_eq!(config["scrapeInterval"], "30s", "the chart's default");
    assert!(
        config.get("retention").is_none(),
        "null deletes the chart's default: {config:?}"
    );
    assert_eq!(
        config["externalLabels"],
        serde_yaml::from_str::<Value>("{team: a, tier: b}")?,
        "maps are merged"
    );
    assert!(
        !kinds(&docs).contains(&"ServiceAccount"),
        "serviceAccount.create: false"
    );
    assert_eq!(
        find(&docs, "Deployment").yaml["spec"]["template"]["spec"]["serviceAccountName"],
        "default"
    );

    // The other way round, as one comma-separated -f: the first file now wins.
    let both = format!("{second},{first}");
    let docs = self::docs(&helm_ok(&["template", "m", &chart, "-f", &both])?)?;
    assert_eq!(find(&docs, "Deployment").yaml["spec"]["replicas"], 2);
    Ok(())
}

/// A chart with a CRD, a custom resource, a hook, NOTES.txt, a partial and a template that
/// renders to nothing.
fn widgets_chart(dir: &Path) -> Result<()> {
    write(
        dir,
        "Chart.yaml",
        "apiVersion: v2\nname: widgets\nversion: 1.0.0\n",
    )?;
    write(dir, "values.yaml", "size: 3\nextra: false\n")?;
    write(
        dir,
        "crds/widgets.yaml",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  \
         names: {kind: Widget, plural: widgets}\n  scope: Namespaced\n",
    )?;
    write(dir, "crds/README.md", "not a manifest\n")?;
    write(
        dir,
        "templates/_helpers.tpl",
        "{{- define \"widgets.name\" -}}{{ .Release.Name }}-widget{{- end -}}\n",
    )?;
    write(
        dir,
        "templates/widget.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {{ include \"widgets.name\" . }}\n\
         spec:\n  size: {{ .Values.size }}\n",
    )?;
    write(
        dir,
        "templates/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  size: {{ .Values.size | quote }}\n",
    )?;
    write(
        dir,
        "templates/hook.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-migrate\n  \
         annotations:\n    helm.sh/hook: pre-install,pre-upgrade\n",
    )?;
    write(
        dir,
        "templates/extra.yaml",
        "{{- if .Values.extra }}\napiVersion: v1\nkind: Secret\nmetadata:\n  name: extra\n{{- end }}\n",
    )?;
    write(
        dir,
        "templates/NOTES.txt",
        "Installed {{ .Release.Name }}.\n",
    )?;
    Ok(())
}

#[test]
fn crds_come_first_only_with_include_crds_and_hooks_last() -> Result<()> {
    let dir = tempfile::tempdir()?;
    widgets_chart(dir.path())?;
    let chart = path_str(dir.path());

    let out = helm_ok(&["template", "w", &chart, "-n", "apps"])?;
    let docs = docs(&out)?;
    // ConfigMap by InstallOrder, then the unknown kind Widget, then the hook.
    assert_eq!(kinds(&docs), ["ConfigMap", "Widget", "Job"]);
    assert_eq!(docs[1].source, "widgets/templates/widget.yaml");
    assert_eq!(docs[1].name(), "w-widget");
    assert_eq!(docs[1].yaml["spec"]["size"], 3);
    assert_eq!(docs[2].source, "widgets/templates/hook.yaml");
    assert!(!out.contains("Installed"), "NOTES.txt is not a manifest");

    let out = helm_ok(&["template", "w", &chart, "-n", "apps", "--include-crds"])?;
    assert!(
        out.starts_with("---\n# Source: widgets/crds/widgets.yaml\n"),
        "{out}"
    );
    let docs = self::docs(&out)?;
    assert_eq!(
        kinds(&docs),
        ["CustomResourceDefinition", "ConfigMap", "Widget", "Job"]
    );
    assert_eq!(docs[0].name(), "widgets.example.com");
    assert!(
        !out.contains("not a manifest"),
        "only .yaml/.yml/.json in crds/"
    );

    // A template enabled by a value takes its place in the order (Secret before ConfigMap).
    let values = dir.path().join("extra.yaml");
    std::fs::write(&values, "extra: true\n")?;
    let out = helm_ok(&["template", "w", &chart, "-f", &path_str(&values)])?;
    let docs = self::docs(&out)?;
    assert_eq!(kinds(&docs), ["Secret", "ConfigMap", "Widget", "Job"]);
    Ok(())
}

fn chart_label(docs: &[Doc]) -> &str {
    find(docs, "Deployment").yaml["metadata"]["labels"]["helm.sh/chart"]
        .as_str()
        .unwrap_or_default()
}

#[test]
fn renders_a_chart_from_an_http_chart_repository() -> Result<()> {
    let work = tempfile::tempdir()?;
    let d030 = package_metrics_lite(work.path(), "0.3.0")?;
    let d040 = package_metrics_lite(work.path(), "0.4.0")?;
    let index = work.path().join("repo/index.yaml");
    std::fs::write(&index, index_yaml(&d030, &d040))?;
    let server = HttpServer::start(&work.path().join("repo"))?;
    let url = server.url();
    let values = work.path().join("values.yaml");
    std::fs::write(&values, "replicas: 5\n")?;
    let values = path_str(&values);
    // The working directory has no `metrics-lite`: the name means the repository's chart.
    let helm = |args: &[&str]| helm_in(args, work.path());

    let run = helm(&["template", "m", "metrics-lite", "--repo", &url, "-n", "obs"])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let docs = docs(&run.stdout)?;
    assert_eq!(
        chart_label(&docs),
        "metrics-lite-0.4.0",
        "latest stable version"
    );
    assert_eq!(find(&docs, "Deployment").namespace(), Some("obs"));

    let run = helm(&[
        "template",
        "m",
        "metrics-lite",
        "--repo",
        &url,
        "--version",
        "0.3.0",
        "-f",
        &values,
    ])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let docs = self::docs(&run.stdout)?;
    assert_eq!(chart_label(&docs), "metrics-lite-0.3.0");
    assert_eq!(find(&docs, "Deployment").yaml["spec"]["replicas"], 5);
    assert_eq!(
        docs[0].source, "metrics-lite/templates/poddisruptionbudget.yaml",
        "same sources as a local chart"
    );

    let err = helm_err(
        &[
            "template",
            "m",
            "metrics-lite",
            "--repo",
            &url,
            "--version",
            "9.9.9",
        ],
        work.path(),
    )?;
    assert!(
        err.contains("chart \"metrics-lite\" version \"9.9.9\" not found in"),
        "{err}"
    );
    let err = helm_err(&["template", "m", "other", "--repo", &url], work.path())?;
    assert!(err.contains("chart \"other\" not found in"), "{err}");
    let err = helm_err(
        &[
            "template",
            "m",
            "metrics-lite",
            "--repo",
            &format!("{url}/nowhere"),
        ],
        work.path(),
    )?;
    assert!(err.contains("is not a valid chart repository"), "{err}");
    let err = helm_err(
        &[
            "template",
            "m",
            "metrics-lite",
            "--repo",
            "ftp://127.0.0.1/x",
        ],
        work.path(),
    )?;
    assert!(err.contains("ftp://127.0.0.1/x"), "{err}");

    // An archive that does not match its index digest is refused.
    std::fs::write(&index, index_yaml(&"0".repeat(64), &d040))?;
    let err = helm_err(
        &[
            "template",
            "m",
            "metrics-lite",
            "--repo",
            &url,
            "--version",
            "0.3.0",
        ],
        work.path(),
    )?;
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(
        err.contains(&d030),
        "names the archive's real digest: {err}"
    );
    Ok(())
}

/// A chart whose one template is `template` (in `DIR/broken`).
fn broken_chart(dir: &Path, template: &str) -> Result<String> {
    let chart = dir.join("broken");
    write(
        &chart,
        "Chart.yaml",
        "apiVersion: v2\nname: broken\nversion: 0.1.0\n",
    )?;
    write(&chart, "templates/bad.yaml", template)?;
    Ok(path_str(&chart))
}

#[test]
fn render_errors_exit_1_with_the_engine_message_and_no_output() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();

    let chart = broken_chart(
        d,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.missing.deeper }}\n",
    )?;
    let err = helm_err(&["template", "x", &chart], d)?;
    assert!(err.contains("broken/templates/bad.yaml"), "{err}");
    assert!(err.contains("nil pointer"), "{err}");

    let chart = broken_chart(
        d,
        "{{ required \"image.tag is required\" .Values.image }}\n",
    )?;
    let err = helm_err(&["template", "x", &chart], d)?;
    assert!(err.contains("image.tag is required"), "{err}");

    let chart = broken_chart(d, "{{ if }}\n")?;
    let err = helm_err(&["template", "x", &chart], d)?;
    assert!(err.contains("broken/templates/bad.yaml"), "{err}");

    // Rendered, but not YAML: helm refuses it too.
    let chart = broken_chart(d, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [x\n")?;
    let err = helm_err(&["template", "x", &chart], d)?;
    assert!(
        err.starts_with("Error: YAML parse error on broken/templates/bad.yaml"),
        "{err}"
    );

    let err = helm_err(&["template", "x", "./no-such-chart"], d)?;
    assert_eq!(err, "Error: path \"./no-such-chart\" not found\n");
    let err = helm_err(&["template", "x", "no-such-chart"], d)?;
    assert!(err.contains("\"no-such-chart\" not found"), "{err}");
    let err = helm_err(&["template", "x", &chart, "-f", "missing.yaml"], d)?;
    assert!(err.contains("missing.yaml"), "{err}");
    let err = helm_err(&["template", "Bad_Name", &chart], d)?;
    assert!(err.contains("release name \"Bad_Name\""), "{err}");

    // --version with a local chart must match the chart.
    let metrics = path_str(&fleet_example().join("charts/metrics-lite"));
    let err = helm_err(&["template", "x", &metrics, "--version", "0.2.0"], d)?;
    assert!(err.contains("0.3.0") && err.contains("0.2.0"), "{err}");
    let run = helm_in(&["template", "x", &metrics, "--version", "0.3.0"], d)?;
    assert_eq!(run.code, Some(0), "{run:?}");
    Ok(())
}

#[test]
fn unsupported_arguments_are_refused_by_name() -> Result<()> {
    let chart = "charts/metrics-lite";
    let cases: &[(&[&str], &str)] = &[
        (&["template", "x", chart, "--set", "a=b"], "--set"),
        (&["template", "x", chart, "--set=a=b"], "--set"),
        (
            &["template", "x", chart, "--post-renderer", "x"],
            "--post-renderer",
        ),
        (
            &["template", "--kube-version", "1.30", "x", chart],
            "--kube-version",
        ),
        (&["template", "x", chart, "--skip-tests"], "--skip-tests"),
        (&["template", "x", chart, "-x"], "-x"),
        (&["install", "x", chart], "install"),
        (&["version", "--repo", "http://127.0.0.1:1"], "--repo"),
    ];
    for (args, named) in cases {
        let err = helm_err(args, &fleet_example())?;
        assert!(
            err.contains(&format!("\"{named}\"")),
            "helm {args:?}: {err}"
        );
    }
    let err = helm_err(&["template"], &fleet_example())?;
    assert!(err.contains("requires at least 1 argument"), "{err}");
    let err = helm_err(&["template", "a", "b", "c"], &fleet_example())?;
    assert!(err.contains("unexpected arguments: c"), "{err}");
    Ok(())
}

#[test]
fn version_works_through_a_symlink() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let link = dir.path().join("helm");
    std::os::unix::fs::symlink(helm_standin(), &link)?;
    let short = run_ok(Command::new(&link).args(["version", "--short"]))?;
    let version = short
        .trim_end()
        .strip_suffix("-standin")
        .unwrap_or_default();
    let parts: Vec<&str> = version.trim_start_matches('v').split('.').collect();
    assert!(
        short.starts_with('v')
            && parts.len() == 3
            && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "{short:?}"
    );
    let long = helm_ok(&["version"])?;
    assert_eq!(
        long,
        format!(
            "version.BuildInfo{{Version:\"{version}-standin\", GitCommit:\"\", GitTreeState:\"\", GoVersion:\"\"}}\n"
        )
    );
    Ok(())
}
