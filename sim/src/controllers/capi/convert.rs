//! Cluster API's conversion webhooks, run in process: `v1beta1` <-> `v1beta2` of `Cluster`,
//! `MachineDeployment`, `Machine` (`cluster.x-k8s.io`) and `KubeadmControlPlane`
//! (`controlplane.cluster.x-k8s.io`), as Cluster API 1.11 converts them
//! (`api/core/v1beta1/conversion.go`, `api/controlplane/kubeadm/v1beta1/conversion.go`), for
//! the fields that moved and that the sim uses:
//!
//! - conditions: v1beta1 `status.conditions` are v1beta2 `status.deprecated.v1beta1.conditions`;
//!   v1beta2 `status.conditions` are v1beta1 `status.v1beta2.conditions`; the same for the
//!   replica counters whose meaning changed (`updatedReplicas`, `readyReplicas`,
//!   `availableReplicas`, `unavailableReplicas` <-> `readyReplicas`, `availableReplicas`,
//!   `upToDateReplicas`);
//! - a MachineDeployment's `spec.strategy` is `spec.rollout.strategy` (its `deletePolicy` is
//!   `spec.deletion.order`); `nodeDrainTimeout: "10m0s"` is
//!   `deletion.nodeDrainTimeoutSeconds: 600` (the same for the volume detach and node
//!   deletion timeouts), in Machines, MachineDeployment templates and the control plane's
//!   machine template (`spec.machineTemplate.spec` in v1beta2);
//! - references: v1beta1 `ObjectReference`s (`apiVersion`, `kind`, `name`) are v1beta2
//!   `{apiGroup, kind, name}`; a Machine's `status.nodeRef` is `{name}` in v1beta2;
//! - `bootstrapReady`/`infrastructureReady`/`initialized`/`controlPlaneReady` are
//!   `status.initialization.*`; a KubeadmControlPlane's `status.ready` is rebuilt from
//!   `readyReplicas`; a Cluster's `spec.topology.class` is `spec.topology.classRef.name`.
//!
//! Not modelled: the `cluster.x-k8s.io/conversion-data` annotation in which Cluster API keeps
//! what one version cannot hold (fields the sim does not use are kept as they are instead).

use serde_json::{Map, Value, json};

/// Converts `obj` (a `kind` at version `from`) to version `to`, in place.
pub(crate) fn convert(kind: &str, obj: &mut Value, from: &str, to: &str) {
    match (from, to) {
        ("v1beta1", "v1beta2") => up(kind, obj),
        ("v1beta2", "v1beta1") => down(kind, obj, true),
        _ => {}
    }
}

