//! Workloads: Deployments (through ReplicaSets), ReplicaSets, StatefulSets, DaemonSets and Jobs
//! get pods; pods are scheduled on schedulable Ready nodes, start after a while and become
//! Ready — unless an image name contains `fail`, in which case they crash-loop (or, for Jobs,
//! fail) — and pods on vanished nodes are removed. Workload status follows the pods; a
//! Deployment that makes no progress for `progressDeadlineSeconds` (scaled by speed) reports
//! `Progressing=False` with reason `ProgressDeadlineExceeded`, as Kubernetes does.
//!
//! Each controller reconciles the workloads its queue names (see [`super::queue`]): those that
//! changed, those whose ReplicaSets or pods changed (found through `ownerReferences`), all
//! DaemonSets when a node changed, and pods whose start timer is due.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::eviction::pod_ready;
use super::nodes;
use super::queue::{Keys, Queue, add_owners, key_of, owner_uids};
use super::{
    Ctx, condition, def, durations, i, keep_transitions, owned_by, owner_ref, s, set_status, write,
};
use crate::registry::{GroupResource, ResourceDef};
use crate::store::{Store, WatchEvent, Writer, now};

/// What the workload controllers remember between ticks.
#[derive(Default)]
pub(crate) struct Queues {
    deployments: Queue,
    replicasets: Queue,
    statefulsets: Queue,
    daemonsets: Queue,
    jobs: Queue,
    pods: Queue,
}

/// A stable short hash of a pod template, shaped like Kubernetes' `pod-template-hash`: the
/// FNV-32a hash in decimal, each digit mapped to the alphabet of `rand.SafeEncodeString`.
fn template_hash(template: &Value) -> String {
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let text = serde_json::to_string(template).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_string()
        .bytes()
        .map(|b| char::from(SAFE[usize::from(b) % SAFE.len()]))
        .collect()
}

/// A number derived from a string (for simulated pod IPs).
fn small_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Whether a workload is being deleted: its controller then leaves its pods alone (the
/// garbage collector removes them), as Kubernetes' controllers do.
fn being_deleted(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

fn active(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(s(pod, "/status/phase"), "Succeeded" | "Failed")
}

fn failing(pod: &Value) -> bool {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| s(c, "/image").contains("fail")))
}

/// The pods `owner` controls: those of its namespace whose controller reference names it.
fn pods_of(store: &Store, pd: &ResourceDef, owner: &Value) -> Vec<Value> {
    let uid = s(owner, "/metadata/uid");
    store
        .list(&pd.gr(), Some(s(owner, "/metadata/namespace")))
        .filter(|p| owner_uids(p, true).any(|u| u == uid))
        .cloned()
        .collect()
}

fn is_core(gr: &GroupResource, plural: &str) -> bool {
    gr.group.is_empty() && gr.plural == plural
}

/// The queue's workloads of `gr` to reconcile: changed ones, and the controllers of changed
/// pods (`related` adds more).
fn take_workloads(
    store: &Store,
    ctx: &Ctx,
    queue: &mut Queue,
    gr: &GroupResource,
    mut related: impl FnMut(&WatchEvent, &mut Keys),
) -> Keys {
    queue.take(store, gr, ctx.now, |ev, keys| {
        if is_core(&ev.gr, "pods") {
            add_owners(store, gr, &ev.object, true, keys);
        } else {
            related(ev, keys);
        }
    })
}

/// What a controller sets on a pod besides its template.
#[derive(Default)]
struct PodExtras<'a> {
    /// A fixed name (StatefulSets); else `generateName` is the owner's name and `-`.
    name: Option<String>,
    labels: &'a [(&'a str, String)],
    /// Fields merged into the pod spec (DaemonSet affinity, StatefulSet hostname).
    spec: Option<Value>,
    finalizers: &'a [&'a str],
}

fn new_pod(owner: &Value, template: &Value, x: PodExtras) -> Value {
    let PodExtras {
        name,
        labels: extra,
        spec: extra_spec,
        finalizers,
    } = x;
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    for (k, v) in extra {
        labels[*k] = json!(v);
    }
    let mut meta = json!({
        "namespace": owner.pointer("/metadata/namespace"),
        "labels": labels,
        "ownerReferences": owner_ref(owner),
    });
    meta["generateName"] = json!(format!("{}-", s(owner, "/metadata/name")));
    if let Some(n) = name {
        meta["name"] = json!(n);
    }
    if let Some(a) = template.pointer("/metadata/annotations") {
        meta["annotations"] = a.clone();
    }
    if !finalizers.is_empty() {
        meta["finalizers"] = json!(finalizers);
    }
    let mut spec = template
        .get("spec")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({"containers": []}));
    if let (Some(extra), Some(spec)) = (
        extra_spec.as_ref().and_then(Value::as_object),
        spec.as_object_mut(),
    ) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

