//! `tidemark agent --once`, pass after pass, against a `tidemark sim` process: the real
//! binary converges a simulated cluster from a wave tag; kubectl reads the status.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tidemark_e2e::{Pass, SimProcess, WorkRepo, fleet_yaml, tidemark_bin, tidemark_in};

fn manifest(provider: &str, cp: &str, general: &str, gpu: &str) -> String {
    tidemark_e2e::sim_manifest(provider, cp, &[("general", general), ("gpu", gpu)])
}

/// Runs passes until Converged (or the deadline); returns every executed step in order.
fn converge(
    repo: &WorkRepo,
    sim: &SimProcess,
    cache: &std::path::Path,
    limit: Duration,
) -> Result<Vec<String>> {
    let start = Instant::now();
    let mut steps = Vec::new();
    let mut seen_cp = Vec::new();
    loop {
        let pass = Pass::run(repo, sim, cache)?;
        steps.extend(pass.executed.iter().cloned());
        let version = sim.kubectl(&["version", "-o", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&version)?;
        let cp = v["serverVersion"]["minor"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if seen_cp.last() != Some(&cp) {
            seen_cp.push(cp);
        }
        match pass.phase.as_str() {
            "Converged" => return Ok(steps),
            "Progressing" => {}
            other => bail!(
                "unexpected phase {other}: {} (steps so far: {steps:?})",
                pass.message
            ),
        }
        if start.elapsed() > limit {
            bail!(
                "not converged after {limit:?}: {} (steps: {steps:?}, minors seen: {seen_cp:?})",
                pass.message
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn annotation(sim: &SimProcess, key: &str) -> Result<String> {
    let json = sim.kubectl(&["get", "namespace", "tidemark-system", "-o", "json"])?;
    let ns: serde_json::Value = serde_json::from_str(&json)?;
    Ok(ns["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

#[test]
fn clusterapi_control_plane_1_28_to_1_30_one_minor_at_a_time() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=2,gpu=1",
        "--node-versions",
        "gpu=1.26.15",
        "--speed",
        "50",
    ])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    let capi = tidemark_e2e::CLUSTERAPI;
    repo.write(
        "clusters/sim.yaml",
        &manifest(capi, "1.28.9", "1.28.9", "1.26.15"),
    )?;
    repo.commit("fleet at 1.28")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let cache = tempfile::tempdir()?;

    let first = Pass::run(&repo, &sim, cache.path())?;
    assert_eq!(
        (first.phase.as_str(), first.message.as_str()),
        ("Converged", "converged: control plane 1.28.9")
    );

    // Declare 1.30.4 at once; move the wave tag.
    repo.write(
        "clusters/sim.yaml",
        &manifest(capi, "1.30.4", "1.30.4", "1.29.8"),
    )?;
    let target = repo.commit("upgrade to 1.30")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let steps = converge(&repo, &sim, cache.path(), Duration::from_secs(120))?;
    assert_eq!(
        steps,
        [
            "upgrade control plane 1.28.9 -> 1.29.8",
            "upgrade node group gpu 1.26.15 -> 1.29.8 (to stay within kubelet skew of the next control-plane minor)",
            "upgrade control plane 1.29.8 -> 1.30.4",
            "upgrade node group general 1.28.9 -> 1.30.4 (to its declared version)",
        ]
    );
    assert_eq!(annotation(&sim, "tidemark.dev/applied-revision")?, target);
    assert_eq!(annotation(&sim, "tidemark.dev/phase")?, "Converged");
    assert_eq!(
        annotation(&sim, "tidemark.dev/control-plane")?,
        r#"{"observed":"1.30.4","desired":"1.30.4"}"#
    );
    let nodes = sim.kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].status.nodeInfo.kubeletVersion}",
    ])?;
    let mut kubelets: Vec<&str> = nodes.split_whitespace().collect();
    kubelets.sort();
    assert_eq!(kubelets, ["v1.29.8", "v1.30.4", "v1.30.4"]);
    // The node group's rollout limits reached Cluster API, in the served version's fields
    // (v1beta2: spec.rollout.strategy); no maxSurge (not declared) beyond Cluster API's own
    // default, no drain timeout (it would make Cluster API force the deletion of a machine
    // whose drain does not finish).
    let strategy = sim.kubectl(&[
        "get",
        "machinedeployments.cluster.x-k8s.io",
        "sim-general",
        "-n",
        "capi-system",
        "-o",
        "jsonpath={.apiVersion} {.spec.rollout.strategy.rollingUpdate.maxUnavailable} {.spec.template.spec.deletion.nodeDrainTimeoutSeconds}",
    ])?;
    assert_eq!(strategy, "cluster.x-k8s.io/v1beta2 1 ");
    let managed = sim.kubectl(&[
        "get",
        "machinedeployments.cluster.x-k8s.io",
        "sim-general",
        "-n",
        "capi-system",
        "-o",
        "jsonpath={.metadata.managedFields[?(@.manager==\"tidemark\")].fieldsV1}",
    ])?;
    assert!(
        !managed.contains("maxSurge"),
        "tidemark owns no maxSurge: {managed}"
    );

    // Converged and idle: a pass writes nothing (the status object keeps its resourceVersion).
    let rv = sim.kubectl(&[
        "get",
        "namespace",
        "tidemark-system",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ])?;
    assert_eq!(Pass::run(&repo, &sim, cache.path())?.phase, "Converged");
    let rv_after = sim.kubectl(&[
        "get",
        "namespace",
        "tidemark-system",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ])?;
    assert_eq!(rv, rv_after, "an idle pass must not write");

    // Events record the phase transitions; an Event about the cluster-scoped status
    // Namespace lives in `default`, as a real API server requires.
    let events = sim.kubectl(&[
        "get",
        "events.v1.events.k8s.io",
        "-n",
        "default",
        "-o",
        "jsonpath={.items[*].reason}",
    ])?;
    assert!(
        events.contains("Progressing") && events.contains("Converged"),
        "{events}"
    );

    // A downgrade declared now is refused and nothing changes.
    repo.write(
        "clusters/sim.yaml",
        &manifest(capi, "1.29.8", "1.29.8", "1.29.8"),
    )?;
    repo.commit("downgrade")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    // Every pass refuses it, not only the first (issue 9: the second pass used to read the
    // lowered declaration as the previous one and report Converged).
    for _ in 0..3 {
        let pass = Pass::run(&repo, &sim, cache.path())?;
        assert_eq!(pass.phase, "Blocked");
        assert!(pass.executed.is_empty());
        assert_eq!(
            pass.message,
            "control plane runs 1.30.4, newer than the declared 1.29.8: tidemark never downgrades; declare 1.30.4 or later; \
             node group general runs 1.30.4, newer than the declared 1.29.8: tidemark never downgrades"
        );
        assert_eq!(annotation(&sim, "tidemark.dev/applied-revision")?, target);
        assert_eq!(annotation(&sim, "tidemark.dev/phase")?, "Blocked");
    }
    let cp = tidemark_e2e::status_record(&sim)?
        .control_plane
        .context("no control-plane status")?;
    assert_eq!(cp.desired.to_string(), "1.29.8");
    assert_eq!(
        cp.accepted.map(|v| v.to_string()).as_deref(),
        Some("1.30.4")
    );
    Ok(())
}

#[test]
fn exec_provider_through_the_simulated_cloud() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=1,gpu=1",
        "--speed",
        "50",
    ])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    let bin = tidemark_bin()?.display().to_string();
    let exec = format!(
        "{{kind: exec, upgradeControlPlane: [\"{bin}\", sim, ctl, upgrade-control-plane], upgradeNodeGroup: [\"{bin}\", sim, ctl, upgrade-node-group], timeout: 1m}}"
    );
    repo.write(
        "clusters/sim.yaml",
        &manifest(&exec, "1.30.4", "1.30.4", "1.28.9"),
    )?;
    // The hop through 1.29 lands on a listed patch release.
    repo.write(
        "fleet.yaml",
        &format!(
            "{}  kubernetesVersions: [\"1.29.8\"]\n",
            fleet_yaml(&["canary"])
        ),
    )?;
    repo.commit("exec fleet")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let cache = tempfile::tempdir()?;
    let steps = converge(&repo, &sim, cache.path(), Duration::from_secs(120))?;
    assert_eq!(
        steps,
        [
            "upgrade control plane 1.28.9 -> 1.29.8",
            "upgrade control plane 1.29.8 -> 1.30.4",
            "upgrade node group general 1.28.9 -> 1.30.4 (to its declared version)",
        ],
        "each request issued once, one minor at a time"
    );
    let nodes = sim.kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].status.nodeInfo.kubeletVersion}",
    ])?;
    let mut kubelets: Vec<&str> = nodes.split_whitespace().collect();
    kubelets.sort();
    assert_eq!(kubelets, ["v1.28.9", "v1.30.4"]);
    Ok(())
}

