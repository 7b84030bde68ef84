//! No secret ever leaves (issue 14, item 6): the agent runs with canary secrets in every place
//! it takes one (a git token, a kubeconfig bearer token, an SSH key file, a chart repository
//! password), passes are driven into errors at each of them, and no canary may appear in any
//! log line (at trace level), status annotation, Event, metric or `plan` output.
//!
//! tidemark has no secret values files by design: values live in git, and secrets belong in
//! Secrets the cluster gets otherwise (the README says so). The chart repository password is
//! the secret a render reads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use tidemark_e2e::{
    CLUSTERAPI, ChartRepoServer, GitHttpServer, Run, SimProcess, SshServer, WorkRepo,
    agent_metrics_addr, fleet_yaml, helm_wrapper, http_get, index_yaml, package_metrics_lite,
    sim_manifest, tidemark_in, wait_until,
};

const GIT_TOKEN: &str = "tmkcanary-git-4d1f8e27";
const WRONG_GIT_TOKEN: &str = "tmkcanary-wronggit-91c2aa0b";
const KUBE_TOKEN: &str = "tmkcanary-kube-5b7e03c1";
const SSH_KEY: &str = "tmkcanary-sshkey-0e6c4d9a";
const CHART_PASSWORD: &str = "tmkcanary-chart-a83f5512";
const WRONG_CHART_PASSWORD: &str = "tmkcanary-wrongchart-77d0e4f3";
const CANARIES: [&str; 6] = [
    GIT_TOKEN,
    WRONG_GIT_TOKEN,
    KUBE_TOKEN,
    SSH_KEY,
    CHART_PASSWORD,
    WRONG_CHART_PASSWORD,
];

/// Writes a file only its owner reads (as a mounted Secret would be).
fn secret_file(path: &Path, text: &str) -> Result<PathBuf> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(path.to_path_buf())
}

/// Everything a run printed, labelled.
fn printed(what: &str, run: &Run) -> String {
    format!(
        "== {what} (exit {:?})\n{}\n{}\n",
        run.code, run.stdout, run.stderr
    )
}

