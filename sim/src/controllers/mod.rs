//! Simulated cluster behaviour: one task that ticks (faster with a higher `speed`) and, under
//! the store lock, runs the controllers in order — nodes boot, Cluster API (where this sim
//! holds its objects) upgrades control planes and rolls Machines, also of the workload sims it
//! manages (their stores locked after this one's), workloads get pods that get scheduled and become ready,
//! PodDisruptionBudget status follows, terminating namespaces empty, orphans are collected.
//! Controllers write through the same store API as clients (manager `sim-controller-manager`).
//!
//! A tick costs what changed, not what is stored: each controller reconciles only the objects
//! its [`queue::Queue`] names (changed since its last look, concerned by a change, or with a
//! timer due), and the namespace and garbage sweeps run only after a change. The lock is held
//! for the whole tick, so this is what keeps the API server responsive with many objects.

pub(crate) mod apiservices;
pub(crate) mod capi;
pub(crate) mod crds;
pub(crate) mod eviction;
pub(crate) mod namespaces;
pub(crate) mod nodes;
pub(crate) mod queue;
pub(crate) mod workloads;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::apply::Scope;
use crate::registry::ResourceDef;
use crate::store::{Store, Writer, now};
use crate::{Shared, SimConfig, Version};

/// Durations at speed 1.0 ("realistic-ish").
pub(crate) mod durations {
    use std::time::Duration;
    pub const TICK: Duration = Duration::from_millis(500);
    pub const POD_START: Duration = Duration::from_secs(2);
    pub const JOB_RUN: Duration = Duration::from_secs(3);
    pub const NODE_BOOT: Duration = Duration::from_secs(10);
    pub const CONTROL_PLANE_UPGRADE: Duration = Duration::from_secs(30);
    /// kube-apiserver's `--etcd-compaction-interval`.
    pub const COMPACTION: Duration = Duration::from_secs(300);
}

/// Annotation marking simulated state on objects (e.g. a booting node).
pub(crate) const ANNOTATION_PREFIX: &str = "sim.tidemark.dev/";

/// Timers and memory of the controllers between ticks.
pub(crate) struct Ctx<'a> {
    pub shared: &'a Shared,
    pub now: Instant,
    timers: &'a mut HashMap<String, Instant>,
    /// Last message reported per key, so Events are emitted on change only.
    reported: &'a mut HashMap<String, String>,
    /// When the object being reconciled is to be reconciled again without a change (see
    /// [`queue::Queue::reconcile`]).
    wake: Option<Instant>,
}

impl Ctx<'_> {
    /// How long ago `key` was first seen (starting its timer now if new).
    pub fn since(&mut self, key: &str) -> Duration {
        let start = *self.timers.entry(key.to_string()).or_insert(self.now);
        self.now.saturating_duration_since(start)
    }

    /// Whether `realistic` (scaled by speed) has passed since `key` was first seen; if not,
    /// the object being reconciled is woken when it has.
    pub fn elapsed(&mut self, key: &str, realistic: Duration) -> bool {
        let d = self.shared.scaled(realistic);
        let since = self.since(key);
        if since < d {
            self.wake_at(self.now + (d - since));
        }
        since >= d
    }

    /// Reconciles the object being reconciled again at `at` (at the first tick from then).
    pub fn wake_at(&mut self, at: Instant) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    /// Reconciles the object being reconciled again on the next tick: it is in the middle of
    /// something that progresses with time, or a write of its failed (as when every object
    /// was reconciled on every tick, a failed write is tried again on the next one).
    pub fn requeue(&mut self) {
        self.wake_at(self.now);
    }

    pub fn forget(&mut self, key: &str) {
        self.timers.remove(key);
    }

    /// Records a Kubernetes Event about `obj` when `message` differs from the last one for `key`.
    pub fn report(
        &mut self,
        store: &mut Store,
        key: &str,
        obj: &Value,
        kind_type: &str,
        reason: &str,
        message: &str,
    ) {
        if self.reported.get(key).map(String::as_str) == Some(message) {
            return;
        }
        self.reported.insert(key.to_string(), message.to_string());
        record_event(store, obj, kind_type, reason, message);
    }
}

