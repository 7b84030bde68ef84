//! Every label, annotation, field manager, Event reason and object name tidemark writes or
//! reads in a cluster, in one place.

/// Annotations on the status object (default: the Namespace the agent runs in).
pub mod annotations {
    /// The cluster's manifest name.
    pub const CLUSTER: &str = "tidemark.dev/cluster";
    /// Its wave.
    pub const WAVE: &str = "tidemark.dev/wave";
    /// Commit of the desired state.
    pub const DESIRED_REVISION: &str = "tidemark.dev/desired-revision";
    /// Last commit fully converged.
    pub const APPLIED_REVISION: &str = "tidemark.dev/applied-revision";
    /// `Converged`, `Progressing`, `Waiting`, `Blocked`, `Failed`, `Paused`.
    pub const PHASE: &str = "tidemark.dev/phase";
    /// What happens or what blocks.
    pub const MESSAGE: &str = "tidemark.dev/message";
    /// Control plane, observed and desired (compact JSON).
    pub const CONTROL_PLANE: &str = "tidemark.dev/control-plane";
    /// Node groups, observed and desired (compact JSON).
    pub const NODE_GROUPS: &str = "tidemark.dev/node-groups";
    /// Components (compact JSON).
    pub const COMPONENTS: &str = "tidemark.dev/components";
    /// When applied components were last compared with their render (drift check).
    pub const DRIFT_CHECKED: &str = "tidemark.dev/drift-checked";
    /// Time of the last pass.
    pub const LAST_PASS: &str = "tidemark.dev/last-pass";
    /// Since when the phase has been `Converged` at the applied revision.
    pub const CONVERGED_SINCE: &str = "tidemark.dev/converged-since";
    /// `"true"` stops all changes: a local veto set by a person, never written by tidemark.
    pub const PAUSED: &str = "tidemark.dev/paused";
    /// Prefix of every annotation tidemark reads on the status object.
    pub const PREFIX: &str = "tidemark.dev/";
}

/// Annotations tidemark puts on Nodes it drains itself (`drain: tidemark`): the state of a
/// replacement lives on the node, so a restarted agent continues where it stopped.
pub mod node_annotations {
    /// The version a cordoned node is being replaced for.
    pub const DRAIN_TARGET: &str = "tidemark.dev/drain-target";
    /// When tidemark cordoned it and began evicting (the drain timeout counts from here).
    pub const DRAIN_STARTED: &str = "tidemark.dev/drain-started";
    /// When tidemark ran the `replaceNode` command for it (never run twice for one node).
    pub const REPLACE_REQUESTED: &str = "tidemark.dev/replace-requested";
}

/// Labels tidemark puts on objects it applies.
pub mod labels {
    /// The component an applied object belongs to; prune and health select by it.
    pub const COMPONENT: &str = "tidemark.dev/component";
}

/// Reasons of the Kubernetes Events tidemark records (phase changes use the phase's name).
pub mod reasons {
    /// A component became healthy.
    pub const COMPONENT_HEALTHY: &str = "ComponentHealthy";
    /// A component is rolling out.
    pub const COMPONENT_PROGRESSING: &str = "ComponentProgressing";
    /// A component failed to render, apply or become healthy.
    pub const COMPONENT_FAILED: &str = "ComponentFailed";
    /// The action of every Event: a pass converging the cluster.
    pub const ACTION: &str = "Converge";
}

/// The field manager of every write tidemark makes (server-side apply).
pub const FIELD_MANAGER: &str = "tidemark";

/// The name the agent reports in Events (`reportingController`).
pub const EVENT_REPORTER: &str = "tidemark";

/// Name of the leader-election Lease in the status namespace.
pub const LEASE_NAME: &str = "tidemark";

/// Default namespace of the agent and of the status object.
pub const DEFAULT_STATUS_NAMESPACE: &str = "tidemark-system";

/// Cluster API kinds tidemark reads and patches.
pub mod capi {
    /// `KubeadmControlPlane` group.
    pub const CONTROL_PLANE_GROUP: &str = "controlplane.cluster.x-k8s.io";
    /// `MachineDeployment` group.
    pub const CLUSTER_GROUP: &str = "cluster.x-k8s.io";
    /// Version of both.
    pub const VERSION: &str = "v1beta1";
}

/// Environment variables given to `exec` provider commands.
pub mod exec_env {
    /// The version asked for.
    pub const TARGET_VERSION: &str = "TIDEMARK_TARGET_VERSION";
    /// The node group, for node-group commands.
    pub const NODE_GROUP: &str = "TIDEMARK_NODE_GROUP";
    /// Nodes of the group that may be unavailable at once.
    pub const MAX_UNAVAILABLE: &str = "TIDEMARK_MAX_UNAVAILABLE";
    /// Longest drain of one node, in seconds.
    pub const DRAIN_TIMEOUT_SECONDS: &str = "TIDEMARK_DRAIN_TIMEOUT_SECONDS";
    /// The cluster's manifest name.
    pub const CLUSTER: &str = "TIDEMARK_CLUSTER";
    /// The node to replace (`replaceNode`).
    pub const NODE_NAME: &str = "TIDEMARK_NODE_NAME";
    /// Nodes that may be added while a group rolls, when declared.
    pub const MAX_SURGE: &str = "TIDEMARK_MAX_SURGE";
}

/// Refs and files tidemark writes in the fleet repo itself.
pub mod refs {
    /// Each agent's status record with `--report-ref`: `refs/tidemark/status/<cluster>`.
    pub const STATUS_PREFIX: &str = "refs/tidemark/status/";
    /// The file holding the record in each status commit.
    pub const STATUS_FILE: &str = "status.json";
    /// The promotion log: one commit per promotion, each on the one before.
    pub const PROMOTIONS: &str = "refs/tidemark/promotions";
    /// The file holding a promotion in each commit of the log.
    pub const PROMOTION_FILE: &str = "promotion.json";
}
