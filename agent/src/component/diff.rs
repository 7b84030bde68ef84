//! Diff: does a live object still hold every field tidemark applied?
//!
//! Server-side apply makes tidemark the owner of exactly the fields it sent; the API server
//! defaults others, and other managers (HPA, admission webhooks, people) add their own. So the
//! comparison is one-sided: every applied field must be present in the live object with an
//! equivalent value, and anything extra in the live object is fine.
//!
//! "Equivalent" absorbs what the API server does to a value on the way in (see
//! [`first_difference`]), so that a freshly applied object never counts as drifted: a false
//! drift would make tidemark re-apply on every check, for ever.
//!
//! Pure: both objects are JSON values the caller fetched.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// The first applied field the live object no longer holds, as `path: what differs`
/// (`spec.replicas: applied 2, live 5`, `data.key: missing`,
/// `spec.template.spec.containers[name=x].image: applied a, live b`); `None` when there is no
/// drift.
///
/// Rules:
/// - objects: every applied key must match in `live`; extra live keys are fine;
/// - arrays of objects keyed by `name` (containers, env, volumes, ...), or else by
///   `containerPort` / `port` (with `protocol`, default `TCP`): each applied element must match
///   a distinct live element with the same key, in any order;
/// - other arrays: the applied elements must match distinct live elements in order (a
///   subsequence), so items other managers inserted are tolerated;
/// - scalars are equal, or a number equals a string holding the same number (int-or-string
///   fields), or an integer equals a float of the same value;
/// - resource quantities (under `resources.requests` / `resources.limits`, `sizeLimit`,
///   `spec.hard`, `capacity`) compare by value: `0.5` = `500m`, `1Gi` = `1024Mi`;
/// - an applied `null` matches anything: server-side apply drops nulls, so tidemark owns nothing
///   there and another value is not drift it could correct;
/// - an applied `""` matches anything: the API server defaults empty strings
///   (`imagePullPolicy`, `protocol`, ...);
/// - an applied zero value (`false`, `0`, `[]`, `{}`, or an object of such) matches an absent
///   live field: the API server omits empty `omitempty` fields when it serialises. A different
///   live value is still drift (`hostNetwork: false` against `true`);
/// - ignored: top-level `status`, `metadata.creationTimestamp`;
/// - a Secret's `stringData` is compared as the base64 `data` the API server turns it into.
pub fn first_difference(applied: &Value, live: &Value) -> Option<String> {
    let applied = normalise_applied(applied);
    let mut path = Vec::new();
    diff(&applied, Some(live), &mut path)
}

/// `applied` without the fields the API server did not keep when it stored it as `stored`
/// (the answer to the apply): a custom resource's unknown fields pruned by its CRD's schema,
/// fields a version of Kubernetes drops. Compared with later, such a field would be missing
/// every time and be corrected for ever (a false drift). Fields the server defaulted or
/// normalised are kept: [`first_difference`]'s rules absorb them.
pub fn kept_by_server(applied: &Value, stored: &Value) -> Value {
    match (applied, stored) {
        (Value::Object(a), Value::Object(s)) => Value::Object(
            a.iter()
                .filter_map(|(k, v)| match s.get(k) {
                    Some(sv) => Some((k.clone(), kept_by_server(v, sv))),
                    // Zero values are omitted by the server and match absence already.
                    None if is_zero(v) => Some((k.clone(), v.clone())),
                    None => None,
                })
                .collect(),
        ),
        (Value::Array(a), Value::Array(s)) => match array_key(a) {
            Some(key) => Value::Array(
                a.iter()
                    .map(|e| {
                        let label = element_label(e, key);
                        match s
                            .iter()
                            .find(|x| label.is_some() && element_label(x, key) == label)
                        {
                            Some(x) => kept_by_server(e, x),
                            None => e.clone(),
                        }
                    })
                    .collect(),
            ),
            None => applied.clone(),
        },
        _ => applied.clone(),
    }
}

/// One step of a JSON path.
#[derive(Clone, Debug)]
enum PathSegment {
    /// An object key.
    Key(String),
    /// A position in an unkeyed array.
    Index(usize),
    /// An element of a keyed array, as `name=x` or `containerPort=53/UDP`.
    Match(String),
}

