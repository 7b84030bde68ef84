//! Resource endpoints: get, list (label/field selectors, `limit`/`continue`), watch, create,
//! update, patch (merge, JSON, strategic, apply), delete (with `propagationPolicy`),
//! deletecollection, the `status` subresource and `pods/eviction`.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Method;
use serde_json::{Value, json};

use super::status::ApiError;
use super::{Body, Req, Target, json_response};
use crate::Shared;
use crate::apply::{self, ApplyRequest, Scope};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Propagation, Writer, check_kind, now};

pub(crate) fn handle(
    shared: &Arc<Shared>,
    req: &Req,
    t: Target,
) -> Result<http::Response<Body>, ApiError> {
    if let Some(d) = req.q("dryRun").filter(|d| *d != "All") {
        let options = match req.method {
            Method::POST => "CreateOptions",
            Method::PUT => "UpdateOptions",
            Method::DELETE => "DeleteOptions",
            _ => "PatchOptions",
        };
        return Err(ApiError::invalid_options(
            options,
            "dryRun",
            &format!("Unsupported value: []string{{{d:?}}}: supported values: \"All\""),
        ));
    }
    let sub = t.sub.as_deref();
    match (&req.method, t.name.as_deref(), sub) {
        (&Method::GET, None, None) if req.flag("watch") => crate::watch::serve(shared, req, &t),
        (&Method::GET, None, None) => list(shared, req, &t),
        (&Method::GET, Some(name), None | Some("status")) => get(shared, req, &t, name),
        (&Method::GET | &Method::PUT | &Method::PATCH, Some(name), Some("scale"))
            if t.def.has_scale =>
        {
            scale(shared, req, &t, name)
        }
        (&Method::POST, None, None) => create(shared, req, &t),
        (&Method::POST, Some(name), Some("eviction"))
            if t.def.group.is_empty() && t.def.plural == "pods" =>
        {
            let body = req.body_value()?;
            let mut store = shared.lock_store();
            let ns = t.ns.as_deref().unwrap_or("default");
            let dry_run = req.q("dryRun").is_some();
            let result = crate::controllers::eviction::evict(&mut store, ns, name, &body, dry_run)?;
            Ok(json_response(201, &result))
        }
        (&Method::PUT, Some(name), None | Some("status")) => update(shared, req, &t, name),
        (&Method::PATCH, Some(name), None | Some("status")) => patch(shared, req, &t, name),
        (&Method::DELETE, Some(name), None) => {
            let mut store = shared.lock_store();
            let ns = t.ns.as_deref().unwrap_or_default();
            // DeleteOptions may come in the body (kube sends them there).
            let options: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let body_dry = options
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|v| v == "All"));
            if let (Some(pre), Some(live)) = (
                options.get("preconditions"),
                store.get(&t.def.gr(), ns, name),
            ) {
                for (key, ptr) in [
                    ("uid", "/metadata/uid"),
                    ("resourceVersion", "/metadata/resourceVersion"),
                ] {
                    if let Some(want) = pre.get(key).and_then(Value::as_str)
                        && live.pointer(ptr).and_then(Value::as_str) != Some(want)
                    {
                        return Err(ApiError::conflict(&t.def, name));
                    }
                }
            }
            let policy = propagation(req, &options)?;
            let (obj, gone) = if req.q("dryRun").is_some() || body_dry {
                let obj = store
                    .get(&t.def.gr(), ns, name)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(&t.def, name))?;
                let stays = store.delete_would_keep(&t.def, &obj, policy);
                (obj, !stays)
            } else {
                let obj = store.delete_with(&t.def, ns, name, policy)?;
                let gone = store.get(&t.def.gr(), ns, name).is_none();
                (obj, gone)
            };
            Ok(json_response(200, &deleted(obj, &t, gone)))
        }
        (&Method::DELETE, None, None) => delete_collection(shared, req, &t),
        (_, _, Some(s)) if !matches!(s, "status" | "eviction") => {
            Err(ApiError::not_found_resource())
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The `propagationPolicy` of a delete, from the query or the `DeleteOptions` body
/// (`orphanDependents: true` is the old spelling of `Orphan`); `Background` by default.
fn propagation(req: &Req, options: &Value) -> Result<Propagation, ApiError> {
    let policy = req
        .q("propagationPolicy")
        .or_else(|| options.get("propagationPolicy").and_then(Value::as_str));
    let orphan = req.flag("orphanDependents")
        || options.get("orphanDependents").and_then(Value::as_bool) == Some(true);
    match policy {
        None if orphan => Ok(Propagation::Orphan),
        None | Some("Background") => Ok(Propagation::Background),
        Some("Foreground") => Ok(Propagation::Foreground),
        Some("Orphan") => Ok(Propagation::Orphan),
        Some(other) => Err(ApiError::invalid_options(
            "DeleteOptions",
            "propagationPolicy",
            &format!(
                "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
            ),
        )),
    }
}

/// An item of a List: like the real server, items of built-in kinds carry no
/// `apiVersion`/`kind` (the List says them); custom resources' items do.
fn list_item(obj: Value, t: &Target) -> Value {
    if t.def.crd.is_some() {
        return with_version(obj, t);
    }
    let mut obj = crate::convert::from_storage(&t.def, obj);
    if let Some(m) = obj.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    obj
}

/// The answer to a DELETE: the object while it is still there (finalizers, foreground
/// deletion) or when its kind returns deleted objects; otherwise a `Status` naming it.
fn deleted(obj: Value, t: &Target, gone: bool) -> Value {
    if !gone || t.def.returns_deleted {
        return with_version(obj, t);
    }
    let s = |p: &str| obj.pointer(p).cloned().unwrap_or(Value::Null);
    let mut details = json!({"name": s("/metadata/name"), "group": t.def.group, "kind": t.def.plural, "uid": s("/metadata/uid")});
    if t.def.group.is_empty()
        && let Some(d) = details.as_object_mut()
    {
        d.remove("group");
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

/// A stored object as the request's resource shows it (`events.k8s.io` Events), with the
/// `apiVersion` the request addressed.
fn with_version(obj: Value, t: &Target) -> Value {
    let mut obj = crate::convert::from_storage(&t.def, obj);
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(t.def.api_version()));
        m.insert("kind".into(), json!(t.def.kind));
    }
    obj
}

fn scope(t: &Target) -> Scope {
    if t.sub.as_deref() == Some("status") {
        Scope::Status
    } else {
        Scope::Main {
            has_status: t.def.has_status,
        }
    }
}

fn writer<'a>(manager: &'a str, req: &Req) -> Writer<'a> {
    Writer {
        manager,
        external: true,
        track: true,
        dry_run: req.q("dryRun").is_some(),
    }
}

