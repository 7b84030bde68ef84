//! A fleet on one git server: `FLEET_AGENTS` (200) real `tidemark agent` processes poll one
//! `git daemon` on 127.0.0.1 every `FLEET_INTERVAL` (30s), each converging its own cluster.
//! Clusters live in `FLEET_SIMS` (20) `tidemark sim` processes: agents sharing a sim each have
//! their own status namespace, identity and components. Half the fleet is wave `big`, the
//! rest wave `rest`.
//!
//! Run: `cargo build --release --bin tidemark && TIDEMARK_BIN=target/release/tidemark cargo
//! bench -p tidemark-e2e --bench fleet_sim` (several minutes; needs about 8 GB of memory).
//!
//! Printed figures:
//! - start-up: time until every agent applied the first commit;
//! - idle (`FLEET_IDLE`, 300s): the git server's CPU seconds (daemon and its upload-pack
//!   children) and bytes sent, both also per hour; agents' RSS (median, max);
//! - a tag move: time from moving `wave/big` to every agent of that wave having applied the
//!   new commit (and that no agent of wave `rest` did);
//! - `tidemark status` over the fleet, when the binary has it.
//!
//! Nothing is asserted but correctness (every agent converges, the other wave stays put).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tidemark_e2e::{CountingProxy, GitDaemon, SimProcess, WorkRepo, helm_bin, tidemark_bin};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds of `pid` and its reaped children (`/proc/PID/stat` fields 14-17).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..15)
        .context("short /proc stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or_default())
        .sum();
    // USER_HZ is 100 on Linux.
    Ok(ticks as f64 / 100.0)
}

/// Resident memory of `pid` in MiB (`VmRSS`).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn cluster(i: usize) -> String {
    format!("c{i:03}")
}

