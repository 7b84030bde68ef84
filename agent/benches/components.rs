//! Figures of a cluster with 40 helm components, about 1,500 rendered objects: first apply,
//! a no-change pass, a drift pass, memory. Run: `cargo bench -p tidemark --bench components`
//! (renders with the official helm v4.1.4 that `scripts/setup-helm.sh` provisions into
//! `.tools/helm/`, or the one `TIDEMARK_HELM_BIN` names).
//!
//! Targets: a no-change pass < 50 ms CPU, a drift pass < 5 s, < 60 MiB RSS.
//!
//! - in-process, against a simulated cluster, counting API requests (a counting layer on the
//!   client) and `helm` processes ((`Renderer::processes`)):
//!   1. the first pass, which renders and applies everything, then passes until Converged;
//!   2. no-change passes: wall and CPU time (the in-process sim shares the process, so its
//!      CPU is in there too), API reads and writes, `helm` processes;
//!   3. a drift pass, with the clock past the drift interval, after objects were deleted and
//!      edited by hand;
//! - the real binary, `tidemark agent --once` against the same sim: CPU time and peak RSS
//!   (VmHWM, sampled from /proc while it runs) of a no-change pass, of a drift pass after a
//!   restart (the render cache is empty, so every component is rendered again), and of a first
//!   apply to a second, empty sim. A process's figures include its start (kube client, TLS,
//!   opening the git cache, reading the 40 charts from git).
//!
//! Timings are printed, not asserted. The run fails (non-zero exit) when correctness breaks:
//! an API write or a `helm` process in a no-change pass, or drift that was not put back.
//!
//! `TIDEMARK_BIN` names another binary; `TIDEMARK_BENCH_SIM_SPEED` the sim's time factor
//! (default 10; see [`SIM_SPEED`]).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use nix::sys::resource::{UsageWho, getrusage};
use tidemark::component::helm::Helm;
use tidemark::converge::Settings;
use tidemark::desired::Source;
use tidemark::pass;
use tidemark::plan::Phase;
use tidemark::source::{Auth, GitCache, SourceConfig};
use tidemark_sim::{Sim, SimConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Components in the cluster.
const COMPONENTS: usize = 40;
/// Objects one component renders (see [`chart_files`]).
const OBJECTS_PER_COMPONENT: usize = 37;
/// No-change passes measured in-process.
const NO_CHANGE_PASSES: usize = 30;
/// No-change runs of the real binary measured.
const BINARY_RUNS: usize = 5;
/// The sim's (and the cluster manifest's) Kubernetes version.
const VERSION: &str = "1.29.8";
const DRIFT_INTERVAL: Duration = Duration::from_secs(600);
/// The sim's time factor (override with `TIDEMARK_BENCH_SIM_SPEED`): workloads become ready
/// within a few hundred milliseconds at 10.
const SIM_SPEED: f64 = 10.0;

#[derive(Default)]
struct Counts {
    reads: AtomicUsize,
    /// Writes other than Events.
    writes: AtomicUsize,
    events: AtomicUsize,
}

impl Counts {
    /// Reads, writes and Events written since the last call.
    fn take(&self) -> (usize, usize, usize) {
        (
            self.reads.swap(0, Ordering::Relaxed),
            self.writes.swap(0, Ordering::Relaxed),
            self.events.swap(0, Ordering::Relaxed),
        )
    }
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> Result<()> {
    let started = Instant::now();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?
        .to_path_buf();
    let helm_bin = helm_bin(&workspace)?;
    let bin = tidemark_bin()?;

    let work = tempfile::tempdir()?;
    let repo = work.path().join("fleet");
    write_fleet(&repo)?;
    support::commit_fleet(&repo, &["canary"])?;
    println!(
        "components bench: {COMPONENTS} components x {OBJECTS_PER_COMPONENT} objects = {} rendered objects \
         (ConfigMaps, Services, ServiceAccounts, Deployments, Roles, RoleBindings), each in its own namespace; \
         helm = {} ({})",
        COMPONENTS * OBJECTS_PER_COMPONENT,
        helm_bin.display(),
        helm_version(&helm_bin)
    );

    let sim = Sim::start(sim_config()).await?;
    let kubeconfig = work.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig)?;
    let admin = sim.client().await?;

    let counts = Arc::new(Counts::default());
    let client = counting_client(&kubeconfig, counts.clone()).await?;
    let cache = GitCache::open(&SourceConfig {
        url: repo.display().to_string(),
        branch: None,
        cache_dir: work.path().join("cache"),
        auth: Auth::None,
    })?;
    let ctx = tidemark::config::pass_ctx(
        Source::new(cache, None, "cluster=sim".parse()?, None),
        client,
        "tidemark-system".into(),
        None,
        Helm {
            bin: helm_bin.clone(),
            timeout: Duration::from_secs(60),
            credentials: Default::default(),
        },
        Settings {
            health_wait: Duration::from_secs(30),
            crd_wait: Duration::from_secs(30),
            drift_interval: DRIFT_INTERVAL,
            prune_scan: false,
        },
        "bench",
    );
    let renders = || ctx.renderer.processes();

    // 1. First apply: everything rendered and applied.
    counts.take();
    let renders0 = renders();
    let cpu0 = self_cpu()?;
    let t = Instant::now();
    let first = pass::run(&ctx, jiff::Timestamp::now()).await;
    let first_wall = t.elapsed();
    let first_cpu = self_cpu()? - cpu0;
    let (reads, writes, events) = counts.take();
    let first_renders = renders() - renders0;
    println!(
        "first apply (in-process, one pass): {:.2} s wall, {:.2} s CPU (process incl. in-process sim; \
         helm processes not included); {first_renders} helm processes; {writes} API writes \
         (+{events} Events), {reads} API reads; phase {}; {} steps",
        first_wall.as_secs_f64(),
        first_cpu.as_secs_f64(),
        first.phase,
        first.executed.len(),
    );
    if first_renders != COMPONENTS as u64 {
        return Err(format!(
            "the first pass ran {first_renders} helm processes, expected {COMPONENTS}: {}",
            first.message
        )
        .into());
    }
    let applied = count_labelled(&admin).await?;
    if applied != COMPONENTS * OBJECTS_PER_COMPONENT {
        return Err(format!(
            "{applied} labelled objects in the cluster after the first pass, expected {}: {}",
            COMPONENTS * OBJECTS_PER_COMPONENT,
            first.message
        )
        .into());
    }

    // Until Converged (workloads become ready, health is recorded).
    let t = Instant::now();
    let mut extra = 0;
    let mut last = first;
    while last.phase != Phase::Converged {
        if extra >= 20 {
            return Err(format!(
                "not converged after {extra} more passes: {} {}",
                last.phase, last.message
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = pass::run(&ctx, jiff::Timestamp::now()).await;
        extra += 1;
    }
    println!(
        "  converged after {extra} more passes ({:.2} s); {} helm processes in them; {} objects in the sim",
        t.elapsed().as_secs_f64(),
        renders() - renders0 - first_renders,
        sim.object_count(),
    );

    // 2. No-change passes. Their clock stands just after the last status write, so that
    // neither the status heartbeat nor the drift interval falls due in them however long the
    // first apply took (either would rightly write).
    let clock = status_time(&admin).await? + Duration::from_secs(1);
    counts.take();
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let mut total_reads = 0;
    let renders0 = renders();
    for i in 0..NO_CHANGE_PASSES {
        let cpu0 = self_cpu()?;
        let t = Instant::now();
        let report = pass::run(&ctx, clock).await;
        walls.push(t.elapsed());
        cpus.push(self_cpu()? - cpu0);
        let (reads, writes, events) = counts.take();
        let writes = writes + events;
        total_reads += reads;
        let helm = renders() - renders0;
        if writes != 0 || helm != 0 || report.status_written || !report.executed.is_empty() {
            return Err(format!(
                "no-change pass {i} was not a no-op: {writes} API writes, {helm} helm processes \
                 so far, status written {}, executed {:?}",
                report.status_written, report.executed
            )
            .into());
        }
        if report.phase != Phase::Converged {
            return Err(format!("no-change pass {i}: {} {}", report.phase, report.message).into());
        }
    }
    println!(
        "no-change pass (in-process, {NO_CHANGE_PASSES} passes): median {:.1} ms wall (max {:.1}), \
         {:.1} ms CPU (median; incl. the in-process sim serving it) (target < 50 ms CPU); \
         0 helm processes; 0 API writes; {:.1} API reads per pass",
        ms(median(&mut walls)),
        ms(walls.iter().copied().max().unwrap_or_default()),
        ms(median(&mut cpus)),
        total_reads as f64 / NO_CHANGE_PASSES as f64,
    );

    // The real binary, no-change passes, on the real clock: one in-process pass first takes
    // any heartbeat or drift check that is due by now. (Before the in-process drift pass:
    // that one records a drift check in the future, which would make these due for one.)
    pass::run(&ctx, jiff::Timestamp::now()).await;
    let helm_log = work.path().join("helm.log");
    let wrapper = helm_wrapper(work.path(), &helm_bin, &helm_log)?;
    let agent = BinaryAgent {
        bin: bin.clone(),
        repo: repo.clone(),
        helm: wrapper.clone(),
        helm_log: helm_log.clone(),
    };
    let bin_cache = work.path().join("cache-bin");
    let cold = agent
        .once(
            &sim,
            &kubeconfig,
            &bin_cache,
            &[],
            "no-change (cold git cache)",
        )
        .await?;
    cold.expect_no_change("the first no-change run of the binary")?;
    let mut runs = Vec::new();
    for i in 0..BINARY_RUNS {
        let r = agent
            .once(&sim, &kubeconfig, &bin_cache, &[], "no-change")
            .await?;
        r.expect_no_change(&format!("no-change run {i} of the binary"))?;
        runs.push(r);
    }
    let mut walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
    let mut cpus: Vec<Duration> = runs.iter().map(|r| r.cpu).collect();
    let mut users: Vec<Duration> = runs.iter().map(|r| r.user).collect();
    let peak = runs.iter().map(|r| r.peak_kib).max().unwrap_or_default();
    println!(
        "no-change pass (real binary `agent --once`, {BINARY_RUNS} runs): median {:.0} ms wall, \
         {:.0} ms CPU ({:.0} ms user) per process incl. start-up (target < 50 ms CPU); \
         peak RSS {:.1} MiB (target < 60 MiB); 0 helm processes; 0 API writes besides the Lease; \
         {} API reads; first run with a cold git cache: {:.0} ms wall, {:.0} ms CPU, {:.1} MiB",
        ms(median(&mut walls)),
        ms(median(&mut cpus)),
        ms(median(&mut users)),
        mib(peak),
        runs.first().map(|r| r.reads).unwrap_or_default(),
        ms(cold.wall),
        ms(cold.cpu),
        mib(cold.peak_kib),
    );
    if let Some(cross) = agent
        .once_with_gnu_time(&kubeconfig, &bin_cache, &[])
        .await?
    {
        println!("  cross-check with GNU time (one more run): {cross}");
    }

    // 3. A drift pass: objects deleted and edited by hand, the clock past the drift interval.
    let tampered = tamper(&admin, &[3, 17, 29], &[5, 11, 23]).await?;
    counts.take();
    let renders0 = renders();
    let cpu0 = self_cpu()?;
    let t = Instant::now();
    let drift = pass::run(
        &ctx,
        jiff::Timestamp::now() + (DRIFT_INTERVAL + Duration::from_secs(1)),
    )
    .await;
    let drift_wall = t.elapsed();
    let drift_cpu = self_cpu()? - cpu0;
    let (reads, writes, events) = counts.take();
    let helm = renders() - renders0;
    tampered.verify(&admin).await?;
    println!(
        "drift pass (in-process, renders cached; {}): {:.2} s wall (target < 5 s), {:.2} s CPU \
         (incl. in-process sim); {helm} helm processes; {writes} API writes (+{events} Events), \
         {reads} API reads; phase {}; restored: yes",
        tampered.describe(),
        drift_wall.as_secs_f64(),
        drift_cpu.as_secs_f64(),
        drift.phase,
    );
    for line in &drift.executed {
        println!("  {line}");
    }
    if drift.phase != Phase::Converged {
        println!("  message: {}", drift.message);
        let next = pass::run(
            &ctx,
            jiff::Timestamp::now() + (DRIFT_INTERVAL + Duration::from_secs(2)),
        )
        .await;
        println!("  the next pass: phase {}", next.phase);
    }

    // The real binary, a drift pass after a restart: nothing cached, every component is
    // rendered again to compare with.
    let tampered = tamper(&admin, &[7, 21, 35], &[9, 14, 38]).await?;
    let r = agent
        .once(
            &sim,
            &kubeconfig,
            &bin_cache,
            &["--drift-interval", "1s"],
            "drift",
        )
        .await?;
    tampered.verify(&admin).await?;
    println!(
        "drift pass (real binary `agent --once --drift-interval 1s`, after a restart; {}): \
         {:.2} s wall (target < 5 s); tidemark {:.2} s CPU, its {} helm processes {:.2} s CPU; \
         peak RSS {:.1} MiB (target < 60 MiB); {} API writes, {} API reads; phase {}; restored: yes",
        tampered.describe(),
        r.wall.as_secs_f64(),
        r.cpu.as_secs_f64(),
        r.helm_runs,
        r.helm_cpu.as_secs_f64(),
        mib(r.peak_kib),
        r.writes,
        r.reads,
        r.phase,
    );

    // The real binary, the first apply to an empty cluster.
    let fresh = Sim::start(sim_config()).await?;
    let fresh_kubeconfig = work.path().join("kubeconfig-fresh");
    fresh.write_kubeconfig(&fresh_kubeconfig)?;
    let r = agent
        .once(
            &fresh,
            &fresh_kubeconfig,
            &work.path().join("cache-fresh"),
            &[],
            "first apply",
        )
        .await?;
    let applied = count_labelled(&fresh.client().await?).await?;
    println!(
        "first apply (real binary `agent --once`, empty cluster): {:.2} s wall; tidemark {:.2} s CPU, \
         its {} helm processes {:.2} s CPU; peak RSS {:.1} MiB (target < 60 MiB); {} API writes, \
         {} API reads; {applied} objects applied; phase {}",
        r.wall.as_secs_f64(),
        r.cpu.as_secs_f64(),
        r.helm_runs,
        r.helm_cpu.as_secs_f64(),
        mib(r.peak_kib),
        r.writes,
        r.reads,
        r.phase,
    );
    if applied != COMPONENTS * OBJECTS_PER_COMPONENT {
        return Err(format!(
            "the binary's first apply left {applied} labelled objects, expected {}: {}",
            COMPONENTS * OBJECTS_PER_COMPONENT,
            r.message
        )
        .into());
    }
    fresh.shutdown().await;
    sim.shutdown().await;
    println!("(bench took {:.0} s)", started.elapsed().as_secs_f64());
    Ok(())
}

fn sim_config() -> SimConfig {
    SimConfig {
        version: VERSION.into(),
        node_groups: vec![("general".into(), 3)],
        speed: sim_speed(),
        ..SimConfig::default()
    }
}

/// The sim's time factor: `TIDEMARK_BENCH_SIM_SPEED`, default [`SIM_SPEED`].
fn sim_speed() -> f64 {
    std::env::var("TIDEMARK_BENCH_SIM_SPEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SIM_SPEED)
}

/// The newest of `tidemark.dev/last-pass` and `tidemark.dev/drift-checked`.
async fn status_time(client: &kube::Client) -> Result<jiff::Timestamp> {
    let ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get("tidemark-system")
        .await?;
    let record =
        tidemark::status::Record::from_annotations(&ns.metadata.annotations.unwrap_or_default());
    [record.last_pass, record.drift_checked]
        .into_iter()
        .flatten()
        .max()
        .ok_or_else(|| "the status has no last-pass".into())
}

/// The `tidemark` binary: `TIDEMARK_BIN`, else the one cargo built for this bench.
fn tidemark_bin() -> Result<PathBuf> {
    let bin = std::env::var_os("TIDEMARK_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_tidemark")),
        PathBuf::from,
    );
    if !bin.is_file() {
        return Err(format!(
            "{} not found: build it (`cargo build --release --bin tidemark`) or set TIDEMARK_BIN",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

/// User + system CPU time of this process so far.
fn self_cpu() -> Result<Duration> {
    usage(UsageWho::RUSAGE_SELF)
}

/// User + system CPU time of this process's waited-for children (and theirs) so far.
fn children_cpu() -> Result<Duration> {
    usage(UsageWho::RUSAGE_CHILDREN)
}

fn usage(who: UsageWho) -> Result<Duration> {
    let u = getrusage(who)?;
    let d = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    Ok(d(u.user_time()) + d(u.system_time()))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A client for the sim that counts GETs as reads, POSTs to `.../events` as Events and every
/// other request as a write.
async fn counting_client(kubeconfig: &Path, counts: Arc<Counts>) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&tower::util::MapRequestLayer::new(
            move |req: http::Request<kube::client::Body>| {
                let slot = if req.method() == http::Method::GET {
                    &counts.reads
                } else if req.uri().path().ends_with("/events") {
                    &counts.events
                } else {
                    &counts.writes
                };
                slot.fetch_add(1, Ordering::Relaxed);
                req
            },
        ))
        .build())
}

fn component(i: usize) -> String {
    format!("app-{i:02}")
}

/// fleet.yaml, clusters/sim.yaml with [`COMPONENTS`] components, and one chart per component.
fn write_fleet(repo: &Path) -> Result<()> {
    std::fs::create_dir_all(repo.join("clusters"))?;
    std::fs::write(
        repo.join("fleet.yaml"),
        "apiVersion: tidemark.dev/v1alpha1\nkind: Fleet\nmetadata: {name: bench}\nspec:\n  waves: [{name: canary}]\n",
    )?;
    let mut cluster = format!(
        "apiVersion: tidemark.dev/v1alpha1
kind: Cluster
metadata:
  name: sim
  labels: {{cluster: sim, tidemark.dev/wave: canary}}
spec:
  provider: {{kind: clusterapi, namespace: capi-system}}
  controlPlane: {{version: \"{VERSION}\"}}
  nodeGroups:
    - {{name: general, version: \"{VERSION}\"}}
  components:
"
    );
    for i in 0..COMPONENTS {
        let name = component(i);
        cluster.push_str(&format!(
            "    - name: {name}\n      chart: {{path: charts/{name}}}\n      namespace: {name}\n      values: {{settings: {{shard: {i}}}}}\n"
        ));
        let dir = repo.join("charts").join(&name);
        for (file, text) in chart_files(&name) {
            let path = dir.join(file);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, text)?;
        }
    }
    std::fs::write(repo.join("clusters/sim.yaml"), cluster)?;
    Ok(())
}

/// A chart of [`OBJECTS_PER_COMPONENT`] objects: 16 ConfigMaps, 6 Services, a
/// ServiceAccount, 2 Deployments, 6 Roles and 6 RoleBindings.
fn chart_files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "Chart.yaml",
            format!(
                "apiVersion: v2\nname: {name}\ndescription: Benchmark chart\ntype: application\nversion: 1.0.0\nappVersion: \"1.0.0\"\n"
            ),
        ),
        ("values.yaml", VALUES.into()),
        ("templates/_helpers.tpl", HELPERS.into()),
        ("templates/configmaps.yaml", CONFIGMAPS.into()),
        ("templates/services.yaml", SERVICES.into()),
        ("templates/serviceaccount.yaml", SERVICE_ACCOUNT.into()),
        ("templates/rbac.yaml", RBAC.into()),
        ("templates/deployments.yaml", DEPLOYMENTS.into()),
    ]
}

const VALUES: &str = r#"configMaps: 16
services: 6
roles: 6
replicas: 1
image:
  repository: registry.example/bench/app
  tag: "1.0.0"
settings:
  logLevel: info
  shard: 0
  endpoints: [a, b, c]
"#;

const HELPERS: &str = r#"{{- define "app.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
"#;

const CONFIGMAPS: &str = r#"{{- range $i := until (int .Values.configMaps) }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $.Release.Name }}-config-{{ $i }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "app.labels" $ | nindent 4 }}
data:
  index: {{ $i | quote }}
  settings.yaml: |
    {{- toYaml $.Values.settings | nindent 4 }}
{{- end }}
"#;

const SERVICES: &str = r#"{{- range $i := until (int .Values.services) }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $.Release.Name }}-svc-{{ $i }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "app.labels" $ | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    app.kubernetes.io/instance: {{ $.Release.Name }}
    app.kubernetes.io/component: web
  ports:
    - name: http
      port: {{ add 8080 $i }}
      targetPort: http
      protocol: TCP
{{- end }}
"#;

const SERVICE_ACCOUNT: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .Release.Name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "app.labels" . | nindent 4 }}
"#;

const RBAC: &str = r#"{{- range $i := until (int .Values.roles) }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $.Release.Name }}-role-{{ $i }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "app.labels" $ | nindent 4 }}
rules:
  - apiGroups: [""]
    resources: ["configmaps", "services"]
    verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $.Release.Name }}-role-{{ $i }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "app.labels" $ | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $.Release.Name }}-role-{{ $i }}