#[test]
fn demo_rolls_the_example_fleet_out_wave_by_wave() -> Result<()> {
    let root = tidemark_e2e::workspace_root();
    let helm = tidemark_e2e::helm_bin()?.display().to_string();
    let work = tempfile::tempdir()?;
    let kept = work.path().join("fleet");
    let run = tidemark_in(
        &[
            "demo",
            "--timeout",
            "100s",
            "--helm-bin",
            &helm,
            "--keep-repo",
            &kept.display().to_string(),
        ],
        Some(&root),
        &[],
    )?;
    assert_eq!(run.code, Some(0), "{run:?}");
    // plan --offline --all on the demo's fleet repo, its wave tags back where they were
    // before the rollout: the hops it shows are those the agents then executed.
    offline_plan_matches_the_demo(&kept, &helm, &run.stdout)?;
    let lines: Vec<&str> = run.stdout.lines().collect();
    let promoted: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("tidemark promote ") && l.contains(": moved "))
        .copied()
        .collect();
    assert_eq!(promoted.len(), 3, "{}", run.stdout);
    for (i, wave) in ["canary", "early", "main"].iter().enumerate() {
        assert!(
            promoted[i].starts_with(&format!("tidemark promote {wave}: moved wave/{wave} to ")),
            "{promoted:?}"
        );
        // A wave is promoted only after the previous one converged.
        let converged = lines
            .iter()
            .position(|l| *l == format!("wave {wave} converged"));
        let next = promoted
            .get(i + 1)
            .and_then(|p| lines.iter().position(|l| l == p));
        assert!(converged.is_some(), "{}", run.stdout);
        if let (Some(c), Some(n)) = (converged, next) {
            assert!(c < n, "wave {wave} must converge before the next promotion");
        }
    }
    assert!(
        run.stdout.contains("rolled out to 7 clusters in "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("  prod-eu-1      early   1.28.9 -> 1.29.14"),
        "{}",
        run.stdout
    );
    // prod-eu-1 and prod-eu-2 keep their Cluster API objects in a management cluster, which
    // the demo simulates: each version their agents set moved there (as it happened), is
    // there at the end (read back through its API), and only it served their Cluster API
    // writes (the sims' request counters): one patch per object, none in the workload
    // clusters.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("management cluster https://127.0.0.1:")
                && l.ends_with(": holds the Cluster API objects of prod-eu-1, prod-eu-2")),
        "{}",
        run.stdout
    );
    for (object, from) in [
        ("KubeadmControlPlane prod-eu-1/prod-eu-1", "v1.28.9"),
        ("MachineDeployment prod-eu-1/prod-eu-1-general", "v1.28.9"),
        ("MachineDeployment prod-eu-1/prod-eu-1-gpu", "v1.27.13"),
        ("KubeadmControlPlane prod-eu-2/prod-eu-2", "v1.28.9"),
        ("MachineDeployment prod-eu-2/prod-eu-2-general", "v1.28.9"),
        ("MachineDeployment prod-eu-2/prod-eu-2-storage", "v1.28.9"),
    ] {
        let moved = format!("management cluster: {object} {from} -> v1.29.14");
        assert!(lines.contains(&moved.as_str()), "{moved}\n{}", run.stdout);
        let held = format!("  {object} at v1.29.14");
        assert!(lines.contains(&held.as_str()), "{held}\n{}", run.stdout);
    }
    // The management cluster's lines come after prod-eu-1's wave (early) was promoted:
    // they follow what the agents did, they are not printed from the plan.
    let early = lines
        .iter()
        .position(|l| l.starts_with("tidemark promote early: moved"));
    let kcp = lines.iter().position(|l| {
        *l == "management cluster: KubeadmControlPlane prod-eu-1/prod-eu-1 v1.28.9 -> v1.29.14"
    });
    assert!(
        matches!((early, kcp), (Some(e), Some(k)) if e < k),
        "{}",
        run.stdout
    );
    assert!(
        lines.contains(
            &"Cluster API writes the management cluster served (from the agents of prod-eu-1, prod-eu-2): patch kubeadmcontrolplanes 2, patch machinedeployments 4"
        ),
        "{}",
        run.stdout
    );
    assert!(
        lines.contains(&"Cluster API writes the workload clusters prod-eu-1, prod-eu-2 served: 0"),
        "{}",
        run.stdout
    );
    // The self-managed ones wrote their own: dev-eu-1 and edge-ap-1 their control plane and
    // MachineDeployments (3 and 2), staging-eu-1 (ClusterClass) its Cluster's topology only.
    assert!(
        lines.contains(
            &"Cluster API writes the other clusters served (self-managed ones write their own): 6"
        ),
        "{}",
        run.stdout
    );
    // Promoted by `tidemark promote`'s rules, with the soak it says it shortened.
    assert!(
        run.stdout
            .contains("soak 3s instead of canary 10m, early 1h (shortened for the demo)"),
        "{}",
        run.stdout
    );
    assert!(
        promoted[1].contains("2 cluster(s) of wave canary converged at it and soaked 3s"),
        "{promoted:?}"
    );
    // It ends with `tidemark status`: every cluster at its wave tag.
    let status = run
        .stdout
        .split("$ tidemark status")
        .nth(1)
        .unwrap_or_default();
    assert!(status.contains("7 cluster(s): 7 Converged"), "{status}");
    assert_eq!(status.matches(" yes ").count(), 7, "{status}");
    Ok(())
}

