//! The `helm template` wrapper: one process per render, argv only (no shell), a timeout,
//! stderr's tail in the error (through [`crate::process`]). Tested with the official helm
//! v4.1.4 and v3.17.2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::inputs::ChartSource;
use crate::process::{self, Invocation};

/// Where to find `helm` and how long a render may take.
#[derive(Clone, Debug)]
pub struct Helm {
    /// The executable (`--helm-bin`, default `helm` from `PATH`).
    pub bin: PathBuf,
    /// Longest a render may take.
    pub timeout: Duration,
}

/// One render.
#[derive(Clone, Debug)]
pub struct RenderRequest<'a> {
    /// Release name.
    pub release: &'a str,
    /// Namespace rendered for.
    pub namespace: &'a str,
    /// The chart.
    pub chart: &'a ChartSource,
    /// Where an in-repo chart was written out (unused for other sources).
    pub chart_dir: &'a Path,
    /// Chart version (`--version`), for repository charts.
    pub version: Option<&'a str>,
    /// The merged values file.
    pub values_file: &'a Path,
    /// The Kubernetes version to render for (`--kube-version`), the cluster's.
    pub kube_version: Option<&'a str>,
    /// The API versions to render for (`--api-versions`): `group/version` and
    /// `group/version/Kind` the cluster serves.
    pub api_versions: &'a [String],
}

/// Errors of a render.
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    /// The executable could not be started.
    #[error("failed to run `{bin}` (set --helm-bin, or put helm on PATH)")]
    Missing {
        /// The executable.
        bin: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It exited non-zero. (The command line is left out: it names a temporary directory,
    /// and a message that changes every pass would rewrite the status every pass.)
    #[error("`helm template` exited with {status}: {stderr}")]
    Failed {
        /// How it exited.
        status: std::process::ExitStatus,
        /// The tail of its stderr.
        stderr: String,
    },
    /// It ran longer than its timeout and was stopped.
    #[error("`helm template` did not finish within {} and was stopped", tidemark_schema::Duration(*.0))]
    Timeout(Duration),
    /// Its output could not be read.
    #[error("failed to read the output of `helm template`")]
    Output(#[source] std::io::Error),
    /// It printed something that is not UTF-8.
    #[error("`helm template` printed output that is not UTF-8")]
    NotUtf8,
}

impl Helm {
    /// The argument vector of `helm template` for `req` (without the executable).
    pub fn args(req: &RenderRequest<'_>) -> Vec<String> {
        let mut args = vec!["template".to_string(), req.release.to_string()];
        match req.chart {
            ChartSource::InRepo { .. } => args.push(req.chart_dir.display().to_string()),
            ChartSource::Repository { name, .. } => args.push(name.clone()),
            ChartSource::Oci { reference } => args.push(reference.clone()),
        }
        args.extend(["--namespace".to_string(), req.namespace.to_string()]);
        if let Some(v) = req.version {
            args.extend(["--version".to_string(), v.to_string()]);
        }
        if let ChartSource::Repository { url, .. } = req.chart {
            args.extend(["--repo".to_string(), url.clone()]);
        }
        args.extend([
            "-f".to_string(),
            req.values_file.display().to_string(),
            "--include-crds".to_string(),
        ]);
        if let Some(v) = req.kube_version {
            args.extend(["--kube-version".to_string(), v.to_string()]);
        }
        if !req.api_versions.is_empty() {
            args.extend(["--api-versions".to_string(), req.api_versions.join(",")]);
        }
        args
    }

    /// Runs `helm template` and returns what it printed on stdout.
    pub async fn render(&self, req: &RenderRequest<'_>) -> Result<String, HelmError> {
        let invocation = Invocation::new(&self.bin, self.timeout).args(Self::args(req));
        tracing::debug!(command = %invocation.display(), "running helm");
        let output = process::run_checked(&invocation)
            .await
            .map_err(|e| match e {
                process::Error::Spawn { source, .. } => HelmError::Missing {
                    bin: self.bin.display().to_string(),
                    source,
                },
                process::Error::Exit { status, stderr, .. } => HelmError::Failed { status, stderr },
                process::Error::Timeout { timeout, .. } => HelmError::Timeout(timeout),
                process::Error::Io { source, .. } => HelmError::Output(source),
            })?;
        String::from_utf8(output.stdout).map_err(|_| HelmError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(chart: &'a ChartSource, values: &'a Path) -> RenderRequest<'a> {
        RenderRequest {
            release: "metrics",
            namespace: "monitoring",
            chart,
            chart_dir: Path::new("/tmp/chart"),
            version: None,
            values_file: values,
            kube_version: None,
            api_versions: &[],
        }
    }

    #[tokio::test]
    async fn a_missing_helm_and_a_failing_helm_say_what_happened() {
        let values = PathBuf::from("/dev/null");
        let chart = ChartSource::InRepo {
            path: "charts/x".into(),
        };
        let req = request(&chart, &values);
        let missing = Helm {
            bin: "/nonexistent/helm".into(),
            timeout: Duration::from_secs(5),
        };
        let e = missing.render(&req).await.err();
        assert_eq!(
            e.as_ref().map(|e| crate::status::describe(e)).as_deref(),
            Some(
                "failed to run `/nonexistent/helm` (set --helm-bin, or put helm on PATH): \
                 No such file or directory (os error 2)"
            )
        );
        let failing = Helm {
            bin: "false".into(),
            timeout: Duration::from_secs(5),
        };
        let e = failing.render(&req).await.err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("`helm template` exited with exit status: 1: (nothing on stderr)")
        );
    }

    #[test]
    fn arguments_are_the_documented_helm_template_command() {
        let values = PathBuf::from("/tmp/v.yaml");
        let in_repo = ChartSource::InRepo {
            path: "charts/metrics".into(),
        };
        assert_eq!(
            Helm::args(&request(&in_repo, &values)).join(" "),
            "template metrics /tmp/chart --namespace monitoring -f /tmp/v.yaml --include-crds"
        );
        let repo = ChartSource::Repository {
            url: "https://charts.example".into(),
            name: "ingress-nginx".into(),
        };
        let req = RenderRequest {
            version: Some("4.11.2"),
            ..request(&repo, &values)
        };
        assert_eq!(
            Helm::args(&req).join(" "),
            "template metrics ingress-nginx --namespace monitoring --version 4.11.2 \
             --repo https://charts.example -f /tmp/v.yaml --include-crds"
        );
        let apis = [
            "v1".to_string(),
            "apps/v1".to_string(),
            "apps/v1/Deployment".to_string(),
        ];
        let for_cluster = RenderRequest {
            kube_version: Some("1.29.8"),
            api_versions: &apis,
            ..request(&in_repo, &values)
        };
        assert_eq!(
            Helm::args(&for_cluster).join(" "),
            "template metrics /tmp/chart --namespace monitoring -f /tmp/v.yaml --include-crds \
             --kube-version 1.29.8 --api-versions v1,apps/v1,apps/v1/Deployment"
        );
        let oci = ChartSource::Oci {
            reference: "oci://registry.example/charts/app".into(),
        };
        assert_eq!(
            Helm::args(&request(&oci, &values)).join(" "),
            "template metrics oci://registry.example/charts/app --namespace monitoring -f /tmp/v.yaml --include-crds"
        );
    }
}