subjects:
  - kind: ServiceAccount
    name: {{ $.Release.Name }}
    namespace: {{ $.Release.Namespace }}
{{- end }}
"#;

const DEPLOYMENTS: &str = r#"{{- range $role := list "web" "worker" }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $.Release.Name }}-{{ $role }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "app.labels" $ | nindent 4 }}
spec:
  replicas: {{ $.Values.replicas }}
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ $.Release.Name }}
      app.kubernetes.io/component: {{ $role }}
  template:
    metadata:
      labels:
        app.kubernetes.io/instance: {{ $.Release.Name }}
        app.kubernetes.io/component: {{ $role }}
    spec:
      serviceAccountName: {{ $.Release.Name }}
      containers:
        - name: {{ $role }}
          image: "{{ $.Values.image.repository }}:{{ $.Values.image.tag }}"
          args: ["--role={{ $role }}", "--shard={{ $.Values.settings.shard }}"]
          ports:
            - name: http
              containerPort: 8080
              protocol: TCP
          resources:
            requests: {cpu: 50m, memory: 64Mi}
            limits: {memory: 128Mi}
{{- end }}
"#;

/// Objects of the kinds the chart renders that carry the component label.
async fn count_labelled(client: &kube::Client) -> Result<usize> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    async fn count<K>(client: &kube::Client) -> Result<usize>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let lp = ListParams::default().labels("tidemark.dev/component");
        Ok(Api::<K>::all(client.clone()).list(&lp).await?.items.len())
    }
    Ok(count::<ConfigMap>(client).await?
        + count::<Service>(client).await?
        + count::<ServiceAccount>(client).await?
        + count::<Deployment>(client).await?
        + count::<Role>(client).await?
        + count::<RoleBinding>(client).await?)
}