/// One field move from its v1beta1 place to its v1beta2 place (paths relative to the object,
/// `/`-separated).
#[derive(Clone)]
enum Step {
    /// The value moves as it is.
    Move(String, String),
    /// A Go duration (`"10m0s"`) becomes whole seconds.
    Seconds(String, String),
    /// An `ObjectReference` becomes a `ContractVersionedObjectReference`.
    Reference(String, String),
    /// A Machine's node reference keeps only its name.
    NodeRef,
    /// A v1beta1 field that v1beta2 drops and v1beta1 rebuilds (KubeadmControlPlane `ready`).
    Rebuilt(&'static str),
}

fn mv(a: &str, b: &str) -> Step {
    Step::Move(a.into(), b.into())
}

/// The steps of `kind`, in the order `up` applies them (`down` applies them reversed).
fn steps(kind: &str) -> Vec<Step> {
    // Conditions and the counters whose meaning changed: the old ones move away first, then
    // the new ones move in.
    let conditions = [
        mv("status/conditions", "status/deprecated/v1beta1/conditions"),
        mv(
            "status/failureReason",
            "status/deprecated/v1beta1/failureReason",
        ),
        mv(
            "status/failureMessage",
            "status/deprecated/v1beta1/failureMessage",
        ),
        mv("status/v1beta2/conditions", "status/conditions"),
    ];
    let counters = [
        mv(
            "status/updatedReplicas",
            "status/deprecated/v1beta1/updatedReplicas",
        ),
        mv(
            "status/readyReplicas",
            "status/deprecated/v1beta1/readyReplicas",
        ),
        mv(
            "status/availableReplicas",
            "status/deprecated/v1beta1/availableReplicas",
        ),
        mv(
            "status/unavailableReplicas",
            "status/deprecated/v1beta1/unavailableReplicas",
        ),
        mv("status/v1beta2/readyReplicas", "status/readyReplicas"),
        mv(
            "status/v1beta2/availableReplicas",
            "status/availableReplicas",
        ),
        mv("status/v1beta2/upToDateReplicas", "status/upToDateReplicas"),
    ];
    // A machine spec: `v1` and `v2` are its prefixes in each version.
    let machine_spec = |v1: &str, v2: &str| -> Vec<Step> {
        let mut out: Vec<Step> = [
            ("nodeDrainTimeout", "nodeDrainTimeoutSeconds"),
            ("nodeVolumeDetachTimeout", "nodeVolumeDetachTimeoutSeconds"),
            ("nodeDeletionTimeout", "nodeDeletionTimeoutSeconds"),
        ]
        .iter()
        .map(|(a, b)| Step::Seconds(format!("{v1}{a}"), format!("{v2}deletion/{b}")))
        .collect();
        for r in ["infrastructureRef", "bootstrap/configRef"] {
            out.push(Step::Reference(format!("{v1}{r}"), format!("{v2}{r}")));
        }
        out
    };
    let mut out = Vec::new();
    match kind {
        "Machine" => {
            out.extend(machine_spec("spec/", "spec/"));
            out.extend(conditions);
            out.push(Step::NodeRef);
            out.extend([
                mv(
                    "status/bootstrapReady",
                    "status/initialization/bootstrapDataSecretCreated",
                ),
                mv(
                    "status/infrastructureReady",
                    "status/initialization/infrastructureProvisioned",
                ),
            ]);
        }
        "MachineDeployment" => {
            out.extend(machine_spec("spec/template/spec/", "spec/template/spec/"));
            out.extend([
                mv(
                    "spec/strategy/rollingUpdate/deletePolicy",
                    "spec/deletion/order",
                ),
                mv(
                    "spec/strategy/remediation/maxInFlight",
                    "spec/remediation/maxInFlight",
                ),
                mv("spec/strategy", "spec/rollout/strategy"),
                mv("spec/rolloutAfter", "spec/rollout/after"),
                mv("spec/minReadySeconds", "spec/template/spec/minReadySeconds"),
            ]);
            out.extend(conditions);
            out.extend(counters);
        }
        "KubeadmControlPlane" => {
            out.extend(machine_spec(
                "spec/machineTemplate/",
                "spec/machineTemplate/spec/",
            ));
            out.extend([
                mv("spec/rolloutStrategy", "spec/rollout/strategy"),
                mv("spec/rolloutAfter", "spec/rollout/after"),
                Step::Rebuilt("status/ready"),
                mv(
                    "status/initialized",
                    "status/initialization/controlPlaneInitialized",
                ),
            ]);
            out.extend(conditions);
            out.extend(counters);
        }
        "Cluster" => {
            out.extend([
                mv("spec/topology/class", "spec/topology/classRef/name"),
                mv(
                    "spec/topology/classNamespace",
                    "spec/topology/classRef/namespace",
                ),
                mv(
                    "spec/topology/rolloutAfter",
                    "spec/topology/controlPlane/rollout/after",
                ),
                Step::Reference("spec/controlPlaneRef".into(), "spec/controlPlaneRef".into()),
                Step::Reference(
                    "spec/infrastructureRef".into(),
                    "spec/infrastructureRef".into(),
                ),
                mv(
                    "status/controlPlaneReady",
                    "status/initialization/controlPlaneInitialized",
                ),
                mv(
                    "status/infrastructureReady",
                    "status/initialization/infrastructureProvisioned",
                ),
            ]);
            out.extend(conditions);
        }
        _ => {}
    }
    out
}

/// v1beta1 -> v1beta2.
pub(crate) fn up(kind: &str, obj: &mut Value) {
    for step in steps(kind) {
        match step {
            Step::Move(a, b) => moved(obj, &a, &b, Some),
            Step::Seconds(a, b) => moved(obj, &a, &b, |v| {
                v.as_str().and_then(go_seconds).map(|s| json!(s))
            }),
            Step::Reference(a, b) => moved(obj, &a, &b, |v| Some(reference_up(&v))),
            Step::NodeRef => moved(obj, "status/nodeRef", "status/nodeRef", |v| {
                Some(json!({"name": v.get("name").cloned().unwrap_or(json!(""))}))
            }),
            Step::Rebuilt(a) => {
                take(obj, a);
            }
        }
    }
    set_version(obj, "v1beta2");
}

/// v1beta2 -> v1beta1. `with_v1beta2`: keep the v1beta2 conditions and counters in
/// `status.v1beta2`, as Cluster API 1.9 and later do (without, as Cluster API 1.8 and
/// earlier show v1beta1 objects).
pub(crate) fn down(kind: &str, obj: &mut Value, with_v1beta2: bool) {
    for step in steps(kind).into_iter().rev() {
        match step {
            Step::Move(a, b) => moved(obj, &b, &a, Some),
            Step::Seconds(a, b) => {
                moved(obj, &b, &a, |v| v.as_i64().map(|s| json!(go_duration(s))))
            }
            Step::Reference(a, b) => moved(obj, &b, &a, |v| Some(reference_down(&v))),
            Step::NodeRef => moved(obj, "status/nodeRef", "status/nodeRef", |v| {
                Some(
                    json!({"apiVersion": "v1", "kind": "Node", "name": v.get("name").cloned().unwrap_or(json!(""))}),
                )
            }),
            Step::Rebuilt(a) => {
                if let Some(ready) = obj.pointer("/status/readyReplicas").and_then(Value::as_i64) {
                    put(obj, a, json!(ready > 0));
                }
            }
        }
    }
    if !with_v1beta2 {
        take(obj, "status/v1beta2");
    }
    set_version(obj, "v1beta1");
}

fn set_version(obj: &mut Value, version: &str) {
    let Some(av) = obj.get("apiVersion").and_then(Value::as_str) else {
        return;
    };
    let group = av.split('/').next().unwrap_or_default().to_string();
    obj["apiVersion"] = json!(format!("{group}/{version}"));
}

/// Moves the value at `from` to `to` through `f` (dropped when `f` says `None`).
fn moved(obj: &mut Value, from: &str, to: &str, f: impl Fn(Value) -> Option<Value>) {
    if let Some(v) = take(obj, from)
        && let Some(v) = f(v)
    {
        put(obj, to, v);
    }
}

/// Removes and returns the value at `path`, and the objects it leaves empty below the top
/// level (`spec`, `status` stay).
pub(crate) fn take(obj: &mut Value, path: &str) -> Option<Value> {
    let parts: Vec<&str> = path.split('/').collect();
    let (last, parents) = parts.split_last()?;
    let mut cur = &mut *obj;
    for p in parents {
        cur = cur.get_mut(*p)?;
    }
    let v = cur.as_object_mut()?.remove(*last)?;
    // Prune parents left empty, deepest first.
    for depth in (1..parents.len()).rev() {
        let mut cur = &mut *obj;
        for p in &parents[..depth] {
            match cur.get_mut(*p) {
                Some(next) => cur = next,
                None => return Some(v),
            }
        }
        let key = parents[depth];
        let empty = cur
            .get(key)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty);
        if empty && let Some(m) = cur.as_object_mut() {
            m.remove(key);
        }
    }
    Some(v)
}

