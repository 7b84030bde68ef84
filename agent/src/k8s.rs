//! The Kubernetes client: built from a kubeconfig file or the in-cluster environment.

use std::path::Path;

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
    kube::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
}