/// Compares `plan --offline --all` (run on the demo's fleet repo with every wave tag
/// moved back to the first commit) with the steps the demo's agents executed, cluster by
/// cluster.
fn offline_plan_matches_the_demo(repo: &std::path::Path, helm: &str, demo: &str) -> Result<()> {
    let git = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let first = git(&["rev-list", "--max-parents=0", "HEAD"])?;
    let upgrade = git(&["rev-parse", "HEAD"])?;
    for wave in ["canary", "early", "main"] {
        git(&[
            "tag",
            "-f",
            "-a",
            &format!("wave/{wave}"),
            "-m",
            "back",
            &first,
        ])?;
    }
    let cache = tempfile::tempdir()?;
    let run = tidemark_in(
        &[
            "plan",
            "--offline",
            "--all",
            "--repo",
            &repo.display().to_string(),
            "--to",
            &upgrade,
            "--format",
            "json",
            "--helm-bin",
            helm,
            "--cache-dir",
            &cache.path().display().to_string(),
        ],
        None,
        &[],
    )?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let plan: serde_json::Value = serde_json::from_str(&run.stdout)?;
    let clusters = plan["clusters"].as_array().context("clusters")?;
    assert_eq!(clusters.len(), 7, "{}", run.stdout);
    let executed: std::collections::BTreeMap<&str, Vec<&str>> = demo
        .lines()
        .skip_while(|l| *l != "control-plane and node-group steps the agents executed:")
        .skip(1)
        .map_while(|l| l.strip_prefix("  ")?.split_once(": "))
        .map(|(name, steps)| (name, steps.split("; ").filter(|s| !s.is_empty()).collect()))
        .collect();
    assert_eq!(executed.len(), 7, "{demo}");
    for c in clusters {
        let name = c["cluster"].as_str().context("cluster")?;
        let planned: Vec<String> = c["route"]
            .as_array()
            .context("route")?
            .iter()
            .filter_map(|s| s.as_str())
            .filter(|s| {
                s.starts_with("upgrade control plane ") || s.starts_with("upgrade node group ")
            })
            .map(str::to_string)
            .collect();
        assert!(!planned.is_empty(), "{name}: {c}");
        assert_eq!(
            planned,
            executed.get(name).cloned().unwrap_or_default(),
            "{name}: plan --offline against what its agent executed"
        );
    }
    Ok(())
}

