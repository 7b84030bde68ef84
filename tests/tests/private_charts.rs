//! Private charts (issue 10, item 11), end to end with real servers on 127.0.0.1: a classic
//! chart repository behind HTTPS (a CA made with openssl here) and basic auth, and a real OCI
//! registry (Debian's `docker-registry`, TLS and htpasswd) that the real helm pushed the chart
//! to. The agent (`--chart-credentials`) renders with the official helm through a wrapper that
//! logs helm's command lines: no secret may ever be on one, nor in the status, the Events or
//! the agent's log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use tidemark_e2e::{
    CLUSTERAPI, ChartRepoServer, OciRegistry, Pass, Run, SimProcess, TestTls, WorkRepo, agent_log,
    agent_once, fleet_yaml, helm_in, helm_wrapper, index_yaml, package_metrics_lite,
    registry_config, sim_manifest, spawn_agent_with, status_record, wait_until,
};

/// A fleet repo whose cluster `sim` has one component, `metrics`: metrics-lite at `version`
/// from the repository `url`.
struct Fleet {
    repo: WorkRepo,
    url: String,
}

impl Fleet {
    fn new(url: &str, version: &str) -> Result<Self> {
        let fleet = Self {
            repo: WorkRepo::new()?,
            url: url.to_owned(),
        };
        fleet.repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
        fleet.release(version)?;
        Ok(fleet)
    }

