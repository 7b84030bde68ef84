//! Cluster API, as an installation of Cluster API 1.11 runs it: its CRDs, the objects of the
//! clusters it manages, and its controllers.
//!
//! - The sim that holds the Cluster API objects (the **management** sim, or a self-managed
//!   sim that holds its own) runs the controllers; they reach each managed cluster's own
//!   store (its Nodes and Pods) in memory. Lock order: the management store first, then the
//!   workload's, never the reverse ([`Stores`]).
//! - Objects per cluster, in the cluster's namespace: a `Cluster` (with `spec.topology` when
//!   built from a ClusterClass), its `KubeadmControlPlane` (named after the cluster), one
//!   `MachineDeployment` per node group (`<cluster>-<group>`), and **Machines**
//!   (`<deployment>-xxxxx`, owned by their MachineDeployment: the sim has no MachineSets)
//!   labelled `cluster.x-k8s.io/cluster-name` and `cluster.x-k8s.io/deployment-name`, each
//!   with the Node it runs as in `status.nodeRef`; and the Secret `<cluster>-kubeconfig` (key
//!   `value`) with the workload cluster's kubeconfig.
//! - Nodes of Machines carry the annotations Cluster API writes (`cluster.x-k8s.io/machine`,
//!   `owner-kind`, `owner-name`, `cluster-name`, `cluster-namespace`) and only the Machine
//!   labels Cluster API syncs (`node-role.kubernetes.io/*`, `node-restriction.kubernetes.io/*`,
//!   `*.node.cluster.x-k8s.io/*`); never `cluster.x-k8s.io/deployment-name`. Their kubelet
//!   registers them with `tidemark.dev/node-group=<group>` (`--node-labels` of the sim's
//!   bootstrap), which `exec` node groups use.
//! - Versions served ([`CapiApi`]): `v1beta1` only, or `v1beta1` and `v1beta2` with `v1beta2`
//!   stored and preferred (conversion: [`convert`]). The controllers work on the `v1beta2`
//!   shape whatever is stored ([`Kinds`]).
//! - Controllers, per cluster and tick: the topology controller ([`topology`]), the control
//!   plane ([`control_plane`]), MachineDeployments ([`deployments`]: rolling updates with
//!   `maxSurge`/`maxUnavailable`, `OnDelete`, MachineSet preflight checks), Machines
//!   ([`machines`]: a Node per Machine, drains through the eviction rules on deletion, reported
//!   on the Machine; `nodeDrainTimeout` forces the deletion when it expires).
//! - Admission: the Cluster webhook's rules for `spec.topology.version` ([`admit`]).

pub(crate) mod control_plane;
pub(crate) mod convert;
pub(crate) mod deployments;
pub(crate) mod machines;
pub(crate) mod topology;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{Ctx, def, s};
use crate::api::status::ApiError;
use crate::registry::{GroupResource, ResourceDef};
use crate::store::{Store, Writer, now};
use crate::{Shared, SimConfig, Version};

/// `cluster.x-k8s.io`: Cluster, MachineDeployment, Machine.
pub(crate) const CLUSTER_GROUP: &str = "cluster.x-k8s.io";
/// `controlplane.cluster.x-k8s.io`: KubeadmControlPlane.
pub(crate) const CONTROL_PLANE_GROUP: &str = "controlplane.cluster.x-k8s.io";
/// `bootstrap.cluster.x-k8s.io`: the kubeadm bootstrap provider's kinds.
const BOOTSTRAP_GROUP: &str = "bootstrap.cluster.x-k8s.io";
/// The sim's infrastructure provider's group.
const INFRASTRUCTURE_GROUP: &str = "infrastructure.cluster.x-k8s.io";