/// Creates a pod; a failure is tried again on the next tick.
fn create_pod(store: &mut Store, ctx: &mut Ctx, pd: &ResourceDef, pod: Value) {
    if let Err(e) = store.create(pd, pod, Writer::CONTROLLER) {
        tracing::debug!(error = %e.message, "pod create failed");
        ctx.requeue();
    }
}

/// Writes a changed object; a failure is tried again on the next tick.
fn write_or_requeue(store: &mut Store, ctx: &mut Ctx, def: &ResourceDef, new: Value) {
    if write(store, def, new).is_none() {
        ctx.requeue();
    }
}

fn delete(store: &mut Store, d: &ResourceDef, obj: &Value) {
    let _ = store.delete(d, s(obj, "/metadata/namespace"), s(obj, "/metadata/name"));
}

pub(crate) fn reconcile(store: &mut Store, ctx: &mut Ctx, queues: &mut Queues) {
    let Some(pd) = def(store, "", "v1", "pods") else {
        return;
    };
    deployments(store, ctx, &mut queues.deployments);
    replicasets(store, ctx, &pd, &mut queues.replicasets);
    statefulsets(store, ctx, &pd, &mut queues.statefulsets);
    daemonsets(store, ctx, &pd, &mut queues.daemonsets);
    jobs(store, ctx, &pd, &mut queues.jobs);
    pods(store, ctx, &pd, &mut queues.pods);
}

/// `maxSurge` of a RollingUpdate Deployment resolved against `replicas` (rounded up).
fn max_surge(d: &Value, replicas: i64) -> i64 {
    if d.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate") {
        return 0;
    }
    match d.pointer("/spec/strategy/rollingUpdate/maxSurge") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(p)) => p
            .strip_suffix('%')
            .and_then(|n| n.parse::<i64>().ok())
            .map_or(0, |pct| (replicas * pct + 99) / 100),
        _ => 0,
    }
}

/// A Deployment condition: Deployments also say when the condition was last updated.
fn deployment_condition(kind: &str, ok: bool, reason: &str, message: &str) -> Value {
    let t = now();
    json!({"type": kind, "status": if ok { "True" } else { "False" }, "reason": reason,
        "message": message, "lastUpdateTime": t, "lastTransitionTime": t})
}

/// Keeps `lastTransitionTime` of Deployment conditions whose status stayed, and
/// `lastUpdateTime` of those that did not change at all.
fn keep_deployment_times(old: Option<&Value>, conds: &mut [Value]) {
    keep_transitions(old, conds);
    let Some(old) = old.and_then(Value::as_array) else {
        return;
    };
    for c in conds.iter_mut() {
        let same = old.iter().find(|o| {
            ["type", "status", "reason", "message"]
                .iter()
                .all(|k| o.get(*k) == c.get(*k))
        });
        if let Some(t) = same.and_then(|o| o.get("lastUpdateTime")) {
            c["lastUpdateTime"] = t.clone();
        }
    }
}

/// The timer of a Deployment's progress: a new generation or more updated or available
/// replicas is progress and starts a new one (as `progressDeadlineSeconds` counts).
fn progress_key(uid: &str, generation: i64, updated: i64, available: i64) -> String {
    format!("deploy-progress/{uid}/{generation}/{updated}/{available}")
}

fn deployments(store: &mut Store, ctx: &mut Ctx, queue: &mut Queue) {
    let (Some(dd), Some(rsd)) = (
        def(store, "apps", "v1", "deployments"),
        def(store, "apps", "v1", "replicasets"),
    ) else {
        return;
    };
    let (gr, rs_gr) = (dd.gr(), rsd.gr());
    let keys = queue.take(store, &gr, ctx.now, |ev, keys| {
        if ev.gr == rs_gr {
            add_owners(store, &gr, &ev.object, false, keys);
        }
    });
    queue.reconcile(store, ctx, &gr, keys, |store, ctx, d| {
        deployment(store, ctx, &dd, &rsd, d);
    });
}