#[test]
fn drain_blocked_by_a_disruption_budget_stops_at_drain_timeout_and_says_why() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.29.8",
        "--node-groups",
        "general=1,gpu=1",
        "--speed",
        "50",
    ])?;
    // Two pods pinned to the general group's one node: the budget allows one eviction
    // (so the pre-flight check lets the rollout begin), but the evicted pod cannot run
    // anywhere else, so the second eviction never comes.
    let node = sim.kubectl(&[
        "get",
        "nodes",
        "-l",
        "tidemark.dev/node-group=general",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ])?;
    let workload = sim.dir_file(
        "web.yaml",
        &format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      containers: [{{name: web, image: example/web:1}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web-pdb, namespace: default}}
spec:
  minAvailable: 1
  selector: {{matchLabels: {{app: web}}}}
"
        ),
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
    let capi = tidemark_e2e::CLUSTERAPI;
    let text = manifest(capi, "1.30.4", "1.29.8", "1.29.8").replace(
        "{name: general, version: \"1.29.8\"}",
        "{name: general, version: \"1.30.4\", drainTimeout: 4s}",
    );
    repo.write("clusters/sim.yaml", &text)?;
    repo.commit("upgrade general")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let cache = tempfile::tempdir()?;

    let start = Instant::now();
    let mut held = None;
    loop {
        let pass = Pass::run(&repo, &sim, cache.path())?;
        if pass.phase == "Blocked" {
            assert!(held.is_some(), "the hold was reported before the timeout");
            assert!(
                start.elapsed() >= Duration::from_secs(4),
                "blocked only after drainTimeout"
            );
            assert!(
                pass.message.starts_with(
                    "node group general: rollout not finished within drainTimeout 4s: "
                ),
                "{}",
                pass.message
            );
            assert!(
                pass.message.contains("web-pdb"),
                "the message names the PodDisruptionBudget: {}",
                pass.message
            );
            assert_eq!(annotation(&sim, "tidemark.dev/phase")?, "Blocked");
            break;
        }
        if pass
            .message
            .starts_with("node group general rolling, held: ")
        {
            held = Some(pass.message.clone());
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never blocked: {} {}",
            pass.phase,
            pass.message
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let held = held.unwrap_or_default();
    // The status names the Machine, its Node, the pod and the PodDisruptionBudget, in Cluster
    // API's words (read from the Machine being deleted).
    let machine = between(&held, "machine ", " (node ");
    assert!(
        held.contains(&format!("machine {machine} (node {machine}) draining: Drain not completed yet (started at "))
            && held.contains("Pod default/web-")
            && held.contains("cannot evict pod as it would violate the pod's disruption budget. The disruption budget web-pdb needs 1 healthy pods and has 1 currently"),
        "{held}"
    );
    // Nothing was forced: the Machine waits, deleting, its Node still there; the pod runs.
    let state = sim.ctl_state(&sim.kubeconfig())?;
    assert_eq!(state["drainsForced"], 0, "{state}");
    assert_eq!(state["machinesDeleted"], 0, "{state}");
    let deleting = sim.kubectl(&[
        "get",
        "machines.cluster.x-k8s.io",
        &machine,
        "-n",
        "capi-system",
        "-o",
        "jsonpath={.metadata.deletionTimestamp} {.status.conditions[?(@.type==\"Deleting\")].reason}",
    ])?;
    assert!(
        deleting.ends_with(" DrainingNode") && deleting.len() > " DrainingNode".len(),
        "{deleting}"
    );
    let pod_node = sim.kubectl(&[
        "get",
        "pods",
        "-n",
        "default",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ])?;
    assert_eq!(
        pod_node, machine,
        "the pod still runs on the node being drained"
    );
    Ok(())
}

/// The text between `start` and `end` in `text` ("" without).
fn between(text: &str, start: &str, end: &str) -> String {
    text.split_once(start)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(found, _)| found.to_string())
        .unwrap_or_default()
}

