//! `tidemark demo`: the whole loop on this machine. One simulated cluster per cluster of
//! the example fleet, the fleet committed to a temporary git repository with wave tags,
//! one agent per cluster; then an upgrade is committed and rolled out wave by wave, each
//! wave promoted when the previous one has converged.
//!
//! Clusters whose Cluster API objects live in a management cluster (the provider names a
//! `kubeconfigSecret` or `kubeconfigFile`) share one simulated management cluster holding
//! those objects: the demo puts its kubeconfig where each manifest says (the Secret in the
//! agent's namespace of the workload cluster, or the file the manifest names, rewritten in
//! the demo's copy to a file of the demo), prints each version the agents move there, and
//! ends with what the management cluster holds and the Cluster API requests each side
//! served.
//!
//! Nothing here is special to the demo but the orchestration: the agents run the same
//! runner and passes as `tidemark agent` (with a clock moved into each cluster's
//! maintenance window), against clusters that speak the real API over HTTPS.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};
use tidemark_schema::{Cluster, ComponentSet, FsTree, KubeVersion};
use tidemark_sim::{Sim, SimConfig};

use crate::desired::Source;
use crate::fleet::promotion::Verdict;
use crate::fleet::render::{self, Style};
use crate::fleet::view::FleetView;
use crate::fleet::{self, Ask, FleetRepo, Records};
use crate::pass::PassReport;
use crate::plan::Phase;
use crate::runner::lease::LeaseConfig;
use crate::runner::{self, Observers};
use crate::source::{Auth, GitCache, Identity, SourceConfig};

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// The fleet repo to roll out (a directory).
    pub fleet: PathBuf,
    /// Time factor of the simulated clusters.
    pub speed: f64,
    /// Nodes per node group.
    pub nodes_per_group: u32,
    /// Give up after this long.
    pub timeout: Duration,
    /// The `tidemark` binary, for the `exec` provider's commands.
    pub binary: PathBuf,
    /// The helm executable the agents render with.
    pub helm: crate::component::helm::Helm,
    /// How the agents wait for components.
    pub settings: crate::converge::Settings,
    /// Where to clone the demo's fleet repo at the end, if anywhere.
    pub keep_repo: Option<PathBuf>,
    /// The soak of every wave, shortened for the demo (written into its copy of
    /// fleet.yaml, so `tidemark promote`'s rules apply unchanged).
    pub soak: Duration,
}

/// One cluster as the demo tracks it.
#[derive(Clone, Debug, Default)]
struct Row {
    wave: String,
    phase: String,
    message: String,
    control_plane: String,
    applied: String,
    from: String,
    to: String,
    done_after: Option<Duration>,
    window_note: Option<String>,
    /// The metrics-lite chart version running, from the components status.
    metrics: String,
    /// The one it ran before the upgrade.
    metrics_before: String,
    /// Control-plane and node-group steps the agent executed, in order (a step its
    /// passes continue is listed once).
    steps: Vec<String>,
}

type Board = Arc<Mutex<BTreeMap<String, Row>>>;