/// Labels and annotations Cluster API writes.
pub(crate) mod keys {
    /// On every object of a cluster (label), and on its Nodes (annotation).
    pub const CLUSTER_NAME: &str = "cluster.x-k8s.io/cluster-name";
    /// On the Machines of a MachineDeployment (never on Nodes).
    pub const DEPLOYMENT_NAME: &str = "cluster.x-k8s.io/deployment-name";
    /// Node annotations.
    pub const CLUSTER_NAMESPACE: &str = "cluster.x-k8s.io/cluster-namespace";
    pub const MACHINE: &str = "cluster.x-k8s.io/machine";
    pub const OWNER_KIND: &str = "cluster.x-k8s.io/owner-kind";
    pub const OWNER_NAME: &str = "cluster.x-k8s.io/owner-name";
    pub const LABELS_FROM_MACHINE: &str = "cluster.x-k8s.io/labels-from-machine";
    /// MachineDeployments the topology controller manages.
    pub const TOPOLOGY_OWNED: &str = "topology.cluster.x-k8s.io/owned";
    pub const TOPOLOGY_DEPLOYMENT: &str = "topology.cluster.x-k8s.io/deployment-name";
    /// The finalizer of a Machine: its drain and its Node's deletion.
    pub const MACHINE_FINALIZER: &str = "machine.cluster.x-k8s.io";
    /// The control plane's machines (none are simulated; used in selectors).
    pub const CONTROL_PLANE: &str = "cluster.x-k8s.io/control-plane";
}

/// The field manager of Cluster API's controllers (controller-runtime's default).
const WRITER: Writer<'static> = Writer {
    manager: "manager",
    ..Writer::CONTROLLER
};

/// Which versions of the Cluster API groups a sim serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CapiApi {
    /// `v1beta1` only (as Cluster API 1.8 serves its objects, without `status.v1beta2`).
    V1beta1,
    /// `v1beta1` and `v1beta2`, `v1beta2` stored and preferred (Cluster API 1.11).
    #[default]
    V1beta2,
}

impl std::str::FromStr for CapiApi {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1beta1" => Ok(CapiApi::V1beta1),
            "v1beta2" => Ok(CapiApi::V1beta2),
            other => Err(crate::Error::CapiApi(other.to_string())),
        }
    }
}

impl std::fmt::Display for CapiApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CapiApi::V1beta1 => "v1beta1",
            CapiApi::V1beta2 => "v1beta2",
        })
    }
}

/// The Cluster API kinds the sim runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Cluster,
    MachineDeployment,
    Machine,
    KubeadmControlPlane,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::MachineDeployment => "MachineDeployment",
            Kind::Machine => "Machine",
            Kind::KubeadmControlPlane => "KubeadmControlPlane",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Kind::KubeadmControlPlane => CONTROL_PLANE_GROUP,
            _ => CLUSTER_GROUP,
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Cluster => "clusters",
            Kind::MachineDeployment => "machinedeployments",
            Kind::Machine => "machines",
            Kind::KubeadmControlPlane => "kubeadmcontrolplanes",
        }
    }
}

/// The Cluster API resources at their storage versions, read and written in the `v1beta2`
/// shape (converted when `v1beta1` is stored).
#[derive(Clone)]
pub(crate) struct Kinds {
    defs: [ResourceDef; 4],
}

impl Kinds {
    /// The resources of `store`, if Cluster API's CRDs are installed there.
    pub fn of(store: &Store) -> Option<Kinds> {
        let find = |k: Kind| -> Option<ResourceDef> {
            let gr = GroupResource {
                group: k.group().into(),
                plural: k.plural().into(),
            };
            let any = store.registry.any_version(&gr)?;
            let storage = any
                .conversion
                .as_ref()
                .map_or_else(|| any.version.clone(), |c| c.storage.clone());
            store
                .registry
                .find(k.group(), &storage, k.plural())
                .cloned()
        };
        Some(Kinds {
            defs: [
                find(Kind::Cluster)?,
                find(Kind::MachineDeployment)?,
                find(Kind::Machine)?,
                find(Kind::KubeadmControlPlane)?,
            ],
        })
    }

    pub fn def(&self, kind: Kind) -> &ResourceDef {
        &self.defs[kind as usize]
    }

    fn is_hub(&self, kind: Kind) -> bool {
        self.def(kind).version == "v1beta2"
    }