/// Writes a core/v1 Event about `obj`.
pub(crate) fn record_event(
    store: &mut Store,
    obj: &Value,
    kind_type: &str,
    reason: &str,
    message: &str,
) {
    let Some(def) = store.registry.find("", "v1", "events").cloned() else {
        return;
    };
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let t = now();
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": ns},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": name,
            "namespace": obj.pointer("/metadata/namespace"), "uid": obj.pointer("/metadata/uid"),
        },
        "reason": reason, "message": message, "type": kind_type,
        "source": {"component": "sim-controller-manager"},
        "firstTimestamp": t, "lastTimestamp": t, "count": 1,
        "reportingComponent": "sim-controller-manager",
    });
    let _ = store.create(&def, ev, Writer::CONTROLLER);
}

pub(crate) fn def(store: &Store, group: &str, version: &str, plural: &str) -> Option<ResourceDef> {
    store.registry.find(group, version, plural).cloned()
}

pub(crate) fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

pub(crate) fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or_default()
}

/// Writes `status` if it differs from the object's.
pub(crate) fn set_status(store: &mut Store, def: &ResourceDef, obj: &Value, status: Value) {
    set_status_as(store, def, obj, status, Writer::CONTROLLER);
}

/// [`set_status`] by another writer.
pub(crate) fn set_status_as(
    store: &mut Store,
    def: &ResourceDef,
    obj: &Value,
    status: Value,
    writer: Writer,
) {
    if obj.get("status") == Some(&status) {
        return;
    }
    let mut new = obj.clone();
    new["status"] = status;
    let scope = if def.has_status {
        Scope::Status
    } else {
        Scope::Main { has_status: false }
    };
    if let Err(e) = store.update(def, new, scope, writer) {
        tracing::debug!(error = %e.message, "controller status write failed");
    }
}

/// Writes a changed object (spec/metadata).
pub(crate) fn write(store: &mut Store, def: &ResourceDef, new: Value) -> Option<Value> {
    write_as(store, def, new, Writer::CONTROLLER)
}

/// [`write`] by another writer.
pub(crate) fn write_as(
    store: &mut Store,
    def: &ResourceDef,
    new: Value,
    writer: Writer,
) -> Option<Value> {
    match store.update(
        def,
        new,
        Scope::Main {
            has_status: def.has_status,
        },
        writer,
    ) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::debug!(error = %e.message, "controller write failed");
            None
        }
    }
}

/// The controller ownerReference pointing at `owner`.
pub(crate) fn owner_ref(owner: &Value) -> Value {
    json!([{
        "apiVersion": owner.get("apiVersion"), "kind": owner.get("kind"),
        "name": owner.pointer("/metadata/name"), "uid": owner.pointer("/metadata/uid"),
        "controller": true, "blockOwnerDeletion": true,
    }])
}

/// Whether `obj` is controlled by the object with `uid`.
pub(crate) fn owned_by(obj: &Value, uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}

/// A condition entry.
pub(crate) fn condition(kind: &str, ok: bool, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": if ok { "True" } else { "False" }, "reason": reason, "message": message, "lastTransitionTime": now()})
}

/// Keeps `lastTransitionTime` of conditions whose status did not change, so that status
/// writes stay no-ops when nothing changed.
pub(crate) fn keep_transitions(old: Option<&Value>, conds: &mut [Value]) {
    let Some(old) = old.and_then(Value::as_array) else {
        return;
    };
    for c in conds.iter_mut() {
        let same = old
            .iter()
            .find(|o| o.get("type") == c.get("type") && o.get("status") == c.get("status"));
        if let Some(t) = same.and_then(|o| o.get("lastTransitionTime")) {
            c["lastTransitionTime"] = t.clone();
        }
    }
}

