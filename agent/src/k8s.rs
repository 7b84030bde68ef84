//! The Kubernetes client: built from a kubeconfig file or the in-cluster environment.
//!
//! - Every request says who sends it: `User-Agent: tidemark/<version>` (audit logs).
//! - Retries are bounded: 429, 503 and 504 are retried at most three times within a few
//!   seconds (honouring `Retry-After`). kube's default policy retries for many minutes, and
//!   one unavailable aggregated API (503 until its pod runs) would stall every pass; a
//!   failed pass is retried by the runner's backoff instead.
//! - `Retry-After` binds every request, not only the retried one: after a 429 or 503
//!   carrying it, no request with the same method and path is sent before it has elapsed,
//!   whether a retry, the next pass or another task (the Lease keeper) sends it
//!   ([`RetryAfterGate`], under the retries). The runner's backoff after a failed pass
//!   starts at one second; an API server may ask for more.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};

use kube::client::ClientBuilder;
use kube::client::retry::RetryPolicy;

/// Errors of connecting to a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or used.
    #[error("failed to load kubeconfig {path}: {message}")]
    Kubeconfig {
        /// Its path.
        path: String,
        /// What failed.
        message: String,
    },
    /// No kubeconfig and not in a cluster.
    #[error(
        "failed to find cluster credentials (no --kubeconfig, KUBECONFIG or in-cluster config): {0}"
    )]
    Infer(String),
    /// The client could not be built.
    #[error("failed to build a Kubernetes client: {0}")]
    Client(String),
}

/// The User-Agent of every request.
pub fn user_agent() -> String {
    format!("tidemark/{}", env!("CARGO_PKG_VERSION"))
}

/// A client for the cluster of `kubeconfig`, or the one inferred from the environment
/// (`KUBECONFIG`, `~/.kube/config`, the in-cluster service account).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |e: &dyn std::fmt::Display| Error::Kubeconfig {
                path: path.display().to_string(),
                message: e.to_string(),
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(&e))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| err(&e))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Infer(e.to_string()))?,
    };
    finish(config)
}

/// A client for the cluster of an in-memory kubeconfig (a Cluster API management cluster's,
/// from a Secret).
pub async fn client_from(kubeconfig: kube::config::Kubeconfig) -> Result<kube::Client, Error> {
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| Error::Client(e.to_string()))?;
    finish(config)
}

/// A client for context `context` of kubeconfig `path` (`tidemark status` reads many).
pub async fn client_for_context(path: &Path, context: &str) -> Result<kube::Client, Error> {
    let err = |e: &dyn std::fmt::Display| Error::Kubeconfig {
        path: format!("{} (context {context})", path.display()),
        message: e.to_string(),
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(&e))?;
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..kube::config::KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(|e| err(&e))?;
    finish(config)
}

/// The User-Agent and the bounded retries on a config.
fn finish(mut config: kube::Config) -> Result<kube::Client, Error> {
    config.default_retry = false;
    let agent =
        http::HeaderValue::from_str(&user_agent()).map_err(|e| Error::Client(e.to_string()))?;
    config.headers.push((http::header::USER_AGENT, agent));
    let retry = RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(2), 3, true)
        .map_err(|e| Error::Client(e.to_string()))?;
    let builder = ClientBuilder::try_from(config).map_err(|e| Error::Client(e.to_string()))?;
    // The retry layer and the gate clone their service: a buffer in front of kube's stack
    // makes it so. The gate sits under the retries, so that it sees every answer.
    Ok(builder
        .with_layer(&tower::buffer::BufferLayer::new(1024))
        .with_layer(&RetryAfterGate::default())
        .with_layer(&tower::retry::RetryLayer::new(retry))
        .build())
}

/// When each request (method, path) may be sent again, after a 429 or 503 that said
/// `Retry-After`.
type NotBefore = Arc<Mutex<HashMap<(Method, String), tokio::time::Instant>>>;

/// Under the bounded retries: holds back a request until the `Retry-After` of the last 429
/// or 503 answered to the same method and path has elapsed.
#[derive(Clone, Default)]
pub struct RetryAfterGate {
    not_before: NotBefore,
}

impl<S> tower::Layer<S> for RetryAfterGate {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            not_before: self.not_before.clone(),
        }
    }
}

/// A service behind a [`RetryAfterGate`].
#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    not_before: NotBefore,
}

