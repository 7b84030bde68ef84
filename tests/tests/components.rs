//! Helm components end to end: the real `tidemark agent --once` renders charts with the
//! official helm (v4, provisioned by scripts/setup-helm.sh), applies them to a `tidemark sim`
//! process, prunes, checks health and drift; kubectl reads the cluster independently. A
//! counting wrapper around helm counts `helm` processes; the sim counts API requests.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tidemark_e2e::charts::{self, TestChart};
use tidemark_e2e::{
    CLUSTERAPI, HttpServer, Pass, Run, SimProcess, WorkRepo, copy_dir, fleet_yaml, helm_wrapper,
    index_yaml, package_metrics_lite, sim_manifest, tidemark_in, workspace_root,
};

/// A fleet repo with one cluster (`sim`, wave `canary`) and the example charts.
struct Fleet {
    repo: WorkRepo,
    control_plane: String,
    components: String,
}

impl Fleet {
    fn new(components: &str) -> Result<Self> {
        let repo = WorkRepo::new()?;
        let example = workspace_root().join("fleet-repo-example");
        copy_dir(&example.join("charts"), &repo.path().join("charts"))?;
        copy_dir(&example.join("values"), &repo.path().join("values"))?;
        repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
        let fleet = Self {
            repo,
            control_plane: "1.28.9".into(),
            components: components.into(),
        };
        fleet.release("initial fleet")?;
        Ok(fleet)
    }

    /// Writes the cluster manifest, commits everything and moves `wave/canary` to it.
    fn release(&self, message: &str) -> Result<()> {
        let mut manifest = sim_manifest(
            CLUSTERAPI,
            &self.control_plane,
            &[("general", &self.control_plane)],
        );
        manifest.push_str("  components:\n");
        manifest.push_str(&self.components);
        self.repo.write("clusters/sim.yaml", &manifest)?;
        let rev = self.repo.commit(message)?;
        self.repo.git(&["tag", "-f", "wave/canary", &rev])?;
        Ok(())
    }
}

/// Runs `tidemark agent --once` with a helm wrapper that logs every invocation.
struct Agent {
    dir: tempfile::TempDir,
}

impl Agent {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        helm_wrapper(dir.path())?;
        Ok(Self { dir })
    }

    fn helm_bin(&self) -> PathBuf {
        self.dir.path().join("helm")
    }

    /// How many `helm` processes were started so far.
    fn helm_runs(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("helm.log"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn once(&self, fleet: &Fleet, sim: &SimProcess, extra: &[&str]) -> Result<Pass> {
        let kubeconfig = sim.kubeconfig().display().to_string();
        let repo = fleet.repo.path().display().to_string();
        let cache = self.dir.path().join("cache").display().to_string();
        let helm = self.helm_bin().display().to_string();
        let mut args = vec![
            "agent",
            "--once",
            "--repo",
            &repo,
            "--selector",
            "cluster=sim",
            "--cache-dir",
            &cache,
            "--helm-bin",
            &helm,
        ];
        if !extra.contains(&"--component-wait") {
            args.extend(["--component-wait", "20s"]);
        }
        args.extend_from_slice(extra);
        let run: Run = tidemark_in(&args, None, &[("KUBECONFIG", &kubeconfig)])?;
        if run.code != Some(0) {
            bail!("agent --once failed: {run:?}");
        }
        Ok(Pass::parse(&run.stdout))
    }
}

fn start_sim() -> Result<SimProcess> {
    SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=2",
        "--speed",
        "20",
    ])
}

/// The components of the status record (read through the agent's `Record`), as JSON for
/// compact assertions.
fn components(sim: &SimProcess) -> Result<Value> {
    let record = tidemark_e2e::status_record(sim)?;
    serde_json::to_value(&record.components).context("components of the status record")
}

/// Writes to the API server so far (every verb that changes something), leaving out the
/// Lease that `--once` takes and releases, and Events.
fn api_writes(sim: &SimProcess) -> Result<u64> {
    let run = tidemark_in(
        &[
            "sim",
            "ctl",
            "--kubeconfig",
            &sim.kubeconfig().display().to_string(),
            "state",
        ],
        None,
        &[],
    )?;
    let state: Value =
        serde_json::from_str(&run.stdout).with_context(|| format!("sim state: {}", run.stdout))?;
    let by_resource = state
        .get("requestsByResource")
        .and_then(Value::as_object)
        .context("sim state has no requestsByResource")?;
    let mut writes = 0;
    for (key, count) in by_resource {
        let (verb, resource) = key.split_once(' ').unwrap_or((key, ""));
        if matches!(
            verb,
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) && !matches!(resource, "leases" | "events")
        {
            writes += count.as_u64().unwrap_or(0);
        }
    }
    Ok(writes)
}

fn kubectl_json(sim: &SimProcess, args: &[&str]) -> Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    Ok(serde_json::from_str(&sim.kubectl(&all)?)?)
}

fn exists(sim: &SimProcess, args: &[&str]) -> bool {
    sim.kubectl(args).is_ok()
}

const METRICS_LITE: &str = "    - name: metrics-lite
      chart: {path: charts/metrics-lite}
      namespace: monitoring
      valuesFiles: [values/metrics-lite/common.yaml]
