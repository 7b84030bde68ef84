//! Events: one store for `v1` and `events.k8s.io/v1` Events (stored in the core shape, as
//! Kubernetes stores them; an Event written through one API reads through the other), the
//! conversion between the two shapes, and the API server's Event validation
//! (`ValidateEventCreate` of Kubernetes 1.28):
//!
//! - an Event about a cluster-scoped object (its `involvedObject`/`regarding` has no
//!   namespace) may only be created in `default` — or in `kube-system` when it has an
//!   `eventTime`: elsewhere `involvedObject.namespace: Invalid value: "": does not match
//!   event.namespace` (for both APIs);
//! - an Event with an `eventTime` needs `reportingComponent`/`reportingController`,
//!   `reportingInstance`, `action`, `reason` (each at most 128 characters), and its message
//!   (`note`) at most 1024 bytes (the error names the field `message`);
//! - through `events.k8s.io/v1`, also: `eventTime` required, `type` Normal or Warning, and the
//!   deprecated fields unset.

use serde_json::{Map, Value, json};

use crate::registry::ResourceDef;

/// Whether `def` is the `events.k8s.io` view of the Event store.
pub(crate) fn is_events_api(def: &ResourceDef) -> bool {
    def.group == "events.k8s.io" && def.plural == "events"
}

/// `(core field, events.k8s.io field)` of the fields that are renamed.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(obj: &Value, from_core: bool) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        let renamed = RENAMED.iter().find_map(|(core, new)| {
            if from_core && k == core {
                Some(*new)
            } else if !from_core && k == new {
                Some(*core)
            } else {
                None
            }
        });
        out.insert(renamed.unwrap_or(k).to_string(), v.clone());
    }
    Value::Object(out)
}

/// The core shape's fields Go always writes.
pub(crate) fn encode_core(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else { return };
    m.entry("involvedObject").or_insert_with(|| json!({}));
    m.entry("source").or_insert_with(|| json!({}));
    m.entry("firstTimestamp").or_insert(Value::Null);
    m.entry("lastTimestamp").or_insert(Value::Null);
    m.entry("eventTime").or_insert(Value::Null);
    m.entry("reportingComponent").or_insert_with(|| json!(""));
    m.entry("reportingInstance").or_insert_with(|| json!(""));
    if m.get("count").and_then(Value::as_i64) == Some(0) {
        m.remove("count");
    }
}

/// The `events.k8s.io/v1` shape's fields Go always writes (and the empty ones it leaves out).
fn encode_events(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else { return };
    m.entry("eventTime").or_insert(Value::Null);
    m.entry("regarding").or_insert_with(|| json!({}));
    m.entry("deprecatedSource").or_insert_with(|| json!({}));
    m.entry("deprecatedFirstTimestamp").or_insert(Value::Null);
    m.entry("deprecatedLastTimestamp").or_insert(Value::Null);
    for k in ["reportingController", "reportingInstance"] {
        if m.get(k).and_then(Value::as_str) == Some("") {
            m.remove(k);
        }
    }
    if m.get("deprecatedCount").and_then(Value::as_i64) == Some(0) {
        m.remove("deprecatedCount");
    }
}

/// An object of `def` as stored (Events in the core shape).
pub(crate) fn to_storage(def: &ResourceDef, obj: Value) -> Value {
    if !is_events_api(def) {
        return obj;
    }
    let mut core = rename(&obj, false);
    core["apiVersion"] = json!("v1");
    encode_core(&mut core);
    core
}

/// A stored object as `def` shows it.
pub(crate) fn from_storage(def: &ResourceDef, obj: Value) -> Value {
    if !is_events_api(def) {
        return obj;
    }
    let mut e = rename(&obj, true);
    e["apiVersion"] = json!("events.k8s.io/v1");
    encode_events(&mut e);
    e
}

const REASON_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const INSTANCE_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn is_set(v: &Value, k: &str) -> bool {
    v.get(k).is_some_and(|x| !x.is_null() && x != "")
}

