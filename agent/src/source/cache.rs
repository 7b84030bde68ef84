//! The bare cache of one remote: list refs, fetch only what moved, prune deleted tags.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};
use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, FetchOptions, RemoteCallbacks,
    Repository,
};
use sha2::{Digest, Sha256};

use super::auth::{Auth, redact_url, scrub};
use super::refs::{self, Listing};
use super::ssh::{HostKeyVerdict, host_key_verdict};
use super::{Error, Protocol, RemoteRefs, Result, SourceConfig, SyncReport};
use crate::source::GitTree;

/// What one fetch transferred.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Objects received from the remote.
    pub received_objects: usize,
    /// Bytes received from the remote.
    pub received_bytes: usize,
}

/// What a tag ref points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagTarget {
    /// An annotated tag: a tag object, whose raw bytes carry the signature, if any.
    Annotated {
        /// The tag object's id.
        id: String,
        /// The tag object as git stores it (`git cat-file tag`).
        object: Vec<u8>,
    },
    /// A lightweight tag: the ref names a commit (or another object) directly.
    Lightweight {
        /// The object's id.
        id: String,
        /// Its type (`commit`, `tree`, `blob`).
        kind: String,
    },
}

/// A bare repository caching one remote.
pub struct GitCache {
    pub(super) repo: Repository,
    pub(super) url: String,
    pub(super) auth: Auth,
    path: PathBuf,
    /// Ref prefixes followed besides the branch and the wave tags.
    extra_prefixes: Vec<String>,
    /// Whether the "server speaks only protocol v0" warning was logged.
    warned_v0: AtomicBool,
}

impl std::fmt::Debug for GitCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitCache")
            .field("url", &redact_url(&self.url))
            .field("path", &self.path)
            .finish()
    }
}

const RETRIES: usize = 3;

impl GitCache {
    /// Opens (or creates) the cache of `config.url` under `config.cache_dir`. A cache that
    /// cannot be opened (corrupt, half-written) is deleted and created anew: it holds only
    /// what can be fetched again.
    pub fn open(config: &SourceConfig) -> Result<Self> {
        let url = normalize_local(&config.url);
        let key = hex(&Sha256::digest(redact_url(&url).as_bytes())[..12]);
        let path = config.cache_dir.join(format!("{key}.git"));
        let cache_err = |e: &dyn std::fmt::Display| Error::Cache {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&config.cache_dir).map_err(|e| cache_err(&e))?;
        let damage = match Repository::open_bare(&path) {
            Ok(repo) => match damage(&repo) {
                None => Ok(repo),
                Some(reason) => Err(reason),
            },
            Err(e) => Err(e.message().to_string()),
        };
        let repo = match damage {
            Ok(repo) => repo,
            Err(reason) => {
                if std::fs::symlink_metadata(&path).is_ok() {
                    warn_recreating(&path, &reason);
                }
                recreate(&path).map_err(|e| cache_err(&e))?
            }
        };
        Ok(Self {
            repo,
            url,
            auth: config.auth.clone(),
            path,
            extra_prefixes: Vec::new(),
            warned_v0: AtomicBool::new(false),
        })
    }

    /// Checks every object the cached refs lead to (commits at their tips, their trees and
    /// blobs, tag objects) and, when one cannot be read or does not match its id, deletes
    /// the cache and starts it anew: the next sync fetches everything again. Returns
    /// whether it did. Called after a read of the cache failed; [`GitCache::open`] does the
    /// same check.
    pub fn repair_if_damaged(&mut self) -> Result<bool> {
        let Some(reason) = damage(&self.repo) else {
            return Ok(false);
        };
        warn_recreating(&self.path, &reason);
        self.repo = recreate(&self.path).map_err(|e| Error::Cache {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(true)
    }

    /// Also follows the refs under `prefix` (e.g. `refs/tidemark/status/`): each sync lists
    /// them with the branch and the wave tags, fetches those that moved and deletes
    /// locally those the remote no longer has.
    pub fn follow_prefix(&mut self, prefix: impl Into<String>) {
        let prefix = prefix.into();
        if !self.extra_prefixes.contains(&prefix) {
            self.extra_prefixes.push(prefix);
        }
    }

    /// The remote URL with credentials removed.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Path of the bare cache.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lists all of the remote's refs (no objects), retrying transient failures.
    pub fn list_remote(&self) -> Result<RemoteRefs> {
        Ok(self.list(None)?.refs)
    }

    /// Lists the remote's refs under `prefixes` (all for `None`), retrying transient
    /// failures. Warns once per cache when the server answers with protocol v0.
    pub(super) fn list(&self, prefixes: Option<&[String]>) -> Result<Listing> {
        let listing = (|| {
            let auth = self.auth.current()?;
            refs::list(&self.url, &auth, prefixes).map_err(|f| Error::List {
                url: self.display_url(),
                message: scrub(&f.message, &self.url, &auth),
                transient: f.transient,
            })
        })
        .retry(backoff())
        .when(Error::is_transient)
        .call()?;
        if listing.protocol == Protocol::V0 && !self.warned_v0.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                url = %self.display_url(),
                "the git server does not speak protocol v2: every poll downloads its whole ref advertisement"
            );
        }
        Ok(listing)
    }