    /// A stored object in the `v1beta2` shape.
    pub fn hub(&self, kind: Kind, mut stored: Value) -> Value {
        if !self.is_hub(kind) {
            convert::up(kind.name(), &mut stored);
        }
        stored
    }

    /// A `v1beta2`-shaped object as stored.
    pub fn stored(&self, kind: Kind, mut hub: Value) -> Value {
        if !self.is_hub(kind) {
            convert::down(kind.name(), &mut hub, false);
        }
        hub
    }

    pub fn get(&self, store: &Store, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        let d = self.def(kind);
        store
            .get(&d.gr(), ns, name)
            .cloned()
            .map(|o| self.hub(kind, o))
    }

    /// The objects of `kind` in `ns` labelled `cluster.x-k8s.io/cluster-name=cluster`.
    pub fn of_cluster(&self, store: &Store, kind: Kind, ns: &str, cluster: &str) -> Vec<Value> {
        let d = self.def(kind);
        store
            .list(&d.gr(), Some(ns))
            .filter(|o| label(o, keys::CLUSTER_NAME) == cluster)
            .cloned()
            .map(|o| self.hub(kind, o))
            .collect()
    }

    pub fn create(&self, store: &mut Store, kind: Kind, hub: Value) -> Option<Value> {
        match store.create(self.def(kind), self.stored(kind, hub), WRITER) {
            Ok(v) => Some(self.hub(kind, v)),
            Err(e) => {
                tracing::debug!(error = %e.message, "cluster api create failed");
                None
            }
        }
    }

    /// Writes a changed object (spec, metadata); `None` when the write failed.
    pub fn write(&self, store: &mut Store, kind: Kind, hub: Value) -> Option<Value> {
        super::write_as(store, self.def(kind), self.stored(kind, hub), WRITER)
            .map(|v| self.hub(kind, v))
    }

    /// [`Kinds::write`], saying why a write was refused (admission, conflicts).
    pub fn update(&self, store: &mut Store, kind: Kind, hub: Value) -> Result<Value, ApiError> {
        let d = self.def(kind);
        store
            .update(
                d,
                self.stored(kind, hub),
                crate::apply::Scope::Main {
                    has_status: d.has_status,
                },
                WRITER,
            )
            .map(|v| self.hub(kind, v))
    }

    /// Writes `status` (in the `v1beta2` shape) if it changed.
    pub fn set_status(&self, store: &mut Store, kind: Kind, hub: &Value, status: Value) {
        let old = self.stored(kind, hub.clone());
        let mut new = hub.clone();
        new["status"] = status;
        let new = self.stored(kind, new);
        super::set_status_as(
            store,
            self.def(kind),
            &old,
            new.get("status").cloned().unwrap_or_else(|| json!({})),
            WRITER,
        );
    }
}

/// The management store and a managed cluster's store, which are one store for a
/// self-managed cluster. Borrow one at a time.
pub(crate) struct Stores<'a> {
    pub mgmt: &'a mut Store,
    pub workload: Option<&'a mut Store>,
}

impl Stores<'_> {
    /// The workload cluster's store.
    pub fn wl(&mut self) -> &mut Store {
        match &mut self.workload {
            Some(s) => s,
            None => self.mgmt,
        }
    }
}

/// Cluster API as installed in a sim: the clusters whose objects it holds.
pub(crate) struct Installation {
    pub api: CapiApi,
    pub clusters: Vec<Managed>,
}

/// A cluster whose Cluster API objects a sim holds.
pub(crate) struct Managed {
    /// The `Cluster`'s name and namespace.
    pub name: String,
    pub namespace: String,
    /// The workload sim (its Nodes, Pods, control plane); `None`: the sim itself
    /// (self-managed).
    pub workload: Option<Arc<Shared>>,
    /// Machines whose drain `nodeDrainTimeout` cut short (deleted with pods still on their
    /// Node).
    pub drains_forced: AtomicU64,
    /// Machines deleted (drained, or forced).
    pub machines_deleted: AtomicU64,
}