/// Sets the value at `path`, making the objects on the way.
pub(crate) fn put(obj: &mut Value, path: &str, v: Value) {
    let parts: Vec<&str> = path.split('/').collect();
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut cur = obj;
    for p in parents {
        if !cur.get(*p).is_some_and(Value::is_object) {
            cur[*p] = json!({});
        }
        cur = &mut cur[*p];
    }
    cur[*last] = v;
}

fn reference_up(v: &Value) -> Value {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let group = s("apiVersion")
        .rsplit_once('/')
        .map(|(g, _)| g)
        .unwrap_or_default();
    json!({"apiGroup": group, "kind": s("kind"), "name": s("name")})
}

fn reference_down(v: &Value) -> Value {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let api_version = if s("apiGroup").is_empty() {
        "v1".to_string()
    } else {
        format!("{}/v1beta1", s("apiGroup"))
    };
    json!({"apiVersion": api_version, "kind": s("kind"), "name": s("name")})
}

/// Whole seconds of a Go duration (`"600s"`, `"10m0s"`, `"1h30m"`, `"1.5s"` rounds up), as
/// `ConvertToSeconds` takes them.
pub(crate) fn go_seconds(d: &str) -> Option<i64> {
    let mut rest = d.trim();
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let n: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let factor = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += n * factor;
        rest = tail;
    }
    Some(total.ceil() as i64)
}

