//! How the control plane and node groups are changed, and what the provider itself knows of
//! a change in progress: one trait, one implementation per provider kind.
//!
//! Versions are always observed from Kubernetes itself (`observe`): the API server's
//! `/version` and the kubelets of the nodes. A provider adds what only it knows: the
//! version it has been asked for and is working toward, whether it is rolling, and what
//! holds a rollout ([`Provider::observe`]).

mod clusterapi;
mod exec;

use std::collections::BTreeMap;

use jiff::Timestamp;
use tidemark_schema::KubeVersion;
use tidemark_schema::cluster::Provider as ProviderSpec;
use tidemark_schema::resolve::DesiredState;

use crate::observe::model::ProviderProblem;
use crate::status::Record;

pub use clusterapi::ClusterApi;
pub use exec::Exec;

/// Errors of observing or actuating through a provider.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes request failed.
    #[error(transparent)]
    Api(#[from] crate::k8s::ApiError),
    /// The provider needs an exact version and only a minor is known.
    #[error("no patch release of {0} is known: list one in fleet.yaml spec.kubernetesVersions")]
    NeedsPatch(KubeVersion),
    /// An `exec` command failed, could not start or timed out.
    #[error("provider command failed")]
    Command(#[source] crate::process::Error),
    /// An `exec` command is configured empty.
    #[error("the provider's `{0}` command is empty")]
    EmptyCommand(&'static str),
    /// The management cluster (where the Cluster API objects are) cannot be reached.
    #[error("failed to use the management cluster's kubeconfig from {from}: {problem}")]
    Management {
        /// Where the kubeconfig comes from (a Secret, a file).
        from: String,
        /// What is wrong (never the kubeconfig's content).
        problem: String,
    },
}

impl Error {
    /// Whether a person must act (as opposed to retrying later).
    pub fn needs_person(&self) -> bool {
        matches!(self, Error::NeedsPatch(_) | Error::EmptyCommand(_))
    }
}

/// What the provider reports of changes in progress, per pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderObservation {
    /// The control-plane version the provider is set to or was asked for (it may be the
    /// one running already; `observe` keeps it only while it is ahead).
    pub control_plane_requested: Option<KubeVersion>,
    /// Per node group: what the provider is set to, whether it rolls, what holds it.
    pub node_groups: BTreeMap<String, GroupProgress>,
    /// A request the provider reports in progress (the `exec` status command), in its words.
    pub busy: Option<String>,
    /// Node name -> node group, when the provider knows it (Cluster API: the Machines'
    /// `nodeRef`); else nodes are matched by [`Provider::node_groups`]' label.
    pub nodes: Option<BTreeMap<String, String>>,
}

/// A node group as the provider sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupProgress {
    /// The version it is set to, or was asked for.
    pub requested: Option<KubeVersion>,
    /// Whether the provider reports a rollout in progress.
    pub rolling: bool,
    /// What holds the rollout, if anything.
    pub problem: Option<ProviderProblem>,
}

/// How nodes are matched to node groups: the value of one node label, per group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeGroupSelector {
    /// The label (`cluster.x-k8s.io/deployment-name`, `eks.amazonaws.com/nodegroup`, ...).
    pub label: String,
    /// Label value -> node group name.
    pub groups: BTreeMap<String, String>,
}

/// Observation and actuation of one provider kind. Requests are idempotent: asking again
/// for a target already requested changes nothing.
#[allow(async_fn_in_trait)]
pub trait Provider {
    /// How this provider's nodes are matched to node groups.
    fn node_groups(&self) -> NodeGroupSelector;
    /// What the provider knows of changes in progress. `record` holds the requests earlier
    /// passes made (the `exec` provider follows those instead of repeating them).
    async fn observe(&self, record: &Record, now: Timestamp) -> Result<ProviderObservation, Error>;
    /// Asks for the control plane at `to`.
    async fn upgrade_control_plane(&self, to: KubeVersion) -> Result<(), Error>;
    /// Asks for node group `group` at `to`.
    async fn upgrade_node_group(
        &self,
        group: &str,
        to: KubeVersion,
        limits: RolloutLimits,
    ) -> Result<(), Error>;
}

/// How a node group may roll: passed to the provider that drains and replaces nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolloutLimits {
    /// Nodes that may be unavailable at once.
    pub max_unavailable: u32,
    /// How long one node's drain may take.
    pub drain_timeout: std::time::Duration,
}

/// The provider of one cluster, as its manifest declares it.
pub enum AnyProvider {
    /// Cluster API.
    ClusterApi(ClusterApi),
    /// Commands.
    Exec(Exec),
}

impl AnyProvider {
    /// The provider declared in the manifest. `kubeconfig` is handed to `exec` commands
    /// (as `KUBECONFIG`) so they act on the same cluster as the agent; a Cluster API
    /// management cluster's kubeconfig Secret is read from `agent_namespace`.
    pub async fn for_cluster(
        client: &kube::Client,
        agent_namespace: &str,
        desired: &DesiredState,
        kubeconfig: Option<&std::path::Path>,
    ) -> Result<Self, Error> {
        Ok(match &desired.provider {
            ProviderSpec::ClusterApi(spec) => {
                let management =
                    ClusterApi::management_client(client, agent_namespace, spec).await?;
                AnyProvider::ClusterApi(ClusterApi::new(management, desired, spec))
            }
            ProviderSpec::Exec(spec) => AnyProvider::Exec(Exec::new(desired, spec, kubeconfig)),
        })
    }
}

impl Provider for AnyProvider {
    fn node_groups(&self) -> NodeGroupSelector {
        match self {
            AnyProvider::ClusterApi(p) => p.node_groups(),
            AnyProvider::Exec(p) => p.node_groups(),
        }
    }

    async fn observe(&self, record: &Record, now: Timestamp) -> Result<ProviderObservation, Error> {
        match self {
            AnyProvider::ClusterApi(p) => p.observe(record, now).await,
            AnyProvider::Exec(p) => p.observe(record, now).await,
        }
    }

    async fn upgrade_control_plane(&self, to: KubeVersion) -> Result<(), Error> {
        match self {
            AnyProvider::ClusterApi(p) => p.upgrade_control_plane(to).await,
            AnyProvider::Exec(p) => p.upgrade_control_plane(to).await,
        }
    }

    async fn upgrade_node_group(
        &self,
        group: &str,
        to: KubeVersion,
        limits: RolloutLimits,
    ) -> Result<(), Error> {
        match self {
            AnyProvider::ClusterApi(p) => p.upgrade_node_group(group, to, limits).await,
            AnyProvider::Exec(p) => p.upgrade_node_group(group, to, limits).await,
        }
    }
}
