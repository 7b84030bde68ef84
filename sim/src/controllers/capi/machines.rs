//! Machines: each runs as one Node of the workload cluster, and its deletion drains that
//! Node first, as Cluster API 1.11's Machine controller does (`machine_controller.go`,
//! `drain/drain.go`):
//!
//! - A Machine without a Node gets one (booting, then Ready); `status.nodeRef` names it
//!   (`{name}` in v1beta2), `spec.providerID` is `sim://<node>`, and the Node gets Cluster
//!   API's annotations and the labels it syncs from the Machine.
//! - A deleted Machine (it has the finalizer `machine.cluster.x-k8s.io`, so it gets a
//!   `deletionTimestamp` and stays) cordons its Node and evicts its Pods through the
//!   eviction rules (PodDisruptionBudgets; DaemonSet and mirror Pods stay). While an
//!   eviction is refused the Machine says so, with Cluster API's message naming each Pod and
//!   the budget: v1beta2 condition `Deleting` (reason `DrainingNode`), v1beta1
//!   `DrainingSucceeded=False` (reason `Draining`), from `status.deletion.nodeDrainStartTime`.
//!   Once drained, the Node is deleted and the finalizer removed.
//! - `spec.deletion.nodeDrainTimeoutSeconds` (v1beta1 `nodeDrainTimeout`): once that long
//!   (wall-clock seconds, not scaled by the sim's speed) has passed since the drain started,
//!   the drain is skipped and the Machine deleted anyway, Pods and all; without it, a drain
//!   waits forever. Forced deletions are counted (`tidemark sim ctl state`: `drainsForced`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};

use super::{
    Kind, Kinds, Managed, Stores, keep_times, keys, label, v, v1beta1_condition, v1beta2_condition,
};
use crate::Version;
use crate::controllers::{Ctx, eviction, i, nodes, owner_ref, s};
use crate::store::{Store, now};

/// Whether the Node of `machine` is Ready.
pub(crate) fn node_ready(workload: &Store, machine: &Value) -> bool {
    let name = s(machine, "/status/nodeRef/name");
    let Some(d) = crate::controllers::def(workload, "", "v1", "nodes") else {
        return false;
    };
    !name.is_empty() && workload.get(&d.gr(), "", name).is_some_and(nodes::is_ready)
}

/// Whether a Machine label is one Cluster API syncs to its Node.
fn synced(key: &str) -> bool {
    let prefix = key.split('/').next().unwrap_or_default();
    key.contains('/')
        && (prefix == "node-role.kubernetes.io"
            || prefix == "node-restriction.kubernetes.io"
            || prefix == "node.cluster.x-k8s.io"
            || prefix.ends_with(".node.cluster.x-k8s.io"))
}

/// Creates a Machine of MachineDeployment `md` (hub shape) at `version`, and its Node
/// (Ready now when `ready`, else booting).
pub(crate) fn create(
    stores: &mut Stores,
    kinds: &Kinds,
    md: &Value,
    version: Version,
    ready: bool,
) -> Option<Value> {
    let md_name = s(md, "/metadata/name");
    let ns = s(md, "/metadata/namespace");
    let name = format!("{md_name}-{}", stores.mgmt.rng.suffix(5));
    let mut labels = md
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    labels[keys::CLUSTER_NAME] = json!(label(md, keys::CLUSTER_NAME));
    labels[keys::DEPLOYMENT_NAME] = json!(md_name);
    let mut spec = md
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or_else(|| json!({}));
    spec["version"] = json!(v(version));
    spec["bootstrap"] = json!({
        "configRef": {"apiGroup": super::BOOTSTRAP_GROUP, "kind": "KubeadmConfig", "name": name},
        "dataSecretName": name,
    });
    spec["infrastructureRef"] =
        json!({"apiGroup": super::INFRASTRUCTURE_GROUP, "kind": "SimMachine", "name": name});
    spec["providerID"] = json!(format!("sim://{name}"));
    if let Some(m) = spec.as_object_mut() {
        m.remove("minReadySeconds");
    }
    let owner = kinds.stored(Kind::MachineDeployment, md.clone());
    let machine = json!({
        "apiVersion": format!("{}/v1beta2", super::CLUSTER_GROUP), "kind": "Machine",
        "metadata": {"name": name, "namespace": ns, "labels": labels,
            "ownerReferences": owner_ref(&owner), "finalizers": [keys::MACHINE_FINALIZER]},
        "spec": spec,
    });
    let mut machine = kinds.create(stores.mgmt, Kind::Machine, machine)?;
    let node = provision(stores, &machine, version, ready)?;
    let status = running_status(&machine, Some(&node));
    kinds.set_status(stores.mgmt, Kind::Machine, &machine, status.clone());
    machine["status"] = status;
    Some(machine)
}

