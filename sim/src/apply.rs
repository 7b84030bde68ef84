//! Server-side apply and managed fields: field sets in the `FieldsV1` format, ownership per
//! field manager and operation (`Apply`/`Update`), conflicts between managers, and the merge of
//! an applied configuration into the live object (fields a manager stops applying are removed
//! unless another manager owns them).
//!
//! The real server takes the shape of each field from the OpenAPI schema; the sim knows the
//! parts that show in field sets ([`shape`]): the associative lists of built-in kinds and their
//! keys (containers by `name`, container ports by `containerPort` and `protocol`, volume
//! mounts by `mountPath`, ownerReferences by `uid`, ...), `finalizers` as a set, atomic fields
//! (label selectors, `nodeSelector`, object references), and the structs Go always writes
//! (`spec`, a pod template's `metadata`/`spec`, `strategy`), which an `Update` entry never
//! claims as a whole. Every other list is atomic, as are all lists of custom resources.
//! Under `metadata` everything is tracked but the identity and system fields.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

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

/// How field sets are computed: an `Apply` entry holds the applied fields and list items; an
/// `Update` entry also claims the maps and optional structs it added (`"."` in `FieldsV1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Apply,
    Update,
}

/// The shape of a field, as far as field sets need it.
pub(crate) mod shape {
    use serde_json::Value;

    /// How a list is merged and owned.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum List {
        /// One value, replaced as a whole.
        Atomic,
        /// Items identified by these key fields.
        Map(&'static [&'static str]),
        /// Items identified by their value.
        Set,
    }

    /// The list at `field`, whose parent field is `parent` (`containers` for container
    /// ports), in a built-in kind (`builtin`) or a custom resource.
    pub(crate) fn list(parent: &str, field: &str, builtin: bool) -> List {
        if field == "finalizers" {
            return List::Set;
        }
        if field == "ownerReferences" {
            return List::Map(&["uid"]);
        }
        if !builtin {
            return List::Atomic;
        }
        match (parent, field) {
            (_, "containers" | "initContainers" | "ephemeralContainers") => List::Map(&["name"]),
            ("containers" | "initContainers" | "ephemeralContainers", "ports") => {
                List::Map(&["containerPort", "protocol"])
            }
            ("spec", "ports") => List::Map(&["port", "protocol"]),
            (_, "env" | "volumes" | "imagePullSecrets" | "webhooks" | "resourceClaims") => {
                List::Map(&["name"])
            }
            (_, "schedulingGates") => List::Map(&["name"]),
            (_, "volumeMounts") => List::Map(&["mountPath"]),
            (_, "volumeDevices") => List::Map(&["devicePath"]),
            (_, "conditions") => List::Map(&["type"]),
            (_, "hostAliases") => List::Map(&["ip"]),
            (_, "topologySpreadConstraints") => List::Map(&["topologyKey", "whenUnsatisfiable"]),
            _ => List::Atomic,
        }
    }

    /// Fields that are one value whatever their content (label selectors, node selectors,
    /// object references), in built-in kinds.
    pub(crate) fn atomic(field: &str) -> bool {
        matches!(
            field,
            "selector"
                | "nodeSelector"
                | "requiredDuringSchedulingIgnoredDuringExecution"
                | "involvedObject"
                | "regarding"
                | "related"
                | "labelSelector"
                | "namespaceSelector"
                | "objectSelector"
                | "podSelector"
                | "roleRef"
                | "fieldRef"
                | "resourceFieldRef"
                | "configMapKeyRef"
                | "secretKeyRef"
        )
    }

    /// Structs Go always writes (not pointers): an `Update` never claims them as a whole.
    pub(crate) fn always_present(field: &str) -> bool {
        matches!(
            field,
            "metadata"
                | "spec"
                | "status"
                | "template"
                | "strategy"
                | "updateStrategy"
                | "jobTemplate"
                | "source"
                | "names"
                | "nodeInfo"
                | "daemonEndpoints"
                | "kubeletEndpoint"
                | "loadBalancer"
                | "acceptedNames"
        )
    }

    /// A list key's value in an item; `protocol` defaults to TCP, as the schema says.
    pub(crate) fn key_value(item: &Value, key: &str) -> Value {
        match item.get(key) {
            Some(v) if !v.is_null() => v.clone(),
            _ if key == "protocol" => Value::String("TCP".into()),
            _ => Value::Null,
        }
    }
}

/// Metadata fields no manager owns.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Walks a value: `names` are the field names from the root (list items add none).
struct Collector {
    builtin: bool,
    mode: Mode,
    /// The object before a write: count the fields that are null (Go writes non-`omitempty`
    /// fields as null) and the value structs (always there), so a write that fills them
    /// does not add them.
    nulls: bool,
}

impl Collector {
    fn key_segment(&self, keys: &[&str], item: &Value) -> String {
        let mut m = Map::new();
        for k in keys {
            m.insert((*k).to_string(), shape::key_value(item, k));
        }
        format!("k:{}", Value::Object(m))
    }

