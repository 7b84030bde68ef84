//! The `helm template` wrapper: one process per render, argv only (no shell), a timeout,
//! stderr's tail in the error (through [`crate::process`]). Tested with the official helm
//! v4.1.4 and v3.17.2.
//!
//! Private charts ([`super::credentials`]): a secret never goes on helm's command line (argv
//! shows in `ps`), and `helm template` takes a password only there. So for a classic
//! repository with credentials, the render writes a private `repositories.yaml` (mode 0600,
//! in the render's own 0700 directory, removed with it) holding the credentials read from
//! their files just now, runs `helm repo update` with it, and renders the chart by that
//! repository's name. For an `oci://` chart with credentials it writes a private registry
//! config (a docker `config.json`) and passes `--registry-config`. CA bundles and client
//! certificates are files already and go by their paths. The secrets are scrubbed from
//! whatever helm prints before it reaches an error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;

use super::credentials::{ChartCredentials, Login, RepositoryAccess, Username, registry_host};
use super::inputs::ChartSource;
use crate::process::{self, Invocation};

/// The name of the one repository in a render's private `repositories.yaml`.
const REPOSITORY_NAME: &str = "tidemark";

/// Where to find `helm` and how long a render may take.
#[derive(Clone, Debug)]
pub struct Helm {
    /// The executable (`--helm-bin`, default `helm` from `PATH`).
    pub bin: PathBuf,
    /// Longest a render may take.
    pub timeout: Duration,
    /// How to reach private chart repositories and registries (`--chart-credentials`).
    pub credentials: ChartCredentials,
}

/// How helm reaches a chart beyond its URL, prepared for one render by [`Helm::access`].
/// The default is nothing more (in-repo and public charts).
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// `--repository-config` (a private `repositories.yaml` holding the credentials) and
    /// `--repository-cache`: the chart is named `tidemark/<name>`, after `helm repo update`.
    pub repositories: Option<(PathBuf, PathBuf)>,
    /// `--registry-config`, for `oci://` charts.
    pub registry_config: Option<PathBuf>,
    /// `--ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `--cert-file` and `--key-file`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// What must never appear in what helm prints, as it reaches an error.
    secrets: Secrets,
}

