//! The Kubernetes client: built from a kubeconfig file or the in-cluster environment.
//!
//! - Every request says who sends it: `User-Agent: tidemark/<version>` (audit logs).
//! - Retries are bounded: 429, 503 and 504 are retried at most three times within a few
//!   seconds (honouring `Retry-After`). kube's default policy retries for many minutes, and
//!   one unavailable aggregated API (503 until its pod runs) would stall every pass; a
//!   failed pass is retried by the runner's backoff instead.

use std::path::Path;
use std::time::Duration;

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
    // The retry layer clones its service: a buffer in front of kube's stack makes it so.
    Ok(builder
        .with_layer(&tower::buffer::BufferLayer::new(1024))
        .with_layer(&tower::retry::RetryLayer::new(retry))
        .build())
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