    /// Brings the cache up to date for `branch` (default: the remote's HEAD) and the tags
    /// matching `tag_globs` (e.g. `wave/*`). Lists the remote first and fetches only if a
    /// wanted ref moved or appeared; tags deleted on the remote are deleted locally.
    pub fn sync(&self, branch: Option<&str>, tag_globs: &[String]) -> Result<SyncReport> {
        let Listing {
            refs: remote,
            protocol,
        } = self.list(Some(&followed_prefixes(
            branch,
            tag_globs,
            &self.extra_prefixes,
        )))?;
        let branch = match branch {
            Some(b) => b.to_string(),
            None => remote.head_branch.clone().ok_or_else(|| Error::NoHead {
                url: self.display_url(),
            })?,
        };
        let branch_ref = format!("refs/heads/{branch}");
        let Some(remote_branch) = remote.refs.get(&branch_ref) else {
            return Err(Error::NoBranch {
                branch,
                url: self.display_url(),
            });
        };

        let wanted_tag = |name: &str| {
            name.strip_prefix("refs/tags/")
                .is_some_and(|t| tag_globs.iter().any(|g| glob_match(g, t)))
        };
        let extra = |name: &str| {
            self.extra_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
        };
        let mut refspecs = Vec::new();
        if self.local_ref(&branch_ref).as_deref() != Some(remote_branch.as_str()) {
            refspecs.push(format!("+{branch_ref}:{branch_ref}"));
        }
        for (name, oid) in remote
            .refs
            .iter()
            .filter(|(n, _)| wanted_tag(n) || extra(n))
        {
            if self.local_ref(name).as_deref() != Some(oid.as_str()) {
                refspecs.push(format!("+{name}:{name}"));
            }
        }

        // Tags gone from the remote: "nothing to do yet" for their wave, so drop them.
        let mut pruned = Vec::new();
        let local_refs = self
            .repo
            .references()
            .map_err(|e| self.read_err("refs", e))?;
        for r in local_refs.flatten() {
            if let Ok(name) = r.name()
                && (wanted_tag(name) || extra(name))
                && !remote.refs.contains_key(name)
            {
                pruned.push(name.to_string());
            }
        }
        for name in &pruned {
            if let Ok(mut r) = self.repo.find_reference(name) {
                r.delete().map_err(|e| self.read_err(name, e))?;
            }
            tracing::info!(r#ref = %name, "ref deleted on the remote, pruned from the cache");
        }

        let mut stats = FetchStats::default();
        let fetched = !refspecs.is_empty();
        if fetched {
            stats = (|| self.fetch_once(&refspecs))
                .retry(backoff())
                .when(Error::is_transient)
                .call()?;
            tracing::info!(
                refs = refspecs.len(),
                objects = stats.received_objects,
                bytes = stats.received_bytes,
                "fetched fleet repo"
            );
        } else {
            tracing::debug!("no wanted ref moved, fetch skipped");
        }
        // Remember the branch followed, so the next sync can use this commit's fleet.yaml
        // before it knows what the remote's HEAD is.
        if self
            .repo
            .head()
            .ok()
            .and_then(|h| h.name().ok().map(str::to_string))
            .as_deref()
            != Some(branch_ref.as_str())
        {
            self.repo
                .set_head(&branch_ref)
                .map_err(|e| self.read_err("HEAD", e))?;
        }
        let branch_commit = self
            .commit_of(&branch_ref)?
            .ok_or_else(|| Error::NoBranch {
                branch: branch.clone(),
                url: self.display_url(),
            })?;
        Ok(SyncReport {
            branch,
            branch_commit,
            fetched,
            stats,
            pruned,
            protocol,
        })
    }

    fn fetch_once(&self, refspecs: &[String]) -> Result<FetchStats> {
        let auth = self.auth.current()?;
        let rejection = HostKeyRejection::default();
        let fail = |e: git2::Error| Error::Fetch {
            url: self.display_url(),
            message: rejection
                .reason()
                .unwrap_or_else(|| scrub(e.message(), &self.url, &auth)),
            transient: is_transient(&e),
        };
        let mut remote = self.repo.remote_anonymous(&self.url).map_err(fail)?;
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks(&auth, &rejection));
        opts.download_tags(AutotagOption::None);
        remote
            .fetch(refspecs, Some(&mut opts), Some("tidemark sync"))
            .map_err(fail)?;
        let s = remote.stats();
        Ok(FetchStats {
            received_objects: s.received_objects(),
            received_bytes: s.received_bytes(),
        })
    }

