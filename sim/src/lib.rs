//! `tidemark-sim`: a simulated Kubernetes cluster that serves the real Kubernetes HTTP API over
//! HTTPS on 127.0.0.1, so that unmodified clients (`kube`, `kubectl`) can be tested against it.
//!
//! - `api`: HTTP routing of the Kubernetes API (discovery, CRUD, watch, patch, apply, eviction,
//!   Table output, a minimal OpenAPI).
//! - `store`, `registry`, `selector`, `patch`, `apply`, `watch`, `validation`: the generic API
//!   machinery; `defaults` (defaulting, admission, Go's encoding of stored objects),
//!   `quantity` (canonical quantities), `schema` (types and unknown fields of built-in kinds,
//!   CRD structural schemas), `events` (one Event store for both Event APIs), `yaml` (YAML
//!   1.1 bodies).
//! - `controllers`: simulated cluster behaviour (nodes, workloads, Cluster API, eviction/PDB).
//! - `faults`: injected latency, errors, conflicts, dropped watches, outages (syntax there).
//! - `ctl`: the `/sim/v1` control interface (the simulated "cloud") and its CLI client.
//! - `tls`, `kubeconfig`, `server`: serving and connecting.
//!
//! It depends on nothing in the agent; the agent wires `tidemark sim` and `tidemark demo` to
//! [`Sim`] and [`run_until_signal`], and `tidemark sim ctl` to [`ctl`].
//!
//! # Fidelity
//!
//! The sim must never be more lenient than a real API server: the corpus recorded from one
//! (`../shared/fidelity/`) is replayed against it by the test `sim::fidelity`, and
//! `sim/FIDELITY.md` lists every known difference, fixed or not modelled and why. Where the
//! recorded v1.24 and the v1.28 the sim reports differ, the sim follows 1.28.
//!
//! # What a cluster looks like
//!
//! - `/version` reports the control plane (`v1.28.9` by default); namespaces `default`,
//!   `kube-system`, `kube-public`, `kube-node-lease`, `tidemark-system` and, where the
//!   Cluster API objects are, their namespace (`capi-system`) exist, each with the
//!   `kube-root-ca.crt` ConfigMap and the `default` ServiceAccount (made for every new
//!   namespace too). Every built-in group version has a local APIService;
//!   `SimConfig::unavailable_api_services` adds aggregated APIs that never become available
//!   (their group-version answers 503 `service unavailable`).
//! - Objects look as a real server stores them: defaults (pod templates, Services,
//!   workloads), admission (a Pod's service account token volume, tolerations, priority),
//!   canonical quantities (`0.5` -> `500m`), unknown fields dropped, Go's zero values
//!   (`status: {}`, `creationTimestamp: null` in templates), `metadata.generation` only on
//!   kinds with a spec/status split, `managedFields` owned per field. List items of built-in
//!   kinds carry no `apiVersion`/`kind`. A new CRD is Established a moment after it is
//!   created; custom resources are pruned, defaulted and validated with its schema.
//! - Built-in group/versions follow the control plane's minor where Kubernetes changed them
//!   (`flowcontrol.apiserver.k8s.io`: `v1` from 1.29, `v1beta3` until 1.32, `v1beta2` until
//!   1.29). A request to a deprecated version gets a `Warning` header and shows on `/metrics`
//!   as `apiserver_requested_deprecated_apis`, as kube-apiserver does (`deprecation`).
//! - `SimConfig::pods` ([`PodLifecycle`]): pods run (the default) or stay `Pending` (no
//!   scheduler, no kubelet; no workload becomes available, as when the corpus was recorded).
//! - Nodes are named `<cluster>-<group>-xxxxx`, each the Node of one Cluster API Machine (of
//!   the same name), labelled `tidemark.dev/node-group=<group>` (the kubelet's
//!   `--node-labels`; `exec` node groups use it) and annotated as Cluster API annotates them
//!   (`cluster.x-k8s.io/machine`, `owner-kind`, `owner-name`, `cluster-name`,
//!   `cluster-namespace`). They carry no `cluster.x-k8s.io/deployment-name` label: a Node
//!   belongs to a MachineDeployment through the Machine whose `status.nodeRef` names it.
//! - Images whose name contains `fail` never become ready (containers wait with reason
//!   `CrashLoopBackOff`; Jobs fail with `BackoffLimitExceeded`). A Deployment without progress
//!   for `progressDeadlineSeconds` (scaled by speed) gets `Progressing=False`
//!   (`ProgressDeadlineExceeded`).
//! - Deletes honour `propagationPolicy`: `Background` (the default: dependents are collected a
//!   few ticks later), `Foreground` (the owner gets `deletionTimestamp` and the
//!   `foregroundDeletion` finalizer and is still there right after the DELETE; the garbage
//!   collector deletes its dependents, then it, on its next sweep) and `Orphan`. A DELETE that
//!   removes the object answers a `Status` (the object for pods, services, custom resources,
//!   and while finalizers hold it). A Secret's `stringData` is stored base64-encoded in `data`.
//! - Finished Jobs with `ttlSecondsAfterFinished` are deleted that long (scaled) after they
//!   finish. Watches and exact lists from a resourceVersion older than the last compaction
//!   (the sim's start, then every 5 minutes, scaled) get 410 `Expired`.
//! - The `kube` client retries 429/503 answers by default (up to 15 times with backoff); an
//!   eviction blocked by a PodDisruptionBudget is a 429, so callers that want to see it at once
//!   build their client with `default_retry = false`.
//!
//! # Cluster API
//!
//! Cluster API 1.11 as it runs for real (`controllers::capi`; `sim/FIDELITY.md` lists what is
//! not modelled):
//!
//! - **Where the objects are.** [`Sim::start`] is a self-managed cluster: its Cluster API
//!   objects are in itself. [`Sim::start_managed`] starts a **management** sim holding the
//!   Cluster API objects of one or more **workload** sims, all in one process: the
//!   management sim's controllers reach each workload's Nodes, Pods and control plane in
//!   memory (lock order: management store, then workload store). A workload sim has no
//!   Cluster API CRDs. `tidemark sim --management-kubeconfig PATH [--workload NAME=PATH]...`
//!   runs that from the command line.
//! - **Objects** in `SimConfig::capi_namespace`: a `Cluster` named after the cluster (with
//!   `spec.topology` when `SimConfig::topology`), its `KubeadmControlPlane` (same name), a
//!   `MachineDeployment` `<cluster>-<group>` per node group, Machines `<deployment>-xxxxx`
//!   (labels `cluster.x-k8s.io/cluster-name`, `cluster.x-k8s.io/deployment-name`; owned by
//!   their MachineDeployment: no MachineSets), and the Secret `<cluster>-kubeconfig` (key
//!   `value`: the workload's kubeconfig). Versions are written `v1.28.9`. Fields are owned by
//!   the manager `manager` (Cluster API's controllers): a server-side apply that changes
//!   `spec.version` needs `force`, as on a cluster whose objects another tool created.
//! - **Versions** (`SimConfig::capi_api`, [`CapiApi`]): `v1beta2` (default; `v1beta1` and
//!   `v1beta2` served, `v1beta2` stored and preferred, converted as Cluster API's webhooks
//!   convert: `spec.strategy` <-> `spec.rollout.strategy`, `nodeDrainTimeout: "10m0s"` <->
//!   `deletion.nodeDrainTimeoutSeconds: 600`, conditions <-> `status.v1beta2` /
//!   `status.deprecated.v1beta1`, `nodeRef` `{name}`) or `v1beta1` only.
//! - **Rollouts.** A changed `KubeadmControlPlane.spec.version` upgrades the control plane
//!   over time, one minor at a time (a skipped minor is refused in its status,
//!   `UpgradeRejected`). A changed `MachineDeployment.spec.template.spec.version` replaces
//!   Machines (`RollingUpdate` with `maxSurge`/`maxUnavailable`, default 1/0; `OnDelete`
//!   replaces only Machines someone deletes), new ones only when the MachineSet preflight
//!   checks pass (kubelet not newer than the control plane, kubeadm joins only at its minor,
//!   control plane stable). A topology cluster moves its control plane, then one
//!   MachineDeployment at a time, to `Cluster.spec.topology.version`; the Cluster webhook
//!   refuses a `topology.version` that goes down, skips a minor, or comes before everything
//!   runs the current one.
//! - **Drains.** A deleted Machine keeps its finalizer while its Node is cordoned and drained
//!   through the eviction rules. A PodDisruptionBudget that refuses an eviction shows on the
//!   **Machine** (v1beta2 `Deleting`, reason `DrainingNode`; v1beta1 `DrainingSucceeded=False`,
//!   reason `Draining`; Cluster API's message naming each pod and the budget, from
//!   `status.deletion.nodeDrainStartTime`); MachineDeployment conditions only summarise
//!   (`ScalingDown`: `Machine X is in deletion`). Without `nodeDrainTimeout` a drain waits
//!   forever; once it has passed (wall-clock seconds) the Machine is deleted anyway (counted:
//!   `drainsForced`).
//!
//! `GET /sim/v1/state` (`tidemark sim ctl state`) through a cluster's kubeconfig shows that
//! cluster as its Cluster API objects say, wherever they are:
//!
//! ```json
//! {"name": "sim", "namespace": "capi-system", "topologyVersion": "", "clusterApi": "v1beta2",
//!  "controlPlane": {"version": "1.28.9", "targetVersion": "1.29.8", "upgrading": true},
//!  "nodeGroups": [{"name": "general", "machineDeployment": "sim-general",
//!                  "strategy": "RollingUpdate", "targetVersion": "1.29.8", "upgrading": true,
//!                  "message": "", "nodes": [{"name", "kubeletVersion", "ready", "unschedulable"}],
//!                  "machines": [{"name", "node", "version", "phase", "deleting"}]}],
//!  "drainsForced": 0, "machinesDeleted": 2, "requests": {...}, "requestsByResource": {...}}
//! ```
//!
//! Through a management sim's kubeconfig: its own `controlPlane`, `clusterApi`, and
//! `clusters`: one such object per workload cluster.
//!
//! # Request counters
//!
//! The sim counts every Kubernetes API request it serves (not `/sim/v1/*`, not `/healthz`,
//! `/livez`, `/readyz`; requests answered with an injected fault are counted). Its own
//! controllers write to the store directly and are never counted. [`Sim::request_counts`]
//! returns them as a [`RequestCounts`]; `GET /sim/v1/state` (`tidemark sim ctl state`) adds:
//!
//! ```json
//! "requests": {"get": 12, "list": 3, "watch": 1, "create": 2, "update": 0, "patch": 5,
//!              "delete": 1, "deletecollection": 0, "dryRun": 1},
//! "requestsByResource": {"get discovery": 4, "patch configmaps": 3,
//!                        "patch deployments": 2, "list widgets": 1}
//! ```
//!
//! - Verbs: `get` (one object; also discovery, `/version`, `/openapi`), `list`, `watch`,
//!   `create` (also `pods/eviction`), `update` (PUT), `patch` (merge, JSON, strategic and
//!   server-side apply), `delete` (one object), `deletecollection`. Every verb is always present.
//! - `dryRun`: write requests with `dryRun=All` (query or `DeleteOptions` body); they are also
//!   counted under their verb. `RequestCounts::writes` is the write verbs minus `dryRun`.
//! - `requestsByResource` keys are `"VERB RESOURCE"`, only those seen. RESOURCE is the plural
//!   resource name without its group (`configmaps`, `deployments`, `leases`,
//!   `customresourcedefinitions`, `widgets`; `events` counts core and `events.k8s.io` Events),
//!   plus `/SUBRESOURCE` (`pods/eviction`, `deployments/scale`, `deployments/status`); requests
//!   addressing no resource are `discovery`, `version`, `openapi`, `metrics`, or `unknown` for paths the
//!   server does not serve.
//! - Counters only grow; compare two readings (`RequestCounts::since`).
//!
//! The state also shows the faults in force and what clients did after injected 429s
//! ([`Sim::throttle_record`]; see `faults`):
//!
//! ```json
//! "faults": {"spec": "error-rate=0.3,error-codes=429,retry-after=2s", "throttled": 41,
//!            "retried": 40, "retriedEarly": 0, "shortestRetryWaitMs": 2004,
//!            "byClient": {"tidemark": {"throttled": 30, ...}, "kubectl": {...}}}
//! ```
//!
//! # Validation
//!
//! Besides names (lower-case RFC 1123 subdomains; RBAC names are path segments), labels,
//! annotations, ConfigMap/Secret keys, Events (an Event about a cluster-scoped object only in
//! `default`; notes of at most 1 KiB) and namespaces (writing into a missing one is 404
//! `namespaces "x" not found`), writes are rejected with 422
//! `Invalid` like a real API server when a Deployment, ReplicaSet, StatefulSet or DaemonSet has
//! no `spec.selector` (or an empty one, or one that does not match the template labels) or
//! changes its selector, when a pod template (or a Pod) has no containers or a container has no
//! `name`/`image`, when a workload's `restartPolicy` is not allowed (`Always` for workloads,
//! `OnFailure`/`Never` for Jobs), or when a Job's `spec.template` or `spec.selector` changes.
//! The `Status` message and `details.causes` are shaped like Kubernetes'
//! (`Deployment.apps "web" is invalid: spec.selector: Required value`).
//!
//! Values of the wrong type are rejected as the real server's decoding does (400 on create
//! and update, 500 `failed to create typed patch object` on a server-side apply); YAML
//! bodies are read as YAML 1.1 (`0755` is 493, `yes` is true).
//!
//! # No-op writes
//!
//! A write that changes nothing (a repeated identical server-side apply or patch) stores
//! nothing: `resourceVersion` stays and no watch event is sent. As in Kubernetes 1.28
//! (`IgnoreManagedFieldsTimestampsTransformer`, run after decoding), a `managedFields`
//! timestamp alone does not count as a change, and quantities compare canonically: applying
//! `cpu: "0.5"` again over a stored `500m` is a no-op. (The recorded v1.24 wrote in that case.)

