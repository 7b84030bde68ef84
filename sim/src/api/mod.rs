//! The Kubernetes HTTP API: routing of a request to health, version, discovery, OpenAPI, the
//! `/sim/v1` control interface or a resource handler; request parsing (query, body, content
//! types); request counting (`requests`); fault injection; and JSON responses. Resource
//! semantics live in `store`.

pub(crate) mod discovery;
mod openapi;
pub(crate) mod requests;
pub(crate) mod resources;
pub(crate) mod status;
pub(crate) mod table;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use crate::Shared;
use crate::registry::ResourceDef;
use status::ApiError;

/// The response body type: a full buffer or a stream (watches).
pub(crate) type Body = BoxBody<Bytes, Infallible>;

const MAX_BODY: usize = 8 << 20;

/// A parsed request.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub content_type: String,
    pub accept: String,
    pub user_agent: String,
    pub body: Bytes,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }

    /// Parses the body as JSON, or YAML for apply patches and YAML content types.
    pub fn body_value(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("the request body is empty"));
        }
        if self.content_type.contains("yaml") {
            // kube sends apply patches as JSON; read them as such, else as YAML 1.1.
            if let Ok(v) = serde_json::from_slice::<Value>(&self.body) {
                return Ok(v);
            }
            let text = String::from_utf8_lossy(&self.body);
            crate::yaml::parse(&text).map_err(|e| ApiError::bad_request(e.to_string()))
        } else {
            serde_json::from_slice::<Value>(&self.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
        }
    }

    /// The body of a create or update of `kind`: a body that is not JSON (or YAML) is a 400
    /// shaped like the API server's decoding error.
    pub fn object_body(&self, kind: &str) -> Result<Value, ApiError> {
        if self.content_type.contains("yaml") || self.body.is_empty() {
            return self.body_value();
        }
        serde_json::from_slice::<Value>(&self.body).map_err(|e| {
            let why = match e.classify() {
                serde_json::error::Category::Eof => "unexpected end of JSON input".to_string(),
                _ => {
                    let at = e.column().saturating_sub(1);
                    let line = String::from_utf8_lossy(&self.body)
                        .lines()
                        .nth(e.line().saturating_sub(1))
                        .unwrap_or_default()
                        .to_string();
                    match line.chars().nth(at) {
                        Some(c) => format!("invalid character '{c}' looking for beginning of value"),
                        None => "unexpected end of JSON input".to_string(),
                    }
                }
            };
            let text = String::from_utf8_lossy(&self.body);
            let snippet: String = text.chars().take(30).collect();
            let more = if text.chars().count() > 30 { " ..." } else { "" };
            ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {kind}): couldn't get version/kind; json parse error: {why} ({snippet}{more})"
            ))
        })
    }

    /// The field manager: `?fieldManager=`, else derived from the user agent as the real
    /// server does (`kubectl-client-side-apply/...` -> `kubectl-client-side-apply`).
    pub fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager") {
            return m.to_string();
        }
        let ua = self.user_agent.split('/').next().unwrap_or_default();
        if ua.is_empty() {
            "unknown".into()
        } else {
            ua.to_string()
        }
    }
}

pub(crate) fn full(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = code;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn json_response(code: u16, v: &Value) -> Response<Body> {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    full(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    if e.plain {
        let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::NOT_FOUND);
        return full(code, "text/plain; charset=utf-8", e.message.clone());
    }
    json_response(e.code, &e.to_json())
}

pub(crate) fn verb_of(
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
) -> &'static str {
    match *method {
        Method::GET if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) => {
            "watch"
        }
        Method::GET => {
            // A collection path has an even number of segments after the group/version.
            let segs = path.trim_matches('/').split('/').count();
            let base = if path.starts_with("/api/") { 2 } else { 3 };
            let rest = segs.saturating_sub(base);
            let ns = path.contains("/namespaces/") && rest >= 3;
            let coll = if ns { rest == 3 } else { rest == 1 };
            if coll { "list" } else { "get" }
        }
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    }
}