/// Runs the demo; prints progress and a summary on stdout.
pub async fn run(config: DemoConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("tidemark-demo-")
        .tempdir()?;
    let repo = work.path().join("fleet");
    let management_kubeconfig = work.path().join("management.kubeconfig");
    copy_fleet(&config.fleet, &repo, &config.binary, &management_kubeconfig)?;
    let soaks = shorten_soaks(&repo.join("fleet.yaml"), config.soak)?;
    let git = Git { dir: repo.clone() };
    git.run(&["init", "-q", "-b", "main"])?;
    git.run(&["add", "-A"])?;
    git.run(&["commit", "-q", "-m", "Fleet as it runs today"])?;
    let initial = git.run(&["rev-parse", "HEAD"])?;

    let tree = FsTree::new(&repo)?;
    let (fleet_repo, diags) = tidemark_schema::load(&tree);
    if !diags.is_empty() {
        bail!("the demo fleet is invalid:\n{diags}");
    }
    let fleet = fleet_repo
        .fleet
        .as_ref()
        .map(|d| d.value.clone())
        .context("fleet.yaml missing")?;
    let waves: Vec<String> = fleet.spec.waves.iter().map(|w| w.name.clone()).collect();
    for w in &waves {
        git.run(&[
            "tag",
            "-a",
            &fleet.wave_tag(w),
            "-m",
            &format!("wave {w}"),
            "HEAD",
        ])?;
    }
    let sets: BTreeMap<String, &ComponentSet> = fleet_repo
        .component_sets
        .iter()
        .map(|d| (d.value.metadata.name.clone(), &d.value))
        .collect();
    let clusters: Vec<(PathBuf, Cluster)> = fleet_repo
        .clusters
        .iter()
        .map(|d| (repo.join(d.file()), d.value.clone()))
        .collect();

    let out = Output {
        tty: std::io::stdout().is_terminal(),
    };
    out.line(&format!(
        "tidemark demo: {} clusters in waves {}; fleet repo {} (tags {})",
        clusters.len(),
        waves.join(" -> "),
        repo.display(),
        waves
            .iter()
            .map(|w| fleet.wave_tag(w))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // The management cluster of the clusters whose Cluster API objects are not their own,
    // started with those workload clusters.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let managed: Vec<&Cluster> = clusters
        .iter()
        .map(|(_, c)| c)
        .filter(|c| management_of(c).is_some())
        .collect();
    let mut workload_sims: BTreeMap<String, Sim> = BTreeMap::new();
    let mut management: Option<Management> = None;
    if !managed.is_empty() {
        let started = Sim::start_managed(
            management_sim_config(&config),
            managed.iter().map(|c| sim_config(c, &config)).collect(),
        )
        .await
        .context("failed to start the simulated management cluster")?;
        started
            .management
            .write_kubeconfig(&management_kubeconfig)?;
        let names: Vec<String> = managed.iter().map(|c| c.metadata.name.clone()).collect();
        for (name, sim) in names.iter().zip(started.workloads) {
            workload_sims.insert(name.clone(), sim);
        }
        out.line(&format!(
            "management cluster {}: holds the Cluster API objects of {}",
            started.management.url(),
            names.join(", ")
        ));
        let client = started.management.client().await?;
        let watcher = watch_management(client.clone(), out, stopped.clone());
        management = Some(Management {
            sim: started.management,
            client,
            clusters: names,
            watcher,
        });
    }

    // One simulated cluster and one agent per manifest.
    let board: Board = Arc::default();
    let mut offsets: BTreeMap<String, SignedDuration> = BTreeMap::new();
    let mut sims = Vec::new();
    let mut agents = Vec::new();
    for (_, cluster) in &clusters {
        let name = cluster.metadata.name.clone();
        let desired = tidemark_schema::resolve::resolve(
            Some(&fleet),
            cluster,
            cluster.wave().map(str::to_string),
            &sets,
        );
        let sim = match workload_sims.remove(&name) {
            Some(sim) => sim,
            None => Sim::start(sim_config(cluster, &config))
                .await
                .with_context(|| format!("failed to start the simulated cluster {name}"))?,
        };
        if let Some((Some(secret), _)) = management_of(cluster) {
            // What the platform engineer does once per workload cluster (README: "Cluster
            // API: self-managed, or from a management cluster"): the management cluster's
            // kubeconfig, key `value`, in a Secret of the agent's namespace.
            let yaml = std::fs::read_to_string(&management_kubeconfig)?;
            put_kubeconfig_secret(&sim, secret, &yaml)
                .await
                .with_context(|| format!("failed to create Secret {secret} in {name}"))?;
        }
        let kubeconfig = work.path().join(format!("{name}.kubeconfig"));
        sim.write_kubeconfig(&kubeconfig)?;
        // Maintenance windows are honoured by fast-forwarding this cluster's clock into its
        // next window: the planner sees a time inside it.
        let offset = desired
            .maintenance_window
            .as_ref()
            .filter(|w| !w.is_open(Timestamp::now()))
            .and_then(|w| w.next_open(Timestamp::now()))
            .map(|open| open.duration_since(Timestamp::now()) + SignedDuration::from_secs(60));
        let window_note = offset.map(|o| format!("window fast-forwarded {}h", o.as_secs() / 3600));
        if let Some(o) = offset {
            offsets.insert(name.clone(), o);
        }
        board
            .lock()
            .map_err(|_| anyhow::anyhow!("board poisoned"))?
            .insert(
                name.clone(),
                Row {
                    wave: cluster.wave().unwrap_or("-").to_string(),
                    phase: "Starting".into(),
                    from: cluster.spec.control_plane.version.to_string(),
                    window_note,
                    ..Row::default()
                },
            );
        agents.push(spawn_agent(AgentSpec {
            name: name.clone(),
            repo: repo.clone(),
            cache: work.path().join("cache").join(&name),
            kubeconfig,
            offset,
            board: board.clone(),
            stop: stopped.clone(),
            helm: config.helm.clone(),
            settings: config.settings.clone(),
        }));
        sims.push((name, sim));
    }

    let result = async {
        wait_for(&board, &out, started, config.timeout, |_, r| {
            r.phase == "Converged" && r.applied == initial
        })
        .await?;
        out.line("all clusters converged on the fleet as it runs today");
        if let Ok(mut rows) = board.lock() {
            for r in rows.values_mut() {
                r.metrics_before = r.metrics.clone();
            }
        }

        // The upgrade: every cluster one minor up, merged to the default branch.
        let mut upgrades = BTreeMap::new();
        for (file, cluster) in &clusters {
            let from = cluster.spec.control_plane.version;
            let to = next_release(from);
            let text = std::fs::read_to_string(file)?;
            let mut versions: Vec<KubeVersion> =
                cluster.spec.node_groups.iter().map(|g| g.version).collect();
            versions.push(from);
            let mut new_text = text.clone();
            for v in versions {
                new_text = new_text.replace(&format!("\"{v}\""), &format!("\"{to}\""));
            }
            std::fs::write(file, new_text)?;
            upgrades.insert(cluster.metadata.name.clone(), (from, to));
        }
        // A component upgrade rides along with the same tags: the metrics-lite chart
        // 0.3.0 -> 0.4.0 (in the fleet repo, so every release of it moves).
        let component_upgrade = bump_chart(&repo, "charts/metrics-lite", "0.3.0", "0.4.0")?;
        git.run(&[
            "commit",
            "-q",
            "-am",
            if component_upgrade {
                "Upgrade the fleet one Kubernetes minor and metrics-lite to 0.4.0"
            } else {
                "Upgrade the fleet one Kubernetes minor"
            },
        ])?;
        let target = git.run(&["rev-parse", "HEAD"])?;
        {
            let mut rows = board
                .lock()
                .map_err(|_| anyhow::anyhow!("board poisoned"))?;
            for (name, (from, to)) in &upgrades {
                if let Some(r) = rows.get_mut(name) {
                    r.from = from.to_string();
                    r.to = to.to_string();
                }
            }
        }
        out.line(&format!(
            "committed the upgrade as {} on main; no wave tag points at it yet",
            &target[..12]
        ));

        let rollout = Instant::now();
        let promoter = Promoter::new(&repo, work.path(), &clusters, &offsets)?;
        out.line(&format!(
            "waves are promoted with `tidemark promote` (its library): soak {} instead of {} (shortened for the demo); soak is judged on each cluster's real time (the demo moved some clusters' clocks into their maintenance windows)",
            tidemark_schema::Duration(config.soak),
            soaks
        ));
        for wave in &waves {
            let promoted = promoter
                .promote_when_ready(wave, &board, &out, started, config.timeout)
                .await?;
            out.line(&promoted);
            let this_wave = wave.clone();
            let this_target = target.clone();
            wait_for(&board, &out, started, config.timeout, move |_, r| {
                r.wave != this_wave || (r.phase == "Converged" && r.applied == this_target)
            })
            .await?;
            let mut rows = board
                .lock()
                .map_err(|_| anyhow::anyhow!("board poisoned"))?;
            for r in rows.values_mut().filter(|r| &r.wave == wave) {
                r.done_after.get_or_insert(rollout.elapsed());
            }
            drop(rows);
            out.line(&format!("wave {wave} converged"));
        }
        let status = promoter.status().await?;
        anyhow::Ok(status)
    }
    .await;

    let _ = stop.send(true);
    for a in agents {
        let _ = a.await;
    }
    // What the management cluster holds now, and who wrote Cluster API objects where.
    let management_report = match &management {
        Some(m) => Some(m.report(&sims).await),
        None => None,
    };
    for (_, sim) in sims {
        sim.shutdown().await;
    }
    if let Some(m) = management {
        let _ = m.watcher.await;
        m.sim.shutdown().await;
    }
    let rows = board
        .lock()
        .map_err(|_| anyhow::anyhow!("board poisoned"))?
        .clone();
    let status = result?;
    out.line("");
    out.line("summary:");
    out.line(&format!(
        "  {:<14} {:<7} {:<17} {:<15} {:<10} {}",
        "CLUSTER", "WAVE", "CONTROL PLANE", "METRICS-LITE", "DONE", "NOTE"
    ));
    for (name, r) in &rows {
        let done = r
            .done_after
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        let metrics = if r.metrics.is_empty() {
            "-".to_string()
        } else {
            format!("{} -> {}", r.metrics_before, r.metrics)
        };
        out.line(&format!(
            "  {name:<14} {:<7} {:<17} {metrics:<15} {done:<10} {}",
            r.wave,
            format!("{} -> {}", r.from, r.to),
            r.window_note.as_deref().unwrap_or("")
        ));
    }
    out.line("");
    out.line("control-plane and node-group steps the agents executed:");
    for (name, r) in &rows {
        out.line(&format!("  {name}: {}", r.steps.join("; ")));
    }
    if let Some(report) = management_report {
        out.line("");
        for line in report? {
            out.line(&line);
        }
    }
    out.line(&format!(
        "rolled out to {} clusters in {:.1}s",
        rows.len(),
        started.elapsed().as_secs_f64()
    ));
    out.line("");
    out.line("$ tidemark status   (as the fleet stood before the simulated clusters stopped)");
    out.line(status.trim_end());
    if let Some(dir) = &config.keep_repo {
        let dir = std::path::absolute(dir)?.display().to_string();
        git.run(&["clone", "-q", &repo.display().to_string(), &dir])?;
        out.line(&format!("the fleet repo is kept in {dir}"));
    }
    Ok(())
}

/// `tidemark promote` as the demo runs it: the library's check and promotion (tag pushed
/// with a lease, the promotion log), with the records read through each simulated
/// cluster's kubeconfig.
struct Promoter {
    repo: FleetRepo,
    records: Records,
    /// How far each agent's clock was moved into its maintenance window.
    offsets: BTreeMap<String, SignedDuration>,
}

impl Promoter {
    fn new(
        repo: &Path,
        work: &Path,
        clusters: &[(PathBuf, Cluster)],
        offsets: &BTreeMap<String, SignedDuration>,
    ) -> anyhow::Result<Self> {
        let config = SourceConfig {
            url: repo.display().to_string(),
            branch: None,
            cache_dir: work.join("cache").join("promote"),
            auth: Auth::None,
        };
        let files: Vec<PathBuf> = clusters
            .iter()
            .map(|(_, c)| work.join(format!("{}.kubeconfig", c.metadata.name)))
            .collect();
        Ok(Self {
            repo: FleetRepo::open(&config)?,
            records: Records::Contexts {
                kubeconfigs: files,
                contexts: Vec::new(),
                namespace: crate::keys::DEFAULT_STATUS_NAMESPACE.to_string(),
                timeout: Duration::from_secs(5),
            },
            offsets: offsets.clone(),
        })
    }

    /// The fleet now, each agent's times moved back by its clock's offset: the demo's
    /// clocks are a fiction of the demo, and soak is judged on real time.
    async fn observe(&self) -> anyhow::Result<(fleet::layout::Layout, FleetView)> {
        let now = Timestamp::now();
        let (layout, mut view) = self.repo.observe(&self.records, now).await?;
        for wave in &mut view.waves {
            for c in &mut wave.clusters {
                let Some(offset) = self.offsets.get(&c.name) else {
                    continue;
                };
                let back = |t: &mut Option<Timestamp>| {
                    *t = t.and_then(|t| t.checked_sub(*offset).ok());
                };
                back(&mut c.last_pass);
                back(&mut c.converged_since);
                if let Some(r) = c.record.as_mut() {
                    back(&mut r.last_pass);
                    back(&mut r.converged_since);
                }
                c.age_seconds = c
                    .last_pass
                    .map(|t| now.duration_since(t).as_secs().max(0).unsigned_abs());
            }
        }
        Ok((layout, view))
    }

    /// Promotes `wave` as soon as `tidemark promote` allows it, drawing the board and
    /// saying each new reason for a refusal meanwhile. Returns what was done.
    async fn promote_when_ready(
        &self,
        wave: &str,
        board: &Board,
        out: &Output,
        started: Instant,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let ask = Ask {
            wave: wave.to_string(),
            to: None,
            clock_skew: Duration::from_secs(1),
            override_reason: None,
        };
        let mut said = String::new();
        let mut last_plain = BTreeMap::new();
        loop {
            let (layout, view) = self.observe().await?;
            let check = self
                .repo
                .decide(&layout, view, &ask, Timestamp::now())
                .await?;
            let decision = &check.decision;
            match &decision.verdict {
                Verdict::Promote => {
                    let by = Identity {
                        name: "tidemark demo".into(),
                        email: "demo@tidemark.invalid".into(),
                    };
                    self.repo
                        .promote(&check, by, None, Timestamp::now())
                        .await?;
                    let evidence = match &decision.previous {
                        None => format!("first wave, {}", decision.to_source),
                        Some(p) => format!(
                            "{} cluster(s) of wave {} converged at it and soaked {}",
                            decision.clusters.len(),
                            p.name,
                            p.soak
                        ),
                    };
                    return Ok(format!(
                        "tidemark promote {wave}: moved {} to {} ({evidence}; recorded in {})",
                        decision.tag,
                        &decision.to[..12.min(decision.to.len())],
                        crate::keys::refs::PROMOTIONS
                    ));
                }
                Verdict::AlreadyThere => {
                    return Ok(format!("wave {wave} already runs {}", decision.to));
                }
                Verdict::Refused { reasons } => {
                    let text = reasons.join("; ");
                    if text != said {
                        out.line(&format!("tidemark promote {wave}: refused for now: {text}"));
                        said = text;
                    }
                }
            }
            let rows = board
                .lock()
                .map_err(|_| anyhow::anyhow!("board poisoned"))?
                .clone();
            out.draw(&rows, &mut last_plain);
            if started.elapsed() > timeout {
                bail!("the demo did not finish within {timeout:?}: promoting {wave}: {said}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `tidemark status` of the demo fleet.
    async fn status(&self) -> anyhow::Result<String> {
        let (_, view) = self.observe().await?;
        let tty = std::io::stdout().is_terminal();
        let style = Style {
            color: tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            message_width: 60,
        };
        Ok(render::table(&view, style))
    }
}

/// Writes `soak` into every wave of the demo's copy of fleet.yaml; returns the soaks it
/// replaced, as people read them (`canary 10m, early 1h`).
fn shorten_soaks(fleet_yaml: &Path, soak: Duration) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(fleet_yaml)?;
    let mut replaced = Vec::new();
    let mut wave = String::new();
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(name) = trimmed.strip_prefix("name: ") {
            wave = name.trim().to_string();
        }
        match trimmed.strip_prefix("soak: ") {
            Some(old) => {
                replaced.push(format!("{wave} {}", old.trim()));
                let indent = &line[..line.len() - line.trim_start().len()];
                let dash = if line.trim_start().starts_with("- ") {
                    "- "
                } else {
                    ""
                };
                out.push_str(&format!(
                    "{indent}{dash}soak: {}\n",
                    tidemark_schema::Duration(soak)
                ));
            }
            None => out.push_str(line),
        }
    }
    std::fs::write(fleet_yaml, out)?;
    Ok(if replaced.is_empty() {
        "none".into()
    } else {
        replaced.join(", ")
    })
}

/// Moves the chart at `chart` (in the work tree `repo`) from version `from` to `to`, and
/// every component pinning it to `from`. Returns false when the fleet has no such chart.
fn bump_chart(repo: &Path, chart: &str, from: &str, to: &str) -> anyhow::Result<bool> {
    let chart_yaml = repo.join(chart).join("Chart.yaml");
    let Ok(text) = std::fs::read_to_string(&chart_yaml) else {
        return Ok(false);
    };
    if !text.contains(&format!("version: {from}")) {
        return Ok(false);
    }
    std::fs::write(
        &chart_yaml,
        text.replace(&format!("\nversion: {from}"), &format!("\nversion: {to}")),
    )?;
    for dir in ["clusters", "components"] {
        for entry in std::fs::read_dir(repo.join(dir))? {
            let path = entry?.path();
            let text = std::fs::read_to_string(&path)?;
            // `path: charts/x` followed by its pinned `version:` on the next line.
            let mut out = String::with_capacity(text.len());
            let mut pinned_next = false;
            for line in text.split_inclusive('\n') {
                if pinned_next && line.trim() == format!("version: {from}") {
                    out.push_str(&line.replace(from, to));
                } else {
                    out.push_str(line);
                }
                pinned_next = line.trim() == format!("path: {chart}");
            }
            if out != text {
                std::fs::write(&path, out)?;
            }
        }
    }
    Ok(true)
}

/// The simulated cluster for a manifest: its control plane version, its node groups at
/// their versions, named as Cluster API names them.
fn sim_config(cluster: &Cluster, config: &DemoConfig) -> SimConfig {
    let cp = cluster.spec.control_plane.version;
    let (capi_namespace, topology) = match &cluster.spec.provider {
        tidemark_schema::Provider::ClusterApi(p) => (p.namespace.clone(), p.topology),
        tidemark_schema::Provider::Exec(_) => ("capi-system".into(), false),
    };
    SimConfig {
        version: cp.to_string(),
        node_groups: cluster
            .spec
            .node_groups
            .iter()
            .map(|g| (g.name.clone(), config.nodes_per_group))
            .collect(),
        node_versions: cluster
            .spec
            .node_groups
            .iter()
            .filter(|g| g.version != cp)
            .map(|g| (g.name.clone(), g.version.to_string()))
            .collect(),
        speed: config.speed,
        cluster_name: cluster.metadata.name.clone(),
        capi_namespace,
        topology,
        ..SimConfig::default()
    }
}

/// The management cluster of the demo: its own nodes run nothing tidemark upgrades.
fn management_sim_config(config: &DemoConfig) -> SimConfig {
    SimConfig {
        version: "1.31.6".into(),
        node_groups: Vec::new(),
        speed: config.speed,
        cluster_name: "management".into(),
        ..SimConfig::default()
    }
}

/// Where a cluster's Cluster API objects are reached from, when not from the cluster
/// itself: its provider's `kubeconfigSecret` and `kubeconfigFile`.
fn management_of(cluster: &Cluster) -> Option<(Option<&String>, Option<&String>)> {
    match &cluster.spec.provider {
        tidemark_schema::Provider::ClusterApi(p)
            if p.kubeconfig_secret.is_some() || p.kubeconfig_file.is_some() =>
        {
            Some((p.kubeconfig_secret.as_ref(), p.kubeconfig_file.as_ref()))
        }
        _ => None,
    }
}

/// Creates Secret `name` (key `value`: the management cluster's kubeconfig) in the agent's
/// namespace of the workload cluster `sim`.
async fn put_kubeconfig_secret(sim: &Sim, name: &str, kubeconfig: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let namespace = crate::keys::DEFAULT_STATUS_NAMESPACE;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(sim.client().await?, namespace);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        string_data: Some([("value".to_string(), kubeconfig.to_string())].into()),
        ..Default::default()
    };
    secrets
        .create(&kube::api::PostParams::default(), &secret)
        .await?;
    Ok(())
}

/// The simulated management cluster, the workload clusters whose Cluster API objects it
/// holds, and the task printing the versions the agents move there.
struct Management {
    sim: Sim,
    client: kube::Client,
    clusters: Vec<String>,
    watcher: tokio::task::JoinHandle<()>,
}

/// The Cluster API kinds whose versions tidemark moves, as the demo reads them (v1beta1,
/// served by every Cluster API the simulator models), and where the version is.
const VERSIONED_KINDS: [(&str, &str, &str); 3] = [
    (
        "controlplane.cluster.x-k8s.io",
        "KubeadmControlPlane",
        "/spec/version",
    ),
    (
        "cluster.x-k8s.io",
        "MachineDeployment",
        "/spec/template/spec/version",
    ),
    ("cluster.x-k8s.io", "Cluster", "/spec/topology/version"),
];

/// `Kind namespace/name` -> the version it is set to, for every Cluster API object of
/// [`VERSIONED_KINDS`] in the cluster of `client` (Clusters only when built from a
/// ClusterClass).
async fn capi_versions(client: &kube::Client) -> anyhow::Result<BTreeMap<String, String>> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
    let mut out = BTreeMap::new();
    for (group, kind, pointer) in VERSIONED_KINDS {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1beta1", kind));
        let api: kube::Api<DynamicObject> = kube::Api::all_with(client.clone(), &resource);
        for o in api.list(&ListParams::default()).await? {
            let Some(version) = o.data.pointer(pointer).and_then(|v| v.as_str()) else {
                continue;
            };
            let namespace = o.metadata.namespace.clone().unwrap_or_default();
            let name = o.metadata.name.clone().unwrap_or_default();
            out.insert(format!("{kind} {namespace}/{name}"), version.to_string());
        }
    }
    Ok(out)
}

/// Prints each version the agents set in the management cluster as it moves (read every
/// 300ms through its API, until `stop`).
fn watch_management(
    client: kube::Client,
    out: Output,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: Option<BTreeMap<String, String>> = None;
        loop {
            if let Ok(now) = capi_versions(&client).await {
                if let Some(before) = &seen {
                    for (object, version) in &now {
                        match before.get(object) {
                            Some(old) if old != version => out
                                .line(&format!("management cluster: {object} {old} -> {version}")),
                            _ => {}
                        }
                    }
                }
                seen = Some(now);
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
    })
}

impl Management {
    /// What the management cluster holds, and the Cluster API writes each cluster served
    /// (`sims`: every other simulated cluster, by name).
    async fn report(&self, sims: &[(String, Sim)]) -> anyhow::Result<Vec<String>> {
        let mut lines = vec![format!(
            "the management cluster holds the Cluster API objects of {}:",
            self.clusters.join(", ")
        )];
        for (object, version) in capi_versions(&self.client).await? {
            lines.push(format!("  {object} at {version}"));
        }
        let management = capi_writes(&self.sim);
        let said: Vec<String> = management
            .iter()
            .map(|(what, n)| format!("{what} {n}"))
            .collect();
        lines.push(format!(
            "Cluster API writes the management cluster served (from the agents of {}): {}",
            self.clusters.join(", "),
            if said.is_empty() {
                "none".to_string()
            } else {
                said.join(", ")
            }
        ));
        let (managed, own): (Vec<_>, Vec<_>) = sims
            .iter()
            .partition(|(name, _)| self.clusters.contains(name));
        let total = |sims: &[&(String, Sim)]| -> u64 {
            sims.iter()
                .map(|(_, sim)| capi_writes(sim).values().sum::<u64>())
                .sum()
        };
        lines.push(format!(
            "Cluster API writes the workload clusters {} served: {}",
            self.clusters.join(", "),
            total(&managed)
        ));
        lines.push(format!(
            "Cluster API writes the other clusters served (self-managed ones write their own): {}",
            total(&own)
        ));
        Ok(lines)
    }
}

/// Write requests on Cluster API kinds a sim served, by `"verb resource"` (only those seen).
fn capi_writes(sim: &Sim) -> BTreeMap<String, u64> {
    const WRITES: [&str; 4] = ["create", "update", "patch", "delete"];
    const KINDS: [&str; 4] = [
        "clusters",
        "kubeadmcontrolplanes",
        "machinedeployments",
        "machines",
    ];
    let counts = sim.request_counts();
    WRITES
        .iter()
        .flat_map(|verb| KINDS.iter().map(move |kind| (*verb, *kind)))
        .filter_map(|(verb, kind)| {
            let n = counts.resource(verb, kind);
            (n > 0).then(|| (format!("{verb} {kind}"), n))
        })
        .collect()
}

/// The release the demo upgrades to: the next minor's patch (a fixed, known-good table).
fn next_release(v: KubeVersion) -> KubeVersion {
    let patch = match v.minor + 1 {
        27 => 16,
        28 => 15,
        29 => 14,
        30 => 10,
        31 => 6,
        _ => 2,
    };
    KubeVersion::new(v.major, v.minor + 1, patch)
}

struct AgentSpec {
    name: String,
    repo: PathBuf,
    cache: PathBuf,
    kubeconfig: PathBuf,
    offset: Option<SignedDuration>,
    board: Board,
    stop: tokio::sync::watch::Receiver<bool>,
    helm: crate::component::helm::Helm,
    settings: crate::converge::Settings,
}

/// One agent: the runner of `tidemark agent --interval 300ms`, its clock moved into the
/// cluster's maintenance window, its board row updated from each pass's status record.
fn spawn_agent(spec: AgentSpec) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let report = |phase: &str, message: String| {
            if let Ok(mut rows) = spec.board.lock()
                && let Some(r) = rows.get_mut(&spec.name)
            {
                r.phase = phase.to_string();
                r.message = message;
            }
        };
        let source = SourceConfig {
            url: spec.repo.display().to_string(),
            branch: None,
            cache_dir: spec.cache.clone(),
            auth: Auth::None,
        };
        let (cache, client) = match (
            GitCache::open(&source),
            crate::k8s::client(Some(&spec.kubeconfig)).await,
        ) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) => return report("Failed", e.to_string()),
            (_, Err(e)) => return report("Failed", e.to_string()),
        };
        let selector = tidemark_schema::LabelSelector {
            match_labels: [("cluster".to_string(), spec.name.clone())].into(),
            ..Default::default()
        };
        let identity = format!("demo-{}", spec.name);
        let ctx = crate::config::pass_ctx(
            Source::new(cache, None, selector, None),
            client,
            crate::keys::DEFAULT_STATUS_NAMESPACE.to_string(),
            Some(spec.kubeconfig.clone()),
            spec.helm.clone(),
            spec.settings.clone(),
            &identity,
        );
        let config = runner::Config {
            interval: Duration::from_millis(300),
            lease: LeaseConfig {
                namespace: crate::keys::DEFAULT_STATUS_NAMESPACE.to_string(),
                name: crate::keys::LEASE_NAME.into(),
                identity,
                duration: Duration::from_secs(15),
            },
            clock_offset: spec.offset.unwrap_or(SignedDuration::ZERO),
        };
        let on_pass = |pass: &PassReport| {
            if pass.phase == Phase::Failed {
                tracing::debug!(cluster = %spec.name, message = %pass.message, "demo pass failed");
            }
            let Ok(mut rows) = spec.board.lock() else {
                return;
            };
            let Some(r) = rows.get_mut(&spec.name) else {
                return;
            };
            let record = &pass.record;
            r.phase = pass.phase.to_string();
            r.message = pass.message.clone();
            for step in pass.executed.iter().filter(|s| {
                s.starts_with("upgrade control plane ") || s.starts_with("upgrade node group ")
            }) {
                if r.steps.last() != Some(step) {
                    r.steps.push(step.clone());
                }
            }
            r.applied = record.applied_revision.clone().unwrap_or_default();
            r.metrics = record
                .components
                .get("metrics-lite")
                .and_then(|c| c.chart.rsplit(' ').next())
                .map(str::to_string)
                .unwrap_or_default();
            r.control_plane = record
                .control_plane
                .as_ref()
                .map(|v| v.observed.clone())
                .unwrap_or_default();
        };
        let observers = Observers {
            metrics: None,
            admin: None,
            on_pass: Some(&on_pass),
        };
        let trigger = Arc::new(tokio::sync::Notify::new());
        runner::run(&ctx, &config, observers, trigger, spec.stop.clone()).await;
    })
}