mod api;
mod apply;
mod controllers;
mod convert;
mod ctl;
mod defaults;
mod deprecation;
mod events;
mod faults;
#[doc(hidden)]
pub mod fuzzing;
mod kubeconfig;
mod patch;
mod quantity;
mod registry;
mod rng;
mod schema;
mod selector;
mod server;
mod store;
mod tls;
mod validation;
mod watch;
mod yaml;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

pub use api::requests::{RequestCounts, VERBS as REQUEST_VERBS};
pub use controllers::capi::CapiApi;
pub use ctl::ctl;
pub use faults::{FaultSpec, FaultSpecError, ThrottleRecord};
pub use kubeconfig::CONTEXT;

/// Labels the sim puts on its objects.
pub mod labels {
    /// tidemark's own node-group label, on every Node (the kubelet's `--node-labels`) and on
    /// the Machines of a node group.
    pub const NODE_GROUP: &str = "tidemark.dev/node-group";
    /// Cluster API's cluster-name label (on Cluster API objects; an annotation on Nodes).
    pub const CLUSTER_NAME: &str = "cluster.x-k8s.io/cluster-name";
    /// Cluster API's label naming the MachineDeployment of a Machine (never on Nodes).
    pub const DEPLOYMENT_NAME: &str = "cluster.x-k8s.io/deployment-name";
}

