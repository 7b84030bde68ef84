//! Discovery: the legacy documents (`/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`) and
//! the aggregated form (`apidiscovery.k8s.io/v2`, served when the `Accept` header asks for
//! `as=APIGroupDiscoveryList`), both generated from the registry, so CRDs appear as soon as
//! they are established.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Value, json};

use super::status::ApiError;
use super::{Body, Req, full, json_response};
use crate::Shared;
use crate::registry::{ResourceDef, VERBS};

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Which aggregated discovery version the client accepts, if any.
fn aggregated(req: &Req) -> Option<&'static str> {
    let accept = req.accept.replace(' ', "");
    if !accept.contains("as=APIGroupDiscoveryList") {
        return None;
    }
    if accept.contains("v=v2;") || accept.contains("v=v2,") || accept.ends_with("v=v2") {
        Some("v2")
    } else if accept.contains("v=v2beta1") {
        Some("v2beta1")
    } else {
        None
    }
}

fn server_address() -> Value {
    json!([{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}])
}

/// `GET /api`.
pub(crate) fn api_versions(
    shared: &Arc<Shared>,
    req: &Req,
) -> Result<http::Response<Body>, ApiError> {
    if let Some(v) = aggregated(req) {
        return Ok(aggregated_list(shared, true, v));
    }
    Ok(json_response(
        200,
        &json!({
            "kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": server_address(),
        }),
    ))
}

/// `GET /apis`.
pub(crate) fn api_groups(
    shared: &Arc<Shared>,
    req: &Req,
) -> Result<http::Response<Body>, ApiError> {
    if let Some(v) = aggregated(req) {
        return Ok(aggregated_list(shared, false, v));
    }
    let groups = shared.lock_store().registry.groups();
    let items: Vec<Value> = groups
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    Ok(json_response(
        200,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": items}),
    ))
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// `GET /apis/{group}`.
pub(crate) fn group(shared: &Arc<Shared>, group: &str) -> Result<http::Response<Body>, ApiError> {
    let groups = shared.lock_store().registry.groups();
    let (g, vs) = groups
        .iter()
        .find(|(g, _)| g == group)
        .ok_or_else(ApiError::not_found_path)?;
    let mut doc = group_doc(g, vs);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Ok(json_response(200, &doc))
}

fn subresources(d: &ResourceDef) -> Vec<(String, Value, Vec<&'static str>)> {
    let mut out = Vec::new();
    let gvk = |g: &str, v: &str, k: &str| json!({"group": g, "version": v, "kind": k});
    let own = gvk(&d.group, &d.version, &d.kind);
    if d.has_status {
        out.push((
            "status".to_string(),
            own.clone(),
            vec!["get", "patch", "update"],
        ));
    }
    if d.has_scale {
        out.push((
            "scale".to_string(),
            gvk("autoscaling", "v1", "Scale"),
            vec!["get", "patch", "update"],
        ));
    }
    if d.group.is_empty() && d.plural == "pods" {
        out.push((
            "eviction".to_string(),
            gvk("policy", "v1", "Eviction"),
            vec!["create"],
        ));
    }
    out
}

/// `GET /api/v1`, `GET /apis/{group}/{version}`.
pub(crate) fn resource_list(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
) -> Result<http::Response<Body>, ApiError> {
    let store = shared.lock_store();
    let defs: Vec<&ResourceDef> = store
        .registry
        .all()
        .iter()
        .filter(|d| d.group == group && d.version == version && store.registry.is_served(d))
        .collect();
    if defs.is_empty() {
        return Err(ApiError::not_found_path());
    }
    let mut resources = Vec::new();
    for d in defs {
        let mut r = json!({
            "name": d.plural, "singularName": d.singular, "namespaced": d.namespaced,
            "kind": d.kind, "verbs": VERBS,
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            r["categories"] = json!(d.categories);
        }
        resources.push(r);
        for (sub, kind, verbs) in subresources(d) {
            let mut s = json!({
                "name": format!("{}/{sub}", d.plural), "singularName": "", "namespaced": d.namespaced,
                "kind": kind["kind"], "verbs": verbs,
            });
            if kind["group"] != json!(d.group) || kind["version"] != json!(d.version) {
                s["group"] = kind["group"].clone();
                s["version"] = kind["version"].clone();
            }
            resources.push(s);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(json_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    ))
}

fn aggregated_list(shared: &Arc<Shared>, core: bool, version: &str) -> http::Response<Body> {
    let store = shared.lock_store();
    let mut items = Vec::new();
    for (g, vs) in store.registry.groups() {
        if g.is_empty() != core {
            continue;
        }
        let versions: Vec<Value> = vs
            .iter()
            .map(|v| {
                let resources: Vec<Value> = store
                    .registry
                    .all()
                    .iter()
                    .filter(|d| d.group == g && d.version == *v && store.registry.is_served(d))
                    .map(|d| {
                        let subs: Vec<Value> = subresources(d)
                            .into_iter()
                            .map(|(s, kind, verbs)| json!({"subresource": s, "responseKind": kind, "verbs": verbs}))
                            .collect();
                        let mut r = json!({
                            "resource": d.plural,
                            "responseKind": {"group": d.group, "version": d.version, "kind": d.kind},
                            "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
                            "singularResource": d.singular, "verbs": VERBS,
                        });
                        if !d.short_names.is_empty() {
                            r["shortNames"] = json!(d.short_names);
                        }
                        if !d.categories.is_empty() {
                            r["categories"] = json!(d.categories);
                        }
                        if !subs.is_empty() {
                            r["subresources"] = json!(subs);
                        }
                        r
                    })
                    .collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        items.push(
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions}),
        );
    }
    let ct = if version == "v2" {
        AGGREGATED_V2
    } else {
        AGGREGATED_V2BETA1
    };
    let doc = json!({
        "kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {}, "items": items,
    });
    full(
        StatusCode::OK,
        ct,
        serde_json::to_vec(&doc).unwrap_or_default(),
    )
}
