//! Running tidemark as `deploy/` runs it: the kustomize manifests and the chart, applied
//! with kubectl to a sim; the RBAC they grant; the metrics the dashboard and the alerts
//! query, scraped from a running agent; git credentials from a file that is rotated under
//! a running agent (a Kubernetes Secret mounted as a file).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;
use tidemark_e2e::{
    GitHttpServer, Pass, SimProcess, WorkRepo, agent_log, agent_metrics_addr, charts, copy_dir,
    fleet_yaml, helm_bin, helm_wrapper, http_get, sim_manifest, spawn_agent_with, status_record,
    tidemark_in, wait_until, workspace_root,
};

/// Every document of a multi-document YAML stream (empty ones dropped).
fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// `kubectl kustomize DIR` (kubectl's built-in kustomize), as YAML.
fn kustomize(dir: &str) -> Result<String> {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(workspace_root().join(dir))
        .output()?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize {dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `helm template tidemark deploy/chart` with the official helm and `--set` values.
fn chart(set: &[&str]) -> Result<String> {
    let mut cmd = Command::new(helm_bin()?);
    cmd.args(["template", "tidemark"])
        .arg(workspace_root().join("deploy/chart"))
        .args(["--namespace", "tidemark-system"]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name}"))
}

/// The rules of every Role and ClusterRole, by kind/namespace/name.
fn roles(docs: &[Value]) -> BTreeMap<String, Value> {
    docs.iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .map(|d| {
            let ns = d["metadata"]["namespace"].as_str().unwrap_or("");
            let name = d["metadata"]["name"].as_str().unwrap_or("");
            (
                format!("{}/{ns}/{name}", d["kind"].as_str().unwrap_or("")),
                d["rules"].clone(),
            )
        })
        .collect()
}

/// What the manifests must never grant: a `*` anywhere, `escalate`, `bind` or
/// `impersonate`, aggregated roles, and Secrets anywhere but a Role in the agent's own
/// namespace. Returns every violation.
fn rbac_violations(docs: &[Value]) -> Vec<String> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        let kind = d["kind"].as_str().unwrap_or_default();
        let ns = d["metadata"]["namespace"].as_str().unwrap_or_default();
        let who = format!("{kind} {ns}/{}", d["metadata"]["name"]);
        if !d["aggregationRule"].is_null() {
            out.push(format!("{who}: aggregates other roles"));
        }
        let Some(rules) = d["rules"].as_array() else {
            out.push(format!("{who}: no rules"));
            continue;
        };
        for rule in rules {
            for field in [
                "verbs",
                "resources",
                "apiGroups",
                "nonResourceURLs",
                "resourceNames",
            ] {
                if strings(&rule[field]).iter().any(|v| v.contains('*')) {
                    out.push(format!("{who}: `*` in {field}: {rule}"));
                }
            }
            for verb in strings(&rule["verbs"]) {
                if ["escalate", "bind", "impersonate"].contains(&verb.as_str()) {
                    out.push(format!("{who}: verb {verb}: {rule}"));
                }
            }
            let secrets = strings(&rule["resources"])
                .iter()
                .any(|r| r == "secrets" || r.starts_with("secrets/"));
            if secrets && !(kind == "Role" && ns == "tidemark-system") {
                out.push(format!(
                    "{who}: Secrets outside the agent's namespace: {rule}"
                ));
            }
        }
    }
    out
}

/// Writes `token` the way the kubelet updates a mounted Secret: the file is a symlink
/// through `..data`, which is swapped atomically to a new timestamped directory.
fn write_secret_volume(dir: &Path, generation: u32, token: &str) -> Result<()> {
    let version = format!("..{generation}");
    std::fs::create_dir_all(dir.join(&version))?;
    std::fs::write(dir.join(&version).join("password"), format!("{token}\n"))?;
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    if !dir.join("password").exists() {
        std::os::unix::fs::symlink("..data/password", dir.join("password"))?;
    }
    Ok(())
}

