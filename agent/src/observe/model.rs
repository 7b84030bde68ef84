//! The observed state of a cluster, as the planner needs it: domain types with versions
//! parsed once, never Kubernetes API types.

use std::collections::BTreeMap;

use jiff::Timestamp;
use tidemark_schema::KubeVersion;

pub use crate::status::{ComponentHealth, ComponentRecord};

/// Everything one pass observed: built by `observe` from the API server, the provider and
/// the status record, complete before planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The API server's version (`/version`).
    pub control_plane: KubeVersion,
    /// The version the provider has been asked for and is working toward, if it is not yet
    /// reached (`KubeadmControlPlane.spec.version`, or an `exec` request in progress).
    pub control_plane_requested: Option<KubeVersion>,
    /// When tidemark requested it (from the status record), if it did.
    pub control_plane_requested_at: Option<Timestamp>,
    /// Node groups by name (nodes matched by the provider's node-group label).
    pub node_groups: BTreeMap<String, NodeGroupObservation>,
    /// Nodes that are not Ready, by name (any group).
    pub nodes_not_ready: Vec<String>,
    /// The node group of each node matched to one, by node name.
    pub node_group_of: BTreeMap<String, String>,
    /// Whether `/readyz` answered ok.
    pub api_healthy: bool,
    /// `tidemark.dev/paused: "true"` on the status object: a local veto.
    pub paused_annotation: bool,
    /// What the `exec` provider's status command reports while a request is in progress
    /// (it exits non-zero), if it has one and says so.
    pub provider_busy: Option<String>,
    /// The versions tidemark last accepted (from the status record), to tell a lowered
    /// declaration (a downgrade: refused) from a version raised outside tidemark (a foreign
    /// change: reported, never moved back down).
    pub previous_desired: Option<PreviousDesired>,
    /// What earlier passes recorded about each component (`tidemark.dev/components`),
    /// including components no longer declared (they are pruned).
    pub components: BTreeMap<String, ComponentRecord>,
    /// Whether applied components are due for a drift check (every `--drift-interval`).
    pub drift_due: bool,
    /// What charts are rendered for: the control plane's version and the served APIs.
    pub capabilities: Capabilities,
    /// Facts for the pre-flight checks of the next control-plane hop or node-group
    /// rollout, gathered only when such a step is next (`preflight::gather`); `None`
    /// when not gathered.
    pub preflight: Preflight,
}

/// Facts the planner judges before a disruptive step. Each is `None` when it was not
/// gathered, `Some(Err(why))` when gathering it failed (the step then waits).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preflight {
    /// The control-plane version the facts of the next hop were gathered for.
    pub hop: Option<KubeVersion>,
    /// The API server's `apiserver_requested_deprecated_apis` series: APIs clients called
    /// that are deprecated.
    pub deprecated_requests: Option<Result<Vec<DeprecatedRequest>, String>>,
    /// What the desired commit's components render for the hop's version: their objects'
    /// APIs, or why a component does not render for it.
    pub rendered_for_hop: Option<Result<Vec<RenderedApi>, String>>,
    /// PodDisruptionBudgets whose pods run on nodes of a node group.
    pub disruption_budgets: Option<Result<Vec<DisruptionBudget>, String>>,
}

/// One series of `apiserver_requested_deprecated_apis`: a deprecated API some client
/// requested since the API server started.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeprecatedRequest {
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource, or `""`.
    pub subresource: String,
    /// The release that removes it (`1.32`), if announced.
    pub removed_release: Option<KubeVersion>,
}

/// One rendered object's API, or a render that failed, of a component rendered for the
/// next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderedApi {
    /// An object.
    Object {
        /// The component.
        component: String,
        /// `Kind/ns/name`.
        object: String,
        /// Its `apiVersion`.
        api_version: String,
        /// Its kind.
        kind: String,
    },
    /// The component does not render for the hop's version.
    Failed {
        /// The component.
        component: String,
        /// Why.
        message: String,
    },
}