    /// The branch the last sync followed, if any.
    pub fn last_branch(&self) -> Option<String> {
        let head = self.repo.find_reference("HEAD").ok()?;
        head.symbolic_target()
            .ok()??
            .strip_prefix("refs/heads/")
            .map(str::to_string)
    }

    fn local_ref(&self, name: &str) -> Option<String> {
        self.repo.refname_to_id(name).ok().map(|o| o.to_string())
    }

    /// The commit a ref points at (tags peeled), if the ref exists locally.
    pub fn commit_of(&self, refname: &str) -> Result<Option<String>> {
        let Ok(r) = self.repo.find_reference(refname) else {
            return Ok(None);
        };
        let commit = r.peel_to_commit().map_err(|e| self.read_err(refname, e))?;
        Ok(Some(commit.id().to_string()))
    }

    /// The commit of tag `tag` (`wave/canary`), if the cache has the tag.
    pub fn tag_commit(&self, tag: &str) -> Result<Option<String>> {
        self.commit_of(&format!("refs/tags/{tag}"))
    }

    /// What tag `tag` (`wave/canary`) points at, read raw so its signature can be checked;
    /// `None` if the cache has no such tag.
    pub fn tag_target(&self, tag: &str) -> Result<Option<TagTarget>> {
        let refname = format!("refs/tags/{tag}");
        let Ok(reference) = self.repo.find_reference(&refname) else {
            return Ok(None);
        };
        let id = reference
            .resolve()
            .map_err(|e| self.read_err(&refname, e))?
            .target()
            .ok_or_else(|| Error::Read {
                what: refname.clone(),
                message: "the ref has no target".into(),
            })?;
        let odb = self.repo.odb().map_err(|e| self.read_err(&refname, e))?;
        let object = odb.read(id).map_err(|e| self.read_err(&refname, e))?;
        Ok(Some(match object.kind() {
            git2::ObjectType::Tag => TagTarget::Annotated {
                id: id.to_string(),
                object: object.data().to_vec(),
            },
            kind => TagTarget::Lightweight {
                id: id.to_string(),
                kind: kind.str().to_string(),
            },
        }))
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub fn descends_from(&self, descendant: &str, ancestor: &str) -> Result<bool> {
        let (Ok(d), Ok(a)) = (
            git2::Oid::from_str(descendant),
            git2::Oid::from_str(ancestor),
        ) else {
            return Ok(false);
        };
        if d == a {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(d, a)
            .map_err(|e| self.read_err("commit graph", e))
    }

    /// A read-only view of the tree of `commit`.
    pub fn tree_at(&self, commit: &str) -> Result<GitTree<'_>> {
        let oid = git2::Oid::from_str(commit).map_err(|e| self.read_err(commit, e))?;
        let tree = self
            .repo
            .find_commit(oid)
            .and_then(|c| c.tree())
            .map_err(|e| self.read_err(commit, e))?;
        Ok(GitTree::new(&self.repo, tree))
    }

    pub(super) fn read_err(&self, what: &str, e: git2::Error) -> Error {
        Error::Read {
            what: what.to_string(),
            message: e.message().to_string(),
        }
    }

    /// `auth`: the credentials as [`Auth::current`] read them for this contact.
    pub(super) fn callbacks(
        &self,
        auth: &Auth,
        rejection: &HostKeyRejection,
    ) -> RemoteCallbacks<'static> {
        let mut cb = RemoteCallbacks::new();
        let auth_for_credentials = auth.clone();
        let url = self.url.clone();
        let mut attempts = 0u32;
        cb.credentials(move |_, username_from_url, allowed| {
            attempts += 1;
            // libgit2 asks again after a rejected credential; give up instead of looping.
            if attempts > 2 {
                return Err(git2::Error::from_str(
                    "authentication failed (credentials rejected)",
                ));
            }
            match &auth_for_credentials {
                Auth::Basic { username, password }
                    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
                {
                    Cred::userpass_plaintext(username, password)
                }
                Auth::SshKey { username, key, .. } if allowed.contains(CredentialType::SSH_KEY) => {
                    Cred::ssh_key(username_from_url.unwrap_or(username), None, key, None)
                }
                _ if allowed.contains(CredentialType::USERNAME) => {
                    Cred::username(username_from_url.unwrap_or("git"))
                }
                _ => match url_userinfo(&url) {
                    Some((u, p)) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                        Cred::userpass_plaintext(&u, &p)
                    }
                    _ => Err(git2::Error::from_str(
                        "the remote asks for credentials and none are configured",
                    )),
                },
            }
        });
        let auth = auth.clone();
        let url = self.url.clone();
        let rejection = rejection.clone();
        cb.certificate_check(move |cert, host| {
            let Some(hostkey) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            match host_key_verdict(&auth, host, ssh_port(&url), hostkey) {
                HostKeyVerdict::Known => Ok(CertificateCheckStatus::CertificateOk),
                HostKeyVerdict::Refused(reason) => Err(rejection.record(reason)),
                HostKeyVerdict::UserDefault => Ok(CertificateCheckStatus::CertificatePassthrough),
            }
        });
        cb
    }
}

