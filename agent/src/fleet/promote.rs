//! Carrying out a promotion that was decided: write the annotated tag (its message is the
//! decision's evidence; signed with an SSH key if one is given), push it with a lease on
//! where the tag pointed when the check ran, then append the promotion to the log on
//! `refs/tidemark/promotions`. Blocking (libgit2).
//!
//! Two promotions of the same wave racing: each checked the tag at the same value; the
//! first push moves it, the second finds it moved (the listing right before its push, the
//! push negotiation, or receive-pack's own old-value check) and is refused. The log is
//! appended after the tag moved, retrying on a concurrent append (another wave's
//! promotion), so it never records a move that did not happen.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::promotion::{Decision, Verdict};
use super::{Error, Result};
use crate::keys::refs;
use crate::source::{GitCache, Identity, Lease, RefUpdate, TagRequest};
use crate::trust::SigningKey;

/// Appends to the log are retried this often when another promotion appends at the same
/// time.
const LOG_ATTEMPTS: usize = 5;

/// One entry of the promotion log: the JSON file of each commit on
/// `refs/tidemark/promotions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// Who promoted.
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// The tag object written.
    pub tag_object: String,
    /// The key that signed it (`SHA256:...`), if signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// What was decided, with every cluster's evidence and any freeze override.
    pub decision: Decision,
}

/// A promotion carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promoted {
    /// The tag object the wave's tag now names.
    pub tag_object: String,
    /// The log's commit recording it.
    pub log_commit: String,
}

/// Moves the tag as `decision` (a [`Verdict::Promote`]) says, the tag ref having been
/// `seen` at the check; by `by` at `now`, signed with `key` if given. `branch` is the
/// branch followed (default: the remote's HEAD).
pub fn execute(
    cache: &GitCache,
    branch: Option<&str>,
    decision: &Decision,
    seen: Option<&str>,
    by: &Identity,
    key: Option<&SigningKey>,
    now: Timestamp,
) -> Result<Promoted> {
    if decision.verdict != Verdict::Promote {
        return Err(Error::NotDecided);
    }
    let mut message = format!(
        "promote wave {} to {}\n\n",
        decision.wave,
        crate::desired::short(&decision.to)
    );
    message.push_str(&decision.describe());
    message.push_str(&format!("promoted-by: {by}\n"));
    let request = TagRequest {
        tag: &decision.tag,
        commit: &decision.to,
        tagger: by,
        at: now,
        message: &message,
    };
    let payload = request.payload();
    let object = match key {
        Some(key) => key.sign_tag(&payload)?,
        None => payload,
    };
    let tag_object = cache.write_tag_object(&object)?;
    let update = RefUpdate {
        remote: format!("refs/tags/{}", decision.tag),
        target: tag_object.clone(),
        lease: Lease::seen(seen),
    };
    cache.push(&[update])?.map_err(Error::Raced)?;
    let entry = LogEntry {
        by: by.to_string(),
        at: now,
        tag_object: tag_object.clone(),
        signed_by: key.map(|k| k.fingerprint().to_string()),
        decision: decision.clone(),
    };
    let log_commit = append_log(cache, branch, &entry, by, now)?;
    Ok(Promoted {
        tag_object,
        log_commit,
    })
}

/// Appends `entry` to the promotion log, on top of the log as the remote has it.
fn append_log(
    cache: &GitCache,
    branch: Option<&str>,
    entry: &LogEntry,
    by: &Identity,
    now: Timestamp,
) -> Result<String> {
    let content = serde_json::to_vec_pretty(entry).map_err(Error::Encode)?;
    let decision = &entry.decision;
    let mut summary = format!(
        "promote {}: {} -> {}",
        decision.wave,
        decision
            .from
            .as_deref()
            .map(crate::desired::short)
            .unwrap_or("(none)"),
        crate::desired::short(&decision.to)
    );
    if let Some(reason) = decision.freeze.as_ref().and_then(|f| f.overridden.as_ref()) {
        summary.push_str(&format!(" (freeze overridden: {reason})"));
    }
    let mut last = None;
    for _ in 0..LOG_ATTEMPTS {
        // The log as the remote has it now (the cache follows its ref).
        cache.sync(branch, &[])?;
        let parent = cache.ref_target(refs::PROMOTIONS);
        let commit = cache.write_file_commit(
            refs::PROMOTION_FILE,
            &content,
            &summary,
            by,
            now,
            parent.as_deref(),
        )?;
        let update = RefUpdate {
            remote: refs::PROMOTIONS.to_string(),
            target: commit.clone(),
            lease: Lease::seen(parent.as_deref()),
        };
        match cache.push(&[update])? {
            Ok(()) => return Ok(commit),
            Err(refused) => last = Some(refused),
        }
    }
    Err(Error::Log(last.map(|r| r.to_string()).unwrap_or_default()))
}

/// The promotion log, newest first, at most `limit` entries (sync the cache with
/// `refs/tidemark/promotions` followed first). An entry that does not parse is returned
/// as its commit message.
pub fn history(cache: &GitCache, limit: usize) -> Result<Vec<(String, Result<LogEntry, String>)>> {
    Ok(cache
        .history(refs::PROMOTIONS, refs::PROMOTION_FILE, limit)?
        .into_iter()
        .map(|e| {
            let parsed = serde_json::from_slice::<LogEntry>(&e.content)
                .map_err(|_| e.message.trim().to_string());
            (e.commit, parsed)
        })
        .collect())
}
