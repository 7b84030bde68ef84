//! `exec`: configured commands (argv, no shell), the target in environment variables,
//! a timeout, output to the log, exit status decides.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tidemark_schema::KubeVersion;
use tidemark_schema::cluster::ExecProvider;
use tidemark_schema::resolve::DesiredState;
use tokio::process::Command;

use super::{Error, Provider, RolloutLimits};

/// Default timeout of one command.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How much of a failed command's stderr goes into the error.
const STDERR_TAIL: usize = 2000;

/// The exec provider of one cluster.
pub struct Exec {
    cluster: String,
    spec: ExecProvider,
    kubeconfig: Option<std::path::PathBuf>,
}

impl Exec {
    /// For `desired`'s cluster.
    pub fn new(
        desired: &DesiredState,
        spec: &ExecProvider,
        kubeconfig: Option<&std::path::Path>,
    ) -> Self {
        Self {
            cluster: desired.cluster.clone(),
            spec: spec.clone(),
            kubeconfig: kubeconfig.map(std::path::Path::to_path_buf),
        }
    }

    /// Runs a command to completion (bounded by the timeout); its output goes to the log.
    async fn output(
        &self,
        argv: &[String],
        env: BTreeMap<&str, String>,
    ) -> Result<std::process::Output, Error> {
        let Some((program, args)) = argv.split_first() else {
            return Err(Error::Command("empty command".into()));
        };
        let timeout = self
            .spec
            .timeout
            .map(|t| t.as_std())
            .unwrap_or(DEFAULT_TIMEOUT);
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(&self.spec.env)
            .envs(env)
            .env("TIDEMARK_CLUSTER", &self.cluster)
            .envs(
                self.kubeconfig
                    .iter()
                    .map(|k| ("KUBECONFIG", k.as_os_str())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let shown = argv.join(" ");
        let child = cmd
            .spawn()
            .map_err(|e| Error::Command(format!("failed to start `{shown}`: {e}")))?;
        let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(r) => r.map_err(|e| Error::Command(format!("failed to run `{shown}`: {e}")))?,
            Err(_) => {
                return Err(Error::Command(format!(
                    "`{shown}` did not finish within {timeout:?}; killed"
                )));
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        tracing::info!(command = %shown, status = ?output.status.code(), stdout = %stdout.trim(), stderr = %stderr.trim(), "provider command finished");
        Ok(output)
    }

    /// Runs a command; a non-zero exit is an error carrying the stderr tail.
    async fn run(&self, argv: &[String], env: BTreeMap<&str, String>) -> Result<(), Error> {
        let output = self.output(argv, env).await?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String = stderr
                .chars()
                .rev()
                .take(STDERR_TAIL)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(Error::Command(format!(
                "`{}` exited with {}: {}",
                argv.join(" "),
                output.status,
                tail.trim()
            )));
        }
        Ok(())
    }

    /// Asks the optional status command whether a request is in progress: exit 0 means
    /// none; any other exit means one is, and the first line of its output says what.
    pub async fn busy(&self) -> Result<Option<String>, Error> {
        let Some(argv) = &self.spec.status else {
            return Ok(None);
        };
        let output = self.output(argv, BTreeMap::new()).await?;
        if output.status.success() {
            return Ok(None);
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let first = stdout
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("a request is in progress");
        Ok(Some(first.to_string()))
    }
}

impl Provider for Exec {
    async fn upgrade_control_plane(&self, to: KubeVersion) -> Result<(), Error> {
        self.run(
            &self.spec.upgrade_control_plane,
            [("TIDEMARK_TARGET_VERSION", to.to_string())].into(),
        )
        .await
    }

    async fn upgrade_node_group(
        &self,
        group: &str,
        to: KubeVersion,
        limits: RolloutLimits,
    ) -> Result<(), Error> {
        let env = [
            ("TIDEMARK_TARGET_VERSION", to.to_string()),
            ("TIDEMARK_NODE_GROUP", group.to_string()),
            (
                "TIDEMARK_MAX_UNAVAILABLE",
                limits.max_unavailable.to_string(),
            ),
            (
                "TIDEMARK_DRAIN_TIMEOUT_SECONDS",
                limits.drain_timeout.as_secs().to_string(),
            ),
        ]
        .into();
        self.run(&self.spec.upgrade_node_group, env).await
    }
}