impl Managed {
    pub fn new(name: &str, namespace: &str, workload: Option<Arc<Shared>>) -> Self {
        Managed {
            name: name.into(),
            namespace: namespace.into(),
            workload,
            drains_forced: AtomicU64::new(0),
            machines_deleted: AtomicU64::new(0),
        }
    }

    pub fn counts(&self) -> (u64, u64) {
        (
            self.drains_forced.load(Ordering::Relaxed),
            self.machines_deleted.load(Ordering::Relaxed),
        )
    }
}

/// A label of an object ("" without it).
pub(crate) fn label<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `v1.29.8`.
pub(crate) fn v(version: Version) -> String {
    format!("v{version}")
}

/// A v1beta1 Cluster API condition (`severity` only when not True; empty fields left out).
pub(crate) fn v1beta1_condition(
    kind: &str,
    ok: bool,
    reason: &str,
    severity: &str,
    message: &str,
) -> Value {
    let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now()});
    if !ok && !severity.is_empty() {
        c["severity"] = json!(severity);
    }
    if !reason.is_empty() {
        c["reason"] = json!(reason);
    }
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    c
}

/// A v1beta2 condition (`metav1.Condition`: the reason is always set).
pub(crate) fn v1beta2_condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: i64,
) -> Value {
    let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" }, "reason": reason,
        "observedGeneration": generation, "lastTransitionTime": now()});
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    c
}

/// The status of an object: its conditions (v1beta2) and deprecated v1beta1 conditions keep
/// the `lastTransitionTime` of those whose status did not change.
pub(crate) fn keep_times(old: &Value, status: &mut Value) {
    for path in ["/conditions", "/deprecated/v1beta1/conditions"] {
        let old_conds = old.pointer(&format!("/status{path}"));
        if let Some(new) = status.pointer_mut(path).and_then(Value::as_array_mut) {
            super::keep_transitions(old_conds, new);
        }
    }
}

fn crd(kind: Kind, short: &str, api: CapiApi, scale: bool) -> Value {
    let mut subresources = json!({"status": {}});
    if scale {
        subresources["scale"] = json!({"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"});
    }
    let version = |name: &str, storage: bool| {
        json!({
            "name": name, "served": true, "storage": storage,
            "subresources": subresources,
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
        })
    };
    let (versions, conversion) = match api {
        CapiApi::V1beta1 => (vec![version("v1beta1", true)], json!({"strategy": "None"})),
        CapiApi::V1beta2 => {
            let (ns, service) = if kind == Kind::KubeadmControlPlane {
                crate::registry::CLUSTER_API_WEBHOOKS[1]
            } else {
                crate::registry::CLUSTER_API_WEBHOOKS[0]
            };
            (
                vec![version("v1beta1", false), version("v1beta2", true)],
                json!({"strategy": "Webhook", "webhook": {
                    "clientConfig": {"service": {"namespace": ns, "name": service, "path": "/convert", "port": 443}},
                    "conversionReviewVersions": ["v1", "v1beta1"]}}),
            )
        }
    };
    let name = kind.name();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{}", kind.plural(), kind.group()),
            "labels": {"cluster.x-k8s.io/provider": if kind == Kind::KubeadmControlPlane { "control-plane-kubeadm" } else { "cluster-api" }}},
        "spec": {
            "group": kind.group(), "scope": "Namespaced",
            "names": {"kind": name, "listKind": format!("{name}List"), "plural": kind.plural(),
                "singular": name.to_lowercase(), "shortNames": [short], "categories": ["cluster-api"]},
            "versions": versions,
            "conversion": conversion,
        },
    })
}

/// Installs Cluster API's CRDs (Established, as in a cluster where it has been running).
pub(crate) fn install(store: &mut Store, api: CapiApi) {
    let Some(crd_def) = def(
        store,
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
    ) else {
        return;
    };
    for (kind, short, scale) in [
        (Kind::Cluster, "cl", false),
        (Kind::MachineDeployment, "md", true),
        (Kind::Machine, "ma", false),
        (Kind::KubeadmControlPlane, "kcp", true),
    ] {
        if let Ok(created) =
            store.create(&crd_def, crd(kind, short, api, scale), Writer::CONTROLLER)
        {
            super::crds::establish(store, &crd_def, &created);
        }
    }
}

