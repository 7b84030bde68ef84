//! Object storage: every resource as JSON, keyed by group/resource and namespace/name, with
//! one global `resourceVersion` counter, `uid`, `generation`, `creationTimestamp`, finalizers
//! and `deletionTimestamp`, namespace and CRD cascades, and the bounded event log that watches
//! replay from. All methods run under the one store lock; nothing here is async.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::api::status::ApiError;
use crate::apply::{self, Scope};
use crate::registry::{GroupResource, Registry, ResourceDef};
use crate::rng::Rng;
use crate::{defaults, quantity, schema, validation};

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object, as kept in the event log and sent to watches.
#[derive(Debug)]
pub(crate) struct WatchEvent {
    pub rv: u64,
    pub gr: GroupResource,
    pub kind: EventType,
    pub object: Value,
}

/// Who writes, and whether the write is tracked in `managedFields`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Writer<'a> {
    pub manager: &'a str,
    /// A client request (status is dropped on create for resources with a status subresource).
    pub external: bool,
    /// Record the write as an `Update` of `manager`; false when `apply` already did.
    pub track: bool,
    /// `dryRun=All`: validate and return what would be stored, store nothing.
    pub dry_run: bool,
}

impl Writer<'static> {
    /// The simulated controllers.
    pub const CONTROLLER: Writer<'static> = Writer {
        manager: "kube-controller-manager",
        external: false,
        track: true,
        dry_run: false,
    };

    /// The garbage collector (finalizers, ownerReferences).
    pub const GARBAGE_COLLECTOR: Writer<'static> = Writer {
        manager: "generic-garbage-collector",
        ..Writer::CONTROLLER
    };
}

/// The finalizer of an object deleted with `propagationPolicy: Foreground`.
const FOREGROUND: &str = "foregroundDeletion";

/// What happens to an object's dependents when it is deleted (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// The current time as Kubernetes writes it (`2024-01-02T03:04:05Z`).
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

type Objects = BTreeMap<(String, String), Value>;

/// All objects and the event log.
pub(crate) struct Store {
    pub registry: Registry,
    objects: HashMap<GroupResource, Objects>,
    rv: u64,
    log: VecDeque<Arc<WatchEvent>>,
    log_cap: usize,
    /// Watches starting at a resourceVersion below this get 410 Gone.
    evicted_up_to: u64,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    pub rng: Rng,
}

fn meta(obj: &Value, key: &str) -> String {
    obj.get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        // Unreachable: metadata was made an object just above.
        _ => unreachable!("metadata is an object"),
    }
}

/// The parts of an object that make up its "spec" for `generation`: all but metadata/status.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

/// Whether two JSON objects are equal apart from key `skip`, whose values `eq` compares.
fn equal_except(a: &Value, b: &Value, skip: &str, eq: impl Fn(&Value, &Value) -> bool) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return false;
    };
    a.len() == b.len()
        && a.iter().all(|(k, av)| match b.get(k) {
            None => false,
            Some(bv) if k == skip => eq(av, bv),
            Some(bv) => av == bv,
        })
}

/// Whether `old` and `new` differ at most in the `time` of their `managedFields` entries.
///
/// Note: this is Kubernetes 1.28's `IgnoreManagedFieldsTimestampsTransformer` (in the
/// registry's update, after decoding and defaulting; 1.25+ with kubernetes#116865). Because
/// it compares decoded objects, whose quantities are canonical, re-applying `"0.5"` over a
/// stored `500m` is a no-op in 1.28 too; the recorded 1.24 (fidelity case 5) had no such
/// check and wrote.
fn same_but_managed_times(old: &Value, new: &Value) -> bool {
    // Entries are unique per manager, operation and subresource; their order follows times.
    let entries_equal = |a: &Value, b: &Value| match (a.as_array(), b.as_array()) {
        (Some(a), Some(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|x| b.iter().any(|y| equal_except(x, y, "time", |_, _| true)))
        }
        _ => a == b,
    };
    equal_except(old, new, "metadata", |a, b| {
        equal_except(a, b, "managedFields", entries_equal)
    })
}

