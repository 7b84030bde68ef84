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

fn preserves(s: &Value) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Drops the fields `s` does not declare. At the root, `apiVersion`, `kind` and `metadata`
/// always stay.
pub(crate) fn prune(v: &mut Value, s: &Value, root: bool) {
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            if let Some(props) = props {
                if !preserves(s) {
                    m.retain(|k, _| {
                        props.contains_key(k)
                            || (root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                    });
                }
                for (k, x) in m.iter_mut() {
                    if let Some(ps) = props.get(k) {
                        prune(x, ps, false);
                    }
                }
            } else if let Some(a) = additional {
                for x in m.values_mut() {
                    prune(x, a, false);
                }
            } else if !preserves(s) && s.get("x-kubernetes-embedded-resource").is_none() {
                let keep_root = |k: &str| root && matches!(k, "apiVersion" | "kind" | "metadata");
                m.retain(|k, _| keep_root(k));
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for x in items {
                    prune(x, is, false);
                }
            }
        }
        _ => {}
    }
}

/// Fills in `default`s of absent fields of objects that are there.
pub(crate) fn default(v: &mut Value, s: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    if let Some(d) = ps.get("default")
                        && !m.contains_key(k)
                    {
                        m.insert(k.clone(), d.clone());
                    }
                }
                for (k, x) in m.iter_mut() {
                    if let Some(ps) = props.get(k) {
                        default(x, ps);
                    }
                }
            } else if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
                for x in m.values_mut() {
                    default(x, a);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for x in items {
                    default(x, is);
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

/// Validates `v` against `s`; `path` is the field path (`spec.size`). Each error is (field,
/// message after the field).
pub(crate) fn validate(v: &Value, s: &Value, path: &str, errs: &mut Vec<(String, String)>) {
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
                        validate(x, ps, &join(path, k), errs);
                    }
                }
            } else if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, x) in m {
                    validate(x, a, &format!("{path}[{k}]"), errs);
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
                    validate(x, is, &format!("{path}[{i}]"), errs);
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
    prune(obj, schema, true);
    default(obj, schema);
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
    validate(&Value::Object(body), &root, "", &mut errs);
    errs
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
