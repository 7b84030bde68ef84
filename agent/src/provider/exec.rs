//! `exec`: configured commands (argv, no shell), the target in environment variables, a
//! timeout, output to the log, exit status decides.
//!
//! A command cannot be asked what it is doing, so progress is what the status record says
//! was requested (and is younger than the command timeout: the provider may have dropped
//! an older request), plus the optional status command's answer.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use tidemark_schema::KubeVersion;
use tidemark_schema::cluster::ExecProvider;
use tidemark_schema::resolve::DesiredState;

use super::{
    Error, GroupProgress, NodeGroupSelector, Provider, ProviderObservation, RolloutLimits,
};
use crate::keys::exec_env;
use crate::process::{self, Invocation};
use crate::status::{Record, Versions};

/// Default timeout of one command.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The exec provider of one cluster.
pub struct Exec {
    cluster: String,
    spec: ExecProvider,
    groups: Vec<String>,
    node_group_label: String,
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
            groups: desired.node_groups.iter().map(|g| g.name.clone()).collect(),
            node_group_label: desired.provider.node_group_label().to_string(),
            kubeconfig: kubeconfig.map(std::path::Path::to_path_buf),
        }
    }

    /// Longest one command may take.
    pub fn timeout(&self) -> Duration {
        self.spec
            .timeout
            .map(|t| t.as_std())
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// The invocation of `argv` with the cluster, `env` and the agent's kubeconfig.
    fn invocation(
        &self,
        which: &'static str,
        argv: &[String],
        env: BTreeMap<&str, String>,
    ) -> Result<Invocation, Error> {
        let (program, args) = argv.split_first().ok_or(Error::EmptyCommand(which))?;
        Ok(Invocation::new(program, self.timeout())
            .args(args)
            .envs(self.spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env)
            .envs([(exec_env::CLUSTER, self.cluster.as_str())])
            .envs(
                self.kubeconfig
                    .iter()
                    .map(|k| ("KUBECONFIG", k.as_os_str())),
            ))
    }

    /// Runs a command; its output goes to the log; a non-zero exit is an error.
    async fn run(
        &self,
        which: &'static str,
        argv: &[String],
        env: BTreeMap<&str, String>,
    ) -> Result<(), Error> {
        let invocation = self.invocation(which, argv, env)?;
        let result = process::run_checked(&invocation).await;
        if let Ok(output) = &result {
            tracing::info!(
                command = %invocation.display(),
                stdout = %String::from_utf8_lossy(&output.stdout).trim(),
                stderr = %output.stderr_tail(),
                "provider command finished"
            );
        }
        result.map(|_| ()).map_err(Error::Command)
    }

    /// Asks the optional status command whether a request is in progress: exit 0 means
    /// none; any other exit means one is, and the first line of its output says what.
    async fn busy(&self) -> Result<Option<String>, Error> {
        let Some(argv) = &self.spec.status else {
            return Ok(None);
        };
        let invocation = self.invocation("status", argv, BTreeMap::new())?;
        let output = process::run(&invocation).await.map_err(Error::Command)?;
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

    /// A request recorded by an earlier pass that is younger than the command timeout.
    fn fresh(&self, versions: Option<&Versions>, now: Timestamp) -> Option<KubeVersion> {
        let (version, at) = versions?.request()?;
        (now.duration_since(at).unsigned_abs() < self.timeout()).then_some(version)
    }
}

impl Exec {
    /// Runs the `replaceNode` command for `node` of `group`, to be replaced at `to`.
    pub async fn replace_node(
        &self,
        node: &str,
        group: &str,
        to: KubeVersion,
    ) -> Result<(), Error> {
        let Some(argv) = &self.spec.replace_node else {
            return Err(Error::EmptyCommand("replaceNode"));
        };
        let env = [
            (exec_env::NODE_NAME, node.to_string()),
            (exec_env::NODE_GROUP, group.to_string()),
            (exec_env::TARGET_VERSION, to.to_string()),
        ]
        .into();
        self.run("replaceNode", argv, env).await
    }

    /// The node label that names a node's group.
    pub fn node_group_label(&self) -> &str {
        &self.node_group_label
    }
}

impl Provider for Exec {
    fn node_groups(&self) -> NodeGroupSelector {
        NodeGroupSelector {
            label: self.node_group_label.clone(),
            groups: self.groups.iter().map(|g| (g.clone(), g.clone())).collect(),
        }
    }

    async fn observe(&self, record: &Record, now: Timestamp) -> Result<ProviderObservation, Error> {
        Ok(ProviderObservation {
            control_plane_requested: self.fresh(record.control_plane.as_ref(), now),
            node_groups: self
                .groups
                .iter()
                .map(|g| {
                    let progress = GroupProgress {
                        requested: self.fresh(record.node_groups.get(g), now),
                        ..GroupProgress::default()
                    };
                    (g.clone(), progress)
                })
                .collect(),
            busy: self.busy().await?,
            nodes: None,
        })
    }

    async fn upgrade_control_plane(&self, to: KubeVersion) -> Result<(), Error> {
        let env = [(exec_env::TARGET_VERSION, to.to_string())].into();
        self.run("upgradeControlPlane", &self.spec.upgrade_control_plane, env)
            .await
    }

    async fn upgrade_node_group(
        &self,
        group: &str,
        to: KubeVersion,
        limits: RolloutLimits,
    ) -> Result<(), Error> {
        let env = [
            (exec_env::TARGET_VERSION, to.to_string()),
            (exec_env::NODE_GROUP, group.to_string()),
            (
                exec_env::MAX_UNAVAILABLE,
                limits.max_unavailable.to_string(),
            ),
            (
                exec_env::DRAIN_TIMEOUT_SECONDS,
                limits.drain_timeout.as_secs().to_string(),
            ),
        ]
        .into();
        self.run("upgradeNodeGroup", &self.spec.upgrade_node_group, env)
            .await
    }
}
