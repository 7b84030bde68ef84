//! The agent under abuse: `kill -9` at many points of a rollout, and API faults (errors,
//! conflicts, latency, an outage) from the simulated cluster. It must always converge,
//! never issue a provider request twice for the same target, and never downgrade.

use std::time::{Duration, Instant};

use anyhow::Result;
use tidemark_e2e::{
    SimProcess, WorkRepo, agent_log, fleet_yaml, spawn_agent, status_annotation, wait_until,
};

fn manifest(cp: &str, groups: &str) -> String {
    tidemark_e2e::sim_manifest(
        tidemark_e2e::CLUSTERAPI,
        cp,
        &[("general", groups), ("gpu", groups)],
    )
}

/// Every provider request that succeeded, in order, from the logs.
fn executed(logs: &[String]) -> Vec<String> {
    logs.iter()
        .flat_map(|l| l.lines())
        .filter(|l| l.contains("step requested"))
        .filter_map(|l| l.split("step=").nth(1).map(|s| s.trim().to_string()))
        .collect()
}

#[test]
fn kill_9_at_ten_points_of_a_rollout_still_converges_without_repeats() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=2,gpu=1",
        "--speed",
        "20",
    ])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    // The hop through 1.29 lands on a listed patch release (Cluster API needs one).
    repo.write(
        "fleet.yaml",
        &format!(
            "{}  kubernetesVersions: [\"1.29.8\"]\n",
            fleet_yaml(&["canary"])
        ),
    )?;
    repo.write("clusters/sim.yaml", &manifest("1.30.4", "1.30.4"))?;
    let target = repo.commit("upgrade to 1.30")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let dir = tempfile::tempdir()?;

    // Fixed kill points (ms after each start), spread over the rollout.
    let kill_after = [150u64, 420, 260, 700, 330, 560, 210, 480, 390, 640];
    let mut minors_seen = Vec::new();
    for (i, ms) in kill_after.iter().enumerate() {
        let mut agent = spawn_agent(repo.path(), &sim, &format!("run-{i}"), dir.path())?;
        std::thread::sleep(Duration::from_millis(*ms));
        agent.kill()?; // SIGKILL
        agent.wait()?;
        let version = sim.kubectl(&["version", "-o", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&version)?;
        minors_seen.push(
            v["serverVersion"]["minor"]
                .as_str()
                .unwrap_or_default()
                .parse::<u32>()
                .unwrap_or(0),
        );
    }
    let mut last = spawn_agent(repo.path(), &sim, "final", dir.path())?;
    let converged = wait_until(
        Duration::from_secs(90),
        "convergence after ten kills",
        || status_annotation(&sim, "applied-revision") == target,
    );
    let _ = last.kill();
    let _ = last.wait();
    if let Err(e) = converged {
        let log = agent_log(dir.path(), "final");
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        anyhow::bail!(
            "{e}; phase {:?}, message {:?}; final agent log (last lines, newest first):\n{}",
            status_annotation(&sim, "phase"),
            status_annotation(&sim, "message"),
            tail.join("\n")
        );
    }

    let logs: Vec<String> = (0..kill_after.len())
        .map(|i| agent_log(dir.path(), &format!("run-{i}")))
        .chain([agent_log(dir.path(), "final")])
        .collect();
    let steps = executed(&logs);
    let mut unique = steps.clone();
    unique.dedup();
    assert_eq!(steps, unique, "a provider request was issued twice");
    assert!(!logs.iter().any(|l| l.contains("panicked")), "no panics");
    assert!(
        minors_seen.windows(2).all(|w| w[0] <= w[1]),
        "never down: {minors_seen:?}"
    );
    let nodes = sim.kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].status.nodeInfo.kubeletVersion}",
    ])?;
    assert!(nodes.split_whitespace().all(|k| k == "v1.30.4"), "{nodes}");
    Ok(())
}

#[test]
fn api_faults_and_an_outage_during_a_rollout() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=1,gpu=1",
        "--speed",
        "30",
        "--faults",
        "latency=5ms,error-rate=0.1,conflict-rate=0.1,drop-watch=2s,outage=2s+30s,seed=7",
    ])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    repo.write("clusters/sim.yaml", &manifest("1.29.8", "1.29.8"))?;
    let target = repo.commit("upgrade to 1.29")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let dir = tempfile::tempdir()?;
    let start = Instant::now();
    let mut agent = spawn_agent(repo.path(), &sim, "faulty", dir.path())?;
    let converged = wait_until(Duration::from_secs(150), "convergence under faults", || {
        status_annotation(&sim, "applied-revision") == target
            && status_annotation(&sim, "phase") == "Converged"
    });
    let still_running = agent.try_wait()?.is_none();
    let _ = agent.kill();
    let _ = agent.wait();
    converged?;
    assert!(still_running, "the agent survived the faults");
    assert!(
        start.elapsed() > Duration::from_secs(30),
        "the 30 s outage was lived through"
    );
    let log = agent_log(dir.path(), "faulty");
    assert!(!log.contains("panicked"), "{log}");
    let steps = executed(std::slice::from_ref(&log));
    let mut unique = steps.clone();
    unique.dedup();
    assert_eq!(steps, unique, "a provider request was issued twice:\n{log}");
    Ok(())
}
