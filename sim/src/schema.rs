//! Structural schemas of custom resources (a CRD version's `openAPIV3Schema`), applied as the
//! apiextensions API server does on every write: unknown fields are pruned (unless
//! `x-kubernetes-preserve-unknown-fields`), `default`s are filled in, and the object is
//! validated (`type`, `required`, `minimum`/`maximum`, `enum`, lengths, `pattern`, item
//! counts), each failure a cause of one 422 with the real server's messages
//! (`spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1`).
//!
//! Not modelled: CEL rules (`x-kubernetes-validations`), `format`, `oneOf`/`anyOf`/`allOf`/
//! `not`, `multipleOf`, `uniqueItems`, list-type uniqueness, defaults inside `items` of
//! absent lists.

use serde_json::{Map, Value};

/// How a schema is read: a custom resource's structural schema, or the OpenAPI schema of a
/// built-in kind with its shared `$defs`.
#[derive(Clone, Copy)]
pub(crate) struct Schemas<'a> {
    /// Definitions `$ref`s point into (`#/$defs/NAME`); empty for custom resources.
    pub defs: &'a Map<String, Value>,
    /// A built-in kind: an object schema without properties holds anything (`JSON`,
    /// `RawExtension`); in a custom resource it holds nothing (pruned).
    pub builtin: bool,
}

impl<'a> Schemas<'a> {
    /// Follows `$ref`s.
    fn resolve(&self, mut s: &'a Value) -> &'a Value {
        for _ in 0..8 {
            let Some(r) = s.get("$ref").and_then(Value::as_str) else {
                return s;
            };
            let name = r.rsplit('/').next().unwrap_or_default();
            match self.defs.get(name) {
                Some(d) => s = d,
                None => return s,
            }
        }
        s
    }

    /// Whether `s` (resolved) accepts any value: untyped, or an open object of a built-in.
    fn is_any(&self, s: &Value) -> bool {
        let open_object = s.get("type").and_then(Value::as_str) == Some("object")
            && s.get("properties").is_none()
            && s.get("additionalProperties").is_none();
        (self.builtin && open_object)
            || (s.get("type").is_none()
                && s.get("properties").is_none()
                && s.get("additionalProperties").is_none()
                && s.get("items").is_none()
                && s.get("x-kubernetes-int-or-string").is_none())
    }
}

fn preserves(s: &Value) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Drops the fields `s` does not declare. At the root, `apiVersion`, `kind` and `metadata`
/// always stay.
pub(crate) fn prune(v: &mut Value, s: &Value, root: bool, cx: Schemas) {
    let s = cx.resolve(s);
    if cx.is_any(s) {
        return;
    }
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            let keep_root = |k: &str| root && matches!(k, "apiVersion" | "kind" | "metadata");
            if let Some(props) = props {
                if !preserves(s) {
                    m.retain(|k, _| props.contains_key(k) || keep_root(k));
                }
                for (k, x) in m.iter_mut() {
                    if let Some(ps) = props.get(k) {
                        prune(x, ps, false, cx);
                    }
                }
            } else if let Some(a) = additional {
                for x in m.values_mut() {
                    prune(x, a, false, cx);
                }
            } else if !preserves(s) && s.get("x-kubernetes-embedded-resource").is_none() {
                m.retain(|k, _| keep_root(k));
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for x in items {
                    prune(x, is, false, cx);
                }
            }
        }
        _ => {}
    }
}

/// Fills in `default`s of absent fields of objects that are there.
pub(crate) fn default(v: &mut Value, s: &Value, cx: Schemas) {
    let s = cx.resolve(s);
    match v {
        Value::Object(m) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    if let Some(d) = cx.resolve(ps).get("default")
                        && !m.contains_key(k)
                    {
                        m.insert(k.clone(), d.clone());
                    }
                }
                for (k, x) in m.iter_mut() {
                    if let Some(ps) = props.get(k) {
                        default(x, ps, cx);
                    }
                }
            } else if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
                for x in m.values_mut() {
                    default(x, a, cx);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for x in items {
                    default(x, is, cx);
                }
            }
        }
        _ => {}
    }
}

/// How Kubernetes prints a value in a validation message.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Object(_) | Value::Array(_) => {
            format!("\"{}\"", if v.is_object() { "object" } else { "array" })
        }
        other => other.to_string(),
    }
}

