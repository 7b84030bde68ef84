//! Upgrade pre-flight (issue 15): the real binary against `tidemark sim` processes, helm
//! rendering for real, kubectl as an independent client.
//!
//! - a chart rendering a FlowSchema in `flowcontrol.apiserver.k8s.io/v1beta3` (removed in
//!   1.32): `validate --render` names it at the component's entry, the agent holds the
//!   1.32 hop `Waiting` naming the object, and the chart moved to `v1` lets the hop go;
//! - kubectl calling a deprecated API shows on the sim's `/metrics`, and the agent holds
//!   the hop naming group, version and resource;
//! - a PodDisruptionBudget with `maxUnavailable: 0` holds the node-group rollout before
//!   any node is cordoned.

use std::process::Command;

use anyhow::Result;
use tidemark_e2e::{
    CLUSTERAPI, Pass, SimProcess, WorkRepo, agent_once, fleet_yaml, helm_bin, sim_manifest,
    tidemark,
};

const FLOW_SCHEMA: &str = "apiVersion: flowcontrol.apiserver.k8s.io/{{ .Values.apiVersion }}
kind: FlowSchema
metadata:
  name: tidemark-flow
spec:
  matchingPrecedence: 1000
  priorityLevelConfiguration: {name: workload-low}
  rules:
    - subjects:
        - kind: ServiceAccount
          serviceAccount: {name: tidemark, namespace: tidemark-system}
      resourceRules:
        - {verbs: [\"*\"], apiGroups: [\"*\"], resources: [\"*\"], clusterScope: true, namespaces: [\"*\"]}
";

/// The chart `charts/flow` rendering its FlowSchema at `version`.
fn flow_chart(repo: &WorkRepo, version: &str) -> Result<()> {
    repo.write(
        "charts/flow/Chart.yaml",
        "apiVersion: v2\nname: flow\nversion: 0.1.0\n",
    )?;
    repo.write("charts/flow/templates/flowschema.yaml", FLOW_SCHEMA)?;
    repo.write(
        "charts/flow/values.yaml",
        &format!("apiVersion: {version}\n"),
    )
}

/// The KubeadmControlPlane's requested version, read with kubectl.
fn kcp_version(sim: &SimProcess) -> Result<String> {
    sim.kubectl(&[
        "get",
        "kubeadmcontrolplanes",
        "-A",
        "-o",
        "jsonpath={.items[0].spec.version}",
    ])
}

fn pass(repo: &WorkRepo, sim: &SimProcess, dir: &std::path::Path) -> Result<Pass> {
    let run = agent_once(repo.path(), sim, &helm_bin()?, dir, &[])?;
    Ok(Pass::parse(&run.stdout))
}

#[test]
fn a_flowschema_in_v1beta3_holds_the_1_32_hop_until_the_chart_moves_to_v1() -> Result<()> {
    let sim = SimProcess::start(&["--version", "1.31.4", "--node-groups", "general=1"])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    flow_chart(&repo, "v1beta3")?;
    let manifest = sim_manifest(CLUSTERAPI, "1.32.0", &[("general", "1.31.4")])
        + "  components:\n    - name: flow\n      chart: {path: charts/flow}\n      namespace: kube-system\n";
    repo.write("clusters/sim.yaml", &manifest)?;
    let commit = repo.commit("1.32 with a flow schema")?;
    repo.tag_annotated("wave/canary", "HEAD")?;

    // validate --render names it at the component's entry, at the branch and at the tag.
    let helm = helm_bin()?.display().to_string();
    let cache = tempfile::tempdir()?;
    let run = tidemark(&[
        "validate",
        &repo.path().display().to_string(),
        "--render",
        "--helm-bin",
        &helm,
        "--cache-dir",
        &cache.path().display().to_string(),
    ])?;
    assert_eq!(run.code, Some(1), "{run:?}");
    let finding = "clusters/sim.yaml:12:11: spec.components[0]: component `flow` renders FlowSchema/tidemark-flow (flowcontrol.apiserver.k8s.io/v1beta3), which Kubernetes 1.32.0 does not serve: flowcontrol.apiserver.k8s.io/v1beta3 is removed in 1.32; use flowcontrol.apiserver.k8s.io/v1";
    assert!(run.stdout.lines().any(|l| l == finding), "{}", run.stdout);
    let at_tag = format!(
        "clusters/sim.yaml:12:11: spec.components[0]: at wave/canary ({}): component `flow` renders FlowSchema/tidemark-flow",
        &commit[..12]
    );
    assert!(
        run.stdout.lines().any(|l| l.starts_with(&at_tag)),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("rendered 1 charts (1 cache hits)"),
        "the tag's render is the branch's: {}",
        run.stderr
    );

    // The agent holds the hop, naming the object, and asks the provider for nothing.
    let dir = tempfile::tempdir()?;
    let held = pass(&repo, &sim, dir.path())?;
    assert_eq!(held.phase, "Waiting", "{held:?}");
    assert!(
        held.message.contains(
            "upgrade control plane 1.31.4 -> 1.32.0 waits: pre-flight check failed: component flow renders FlowSchema/tidemark-flow in flowcontrol.apiserver.k8s.io/v1beta3, which 1.32 no longer serves (use flowcontrol.apiserver.k8s.io/v1)"
        ),
        "{held:?}"
    );
    assert_eq!(kcp_version(&sim)?, "v1.31.4");
    assert_eq!(
        tidemark_e2e::status_annotation(&sim, "phase"),
        "Waiting",
        "the status says it too"
    );

    // The chart moved to v1: the hop goes.
    flow_chart(&repo, "v1")?;
    repo.commit("flow schema in v1")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let moved = pass(&repo, &sim, dir.path())?;
    assert_eq!(moved.phase, "Progressing", "{moved:?}");
    assert_eq!(
        moved.executed,
        ["upgrade control plane 1.31.4 -> 1.32.0"],
        "{moved:?}"
    );
    assert_eq!(kcp_version(&sim)?, "v1.32.0");
    Ok(())
}

#[test]
fn kubectl_calling_a_deprecated_api_shows_on_metrics_and_holds_the_hop() -> Result<()> {
    let sim = SimProcess::start(&["--version", "1.31.4", "--node-groups", "general=1"])?;
    let metrics = || sim.kubectl(&["get", "--raw", "/metrics"]);
    assert!(
        !metrics()?.contains("apiserver_requested_deprecated_apis"),
        "nothing deprecated requested yet"
    );
    // kubectl, asking for the old version, is warned as by a real API server.
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(sim.kubeconfig())
        .args([
            "get",
            "flowschemas.v1beta3.flowcontrol.apiserver.k8s.io",
            "-o",
            "name",
        ])
        .output()?;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "Warning: flowcontrol.apiserver.k8s.io/v1beta3 FlowSchema is deprecated in v1.29+, unavailable in v1.32+; use flowcontrol.apiserver.k8s.io/v1 FlowSchema"
        ),
        "{out:?}"
    );
    let text = metrics()?;
    assert!(
        text.lines().any(|l| l == "apiserver_requested_deprecated_apis{group=\"flowcontrol.apiserver.k8s.io\",removed_release=\"1.32\",resource=\"flowschemas\",subresource=\"\",version=\"v1beta3\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE apiserver_requested_deprecated_apis gauge"));

    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    repo.write(
        "clusters/sim.yaml",
        &sim_manifest(CLUSTERAPI, "1.32.0", &[("general", "1.31.4")]),
    )?;
    repo.commit("1.32")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let dir = tempfile::tempdir()?;
    let held = pass(&repo, &sim, dir.path())?;
    assert_eq!(held.phase, "Waiting", "{held:?}");
    assert!(
        held.message.contains(
            "clients still call APIs that 1.32 removes: flowcontrol.apiserver.k8s.io/v1beta3 flowschemas (removed in 1.32)"
        ),
        "{held:?}"
    );
    assert!(held.executed.is_empty(), "{held:?}");
    assert_eq!(kcp_version(&sim)?, "v1.31.4");
    Ok(())
}