fn manifest(i: usize, wave: &str) -> String {
    let c = cluster(i);
    format!(
        "apiVersion: tidemark.dev/v1alpha1
kind: Cluster
metadata:
  name: {c}
  labels: {{cluster: {c}, tidemark.dev/wave: {wave}}}
spec:
  provider: {{kind: exec, upgradeControlPlane: [\"true\"], upgradeNodeGroup: [\"true\"]}}
  controlPlane: {{version: \"1.29.8\"}}
  nodeGroups:
    - {{name: general, version: \"1.29.8\"}}
  components:
    - name: cfg-{c}
      chart: {{path: charts/cfg}}
      namespace: ns-{c}
      valuesFiles: [values/common.yaml]
"
    )
}

const CHART_TEMPLATE: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}
data:
  rev: {{ .Values.rev | quote }}
";

/// The applied revision of every agent, read with one kubectl call per sim.
fn applied(sims: &[SimProcess], per_sim: usize, agents: usize) -> Result<Vec<String>> {
    let mut out = vec![String::new(); agents];
    for (s, sim) in sims.iter().enumerate() {
        let json = sim.kubectl(&["get", "namespaces", "-o", "json"])?;
        let list: Value = serde_json::from_str(&json)?;
        for ns in list["items"].as_array().into_iter().flatten() {
            let name = ns["metadata"]["name"].as_str().unwrap_or_default();
            let Some(i) = name
                .strip_prefix("tm-c")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if i / per_sim == s && i < agents {
                out[i] = ns["metadata"]["annotations"]["tidemark.dev/applied-revision"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
        }
    }
    Ok(out)
}

fn wait_applied(
    sims: &[SimProcess],
    per_sim: usize,
    agents: usize,
    which: impl Fn(usize) -> bool,
    rev: &str,
    limit: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let revs = applied(sims, per_sim, agents)?;
        let behind: Vec<usize> = (0..agents)
            .filter(|i| which(*i) && !revs[*i].starts_with(rev))
            .collect();
        if behind.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!(
                "{} agents never applied {rev}: {:?}",
                behind.len(),
                &behind[..behind.len().min(10)]
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn main() -> Result<()> {
    let agents = env_num("FLEET_AGENTS", 200) as usize;
    let sim_count = (env_num("FLEET_SIMS", 20) as usize).clamp(1, agents.max(1));
    let interval = env_num("FLEET_INTERVAL", 30);
    let idle = Duration::from_secs(env_num("FLEET_IDLE", 300));
    let per_sim = agents.div_ceil(sim_count);
    let big = agents / 2;
    let bin = tidemark_bin()?;
    let helm = helm_bin()?;
    println!(
        "fleet_sim: {agents} agents on {sim_count} sims ({per_sim} per sim), one git daemon, poll every {interval}s; binary {}",
        bin.display()
    );
    let started = Instant::now();

    // The fleet repo.
    let repo = WorkRepo::new()?;
    repo.write(
        "fleet.yaml",
        "apiVersion: tidemark.dev/v1alpha1\nkind: Fleet\nmetadata: {name: bench}\nspec:\n  waves:\n    - {name: big}\n    - {name: rest}\n",
    )?;
    repo.write(
        "charts/cfg/Chart.yaml",
        "apiVersion: v2\nname: cfg\nversion: 1.0.0\n",
    )?;
    repo.write("charts/cfg/templates/cm.yaml", CHART_TEMPLATE)?;
    repo.write("values/common.yaml", "rev: 1\n")?;
    for i in 0..agents {
        let wave = if i < big { "big" } else { "rest" };
        repo.write(&format!("clusters/{}.yaml", cluster(i)), &manifest(i, wave))?;
    }
    let first = repo.commit("the fleet")?;
    repo.tag_annotated("wave/big", "HEAD")?;
    repo.tag_annotated("wave/rest", "HEAD")?;
    // A release's worth of unrelated tags, as real repositories have.
    repo.add_tags("release/v", 500)?;
    let daemon = GitDaemon::start(&repo.base_dir())?;
    let proxy = CountingProxy::start(daemon.port())?;
    let url = format!("git://127.0.0.1:{}/{}", proxy.port(), repo.name());

    // The clusters.
    let mut sims = Vec::new();
    for _ in 0..sim_count {
        sims.push(SimProcess::start(&[
            "--version",
            "1.29.8",
            "--node-groups",
            "general=1",
        ])?);
    }
    for (s, sim) in sims.iter().enumerate() {
        let mut namespaces = String::new();
        for i in (s * per_sim)..((s + 1) * per_sim).min(agents) {
            let c = cluster(i);
            namespaces.push_str(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: tm-{c}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{c}}}\n---\n"
            ));
        }
        let file = sim.dir_file("namespaces.yaml", &namespaces)?;
        sim.kubectl(&["apply", "-f", &file.display().to_string()])?;
    }

    // The agents.
    let work = tempfile::tempdir()?;
    let mut children: Vec<Child> = Vec::new();
    for i in 0..agents {
        let c = cluster(i);
        let sim = &sims[i / per_sim];
        let dir = work.path().join(&c);
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(&bin)
            .args(["--log", "warn", "agent", "--repo", &url])
            .args(["--selector", &format!("cluster={c}")])
            .args(["--status-namespace", &format!("tm-{c}")])
            .args(["--identity", &c, "--interval", &format!("{interval}s")])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .arg("--kubeconfig")
            .arg(sim.kubeconfig())
            .arg("--helm-bin")
            .arg(&helm)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log"))?)
            .spawn()?;
        children.push(child);
    }
    let _guard = Agents(children);
    let limit = Duration::from_secs(interval * 4 + 120);
    let up = wait_applied(&sims, per_sim, agents, |_| true, &first[..12], limit)?;
    println!(
        "start-up: every agent applied the first commit {:.1}s after the last one started",
        up.as_secs_f64()
    );

    // Idle: nothing moves.
    let (cpu0, (down0, up0)) = (cpu_seconds(daemon.pid())?, proxy.totals());
    let requests0 = daemon.upload_pack_requests()?;
    let mut rss = Vec::new();
    let idle_start = Instant::now();
    while idle_start.elapsed() < idle {
        std::thread::sleep(Duration::from_secs(10).min(idle));
        rss.clear();
        rss.extend(_guard.0.iter().filter_map(|c| rss_mib(c.id())));
    }
    let seconds = idle_start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(daemon.pid())? - cpu0;
    let (down, upb) = proxy.totals();
    let (down, upb) = (down - down0, upb - up0);
    let polls = daemon.upload_pack_requests()? - requests0;
    let per_hour = 3600.0 / seconds;
    rss.sort_by(f64::total_cmp);
    println!(
        "idle {seconds:.0}s: git server CPU {cpu:.2}s ({:.1} s/hour), {polls} upload-pack requests ({:.0}/hour), {down} bytes down and {upb} up ({:.1} MB/hour down, {:.0} bytes per poll)",
        cpu * per_hour,
        polls as f64 * per_hour,
        down as f64 * per_hour / 1e6,
        down as f64 / (polls.max(1) as f64)
    );
    if let (Some(min), Some(max)) = (rss.first(), rss.last()) {
        println!(
            "agent RSS: median {:.1} MiB, min {min:.1}, max {max:.1} ({} agents)",
            rss[rss.len() / 2],
            rss.len()
        );
    }

    // A tag move: wave `big` gets a new commit.
    repo.write("values/common.yaml", "rev: 2\n")?;
    let second = repo.commit("rev 2")?;
    repo.git(&["tag", "-f", "-a", "-m", "wave big", "wave/big", &second])?;
    let took = wait_applied(&sims, per_sim, agents, |i| i < big, &second[..12], limit)?;
    let revs = applied(&sims, per_sim, agents)?;
    let rest_moved = (big..agents)
        .filter(|i| !revs[*i].starts_with(&first[..12]))
        .count();
    println!(
        "tag move: all {big} agents of wave big applied the new commit {:.1}s after the tag moved (poll interval {interval}s); {rest_moved} agents of wave rest moved (expected 0)",
        took.as_secs_f64()
    );

    // `tidemark status` over the fleet, through one kubeconfig per sim.
    let kubeconfigs: Vec<PathBuf> = sims.iter().map(SimProcess::kubeconfig).collect();
    status_figure(&bin, &url, &kubeconfigs)?;
    println!("(bench took {:.0}s)", started.elapsed().as_secs_f64());
    if rest_moved > 0 {
        bail!("agents of wave rest moved");
    }
    Ok(())
}

/// Times `tidemark status --from-git` if the binary has it (it reads status refs only when
/// agents publish them; here it shows the layout read from git).
fn status_figure(bin: &Path, url: &str, _kubeconfigs: &[PathBuf]) -> Result<()> {
    let help = Command::new(bin).args(["status", "--help"]).output()?;
    if !help.status.success() {
        println!("tidemark status: not in this binary");
        return Ok(());
    }
    let start = Instant::now();
    let out = Command::new(bin)
        .args(["status", "--repo", url, "--from-git", "--output", "json"])
        .output()?;
    println!(
        "tidemark status --from-git over the fleet: {:.2}s, exit {:?}, {} bytes of JSON",
        start.elapsed().as_secs_f64(),
        out.status.code(),
        out.stdout.len()
    );
    Ok(())
}

/// The agent processes, killed when the bench ends.
struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}
