//! `kind: Cluster` (`clusters/<name>.yaml`): what one cluster should run.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::component::Component;
use crate::duration::Duration;
use crate::meta::ObjectMeta;
use crate::version::KubeVersion;
use crate::window::MaintenanceWindow;

/// Kubernetes' skew policy: a kubelet may be at most three minors older than the API server.
pub const UPSTREAM_KUBELET_SKEW: u32 = 3;

/// Node label that Cluster API puts on the nodes of a MachineDeployment.
pub const CLUSTERAPI_NODE_GROUP_LABEL: &str = "cluster.x-k8s.io/deployment-name";

/// Node label used by the `exec` provider unless the manifest names another.
pub const DEFAULT_NODE_GROUP_LABEL: &str = "tidemark.dev/node-group";

/// One cluster of the fleet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// Always `tidemark.dev/v1alpha1`.
    #[schemars(extend("const" = "tidemark.dev/v1alpha1"))]
    pub api_version: String,
    /// Always `Cluster`.
    #[schemars(extend("const" = "Cluster"))]
    pub kind: String,
    /// Name and labels; the agent finds its manifest by these labels, its wave is the
    /// `tidemark.dev/wave` label.
    pub metadata: ObjectMeta,
    /// The desired state.
    pub spec: ClusterSpec,
}

/// The desired state of a cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// How the control plane and node groups are changed.
    pub provider: Provider,
    /// The control plane.
    pub control_plane: ControlPlane,
    /// Node groups; none is above the control plane.
    #[serde(default)]
    pub node_groups: Vec<NodeGroup>,
    /// Names of `ComponentSet`s whose components this cluster runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub component_sets: Vec<String>,
    /// Components of this cluster; one named like a component of a set replaces it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Component>,
    /// Per-component values for components that come from component sets: merged after
    /// the set's own values files and values, in the order valuesFiles then values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub component_values: BTreeMap<String, ComponentValues>,
    /// When control-plane and node-group steps may run (components are not restricted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,
    /// Stop all changes to this cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// A cluster's own values for a component of a component set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentValues {
    /// Values files in the fleet repo, merged after the set's values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Inline values, merged last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The control plane's desired version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlane {
    /// Kubernetes version, e.g. `1.30.4` or `1.30`.
    pub version: KubeVersion,
}

/// A group of nodes that is upgraded together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeGroup {
    /// Group name, as the provider and the node-group label know it.
    pub name: String,
    /// Kubelet version; never above the control plane's.
    pub version: KubeVersion,
    /// How many nodes may be unavailable at once while the group rolls. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
    /// How long a node's drain may take before the step stops and reports. Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<Duration>,
    /// Move this group along with every control-plane minor (for groups that autoscale or
    /// self-repair: new nodes join only at the control plane's minor).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_control_plane: bool,
    /// How many nodes may be added above the group's size while it rolls (Cluster API:
    /// `maxSurge`). Left as the provider has it when not declared: bare-metal pools may have
    /// no spare hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<u32>,
    /// What happens when a node's drain outlasts `drainTimeout`: `report` (the default: the
    /// rollout stops and the status names the pod and the PodDisruptionBudget holding it) or
    /// `force` (Cluster API's `nodeDrainTimeout`: the machine is deleted anyway, pods and
    /// all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_action: Option<DrainTimeoutAction>,
    /// Who drains the group's nodes: `provider` (the default: Cluster API, managed node
    /// groups) or `tidemark` (self-managed groups: tidemark cordons, evicts through the
    /// Eviction API and runs the exec provider's `replaceNode` command node by node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainBy>,
    /// With `drain: tidemark`: evict pods that use local storage (`emptyDir`), whose data
    /// is lost with the node (`kubectl drain --delete-emptydir-data`). Without it such a pod
    /// holds the drain and the status names it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_empty_dir_data: bool,
}

/// What happens when a node's drain outlasts `drainTimeout`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DrainTimeoutAction {
    /// Stop and report (never force).
    #[default]
    Report,
    /// Let the provider delete the node anyway.
    Force,
}

/// Who drains a node group's nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DrainBy {
    /// The provider (Cluster API, managed node groups).
    #[default]
    Provider,
    /// tidemark itself, with the exec provider's `replaceNode` command.
    Tidemark,
}