fn deployment(store: &mut Store, ctx: &mut Ctx, dd: &ResourceDef, rsd: &ResourceDef, d: &Value) {
    if being_deleted(d) {
        return;
    }
    let uid = s(d, "/metadata/uid").to_string();
    let ns = s(d, "/metadata/namespace").to_string();
    let name = s(d, "/metadata/name").to_string();
    let replicas = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let template = d
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let hash = template_hash(&template);
    let rs_name = format!("{name}-{hash}");
    let owned: Vec<Value> = store
        .list(&rsd.gr(), Some(&ns))
        .filter(|r| owned_by(r, &uid))
        .cloned()
        .collect();
    let new_rs = owned
        .iter()
        .find(|r| s(r, "/metadata/name") == rs_name)
        .cloned();
    let surge = max_surge(d, replicas);
    let revision = |r: &Value| {
        s(
            r,
            "/metadata/annotations/deployment.kubernetes.io~1revision",
        )
        .parse::<i64>()
        .unwrap_or(0)
    };
    let max_revision = owned.iter().map(revision).max().unwrap_or(0);
    let rs_annotations = |rev: i64| {
        json!({
            "deployment.kubernetes.io/revision": rev.to_string(),
            "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
            "deployment.kubernetes.io/max-replicas": (replicas + surge).to_string(),
        })
    };
    let new_revision = match &new_rs {
        None => {
            let mut t = template.clone();
            t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut sel = d
                .pointer("/spec/selector")
                .cloned()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            sel["matchLabels"]["pod-template-hash"] = json!(hash);
            let rev = max_revision + 1;
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": ns, "labels": t["metadata"]["labels"].clone(), "ownerReferences": owner_ref(d),
                    "annotations": rs_annotations(rev)},
                "spec": {"replicas": replicas, "selector": sel, "template": t},
            });
            if let Err(e) = store.create(rsd, rs, Writer::CONTROLLER) {
                tracing::debug!(error = %e.message, "replicaset create failed");
                ctx.requeue();
            }
            rev
        }
        Some(rs) => {
            let rev = revision(rs);
            let mut r = rs.clone();
            r["spec"]["replicas"] = json!(replicas);
            if let Some(a) = r
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
                && let Some(want) = rs_annotations(rev).as_object()
            {
                for (k, v) in want {
                    a.insert(k.clone(), v.clone());
                }
            }
            if &r != rs {
                write_or_requeue(store, ctx, rsd, r);
            }
            rev
        }
    };
    // The Deployment carries the revision of its newest ReplicaSet (written with its status).
    let mut with_revision = d.clone();
    with_revision["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
        json!(new_revision.to_string());
    let new_available = new_rs
        .as_ref()
        .map_or(0, |r| i(r, "/status/availableReplicas"));
    if new_available >= replicas {
        for old in owned
            .iter()
            .filter(|r| s(r, "/metadata/name") != rs_name && i(r, "/spec/replicas") != 0)
        {
            let mut r = old.clone();
            r["spec"]["replicas"] = json!(0);
            write_or_requeue(store, ctx, rsd, r);
        }
    }
    let sum = |ptr: &str| owned.iter().map(|r| i(r, ptr)).sum::<i64>();
    let updated = new_rs.as_ref().map_or(0, |r| i(r, "/status/replicas"));
    let available = sum("/status/availableReplicas");
    let complete =
        updated == replicas && sum("/status/replicas") == replicas && new_available == replicas;
    let generation = i(d, "/metadata/generation");
    let key = progress_key(&uid, generation, updated, available);
    let before = progress_key(
        &uid,
        i(d, "/status/observedGeneration"),
        i(d, "/status/updatedReplicas"),
        i(d, "/status/availableReplicas"),
    );
    if before != key {
        ctx.forget(&before);
    }
    let deadline = d
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(600);
    let timed_out = if complete {
        ctx.forget(&key);
        false
    } else {
        ctx.elapsed(&key, std::time::Duration::from_secs(deadline))
    };
    let (progress_reason, progress) = if complete {
        ("NewReplicaSetAvailable", "has successfully progressed.")
    } else if timed_out {
        ("ProgressDeadlineExceeded", "has timed out progressing.")
    } else {
        ("ReplicaSetUpdated", "is progressing.")
    };
    let mut conds = vec![
        deployment_condition(
            "Available",
            available >= replicas,
            if available >= replicas {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            if available >= replicas {
                "Deployment has minimum availability."
            } else {
                "Deployment does not have minimum availability."
            },
        ),
        deployment_condition(
            "Progressing",
            !timed_out,
            progress_reason,
            &format!("ReplicaSet \"{rs_name}\" {progress}"),
        ),
    ];
    keep_deployment_times(d.pointer("/status/conditions"), &mut conds);
    let status = json!({
        "observedGeneration": generation,
        "replicas": sum("/status/replicas"), "updatedReplicas": updated,
        "readyReplicas": sum("/status/readyReplicas"), "availableReplicas": available,
        "unavailableReplicas": (replicas - available).max(0),
        "conditions": conds,
    });
    if &with_revision != d {
        let mut new = with_revision;
        new["status"] = status;
        if let Err(e) = store.update(dd, new, crate::apply::Scope::Status, Writer::CONTROLLER) {
            tracing::debug!(error = %e.message, "deployment status write failed");
            ctx.requeue();
        }
        return;
    }
    set_status(store, dd, d, status);
}

fn replicasets(store: &mut Store, ctx: &mut Ctx, pd: &ResourceDef, queue: &mut Queue) {
    let Some(rsd) = def(store, "apps", "v1", "replicasets") else {
        return;
    };
    let gr = rsd.gr();
    let keys = take_workloads(store, ctx, queue, &gr, |_, _| {});
    queue.reconcile(store, ctx, &gr, keys, |store, ctx, rs| {
        replicaset(store, ctx, pd, &rsd, rs);
    });
}

fn replicaset(store: &mut Store, ctx: &mut Ctx, pd: &ResourceDef, rsd: &ResourceDef, rs: &Value) {
    if being_deleted(rs) {
        return;
    }
    let replicas = rs
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0) as usize;
    let mut pods: Vec<Value> = pods_of(store, pd, rs).into_iter().filter(active).collect();
    if pods.len() < replicas {
        let template = rs
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_else(|| json!({}));
        for _ in pods.len()..replicas {
            create_pod(store, ctx, pd, new_pod(rs, &template, PodExtras::default()));
        }
    } else if pods.len() > replicas {
        pods.sort_by_key(pod_ready);
        for p in pods.drain(..pods.len() - replicas) {
            delete(store, pd, &p);
        }
    }
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let status = json!({
        "replicas": pods.len().max(replicas.min(pods.len())), "fullyLabeledReplicas": pods.len(),
        "readyReplicas": ready, "availableReplicas": ready,
        "observedGeneration": i(rs, "/metadata/generation"),
    });
    set_status(store, rsd, rs, status);
}

