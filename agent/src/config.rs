//! Turns command-line arguments into validated configuration values.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use tidemark_schema::{Diagnostics, LabelSelector};

use crate::cli::{DesiredArgs, GitArgs};
use crate::component::credentials::ChartCredentials;
use crate::component::helm::Helm;
use crate::converge::{self, render::Renderer};
use crate::desired::Source;
use crate::pass::Ctx;
use crate::source::{Auth, GitCache, SourceConfig, auth_from_file};
use crate::trust::AllowedSigners;

/// The git source described by `url`, `branch` and the git flags.
pub fn source_config(
    url: &str,
    branch: Option<String>,
    git: &GitArgs,
) -> anyhow::Result<SourceConfig> {
    let GitArgs {
        cache_dir,
        git_username,
        git_password_file,
        git_password_env,
        git_ssh_key,
        git_known_hosts,
    } = git;
    let password = match (git_password_file, git_password_env) {
        (Some(file), _) => Some(auth_from_file(file).context("--git-password-file")?),
        (None, Some(p)) => Some(p.clone()),
        (None, None) => None,
    };
    let auth = match (password, git_ssh_key) {
        (Some(_), Some(_)) => bail!("give either a git password/token or an SSH key, not both"),
        (Some(password), None) => Auth::Basic {
            username: git_username
                .clone()
                .unwrap_or_else(|| "x-access-token".into()),
            password,
        },
        (None, Some(key)) => {
            if !key.is_file() {
                bail!("--git-ssh-key {}: no such file", key.display());
            }
            Auth::SshKey {
                username: git_username.clone().unwrap_or_else(|| "git".into()),
                key: key.clone(),
                known_hosts: git_known_hosts.clone(),
            }
        }
        (None, None) => Auth::None,
    };
    Ok(SourceConfig {
        url: url.to_string(),
        branch,
        cache_dir: cache_dir.clone().unwrap_or_else(default_cache_dir),
        auth,
    })
}

/// `$XDG_CACHE_HOME/tidemark`, `~/.cache/tidemark`, or a directory under the temp dir.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("tidemark");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("tidemark");
    }
    std::env::temp_dir().join("tidemark-cache")
}

/// The fleet repo's cache, the cluster's identity selector and the signers its wave tag
/// must be signed by, from the flags that `desired`, `plan` and `agent` share.
pub fn fleet_cache(
    args: &DesiredArgs,
) -> anyhow::Result<(GitCache, LabelSelector, Option<AllowedSigners>)> {
    let DesiredArgs {
        repo,
        selector,
        branch,
        allowed_signers,
        git,
    } = args;
    let selector: LabelSelector = selector.parse().context("--selector")?;
    let signers = match allowed_signers {
        None => None,
        Some(path) => Some(
            read_allowed_signers(path)?
                .map_err(|diags| anyhow!("invalid allowed signers file:\n{diags}"))
                .context("--allowed-signers")?,
        ),
    };
    let cache = GitCache::open(&source_config(repo, branch.clone(), git)?)?;
    Ok((cache, selector, signers))
}

/// Reads an allowed-signers file: an error if it cannot be read, the diagnostics if it is
/// invalid. Times without a zone are read in the system's time zone, as ssh-keygen does.
pub fn read_allowed_signers(path: &Path) -> anyhow::Result<Result<AllowedSigners, Diagnostics>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the allowed signers file {}", path.display()))?;
    Ok(AllowedSigners::parse(
        &path.display().to_string(),
        &text,
        &jiff::tz::TimeZone::system(),
    ))
}

/// Reads and checks the `--chart-credentials` file: valid, and every file it names exists
/// (their contents are read at each render, so that rotated secrets are picked up).
pub fn chart_credentials(path: &Path) -> anyhow::Result<ChartCredentials> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let credentials = ChartCredentials::parse(&path.display().to_string(), &text)?;
    for (field, file) in credentials.files() {
        std::fs::metadata(file).with_context(|| {
            format!(
                "{}: {field}: cannot read {}",
                path.display(),
                file.display()
            )
        })?;
    }
    Ok(credentials)
}

/// The fleet repo as this cluster's agent reads it (see [`fleet_cache`]).
pub fn fleet_source(args: &DesiredArgs) -> anyhow::Result<Source> {
    let (cache, selector, signers) = fleet_cache(args)?;
    Ok(Source::new(cache, args.branch.clone(), selector, signers))
}

/// What a pass needs, for the agent, `plan` and the demo alike. `instance` names this
/// replica in the Events it records.
pub fn pass_ctx(
    source: Source,
    client: kube::Client,
    status_namespace: String,
    kubeconfig: Option<PathBuf>,
    helm: Helm,
    settings: converge::Settings,
    instance: &str,
) -> Ctx {
    Ctx {
        source,
        events: crate::status::Events::new(client.clone(), instance),
        client,
        status_namespace,
        kubeconfig,
        renderer: Renderer::new(helm),
        settings,
        reporter: None,
    }
}
