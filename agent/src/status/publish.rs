//! Publishing the status record to the fleet repo (`tidemark agent --report-ref`), so
//! `tidemark status --from-git` and `tidemark promote` need read access to git alone, no
//! cluster credentials.
//!
//! - The record goes to `refs/tidemark/status/<cluster>` as one small commit holding
//!   `status.json` (the annotations of [`Record::to_annotations`] as a JSON object), by
//!   the agent at the pass's time. Each commit stands alone (no parent): the ref holds the
//!   latest record, and old ones are left for git to collect instead of piling up.
//! - A commit is pushed when the phase or a revision changed, and as a heartbeat at least
//!   every [`HEARTBEAT`] ([`due`], pure), so a reader tells a dead agent from an idle one.
//! - The push uses the fetch's credentials and forces the ref (one writer per cluster:
//!   the replica holding the Lease). It needs push rights on `refs/tidemark/status/*`
//!   only. A failed push is logged and tried again on the next pass; it never fails the
//!   pass.

use std::collections::BTreeMap;
use std::sync::Mutex;

use jiff::Timestamp;

use super::{HEARTBEAT, Record, describe};
use crate::desired::Source;
use crate::keys::refs;
use crate::plan::Phase;
use crate::source::{Identity, Lease, RefUpdate};

/// What was last published, as far as deciding the next push goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// Its phase.
    pub phase: Option<Phase>,
    /// Its desired revision.
    pub desired_revision: Option<String>,
    /// Its applied revision.
    pub applied_revision: Option<String>,
    /// When it was pushed.
    pub at: Timestamp,
}

impl Published {
    fn of(record: &Record, at: Timestamp) -> Self {
        Self {
            phase: record.phase,
            desired_revision: record.desired_revision.clone(),
            applied_revision: record.applied_revision.clone(),
            at,
        }
    }
}

/// Whether `next` is to be published at `now`, after `last`: nothing published yet, a
/// change of phase or of a revision, or a heartbeat due. Pure.
pub fn due(last: Option<&Published>, next: &Record, now: Timestamp) -> bool {
    let Some(last) = last else {
        return true;
    };
    let changed = last.phase != next.phase
        || last.desired_revision != next.desired_revision
        || last.applied_revision != next.applied_revision;
    changed || now.duration_since(last.at).unsigned_abs() >= HEARTBEAT
}

/// The content of `status.json` for `record`.
pub fn to_file(record: &Record) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(&record.to_annotations()).unwrap_or_default();
    text.push('\n');
    text.into_bytes()
}

/// The record in a `status.json`; `None` when it is not a JSON object of strings.
pub fn from_file(content: &[u8]) -> Option<Record> {
    let annotations: BTreeMap<String, String> = serde_json::from_slice(content).ok()?;
    Some(Record::from_annotations(&annotations))
}

/// Publishes the agent's record to the fleet repo, through the agent's git cache.
pub struct Reporter {
    source: Source,
    last: Mutex<Option<Published>>,
}

impl Reporter {
    /// A reporter pushing through `source`'s cache and remote.
    pub fn new(source: Source) -> Self {
        Self {
            source,
            last: Mutex::new(None),
        }
    }
}

/// Publishes `next` if it is [`due`] (a no-op without a reporter). Never fails the pass:
/// a failed push is logged and tried again next pass.
pub async fn publish(reporter: Option<&Reporter>, next: &Record, now: Timestamp) {
    let Some(reporter) = reporter else {
        return;
    };
    let Some(cluster) = next.cluster.clone() else {
        return; // no manifest selected yet: nothing to name the ref after
    };
    let last = reporter.last.lock().ok().and_then(|l| l.clone());
    if !due(last.as_ref(), next, now) {
        return;
    }
    let content = to_file(next);
    let message = format!(
        "status of {cluster}: {} at {}",
        next.phase.map(Phase::as_str).unwrap_or("unknown"),
        next.desired_revision
            .as_deref()
            .map(crate::desired::short)
            .unwrap_or("no revision")
    );
    let refname = format!("{}{cluster}", refs::STATUS_PREFIX);
    let pushed = reporter
        .source
        .with_cache(move |cache| {
            let who = Identity {
                name: format!("tidemark agent {cluster}"),
                email: format!("{cluster}@agents.tidemark.invalid"),
            };
            let commit =
                cache.write_file_commit(refs::STATUS_FILE, &content, &message, &who, now, None)?;
            let update = RefUpdate {
                remote: refname,
                target: commit,
                lease: Lease::Any,
            };
            cache.push(&[update])
        })
        .await;
    match pushed {
        Ok(Ok(Ok(()))) => {
            tracing::debug!("published the status record to the fleet repo");
            if let Ok(mut l) = reporter.last.lock() {
                *l = Some(Published::of(next, now));
            }
        }
        Ok(Ok(Err(refused))) => {
            tracing::warn!(error = %refused, "failed to publish the status record to the fleet repo");
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %describe(&e), "failed to publish the status record to the fleet repo");
        }
        Err(e) => {
            tracing::warn!(error = %describe(&e), "failed to publish the status record to the fleet repo");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn published_on_a_change_of_phase_or_revision_and_as_a_heartbeat() {
        let record = Record {
            cluster: Some("a".into()),
            phase: Some(Phase::Progressing),
            desired_revision: Some("abc".into()),
            message: Some("upgrading".into()),
            ..Record::default()
        };
        let t0 = at("2026-11-24T10:00:00Z");
        assert!(due(None, &record, t0), "the first record is published");
        let last = Published::of(&record, t0);
        let mut next = record.clone();
        next.message = Some("still upgrading".into());
        assert!(
            !due(Some(&last), &next, at("2026-11-24T10:09:00Z")),
            "a new message alone waits for the heartbeat"
        );
        assert!(due(Some(&last), &next, at("2026-11-24T10:10:00Z")));
        next.phase = Some(Phase::Converged);
        assert!(due(Some(&last), &next, at("2026-11-24T10:00:01Z")));
        let mut moved = record.clone();
        moved.applied_revision = Some("abc".into());
        assert!(due(Some(&last), &moved, at("2026-11-24T10:00:01Z")));
    }

    #[test]
    fn the_file_reads_back_as_the_record() {
        let record = Record {
            cluster: Some("a".into()),
            phase: Some(Phase::Converged),
            applied_revision: Some("abc".into()),
            last_pass: Some(at("2026-11-24T10:00:00Z")),
            converged_since: Some(at("2026-11-24T09:00:00Z")),
            ..Record::default()
        };
        assert_eq!(from_file(&to_file(&record)), Some(record));
        assert_eq!(from_file(b"[1, 2]"), None);
    }
}
