//! Discovery: the documents (`/api`, `/apis`, `/api/v1`, `/apis/{group}`,
//! `/apis/{group}/{version}`) and the aggregated form, generated from the registry (CRDs
//! appear once Established) and the APIServices of aggregated APIs.
//!
//! - Groups are listed in the aggregator's priority order, then CRD groups, then the groups
//!   of aggregated APIs (APIServices with a Service), which are listed even while they are
//!   unavailable: then their group-version (and everything below it) answers 503
//!   `text/plain` `service unavailable`, as the real aggregator does. An available aggregated
//!   API has no backend in the sim: it serves an empty resource list.
//! - Resources of a group-version are sorted by name and carry `storageVersionHash`.
//! - Aggregated discovery follows the version the control plane reports: `v2beta1` from
//!   1.26 to 1.29 and `v2` (and `v2beta1`) from 1.30, as Kubernetes serves them; kubectl and
//!   kube ask for both and take what comes. The recorded 1.24 server had none.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Value, json};

use super::status::ApiError;
use super::{Body, Req, full, json_response};
use crate::Shared;
use crate::controllers::apiservices;
use crate::registry::ResourceDef;
use crate::store::Store;

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Which aggregated discovery version to answer with, if the client accepts one the control
/// plane serves (`v2beta1` from 1.26, `v2` from 1.30).
fn aggregated(shared: &Shared, req: &Req) -> Option<&'static str> {
    let accept = req.accept.replace(' ', "");
    if !accept.contains("as=APIGroupDiscoveryList") {
        return None;
    }
    let minor = shared.cp_version().minor;
    let wants_v2 = accept.contains("v=v2;") || accept.contains("v=v2,") || accept.ends_with("v=v2");
    let wants_beta = accept.contains("v=v2beta1");
    if wants_v2 && minor >= 30 {
        Some("v2")
    } else if wants_beta && minor >= 26 {
        Some("v2beta1")
    } else {
        None
    }
}

/// `sha256("group/version/Kind")[:8]`, base64: Kubernetes' storage version hash.
fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    use base64::Engine as _;
    let digest = openssl::sha::sha256(format!("{group}/{version}/{kind}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

/// `GET /api`.
pub(crate) fn api_versions(
    shared: &Arc<Shared>,
    req: &Req,
) -> Result<http::Response<Body>, ApiError> {
    if let Some(v) = aggregated(shared, req) {
        return Ok(aggregated_list(shared, true, v));
    }
    Ok(json_response(
        200,
        &json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.address}],
        }),
    ))
}

/// Every group the server lists (registry, then aggregated APIs), with versions.
fn all_groups(store: &Store) -> Vec<(String, Vec<String>)> {
    let mut groups = store.registry.groups();
    groups.extend(apiservices::aggregated_groups(store));
    groups
}

/// `GET /apis`.
pub(crate) fn api_groups(
    shared: &Arc<Shared>,
    req: &Req,
) -> Result<http::Response<Body>, ApiError> {
    if let Some(v) = aggregated(shared, req) {
        return Ok(aggregated_list(shared, false, v));
    }
    let groups = all_groups(&shared.lock_store());
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
    let groups = all_groups(&shared.lock_store());
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

/// The answer for a group-version only an APIService serves: 503 while it is unavailable,
/// an empty resource list when available (the sim has no backend to ask), `None` when no
/// APIService serves it.
pub(crate) fn aggregated_version(
    store: &Store,
    group: &str,
    version: &str,
    whole: bool,
) -> Option<Result<http::Response<Body>, ApiError>> {
    let (_, available) = apiservices::aggregated(store, group, version)?;
    if !available {
        return Some(Err(ApiError::service_unavailable()));
    }
    if !whole {
        return Some(Err(ApiError::not_found_resource()));
    }
    let gv = format!("{group}/{version}");
    Some(Ok(json_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": []}),
    )))
}

/// `GET /api/v1`, `GET /apis/{group}/{version}`.
pub(crate) fn resource_list(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
) -> Result<http::Response<Body>, ApiError> {
    let store = shared.lock_store();
    let mut defs: Vec<&ResourceDef> = store
        .registry
        .all()
        .iter()
        .filter(|d| d.group == group && d.version == version && store.registry.is_served(d))
        .collect();
    if defs.is_empty() {
        return match aggregated_version(&store, group, version, true) {
            Some(answer) => answer,
            None => Err(ApiError::not_found_path()),
        };
    }
    defs.sort_by(|a, b| a.plural.cmp(&b.plural));
    let mut resources = Vec::new();
    for d in defs {
        let mut r = json!({
            "name": d.plural, "singularName": d.singular, "namespaced": d.namespaced,
            "kind": d.kind, "verbs": d.verbs,
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            r["categories"] = json!(d.categories);
        }
        // The hash of the version objects are stored at (the group's first version).
        let storage = store
            .registry
            .any_version(&d.gr())
            .map_or(d.version.as_str(), |s| s.version.as_str());
        r["storageVersionHash"] = json!(storage_version_hash(&d.group, storage, &d.kind));
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
    // Kubernetes lists resources and subresources by name.
    resources.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
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
                let mut defs: Vec<&ResourceDef> = store
                    .registry
                    .all()
                    .iter()
                    .filter(|d| d.group == g && d.version == *v && store.registry.is_served(d))
                    .collect();
                defs.sort_by(|a, b| a.plural.cmp(&b.plural));
                let resources: Vec<Value> = defs
                    .into_iter()
                    .map(|d| {
                        let subs: Vec<Value> = subresources(d)
                            .into_iter()
                            .map(|(s, kind, verbs)| json!({"subresource": s, "responseKind": kind, "verbs": verbs}))
                            .collect();
                        let mut r = json!({
                            "resource": d.plural,
                            "responseKind": {"group": d.group, "version": d.version, "kind": d.kind},
                            "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
                            "singularResource": d.singular, "verbs": d.verbs,
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
    if !core {
        // Aggregated APIs: the sim has no backend to ask for their resources; one that is
        // unavailable is marked stale, as the aggregator marks one it cannot reach.
        for (g, vs) in apiservices::aggregated_groups(&store) {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| {
                    let available =
                        apiservices::aggregated(&store, &g, v).is_some_and(|(_, ok)| ok);
                    json!({"version": v, "resources": [],
                        "freshness": if available { "Current" } else { "Stale" }})
                })
                .collect();
            items.push(
                json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions}),
            );
        }
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
