//! Cluster API as it runs for real: the Cluster API objects in a management cluster reached
//! through a kubeconfig (a Secret in the agent's namespace, or a file), nodes tied to node
//! groups by their Machines, both API versions, ClusterClass topology, and drains held by a
//! PodDisruptionBudget that stop (or, when a node group opts in, end by force). The real
//! `tidemark` binary against `tidemark sim` processes; kubectl reads both clusters.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;
use tidemark_e2e::{Pass, SimProcess, WorkRepo, kubectl_with};

/// `fleet.yaml` with one wave and the patch releases the hops land on.
fn fleet() -> String {
    format!(
        "{}  kubernetesVersions: [\"1.30.10\"]\n",
        tidemark_e2e::fleet_yaml(&["canary"])
    )
}

fn manifest(provider: &str, cp: &str, groups: &[(&str, &str)]) -> String {
    tidemark_e2e::sim_manifest(provider, cp, groups)
}

/// Runs passes until Converged; returns every executed step and every message, in order.
fn converge(
    repo: &WorkRepo,
    sim: &SimProcess,
    cache: &Path,
    limit: Duration,
) -> Result<(Vec<String>, Vec<String>)> {
    let start = Instant::now();
    let (mut steps, mut messages) = (Vec::new(), Vec::new());
    loop {
        let pass = Pass::run(repo, sim, cache)?;
        steps.extend(pass.executed.iter().cloned());
        messages.push(pass.message.clone());
        match pass.phase.as_str() {
            "Converged" => return Ok((steps, messages)),
            "Progressing" => {}
            other => bail!(
                "unexpected phase {other}: {} (steps so far: {steps:?})",
                pass.message
            ),
        }
        if start.elapsed() > limit {
            bail!(
                "not converged after {limit:?}: {} (steps: {steps:?})",
                pass.message
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `requestsByResource[key]` of a `tidemark sim ctl state` ("0" when never seen).
fn count(state: &Value, key: &str) -> u64 {
    state["requestsByResource"][key].as_u64().unwrap_or(0)
}

/// The kubelet versions of a cluster's nodes, sorted.
fn kubelets(kubeconfig: &Path) -> Result<Vec<String>> {
    let out = kubectl_with(
        kubeconfig,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.nodeInfo.kubeletVersion}",
        ],
    )?;
    let mut v: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    v.sort();
    Ok(v)
}

#[test]
fn a_workload_cluster_whose_cluster_api_objects_live_in_a_management_cluster() -> Result<()> {
    let sim = SimProcess::start_managed(&[
        "--version",
        "1.29.8",
        "--node-groups",
        "general=2,gpu=1",
        "--node-versions",
        "gpu=1.27.16",
        "--speed",
        "50",
    ])?;
    // Cluster API keeps the workload cluster's kubeconfig in the management cluster.
    let secret = sim.kubectl_management(&[
        "get",
        "secret",
        "sim-kubeconfig",
        "-n",
        "capi-system",
        "-o",
        "jsonpath={.data.value}",
    ])?;
    let workload_kubeconfig = std::fs::read_to_string(sim.kubeconfig())?;
    let decoded =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, secret.trim())?;
    assert_eq!(String::from_utf8(decoded)?, workload_kubeconfig);
    // The operator gives the agent the management cluster's kubeconfig: a Secret of the same
    // shape (key `value`) in the agent's namespace of the workload cluster.
    sim.kubectl(&[
        "create",
        "secret",
        "generic",
        "management-kubeconfig",
        "-n",
        "tidemark-system",
        &format!(
            "--from-file=value={}",
            sim.management_kubeconfig().display()
        ),
    ])?;
    // The workload cluster has no Cluster API.
    assert!(
        sim.kubectl(&["get", "machinedeployments.cluster.x-k8s.io", "-A"])
            .is_err()
    );

    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet())?;
    let provider =
        "{kind: clusterapi, namespace: capi-system, kubeconfigSecret: management-kubeconfig}";
    repo.write(
        "clusters/sim.yaml",
        &manifest(
            provider,
            "1.31.4",
            &[("general", "1.31.4"), ("gpu", "1.30.10")],
        ),
    )?;
    repo.commit("1.29 -> 1.31")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let cache = tempfile::tempdir()?;
    let (steps, _) = converge(&repo, &sim, cache.path(), Duration::from_secs(180))?;
    assert_eq!(
        steps,
        [
            "upgrade control plane 1.29.8 -> 1.30.10",
            "upgrade node group gpu 1.27.16 -> 1.30.10 (to stay within kubelet skew of the next control-plane minor)",
            "upgrade control plane 1.30.10 -> 1.31.4",
            "upgrade node group general 1.29.8 -> 1.31.4 (to its declared version)",
        ]
    );
    assert_eq!(
        kubelets(&sim.kubeconfig())?,
        ["v1.30.10", "v1.31.4", "v1.31.4"]
    );

    // kubectl on the management cluster: the versions moved there.
    let kcp = sim.kubectl_management(&[
        "get",
        "kubeadmcontrolplanes.controlplane.cluster.x-k8s.io",
        "sim",
        "-n",
        "capi-system",
        "-o",
        "jsonpath={.spec.version} {.status.version}",
    ])?;
    assert_eq!(kcp, "v1.31.4 v1.31.4");
    let mds = sim.kubectl_management(&[
        "get",
        "machinedeployments.cluster.x-k8s.io",
        "-n",
        "capi-system",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.template.spec.version} {end}",
    ])?;
    assert_eq!(mds.trim(), "sim-general=v1.31.4 sim-gpu=v1.30.10");
    let machines = sim.kubectl_management(&[
        "get",
        "machines.cluster.x-k8s.io",
        "-n",
        "capi-system",
        "-o",
        "json",
    ])?;
    let machines: Value = serde_json::from_str(&machines)?;
    let items = machines["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 3);
    // kubectl on the workload cluster: every Node is a Machine's (its nodeRef), and no Node
    // carries the deployment-name label.
    let nodes: Value = serde_json::from_str(&sim.kubectl(&["get", "nodes", "-o", "json"])?)?;
    for n in nodes["items"].as_array().cloned().unwrap_or_default() {
        let name = n["metadata"]["name"].as_str().unwrap_or_default();
        assert!(
            n["metadata"]["labels"]
                .get("cluster.x-k8s.io/deployment-name")
                .is_none(),
            "{n}"
        );
        assert!(
            items.iter().any(|m| m["status"]["nodeRef"]["name"] == name),
            "node {name} has a Machine"
        );
        assert_eq!(
            n["metadata"]["annotations"]["cluster.x-k8s.io/machine"],
            name
        );
    }
    // tidemark wrote Cluster API objects in the management cluster only; it read the
    // management kubeconfig Secret in the workload cluster.
    let management = sim.ctl_state(&sim.management_kubeconfig())?;
    assert_eq!(count(&management, "patch kubeadmcontrolplanes"), 2);
    assert_eq!(count(&management, "patch machinedeployments"), 2);
    assert!(count(&management, "list machines") > 0);
    let workload = sim.ctl_state(&sim.kubeconfig())?;
    assert!(count(&workload, "get secrets") > 0);
    assert_eq!(count(&workload, "patch machinedeployments"), 0);
    assert_eq!(count(&workload, "patch kubeadmcontrolplanes"), 0);
    assert_eq!(workload["drainsForced"], 0);
    Ok(())
}