#[test]
fn exec_status_command_holds_the_agent_while_the_cloud_is_busy() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=1,gpu=1",
        "--speed",
        "50",
    ])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    let bin = tidemark_bin()?.display().to_string();
    let marker = tempfile::tempdir()?;
    let busy = marker.path().join("busy");
    // The status command exits 1 with a message while the marker exists (an operation the
    // cloud runs on its own, say), 0 otherwise.
    let exec = format!(
        "{{kind: exec, upgradeControlPlane: [\"{bin}\", sim, ctl, upgrade-control-plane], upgradeNodeGroup: [\"{bin}\", sim, ctl, upgrade-node-group], status: [/bin/sh, -c, \"if [ -e {m} ]; then echo 'cluster update 42 in progress'; exit 1; fi\"], timeout: 1m}}",
        m = busy.display()
    );
    repo.write(
        "clusters/sim.yaml",
        &manifest(&exec, "1.29.8", "1.29.8", "1.28.9"),
    )?;
    repo.commit("exec fleet")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let cache = tempfile::tempdir()?;

    std::fs::write(&busy, "")?;
    let held = Pass::run(&repo, &sim, cache.path())?;
    assert_eq!(
        (held.phase.as_str(), held.message.as_str()),
        (
            "Progressing",
            "the provider reports a request in progress: cluster update 42 in progress"
        )
    );
    assert!(
        held.executed.is_empty(),
        "nothing is asked of a busy provider"
    );
    let version = sim.kubectl(&["version", "-o", "json"])?;
    assert!(version.contains("\"gitVersion\": \"v1.28.9\""));

    std::fs::remove_file(&busy)?;
    let steps = converge(&repo, &sim, cache.path(), Duration::from_secs(60))?;
    assert_eq!(steps[0], "upgrade control plane 1.28.9 -> 1.29.8");
    Ok(())
}