#[test]
fn a_budget_with_max_unavailable_0_holds_the_rollout_before_any_node_is_cordoned() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.31.4",
        "--node-groups",
        "general=2,gpu=1",
        "--node-versions",
        "general=1.30.6",
        "--speed",
        "20",
    ])?;
    let workload = sim.dir_file(
        "web.yaml",
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {tidemark.dev/node-group: general}
      containers: [{name: web, image: example/web:1}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web-pdb, namespace: default}
spec:
  maxUnavailable: 0
  selector: {matchLabels: {app: web}}
",
    )?;
    sim.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &workload.display().to_string(),
    ])?;
    sim.kubectl(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "default",
        "--timeout=30s",
    ])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    repo.write(
        "clusters/sim.yaml",
        &sim_manifest(
            CLUSTERAPI,
            "1.31.4",
            &[("general", "1.31.4"), ("gpu", "1.31.4")],
        ),
    )?;
    repo.commit("general to 1.31")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let md_version = || {
        sim.kubectl(&[
            "get",
            "machinedeployments",
            "-A",
            "-o",
            "jsonpath={.items[?(@.metadata.name==\"sim-general\")].spec.template.spec.version}",
        ])
    };
    let cordoned = || {
        sim.kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].spec.unschedulable}",
        ])
    };

    let dir = tempfile::tempdir()?;
    let held = pass(&repo, &sim, dir.path())?;
    assert_eq!(held.phase, "Waiting", "{held:?}");
    assert!(
        held.message.contains(
            "upgrade node group general 1.30.6 -> 1.31.4 (to its declared version) waits: pre-flight check failed: node group general: PodDisruptionBudget default/web-pdb never allows an eviction (maxUnavailable: 0)"
        ),
        "{held:?}"
    );
    assert_eq!(cordoned()?.trim(), "", "no node cordoned");
    assert_eq!(md_version()?, "v1.30.6", "nothing asked of Cluster API");

    // The budget relaxed with kubectl: the rollout begins.
    sim.kubectl(&[
        "patch",
        "pdb",
        "web-pdb",
        "-n",
        "default",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"maxUnavailable":1}}"#,
    ])?;
    let moved = pass(&repo, &sim, dir.path())?;
    assert_eq!(
        moved.executed,
        ["upgrade node group general 1.30.6 -> 1.31.4 (to its declared version)"],
        "{moved:?}"
    );
    assert_eq!(md_version()?, "v1.31.4");
    Ok(())
}