fn ordinal(pod: &Value, set: &str) -> Option<usize> {
    s(pod, "/metadata/name")
        .strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn statefulsets(store: &mut Store, ctx: &mut Ctx, pd: &ResourceDef, queue: &mut Queue) {
    let Some(sd) = def(store, "apps", "v1", "statefulsets") else {
        return;
    };
    let gr = sd.gr();
    let keys = take_workloads(store, ctx, queue, &gr, |_, _| {});
    queue.reconcile(store, ctx, &gr, keys, |store, ctx, st| {
        statefulset(store, ctx, pd, &sd, st);
    });
}

fn statefulset(store: &mut Store, ctx: &mut Ctx, pd: &ResourceDef, sd: &ResourceDef, st: &Value) {
    if being_deleted(st) {
        return;
    }
    let name = s(st, "/metadata/name").to_string();
    let replicas = st
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0) as usize;
    let template = st
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let ordered = s(st, "/spec/podManagementPolicy") != "Parallel";
    let hash = template_hash(&template);
    let revision = format!("{name}-{hash}");
    let pods: Vec<Value> = pods_of(store, pd, st).into_iter().filter(active).collect();
    for n in 0..replicas {
        if pods.iter().any(|p| ordinal(p, &name) == Some(n)) {
            continue;
        }
        // OrderedReady: pod n only once pods 0..n are Running and Ready.
        let predecessors_ready = (0..n).all(|m| {
            pods.iter()
                .any(|p| ordinal(p, &name) == Some(m) && pod_ready(p))
        });
        if ordered && !predecessors_ready {
            break;
        }
        let pname = format!("{name}-{n}");
        let labels = [
            ("controller-revision-hash", revision.clone()),
            ("statefulset.kubernetes.io/pod-name", pname.clone()),
            // PodIndexLabel is beta (on) in 1.28.
            ("apps.kubernetes.io/pod-index", n.to_string()),
        ];
        let mut spec = json!({"hostname": pname});
        if let Some(svc) = st.pointer("/spec/serviceName").filter(|v| v.is_string()) {
            spec["subdomain"] = svc.clone();
        }
        let x = PodExtras {
            name: Some(pname),
            labels: &labels,
            spec: Some(spec),
            ..Default::default()
        };
        create_pod(store, ctx, pd, new_pod(st, &template, x));
        if ordered {
            break;
        }
    }
    for p in pods
        .iter()
        .filter(|p| ordinal(p, &name).is_none_or(|o| o >= replicas))
    {
        delete(store, pd, p);
    }
    let is_current = |p: &Value| {
        p.pointer("/metadata/labels/controller-revision-hash")
            .and_then(Value::as_str)
            == Some(revision.as_str())
    };
    let all_ready = pods.len() == replicas && pods.iter().all(pod_ready);
    if all_ready
        && let Some(old) = pods
            .iter()
            .filter(|p| !is_current(p))
            .max_by_key(|p| ordinal(p, &name))
    {
        delete(store, pd, old);
    }
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let updated = pods.iter().filter(|p| is_current(p)).count();
    let current_rev = if updated == pods.len() {
        revision.clone()
    } else {
        st.pointer("/status/currentRevision")
            .and_then(Value::as_str)
            .unwrap_or(&revision)
            .to_string()
    };
    let current = pods
        .iter()
        .filter(|p| {
            p.pointer("/metadata/labels/controller-revision-hash")
                .and_then(Value::as_str)
                == Some(current_rev.as_str())
        })
        .count();
    let status = json!({
        "observedGeneration": i(st, "/metadata/generation"), "replicas": pods.len(),
        "readyReplicas": ready, "availableReplicas": ready, "currentReplicas": current,
        "updatedReplicas": updated, "currentRevision": current_rev, "updateRevision": revision,
        "collisionCount": 0,
    });
    set_status(store, sd, st, status);
}

