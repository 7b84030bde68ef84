//! Command-line arguments (clap derive only; turned into validated values by the commands).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// tidemark: upgrade Kubernetes clusters from a fleet git repository.
#[derive(Debug, Parser)]
#[command(name = "tidemark", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TIDEMARK_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter, as RUST_LOG (e.g. `info`, `tidemark=debug`).
    #[arg(long, global = true, default_value = "warn", env = "TIDEMARK_LOG")]
    pub log: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// `file:line:col: field: message` lines.
    Text,
    /// A JSON document.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a fleet repo (a directory, or a git URL whose default branch is checked):
    /// schema, references, version skew, waves, selectors. Exit 0 valid, 1 invalid,
    /// 2 could not read.
    Validate(ValidateArgs),
    /// Print the JSON Schema of fleet-repo documents.
    Schema,
    /// Print the resolved desired state of one cluster and the commit it comes from.
    Desired(DesiredArgs),
}

/// `tidemark validate`
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Directory of a fleet repo, or a git remote (URL, path of a git repo).
    #[arg(default_value = ".")]
    pub repo: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Branch to check when REPO is a git remote; default the remote's HEAD.
    #[arg(long)]
    pub branch: Option<String>,
    /// Git access.
    #[command(flatten)]
    pub git: GitArgs,
}

/// `tidemark desired`
#[derive(Debug, Args)]
pub struct DesiredArgs {
    /// The fleet repo: URL (`https://`, `ssh://`, `git://`, `file://`, scp-like) or path.
    #[arg(long, env = "TIDEMARK_REPO")]
    pub repo: String,
    /// Identity selector of this cluster's manifest, e.g. `cluster=prod-eu-1`.
    #[arg(long, env = "TIDEMARK_SELECTOR")]
    pub selector: String,
    /// Branch to follow; default the remote's HEAD.
    #[arg(long, env = "TIDEMARK_BRANCH")]
    pub branch: Option<String>,
    /// Git access.
    #[command(flatten)]
    pub git: GitArgs,
}

/// How to reach the fleet repo. Secrets come from files or environment variables, never
/// from flags (they would show in `ps`).
#[derive(Debug, Args)]
pub struct GitArgs {
    /// Directory of the bare git cache.
    #[arg(long, env = "TIDEMARK_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// User name for HTTP(S) auth (with a token, e.g. `x-access-token`) or SSH.
    #[arg(long, env = "TIDEMARK_GIT_USERNAME")]
    pub git_username: Option<String>,
    /// File holding the HTTP(S) password or token.
    #[arg(long, env = "TIDEMARK_GIT_PASSWORD_FILE")]
    pub git_password_file: Option<PathBuf>,
    /// HTTP(S) password or token, from the environment only.
    #[arg(skip = std::env::var("TIDEMARK_GIT_PASSWORD").ok())]
    pub git_password_env: Option<String>,
    /// SSH private key file.
    #[arg(long, env = "TIDEMARK_GIT_SSH_KEY")]
    pub git_ssh_key: Option<PathBuf>,
    /// known_hosts file the SSH server's key must be in.
    #[arg(long, env = "TIDEMARK_GIT_KNOWN_HOSTS")]
    pub git_known_hosts: Option<PathBuf>,
}