/// Errors of the sim library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to set up TLS")]
    Tls(#[from] openssl::error::ErrorStack),
    #[error("failed to bind 127.0.0.1:{port}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to access {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid node groups {spec:?}: {reason}")]
    NodeGroups { spec: String, reason: String },
    #[error("invalid speed {0}: expected a positive number")]
    Speed(f64),
    #[error("invalid pod lifecycle {0:?}: expected run or pending")]
    Pods(String),
    #[error("invalid version {0:?}: expected MAJOR.MINOR.PATCH")]
    Version(String),
    #[error("invalid Cluster API version {0:?}: expected v1beta1 or v1beta2")]
    CapiApi(String),
    #[error("invalid workload clusters: {0}")]
    Workloads(String),
    #[error("invalid kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("failed to build a kube client")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("sim ctl: {0}")]
    Ctl(String),
    #[error("failed to wait for a signal")]
    Signal(#[source] std::io::Error),
}

/// How to start a sim.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Initial control-plane (and kubelet) version, `MAJOR.MINOR.PATCH` (`1.28.9`).
    pub version: String,
    /// Node groups and their node counts, e.g. `[("general", 3), ("gpu", 2)]`.
    pub node_groups: Vec<(String, u32)>,
    /// Time factor: 1.0 is realistic-ish seconds, 20.0 makes everything 20 times faster.
    pub speed: f64,
    /// Faults in force from the start.
    pub faults: FaultSpec,
    /// Seed of names, UIDs and fault decisions.
    pub seed: u64,
    /// Cluster name: the KubeadmControlPlane is `<cluster>-control-plane`, nodes `<cluster>-<group>-xxxxx`.
    pub cluster_name: String,
    /// Namespace of the Cluster API objects.
    pub capi_namespace: String,
    /// Port to bind on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Initial kubelet versions of node groups that do not start at `version`, e.g.
    /// `[("gpu", "1.27.16")]` (never newer than `version`).
    pub node_versions: Vec<(String, String)>,
    /// How many events watches can resume from (older resourceVersions get 410 Gone).
    pub watch_window: usize,
    /// What happens to pods once created: they run (the default), or stay `Pending`.
    pub pods: PodLifecycle,
    /// Aggregated APIs that are registered but never available, by APIService name
    /// (`v1beta1.metrics.k8s.io`): each points at a Service in `kube-system` without
    /// endpoints, so its group is listed in `/apis` but its group-version answers 503
    /// `service unavailable` (as metrics-server's does until its pod is ready).
    pub unavailable_api_services: Vec<String>,
    /// The versions of Cluster API's groups served where this sim's Cluster API objects are
    /// (itself when self-managed; a management sim's own setting otherwise).
    pub capi_api: CapiApi,
    /// The cluster is built from a ClusterClass: its `Cluster` has `spec.topology` and the
    /// topology controller moves the control plane and MachineDeployments.
    pub topology: bool,
}