/// Waits until `done` holds for every cluster, drawing the board meanwhile.
async fn wait_for(
    board: &Board,
    out: &Output,
    started: Instant,
    timeout: Duration,
    done: impl Fn(&str, &Row) -> bool,
) -> anyhow::Result<()> {
    let mut last_plain: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let rows = board
            .lock()
            .map_err(|_| anyhow::anyhow!("board poisoned"))?
            .clone();
        out.draw(&rows, &mut last_plain);
        if rows.iter().all(|(n, r)| done(n, r)) {
            return Ok(());
        }
        if let Some((name, r)) = rows.iter().find(|(_, r)| r.phase == "Blocked") {
            bail!("cluster {name} is Blocked: {}", r.message);
        }
        if started.elapsed() > timeout {
            bail!("the demo did not finish within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Terminal output: a table redrawn in place on a TTY, changed lines otherwise.
#[derive(Clone, Copy)]
struct Output {
    tty: bool,
}

impl Output {
    fn line(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        if self.tty {
            // Clear the table drawn below the cursor; the next draw puts it under this line.
            let _ = write!(stdout, "\x1b[J");
        }
        let _ = writeln!(stdout, "{text}");
        let _ = stdout.flush();
    }

    fn draw(&self, rows: &BTreeMap<String, Row>, last: &mut BTreeMap<String, String>) {
        let mut stdout = std::io::stdout().lock();
        if self.tty {
            let _ = writeln!(
                stdout,
                "\x1b[2K  {:<14} {:<7} {:<12} {:<9} MESSAGE",
                "CLUSTER", "WAVE", "PHASE", "CP"
            );
            for (name, r) in rows {
                let mut msg = r.message.clone();
                msg.truncate(70);
                let _ = writeln!(
                    stdout,
                    "\x1b[2K  {name:<14} {:<7} {:<12} {:<9} {msg}",
                    r.wave, r.phase, r.control_plane
                );
            }
            let _ = write!(stdout, "\x1b[{}A", rows.len() + 1);
        } else {
            for (name, r) in rows {
                let line = format!("{name}: {} {} ({})", r.phase, r.control_plane, r.message);
                if last.get(name) != Some(&line) {
                    let _ = writeln!(stdout, "  {line}");
                    last.insert(name.clone(), line);
                }
            }
        }
        let _ = stdout.flush();
    }
}

/// Copies the fleet directory, pointing `exec` commands at this binary (they name
/// `tidemark`, which need not be on PATH) and a provider's `kubeconfigFile` (a path in the
/// agent's container) at the demo's management kubeconfig.
fn copy_fleet(src: &Path, dst: &Path, binary: &Path, management: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_fleet(&entry.path(), &to, binary, management)?;
        } else if to.parent().is_some_and(|p| p.ends_with("clusters")) {
            let text = std::fs::read_to_string(entry.path())?.replace(
                "[tidemark, sim, ctl",
                &format!("[\"{}\", sim, ctl", binary.display()),
            );
            std::fs::write(&to, map_kubeconfig_file(&text, management))?;
        } else {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// `text` with the value of every block-style `kubeconfigFile:` key replaced by `to`.
fn map_kubeconfig_file(text: &str, to: &Path) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let key = line.trim_start();
        match key.strip_prefix("kubeconfigFile:") {
            Some(_) => {
                let indent = &line[..line.len() - key.len()];
                out.push_str(&format!("{indent}kubeconfigFile: \"{}\"\n", to.display()));
            }
            None => out.push_str(line),
        }
    }
    out
}

struct Git {
    dir: PathBuf,
}

impl Git {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=tidemark demo",
                "-c",
                "user.email=demo@tidemark.invalid",
                "-c",
                "tag.gpgSign=false",
                "-c",
                "commit.gpgSign=false",
            ])
            .args(args)
            .current_dir(&self.dir)
            .output()
            .context("failed to run git (is it installed?)")?;
        if !out.status.success() {
            bail!(
                "git {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_file_is_pointed_at_the_demos_management_kubeconfig() {
        let manifest = "spec:\n  provider:\n    kind: clusterapi\n    namespace: a\n    kubeconfigFile: /etc/mgmt/kubeconfig\n  controlPlane:\n    version: \"1.30.4\"\n";
        assert_eq!(
            map_kubeconfig_file(manifest, Path::new("/tmp/demo/management.kubeconfig")),
            "spec:\n  provider:\n    kind: clusterapi\n    namespace: a\n    kubeconfigFile: \"/tmp/demo/management.kubeconfig\"\n  controlPlane:\n    version: \"1.30.4\"\n"
        );
        let secret = "  provider: {kind: clusterapi, namespace: a, kubeconfigSecret: s}\n";
        assert_eq!(map_kubeconfig_file(secret, Path::new("/tmp/x")), secret);
    }
}
