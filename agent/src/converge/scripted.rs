//! A scripted API server for unit tests of the stages: a kube client whose requests are
//! answered by routes (method and path) and recorded, so a test asserts the exact requests
//! a stage made. Coarser behaviour is covered end to end against the simulator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Its method.
    pub method: Method,
    /// Its path.
    pub path: String,
    /// Its query string.
    pub query: String,
    /// Its content type.
    pub content_type: String,
    /// Its body, parsed as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

impl Seen {
    /// `METHOD path`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Whether the query has `key=value`.
    pub fn has_query(&self, key: &str, value: &str) -> bool {
        self.query
            .split('&')
            .any(|kv| kv == format!("{key}={value}"))
    }
}

/// A route: the answer (status, JSON body) to a request it matches.
pub type Route = Box<dyn Fn(&Seen) -> Option<(u16, Value)> + Send + Sync>;

/// Answers `method path` (exact path) with `status` and `body`.
pub fn on(method: Method, path: &str, status: u16, body: Value) -> Route {
    let path = path.to_string();
    Box::new(move |s| (s.method == method && s.path == path).then(|| (status, body.clone())))
}

/// Answers `method path` with the result of `answer` (for answers that depend on the
/// request or on what came before).
pub fn on_with(
    method: Method,
    path: &str,
    answer: impl Fn(&Seen) -> (u16, Value) + Send + Sync + 'static,
) -> Route {
    let path = path.to_string();
    Box::new(move |s| (s.method == method && s.path == path).then(|| answer(s)))
}

/// The discovery roots of a server that serves the core group only: `/api` (`v1`) and an
/// empty `/apis`.
pub fn core_only_roots() -> Route {
    Box::new(|s| {
        if s.method != Method::GET {
            return None;
        }
        match s.path.as_str() {
            "/api" => Some((
                200,
                json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            )),
            "/apis" => Some((
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
            )),
            _ => None,
        }
    })
}

/// The discovery document of `group_version` (`v1` or `apps/v1`) serving `kinds`
/// (kind, plural, namespaced).
pub fn discovery(group_version: &str, kinds: &[(&str, &str, bool)]) -> Route {
    let path = if group_version.contains('/') {
        format!("/apis/{group_version}")
    } else {
        format!("/api/{group_version}")
    };
    let resources: Vec<Value> = kinds
        .iter()
        .map(|(kind, plural, namespaced)| {
            json!({
                "name": plural, "singularName": "", "namespaced": namespaced, "kind": kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            })
        })
        .collect();
    on(
        Method::GET,
        &path,
        200,
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

/// A Kubernetes `Status` error body.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// An empty list (as a real API server sends it).
pub fn empty_list(kind: &str) -> Value {
    json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})
}

/// A client answered by `routes` (first match wins; no match is a 404), and the log of
/// the requests it made.
pub fn client(routes: Vec<Route>) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let entry = Seen {
                method: parts.method,
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body: serde_json::from_slice(&bytes)
                    .or_else(|_| serde_yaml::from_slice(&bytes))
                    .unwrap_or(Value::Null),
            };
            let (code, answer) = routes.iter().find_map(|r| r(&entry)).unwrap_or_else(|| {
                (
                    404,
                    status(404, "NotFound", &format!("no route for {}", entry.line())),
                )
            });
            if let Ok(mut l) = seen.lock() {
                l.push(entry);
            }
            let response = Response::builder()
                .status(code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(answer.to_string().into_bytes()));
            if let Ok(response) = response {
                respond.send_response(response);
            }
        }
    });
    (kube::Client::new(service, "default"), log)
}

/// The requests made so far, as `METHOD path` lines.
pub fn lines(log: &Arc<Mutex<Vec<Seen>>>) -> Vec<String> {
    log.lock()
        .map(|l| l.iter().map(Seen::line).collect())
        .unwrap_or_default()
}

/// The requests made so far.
pub fn requests(log: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    log.lock().map(|l| l.clone()).unwrap_or_default()
}

/// Runs `f` with a bound, so a stage that waits for an answer that never comes fails the
/// test instead of hanging it.
pub async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(5), f).await {
        Ok(v) => v,
        Err(_) => panic!("the stage did not finish within 5 s"),
    }
}