/// Creates the objects a fresh cluster has: namespaces, APIServices, and Cluster API's CRDs
/// when it runs there (`capi`). Nodes come from Cluster API's Machines
/// ([`capi::create_cluster`]) or, in a cluster Cluster API does not manage, from
/// [`plain_nodes`].
pub(crate) fn bootstrap(store: &mut Store, config: &SimConfig, capi: Option<capi::CapiApi>) {
    if let Some(nsdef) = def(store, "", "v1", "namespaces") {
        for ns in [
            "default",
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "tidemark-system",
        ] {
            let _ = store.create(
                &nsdef,
                json!({"metadata": {"name": ns}}),
                Writer::CONTROLLER,
            );
        }
    }
    if let Some(api) = capi {
        capi::install(store, api);
    }
    apiservices::bootstrap(store, &config.unavailable_api_services);
}

/// Nodes of the node groups of a cluster Cluster API does not manage (a management sim's
/// own), Ready, named `<cluster>-<group>-xxxxx`.
pub(crate) fn plain_nodes(store: &mut Store, config: &SimConfig, version: Version) {
    for (group, count) in &config.node_groups {
        let version = config.group_version(group).unwrap_or(version);
        for _ in 0..*count {
            let name = nodes::plain_name(store, &config.cluster_name, group);
            nodes::create(
                store,
                nodes::NewNode {
                    name,
                    group,
                    version,
                    ready: true,
                    labels: serde_json::Map::new(),
                    annotations: serde_json::Map::new(),
                },
            );
        }
    }
}

/// What the controllers remember between ticks: which objects each has seen and which wait
/// for a timer.
#[derive(Default)]
struct Queues {
    nodes: queue::Queue,
    capi: capi::Queues,
    workloads: workloads::Queues,
    budgets: queue::Queue,
    namespaces: queue::Queue,
    crds: queue::Queue,
    apiservices: queue::Queue,
    /// The store's resourceVersion at the start of the last namespace and garbage sweep.
    /// When it is still that, the sweep changed nothing and nothing else changed since:
    /// another sweep would find nothing to do. (A sweep that changed something runs again,
    /// as its changes can leave more to do: pods of a ReplicaSet it collected.)
    swept: Option<u64>,
}

/// Runs the controllers until shutdown.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut timers = HashMap::new();
    let mut reported = HashMap::new();
    let mut queues = Queues::default();
    let tick = shared
        .scaled(durations::TICK)
        .clamp(Duration::from_millis(10), Duration::from_millis(500));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    // etcd compaction: every interval, the history up to the previous one is forgotten.
    let compaction = shared.scaled(durations::COMPACTION);
    let mut compacted_at = (Instant::now(), shared.lock_store().resource_version());
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = interval.tick() => {}
        }
        n += 1;
        let mut store = shared.lock_store();
        let mut ctx = Ctx {
            shared: &shared,
            now: Instant::now(),
            timers: &mut timers,
            reported: &mut reported,
            wake: None,
        };
        crds::reconcile(&mut store, &mut ctx, &mut queues.crds);
        apiservices::reconcile(&mut store, &mut ctx, &mut queues.apiservices);
        namespaces::reconcile(&mut store, &mut ctx, &mut queues.namespaces);
        nodes::reconcile(&mut store, &mut ctx, &mut queues.nodes);
        capi::reconcile(&mut store, &mut ctx, &mut queues.capi);
        workloads::reconcile(&mut store, &mut ctx, &mut queues.workloads);
        eviction::reconcile(&mut store, &mut ctx, &mut queues.budgets);
        if ctx.now.duration_since(compacted_at.0) >= compaction {
            store.compact(compacted_at.1);
            compacted_at = (ctx.now, store.resource_version());
        }
        // Both sweeps depend on the stored objects only: skip them while nothing changed.
        let rv = store.resource_version();
        if n.is_multiple_of(4) && queues.swept != Some(rv) {
            for ns in store.terminating_namespaces() {
                store.finish_namespace(&ns);
            }
            store.collect_garbage();
            queues.swept = Some(rv);
        }
    }
}
