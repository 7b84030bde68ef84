//! Polling at the floor (issue 14): an idle poll asks the git server for the followed refs
//! only (protocol v2 `ls-refs`), so its bytes do not grow with the refs the repository
//! holds; servers that speak only v0 still work. Bytes are counted by a TCP proxy between
//! the real binary and the real git server.

use anyhow::{Result, ensure};
use serde_yaml::Value;
use tidemark_e2e::{
    CountingProxy, GitDaemon, GitHttpServer, Run, SshServer, WorkRepo, cluster_yaml, fleet_yaml,
    tidemark, tidemark_in,
};

/// A fleet with three waves, all tagged; cluster `a` is in `canary`.
fn fleet_with_three_wave_tags() -> Result<(WorkRepo, String)> {
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary", "early", "main"]))?;
    repo.write(
        "clusters/a.yaml",
        &cluster_yaml("a", Some("canary"), "1.28.9"),
    )?;
    let head = repo.commit("fleet")?;
    for wave in ["canary", "early", "main"] {
        repo.tag_annotated(&format!("wave/{wave}"), "HEAD")?;
    }
    Ok((repo, head))
}

fn desired(
    url: &str,
    cache: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<Run> {
    let cache = cache.display().to_string();
    let mut args = vec![
        "desired",
        "--repo",
        url,
        "--selector",
        "cluster=a",
        "--cache-dir",
        &cache,
    ];
    args.extend_from_slice(extra);
    tidemark_in(&args, None, env)
}

fn ok(run: Run) -> Result<(Value, String)> {
    ensure!(run.code == Some(0), "desired failed: {run:?}");
    Ok((serde_yaml::from_str(&run.stdout)?, run.stderr))
}

fn field<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

/// Bytes git itself downloads for the same refs with protocol v2 when nothing moved: an
/// up-to-date bare repository fetching the default branch and the wave tags, no other tags.
fn git_v2_idle_fetch(url: &str, proxy: &CountingProxy) -> Result<u64> {
    let dir = tempfile::tempdir()?;
    let git = |args: &[&str]| -> Result<()> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .output()?;
        ensure!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    git(&["init", "-q", "--bare", "."])?;
    let fetch = [
        "-c",
        "protocol.version=2",
        "fetch",
        "-q",
        "--no-tags",
        url,
        "+HEAD:refs/remotes/origin/HEAD",
        "+refs/tags/wave/*:refs/tags/wave/*",
    ];
    git(&fetch)?;
    proxy.take()?;
    git(&fetch)?;
    Ok(proxy.take()?.0)
}

#[test]
fn idle_poll_bytes_do_not_grow_with_other_refs_and_a_moved_tag_is_still_fetched() -> Result<()> {
    let (repo, first) = fleet_with_three_wave_tags()?;
    let daemon = GitDaemon::start(&repo.base_dir())?;
    let proxy = CountingProxy::start(daemon.port())?;
    let url = format!("git://127.0.0.1:{}/{}", proxy.port(), repo.name());
    let cache = tempfile::tempdir()?;

    let (out, _) = ok(desired(&url, cache.path(), &[], &[])?)?;
    assert_eq!(field(&out, "revision").as_str(), Some(first.as_str()));
    assert_eq!(field(&out, "sync.protocol").as_str(), Some("v2"));
    proxy.take()?;

    // Idle with only the wave tags.
    let (out, _) = ok(desired(&url, cache.path(), &[], &[])?)?;
    assert_eq!(field(&out, "sync.fetched").as_bool(), Some(false));
    let (few_refs, _) = proxy.take()?;

    // Idle with 5,000 unrelated tags besides.
    repo.add_tags("release/v1.0.", 5000)?;
    let (out, _) = ok(desired(&url, cache.path(), &[], &[])?)?;
    assert_eq!(field(&out, "sync.fetched").as_bool(), Some(false));
    assert_eq!(field(&out, "sync.protocol").as_str(), Some("v2"));
    let (many_refs, _) = proxy.take()?;
    assert_eq!(
        many_refs, few_refs,
        "an idle poll downloads the same bytes with 5,000 other tags ({many_refs}) as without ({few_refs})"
    );

    // Within 2x of git's own protocol v2 fetch of the same refs.
    let git = git_v2_idle_fetch(&url, &proxy)?;
    assert!(
        many_refs <= 2 * git,
        "idle poll downloads {many_refs} bytes; git's v2 fetch of the same refs {git}"
    );

    // A moved wave tag is still seen and fetched.
    repo.write(
        "clusters/a.yaml",
        &cluster_yaml("a", Some("canary"), "1.29.8"),
    )?;
    let second = repo.commit("upgrade a")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let (out, _) = ok(desired(&url, cache.path(), &[], &[])?)?;
    assert_eq!(field(&out, "sync.fetched").as_bool(), Some(true));
    assert_eq!(field(&out, "revision").as_str(), Some(second.as_str()));
    assert_eq!(field(&out, "desired.controlPlane").as_str(), Some("1.29.8"));
    Ok(())
}

#[test]
fn git_daemon_without_v2_falls_back_to_the_full_advertisement() -> Result<()> {
    let (repo, first) = fleet_with_three_wave_tags()?;
    let daemon = GitDaemon::start_v0(&repo.base_dir())?;
    let proxy = CountingProxy::start(daemon.port())?;
    let url = format!("git://127.0.0.1:{}/{}", proxy.port(), repo.name());
    let cache = tempfile::tempdir()?;

    let (out, stderr) = ok(desired(&url, cache.path(), &[], &[])?)?;
    assert_eq!(field(&out, "revision").as_str(), Some(first.as_str()));
    assert_eq!(field(&out, "sync.protocol").as_str(), Some("v0"));
    assert_eq!(
        stderr.matches("does not speak protocol v2").count(),
        1,
        "warned once: {stderr}"
    );
    proxy.take()?;

    // The proxy sees what v2 saves: here the other tags do cost bytes.
    let (_, _) = ok(desired(&url, cache.path(), &[], &[])?)?;
    let (few_refs, _) = proxy.take()?;
    repo.add_tags("release/v1.0.", 5000)?;
    let (out, _) = ok(desired(&url, cache.path(), &[], &[])?)?;
    assert_eq!(field(&out, "sync.fetched").as_bool(), Some(false));
    let (many_refs, _) = proxy.take()?;
    assert!(
        many_refs > few_refs + 5000 * 50,
        "v0: {few_refs} bytes, then {many_refs} with 5,000 more tags"
    );

    // Tags gone and moved are still handled.
    repo.write(
        "clusters/a.yaml",
        &cluster_yaml("a", Some("canary"), "1.29.8"),
    )?;
    let second = repo.commit("upgrade a")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    repo.delete_tag("wave/main")?;
    let (out, _) = ok(desired(&url, cache.path(), &[], &[])?)?;
    assert_eq!(field(&out, "revision").as_str(), Some(second.as_str()));
    assert_eq!(
        field(&out, "sync.prunedTags").as_sequence().map(Vec::len),
        Some(1)
    );
    Ok(())
}

#[test]
fn http_server_ignoring_git_protocol_falls_back_and_keeps_basic_auth() -> Result<()> {
    let (repo, first) = fleet_with_three_wave_tags()?;
    let secret = "v0-s3cr3t-t0ken";
    let env = [("TIDEMARK_GIT_PASSWORD", secret)];
    let user = ["--git-username", "ci-bot"];
    let cache = tempfile::tempdir()?;

    let v0 = GitHttpServer::start_v0(&repo.base_dir(), "ci-bot", secret)?;
    let (out, stderr) = ok(desired(&v0.url(&repo.name()), cache.path(), &user, &env)?)?;
    assert_eq!(field(&out, "revision").as_str(), Some(first.as_str()));
    assert_eq!(field(&out, "sync.protocol").as_str(), Some("v0"));
    assert!(stderr.contains("does not speak protocol v2"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");

    // The same repository behind a server that honours Git-Protocol: v2, with the same
    // credentials, and the idle poll's bytes do not grow with 5,000 other tags.
    let v2 = GitHttpServer::start(&repo.base_dir(), "ci-bot", secret)?;
    let proxy = CountingProxy::start(v2.port())?;
    let url = format!("http://127.0.0.1:{}/{}", proxy.port(), repo.name());
    let cache = tempfile::tempdir()?;
    let (out, stderr) = ok(desired(&url, cache.path(), &user, &env)?)?;
    assert_eq!(field(&out, "sync.protocol").as_str(), Some("v2"));
    assert!(!stderr.contains("does not speak protocol v2"), "{stderr}");
    proxy.take()?;
    ok(desired(&url, cache.path(), &user, &env)?)?;
    let (few_refs, _) = proxy.take()?;
    repo.add_tags("pull/", 5000)?;
    let (out, _) = ok(desired(&url, cache.path(), &user, &env)?)?;
    assert_eq!(field(&out, "sync.fetched").as_bool(), Some(false));
    let (many_refs, _) = proxy.take()?;
    // HTTP headers (Date) may differ by a byte or two between responses.
    assert!(
        many_refs.abs_diff(few_refs) < 64,
        "http idle poll: {few_refs} bytes, then {many_refs} with 5,000 more refs"
    );
    Ok(())
}

#[test]
fn ssh_server_refusing_git_protocol_falls_back_to_v0() -> Result<()> {
    let (repo, first) = fleet_with_three_wave_tags()?;
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    for (sshd, protocol) in [(SshServer::start()?, "v2"), (SshServer::start_v0()?, "v0")] {
        let known_hosts = sshd.known_hosts(false)?.display().to_string();
        let key = sshd.client_key().display().to_string();
        let cache = tempfile::tempdir()?;
        let run = desired(
            &sshd.url(&user, repo.path()),
            cache.path(),
            &["--git-ssh-key", &key, "--git-known-hosts", &known_hosts],
            &[],
        )?;
        let (out, _) = ok(run)?;
        assert_eq!(field(&out, "revision").as_str(), Some(first.as_str()));
        assert_eq!(field(&out, "sync.protocol").as_str(), Some(protocol));
    }
    Ok(())
}

#[test]
fn local_remotes_are_read_in_process() -> Result<()> {
    let (repo, first) = fleet_with_three_wave_tags()?;
    let cache = tempfile::tempdir()?;
    let path = repo.path().display().to_string();
    let run = tidemark(&[
        "desired",
        "--repo",
        &path,
        "--selector",
        "cluster=a",
        "--cache-dir",
        &cache.path().display().to_string(),
    ])?;
    let (out, _) = ok(run)?;
    assert_eq!(field(&out, "revision").as_str(), Some(first.as_str()));
    assert_eq!(field(&out, "sync.protocol").as_str(), Some("local"));
    Ok(())
}