/// Creates the Node of `machine` in the workload cluster.
fn provision(stores: &mut Stores, machine: &Value, version: Version, ready: bool) -> Option<Value> {
    let name = s(machine, "/metadata/name").to_string();
    let mut labels = Map::new();
    for (k, val) in machine
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if synced(k) {
            labels.insert(k.clone(), val.clone());
        }
    }
    let owner = machine.pointer("/metadata/ownerReferences/0");
    let mut annotations = Map::new();
    for (k, val) in [
        (
            keys::CLUSTER_NAME,
            s(machine, "/spec/clusterName").to_string(),
        ),
        (
            keys::CLUSTER_NAMESPACE,
            s(machine, "/metadata/namespace").to_string(),
        ),
        (keys::MACHINE, name.clone()),
        (
            keys::OWNER_KIND,
            owner.map(|o| s(o, "/kind").to_string()).unwrap_or_default(),
        ),
        (
            keys::OWNER_NAME,
            owner.map(|o| s(o, "/name").to_string()).unwrap_or_default(),
        ),
        (
            keys::LABELS_FROM_MACHINE,
            labels.keys().cloned().collect::<Vec<_>>().join(","),
        ),
    ] {
        annotations.insert(k.into(), json!(val));
    }
    let group = label(machine, crate::labels::NODE_GROUP).to_string();
    nodes::create(
        stores.wl(),
        nodes::NewNode {
            name,
            group: &group,
            version,
            ready,
            labels,
            annotations,
        },
    )
}

/// Deletes `machine`: it gets its `deletionTimestamp` and is drained by [`reconcile`].
pub(crate) fn delete(stores: &mut Stores, kinds: &Kinds, machine: &Value) {
    let d = kinds.def(Kind::Machine);
    if let Err(e) = stores.mgmt.delete(
        d,
        s(machine, "/metadata/namespace"),
        s(machine, "/metadata/name"),
    ) {
        tracing::debug!(error = %e.message, "machine delete failed");
    }
}

