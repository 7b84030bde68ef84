//! Bytes per idle poll (issue 14), printed, not asserted: a fleet repo with 3 wave tags,
//! with 0 and then 5,000 other tags, served by `git daemon` and by `git http-backend` on
//! 127.0.0.1 behind a byte-counting TCP proxy.
//!
//! For each, an idle `tidemark desired` (nothing moved: one ref listing, no fetch) against
//! `git -c protocol.version=2 fetch --no-tags` of the same refs (HEAD and `wave/*`) into an
//! up-to-date repository, and the same two against a server that speaks only protocol v0
//! (what every poll cost before protocol v2: the whole ref advertisement).
//!
//! Run: `cargo bench -p tidemark --bench git_poll`. Target: tidemark within 2x of git's v2
//! fetch, and the same with 5,000 other tags as with none.

use std::path::Path;
use std::process::Command;

use tidemark_e2e::{CountingProxy, GitDaemon, GitHttpServer, WorkRepo, cluster_yaml, fleet_yaml};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const OTHER_TAGS: usize = 5000;
const USER: &str = "bench";
const PASSWORD: &str = "bench-token";

/// The git servers of one repository, each behind its own counting proxy.
struct Served {
    name: &'static str,
    v0_only: bool,
    proxy: CountingProxy,
    url: String,
    // Dropped after the proxy: the servers outlive the connections they serve.
    _daemon: Option<GitDaemon>,
    _http: Option<GitHttpServer>,
}

fn main() -> Result<()> {
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary", "early", "main"]))?;
    repo.write(
        "clusters/a.yaml",
        &cluster_yaml("a", Some("canary"), "1.30.2"),
    )?;
    repo.commit("fleet")?;
    for wave in ["canary", "early", "main"] {
        repo.tag_annotated(&format!("wave/{wave}"), "HEAD")?;
    }
    let base = repo.base_dir();
    let name = repo.name();
    let mut servers = Vec::new();
    for v0_only in [false, true] {
        let daemon = if v0_only {
            GitDaemon::start_v0(&base)?
        } else {
            GitDaemon::start(&base)?
        };
        let proxy = CountingProxy::start(daemon.port())?;
        servers.push(Served {
            name: "git://",
            v0_only,
            url: format!("git://127.0.0.1:{}/{name}", proxy.port()),
            proxy,
            _daemon: Some(daemon),
            _http: None,
        });
        let http = if v0_only {
            GitHttpServer::start_v0(&base, USER, PASSWORD)?
        } else {
            GitHttpServer::start(&base, USER, PASSWORD)?
        };
        let proxy = CountingProxy::start(http.port())?;
        servers.push(Served {
            name: "http://",
            v0_only,
            url: format!("http://127.0.0.1:{}/{name}", proxy.port()),
            proxy,
            _daemon: None,
            _http: Some(http),
        });
    }

    println!("bytes downloaded (server to client) per idle poll; fleet repo with 3 wave tags");
    println!(
        "{:<8} {:>10} {:>10} {:>8} {:>7} {:>12} {:>10}",
        "server", "other refs", "tidemark", "git v2", "ratio", "tidemark v0", "git v0"
    );
    let work = tempfile::tempdir()?;
    let mut rows = Vec::new();
    for other in [0, OTHER_TAGS] {
        if other > 0 {
            repo.add_tags("release/v1.0.", other)?;
        }
        for kind in ["git://", "http://"] {
            let [v2, v0] = ["v2", "v0"].map(|p| {
                servers
                    .iter()
                    .find(|s| s.name == kind && s.v0_only == (p == "v0"))
            });
            let (Some(v2), Some(v0)) = (v2, v0) else {
                return Err("missing server".into());
            };
            let dir = work
                .path()
                .join(format!("{}-{other}", kind.trim_end_matches("://")));
            let tidemark = idle_poll(v2, &dir.join("tidemark"))?;
            let git = git_idle_fetch(v2, &dir.join("git"), 2)?;
            let tidemark_v0 = idle_poll(v0, &dir.join("tidemark-v0"))?;
            let git_v0 = git_idle_fetch(v0, &dir.join("git-v0"), 0)?;
            let ratio = tidemark as f64 / git as f64;
            println!(
                "{kind:<8} {other:>10} {tidemark:>10} {git:>8} {ratio:>7.2} {tidemark_v0:>12} {git_v0:>10}"
            );
            rows.push((kind, other, tidemark, ratio));
        }
    }
    for kind in ["git://", "http://"] {
        let of = |n| rows.iter().find(|r| r.0 == kind && r.1 == n).map(|r| r.2);
        let (Some(none), Some(many)) = (of(0), of(OTHER_TAGS)) else {
            continue;
        };
        let worst = rows
            .iter()
            .filter(|r| r.0 == kind)
            .map(|r| r.3)
            .fold(0.0, f64::max);
        println!(
            "{kind}: {none} bytes with no other refs, {many} with {OTHER_TAGS}; worst ratio to git v2 {worst:.2} (target <= 2.00: {})",
            if worst <= 2.0 && many <= none + 64 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    Ok(())
}

fn credentials(kind: &str) -> Vec<&'static str> {
    if kind == "http://" {
        vec!["--git-username", USER]
    } else {
        vec![]
    }
}

/// Bytes of an idle `tidemark desired`: a first run fills the cache, the second is measured.
fn idle_poll(server: &Served, cache: &Path) -> Result<u64> {
    let cache = cache.display().to_string();
    let run = |idle: bool| -> Result<()> {
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["desired", "--repo", &server.url, "--selector", "cluster=a"])
            .args(["--cache-dir", &cache])
            .args(credentials(server.name))
            .env("TIDEMARK_GIT_PASSWORD", PASSWORD)
            .output()?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!("tidemark desired: {stderr}").into());
        }
        if idle && String::from_utf8_lossy(&out.stdout).contains("fetched: true") {
            return Err("an idle poll fetched".into());
        }
        Ok(())
    };
    run(false)?;
    server.proxy.take()?;
    run(true)?;
    Ok(server.proxy.take()?.0)
}

/// Bytes of an idle `git fetch --no-tags` of HEAD and `wave/*` with `protocol.version`:
/// a first fetch fills the repository, the second is measured.
fn git_idle_fetch(server: &Served, dir: &Path, version: u8) -> Result<u64> {
    std::fs::create_dir_all(dir)?;
    let url = if server.name == "http://" {
        server
            .url
            .replace("http://", &format!("http://{USER}:{PASSWORD}@"))
    } else {
        server.url.clone()
    };
    let git = |args: &[&str]| -> Result<()> {
        let out = Command::new("git").args(args).current_dir(dir).output()?;
        if !out.status.success() {
            return Err(format!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(())
    };
    git(&["init", "-q", "--bare", "."])?;
    let protocol = format!("protocol.version={version}");
    let fetch = [
        "-c",
        &protocol,
        "fetch",
        "-q",
        "--no-tags",
        &url,
        "+HEAD:refs/remotes/origin/HEAD",
        "+refs/tags/wave/*:refs/tags/wave/*",
    ];
    git(&fetch)?;
    server.proxy.take()?;
    git(&fetch)?;
    Ok(server.proxy.take()?.0)
}