    fn collect(&self, v: &Value, names: &mut Vec<String>, path: &mut Path, out: &mut FieldSet) {
        let field = names.last().cloned().unwrap_or_default();
        let parent = if names.len() >= 2 {
            names[names.len() - 2].clone()
        } else {
            String::new()
        };
        let field = field.as_str();
        match v {
            Value::Null => {
                if self.nulls && !path.is_empty() {
                    out.insert(path.clone());
                }
            }
            Value::Object(m) if self.builtin && m.is_empty() && shape::always_present(field) => {
                // An empty value struct is there in every object: no field of its own
                // (but the object before a write has it).
                if self.nulls {
                    out.insert(path.clone());
                }
            }
            Value::Object(m) if m.is_empty() || (self.builtin && shape::atomic(field)) => {
                out.insert(path.clone());
            }
            Value::Object(m) => {
                // Go's value structs are there in every object: an Update never adds them.
                let value_struct =
                    field == "metadata" || (self.builtin && shape::always_present(field));
                if self.mode == Mode::Update && !value_struct && !path.is_empty() {
                    out.insert(path.clone());
                }
                for (k, c) in m {
                    names.push(k.clone());
                    path.push(format!("f:{k}"));
                    self.collect(c, names, path, out);
                    path.pop();
                    names.pop();
                }
            }
            Value::Array(items) => match shape::list(&parent, field, self.builtin) {
                shape::List::Map(keys) if items.iter().all(Value::is_object) => {
                    // `containers` is written even when empty (no omitempty): never added.
                    if self.mode == Mode::Update && field != "containers" {
                        out.insert(path.clone());
                    }
                    for item in items {
                        path.push(self.key_segment(keys, item));
                        out.insert(path.clone());
                        if field != "ownerReferences" {
                            self.collect_fields(item, names, path, out);
                        }
                        path.pop();
                    }
                }
                shape::List::Set => {
                    if self.mode == Mode::Update {
                        out.insert(path.clone());
                    }
                    for item in items {
                        path.push(format!("v:{item}"));
                        out.insert(path.clone());
                        path.pop();
                    }
                }
                _ => {
                    out.insert(path.clone());
                }
            },
            _ => {
                out.insert(path.clone());
            }
        }
    }

    /// The fields of a list item (the item itself is already a member).
    fn collect_fields(
        &self,
        item: &Value,
        names: &mut Vec<String>,
        path: &mut Path,
        out: &mut FieldSet,
    ) {
        let Some(m) = item.as_object() else { return };
        for (k, c) in m {
            names.push(k.clone());
            path.push(format!("f:{k}"));
            self.collect(c, names, path, out);
            path.pop();
            names.pop();
        }
    }
}

/// The fields set in `obj`, within `scope`, for an entry of `mode`.
pub(crate) fn object_fields(obj: &Value, scope: Scope, mode: Mode, builtin: bool) -> FieldSet {
    fields_of(obj, scope, mode, builtin, false)
}

fn fields_of(obj: &Value, scope: Scope, mode: Mode, builtin: bool, nulls: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else { return out };
    let c = Collector {
        builtin,
        mode,
        nulls,
    };
    let mut path = Path::new();
    let mut names = Vec::new();
    for (k, v) in m {
        let take = match (k.as_str(), scope) {
            ("apiVersion" | "kind", _) => false,
            ("metadata", _) => {
                let Some(meta) = v.as_object() else { continue };
                let mut tracked = Map::new();
                for (mk, mv) in meta {
                    if !SYSTEM_METADATA.contains(&mk.as_str()) {
                        tracked.insert(mk.clone(), mv.clone());
                    }
                }
                if !tracked.is_empty() {
                    names.push("metadata".into());
                    path.push("f:metadata".into());
                    c.collect(&Value::Object(tracked), &mut names, &mut path, &mut out);
                    path.clear();
                    names.clear();
                }
                false
            }
            ("status", Scope::Main { has_status }) => !has_status,
            ("status", Scope::Status) => true,
            (_, Scope::Status) => false,
            (_, Scope::Main { .. }) => true,
        };
        if take {
            names.push(k.clone());
            path.push(format!("f:{k}"));
            c.collect(v, &mut names, &mut path, &mut out);
            path.clear();
            names.clear();
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

fn matches_key(e: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| shape::key_value(e, k) == *v)
}

fn set_item(seg: &str) -> Option<Value> {
    serde_json::from_str(seg.strip_prefix("v:")?).ok()
}

fn step<'a>(cur: &'a Value, seg: &str) -> Option<&'a Value> {
    if let Some(f) = seg.strip_prefix("f:") {
        return cur.get(f);
    }
    if let Some(v) = set_item(seg) {
        return cur.as_array()?.iter().find(|e| **e == v);
    }
    let key = key_of(seg)?;
    cur.as_array()?.iter().find(|e| matches_key(e, &key))
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
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|e| matches_key(e, &key)))
        };
        let Some(next) = next else { return };
        cur = next;
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let (Some(v), Some(a)) = (set_item(last), cur.as_array_mut()) {
        a.retain(|e| *e != v);
    } else if let (Some(key), Some(a)) = (key_of(last), cur.as_array_mut()) {
        a.retain(|e| !matches_key(e, &key));
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
/// key and sets by value (see [`shape`]), everything else replaced.
pub(crate) fn merge_applied(target: &mut Value, applied: &Value, builtin: bool) {
    merge_at(target, applied, &mut Vec::new(), builtin);
}

fn merge_at(target: &mut Value, applied: &Value, names: &mut Vec<String>, builtin: bool) {
    let field = names.last().cloned().unwrap_or_default();
    let parent = if names.len() >= 2 {
        names[names.len() - 2].clone()
    } else {
        String::new()
    };
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) if !(builtin && shape::atomic(&field)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                match t.get_mut(k) {
                    Some(tv) => {
                        names.push(k.clone());
                        merge_at(tv, v, names, builtin);
                        names.pop();
                    }
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(a)) => match shape::list(&parent, &field, builtin) {
            shape::List::Map(keys) => {
                for item in a {
                    let same = |e: &Value| {
                        keys.iter()
                            .all(|k| shape::key_value(e, k) == shape::key_value(item, k))
                    };
                    match t.iter_mut().find(|e| same(e)) {
                        Some(e) => merge_at(e, item, names, builtin),
                        None => t.push(item.clone()),
                    }
                }
            }
            shape::List::Set => {
                for item in a {
                    if !t.contains(item) {
                        t.push(item.clone());
                    }
                }
            }
            shape::List::Atomic => *t = a.clone(),
        },
        (t, a) => *t = a.clone(),
    }
}

