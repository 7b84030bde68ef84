//! The git side: the fleet repo is read from git objects in a bare cache, never from a
//! work tree. This module is the only one that names `git2` types.
//!
//! A sync lists the remote's refs first and fetches only when a wanted ref (the default
//! branch, the wave tags) moved; deleted tags are pruned locally without a fetch. The
//! listing asks for the followed refs only (protocol v2 `ls-refs`, see [`refs`]); the
//! fetch and the object store are git2's.

mod auth;
mod cache;
mod journal;
mod push;
mod refs;
mod ssh;
mod tree;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub(crate) use auth::host_key_status;
pub use auth::{Auth, read_secret_file as auth_from_file, redact_url};
pub use cache::{FetchStats, GitCache, TagTarget};
pub use journal::{Entry, Identity, TagRequest};
pub use push::{Lease, RefUpdate, Refused};
pub use tree::GitTree;

/// Where the fleet repo is and how to reach it.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Remote URL or local path. May carry credentials; they are never logged.
    pub url: String,
    /// Branch to follow; default the remote's HEAD.
    pub branch: Option<String>,
    /// Directory holding bare caches of remotes.
    pub cache_dir: PathBuf,
    /// Credentials.
    pub auth: Auth,
}

/// The refs of one remote, as listed before any fetch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteRefs {
    /// The branch HEAD points at, when the remote says.
    pub head_branch: Option<String>,
    /// Every ref name and the object it points at (tag objects, not peeled).
    pub refs: BTreeMap<String, String>,
}

/// How a remote's refs were listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Read in-process from a local repository (a path or `file://`).
    Local,
    /// Protocol v2 `ls-refs`: only the refs asked for crossed the wire.
    V2,
    /// The server spoke protocol v0/v1: it advertised every ref it has.
    V0,
}

impl Protocol {
    /// `local`, `v2` or `v0`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Local => "local",
            Protocol::V2 => "v2",
            Protocol::V0 => "v0",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncReport {
    /// The branch followed.
    pub branch: String,
    /// Its commit after the sync.
    pub branch_commit: String,
    /// Whether a fetch ran (false when nothing wanted had moved).
    pub fetched: bool,
    /// What the fetch transferred.
    pub stats: FetchStats,
    /// Local tags that were deleted because the remote no longer has them.
    pub pruned: Vec<String>,
    /// How the remote's refs were listed.
    pub protocol: Protocol,
}

/// Errors of the git side. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cache directory could not be created or opened.
    #[error("failed to open the git cache at {path}: {message}")]
    Cache {
        /// The cache path.
        path: String,
        /// What failed.
        message: String,
    },
    /// Listing the remote's refs failed (unreachable, auth, protocol).
    #[error("failed to list refs of {url}: {message}")]
    List {
        /// The remote, credentials removed.
        url: String,
        /// What failed, credentials removed.
        message: String,
        /// Whether trying again may help (not for rejected credentials or host keys).
        transient: bool,
    },
    /// Fetching failed.
    #[error("failed to fetch {url}: {message}")]
    Fetch {
        /// The remote, credentials removed.
        url: String,
        /// What failed, credentials removed.
        message: String,
        /// Whether trying again may help (not for rejected credentials or host keys).
        transient: bool,
    },
    /// Pushing failed (unreachable, auth, no push rights).
    #[error("failed to push to {url}: {message}")]
    Push {
        /// The remote, credentials removed.
        url: String,
        /// What failed, credentials removed.
        message: String,
        /// Whether trying again may help (not for rejected credentials or host keys).
        transient: bool,
    },
    /// An object could not be written to the cache.
    #[error("failed to write {what} to the git cache: {message}")]
    Write {
        /// What was being written.
        what: String,
        /// What failed.
        message: String,
    },
    /// The wanted branch does not exist on the remote.
    #[error("branch `{branch}` not found on {url}")]
    NoBranch {
        /// The branch.
        branch: String,
        /// The remote, credentials removed.
        url: String,
    },
    /// The remote did not say which branch HEAD is and none was given.
    #[error("{url} does not advertise a default branch (HEAD); pass --branch")]
    NoHead {
        /// The remote, credentials removed.
        url: String,
    },
    /// A local object could not be read.
    #[error("failed to read {what} from the git cache: {message}")]
    Read {
        /// What was being read.
        what: String,
        /// What failed.
        message: String,
    },
    /// Credentials could not be loaded.
    #[error("failed to load git credentials: {0}")]
    Credentials(String),
}

impl Error {
    /// Whether retrying later may help (network and remote failures).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::List {
                transient: true,
                ..
            } | Error::Fetch {
                transient: true,
                ..
            } | Error::Push {
                transient: true,
                ..
            }
        )
    }
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
