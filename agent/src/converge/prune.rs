//! Prune: delete the objects of a component that its render no longer holds, or all of a
//! component that is no longer declared.
//!
//! Only objects tidemark applied are candidates (labelled for the component, applied by
//! the `tidemark` field manager, owned by no controller), and never one another component
//! adopted in the same pass or one already being deleted.

use std::collections::BTreeSet;

use super::Scratch;
use super::live::{self, ApiError, LiveObject};
use crate::component::manifest::{ObjectKey, RenderedObject};

/// Errors of pruning.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The objects tidemark applied could not be listed.
    #[error("failed to list the objects tidemark applied")]
    Sweep(#[source] ApiError),
    /// An object could not be deleted.
    #[error("failed to prune")]
    Delete(#[source] ApiError),
}

/// The live objects of component `name` that a prune would delete: those `keep` does not
/// hold (all of them when `keep` is `None`).
pub async fn prunable(
    client: &kube::Client,
    scratch: &mut Scratch,
    name: &str,
    keep: Option<&[RenderedObject]>,
) -> Result<Vec<LiveObject>, PruneError> {
    let keep: BTreeSet<ObjectKey> = keep
        .unwrap_or_default()
        .iter()
        .map(RenderedObject::key)
        .collect();
    let adopted = scratch.applied.clone();
    let swept = scratch.swept(client).await.map_err(PruneError::Sweep)?;
    Ok(swept
        .iter()
        .filter(|o| o.component == name && o.applied_by_tidemark())
        .filter(|o| !keep.contains(&o.key))
        // Already being deleted: another DELETE would only be one more write.
        .filter(|o| !o.is_terminating())
        // Adopted in this pass by another component.
        .filter(|o| adopted.get(&o.key).is_none_or(|owner| owner == name))
        .cloned()
        .collect())
}

/// Deletes the objects of component `name` that `keep` does not hold. Returns how many.
pub async fn prune(
    client: &kube::Client,
    scratch: &mut Scratch,
    name: &str,
    keep: Option<&[RenderedObject]>,
) -> Result<usize, PruneError> {
    let doomed = prunable(client, scratch, name, keep).await?;
    for o in &doomed {
        live::delete(client, o).await.map_err(PruneError::Delete)?;
        tracing::info!(component = name, object = %o.key, "pruned");
    }
    Ok(doomed.len())
}