/// The name of the KubeadmControlPlane of a cluster: the cluster's name.
pub(crate) fn kcp_name(cluster: &str) -> String {
    cluster.to_string()
}

/// The name of the MachineDeployment of a node group: `<cluster>-<group>`.
pub(crate) fn md_name(cluster: &str, group: &str) -> String {
    format!("{cluster}-{group}")
}

/// The node group of a MachineDeployment (hub shape): its template's
/// `tidemark.dev/node-group` label, else its name.
pub(crate) fn group_of(md: &Value) -> String {
    md.pointer("/spec/template/metadata/labels")
        .and_then(|l| l.get(crate::labels::NODE_GROUP))
        .and_then(Value::as_str)
        .unwrap_or(s(md, "/metadata/name"))
        .to_string()
}

/// Creates the Cluster API objects of the cluster `config` describes (in `stores.mgmt`) and
/// the Nodes of its Machines (in the workload store): a cluster that has been running, every
/// Machine Running with a Ready Node. `kubeconfig` is the workload cluster's, kept in the
/// Secret `<cluster>-kubeconfig`.
pub(crate) fn create_cluster(
    stores: &mut Stores,
    config: &SimConfig,
    version: Version,
    kubeconfig: &str,
) {
    let Some(kinds) = Kinds::of(stores.mgmt) else {
        return;
    };
    let ns = config.capi_namespace.as_str();
    let cluster = config.cluster_name.as_str();
    if let Some(nsdef) = def(stores.mgmt, "", "v1", "namespaces") {
        let _ = stores.mgmt.create(
            &nsdef,
            json!({"metadata": {"name": ns}}),
            Writer::CONTROLLER,
        );
    }
    let labels = json!({keys::CLUSTER_NAME: cluster});
    let mut cluster_obj = json!({
        "apiVersion": format!("{CLUSTER_GROUP}/v1beta2"), "kind": "Cluster",
        "metadata": {"name": cluster, "namespace": ns, "labels": labels},
        "spec": {
            "clusterNetwork": {"pods": {"cidrBlocks": ["10.244.0.0/16"]}},
            "controlPlaneRef": {"apiGroup": CONTROL_PLANE_GROUP, "kind": "KubeadmControlPlane", "name": kcp_name(cluster)},
            "infrastructureRef": {"apiGroup": INFRASTRUCTURE_GROUP, "kind": "SimCluster", "name": cluster},
        },
        "status": {"phase": "Provisioned", "initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true}},
    });
    if config.topology {
        let workers: Vec<Value> = config
            .node_groups
            .iter()
            .map(|(g, n)| json!({"class": "default-worker", "name": g, "replicas": n}))
            .collect();
        cluster_obj["spec"]["topology"] = json!({
            "classRef": {"name": "sim"}, "version": v(version),
            "controlPlane": {"replicas": 3}, "workers": {"machineDeployments": workers},
        });
    }
    kinds.create(stores.mgmt, Kind::Cluster, cluster_obj);
    let kcp = json!({
        "apiVersion": format!("{CONTROL_PLANE_GROUP}/v1beta2"), "kind": "KubeadmControlPlane",
        "metadata": {"name": kcp_name(cluster), "namespace": ns, "labels": labels},
        "spec": {"replicas": 3, "version": v(version),
            "machineTemplate": {"spec": {"infrastructureRef": {"apiGroup": INFRASTRUCTURE_GROUP, "kind": "SimMachineTemplate", "name": format!("{cluster}-control-plane")}}},
            "kubeadmConfigSpec": {}},
        "status": control_plane::steady_status(cluster, version, 3, 1),
    });
    kinds.create(stores.mgmt, Kind::KubeadmControlPlane, kcp);
    for (group, count) in &config.node_groups {
        let group_version = config.group_version(group).unwrap_or(version);
        let name = md_name(cluster, group);
        let mut md_labels = json!({keys::CLUSTER_NAME: cluster});
        if config.topology {
            md_labels[keys::TOPOLOGY_OWNED] = json!("");
            md_labels[keys::TOPOLOGY_DEPLOYMENT] = json!(group);
        }
        let md = json!({
            "apiVersion": format!("{CLUSTER_GROUP}/v1beta2"), "kind": "MachineDeployment",
            "metadata": {"name": name, "namespace": ns, "labels": md_labels},
            "spec": {
                "clusterName": cluster, "replicas": count,
                "selector": {"matchLabels": {keys::CLUSTER_NAME: cluster, keys::DEPLOYMENT_NAME: name}},
                "rollout": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}},
                "template": {
                    "metadata": {"labels": {keys::CLUSTER_NAME: cluster, keys::DEPLOYMENT_NAME: name, crate::labels::NODE_GROUP: group}},
                    "spec": {"clusterName": cluster, "version": v(group_version),
                        "bootstrap": {"configRef": {"apiGroup": BOOTSTRAP_GROUP, "kind": "KubeadmConfigTemplate", "name": group}},
                        "infrastructureRef": {"apiGroup": INFRASTRUCTURE_GROUP, "kind": "SimMachineTemplate", "name": group}},
                },
            },
        });
        let Some(md) = kinds.create(stores.mgmt, Kind::MachineDeployment, md) else {
            continue;
        };
        for _ in 0..*count {
            machines::create(stores, &kinds, &md, group_version, true);
        }
    }
    if let Some(d) = def(stores.mgmt, "", "v1", "secrets") {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "cluster.x-k8s.io/secret",
            "metadata": {"name": format!("{cluster}-kubeconfig"), "namespace": ns, "labels": {keys::CLUSTER_NAME: cluster}},
            "data": {"value": base64::engine::general_purpose::STANDARD.encode(kubeconfig)},
        });
        let _ = stores.mgmt.create(&d, secret, Writer::CONTROLLER);
    }
}