/// What was changed by hand, to check it was put back.
struct Tampered {
    deleted: Vec<(String, String, String)>,
    edited: Vec<(String, String, String)>,
}

/// In each component of `delete`: deletes a ConfigMap, a Role and a Service. In each of
/// `edit`: changes a ConfigMap's data, scales a Deployment and rewrites a Role's rules.
async fn tamper(client: &kube::Client, delete: &[usize], edit: &[usize]) -> Result<Tampered> {
    let mut t = Tampered {
        deleted: Vec::new(),
        edited: Vec::new(),
    };
    let dp = DeleteParams::default();
    let merge = PatchParams::default();
    for &i in delete {
        let ns = component(i);
        let cm = format!("{ns}-config-5");
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .delete(&cm, &dp)
            .await?;
        t.deleted.push(("ConfigMap".into(), ns.clone(), cm));
        let role = format!("{ns}-role-2");
        Api::<Role>::namespaced(client.clone(), &ns)
            .delete(&role, &dp)
            .await?;
        t.deleted.push(("Role".into(), ns.clone(), role));
        let svc = format!("{ns}-svc-1");
        Api::<Service>::namespaced(client.clone(), &ns)
            .delete(&svc, &dp)
            .await?;
        t.deleted.push(("Service".into(), ns.clone(), svc));
    }
    for &i in edit {
        let ns = component(i);
        let cm = format!("{ns}-config-0");
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .patch(
                &cm,
                &merge,
                &Patch::Merge(serde_json::json!({"data": {"index": "tampered"}})),
            )
            .await?;
        t.edited.push(("ConfigMap".into(), ns.clone(), cm));
        let deploy = format!("{ns}-web");
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .patch(
                &deploy,
                &merge,
                &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
            )
            .await?;
        t.edited.push(("Deployment".into(), ns.clone(), deploy));
        let role = format!("{ns}-role-0");
        Api::<Role>::namespaced(client.clone(), &ns)
            .patch(
                &role,
                &merge,
                &Patch::Merge(serde_json::json!({"rules": [
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}
                ]})),
            )
            .await?;
        t.edited.push(("Role".into(), ns.clone(), role));
    }
    Ok(t)
}