/// The status (hub shape) of a Machine that is not being deleted, with its Node.
fn running_status(machine: &Value, node: Option<&Value>) -> Value {
    let generation = i(machine, "/metadata/generation");
    let node_name = s(machine, "/status/nodeRef/name").to_string();
    let node_name = if node_name.is_empty() {
        node.map(|n| s(n, "/metadata/name").to_string())
            .unwrap_or_default()
    } else {
        node_name
    };
    let ready = node.is_some_and(nodes::is_ready);
    let (node_reason, node_msg) = match node {
        None => ("NodeDoesNotExist", "* Node does not exist".to_string()),
        Some(_) if ready => ("NodeReady", String::new()),
        Some(n) => {
            let why = n
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| s(c, "/type") == "Ready"))
                .map(|c| s(c, "/message").to_string())
                .unwrap_or_default();
            ("NodeNotReady", format!("* Node.Ready: {why}"))
        }
    };
    let v2 = vec![
        v1beta2_condition(
            "Available",
            ready,
            if ready { "Available" } else { "NotReady" },
            "",
            generation,
        ),
        v1beta2_condition(
            "Ready",
            ready,
            if ready { "Ready" } else { "NotReady" },
            &node_msg,
            generation,
        ),
        v1beta2_condition("BootstrapConfigReady", true, "Ready", "", generation),
        v1beta2_condition("InfrastructureReady", true, "Ready", "", generation),
        v1beta2_condition("NodeReady", ready, node_reason, &node_msg, generation),
        v1beta2_condition("Deleting", false, "NotDeleting", "", generation),
    ];
    let node_healthy = match node {
        None => v1beta1_condition("NodeHealthy", false, "NodeNotFound", "Error", ""),
        Some(_) if ready => v1beta1_condition("NodeHealthy", true, "", "", ""),
        Some(_) => v1beta1_condition(
            "NodeHealthy",
            false,
            "NodeConditionsFailed",
            "Warning",
            "Node condition Ready is False",
        ),
    };
    let mut ready1 = node_healthy.clone();
    ready1["type"] = json!("Ready");
    let v1 = vec![
        ready1,
        v1beta1_condition("BootstrapReady", true, "", "", ""),
        v1beta1_condition("InfrastructureReady", true, "", "", ""),
        node_healthy,
    ];
    let mut status = json!({
        "phase": if node_name.is_empty() { "Provisioning" } else { "Running" },
        "observedGeneration": generation,
        "initialization": {"infrastructureProvisioned": true, "bootstrapDataSecretCreated": true},
        "conditions": v2,
        "deprecated": {"v1beta1": {"conditions": v1}},
    });
    if !node_name.is_empty() {
        status["nodeRef"] = json!({"name": node_name});
    }
    if let Some(info) = node.and_then(|n| n.pointer("/status/nodeInfo")) {
        status["nodeInfo"] = info.clone();
    }
    status
}

/// Reconciles every Machine of the cluster `m`.
/// `seen` remembers, per Machine uid, the resourceVersions of the Machine and its Node when
/// their status was last computed: a running Machine whose Node did not change since is not
/// looked at again (a tick costs what changed).
pub(crate) fn reconcile(
    stores: &mut Stores,
    ctx: &mut Ctx,
    kinds: &Kinds,
    m: &Managed,
    seen: &mut HashMap<String, (String, String)>,
) {
    let machines = kinds.of_cluster(stores.mgmt, Kind::Machine, &m.namespace, &m.name);
    seen.retain(|uid, _| machines.iter().any(|x| s(x, "/metadata/uid") == uid));
    for machine in machines {
        if machine.pointer("/metadata/deletionTimestamp").is_some() {
            deleting(stores, ctx, kinds, m, &machine);
            continue;
        }
        let node_name = s(&machine, "/status/nodeRef/name").to_string();
        let node = if node_name.is_empty() {
            let version = Version::parse(s(&machine, "/spec/version"));
            version.and_then(|ver| provision(stores, &machine, ver, false))
        } else {
            nodes::get(stores.wl(), &node_name)
        };
        let versions = (
            s(&machine, "/metadata/resourceVersion").to_string(),
            node.as_ref()
                .map(|n| s(n, "/metadata/resourceVersion").to_string())
                .unwrap_or_default(),
        );
        let uid = s(&machine, "/metadata/uid").to_string();
        if seen.get(&uid) == Some(&versions) {
            continue;
        }
        seen.insert(uid, versions);
        let mut status = running_status(&machine, node.as_ref());
        if node.as_ref().is_some_and(|n| !nodes::is_ready(n)) {
            // Booting: look again until Ready (the Node's change wakes it too).
            ctx.requeue();
        }
        keep_times(&machine, &mut status);
        kinds.set_status(stores.mgmt, Kind::Machine, &machine, status);
    }
}

/// What a drain attempt left.
enum Drain {
    Done,
    /// Cluster API's lines after "Drain not completed yet (started at ...):".
    Held(Vec<String>),
}