/// Why our host-key check refused the server. libgit2 replaces the callback's error with
/// a generic "invalid or unknown remote ssh hostkey"; this keeps the precise reason.
#[derive(Clone, Default)]
pub(super) struct HostKeyRejection(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl HostKeyRejection {
    fn record(&self, reason: String) -> git2::Error {
        let e = git2::Error::from_str(&reason);
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(reason);
        }
        e
    }

    pub(super) fn reason(&self) -> Option<String> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}

fn warn_recreating(path: &Path, reason: &str) {
    tracing::warn!(
        path = %path.display(),
        reason,
        "git cache unreadable, recreating it from the remote"
    );
}

/// Deletes whatever is at `path` (a directory, or a file where one should be) and
/// initialises an empty bare cache there.
fn recreate(path: &Path) -> Result<Repository, Box<dyn std::error::Error>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path)?,
        Ok(_) => std::fs::remove_file(path)?,
        Err(_) => {}
    }
    Ok(Repository::init_bare(path)?)
}

/// Why the cache cannot be trusted, if it cannot: HEAD or a ref unreadable, or an object
/// a ref leads to (the tip commit, its whole tree, a tag object) missing, corrupt or not
/// matching its id (libgit2 checks every object's hash as it reads it). History behind
/// the tips is not walked: a pass reads only the trees at the tips. Costs one read of
/// each object of the followed trees; run at open and after a failed read, not per poll.
fn damage(repo: &Repository) -> Option<String> {
    let check = || -> Result<(), git2::Error> {
        repo.find_reference("HEAD")?;
        let odb = repo.odb()?;
        let mut seen = std::collections::HashSet::new();
        for r in repo.references()? {
            let r = r?;
            if let Some(id) = r.resolve()?.target() {
                walk(repo, &odb, id, &mut seen)?;
            }
        }
        Ok(())
    };
    check().err().map(|e| e.message().to_string())
}