/// Whether `node` has the labels of the template's `nodeSelector`.
fn node_selected(node: &Value, template: &Value) -> bool {
    let Some(sel) = template
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
    else {
        return true;
    };
    let labels = node.pointer("/metadata/labels");
    sel.iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether `node`'s taints allow a pod with `tolerations` (NoSchedule and NoExecute).
fn tolerates(node: &Value, tolerations: &[Value]) -> bool {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| matches!(s(t, "/effect"), "NoSchedule" | "NoExecute"))
        .all(|t| {
            tolerations.iter().any(|tol| {
                let key_ok = s(tol, "/key").is_empty() || s(tol, "/key") == s(t, "/key");
                let effect_ok =
                    s(tol, "/effect").is_empty() || s(tol, "/effect") == s(t, "/effect");
                let value_ok =
                    s(tol, "/operator") == "Exists" || s(tol, "/value") == s(t, "/value");
                key_ok && effect_ok && value_ok
            })
        })
}

/// The tolerations the DaemonSet controller adds to its pods.
fn daemonset_tolerations(template: &Value) -> Vec<Value> {
    let mut tolerations: Vec<Value> = template
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let add = [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    for (key, effect) in add {
        if !tolerations
            .iter()
            .any(|t| s(t, "/key") == key && s(t, "/effect") == effect)
        {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": effect}));
        }
    }
    if template
        .pointer("/spec/hostNetwork")
        .and_then(Value::as_bool)
        == Some(true)
    {
        tolerations.push(json!({"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"}));
    }
    tolerations
}

fn daemonsets(store: &mut Store, ctx: &mut Ctx, pd: &ResourceDef, queue: &mut Queue) {
    let Some(dsd) = def(store, "apps", "v1", "daemonsets") else {
        return;
    };
    let gr = dsd.gr();
    let keys = take_workloads(store, ctx, queue, &gr, |ev, keys| {
        // Which nodes a DaemonSet runs on.
        if is_core(&ev.gr, "nodes") {
            keys.extend(store.list(&gr, None).map(key_of));
        }
    });
    if keys.is_empty() {
        return;
    }
    let all_nodes = nodes::all(store);
    queue.reconcile(store, ctx, &gr, keys, |store, ctx, ds| {
        daemonset(store, ctx, pd, &dsd, &all_nodes, ds);
    });
}

fn daemonset(
    store: &mut Store,
    ctx: &mut Ctx,
    pd: &ResourceDef,
    dsd: &ResourceDef,
    all_nodes: &[Value],
    ds: &Value,
) {
    if being_deleted(ds) {
        return;
    }
    let template = ds
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let hash = template_hash(&template);
    let generation = s(
        ds,
        "/metadata/annotations/deprecated.daemonset.template.generation",
    )
    .to_string();
    let tolerations = daemonset_tolerations(&template);
    let eligible: Vec<&Value> = all_nodes
        .iter()
        .filter(|n| {
            n.pointer("/metadata/deletionTimestamp").is_none()
                && node_selected(n, &template)
                && tolerates(n, &tolerations)
        })
        .collect();
    // A pod's node: its nodeName, else the node its affinity names (not scheduled yet).
    let node_of = |p: &Value| -> String {
        let bound = s(p, "/spec/nodeName");
        if !bound.is_empty() {
            return bound.to_string();
        }
        s(p, "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values/0").to_string()
    };
    let pods: Vec<Value> = pods_of(store, pd, ds).into_iter().filter(active).collect();
    for n in &eligible {
        let node = s(n, "/metadata/name");
        if !pods.iter().any(|p| node_of(p) == node) {
            let labels = [
                ("controller-revision-hash", hash.clone()),
                ("pod-template-generation", generation.clone()),
            ];
            let spec = json!({
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}},
                "tolerations": tolerations,
            });
            let x = PodExtras {
                labels: &labels,
                spec: Some(spec),
                ..Default::default()
            };
            create_pod(store, ctx, pd, new_pod(ds, &template, x));
        }
    }
    for p in &pods {
        if !eligible
            .iter()
            .any(|n| s(n, "/metadata/name") == node_of(p))
        {
            delete(store, pd, p);
        }
    }
    let is_current = |p: &Value| {
        p.pointer("/metadata/labels/controller-revision-hash")
            .and_then(Value::as_str)
            == Some(hash.as_str())
    };
    if pods.iter().all(pod_ready)
        && let Some(old) = pods.iter().find(|p| !is_current(p))
    {
        delete(store, pd, old);
    }
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let status = json!({
        "observedGeneration": i(ds, "/metadata/generation"),
        "desiredNumberScheduled": eligible.len(), "currentNumberScheduled": pods.len(),
        "numberReady": ready, "numberAvailable": ready, "numberUnavailable": eligible.len().saturating_sub(ready),
        "updatedNumberScheduled": pods.iter().filter(|p| is_current(p)).count(), "numberMisscheduled": 0,
    });
    set_status(store, dsd, ds, status);
}

