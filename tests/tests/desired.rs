//! `tidemark desired`: selection by label, waves as git tags, the cheap ref check.

use anyhow::{Result, ensure};
use serde_yaml::Value;
use tidemark_e2e::{GitDaemon, Run, WorkRepo, cluster_yaml, fleet_yaml, tidemark};

/// A served fleet: a work repo under a base dir that `git daemon` exports.
struct Served {
    repo: WorkRepo,
    daemon: GitDaemon,
    cache: tempfile::TempDir,
}

impl Served {
    fn new(clusters: &[(&str, Option<&str>, &str)]) -> Result<Self> {
        let repo = WorkRepo::new()?;
        repo.write("fleet.yaml", &fleet_yaml(&["canary", "main"]))?;
        for (name, wave, version) in clusters {
            repo.write(
                &format!("clusters/{name}.yaml"),
                &cluster_yaml(name, *wave, version),
            )?;
        }
        repo.commit("fleet")?;
        let base = repo.base_dir();
        let daemon = GitDaemon::start(&base)?;
        Ok(Self {
            repo,
            daemon,
            cache: tempfile::tempdir()?,
        })
    }

    fn url(&self) -> String {
        let name = self.repo.name();
        self.daemon.url(&name)
    }

    fn desired(&self, selector: &str) -> Result<Run> {
        let url = self.url();
        let cache = self.cache.path().display().to_string();
        tidemark(&[
            "desired",
            "--repo",
            &url,
            "--selector",
            selector,
            "--cache-dir",
            &cache,
        ])
    }

    /// `desired` that must succeed; its YAML output.
    fn desired_ok(&self, selector: &str) -> Result<Value> {
        let run = self.desired(selector)?;
        ensure!(run.code == Some(0), "desired failed: {run:?}");
        Ok(serde_yaml::from_str(&run.stdout)?)
    }
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_str()
        .unwrap_or("<none>")
}

fn b(v: &Value, path: &str) -> Option<bool> {
    path.split('.').fold(v, |v, k| &v[k]).as_bool()
}

#[test]
fn follows_annotated_wave_tag_and_skips_fetch_when_nothing_moved() -> Result<()> {
    let f = Served::new(&[("a", Some("canary"), "1.28.9")])?;
    let first = f.repo.git(&["rev-parse", "HEAD"])?;
    f.repo.tag_annotated("wave/canary", "HEAD")?;
    // The branch moves on; the tag stays at the first commit.
    f.repo.write(
        "clusters/a.yaml",
        &cluster_yaml("a", Some("canary"), "1.29.8"),
    )?;
    f.repo.commit("upgrade a")?;

    let out = f.desired_ok("cluster=a")?;
    assert_eq!(s(&out, "revision"), first);
    assert_eq!(s(&out, "tag"), "wave/canary");
    assert_eq!(s(&out, "desired.controlPlane"), "1.28.9");
    assert_eq!(b(&out, "sync.fetched"), Some(true));

    // Nothing moved: exactly one ref listing, no fetch, no objects.
    let before = f.daemon.upload_pack_requests()?;
    let out = f.desired_ok("cluster=a")?;
    assert_eq!(b(&out, "sync.fetched"), Some(false));
    assert_eq!(out["sync"]["receivedObjects"].as_u64(), Some(0));
    assert_eq!(
        f.daemon.upload_pack_requests()? - before,
        1,
        "an idle poll is one ref listing"
    );
    assert_eq!(s(&out, "revision"), first);
    Ok(())
}

#[test]
fn moved_tag_is_picked_up_and_force_moved_back_too() -> Result<()> {
    let f = Served::new(&[("a", Some("canary"), "1.28.9")])?;
    let first = f.repo.git(&["rev-parse", "HEAD"])?;
    f.repo.tag_annotated("wave/canary", "HEAD")?;
    assert_eq!(
        s(&f.desired_ok("cluster=a")?, "desired.controlPlane"),
        "1.28.9"
    );

    f.repo.write(
        "clusters/a.yaml",
        &cluster_yaml("a", Some("canary"), "1.29.8"),
    )?;
    let second = f.repo.commit("upgrade a")?;
    f.repo.tag_annotated("wave/canary", "HEAD")?;
    let out = f.desired_ok("cluster=a")?;
    assert_eq!(s(&out, "revision"), second);
    assert_eq!(s(&out, "desired.controlPlane"), "1.29.8");
    assert_eq!(b(&out, "sync.fetched"), Some(true));

    // Force-moved backwards: the older commit is the desired state again (the planner,
    // not the source, refuses to downgrade).
    f.repo.tag_annotated("wave/canary", &first)?;
    let out = f.desired_ok("cluster=a")?;
    assert_eq!(s(&out, "revision"), first);
    assert_eq!(s(&out, "desired.controlPlane"), "1.28.9");
    Ok(())
}