fn get(
    shared: &Arc<Shared>,
    req: &Req,
    t: &Target,
    name: &str,
) -> Result<http::Response<Body>, ApiError> {
    let store = shared.lock_store();
    let obj = store
        .get(&t.def.gr(), t.ns.as_deref().unwrap_or_default(), name)
        .cloned();
    let obj = obj.ok_or_else(|| ApiError::not_found(&t.def, name))?;
    if super::table::wanted(&req.accept) {
        let meta = json!({"resourceVersion": store.resource_version().to_string()});
        let include = req.q("includeObject").unwrap_or("Metadata");
        return Ok(json_response(
            200,
            &super::table::render(&t.def, &[with_version(obj, t)], meta, include),
        ));
    }
    Ok(json_response(200, &with_version(obj, t)))
}

/// The fields a resource can be selected by besides `metadata.name`/`metadata.namespace`.
fn selectable_fields(def: &crate::registry::ResourceDef) -> &'static [&'static str] {
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "secrets") => &["type"],
        ("", "replicationcontrollers") | ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        ("" | "events.k8s.io", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        _ => &[],
    }
}

pub(crate) fn selectors(req: &Req, t: &Target) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let label = LabelSelector::parse(req.q("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let field = FieldSelector::parse(req.q("fieldSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    field
        .check(selectable_fields(&t.def))
        .map_err(ApiError::bad_request)?;
    Ok((label, field))
}

fn list(shared: &Arc<Shared>, req: &Req, t: &Target) -> Result<http::Response<Body>, ApiError> {
    let (label, field) = selectors(req, t)?;
    let limit: usize = match req.q("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let after: Option<(String, String)> = match req.q("continue") {
        Some(c) => Some(decode_continue(c, t)?),
        None => None,
    };
    let store = shared.lock_store();
    // An exact list at an older resourceVersion: the sim keeps no old states, so it can
    // serve one only when nothing of the resource changed since; a compacted one is gone.
    if req.q("resourceVersionMatch") == Some("Exact")
        && let Some(rv) = req.q("resourceVersion").and_then(|r| r.parse::<u64>().ok())
        && (rv < store.compacted() || store.changed_since(&t.def.gr(), rv))
    {
        return Err(ApiError::gone(
            "The resourceVersion for the provided list is too old.",
        ));
    }
    let mut items = Vec::new();
    let mut remaining = 0;
    let mut last = None;
    for o in store.list(&t.def.gr(), t.ns.as_deref()) {
        let key = (
            o.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        );
        if after.as_ref().is_some_and(|a| key <= *a) {
            continue;
        }
        if !label.matches(o) || !field.matches(o) {
            continue;
        }
        if limit > 0 && items.len() == limit {
            remaining += 1;
            continue;
        }
        items.push(o.clone());
        last = Some(key);
    }
    let rv = store.resource_version();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if remaining > 0
        && let Some((ns, name)) = last
    {
        // Like the real server's: base64 of {"v", "rv", "start"}, `start` the storage key
        // after which the next page starts.
        let start = if t.ns.is_some() || !t.def.namespaced {
            format!("{name}\u{0}")
        } else {
            format!("{ns}/{name}\u{0}")
        };
        let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
        meta["continue"] = json!(URL_SAFE_NO_PAD.encode(token.to_string()));
        meta["remainingItemCount"] = json!(remaining);
    }
    if super::table::wanted(&req.accept) {
        let include = req.q("includeObject").unwrap_or("Metadata");
        let items: Vec<Value> = items.into_iter().map(|o| with_version(o, t)).collect();
        return Ok(json_response(
            200,
            &super::table::render(&t.def, &items, meta, include),
        ));
    }
    // Custom resource lists always say where they continue (nowhere).
    if t.def.crd.is_some() && meta.get("continue").is_none() {
        meta["continue"] = json!("");
    }
    let items: Vec<Value> = items.into_iter().map(|o| list_item(o, t)).collect();
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", t.def.kind), "apiVersion": t.def.api_version(),
            "metadata": meta, "items": items,
        }),
    ))
}

