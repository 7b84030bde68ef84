//! Test helpers: starting a sim, running kubectl, waiting with a bound.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tidemark_sim::{Sim, SimConfig};

/// Fails the test if `fut` takes longer than `secs`.
pub async fn bounded<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("test timed out")
}

/// A fast sim with node groups general=3, gpu=1.
pub async fn start() -> Sim {
    start_with(SimConfig {
        speed: 50.0,
        node_groups: vec![("general".into(), 3), ("gpu".into(), 1)],
        ..Default::default()
    })
    .await
}

pub async fn start_with(config: SimConfig) -> Sim {
    Sim::start(config).await.expect("sim starts")
}

/// A kube client without kube's default retries of 429/503 (to observe faults as they are).
pub async fn client_without_retries(sim: &Sim) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    bounded(secs, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// kubectl pointed at one sim.
pub struct Kubectl {
    _dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

/// The output of one kubectl run.
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    pub fn new(sim: &Sim) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).expect("write kubeconfig");
        Kubectl {
            _dir: dir,
            kubeconfig,
        }
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("/usr/bin/kubectl");
        c.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        c.env("HOME", self._dir.path()).env_remove("KUBECONFIG");
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs kubectl with `args` (at most 60 s).
    pub async fn run(&self, args: &[&str]) -> Out {
        let out = bounded(60, self.command(args).output())
            .await
            .expect("kubectl runs");
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs kubectl with stdin from `input`.
    pub async fn run_stdin(&self, args: &[&str], input: &str) -> Out {
        use tokio::io::AsyncWriteExt;
        let mut c = self.command(args);
        c.stdin(Stdio::piped());
        let mut child = c.spawn().expect("kubectl spawns");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("write stdin");
        drop(stdin);
        let out = bounded(60, child.wait_with_output())
            .await
            .expect("kubectl runs");
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