    fn release(&self, version: &str) -> Result<()> {
        let mut cluster = sim_manifest(CLUSTERAPI, "1.28.9", &[("general", "1.28.9")]);
        cluster.push_str(&format!(
            "  components:
    - name: metrics
      chart: {{repository: \"{}\", name: metrics-lite, version: {version}}}
      namespace: monitoring
",
            self.url
        ));
        self.repo.write("clusters/sim.yaml", &cluster)?;
        let rev = self.repo.commit(&format!("metrics-lite {version}"))?;
        self.repo.tag_light("wave/canary", &rev)
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

/// `metrics-lite-VERSION` as the chart label of the applied Deployment, if it exists.
fn applied_chart(sim: &SimProcess) -> Option<String> {
    let text = sim
        .kubectl(&[
            "get",
            "deployment",
            "-n",
            "monitoring",
            "metrics",
            "-o",
            "json",
        ])
        .ok()?;
    let deployment: Value = serde_json::from_str(&text).ok()?;
    deployment["metadata"]["labels"]["helm.sh/chart"]
        .as_str()
        .map(str::to_owned)
}

/// The component's record in the agent's status, as JSON.
fn component(sim: &SimProcess) -> Value {
    status_record(sim)
        .ok()
        .and_then(|r| serde_json::to_value(&r.components).ok())
        .map(|c| c["metrics"].clone())
        .unwrap_or_default()
}

/// Writes a file only its owner reads (as a mounted Secret would be).
fn secret_file(path: &Path, text: &str) -> Result<PathBuf> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(path.to_path_buf())
}

fn pass(run: &Run) -> Pass {
    assert_eq!(run.code, Some(0), "{run:?}");
    Pass::parse(&run.stdout)
}

/// Everything the agent made visible: every status annotation, every Event in the cluster,
/// what it printed, and every helm command line it ran.
fn everything_visible(sim: &SimProcess, agent_dir: &Path, printed: &str) -> Result<String> {
    let namespace = sim.kubectl(&["get", "namespace", "tidemark-system", "-o", "json"])?;
    let events = sim.kubectl(&["get", "events", "-A", "-o", "json"])?;
    let helm_log = std::fs::read_to_string(agent_dir.join("helm.log")).unwrap_or_default();
    Ok(format!("{namespace}\n{events}\n{printed}\n{helm_log}"))
}

#[test]
fn a_chart_repository_with_basic_auth_and_a_private_ca() -> Result<()> {
    let work = tempfile::tempdir()?;
    let tls = TestTls::new(&work.path().join("tls"))?;
    let d030 = package_metrics_lite(work.path(), "0.3.0")?;
    let d040 = package_metrics_lite(work.path(), "0.4.0")?;
    std::fs::write(
        work.path().join("repo/index.yaml"),
        index_yaml(&d030, &d040),
    )?;
    let server_password = secret_file(&work.path().join("server-password"), "s3cret-v1")?;
    let server = ChartRepoServer::start(
        &work.path().join("repo"),
        Some(("deploy", &server_password)),
        Some(&tls),
        &work.path().join("requests.log"),
    )?;
    let password = secret_file(&work.path().join("password"), "s3cret-v1\n")?;
    let credentials = work.path().join("chart-credentials.yaml");
    std::fs::write(
        &credentials,
        format!(
            "repositories:\n  - url: {}\n    username: deploy\n    passwordFile: {}\n    caFile: {}\n",
            server.url(),
            password.display(),
            tls.ca.display()
        ),
    )?;
    let fleet = Fleet::new(&server.url(), "0.3.0")?;
    let sim = start_sim()?;
    let agent = tempfile::tempdir()?;
    let helm = helm_wrapper(agent.path())?;

    // Without credentials: the server's CA is unknown, nothing is fetched.
    let run = agent_once(fleet.repo.path(), &sim, &helm, agent.path(), &[])?;
    let first = pass(&run);
    assert_eq!(first.phase, "Failed", "{first:?}");
    assert!(
        component(&sim)["message"]
            .as_str()
            .is_some_and(|m| m.contains("certificate")),
        "{}",
        component(&sim)
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());

    // The CA alone (`--ca-file`): TLS is verified, and the server asks for credentials.
    let creds = credentials.display().to_string();
    let ca_only = work.path().join("ca-only.yaml");
    std::fs::write(
        &ca_only,
        format!(
            "repositories:\n  - url: {}\n    caFile: {}\n",
            server.url(),
            tls.ca.display()
        ),
    )?;
    let run = agent_once(
        fleet.repo.path(),
        &sim,
        &helm,
        agent.path(),
        &["--chart-credentials", &ca_only.display().to_string()],
    )?;
    assert_eq!(pass(&run).phase, "Failed", "{run:?}");
    let message = component(&sim)["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("401 Unauthorized"), "{message}");
    assert_eq!(server.requests(), ["401 /index.yaml none"]);

    // With them: the index and the archive are fetched with the credentials, over TLS.
    let run = agent_once(
        fleet.repo.path(),
        &sim,
        &helm,
        agent.path(),
        &["--chart-credentials", &creds],
    )?;
    let second = pass(&run);
    assert_eq!(second.phase, "Converged", "{second:?}");
    assert_eq!(applied_chart(&sim).as_deref(), Some("metrics-lite-0.3.0"));
    assert_eq!(
        server.requests(),
        [
            "401 /index.yaml none",
            "200 /index.yaml ok",
            "200 /charts/metrics-lite-0.3.0.tgz ok"
        ]
    );
    let helm_log = std::fs::read_to_string(agent.path().join("helm.log"))?;
    assert!(
        helm_log.contains("repo update tidemark --repository-config ")
            && helm_log.contains("template metrics tidemark/metrics-lite "),
        "{helm_log}"
    );
    let visible = everything_visible(&sim, agent.path(), &format!("{run:?}"))?;
    assert!(!visible.contains("s3cret"), "a secret is visible");
    Ok(())
}

#[test]
fn a_rotated_password_is_read_without_a_restart_and_a_failure_never_shows_it() -> Result<()> {
    let work = tempfile::tempdir()?;
    let tls = TestTls::new(&work.path().join("tls"))?;
    let d030 = package_metrics_lite(work.path(), "0.3.0")?;
    let d040 = package_metrics_lite(work.path(), "0.4.0")?;
    std::fs::write(
        work.path().join("repo/index.yaml"),
        index_yaml(&d030, &d040),
    )?;
    let server_password = secret_file(&work.path().join("server-password"), "s3cret-v1")?;
    let server = ChartRepoServer::start(
        &work.path().join("repo"),
        Some(("deploy", &server_password)),
        Some(&tls),
        &work.path().join("requests.log"),
    )?;
    // The user name from a file too, as a Secret of type kubernetes.io/basic-auth holds it.
    let username = secret_file(&work.path().join("username"), "deploy")?;
    let password = secret_file(&work.path().join("password"), "s3cret-v1")?;
    let credentials = work.path().join("chart-credentials.yaml");
    std::fs::write(
        &credentials,
        format!(
            "repositories:\n  - url: {}/\n    usernameFile: {}\n    passwordFile: {}\n    caFile: {}\n",
            server.url(),
            username.display(),
            password.display(),
            tls.ca.display()
        ),
    )?;
    let fleet = Fleet::new(&server.url(), "0.3.0")?;
    let sim = start_sim()?;
    let agent = tempfile::tempdir()?;
    let helm = helm_wrapper(agent.path())?.display().to_string();
    let creds = credentials.display().to_string();
    let mut child = spawn_agent_with(
        fleet.repo.path(),
        &sim,
        "agent-1",
        agent.path(),
        &[
            "--helm-bin",
            &helm,
            "--chart-credentials",
            &creds,
            "--component-wait",
            "20s",
        ],
    )?;
    let outcome = (|| -> Result<()> {
        wait_until(
            Duration::from_secs(60),
            "metrics-lite 0.3.0 healthy",
            || component(&sim)["health"] == "Healthy",
        )?;
        assert_eq!(applied_chart(&sim).as_deref(), Some("metrics-lite-0.3.0"));

        // The repository's password is rotated; the agent's Secret is not updated yet.
        std::fs::write(&server_password, "s3cret-v2")?;
        fleet.release("0.4.0")?;
        wait_until(Duration::from_secs(60), "the render to fail", || {
            component(&sim)["health"] == "Failed"
        })?;
        let message = component(&sim)["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.contains("failed to fetch the index of chart repository")
                && message.contains("401 Unauthorized"),
            "{message}"
        );
        assert!(server.requests().iter().any(|r| r == "401 /index.yaml bad"));
        let visible = everything_visible(&sim, agent.path(), &agent_log(agent.path(), "agent-1"))?;
        assert!(!visible.contains("s3cret"), "a secret is visible");

        // The Secret is updated: the next retry reads it, no restart, no commit.
        std::fs::write(&password, "s3cret-v2\n")?;
        wait_until(
            Duration::from_secs(60),
            "metrics-lite 0.4.0 healthy",
            || {
                component(&sim)["health"] == "Healthy"
                    && applied_chart(&sim).as_deref() == Some("metrics-lite-0.4.0")
            },
        )?;
        let visible = everything_visible(&sim, agent.path(), &agent_log(agent.path(), "agent-1"))?;
        assert!(!visible.contains("s3cret"), "a secret is visible");
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

#[test]
fn an_oci_chart_from_a_registry_with_tls_and_htpasswd() -> Result<()> {
    let work = tempfile::tempdir()?;
    let tls = TestTls::new(&work.path().join("tls"))?;
    let registry = OciRegistry::start("robot", "s3cret-oci", &tls)?;
    let host = registry.host();
    // The real helm pushes the packaged chart, logged in through a registry config.
    let pushed_with = work.path().join("push-config.json");
    std::fs::write(&pushed_with, registry_config(&host, "robot", "s3cret-oci"))?;
    for version in ["0.3.0", "0.4.0"] {
        package_metrics_lite(work.path(), version)?;
        let archive = work
            .path()
            .join(format!("repo/charts/metrics-lite-{version}.tgz"));
        let run = helm_in(
            &[
                "push",
                &archive.display().to_string(),
                &format!("oci://{host}/charts"),
                "--ca-file",
                &tls.ca.display().to_string(),
                "--registry-config",
                &pushed_with.display().to_string(),
            ],
            work.path(),
        )?;
        assert_eq!(run.code, Some(0), "helm push: {run:?}");
    }

    let fleet = Fleet::new(&format!("oci://{host}/charts"), "0.3.0")?;
    let sim = start_sim()?;
    let agent = tempfile::tempdir()?;
    let helm = helm_wrapper(agent.path())?;
    let password = secret_file(&work.path().join("token"), "s3cret-oci\n")?;

    // A CA but no credentials: the registry asks for them.
    let credentials = work.path().join("chart-credentials.yaml");
    std::fs::write(
        &credentials,
        format!(
            "repositories:\n  - url: oci://{host}\n    caFile: {}\n",
            tls.ca.display()
        ),
    )?;
    let creds = credentials.display().to_string();
    let once = |extra: &[&str]| agent_once(fleet.repo.path(), &sim, &helm, agent.path(), extra);
    let run = once(&["--chart-credentials", &creds])?;
    assert_eq!(pass(&run).phase, "Failed", "{run:?}");
    let message = component(&sim)["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("basic credential not found"), "{message}");

    // A user and a token file for the registry's charts.
    std::fs::write(
        &credentials,
        format!(
            "repositories:\n  - url: oci://{host}\n    caFile: {ca}\n  - url: oci://{host}/charts\n    \
             username: robot\n    passwordFile: {token}\n    caFile: {ca}\n",
            ca = tls.ca.display(),
            token = password.display()
        ),
    )?;
    let run = once(&["--chart-credentials", &creds])?;
    assert_eq!(pass(&run).phase, "Converged", "{run:?}");
    assert_eq!(applied_chart(&sim).as_deref(), Some("metrics-lite-0.3.0"));
    assert!(
        component(&sim)["objects"].as_u64().is_some_and(|n| n >= 4),
        "{}",
        component(&sim)
    );
    let helm_log = std::fs::read_to_string(agent.path().join("helm.log"))?;
    let last = helm_log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "template metrics oci://{host}/charts/metrics-lite "
        )) && last.contains("--registry-config ")
            && last.contains(&format!("--ca-file {}", tls.ca.display())),
        "{last}"
    );
    let visible = everything_visible(&sim, agent.path(), &format!("{run:?}"))?;
    assert!(!visible.contains("s3cret"), "a secret is visible");

    // helm's own registry config, passed through (a kubernetes.io/dockerconfigjson Secret).
    std::fs::write(
        &credentials,
        format!(
            "repositories:\n  - url: oci://{host}\n    caFile: {}\nregistryConfig: {}\n",
            tls.ca.display(),
            pushed_with.display()
        ),
    )?;
    fleet.release("0.4.0")?;
    let run = once(&["--chart-credentials", &creds])?;
    assert_eq!(pass(&run).phase, "Converged", "{run:?}");
    assert_eq!(applied_chart(&sim).as_deref(), Some("metrics-lite-0.4.0"));
    let helm_log = std::fs::read_to_string(agent.path().join("helm.log"))?;
    assert!(
        helm_log
            .lines()
            .last()
            .is_some_and(|l| l.contains(&format!("--registry-config {}", pushed_with.display()))),
        "{helm_log}"
    );
    Ok(())
}

#[test]
fn a_bad_credentials_file_stops_the_agent_with_a_clear_error() -> Result<()> {
    let work = tempfile::tempdir()?;
    let credentials = work.path().join("chart-credentials.yaml");
    std::fs::write(
        &credentials,
        "repositories:\n  - url: https://charts.example.com\n    username: deploy\n    passwordFile: /nonexistent/password\n",
    )?;
    let fleet = Fleet::new("https://charts.example.com", "0.3.0")?;
    let sim = start_sim()?;
    let agent = tempfile::tempdir()?;
    let helm = helm_wrapper(agent.path())?;
    let creds = credentials.display().to_string();
    let run = agent_once(
        fleet.repo.path(),
        &sim,
        &helm,
        agent.path(),
        &["--chart-credentials", &creds],
    )?;
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "--chart-credentials: {creds}: repositories[0].passwordFile: cannot read /nonexistent/password"
        )),
        "{}",
        run.stderr
    );
    Ok(())
}
