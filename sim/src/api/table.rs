//! Server-side printing: `meta.k8s.io/v1 Table` responses for clients that ask for them in
//! `Accept` (`kubectl get`), with the familiar columns for nodes, pods, deployments and
//! namespaces and NAME/AGE for everything else.

use serde_json::{Value, json};

use crate::registry::ResourceDef;

/// Whether the client accepts a Table.
pub(crate) fn wanted(accept: &str) -> bool {
    accept.contains("as=Table")
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// kubectl's short human durations (`45s`, `5m3s`, `3h`, `12d`).
fn age(obj: &Value) -> String {
    let Ok(created) = s(obj, "/metadata/creationTimestamp").parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - created.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    match secs {
        _ if secs < 120 => format!("{secs}s"),
        _ if m < 10 => format!("{m}m{}s", secs % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn count(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn node_status(n: &Value) -> String {
    let ready = n
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| s(c, "/type") == "Ready"))
        .map(|c| s(c, "/status") == "True");
    let mut st = match ready {
        Some(true) => "Ready".to_string(),
        Some(false) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        st.push_str(",SchedulingDisabled");
    }
    st
}

fn pod_status(p: &Value) -> String {
    if p.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let waiting = p
        .pointer("/status/containerStatuses/0/state/waiting/reason")
        .and_then(Value::as_str);
    match (s(p, "/status/phase"), waiting) {
        (_, Some(r)) => r.to_string(),
        ("Succeeded", _) => "Completed".into(),
        ("Failed", _) => "Error".into(),
        ("", _) => "Pending".into(),
        (phase, _) => phase.to_string(),
    }
}

fn columns(def: &ResourceDef) -> Vec<(&'static str, &'static str, i64)> {
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Node") => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
        ],
        ("", "Pod") => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ],
        ("apps", "Deployment") => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("", "ConfigMap") => vec![
            ("Name", "string", 0),
            ("Data", "string", 0),
            ("Age", "string", 0),
        ],
        ("", "Namespace") => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        _ => vec![("Name", "string", 0), ("Age", "string", 0)],
    }
}

fn cells(def: &ResourceDef, o: &Value) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Node") => vec![
            name,
            json!(node_status(o)),
            json!("<none>"),
            json!(age(o)),
            json!(s(o, "/status/nodeInfo/kubeletVersion")),
            json!(s(o, "/status/addresses/0/address")),
        ],
        ("", "Pod") => {
            let total = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map_or(0, |cs| {
                    cs.iter()
                        .filter(|c| c.get("ready") == Some(&json!(true)))
                        .count()
                });
            let restarts = count(o, "/status/containerStatuses/0/restartCount");
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                json!(age(o)),
                json!(s(o, "/status/podIP")),
                json!(s(o, "/spec/nodeName")),
            ]
        }
        ("apps", "Deployment") => {
            let containers: Vec<&Value> = o
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .map(|c| c.iter().collect())
                .unwrap_or_default();
            let join = |key: &str| {
                containers
                    .iter()
                    .map(|c| s(c, key))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let selector = o
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    count(o, "/status/readyReplicas"),
                    count(o, "/spec/replicas")
                )),
                json!(count(o, "/status/updatedReplicas")),
                json!(count(o, "/status/availableReplicas")),
                json!(age(o)),
                json!(join("/name")),
                json!(join("/image")),
                json!(selector),
            ]
        }
        ("", "ConfigMap") => {
            let n = ["data", "binaryData"]
                .iter()
                .filter_map(|k| o.get(*k).and_then(Value::as_object))
                .map(serde_json::Map::len)
                .sum::<usize>();
            vec![name, json!(n), json!(age(o))]
        }
        _ if def.crd.is_some() && !def.printer_columns.is_empty() => {
            let mut out = vec![name];
            for c in def.printer_columns.iter() {
                let path = s(c, "/jsonPath").trim_start_matches('.');
                let ptr = format!("/{}", path.replace('.', "/"));
                out.push(o.pointer(&ptr).cloned().unwrap_or(Value::Null));
            }
            out
        }
        ("", "Namespace") => vec![name, json!(s(o, "/status/phase")), json!(age(o))],
        _ => vec![name, json!(age(o))],
    }
}

fn row(def: &ResourceDef, o: &Value, include: &str) -> Value {
    let object = match include {
        "None" => Value::Null,
        "Object" => o.clone(),
        _ => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata")})
        }
    };
    json!({"cells": cells(def, o), "object": object})
}

/// What the OpenAPI documentation says about a column (the real server takes it from there).
fn description(def: &ResourceDef, column: &str) -> &'static str {
    match (def.kind.as_str(), column) {
        (_, "Name") => {
            "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: http://kubernetes.io/docs/user-guide/identifiers#names"
        }
        (_, "Age") => {
            "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
        }
        ("ConfigMap", "Data") => {
            "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process."
        }
        ("Deployment", "Ready") => "Number of the pod with ready state",
        ("Deployment", "Up-to-date") => {
            "Total number of non-terminated pods targeted by this deployment that have the desired template spec."
        }
        ("Deployment", "Available") => {
            "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."
        }
        ("Deployment", "Containers") => "Names of each container in the template.",
        ("Deployment", "Images") => "Images referenced by each container in the template.",
        ("Deployment", "Selector") => {
            "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."
        }
        _ => "",
    }
}

/// The columns of a Table of `def`: (name, type, format, description, priority).
fn column_definitions(def: &ResourceDef) -> Vec<Value> {
    if def.crd.is_some() && !def.printer_columns.is_empty() {
        let mut cols = vec![json!({"name": "Name", "type": "string", "format": "name",
            "description": description(def, "Name"), "priority": 0})];
        for c in def.printer_columns.iter() {
            let path = s(c, "/jsonPath");
            let doc = match c.get("description").and_then(Value::as_str) {
                Some(d) => d.to_string(),
                None => format!("Custom resource definition column (in JSONPath format): {path}"),
            };
            cols.push(json!({"name": s(c, "/name"), "type": s(c, "/type"),
                "format": s(c, "/format"), "description": doc,
                "priority": c.get("priority").cloned().unwrap_or(json!(0))}));
        }
        return cols;
    }
    columns(def)
        .into_iter()
        .map(|(n, t, p)| json!({"name": n, "type": t, "format": if n == "Name" { "name" } else { "" }, "description": description(def, n), "priority": p}))
        .collect()
}

/// A Table of `objs`; `include` is the `includeObject` parameter.
pub(crate) fn render(def: &ResourceDef, objs: &[Value], list_meta: Value, include: &str) -> Value {
    let cols = column_definitions(def);
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": cols,
        "rows": objs.iter().map(|o| row(def, o, include)).collect::<Vec<_>>(),
    })
}
