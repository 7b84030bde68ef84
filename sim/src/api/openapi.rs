//! A minimal OpenAPI v3 (`/openapi/v3` and one document per group/version) that only declares
//! the PATCH operations with their `fieldValidation` parameter and GVK extension: enough for
//! kubectl to see that the server validates fields itself, so it needs no schemas.
//! `/openapi/v2` is an empty protobuf `Document` (zero bytes): kubectl up to 1.28 insists on
//! fetching it, and an empty document means "no schemas", so it skips client-side validation.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::status::ApiError;
use super::{Body, json_response};
use crate::Shared;

pub(crate) fn handle(shared: &Arc<Shared>, path: &str) -> Result<http::Response<Body>, ApiError> {
    if path == "/openapi/v2" {
        return Ok(super::full(
            http::StatusCode::OK,
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            bytes::Bytes::new(),
        ));
    }
    let store = shared.lock_store();
    if path == "/openapi/v3" {
        let mut paths = Map::new();
        for (g, vs) in store.registry.groups() {
            for v in vs {
                let key = if g.is_empty() {
                    format!("api/{v}")
                } else {
                    format!("apis/{g}/{v}")
                };
                let url = format!("/openapi/v3/{key}?hash={}", store.resource_version());
                paths.insert(key, json!({"serverRelativeURL": url}));
            }
        }
        return Ok(json_response(200, &json!({"paths": paths})));
    }
    let Some(gv) = path.strip_prefix("/openapi/v3/") else {
        return Err(ApiError::not_found_path());
    };
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), (*v).to_string()),
        ["apis", g, v] => ((*g).to_string(), (*v).to_string()),
        _ => return Err(ApiError::not_found_path()),
    };
    let mut paths = Map::new();
    for d in store
        .registry
        .all()
        .iter()
        .filter(|d| d.group == group && d.version == version)
    {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let p = if d.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("{prefix}/{}/{{name}}", d.plural)
        };
        paths.insert(p, json!({"patch": {
            "operationId": format!("patch{}", d.kind),
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
            ],
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": d.group, "version": d.version, "kind": d.kind},
        }}));
    }
    if paths.is_empty() {
        return Err(ApiError::not_found_path());
    }
    Ok(json_response(
        200,
        &json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": format!("v{}", shared.cp_version())},
            "paths": paths,
            "components": {"schemas": Value::Object(Map::new())},
        }),
    ))
}
