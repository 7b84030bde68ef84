//! Eviction and PodDisruptionBudgets: the `pods/eviction` subresource (delete a pod unless a
//! matching PDB would be violated: 429 with the Kubernetes message), and the PDB status
//! (`expectedPods`, `currentHealthy`, `desiredHealthy`, `disruptionsAllowed`) kept current.

use serde_json::{Value, json};

use super::queue::{Queue, add_namespace};
use super::{Ctx, def, i, s, set_status};
use crate::api::status::ApiError;
use crate::registry::ResourceDef;
use crate::selector::LabelSelector;
use crate::store::Store;

const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

pub(crate) fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True")
        })
}

fn active(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(s(pod, "/status/phase"), "Succeeded" | "Failed")
}

/// Resolves an int-or-percent against `total`, rounding up.
fn scaled(v: &Value, total: i64) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or_default(),
        Value::String(p) => match p
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<i64>().ok())
        {
            Some(pct) => total.saturating_mul(pct.clamp(0, 100)).saturating_add(99) / 100,
            None => p.parse().unwrap_or_default(),
        },
        _ => 0,
    }
}

/// Computed status of one PDB.
pub(crate) struct Budget {
    pub expected: i64,
    pub current: i64,
    pub desired: i64,
    pub allowed: i64,
}

fn pods_of<'a>(store: &'a Store, pdb: &Value) -> Vec<&'a Value> {
    let Some(pd) = def(store, "", "v1", "pods") else {
        return vec![];
    };
    let sel = LabelSelector::from_object(pdb.pointer("/spec/selector"), true);
    let ns = s(pdb, "/metadata/namespace");
    store
        .list(&pd.gr(), Some(ns))
        .filter(|p| active(p) && sel.matches(p))
        .collect()
}

/// The budget of `pdb` now.
pub(crate) fn budget(store: &Store, pdb: &Value) -> Budget {
    let pods = pods_of(store, pdb);
    let current = pods.iter().filter(|p| pod_ready(p)).count() as i64;
    // Expected pods: the scale of each distinct controller (so that an evicted, not yet replaced
    // pod still counts), plus pods without a controller.
    let mut owners: Vec<(String, String)> = Vec::new();
    let mut bare = 0i64;
    for p in &pods {
        let ctrl = p
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|r| {
                r.iter()
                    .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
            });
        match ctrl {
            Some(o) => {
                let k = (s(o, "/kind").to_string(), s(o, "/name").to_string());
                if !owners.contains(&k) {
                    owners.push(k);
                }
            }
            None => bare += 1,
        }
    }
    let ns = s(pdb, "/metadata/namespace");
    let mut expected = bare;
    for (kind, name) in &owners {
        let plural = match kind.as_str() {
            "ReplicaSet" => "replicasets",
            "StatefulSet" => "statefulsets",
            _ => "",
        };
        let scale = def(store, "apps", "v1", plural)
            .and_then(|d| store.get(&d.gr(), ns, name).map(|o| i(o, "/spec/replicas")));
        expected += match scale {
            Some(n) => n,
            None => pods
                .iter()
                .filter(|p| {
                    p.pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|r| r.iter().any(|o| s(o, "/name") == name))
                })
                .count() as i64,
        };
    }
    let desired = if let Some(min) = pdb.pointer("/spec/minAvailable") {
        scaled(min, expected)
    } else if let Some(max) = pdb.pointer("/spec/maxUnavailable") {
        (expected - scaled(max, expected)).max(0)
    } else {
        0
    };
    Budget {
        expected,
        current,
        desired,
        allowed: (current - desired).max(0),
    }
}

/// The PDBs whose selector matches `pod`.
fn pdbs_for(store: &Store, pod: &Value) -> Vec<Value> {
    let Some(d) = def(store, "policy", "v1", "poddisruptionbudgets") else {
        return vec![];
    };
    let ns = s(pod, "/metadata/namespace").to_string();
    store
        .list(&d.gr(), Some(&ns))
        .filter(|pdb| LabelSelector::from_object(pdb.pointer("/spec/selector"), true).matches(pod))
        .cloned()
        .collect()
}

