//! What tidemark relies on from `helm template`, checked against the official helm binary the
//! tests use (Helm 4, `tidemark_e2e::helm_bin`): the output format (`---`, `# Source:`, one
//! object per document, Helm's install order), the namespace and release name, one values file
//! over the chart's defaults (tidemark merges the component's values itself and passes one
//! `-f`), CRDs only with `--include-crds` and then first, hooks rendered with their annotation,
//! charts from a classic repository over HTTP, and render errors (exit 1, `Error: ...` on
//! stderr naming the template, nothing on stdout).

use std::borrow::Borrow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_yaml::Value;
use tidemark_e2e::charts;
use tidemark_e2e::{HttpServer, Run, helm_in, index_yaml, package_metrics_lite, workspace_root};

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

/// `helm ARGS` that must fail: exit 1, an `Error: ` line on stderr, nothing on stdout (so a
/// failed render never yields a partial manifest). Returns stderr.
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

fn kinds<D: Borrow<Doc>>(docs: &[D]) -> Vec<&str> {
    docs.iter().map(|d| d.borrow().kind()).collect()
}

fn find<'a, D: Borrow<Doc>>(docs: &'a [D], kind: &str) -> &'a Doc {
    let found = docs.iter().map(Borrow::borrow).find(|d| d.kind() == kind);
    assert!(found.is_some(), "no {kind} in {:?}", kinds(docs));
    found.unwrap_or(docs[0].borrow())
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
/// `helm template RELEASE CHART --namespace NS -f VALUES --include-crds`: the argument vector
/// tidemark runs (`agent/src/component/helm.rs`), for a local chart.
fn tidemark_argv<'a>(
    release: &'a str,
    chart: &'a str,
    ns: &'a str,
    values: &'a str,
) -> Vec<&'a str> {
    vec![
        "template",
        release,
        chart,
        "--namespace",
        ns,
        "-f",
        values,
        "--include-crds",
    ]
}

#[test]
fn renders_metrics_lite_with_a_values_file_and_namespace_in_install_order() -> Result<()> {
    let out = helm_ok(&tidemark_argv(
        "metrics-lite",
        "charts/metrics-lite",
        "monitoring",
        "values/metrics-lite/prod.yaml",
    ))?;
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
    assert_eq!(config["retention"], "24h", "prod.yaml over the chart's 2h");
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
fn renders_node_agent_with_cluster_scoped_rbac() -> Result<()> {
    // As tidemark passes them: the set's file, the cluster's file and inline values merged
    // into one file.
    let dir = tempfile::tempdir()?;
    let common = std::fs::read_to_string(fleet_example().join("values/node-agent/common.yaml"))?;
    let prod = std::fs::read_to_string(fleet_example().join("values/node-agent/prod.yaml"))?;
    write(dir.path(), "values.yaml", &format!("{common}{prod}"))?;
    let values = path_str(&dir.path().join("values.yaml"));
    let out = helm_ok(&tidemark_argv(
        "node-agent",
        "charts/node-agent",
        "kube-system",
        &values,
    ))?;
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
    Ok(())
}

#[test]
fn the_values_file_is_merged_over_the_chart_defaults_and_null_deletes_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write(
        dir.path(),
        "values.yaml",
        "replicas: 4\nconfig:\n  logLevel: debug\n  retention: null\n  externalLabels: {team: a}\n\
         resources: {requests: {cpu: 10m}}\nserviceAccount: {create: false}\n",
    )?;
    let chart = path_str(&fleet_example().join("charts/metrics-lite"));
    let values = path_str(&dir.path().join("values.yaml"));

    let docs = docs(&helm_ok(&tidemark_argv("m", &chart, "default", &values))?)?;
    let deployment = &find(&docs, "Deployment").yaml;
    assert_eq!(deployment["spec"]["replicas"], 4, "the file over the chart");
    let config = embedded(find(&docs, "ConfigMap"), "metrics-lite.yaml")?;
    assert_eq!(config["logLevel"], "debug", "from the file");
    assert_eq!(config["scrapeInterval"], "30s", "the chart's default");
    assert!(
        config.get("retention").is_none(),
        "null deletes the chart's default: {config:?}"
    );
    assert_eq!(
        config["externalLabels"],
        serde_yaml::from_str::<Value>("{team: a}")?
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["resources"]["requests"],
        serde_yaml::from_str::<Value>("{cpu: 10m, memory: 64Mi}")?,
        "maps are merged key by key with the chart's"
    );
    assert!(
        !kinds(&docs).contains(&"ServiceAccount"),
        "serviceAccount.create: false"
    );
    assert_eq!(pod["serviceAccountName"], "default");
    Ok(())
}

/// The `helm.sh/hook` annotation of a document.
fn hook_of(doc: &Doc) -> Option<&str> {
    doc.yaml["metadata"]["annotations"]["helm.sh/hook"].as_str()
}

/// The documents split into ordinary objects and hooks, each in output order.
fn split_hooks(docs: &[Doc]) -> (Vec<&Doc>, Vec<&Doc>) {
    docs.iter().partition(|d| hook_of(d).is_none())
}