fn type_ok(v: &Value, s: &Value) -> bool {
    if v.is_null() {
        return s.get("nullable").and_then(Value::as_bool) == Some(true);
    }
    if s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return v.is_string() || v.as_i64().is_some();
    }
    match s.get("type").and_then(Value::as_str) {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value of the wrong type: (field path in server-side apply's notation, what was
/// expected, the value) — `.spec.volumes[name="cfg"].configMap.defaultMode`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TypeError {
    pub path: String,
    pub expected: &'static str,
    pub got: Value,
}

impl TypeError {
    /// The message of structured-merge-diff's typed conversion (what a server-side apply of
    /// it answers, with 500).
    pub fn typed_message(&self) -> String {
        let got = match &self.got {
            Value::String(_) if matches!(self.expected, "numeric (int or float)") => {
                "string".to_string()
            }
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or_default();
                let shown = if f.fract() == 0.0 && f.abs() < 1e15 {
                    format!("{}", f as i64)
                } else {
                    format!("{f:e}").replace('e', "e+").replace("e+-", "e-")
                };
                format!("&value.valueUnstructured{{Value:{shown}}}")
            }
            other => format!("&value.valueUnstructured{{Value:{other}}}"),
        };
        format!("{}: expected {}, got {got}", self.path, self.expected)
    }
}

/// Finds values of the wrong type (nulls are unset fields, never wrong). List items are
/// named by their key where `key_of` knows the list's keys.
pub(crate) fn type_errors(
    v: &Value,
    s: &Value,
    path: &str,
    names: &mut Vec<String>,
    cx: Schemas,
    out: &mut Vec<TypeError>,
) {
    let s = cx.resolve(s);
    if v.is_null() || cx.is_any(s) {
        return;
    }
    let int_or_string = s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    let expected = if int_or_string {
        (!(v.is_string() || v.is_number())).then_some("string or number")
    } else {
        match s.get("type").and_then(Value::as_str) {
            Some("object") if !v.is_object() => Some("map"),
            Some("array") if !v.is_array() => Some("list"),
            Some("string") if !v.is_string() => Some("string"),
            Some("integer" | "number") if !v.is_number() => Some("numeric (int or float)"),
            Some("boolean") if !v.is_boolean() => Some("boolean"),
            _ => None,
        }
    };
    if let Some(expected) = expected {
        out.push(TypeError {
            path: path.to_string(),
            expected,
            got: v.clone(),
        });
        return;
    }
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            for (k, x) in m {
                let sub = props.and_then(|p| p.get(k)).or(additional);
                if let Some(sub) = sub {
                    names.push(k.clone());
                    type_errors(x, sub, &format!("{path}.{k}"), names, cx, out);
                    names.pop();
                }
            }
        }
        Value::Array(items) => {
            let Some(is) = s.get("items") else { return };
            let field = names.last().cloned().unwrap_or_default();
            let parent = if names.len() >= 2 {
                names[names.len() - 2].clone()
            } else {
                String::new()
            };
            let keys = match crate::apply::shape::list(&parent, &field, cx.builtin) {
                crate::apply::shape::List::Map(keys) => keys,
                _ => &[],
            };
            for (i, x) in items.iter().enumerate() {
                let at = if keys.is_empty() || !x.is_object() {
                    format!("{path}[{i}]")
                } else {
                    let parts: Vec<String> = keys
                        .iter()
                        .filter_map(|k| x.get(*k).map(|v| format!("{k}={v}")))
                        .collect();
                    format!("{path}[{}]", parts.join(","))
                };
                type_errors(x, is, &at, names, cx, out);
            }
        }
        _ => {}
    }
}