/// `ns/a, ns/b, ns/c, ... (2 more)`.
fn pod_list(pods: &[String]) -> String {
    let mut shown: Vec<String> = pods.iter().take(3).cloned().collect();
    if pods.len() > 3 {
        shown.push(format!("... ({} more)", pods.len() - 3));
    }
    shown.join(", ")
}

fn pods_word(n: usize) -> &'static str {
    if n > 1 { "Pods" } else { "Pod" }
}

/// Evicts what can be evicted from `node` (cordoned first).
fn drain(store: &mut Store, node: &Value) -> Drain {
    let Some(pd) = crate::controllers::def(store, "", "v1", "pods") else {
        return Drain::Done;
    };
    nodes::cordon(store, node);
    let name = s(node, "/metadata/name").to_string();
    let pods: Vec<Value> = store
        .list(&pd.gr(), None)
        .filter(|p| s(p, "/spec/nodeName") == name)
        .filter(|p| {
            // DaemonSet Pods and mirror Pods are not drained.
            let ds = p
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|r| {
                    r.iter().any(|o| {
                        s(o, "/kind") == "DaemonSet"
                            && o.get("controller").and_then(Value::as_bool) == Some(true)
                    })
                });
            let mirror = p
                .pointer("/metadata/annotations")
                .and_then(|a| a.get("kubernetes.io/config.mirror"))
                .is_some();
            !ds && !mirror
        })
        .cloned()
        .collect();
    let mut deleting = Vec::new();
    let mut failed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in pods {
        let id = format!(
            "{}/{}",
            s(&p, "/metadata/namespace"),
            s(&p, "/metadata/name")
        );
        if p.pointer("/metadata/deletionTimestamp").is_some() {
            deleting.push(id);
            continue;
        }
        match eviction::check(store, &p) {
            Ok(()) => {
                if let Err(e) =
                    store.delete(&pd, s(&p, "/metadata/namespace"), s(&p, "/metadata/name"))
                {
                    tracing::debug!(error = %e.message, "evicted pod delete failed");
                }
            }
            Err(e) => {
                // Cluster API adds the causes to a 429's message.
                let causes: Vec<&str> = e
                    .details
                    .as_ref()
                    .and_then(|d| d.get("causes"))
                    .and_then(Value::as_array)
                    .map(|cs| cs.iter().map(|c| s(c, "/message")).collect())
                    .unwrap_or_default();
                let msg = if e.code == 429 && !causes.is_empty() {
                    format!("{} {}", e.message, causes.join(","))
                } else {
                    e.message.clone()
                };
                failed.entry(msg).or_default().push(id);
            }
        }
    }
    if deleting.is_empty() && failed.is_empty() {
        return Drain::Done;
    }
    let mut lines = Vec::new();
    if !deleting.is_empty() {
        lines.push(format!(
            "* {} {}: deletionTimestamp set, but still not removed from the Node",
            pods_word(deleting.len()),
            pod_list(&deleting)
        ));
    }
    const BUDGET: &str = "cannot evict pod as it would violate the pod's disruption budget.";
    let shown = failed.len().min(5);
    for (failure, pods) in failed.iter().take(5) {
        let failure = failure.replace(
            "Cannot evict pod as it would violate the pod's disruption budget.",
            BUDGET,
        );
        let failure = if failure.starts_with(BUDGET) {
            failure
        } else {
            format!("failed to evict Pod, {failure}")
        };
        lines.push(format!(
            "* {} {}: {failure}",
            pods_word(pods.len()),
            pod_list(pods)
        ));
    }
    let other: usize = failed.values().skip(shown).map(Vec::len).sum();
    if other == 1 {
        lines.push("* 1 Pod with other issues".into());
    } else if other > 1 {
        lines.push(format!("* {other} Pods with other issues"));
    }
    Drain::Held(lines)
}

