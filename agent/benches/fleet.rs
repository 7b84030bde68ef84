//! Fleet-scale figures for the git source and validation (issue 2), printed, not asserted:
//! a fleet repo of 10,000 clusters and 200 component sets in one commit, served by
//! `git daemon` on 127.0.0.1.
//!
//! Run: `cargo bench -p tidemark --bench fleet` (set `FLEET_CLUSTERS` for another size).
//! Targets on a 2-core machine: resolve < 100 ms, validate < 5 s, peak memory < 300 MiB,
//! a poll with nothing moved transfers no objects.

mod support;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use tidemark::desired;
use tidemark::select;
use tidemark::source::{Auth, GitCache, SourceConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let clusters: usize = std::env::var("FLEET_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let sets = 200;
    let work = tempfile::tempdir()?;
    let repo = work.path().join("fleet");
    let t = Instant::now();
    generate(&repo, clusters, sets)?;
    println!(
        "generated {clusters} clusters + {sets} component sets in one commit: {:.1?}",
        t.elapsed()
    );

    // validate through the real binary: wall time and the child's peak RSS.
    let bin = env!("CARGO_BIN_EXE_tidemark");
    let t = Instant::now();
    let status = Command::new(bin)
        .arg("validate")
        .arg(&repo)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let validate_time = t.elapsed();
    let peak_kib = getrusage(UsageWho::RUSAGE_CHILDREN)?.max_rss();
    println!(
        "validate: {:.0} ms, exit {:?}, peak RSS {:.1} MiB (target < 5 s, < 300 MiB)",
        validate_time.as_secs_f64() * 1e3,
        status.code(),
        peak_kib as f64 / 1024.0
    );

    // Serve it and resolve one cluster.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exec_path = Command::new("git").arg("--exec-path").output()?.stdout;
    let git_daemon = Path::new(String::from_utf8_lossy(&exec_path).trim()).join("git-daemon");
    let mut daemon = Command::new(git_daemon)
        .args([
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
        ])
        .arg(format!("--base-path={}", work.path().display()))
        .arg(work.path())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let result = measure_source(port, work.path(), clusters);
    let _ = daemon.kill();
    let _ = daemon.wait();
    result
}

fn measure_source(port: u16, work: &Path, clusters: usize) -> Result<()> {
    let config = SourceConfig {
        url: format!("git://127.0.0.1:{port}/fleet"),
        branch: None,
        cache_dir: work.join("cache"),
        auth: Auth::None,
    };
    let cache = GitCache::open(&config)?;
    let selector = format!("cluster=c{:05}", clusters / 2).parse()?;
    let t = Instant::now();
    let cold = desired::resolve(&cache, None, &selector, None, jiff::Timestamp::now())?;
    println!(
        "first resolve (clone {} objects): {:.0} ms",
        cold.sync.stats.received_objects,
        t.elapsed().as_secs_f64() * 1e3
    );

    let mut polls = Vec::new();
    let mut last = None;
    for _ in 0..10 {
        let t = Instant::now();
        let r = desired::resolve(&cache, None, &selector, None, jiff::Timestamp::now())?;
        polls.push(t.elapsed());
        last = Some(r);
    }
    if let Some(r) = &last {
        println!(
            "poll with nothing moved (ref listing + resolve): median {:.1} ms; fetched: {}, objects {}, bytes {}",
            median(&mut polls).as_secs_f64() * 1e3,
            r.sync.fetched,
            r.sync.stats.received_objects,
            r.sync.stats.received_bytes
        );
    }

    // Resolve from the warm cache alone (no network): selection on the branch + manifest at the tag.
    let branch = cache.last_branch().ok_or("no branch")?;
    let commit = cache
        .commit_of(&format!("refs/heads/{branch}"))?
        .ok_or("no commit")?;
    let mut times = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let tree = cache.tree_at(&commit)?;
        let fleet = select::fleet(&tree)?;
        let t_select = Instant::now();
        let selection = select::select(&tree, &fleet, &selector)?;
        if std::env::var_os("FLEET_VERBOSE").is_some() {
            eprintln!("  select {:.1} ms", t_select.elapsed().as_secs_f64() * 1e3);
        }
        let tag = cache
            .tag_commit(selection.tag.as_deref().ok_or("no tag")?)?
            .ok_or("tag missing")?;
        let at = cache.tree_at(&tag)?;
        let _ = select::desired_at(&at, &selection)?;
        times.push(t.elapsed());
    }
    println!(
        "resolve from warm cache: median {:.1} ms (target < 100 ms)",
        median(&mut times).as_secs_f64() * 1e3
    );
    Ok(())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Writes the fleet with plain file I/O and commits it with the git CLI.
fn generate(repo: &Path, clusters: usize, sets: usize) -> Result<()> {
    std::fs::create_dir_all(repo.join("clusters"))?;
    std::fs::create_dir_all(repo.join("components"))?;
    std::fs::create_dir_all(repo.join("charts/app/templates"))?;
    std::fs::create_dir_all(repo.join("values"))?;
    std::fs::write(
        repo.join("charts/app/Chart.yaml"),
        "apiVersion: v2\nname: app\nversion: 1.0.0\n",
    )?;
    std::fs::write(
        repo.join("charts/app/templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}}\n",
    )?;
    std::fs::write(repo.join("values/common.yaml"), "replicas: 2\n")?;
    std::fs::write(
        repo.join("fleet.yaml"),
        "apiVersion: tidemark.dev/v1alpha1\nkind: Fleet\nmetadata: {name: big}\nspec:\n  waves: [{name: canary}, {name: early}, {name: main}]\n  defaults:\n    - clusters: env=prod\n      drainTimeout: 15m\n",
    )?;
    for s in 0..sets {
        let mut text = format!(
            "apiVersion: tidemark.dev/v1alpha1\nkind: ComponentSet\nmetadata: {{name: set-{s:03}}}\nspec:\n  components:\n"
        );
        for c in 0..3 {
            text.push_str(&format!(
                "    - name: s{s:03}-c{c}\n      chart: {{path: charts/app}}\n      namespace: ns-{c}\n      valuesFiles: [values/common.yaml]\n"
            ));
        }
        std::fs::write(repo.join(format!("components/set-{s:03}.yaml")), text)?;
    }
    let waves = ["canary", "early", "main"];
    for i in 0..clusters {
        let wave = waves[i % 3];
        let set = i % sets;
        let env = if i % 2 == 0 { "prod" } else { "staging" };
        std::fs::write(
            repo.join(format!("clusters/c{i:05}.yaml")),
            format!(
                "apiVersion: tidemark.dev/v1alpha1
kind: Cluster
metadata:
  name: c{i:05}
  labels: {{cluster: c{i:05}, env: {env}, region: r{r}, tidemark.dev/wave: {wave}}}
spec:
  provider: {{kind: clusterapi, namespace: capi-system}}
  controlPlane: {{version: \"1.30.4\"}}
  nodeGroups:
    - {{name: general, version: \"1.30.4\", maxUnavailable: 2}}
    - {{name: gpu, version: \"1.29.9\", followControlPlane: true}}
  componentSets: [set-{set:03}]
  maintenanceWindow: {{days: [Sat, Sun], start: \"02:00\", duration: 4h}}
",
                r = i % 7
            ),
        )?;
    }
    support::commit_fleet(repo, &waves)?;
    Ok(())
}