/// Secret strings, never printed (not even by `Debug`).
#[derive(Clone, Default)]
struct Secrets(Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

impl Access {
    /// The flags of `helm template` (and `helm repo update`) that carry this access.
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut flag = |name: &str, path: &Path| {
            args.extend([name.to_owned(), path.display().to_string()]);
        };
        if let Some((config, cache)) = &self.repositories {
            flag("--repository-config", config);
            flag("--repository-cache", cache);
        }
        if let Some(config) = &self.registry_config {
            flag("--registry-config", config);
        }
        if let Some(ca) = &self.ca_file {
            flag("--ca-file", ca);
        }
        if let Some((cert, key)) = &self.client_cert {
            flag("--cert-file", cert);
            flag("--key-file", key);
        }
        args
    }

    /// `text` with every secret replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        self.secrets
            .0
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text.to_owned(), |out, secret| {
                out.replace(secret.as_str(), "***")
            })
    }
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
    /// How helm reaches the chart ([`Helm::access`]).
    pub access: &'a Access,
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
    /// A file of the chart credentials could not be read.
    #[error("failed to read the {what} of chart repository {repository} from {}", .file.display())]
    Credentials {
        /// The repository (a URL without credentials).
        repository: String,
        /// `username` or `password`.
        what: &'static str,
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// helm's private configuration for the render could not be written.
    #[error("failed to write helm's configuration for chart repository {repository}")]
    Config {
        /// The repository.
        repository: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `helm repo update` did not fetch the repository's index (wrong credentials, an
    /// unknown CA, a server error).
    #[error("failed to fetch the index of chart repository {repository}: {output}")]
    Index {
        /// The repository.
        repository: String,
        /// What helm said, secrets removed.
        output: String,
    },
}

impl Helm {
    /// The argument vector of `helm template` for `req` (without the executable).
    pub fn args(req: &RenderRequest<'_>) -> Vec<String> {
        let mut args = vec!["template".to_string(), req.release.to_string()];
        match req.chart {
            ChartSource::InRepo { .. } => args.push(req.chart_dir.display().to_string()),
            ChartSource::Repository { name, .. } if req.access.repositories.is_some() => {
                args.push(format!("{REPOSITORY_NAME}/{name}"));
            }
            ChartSource::Repository { name, .. } => args.push(name.clone()),
            ChartSource::Oci { reference } => args.push(reference.clone()),
        }
        args.extend(["--namespace".to_string(), req.namespace.to_string()]);
        if let Some(v) = req.version {
            args.extend(["--version".to_string(), v.to_string()]);
        }
        if let ChartSource::Repository { url, .. } = req.chart
            && req.access.repositories.is_none()
        {
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
        args.extend(req.access.args());
        args
    }

    /// Runs `helm template` and returns what it printed on stdout. A repository reached
    /// through a private `repositories.yaml` has its index fetched first (`helm repo update`).
    pub async fn render(&self, req: &RenderRequest<'_>) -> Result<String, HelmError> {
        if let (Some((_, cache)), ChartSource::Repository { url, .. }) =
            (&req.access.repositories, req.chart)
        {
            self.update_index(req.access, url, cache).await?;
        }
        let invocation = Invocation::new(&self.bin, self.timeout).args(Self::args(req));
        tracing::debug!(command = %invocation.display(), "running helm");
        let output = process::run_checked(&invocation)
            .await
            .map_err(|e| self.process_error(e, req.access))?;
        String::from_utf8(output.stdout).map_err(|_| HelmError::NotUtf8)
    }

    fn process_error(&self, e: process::Error, access: &Access) -> HelmError {
        match e {
            process::Error::Spawn { source, .. } => HelmError::Missing {
                bin: self.bin.display().to_string(),
                source,
            },
            process::Error::Exit { status, stderr, .. } => HelmError::Failed {
                status,
                stderr: access.scrub(&stderr),
            },
            process::Error::Timeout { timeout, .. } => HelmError::Timeout(timeout),
            process::Error::Io { source, .. } => HelmError::Output(source),
        }
    }

    /// `helm repo update tidemark` with the render's private `repositories.yaml`. helm 3
    /// exits 0 when the update failed, so success is the index file in the cache.
    async fn update_index(
        &self,
        access: &Access,
        url: &str,
        cache: &Path,
    ) -> Result<(), HelmError> {
        let mut args = vec![
            "repo".to_owned(),
            "update".to_owned(),
            REPOSITORY_NAME.to_owned(),
        ];
        args.extend(access.args());
        let invocation = Invocation::new(&self.bin, self.timeout).args(args);
        tracing::debug!(command = %invocation.display(), "running helm");
        let output = process::run(&invocation)
            .await
            .map_err(|e| self.process_error(e, access))?;
        let index = cache.join(format!("{REPOSITORY_NAME}-index.yaml"));
        if output.status.success() && tokio::fs::try_exists(&index).await.unwrap_or(false) {
            return Ok(());
        }
        // What helm said, without its chatter.
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        let said: Vec<&str> = said
            .lines()
            .map(str::trim)
            .filter(|l| {
                !l.is_empty()
                    && !l.starts_with("Hang tight")
                    && !l.starts_with("Update Complete")
                    && !l.starts_with("...Unable to get an update")
            })
            .collect();
        let output = match said.join("; ") {
            s if s.is_empty() => format!("`helm repo update` exited with {}", output.status),
            s => s,
        };
        Err(HelmError::Index {
            repository: url.to_owned(),
            output: access.scrub(&output),
        })
    }

    /// Prepares how helm reaches `chart` in the render directory `workdir` (which only this
    /// render uses, mode 0700): reads the credentials' files now (a rotated secret is used
    /// from the next render on) and writes helm's private configuration.
    pub async fn access(&self, chart: &ChartSource, workdir: &Path) -> Result<Access, HelmError> {
        match chart {
            ChartSource::InRepo { .. } => Ok(Access::default()),
            ChartSource::Repository { url, .. } => {
                let Some(entry) = self.credentials.for_url(url) else {
                    return Ok(Access::default());
                };
                let Some(login) = &entry.login else {
                    return Ok(tls_access(entry));
                };
                let (username, password) = read_login(url, login).await?;
                let config = workdir.join("repositories.yaml");
                let file = json!({
                    "apiVersion": "",
                    "generated": "0001-01-01T00:00:00Z",
                    "repositories": [{
                        "name": REPOSITORY_NAME,
                        "url": url,
                        "username": username,
                        "password": password,
                        "caFile": path_text(entry.ca_file.as_deref()),
                        "certFile": path_text(entry.client_cert.as_ref().map(|(c, _)| c.as_path())),
                        "keyFile": path_text(entry.client_cert.as_ref().map(|(_, k)| k.as_path())),
                        "insecure_skip_tls_verify": false,
                        "pass_credentials_all": entry.pass_credentials,
                    }],
                });
                write_private(&config, &file.to_string())
                    .await
                    .map_err(|source| HelmError::Config {
                        repository: url.clone(),
                        source,
                    })?;
                Ok(Access {
                    repositories: Some((config, workdir.join("repository-cache"))),
                    secrets: Secrets(vec![password]),
                    ..Access::default()
                })
            }
            ChartSource::Oci { reference } => {
                let entry = self.credentials.for_url(reference);
                let mut access = entry.map(tls_access).unwrap_or_default();
                access.registry_config = self.credentials.registry_config.clone();
                let (Some(login), Some(host)) = (
                    entry.and_then(|e| e.login.as_ref()),
                    registry_host(reference),
                ) else {
                    return Ok(access);
                };
                let (username, password) = read_login(reference, login).await?;
                let auth = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                let config = workdir.join("registry-config.json");
                let file = json!({"auths": {host: {"auth": auth}}});
                write_private(&config, &file.to_string())
                    .await
                    .map_err(|source| HelmError::Config {
                        repository: reference.clone(),
                        source,
                    })?;
                access.registry_config = Some(config);
                access.secrets = Secrets(vec![password, auth]);
                Ok(access)
            }
        }
    }
}

/// The TLS part of an entry: CA bundle and client certificate by path.
fn tls_access(entry: &RepositoryAccess) -> Access {
    Access {
        ca_file: entry.ca_file.clone(),
        client_cert: entry.client_cert.clone(),
        ..Access::default()
    }
}

fn path_text(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

/// The user name and password of `login`, read from their files now (a trailing newline
/// is not part of them).
async fn read_login(repository: &str, login: &Login) -> Result<(String, String), HelmError> {
    let read = |what: &'static str, file: PathBuf| async move {
        tokio::fs::read_to_string(&file)
            .await
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|source| HelmError::Credentials {
                repository: repository.to_owned(),
                what,
                file,
                source,
            })
    };
    let username = match &login.username {
        Username::Literal(name) => name.clone(),
        Username::File(file) => read("username", file.clone()).await?,
    };
    let password = read("password", login.password_file.clone()).await?;
    Ok((username, password))
}

/// Writes `text` to a new file only its owner can read.
async fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await?;
    file.write_all(text.as_bytes()).await?;
    file.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No access beyond the chart's URL.
    static NONE: std::sync::LazyLock<Access> = std::sync::LazyLock::new(Access::default);

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
            access: &NONE,
        }
    }

    fn helm(bin: &str, credentials: ChartCredentials) -> Helm {
        Helm {
            bin: bin.into(),
            timeout: Duration::from_secs(5),
            credentials,
        }
    }

    #[tokio::test]
    async fn a_missing_helm_and_a_failing_helm_say_what_happened() {
        let values = PathBuf::from("/dev/null");
        let chart = ChartSource::InRepo {
            path: "charts/x".into(),
        };
        let req = request(&chart, &values);
        let missing = helm("/nonexistent/helm", ChartCredentials::default());
        let e = missing.render(&req).await.err();
        assert_eq!(
            e.as_ref().map(|e| crate::status::describe(e)).as_deref(),
            Some(
                "failed to run `/nonexistent/helm` (set --helm-bin, or put helm on PATH): \
                 No such file or directory (os error 2)"
            )
        );
        let failing = helm("false", ChartCredentials::default());
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

    #[test]
    fn access_adds_files_never_secrets() {
        let values = PathBuf::from("/tmp/v.yaml");
        let repo = ChartSource::Repository {
            url: "https://charts.example".into(),
            name: "ingress-nginx".into(),
        };
        let private = Access {
            repositories: Some(("/w/repositories.yaml".into(), "/w/cache".into())),
            secrets: Secrets(vec!["hunter2".into()]),
            ..Access::default()
        };
        let req = RenderRequest {
            version: Some("4.11.2"),
            access: &private,
            ..request(&repo, &values)
        };
        assert_eq!(
            Helm::args(&req).join(" "),
            "template metrics tidemark/ingress-nginx --namespace monitoring --version 4.11.2 \
             -f /tmp/v.yaml --include-crds --repository-config /w/repositories.yaml \
             --repository-cache /w/cache"
        );
        let oci = ChartSource::Oci {
            reference: "oci://registry.example/charts/app".into(),
        };
        let tls = Access {
            registry_config: Some("/w/registry-config.json".into()),
            ca_file: Some("/etc/ca.crt".into()),
            client_cert: Some(("/tls/c.crt".into(), "/tls/c.key".into())),
            ..Access::default()
        };
        let req = RenderRequest {
            access: &tls,
            ..request(&oci, &values)
        };
        assert_eq!(
            Helm::args(&req).join(" "),
            "template metrics oci://registry.example/charts/app --namespace monitoring \
             -f /tmp/v.yaml --include-crds --registry-config /w/registry-config.json \
             --ca-file /etc/ca.crt --cert-file /tls/c.crt --key-file /tls/c.key"
        );
        assert!(!format!("{private:?}").contains("hunter2"));
        assert_eq!(
            private.scrub("user deploy:hunter2 refused"),
            "user deploy:*** refused"
        );
    }

    /// A credentials file naming `secrets/` files of `dir`.
    fn credentials(dir: &Path) -> ChartCredentials {
        let text = format!(
            "repositories:
  - url: https://charts.example/private
    username: deploy
    passwordFile: {d}/password
    caFile: {d}/ca.crt
    passCredentials: true
  - url: oci://registry.example:5000/charts
    usernameFile: {d}/username
    passwordFile: {d}/token
registryConfig: {d}/docker.json
",
            d = dir.display()
        );
        ChartCredentials::parse("creds.yaml", &text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn access_reads_the_secret_files_now_and_writes_private_configuration() {
        use std::os::unix::fs::PermissionsExt as _;
        let secrets = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, text: &str| {
            std::fs::write(secrets.path().join(name), text).unwrap_or_else(|e| panic!("{e}"))
        };
        write("password", "hunter2\n");
        write("username", "robot\n");
        write("token", "t0ken");
        let helm = helm("helm", credentials(secrets.path()));

        let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let repo = ChartSource::Repository {
            url: "https://charts.example/private/stable".into(),
            name: "app".into(),
        };
        let access = helm
            .access(&repo, work.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let config = work.path().join("repositories.yaml");
        assert_eq!(
            access.repositories,
            Some((config.clone(), work.path().join("repository-cache")))
        );
        let mode = std::fs::metadata(&config).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        let written: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let entry = &written["repositories"][0];
        assert_eq!(entry["name"], "tidemark");
        assert_eq!(entry["url"], "https://charts.example/private/stable");
        assert_eq!(entry["username"], "deploy");
        assert_eq!(entry["password"], "hunter2", "trailing newline dropped");
        assert_eq!(
            entry["caFile"],
            format!("{}/ca.crt", secrets.path().display())
        );
        assert_eq!(entry["pass_credentials_all"], true);

        // A rotated password is read by the next render.
        write("password", "rotated");
        let work2 = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let again = helm.access(&repo, work2.path()).await;
        assert_eq!(
            again.map(|a| a.scrub("rotated hunter2")).ok().as_deref(),
            Some("*** hunter2")
        );

        // oci://: a docker config for the registry's host.
        let oci = ChartSource::Oci {
            reference: "oci://registry.example:5000/charts/app".into(),
        };
        let access = helm
            .access(&oci, work.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let docker = work.path().join("registry-config.json");
        assert_eq!(access.registry_config.as_ref(), Some(&docker));
        let written: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&docker).unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let auth = base64::engine::general_purpose::STANDARD.encode("robot:t0ken");
        assert_eq!(
            written,
            json!({"auths": {"registry.example:5000": {"auth": auth}}})
        );
        assert_eq!(access.scrub(&format!("t0ken {auth}")), "*** ***");

        // Another registry: the configured registry config, passed through.
        let other = ChartSource::Oci {
            reference: "oci://other.example/charts/app".into(),
        };
        let access = helm
            .access(&other, work.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            access.registry_config,
            Some(secrets.path().join("docker.json"))
        );
        // A public repository: nothing.
        let public = ChartSource::Repository {
            url: "https://charts.example/public".into(),
            name: "app".into(),
        };
        let access = helm
            .access(&public, work.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            Helm::args(&RenderRequest {
                access: &access,
                ..request(&public, Path::new("/v"))
            })
            .contains(&"--repo".to_owned())
        );
    }

    #[tokio::test]
    async fn a_missing_secret_file_is_named_and_a_failed_update_is_scrubbed() {
        let secrets = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let repo = ChartSource::Repository {
            url: "https://charts.example/private".into(),
            name: "app".into(),
        };
        let e = helm("helm", credentials(secrets.path()))
            .access(&repo, work.path())
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e,
            Some(format!(
                "failed to read the password of chart repository https://charts.example/private \
                 from {}/password",
                secrets.path().display()
            ))
        );

        // A helm that prints its repositories file (password included) and fails.
        std::fs::write(secrets.path().join("password"), "hunter2")
            .unwrap_or_else(|e| panic!("{e}"));
        let script = secrets.path().join("helm");
        std::fs::write(
            &script,
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --repository-config ] && cat \"$2\" >&2; shift; done\nexit 1\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        let helm = helm(&script.display().to_string(), credentials(secrets.path()));
        let access = helm
            .access(&repo, work.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let values = PathBuf::from("/dev/null");
        let req = RenderRequest {
            access: &access,
            ..request(&repo, &values)
        };
        let e = helm
            .render(&req)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with(
                "failed to fetch the index of chart repository https://charts.example/private: "
            ),
            "{e}"
        );
        assert!(e.contains("\"password\":\"***\""), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