/// Drops what the applier never owns, and rewrites a Secret's `stringData` into `data`.
fn normalise_applied(applied: &Value) -> Value {
    let mut applied = applied.clone();
    let Some(top) = applied.as_object_mut() else {
        return applied;
    };
    top.remove("status");
    if let Some(Value::Object(metadata)) = top.get_mut("metadata") {
        metadata.remove("creationTimestamp");
    }
    let is_secret = top.get("kind").and_then(Value::as_str) == Some("Secret")
        && top.get("apiVersion").and_then(Value::as_str) == Some("v1");
    if is_secret && let Some(Value::Object(string_data)) = top.remove("stringData") {
        // The API server merges `stringData` into `data` (winning on conflicts) and never
        // stores `stringData` itself.
        let data = top
            .entry("data")
            .or_insert_with(|| Value::Object(Map::new()));
        if !data.is_object() {
            *data = Value::Object(Map::new());
        }
        if let Some(data) = data.as_object_mut() {
            for (key, value) in string_data {
                let encoded = match &value {
                    Value::String(s) => Value::String(base64(s.as_bytes())),
                    _ => value,
                };
                data.insert(key, encoded);
            }
        }
    }
    applied
}

fn diff(applied: &Value, live: Option<&Value>, path: &mut Vec<PathSegment>) -> Option<String> {
    let live = match live {
        None | Some(Value::Null) => {
            return (!is_zero(applied)).then(|| format!("{}: missing", render(path)));
        }
        Some(live) => live,
    };
    match (applied, live) {
        (Value::Null, _) => None,
        // The API server defaults empty strings (`imagePullPolicy: ""` becomes `IfNotPresent`,
        // `protocol: ""` becomes `TCP`): an applied `""` owns nothing it could hold against them.
        (Value::String(s), _) if s.is_empty() => None,
        (Value::Object(a), Value::Object(l)) => {
            for (key, value) in a {
                path.push(PathSegment::Key(key.clone()));
                let found = diff(value, l.get(key), path);
                path.pop();
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        (Value::Array(a), Value::Array(l)) => diff_array(a, l, path),
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => {
            Some(mismatch(applied, live, path))
        }
        (a, l) => (!scalars_equal(a, l, is_quantity(path))).then(|| mismatch(a, l, path)),
    }
}

/// How the elements of an applied array are matched to live ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArrayKey {
    /// By the `name` field.
    Name,
    /// By `containerPort` and `protocol` (container ports without names).
    ContainerPort,
    /// By `port` and `protocol` (service ports without names).
    Port,
}

fn diff_array(applied: &[Value], live: &[Value], path: &mut Vec<PathSegment>) -> Option<String> {
    match array_key(applied) {
        Some(key) => diff_keyed(applied, live, key, path),
        None => diff_subsequence(applied, live, path),
    }
}

/// The key all applied elements share, if any: then the list is a set of named things whose
/// order the API server and other managers may change.
fn array_key(applied: &[Value]) -> Option<ArrayKey> {
    if applied.is_empty() {
        return None;
    }
    let all = |field: &str| {
        applied
            .iter()
            .all(|e| e.get(field).is_some_and(|v| v.is_string() || v.is_number()))
    };
    if applied
        .iter()
        .all(|e| e.get("name").is_some_and(Value::is_string))
    {
        Some(ArrayKey::Name)
    } else if all("containerPort") {
        Some(ArrayKey::ContainerPort)
    } else if all("port") {
        Some(ArrayKey::Port)
    } else {
        None
    }
}

/// The label of an element under `key` (`name=x`, `containerPort=53/UDP`), `None` if it lacks
/// the key. Numbers and numeric strings give the same label (int-or-string).
fn element_label(element: &Value, key: ArrayKey) -> Option<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let port = |field: &str| {
        let port = scalar(element.get(field)?)?;
        let protocol = element
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP");
        Some(if protocol == "TCP" {
            format!("{field}={port}")
        } else {
            format!("{field}={port}/{protocol}")
        })
    };
    match key {
        ArrayKey::Name => Some(format!("name={}", element.get("name")?.as_str()?)),
        ArrayKey::ContainerPort => port("containerPort"),
        ArrayKey::Port => port("port"),
    }
}