/// The `Retry-After` of a throttling or unavailable answer, in seconds (the only form
/// kube-apiserver sends).
fn retry_after<B>(response: &Response<B>) -> Option<Duration> {
    if !matches!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        return None;
    }
    let secs: u64 = response
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // A bound, so that a mistaken answer cannot stall the agent for long.
    Some(Duration::from_secs(secs.min(300)))
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Gated<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The service made ready is the one that is called; a fresh clone takes its place.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let not_before = self.not_before.clone();
        let key = (req.method().clone(), req.uri().path().to_string());
        Box::pin(async move {
            let wait_until = not_before.lock().ok().and_then(|m| m.get(&key).copied());
            if let Some(at) = wait_until {
                tokio::time::sleep_until(at).await;
            }
            let response = inner.call(req).await?;
            if let Ok(mut m) = not_before.lock() {
                let now = tokio::time::Instant::now();
                m.retain(|_, at| *at > now);
                match retry_after(&response) {
                    Some(after) => {
                        m.insert(key, now + after);
                    }
                    None => {
                        m.remove(&key);
                    }
                }
            }
            Ok(response)
        })
    }
}

/// A request the API server refused or could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action}")]
pub struct ApiError {
    /// What was attempted (`apply Deployment/ns/web`).
    pub action: String,
    /// Why it failed.
    #[source]
    pub cause: Cause,
}

/// The cause of an [`ApiError`].
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The API server answered with an error status.
    #[error("{message} ({code} {reason})")]
    Refused {
        /// HTTP status code.
        code: u16,
        /// The Status reason (`Invalid`, `Conflict`, ...).
        reason: String,
        /// The Status message.
        message: String,
    },
    /// The request did not get an answer (transport, TLS, decoding).
    #[error(transparent)]
    Transport(kube::Error),
}

impl ApiError {
    /// `action` failed with `e`.
    pub fn new(action: impl Into<String>, e: kube::Error) -> Self {
        let cause = match e {
            kube::Error::Api(s) => Cause::Refused {
                code: s.code,
                reason: s.reason,
                message: s.message,
            },
            other => Cause::Transport(other),
        };
        Self {
            action: action.into(),
            cause,
        }
    }

    /// Whether the API server refused a change to a field it does not let change (a Job's
    /// pod template, a Service's clusterIP): 422 Invalid saying `field is immutable`. The
    /// one place that reads an answer's text, because Kubernetes has no reason code for it.
    pub fn is_immutable(&self) -> bool {
        matches!(&self.cause, Cause::Refused { code: 422, message, .. } if message.contains("field is immutable"))
    }

    /// Whether a server-side apply conflicted with another field manager (409 Conflict).
    pub fn is_conflict(&self) -> bool {
        matches!(&self.cause, Cause::Refused { code: 409, reason, .. } if reason == "Conflict")
    }

    /// Whether the API server answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self.cause, Cause::Refused { code: 404, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service};

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap_or_default()
    }

    /// A 429 with `Retry-After: 2` holds the same request back for two seconds, and
    /// nothing else.
    #[tokio::test]
    async fn a_retry_after_holds_back_the_same_request() {
        let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<()>>();
        let mut svc = RetryAfterGate::default().layer(mock);
        let answer = |code: u16, after: Option<&str>| {
            let mut r = Response::new(());
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            if let Some(a) = after {
                r.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_str(a).unwrap_or(http::HeaderValue::from_static("0")),
                );
            }
            r
        };
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for (code, after) in [(429, Some("2")), (200, None), (200, None), (200, None)] {
                let Some((req, reply)) = handle.next_request().await else {
                    break;
                };
                seen.push((req.uri().path().to_string(), tokio::time::Instant::now()));
                reply.send_response(answer(code, after));
            }
            seen
        });
        let start = tokio::time::Instant::now();
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.ok();
        let first = svc.call(get("/api/v1/namespaces/a")).await.ok();
        assert_eq!(
            first.map(|r| r.status()),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.ok();
        assert!(svc.call(get("/api/v1/namespaces/b")).await.is_ok());
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.ok();
        assert!(svc.call(get("/api/v1/namespaces/a")).await.is_ok());
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.ok();
        // Answered 200 since: no longer held back.
        assert!(svc.call(get("/api/v1/namespaces/a")).await.is_ok());
        let seen = server.await.unwrap_or_default();
        let at: Vec<(&str, Duration)> = seen
            .iter()
            .map(|(p, t)| (p.as_str(), t.duration_since(start)))
            .collect();
        assert_eq!(at.len(), 4, "{at:?}");
        assert!(
            at[1].1 < Duration::from_millis(500),
            "another path at once: {at:?}"
        );
        assert!(
            at[2].1 >= Duration::from_secs(2),
            "the same after Retry-After: {at:?}"
        );
        assert!(at[3].1 - at[2].1 < Duration::from_millis(500), "{at:?}");
    }
}