/// Whether `pod` may be evicted now; the error is the API's answer when not. A pod that is
/// Pending, finished or being deleted may always go (it disrupts nothing, Kubernetes'
/// `canIgnorePDB`).
pub(crate) fn check(store: &Store, pod: &Value) -> Result<(), ApiError> {
    let pending = matches!(s(pod, "/status/phase"), "Pending" | "");
    if pod.pointer("/metadata/deletionTimestamp").is_some() || !active(pod) || pending {
        return Ok(());
    }
    let pdbs = pdbs_for(store, pod);
    if pdbs.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let Some(pdb) = pdbs.first() else {
        return Ok(());
    };
    let b = budget(store, pdb);
    let healthy = pod_ready(pod);
    let always = s(pdb, "/spec/unhealthyPodEvictionPolicy") == "AlwaysAllow";
    let ok = if healthy {
        b.allowed > 0
    } else {
        always || b.current >= b.desired
    };
    if ok {
        return Ok(());
    }
    let name = s(pdb, "/metadata/name");
    let msg = format!(
        "The disruption budget {name} needs {} healthy pods and has {} currently",
        b.desired, b.current
    );
    Err(ApiError::too_many_requests(VIOLATION).with_details(json!({
        "causes": [{"reason": "DisruptionBudget", "message": msg}],
    })))
}

/// Evicts pod `ns/name` (the `pods/eviction` subresource).
pub(crate) fn evict(
    store: &mut Store,
    ns: &str,
    name: &str,
    body: &Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let kind = body
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Eviction");
    if kind != "Eviction" && kind != "DeleteOptions" {
        return Err(ApiError::bad_request(format!(
            "expected an Eviction, got {kind}"
        )));
    }
    if let Some(n) = body.pointer("/metadata/name").and_then(Value::as_str)
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "name in URL does not match name in Eviction object ({n} != {name})"
        )));
    }
    let pd = def(store, "", "v1", "pods").ok_or_else(ApiError::not_found_path)?;
    let pod = store
        .get(&pd.gr(), ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&pd, name))?;
    check(store, &pod)?;
    if !dry_run {
        store.delete(&pd, ns, name)?;
    }
    Ok(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

/// Keeps every PDB's status current.
pub(crate) fn reconcile(store: &mut Store, ctx: &mut Ctx, queue: &mut Queue) {
    let Some(d) = def(store, "policy", "v1", "poddisruptionbudgets") else {
        return;
    };
    let gr = d.gr();
    let keys = queue.take(store, &gr, ctx.now, |ev, keys| {
        // A budget counts the pods of its namespace and the scale of their controllers.
        let counted = match ev.gr.group.as_str() {
            "" => ev.gr.plural == "pods",
            "apps" => matches!(ev.gr.plural.as_str(), "replicasets" | "statefulsets"),
            _ => false,
        };
        if counted {
            add_namespace(store, &gr, s(&ev.object, "/metadata/namespace"), keys);
        }
    });
    queue.reconcile(store, ctx, &gr, keys, |store, _, pdb| {
        update_status(store, &d, pdb);
    });
}

fn update_status(store: &mut Store, d: &ResourceDef, pdb: &Value) {
    let b = budget(store, pdb);
    let mut conds = vec![super::condition(
        "DisruptionAllowed",
        b.allowed > 0,
        if b.allowed > 0 {
            "SufficientPods"
        } else {
            "InsufficientPods"
        },
        "",
    )];
    // A metav1.Condition says which generation it is about.
    conds[0]["observedGeneration"] = json!(i(pdb, "/metadata/generation"));
    super::keep_transitions(pdb.pointer("/status/conditions"), &mut conds);
    let status = json!({
        "observedGeneration": i(pdb, "/metadata/generation"),
        "expectedPods": b.expected, "currentHealthy": b.current,
        "desiredHealthy": b.desired, "disruptionsAllowed": b.allowed,
        "conditions": conds,
    });
    set_status(store, d, pdb, status);
}
