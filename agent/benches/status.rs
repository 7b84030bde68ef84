//! Figures of `tidemark status` over a fleet of simulated clusters (issue 12). Printed,
//! not asserted. Run: `cargo bench -p tidemark --bench status`.
//!
//! - N simulated clusters (`TIDEMARK_BENCH_SIMS`, default 60) run in this process, each
//!   holding an agent's status record (written as an agent writes it: one server-side
//!   apply of `Record::to_annotations` on its namespace), and the fleet repo declares them
//!   in three waves; every record is also published to `refs/tidemark/status/<cluster>`.
//! - The real binary, `tidemark status -o json` with one `--kubeconfig` per cluster, then
//!   `--from-git`, then with one more context whose server accepts connections and never
//!   answers (it must cost the per-cluster timeout once, not once per cluster): wall time
//!   and peak resident memory of each run (GNU `time`), and how many clusters were read.
//! - `tidemark promote canary` carried out three times (a new head each time: the tag
//!   object, the push with a lease, the promotion log appended), then `tidemark promote
//!   early --dry-run` both ways (the decision over the canary wave, refused: no cluster
//!   applied the new head).
//! - `TIDEMARK_BIN` names another binary (e.g. a release build).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use tidemark::keys::refs;
use tidemark::plan::Phase;
use tidemark::source::{Auth, GitCache, Identity, Lease, RefUpdate, SourceConfig};
use tidemark::status::{Record, Versions};
use tidemark_schema::KubeVersion;
use tidemark_sim::{Sim, SimConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

fn sims() -> usize {
    std::env::var("TIDEMARK_BENCH_SIMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

fn binary() -> PathBuf {
    std::env::var_os("TIDEMARK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tidemark")))
}

async fn run() -> Result<()> {
    let n = sims();
    let work = tempfile::tempdir()?;
    let repo = work.path().join("fleet");
    std::fs::create_dir_all(repo.join("clusters"))?;
    std::fs::write(
        repo.join("fleet.yaml"),
        "apiVersion: tidemark.dev/v1alpha1\nkind: Fleet\nmetadata: {name: bench}\nspec:\n  waves: [{name: canary, soak: 10m}, {name: early, soak: 1h}, {name: main}]\n",
    )?;
    let names: Vec<String> = (0..n).map(|i| format!("c{i:03}")).collect();
    let wave_of = |i: usize| match i * 10 / n {
        0 => "canary",
        1..=3 => "early",
        _ => "main",
    };
    for (i, name) in names.iter().enumerate() {
        std::fs::write(
            repo.join(format!("clusters/{name}.yaml")),
            format!(
                "apiVersion: tidemark.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n  labels: {{cluster: {name}, tidemark.dev/wave: {}}}\nspec:\n  provider: {{kind: clusterapi, namespace: capi-system}}\n  controlPlane: {{version: \"1.29.8\"}}\n  nodeGroups:\n    - {{name: general, version: \"1.29.8\"}}\n",
                wave_of(i)
            ),
        )?;
    }
    support::commit_fleet(&repo, &["canary", "early", "main"])?;
    let head = git(&repo, &["rev-parse", "HEAD"])?;

    let before = support::status_kib(std::process::id(), "VmRSS:")?;
    let started = Instant::now();
    let mut running = Vec::new();
    let mut kubeconfigs = Vec::new();
    let now = Timestamp::now();
    let cache = GitCache::open(&SourceConfig {
        url: repo.display().to_string(),
        branch: None,
        cache_dir: work.path().join("publisher"),
        auth: Auth::None,
    })?;
    cache.sync(None, &[])?;
    for (i, name) in names.iter().enumerate() {
        let sim = Sim::start(SimConfig {
            version: "1.29.8".into(),
            node_groups: vec![("general".into(), 1)],
            cluster_name: name.clone(),
            ..SimConfig::default()
        })
        .await?;
        let path = work.path().join(format!("{name}.kubeconfig"));
        sim.write_kubeconfig(&path)?;
        let record = record(name, wave_of(i), &head, i, now);
        write_record(&path, &record).await?;
        publish(&cache, name, &record, now)?;
        kubeconfigs.push(path);
        running.push(sim);
    }
    let after = support::status_kib(std::process::id(), "VmRSS:")?;
    println!(
        "{n} simulated clusters started and given a status record in {:.1}s ({:.1} MiB in this process, {:.2} MiB per sim)",
        started.elapsed().as_secs_f64(),
        (after.saturating_sub(before)) as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / 1024.0 / n as f64
    );

    let mut base: Vec<String> = vec![
        "status".into(),
        "-o".into(),
        "json".into(),
        "--repo".into(),
        repo.display().to_string(),
        "--timeout".into(),
        "5s".into(),
    ];
    let cli_cache = work.path().join("cli-cache").display().to_string();
    base.extend(["--cache-dir".into(), cli_cache]);
    let with_contexts = |extra: &[PathBuf]| {
        let mut args = base.clone();
        for k in kubeconfigs.iter().chain(extra) {
            args.push("--kubeconfig".into());
            args.push(k.display().to_string());
        }
        args
    };

    measure(
        &format!("status over {n} kubeconfig contexts"),
        &with_contexts(&[]),
        n,
        work.path(),
    )?;
    let mut from_git = base.clone();
    from_git.push("--from-git".into());
    measure(
        &format!("status --from-git over {n} status refs"),
        &from_git,
        n,
        work.path(),
    )?;
    // A server that accepts connections and never answers: the timeout, once.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let silent_kubeconfig = work.path().join("silent.kubeconfig");
    let text = std::fs::read_to_string(&kubeconfigs[0])?;
    let server = running[0].url();
    std::fs::write(
        &silent_kubeconfig,
        text.replace(&server, &format!("https://{}", silent.local_addr()?)),
    )?;
    measure(
        &format!("status over {n} contexts and one that never answers (timeout 5s)"),
        &with_contexts(&[silent_kubeconfig]),
        n,
        work.path(),
    )?;
    drop(silent);

    // Deciding a promotion reads every context (or every status ref) as status does, then
    // judges the previous wave's clusters.
    let promote = |wave: &str, extra: &[&str]| {
        let mut args: Vec<String> = ["promote", wave, "-o", "json", "--by", "bench <b@b>"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(base.iter().skip(3).cloned());
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    // A promotion carried out: the first wave to a new head (no record to read), the
    // annotated tag pushed with a lease and the promotion log appended (two pushes).
    let mut walls = Vec::new();
    let mut peak = 0u64;
    for i in 0..3 {
        git(
            &repo,
            &[
                "-c",
                "user.name=bench",
                "-c",
                "user.email=b@b",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                &format!("bench {i}"),
            ],
        )?;
        let what = "promote canary";
        let (report, wall, kib) = timed(
            what,
            &promote("canary", &[]),
            &work.path().join(format!("time-{i}")),
        )?;
        if !report["promoted"].is_object() {
            return Err(format!("{what} did not promote: {report}").into());
        }
        walls.push(wall);
        peak = peak.max(kib);
    }
    println!(
        "promote canary (first wave: tag object, push with a lease, promotion log appended): {}",
        figures(walls, peak)
    );
    // canary now names a commit no cluster has applied: the decision on early lists each
    // canary cluster and why (the same work as when it promotes).
    let mut dry = promote("early", &["--dry-run"]);
    for k in &kubeconfigs {
        dry.push("--kubeconfig".into());
        dry.push(k.display().to_string());
    }
    measure_decision(
        &format!("promote early --dry-run over {n} kubeconfig contexts"),
        &dry,
        work.path(),
    )?;
    measure_decision(
        &format!("promote early --dry-run --from-git over {n} status refs"),
        &promote("early", &["--dry-run", "--from-git"]),
        work.path(),
    )?;
    for sim in running {
        sim.shutdown().await;
    }
    Ok(())
}

/// The record an agent would hold: most clusters converged at the head, some moving.
fn record(name: &str, wave: &str, head: &str, i: usize, now: Timestamp) -> Record {
    let v = KubeVersion::new(1, 29, 8);
    let phase = match i % 10 {
        7 => Phase::Progressing,
        9 => Phase::Waiting,
        _ => Phase::Converged,
    };
    Record {
        cluster: Some(name.into()),
        wave: Some(wave.into()),
        desired_revision: Some(head.into()),
        applied_revision: Some(head.into()),
        phase: Some(phase),
        message: Some(format!("{phase}: control plane 1.29.8")),
        control_plane: Some(Versions::new(Some(v), None, v)),
        node_groups: BTreeMap::from([("general".to_string(), Versions::new(Some(v), None, v))]),
        last_pass: Some(now),
        converged_since: (phase == Phase::Converged).then_some(now),
        ..Record::default()
    }
}

/// Writes `record` on the sim's status namespace as the agent does.
async fn write_record(kubeconfig: &Path, record: &Record) -> Result<()> {
    let client = tidemark::k8s::client(Some(kubeconfig)).await?;
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "tidemark-system", "annotations": record.to_annotations()},
    });
    api.patch(
        "tidemark-system",
        &PatchParams::apply("tidemark").force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Publishes `record` to the fleet repo as `agent --report-ref` does.
fn publish(cache: &GitCache, name: &str, record: &Record, now: Timestamp) -> Result<()> {
    let who = Identity {
        name: format!("tidemark agent {name}"),
        email: "bench@tidemark.invalid".into(),
    };
    let commit = cache.write_file_commit(
        refs::STATUS_FILE,
        &tidemark::status::publish::to_file(record),
        "status",
        &who,
        now,
        None,
    )?;
    cache
        .push(&[RefUpdate {
            remote: format!("{}{name}", refs::STATUS_PREFIX),
            target: commit,
            lease: Lease::Any,
        }])?
        .map_err(|r| r.to_string())?;
    Ok(())
}

/// One run of `tidemark ARGS` under GNU time: its JSON output, the wall time in seconds
/// and the peak RSS in KiB.
fn timed(what: &str, args: &[String], times: &Path) -> Result<(serde_json::Value, f64, u64)> {
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%e %M")
        .arg("-o")
        .arg(times)
        .arg(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{what}: {e}: {}", String::from_utf8_lossy(&out.stderr)))?;
    // GNU time says "Command exited with non-zero status 1" first when it did (a refused
    // promotion): the figures are on the last line.
    let text = std::fs::read_to_string(times)?;
    let mut parts = text.lines().last().unwrap_or_default().split_whitespace();
    let wall: f64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let kib: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((doc, wall, kib))
}

/// The median of three wall times and the highest peak RSS, as printed.
fn figures(mut walls: Vec<f64>, peak: u64) -> String {
    walls.sort_by(f64::total_cmp);
    format!(
        "wall {:.2}s (median of {}), peak RSS {:.1} MiB",
        walls[walls.len() / 2],
        walls.len(),
        peak as f64 / 1024.0
    )
}

/// Runs `tidemark status ARGS` three times; prints the median wall time, the highest peak
/// RSS, and how many of the `clusters` declared were read.
fn measure(what: &str, args: &[String], clusters: usize, dir: &Path) -> Result<()> {
    let mut walls = Vec::new();
    let mut peak = 0u64;
    let (mut read, mut unread) = (0, 0);
    for i in 0..3 {
        let (view, wall, kib) = timed(what, args, &dir.join(format!("time-{i}")))?;
        // Every declared cluster is shown, read or not: count those actually read.
        read = view["waves"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|w| w["clusters"].as_array().into_iter().flatten())
            .filter(|c| c["phase"] != "Unreachable")
            .count();
        unread = view["unread"].as_array().map_or(0, Vec::len);
        walls.push(wall);
        peak = peak.max(kib);
    }
    println!(
        "{what}: {}; {read} of {clusters} clusters read, {unread} context(s) unread",
        figures(walls, peak)
    );
    Ok(())
}

/// Runs `tidemark promote ARGS --dry-run` three times; prints the figures, how many
/// clusters of the previous wave were judged on a record, and the verdict.
fn measure_decision(what: &str, args: &[String], dir: &Path) -> Result<()> {
    let mut walls = Vec::new();
    let mut peak = 0u64;
    let (mut judged, mut total, mut verdict) = (0, 0, String::new());
    for i in 0..3 {
        let (report, wall, kib) = timed(what, args, &dir.join(format!("time-{i}")))?;
        let clusters = report["decision"]["clusters"].as_array();
        total = clusters.map_or(0, Vec::len);
        judged = clusters
            .into_iter()
            .flatten()
            .filter(|c| c["phase"] != "Unreachable")
            .count();
        verdict = report["decision"]["verdict"]["outcome"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        walls.push(wall);
        peak = peak.max(kib);
    }
    println!(
        "{what}: {}; {judged} of {total} clusters of the previous wave judged on a record, verdict {verdict}",
        figures(walls, peak)
    );
    Ok(())
}

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git").args(args).current_dir(repo).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