/// What the Cluster API controllers remember between ticks, per cluster: the store versions
/// they last looked at, and when to look again regardless.
#[derive(Default)]
pub(crate) struct Queues {
    seen: HashMap<String, (u64, u64)>,
    due: HashMap<String, Instant>,
    /// Per cluster, Machine uid -> the resourceVersions of the Machine and its Node last
    /// looked at.
    machines: HashMap<String, HashMap<String, (String, String)>>,
}

/// Whether `store` has a change since `since` to a resource `relevant` names (`true` when
/// the changes are not known: the first look, or more changes than the event log keeps).
fn changed(store: &Store, since: Option<u64>, relevant: impl Fn(&GroupResource) -> bool) -> bool {
    match since.and_then(|rv| store.events_since(rv)) {
        Some(events) => events.iter().any(|e| relevant(&e.gr)),
        None => true,
    }
}

/// Runs the controllers for every cluster whose objects this sim holds. A cluster is looked
/// at when a Cluster API object (management store) or a Node (workload store) changed since
/// the last look (its own writes included: they are seen on the next look, which then finds
/// nothing to do), or a timer of its is due (a rollout, a boot, a drain in progress).
pub(crate) fn reconcile(store: &mut Store, ctx: &mut Ctx, queues: &mut Queues) {
    let shared = ctx.shared;
    let Some(install) = &shared.capi else {
        return;
    };
    let Some(kinds) = Kinds::of(store) else {
        return;
    };
    for m in &install.clusters {
        let mut guard = m.workload.as_ref().map(|w| w.lock_store());
        let workload: &Shared = m.workload.as_deref().unwrap_or(shared);
        let mut stores = Stores {
            mgmt: store,
            workload: guard.as_deref_mut(),
        };
        let key = format!("{}/{}", m.namespace, m.name);
        let rvs = (
            stores.mgmt.resource_version(),
            stores.wl().resource_version(),
        );
        let due = queues.due.get(&key).is_some_and(|at| *at <= ctx.now);
        let last = queues.seen.insert(key.clone(), rvs);
        let capi_changed = changed(stores.mgmt, last.map(|l| l.0), |gr| {
            gr.group == CLUSTER_GROUP || gr.group == CONTROL_PLANE_GROUP
        });
        let nodes_changed = changed(stores.wl(), last.map(|l| l.1), |gr| {
            gr.group.is_empty() && gr.plural == "nodes"
        });
        if !(due || capi_changed || nodes_changed) {
            continue;
        }
        ctx.wake = None;
        let machines_seen = queues.machines.entry(key.clone()).or_default();
        cluster(&mut stores, ctx, &kinds, m, workload, machines_seen);
        match ctx.wake.take() {
            Some(at) => queues.due.insert(key, at),
            None => queues.due.remove(&key),
        };
    }
}