/// The (namespace, name) after which a `continue` token resumes a list; a token that is not
/// one is a 400 like the real server's.
fn decode_continue(token: &str, t: &Target) -> Result<(String, String), ApiError> {
    let invalid = |why: String| {
        ApiError::bad_request(format!(
            "invalid continue token: continue key is not valid: {why}"
        ))
    };
    // Go's RawURLEncoding ignores bits left over in the last symbol.
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let raw = lenient.decode(token).map_err(|e| {
        let at = match e {
            base64::DecodeError::InvalidByte(i, _)
            | base64::DecodeError::InvalidLastSymbol(i, _) => i,
            _ => token.len(),
        };
        invalid(format!("illegal base64 data at input byte {at}"))
    })?;
    let parsed: Value = serde_json::from_slice(&raw).map_err(|_| {
        let first = raw
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .copied()
            .unwrap_or(0);
        let shown = if first.is_ascii_graphic() {
            char::from(first).to_string()
        } else {
            format!("\\x{first:02x}")
        };
        invalid(format!(
            "invalid character '{shown}' looking for beginning of value"
        ))
    })?;
    let start = parsed
        .get("start")
        .and_then(Value::as_str)
        .map(|s| s.trim_end_matches('\u{0}'))
        .ok_or_else(|| invalid("no start key".into()))?;
    Ok(match (&t.ns, t.def.namespaced) {
        (Some(ns), _) => (ns.clone(), start.to_string()),
        (None, false) => (String::new(), start.to_string()),
        (None, true) => match start.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (String::new(), start.to_string()),
        },
    })
}

/// Puts the namespace of the path into the body (400 when they disagree).
fn place(t: &Target, obj: &mut Value) -> Result<(), ApiError> {
    let Some(ns) = &t.ns else { return Ok(()) };
    let Some(m) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let meta = m.entry("metadata").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    match meta.get("namespace").and_then(Value::as_str) {
        Some(b) if !b.is_empty() && b != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta.insert("namespace".into(), json!(ns));
            Ok(())
        }
    }
}

fn check_name(obj: &Value, name: &str) -> Result<(), ApiError> {
    match obj.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n != name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

fn create(shared: &Arc<Shared>, req: &Req, t: &Target) -> Result<http::Response<Body>, ApiError> {
    let mut obj = req.object_body(&t.def.kind)?;
    check_kind(&t.def, &mut obj)?;
    place(t, &mut obj)?;
    let manager = req.manager();
    let created = shared
        .lock_store()
        .create(&t.def, obj, writer(&manager, req))?;
    Ok(json_response(201, &with_version(created, t)))
}

fn update(
    shared: &Arc<Shared>,
    req: &Req,
    t: &Target,
    name: &str,
) -> Result<http::Response<Body>, ApiError> {
    let mut obj = req.object_body(&t.def.kind)?;
    check_kind(&t.def, &mut obj)?;
    place(t, &mut obj)?;
    check_name(&obj, name)?;
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("name".into(), json!(name));
    }
    let unconditional = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if unconditional && !t.def.allows_unconditional_update() {
        return Err(ApiError::invalid_resource(
            &t.def,
            name,
            "metadata.resourceVersion",
            "Invalid value: 0x0: must be specified for an update",
        ));
    }
    let manager = req.manager();
    let updated = shared
        .lock_store()
        .update(&t.def, obj, scope(t), writer(&manager, req))?;
    Ok(json_response(200, &with_version(updated, t)))
}