/// Checks (and fills in) `apiVersion`/`kind` of a request body against the resource.
pub(crate) fn check_kind(def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    let Some(m) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let av = def.api_version();
    match m.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("apiVersion".into(), json!(av));
        }
        Some(got) if got != av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({got}) does not match the expected API version ({av})"
            )));
        }
        Some(_) => {}
    }
    match m.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("kind".into(), json!(def.kind));
        }
        Some(got) if got != def.kind => {
            let version = m
                .get("apiVersion")
                .and_then(Value::as_str)
                .and_then(|av| av.rsplit('/').next())
                .unwrap_or(&def.version)
                .to_string();
            let internal = match def.group.split('.').next().unwrap_or_default() {
                "" => "core",
                g => g,
            };
            return Err(ApiError::bad_request(format!(
                "{got} in version \"{version}\" cannot be handled as a {kind}: converting ({version}.{got}) to ({internal}.{kind}): unknown conversion",
                kind = def.kind
            )));
        }
        Some(_) => {}
    }
    if !m.get("metadata").is_none_or(Value::is_object) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

/// Marking an object deleted (`deletionTimestamp`) is a new generation of it, as
/// Kubernetes' `BeforeDelete` counts it (kinds with a generation).
fn bump_generation(obj: &mut Value) {
    if let Some(g) = obj.pointer("/metadata/generation").and_then(Value::as_i64) {
        meta_mut(obj).insert("generation".into(), json!(g + 1));
    }
}

/// What decoding a body into the kind's Go type does: a value of the wrong type is a 400,
/// fields the kind does not have are dropped.
fn decode(def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    if def.crd.is_some() {
        return Ok(());
    }
    if let Some(e) = schema::builtin::type_errors(&def.group, &def.kind, obj).first() {
        let path = e.path.trim_start_matches('.');
        let field: String = path
            .split('.')
            .map(|seg| seg.split('[').next().unwrap_or(seg))
            .collect::<Vec<_>>()
            .join(".");
        let got = match &e.got {
            Value::String(_) => "string",
            Value::Number(_) => "number",
            Value::Bool(_) => "bool",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
            Value::Null => "null",
        };
        let want = match e.expected {
            "numeric (int or float)" => "int32",
            "map" => "map",
            "list" => "slice",
            "boolean" => "bool",
            other => other,
        };
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: json: cannot unmarshal {got} into Go struct field {kind}.{field} of type {want}",
            kind = def.kind,
            version = def.version,
        )));
    }
    schema::builtin::prune(&def.group, &def.kind, obj);
    Ok(())
}

/// A custom resource is pruned, defaulted and validated with its CRD's schema.
fn admit_custom(def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    let Some(schema) = &def.schema else {
        return Ok(());
    };
    let errs = crate::schema::admit(obj, schema);
    if errs.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid_fields(def, &meta(obj, "name"), &errs))
}

/// Quantities of built-in kinds are stored in canonical form (see `quantity`).
fn canonical_quantities(def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    if def.crd.is_some() {
        return Ok(());
    }
    quantity::canonicalize(&def.group, &def.kind, obj).map_err(ApiError::bad_request)
}