#[test]
fn a_sim_serving_only_v1beta1() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.29.8",
        "--node-groups",
        "general=2",
        "--speed",
        "50",
        "--capi-api",
        "v1beta1",
    ])?;
    let group: Value =
        serde_json::from_str(&sim.kubectl(&["get", "--raw", "/apis/cluster.x-k8s.io"])?)?;
    assert_eq!(group["preferredVersion"]["version"], "v1beta1");
    assert_eq!(group["versions"].as_array().map(Vec::len), Some(1));
    // A budget holds the first drain: tidemark reads it from the Machine's v1beta1
    // `DrainingSucceeded` condition (Cluster API 1.8 has no v1beta2 conditions). Two pods
    // pinned to one node: the budget allows one eviction (so the pre-flight check lets the
    // rollout begin), and the evicted pod runs nowhere else, so the second never comes.
    let node = sim.kubectl(&[
        "get",
        "nodes",
        "-l",
        "tidemark.dev/node-group=general",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ])?;
    let pinned = WEB.replace("replicas: 1", "replicas: 2").replace(
        "nodeSelector: {tidemark.dev/node-group: general}",
        &format!("nodeSelector: {{kubernetes.io/hostname: {node}}}"),
    );
    let web = sim.dir_file("web.yaml", &pinned)?;
    sim.kubectl(&["apply", "--server-side", "-f", &web.display().to_string()])?;
    sim.kubectl(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "default",
        "--timeout=30s",
    ])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet())?;
    repo.write(
        "clusters/sim.yaml",
        &manifest(
            tidemark_e2e::CLUSTERAPI,
            "1.30.10",
            &[("general", "1.30.10")],
        ),
    )?;
    repo.commit("1.29 -> 1.30")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let cache = tempfile::tempdir()?;
    let start = Instant::now();
    let mut steps = Vec::new();
    let held = loop {
        let pass = Pass::run(&repo, &sim, cache.path())?;
        steps.extend(pass.executed.iter().cloned());
        if pass
            .message
            .starts_with("node group general rolling, held: machine ")
        {
            break pass.message;
        }
        assert_eq!(pass.phase, "Progressing", "{}", pass.message);
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never held: {}",
            pass.message
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        held.contains(" draining: Drain not completed yet (started at ")
            && held.contains("Pod default/web-")
            && held
                .contains("The disruption budget web-pdb needs 1 healthy pods and has 1 currently"),
        "{held}"
    );
    sim.kubectl(&[
        "patch",
        "pdb",
        "web-pdb",
        "-n",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":0}}"#,
    ])?;
    let (more, _) = converge(&repo, &sim, cache.path(), Duration::from_secs(120))?;
    steps.extend(more);
    assert_eq!(
        steps,
        [
            "upgrade control plane 1.29.8 -> 1.30.10",
            "upgrade node group general 1.29.8 -> 1.30.10 (to its declared version)",
        ]
    );
    assert_eq!(kubelets(&sim.kubeconfig())?, ["v1.30.10", "v1.30.10"]);
    // tidemark wrote the v1beta1 fields.
    let md = sim.kubectl(&[
        "get",
        "machinedeployments.cluster.x-k8s.io",
        "sim-general",
        "-n",
        "capi-system",
        "-o",
        "jsonpath={.apiVersion} {.spec.template.spec.version} {.spec.strategy.rollingUpdate.maxUnavailable}",
    ])?;
    assert_eq!(md, "cluster.x-k8s.io/v1beta1 v1.30.10 1");
    let state = sim.ctl_state(&sim.kubeconfig())?;
    assert_eq!(state["clusterApi"], "v1beta1");
    assert_eq!(count(&state, "patch machinedeployments"), 1);
    Ok(())
}

