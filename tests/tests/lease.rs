//! Two agents for the same cluster: exactly one acts (the Lease holder); when it is killed
//! with SIGKILL, the other takes over; SIGTERM stops an agent cleanly and frees the Lease.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tidemark_e2e::{
    SimProcess, WorkRepo, agent_log as log_of, fleet_yaml, spawn_agent,
    status_annotation as status, wait_until,
};

fn manifest(version: &str) -> String {
    tidemark_e2e::sim_manifest(tidemark_e2e::CLUSTERAPI, version, &[("general", version)])
}

fn holder(sim: &SimProcess) -> String {
    sim.kubectl(&[
        "get",
        "lease",
        "tidemark",
        "-n",
        "tidemark-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .unwrap_or_default()
}

#[test]
fn one_of_two_agents_acts_and_the_other_takes_over_when_it_dies() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=1",
        "--speed",
        "50",
    ])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    repo.write("clusters/sim.yaml", &manifest("1.29.8"))?;
    let first = repo.commit("1.29")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("a"))?;
    std::fs::create_dir_all(dir.path().join("b"))?;
    let a = spawn_agent(repo.path(), &sim, "agent-a", &dir.path().join("a"))?;
    let b = spawn_agent(repo.path(), &sim, "agent-b", &dir.path().join("b"))?;

    wait_until(Duration::from_secs(60), "convergence on 1.29.8", || {
        status(&sim, "applied-revision") == first
    })?;
    let leader = holder(&sim);
    let (mut active, mut standby, standby_id) = match leader.as_str() {
        "agent-a" => (a, b, "agent-b"),
        "agent-b" => (b, a, "agent-a"),
        other => bail!("unexpected Lease holder {other:?}"),
    };
    assert!(
        log_of(&dir.path().join(&leader[6..]), &leader).contains("executing step"),
        "the leader acted"
    );
    assert!(
        !log_of(&dir.path().join(&standby_id[6..]), standby_id).contains("executing step"),
        "the standby never acts"
    );

    // SIGKILL the leader; the next version must be rolled out by the other one.
    active.kill()?;
    active.wait()?;
    repo.write("clusters/sim.yaml", &manifest("1.30.4"))?;
    let second = repo.commit("1.30")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let took_over = wait_until(
        Duration::from_secs(60),
        "convergence on 1.30.4 by the standby",
        || status(&sim, "applied-revision") == second,
    );
    if let Err(e) = took_over {
        let log = log_of(&dir.path().join(&standby_id[6..]), standby_id);
        let tail: Vec<&str> = log.lines().rev().take(12).collect();
        anyhow::bail!(
            "{e}: phase {:?} message {:?}; standby log, newest first:\n{}",
            status(&sim, "phase"),
            status(&sim, "message"),
            tail.join("\n")
        );
    }
    assert_eq!(holder(&sim), standby_id);
    let log = log_of(&dir.path().join(&standby_id[6..]), standby_id);
    assert!(
        log.contains("acquired the Lease") && log.contains("executing step"),
        "{log}"
    );

    // SIGTERM: a clean exit that frees the Lease.
    let pid = standby.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()?
            .success()
    );
    let start = Instant::now();
    let code = loop {
        if let Some(status) = standby.try_wait()? {
            break status.code();
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = standby.kill();
            bail!("agent did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    assert_eq!(holder(&sim), "", "the Lease is released on stop");
    Ok(())
}

#[test]
fn a_local_repo_change_triggers_a_pass_at_once() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=1",
        "--speed",
        "50",
    ])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    repo.write("clusters/sim.yaml", &manifest("1.28.9"))?;
    let first = repo.commit("as is")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let dir = tempfile::tempdir()?;
    // A 5-minute interval: only the file watch can make it act within the test.
    let mut agent = tidemark_e2e::spawn_agent_with(
        repo.path(),
        &sim,
        "watcher",
        dir.path(),
        &["--interval", "5m"],
    )?;
    wait_until(Duration::from_secs(30), "the first pass", || {
        status(&sim, "applied-revision") == first
    })?;
    // Nothing changed: the agent reading the repo must not trigger passes of its own.
    let addr = tidemark_e2e::agent_metrics_addr(dir.path(), "watcher")
        .context("no metrics address in the log")?;
    let passes = || -> Result<f64> {
        let (_, body) = tidemark_e2e::http_get(&addr, "/metrics")?;
        Ok(body
            .lines()
            .filter(|l| l.starts_with("tidemark_passes_total{"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum())
    };
    let before = passes()?;
    std::thread::sleep(Duration::from_secs(3));
    let idle = passes()? - before;
    assert!(idle <= 1.0, "{idle} passes in 3 s with nothing changed");
    // A change one pass converges (a 5-minute interval allows no second pass in time).
    repo.write(
        "clusters/sim.yaml",
        &format!("{}  paused: false\n", manifest("1.28.9")),
    )?;
    let second = repo.commit("say paused: false")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let moved = Instant::now();
    let result = wait_until(
        Duration::from_secs(60),
        "the change after the tag moved",
        || status(&sim, "applied-revision") == second,
    );
    let _ = agent.kill();
    let _ = agent.wait();
    result?;
    assert!(moved.elapsed() < Duration::from_secs(60));
    assert!(log_of(dir.path(), "watcher").contains("watching the local fleet repo"));
    Ok(())
}

#[test]
fn outside_the_maintenance_window_the_agent_waits_then_proceeds() -> Result<()> {
    // A window that opens at the next full minute at least 15 s away (UTC), for an hour.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let opens = (now + 15).div_ceil(60) * 60;
    let (hh, mm) = ((opens / 3600) % 24, (opens / 60) % 60);
    let weekday =
        ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][((opens / 86_400) % 7) as usize];
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=1",
        "--speed",
        "50",
    ])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    let text = manifest("1.29.8")
        + &format!(
            "  maintenanceWindow: {{days: [{weekday}], start: \"{hh:02}:{mm:02}\", duration: 1h, timeZone: UTC}}\n"
        );
    repo.write("clusters/sim.yaml", &text)?;
    let target = repo.commit("upgrade inside the window")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let dir = tempfile::tempdir()?;
    let mut agent = tidemark_e2e::spawn_agent(repo.path(), &sim, "windowed", dir.path())?;
    let waited = wait_until(Duration::from_secs(20), "the Waiting phase", || {
        status(&sim, "phase") == "Waiting"
    });
    let message = status(&sim, "message");
    let control_plane_while_waiting = sim.kubectl(&["version", "-o", "json"])?;
    let proceeded = wait_until(
        Duration::from_secs(120),
        "the upgrade once the window opened",
        || status(&sim, "applied-revision") == target,
    );
    let _ = agent.kill();
    let _ = agent.wait();
    waited?;
    assert!(
        message.starts_with(
            "upgrade control plane 1.28.9 -> 1.29.8 waits for the maintenance window; next opens "
        ),
        "{message}"
    );
    assert!(
        control_plane_while_waiting.contains("\"gitVersion\": \"v1.28.9\""),
        "nothing changed while waiting"
    );
    proceeded?;
    let opened_at = std::time::UNIX_EPOCH + Duration::from_secs(opens);
    assert!(
        std::time::SystemTime::now() >= opened_at,
        "it proceeded only once the window was open"
    );
    Ok(())
}