fn jobs(store: &mut Store, ctx: &mut Ctx, pd: &ResourceDef, queue: &mut Queue) {
    let Some(jd) = def(store, "batch", "v1", "jobs") else {
        return;
    };
    let gr = jd.gr();
    let keys = take_workloads(store, ctx, queue, &gr, |_, _| {});
    queue.reconcile(store, ctx, &gr, keys, |store, ctx, job| {
        job_status(store, ctx, pd, &jd, job);
    });
}

/// The finalizer the Job controller puts on its pods until it has counted them.
const JOB_TRACKING: &str = "batch.kubernetes.io/job-tracking";

/// Removes the job-tracking finalizer of pods that finished or are being deleted.
fn release_pods(store: &mut Store, pd: &ResourceDef, pods: &[Value]) {
    for p in pods {
        let done = !active(p);
        let tracked = p
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x == JOB_TRACKING));
        if done && tracked {
            let mut np = p.clone();
            if let Some(f) = np
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                f.retain(|x| x != JOB_TRACKING);
            }
            write(store, pd, np);
        }
    }
}

fn job_status(store: &mut Store, ctx: &mut Ctx, pd: &ResourceDef, jd: &ResourceDef, job: &Value) {
    let pods: Vec<Value> = pods_of(store, pd, job);
    release_pods(store, pd, &pods);
    if being_deleted(job) {
        return;
    }
    let finished_at = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter().find(|c| {
                matches!(s(c, "/type"), "Complete" | "Failed") && s(c, "/status") == "True"
            })
        })
        .map(|c| s(c, "/lastTransitionTime").to_string());
    if let Some(at) = finished_at {
        ttl_after_finished(store, ctx, jd, job, &at);
        return;
    }
    let completions = job
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let parallelism = job
        .pointer("/spec/parallelism")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let backoff = job
        .pointer("/spec/backoffLimit")
        .and_then(Value::as_i64)
        .unwrap_or(6);
    let count = |phase: &str| {
        pods.iter()
            .filter(|p| s(p, "/status/phase") == phase)
            .count() as i64
    };
    let (succeeded, failed) = (count("Succeeded"), count("Failed"));
    let running = pods.iter().filter(|p| active(p)).count() as i64;
    let start = job
        .pointer("/status/startTime")
        .cloned()
        .unwrap_or_else(|| json!(now()));
    let mut status = json!({"startTime": start, "active": running, "succeeded": succeeded, "failed": failed,
        "ready": pods.iter().filter(|p| pod_ready(p)).count(), "uncountedTerminatedPods": {}});
    if succeeded >= completions {
        status["active"] = json!(0);
        status["completionTime"] = json!(now());
        status["conditions"] = json!([condition("Complete", true, "Completed", "Job completed")]);
    } else if failed > backoff {
        status["active"] = json!(0);
        status["conditions"] = json!([condition(
            "Failed",
            true,
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit"
        )]);
    } else {
        let want = parallelism.min(completions - succeeded) - running;
        let template = job
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_else(|| json!({}));
        for _ in 0..want.max(0) {
            let x = PodExtras {
                finalizers: &[JOB_TRACKING],
                ..Default::default()
            };
            create_pod(store, ctx, pd, new_pod(job, &template, x));
        }
    }
    set_status(store, jd, job, status);
}