/// What happens to the pods of a sim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PodLifecycle {
    /// Pods are scheduled on a schedulable Ready node, start after a while and become Ready
    /// (unless an image name contains `fail`).
    #[default]
    Run,
    /// No scheduler and no kubelet: pods are created by their workloads but are never
    /// scheduled nor started, so they stay `Pending` and no workload ever becomes available
    /// (Deployments `Available=False`, Jobs never finish). This is how the fidelity corpus
    /// was recorded.
    Pending,
}

impl std::str::FromStr for PodLifecycle {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "run" => Ok(PodLifecycle::Run),
            "pending" => Ok(PodLifecycle::Pending),
            other => Err(Error::Pods(other.to_string())),
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            version: "1.28.9".into(),
            node_groups: vec![("general".into(), 3)],
            speed: 1.0,
            faults: FaultSpec::default(),
            seed: 1,
            cluster_name: "sim".into(),
            capi_namespace: "capi-system".into(),
            port: 0,
            watch_window: 10_000,
            node_versions: Vec::new(),
            pods: PodLifecycle::Run,
            unavailable_api_services: Vec::new(),
            capi_api: CapiApi::default(),
            topology: false,
        }
    }
}

impl SimConfig {
    /// The initial version of `group` when `node_versions` names one.
    pub(crate) fn group_version(&self, group: &str) -> Option<Version> {
        self.node_versions
            .iter()
            .find(|(g, _)| g == group)
            .and_then(|(_, v)| Version::parse(v))
    }

