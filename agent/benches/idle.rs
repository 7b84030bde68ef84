//! Figures of an idle agent (issue 4): a converged cluster, nothing moved in git.
//! Printed, not asserted. Run: `cargo bench -p tidemark --bench idle`.
//!
//! - in-process: 50 idle passes against a simulated cluster, counting API requests (reads
//!   and writes, through a counting layer on the client), git ref listings, and pass time;
//! - the real binary: `tidemark agent --interval 1s` for 20 s, its resident memory and CPU
//!   time (extrapolated to an hour).
//!
//! Targets: < 30 MiB RSS, zero writes to the API server per idle pass, one ref listing
//! per poll.

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tidemark::pass;
use tidemark::source::{Auth, GitCache, SourceConfig};
use tidemark_sim::{Sim, SimConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Default)]
struct Counts {
    reads: AtomicUsize,
    writes: AtomicUsize,
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> Result<()> {
    let work = tempfile::tempdir()?;
    let repo = work.path().join("fleet");
    std::fs::create_dir_all(repo.join("clusters"))?;
    std::fs::write(
        repo.join("fleet.yaml"),
        "apiVersion: tidemark.dev/v1alpha1\nkind: Fleet\nmetadata: {name: idle}\nspec:\n  waves: [{name: canary}]\n",
    )?;
    std::fs::write(
        repo.join("clusters/sim.yaml"),
        "apiVersion: tidemark.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: sim\n  labels: {cluster: sim, tidemark.dev/wave: canary}\nspec:\n  provider: {kind: clusterapi, namespace: capi-system}\n  controlPlane: {version: \"1.29.8\"}\n  nodeGroups:\n    - {name: general, version: \"1.29.8\"}\n    - {name: gpu, version: \"1.29.8\"}\n",
    )?;
    support::commit_fleet(&repo, &["canary"])?;

    let sim = Sim::start(SimConfig {
        version: "1.29.8".into(),
        node_groups: vec![("general".into(), 3), ("gpu".into(), 2)],
        speed: 20.0,
        ..SimConfig::default()
    })
    .await?;
    let kubeconfig = work.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig)?;

    let counts = Arc::new(Counts::default());
    let counter = counts.clone();
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&tower::util::MapRequestLayer::new(
            move |req: http::Request<kube::client::Body>| {
                let slot = if req.method() == http::Method::GET {
                    &counter.reads
                } else {
                    &counter.writes
                };
                slot.fetch_add(1, Ordering::Relaxed);
                req
            },
        ))
        .build();
    let cache = GitCache::open(&SourceConfig {
        url: repo.display().to_string(),
        branch: None,
        cache_dir: work.path().join("cache"),
        auth: Auth::None,
    })?;
    // No components in this fleet: helm is never run.
    let ctx = tidemark::config::pass_ctx(
        tidemark::desired::Source::new(cache, None, "cluster=sim".parse()?, None),
        client,
        "tidemark-system".into(),
        None,
        tidemark::component::helm::Helm {
            bin: "helm".into(),
            timeout: std::time::Duration::from_secs(60),
            credentials: Default::default(),
        },
        tidemark::converge::Settings {
            health_wait: std::time::Duration::from_secs(5),
            crd_wait: std::time::Duration::from_secs(30),
            drift_interval: std::time::Duration::from_secs(600),
            prune_scan: false,
        },
        "bench",
    );
    // Converge (the first pass writes the status), then measure idle passes.
    for _ in 0..3 {
        pass::run(&ctx, jiff::Timestamp::now()).await;
    }
    counts.reads.store(0, Ordering::Relaxed);
    counts.writes.store(0, Ordering::Relaxed);
    let passes = 50;
    let mut times = Vec::new();
    let mut fetched = 0;
    let mut written = 0;
    for _ in 0..passes {
        let t = Instant::now();
        let report = pass::run(&ctx, jiff::Timestamp::now()).await;
        times.push(t.elapsed());
        fetched += usize::from(!report.executed.is_empty());
        written += usize::from(report.status_written);
        if report.phase != tidemark::plan::Phase::Converged {
            return Err(format!("not converged: {}", report.message).into());
        }
    }
    times.sort();
    println!(
        "idle pass (in-process, converged, nothing moved): median {:.1} ms; per pass {:.1} API reads, {:.2} API writes; status written {written}/{passes}; steps {fetched}",
        times[passes / 2].as_secs_f64() * 1e3,
        counts.reads.load(Ordering::Relaxed) as f64 / passes as f64,
        counts.writes.load(Ordering::Relaxed) as f64 / passes as f64,
    );
    // A second handle on the agent's cache: what one more poll costs now.
    let sync = GitCache::open(&SourceConfig {
        url: repo.display().to_string(),
        branch: None,
        cache_dir: work.path().join("cache"),
        auth: Auth::None,
    })?
    .sync(None, &["wave/*".to_string()])?;
    println!(
        "git per poll: one ref listing; fetch skipped: {} (objects {})",
        !sync.fetched, sync.stats.received_objects
    );

    // The real binary, idle for 20 s.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["agent", "--repo"])
        .arg(&repo)
        .args([
            "--selector",
            "cluster=sim",
            "--interval",
            "1s",
            "--metrics-addr",
            "127.0.0.1:0",
            "--cache-dir",
        ])
        .arg(work.path().join("cache-bin"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_start = cpu_seconds(pid)?;
    let measure = Duration::from_secs(20);
    tokio::time::sleep(measure).await;
    let cpu = cpu_seconds(pid)? - cpu_start;
    let rss = support::status_kib(pid, "VmRSS:")?;
    let hwm = support::status_kib(pid, "VmHWM:")?;
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "agent process (interval 1s, idle): RSS {:.1} MiB (peak {:.1} MiB, target < 30 MiB); CPU {:.2} s per {:?} = {:.0} s per hour at a 1 s interval, {:.1} s per hour at the default 30 s",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        cpu,
        measure,
        cpu * 3600.0 / measure.as_secs_f64(),
        cpu * 3600.0 / measure.as_secs_f64() / 30.0,
    );
    sim.shutdown().await;
    Ok(())
}

/// utime + stime of a process, in seconds (clock ticks of 100 Hz, Linux's USER_HZ).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let ticks = support::stat_field(pid, 14)? + support::stat_field(pid, 15)?;
    Ok(ticks as f64 / 100.0)
}