/// One cluster: topology, control plane, MachineDeployments, Machines, the Cluster's status.
fn cluster(
    stores: &mut Stores,
    ctx: &mut Ctx,
    kinds: &Kinds,
    m: &Managed,
    workload: &Shared,
    machines_seen: &mut HashMap<String, (String, String)>,
) {
    let Some(cluster) = kinds.get(stores.mgmt, Kind::Cluster, &m.namespace, &m.name) else {
        return;
    };
    if cluster.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    topology::reconcile(stores, ctx, kinds, &cluster);
    control_plane::reconcile(stores, ctx, kinds, &cluster, workload);
    deployments::reconcile(stores, ctx, kinds, &cluster);
    machines::reconcile(stores, ctx, kinds, m, machines_seen);
    topology::cluster_status(stores, kinds, &cluster, workload);
}

/// The KubeadmControlPlane of `cluster` (hub shape).
pub(crate) fn control_plane_of(store: &Store, kinds: &Kinds, cluster: &Value) -> Option<Value> {
    let name = s(cluster, "/spec/controlPlaneRef/name");
    kinds.get(
        store,
        Kind::KubeadmControlPlane,
        s(cluster, "/metadata/namespace"),
        name,
    )
}

/// Why the control plane does not move from `current` to `target`, if it does not: a minor
/// skipped (Cluster API's webhook refuses it at admission; the sim says so in the status) or
/// a lower minor (the sim does not model a control plane's minor downgrade). A lower patch
/// release of the same minor rolls, as it does with Cluster API.
pub(crate) fn control_plane_refusal(current: Version, target: Version) -> Option<String> {
    if target < current && (target.major, target.minor) < (current.major, current.minor) {
        Some(format!(
            "cannot downgrade the control plane from v{current} to v{target}"
        ))
    } else if target.major != current.major || target.minor > current.minor + 1 {
        Some(format!(
            "cannot upgrade the control plane from v{current} to v{target}: it moves one minor version at a time"
        ))
    } else {
        None
    }
}

/// Why the simulated cloud (`tidemark sim ctl upgrade-node-group`) refuses a node-group
/// target version, if it does: newer than the control plane, a downgrade, or a minor the
/// kubeadm bootstrap cannot join at (Cluster API's preflight checks would hold it forever).
pub(crate) fn node_group_refusal(
    control_plane: Version,
    lowest: Option<Version>,
    target: Version,
) -> Option<String> {
    if target > control_plane {
        Some(format!(
            "kubelet version v{target} would be newer than the control plane v{control_plane}"
        ))
    } else if lowest.is_some_and(|l| target < l) {
        Some(format!("cannot downgrade nodes to v{target}"))
    } else if target.minor != control_plane.minor || target.major != control_plane.major {
        Some(format!(
            "kubeadm joins nodes only at the control plane's minor version (v{control_plane}), not v{target}"
        ))
    } else {
        None
    }
}

