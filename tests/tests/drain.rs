//! `drain: tidemark`: the agent drains a self-managed node group itself (cordon, evict
//! through the Eviction API, run `replaceNode`, wait for the replacement), batch by batch,
//! and survives `kill -9` at any point without replacing a node twice.
//!
//! The real binary runs as a long-lived agent against a `tidemark sim` process; the
//! `replaceNode` command is a shell script that logs each invocation and asks the simulated
//! cloud to replace the node. kubectl observes the cluster between kills.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tidemark_e2e::{SimProcess, WorkRepo, fleet_yaml, tidemark_bin};

const WORKLOAD: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: example/web:1}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web-pdb, namespace: default}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: web}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: db, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: example/db:1}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: db-pdb, namespace: default}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: db}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: node-agent}}
  template:
    metadata: {labels: {app: node-agent}}
    spec:
      tolerations: [{operator: Exists}]
      containers: [{name: agent, image: example/node-agent:1}]
";

/// A long-lived `tidemark agent` that can be killed with SIGKILL.
struct Agent {
    child: Child,
}

impl Agent {
    fn start(repo: &WorkRepo, sim: &SimProcess, cache: &Path, log: &Path) -> Result<Agent> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(tidemark_bin()?)
            .args([
                "agent",
                "--repo",
                &repo.path().display().to_string(),
                "--selector",
                "cluster=sim",
                "--cache-dir",
                &cache.display().to_string(),
                "--interval",
                "1s",
                "--identity",
                "drain-e2e",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .env("KUBECONFIG", sim.kubeconfig())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .context("failed to start the agent")?;
        Ok(Agent { child })
    }

    /// SIGKILL, as `kill -9` (std's `Child::kill` sends SIGKILL on Unix).
    fn kill9(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What kubectl shows between kills.
struct Seen {
    /// Node name -> (kubelet version, cordoned, ready).
    nodes: BTreeMap<String, (String, bool, bool)>,
    phase: String,
    message: String,
}

fn look(sim: &SimProcess) -> Result<Seen> {
    let nodes: Value = serde_json::from_str(&sim.kubectl(&["get", "nodes", "-o", "json"])?)?;
    let mut seen = BTreeMap::new();
    for n in nodes["items"].as_array().into_iter().flatten() {
        let ready = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        seen.insert(
            n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            (
                n["status"]["nodeInfo"]["kubeletVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                n["spec"]["unschedulable"] == Value::Bool(true),
                ready,
            ),
        );
    }
    let ns: Value = serde_json::from_str(&sim.kubectl(&[
        "get",
        "namespace",
        "tidemark-system",
        "-o",
        "json",
    ])?)?;
    let ann = |k: &str| {
        ns["metadata"]["annotations"][k]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    Ok(Seen {
        nodes: seen,
        phase: ann("tidemark.dev/phase"),
        message: ann("tidemark.dev/message"),
    })
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn tidemark_drains_a_self_managed_group_in_batches_and_survives_kill_9_without_replacing_twice()
-> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.29.8",
        "--node-groups",
        "general=4",
        "--node-versions",
        "general=1.28.9",
        "--speed",
        "10",
    ])?;
    let workload = sim.dir_file("workload.yaml", WORKLOAD)?;
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
        "--timeout=60s",
    ])?;
    sim.kubectl(&[
        "rollout",
        "status",
        "deployment/db",
        "-n",
        "default",
        "--timeout=60s",
    ])?;
    let original: Vec<String> = look(&sim)?.nodes.keys().cloned().collect();
    let db_pods = || sim.kubectl(&["get", "pods", "-n", "default", "-l", "app=db", "-o", "name"]);
    let db_before = db_pods()?;
    assert_eq!(original.len(), 4);

    let dir = tempfile::tempdir()?;
    let replaced_log = dir.path().join("replaced.log");
    let bin = tidemark_bin()?.display().to_string();
    // Logs the node, waits until the test lets it go (a slow cloud call the test can kill
    // the agent in the middle of), then asks the simulated cloud.
    let go = dir.path().join("go");
    std::fs::create_dir(&go)?;
    let script = format!(
        "echo \"$TIDEMARK_NODE_NAME\" >> {log}; i=0; while [ ! -e {go}/\"$TIDEMARK_NODE_NAME\" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; exec {bin} sim ctl replace-node >/dev/null 2>&1",
        log = replaced_log.display(),
        go = go.display(),
    );
    let exec = format!(
        "{{kind: exec, upgradeControlPlane: [\"{bin}\", sim, ctl, upgrade-control-plane], upgradeNodeGroup: [\"{bin}\", sim, ctl, upgrade-node-group], replaceNode: [/bin/sh, -c, {script:?}], timeout: 1m}}"
    );
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    let manifest = tidemark_e2e::sim_manifest(&exec, "1.29.8", &[("general", "1.29.8")]).replace(
        "{name: general, version: \"1.29.8\"}",
        "{name: general, version: \"1.29.8\", drain: tidemark, maxUnavailable: 2, drainTimeout: 5m}",
    );
    repo.write("clusters/sim.yaml", &manifest)?;
    repo.commit("general: drained by tidemark")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let cache = dir.path().join("cache");
    let agent_log = dir.path().join("agent.log");

    // Kill points, each taken once, in order: the observed state at which the agent dies
    // (`logged`: the nodes replaceNode was started for). A replaceNode command waits until
    // the test has looked at the cluster without killing, so the points where it runs
    // cannot be missed; the others are open for a pass interval or more.
    type Point = (&'static str, fn(&Seen, &[String]) -> bool);
    let cordoned = |s: &Seen| s.nodes.values().filter(|n| n.1).count();
    let points: [Point; 5] = [
        ("first batch cordoned, evicting", |s, logged| {
            logged.len() <= 1 && s.nodes.values().any(|n| n.1)
        }),
        ("first replaceNode running", |_, logged| logged.len() == 1),
        (
            "second replaceNode of the first batch running",
            |_, logged| logged.len() == 2,
        ),
        ("second batch cordoned, evicting", |s, logged| {
            (2..4).contains(&logged.len())
                && s.nodes
                    .iter()
                    .any(|(name, n)| n.1 && !logged.contains(name))
        }),
        ("last replaceNode running", |_, logged| logged.len() == 4),
    ];
    let mut agent = Agent::start(&repo, &sim, &cache, &agent_log)?;
    let mut next_point = 0;
    let mut kills = Vec::new();
    let mut max_cordoned = 0;
    let mut messages: Vec<String> = Vec::new();
    let mut pdb_held = false;
    let mut drained_with_daemon_pod = 0;
    let start = Instant::now();
    let end = loop {
        let seen = look(&sim)?;
        let logged = lines(&replaced_log);
        max_cordoned = max_cordoned.max(cordoned(&seen));
        if messages.last() != Some(&seen.message) {
            messages.push(seen.message.clone());
        }
        // db-pdb allows no eviction: the drain holds, names it, and evicts no db pod, until
        // an operator relaxes the budget.
        if !pdb_held
            && seen
                .message
                .contains("The disruption budget db-pdb needs 2 healthy pods")
        {
            assert_eq!(
                db_pods()?,
                db_before,
                "no db pod was evicted past its budget"
            );
            sim.kubectl(&[
                "patch",
                "pdb",
                "db-pdb",
                "-n",
                "default",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"minAvailable":1}}"#,
            ])?;
            pdb_held = true;
        }
        assert!(
            !matches!(seen.phase.as_str(), "Blocked" | "Failed"),
            "{}: {} (agent log: {})",
            seen.phase,
            seen.message,
            agent_log.display()
        );
        if let Some((name, at)) = points.get(next_point)
            && at(&seen, &logged)
        {
            // A node drained for replacement still runs its DaemonSet pod (never evicted),
            // and nothing else.
            if let Some(node) = logged.last().filter(|n| seen.nodes.contains_key(*n)) {
                let pods = sim.kubectl(&[
                    "get",
                    "pods",
                    "-A",
                    "--field-selector",
                    &format!("spec.nodeName={node}"),
                    "-o",
                    "jsonpath={.items[*].metadata.labels.app}",
                ])?;
                assert_eq!(
                    pods.trim(),
                    "node-agent",
                    "pods left on drained node {node}"
                );
                drained_with_daemon_pod += 1;
            }
            agent.kill9()?;
            kills.push(format!(
                "{name} ({} replace commands started)",
                logged.len()
            ));
            next_point += 1;
            agent = Agent::start(&repo, &sim, &cache, &agent_log)?;
        } else {
            for node in &logged {
                std::fs::write(go.join(node), "")?;
            }
        }
        let done = seen.nodes.len() == 4
            && seen
                .nodes
                .values()
                .all(|(v, cordoned, ready)| v == "v1.29.8" && !cordoned && *ready);
        if done && seen.phase == "Converged" {
            break seen;
        }
        if start.elapsed() > Duration::from_secs(240) {
            bail!(
                "not converged: {} {} nodes {:?}, kills {kills:?}, replaced {:?}; agent log {}",
                seen.phase,
                seen.message,
                seen.nodes,
                lines(&replaced_log),
                std::fs::read_to_string(&agent_log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(agent);

    assert_eq!(kills.len(), 5, "every kill point was reached: {kills:?}");
    // Each original node replaced exactly once, by the command and in the cloud.
    let mut invoked = lines(&replaced_log);
    invoked.sort();
    assert_eq!(invoked, original, "replaceNode ran once per original node");
    let state = tidemark_e2e::tidemark(&[
        "sim",
        "ctl",
        "--kubeconfig",
        &sim.kubeconfig().display().to_string(),
        "state",
    ])?;
    let state: Value = serde_json::from_str(&state.stdout).context("sim ctl state")?;
    for node in &original {
        assert_eq!(
            state["replacedNodes"][node], 1,
            "node {node} replaced once in the cloud: {}",
            state["replacedNodes"]
        );
    }
    assert!(end.nodes.keys().all(|n| !original.contains(n)));
    assert_eq!(max_cordoned, 2, "two nodes cordoned at a time, never more");
    assert!(
        pdb_held,
        "the disruption budget held the drain and the status named it: {messages:#?}"
    );
    // The budget was never broken and the workload is whole again.
    let web: Value = serde_json::from_str(&sim.kubectl(&[
        "get",
        "deployment",
        "web",
        "-n",
        "default",
        "-o",
        "json",
    ])?)?;
    assert_eq!(web["status"]["availableReplicas"], 4);
    assert!(
        drained_with_daemon_pod >= 3,
        "drained nodes kept their DaemonSet pod: seen on {drained_with_daemon_pod} of them"
    );
    Ok(())
}