fn patch(
    shared: &Arc<Shared>,
    req: &Req,
    t: &Target,
    name: &str,
) -> Result<http::Response<Body>, ApiError> {
    let ct = req
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let ns = t.ns.clone().unwrap_or_default();
    if ct == "application/apply-patch+yaml" || ct == "application/apply-patch+json" {
        return server_side_apply(shared, req, t, name);
    }
    if !matches!(
        ct.as_str(),
        "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/json-patch+json"
    ) {
        return Err(ApiError::unsupported_media());
    }
    let body = req.body_value()?;
    let manager = req.manager();
    let mut store = shared.lock_store();
    let live = store
        .get(&t.def.gr(), &ns, name)
        .cloned()
        .map(|o| crate::convert::from_storage(&t.def, o))
        .ok_or_else(|| ApiError::not_found(&t.def, name))?;
    let mut new = live.clone();
    let result = match ct.as_str() {
        "application/merge-patch+json" => {
            crate::patch::merge(&mut new, &body);
            Ok(())
        }
        "application/strategic-merge-patch+json" => {
            crate::patch::strategic(&mut new, &body);
            Ok(())
        }
        "application/json-patch+json" => crate::patch::json_patch(&mut new, &body),
        _ => return Err(ApiError::unsupported_media()),
    };
    result.map_err(|e| {
        tracing::debug!(error = %e, "patch rejected");
        ApiError::patch_rejected()
    })?;
    if !new.is_object() {
        return Err(ApiError::bad_request("the patch must leave an object"));
    }
    // The patched object keeps its identity whatever the patch said.
    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("name".into(), json!(name));
        if t.def.namespaced {
            m.insert("namespace".into(), json!(ns));
        }
    }
    let updated = store.update(&t.def, new, scope(t), writer(&manager, req))?;
    Ok(json_response(200, &with_version(updated, t)))
}

fn server_side_apply(
    shared: &Arc<Shared>,
    req: &Req,
    t: &Target,
    name: &str,
) -> Result<http::Response<Body>, ApiError> {
    let Some(manager) = req.q("fieldManager") else {
        return Err(ApiError::invalid_options(
            "PatchOptions",
            "fieldManager",
            "Required value: is required for apply patch",
        ));
    };
    let mut applied = req.body_value()?;
    // An applied configuration says what it is (the server does not fill it in).
    for (field, what) in [("kind", "Kind"), ("apiVersion", "apiVersion")] {
        if applied
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(format!(
                "error decoding patch: Object '{what}' is missing in '{}'",
                serde_json::to_string(&applied).unwrap_or_default()
            )));
        }
    }
    check_kind(&t.def, &mut applied)?;
    place(t, &mut applied)?;
    check_name(&applied, name)?;
    if t.def.crd.is_none() {
        // Server-side apply converts the applied configuration to its type first: a value
        // of the wrong type is a 500 naming each (structured-merge-diff's typed patch).
        let errs = crate::schema::builtin::type_errors(&t.def.group, &t.def.kind, &applied);
        if !errs.is_empty() {
            let listed: Vec<String> = errs.iter().map(|e| e.typed_message()).collect();
            let detail = match listed.as_slice() {
                [one] => one.clone(),
                many => format!("errors:\n  {}", many.join("\n  ")),
            };
            let who = match &t.ns {
                Some(ns) => format!("{ns}/{name}"),
                None => name.to_string(),
            };
            let gv = if t.def.group.is_empty() {
                format!("/{}", t.def.version)
            } else {
                t.def.api_version()
            };
            return Err(ApiError::new(
                500,
                "",
                format!(
                    "failed to create typed patch object ({who}; {gv}, Kind={}): {detail}",
                    t.def.kind
                ),
            ));
        }
    }
    if let Some(m) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("name".into(), json!(name));
    }
    let ns = t.ns.clone().unwrap_or_default();
    let scope = scope(t);
    let api_version = t.def.api_version();
    let time = now();
    let areq = ApplyRequest {
        manager,
        force: req.flag("force"),
        api_version: &api_version,
        scope,
        now: &time,
        builtin: t.def.crd.is_none(),
    };
    let mut store = shared.lock_store();
    let live = store
        .get(&t.def.gr(), &ns, name)
        .cloned()
        .map(|o| crate::convert::from_storage(&t.def, o));
    if let (Some(live), Some(rv)) = (
        &live,
        applied
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str),
    ) && live
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        != Some(rv)
    {
        return Err(ApiError::conflict(&t.def, name));
    }
    if live.is_none() && scope == Scope::Status {
        return Err(ApiError::not_found(&t.def, name));
    }
    let merged = apply::apply(live.as_ref(), &applied, &areq).map_err(|conflicts| {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| json!({"reason": "FieldManagerConflict", "message": c.with(), "field": c.field}))
            .collect();
        ApiError::new(409, "Conflict", apply::conflict_message(&conflicts))
            .with_details(json!({"causes": causes}))
    })?;
    let w = Writer {
        track: false,
        ..writer(manager, req)
    };
    let (code, obj) = match live {
        None => (201, store.create(&t.def, merged, w)?),
        Some(_) => (200, store.update(&t.def, merged, scope, w)?),
    };
    Ok(json_response(code, &with_version(obj, t)))
}