fn diff_keyed(
    applied: &[Value],
    live: &[Value],
    key: ArrayKey,
    path: &mut Vec<PathSegment>,
) -> Option<String> {
    let live_labels: Vec<Option<String>> = live.iter().map(|l| element_label(l, key)).collect();
    let mut used = vec![false; live.len()];
    for element in applied {
        let Some(label) = element_label(element, key) else {
            // `array_key` chose a key every applied element has; nothing to match otherwise.
            continue;
        };
        // Names are not always unique (a volume mounted twice): try every unused live element
        // with the label, and report against the first one only if none matches.
        let candidates: Vec<usize> = (0..live.len())
            .filter(|&j| !used[j] && live_labels[j].as_ref() == Some(&label))
            .collect();
        path.push(PathSegment::Match(label));
        let found = match candidates
            .iter()
            .find(|&&j| diff(element, Some(&live[j]), path).is_none())
        {
            Some(&j) => {
                used[j] = true;
                None
            }
            None => match candidates.first() {
                Some(&j) => diff(element, Some(&live[j]), path),
                None => Some(format!("{}: missing", render(path))),
            },
        };
        path.pop();
        if found.is_some() {
            return found;
        }
    }
    None
}

fn diff_subsequence(
    applied: &[Value],
    live: &[Value],
    path: &mut Vec<PathSegment>,
) -> Option<String> {
    let mut next = 0;
    let mut used = vec![false; live.len()];
    for (i, element) in applied.iter().enumerate() {
        path.push(PathSegment::Index(i));
        let hit = (next..live.len()).find(|&j| diff(element, Some(&live[j]), path).is_none());
        let found = match hit {
            Some(j) => {
                next = j + 1;
                used[j] = true;
                None
            }
            // A live element no earlier applied element took holds it, but too early.
            None if (0..next)
                .any(|j| !used[j] && diff(element, Some(&live[j]), path).is_none()) =>
            {
                Some(format!(
                    "{}: applied {} is out of order in the live list",
                    render(path),
                    show(element)
                ))
            }
            // Name the difference against the element at the same position when there is
            // one: for a list nobody else touches that is exactly the changed item.
            // (It differs from that element: an equal one at or after `next` would have matched.)
            None => live
                .get(i)
                .and_then(|l| diff(element, Some(l), path))
                .or_else(|| Some(format!("{}: missing", render(path)))),
        };
        path.pop();
        if found.is_some() {
            return found;
        }
    }
    None
}

fn mismatch(applied: &Value, live: &Value, path: &[PathSegment]) -> String {
    let (mut a, mut l) = (show(applied), show(live));
    if a == l {
        // `"true"` against `true`: only JSON tells them apart.
        (a, l) = (applied.to_string(), live.to_string());
    }
    format!("{}: applied {a}, live {l}", render(path))
}

/// Whether the API server may have dropped this value as empty (`omitempty`).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

fn scalars_equal(a: &Value, l: &Value, quantity: bool) -> bool {
    if a == l {
        return true;
    }
    if quantity && let (Some(a), Some(l)) = (quantity_nanos(a), quantity_nanos(l)) {
        return a == l;
    }
    match (a, l) {
        (Value::Number(a), Value::Number(l)) => numbers_equal(a, l),
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            match s.parse::<serde_json::Number>() {
                Ok(parsed) => numbers_equal(n, &parsed),
                Err(_) => false,
            }
        }
        _ => false,
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
        return a == b;
    }
    matches!((a.as_f64(), b.as_f64()), (Some(a), Some(b)) if a == b)
}

/// Whether the value at `path` is a resource quantity, which the API server rewrites into
/// canonical form (`0.5` -> `500m`, `1024Mi` -> `1Gi`). Best effort: the common places only.
fn is_quantity(path: &[PathSegment]) -> bool {
    let key = |back: usize| match path.len().checked_sub(back).and_then(|i| path.get(i)) {
        Some(PathSegment::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    matches!(key(1), Some("sizeLimit"))
        || (matches!(key(2), Some("requests" | "limits")) && key(3) == Some("resources"))
        || (key(2) == Some("hard") && key(3) == Some("spec"))
        || matches!(key(2), Some("capacity"))
}

/// The value of a Kubernetes quantity in nano-units, `None` if it is not one (or does not fit).
///
/// Grammar (k8s.io/apimachinery resource.Quantity): `[+-]digits[.digits]` then a binary suffix
/// (`Ki`..`Ei`), a decimal suffix (`n u m "" k M G T P E`) or an exponent (`e3`, `E-2`).
/// Like the API server, precision below a nano-unit is rounded up.
fn quantity_nanos(v: &Value) -> Option<i128> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text.as_str()),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other => {
            let exponent = other.strip_prefix(['e', 'E'])?;
            (exponent.parse::<i32>().ok()?, 0)
        }
    };
    let mut mantissa: i128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(i128::from(digit - b'0'))?;
    }
    let fraction_len = i32::try_from(fraction.len()).ok()?;
    let mut value = mantissa.checked_mul(1i128.checked_shl(exp2)?)?;
    let scale = exp10.checked_add(9)?.checked_sub(fraction_len)?;
    if scale >= 0 {
        value = value.checked_mul(10i128.checked_pow(u32::try_from(scale).ok()?)?)?;
    } else {
        let divisor = 10i128.checked_pow(u32::try_from(-scale).ok()?)?;
        value = value / divisor + i128::from(value % divisor != 0);
    }
    Some(if negative { -value } else { value })
}