/// The TTL-after-finished controller: a finished Job with `ttlSecondsAfterFinished` is
/// deleted (in the foreground, with its pods) that long (scaled by speed) after it finished.
fn ttl_after_finished(store: &mut Store, ctx: &mut Ctx, jd: &ResourceDef, job: &Value, at: &str) {
    let Some(ttl) = job
        .pointer("/spec/ttlSecondsAfterFinished")
        .and_then(Value::as_u64)
    else {
        return;
    };
    let key = format!("job-ttl/{}/{at}", s(job, "/metadata/uid"));
    if !ctx.elapsed(&key, std::time::Duration::from_secs(ttl)) {
        return;
    }
    ctx.forget(&key);
    let _ = store.delete_with(
        jd,
        s(job, "/metadata/namespace"),
        s(job, "/metadata/name"),
        crate::store::Propagation::Foreground,
    );
}

fn pod_status(
    pod: &Value,
    host_ip: Option<&Value>,
    ready: bool,
    phase: &str,
    crash: bool,
) -> Value {
    let t = now();
    let containers: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let state = if crash {
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}})
            } else if phase == "Succeeded" || phase == "Failed" {
                json!({"terminated": {"exitCode": if phase == "Failed" { 1 } else { 0 }, "reason": if phase == "Failed" { "Error" } else { "Completed" }, "finishedAt": t}})
            } else {
                json!({"running": {"startedAt": t}})
            };
            let mut status = json!({"name": c.get("name"), "image": c.get("image"), "imageID": "", "ready": ready, "started": !crash,
                "restartCount": if crash { 3 } else { 0 }, "state": state,
                "containerID": format!("containerd://{}", s(pod, "/metadata/uid").replace('-', ""))});
            if crash {
                status["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": t}});
            }
            status
        })
        .collect();
    let cond = |k: &str, ok: bool| json!({"type": k, "status": if ok { "True" } else { "False" }, "lastTransitionTime": t});
    let h = small_hash(s(pod, "/metadata/uid"));
    let pod_ip = format!("10.244.{}.{}", h % 250, 1 + (h >> 8) % 250);
    json!({
        "phase": phase,
        "conditions": [cond("Initialized", true), cond("Ready", ready), cond("ContainersReady", ready), cond("PodScheduled", true)],
        "hostIP": host_ip,
        "podIP": pod_ip,
        "startTime": pod.pointer("/status/startTime").cloned().unwrap_or_else(|| json!(t)),
        "containerStatuses": containers, "qosClass": "BestEffort",
    })
}

/// What scheduling and starting pods need to know of a node.
struct NodeFacts {
    name: String,
    schedulable: bool,
    /// Its first address (a pod's `hostIP`).
    address: Option<Value>,
    /// The node itself (labels, taints), for a pod's node selector, affinity and tolerations.
    node: Value,
}

/// Whether a pod may go on `n`: its `nodeSelector`, the `metadata.name` fields and label
/// expressions of its required node affinity, and its tolerations of the node's taints.
fn fits(pod: &Value, n: &NodeFacts) -> bool {
    if !node_selected(&n.node, pod) {
        return false;
    }
    let tolerations: Vec<Value> = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !tolerates(&n.node, &tolerations) {
        return false;
    }
    let terms = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array);
    let Some(terms) = terms else { return true };
    let labels = n.node.pointer("/metadata/labels");
    terms.iter().any(|term| {
        let fields_ok = term
            .get("matchFields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|r| {
                let values: Vec<&str> = r
                    .get("values")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let has = s(r, "/key") == "metadata.name" && values.contains(&n.name.as_str());
                match s(r, "/operator") {
                    "In" => has,
                    "NotIn" => !has,
                    _ => false,
                }
            });
        let labels_ok = term
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|r| {
                let value = labels
                    .and_then(|l| l.get(s(r, "/key")))
                    .and_then(Value::as_str);
                let values: Vec<&str> = r
                    .get("values")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                match s(r, "/operator") {
                    "In" => value.is_some_and(|v| values.contains(&v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => true,
                }
            });
        fields_ok && labels_ok
    })
}