/// A PodDisruptionBudget, the pods it selects and the node groups they run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisruptionBudget {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.maxUnavailable` (`1`, `25%`), if set.
    pub max_unavailable: Option<String>,
    /// `spec.minAvailable`, if set.
    pub min_available: Option<String>,
    /// Pods it selects (not terminating).
    pub pods: u32,
    /// Of those, pods that are Ready.
    pub healthy: u32,
    /// Node groups whose nodes run its pods.
    pub node_groups: std::collections::BTreeSet<String>,
}

/// What the cluster offers a chart (helm's `.Capabilities`): the Kubernetes version and the
/// API group/versions it serves. Part of a component's inputs: when it changes (a
/// control-plane minor, a new API), components are rendered again, and applied if their
/// render changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The API server's version.
    pub kube_version: Option<KubeVersion>,
    /// Served group/versions (`v1`, `apps/v1`, ...), from the API group list.
    pub group_versions: std::collections::BTreeSet<String>,
}

impl Capabilities {
    /// sha256 of the control plane's minor and the served group/versions. (A patch release
    /// does not re-render: charts gate on minors. Kinds added to a served group/version do
    /// not either: finding them needs a discovery request per group, too many for every
    /// pass.)
    pub fn digest(&self) -> String {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        if let Some(v) = self.kube_version {
            h.update(format!("kube {}.{}\n", v.major, v.minor));
        }
        for gv in &self.group_versions {
            h.update(gv.as_bytes());
            h.update(b"\n");
        }
        format!("sha256:{:x}", h.finalize())
    }
}

/// Declarations tidemark accepted on earlier passes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreviousDesired {
    /// Declared control-plane version.
    pub control_plane: Option<KubeVersion>,
    /// Declared node-group versions.
    pub node_groups: BTreeMap<String, KubeVersion>,
}

/// One node group's nodes and provider state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeGroupObservation {
    /// Lowest kubelet version among its nodes (`None` without nodes).
    pub min_kubelet: Option<KubeVersion>,
    /// Highest kubelet version among its nodes.
    pub max_kubelet: Option<KubeVersion>,
    /// Number of nodes.
    pub nodes: u32,
    /// Nodes that are Ready.
    pub ready: u32,
    /// Nodes cordoned (`spec.unschedulable`).
    pub cordoned: u32,
    /// The version the provider is set to for this group
    /// (`MachineDeployment.spec.template.spec.version`, or an `exec` request in progress).
    pub requested: Option<KubeVersion>,
    /// Whether the provider reports a rollout in progress.
    pub provider_rolling: bool,
    /// What the provider says holds the rollout (a drain blocked by a
    /// PodDisruptionBudget, a rejected version), if anything.
    pub provider_problem: Option<ProviderProblem>,
    /// When tidemark requested the version the group is rolling to (from the status).
    pub requested_at: Option<Timestamp>,
}

/// A problem the provider reports for a node group's rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderProblem {
    /// Whether it will not resolve by waiting (a rejected version): a person must act.
    pub permanent: bool,
    /// The provider's words, e.g. "drain of node x blocked by PodDisruptionBudget y".
    pub message: String,
}

impl NodeGroupObservation {
    /// The version the group counts as for skew: its oldest kubelet, or, without nodes,
    /// what the provider is set to.
    pub fn effective_version(&self) -> Option<KubeVersion> {
        self.min_kubelet.or(self.requested)
    }

    /// Whether the group is in the middle of a rollout: mixed kubelet versions, a provider
    /// target not yet reached, cordoned nodes, or the provider says so.
    pub fn is_rolling(&self) -> bool {
        self.provider_rolling
            || self.cordoned > 0
            || self.min_kubelet != self.max_kubelet
            || matches!((self.requested, self.min_kubelet), (Some(r), Some(m)) if r.is_newer_than(m))
    }
}
