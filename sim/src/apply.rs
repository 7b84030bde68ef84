//! Server-side apply and managed fields: field sets in the `FieldsV1` format, ownership per
//! field manager and operation (`Apply`/`Update`), conflicts between managers, and the merge of
//! an applied configuration into the live object (fields a manager stops applying are removed
//! unless another manager owns them).
//!
//! Approximations: lists of objects whose elements all carry a well-known key (`name`, `type`,
//! `containerPort`, ...; see `patch::list_key`) are associative lists owned element by element;
//! every other list is atomic. Only `metadata.labels`, `annotations`, `finalizers` and
//! `ownerReferences` are tracked under `metadata`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::patch::list_key;

/// One path in a field set, in `FieldsV1` segments (`f:spec`, `k:{"name":"app"}`).
pub(crate) type Path = Vec<String>;
/// The fields a manager owns.
pub(crate) type FieldSet = BTreeSet<Path>;

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The main endpoint; `status` is left out when the resource has a status subresource.
    Main { has_status: bool },
    /// The `status` subresource: only `status`.
    Status,
}

impl Scope {
    fn subresource(self) -> Option<&'static str> {
        match self {
            Scope::Main { .. } => None,
            Scope::Status => Some("status"),
        }
    }
}

fn collect(v: &Value, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                path.push(format!("f:{k}"));
                collect(c, path, out);
                path.pop();
            }
        }
        Value::Array(items) => match list_key(items) {
            Some(key) => {
                for item in items {
                    let id = item.get(key).cloned().unwrap_or(Value::Null);
                    path.push(format!("k:{}", json!({ key: id })));
                    out.insert(path.clone());
                    collect(item, path, out);
                    path.pop();
                }
            }
            None => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The fields set in `obj`, within `scope`.
pub(crate) fn object_fields(obj: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else { return out };
    let mut path = Path::new();
    for (k, v) in m {
        let take = match (k.as_str(), scope) {
            ("apiVersion" | "kind", _) => false,
            ("metadata", Scope::Main { .. }) => {
                for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(c) = v.get(mk) {
                        path.push("f:metadata".into());
                        path.push(format!("f:{mk}"));
                        collect(c, &mut path, &mut out);
                        path.clear();
                    }
                }
                false
            }
            ("metadata", Scope::Status) => false,
            ("status", Scope::Main { has_status }) => !has_status,
            ("status", Scope::Status) => true,
            (_, Scope::Status) => false,
            (_, Scope::Main { .. }) => true,
        };
        if take {
            path.push(format!("f:{k}"));
            collect(v, &mut path, &mut out);
            path.clear();
        }
    }
    out
}

/// The value at a field path.
pub(crate) fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = step(cur, seg)?;
    }
    Some(cur)
}

fn key_of(seg: &str) -> Option<Map<String, Value>> {
    serde_json::from_str::<Value>(seg.strip_prefix("k:")?)
        .ok()?
        .as_object()
        .cloned()
}

fn step<'a>(cur: &'a Value, seg: &str) -> Option<&'a Value> {
    if let Some(f) = seg.strip_prefix("f:") {
        return cur.get(f);
    }
    let key = key_of(seg)?;
    cur.as_array()?
        .iter()
        .find(|e| key.iter().all(|(k, v)| e.get(k) == Some(v)))
}

fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, head)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in head {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            let Some(key) = key_of(seg) else { return };
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|e| key.iter().all(|(k, v)| e.get(k) == Some(v)))
            })
        };
        let Some(next) = next else { return };
        cur = next;
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let (Some(key), Some(a)) = (key_of(last), cur.as_array_mut()) {
        a.retain(|e| !key.iter().all(|(k, v)| e.get(k) == Some(v)));
    }
}

/// Renders a field set as `FieldsV1`.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    fn render(n: &Node) -> Value {
        let mut m = Map::new();
        if n.member && !n.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), render(c));
        }
        Value::Object(m)
    }
    let mut root = Node::default();
    for p in set {
        let mut n = &mut root;
        for seg in p {
            n = n.children.entry(seg.clone()).or_default();
        }
        n.member = true;
    }
    render(&root)
}

/// Parses `FieldsV1` into a field set.
pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        for (k, c) in m {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            path.push(k.clone());
            if c.as_object().is_none_or(Map::is_empty) {
                out.insert(path.clone());
            } else {
                walk(c, path, out);
            }
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Path::new(), &mut out);
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub set: FieldSet,
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(items) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return vec![];
    };
    items
        .iter()
        .map(|e| {
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                set: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            }
        })
        .collect()
}

/// Writes `managedFields` in Kubernetes' order: `Apply` before `Update`, then by time,
/// manager and subresource.
fn write_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.sort_by(|a, b| {
        (&a.operation, &a.time, &a.manager, &a.subresource).cmp(&(
            &b.operation,
            &b.time,
            &b.manager,
            &b.subresource,
        ))
    });
    let items: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.set),
            });
            if let Some(s) = e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if items.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(items));
        }
    }
}

/// Merges an applied configuration into a live value: maps recursively, associative lists by
/// key, everything else replaced.
pub(crate) fn merge_applied(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                match t.get_mut(k) {
                    Some(tv) => merge_applied(tv, v),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(a))
            if list_key(a).is_some() && (t.is_empty() || list_key(t) == list_key(a)) =>
        {
            let Some(key) = list_key(a) else { return };
            for item in a {
                match t.iter_mut().find(|e| e.get(key) == item.get(key)) {
                    Some(e) => merge_applied(e, item),
                    None => t.push(item.clone()),
                }
            }
        }
        (t, a) => *t = a.clone(),
    }
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone)]
pub(crate) struct Conflict {
    pub manager: String,
    /// The field as Kubernetes prints it: `.spec.replicas`, `.data.key`.
    pub field: String,
}

