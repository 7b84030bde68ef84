//! From a remote to one cluster's desired state: sync the cache, select the manifest on
//! the default branch, read it at its wave tag, and read its components' inputs at the
//! same commit. Used by `tidemark desired`, `tidemark plan` and every pass of the agent.
//!
//! With an allowed-signers policy, the wave tag is followed only when its SSH signature is
//! accepted ([`crate::trust`]); the commit read is the one the signed tag object names. A
//! cluster without a wave follows the branch, and the policy does not apply to it.
//!
//! [`resolve`] is blocking (libgit2); [`Source`] runs it on the blocking pool so a slow
//! fetch never holds the async executor (and the Lease renewal that shares it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use tidemark_schema::fleet::WAVE_PLACEHOLDER;
use tidemark_schema::{DesiredState, LabelSelector, Tree};

use crate::component::inputs::{self, ComponentInputs, InputsError};
use crate::select::{self, AtRevision, Selection};
use crate::source::{self, GitCache, SyncReport, TagTarget};
use crate::trust::{self, AllowedSigners, VerifiedTag};

/// The desired state of one cluster, or why there is none yet.
#[derive(Debug)]
pub struct Resolved {
    /// What the sync did.
    pub sync: SyncReport,
    /// The manifest chosen on the default branch.
    pub selection: Selection,
    /// What applies now.
    pub outcome: Outcome,
    /// Who signed the wave tag, when a policy asked for a signature and it was accepted.
    pub signer: Option<trust::Signer>,
}

/// What applies to the cluster now.
#[derive(Debug)]
pub enum Outcome {
    /// Converge toward `state`, declared at commit `revision`.
    Desired {
        /// The resolved state.
        state: Box<DesiredState>,
        /// The commit it comes from (the tag's, or the branch's).
        revision: String,
    },
    /// Nothing to do yet.
    NothingYet {
        /// Why, e.g. "tag wave/main does not exist yet".
        reason: String,
    },
}

