//! Every label, annotation and name tidemark writes or reads in a cluster, in one place.

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
    /// `"true"` stops all changes: a local veto set by a person.
    pub const PAUSED: &str = "tidemark.dev/paused";
}

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