impl Store {
    pub fn new(seed: u64, log_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Store {
            registry: Registry::builtin(),
            objects: HashMap::new(),
            rv: 1,
            log: VecDeque::new(),
            log_cap: log_cap.max(16),
            evicted_up_to: 0,
            tx,
            rng: Rng::new(seed),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.tx.subscribe()
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Forgets the history up to `rv`, as etcd's compaction does: watches and exact lists
    /// from an older resourceVersion get 410 Gone.
    pub fn compact(&mut self, rv: u64) {
        if rv <= self.evicted_up_to {
            return;
        }
        self.evicted_up_to = rv;
        let keep = self.log.partition_point(|e| e.rv <= rv);
        self.log.drain(..keep);
    }

    /// The oldest resourceVersion a watch may start from.
    pub fn compacted(&self) -> u64 {
        self.evicted_up_to
    }

    /// Whether an object of `gr` changed after `rv`.
    pub fn changed_since(&self, gr: &GroupResource, rv: u64) -> bool {
        let start = self.log.partition_point(|e| e.rv <= rv);
        self.log.iter().skip(start).any(|e| e.gr == *gr)
    }

    /// Events after `rv`, or `None` when some of them are no longer kept (410 Gone).
    pub fn events_since(&self, rv: u64) -> Option<Vec<Arc<WatchEvent>>> {
        if rv < self.evicted_up_to {
            return None;
        }
        let start = self.log.partition_point(|e| e.rv <= rv);
        Some(self.log.iter().skip(start).cloned().collect())
    }

    pub fn get(&self, gr: &GroupResource, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(gr)?
            .get(&(ns.to_string(), name.to_string()))
    }

    /// Objects of a resource, in one namespace or all (sorted by namespace and name).
    pub fn list<'a, 'b>(
        &'a self,
        gr: &GroupResource,
        ns: Option<&'b str>,
    ) -> Box<dyn Iterator<Item = &'a Value> + 'b>
    where
        'a: 'b,
    {
        let Some(objs) = self.objects.get(gr) else {
            return Box::new(std::iter::empty());
        };
        match ns {
            Some(ns) => Box::new(
                objs.range((ns.to_string(), String::new())..)
                    .take_while(move |((n, _), _)| n == ns)
                    .map(|(_, v)| v),
            ),
            None => Box::new(objs.values()),
        }
    }

    /// Number of objects of all resources.
    pub fn object_count(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }

    fn emit(&mut self, gr: &GroupResource, kind: EventType, object: Value) {
        let ev = Arc::new(WatchEvent {
            rv: self.rv,
            gr: gr.clone(),
            kind,
            object,
        });
        self.log.push_back(ev.clone());
        while self.log.len() > self.log_cap {
            if let Some(old) = self.log.pop_front() {
                self.evicted_up_to = old.rv;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.tx.send(ev);
    }

    fn store(&mut self, def: &ResourceDef, mut obj: Value, kind: EventType) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let key = (meta(&obj, "namespace"), meta(&obj, "name"));
        let gr = def.gr();
        self.objects
            .entry(gr.clone())
            .or_default()
            .insert(key, obj.clone());
        self.emit(&gr, kind, obj.clone());
        obj
    }

    fn remove(&mut self, def: &ResourceDef, ns: &str, name: &str) -> Option<Value> {
        let gr = def.gr();
        let mut obj = self
            .objects
            .get_mut(&gr)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.emit(&gr, EventType::Deleted, obj.clone());
        self.after_delete(def, &obj);
        Some(obj)
    }

    fn resolve_ns(
        &self,
        def: &ResourceDef,
        obj: &mut Value,
        creating: bool,
    ) -> Result<String, ApiError> {
        if !def.namespaced {
            meta_mut(obj).remove("namespace");
            return Ok(String::new());
        }
        let ns = meta(obj, "namespace");
        let ns = if ns.is_empty() {
            "default".to_string()
        } else {
            ns
        };
        meta_mut(obj).insert("namespace".into(), json!(ns));
        if creating {
            let nsgr = GroupResource {
                group: String::new(),
                plural: "namespaces".into(),
            };
            match self.get(&nsgr, "", &ns) {
                None => {
                    return Err(ApiError::new(
                        404,
                        "NotFound",
                        format!("namespaces \"{ns}\" not found"),
                    )
                    .with_details(json!({"name": ns, "kind": "namespaces"})));
                }
                Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                    return Err(ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "unable to create new content in namespace {ns} because it is being terminated"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(ns)
    }

    /// Creates an object. `obj` has been checked with `check_kind`.
    pub fn create(
        &mut self,
        def: &ResourceDef,
        mut obj: Value,
        w: Writer,
    ) -> Result<Value, ApiError> {
        check_kind(def, &mut obj)?;
        let mut name = meta(&obj, "name");
        if name.is_empty() {
            let generate = meta(&obj, "generateName");
            if generate.is_empty() {
                return Err(ApiError::invalid(
                    def,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
            name = format!("{generate}{}", self.rng.suffix(5));
            meta_mut(&mut obj).insert("name".into(), json!(name));
        }
        let name_errors: Vec<(String, String)> = validation::name_error(def, &name)
            .map(|why| ("metadata.name".to_string(), why))
            .into_iter()
            .collect();
        let ns = self.resolve_ns(def, &mut obj, true)?;
        if self.get(&def.gr(), &ns, &name).is_some() {
            return Err(ApiError::already_exists(def, &name));
        }
        decode(def, &mut obj)?;
        let uid = self.rng.uuid();
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now()));
        if def.generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        m.remove("deletionTimestamp");
        m.remove("resourceVersion");
        if w.external
            && def.has_status
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        admit_custom(def, &mut obj)?;
        defaults::apply(def, &mut obj);
        canonical_quantities(def, &mut obj)?;
        defaults::encode(def, &mut obj);
        defaults::convert(def, &mut obj, None);
        if w.track {
            // The object before a create is the kind's zero value, with the fields Go
            // always writes: a create does not claim them.
            let mut zero = json!({});
            defaults::encode(def, &mut zero);
            apply::track_update(
                Some(&zero),
                &mut obj,
                w.manager,
                &def.api_version(),
                Scope::Main {
                    has_status: def.has_status,
                },
                &now(),
                def.crd.is_none(),
            );
        }
        defaults::prepare(def, &mut obj, None, w.external, &mut self.rng);
        defaults::encode(def, &mut obj);
        validation::validate_with(def, &obj, None, name_errors)?;
        self.before_write(def, &mut obj, w.dry_run)?;
        let mut obj = crate::convert::to_storage(def, obj);
        if w.dry_run {
            meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
            return Ok(obj);
        }
        Ok(self.store(def, obj, EventType::Added))
    }

    /// Replaces an object (PUT, and the result of PATCH/apply). With `Scope::Status` only the
    /// status changes; with `Scope::Main` the status is kept if the resource has a status
    /// subresource. A `metadata.resourceVersion` in `obj` must match (409 otherwise).
    pub fn update(
        &mut self,
        def: &ResourceDef,
        mut obj: Value,
        scope: Scope,
        w: Writer,
    ) -> Result<Value, ApiError> {
        check_kind(def, &mut obj)?;
        let name = meta(&obj, "name");
        let ns = self.resolve_ns(def, &mut obj, false)?;
        let Some(old) = self.get(&def.gr(), &ns, &name).cloned() else {
            return Err(ApiError::not_found(def, &name));
        };
        let old = crate::convert::from_storage(def, old);
        decode(def, &mut obj)?;
        let rv = meta(&obj, "resourceVersion");
        if !rv.is_empty() && rv != meta(&old, "resourceVersion") {
            return Err(ApiError::conflict(def, &name));
        }
        let uid = meta(&obj, "uid");
        if !uid.is_empty() && uid != meta(&old, "uid") {
            return Err(ApiError::conflict(def, &name));
        }
        let mut new = match scope {
            Scope::Status => {
                let mut n = old.clone();
                n["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
                if n["status"].is_null()
                    && let Some(o) = n.as_object_mut()
                {
                    o.remove("status");
                }
                if let Some(mf) = obj.pointer("/metadata/managedFields") {
                    meta_mut(&mut n).insert("managedFields".into(), mf.clone());
                }
                // The Deployment status strategy keeps annotations written with the status
                // (the deployment controller's revision).
                if def.group == "apps"
                    && def.plural == "deployments"
                    && let Some(a) = obj.pointer("/metadata/annotations")
                {
                    meta_mut(&mut n).insert("annotations".into(), a.clone());
                }
                n
            }
            Scope::Main { has_status } => {
                if has_status {
                    match old.get("status") {
                        Some(s) => obj["status"] = s.clone(),
                        None => {
                            if let Some(o) = obj.as_object_mut() {
                                o.remove("status");
                            }
                        }
                    }
                }
                obj
            }
        };
        {
            let om = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
            let m = meta_mut(&mut new);
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "generation",
                "namespace",
                "name",
                "resourceVersion",
            ] {
                match om.get(k) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
        }
        admit_custom(def, &mut new)?;
        defaults::apply(def, &mut new);
        canonical_quantities(def, &mut new)?;
        defaults::encode(def, &mut new);
        defaults::convert(def, &mut new, Some(&old));
        if w.track {
            apply::track_update(
                Some(&old),
                &mut new,
                w.manager,
                &def.api_version(),
                scope,
                &now(),
                def.crd.is_none(),
            );
        }
        defaults::prepare(def, &mut new, Some(&old), w.external, &mut self.rng);
        defaults::encode(def, &mut new);
        if matches!(scope, Scope::Main { .. }) {
            validation::validate(def, &new, Some(&old))?;
        }
        if def.generation && spec_part(&new) != spec_part(&old) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        // Validating admission webhooks (Cluster API's, which the sim runs).
        crate::controllers::capi::admit(self, def, &new, Some(&old))?;
        self.before_write(def, &mut new, w.dry_run)?;
        if new != old && same_but_managed_times(&old, &new) {
            // Like Kubernetes: a new managedFields timestamp alone is no change.
            new = old.clone();
        }
        if new == old || w.dry_run {
            return Ok(crate::convert::to_storage(def, new));
        }
        let new = crate::convert::to_storage(def, new);
        let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
            && new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        let stored = self.store(def, new, EventType::Modified);
        if finalized {
            return Ok(self.remove(def, &ns, &name).unwrap_or(stored));
        }
        Ok(stored)
    }

    /// Deletes an object: with finalizers it only gets a `deletionTimestamp`.
    pub fn delete(&mut self, def: &ResourceDef, ns: &str, name: &str) -> Result<Value, ApiError> {
        let Some(old) = self.get(&def.gr(), ns, name).cloned() else {
            return Err(ApiError::not_found(def, name));
        };
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let is_ns = def.group.is_empty() && def.plural == "namespaces";
        if has_finalizers || is_ns {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                if is_ns {
                    self.finish_namespace(name);
                }
                return Ok(self.get(&def.gr(), ns, name).cloned().unwrap_or(old));
            }
            let mut new = old.clone();
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), json!(now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            bump_generation(&mut new);
            if is_ns {
                new["status"] = json!({"phase": "Terminating"});
            }
            let stored = self.store(def, new, EventType::Modified);
            if is_ns {
                self.finish_namespace(name);
                return Ok(self.get(&def.gr(), ns, name).cloned().unwrap_or(stored));
            }
            return Ok(stored);
        }
        self.remove(def, ns, name)
            .ok_or_else(|| ApiError::not_found(def, name))
    }

    /// Deletes the contents of a terminating namespace, and the namespace once it is empty.
    pub fn finish_namespace(&mut self, ns: &str) {
        let defs: Vec<ResourceDef> = self
            .registry
            .all()
            .iter()
            .filter(|d| d.namespaced)
            .cloned()
            .collect();
        let mut remaining = 0;
        let mut seen = std::collections::HashSet::new();
        for def in defs {
            if !seen.insert(def.gr()) {
                continue;
            }
            let names: Vec<String> = self
                .list(&def.gr(), Some(ns))
                .map(|o| meta(o, "name"))
                .collect();
            for name in names {
                let _ = self.delete(&def, ns, &name);
                if self.get(&def.gr(), ns, &name).is_some() {
                    remaining += 1;
                }
            }
        }
        if remaining == 0 {
            let nsdef = self.registry.find("", "v1", "namespaces").cloned();
            if let Some(nsdef) = nsdef {
                self.remove(&nsdef, "", ns);
            }
        }
    }

    /// Names of namespaces being deleted.
    pub fn terminating_namespaces(&self) -> Vec<String> {
        let gr = GroupResource {
            group: String::new(),
            plural: "namespaces".into(),
        };
        self.list(&gr, None)
            .filter(|n| n.pointer("/metadata/deletionTimestamp").is_some())
            .map(|n| meta(n, "name"))
            .collect()
    }

    fn before_write(
        &mut self,
        def: &ResourceDef,
        obj: &mut Value,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        if def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions" {
            let name = meta(obj, "name");
            if obj.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(());
            }
            let mut scratch;
            let registry = if dry_run {
                scratch = self.registry.clone();
                &mut scratch
            } else {
                &mut self.registry
            };
            registry.set_crd(&name, obj).map_err(|msg| {
                let (field, m) = msg.split_once(": ").unwrap_or(("spec", msg.as_str()));
                ApiError::invalid(def, &name, field, m)
            })?;
            // The storage version is recorded as stored (the strategy does it on create and
            // when it changes); conditions and accepted names come from the establishing
            // controller (`controllers::crds`).
            let storage: Option<Value> = obj
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .and_then(|vs| {
                    vs.iter()
                        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                        .and_then(|v| v.get("name").cloned())
                });
            if let Some(storage) = storage {
                let status = obj
                    .as_object_mut()
                    .map(|o| o.entry("status").or_insert_with(|| json!({})));
                if let Some(st) = status.and_then(Value::as_object_mut) {
                    let stored = st.entry("storedVersions").or_insert_with(|| json!([]));
                    if let Some(list) = stored.as_array_mut()
                        && !list.contains(&storage)
                    {
                        list.push(storage);
                    }
                }
            }
        }
        Ok(())
    }

    fn after_delete(&mut self, def: &ResourceDef, obj: &Value) {
        if def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions" {
            let name = meta(obj, "name");
            let gone: Vec<ResourceDef> = self
                .registry
                .all()
                .iter()
                .filter(|d| d.crd.as_deref() == Some(name.as_str()))
                .cloned()
                .collect();
            if let Some(d) = gone.first() {
                let keys: Vec<(String, String)> = self
                    .objects
                    .get(&d.gr())
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                for (ns, n) in keys {
                    self.remove(d, &ns, &n);
                }
            }
            self.registry.remove_crd(&name);
        }
    }

    /// Objects with an ownerReference to `uid`, as (resource, namespace, name).
    fn dependents(&self, uid: &str) -> Vec<(GroupResource, String, String)> {
        let mut out = Vec::new();
        for (gr, objs) in &self.objects {
            for ((ns, name), o) in objs {
                let owned = o
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                    });
                if owned {
                    out.push((gr.clone(), ns.clone(), name.clone()));
                }
            }
        }
        out
    }

    /// Whether a delete with `propagation` would leave `obj` in place for now (finalizers,
    /// a namespace, foreground deletion), as a dry run answers.
    pub fn delete_would_keep(
        &self,
        def: &ResourceDef,
        obj: &Value,
        propagation: Propagation,
    ) -> bool {
        let has_finalizers = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let is_ns = def.group.is_empty() && def.plural == "namespaces";
        has_finalizers || is_ns || propagation == Propagation::Foreground
    }

    /// Deletes an object with a `propagationPolicy`: `Background` deletes it now (the garbage
    /// collector takes its dependents later); `Foreground` marks it (`deletionTimestamp`, the
    /// `foregroundDeletion` finalizer) and the garbage collector deletes its dependents, in the
    /// foreground too, then the object, on a later sweep (as in Kubernetes, a GET right after
    /// still finds it); `Orphan` removes its dependents' ownerReferences first. Returns the
    /// object as deleted or marked.
    pub fn delete_with(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        propagation: Propagation,
    ) -> Result<Value, ApiError> {
        let Some(old) = self.get(&def.gr(), ns, name).cloned() else {
            return Err(ApiError::not_found(def, name));
        };
        let uid = meta(&old, "uid");
        let is_ns = def.group.is_empty() && def.plural == "namespaces";
        match propagation {
            Propagation::Background => return self.delete(def, ns, name),
            _ if is_ns => return self.delete(def, ns, name),
            Propagation::Orphan => {
                for (gr, dns, dname) in self.dependents(&uid) {
                    let (Some(ddef), Some(dep)) = (
                        self.registry.any_version(&gr).cloned(),
                        self.get(&gr, &dns, &dname).cloned(),
                    ) else {
                        continue;
                    };
                    let mut dep = dep;
                    let m = meta_mut(&mut dep);
                    let refs: Vec<Value> = m
                        .get("ownerReferences")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()))
                        .cloned()
                        .collect();
                    if refs.is_empty() {
                        m.remove("ownerReferences");
                    } else {
                        m.insert("ownerReferences".into(), Value::Array(refs));
                    }
                    let scope = Scope::Main {
                        has_status: ddef.has_status,
                    };
                    let _ = self.update(&ddef, dep, scope, Writer::GARBAGE_COLLECTOR);
                }
                return self.delete(def, ns, name);
            }
            Propagation::Foreground => {}
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(old);
        }
        let mut new = old;
        let m = meta_mut(&mut new);
        let finalizers = m.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(f) = finalizers.as_array_mut()
            && !f.iter().any(|x| x == FOREGROUND)
        {
            f.push(json!(FOREGROUND));
        }
        m.insert("deletionTimestamp".into(), json!(now()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        bump_generation(&mut new);
        Ok(self.store(def, new, EventType::Modified))
    }

    /// Foreground deletion: deletes the dependents of owners deleted in the foreground (in the
    /// foreground too), and removes the `foregroundDeletion` finalizer of owners that have none
    /// left. Repeats until nothing changes, so a chain (Deployment, ReplicaSets, pods) goes in
    /// one run.
    fn finish_foreground(&mut self) {
        for _ in 0..8 {
            let waiting: Vec<(GroupResource, String, String, String)> = self
                .objects
                .iter()
                .flat_map(|(gr, objs)| {
                    objs.iter().filter_map(move |((ns, name), o)| {
                        let fg = o
                            .pointer("/metadata/finalizers")
                            .and_then(Value::as_array)
                            .is_some_and(|f| f.iter().any(|x| x == FOREGROUND));
                        fg.then(|| (gr.clone(), ns.clone(), name.clone(), meta(o, "uid")))
                    })
                })
                .collect();
            if waiting.is_empty() {
                return;
            }
            let mut changed = false;
            for (gr, ns, name, uid) in waiting {
                let Some(def) = self.registry.any_version(&gr).cloned() else {
                    continue;
                };
                let dependents = self.dependents(&uid);
                if dependents.is_empty() {
                    let Some(mut o) = self.get(&gr, &ns, &name).cloned() else {
                        continue;
                    };
                    let m = meta_mut(&mut o);
                    let left: Vec<Value> = m
                        .get("finalizers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter(|x| *x != FOREGROUND)
                        .cloned()
                        .collect();
                    if left.is_empty() {
                        m.remove("finalizers");
                    } else {
                        m.insert("finalizers".into(), Value::Array(left));
                    }
                    let scope = Scope::Main {
                        has_status: def.has_status,
                    };
                    changed |= self
                        .update(&def, o, scope, Writer::GARBAGE_COLLECTOR)
                        .is_ok();
                    continue;
                }
                for (dgr, dns, dname) in dependents {
                    let deleting = self
                        .get(&dgr, &dns, &dname)
                        .is_some_and(|d| d.pointer("/metadata/deletionTimestamp").is_some());
                    if deleting {
                        continue;
                    }
                    if let Some(ddef) = self.registry.any_version(&dgr).cloned() {
                        changed |= self
                            .delete_with(&ddef, &dns, &dname, Propagation::Foreground)
                            .is_ok();
                    }
                }
            }
            if !changed {
                return;
            }
        }
    }

    /// Deletes objects whose every owner (by uid) is gone: background cascading deletion; and
    /// finishes foreground deletions.
    pub fn collect_garbage(&mut self) {
        self.finish_foreground();
        let mut uids = std::collections::HashSet::new();
        let mut owned = Vec::new();
        for (gr, objs) in &self.objects {
            for ((ns, name), o) in objs {
                uids.insert(meta(o, "uid"));
                if let Some(refs) = o
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                {
                    let owners: Vec<String> = refs
                        .iter()
                        .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                        .collect();
                    if !owners.is_empty() {
                        owned.push((gr.clone(), ns.clone(), name.clone(), owners));
                    }
                }
            }
        }
        for (gr, ns, name, owners) in owned {
            if owners.iter().any(|u| uids.contains(u)) {
                continue;
            }
            if let Some(def) = self.registry.any_version(&gr).cloned() {
                let _ = self.delete(&def, &ns, &name);
            }
        }
    }
}