    /// Parses `gpu=1.27.16,general=1.28.9` (node-group initial versions).
    pub fn parse_node_versions(s: &str) -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (name, v) = term.split_once('=').ok_or_else(|| Error::NodeGroups {
                spec: s.to_string(),
                reason: "expected NAME=VERSION".into(),
            })?;
            let v = v.trim().trim_start_matches('v');
            Version::parse(v).ok_or_else(|| Error::Version(v.to_string()))?;
            out.push((name.trim().to_string(), v.to_string()));
        }
        Ok(out)
    }

    /// Parses `general=3,gpu=2`.
    pub fn parse_node_groups(s: &str) -> Result<Vec<(String, u32)>, Error> {
        let err = |reason: &str| Error::NodeGroups {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let mut out: Vec<(String, u32)> = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (name, n) = term
                .split_once('=')
                .ok_or_else(|| err("expected NAME=COUNT"))?;
            let name = name.trim();
            let valid = !name.is_empty()
                && name.len() <= 40
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !valid {
                return Err(err(
                    "a node group name is lower-case letters, digits and '-'",
                ));
            }
            let n: u32 = n
                .trim()
                .parse()
                .map_err(|_| err("COUNT is a non-negative integer"))?;
            if out.iter().any(|(g, _)| g == name) {
                return Err(err("duplicate node group"));
            }
            out.push((name.to_string(), n));
        }
        Ok(out)
    }
}

/// A `MAJOR.MINOR.PATCH` Kubernetes version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().trim_start_matches('v');
        let mut it = s.split('.');
        let v = Version {
            major: it.next()?.parse().ok()?,
            minor: it.next()?.parse().ok()?,
            patch: it.next()?.split(['-', '+']).next()?.parse().ok()?,
        };
        if it.next().is_some() { None } else { Some(v) }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// State shared by the server, the watches and the controllers.