/// Reads object `id` and everything it names that a pass may read: a tag's target, a
/// commit's tree, a tree's entries (not a commit's parents, nor submodules).
fn walk(
    repo: &Repository,
    odb: &git2::Odb<'_>,
    id: git2::Oid,
    seen: &mut std::collections::HashSet<git2::Oid>,
) -> Result<(), git2::Error> {
    if !seen.insert(id) {
        return Ok(());
    }
    let kind = odb.read(id)?.kind();
    match kind {
        git2::ObjectType::Tag => walk(repo, odb, repo.find_tag(id)?.target_id(), seen),
        git2::ObjectType::Commit => walk(repo, odb, repo.find_commit(id)?.tree_id(), seen),
        git2::ObjectType::Tree => {
            let tree = repo.find_tree(id)?;
            for entry in tree.iter() {
                if entry.kind() != Some(git2::ObjectType::Commit) {
                    walk(repo, odb, entry.id(), seen)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The `ref-prefix`es of a sync: the branch (HEAD when none is given, to learn the default
/// branch), the literal part of each tag glob, the extra prefixes.
fn followed_prefixes(branch: Option<&str>, tag_globs: &[String], extra: &[String]) -> Vec<String> {
    let mut prefixes = vec![match branch {
        Some(b) => format!("refs/heads/{b}"),
        None => "HEAD".to_string(),
    }];
    for glob in tag_globs {
        let literal = glob.split('*').next().unwrap_or_default();
        prefixes.push(format!("refs/tags/{literal}"));
    }
    prefixes.extend(extra.iter().cloned());
    prefixes.sort();
    prefixes.dedup();
    prefixes
}

/// Rejected credentials and unknown host keys need a person; anything else (network,
/// server errors) may pass on a retry.
pub(super) fn is_transient(e: &git2::Error) -> bool {
    !matches!(
        e.code(),
        git2::ErrorCode::Auth | git2::ErrorCode::Certificate
    ) && !e.message().contains("credentials")
        && !e.message().contains("host key")
        && !e.message().contains("hostkey")
}

pub(super) fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(RETRIES - 1)
        .with_jitter()
}

/// A local path is given to libgit2 as an absolute path so the cache key does not depend
/// on the working directory.
fn normalize_local(url: &str) -> String {
    if url.contains("://") || is_scp_like(url) {
        return url.to_string();
    }
    std::fs::canonicalize(url)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| url.to_string())
}

/// `user@host:path`, git's scp-like ssh syntax.
pub(super) fn is_scp_like(url: &str) -> bool {
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) => colon < slash && url[..colon].contains('@'),
        (Some(colon), None) => url[..colon].contains('@'),
        _ => false,
    }
}

fn ssh_port(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("ssh://")?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    host_port.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

fn url_userinfo(url: &str) -> Option<(String, String)> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (u, p) = userinfo.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Matches a git-refspec-like glob with at most one `*` (which may span `/`).
pub(crate) fn glob_match(glob: &str, name: &str) -> bool {
    match glob.split_once('*') {
        None => glob == name,
        Some((prefix, suffix)) => {
            name.len() >= prefix.len() + suffix.len()
                && name.starts_with(prefix)
                && name.ends_with(suffix)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("wave/*", "wave/canary"));
        assert!(!glob_match("wave/*", "release/canary"));
        assert!(glob_match("release-*-x", "release-main-x"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn prefixes_follow_the_branch_the_tag_globs_and_extras() {
        let globs = [
            "wave/*".to_string(),
            "release-*-x".to_string(),
            "pinned".to_string(),
        ];
        assert_eq!(
            followed_prefixes(None, &globs, &["refs/tidemark/status/".into()]),
            [
                "HEAD",
                "refs/tags/pinned",
                "refs/tags/release-",
                "refs/tags/wave/",
                "refs/tidemark/status/"
            ]
        );
        assert_eq!(
            followed_prefixes(Some("main"), &[], &[]),
            ["refs/heads/main"]
        );
    }

    /// A local remote with one commit on `main`; returns the repository and the commit.
    fn remote_with_commit(dir: &Path) -> Result<(Repository, git2::Oid), git2::Error> {
        let repo = Repository::init(dir)?;
        let sig = git2::Signature::now("t", "t@example.com")?;
        let commit = {
            let tree = repo.find_tree(repo.index()?.write_tree()?)?;
            repo.commit(Some("refs/heads/main"), &sig, &sig, "fleet", &tree, &[])?
        };
        repo.set_head("refs/heads/main")?;
        Ok((repo, commit))
    }

    #[test]
    fn extra_prefixes_are_listed_fetched_and_pruned() -> Result<(), Box<dyn std::error::Error>> {
        let remote_dir = tempfile::tempdir()?;
        let (remote, commit) = remote_with_commit(remote_dir.path())?;
        remote.reference("refs/tidemark/status/a", commit, false, "status")?;
        remote.reference("refs/other/b", commit, false, "not followed")?;
        let cache_dir = tempfile::tempdir()?;
        let mut cache = GitCache::open(&SourceConfig {
            url: remote_dir.path().display().to_string(),
            branch: None,
            cache_dir: cache_dir.path().to_path_buf(),
            auth: Auth::None,
        })?;
        cache.follow_prefix("refs/tidemark/status/");

        let report = cache.sync(None, &[])?;
        assert_eq!(report.protocol, Protocol::Local);
        assert_eq!(report.branch, "main");
        assert!(report.fetched);
        let status = cache.local_ref("refs/tidemark/status/a");
        assert_eq!(status, Some(commit.to_string()));
        assert_eq!(cache.local_ref("refs/other/b"), None);

        remote.find_reference("refs/tidemark/status/a")?.delete()?;
        let report = cache.sync(None, &[])?;
        assert!(!report.fetched);
        assert_eq!(report.pruned, ["refs/tidemark/status/a"]);
        assert_eq!(cache.local_ref("refs/tidemark/status/a"), None);
        Ok(())
    }

    #[test]
    fn a_damaged_cache_is_recreated_and_fetched_again() -> Result<(), Box<dyn std::error::Error>> {
        let remote_dir = tempfile::tempdir()?;
        let (_remote, commit) = remote_with_commit(remote_dir.path())?;
        let cache_dir = tempfile::tempdir()?;
        let config = SourceConfig {
            url: remote_dir.path().display().to_string(),
            branch: None,
            cache_dir: cache_dir.path().to_path_buf(),
            auth: Auth::None,
        };
        let mut cache = GitCache::open(&config)?;
        cache.sync(None, &[])?;
        assert!(!cache.repair_if_damaged()?, "a sound cache is kept");

        // The objects replaced by garbage of the same size.
        let hex = commit.to_string();
        let garble = |cache: &GitCache| -> Result<(), Box<dyn std::error::Error>> {
            let loose = cache.path().join("objects").join(&hex[..2]).join(&hex[2..]);
            let packs = std::fs::read_dir(cache.path().join("objects/pack"))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "pack"));
            for file in packs.chain(loose.exists().then_some(loose)) {
                let len = std::fs::metadata(&file)?.len();
                std::fs::write(&file, vec![0x5a; usize::try_from(len)?])?;
            }
            Ok(())
        };

        // Found when the cache is opened (an agent restarted).
        garble(&cache)?;
        drop(cache);
        let mut cache = GitCache::open(&config)?;
        let report = cache.sync(None, &[])?;
        assert!(report.fetched, "opened anew and fetched: {report:?}");
        assert_eq!(report.branch_commit, hex);
        assert!(cache.tree_at(&hex).is_ok());
        assert!(!cache.repair_if_damaged()?);

        // Found after a failed read, with nothing moved on the remote: the same objects are
        // fetched again (into a pack of the same name) and read from the new files.
        garble(&cache)?;
        assert!(cache.repair_if_damaged()?);
        let report = cache.sync(None, &[])?;
        assert!(report.fetched, "{report:?}");
        assert!(cache.tree_at(&hex).is_ok());
        Ok(())
    }

    #[test]
    fn url_shapes() {
        assert!(is_scp_like("git@github.com:org/fleet.git"));
        assert!(!is_scp_like("/srv/git/fleet"));
        assert!(!is_scp_like("https://host/x"));
        assert_eq!(ssh_port("ssh://git@127.0.0.1:2222/srv/fleet"), Some(2222));
        assert_eq!(ssh_port("ssh://git@host/srv/fleet"), None);
        assert_eq!(
            url_userinfo("https://u:p@h/x"),
            Some(("u".into(), "p".into()))
        );
    }
}