#[test]
fn no_canary_secret_appears_in_logs_status_events_metrics_or_plan() -> Result<()> {
    let work = tempfile::tempdir()?;
    let dir = work.path();

    // A private chart repository (basic auth) holding metrics-lite 0.3.0.
    let d030 = package_metrics_lite(dir, "0.3.0")?;
    let d040 = package_metrics_lite(dir, "0.4.0")?;
    std::fs::write(dir.join("repo/index.yaml"), index_yaml(&d030, &d040))?;
    let server_password = secret_file(&dir.join("server-password"), CHART_PASSWORD)?;
    let charts = ChartRepoServer::start(
        &dir.join("repo"),
        Some(("deploy", &server_password)),
        None,
        &dir.join("requests.log"),
    )?;
    let chart_password = secret_file(&dir.join("chart-password"), WRONG_CHART_PASSWORD)?;
    let credentials = dir.join("chart-credentials.yaml");
    std::fs::write(
        &credentials,
        format!(
            "repositories:\n  - url: {}\n    username: deploy\n    passwordFile: {}\n",
            charts.url(),
            chart_password.display()
        ),
    )?;

    // The fleet repo, served over HTTP with basic auth.
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    let mut cluster = sim_manifest(CLUSTERAPI, "1.28.9", &[("general", "1.28.9")]);
    cluster.push_str(&format!(
        "  components:
    - name: metrics
      chart: {{repository: \"{}\", name: metrics-lite, version: 0.3.0}}
      namespace: monitoring
",
        charts.url()
    ));
    repo.write("clusters/sim.yaml", &cluster)?;
    let rev = repo.commit("a private chart")?;
    repo.tag_light("wave/canary", &rev)?;
    let git = GitHttpServer::start(&repo.base_dir(), "fleet", GIT_TOKEN)?;
    let url = git.url(&repo.name());
    let git_password = secret_file(&dir.join("git-password"), WRONG_GIT_TOKEN)?;

    // The cluster, reached with a bearer token; some writes fail.
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=1",
        "--speed",
        "20",
        "--faults",
        "error-rate=0.2,error-codes=500|409,error-verbs=patch|create,seed=3",
    ])?;
    let kubeconfig = dir.join("kubeconfig");
    let original = std::fs::read_to_string(sim.kubeconfig())?;
    let with_token = original.replace("token: sim-token", &format!("token: {KUBE_TOKEN}"));
    assert_ne!(
        with_token, original,
        "the sim's kubeconfig has a bearer token"
    );
    secret_file(&kubeconfig, &with_token)?;

    let helm_dir = tempfile::tempdir()?;
    let helm = helm_wrapper(helm_dir.path())?.display().to_string();
    let (kc, creds, pw, cache) = (
        kubeconfig.display().to_string(),
        credentials.display().to_string(),
        git_password.display().to_string(),
        dir.join("cache").display().to_string(),
    );
    let once = |log: &str| -> Result<Run> {
        tidemark_in(
            &[
                "--log",
                log,
                "agent",
                "--once",
                "--repo",
                &url,
                "--selector",
                "cluster=sim",
                "--git-username",
                "fleet",
                "--git-password-file",
                &pw,
                "--cache-dir",
                &cache,
                "--kubeconfig",
                &kc,
                "--helm-bin",
                &helm,
                "--chart-credentials",
                &creds,
                "--component-wait",
                "5s",
            ],
            None,
            &[("NO_COLOR", "1")],
        )
    };
    let mut seen = String::new();

    // 1. The wrong git token: the fetch is refused.
    let run = once("trace")?;
    assert!(
        format!("{run:?}").contains("401") || format!("{run:?}").to_lowercase().contains("auth"),
        "the git server refused the token: {run:?}"
    );
    seen.push_str(&printed("wrong git token", &run));

    // 2. The right git token, the wrong chart password: the render fails.
    secret_file(&git_password, GIT_TOKEN)?;
    let run = once("trace")?;
    assert!(run.stdout.contains("401 Unauthorized"), "{run:?}");
    seen.push_str(&printed("wrong chart password", &run));

    // 3. Everything right (with the cluster's injected errors): it converges.
    secret_file(&chart_password, CHART_PASSWORD)?;
    let mut converged = false;
    for _ in 0..10 {
        let run = once("debug")?;
        seen.push_str(&printed("right credentials", &run));
        if run.stdout.starts_with("phase: Converged") {
            converged = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(converged, "never converged:\n{seen}");

    // 4. An SSH remote with an unusable key file.
    let ssh = SshServer::start()?;
    let key = secret_file(&dir.join("id_canary"), &format!("{SSH_KEY}\n"))?;
    let known_hosts = ssh.known_hosts(false)?;
    let run = tidemark_in(
        &[
            "--log",
            "trace",
            "desired",
            "--repo",
            &ssh.url("git", repo.path()),
            "--selector",
            "cluster=sim",
            "--git-ssh-key",
            &key.display().to_string(),
            "--git-known-hosts",
            &known_hosts.display().to_string(),
            "--cache-dir",
            &dir.join("ssh-cache").display().to_string(),
        ],
        None,
        &[],
    )?;
    assert_ne!(run.code, Some(0), "an unusable key fails: {run:?}");
    seen.push_str(&printed("unusable ssh key", &run));

    // 5. `plan`, and the metrics of a long-running agent.
    let run = tidemark_in(
        &[
            "--log",
            "debug",
            "plan",
            "--repo",
            &url,
            "--selector",
            "cluster=sim",
            "--git-username",
            "fleet",
            "--git-password-file",
            &pw,
            "--cache-dir",
            &cache,
            "--kubeconfig",
            &kc,
            "--helm-bin",
            &helm,
            "--chart-credentials",
            &creds,
        ],
        None,
        &[],
    )?;
    seen.push_str(&printed("plan", &run));
    let agent_dir = tempfile::tempdir()?;
    let log = std::fs::File::create(agent_dir.path().join("agent.log"))?;
    let mut agent = std::process::Command::new(tidemark_e2e::tidemark_bin()?)
        .args(["--log", "debug", "agent", "--repo", &url])
        .args(["--selector", "cluster=sim", "--identity", "agent"])
        .args(["--git-username", "fleet", "--git-password-file", &pw])
        .args(["--kubeconfig", &kc, "--helm-bin", &helm])
        .args(["--chart-credentials", &creds, "--interval", "300ms"])
        .args(["--metrics-addr", "127.0.0.1:0", "--cache-dir", &cache])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()?;
    let metrics = (|| -> Result<String> {
        let mut addr = None;
        wait_until(Duration::from_secs(20), "the metrics address", || {
            addr = agent_metrics_addr(agent_dir.path(), "agent");
            addr.is_some()
        })?;
        let addr = addr.context("no metrics address")?;
        let mut body = String::new();
        wait_until(Duration::from_secs(20), "a pass in the metrics", || {
            body = http_get(&addr, "/metrics").map(|r| r.1).unwrap_or_default();
            body.contains("tidemark_passes_total")
        })?;
        Ok(body)
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    let metrics = metrics?;
    seen.push_str(&format!("== metrics\n{metrics}\n"));
    seen.push_str(&format!(
        "== long-running agent log\n{}\n",
        std::fs::read_to_string(agent_dir.path().join("agent.log"))?
    ));

    // Everything the cluster shows.
    seen.push_str(&sim.kubectl(&["get", "namespace", "tidemark-system", "-o", "json"])?);
    seen.push_str(&sim.kubectl(&["get", "events", "-A", "-o", "json"])?);
    seen.push_str(&sim.kubectl(&["get", "events.v1.events.k8s.io", "-A", "-o", "json"])?);
    seen.push_str(&std::fs::read_to_string(helm_dir.path().join("helm.log")).unwrap_or_default());

    for canary in CANARIES {
        if let Some(at) = seen.find(canary) {
            let from = seen[..at].rfind('\n').map_or(0, |i| i + 1);
            let to = seen[at..].find('\n').map_or(seen.len(), |i| at + i);
            panic!("secret {canary} leaked: {}", &seen[from..to]);
        }
    }
    // The test saw real traffic: trace logs of git, kube and helm.
    assert!(seen.len() > 10_000, "only {} bytes seen", seen.len());
    assert!(seen.contains(" TRACE "), "trace-level lines were looked at");
    Ok(())
}
