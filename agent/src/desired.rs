//! From a remote to one cluster's desired state: sync the cache, select the manifest on
//! the default branch, read it at its wave tag. Used by `tidemark desired` and by every
//! pass of the agent.

use tidemark_schema::fleet::WAVE_PLACEHOLDER;
use tidemark_schema::{DesiredState, LabelSelector, Tree};

use crate::select::{self, AtRevision, Selection};
use crate::source::{self, GitCache, SyncReport};

/// The desired state of one cluster, or why there is none yet.
#[derive(Debug)]
pub struct Resolved {
    /// What the sync did.
    pub sync: SyncReport,
    /// The manifest chosen on the default branch.
    pub selection: Selection,
    /// What applies now.
    pub outcome: Outcome,
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
}

/// Syncs `cache` and resolves the desired state of the cluster matching `selector`.
pub fn resolve(
    cache: &GitCache,
    branch: Option<&str>,
    selector: &LabelSelector,
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
    let tree: &dyn Tree = match &selection.tag {
        None => {
            revision = sync.branch_commit.clone();
            &branch_tree
        }
        Some(tag) => match cache.tag_commit(tag)? {
            None => {
                let reason = format!(
                    "wave `{}`: tag {tag} does not exist yet",
                    selection.wave.as_deref().unwrap_or_default()
                );
                return Ok(Resolved {
                    sync,
                    selection,
                    outcome: Outcome::NothingYet { reason },
                });
            }
            Some(commit) => {
                tree_owner = cache.tree_at(&commit)?;
                revision = commit;
                &tree_owner
            }
        },
    };
    let outcome = match select::desired_at(tree, &selection)? {
        AtRevision::Desired(state) => Outcome::Desired { state, revision },
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
    })
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