/// A whole number of seconds as Go prints a `time.Duration` (`600` -> `"10m0s"`).
pub(crate) fn go_duration(secs: i64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_read_and_print_as_go_does() {
        assert_eq!(go_seconds("600s"), Some(600));
        assert_eq!(go_seconds("10m0s"), Some(600));
        assert_eq!(go_seconds("1h30m"), Some(5400));
        assert_eq!(go_seconds("1.5s"), Some(2));
        assert_eq!(go_seconds("ten"), None);
        assert_eq!(go_duration(600), "10m0s");
        assert_eq!(go_duration(4), "4s");
        assert_eq!(go_duration(3661), "1h1m1s");
    }

    #[test]
    fn a_machine_deployment_converts_both_ways() {
        let v1 = json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineDeployment",
            "metadata": {"name": "c-general"},
            "spec": {
                "replicas": 3,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0, "deletePolicy": "Oldest"}},
                "template": {"spec": {"version": "v1.29.8", "nodeDrainTimeout": "600s",
                    "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "SimMachineTemplate", "name": "general"}}},
            },
            "status": {"replicas": 3, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3, "unavailableReplicas": 0,
                "conditions": [{"type": "Ready", "status": "True"}],
                "v1beta2": {"conditions": [{"type": "Available", "status": "True"}], "upToDateReplicas": 2, "readyReplicas": 3, "availableReplicas": 3}},
        });
        let mut v2 = v1.clone();
        up("MachineDeployment", &mut v2);
        assert_eq!(
            v2,
            json!({
                "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                "metadata": {"name": "c-general"},
                "spec": {
                    "replicas": 3,
                    "rollout": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}},
                    "deletion": {"order": "Oldest"},
                    "template": {"spec": {"version": "v1.29.8", "deletion": {"nodeDrainTimeoutSeconds": 600},
                        "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SimMachineTemplate", "name": "general"}}},
                },
                "status": {"replicas": 3, "upToDateReplicas": 2, "readyReplicas": 3, "availableReplicas": 3,
                    "conditions": [{"type": "Available", "status": "True"}],
                    "deprecated": {"v1beta1": {"conditions": [{"type": "Ready", "status": "True"}],
                        "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3, "unavailableReplicas": 0}}},
            })
        );
        let mut back = v2.clone();
        down("MachineDeployment", &mut back, true);
        let mut want = v1;
        want["spec"]["template"]["spec"]["nodeDrainTimeout"] = json!("10m0s");
        assert_eq!(back, want);
        // And once more: the shapes are stable.
        up("MachineDeployment", &mut back);
        assert_eq!(back, v2);
    }

    #[test]
    fn a_machine_keeps_its_node_ref_name_and_its_drain_conditions() {
        let v2 = json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "spec": {"version": "v1.29.8", "deletion": {"nodeDrainTimeoutSeconds": 4}},
            "status": {"nodeRef": {"name": "n1"}, "initialization": {"infrastructureProvisioned": true, "bootstrapDataSecretCreated": true},
                "conditions": [{"type": "Deleting", "status": "True", "reason": "DrainingNode", "message": "m"}],
                "deprecated": {"v1beta1": {"conditions": [{"type": "DrainingSucceeded", "status": "False", "reason": "Draining", "message": "m"}]}}},
        });
        let mut v1 = v2.clone();
        down("Machine", &mut v1, true);
        assert_eq!(
            v1,
            json!({
                "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
                "spec": {"version": "v1.29.8", "nodeDrainTimeout": "4s"},
                "status": {"nodeRef": {"apiVersion": "v1", "kind": "Node", "name": "n1"},
                    "bootstrapReady": true, "infrastructureReady": true,
                    "conditions": [{"type": "DrainingSucceeded", "status": "False", "reason": "Draining", "message": "m"}],
                    "v1beta2": {"conditions": [{"type": "Deleting", "status": "True", "reason": "DrainingNode", "message": "m"}]}},
            })
        );
        let mut old = v2.clone();
        down("Machine", &mut old, false);
        assert!(old.pointer("/status/v1beta2").is_none(), "{old}");
        up("Machine", &mut v1);
        assert_eq!(v1, v2);
    }
}