impl Tampered {
    fn describe(&self) -> String {
        format!(
            "{} objects deleted, {} edited by hand",
            self.deleted.len(),
            self.edited.len()
        )
    }

    /// Fails unless every deleted object is back and every edit undone.
    async fn verify(&self, client: &kube::Client) -> Result<()> {
        let mut wrong = Vec::new();
        for (kind, ns, name) in &self.deleted {
            let back = match kind.as_str() {
                "ConfigMap" => Api::<ConfigMap>::namespaced(client.clone(), ns)
                    .get_opt(name)
                    .await?
                    .is_some(),
                "Role" => Api::<Role>::namespaced(client.clone(), ns)
                    .get_opt(name)
                    .await?
                    .is_some(),
                _ => Api::<Service>::namespaced(client.clone(), ns)
                    .get_opt(name)
                    .await?
                    .is_some(),
            };
            if !back {
                wrong.push(format!("{kind} {ns}/{name} still deleted"));
            }
        }
        for (kind, ns, name) in &self.edited {
            let restored = match kind.as_str() {
                "ConfigMap" => {
                    Api::<ConfigMap>::namespaced(client.clone(), ns)
                        .get(name)
                        .await?
                        .data
                        .and_then(|d| d.get("index").cloned())
                        .as_deref()
                        == Some("0")
                }
                "Deployment" => {
                    Api::<Deployment>::namespaced(client.clone(), ns)
                        .get(name)
                        .await?
                        .spec
                        .and_then(|s| s.replicas)
                        == Some(1)
                }
                _ => Api::<Role>::namespaced(client.clone(), ns)
                    .get(name)
                    .await?
                    .rules
                    .unwrap_or_default()
                    .iter()
                    .any(|r| {
                        r.resources.as_deref()
                            == Some(&["configmaps".to_string(), "services".to_string()][..])
                            && r.verbs == ["get", "list", "watch"]
                    }),
            };
            if !restored {
                wrong.push(format!("{kind} {ns}/{name} still edited"));
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("drift not corrected: {}", wrong.join(", ")).into())
        }
    }
}