/// The admission webhooks of Cluster API the sim runs: the Cluster webhook's rules for a
/// change of `spec.topology.version` (never down, at most one minor, only once the control
/// plane and every topology-owned MachineDeployment run the current version). `new` and
/// `old` are in the shape of `def`'s version (the version field is at the same place in both).
pub(crate) fn admit(
    store: &Store,
    def: &ResourceDef,
    new: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if def.group != CLUSTER_GROUP || def.kind != "Cluster" {
        return Ok(());
    }
    let Some(old) = old else {
        return Ok(());
    };
    let (new_v, old_v) = (
        s(new, "/spec/topology/version"),
        s(old, "/spec/topology/version"),
    );
    if new_v == old_v || new_v.is_empty() || old_v.is_empty() {
        return Ok(());
    }
    let name = s(new, "/metadata/name");
    let deny = |msg: String| {
        let e = ApiError::invalid(
            def,
            name,
            "spec.topology.version",
            &format!("Invalid value: \"{new_v}\": {msg}"),
        );
        ApiError {
            message: format!(
                "admission webhook \"validation.cluster.cluster.x-k8s.io\" denied the request: {}",
                e.message
            ),
            ..e
        }
    };
    let (Some(to), Some(from)) = (Version::parse(new_v), Version::parse(old_v)) else {
        return Ok(());
    };
    if to < from {
        return Err(deny(format!(
            "version cannot be decreased from \"{from}\" to \"{to}\""
        )));
    }
    if to.major != from.major || to.minor >= from.minor + 2 {
        return Err(deny(format!(
            "version cannot be increased from \"{from}\" to \"{to}\""
        )));
    }
    let Some(kinds) = Kinds::of(store) else {
        return Ok(());
    };
    let old_hub = kinds.hub(Kind::Cluster, old.clone());
    let mut errs = Vec::new();
    if let Some(kcp) = control_plane_of(store, &kinds, &old_hub) {
        let spec = Version::parse(s(&kcp, "/spec/version"));
        let status = Version::parse(s(&kcp, "/status/version"));
        if spec != Some(from) {
            errs.push(format!(
                "Cluster.spec.topology.version {from} was not propagated to control plane yet (control plane version {})",
                spec.map(|v| v.to_string()).unwrap_or_default()
            ));
        } else if status != spec {
            errs.push("control plane is still completing a previous upgrade".to_string());
        }
    }
    let ns = s(new, "/metadata/namespace");
    let machines = kinds.of_cluster(store, Kind::Machine, ns, name);
    let upgrading: Vec<String> = kinds
        .of_cluster(store, Kind::MachineDeployment, ns, name)
        .iter()
        .filter(|md| {
            md.pointer("/metadata/labels")
                .is_some_and(|l| l.get(keys::TOPOLOGY_OWNED).is_some())
        })
        .filter(|md| {
            let want = s(md, "/spec/template/spec/version");
            Version::parse(want) != Some(from)
                || machines.iter().any(|m| {
                    label(m, keys::DEPLOYMENT_NAME) == s(md, "/metadata/name")
                        && s(m, "/spec/version") != want
                })
        })
        .map(|md| s(md, "/metadata/name").to_string())
        .collect();
    if !upgrading.is_empty() {
        errs.push(format!(
            "there are still MachineDeployments completing a previous upgrade: [{}]",
            upgrading.join(", ")
        ));
    }
    match errs.as_slice() {
        [] => Ok(()),
        [one] => Err(deny(format!("version cannot be changed: {one}"))),
        many => Err(deny(format!(
            "version cannot be changed: [{}]",
            many.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulated_cloud_refuses_what_kubeadm_cannot_join() {
        let v = |s: &str| {
            Version::parse(s).unwrap_or(Version {
                major: 0,
                minor: 0,
                patch: 0,
            })
        };
        assert_eq!(
            node_group_refusal(v("1.29.8"), Some(v("1.28.9")), v("1.29.8")),
            None
        );
        assert!(
            node_group_refusal(v("1.29.8"), None, v("1.30.0")).is_some_and(|m| m.contains("newer"))
        );
        assert!(
            node_group_refusal(v("1.29.8"), Some(v("1.29.8")), v("1.29.1"))
                .is_some_and(|m| m.contains("downgrade"))
        );
        assert!(
            node_group_refusal(v("1.29.8"), Some(v("1.27.1")), v("1.28.9"))
                .is_some_and(|m| m.contains("kubeadm"))
        );
    }
}