fn delete_collection(
    shared: &Arc<Shared>,
    req: &Req,
    t: &Target,
) -> Result<http::Response<Body>, ApiError> {
    let (label, field) = selectors(req, t)?;
    let options: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let policy = propagation(req, &options)?;
    let mut store = shared.lock_store();
    let names: Vec<(String, String)> = store
        .list(&t.def.gr(), t.ns.as_deref())
        .filter(|o| label.matches(o) && field.matches(o))
        .map(|o| {
            let s = |p: &str| {
                o.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (s("/metadata/namespace"), s("/metadata/name"))
        })
        .collect();
    let mut items = Vec::new();
    for (ns, name) in names {
        if req.q("dryRun").is_some() {
            items.extend(
                store
                    .get(&t.def.gr(), &ns, &name)
                    .cloned()
                    .map(|o| list_item(o, t)),
            );
            continue;
        }
        if let Ok(o) = store.delete_with(&t.def, &ns, &name, policy) {
            items.push(list_item(o, t));
        }
    }
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", t.def.kind), "apiVersion": t.def.api_version(),
            "metadata": {"resourceVersion": store.resource_version().to_string()}, "items": items,
        }),
    ))
}

fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp")},
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

/// The `scale` subresource (autoscaling/v1 Scale) of resources that have one.
fn scale(
    shared: &Arc<Shared>,
    req: &Req,
    t: &Target,
    name: &str,
) -> Result<http::Response<Body>, ApiError> {
    let ns = t.ns.clone().unwrap_or_default();
    let mut store = shared.lock_store();
    let live = store
        .get(&t.def.gr(), &ns, name)
        .cloned()
        .map(|o| crate::convert::from_storage(&t.def, o))
        .ok_or_else(|| ApiError::not_found(&t.def, name))?;
    let current = scale_of(&live);
    let wanted = match req.method {
        Method::GET => return Ok(json_response(200, &current)),
        Method::PUT => req.body_value()?,
        _ => {
            let body = req.body_value()?;
            let mut patched = current.clone();
            let ct = req
                .content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim();
            match ct {
                "application/json-patch+json" => crate::patch::json_patch(&mut patched, &body)
                    .map_err(|e| ApiError::new(422, "Invalid", e))?,
                "application/merge-patch+json" => crate::patch::merge(&mut patched, &body),
                "application/strategic-merge-patch+json" => {
                    crate::patch::strategic(&mut patched, &body)
                }
                _ => return Err(ApiError::unsupported_media()),
            }
            patched
        }
    };
    let Some(replicas) = wanted
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
    else {
        return Err(ApiError::invalid(
            &t.def,
            name,
            "spec.replicas",
            "Invalid value: must be a non-negative integer",
        ));
    };
    let mut new = live;
    if let Some(rv) = wanted
        .pointer("/metadata/resourceVersion")
        .filter(|v| v.is_string())
    {
        new["metadata"]["resourceVersion"] = rv.clone();
    }
    new["spec"]["replicas"] = json!(replicas);
    let manager = req.manager();
    let updated = store.update(
        &t.def,
        new,
        Scope::Main {
            has_status: t.def.has_status,
        },
        writer(&manager, req),
    )?;
    Ok(json_response(200, &scale_of(&updated)))
}