/// The helm the bench renders with: `TIDEMARK_HELM_BIN`, else the Helm 4 that
/// `scripts/setup-helm.sh` provisions.
fn helm_bin(workspace: &Path) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TIDEMARK_HELM_BIN") {
        return Ok(PathBuf::from(path));
    }
    let provisioned = workspace.join(".tools/helm/v4.1.4/helm");
    if !provisioned.is_file() {
        return Err(format!(
            "helm v4.1.4 not found at {}: run scripts/setup-helm.sh, or set TIDEMARK_HELM_BIN",
            provisioned.display()
        )
        .into());
    }
    Ok(provisioned)
}

/// `helm version --short`, for the header.
fn helm_version(helm: &Path) -> String {
    Command::new(helm)
        .args(["version", "--short"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "version unknown".into())
}

/// A `helm` that logs each invocation to `log` and runs `helm`.
fn helm_wrapper(dir: &Path, helm: &Path, log: &Path) -> Result<PathBuf> {
    let wrapper = dir.join("helm");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            helm.display()
        ),
    )?;
    let mut perms = std::fs::metadata(&wrapper)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms)?;
    Ok(wrapper)
}

/// Runs the real binary.
struct BinaryAgent {
    bin: PathBuf,
    repo: PathBuf,
    helm: PathBuf,
    helm_log: PathBuf,
}