";
const NODE_AGENT: &str = "    - name: node-agent
      chart: {path: charts/node-agent}
      namespace: kube-system
      valuesFiles: [values/node-agent/common.yaml]
      phase: before-control-plane
";

#[test]
fn example_charts_apply_upgrade_change_values_prune_and_idle() -> Result<()> {
    let sim = start_sim()?;
    let mut fleet = Fleet::new(&format!("{METRICS_LITE}{NODE_AGENT}"))?;
    let agent = Agent::new()?;
    // Something in the same namespace that tidemark did not apply: never pruned.
    sim.kubectl(&["create", "namespace", "monitoring"])?;
    sim.kubectl(&["create", "configmap", "hand-made", "-n", "monitoring"])?;

    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    assert!(
        pass.executed
            .iter()
            .any(|e| e.starts_with("applied component metrics-lite (")),
        "{pass:?}"
    );
    assert_eq!(agent.helm_runs(), 2, "one render per component");
    let deploy = kubectl_json(
        &sim,
        &[
            "get",
            "deployment",
            "-n",
            "monitoring",
            "metrics-lite",
            "--show-managed-fields",
        ],
    )?;
    assert_eq!(
        deploy["metadata"]["labels"]["tidemark.dev/component"],
        "metrics-lite"
    );
    assert_eq!(deploy["status"]["availableReplicas"], 1, "{deploy}");
    let managers: Vec<&str> = deploy["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["manager"].as_str())
        .collect();
    assert!(managers.contains(&"tidemark"), "{managers:?}");
    let ds = kubectl_json(
        &sim,
        &["get", "daemonset", "-n", "kube-system", "node-agent"],
    )?;
    assert_eq!(
        ds["metadata"]["labels"]["tidemark.dev/component"],
        "node-agent"
    );
    let status = components(&sim)?;
    assert_eq!(status["metrics-lite"]["health"], "Healthy", "{status}");
    assert_eq!(status["metrics-lite"]["chart"], "metrics-lite 0.3.0");
    assert!(
        status["metrics-lite"]["inputs"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{status}"
    );
    assert_eq!(status["node-agent"]["health"], "Healthy");

    // Nothing changed: no helm process, no API write.
    let (helm_before, writes_before) = (agent.helm_runs(), api_writes(&sim)?);
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    assert!(pass.executed.is_empty(), "{pass:?}");
    assert_eq!(agent.helm_runs(), helm_before, "an idle pass runs no helm");
    assert_eq!(
        api_writes(&sim)?,
        writes_before,
        "an idle pass writes nothing"
    );

    // Values change: only that component is rendered again.
    let common = fleet.repo.read("values/metrics-lite/common.yaml")?;
    fleet.repo.write(
        "values/metrics-lite/common.yaml",
        &common.replace("config:\n", "config:\n  logLevel: debug\n"),
    )?;
    fleet.release("metrics-lite: debug logs")?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    assert_eq!(agent.helm_runs(), helm_before + 1);
    let cm = sim.kubectl(&[
        "get",
        "configmap",
        "-n",
        "monitoring",
        "metrics-lite",
        "-o",
        "yaml",
    ])?;
    assert!(cm.contains("logLevel: debug"), "{cm}");

    // Chart upgrade: a new version that drops the Service and adds a ConfigMap.
    let chart = fleet.repo.read("charts/metrics-lite/Chart.yaml")?;
    fleet.repo.write(
        "charts/metrics-lite/Chart.yaml",
        &chart.replace("version: 0.3.0", "version: 0.4.0"),
    )?;
    fleet
        .repo
        .remove("charts/metrics-lite/templates/service.yaml")?;
    fleet.repo.write(
        "charts/metrics-lite/templates/dashboards.yaml",
        charts::METRICS_LITE_DASHBOARDS,
    )?;
    fleet.components = fleet.components.replace(
        "chart: {path: charts/metrics-lite}",
        "chart: {path: charts/metrics-lite, version: 0.4.0}",
    );
    fleet.release("metrics-lite 0.4.0")?;
    // `tidemark plan` renders and compares, and changes nothing (every object changes:
    // the chart labels them with its version).
    let kubeconfig = sim.kubeconfig().display().to_string();
    let plan = tidemark_in(
        &[
            "plan",
            "--repo",
            &fleet.repo.path().display().to_string(),
            "--selector",
            "cluster=sim",
            "--cache-dir",
            &agent.dir.path().join("plan-cache").display().to_string(),
            "--helm-bin",
            &agent.helm_bin().display().to_string(),
        ],
        None,
        &[("KUBECONFIG", &kubeconfig)],
    )?;
    assert!(
        plan.stdout.contains(
            "apply component metrics-lite (chart, version or values changed): \
             metrics-lite 0.3.0 -> metrics-lite 0.4.0: render 5 objects: 1 to create, \
             4 to change, 0 unchanged; prune 1 (Service/monitoring/metrics-lite)"
        ),
        "{plan:?}"
    );
    assert!(exists(
        &sim,
        &["get", "service", "-n", "monitoring", "metrics-lite"]
    ));
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    assert!(exists(
        &sim,
        &[
            "get",
            "configmap",
            "-n",
            "monitoring",
            "metrics-lite-dashboards"
        ]
    ));
    assert!(
        !exists(
            &sim,
            &["get", "service", "-n", "monitoring", "metrics-lite"]
        ),
        "the Service the chart no longer renders is pruned"
    );
    assert!(exists(
        &sim,
        &["get", "configmap", "-n", "monitoring", "hand-made"]
    ));
    assert_eq!(
        components(&sim)?["metrics-lite"]["chart"],
        "metrics-lite 0.4.0"
    );

    // A removed component is pruned entirely.
    fleet.components = METRICS_LITE.replace(
        "chart: {path: charts/metrics-lite}",
        "chart: {path: charts/metrics-lite, version: 0.4.0}",
    );
    fleet.release("remove node-agent")?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert!(
        pass.executed
            .iter()
            .any(|e| e.starts_with("pruned component node-agent")),
        "{pass:?}"
    );
    let left = sim.kubectl(&[
        "get",
        "daemonsets,configmaps,serviceaccounts,clusterroles,clusterrolebindings",
        "-A",
        "-l",
        "tidemark.dev/component=node-agent",
        "-o",
        "name",
    ])?;
    assert_eq!(left.trim(), "", "everything of node-agent is gone");
    let status = components(&sim)?;
    assert!(status.get("node-agent").is_none(), "{status}");
    assert!(exists(
        &sim,
        &["get", "configmap", "-n", "monitoring", "hand-made"]
    ));
    assert!(exists(&sim, &["get", "namespace", "kube-system"]));
    Ok(())
}

/// Writes `chart` into the fleet repo, at `charts/<name>`.
fn write_chart(fleet: &Fleet, chart: &TestChart) -> Result<()> {
    let dir = format!("charts/{}", chart.name);
    fleet
        .repo
        .write(&format!("{dir}/Chart.yaml"), &chart.chart_yaml())?;
    for (path, text) in chart.files {
        fleet.repo.write(&format!("{dir}/{path}"), text)?;
    }
    Ok(())
}

#[test]
fn a_chart_with_crds_and_custom_resources_using_them() -> Result<()> {
    let sim = start_sim()?;
    let fleet = Fleet::new(
        "    - name: widgets
      chart: {path: charts/widgets}
      namespace: widgets
",
    )?;
    write_chart(&fleet, &charts::WIDGETS)?;
    fleet.release("widgets")?;
    let agent = Agent::new()?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    let crd = kubectl_json(&sim, &["get", "crd", "widgets.example.com"])?;
    assert_eq!(
        crd["metadata"]["labels"]["tidemark.dev/component"],
        "widgets"
    );
    let widget = kubectl_json(&sim, &["get", "widgets", "-n", "widgets", "widgets-main"])?;
    assert_eq!(widget["spec"]["size"], 3);
    assert_eq!(components(&sim)?["widgets"]["objects"], 2);
    assert!(!exists(
        &sim,
        &["get", "configmap", "-n", "widgets", "widgets-test"]
    ));
    Ok(())
}

#[test]
fn render_errors_fail_one_component_and_hold_later_phases() -> Result<()> {
    let sim = start_sim()?;
    let broken = "    - name: broken
      chart: {path: charts/broken}
      namespace: broken
";
    let mut fleet = Fleet::new(&format!("{METRICS_LITE}{broken}"))?;
    write_chart(&fleet, &charts::BROKEN)?;
    fleet.release("a broken chart")?;
    let agent = Agent::new()?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Failed", "{pass:?}");
    assert!(
        pass.message.contains("component broken Failed")
            && pass.message.contains("the chart refuses these values"),
        "{pass:?}"
    );
    let status = components(&sim)?;
    assert_eq!(status["broken"]["health"], "Failed");
    assert_eq!(
        status["metrics-lite"]["health"], "Healthy",
        "others unaffected"
    );
    let of_broken = sim.kubectl(&[
        "get",
        "configmaps",
        "-A",
        "-l",
        "tidemark.dev/component=broken",
        "-o",
        "name",
    ])?;
    assert_eq!(
        of_broken.trim(),
        "",
        "nothing of a failed render is applied"
    );

    // Before the control plane, a failing component holds the control-plane step.
    fleet.components = format!(
        "{METRICS_LITE}{}",
        broken.replace(
            "namespace: broken\n",
            "namespace: broken\n      phase: before-control-plane\n"
        )
    );
    fleet.control_plane = "1.29.8".into();
    fleet.release("upgrade with a broken before-control-plane component")?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Failed", "{pass:?}");
    assert!(
        !pass.executed.iter().any(|e| e.contains("control plane")),
        "{pass:?}"
    );
    let kcp = kubectl_json(
        &sim,
        &["get", "kubeadmcontrolplanes", "-n", "capi-system", "sim"],
    )?;
    assert_eq!(
        kcp["spec"]["version"], "v1.28.9",
        "control plane not requested"
    );

    // Fixed: the component is applied and the control plane requested in the same pass.
    fleet.repo.remove("charts/broken/templates/bad.yaml")?;
    fleet.release("fix the chart")?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert!(
        pass.executed
            .iter()
            .any(|e| e.starts_with("applied component broken"))
            && pass
                .executed
                .iter()
                .any(|e| e.contains("upgrade control plane")),
        "{pass:?}"
    );
    Ok(())
}

#[test]
fn rejected_apply_is_reported_and_retried_next_pass() -> Result<()> {
    let sim = start_sim()?;
    let mut fleet = Fleet::new(
        "    - name: named
      chart: {path: charts/named}
      namespace: named
      values: {name: Bad_Name}
",
    )?;
    write_chart(&fleet, &charts::NAMED)?;
    fleet.release("an invalid name")?;
    let agent = Agent::new()?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Failed", "{pass:?}");
    assert!(
        pass.message.contains("ConfigMap/named/Bad_Name") && pass.message.contains("Invalid"),
        "{pass:?}"
    );
    let runs = agent.helm_runs();
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Failed", "{pass:?}");
    assert_eq!(agent.helm_runs(), runs + 1, "retried next pass");
    fleet.components = fleet.components.replace("Bad_Name", "good-name");
    fleet.release("a valid name")?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    assert!(exists(
        &sim,
        &["get", "configmap", "-n", "named", "good-name"]
    ));
    Ok(())
}

#[test]
fn a_deployment_that_never_becomes_ready_fails_after_the_timeout() -> Result<()> {
    let sim = start_sim()?;
    let fleet = Fleet::new(
        "    - name: metrics-lite
      chart: {path: charts/metrics-lite}
      namespace: monitoring
      timeout: 6s
      values: {image: {repository: registry.example.com/fail-on-start}}
",
    )?;
    let agent = Agent::new()?;
    let pass = agent.once(&fleet, &sim, &["--component-wait", "2s"])?;
    assert_eq!(pass.phase, "Progressing", "{pass:?}");
    std::thread::sleep(Duration::from_secs(5));
    let pass = agent.once(&fleet, &sim, &["--component-wait", "1s"])?;
    assert_eq!(pass.phase, "Failed", "{pass:?}");
    let status = components(&sim)?;
    let message = status["metrics-lite"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("not healthy within 6s")
            && message.contains("Deployment")
            && message.contains("CrashLoopBackOff"),
        "{status}"
    );
    // The health change is an Event too.
    let events = sim.kubectl(&[
        "get",
        "events.v1.events.k8s.io",
        "-n",
        "default",
        "-o",
        "jsonpath={range .items[*]}{.type} {.reason}: {.note}{\"\\n\"}{end}",
    ])?;
    assert!(
        events
            .lines()
            .any(|e| e.starts_with("Warning ComponentFailed: component metrics-lite")),
        "{events}"
    );
    Ok(())
}

#[test]
fn drift_is_found_and_corrected_at_the_drift_interval() -> Result<()> {
    let sim = start_sim()?;
    let fleet = Fleet::new(METRICS_LITE)?;
    let agent = Agent::new()?;
    assert_eq!(agent.once(&fleet, &sim, &[])?.phase, "Converged");
    sim.kubectl(&["delete", "configmap", "-n", "monitoring", "metrics-lite"])?;
    sim.kubectl(&[
        "scale",
        "deployment",
        "-n",
        "monitoring",
        "metrics-lite",
        "--replicas",
        "3",
    ])?;
    // Within the drift interval nothing is looked at.
    let runs = agent.helm_runs();
    let pass = agent.once(&fleet, &sim, &[])?;
    assert!(pass.executed.is_empty(), "{pass:?}");
    assert_eq!(agent.helm_runs(), runs);
    assert!(!exists(
        &sim,
        &["get", "configmap", "-n", "monitoring", "metrics-lite"]
    ));

    std::thread::sleep(Duration::from_millis(1500));
    let pass = agent.once(&fleet, &sim, &["--drift-interval", "1s"])?;
    let corrected = pass
        .executed
        .iter()
        .find(|e| e.starts_with("corrected drift of component metrics-lite"))
        .with_context(|| format!("{pass:?}"))?;
    assert!(
        corrected.contains("ConfigMap/monitoring/metrics-lite (deleted)")
            && corrected.contains("spec.replicas"),
        "{corrected}"
    );
    assert!(exists(
        &sim,
        &["get", "configmap", "-n", "monitoring", "metrics-lite"]
    ));
    let deploy = kubectl_json(
        &sim,
        &["get", "deployment", "-n", "monitoring", "metrics-lite"],
    )?;
    assert_eq!(deploy["spec"]["replicas"], 1);
    Ok(())
}

#[test]
fn a_chart_from_a_chart_repository_is_upgraded_by_version() -> Result<()> {
    let work = tempfile::tempdir()?;
    let d030 = package_metrics_lite(work.path(), "0.3.0")?;
    let d040 = package_metrics_lite(work.path(), "0.4.0")?;
    std::fs::write(
        work.path().join("repo/index.yaml"),
        index_yaml(&d030, &d040),
    )?;
    let server = HttpServer::start(&work.path().join("repo"))?;
    let sim = start_sim()?;
    let component = |version: &str| {
        format!(
            "    - name: metrics
      chart: {{repository: \"{}\", name: metrics-lite, version: {version}}}
      namespace: monitoring
",
            server.url()
        )
    };
    let mut fleet = Fleet::new(&component("0.3.0"))?;
    let agent = Agent::new()?;
    let chart_label = |sim: &SimProcess| -> Result<String> {
        let d = kubectl_json(sim, &["get", "deployment", "-n", "monitoring", "metrics"])?;
        Ok(d["metadata"]["labels"]["helm.sh/chart"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    };
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    assert_eq!(chart_label(&sim)?, "metrics-lite-0.3.0");
    assert_eq!(components(&sim)?["metrics"]["chart"], "metrics-lite 0.3.0");
    let runs = agent.helm_runs();
    assert!(agent.once(&fleet, &sim, &[])?.executed.is_empty());
    assert_eq!(
        agent.helm_runs(),
        runs,
        "an unchanged repository chart is not fetched"
    );

    fleet.components = component("0.4.0");
    fleet.release("metrics 0.4.0")?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    assert_eq!(chart_label(&sim)?, "metrics-lite-0.4.0");
    let log = std::fs::read_to_string(agent.dir.path().join("helm.log"))?;
    assert!(
        log.lines().last().is_some_and(|l| l.contains(
            "metrics-lite --namespace monitoring --version 0.4.0 --repo http://127.0.0.1:"
        )),
        "{log}"
    );
    Ok(())
}

/// The value of a counter in a Prometheus text exposition.
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[test]
fn the_long_running_agent_renders_once_and_corrects_drift_from_its_cached_render() -> Result<()> {
    let sim = start_sim()?;
    let fleet = Fleet::new(METRICS_LITE)?;
    let agent = Agent::new()?;
    let dir = tempfile::tempdir()?;
    let helm = agent.helm_bin().display().to_string();
    let mut child = tidemark_e2e::spawn_agent_with(
        fleet.repo.path(),
        &sim,
        "loop",
        dir.path(),
        &["--helm-bin", &helm, "--drift-interval", "2s"],
    )?;
    let result = (|| -> Result<()> {
        tidemark_e2e::wait_until(Duration::from_secs(60), "metrics-lite healthy", || {
            components(&sim).is_ok_and(|c| c["metrics-lite"]["health"] == "Healthy")
        })?;
        let addr = tidemark_e2e::agent_metrics_addr(dir.path(), "loop")
            .context("no metrics address in the log")?;
        // Passes every 300 ms and drift checks every 2 s, for 5 s: still one render.
        std::thread::sleep(Duration::from_secs(5));
        let (_, body) = tidemark_e2e::http_get(&addr, "/metrics")?;
        assert_eq!(
            metric(&body, "tidemark_helm_renders_total"),
            Some(1.0),
            "{body}"
        );
        assert_eq!(agent.helm_runs(), 1);

        sim.kubectl(&["delete", "configmap", "-n", "monitoring", "metrics-lite"])?;
        tidemark_e2e::wait_until(Duration::from_secs(20), "the ConfigMap restored", || {
            exists(
                &sim,
                &["get", "configmap", "-n", "monitoring", "metrics-lite"],
            )
        })?;
        assert_eq!(
            agent.helm_runs(),
            1,
            "drift corrected from the cached render"
        );
        let log = tidemark_e2e::agent_log(dir.path(), "loop");
        assert!(log.contains("drift found"), "{log}");
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[test]
fn a_job_whose_template_changed_is_replaced() -> Result<()> {
    let sim = start_sim()?;
    let component = |step: &str| {
        format!(
            "    - name: migrate
      chart: {{path: charts/migrate}}
      namespace: db
      values: {{step: \"{step}\"}}
"
        )
    };
    let mut fleet = Fleet::new(&component("1"))?;
    write_chart(&fleet, &charts::MIGRATE)?;
    fleet.release("migration step 1")?;
    let agent = Agent::new()?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    let first = kubectl_json(&sim, &["get", "job", "-n", "db", "migrate-schema"])?;

    fleet.components = component("2");
    fleet.release("migration step 2")?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    let second = kubectl_json(&sim, &["get", "job", "-n", "db", "migrate-schema"])?;
    assert_ne!(
        first["metadata"]["uid"], second["metadata"]["uid"],
        "a new Job"
    );
    assert_eq!(
        second["spec"]["template"]["spec"]["containers"][0]["args"],
        serde_json::json!(["--step", "2"])
    );
    assert_eq!(components(&sim)?["migrate"]["health"], "Healthy");
    Ok(())
}

#[test]
fn one_object_cannot_belong_to_two_components_but_a_renamed_component_adopts_its_objects()
-> Result<()> {
    let sim = start_sim()?;
    let declare = |names: &[(&str, &str)]| {
        names
            .iter()
            .map(|(name, chart)| {
                format!(
                    "    - name: {name}\n      chart: {{path: charts/{chart}}}\n      namespace: shared\n"
                )
            })
            .collect::<String>()
    };
    let mut fleet = Fleet::new(&declare(&[("one", "one"), ("two", "two")]))?;
    write_chart(&fleet, &charts::ONE)?;
    write_chart(&fleet, &charts::TWO)?;
    fleet.release("two components, one object")?;
    let agent = Agent::new()?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Failed", "{pass:?}");
    assert!(
        pass.message
            .contains("component two Failed: ConfigMap/shared/shared is applied by component one"),
        "{pass:?}"
    );
    let shared = kubectl_json(&sim, &["get", "configmap", "-n", "shared", "shared"])?;
    assert_eq!(
        shared["metadata"]["labels"]["tidemark.dev/component"],
        "one"
    );
    assert!(!exists(
        &sim,
        &["get", "configmap", "-n", "shared", "two-own"]
    ));

    // `one` renamed to `uno`: the object is adopted, not deleted and created again.
    fleet.components = declare(&[("uno", "one")]);
    fleet.release("rename one to uno, drop two")?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    let adopted = kubectl_json(&sim, &["get", "configmap", "-n", "shared", "shared"])?;
    assert_eq!(
        adopted["metadata"]["labels"]["tidemark.dev/component"],
        "uno"
    );
    assert_eq!(adopted["metadata"]["uid"], shared["metadata"]["uid"]);
    let status = components(&sim)?;
    assert!(
        status.get("one").is_none() && status.get("two").is_none(),
        "{status}"
    );
    Ok(())
}

/// `metadata.resourceVersion` of an object, as a number (the order the API server stored
/// writes in).
fn resource_version(sim: &SimProcess, args: &[&str]) -> Result<u64> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let obj = kubectl_json(sim, &all)?;
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no resourceVersion: {obj}"))
}

/// Issue 10: hooks were applied as plain objects. Now: pre-install hooks (by weight) before
/// the other objects, post-install after; a hook with `hook-succeeded` is gone once it
/// succeeded; hooks are not drift; `resource-policy: keep` objects and CRDs leaving the
/// render stay (and the status says so); a Job deleted by its own TTL is not created again.
#[test]
fn helm_hooks_keep_policy_crds_and_ttl_jobs() -> Result<()> {
    let sim = start_sim()?;
    let mut fleet = Fleet::new(
        "    - name: life
      chart: {path: charts/lifecycle}
      namespace: life
      values: {keep: true, crd: true}
",
    )?;
    write_chart(&fleet, &charts::LIFECYCLE)?;
    fleet.release("install")?;
    let agent = Agent::new()?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert!(
        pass.executed
            .iter()
            .any(|e| e.starts_with("applied component life")),
        "{pass:?}"
    );
    let cm = |name: &str| ["configmap", "-n", "life", name].map(str::to_string);
    let rv = |name: &str| -> Result<u64> {
        let args = cm(name);
        resource_version(&sim, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (pre, main, post) = (rv("life-pre")?, rv("life-main")?, rv("life-post")?);
    assert!(
        pre < main && main < post,
        "pre {pre}, main {main}, post {post}"
    );
    // The hook Job ran and, having succeeded, was deleted (hook-succeeded).
    assert!(!exists(&sim, &["get", "job", "-n", "life", "life-migrate"]));
    let hook_writes = sim_writes(&sim, "jobs")?;
    assert!(hook_writes >= 2, "created and deleted: {hook_writes}");

    // The TTL Job finishes and is deleted by the sim's TTL-after-finished controller (or by
    // kubectl, should it still be there); drift checks do not create it again, and hooks
    // are not drift.
    tidemark_e2e::wait_until(
        Duration::from_secs(60),
        "life-once complete or gone",
        || {
            !exists(&sim, &["get", "job", "-n", "life", "life-once"])
                || sim
                    .kubectl(&[
                        "get",
                        "job",
                        "-n",
                        "life",
                        "life-once",
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Complete\")].status}",
                    ])
                    .is_ok_and(|s| s == "True")
        },
    )?;
    sim.kubectl(&[
        "delete",
        "job",
        "-n",
        "life",
        "life-once",
        "--ignore-not-found",
    ])?;
    sim.kubectl(&["delete", "configmap", "-n", "life", "life-post"])?;
    let jobs_before = sim_writes(&sim, "jobs")?;
    let pass = agent.once(&fleet, &sim, &["--drift-interval", "1s"])?;
    assert!(
        !pass.executed.iter().any(|e| e.contains("corrected drift")),
        "{pass:?}"
    );
    assert_eq!(sim_writes(&sim, "jobs")?, jobs_before, "no Job written");
    assert!(!exists(&sim, &["get", "job", "-n", "life", "life-once"]));
    assert!(!exists(
        &sim,
        &["get", "configmap", "-n", "life", "life-post"]
    ));

    // An upgrade: the object marked keep and the CRD leave the render and stay; the
    // pre-upgrade hook runs again (recreated: before-hook-creation).
    let pre_uid = kubectl_json(&sim, &["get", "configmap", "-n", "life", "life-pre"])?;
    fleet.components = "    - name: life
      chart: {path: charts/lifecycle}
      namespace: life
"
    .into();
    fleet.release("upgrade without the optional objects")?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert!(
        pass.executed
            .iter()
            .any(|e| e.starts_with("applied component life")),
        "{pass:?}"
    );
    assert!(exists(
        &sim,
        &["get", "configmap", "-n", "life", "life-kept"]
    ));
    assert!(exists(
        &sim,
        &["get", "customresourcedefinition", "gadgets.example.com"]
    ));
    let status = components(&sim)?;
    assert_eq!(
        status["life"]["retained"],
        serde_json::json!([
            "ConfigMap/life/life-kept",
            "CustomResourceDefinition.apiextensions.k8s.io/gadgets.example.com"
        ]),
        "{status}"
    );
    let pre_again = kubectl_json(&sim, &["get", "configmap", "-n", "life", "life-pre"])?;
    assert_ne!(
        pre_uid["metadata"]["uid"], pre_again["metadata"]["uid"],
        "the pre-upgrade hook was created anew"
    );
    assert!(exists(
        &sim,
        &["get", "configmap", "-n", "life", "life-post"]
    ));
    Ok(())
}

/// Writes to `resource` the sim counted (create, update, patch, delete).
fn sim_writes(sim: &SimProcess, resource: &str) -> Result<u64> {
    let run = tidemark_in(
        &["sim", "ctl", "state"],
        None,
        &[("KUBECONFIG", &sim.kubeconfig().display().to_string())],
    )?;
    let state: Value = serde_json::from_str(&run.stdout)?;
    let mut n = 0;
    for (key, count) in state["requestsByResource"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let (verb, res) = key.split_once(' ').unwrap_or((key, ""));
        if res == resource && matches!(verb, "create" | "update" | "patch" | "delete") {
            n += count.as_u64().unwrap_or(0);
        }
    }
    Ok(n)
}

/// Issue 10: with the last good inputs back, a component that failed stayed Failed for
/// ever. Reverting a failed change makes it Healthy and the pass Converged again.
#[test]
fn reverting_a_failed_change_clears_failed() -> Result<()> {
    let sim = start_sim()?;
    let mut fleet = Fleet::new(
        "    - name: named
      chart: {path: charts/named}
      namespace: named
      values: {name: good-name}
",
    )?;
    write_chart(&fleet, &charts::NAMED)?;
    fleet.release("good")?;
    let agent = Agent::new()?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    fleet.components = fleet.components.replace("good-name", "Bad_Name");
    fleet.release("bad")?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Failed", "{pass:?}");
    fleet.components = fleet.components.replace("Bad_Name", "good-name");
    fleet.release("revert")?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    let status = components(&sim)?;
    assert_eq!(status["named"]["health"], "Healthy", "{status}");
    assert!(status["named"].get("failedInputs").is_none(), "{status}");
    Ok(())
}

/// Issue 10: charts rendered for helm's built-in Kubernetes version. Now for the cluster's:
/// a chart gated on `.Capabilities.KubeVersion` renders for 1.28, and after the control
/// plane's hop to 1.29 is rendered again and applied; a chart that does not depend on the
/// version is rendered again too, and nothing of it is written.
#[test]
fn components_render_for_the_clusters_kubernetes_version() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=1",
        "--speed",
        "50",
    ])?;
    let bin = tidemark_e2e::tidemark_bin()?.display().to_string();
    let exec = format!(
        "{{kind: exec, upgradeControlPlane: [\"{bin}\", sim, ctl, upgrade-control-plane], upgradeNodeGroup: [\"{bin}\", sim, ctl, upgrade-node-group], timeout: 1m}}"
    );
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    for chart in [&charts::VERSIONED, &charts::ONE] {
        chart.write_to(&repo.path().join("charts").join(chart.name))?;
    }
    let manifest = |cp: &str| {
        let mut m = sim_manifest(&exec, cp, &[("general", "1.28.9")]);
        m.push_str(
            "  components:
    - {name: versioned, chart: {path: charts/versioned}, namespace: caps, phase: after-control-plane}
    - {name: static, chart: {path: charts/one}, namespace: caps, phase: after-control-plane}
",
        );
        m
    };
    repo.write("clusters/sim.yaml", &manifest("1.28.9"))?;
    repo.commit("1.28")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let agent = Agent::new()?;
    let fleet = Fleet {
        repo,
        control_plane: "1.28.9".into(),
        components: String::new(),
    };
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_eq!(pass.phase, "Converged", "{pass:?}");
    let api = |sim: &SimProcess| {
        sim.kubectl(&[
            "get",
            "configmap",
            "-n",
            "caps",
            "versioned",
            "-o",
            "jsonpath={.data.api}",
        ])
    };
    assert_eq!(api(&sim)?, "old");
    let static_rv = resource_version(&sim, &["configmap", "-n", "caps", "shared"])?;
    let helm_before = agent.helm_runs();

    fleet.repo.write("clusters/sim.yaml", &manifest("1.29.8"))?;
    fleet.repo.commit("1.29")?;
    fleet.repo.tag_annotated("wave/canary", "HEAD")?;
    let started = std::time::Instant::now();
    let mut executed = Vec::new();
    loop {
        let pass = agent.once(&fleet, &sim, &[])?;
        executed.extend(pass.executed.clone());
        if pass.phase == "Converged" {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            bail!("not converged: {pass:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(api(&sim)?, "new", "rendered for 1.29: {executed:?}");
    // Each component rendered twice: once by the pre-flight check of the 1.29 hop (for
    // 1.29, with what 1.28 serves less what 1.29 removes), once after it (for 1.29 as it
    // serves).
    assert_eq!(
        agent.helm_runs() - helm_before,
        4,
        "both rendered for the hop's pre-flight check and again after it, once each"
    );
    assert_eq!(
        resource_version(&sim, &["configmap", "-n", "caps", "shared"])?,
        static_rv,
        "an unchanged render writes nothing"
    );
    assert!(
        executed
            .iter()
            .any(|e| e.starts_with("applied component versioned")),
        "{executed:?}"
    );
    assert!(
        !executed
            .iter()
            .any(|e| e.starts_with("applied component static")),
        "{executed:?}"
    );
    Ok(())
}

/// An aggregated API whose backend never runs (its discovery answers 503) holds no other
/// component: a change to another component applies in one pass, and the commit that
/// removes the broken APIService applies too. On a real server the pass stalled for about
/// 7.5 minutes on discovery retries and then failed with nothing applied.
#[test]
fn an_unavailable_aggregated_api_holds_nothing_and_the_commit_removing_it_applies() -> Result<()> {
    let sim = start_sim()?;
    let metrics_api = "    - name: metrics-api
      chart: {path: charts/metrics-api}
      namespace: kube-system
";
    let mut fleet = Fleet::new(METRICS_LITE)?;
    write_chart(&fleet, &charts::METRICS_API)?;
    fleet.components = format!("{METRICS_LITE}{metrics_api}");
    fleet.release("an aggregated API")?;
    let agent = Agent::new()?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_ne!(pass.phase, "Failed", "{pass:?}");
    // The aggregator finds no endpoint behind it: unavailable, and discovery of
    // metrics.k8s.io/v1beta1 fails (kubectl says so as well).
    let mut available = String::new();
    for _ in 0..50 {
        available = sim.kubectl(&[
            "get",
            "apiservice",
            "v1beta1.metrics.k8s.io",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Available\")].status}",
        ])?;
        if available == "False" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(available, "False");
    assert!(
        sim.kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1"])
            .is_err(),
        "the group-version answers an error"
    );

    // A change to another component applies in one pass.
    fleet.components =
        format!("{METRICS_LITE}      values: {{config: {{logLevel: debug}}}}\n{metrics_api}");
    fleet.release("metrics-lite logs at debug")?;
    let before = sim_discovery(&sim)?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_ne!(pass.phase, "Failed", "{pass:?}");
    let config = sim.kubectl(&[
        "get",
        "configmap",
        "-n",
        "monitoring",
        "metrics-lite",
        "-o",
        "jsonpath={.data.metrics-lite\\.yaml}",
    ])?;
    assert!(config.contains("logLevel: debug"), "{config}");
    // Discovery of the broken group is not retried for minutes: a handful of requests.
    let discovery = sim_discovery(&sim)? - before;
    assert!(discovery < 60, "{discovery} discovery requests in one pass");

    // The commit removing the broken APIService applies: it is pruned.
    fleet.components = METRICS_LITE.to_string();
    fleet.release("remove the aggregated API")?;
    let pass = agent.once(&fleet, &sim, &[])?;
    assert_ne!(pass.phase, "Failed", "{pass:?}");
    assert!(!exists(
        &sim,
        &["get", "apiservice", "v1beta1.metrics.k8s.io"]
    ));
    assert!(!exists(
        &sim,
        &["get", "service", "-n", "kube-system", "metrics-backend"]
    ));
    Ok(())
}

/// Discovery requests served so far.
fn sim_discovery(sim: &SimProcess) -> Result<u64> {
    Ok(sim
        .requests_by_resource()?
        .get("get discovery")
        .copied()
        .unwrap_or_default())
}

/// Where pods never run (no scheduler, no kubelet: how the real server of the fidelity
/// corpus behaved), a Deployment with no available replica is `Progressing`, then `Failed`
/// at its timeout; never Healthy. On a real server, list items carry no kind, and health
/// read Healthy here.
#[test]
fn where_pods_never_run_a_component_is_never_healthy() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=1",
        "--speed",
        "20",
        "--pods",
        "pending",
    ])?;
    let fleet = Fleet::new(
        "    - name: metrics-lite
      chart: {path: charts/metrics-lite}
      namespace: monitoring
      timeout: 4s
",
    )?;
    let agent = Agent::new()?;
    let pass = agent.once(&fleet, &sim, &["--component-wait", "1s"])?;
    assert_eq!(pass.phase, "Progressing", "{pass:?}");
    assert_eq!(
        components(&sim)?["metrics-lite"]["health"],
        "Progressing",
        "{pass:?}"
    );
    std::thread::sleep(Duration::from_secs(4));
    let pass = agent.once(&fleet, &sim, &["--component-wait", "1s"])?;
    assert_eq!(pass.phase, "Failed", "{pass:?}");
    let status = components(&sim)?;
    let message = status["metrics-lite"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("not healthy within 4s") && message.contains("Deployment"),
        "{status}"
    );
    Ok(())
}
