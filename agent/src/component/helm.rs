//! The `helm template` wrapper: one process per render, argv only (no shell), a timeout,
//! stderr captured into the error. Works with the real `helm` binary and with the
//! stand-in in `scripts/helm` (same arguments, same output).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// How many `helm` processes this process has started (for `/metrics` and tests).
pub static RENDERS: AtomicU64 = AtomicU64::new(0);

/// Longest stderr kept in an error: enough for Helm's message, not a flood.
const STDERR_LIMIT: usize = 4096;

/// Where to find `helm` and how long a render may take.
#[derive(Clone, Debug)]
pub struct Helm {
    /// The executable (`--helm-bin`, default `helm` from `PATH`).
    pub bin: PathBuf,
    /// Longest a render may take.
    pub timeout: Duration,
}

/// The chart argument of `helm template`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChartArg {
    /// A chart directory on disk (a fleet-repo chart, materialised).
    Dir(PathBuf),
    /// A chart in a classic chart repository: `NAME --repo URL`.
    Repo {
        /// Repository URL.
        url: String,
        /// Chart name.
        name: String,
    },
    /// A chart in an OCI registry: `oci://registry/path/NAME`.
    Oci(String),
}

/// One render.
#[derive(Clone, Debug)]
pub struct RenderRequest<'a> {
    /// Release name.
    pub release: &'a str,
    /// Namespace rendered for.
    pub namespace: &'a str,
    /// The chart.
    pub chart: ChartArg,
    /// Chart version (`--version`), for repository charts.
    pub version: Option<&'a str>,
    /// The merged values file.
    pub values_file: &'a Path,
}

/// Errors of a render.
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    /// The executable could not be started.
    #[error("failed to run `{bin}`: {source} (set --helm-bin, or put helm on PATH)")]
    Spawn {
        /// The executable.
        bin: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It ran longer than the timeout and was killed.
    #[error("`helm template` did not finish within {0:?} and was stopped")]
    Timeout(Duration),
    /// It exited non-zero.
    #[error("`helm template` failed ({status}): {stderr}")]
    Failed {
        /// Exit status.
        status: String,
        /// What it printed on stderr (trimmed, truncated).
        stderr: String,
    },
    /// Reading its output failed, or it was not UTF-8.
    #[error("failed to read the output of `helm template`: {0}")]
    Output(String),
}

impl Helm {
    /// The argument vector of `helm template` for `req` (without the executable).
    pub fn args(req: &RenderRequest<'_>) -> Vec<String> {
        let mut args = vec!["template".to_string(), req.release.to_string()];
        match &req.chart {
            ChartArg::Dir(dir) => args.push(dir.display().to_string()),
            ChartArg::Repo { name, .. } => args.push(name.clone()),
            ChartArg::Oci(reference) => args.push(reference.clone()),
        }
        args.extend(["--namespace".to_string(), req.namespace.to_string()]);
        if let Some(v) = req.version {
            args.extend(["--version".to_string(), v.to_string()]);
        }
        if let ChartArg::Repo { url, .. } = &req.chart {
            args.extend(["--repo".to_string(), url.clone()]);
        }
        args.extend([
            "-f".to_string(),
            req.values_file.display().to_string(),
            "--include-crds".to_string(),
        ]);
        args
    }

    /// Runs `helm template` and returns what it printed on stdout.
    pub async fn render(&self, req: &RenderRequest<'_>) -> Result<String, HelmError> {
        let args = Self::args(req);
        tracing::debug!(bin = %self.bin.display(), ?args, "running helm");
        RENDERS.fetch_add(1, Ordering::Relaxed);
        let mut child = tokio::process::Command::new(&self.bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| HelmError::Spawn {
                bin: self.bin.display().to_string(),
                source,
            })?;
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            return Err(HelmError::Output("no pipes to the process".into()));
        };
        let run = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let (a, b, status) = tokio::join!(
                stdout.read_to_end(&mut out),
                stderr.read_to_end(&mut err),
                child.wait()
            );
            a.and(b).map_err(|e| HelmError::Output(e.to_string()))?;
            let status = status.map_err(|e| HelmError::Output(e.to_string()))?;
            Ok::<_, HelmError>((status, out, err))
        };
        let (status, out, err) = match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r?,
            // Dropping the future drops the child: kill_on_drop stops it.
            Err(_) => return Err(HelmError::Timeout(self.timeout)),
        };
        if !status.success() {
            let mut stderr = String::from_utf8_lossy(&err).trim().to_string();
            if stderr.len() > STDERR_LIMIT {
                let mut cut = STDERR_LIMIT;
                while !stderr.is_char_boundary(cut) {
                    cut -= 1;
                }
                stderr.truncate(cut);
                stderr.push_str(" [...]");
            }
            if stderr.is_empty() {
                stderr = "(nothing on stderr)".into();
            }
            return Err(HelmError::Failed {
                status: status.to_string(),
                stderr,
            });
        }
        String::from_utf8(out).map_err(|_| HelmError::Output("not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_helm_and_a_failing_helm_say_what_happened() {
        let values = PathBuf::from("/dev/null");
        let req = RenderRequest {
            release: "r",
            namespace: "n",
            chart: ChartArg::Dir("/nonexistent".into()),
            version: None,
            values_file: &values,
        };
        let missing = Helm {
            bin: "/nonexistent/helm".into(),
            timeout: Duration::from_secs(5),
        };
        let e = missing.render(&req).await.err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "failed to run `/nonexistent/helm`: No such file or directory (os error 2) \
                 (set --helm-bin, or put helm on PATH)"
            )
        );
        // `false` exits 1 and prints nothing.
        let failing = Helm {
            bin: "false".into(),
            timeout: Duration::from_secs(5),
        };
        let e = failing.render(&req).await.err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("`helm template` failed (exit status: 1): (nothing on stderr)")
        );
        // A render that outlives the timeout is stopped.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let script = dir.path().join("slow-helm");
        std::fs::write(&script, "#!/bin/sh\nsleep 10\n").unwrap_or_else(|e| panic!("{e}"));
        let mut perms = std::fs::metadata(&script)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&script, perms).unwrap_or_else(|e| panic!("{e}"));
        let slow = Helm {
            bin: script,
            timeout: Duration::from_millis(300),
        };
        let started = std::time::Instant::now();
        let e = slow.render(&req).await.err();
        assert!(matches!(e, Some(HelmError::Timeout(_))), "{e:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stopped, not waited for"
        );
    }

    #[test]
    fn arguments_are_the_documented_helm_template_command() {
        let values = PathBuf::from("/tmp/v.yaml");
        let dir = RenderRequest {
            release: "metrics",
            namespace: "monitoring",
            chart: ChartArg::Dir("/tmp/chart".into()),
            version: None,
            values_file: &values,
        };
        assert_eq!(
            Helm::args(&dir).join(" "),
            "template metrics /tmp/chart --namespace monitoring -f /tmp/v.yaml --include-crds"
        );
        let repo = RenderRequest {
            chart: ChartArg::Repo {
                url: "https://charts.example".into(),
                name: "ingress-nginx".into(),
            },
            version: Some("4.11.2"),
            ..dir.clone()
        };
        assert_eq!(
            Helm::args(&repo).join(" "),
            "template metrics ingress-nginx --namespace monitoring --version 4.11.2 \
             --repo https://charts.example -f /tmp/v.yaml --include-crds"
        );
    }
}
