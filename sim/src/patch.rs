//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and an approximation of
//! strategic merge patch (merge patch where lists of objects with a well-known key such as
//! `name` are merged element by element, plus the `$patch: delete|replace` directives).

use serde_json::{Map, Value};

/// Keys by which lists of objects are merged (strategic merge patch) or owned element by
/// element (server-side apply), in order of preference. The real server takes them from
/// the OpenAPI schema; the sim guesses from the elements.
const LIST_KEYS: &[&str] = &[
    "name",
    "type",
    "containerPort",
    "mountPath",
    "port",
    "devicePath",
    "ip",
];

/// The key by which a list's elements are identified, if every element is an object with it.
pub(crate) fn list_key(items: &[Value]) -> Option<&'static str> {
    if items.is_empty() {
        return None;
    }
    LIST_KEYS.iter().copied().find(|k| {
        items
            .iter()
            .all(|i| i.get(*k).is_some_and(|v| !v.is_null()))
    })
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Strategic merge patch, approximated (see the module docs).
pub(crate) fn strategic(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = p.clone();
        p.remove("$patch");
        *target = Value::Object(p);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Array(items) => {
                let cur = t.get_mut(k);
                match (cur, list_key(items)) {
                    (Some(Value::Array(existing)), Some(key))
                        if list_key(existing) == Some(key) || existing.is_empty() =>
                    {
                        // Items the object does not have yet go first, as Kubernetes'
                        // strategic merge puts them.
                        let mut added = Vec::new();
                        for item in items {
                            let id = item.get(key).cloned();
                            let pos = existing.iter().position(|e| e.get(key) == id.as_ref());
                            let delete =
                                item.get("$patch").and_then(Value::as_str) == Some("delete");
                            match (pos, delete) {
                                (Some(i), true) => {
                                    existing.remove(i);
                                }
                                (Some(i), false) => strategic(&mut existing[i], item),
                                (None, true) => {}
                                (None, false) => {
                                    let mut fresh = Value::Object(Map::new());
                                    strategic(&mut fresh, item);
                                    added.push(fresh);
                                }
                            }
                        }
                        added.append(existing);
                        *existing = added;
                    }
                    _ => {
                        t.insert(k.clone(), Value::Array(items.clone()));
                    }
                }
            }
            Value::Object(o) if o.get("$patch").and_then(Value::as_str) == Some("delete") => {
                t.remove(k);
            }
            _ => strategic(t.entry(k.clone()).or_insert(Value::Null), v),
        }
    }
}

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let (head, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("invalid path {path:?}"))?;
    let target = if head.is_empty() {
        Some(doc)
    } else {
        doc.pointer_mut(head)
    };
    let target = target.ok_or_else(|| format!("path {head:?} does not exist"))?;
    Ok((target, unescape(last)))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (p, last) = parent(doc, path)?;
    match p {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| format!("invalid index {last:?}"))?
            };
            if i > a.len() {
                return Err(format!("index {i} out of bounds"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("cannot add at {path:?}")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (p, last) = parent(doc, path)?;
    match p {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| format!("unable to remove nonexistent key: {last}")),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .map_err(|_| format!("invalid index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("index {i} out of bounds"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("cannot remove at {path:?}")),
    }
}

/// RFC 6902 JSON patch.
pub(crate) fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch must be a list of operations")?;
    for op in ops {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("operation has no \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("operation has no \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("{kind} operation has no \"value\""))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{kind} operation has no \"from\""))
        };
        match kind {
            "add" => add(doc, path, value()?)?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                remove(doc, path)?;
                add(doc, path, value()?)?;
            }
            "move" => {
                let v = remove(doc, from()?)?;
                add(doc, path, v)?;
            }
            "copy" => {
                let v = doc
                    .pointer(from()?)
                    .cloned()
                    .ok_or("copy: \"from\" does not exist")?;
                add(doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(format!("test failed at {path:?}"));
                }
            }
            other => return Err(format!("unknown operation {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_removes_nulls() {
        let mut v = json!({"a": 1, "b": {"c": 2}});
        merge(&mut v, &json!({"a": null, "b": {"d": 3}}));
        assert_eq!(v, json!({"b": {"c": 2, "d": 3}}));
    }

    #[test]
    fn strategic_merges_lists_by_name() {
        let mut v = json!({"c": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]});
        strategic(
            &mut v,
            &json!({"c": [{"name": "b", "image": "z"}, {"name": "a", "$patch": "delete"}]}),
        );
        assert_eq!(v, json!({"c": [{"name": "b", "image": "z"}]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut v = json!({"a": [1, 2], "b": "x"});
        let r = json_patch(
            &mut v,
            &json!([{"op": "add", "path": "/a/-", "value": 3}, {"op": "replace", "path": "/b", "value": "y"}, {"op": "test", "path": "/b", "value": "y"}]),
        );
        assert_eq!(r, Ok(()));
        assert_eq!(v, json!({"a": [1, 2, 3], "b": "y"}));
        assert!(json_patch(&mut v, &json!([{"op": "remove", "path": "/zz"}])).is_err());
    }
}