#[test]
fn lightweight_tags_work_and_deleted_tag_means_nothing_to_do() -> Result<()> {
    let f = Served::new(&[("a", Some("main"), "1.28.9")])?;
    let head = f.repo.git(&["rev-parse", "HEAD"])?;
    f.repo.tag_light("wave/main", "HEAD")?;
    assert_eq!(s(&f.desired_ok("cluster=a")?, "revision"), head);

    f.repo.delete_tag("wave/main")?;
    let run = f.desired("cluster=a")?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let out: Value = serde_yaml::from_str(&run.stdout)?;
    assert_eq!(
        s(&out, "nothingToDo"),
        "wave `main`: tag wave/main does not exist yet"
    );
    assert_eq!(
        out["sync"]["prunedTags"][0].as_str(),
        Some("refs/tags/wave/main")
    );
    assert!(out["desired"].is_null());
    Ok(())
}

#[test]
fn cluster_added_after_the_tag_was_cut_waits() -> Result<()> {
    let f = Served::new(&[("a", Some("canary"), "1.28.9")])?;
    f.repo.tag_annotated("wave/canary", "HEAD")?;
    let tag_commit = f.repo.git(&["rev-parse", "HEAD"])?;
    f.repo.write(
        "clusters/b.yaml",
        &cluster_yaml("b", Some("canary"), "1.28.9"),
    )?;
    f.repo.commit("add b")?;

    let out = f.desired_ok("cluster=b")?;
    assert_eq!(
        s(&out, "nothingToDo"),
        format!(
            "tag wave/canary (commit {}) does not contain cluster `b` yet",
            &tag_commit[..12]
        )
    );
    // Cluster a is unaffected.
    assert_eq!(s(&f.desired_ok("cluster=a")?, "revision"), tag_commit);
    Ok(())
}

#[test]
fn cluster_without_wave_follows_the_branch() -> Result<()> {
    let f = Served::new(&[("a", None, "1.28.9")])?;
    f.repo
        .write("clusters/a.yaml", &cluster_yaml("a", None, "1.29.1"))?;
    let head = f.repo.commit("upgrade")?;
    let out = f.desired_ok("cluster=a")?;
    assert_eq!(s(&out, "revision"), head);
    assert!(out["tag"].is_null());
    assert_eq!(s(&out, "desired.controlPlane"), "1.29.1");
    Ok(())
}

#[test]
fn selector_matching_none_or_two_is_an_error() -> Result<()> {
    let f = Served::new(&[
        ("a", Some("canary"), "1.28.9"),
        ("b", Some("canary"), "1.28.9"),
    ])?;
    f.repo.tag_annotated("wave/canary", "HEAD")?;
    let none = f.desired("cluster=zzz")?;
    assert_eq!(none.code, Some(1));
    assert_eq!(
        none.stderr.trim(),
        "error: no cluster manifest matches selector `cluster=zzz`"
    );
    let two = f.desired("tidemark.dev/wave=canary")?;
    assert_eq!(two.code, Some(1));
    assert_eq!(
        two.stderr.trim(),
        "error: selector `tidemark.dev/wave=canary` matches 2 cluster manifests (clusters/a.yaml, clusters/b.yaml); it must match exactly one"
    );
    let bad = f.desired("cluster in (a")?;
    assert_eq!(bad.code, Some(2));
    assert!(
        bad.stderr
            .contains("invalid selector `cluster in (a`: unbalanced `(`"),
        "{bad:?}"
    );
    Ok(())
}

#[test]
fn invalid_manifest_at_the_tag_is_reported_with_file_and_field() -> Result<()> {
    let f = Served::new(&[("a", Some("canary"), "1.28.9")])?;
    let text = cluster_yaml("a", Some("canary"), "1.28.9").replace(
        "{name: general, version: \"1.28.9\"}",
        "{name: general, version: \"1.29.0\"}",
    );
    f.repo.write("clusters/a.yaml", &text)?;
    f.repo.commit("node group above control plane")?;
    f.repo.tag_annotated("wave/canary", "HEAD")?;
    let run = f.desired("cluster=a")?;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(
            "clusters/a.yaml:10:32: spec.nodeGroups[0].version: node group `general` is declared at 1.29.0, above the control plane (1.28.9)"
        ),
        "{}",
        run.stderr
    );
    Ok(())
}

#[test]
fn file_url_and_local_path_remotes() -> Result<()> {
    let repo = WorkRepo::one_cluster("1.30.2")?;
    let head = repo.commit("fleet")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let cache = tempfile::tempdir()?;
    let cache_dir = cache.path().display().to_string();
    for url in [
        format!("file://{}", repo.path().display()),
        repo.path().display().to_string(),
    ] {
        let run = tidemark(&[
            "desired",
            "--repo",
            &url,
            "--selector",
            "cluster=a",
            "--cache-dir",
            &cache_dir,
        ])?;
        assert_eq!(run.code, Some(0), "{run:?}");
        let out: Value = serde_yaml::from_str(&run.stdout)?;
        assert_eq!(s(&out, "revision"), head);
    }
    Ok(())
}

