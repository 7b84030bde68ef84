//! Polling at the floor (issue 14): an idle poll asks the git server for the followed refs
//! only (protocol v2 `ls-refs`), so its bytes do not grow with the refs the repository
//! holds; servers that speak only v0 still work. Bytes are counted by a TCP proxy between
//! the real binary and the real git server.

use anyhow::{Result, ensure};
use serde_yaml::Value;
use tidemark_e2e::{
    CLUSTERAPI, CountingProxy, GitDaemon, GitHttpServer, Pass, Run, SimProcess, SshServer,
    WorkRepo, cluster_yaml, fleet_yaml, sim_manifest, tidemark, tidemark_in,
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

        // What upload-pack says on stderr reaches the error.
        let missing = repo.path().join("missing");
        let run = desired(
            &sshd.url(&user, &missing),
            cache.path(),
            &["--git-ssh-key", &key, "--git-known-hosts", &known_hosts],
            &[],
        )?;
        assert_eq!(run.code, Some(2), "{run:?}");
        assert!(
            run.stderr
                .contains("does not appear to be a git repository"),
            "{}",
            run.stderr
        );
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

#[test]
fn agent_polls_over_http_from_inside_its_async_runtime() -> Result<()> {
    // The HTTP client (reqwest, blocking) runs on a thread of its own: a pass, which runs
    // on the agent's tokio runtime, must still be able to list refs over it.
    let sim = SimProcess::start(&["--version", "1.28.9", "--node-groups", "general=1"])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    repo.write(
        "clusters/sim.yaml",
        &sim_manifest(CLUSTERAPI, "1.28.9", &[("general", "1.28.9")]),
    )?;
    repo.commit("fleet")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let server = GitHttpServer::start(&repo.base_dir(), "ci-bot", "agent-t0ken")?;
    let cache = tempfile::tempdir()?;
    let kubeconfig = sim.kubeconfig().display().to_string();
    let url = server.url(&repo.name());
    let cache_dir = cache.path().display().to_string();
    for _ in 0..2 {
        let run = tidemark_in(
            &[
                "agent",
                "--once",
                "--repo",
                &url,
                "--selector",
                "cluster=sim",
                "--cache-dir",
                &cache_dir,
                "--git-username",
                "ci-bot",
            ],
            None,
            &[
                ("KUBECONFIG", &kubeconfig),
                ("TIDEMARK_GIT_PASSWORD", "agent-t0ken"),
            ],
        )?;
        ensure!(run.code == Some(0), "agent --once failed: {run:?}");
        let pass = Pass::parse(&run.stdout);
        assert_eq!(
            (pass.phase.as_str(), pass.message.as_str()),
            ("Converged", "converged: control plane 1.28.9"),
            "{run:?}"
        );
    }
    Ok(())
}

#[test]
fn https_with_the_system_trust_of_openssl() -> Result<()> {
    let (repo, first) = fleet_with_three_wave_tags()?;
    let secret = "tls-s3cr3t-t0ken";
    let server = GitHttpServer::start_tls(&repo.base_dir(), "ci-bot", secret)?;
    let ca = server
        .ca_file()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let proxy = CountingProxy::start(server.port())?;
    let url = format!("https://127.0.0.1:{}/{}", proxy.port(), repo.name());
    let user = ["--git-username", "ci-bot"];
    let cache = tempfile::tempdir()?;

    // The listing (reqwest on native-tls) and the fetch (libgit2) are both openssl: one
    // trust store, here the test CA given the way openssl takes it.
    let env = [
        ("TIDEMARK_GIT_PASSWORD", secret),
        ("SSL_CERT_FILE", ca.as_str()),
    ];
    let (out, stderr) = ok(desired(&url, cache.path(), &user, &env)?)?;
    assert_eq!(field(&out, "revision").as_str(), Some(first.as_str()));
    assert_eq!(field(&out, "sync.protocol").as_str(), Some("v2"));
    assert!(!stderr.contains(secret), "{stderr}");

    // An untrusted certificate needs a person: a clear error, no retries, no secret.
    let before = proxy.connections();
    let run = desired(
        &url,
        cache.path(),
        &user,
        &[
            ("TIDEMARK_GIT_PASSWORD", secret),
            ("SSL_CERT_FILE", "/dev/null"),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    )?;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("failed to list refs of {url}"))
            && run.stderr.contains("certificate"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(secret), "{}", run.stderr);
    assert_eq!(proxy.connections() - before, 1, "one attempt, no retries");
    Ok(())
}