/// Whether the drain of a Machine started at `start` (RFC 3339) has run out of
/// `timeout_seconds`.
fn drain_timed_out(start: &str, timeout_seconds: i64) -> bool {
    if timeout_seconds <= 0 {
        return false;
    }
    let Ok(start) = start.parse::<jiff::Timestamp>() else {
        return false;
    };
    jiff::Timestamp::now().duration_since(start).as_secs() >= timeout_seconds
}

/// A deleted Machine: drain its Node (or give up after `nodeDrainTimeout`), delete the Node,
/// remove the finalizer.
fn deleting(stores: &mut Stores, ctx: &mut Ctx, kinds: &Kinds, m: &Managed, machine: &Value) {
    let name = s(machine, "/metadata/name").to_string();
    let node_name = s(machine, "/status/nodeRef/name").to_string();
    let node = if node_name.is_empty() {
        None
    } else {
        nodes::get(stores.wl(), &node_name)
    };
    let stored = kinds.stored(Kind::Machine, machine.clone());
    if let Some(node) = &node {
        let start = match s(machine, "/status/deletion/nodeDrainStartTime") {
            "" => now(),
            t => t.to_string(),
        };
        let timeout = machine
            .pointer("/spec/deletion/nodeDrainTimeoutSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if drain_timed_out(&start, timeout) {
            // Cluster API skips the drain once nodeDrainTimeout has passed.
            m.drains_forced.fetch_add(1, Ordering::Relaxed);
            tracing::info!(machine = %name, node = %node_name, "sim: nodeDrainTimeout exceeded, deleting the machine without draining");
        } else {
            match drain(stores.wl(), node) {
                Drain::Held(lines) => {
                    let message = format!(
                        "Drain not completed yet (started at {start}):\n{}",
                        lines.join("\n")
                    );
                    let generation = i(machine, "/metadata/generation");
                    let mut status = machine.get("status").cloned().unwrap_or_else(|| json!({}));
                    status["phase"] = json!("Deleting");
                    status["deletion"]["nodeDrainStartTime"] = json!(start);
                    status["conditions"] = json!([
                        v1beta2_condition("Available", true, "Available", "", generation),
                        v1beta2_condition(
                            "Ready",
                            false,
                            "Deleting",
                            "* Deleting: Machine deletion in progress, stage: DrainingNode",
                            generation
                        ),
                        v1beta2_condition("Deleting", true, "DrainingNode", &message, generation),
                    ]);
                    let draining =
                        v1beta1_condition("DrainingSucceeded", false, "Draining", "Info", &message);
                    let mut ready = draining.clone();
                    ready["type"] = json!("Ready");
                    status["deprecated"] = json!({"v1beta1": {"conditions": [ready, draining]}});
                    keep_times(machine, &mut status);
                    kinds.set_status(stores.mgmt, Kind::Machine, machine, status);
                    // Cluster API retries a drain every 20 s; the sim at every tick.
                    ctx.requeue();
                    return;
                }
                Drain::Done => {
                    ctx.report(
                        stores.mgmt,
                        &format!("machine-drain/{}", s(machine, "/metadata/uid")),
                        &stored,
                        "Normal",
                        "SuccessfulDrainNode",
                        &format!("success draining Machine's node \"{node_name}\""),
                    );
                }
            }
        }
        if let Some(d) = crate::controllers::def(stores.wl(), "", "v1", "nodes")
            && let Err(e) = stores.wl().delete(&d, "", &node_name)
        {
            tracing::debug!(error = %e.message, "node delete failed");
        }
    }
    // The finalizer goes: the Machine is gone.
    let mut done = stored;
    if let Some(f) = done
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        f.retain(|x| x.as_str() != Some(keys::MACHINE_FINALIZER));
    }
    if crate::controllers::write_as(stores.mgmt, kinds.def(Kind::Machine), done, super::WRITER)
        .is_some()
    {
        m.machines_deleted.fetch_add(1, Ordering::Relaxed);
    } else {
        ctx.requeue();
    }
}
