//! How the control plane and node groups are changed: one trait, one implementation per
//! provider kind. Observation always comes from Kubernetes itself (`observe`); providers
//! only actuate.

mod clusterapi;
mod exec;

use tidemark_schema::KubeVersion;
use tidemark_schema::cluster::Provider as ProviderSpec;
use tidemark_schema::resolve::DesiredState;

pub use clusterapi::ClusterApi;
pub use exec::Exec;

/// Errors of actuation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes request failed.
    #[error("failed to {action}")]
    Api {
        /// What was attempted.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The provider needs an exact version and only a minor is known.
    #[error("no patch release of {0} is known: list one in fleet.yaml spec.kubernetesVersions")]
    NeedsPatch(KubeVersion),
    /// An `exec` command failed or timed out.
    #[error("{0}")]
    Command(String),
}

impl Error {
    /// Whether a person must act (as opposed to retrying later).
    pub fn needs_person(&self) -> bool {
        matches!(self, Error::NeedsPatch(_))
    }
}

/// Actuation of one provider kind. Requests are idempotent: asking again for a target
/// already requested changes nothing.
#[allow(async_fn_in_trait)]
pub trait Provider {
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

/// The provider of `desired`.
pub enum AnyProvider {
    /// Cluster API.
    ClusterApi(ClusterApi),
    /// Commands.
    Exec(Exec),
}

impl AnyProvider {
    /// The provider declared in the manifest.
    pub fn for_cluster(
        client: &kube::Client,
        desired: &DesiredState,
        kubeconfig: Option<&std::path::Path>,
    ) -> Self {
        match &desired.provider {
            ProviderSpec::ClusterApi(spec) => {
                AnyProvider::ClusterApi(ClusterApi::new(client.clone(), desired, spec))
            }
            ProviderSpec::Exec(spec) => AnyProvider::Exec(Exec::new(desired, spec, kubeconfig)),
        }
    }
}

impl Provider for AnyProvider {
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