/// Issue 10: without a usable helm the demo waited 110 s and failed. It says at once how to
/// get one, before it starts anything.
#[test]
fn demo_without_helm_says_how_to_get_one_before_starting_anything() -> Result<()> {
    let root = tidemark_e2e::workspace_root();
    let started = Instant::now();
    let run = tidemark_in(
        &["demo", "--helm-bin", "/nonexistent/helm"],
        Some(&root),
        &[],
    )?;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("the demo needs helm") && run.stderr.contains("scripts/demo.sh"),
        "{run:?}"
    );
    assert!(run.stdout.is_empty(), "nothing started: {run:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    Ok(())
}

/// `tidemark sim ctl state | head` ends quietly when the reader has gone (exit 0, no panic,
/// nothing on stderr), and a stdout that cannot be written is an error, not a panic.
#[test]
fn sim_ctl_state_into_a_closed_pipe_ends_quietly() -> Result<()> {
    use std::process::{Command, Stdio};
    let sim = SimProcess::start(&["--version", "1.29.8", "--node-groups", "general=20"])?;
    let mut child = Command::new(tidemark_bin()?)
        .args(["sim", "ctl", "--kubeconfig"])
        .arg(sim.kubeconfig())
        .arg("state")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The reader goes before the state (many kilobytes) is written.
    drop(child.stdout.take());
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");

    let full = std::fs::OpenOptions::new().write(true).open("/dev/full")?;
    let out = Command::new(tidemark_bin()?)
        .args(["sim", "ctl", "--kubeconfig"])
        .arg(sim.kubeconfig())
        .arg("state")
        .stdout(full)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("failed to write to stdout") && !stderr.contains("panicked"),
        "{stderr}"
    );
    Ok(())
}