/// Validates `v` against `s`; `path` is the field path (`spec.size`). Each error is (field,
/// message after the field).
pub(crate) fn validate(
    v: &Value,
    s: &Value,
    path: &str,
    cx: Schemas,
    errs: &mut Vec<(String, String)>,
) {
    let s = cx.resolve(s);
    if cx.is_any(s) {
        return;
    }
    if !type_ok(v, s) {
        let want = s.get("type").and_then(Value::as_str).unwrap_or("object");
        errs.push((
            path.to_string(),
            format!(
                "Invalid value: \"{}\": {path} in body must be of type {want}: \"{}\"",
                type_name(v),
                type_name(v)
            ),
        ));
        return;
    }
    let num = |k: &str| s.get(k).and_then(Value::as_f64);
    if let Some(x) = v.as_f64() {
        let exclusive = |k: &str| s.get(k).and_then(Value::as_bool) == Some(true);
        if let Some(min) = num("minimum") {
            let (bad, how) = if exclusive("exclusiveMinimum") {
                (x <= min, "greater than")
            } else {
                (x < min, "greater than or equal to")
            };
            if bad {
                errs.push((
                    path.to_string(),
                    format!(
                        "Invalid value: {}: {path} in body should be {how} {}",
                        shown(v),
                        s["minimum"]
                    ),
                ));
            }
        }
        if let Some(max) = num("maximum") {
            let (bad, how) = if exclusive("exclusiveMaximum") {
                (x >= max, "less than")
            } else {
                (x > max, "less than or equal to")
            };
            if bad {
                errs.push((
                    path.to_string(),
                    format!(
                        "Invalid value: {}: {path} in body should be {how} {}",
                        shown(v),
                        s["maximum"]
                    ),
                ));
            }
        }
    }
    if let Some(text) = v.as_str() {
        let len = text.chars().count() as f64;
        if let Some(max) = num("maxLength")
            && len > max
        {
            errs.push((
                path.to_string(),
                format!("Too long: may not be longer than {}", s["maxLength"]),
            ));
        }
        if let Some(min) = num("minLength")
            && len < min
        {
            errs.push((
                path.to_string(),
                format!(
                    "Invalid value: {}: {path} in body should be at least {} chars long",
                    shown(v),
                    s["minLength"]
                ),
            ));
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(shown).collect();
        errs.push((
            path.to_string(),
            format!(
                "Unsupported value: {}: supported values: {}",
                shown(v),
                list.join(", ")
            ),
        ));
    }
    match v {
        Value::Object(m) => {
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !m.contains_key(r) {
                    errs.push((join(path, r), "Required value".into()));
                }
            }
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, x) in m {
                    if let Some(ps) = props.get(k) {
                        validate(x, ps, &join(path, k), cx, errs);
                    }
                }
            } else if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, x) in m {
                    validate(x, a, &format!("{path}[{k}]"), cx, errs);
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as f64;
            if let Some(max) = num("maxItems")
                && n > max
            {
                errs.push((
                    path.to_string(),
                    format!(
                        "Too many: {}: must have at most {} items",
                        items.len(),
                        s["maxItems"]
                    ),
                ));
            }
            if let Some(min) = num("minItems")
                && n < min
            {
                errs.push((
                    path.to_string(),
                    format!(
                        "Invalid value: {}: {path} in body should have at least {} items",
                        items.len(),
                        s["minItems"]
                    ),
                ));
            }
            if let Some(is) = s.get("items") {
                for (i, x) in items.iter().enumerate() {
                    validate(x, is, &format!("{path}[{i}]"), cx, errs);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

/// Prunes, defaults and validates a custom resource with its version's schema. The root's
/// `metadata` is left to the generic checks.
pub(crate) fn admit(obj: &mut Value, schema: &Value) -> Vec<(String, String)> {
    let defs = Map::new();
    let cx = Schemas {
        defs: &defs,
        builtin: false,
    };
    prune(obj, schema, true, cx);
    default(obj, schema, cx);
    let mut errs = Vec::new();
    let Some(m) = obj.as_object() else {
        return errs;
    };
    let mut body = Map::new();
    for (k, v) in m {
        if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            body.insert(k.clone(), v.clone());
        }
    }
    let mut root = schema.clone();
    if let Some(r) = root.as_object_mut() {
        // The root's own required list may name metadata & co.; check the rest only.
        if let Some(req) = r.get_mut("required").and_then(Value::as_array_mut) {
            req.retain(|x| !matches!(x.as_str(), Some("apiVersion" | "kind" | "metadata")));
        }
        if let Some(props) = r.get_mut("properties").and_then(Value::as_object_mut) {
            props.remove("metadata");
            props.remove("apiVersion");
            props.remove("kind");
        }
    }
    validate(&Value::Object(body), &root, "", cx, &mut errs);
    errs
}

/// The OpenAPI schemas of the built-in kinds (k8s-openapi's `JsonSchema`), made once per
/// process and shared by every sim: one `$defs` map, and the root of each kind.
pub(crate) mod builtin {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use k8s_openapi::api;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration;
    use serde_json::{Map, Value};

    use super::{Schemas, TypeError};

    struct Table {
        defs: Map<String, Value>,
        roots: HashMap<String, Value>,
    }

    fn strip_docs(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("description");
                for x in m.values_mut() {
                    strip_docs(x);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(strip_docs),
            _ => {}
        }
    }

    fn table() -> &'static Table {
        static TABLE: OnceLock<Table> = OnceLock::new();
        TABLE.get_or_init(|| {
            let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
            let mut roots = HashMap::new();
            macro_rules! kinds {
                ($(($group:literal, $kind:literal, $t:ty)),* $(,)?) => {
                    $(roots.insert(format!("{}/{}", $group, $kind), generator.subschema_for::<$t>().to_value());)*
                };
            }
            kinds!(
                ("", "Namespace", api::core::v1::Namespace),
                ("", "Node", api::core::v1::Node),
                ("", "Pod", api::core::v1::Pod),
                ("", "Service", api::core::v1::Service),
                ("", "ConfigMap", api::core::v1::ConfigMap),
                ("", "Secret", api::core::v1::Secret),
                ("", "ServiceAccount", api::core::v1::ServiceAccount),
                ("", "Event", api::core::v1::Event),
                ("", "Endpoints", api::core::v1::Endpoints),
                ("", "PersistentVolumeClaim", api::core::v1::PersistentVolumeClaim),
                ("", "PersistentVolume", api::core::v1::PersistentVolume),
                ("", "LimitRange", api::core::v1::LimitRange),
                ("", "ResourceQuota", api::core::v1::ResourceQuota),
                ("apps", "Deployment", api::apps::v1::Deployment),
                ("apps", "StatefulSet", api::apps::v1::StatefulSet),
                ("apps", "DaemonSet", api::apps::v1::DaemonSet),
                ("apps", "ReplicaSet", api::apps::v1::ReplicaSet),
                ("apps", "ControllerRevision", api::apps::v1::ControllerRevision),
                ("batch", "Job", api::batch::v1::Job),
                ("batch", "CronJob", api::batch::v1::CronJob),
                ("autoscaling", "HorizontalPodAutoscaler", api::autoscaling::v2::HorizontalPodAutoscaler),
                ("policy", "PodDisruptionBudget", api::policy::v1::PodDisruptionBudget),
                ("coordination.k8s.io", "Lease", api::coordination::v1::Lease),
                ("apiextensions.k8s.io", "CustomResourceDefinition", apiextensions::v1::CustomResourceDefinition),
                ("events.k8s.io", "Event", api::events::v1::Event),
                ("rbac.authorization.k8s.io", "Role", api::rbac::v1::Role),
                ("rbac.authorization.k8s.io", "RoleBinding", api::rbac::v1::RoleBinding),
                ("rbac.authorization.k8s.io", "ClusterRole", api::rbac::v1::ClusterRole),
                ("rbac.authorization.k8s.io", "ClusterRoleBinding", api::rbac::v1::ClusterRoleBinding),
                ("networking.k8s.io", "Ingress", api::networking::v1::Ingress),
                ("networking.k8s.io", "IngressClass", api::networking::v1::IngressClass),
                ("networking.k8s.io", "NetworkPolicy", api::networking::v1::NetworkPolicy),
                ("discovery.k8s.io", "EndpointSlice", api::discovery::v1::EndpointSlice),
                ("storage.k8s.io", "StorageClass", api::storage::v1::StorageClass),
                ("scheduling.k8s.io", "PriorityClass", api::scheduling::v1::PriorityClass),
                ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration", api::admissionregistration::v1::ValidatingWebhookConfiguration),
                ("admissionregistration.k8s.io", "MutatingWebhookConfiguration", api::admissionregistration::v1::MutatingWebhookConfiguration),
                ("apiregistration.k8s.io", "APIService", apiregistration::v1::APIService),
            );
            let mut defs = generator.take_definitions(true);
            for d in defs.values_mut() {
                strip_docs(d);
            }
            Table { defs, roots }
        })
    }

    /// The schema of a built-in kind, if the sim knows it.
    fn of(group: &str, kind: &str) -> Option<(&'static Value, Schemas<'static>)> {
        let t = table();
        let root = t.roots.get(&format!("{group}/{kind}"))?;
        Some((
            root,
            Schemas {
                defs: &t.defs,
                builtin: true,
            },
        ))
    }

    /// Drops the fields of a built-in object its kind does not have (the real server's
    /// decoding drops unknown fields silently).
    pub(crate) fn prune(group: &str, kind: &str, obj: &mut Value) {
        if let Some((root, cx)) = of(group, kind) {
            super::prune(obj, root, true, cx);
        }
    }

    /// Values of the wrong type in a built-in object.
    pub(crate) fn type_errors(group: &str, kind: &str, obj: &Value) -> Vec<TypeError> {
        let mut out = Vec::new();
        if let Some((root, cx)) = of(group, kind) {
            super::type_errors(obj, root, "", &mut Vec::new(), cx, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn prunes_defaults_and_validates_like_the_recorded_server() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1},
                "color": {"type": "string", "default": "blue"}}},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}});
        let mut w = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"},
            "spec": {"size": 3, "extra": "not in the schema"}, "junk": 1});
        assert!(admit(&mut w, &schema).is_empty());
        assert_eq!(w["spec"], json!({"size": 3, "color": "blue"}));
        assert!(w.get("junk").is_none());
        let mut bad = json!({"spec": {"size": 0}});
        assert_eq!(
            admit(&mut bad, &schema),
            vec![(
                "spec.size".to_string(),
                "Invalid value: 0: spec.size in body should be greater than or equal to 1"
                    .to_string()
            )]
        );
        let mut missing = json!({"spec": {"color": "green"}});
        assert_eq!(
            admit(&mut missing, &schema),
            vec![("spec.size".to_string(), "Required value".to_string())]
        );
        let mut typed = json!({"spec": {"size": "3"}});
        assert_eq!(admit(&mut typed, &schema).len(), 1);
    }
}
