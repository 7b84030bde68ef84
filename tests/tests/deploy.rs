//! Running tidemark as `deploy/` runs it: git credentials from a file that is rotated
//! under a running agent (a Kubernetes Secret mounted as a file).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use tidemark_e2e::{
    GitHttpServer, SimProcess, WorkRepo, agent_log, fleet_yaml, sim_manifest, spawn_agent_with,
    status_record, wait_until,
};

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