/// Whether `p` has a field below it in `set` (a map or list item owned with its fields).
fn has_children(set: &FieldSet, p: &Path) -> bool {
    set.range(p.clone()..)
        .nth(1)
        .is_some_and(|q| q.len() > p.len() && q[..p.len()] == p[..])
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone)]
pub(crate) struct Conflict {
    pub manager: String,
    /// The API version of the other manager's entry, when it is an `Update` (Kubernetes
    /// says `conflict with "other" using apps/v1`); an `Apply` manager is named alone.
    pub using: Option<String>,
    /// The field as Kubernetes prints it: `.spec.replicas`, `.data.key`.
    pub field: String,
}

impl Conflict {
    /// `conflict with "other" using apps/v1` (a cause's message).
    pub fn with(&self) -> String {
        match &self.using {
            Some(v) => format!("conflict with \"{}\" using {v}", self.manager),
            None => format!("conflict with \"{}\"", self.manager),
        }
    }
}

/// The message of a 409 for `conflicts`, grouped by manager as Kubernetes writes it:
/// `Apply failed with 1 conflict: conflict with "other" using apps/v1: .spec.replicas`.
pub(crate) fn conflict_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for c in conflicts {
        let who = c.with();
        match groups.iter_mut().find(|(w, _)| *w == who) {
            Some((_, fields)) => fields.push(&c.field),
            None => groups.push((who, vec![&c.field])),
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(who, fields)| match fields.as_slice() {
            [one] => format!("{who}: {one}"),
            many => format!(
                "{}:\n- {}",
                who.replacen("conflict ", "conflicts ", 1),
                many.join("\n- ")
            ),
        })
        .collect();
    format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        parts.join("\n")
    )
}

/// A field path as Kubernetes prints it: `.spec.containers[name="app"].image`.
fn display(path: &Path) -> String {
    path.iter()
        .map(|s| {
            if let Some(f) = s.strip_prefix("f:") {
                return format!(".{f}");
            }
            if let Some(v) = s.strip_prefix("v:") {
                return format!("[={v}]");
            }
            match key_of(s) {
                Some(key) => {
                    let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("[{}]", parts.join(","))
                }
                None => format!("[{s}]"),
            }
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
    /// A built-in kind (its lists and atomic fields are known); else a custom resource.
    pub builtin: bool,
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
    let new_set = object_fields(applied, req.scope, Mode::Apply, req.builtin);
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
            .filter(|p| !has_children(&new_set, p) && value_at(live, p) != value_at(applied, p))
            .cloned()
            .collect();
        for p in clashing {
            if req.force {
                e.set.remove(&p);
            } else {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    using: (e.operation == "Update").then(|| e.api_version.clone()),
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
    merge_applied(&mut obj, &applied_scoped, req.builtin);

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
    builtin: bool,
) {
    let empty = json!({});
    let old = old.unwrap_or(&empty);
    let old_set = fields_of(old, scope, Mode::Update, builtin, true);
    let new_set = object_fields(new, scope, Mode::Update, builtin);
    // Added fields, and values that changed (of fields, not of the maps holding them).
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| {
            !old_set.contains(*p)
                || (!has_children(&new_set, p) && value_at(old, p) != value_at(new, p))
        })
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
            builtin: true,
        }
    }

    #[test]
    fn fields_v1_round_trip() {
        let obj = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}], "args": ["x"]}});
        let set = object_fields(&obj, Scope::Main { has_status: true }, Mode::Apply, true);
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