/// Errors of resolving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Git failed.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// The repo or the selection is wrong.
    #[error(transparent)]
    Select(#[from] select::Error),
    /// A chart could not be written out for helm.
    #[error(transparent)]
    Chart(#[from] InputsError),
    /// The git work was cancelled or panicked on the blocking pool.
    #[error("the git worker stopped before it finished")]
    Worker(#[source] tokio::task::JoinError),
    /// Another thread panicked while it held the git cache.
    #[error("the git cache is unusable: a previous git operation panicked")]
    Poisoned,
    /// The wave tag's signature is missing or not accepted; nothing of its commit applies.
    #[error("refusing to follow wave tag {tag}")]
    Untrusted {
        /// The tag, e.g. `wave/canary`.
        tag: String,
        /// Why (boxed: a refusal carries key details and is larger than the other errors).
        #[source]
        refusal: Box<trust::Refusal>,
    },
}

impl Error {
    /// Whether the error cannot come from a damaged cache: the remote failed (unreachable,
    /// refused, no such branch), or the wave tag's signature was refused. Any other error
    /// (a read, a fetch, a manifest or chart that does not parse) may.
    fn not_from_the_cache(&self) -> bool {
        matches!(
            self,
            Error::Source(
                source::Error::List { .. }
                    | source::Error::NoBranch { .. }
                    | source::Error::NoHead { .. }
                    | source::Error::Credentials(_)
            ) | Error::Untrusted { .. }
        )
    }
}

/// Syncs `cache` and resolves the desired state of the cluster matching `selector`. With
/// `signers`, a wave tag must carry a signature they accept at `now`.
pub fn resolve(
    cache: &GitCache,
    branch: Option<&str>,
    selector: &LabelSelector,
    signers: Option<&AllowedSigners>,
    now: Timestamp,
) -> Result<Resolved, Error> {
    // The tag pattern lives in fleet.yaml on the branch: use the cached one to sync the
    // tags in the same round trip, and sync again only if the pattern changed.
    let cached_globs = cached_tag_glob(cache, branch)
        .into_iter()
        .collect::<Vec<_>>();
    let mut sync = cache.sync(branch, &cached_globs)?;
    let branch_tree = cache.tree_at(&sync.branch_commit)?;
    let fleet = select::fleet(&branch_tree)?;
    let glob = tag_glob(&fleet.spec.tag_pattern);
    if !cached_globs.contains(&glob) {
        let again = cache.sync(Some(&sync.branch), std::slice::from_ref(&glob))?;
        sync.fetched |= again.fetched;
        sync.stats.received_objects += again.stats.received_objects;
        sync.stats.received_bytes += again.stats.received_bytes;
        sync.pruned.extend(again.pruned);
        sync.branch_commit = again.branch_commit;
    }
    let branch_tree = cache.tree_at(&sync.branch_commit)?;
    let selection = select::select(&branch_tree, &fleet, selector)?;

    let (revision, tree_owner);
    let mut signer = None;
    let tree: &dyn Tree = match &selection.tag {
        None => {
            revision = sync.branch_commit.clone();
            &branch_tree
        }
        Some(tag) => match tag_commit(cache, tag, signers, now)? {
            None => {
                let reason = format!(
                    "wave `{}`: tag {tag} does not exist yet",
                    selection.wave.as_deref().unwrap_or_default()
                );
                return Ok(Resolved {
                    sync,
                    selection,
                    outcome: Outcome::NothingYet { reason },
                    signer: None,
                });
            }
            Some((commit, signed_by)) => {
                signer = signed_by;
                tree_owner = cache.tree_at(&commit)?;
                revision = commit;
                &tree_owner
            }
        },
    };
    let outcome = match select::desired_at(tree, &selection)? {
        AtRevision::Desired(mut state) => {
            // The stop-all switch is read where people flip it: the default branch.
            state.fleet_paused = fleet.spec.paused;
            Outcome::Desired { state, revision }
        }
        AtRevision::NotInRevision => Outcome::NothingYet {
            reason: format!(
                "tag {} (commit {}) does not contain cluster `{}` yet",
                selection.tag.as_deref().unwrap_or("(branch)"),
                short(&revision),
                selection.name
            ),
        },
    };
    Ok(Resolved {
        sync,
        selection,
        outcome,
        signer,
    })
}

/// The commit of wave tag `tag` and, with `signers`, who signed it; `None` when the cache
/// has no such tag.
fn tag_commit(
    cache: &GitCache,
    tag: &str,
    signers: Option<&AllowedSigners>,
    now: Timestamp,
) -> Result<Option<(String, Option<trust::Signer>)>, Error> {
    let Some(signers) = signers else {
        return Ok(cache.tag_commit(tag)?.map(|c| (c, None)));
    };
    Ok(verify_wave_tag(cache, tag, signers, now)?.map(|v| (v.commit, Some(v.signer))))
}

/// Checks the signature of tag `tag` in `cache` against `signers` at `now`; `None` when
/// the cache has no such tag. A refusal is [`Error::Untrusted`].
pub fn verify_wave_tag(
    cache: &GitCache,
    tag: &str,
    signers: &AllowedSigners,
    now: Timestamp,
) -> Result<Option<VerifiedTag>, Error> {
    let untrusted = |refusal| Error::Untrusted {
        tag: tag.to_string(),
        refusal: Box::new(refusal),
    };
    match cache.tag_target(tag)? {
        None => Ok(None),
        Some(TagTarget::Lightweight { kind, .. }) => {
            Err(untrusted(trust::Refusal::Lightweight { target: kind }))
        }
        Some(TagTarget::Annotated { id, object }) => {
            let verified = signers.verify_tag(tag, &object, now).map_err(untrusted)?;
            tracing::debug!(
                %tag,
                object = %id,
                commit = %verified.commit,
                signer = %verified.signer,
                "wave tag signature accepted"
            );
            Ok(Some(verified))
        }
    }
}

/// The ref glob of all wave tags of a pattern (`wave/{wave}` -> `wave/*`).
pub fn tag_glob(pattern: &str) -> String {
    pattern.replace(WAVE_PLACEHOLDER, "*")
}

fn cached_tag_glob(cache: &GitCache, branch: Option<&str>) -> Option<String> {
    let branch = branch.map(str::to_string).or_else(|| cache.last_branch())?;
    let refname = format!("refs/heads/{branch}");
    let commit = cache.commit_of(&refname).ok()??;
    let tree = cache.tree_at(&commit).ok()?;
    select::fleet(&tree)
        .ok()
        .map(|f| tag_glob(&f.spec.tag_pattern))
}

/// The first 12 characters of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// The desired state of one cluster with everything a pass needs from git.
#[derive(Clone, Debug)]
pub struct Desired {
    /// The manifest chosen on the default branch.
    pub selection: Selection,
    /// The branch followed.
    pub branch: String,
    /// The resolved state.
    pub state: DesiredState,
    /// The commit it comes from.
    pub revision: String,
    /// Each declared component's inputs at `revision`, or why they cannot be read.
    pub inputs: InputsByName,
    /// `Some(false)` when `revision` does not descend from the last applied commit (a wave
    /// tag moved back): a new desired state like any other, versions never go down.
    pub descends_from_applied: Option<bool>,
}

/// What applies to the cluster now, as a pass sees it.
#[derive(Clone, Debug)]
pub enum Resolution {
    /// Converge toward this.
    Desired(Box<Desired>),
    /// Nothing to do yet (the wave's tag does not exist or does not hold the cluster).
    NothingYet {
        /// The manifest chosen on the default branch.
        selection: Selection,
        /// Why.
        reason: String,
    },
}

/// Component inputs by name; an error is shared (the same inputs fail every pass).
pub type InputsByName = BTreeMap<String, Result<ComponentInputs, Arc<InputsError>>>;

/// The fleet repo as one cluster's agent reads it: the git cache, the branch and the
/// identity selector. Cheap to clone; every git operation runs on the blocking pool, one
/// at a time per cache.
#[derive(Clone)]
pub struct Source {
    inner: Arc<SourceInner>,
}

struct SourceInner {
    cache: Mutex<GitCache>,
    branch: Option<String>,
    selector: LabelSelector,
    signers: Option<AllowedSigners>,
    /// The inputs of the last resolved revision and cluster: an idle pass reads no chart.
    inputs: Mutex<Option<(String, InputsByName)>>,
}

impl Source {
    /// The source of the cluster matching `selector` in `cache`, following `branch`; with
    /// `signers`, its wave tag must be signed by one of them.
    pub fn new(
        cache: GitCache,
        branch: Option<String>,
        selector: LabelSelector,
        signers: Option<AllowedSigners>,
    ) -> Self {
        Self {
            inner: Arc::new(SourceInner {
                cache: Mutex::new(cache),
                branch,
                selector,
                signers,
                inputs: Mutex::new(None),
            }),
        }
    }

    /// Syncs and resolves the desired state and its components' inputs at `now` (signature
    /// validity is judged then). `applied` is the last commit fully converged, to tell a tag
    /// that moved back.
    pub async fn resolve(
        &self,
        applied: Option<String>,
        now: Timestamp,
    ) -> Result<Resolution, Error> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.resolve(applied.as_deref(), now))
            .await
            .map_err(Error::Worker)?
    }

    /// Runs `work` with the git cache on the blocking pool (one git operation at a time
    /// per cache), e.g. publishing the status record to the fleet repo.
    pub async fn with_cache<T: Send + 'static>(
        &self,
        work: impl FnOnce(&GitCache) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let cache = inner.cache.lock().map_err(|_| Error::Poisoned)?;
            Ok(work(&cache))
        })
        .await
        .map_err(Error::Worker)?
    }

    /// Writes the chart directory `path` of commit `revision` into `dest` (for helm).
    pub async fn write_chart(&self, revision: &str, path: &str, dest: &Path) -> Result<(), Error> {
        let inner = self.inner.clone();
        let (revision, path, dest): (String, String, PathBuf) =
            (revision.into(), path.into(), dest.into());
        tokio::task::spawn_blocking(move || {
            let cache = inner.cache.lock().map_err(|_| Error::Poisoned)?;
            let tree = cache.tree_at(&revision)?;
            inputs::materialise(&tree, &path, &dest)?;
            Ok(())
        })
        .await
        .map_err(Error::Worker)?
    }
}