/// Figures of one `agent --once` process.
struct BinaryRun {
    wall: Duration,
    /// tidemark's own user + system CPU (its helm processes left out).
    cpu: Duration,
    user: Duration,
    /// CPU of the helm processes it ran.
    helm_cpu: Duration,
    helm_runs: usize,
    /// VmHWM, sampled while it ran.
    peak_kib: u64,
    /// API writes, leaving out the Lease `--once` takes and releases, and Events.
    writes: u64,
    reads: u64,
    phase: String,
    message: String,
    executed: Vec<String>,
}

impl BinaryRun {
    fn expect_no_change(&self, what: &str) -> Result<()> {
        if self.writes != 0 || self.helm_runs != 0 || !self.executed.is_empty() {
            return Err(format!(
                "{what} was not a no-op: {} API writes, {} helm processes, executed {:?}",
                self.writes, self.helm_runs, self.executed
            )
            .into());
        }
        if self.phase != "Converged" {
            return Err(format!("{what}: {} {}", self.phase, self.message).into());
        }
        Ok(())
    }
}

impl BinaryAgent {
    fn args(&self, kubeconfig: &Path, cache: &Path, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "agent",
            "--once",
            "--selector",
            "cluster=sim",
            "--component-wait",
            "30s",
            "--repo",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        args.push(self.repo.display().to_string());
        args.push("--cache-dir".into());
        args.push(cache.display().to_string());
        args.push("--kubeconfig".into());
        args.push(kubeconfig.display().to_string());
        args.push("--helm-bin".into());
        args.push(self.helm.display().to_string());
        args.extend(extra.iter().map(|s| (*s).to_string()));
        args
    }