/// Issue 9: the Lease used to be renewed on the same task as the pass, which ran git on
/// the async executor: a fetch that hung longer than the Lease let it expire, a standby
/// replica took over, and both replicas then acted. Renewal has its own task now and git
/// runs on the blocking pool: the holder keeps the Lease through the stall, and the
/// provider is asked exactly once.
#[test]
fn a_fetch_stalled_longer_than_the_lease_does_not_let_two_replicas_act() -> Result<()> {
    let sim = SimProcess::start(&["--version", "1.29.8", "--node-groups", "general=1"])?;
    let dir = tempfile::tempdir()?;
    let requests = dir.path().join("requests.log");
    let script = dir.path().join("upgrade");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$TIDEMARK_TARGET_VERSION\" >> {}\n",
            requests.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let exec = format!(
        "{{kind: exec, upgradeControlPlane: [\"{s}\"], upgradeNodeGroup: [\"{s}\"], timeout: 10m}}",
        s = script.display()
    );
    let manifest = |cp: &str| tidemark_e2e::sim_manifest(&exec, cp, &[("general", "1.29.8")]);
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    repo.write("clusters/sim.yaml", &manifest("1.29.8"))?;
    let first = repo.commit("as it runs")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let daemon = tidemark_e2e::GitDaemon::start(&repo.base_dir())?;
    let proxy = tidemark_e2e::StallingProxy::start(&daemon.addr())?;
    let url = format!("git://{}/{}", proxy.addr(), repo.name());

    std::fs::create_dir_all(dir.path().join("a"))?;
    std::fs::create_dir_all(dir.path().join("b"))?;
    let mut a = spawn_agent(
        std::path::Path::new(&url),
        &sim,
        "agent-a",
        &dir.path().join("a"),
    )?;
    wait_until(Duration::from_secs(60), "agent-a converged", || {
        status(&sim, "applied-revision") == first && holder(&sim) == "agent-a"
    })?;
    let mut b = spawn_agent(
        std::path::Path::new(&url),
        &sim,
        "agent-b",
        &dir.path().join("b"),
    )?;
    std::thread::sleep(Duration::from_secs(1));

    // Git hangs for four Lease durations while the next commit asks for an upgrade.
    proxy.stall_for(Duration::from_secs(8));
    repo.write("clusters/sim.yaml", &manifest("1.30.4"))?;
    repo.commit("upgrade")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    // Who holds the Lease while git hangs, as kubectl sees it.
    let mut holders = std::collections::BTreeSet::new();
    let stalled = Instant::now();
    while stalled.elapsed() < Duration::from_secs(8) {
        holders.insert(holder(&sim));
        std::thread::sleep(Duration::from_millis(250));
    }
    let asked = || std::fs::read_to_string(&requests).unwrap_or_default();
    wait_until(Duration::from_secs(60), "the upgrade requested", || {
        !asked().is_empty()
    })?;
    // Time for a second replica to act, if one could.
    std::thread::sleep(Duration::from_secs(4));
    let held = holder(&sim);
    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();
    assert_eq!(asked(), "1.30.4\n", "the provider was asked exactly once");
    assert_eq!(
        held, "agent-a",
        "the holder kept the Lease through the stall"
    );
    assert!(
        !log_of(&dir.path().join("b"), "agent-b").contains("executing step"),
        "the standby never acted"
    );
    Ok(())
}
