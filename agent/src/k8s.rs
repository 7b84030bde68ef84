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