pub(crate) struct Shared {
    pub store: Mutex<store::Store>,
    pub faults: Mutex<faults::Faults>,
    pub config: SimConfig,
    /// The control plane's current version (what `/version` reports).
    pub control_plane: Mutex<Version>,
    /// Counts of the Kubernetes API requests served.
    pub requests: Mutex<api::requests::Counters>,
    pub shutdown: signal::Receiver<bool>,
    /// PEM of the CA that signed the serving certificate (`kube-root-ca.crt`).
    pub ca_pem: String,
    /// `127.0.0.1:PORT`, the address discovery advertises.
    pub address: String,
    /// Cluster API as installed in this sim: the clusters whose objects it holds (itself
    /// when self-managed, workload sims when it is a management sim).
    pub capi: Option<controllers::capi::Installation>,
    /// The management sim holding this cluster's Cluster API objects, when another sim does.
    pub management: OnceLock<Weak<Shared>>,
    /// How many times each node was replaced through `/sim/v1/replace-node`.
    pub replaced_nodes: Mutex<std::collections::BTreeMap<String, u32>>,
    /// Deprecated APIs requested since the API server (of this minor) started.
    pub deprecated: Mutex<deprecation::Requested>,
}

impl Shared {
    /// Scales a realistic duration by the speed factor.
    pub fn scaled(&self, realistic: Duration) -> Duration {
        let speed = if self.config.speed > 0.0 {
            self.config.speed
        } else {
            1.0
        };
        realistic.div_f64(speed)
    }