/// How the control plane and node groups are upgraded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Provider {
    /// Cluster API: tidemark sets `KubeadmControlPlane.spec.version` and
    /// `MachineDeployment.spec.template.spec.version`.
    #[serde(rename = "clusterapi")]
    ClusterApi(ClusterApiProvider),
    /// Commands run by the agent, given the target in environment variables.
    Exec(ExecProvider),
}

/// Settings of the `clusterapi` provider.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterApiProvider {
    /// Namespace of the Cluster API objects.
    pub namespace: String,
    /// Name of the `KubeadmControlPlane`; default the cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<String>,
    /// `MachineDeployment` name per node group; default `<cluster>-<group>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub machine_deployments: BTreeMap<String, String>,
    /// Name of the Cluster API `Cluster`; default the cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// A Secret in the agent's namespace holding the kubeconfig of the management cluster
    /// (key `value`, as Cluster API writes them). Without this and `kubeconfigFile` the
    /// cluster is self-managed: its Cluster API objects are in the cluster itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret: Option<String>,
    /// A kubeconfig file of the management cluster, as mounted in the agent's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_file: Option<String>,
    /// The cluster is built from a ClusterClass: tidemark moves `Cluster.spec.topology.version`
    /// one minor at a time and the topology controller rolls the control plane and every
    /// MachineDeployment (node groups then follow the control plane's version).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub topology: bool,
    /// Node label naming a node's group, when Cluster API syncs one from the Machines (a
    /// label under `node.cluster.x-k8s.io/`, say). Default: nodes belong to the group of the
    /// Machine whose `status.nodeRef` names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_group_label: Option<String>,
    /// How many minors a kubelet may lag the API server (0 to 3). Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_kubelet_skew: Option<u32>,
}

/// Settings of the `exec` provider. Commands are argv lists, never run through a shell;
/// they get `TIDEMARK_CLUSTER`, `TIDEMARK_TARGET_VERSION` and, for node groups,
/// `TIDEMARK_NODE_GROUP`, `TIDEMARK_MAX_UNAVAILABLE` and `TIDEMARK_DRAIN_TIMEOUT_SECONDS`
/// in their environment (and `KUBECONFIG` when the agent was given one), and must be
/// idempotent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecProvider {
    /// Upgrades the control plane to `TIDEMARK_TARGET_VERSION`.
    pub upgrade_control_plane: Vec<String>,
    /// Upgrades node group `TIDEMARK_NODE_GROUP` to `TIDEMARK_TARGET_VERSION`.
    pub upgrade_node_group: Vec<String>,
    /// Optional: exits 0 when no request is in progress; otherwise the agent waits and
    /// reports the first line of its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Vec<String>>,
    /// Replaces one drained node (name in `TIDEMARK_NODE_NAME`) with a new one at
    /// `TIDEMARK_TARGET_VERSION`: for node groups with `drain: tidemark`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_node: Option<Vec<String>>,
    /// Extra environment for the commands (no secrets: this is git).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// How long one command may run. Default 30m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Node label naming a node's group. Default `tidemark.dev/node-group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_group_label: Option<String>,
    /// How many minors a kubelet may lag the API server (0 to 3). Default 3; an EKS
    /// managed node group needs 0 (it must match before the next control-plane hop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_kubelet_skew: Option<u32>,
}

impl Provider {
    /// The allowed kubelet lag, in minors.
    pub fn max_kubelet_skew(&self) -> u32 {
        match self {
            Provider::ClusterApi(p) => p.max_kubelet_skew,
            Provider::Exec(p) => p.max_kubelet_skew,
        }
        .unwrap_or(UPSTREAM_KUBELET_SKEW)
    }

    /// The node label that names a node's group.
    pub fn node_group_label(&self) -> &str {
        match self {
            Provider::ClusterApi(p) => p
                .node_group_label
                .as_deref()
                .unwrap_or(CLUSTERAPI_NODE_GROUP_LABEL),
            Provider::Exec(p) => p
                .node_group_label
                .as_deref()
                .unwrap_or(DEFAULT_NODE_GROUP_LABEL),
        }
    }

    /// The provider's kind as written in manifests.
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::ClusterApi(_) => "clusterapi",
            Provider::Exec(_) => "exec",
        }
    }
}

impl Cluster {
    /// The cluster's wave label, if any.
    pub fn wave(&self) -> Option<&str> {
        self.metadata
            .labels
            .get(crate::meta::WAVE_LABEL)
            .map(String::as_str)
    }
}
