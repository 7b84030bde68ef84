//! The observed state of a cluster, as the planner needs it.

use std::collections::BTreeMap;

use tidemark_schema::KubeVersion;

/// Everything one pass observed. Built by `observe` from the API server and the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The API server's version (`/version`).
    pub control_plane: KubeVersion,
    /// The version the provider has been asked for and is working toward, if it is not yet
    /// reached (`KubeadmControlPlane.spec.version`, or an `exec` request in progress).
    pub control_plane_requested: Option<KubeVersion>,
    /// Node groups by name (nodes matched by the provider's node-group label).
    pub node_groups: BTreeMap<String, NodeGroupObservation>,
    /// Nodes that are not Ready, by name (any group).
    pub nodes_not_ready: Vec<String>,
    /// Whether `/readyz` answered ok.
    pub api_healthy: bool,
    /// `tidemark.dev/paused: "true"` on the status object: a local veto.
    pub paused_annotation: bool,
    /// What the `exec` provider's status command reports while a request is in progress
    /// (it exits non-zero), if it has one and says so.
    pub provider_busy: Option<String>,
    /// The versions the previous pass declared (from the status annotations), to tell a
    /// lowered declaration (a downgrade: refused) from a version raised outside tidemark
    /// (a foreign change: reported, never moved back down).
    pub previous_desired: Option<PreviousDesired>,
    /// What earlier passes recorded about each component (`tidemark.dev/components`),
    /// including components no longer declared (they are pruned).
    pub components: BTreeMap<String, ComponentRecord>,
    /// Whether applied components are due for a drift check (every `--drift-interval`).
    pub drift_due: bool,
}

/// How a component is doing, as recorded in `tidemark.dev/components`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ComponentHealth {
    /// Never applied, or not yet.
    #[default]
    Pending,
    /// Applied; its workloads are rolling out.
    Progressing,
    /// Applied and every workload is rolled out.
    Healthy,
    /// The render or the apply failed, or it did not become healthy within its timeout.
    Failed,
}

impl std::fmt::Display for ComponentHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ComponentHealth::Pending => "Pending",
            ComponentHealth::Progressing => "Progressing",
            ComponentHealth::Healthy => "Healthy",
            ComponentHealth::Failed => "Failed",
        })
    }
}

impl ComponentRecord {
    /// `component NAME HEALTH[: message]`, as status messages and Events say it.
    pub fn describe(&self, name: &str) -> String {
        match &self.message {
            Some(m) => format!("component {name} {}: {m}", self.health),
            None => format!("component {name} {}", self.health),
        }
    }
}

/// One component's entry in `tidemark.dev/components` (compact JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentRecord {
    /// The chart, as people read it (`metrics-lite 0.2.0`).
    #[serde(default)]
    pub chart: String,
    /// Health of the last apply.
    #[serde(default)]
    pub health: ComponentHealth,
    /// What is wrong or what happens (the failing object and reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// sha256 of the inputs (chart, version, merged values) of the last complete apply:
    /// equal to the desired inputs means no `helm` call and no apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// sha256 of the inputs of the last attempt, when it failed (retried next pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_inputs: Option<String>,
    /// sha256 of the rendered output of the last complete apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered: Option<String>,
    /// Objects applied.
    #[serde(default)]
    pub objects: u32,
    /// When the last complete apply happened (the health timeout counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
}

/// Declared versions recorded by the previous pass.
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
    pub requested_at: Option<jiff::Timestamp>,
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