/// Kubernetes' checks of a created Event (core shape), as (field, message after the field).
/// `events_api`: the request came through `events.k8s.io/v1`.
pub(crate) fn validate(core: &Value, events_api: bool) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    let ns = core
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let involved_ns = core
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mismatch = || {
        (
            "involvedObject.namespace".to_string(),
            format!(
                "Invalid value: {}: does not match event.namespace",
                serde_json::to_string(involved_ns).unwrap_or_default()
            ),
        )
    };
    let too_long = |field: &str, limit: usize| {
        (
            field.to_string(),
            format!("Invalid value: \"\": can have at most {limit} characters"),
        )
    };
    let has_time = is_set(core, "eventTime");
    let controller = if events_api {
        "reportingController"
    } else {
        "reportingComponent"
    };
    if !has_time {
        let ok = if involved_ns.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == involved_ns
        };
        if !ok {
            errs.push(mismatch());
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(mismatch());
        }
        if s(core, "reportingComponent").is_empty() {
            errs.push((controller.to_string(), "Required value".into()));
        }
        if s(core, "reportingInstance").is_empty() {
            errs.push(("reportingInstance".into(), "Required value".into()));
        }
        if s(core, "reportingInstance").len() > INSTANCE_LIMIT {
            errs.push(too_long("reportingInstance", INSTANCE_LIMIT));
        }
        if s(core, "action").is_empty() {
            errs.push(("action".into(), "Required value".into()));
        }
        if s(core, "action").len() > ACTION_LIMIT {
            errs.push(too_long("action", ACTION_LIMIT));
        }
        if s(core, "reason").is_empty() {
            errs.push(("reason".into(), "Required value".into()));
        }
        if s(core, "reason").len() > REASON_LIMIT {
            errs.push(too_long("reason", REASON_LIMIT));
        }
        if s(core, "message").len() > NOTE_LIMIT {
            errs.push(too_long("message", NOTE_LIMIT));
        }
    }
    if events_api {
        if !has_time {
            errs.push(("eventTime".into(), "Required value".into()));
        }
        let kind = s(core, "type");
        if kind != "Normal" && kind != "Warning" {
            errs.push((
                "type".into(),
                format!("Invalid value: \"\": has invalid value: {kind}"),
            ));
        }
        for (field, set) in [
            ("deprecatedFirstTimestamp", is_set(core, "firstTimestamp")),
            ("deprecatedLastTimestamp", is_set(core, "lastTimestamp")),
            (
                "deprecatedCount",
                core.get("count").and_then(Value::as_i64).unwrap_or(0) != 0,
            ),
            (
                "deprecatedSource",
                core.get("source")
                    .and_then(Value::as_object)
                    .is_some_and(|m| m.values().any(|v| v != "" && !v.is_null())),
            ),
        ] {
            if set {
                errs.push((
                    field.into(),
                    "Invalid value: \"\": needs to be unset".into(),
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about_namespace(ns: &str, with_time: bool) -> Value {
        let mut e = json!({"metadata": {"name": "e", "namespace": ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Namespace", "name": "tidemark-system"},
            "reason": "R", "message": "m", "type": "Normal"});
        if with_time {
            e["eventTime"] = json!("2024-01-01T00:00:00.000000Z");
            e["reportingComponent"] = json!("tidemark");
            e["reportingInstance"] = json!("agent-0");
            e["action"] = json!("Converge");
        }
        e
    }

    #[test]
    fn the_namespace_rule_of_the_recorded_server() {
        let ok = |ns: &str, t: bool| validate(&about_namespace(ns, t), false).is_empty();
        assert!(!ok("tidemark-system", false));
        assert!(!ok("tidemark-system", true));
        assert!(ok("default", false));
        assert!(ok("default", true));
        assert!(ok("kube-system", true));
        assert!(!ok("kube-system", false));
        let mut long = about_namespace("default", true);
        long["message"] = json!("x".repeat(1025));
        assert_eq!(
            validate(&long, true),
            vec![(
                "message".to_string(),
                "Invalid value: \"\": can have at most 1024 characters".to_string()
            )]
        );
        long["message"] = json!("x".repeat(1024));
        assert!(validate(&long, true).is_empty());
    }
}