    pub fn lock_store(&self) -> std::sync::MutexGuard<'_, store::Store> {
        let minor = self.cp_version().minor;
        // A panic while holding the lock would be a sim bug; keep serving what is there.
        let mut store = self
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // What is served follows the control plane (its minor changes on an upgrade).
        store.registry.set_minor(minor);
        store
    }

    pub fn request_counts(&self) -> RequestCounts {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .snapshot()
    }

    pub fn cp_version(&self) -> Version {
        *self
            .control_plane
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running simulated cluster. Dropping it stops it too (the listener, connections, watches
/// and controllers end soon after); [`Sim::shutdown`] waits for that.
pub struct Sim {
    shared: Arc<Shared>,
    url: String,
    kubeconfig: String,
    stop: signal::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// A sim bound to its port, its store bootstrapped, not yet serving.
struct Prepared {
    config: SimConfig,
    version: Version,
    tls: tls::Tls,
    listener: tokio::net::TcpListener,
    port: u16,
    url: String,
    kubeconfig: String,
    store: store::Store,
}

impl Prepared {
    async fn new(config: SimConfig, capi: Option<CapiApi>) -> Result<Prepared, Error> {
        let version = Version::parse(&config.version)
            .ok_or_else(|| Error::Version(config.version.clone()))?;
        if !(config.speed.is_finite() && config.speed > 0.0 && config.speed <= 10_000.0) {
            return Err(Error::Speed(config.speed));
        }
        for (group, v) in &config.node_versions {
            let parsed = Version::parse(v).ok_or_else(|| Error::Version(v.clone()))?;
            if parsed > version || !config.node_groups.iter().any(|(g, _)| g == group) {
                return Err(Error::NodeGroups {
                    spec: format!("{group}={v}"),
                    reason:
                        "a node version names a node group and is not newer than the control plane"
                            .into(),
                });
            }
        }
        let tls = tls::generate()?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
            .await
            .map_err(|source| Error::Bind {
                port: config.port,
                source,
            })?;
        let port = listener
            .local_addr()
            .map_err(|source| Error::Bind {
                port: config.port,
                source,
            })?
            .port();
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = kubeconfig::render(&url, &tls.ca_pem);
        let mut store = store::Store::new(config.seed, config.watch_window);
        store.registry.set_minor(version.minor);
        controllers::bootstrap(&mut store, &config, capi);
        Ok(Prepared {
            config,
            version,
            tls,
            listener,
            port,
            url,
            kubeconfig,
            store,
        })
    }

    /// Serves: the listener and the controllers run.
    fn launch(self, capi: Option<controllers::capi::Installation>) -> Sim {
        let Prepared {
            config,
            version,
            tls,
            listener,
            port,
            url,
            kubeconfig,
            mut store,
        } = self;
        // A cluster that has been running: its early history is compacted away.
        let bootstrapped = store.resource_version();
        store.compact(bootstrapped);
        let (stop, shutdown) = signal::channel(false);
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            faults: Mutex::new(faults::Faults::new(config.faults.clone(), config.seed)),
            config,
            control_plane: Mutex::new(version),
            requests: Mutex::new(api::requests::Counters::default()),
            shutdown,
            ca_pem: String::from_utf8_lossy(&tls.ca_pem).into_owned(),
            address: format!("127.0.0.1:{port}"),
            capi,
            management: OnceLock::new(),
            replaced_nodes: Mutex::default(),
            deprecated: Mutex::default(),
        });
        let tasks = vec![
            tokio::spawn(server::serve(listener, tls.acceptor, shared.clone())),
            tokio::spawn(controllers::run(shared.clone())),
        ];
        tracing::info!(%url, "sim started");
        Sim {
            shared,
            url,
            kubeconfig,
            stop,
            tasks,
        }
    }
}

/// A management sim and the workload sims whose Cluster API objects it holds
/// ([`Sim::start_managed`]).
pub struct Managed {
    /// The management cluster: Cluster API's CRDs and controllers, and every workload
    /// cluster's `Cluster`, `KubeadmControlPlane`, MachineDeployments, Machines and
    /// `<cluster>-kubeconfig` Secret, in the workload's `capi_namespace`.
    pub management: Sim,
    /// The workload clusters, in the order given: Nodes, Pods, their control plane's version;
    /// no Cluster API objects.
    pub workloads: Vec<Sim>,
}

impl Sim {
    /// Starts a self-managed sim on 127.0.0.1 (port from the config, 0 = any free port): it
    /// holds its own Cluster API objects.
    pub async fn start(config: SimConfig) -> Result<Sim, Error> {
        let api = config.capi_api;
        let mut p = Prepared::new(config, Some(api)).await?;
        let mut stores = controllers::capi::Stores {
            mgmt: &mut p.store,
            workload: None,
        };
        controllers::capi::create_cluster(&mut stores, &p.config, p.version, &p.kubeconfig);
        let installation = controllers::capi::Installation {
            api,
            clusters: vec![controllers::capi::Managed::new(
                &p.config.cluster_name,
                &p.config.capi_namespace,
                None,
            )],
        };
        Ok(p.launch(Some(installation)))
    }

    /// Starts a management sim (`management`: its own version and node groups, whose nodes
    /// no Cluster API manages; its `capi_api` says which Cluster API versions it serves) and
    /// one workload sim per entry of `workloads`, whose Cluster API objects the management
    /// sim holds and whose Machines it rolls. Cluster names must differ.
    pub async fn start_managed(
        management: SimConfig,
        workloads: Vec<SimConfig>,
    ) -> Result<Managed, Error> {
        let mut names: Vec<&str> = workloads.iter().map(|w| w.cluster_name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) || names.is_empty() {
            return Err(Error::Workloads(
                "give at least one workload cluster, each with its own cluster name".into(),
            ));
        }
        let api = management.capi_api;
        let mut mgmt = Prepared::new(management, Some(api)).await?;
        controllers::plain_nodes(&mut mgmt.store, &mgmt.config, mgmt.version);
        let mut prepared = Vec::new();
        for w in workloads {
            let mut p = Prepared::new(w, None).await?;
            let mut stores = controllers::capi::Stores {
                mgmt: &mut mgmt.store,
                workload: Some(&mut p.store),
            };
            controllers::capi::create_cluster(&mut stores, &p.config, p.version, &p.kubeconfig);
            prepared.push(p);
        }
        let mut clusters = Vec::new();
        let mut sims = Vec::new();
        for p in prepared {
            let sim = p.launch(None);
            clusters.push(controllers::capi::Managed::new(
                &sim.shared.config.cluster_name,
                &sim.shared.config.capi_namespace,
                Some(sim.shared.clone()),
            ));
            sims.push(sim);
        }
        let management = mgmt.launch(Some(controllers::capi::Installation { api, clusters }));
        for sim in &sims {
            // Set once, right after the sim was made.
            let _ = sim
                .shared
                .management
                .set(Arc::downgrade(&management.shared));
        }
        Ok(Managed {
            management,
            workloads: sims,
        })
    }

    /// The API server URL, `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A complete kubeconfig (cluster, user, context `sim`, current-context).
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig.clone()
    }

    /// Writes the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, &self.kubeconfig).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// A `kube::Client` for this sim.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig)
            .map_err(|e| Error::Client(Box::new(e)))?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Client(Box::new(e)))?;
        kube::Client::try_from(config).map_err(|e| Error::Client(Box::new(e)))
    }

    /// Replaces the faults in force (the outage window starts counting now).
    pub fn set_faults(&self, faults: FaultSpec) {
        let mut f = self
            .shared
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.replace(faults, self.shared.config.seed);
    }

    /// What clients did after the 429s the sim answered (see `faults`): how many were
    /// retried, and how many before their `Retry-After` had elapsed; in all and by client
    /// (the User-Agent's product, `tidemark`, `kubectl`).
    pub fn throttle_record(
        &self,
    ) -> (
        ThrottleRecord,
        std::collections::BTreeMap<String, ThrottleRecord>,
    ) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .throttle_record()
    }

    /// The current control-plane version, `MAJOR.MINOR.PATCH`.
    pub fn control_plane_version(&self) -> String {
        self.shared.cp_version().to_string()
    }

    /// How many objects the sim stores (all resources).
    pub fn object_count(&self) -> usize {
        self.shared.lock_store().object_count()
    }

    /// How many Kubernetes API requests the sim has served so far, by verb and by resource
    /// (what `/sim/v1/state` reports as `requests` and `requestsByResource`). Take one before
    /// and one after a step and compare them with [`RequestCounts::since`].
    pub fn request_counts(&self) -> RequestCounts {
        self.shared.request_counts()
    }

    /// Stops serving: closes the listener, open connections and watches, and the controllers.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Starts a sim, writes its kubeconfig to `kubeconfig_path`, prints one line