fn display(path: &Path) -> String {
    path.iter()
        .map(|s| match s.strip_prefix("f:") {
            Some(f) => format!(".{f}"),
            None => format!("[{}]", s.trim_start_matches("k:")),
        })
        .collect()
}

/// What an apply request asks for.
pub(crate) struct ApplyRequest<'a> {
    pub manager: &'a str,
    pub force: bool,
    pub api_version: &'a str,
    pub scope: Scope,
    pub now: &'a str,
}

/// Server-side apply of `applied` onto `live` (`None`: the object does not exist yet).
/// Returns the new object (with `managedFields`), or the conflicts when not forced.
pub(crate) fn apply(
    live: Option<&Value>,
    applied: &Value,
    req: &ApplyRequest,
) -> Result<Value, Vec<Conflict>> {
    let empty = json!({});
    let live = live.unwrap_or(&empty);
    let new_set = object_fields(applied, req.scope);
    let sub = req.scope.subresource().map(str::to_string);
    let mut entries = read_entries(live);
    let is_mine =
        |e: &Entry| e.manager == req.manager && e.operation == "Apply" && e.subresource == sub;
    let old_set = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| e.set.clone())
        .unwrap_or_default();

    let mut conflicts = Vec::new();
    for e in entries.iter_mut().filter(|e| !is_mine(e)) {
        let clashing: Vec<Path> = e
            .set
            .intersection(&new_set)
            .filter(|p| value_at(live, p) != value_at(applied, p))
            .cloned()
            .collect();
        for p in clashing {
            if req.force {
                e.set.remove(&p);
            } else {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    field: display(&p),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }

    let mut obj = live.clone();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !is_mine(e))
        .flat_map(|e| e.set.iter().cloned())
        .collect();
    for p in old_set.difference(&new_set) {
        if !others.contains(p) {
            remove_at(&mut obj, p);
        }
    }
    let mut applied_scoped = applied.clone();
    if let Some(m) = applied_scoped.as_object_mut() {
        match req.scope {
            Scope::Main { has_status: true } => {
                m.remove("status");
            }
            Scope::Status => m.retain(|k, _| k == "status" || k == "apiVersion" || k == "kind"),
            Scope::Main { has_status: false } => {}
        }
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            meta.remove("resourceVersion");
        }
    }
    merge_applied(&mut obj, &applied_scoped);

    entries.retain(|e| !is_mine(e));
    entries.push(Entry {
        manager: req.manager.to_string(),
        operation: "Apply".into(),
        api_version: req.api_version.to_string(),
        time: req.now.to_string(),
        subresource: sub,
        set: new_set,
    });
    write_entries(&mut obj, entries);
    Ok(obj)
}

/// Records a non-apply write (create, update, patch) by `manager`: it takes the fields it
/// changed from every other manager; fields it removed leave every manager.
pub(crate) fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    scope: Scope,
    now: &str,
) {
    let empty = json!({});
    let old = old.unwrap_or(&empty);
    let old_set = object_fields(old, scope);
    let new_set = object_fields(new, scope);
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| !old_set.contains(*p) || value_at(old, p) != value_at(new, p))
        .cloned()
        .collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    let sub = scope.subresource().map(str::to_string);
    let mut entries = read_entries(old);
    if changed.is_empty() && removed.is_empty() {
        write_entries(new, entries);
        return;
    }
    let is_mine =
        |e: &Entry| e.manager == manager && e.operation == "Update" && e.subresource == sub;
    for e in entries.iter_mut() {
        e.set.retain(|p| !removed.contains(p));
        if !is_mine(e) {
            e.set.retain(|p| !changed.contains(p));
        }
    }
    match entries.iter_mut().find(|e| is_mine(e)) {
        Some(e) => {
            e.set.extend(changed);
            e.time = now.to_string();
            e.api_version = api_version.to_string();
        }
        None if !changed.is_empty() => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: sub,
            set: changed,
        }),
        None => {}
    }
    write_entries(new, entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(manager: &'a str, force: bool) -> ApplyRequest<'a> {
        ApplyRequest {
            manager,
            force,
            api_version: "v1",
            scope: Scope::Main { has_status: false },
            now: "t",
        }
    }

    #[test]
    fn fields_v1_round_trip() {
        let obj = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}], "args": ["x"]}});
        let set = object_fields(&obj, Scope::Main { has_status: true });
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["."],
            json!({})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn conflicts_and_force() {
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "1", "a": "a"}});
        let live = apply(None, &a, &req("a", false)).ok();
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "2"}});
        let err = apply(live.as_ref(), &b, &req("b", false))
            .err()
            .unwrap_or_default();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].field, ".data.k");
        let forced = apply(live.as_ref(), &b, &req("b", true)).ok();
        assert_eq!(
            forced.as_ref().and_then(|o| o.pointer("/data/k")),
            Some(&json!("2"))
        );
        // "a" stops applying data.a: it is removed; data.k now belongs to "b" and stays.
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        let after = apply(forced.as_ref(), &a2, &req("a", false)).ok();
        assert_eq!(
            after.as_ref().and_then(|o| o.get("data")),
            Some(&json!({"k": "2"}))
        );
    }
}
