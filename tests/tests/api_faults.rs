//! The Kubernetes-API half of the fault matrix (issue 14, item 4): the real agent, long
//! running, converges a helm component (the official helm) on a `tidemark sim` that
//! throttles with `Retry-After`, answers slowly, or goes away in the middle of an apply.
//! Effects are counted by the sim (request counters, the record of retries after 429s),
//! never read from log lines; kubectl reads the cluster independently.
//! (`tests/tests/chaos.rs` has errors, conflicts and an outage during a control-plane
//! rollout.)

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;
use tidemark_e2e::{
    CLUSTERAPI, SimProcess, WorkRepo, agent_log, copy_dir, fleet_yaml, helm_bin, sim_manifest,
    status_annotation, status_record, tidemark_bin, wait_until, workspace_root,
};

/// The kinds metrics-lite renders (5 objects), as the sim counts their requests.
const OBJECTS: [&str; 5] = [
    "serviceaccounts",
    "configmaps",
    "services",
    "deployments",
    "poddisruptionbudgets",
];

/// A fleet repo with cluster `sim` and the metrics-lite chart.
struct Fleet {
    repo: WorkRepo,
}

impl Fleet {
    fn new() -> Result<Self> {
        let repo = WorkRepo::new()?;
        copy_dir(
            &workspace_root().join("fleet-repo-example/charts/metrics-lite"),
            &repo.path().join("charts/metrics-lite"),
        )?;
        // The hop to 1.29 lands on a listed patch release (Cluster API needs one).
        repo.write(
            "fleet.yaml",
            &format!(
                "{}  kubernetesVersions: [\"1.29.8\"]\n",
                fleet_yaml(&["canary"])
            ),
        )?;
        Ok(Self { repo })
    }