/// `sim ready: URL kubeconfig=PATH` on stdout, and serves until SIGINT or SIGTERM.
pub async fn run_until_signal(config: SimConfig, kubeconfig_path: PathBuf) -> Result<(), Error> {
    let sim = Sim::start(config).await?;
    sim.write_kubeconfig(&kubeconfig_path)?;
    println!(
        "sim ready: {} kubeconfig={}",
        sim.url(),
        kubeconfig_path.display()
    );
    wait_for_signal().await?;
    sim.shutdown().await;
    Ok(())
}

/// Starts a management sim and its workload sims ([`Sim::start_managed`]), writes each
/// kubeconfig to its path, prints one line
/// `sim ready: URL kubeconfig=PATH; management: URL kubeconfig=PATH[; workload NAME: URL kubeconfig=PATH]...`
/// (the first workload first) on stdout, and serves until SIGINT or SIGTERM.
pub async fn run_managed_until_signal(
    management: (SimConfig, PathBuf),
    workloads: Vec<(SimConfig, PathBuf)>,
) -> Result<(), Error> {
    let (configs, paths): (Vec<SimConfig>, Vec<PathBuf>) = workloads.into_iter().unzip();
    let managed = Sim::start_managed(management.0, configs).await?;
    managed.management.write_kubeconfig(&management.1)?;
    let mut parts = Vec::new();
    for (i, (sim, path)) in managed.workloads.iter().zip(&paths).enumerate() {
        sim.write_kubeconfig(path)?;
        let line = format!("{} kubeconfig={}", sim.url(), path.display());
        if i == 0 {
            parts.push(line);
            parts.push(format!(
                "management: {} kubeconfig={}",
                managed.management.url(),
                management.1.display()
            ));
        } else {
            parts.push(format!(
                "workload {}: {line}",
                sim.shared.config.cluster_name
            ));
        }
    }
    println!("sim ready: {}", parts.join("; "));
    wait_for_signal().await?;
    for sim in managed.workloads {
        sim.shutdown().await;
    }
    managed.management.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> Result<(), Error> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::Signal)?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(Error::Signal)?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_groups_and_versions_parse() {
        let groups = SimConfig::parse_node_groups("general=3, gpu=2").ok();
        assert_eq!(
            groups,
            Some(vec![("general".to_string(), 3), ("gpu".to_string(), 2)])
        );
        for bad in ["general", "general=x", "Gen=1", "a=1,a=2", "-a=1"] {
            assert!(SimConfig::parse_node_groups(bad).is_err(), "{bad}");
        }
        let versions = SimConfig::parse_node_versions("gpu=v1.27.16").ok();
        assert_eq!(
            versions,
            Some(vec![("gpu".to_string(), "1.27.16".to_string())])
        );
        assert!(SimConfig::parse_node_versions("gpu=1.27").is_err());
        assert_eq!(
            Version::parse("v1.29.8").map(|v| v.to_string()),
            Some("1.29.8".into())
        );
        assert!(Version::parse("1.29.8.1").is_none());
    }
}