/// Handles one HTTP request; never panics on bad input and always answers.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let header = |h: header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error_response(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                "the request body is too large or could not be read",
            ));
        }
    };
    let req = Req {
        method: parts.method.clone(),
        path,
        query,
        content_type: header(header::CONTENT_TYPE),
        accept: header(header::ACCEPT),
        user_agent: header(header::USER_AGENT),
        body,
    };
    tracing::debug!(method = %req.method, path = %req.path, "request");

    if let Some(rest) = req.path.strip_prefix("/sim/v1/") {
        return crate::ctl::handle(&shared, &req, rest).await;
    }
    if shared.faults.lock().is_ok_and(|f| f.refusing()) {
        // The connection is cut within moments (see `server`); never answer this request.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    let is_health = matches!(req.path.as_str(), "/healthz" | "/livez" | "/readyz");
    let (verb, key) = if is_health {
        (verb_of(&req.method, &req.path, &req.query), None)
    } else {
        let (verb, resource, dry_run) = requests::classify(&shared, &req);
        shared
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(verb, &resource, dry_run);
        let key = crate::faults::RequestKey {
            client: req.user_agent.clone(),
            verb,
            path: req.path.clone(),
        };
        (verb, Some(key))
    };
    let decision = {
        let mut faults = shared
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(key) = &key {
            faults.arrived(key);
        }
        faults.decide(verb)
    };
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    if let Some(e) = decision.error {
        // Health checks only see outages, not random errors.
        if !is_health || e.code == 503 && shared.faults.lock().is_ok_and(|f| f.in_outage()) {
            let mut r = error_response(&e);
            if e.code == 429 {
                throttle_headers(&mut r);
                let mut faults = shared
                    .faults
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let after = faults.retry_after();
                if let Ok(v) = header::HeaderValue::from_str(&after.as_secs().to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                if let Some(key) = key {
                    faults.throttled(key, after);
                }
            } else if e.code == 503 {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            return r;
        }
    }
    match route(&shared, &req) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

/// The headers of the API server's throttling answer besides `Retry-After`: Go's
/// `http.Error` adds `nosniff`, priority and fairness names the flow schema and priority
/// level that matched (by UID; the sim's are fixed).
fn throttle_headers(r: &mut Response<Body>) {
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "x-kubernetes-pf-flowschema-uid",
        header::HeaderValue::from_static("6c7cf8a4-2a4b-4c52-9f0a-0d5a8a2b1c01"),
    );
    h.insert(
        "x-kubernetes-pf-prioritylevel-uid",
        header::HeaderValue::from_static("2f4b5c6d-7e8f-4a0b-8c1d-2e3f4a5b6c02"),
    );
}

fn route(shared: &Arc<Shared>, req: &Req) -> Result<Response<Body>, ApiError> {
    let path = req.path.trim_end_matches('/');
    match path {
        "/healthz" | "/livez" | "/readyz" => return Ok(full(StatusCode::OK, "text/plain", "ok")),
        "/metrics" => {
            let text = shared
                .deprecated
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .metrics(shared.cp_version().minor);
            return Ok(full(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            ));
        }
        "/version" => {
            let v = shared.cp_version();
            return Ok(json_response(
                200,
                &json!({
                    "major": v.major.to_string(), "minor": v.minor.to_string(),
                    "gitVersion": format!("v{v}"), "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean", "buildDate": "2024-01-01T00:00:00Z",
                    "goVersion": "go1.21.9", "compiler": "gc", "platform": "linux/amd64",
                }),
            ));
        }
        _ => {}
    }
    if path.starts_with("/openapi/") || path == "/openapi" {
        return openapi::handle(shared, path);
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api"] => return discovery::api_versions(shared, req),
        ["apis"] => return discovery::api_groups(shared, req),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g] => return discovery::group(shared, g),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::not_found_path()),
    };
    if rest.is_empty() {
        return discovery::resource_list(shared, group, version);
    }
    let target = parse_target(shared, group, version, rest)?;
    // A deprecated version is served with a warning and counted, whatever the answer.
    let warning = shared
        .deprecated
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .record(
            shared.cp_version().minor,
            (&target.def.group, &target.def.version, &target.def.kind),
            &target.def.plural,
            target.sub.as_deref(),
        );
    let mut response = match resources::handle(shared, req, target) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    if let Some(w) = warning
        && let Ok(v) = header::HeaderValue::from_str(&format!("299 - \"{w}\""))
    {
        response.headers_mut().append(header::WARNING, v);
    }
    Ok(response)
}

/// The resource a request addresses.
pub(crate) struct Target {
    pub def: ResourceDef,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

pub(crate) fn parse_target(
    shared: &Shared,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let (ns, rest) = match rest {
        ["namespaces", ns, r, ..] if *r != "status" && *r != "finalize" => {
            (Some((*ns).to_string()), &rest[2..])
        }
        _ => (None, rest),
    };
    if rest.len() > 3 || rest.iter().any(|s| s.is_empty()) {
        return Err(ApiError::not_found_resource());
    }
    let store = shared.lock_store();
    let served_version = store
        .registry
        .groups()
        .iter()
        .any(|(g, vs)| g == group && vs.iter().any(|v| v == version));
    if !served_version {
        return Err(
            match discovery::aggregated_version(&store, group, version, false) {
                Some(Err(e)) => e,
                _ => ApiError::not_found_path(),
            },
        );
    }
    let def = store
        .registry
        .find(group, version, rest[0])
        .filter(|d| store.registry.is_served(d))
        .cloned()
        .ok_or_else(ApiError::not_found_resource)?;
    if ns.is_some() && !def.namespaced {
        return Err(ApiError::not_found_resource());
    }
    crate::convert::check(&def)?;
    Ok(Target {
        def,
        ns,
        name: rest.get(1).map(|s| (*s).to_string()),
        sub: rest.get(2).map(|s| (*s).to_string()),
    })
}
