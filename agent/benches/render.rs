//! `validate --render` at fleet scale (issue 15), printed, not asserted: 100 clusters x 5
//! components rendered with the real helm (`.tools/helm/v4.1.4/helm`, provisioned by
//! `scripts/setup-helm.sh`; or `TIDEMARK_BENCH_HELM`), at the default branch and at the
//! wave tags, through the real binary.
//!
//! Two fleets: one as fleets are (three versions, three environments' values, a few
//! clusters with values of their own: renders are shared), and one where every cluster's
//! values differ (every render distinct: the worst case).
//!
//! Run: `cargo bench -p tidemark --bench render` (set `RENDER_CLUSTERS` for another size).
//! Target on a 2-core machine: under 30 s for 100 clusters x 5 components.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const COMPONENTS: [&str; 5] = ["metrics-lite", "node-agent", "ingress", "dns", "policy"];

fn main() -> Result<()> {
    let clusters: usize = std::env::var("RENDER_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let helm = helm()?;
    println!(
        "validate --render: {clusters} clusters x {} components, helm {}",
        COMPONENTS.len(),
        helm.display()
    );
    for (name, distinct) in [("shared values", false), ("every cluster distinct", true)] {
        let work = tempfile::tempdir()?;
        let repo = work.path().join("fleet");
        generate(&repo, clusters, distinct)?;
        support::commit_fleet(&repo, &["canary", "main"])?;
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .arg("validate")
            .arg(&repo)
            .args(["--render", "--format", "json", "--helm-bin"])
            .arg(&helm)
            .arg("--cache-dir")
            .arg(work.path().join("cache"))
            .output()?;
        let wall = t.elapsed();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stderr)))?;
        let problems = report["diagnostics"].as_array().map_or(0, Vec::len);
        println!(
            "  {name:<24} wall {:>6.2}s  renders done {:>4}  cache hits {:>4}  problems {problems}",
            wall.as_secs_f64(),
            report["renders"]["rendered"],
            report["renders"]["cacheHits"],
        );
    }
    Ok(())
}

fn helm() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("TIDEMARK_BENCH_HELM") {
        return Ok(h.into());
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/helm/v4.1.4/helm");
    if !path.is_file() {
        return Err("no helm: run scripts/setup-helm.sh or set TIDEMARK_BENCH_HELM".into());
    }
    Ok(path)
}

/// A fleet of `n` clusters sharing one component set of five in-repo charts. Versions
/// cycle through three minors, values through three environments; every tenth cluster
/// sets a value of its own in two components (or, `distinct`, every cluster in all five).
fn generate(repo: &Path, n: usize, distinct: bool) -> Result<()> {
    let write = |path: &str, text: &str| -> Result<()> {
        let p = repo.join(path);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(p, text)?;
        Ok(())
    };
    write(
        "fleet.yaml",
        "apiVersion: tidemark.dev/v1alpha1\nkind: Fleet\nmetadata: {name: bench}\nspec:\n  waves: [{name: canary}, {name: main}]\n",
    )?;
    let mut set = String::from(
        "apiVersion: tidemark.dev/v1alpha1\nkind: ComponentSet\nmetadata: {name: base}\nspec:\n  components:\n",
    );
    for c in COMPONENTS {
        write(
            &format!("charts/{c}/Chart.yaml"),
            &format!("apiVersion: v2\nname: {c}\nversion: 1.0.0\n"),
        )?;
        write(
            &format!("charts/{c}/values.yaml"),
            "replicas: 1\nenv: dev\nextra: \"\"\n",
        )?;
        write(&format!("charts/{c}/templates/all.yaml"), CHART)?;
        set.push_str(&format!(
            "    - {{name: {c}, chart: {{path: charts/{c}}}, namespace: {c}}}\n"
        ));
    }
    write("components/base.yaml", &set)?;
    for env in ["dev", "staging", "prod"] {
        write(
            &format!("values/{env}.yaml"),
            &format!(
                "env: {env}\nreplicas: {}\n",
                if env == "prod" { 3 } else { 1 }
            ),
        )?;
    }
    for i in 0..n {
        let env = ["dev", "staging", "prod"][i % 3];
        let version = ["1.29.8", "1.30.4", "1.31.2"][(i / 3) % 3];
        let wave = if i % 10 == 0 { "canary" } else { "main" };
        let own = distinct || i % 10 == 5;
        let mut values = String::new();
        for c in COMPONENTS {
            let env_values = matches!(c, "metrics-lite" | "ingress");
            if !(env_values || distinct) {
                continue;
            }
            values.push_str(&format!("    {c}:\n"));
            if env_values {
                values.push_str(&format!("      valuesFiles: [values/{env}.yaml]\n"));
            }
            if own {
                values.push_str(&format!("      values: {{extra: cluster-{i}}}\n"));
            }
        }
        write(
            &format!("clusters/c{i:04}.yaml"),
            &format!(
                "apiVersion: tidemark.dev/v1alpha1
kind: Cluster
metadata:
  name: c{i:04}
  labels: {{cluster: c{i:04}, env: {env}, tidemark.dev/wave: {wave}}}
spec:
  provider: {{kind: clusterapi, namespace: capi-system}}
  controlPlane: {{version: \"{version}\"}}
  nodeGroups:
    - {{name: general, version: \"{version}\"}}
  componentSets: [base]
  componentValues:
{values}"
            ),
        )?;
    }
    Ok(())
}

/// A chart of the usual shape: a Deployment, its Service, a ConfigMap, a budget and
/// capability-gated objects.
const CHART: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels: {app: {{ .Release.Name }}, env: {{ .Values.env }}}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec:
      containers:
        - name: main
          image: example/{{ .Chart.Name }}:{{ .Chart.Version }}
          args: [--extra={{ .Values.extra }}]
---
apiVersion: v1
kind: Service
metadata: {name: {{ .Release.Name }}}
spec:
  selector: {app: {{ .Release.Name }}}
  ports: [{port: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-config}
data:
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: {{ .Release.Name }}}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: {{ .Release.Name }}}}
{{- if .Capabilities.APIVersions.Has "flowcontrol.apiserver.k8s.io/v1" }}
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: {{ .Release.Name }}}
spec:
  matchingPrecedence: 9000
  priorityLevelConfiguration: {name: workload-low}
  rules:
    - subjects: [{kind: ServiceAccount, serviceAccount: {name: default, namespace: {{ .Release.Namespace }}}}]
      resourceRules: [{verbs: [get], apiGroups: [""], resources: [pods], namespaces: ["*"]}]
{{- end }}
"#;