fn pods(store: &mut Store, ctx: &mut Ctx, pd: &ResourceDef, queue: &mut Queue) {
    if ctx.shared.config.pods == crate::PodLifecycle::Pending {
        // No scheduler, no kubelet: pods stay as created.
        return;
    }
    let gr = pd.gr();
    let keys = queue.take(store, &gr, ctx.now, |ev, keys| {
        // A node came, went or changed: pods waiting for a node, and the node's own pods.
        if is_core(&ev.gr, "nodes") {
            let node = s(&ev.object, "/metadata/name");
            keys.extend(
                store
                    .list(&gr, None)
                    .filter(|p| active(p) && ["", node].contains(&s(p, "/spec/nodeName")))
                    .map(key_of),
            );
        }
    });
    if keys.is_empty() {
        return;
    }
    let node_list: Vec<NodeFacts> = match def(store, "", "v1", "nodes") {
        Some(nd) => store
            .list(&nd.gr(), None)
            .map(|n| NodeFacts {
                name: s(n, "/metadata/name").to_string(),
                schedulable: nodes::is_schedulable(n),
                address: n.pointer("/status/addresses/0/address").cloned(),
                node: n.clone(),
            })
            .collect(),
        None => Vec::new(),
    };
    // Active pods per node, counted when a pod is to be scheduled.
    let mut load: Option<HashMap<String, usize>> = None;
    queue.reconcile(store, ctx, &gr, keys, |store, ctx, pod| {
        if !active(pod) {
            return;
        }
        if s(pod, "/spec/nodeName").is_empty() {
            let load = load.get_or_insert_with(|| {
                let mut load: HashMap<String, usize> = HashMap::new();
                for p in store.list(&gr, None).filter(|p| active(p)) {
                    *load.entry(s(p, "/spec/nodeName").to_string()).or_default() += 1;
                }
                load
            });
            schedule(store, ctx, pd, &node_list, load, pod);
        } else {
            start(store, ctx, pd, &node_list, pod);
        }
    });
}

/// Puts a pod on the schedulable node with the fewest pods, or says why it cannot.
fn schedule(
    store: &mut Store,
    ctx: &mut Ctx,
    pd: &ResourceDef,
    node_list: &[NodeFacts],
    load: &mut HashMap<String, usize>,
    pod: &Value,
) {
    let candidate = node_list
        .iter()
        .filter(|n| n.schedulable && fits(pod, n))
        .min_by_key(|n| load.get(&n.name).copied().unwrap_or(0));
    match candidate {
        Some(n) => {
            *load.entry(n.name.clone()).or_default() += 1;
            let mut p = pod.clone();
            p["spec"]["nodeName"] = json!(n.name);
            match write(store, pd, p) {
                Some(p) => {
                    let mut st = p
                        .get("status")
                        .cloned()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    st["phase"] = json!("Pending");
                    st["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}]);
                    set_status(store, pd, &p, st);
                }
                None => ctx.requeue(),
            }
        }
        None => {
            // Nodes that come or become schedulable bring the pod back (see `pods`).
            let msg = format!(
                "0/{} nodes are available: no schedulable Ready node.",
                node_list.len()
            );
            let st = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}]});
            if pod
                .pointer("/status/conditions/0/reason")
                .and_then(Value::as_str)
                != Some("Unschedulable")
            {
                set_status(store, pd, pod, st);
            }
        }
    }
}

/// Starts a scheduled pod after a while (Jobs' pods then finish after a while), or removes it
/// when its node is gone.
fn start(store: &mut Store, ctx: &mut Ctx, pd: &ResourceDef, node_list: &[NodeFacts], pod: &Value) {
    let uid = s(pod, "/metadata/uid");
    let node_name = s(pod, "/spec/nodeName");
    let Some(node) = node_list.iter().find(|n| n.name == node_name) else {
        delete(store, pd, pod);
        ctx.forget(&format!("pod-start/{uid}"));
        return;
    };
    let host_ip = node.address.as_ref();
    let phase = s(pod, "/status/phase");
    let is_job = pod
        .pointer("/metadata/ownerReferences/0/kind")
        .and_then(Value::as_str)
        == Some("Job");
    let key = format!("pod-start/{uid}");
    if phase == "Pending" || phase.is_empty() {
        if ctx.elapsed(&key, durations::POD_START) {
            let crash = failing(pod) && !is_job;
            set_status(
                store,
                pd,
                pod,
                pod_status(pod, host_ip, !crash, "Running", crash),
            );
        }
    } else if phase == "Running"
        && is_job
        && ctx.elapsed(&key, durations::POD_START + durations::JOB_RUN)
    {
        let end = if failing(pod) { "Failed" } else { "Succeeded" };
        set_status(store, pd, pod, pod_status(pod, host_ip, false, end, false));
        ctx.forget(&key);
    }
}