    fn helm_runs(&self) -> usize {
        std::fs::read_to_string(&self.helm_log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Runs `agent --once` and measures it.
    async fn once(
        &self,
        sim: &Sim,
        kubeconfig: &Path,
        cache: &Path,
        extra: &[&str],
        what: &str,
    ) -> Result<BinaryRun> {
        let args = self.args(kubeconfig, cache, extra);
        let bin = self.bin.clone();
        let helm0 = self.helm_runs();
        let requests0 = sim.request_counts();
        // The sim serves from this runtime: wait for the process on a blocking thread.
        let measured = tokio::task::spawn_blocking(move || measure(&bin, &args)).await??;
        let requests = sim.request_counts().since(&requests0);
        let mut writes = requests.writes();
        for (key, n) in &requests.by_resource {
            let (verb, resource) = key.split_once(' ').unwrap_or((key.as_str(), ""));
            if matches!(
                verb,
                "create" | "update" | "patch" | "delete" | "deletecollection"
            ) && matches!(resource, "leases" | "events")
            {
                writes = writes.saturating_sub(*n);
            }
        }
        let reads = requests.verb("get") + requests.verb("list");
        let field = |name: &str| {
            measured
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
                .unwrap_or_default()
        };
        if !measured.success {
            return Err(format!(
                "`tidemark agent --once` ({what}) failed: {}\n{}",
                measured.stdout, measured.stderr
            )
            .into());
        }
        Ok(BinaryRun {
            wall: measured.wall,
            cpu: measured.cpu.saturating_sub(measured.children_cpu),
            user: measured.user,
            helm_cpu: measured.children_cpu,
            helm_runs: self.helm_runs() - helm0,
            peak_kib: measured.peak_kib,
            writes,
            reads,
            phase: field("phase"),
            message: field("message"),
            executed: measured
                .stdout
                .lines()
                .filter_map(|l| l.strip_prefix("executed: ").map(str::to_string))
                .collect(),
        })
    }

    /// One more no-change run under GNU time (`%e %U %S %M`), when it is installed.
    async fn once_with_gnu_time(
        &self,
        kubeconfig: &Path,
        cache: &Path,
        extra: &[&str],
    ) -> Result<Option<String>> {
        let gnu = Command::new("/usr/bin/time")
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).contains("GNU")
                    || String::from_utf8_lossy(&o.stderr).contains("GNU")
            })
            .unwrap_or(false);
        if !gnu {
            return Ok(None);
        }
        let out_file = cache.with_extension("time");
        let mut cmd = tokio::process::Command::new("/usr/bin/time");
        cmd.arg("-o")
            .arg(&out_file)
            .args(["-f", "%e %U %S %M"])
            .arg(&self.bin)
            .args(self.args(kubeconfig, cache, extra))
            .env_remove("TIDEMARK_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !cmd.status().await?.success() {
            return Err("`tidemark agent --once` under GNU time failed".into());
        }
        let text = std::fs::read_to_string(&out_file)?;
        let f: Vec<f64> = text
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        let [wall, user, sys, rss] = f[..] else {
            return Err(format!("unexpected GNU time output {text:?}").into());
        };
        Ok(Some(format!(
            "{:.0} ms wall, {:.0} ms CPU ({:.0} user + {:.0} sys; 10 ms resolution), max RSS {:.1} MiB",
            wall * 1e3,
            (user + sys) * 1e3,
            user * 1e3,
            sys * 1e3,
            rss / 1024.0
        )))
    }
}