#[test]
fn unreachable_remote_fails_clearly_without_leaking_credentials() -> Result<()> {
    let cache = tempfile::tempdir()?;
    let cache_dir = cache.path().display().to_string();
    // Port 9 (discard) on loopback: nothing listens there.
    let run = tidemark(&[
        "desired",
        "--repo",
        "http://ci:hunter2secret@127.0.0.1:9/fleet.git",
        "--selector",
        "cluster=a",
        "--cache-dir",
        &cache_dir,
    ])?;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .contains("failed to list refs of http://***@127.0.0.1:9/fleet.git"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("hunter2secret"), "{}", run.stderr);
    Ok(())
}

#[test]
fn http_remote_with_basic_auth_from_env_file_or_url() -> Result<()> {
    use tidemark_e2e::{GitHttpServer, tidemark_in};
    let repo = WorkRepo::one_cluster("1.30.2")?;
    let head = repo.commit("fleet")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let base = repo.base_dir();
    let name = repo.name();
    let secret = "s3cr3t-t0ken-value";
    let server = GitHttpServer::start(&base, "ci-bot", secret)?;
    let url = server.url(&name);
    let cache = tempfile::tempdir()?;
    let cache_dir = cache.path().display().to_string();
    let args = |url: &str| -> Vec<String> {
        [
            "--log",
            "debug",
            "desired",
            "--repo",
            url,
            "--selector",
            "cluster=a",
            "--cache-dir",
            &cache_dir,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run_with = |url: &str, env: &[(&str, &str)], extra: &[&str]| -> Result<Run> {
        let mut a = args(url);
        a.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        tidemark_in(&a, None, env)
    };

    // Token from the environment.
    let run = run_with(
        &url,
        &[("TIDEMARK_GIT_PASSWORD", secret)],
        &["--git-username", "ci-bot"],
    )?;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(s(&serde_yaml::from_str(&run.stdout)?, "revision"), head);
    assert!(!run.stderr.contains(secret) && !run.stdout.contains(secret));

    // Token from a file.
    let file = cache.path().join("token");
    std::fs::write(&file, format!("{secret}\n"))?;
    let file_arg = file.display().to_string();
    let run = run_with(
        &url,
        &[],
        &["--git-username", "ci-bot", "--git-password-file", &file_arg],
    )?;
    assert_eq!(run.code, Some(0), "{run:?}");

    // Credentials in the URL: accepted, never printed.
    let with_creds = url.replace("http://", &format!("http://ci-bot:{secret}@"));
    let run = run_with(&with_creds, &[], &[])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        !run.stderr.contains(secret) && !run.stdout.contains(secret),
        "{run:?}"
    );

    // Wrong token: a clear failure, without the token.
    let wrong = "wr0ng-t0ken-value";
    let run = run_with(
        &url,
        &[("TIDEMARK_GIT_PASSWORD", wrong)],
        &["--git-username", "ci-bot"],
    )?;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("failed to list refs of {url}")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(wrong), "{}", run.stderr);
    // No credentials at all.
    let run = run_with(&url, &[], &[])?;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .contains("asks for credentials and none are configured"),
        "{}",
        run.stderr
    );
    Ok(())
}

#[test]
fn ssh_remote_with_key_and_known_hosts() -> Result<()> {
    use tidemark_e2e::SshServer;
    let repo = WorkRepo::one_cluster("1.30.2")?;
    let head = repo.commit("fleet")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let sshd = SshServer::start()?;
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let url = sshd.url(&user, repo.path());
    let key = sshd.client_key().display().to_string();
    let desired = |known_hosts: &std::path::Path| -> Result<Run> {
        let cache = tempfile::tempdir()?;
        let cache_dir = cache.path().display().to_string();
        let kh = known_hosts.display().to_string();
        tidemark(&[
            "desired",
            "--repo",
            &url,
            "--selector",
            "cluster=a",
            "--cache-dir",
            &cache_dir,
            "--git-ssh-key",
            &key,
            "--git-known-hosts",
            &kh,
        ])
    };
    for hashed in [false, true] {
        let run = desired(&sshd.known_hosts(hashed)?)?;
        assert_eq!(run.code, Some(0), "hashed={hashed}: {run:?}");
        assert_eq!(s(&serde_yaml::from_str(&run.stdout)?, "revision"), head);
    }
    let wrong = sshd.wrong_known_hosts()?;
    let run = desired(&wrong)?;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "host key of [127.0.0.1]:{} is not in {}",
            sshd.port(),
            wrong.display()
        )),
        "{}",
        run.stderr
    );
    // r9: a key marked @revoked is refused, even where another line lists it.
    let revoked = sshd.revoked_known_hosts()?;
    let run = desired(&revoked)?;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "host key of [127.0.0.1]:{} is marked @revoked in {}:2",
            sshd.port(),
            revoked.display()
        )),
        "{}",
        run.stderr
    );
    // A @cert-authority entry cannot vouch for the server: libgit2 never gets a host
    // certificate. Refused, and the message says so.
    let ca = sshd.cert_authority_known_hosts()?;
    let run = desired(&ca)?;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "host key of [127.0.0.1]:{} is not in {}; line 1 trusts a @cert-authority for it, but host certificates are not supported",
            sshd.port(),
            ca.display()
        )),
        "{}",
        run.stderr
    );
    Ok(())
}