/// The path as people write it: `spec.template.spec.containers[name=x].image`,
/// `metadata.labels["app.kubernetes.io/name"]`, `args[1]`.
fn render(path: &[PathSegment]) -> String {
    if path.is_empty() {
        return "(the object)".to_owned();
    }
    let mut out = String::new();
    for step in path {
        match step {
            PathSegment::Key(key) if is_plain(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            PathSegment::Key(key) => {
                let _ = write!(out, "[{}]", Value::String(key.clone()));
            }
            PathSegment::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
            PathSegment::Match(label) => {
                let _ = write!(out, "[{label}]");
            }
        }
    }
    out
}

fn is_plain(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A value for a message: strings bare, everything else as compact JSON; long ones shortened.
fn show(v: &Value) -> String {
    const MAX: usize = 80;
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() <= MAX {
        return text;
    }
    let mut short: String = text.chars().take(MAX).collect();
    short.push('…');
    short
}

/// Standard base64 with padding (RFC 4648), as the API server stores Secret `data`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The render of a Deployment as `helm template` prints it (after `manifest::prepare`).
    fn applied_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "metrics",
                "namespace": "monitoring",
                "creationTimestamp": null,
                "labels": {
                    "app.kubernetes.io/name": "metrics",
                    "tidemark.dev/component": "metrics"
                }
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app.kubernetes.io/name": "metrics"}},
                "strategy": {},
                "template": {
                    "metadata": {
                        "labels": {"app.kubernetes.io/name": "metrics"},
                        "annotations": {"checksum/config": "abc123"}
                    },
                    "spec": {
                        "hostNetwork": false,
                        "serviceAccountName": "metrics",
                        "securityContext": {},
                        "containers": [{
                            "name": "metrics",
                            "image": "ghcr.io/example/metrics:1.2.0",
                            "imagePullPolicy": "",
                            "args": ["--port=8080", "--verbose"],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "env": [
                                {"name": "MODE", "value": "fast"},
                                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                            ],
                            "resources": {
                                "requests": {"cpu": 0.5, "memory": "1024Mi"},
                                "limits": {"memory": "1Gi", "cpu": "1"}
                            },
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/metrics"}]
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": "metrics"}}],
                        "tolerations": [{"key": "dedicated", "operator": "Exists"}]
                    }
                }
            },
            "status": {}
        })
    }

    /// The same Deployment as the API server returns it a while later: defaulted fields,
    /// managedFields, status, labels and annotations from others, an injected sidecar, an
    /// extra toleration and canonicalised quantities.
    fn live_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "metrics",
                "namespace": "monitoring",
                "uid": "0b0c3f5e-1111-2222-3333-444455556666",
                "resourceVersion": "48213",
                "generation": 3,
                "creationTimestamp": "2026-11-24T10:00:00Z",
                "labels": {
                    "app.kubernetes.io/name": "metrics",
                    "tidemark.dev/component": "metrics",
                    "team": "observability"
                },
                "annotations": {"deployment.kubernetes.io/revision": "3"},
                "managedFields": [{
                    "manager": "tidemark",
                    "operation": "Apply",
                    "apiVersion": "apps/v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}}
                }]
            },
            "spec": {
                "replicas": 2,
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
                "selector": {"matchLabels": {"app.kubernetes.io/name": "metrics"}},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
                },
                "template": {
                    "metadata": {
                        "creationTimestamp": null,
                        "labels": {"app.kubernetes.io/name": "metrics"},
                        "annotations": {
                            "checksum/config": "abc123",
                            "kubectl.kubernetes.io/restartedAt": "2026-11-24T11:00:00Z"
                        }
                    },
                    "spec": {
                        "serviceAccountName": "metrics",
                        "serviceAccount": "metrics",
                        "restartPolicy": "Always",
                        "dnsPolicy": "ClusterFirst",
                        "schedulerName": "default-scheduler",
                        "terminationGracePeriodSeconds": 30,
                        "securityContext": {},
                        "containers": [
                            {
                                "name": "istio-proxy",
                                "image": "istio/proxyv2:1.24.0"
                            },
                            {
                                "name": "metrics",
                                "image": "ghcr.io/example/metrics:1.2.0",
                                "imagePullPolicy": "IfNotPresent",
                                "args": ["--port=8080", "--verbose"],
                                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                                "env": [
                                    {"name": "MODE", "value": "fast"},
                                    {"name": "POD", "valueFrom": {"fieldRef": {
                                        "apiVersion": "v1", "fieldPath": "metadata.name"}}}
                                ],
                                "resources": {
                                    "requests": {"cpu": "500m", "memory": "1Gi"},
                                    "limits": {"memory": "1Gi", "cpu": "1"}
                                },
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": "http", "scheme": "HTTP"},
                                    "timeoutSeconds": 1,
                                    "periodSeconds": 10,
                                    "successThreshold": 1,
                                    "failureThreshold": 3
                                },
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/metrics"}],
                                "terminationMessagePath": "/dev/termination-log",
                                "terminationMessagePolicy": "File"
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "metrics", "defaultMode": 420}}],
                        "tolerations": [
                            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
                            {"key": "dedicated", "operator": "Exists"}
                        ]
                    }
                }
            },
            "status": {
                "observedGeneration": 3,
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2,
                "conditions": [{"type": "Available", "status": "True"}]
            }
        })
    }

    fn container_path(rest: &str) -> String {
        format!("spec.template.spec.containers[name=metrics].{rest}")
    }

    #[test]
    fn a_freshly_applied_deployment_has_no_drift() {
        assert_eq!(
            first_difference(&applied_deployment(), &live_deployment()),
            None
        );
    }

    #[test]
    fn a_changed_image_names_the_container() {
        let mut live = live_deployment();
        live["spec"]["template"]["spec"]["containers"][1]["image"] =
            json!("ghcr.io/example/metrics:1.1.0");
        assert_eq!(
            first_difference(&applied_deployment(), &live),
            Some(format!(
                "{}: applied ghcr.io/example/metrics:1.2.0, live ghcr.io/example/metrics:1.1.0",
                container_path("image")
            ))
        );
    }

    #[test]
    fn scaled_replicas_are_drift() {
        let mut live = live_deployment();
        live["spec"]["replicas"] = json!(5);
        assert_eq!(
            first_difference(&applied_deployment(), &live).as_deref(),
            Some("spec.replicas: applied 2, live 5")
        );
    }

    #[test]
    fn a_removed_container_is_missing() {
        let mut live = live_deployment();
        if let Some(containers) = live["spec"]["template"]["spec"]["containers"].as_array_mut() {
            containers.remove(1);
        }
        assert_eq!(
            first_difference(&applied_deployment(), &live).as_deref(),
            Some("spec.template.spec.containers[name=metrics]: missing")
        );
    }

    #[test]
    fn a_changed_env_value_and_quantity_name_their_paths() {
        let mut live = live_deployment();
        live["spec"]["template"]["spec"]["containers"][1]["env"][0]["value"] = json!("slow");
        assert_eq!(
            first_difference(&applied_deployment(), &live),
            Some(format!(
                "{}: applied fast, live slow",
                container_path("env[name=MODE].value")
            ))
        );
        let mut live = live_deployment();
        live["spec"]["template"]["spec"]["containers"][1]["resources"]["requests"]["cpu"] =
            json!("250m");
        assert_eq!(
            first_difference(&applied_deployment(), &live),
            Some(format!(
                "{}: applied 0.5, live 250m",
                container_path("resources.requests.cpu")
            ))
        );
    }

    #[test]
    fn a_changed_label_is_named_with_brackets() {
        let mut live = live_deployment();
        live["metadata"]["labels"]["tidemark.dev/component"] = json!("other");
        assert_eq!(
            first_difference(&applied_deployment(), &live).as_deref(),
            Some(r#"metadata.labels["tidemark.dev/component"]: applied metrics, live other"#)
        );
    }

    fn config_map(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "cfg", "namespace": "ns"}, "data": data})
    }

    #[test]
    fn a_deleted_config_map_key_is_missing() {
        let applied = config_map(json!({"key": "v", "other": "w"}));
        let live = config_map(json!({"other": "w", "added": "by someone"}));
        assert_eq!(
            first_difference(&applied, &live).as_deref(),
            Some("data.key: missing")
        );
        let dotted = config_map(json!({"config.yaml": "a: 1\n"}));
        assert_eq!(
            first_difference(&dotted, &config_map(json!({}))).as_deref(),
            Some(r#"data["config.yaml"]: missing"#)
        );
    }

    #[test]
    fn extra_live_keys_are_fine() {
        let applied = json!({"a": {"b": 1}});
        let live = json!({"a": {"b": 1, "c": 2}, "d": 3});
        assert_eq!(first_difference(&applied, &live), None);
    }

    #[test]
    fn unkeyed_arrays_match_as_a_subsequence() {
        let applied = json!({"args": ["--a", "--b"]});
        for live in [
            json!({"args": ["--a", "--b"]}),
            json!({"args": ["--x", "--a", "--y", "--b", "--z"]}),
        ] {
            assert_eq!(first_difference(&applied, &live), None, "{live}");
        }
        assert_eq!(
            first_difference(&applied, &json!({"args": ["--a", "--c"]})).as_deref(),
            Some("args[1]: applied --b, live --c")
        );
        assert_eq!(
            first_difference(&applied, &json!({"args": ["--a"]})).as_deref(),
            Some("args[1]: missing")
        );
        // Same items, other order: not a subsequence.
        assert_eq!(
            first_difference(&applied, &json!({"args": ["--b", "--a"]})).as_deref(),
            Some("args[1]: applied --b is out of order in the live list")
        );
    }

    #[test]
    fn subsequence_elements_must_be_distinct() {
        let applied = json!({"args": ["x", "x"]});
        assert_eq!(
            first_difference(&applied, &json!({"args": ["x"]})).as_deref(),
            Some("args[1]: missing")
        );
        assert_eq!(
            first_difference(&applied, &json!({"args": ["x", "y", "x"]})),
            None
        );
    }

    #[test]
    fn a_changed_object_in_an_unkeyed_list_names_its_field() {
        let applied = json!({"tolerations": [{"key": "a", "operator": "Exists"}]});
        let live = json!({"tolerations": [{"key": "a", "operator": "Equal", "value": "x"}]});
        assert_eq!(
            first_difference(&applied, &live).as_deref(),
            Some("tolerations[0].operator: applied Exists, live Equal")
        );
    }

    #[test]
    fn subsequence_of_objects_tolerates_defaulted_fields() {
        let applied = json!({"tolerations": [{"key": "a", "operator": "Exists"}]});
        let live = json!({"tolerations": [
            {"key": "b", "operator": "Exists"},
            {"key": "a", "operator": "Exists", "effect": "NoSchedule"}]});
        assert_eq!(first_difference(&applied, &live), None);
    }

    #[test]
    fn an_element_found_elsewhere_but_out_of_order_is_reported() {
        let applied = json!({"l": [{"k": 1}, {"k": 2}]});
        let live = json!({"l": [{"k": 2}, {"k": 1}]});
        assert_eq!(
            first_difference(&applied, &live).as_deref(),
            Some(r#"l[1]: applied {"k":2} is out of order in the live list"#)
        );
    }

    #[test]
    fn keyed_arrays_match_by_name_in_any_order() {
        let applied = json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]});
        let live = json!({"env": [{"name": "C", "value": "3"}, {"name": "B", "value": "2"},
                                  {"name": "A", "value": "1"}]});
        assert_eq!(first_difference(&applied, &live), None);
        let live = json!({"env": [{"name": "A", "value": "1"}]});
        assert_eq!(
            first_difference(&applied, &live).as_deref(),
            Some("env[name=B]: missing")
        );
    }

    #[test]
    fn repeated_names_each_need_their_own_live_element() {
        // One volume mounted twice, at two paths.
        let applied = json!({"volumeMounts": [
            {"name": "data", "mountPath": "/a"},
            {"name": "data", "mountPath": "/b", "subPath": "b"}]});
        let live = json!({"volumeMounts": [
            {"name": "data", "mountPath": "/b", "subPath": "b"},
            {"name": "data", "mountPath": "/a"}]});
        assert_eq!(first_difference(&applied, &live), None);
        let live = json!({"volumeMounts": [{"name": "data", "mountPath": "/a"}]});
        assert_eq!(
            first_difference(&applied, &live).as_deref(),
            Some("volumeMounts[name=data]: missing")
        );
    }

    #[test]
    fn ports_without_names_match_by_port_and_protocol() {
        let applied = json!({"ports": [
            {"containerPort": 53, "protocol": "UDP"},
            {"containerPort": 53}]});
        let live = json!({"ports": [
            {"containerPort": 53, "protocol": "TCP"},
            {"containerPort": 53, "protocol": "UDP"}]});
        assert_eq!(first_difference(&applied, &live), None);
        let live = json!({"ports": [{"containerPort": 53, "protocol": "TCP"}]});
        assert_eq!(
            first_difference(&applied, &live).as_deref(),
            Some("ports[containerPort=53/UDP]: missing")
        );
        let applied = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
        let live =
            json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 9090}]}});
        assert_eq!(
            first_difference(&applied, &live).as_deref(),
            Some("spec.ports[port=80].targetPort: applied 8080, live 9090")
        );
    }

    #[test]
    fn int_or_string_and_int_or_float_compare_by_value() {
        let cases = [
            (json!({"p": 8080}), json!({"p": "8080"})),
            (json!({"p": "8080"}), json!({"p": 8080})),
            (json!({"p": 1}), json!({"p": 1.0})),
            (json!({"p": 2.5}), json!({"p": "2.5"})),
            (json!({"p": u64::MAX}), json!({"p": u64::MAX})),
        ];
        for (applied, live) in cases {
            assert_eq!(
                first_difference(&applied, &live),
                None,
                "{applied} vs {live}"
            );
        }
        assert_eq!(
            first_difference(&json!({"p": 8080}), &json!({"p": "http"})).as_deref(),
            Some("p: applied 8080, live http")
        );
        assert_eq!(
            first_difference(&json!({"p": "true"}), &json!({"p": true})).as_deref(),
            Some(r#"p: applied "true", live true"#)
        );
    }

    #[test]
    fn null_applied_matches_anything() {
        let applied = json!({"a": null, "b": {"c": null}});
        for live in [
            json!({}),
            json!({"a": null}),
            json!({"a": 5, "b": {"c": "x"}}),
        ] {
            assert_eq!(first_difference(&applied, &live), None, "{live}");
        }
    }

    #[test]
    fn zero_values_match_absent_fields() {
        let applied = json!({"spec": {"hostNetwork": false, "priority": 0, "subPath": "",
            "args": [], "securityContext": {}, "metadata": {"annotations": {}}}});
        assert_eq!(first_difference(&applied, &json!({"spec": {}})), None);
        // An empty string is defaulted by the API server: any live value holds it.
        assert_eq!(
            first_difference(
                &json!({"imagePullPolicy": ""}),
                &json!({"imagePullPolicy": "Always"})
            ),
            None
        );
        // ...but not a different live value.
        assert_eq!(
            first_difference(&applied, &json!({"spec": {"hostNetwork": true}})).as_deref(),
            Some("spec.hostNetwork: applied false, live true")
        );
        // A non-zero value must be there.
        assert_eq!(
            first_difference(&json!({"spec": {"x": {"y": 1}}}), &json!({"spec": {}})).as_deref(),
            Some("spec.x: missing")
        );
    }

    #[test]
    fn status_and_creation_timestamp_are_ignored() {
        let applied = json!({"metadata": {"name": "a", "creationTimestamp": null},
                             "status": {"replicas": 3}});
        let live = json!({"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
                          "status": {"replicas": 1}});
        assert_eq!(first_difference(&applied, &live), None);
        // Only at the top: a nested `status` is an ordinary field.
        let applied = json!({"spec": {"status": "on"}});
        assert_eq!(
            first_difference(&applied, &json!({"spec": {"status": "off"}})).as_deref(),
            Some("spec.status: applied on, live off")
        );
    }

    #[test]
    fn type_changes_are_mismatches() {
        assert_eq!(
            first_difference(&json!({"a": {"b": 1}}), &json!({"a": "text"})).as_deref(),
            Some("a: applied {\"b\":1}, live text")
        );
        assert_eq!(
            first_difference(&json!({"a": [1]}), &json!({"a": {"0": 1}})).as_deref(),
            Some("a: applied [1], live {\"0\":1}")
        );
        assert_eq!(
            first_difference(&json!({"a": 1}), &json!("x")).as_deref(),
            Some("(the object): applied {\"a\":1}, live x")
        );
    }

    #[test]
    fn long_values_are_shortened() {
        let long = "x".repeat(200);
        let d = first_difference(&json!({"a": long}), &json!({"a": "y"})).unwrap_or_default();
        assert!(d.len() < 120, "{d}");
        assert!(d.contains('…'), "{d}");
    }

    #[test]
    fn quantities_compare_by_value_under_resources() {
        let pairs = [
            ("0.5", "500m"),
            ("1Gi", "1024Mi"),
            ("1000m", "1"),
            ("1k", "1000"),
            ("1e3", "1k"),
            ("1.5Gi", "1536Mi"),
            ("128974848", "123Mi"),
            ("0.1", "100m"),
            ("+2", "2"),
            ("1E3", "1k"),
            ("1n", "0.000000001"),
            (".5", "500m"),
        ];
        for (applied, live) in pairs {
            let a = json!({"resources": {"limits": {"memory": applied}}});
            let l = json!({"resources": {"limits": {"memory": live}}});
            assert_eq!(first_difference(&a, &l), None, "{applied} vs {live}");
        }
        let a = json!({"resources": {"requests": {"cpu": 0.25, "memory": 1073741824}}});
        let l = json!({"resources": {"requests": {"cpu": "250m", "memory": "1Gi"}}});
        assert_eq!(first_difference(&a, &l), None);
        let a = json!({"resources": {"requests": {"cpu": "1"}}});
        let l = json!({"resources": {"requests": {"cpu": "1001m"}}});
        assert_eq!(
            first_difference(&a, &l).as_deref(),
            Some("resources.requests.cpu: applied 1, live 1001m")
        );
    }

    #[test]
    fn quantities_elsewhere() {
        let a =
            json!({"emptyDir": {"sizeLimit": "1024Mi"}, "spec": {"hard": {"requests.cpu": "0.5"}}});
        let l =
            json!({"emptyDir": {"sizeLimit": "1Gi"}, "spec": {"hard": {"requests.cpu": "500m"}}});
        assert_eq!(first_difference(&a, &l), None);
    }

    #[test]
    fn quantity_normalisation_applies_only_to_quantities() {
        // An annotation that happens to look like a quantity is compared as text.
        let a = json!({"metadata": {"annotations": {"x": "1Gi"}}});
        let l = json!({"metadata": {"annotations": {"x": "1024Mi"}}});
        assert_eq!(
            first_difference(&a, &l).as_deref(),
            Some("metadata.annotations.x: applied 1Gi, live 1024Mi")
        );
    }

    #[test]
    fn quantity_parser() {
        let q = |s: &str| quantity_nanos(&json!(s));
        assert_eq!(q("1"), Some(1_000_000_000));
        assert_eq!(q("500m"), Some(500_000_000));
        assert_eq!(q("1Ki"), Some(1024 * 1_000_000_000));
        assert_eq!(q("-1.5"), Some(-1_500_000_000));
        // Below a nano-unit rounds up, as the API server does.
        assert_eq!(q("0.0000000001"), Some(1));
        for bad in [
            "", "m", "1.2.3", "1Q", "abc", "1e", "1e999999", "1Xi", ".", "1 Gi",
        ] {
            assert_eq!(q(bad), None, "{bad:?}");
        }
        assert_eq!(quantity_nanos(&json!(true)), None);
        // Too big for i128: not a quantity we can compare, falls back to plain equality.
        assert_eq!(q("999999999999999999999999999999999Ei"), None);
    }

    #[test]
    fn secret_string_data_is_compared_as_data() {
        let applied = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "stringData": {"password": "hunter2", "empty": ""}, "data": {"other": "b3RoZXI="}});
        let live = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "type": "Opaque",
            "data": {"password": "aHVudGVyMg==", "empty": "", "other": "b3RoZXI="}});
        assert_eq!(first_difference(&applied, &live), None);
        let mut changed = live.clone();
        changed["data"]["password"] = json!("c2VjcmV0");
        assert_eq!(
            first_difference(&applied, &changed).as_deref(),
            Some("data.password: applied aHVudGVyMg==, live c2VjcmV0")
        );
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn path_rendering() {
        let path = [
            PathSegment::Key("spec".into()),
            PathSegment::Key("containers".into()),
            PathSegment::Match("name=x".into()),
            PathSegment::Key("args".into()),
            PathSegment::Index(2),
            PathSegment::Key("a.b/c".into()),
        ];
        assert_eq!(render(&path), r#"spec.containers[name=x].args[2]["a.b/c"]"#);
        assert_eq!(render(&[PathSegment::Key("x".into())]), "x");
        assert_eq!(render(&[PathSegment::Index(0)]), "[0]");
    }
}

#[cfg(test)]
#[path = "diff_corpus_tests.rs"]
mod corpus_tests;