struct Measured {
    success: bool,
    stdout: String,
    stderr: String,
    wall: Duration,
    /// User + system CPU of the process and its children (RUSAGE_CHILDREN delta).
    cpu: Duration,
    user: Duration,
    /// CPU of its own waited-for children (helm), from its last /proc sample.
    children_cpu: Duration,
    peak_kib: u64,
}

/// Runs `bin args` to the end, sampling VmHWM and its children's CPU from /proc every
/// 2 ms. Blocking.
fn measure(bin: &Path, args: &[String]) -> Result<Measured> {
    let user_before = getrusage(UsageWho::RUSAGE_CHILDREN)?.user_time();
    let cpu_before = children_cpu()?;
    let stdout_file = tempfile::NamedTempFile::new()?;
    let stderr_file = tempfile::NamedTempFile::new()?;
    let t = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("TIDEMARK_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(stdout_file.reopen()?)
        .stderr(stderr_file.reopen()?)
        .spawn()?;
    let pid = child.id();
    let mut peak_kib = 0;
    let mut children_ticks = 0;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if let Ok(kib) = support::status_kib(pid, "VmHWM:") {
            peak_kib = peak_kib.max(kib);
        }
        if let Ok(ticks) =
            support::stat_field(pid, 16).and_then(|u| Ok(u + support::stat_field(pid, 17)?))
        {
            children_ticks = children_ticks.max(ticks);
        }
        if t.elapsed() > Duration::from_secs(240) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("`tidemark agent --once` did not finish within 240 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = t.elapsed();
    let cpu = children_cpu()? - cpu_before;
    let user_after = getrusage(UsageWho::RUSAGE_CHILDREN)?.user_time();
    let user_us = (user_after.tv_sec() - user_before.tv_sec()) * 1_000_000
        + (user_after.tv_usec() - user_before.tv_usec());
    Ok(Measured {
        success: status.success(),
        stdout: std::fs::read_to_string(stdout_file.path())?,
        stderr: std::fs::read_to_string(stderr_file.path())?,
        wall,
        cpu,
        user: Duration::from_micros(u64::try_from(user_us).unwrap_or(0)),
        children_cpu: Duration::from_millis(children_ticks * 10),
        peak_kib,
    })
}