#[test]
fn crds_come_first_only_with_include_crds_and_hooks_are_rendered_with_their_annotations()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    charts::HOOKED_WIDGETS.write_to(dir.path())?;
    let chart = path_str(dir.path());

    let out = helm_ok(&["template", "w", &chart, "--namespace", "apps"])?;
    let docs = docs(&out)?;
    // The ordinary objects by InstallOrder (ConfigMap, then the unknown kind Widget), then
    // the hooks (in an order of helm's own: tidemark orders hooks by their weight itself).
    let (ordinary, hooks) = split_hooks(&docs);
    assert_eq!(kinds(&ordinary), ["ConfigMap", "Widget"]);
    assert_eq!(ordinary[1].source, "widgets/templates/widget.yaml");
    assert_eq!(ordinary[1].name(), "w-widget");
    assert_eq!(ordinary[1].yaml["spec"]["size"], 3);
    let first_hook = docs.iter().position(|d| hook_of(d).is_some());
    assert!(
        first_hook.is_some_and(|i| docs[i..].iter().all(|d| hook_of(d).is_some())),
        "hooks come after the ordinary objects: {:?}",
        kinds(&docs)
    );
    // Hooks are in the output, recognisable by their annotations (tidemark reads them).
    let hook = find(&hooks, "Job");
    assert_eq!(hook.source, "widgets/templates/hook.yaml");
    assert_eq!(hook_of(hook), Some("pre-install,pre-upgrade"));
    assert_eq!(
        hook.yaml["metadata"]["annotations"]["helm.sh/hook-weight"],
        "-5"
    );
    let test = find(&hooks, "Pod");
    assert_eq!(test.source, "widgets/templates/tests/test.yaml");
    assert_eq!(hook_of(test), Some("test"));
    assert_eq!(hooks.len(), 2);
    assert!(!out.contains("Installed"), "NOTES.txt is not a manifest");
    assert!(
        !out.contains("widgets.example.com"),
        "no CRD without --include-crds"
    );

    let values = dir.path().join("none.yaml");
    std::fs::write(&values, "{}\n")?;
    let out = helm_ok(&tidemark_argv("w", &chart, "apps", &path_str(&values)))?;
    assert!(
        out.starts_with("---\n# Source: widgets/crds/widgets.yaml\n"),
        "{out}"
    );
    let docs = self::docs(&out)?;
    let (ordinary, hooks) = split_hooks(&docs);
    assert_eq!(
        kinds(&ordinary),
        ["CustomResourceDefinition", "ConfigMap", "Widget"]
    );
    assert_eq!(hooks.len(), 2);
    assert_eq!(docs[0].name(), "widgets.example.com");
    assert!(
        !out.contains("not a manifest"),
        "only .yaml/.yml/.json in crds/"
    );

    // A template enabled by a value takes its place in the order (Secret before ConfigMap).
    std::fs::write(&values, "extra: true\n")?;
    let out = helm_ok(&tidemark_argv("w", &chart, "apps", &path_str(&values)))?;
    let docs = self::docs(&out)?;
    let (ordinary, _) = split_hooks(&docs);
    assert_eq!(
        kinds(&ordinary),
        ["CustomResourceDefinition", "Secret", "ConfigMap", "Widget"]
    );
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

    // `NAME --namespace NS [--version V] --repo URL -f VALUES --include-crds`, as tidemark runs it.
    let run = helm(&[
        "template",
        "m",
        "metrics-lite",
        "--namespace",
        "obs",
        "--repo",
        &url,
        "-f",
        &values,
        "--include-crds",
    ])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let docs = docs(&run.stdout)?;
    assert_eq!(
        chart_label(&docs),
        "metrics-lite-0.4.0",
        "latest stable version, never the prerelease"
    );
    assert_eq!(find(&docs, "Deployment").namespace(), Some("obs"));

    let run = helm(&[
        "template",
        "m",
        "metrics-lite",
        "--namespace",
        "obs",
        "--version",
        "0.3.0",
        "--repo",
        &url,
        "-f",
        &values,
        "--include-crds",
    ])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let docs = self::docs(&run.stdout)?;
    assert_eq!(chart_label(&docs), "metrics-lite-0.3.0");
    assert_eq!(find(&docs, "Deployment").yaml["spec"]["replicas"], 5);
    assert_eq!(
        docs[0].source, "metrics-lite/templates/poddisruptionbudget.yaml",
        "same sources as a local chart"
    );

    // Errors tidemark puts into the component's message.
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
    assert!(err.contains("404"), "{err}");
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
    let values = d.join("values.yaml");
    std::fs::write(&values, "{}\n")?;
    let values = path_str(&values);
    let template = |chart: &str| helm_err(&tidemark_argv("x", chart, "default", &values), d);

    let chart = broken_chart(
        d,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.missing.deeper }}\n",
    )?;
    let err = template(&chart)?;
    assert!(err.contains("broken/templates/bad.yaml"), "{err}");
    assert!(err.contains("nil pointer"), "{err}");

    let chart = broken_chart(
        d,
        "{{ required \"image.tag is required\" .Values.image }}\n",
    )?;
    let err = template(&chart)?;
    assert!(err.contains("image.tag is required"), "{err}");

    let chart = broken_chart(d, "{{ if }}\n")?;
    let err = template(&chart)?;
    assert!(err.contains("broken/templates/bad.yaml"), "{err}");

    // Rendered, but not YAML: helm refuses it too.
    let chart = broken_chart(d, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [x\n")?;
    let err = template(&chart)?;
    assert!(
        err.starts_with("Error: YAML parse error on broken/templates/bad.yaml"),
        "{err}"
    );

    let err = template("./no-such-chart")?;
    assert!(
        err.starts_with("Error: path \"./no-such-chart\" not found\n"),
        "{err}"
    );
    let err = helm_err(&tidemark_argv("x", &chart, "default", "missing.yaml"), d)?;
    assert!(err.contains("missing.yaml"), "{err}");
    Ok(())
}