impl SourceInner {
    /// Resolves; when that fails for a reason other than the remote, and the cache turns
    /// out damaged (corrupt objects, a ref or HEAD unreadable), the cache is recreated and
    /// the pass resolves once more from a fresh fetch.
    fn resolve(&self, applied: Option<&str>, now: Timestamp) -> Result<Resolution, Error> {
        let mut cache = self.cache.lock().map_err(|_| Error::Poisoned)?;
        match self.resolve_with(&cache, applied, now) {
            Err(e) if !e.not_from_the_cache() && cache.repair_if_damaged()? => {
                tracing::debug!(error = %e, "resolving again with a recreated git cache");
                self.resolve_with(&cache, applied, now)
            }
            outcome => outcome,
        }
    }

    fn resolve_with(
        &self,
        cache: &GitCache,
        applied: Option<&str>,
        now: Timestamp,
    ) -> Result<Resolution, Error> {
        let resolved = resolve(
            cache,
            self.branch.as_deref(),
            &self.selector,
            self.signers.as_ref(),
            now,
        )?;
        let (state, revision) = match resolved.outcome {
            Outcome::NothingYet { reason } => {
                return Ok(Resolution::NothingYet {
                    selection: resolved.selection,
                    reason,
                });
            }
            Outcome::Desired { state, revision } => (*state, revision),
        };
        let inputs = self.inputs(cache, &revision, &state)?;
        let descends_from_applied = applied
            .filter(|a| *a != revision)
            .and_then(|a| cache.descends_from(&revision, a).ok());
        Ok(Resolution::Desired(Box::new(Desired {
            selection: resolved.selection,
            branch: resolved.sync.branch,
            state,
            revision,
            inputs,
            descends_from_applied,
        })))
    }

    /// The inputs of every component of `state` at `revision`, read once per revision and
    /// cluster.
    fn inputs(
        &self,
        cache: &GitCache,
        revision: &str,
        state: &DesiredState,
    ) -> Result<InputsByName, Error> {
        let key = format!("{revision}/{}", state.cluster);
        if let Ok(guard) = self.inputs.lock()
            && let Some((k, v)) = guard.as_ref()
            && *k == key
        {
            return Ok(v.clone());
        }
        let tree = cache.tree_at(revision)?;
        let map: InputsByName = state
            .components
            .iter()
            .map(|c| {
                let read = inputs::gather(&tree, c).map_err(Arc::new);
                (c.name.clone(), read)
            })
            .collect();
        if let Ok(mut guard) = self.inputs.lock() {
            *guard = Some((key, map.clone()));
        }
        Ok(map)
    }
}