#[test]
fn a_topology_cluster_moves_only_its_topology_version() -> Result<()> {
    let sim = SimProcess::start_managed(&[
        "--version",
        "1.29.8",
        "--node-groups",
        "general=2,gpu=1",
        "--speed",
        "50",
        "--topology",
    ])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet())?;
    // The management cluster's kubeconfig as a mounted file.
    let provider = format!(
        "{{kind: clusterapi, namespace: capi-system, topology: true, kubeconfigFile: \"{}\"}}",
        sim.management_kubeconfig().display()
    );
    repo.write(
        "clusters/sim.yaml",
        &manifest(
            &provider,
            "1.31.4",
            &[("general", "1.31.4"), ("gpu", "1.31.4")],
        ),
    )?;
    repo.commit("topology 1.29 -> 1.31")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let cache = tempfile::tempdir()?;
    let (steps, _) = converge(&repo, &sim, cache.path(), Duration::from_secs(180))?;
    assert_eq!(
        steps,
        [
            "upgrade control plane 1.29.8 -> 1.30.10",
            "upgrade control plane 1.30.10 -> 1.31.4",
        ]
    );
    // The second hop waited for every MachineDeployment to run the first: Cluster API's
    // webhook refuses `topology.version` earlier, and a refused write would have failed a
    // pass (`converge` accepts only Progressing and Converged).
    assert_eq!(kubelets(&sim.kubeconfig())?, ["v1.31.4"; 3]);
    // tidemark moved Cluster.spec.topology.version, once per hop, and nothing else.
    let state = sim.ctl_state(&sim.management_kubeconfig())?;
    assert_eq!(
        count(&state, "patch clusters"),
        2,
        "{}",
        state["requestsByResource"]
    );
    assert_eq!(count(&state, "patch kubeadmcontrolplanes"), 0);
    assert_eq!(count(&state, "patch machinedeployments"), 0);
    let topology = sim.kubectl_management(&[
        "get",
        "clusters.cluster.x-k8s.io",
        "sim",
        "-n",
        "capi-system",
        "-o",
        "jsonpath={.spec.topology.version}",
    ])?;
    assert_eq!(topology, "v1.31.4");

    // A direct edit of the control plane's version is reverted by the topology controller
    // (once its rollout is over); tidemark is Converged again without writing anything.
    kubectl_with(
        &sim.management_kubeconfig(),
        &[
            "patch",
            "kubeadmcontrolplanes.controlplane.cluster.x-k8s.io",
            "sim",
            "-n",
            "capi-system",
            "--type=merge",
            "-p",
            r#"{"spec":{"version":"v1.31.5"}}"#,
        ],
    )?;
    tidemark_e2e::wait_until(Duration::from_secs(30), "the edit to roll out", || {
        sim.kubectl(&["version", "-o", "json"])
            .is_ok_and(|v| v.contains("\"gitVersion\": \"v1.31.5\""))
    })?;
    tidemark_e2e::wait_until(Duration::from_secs(30), "the edit to be reverted", || {
        let spec = sim.kubectl_management(&[
            "get",
            "kubeadmcontrolplanes.controlplane.cluster.x-k8s.io",
            "sim",
            "-n",
            "capi-system",
            "-o",
            "jsonpath={.spec.version} {.status.version}",
        ]);
        spec.is_ok_and(|s| s == "v1.31.4 v1.31.4")
    })?;
    let before = sim.ctl_state(&sim.management_kubeconfig())?;
    let pass = Pass::run(&repo, &sim, cache.path())?;
    assert_eq!(pass.phase, "Converged", "{}", pass.message);
    let after = sim.ctl_state(&sim.management_kubeconfig())?;
    for key in [
        "patch clusters",
        "patch kubeadmcontrolplanes",
        "patch machinedeployments",
    ] {
        assert_eq!(count(&before, key), count(&after, key), "{key}");
    }
    Ok(())
}