    /// Releases the cluster at Kubernetes `version` with revision `rev` of metrics-lite's
    /// values: the ConfigMap's content and the Deployment's pod template (its config
    /// checksum and an annotation) change with it. Returns the commit.
    fn release(&self, version: &str, rev: u32) -> Result<String> {
        let mut m = sim_manifest(CLUSTERAPI, version, &[("general", version)]);
        m.push_str(&format!(
            "  components:
    - name: metrics-lite
      chart: {{path: charts/metrics-lite}}
      namespace: monitoring
      values: {{config: {{externalLabels: {{rev: \"{rev}\"}}}}, podAnnotations: {{rev: \"{rev}\"}}}}
"
        ));
        self.repo.write("clusters/sim.yaml", &m)?;
        let commit = self.repo.commit(&format!("metrics-lite rev {rev}"))?;
        self.repo.git(&["tag", "-f", "wave/canary", &commit])?;
        Ok(commit)
    }
}

fn start_sim(faults: &str) -> Result<SimProcess> {
    let mut args = vec![
        "--version",
        "1.28.9",
        "--node-groups",
        "general=1",
        "--speed",
        "20",
    ];
    if !faults.is_empty() {
        args.extend(["--faults", faults]);
    }
    SimProcess::start(&args)
}

/// Starts the long-running agent with the official helm, the default Lease duration (15 s:
/// the harness's 2 s Lease is shorter than one throttled request's wait) unless `extra`
/// says otherwise, logging to `DIR/IDENTITY.log`.
fn spawn(
    repo: &Path,
    sim: &SimProcess,
    identity: &str,
    dir: &Path,
    extra: &[&str],
) -> Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{identity}.log")))?;
    Ok(Command::new(tidemark_bin()?)
        .args(["--log", "info", "agent", "--repo"])
        .arg(repo)
        .args(["--selector", "cluster=sim", "--identity", identity])
        .args(["--interval", "500ms", "--metrics-addr", "127.0.0.1:0"])
        .args(["--component-wait", "5s", "--helm-bin"])
        .arg(helm_bin()?)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--kubeconfig")
        .arg(sim.kubeconfig())
        .args(extra)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

/// Whether the agent reports `commit` applied and the cluster converged.
fn converged(sim: &SimProcess, commit: &str) -> bool {
    status_annotation(sim, "applied-revision") == commit
        && status_annotation(sim, "phase") == "Converged"
}

/// The `faults` section of `tidemark sim ctl state`.
fn fault_record(sim: &SimProcess) -> Result<Value> {
    Ok(sim.ctl_state(&sim.kubeconfig())?["faults"].clone())
}

/// Stops the agent (SIGKILL: what it left behind is what counts) and fails with the end of
/// its log and the status when `outcome` is an error.
fn finish(
    mut agent: Child,
    outcome: Result<()>,
    sim: &SimProcess,
    dir: &Path,
    id: &str,
) -> Result<String> {
    let still_running = agent.try_wait()?.is_none();
    let _ = agent.kill();
    let _ = agent.wait();
    let log = agent_log(dir, id);
    if let Err(e) = outcome {
        let tail: Vec<&str> = log.lines().rev().take(25).collect();
        bail!(
            "{e}; phase {:?}, message {:?}; agent log (last lines, newest first):\n{}",
            status_annotation(sim, "phase"),
            status_annotation(sim, "message"),
            tail.join("\n")
        );
    }
    assert!(still_running, "the agent exited:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    Ok(log)
}

/// `key` of the request counters, 0 when never seen.
fn count(counts: &BTreeMap<String, u64>, key: &str) -> u64 {
    counts.get(key).copied().unwrap_or(0)
}

/// Applies (server-side apply PATCHes) of metrics-lite's objects so far.
fn object_patches(counts: &BTreeMap<String, u64>) -> u64 {
    OBJECTS
        .iter()
        .map(|k| count(counts, &format!("patch {k}")))
        .sum()
}

/// Deletions of any kind between two readings of the counters (Events aside).
fn deletions(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(k, _)| k.starts_with("delete") && !k.ends_with(" events"))
        .map(|(k, v)| (k.clone(), v - count(before, k)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

#[test]
fn throttled_with_retry_after_the_agent_waits_as_told_and_converges() -> Result<()> {
    let started = Instant::now();
    let sim = start_sim("error-rate=0.3,error-codes=429,retry-after=2s,seed=11")?;
    let fleet = Fleet::new()?;
    let commit = fleet.release("1.28.9", 1)?;
    let dir = tempfile::tempdir()?;
    let agent = spawn(fleet.repo.path(), &sim, "throttled", dir.path(), &[])?;
    let outcome = wait_until(
        Duration::from_secs(240),
        "convergence while throttled",
        || converged(&sim, &commit),
    );
    finish(agent, outcome, &sim, dir.path(), "throttled")?;

    let record = fault_record(&sim)?;
    println!(
        "throttled: converged in {:.1}s; {record}",
        started.elapsed().as_secs_f64()
    );
    // The agent's own requests (kubectl's, reading the status here, are its own client).
    let agent = &record["byClient"]["tidemark"];
    let n = |k: &str| agent[k].as_u64().unwrap_or(0);
    assert!(
        n("throttled") >= 10,
        "the sim throttled the agent: {record}"
    );
    assert!(
        n("retried") >= 5,
        "the agent retried throttled requests: {record}"
    );
    assert_eq!(
        n("retriedEarly"),
        0,
        "the agent retried no request before its Retry-After: {record}"
    );
    let health = status_record(&sim)?;
    assert_eq!(
        health.components["metrics-lite"].health,
        tidemark::status::ComponentHealth::Healthy
    );
    let config = sim.kubectl(&[
        "get",
        "configmap",
        "metrics-lite",
        "-n",
        "monitoring",
        "-o",
        "jsonpath={.data.metrics-lite\\.yaml}",
    ])?;
    assert!(config.contains("rev: \"1\""), "{config}");
    Ok(())
}

#[test]
fn responses_delayed_5s_the_agent_rolls_out_once_and_converges() -> Result<()> {
    let started = Instant::now();
    // One request in five answered 5 s late (the Lease's renewals among them).
    let sim = start_sim("latency=5s,latency-rate=0.2,seed=5")?;
    let fleet = Fleet::new()?;
    let commit = fleet.release("1.29.8", 1)?;
    let before = sim.requests_by_resource()?;
    let dir = tempfile::tempdir()?;
    // A Lease whose renew deadline (40 s) is well above a renewal's 10 s worst case (two
    // slow answers); with the default 15 s (deadline 10 s) the keeper stands by whenever
    // one renewal takes both, as it must: another replica counts from the renewTime.
    let agent = spawn(
        fleet.repo.path(),
        &sim,
        "slow",
        dir.path(),
        &["--lease-duration", "60s"],
    )?;
    let outcome = wait_until(
        Duration::from_secs(420),
        "convergence with slow answers",
        || converged(&sim, &commit),
    );
    let log = finish(agent, outcome, &sim, dir.path(), "slow")?;
    println!(
        "delayed 5s: converged in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let after = sim.requests_by_resource()?;
    let delta = |k: &str| count(&after, k) - count(&before, k);
    // From the sim's counters: one provider request per step, however slow the answers.
    assert_eq!(
        delta("patch kubeadmcontrolplanes"),
        1,
        "one control-plane patch"
    );
    assert_eq!(delta("patch machinedeployments"), 1, "one node-group patch");
    assert_eq!(
        deletions(&before, &after),
        BTreeMap::new(),
        "nothing deleted"
    );
    assert!(
        !log.contains("lost the Lease"),
        "slow answers did not cost the Lease:\n{log}"
    );
    let record = status_record(&sim)?;
    assert_eq!(
        record.components["metrics-lite"].health,
        tidemark::status::ComponentHealth::Healthy
    );
    let nodes = sim.kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].status.nodeInfo.kubeletVersion}",
    ])?;
    assert!(nodes.split_whitespace().all(|k| k == "v1.29.8"), "{nodes}");
    Ok(())
}

/// Sets the sim's faults at run time (`tidemark sim ctl faults SPEC`).
fn set_faults(sim: &SimProcess, spec: &str) -> Result<()> {
    let out = Command::new(tidemark_bin()?)
        .args(["sim", "ctl", "--kubeconfig"])
        .arg(sim.kubeconfig())
        .args(["faults", spec])
        .output()?;
    if !out.status.success() {
        bail!(
            "tidemark sim ctl faults {spec} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The revision of metrics-lite's values that its live ConfigMap and Deployment carry
/// ("" where unreadable).
fn live_revs(sim: &SimProcess) -> (String, String) {
    let get = |args: &[&str]| sim.kubectl(args).unwrap_or_default();
    let config = get(&[
        "get",
        "configmap",
        "metrics-lite",
        "-n",
        "monitoring",
        "-o",
        "jsonpath={.data.metrics-lite\\.yaml}",
    ]);
    let config_rev = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("rev: "))
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    let deployment_rev = get(&[
        "get",
        "deployment",
        "metrics-lite",
        "-n",
        "monitoring",
        "-o",
        "jsonpath={.spec.template.metadata.annotations.rev}",
    ]);
    (config_rev, deployment_rev)
}

/// A 60 s outage (`mode`: `unavailable`, answered 503; `refuse`, connections dropped) that
/// begins once the sim has seen the first apply of metrics-lite's new revision, before its
/// last: the agent resumes and finishes, never reports the component Healthy while an
/// object of the old revision is live, and deletes nothing.
fn outage_mid_apply(mode: &str) -> Result<()> {
    let started = Instant::now();
    let sim = start_sim("")?;
    let fleet = Fleet::new()?;
    let first = fleet.release("1.28.9", 1)?;
    let dir = tempfile::tempdir()?;
    let id = format!("outage-{mode}");
    let mut agent = spawn(fleet.repo.path(), &sim, &id, dir.path(), &[])?;
    let mut outcome = wait_until(Duration::from_secs(90), "revision 1", || {
        converged(&sim, &first)
    });
    let old_inputs = status_record(&sim)?
        .components
        .get("metrics-lite")
        .and_then(|c| c.inputs.clone());

    // Slow answers (300 ms) stretch the apply of five objects over more than a second,
    // so the outage begins between its first and its last PATCH.
    let slow = "latency=300ms";
    let mut before = BTreeMap::new();
    let mut at_outage = 0;
    if outcome.is_ok() {
        set_faults(&sim, slow)?;
        before = sim.requests_by_resource()?;
        let second = fleet.release("1.28.9", 2)?;
        outcome = wait_until(Duration::from_secs(60), "the first apply of rev 2", || {
            at_outage = sim
                .requests_by_resource()
                .map_or(0, |now| object_patches(&now) - object_patches(&before));
            at_outage > 0
        });
        if outcome.is_ok() {
            set_faults(&sim, &format!("{slow},outage=0s+60s,outage-mode={mode}"))?;
            let outage_began = Instant::now();
            std::thread::sleep(Duration::from_secs(60).saturating_sub(outage_began.elapsed()));
            assert!(
                agent.try_wait()?.is_none(),
                "the agent lived through the outage"
            );
            // After the outage: never Healthy for rev 2 while rev 1 is live, until converged.
            let mut unhealthy_claim = None;
            outcome = wait_until(Duration::from_secs(150), "rev 2 after the outage", || {
                if let Ok(record) = status_record(&sim)
                    && let Some(c) = record.components.get("metrics-lite")
                    && c.inputs != old_inputs
                    && c.health == tidemark::status::ComponentHealth::Healthy
                {
                    let live = live_revs(&sim);
                    if live != ("2".to_string(), "2".to_string()) {
                        unhealthy_claim.get_or_insert(live);
                    }
                }
                converged(&sim, &second)
            });
            assert_eq!(
                unhealthy_claim, None,
                "metrics-lite reported Healthy for rev 2 while (ConfigMap, Deployment) were at"
            );
            println!(
                "outage ({mode}): began after {at_outage} of 5 PATCHes; rev 2 converged {:.1}s after the outage began",
                outage_began.elapsed().as_secs_f64()
            );
        }
    }
    set_faults(&sim, "")?;
    let log = finish(agent, outcome, &sim, dir.path(), &id)?;
    let after = sim.requests_by_resource()?;
    assert!(
        (1..5).contains(&at_outage),
        "the outage began in the middle of the apply ({at_outage} of 5 PATCHes sent)"
    );
    assert_eq!(
        deletions(&before, &after),
        BTreeMap::new(),
        "no object of the desired state was deleted"
    );
    assert_eq!(live_revs(&sim), ("2".to_string(), "2".to_string()));
    let record = status_record(&sim)?;
    assert_eq!(
        record.components["metrics-lite"].health,
        tidemark::status::ComponentHealth::Healthy,
        "{log}"
    );
    for kind in [
        "serviceaccount",
        "configmap",
        "service",
        "deployment",
        "poddisruptionbudget",
    ] {
        sim.kubectl(&["get", kind, "metrics-lite", "-n", "monitoring"])?;
    }
    println!(
        "outage ({mode}): whole case {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn a_60s_outage_answering_503_mid_component_apply_resumes_and_finishes() -> Result<()> {
    outage_mid_apply("unavailable")
}

#[test]
fn a_60s_outage_refusing_connections_mid_component_apply_resumes_and_finishes() -> Result<()> {
    outage_mid_apply("refuse")
}
