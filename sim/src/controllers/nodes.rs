//! Nodes: creation in a node group (labels, kubelet version, capacity), booting (NotReady until
//! the boot time has passed), cordoning, and the facts other controllers ask about nodes
//! (ready, schedulable, kubelet version).

use serde_json::{Map, Value, json};

use super::queue::Queue;
use super::{ANNOTATION_PREFIX, Ctx, def, durations, s, write};
use crate::Version;
use crate::labels::NODE_GROUP;
use crate::registry::ResourceDef;
use crate::store::{Store, Writer, now};

const BOOTING: &str = "sim.tidemark.dev/booting";

fn conditions(ready: bool) -> Value {
    let t = now();
    let c = |kind: &str, status: &str, reason: &str, msg: &str| json!({"type": kind, "status": status, "reason": reason, "message": msg, "lastHeartbeatTime": t, "lastTransitionTime": t});
    json!([
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        if ready {
            c(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            )
        } else {
            c(
                "Ready",
                "False",
                "KubeletNotReady",
                "container runtime network not ready",
            )
        },
    ])
}

/// A node to create.
pub(crate) struct NewNode<'a> {
    pub name: String,
    /// Its node group: the kubelet registers it with `tidemark.dev/node-group=<group>`
    /// (`--node-labels`).
    pub group: &'a str,
    pub version: Version,
    /// Ready now, or after booting.
    pub ready: bool,
    /// More labels (those Cluster API syncs from its Machine).
    pub labels: Map<String, Value>,
    /// Annotations (those Cluster API writes).
    pub annotations: Map<String, Value>,
}

/// A name for a node of `group` of `cluster` not backed by a Machine: `<cluster>-<group>-xxxxx`.
pub(crate) fn plain_name(store: &mut Store, cluster: &str, group: &str) -> String {
    format!("{cluster}-{group}-{}", store.rng.suffix(5))
}

/// Creates a node (Ready now or after booting) with the usual labels, capacity and kubelet
/// version.
pub(crate) fn create(store: &mut Store, node: NewNode) -> Option<Value> {
    let def = def(store, "", "v1", "nodes")?;
    let NewNode {
        name,
        group,
        version,
        ready,
        labels,
        mut annotations,
    } = node;
    let ip = format!(
        "10.0.{}.{}",
        store.rng.next_u64() % 250,
        1 + store.rng.next_u64() % 250
    );
    if !ready {
        annotations.insert(BOOTING.into(), json!("true"));
    }
    let mut all_labels = json!({
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "sim.large", NODE_GROUP: group,
    });
    for (k, v) in labels {
        all_labels[k] = v;
    }
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": all_labels,
            "annotations": annotations,
        },
        "spec": {"providerID": format!("sim://{name}"), "podCIDR": "10.244.0.0/24"},
        "status": {
            "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "4", "memory": "15Gi", "pods": "110", "ephemeral-storage": "95Gi"},
            "conditions": conditions(ready),
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "kubeletVersion": format!("v{version}"), "kubeProxyVersion": format!("v{version}"),
                "containerRuntimeVersion": "containerd://1.7.13", "osImage": "Sim Linux 1.0",
                "kernelVersion": "6.1.0-sim", "operatingSystem": "linux", "architecture": "amd64",
                "machineID": store.rng.uuid(), "systemUUID": store.rng.uuid(), "bootID": store.rng.uuid(),
            },
        },
    });
    store.create(&def, node, Writer::CONTROLLER).ok()
}

pub(crate) fn is_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True")
        })
}

pub(crate) fn is_schedulable(node: &Value) -> bool {
    is_ready(node)
        && node.pointer("/spec/unschedulable").and_then(Value::as_bool) != Some(true)
        && node.pointer("/metadata/deletionTimestamp").is_none()
}

pub(crate) fn kubelet_version(node: &Value) -> Option<Version> {
    Version::parse(s(node, "/status/nodeInfo/kubeletVersion"))
}

/// All nodes.
pub(crate) fn all(store: &Store) -> Vec<Value> {
    match def(store, "", "v1", "nodes") {
        Some(d) => store.list(&d.gr(), None).cloned().collect(),
        None => vec![],
    }
}

/// The node named `name`.
pub(crate) fn get(store: &Store, name: &str) -> Option<Value> {
    let d = def(store, "", "v1", "nodes")?;
    store.get(&d.gr(), "", name).cloned()
}

/// Marks a node unschedulable (idempotent).
pub(crate) fn cordon(store: &mut Store, node: &Value) {
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let Some(d) = def(store, "", "v1", "nodes") else {
        return;
    };
    let mut n = node.clone();
    n["spec"]["unschedulable"] = json!(true);
    n["spec"]["taints"] = json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": now()}]);
    write(store, &d, n);
}

/// Boots nodes: a booting node becomes Ready after the boot time.
pub(crate) fn reconcile(store: &mut Store, ctx: &mut Ctx, queue: &mut Queue) {
    let Some(d) = def(store, "", "v1", "nodes") else {
        return;
    };
    let gr = d.gr();
    let keys = queue.take(store, &gr, ctx.now, |_, _| {});
    queue.reconcile(store, ctx, &gr, keys, |store, ctx, node| {
        boot(store, ctx, &d, node);
    });
}

/// The TTL controller's annotation (the cache TTL of a node's objects; 0 in small clusters).
const TTL: &str = "node.alpha.kubernetes.io/ttl";

fn boot(store: &mut Store, ctx: &mut Ctx, d: &ResourceDef, node: &Value) {
    if node.pointer("/metadata/deletionTimestamp").is_none()
        && node
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(TTL))
            .is_none()
    {
        let mut n = node.clone();
        n["metadata"]["annotations"][TTL] = json!("0");
        if write(store, d, n).is_none() {
            ctx.requeue();
        }
        return;
    }
    if node
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(BOOTING))
        .is_none()
    {
        return;
    }
    let key = format!("node-boot/{}", s(node, "/metadata/uid"));
    if !ctx.elapsed(&key, durations::NODE_BOOT) {
        return;
    }
    ctx.forget(&key);
    let mut n = node.clone();
    if let Some(a) = n
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.retain(|k, _| !k.starts_with(ANNOTATION_PREFIX));
    }
    let Some(n) = write(store, d, n) else {
        ctx.requeue();
        return;
    };
    let mut n2 = n.clone();
    n2["status"]["conditions"] = conditions(true);
    super::set_status(store, d, &n, n2["status"].clone());
}