/// A budget that never allows an eviction (held before a rollout by the pre-flight check,
/// unless the group's drains end by force).
const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
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
  minAvailable: 1
  selector: {matchLabels: {app: web}}
";

#[test]
fn a_drain_held_by_a_budget_ends_by_force_when_the_node_group_opts_in() -> Result<()> {
    let sim = SimProcess::start_managed(&[
        "--version",
        "1.30.10",
        "--node-groups",
        "general=1",
        "--speed",
        "50",
    ])?;
    let web = sim.dir_file("web.yaml", WEB)?;
    sim.kubectl(&["apply", "--server-side", "-f", &web.display().to_string()])?;
    sim.kubectl(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "default",
        "--timeout=30s",
    ])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet())?;
    let provider = format!(
        "{{kind: clusterapi, namespace: capi-system, kubeconfigFile: \"{}\"}}",
        sim.management_kubeconfig().display()
    );
    let text = manifest(&provider, "1.31.4", &[("general", "1.31.4")]).replace(
        "{name: general, version: \"1.31.4\"}",
        "{name: general, version: \"1.31.4\", drainTimeout: 3s, drainTimeoutAction: force}",
    );
    repo.write("clusters/sim.yaml", &text)?;
    repo.commit("upgrade, forcing drains")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let cache = tempfile::tempdir()?;
    let (steps, messages) = converge(&repo, &sim, cache.path(), Duration::from_secs(120))?;
    assert_eq!(
        steps,
        [
            "upgrade control plane 1.30.10 -> 1.31.4",
            "upgrade node group general 1.30.10 -> 1.31.4 (to its declared version)",
        ]
    );
    // While the budget held the drain, the status said so, and that the provider would
    // force it.
    let held = messages
        .iter()
        .find(|m| m.starts_with("node group general rolling, held: machine "))
        .cloned()
        .unwrap_or_default();
    assert!(
        held.contains("web-pdb")
            && held.contains("Pod default/web-")
            && held.ends_with("; the provider deletes the node anyway once drainTimeout 3s has passed (drainTimeoutAction: force)"),
        "{messages:?}"
    );
    // Cluster API was told (nodeDrainTimeout) and forced the deletion.
    let timeout = sim.kubectl_management(&[
        "get",
        "machinedeployments.cluster.x-k8s.io",
        "sim-general",
        "-n",
        "capi-system",
        "-o",
        "jsonpath={.spec.template.spec.deletion.nodeDrainTimeoutSeconds}",
    ])?;
    assert_eq!(timeout, "3");
    let state = sim.ctl_state(&sim.kubeconfig())?;
    assert_eq!(state["drainsForced"], 1, "{state}");
    assert_eq!(kubelets(&sim.kubeconfig())?, ["v1.31.4"]);
    Ok(())
}