/// An installation token rotated in the mounted file is used from the next sync on: the
/// same agent process (no restart) is refused while it holds the old token, and follows
/// the fleet again once the file holds the new one.
#[test]
fn a_rotated_password_file_is_used_without_a_restart() -> Result<()> {
    let sim = SimProcess::start(&["--version", "1.29.8", "--node-groups", "general=1"])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    let capi = tidemark_e2e::CLUSTERAPI;
    repo.write(
        "clusters/sim.yaml",
        &sim_manifest(capi, "1.29.8", &[("general", "1.29.8")]),
    )?;
    let first = repo.commit("fleet")?;
    repo.tag_annotated("wave/canary", "HEAD")?;

    let work = tempfile::tempdir()?;
    // The server accepts exactly the token in its file, read on every request.
    let server_token = work.path().join("server-token");
    std::fs::write(&server_token, "token-1")?;
    let server = GitHttpServer::start(
        &repo.base_dir(),
        "x-access-token",
        &format!("@{}", server_token.display()),
    )?;
    let url = server.url(&repo.name());
    let secret = work.path().join("secret");
    write_secret_volume(&secret, 1, "token-1")?;
    let password_file = secret.join("password").display().to_string();

    let mut agent = spawn_agent_with(
        Path::new(&url),
        &sim,
        "a",
        work.path(),
        &["--git-password-file", &password_file],
    )?;
    let desired = |sim: &SimProcess| {
        status_record(sim)
            .ok()
            .and_then(|r| r.desired_revision)
            .unwrap_or_default()
    };
    wait_until(Duration::from_secs(30), "the first commit", || {
        desired(&sim) == first
    })?;

    // The token rotates on the server: the agent's old one is refused.
    std::fs::write(&server_token, "token-2")?;
    repo.write("README.md", "rotated\n")?;
    let second = repo.commit("a change after the rotation")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    wait_until(Duration::from_secs(30), "a refused sync", || {
        status_record(&sim).is_ok_and(|r| {
            r.message
                .is_some_and(|m| m.contains("authentication failed"))
        })
    })?;
    assert_eq!(desired(&sim), first);

    // The kubelet swaps the Secret's files: the same process uses the new token.
    write_secret_volume(&secret, 2, "token-2")?;
    wait_until(
        Duration::from_secs(30),
        "the commit after the rotation",
        || desired(&sim) == second,
    )?;
    assert!(
        agent.try_wait()?.is_none(),
        "the agent exited: {}",
        agent_log(work.path(), "a")
    );
    let log = agent_log(work.path(), "a");
    assert!(
        !log.contains("token-1") && !log.contains("token-2"),
        "a token reached the log:\n{log}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
    Ok(())
}

/// The ClusterRoles and Roles of the kustomize manifests and of the chart grant no `*`,
/// nothing that escalates, and nothing on Secrets (the agent reads its git credentials
/// from a mounted file); the check itself refuses each of those.
#[test]
fn rbac_grants_no_wildcard_and_no_secrets() -> Result<()> {
    let mut docs = documents(&kustomize("deploy/overlays/example-cluster")?)?;
    docs.extend(documents(&kustomize("deploy/base")?)?);
    docs.extend(documents(&chart(&[
        "repo=https://git.example.com/fleet.git",
        "selector=cluster=a",
        "rbac.clusterapi.enabled=true",
        "rbac.clusterapi.kubeconfigSecret=capi-management-kubeconfig",
        "rbac.drain.enabled=true",
    ])?)?);
    for file in [
        "deploy/components/drain/rbac.yaml",
        "deploy/components/clusterapi/rbac.yaml",
    ] {
        docs.extend(documents(&std::fs::read_to_string(
            workspace_root().join(file),
        )?)?);
    }
    // The management cluster's side of a managed workload cluster.
    docs.extend(documents(&kustomize("deploy/clusterapi-management")?)?);
    assert!(roles(&docs).len() >= 8, "{:?}", roles(&docs).keys());
    let violations = rbac_violations(&docs);
    assert!(violations.is_empty(), "{violations:#?}");

    // The check finds what it looks for.
    let bad = documents(
        "kind: ClusterRole
metadata: {name: a}
rules:
  - {apiGroups: [\"\"], resources: [secrets], verbs: [get]}
  - {apiGroups: [apps], resources: [\"*\"], verbs: [get]}
---
kind: Role
metadata: {name: b, namespace: default}
rules:
  - {apiGroups: [\"\"], resources: [secrets], verbs: [list]}
  - {apiGroups: [rbac.authorization.k8s.io], resources: [clusterroles], verbs: [escalate]}
---
kind: Role
metadata: {name: c, namespace: tidemark-system}
rules:
  - {apiGroups: [\"\"], resources: [secrets], verbs: [get]}
",
    )?;
    let found = rbac_violations(&bad);
    assert_eq!(found.len(), 4, "{found:#?}");
    Ok(())
}

/// `kubectl apply --server-side -k` of the example overlay succeeds against a sim, and what
/// it created is what the overlay says: two replicas electing one, the probes, the
/// security context, the credentials from a Secret file, the configuration from one
/// ConfigMap.
#[test]
fn the_kustomize_overlay_applies_server_side() -> Result<()> {
    let sim = SimProcess::start(&["--version", "1.30.4"])?;
    let overlay = workspace_root().join("deploy/overlays/example-cluster");
    let applied = sim.kubectl(&[
        "apply",
        "--server-side",
        "-k",
        &overlay.display().to_string(),
    ])?;
    assert!(
        applied.contains("deployment.apps/tidemark serverside-applied"),
        "{applied}"
    );
    // Applying again changes nothing and conflicts with nothing.
    sim.kubectl(&[
        "apply",
        "--server-side",
        "-k",
        &overlay.display().to_string(),
    ])?;

    let get = |args: &[&str]| -> Result<Value> {
        Ok(serde_json::from_str(
            &sim.kubectl(&[args, &["-o", "json"]].concat())?,
        )?)
    };
    let deploy = get(&["get", "deployment", "-n", "tidemark-system", "tidemark"])?;
    let spec = &deploy["spec"]["template"]["spec"];
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(spec["serviceAccountName"], "tidemark");
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let agent = &spec["containers"][0];
    assert_eq!(agent["image"], "ghcr.io/tidemark-dev/tidemark:0.1.0");
    assert_eq!(agent["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(agent["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        agent["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(agent["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(agent["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(agent["resources"]["requests"]["memory"], "32Mi");
    let env: BTreeMap<String, Value> = agent["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?.to_string(), e.clone())))
        .collect();
    assert_eq!(
        env["TIDEMARK_IDENTITY"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env["TIDEMARK_GIT_PASSWORD_FILE"]["value"],
        "/etc/tidemark/git/password"
    );
    let volumes = spec["volumes"].as_array().context("no volumes")?;
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "tidemark-git")
    );
    assert!(
        volumes
            .iter()
            .any(|v| v["name"] == "cache" && v["emptyDir"].is_object())
    );

    // The selector and the repo come from the one ConfigMap the pods read.
    let config = agent["envFrom"][0]["configMapRef"]["name"]
        .as_str()
        .context("no envFrom ConfigMap")?
        .to_string();
    let cm = get(&["get", "configmap", "-n", "tidemark-system", &config])?;
    assert_eq!(cm["data"]["TIDEMARK_SELECTOR"], "cluster=prod-eu-1");
    assert!(cm["data"]["TIDEMARK_REPO"].is_string());

    // The RBAC objects exist where they are needed: prod-eu-1 is managed from a management
    // cluster, so its agent reads one Secret here and no Cluster API kind.
    get(&["get", "clusterrole", "tidemark-agent"])?;
    get(&["get", "role", "-n", "default", "tidemark-events"])?;
    let secret_role = get(&[
        "get",
        "role",
        "-n",
        "tidemark-system",
        "tidemark-clusterapi-kubeconfig",
    ])?;
    assert_eq!(
        secret_role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["secrets"],
            "resourceNames": ["capi-management-kubeconfig"], "verbs": ["get"]}])
    );
    get(&[
        "get",
        "rolebinding",
        "-n",
        "tidemark-system",
        "tidemark-clusterapi-kubeconfig",
    ])?;
    assert!(
        sim.kubectl(&["get", "clusterrole", "tidemark-clusterapi"])
            .is_err()
    );
    Ok(())
}

/// The chart renders with the official helm, passes `helm lint`, applies server-side
/// against a sim, grants exactly what the kustomize manifests grant, and refuses to render
/// without a repo or a selector.
#[test]
fn the_chart_renders_lints_and_applies_like_the_kustomize_manifests() -> Result<()> {
    let set = [
        "repo=https://git.example.com/platform/fleet.git",
        "selector=cluster=prod-eu-1",
        "rbac.clusterapi.enabled=true",
        "image.tag=0.1.0",
        "rbac.drain.enabled=true",
        "rbac.clusterapi.kubeconfigSecret=capi-management-kubeconfig",
    ];
    let rendered = chart(&set)?;
    let docs = documents(&rendered)?;
    let lint = Command::new(helm_bin()?)
        .args(["lint", "--strict"])
        .arg(workspace_root().join("deploy/chart"))
        .args(["--set", set[0], "--set", set[1]])
        .output()?;
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );

    // The same RBAC as the overlay (which has the kubeconfig Secret's component).
    let kustomized = documents(&kustomize("deploy/overlays/example-cluster")?)?;
    let mut from_kustomize = roles(&kustomized);
    // The example overlay adds Ingresses to the components' default: compare with the base.
    from_kustomize.insert(
        "ClusterRole//tidemark-components".into(),
        roles(&documents(&kustomize("deploy/base")?)?)["ClusterRole//tidemark-components"].clone(),
    );
    // The drain component (not in the example overlay: prod-eu-1's provider drains) and the
    // self-managed clusters' Cluster API component (prod-eu-1's objects are elsewhere).
    for file in [
        "deploy/components/drain/rbac.yaml",
        "deploy/components/clusterapi/rbac.yaml",
    ] {
        from_kustomize.extend(roles(&documents(&std::fs::read_to_string(
            workspace_root().join(file),
        )?)?));
    }
    assert_eq!(roles(&docs), from_kustomize);

    // The same Deployment, but for the chart's labels and annotations.
    let chart_deploy = find(&docs, "Deployment", "tidemark")?;
    let kust_deploy = find(&kustomized, "Deployment", "tidemark")?;
    let container = |d: &Value| {
        let mut c = d["spec"]["template"]["spec"]["containers"][0].clone();
        c["env"] = Value::Null;
        c["envFrom"] = Value::Null;
        c
    };
    assert_eq!(container(chart_deploy), container(kust_deploy));
    for field in [
        "securityContext",
        "volumes",
        "affinity",
        "serviceAccountName",
    ] {
        assert_eq!(
            chart_deploy["spec"]["template"]["spec"][field],
            kust_deploy["spec"]["template"]["spec"][field],
            "{field}"
        );
    }

    let sim = SimProcess::start(&["--version", "1.30.4"])?;
    // The release's namespace exists before a chart is installed (the sim starts with it).
    let file = sim.dir_file("chart.yaml", &rendered)?;
    let applied = sim.kubectl(&["apply", "--server-side", "-f", &file.display().to_string()])?;
    assert!(
        applied.contains("deployment.apps/tidemark serverside-applied"),
        "{applied}"
    );

    let missing = Command::new(helm_bin()?)
        .args(["template", "tidemark"])
        .arg(workspace_root().join("deploy/chart"))
        .output()?;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("`repo` (the fleet repo's URL) is required")
    );
    Ok(())
}

/// The names of `tidemark_*` series a PromQL expression reads.
fn tidemark_series(expr: &str, out: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("tidemark_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        // A label value (`job="tidemark"`) or part of a longer name is not a series.
        let quoted = start > 0 && bytes[start - 1] == b'"';
        let inside_name =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !quoted && !inside_name {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
}

/// Every `tidemark_*` series the Grafana dashboard and the alert rules query is exported by
/// a running agent (the real binary against a sim, converged, with node groups and a
/// component), scraped from its /metrics.
#[test]
fn every_metric_the_dashboard_and_alerts_query_is_exported() -> Result<()> {
    let monitoring = workspace_root().join("deploy/monitoring");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(
        monitoring.join("grafana-dashboard.json"),
    )?)?;
    let rules = documents(&std::fs::read_to_string(
        monitoring.join("prometheusrule.yaml"),
    )?)?;
    let mut queried = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap_or_default().to_string());
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(q) = var["definition"].as_str() {
            exprs.push(q.to_string());
        }
    }
    for group in rules[0]["spec"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            exprs.push(rule["expr"].as_str().unwrap_or_default().to_string());
        }
    }
    for e in &exprs {
        tidemark_series(e, &mut queried);
    }
    assert!(queried.len() >= 10, "{queried:?} from {exprs:#?}");

    let sim = SimProcess::start(&["--version", "1.29.8", "--node-groups", "general=1,gpu=1"])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    let mut manifest = sim_manifest(
        tidemark_e2e::CLUSTERAPI,
        "1.29.8",
        &[("general", "1.29.8"), ("gpu", "1.29.8")],
    );
    manifest.push_str(
        "  components:\n    - name: one\n      chart: {path: charts/one}\n      namespace: apps\n",
    );
    repo.write("clusters/sim.yaml", &manifest)?;
    charts::ONE.write_to(&repo.path().join("charts/one"))?;
    repo.commit("fleet")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let work = tempfile::tempdir()?;
    let helm = helm_bin()?.display().to_string();
    let mut agent = spawn_agent_with(repo.path(), &sim, "a", work.path(), &["--helm-bin", &helm])?;
    let result = (|| -> Result<()> {
        wait_until(Duration::from_secs(30), "a converged pass", || {
            status_record(&sim).is_ok_and(|r| r.phase.is_some_and(|p| p.to_string() == "Converged"))
        })?;
        let addr = agent_metrics_addr(work.path(), "a").context("no metrics address in the log")?;
        let mut scraped = String::new();
        wait_until(Duration::from_secs(10), "the pass in /metrics", || {
            scraped = http_get(&addr, "/metrics")
                .map(|(_, b)| b)
                .unwrap_or_default();
            scraped.contains("tidemark_info{")
        })?;
        let exported: BTreeSet<&str> = scraped
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let missing: Vec<&String> = queried
            .iter()
            .filter(|q| !exported.contains(q.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "queried but not exported: {missing:?}\n/metrics:\n{scraped}"
        );
        assert!(
            scraped.contains("tidemark_components{health=\"Healthy\"} 1"),
            "{scraped}"
        );
        assert!(
            scraped.contains("tidemark_node_group_version_info{node_group=\"gpu\",observed=\"1.29.8\",desired=\"1.29.8\"} 1"),
            "{scraped}"
        );
        Ok(())
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    result.with_context(|| agent_log(work.path(), "a"))
}

#[test]
fn promql_series_names_are_found() {
    let mut names = BTreeSet::new();
    tidemark_series(
        "time() - max by (namespace) (tidemark_last_pass_timestamp_seconds) > 3 * tidemark_interval_seconds and up{job=\"tidemark\"} and x_tidemark_y",
        &mut names,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "tidemark_interval_seconds",
            "tidemark_last_pass_timestamp_seconds"
        ]
    );
}

/// A fleet repo whose cluster (`sim`, wave `canary`) declares tidemark's own chart
/// (deploy/chart) as its component `tidemark`, and an agent's working directory with a
/// helm wrapper that counts renders.
struct SelfUpgrade {
    repo: WorkRepo,
    work: tempfile::TempDir,
    helm: String,
}

impl SelfUpgrade {
    fn new() -> Result<Self> {
        let repo = WorkRepo::new()?;
        repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
        copy_dir(
            &workspace_root().join("deploy/chart"),
            &repo.path().join("charts/tidemark"),
        )?;
        let work = tempfile::tempdir()?;
        let helm = helm_wrapper(work.path())?.display().to_string();
        Ok(Self { repo, work, helm })
    }

    /// Commits the chart's image tag `tag` and moves `wave/canary` to it.
    fn release(&self, tag: &str) -> Result<String> {
        let mut manifest =
            sim_manifest(tidemark_e2e::CLUSTERAPI, "1.29.8", &[("general", "1.29.8")]);
        manifest.push_str(&format!(
            "  components:
    - name: tidemark
      chart: {{path: charts/tidemark}}
      namespace: tidemark-system
      values:
        repo: https://git.example.com/platform/fleet.git
        selector: cluster=sim
        image: {{tag: \"{tag}\"}}
        rbac: {{clusterapi: {{enabled: true}}}}
"
        ));
        self.repo.write("clusters/sim.yaml", &manifest)?;
        let rev = self.repo.commit(&format!("tidemark {tag}"))?;
        self.repo
            .git(&["tag", "-f", "-a", "-m", tag, "wave/canary", "HEAD"])?;
        Ok(rev)
    }

    /// How many times helm rendered.
    fn helm_runs(&self) -> usize {
        std::fs::read_to_string(self.work.path().join("helm.log"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// One pass, `agent --once`.
    fn once(&self, sim: &SimProcess) -> Result<Pass> {
        let run = tidemark_in(
            &[
                "agent",
                "--once",
                "--repo",
                &self.repo.path().display().to_string(),
                "--selector",
                "cluster=sim",
                "--cache-dir",
                &self.work.path().join("cache").display().to_string(),
                "--helm-bin",
                &self.helm,
                "--component-wait",
                "20s",
            ],
            None,
            &[("KUBECONFIG", &sim.kubeconfig().display().to_string())],
        )?;
        if run.code != Some(0) {
            bail!("agent --once failed: {run:?}");
        }
        Ok(Pass::parse(&run.stdout))
    }
}

/// The agent's Deployment in the sim: its image and its generation.
fn agent_deployment(sim: &SimProcess) -> Result<(String, u64)> {
    let d: Value = serde_json::from_str(&sim.kubectl(&[
        "get",
        "deployment",
        "-n",
        "tidemark-system",
        "tidemark",
        "-o",
        "json",
    ])?)?;
    Ok((
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        d["metadata"]["generation"].as_u64().unwrap_or_default(),
    ))
}

/// A fleet declares tidemark's own chart (deploy/chart) as a component of the cluster: the
/// agent applies its own Deployment, RBAC and configuration, and when a wave moves the
/// chart's image tag, applies the new tag, and then rests (no helm, nothing applied).
#[test]
fn a_fleet_upgrades_its_agents_through_a_wave() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.29.8",
        "--node-groups",
        "general=1",
        "--speed",
        "20",
    ])?;
    let fleet = SelfUpgrade::new()?;
    let image = || -> Result<String> { Ok(agent_deployment(&sim)?.0) };

    fleet.release("0.1.0")?;
    let pass = fleet.once(&sim)?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    assert_eq!(image()?, "ghcr.io/tidemark-dev/tidemark:0.1.0");
    let labels: Value = serde_json::from_str(&sim.kubectl(&[
        "get",
        "clusterrole",
        "tidemark-components",
        "-o",
        "json",
    ])?)?;
    assert_eq!(
        labels["metadata"]["labels"]["tidemark.dev/component"],
        "tidemark"
    );
    sim.kubectl(&["get", "role", "-n", "default", "tidemark-events"])?;
    sim.kubectl(&[
        "get",
        "rolebinding",
        "-n",
        "capi-system",
        "tidemark-clusterapi",
    ])?;

    // The wave moves the image tag: the next pass applies it, once.
    let target = fleet.release("0.2.0")?;
    let renders = fleet.helm_runs();
    let pass = fleet.once(&sim)?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    assert_eq!(image()?, "ghcr.io/tidemark-dev/tidemark:0.2.0");
    assert_eq!(fleet.helm_runs(), renders + 1);
    let record = status_record(&sim)?;
    assert_eq!(record.applied_revision.as_deref(), Some(target.as_str()));

    // Nothing left to do: no helm, no step.
    let renders = fleet.helm_runs();
    let pass = fleet.once(&sim)?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    assert!(pass.executed.is_empty(), "{pass:?}");
    assert_eq!(fleet.helm_runs(), renders);
    Ok(())
}

/// The agent applying its own new Deployment is killed (`kill -9`, as the rollout replaces
/// its pod) while its pass waits for that very rollout; the replica that replaces it takes
/// the Lease once it expires and converges from what it observes: the Deployment rolled
/// out once (its generation moved by one: the new agent's apply of the same render changed
/// nothing), the record at the new revision.
#[test]
fn an_agent_killed_while_it_replaces_itself_converges_after_a_restart() -> Result<()> {
    // At speed 1 the rollout takes seconds: the pass is still waiting for it when killed.
    let sim = SimProcess::start(&["--version", "1.29.8", "--node-groups", "general=1"])?;
    let fleet = SelfUpgrade::new()?;
    fleet.release("0.1.0")?;
    let pass = fleet.once(&sim)?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    let (_, generation) = agent_deployment(&sim)?;

    let target = fleet.release("0.2.0")?;
    let extra = ["--helm-bin", fleet.helm.as_str(), "--component-wait", "60s"];
    let mut old = spawn_agent_with(fleet.repo.path(), &sim, "old", fleet.work.path(), &extra)?;
    let applied = wait_until(Duration::from_secs(60), "the new image applied", || {
        agent_deployment(&sim).is_ok_and(|(image, _)| image.ends_with(":0.2.0"))
    });
    let _ = old.kill();
    let _ = old.wait();
    applied.with_context(|| agent_log(fleet.work.path(), "old"))?;
    let record = status_record(&sim)?;
    assert_ne!(
        record.applied_revision.as_deref(),
        Some(target.as_str()),
        "the pass had ended before the kill: {record:?}"
    );

    let mut new = spawn_agent_with(fleet.repo.path(), &sim, "new", fleet.work.path(), &extra)?;
    let converged = wait_until(Duration::from_secs(90), "the new agent converged", || {
        status_record(&sim).is_ok_and(|r| {
            r.applied_revision.as_deref() == Some(target.as_str())
                && r.phase.map(|p| p.to_string()).as_deref() == Some("Converged")
        })
    });
    let _ = new.kill();
    let _ = new.wait();
    converged.with_context(|| agent_log(fleet.work.path(), "new"))?;
    let (image, after) = agent_deployment(&sim)?;
    assert_eq!(image, "ghcr.io/tidemark-dev/tidemark:0.2.0");
    assert_eq!(after, generation + 1, "the Deployment was rolled out again");
    let record = status_record(&sim)?;
    assert_eq!(
        record
            .components
            .get("tidemark")
            .map(|c| c.health.to_string()),
        Some("Healthy".to_string()),
        "{record:?}"
    );
    Ok(())
}

/// The management cluster's side of a managed workload cluster
/// (deploy/clusterapi-management, its `namespace:` set to the cluster's Cluster API
/// namespace as its header says) applies server-side to a management sim, and its Role
/// grants every Cluster API request the agent then made there during a control-plane and a
/// node-group upgrade (counted by the management sim), in that namespace, and nothing more
/// than those and the ClusterClass clusters' `get`/`patch` of the Cluster. In the workload
/// cluster the agent read the kubeconfig Secret, which the example overlay's Role grants by
/// name, and wrote no Cluster API object.
#[test]
fn the_management_side_role_grants_what_the_agent_asks_of_the_management_cluster() -> Result<()> {
    let sim = SimProcess::start_managed(&[
        "--version",
        "1.29.8",
        "--node-groups",
        "general=1",
        "--speed",
        "50",
    ])?;
    let work = tempfile::tempdir()?;
    let management = work.path().join("clusterapi-management");
    copy_dir(
        &workspace_root().join("deploy/clusterapi-management"),
        &management,
    )?;
    let kustomization = management.join("kustomization.yaml");
    let text = std::fs::read_to_string(&kustomization)?;
    assert!(text.contains("\nnamespace: prod-eu-1\n"), "{text}");
    std::fs::write(
        &kustomization,
        text.replace("\nnamespace: prod-eu-1\n", "\nnamespace: capi-system\n"),
    )?;
    let applied = sim.kubectl_management(&[
        "apply",
        "--server-side",
        "-k",
        &management.display().to_string(),
    ])?;
    assert!(
        applied.contains("role.rbac.authorization.k8s.io/tidemark-clusterapi serverside-applied"),
        "{applied}"
    );
    let binding: Value = serde_json::from_str(&sim.kubectl_management(&[
        "get",
        "rolebinding",
        "-n",
        "capi-system",
        "tidemark-clusterapi",
        "-o",
        "json",
    ])?)?;
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "tidemark", "namespace": "capi-system"}])
    );
    let role: Value = serde_json::from_str(&sim.kubectl_management(&[
        "get",
        "role",
        "-n",
        "capi-system",
        "tidemark-clusterapi",
        "-o",
        "json",
    ])?)?;
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().context("no rules")? {
        assert!(rule["resourceNames"].is_null(), "{rule}");
        for resource in rule["resources"].as_array().into_iter().flatten() {
            for verb in rule["verbs"].as_array().into_iter().flatten() {
                granted.insert(format!(
                    "{} {}",
                    verb.as_str().unwrap_or_default(),
                    resource.as_str().unwrap_or_default()
                ));
            }
        }
    }

    // The agent, given the management kubeconfig in the Secret the example names.
    sim.kubectl(&[
        "create",
        "secret",
        "generic",
        "capi-management-kubeconfig",
        "-n",
        "tidemark-system",
        &format!(
            "--from-file=value={}",
            sim.management_kubeconfig().display()
        ),
    ])?;
    let before = sim.ctl_state(&sim.management_kubeconfig())?;
    let repo = WorkRepo::new()?;
    repo.write(
        "fleet.yaml",
        &format!(
            "{}  kubernetesVersions: [\"1.30.10\"]\n",
            fleet_yaml(&["canary"])
        ),
    )?;
    repo.write(
        "clusters/sim.yaml",
        &sim_manifest(
            "{kind: clusterapi, namespace: capi-system, kubeconfigSecret: capi-management-kubeconfig}",
            "1.30.10",
            &[("general", "1.30.10")],
        ),
    )?;
    repo.commit("1.29 -> 1.30")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let helm = helm_bin()?;
    let mut phases = Vec::new();
    wait_until(Duration::from_secs(120), "the upgrade converged", || {
        let run = tidemark_e2e::agent_once(repo.path(), &sim, &helm, work.path(), &[]);
        let phase = run
            .map(|r| Pass::parse(&r.stdout).phase)
            .unwrap_or_default();
        phases.push(phase.clone());
        phase == "Converged"
    })?;
    let after = sim.ctl_state(&sim.management_kubeconfig())?;
    let capi = [
        "clusters",
        "kubeadmcontrolplanes",
        "machinedeployments",
        "machines",
    ];
    let asked: BTreeSet<String> = after["requestsByResource"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, n)| {
            n.as_u64().unwrap_or(0)
                > before["requestsByResource"][key.as_str()]
                    .as_u64()
                    .unwrap_or(0)
        })
        .map(|(key, _)| key.clone())
        .filter(|key| capi.iter().any(|r| key.ends_with(&format!(" {r}"))))
        .collect();
    assert!(asked.contains("patch kubeadmcontrolplanes"), "{asked:?}");
    assert!(asked.contains("patch machinedeployments"), "{asked:?}");
    assert!(asked.contains("list machines"), "{asked:?}");
    let missing: Vec<&String> = asked.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "asked of the management cluster but not granted: {missing:?}"
    );
    let unused: BTreeSet<&String> = granted.difference(&asked).collect();
    assert_eq!(
        unused,
        BTreeSet::from([&"get clusters".to_string(), &"patch clusters".to_string()]),
        "granted beyond what a non-ClusterClass cluster's agent asks (phases {phases:?})"
    );
    // The workload cluster: the kubeconfig Secret read, no Cluster API request.
    let workload = sim.ctl_state(&sim.kubeconfig())?;
    let workload_capi: Vec<(&String, &Value)> = workload["requestsByResource"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| capi.iter().any(|r| key.ends_with(&format!(" {r}"))))
        .collect();
    assert!(workload_capi.is_empty(), "{workload_capi:?}");
    assert!(
        workload["requestsByResource"]["get secrets"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{workload}"
    );
    Ok(())
}
