//! Status: what the agent has seen and done, written as annotations on one object (the
//! Namespace it runs in) after every pass, and a Kubernetes Event on each phase change.
//! [`compose`] is pure; [`write`] patches only when something changed.

mod write;

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;
use tidemark_schema::KubeVersion;

use crate::keys::annotations as keys;
use crate::observe::model::ComponentRecord;
use crate::plan::Phase;

pub use write::{read, write};

/// What one pass found, as far as status is concerned.
#[derive(Clone, Debug, Default)]
pub struct PassOutcome {
    /// The cluster's manifest name, when one was selected.
    pub cluster: Option<String>,
    /// Its wave.
    pub wave: Option<String>,
    /// Commit of the desired state, when there is one.
    pub desired_revision: Option<String>,
    /// Phase the pass ended in.
    pub phase: Option<Phase>,
    /// What happens or what blocks.
    pub message: String,
    /// Control plane versions, when observed.
    pub control_plane: Option<VersionsNote>,
    /// Node group versions, when observed.
    pub node_groups: BTreeMap<String, VersionsNote>,
    /// Components, when the pass got as far as them (else the recorded ones stay).
    pub components: Option<BTreeMap<String, ComponentRecord>>,
    /// When a drift check of every applied component completed in this pass.
    pub drift_checked: Option<String>,
}

/// Observed, declared and requested versions of one thing, as compact JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VersionsNote {
    /// What runs (`1.29.8`, or `1.28.9..1.29.8` while a group is mixed).
    pub observed: String,
    /// What git declares.
    pub desired: String,
    /// What the provider was asked for and has not reached yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// When that request was made (`exec` provider: not repeated while in flight).
    #[serde(rename = "requestedAt", skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<String>,
}

impl VersionsNote {
    /// A note of `observed` (a range when the two differ) against `desired`.
    pub fn new(min: Option<KubeVersion>, max: Option<KubeVersion>, desired: KubeVersion) -> Self {
        let observed = match (min, max) {
            (Some(a), Some(b)) if a != b => format!("{a}..{b}"),
            (Some(a), _) => a.to_string(),
            _ => "none".into(),
        };
        Self {
            observed,
            desired: desired.to_string(),
            requested: None,
            requested_at: None,
        }
    }
}

/// Longest message of one component in `tidemark.dev/components`.
pub const COMPONENT_MESSAGE_LIMIT: usize = 1024;

/// Cuts `text` to at most `limit` bytes at a character boundary, marking the cut.
fn truncate(text: &mut String, limit: usize) {
    if text.len() <= limit {
        return;
    }
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(" [...]");
}

/// How often `last-pass` is refreshed when nothing else changed: an idle agent does not
/// write on every pass, but its status shows it is alive.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(600);

/// The annotations to hold after this pass, given the ones held now. Pure.
///
/// - `applied-revision` moves to the desired revision only when the pass converged;
/// - `last-pass` is refreshed when anything else changed, or after [`HEARTBEAT`].
pub fn compose(
    outcome: &PassOutcome,
    current: &BTreeMap<String, String>,
    now: Timestamp,
) -> BTreeMap<String, String> {
    let mut next = BTreeMap::new();
    let mut set = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            next.insert(k.to_string(), v);
        }
    };
    set(keys::CLUSTER, outcome.cluster.clone());
    set(keys::WAVE, outcome.wave.clone());
    set(keys::DESIRED_REVISION, outcome.desired_revision.clone());
    let applied = match (outcome.phase, &outcome.desired_revision) {
        (Some(Phase::Converged), Some(rev)) => Some(rev.clone()),
        _ => current.get(keys::APPLIED_REVISION).cloned(),
    };
    set(keys::APPLIED_REVISION, applied);
    set(keys::PHASE, outcome.phase.map(|p| p.to_string()));
    set(keys::MESSAGE, Some(outcome.message.clone()));
    set(
        keys::CONTROL_PLANE,
        outcome
            .control_plane
            .as_ref()
            .and_then(|n| serde_json::to_string(n).ok()),
    );
    if !outcome.node_groups.is_empty() {
        set(
            keys::NODE_GROUPS,
            serde_json::to_string(&outcome.node_groups).ok(),
        );
    }
    set(
        keys::COMPONENTS,
        outcome.components.as_ref().and_then(|c| {
            // Annotations share 256 KiB per object: a long helm error is cut, not lost
            // from the log.
            let mut c = c.clone();
            for r in c.values_mut() {
                if let Some(m) = r.message.as_mut() {
                    truncate(m, COMPONENT_MESSAGE_LIMIT);
                }
            }
            serde_json::to_string(&c).ok()
        }),
    );
    set(keys::DRIFT_CHECKED, outcome.drift_checked.clone());
    // Keep what this pass does not speak about.
    for key in [keys::COMPONENTS, keys::DRIFT_CHECKED] {
        if let Some(v) = current.get(key) {
            next.entry(key.to_string()).or_insert_with(|| v.clone());
        }
    }
    let changed = next.iter().any(|(k, v)| current.get(k) != Some(v));
    let stale = current
        .get(keys::LAST_PASS)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_none_or(|t| now.duration_since(t).unsigned_abs() >= HEARTBEAT);
    let last = if changed || stale {
        Some(now.to_string())
    } else {
        current.get(keys::LAST_PASS).cloned()
    };
    next.insert(
        keys::LAST_PASS.to_string(),
        last.unwrap_or_else(|| now.to_string()),
    );
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn outcome(phase: Phase) -> PassOutcome {
        PassOutcome {
            cluster: Some("a".into()),
            wave: Some("canary".into()),
            desired_revision: Some("abc".into()),
            phase: Some(phase),
            message: "m".into(),
            control_plane: Some(VersionsNote::new(
                Some(KubeVersion::new(1, 29, 8)),
                None,
                KubeVersion::new(1, 30, 4),
            )),
            node_groups: BTreeMap::new(),
            components: None,
            drift_checked: None,
        }
    }

    #[test]
    fn applied_revision_moves_only_when_converged() {
        let t = at("2026-11-24T10:00:00Z");
        let s = compose(&outcome(Phase::Progressing), &BTreeMap::new(), t);
        assert_eq!(s.get(keys::APPLIED_REVISION), None);
        assert_eq!(s.get(keys::PHASE).map(String::as_str), Some("Progressing"));
        assert_eq!(
            s.get(keys::CONTROL_PLANE).map(String::as_str),
            Some(r#"{"observed":"1.29.8","desired":"1.30.4"}"#)
        );
        let s = compose(&outcome(Phase::Converged), &s, t);
        assert_eq!(
            s.get(keys::APPLIED_REVISION).map(String::as_str),
            Some("abc")
        );
        let mut later = outcome(Phase::Progressing);
        later.desired_revision = Some("def".into());
        let s = compose(&later, &s, t);
        assert_eq!(
            s.get(keys::APPLIED_REVISION).map(String::as_str),
            Some("abc")
        );
    }

    #[test]
    fn idle_passes_change_nothing_until_the_heartbeat() {
        let t0 = at("2026-11-24T10:00:00Z");
        let first = compose(&outcome(Phase::Converged), &BTreeMap::new(), t0);
        let same = compose(
            &outcome(Phase::Converged),
            &first,
            at("2026-11-24T10:05:00Z"),
        );
        assert_eq!(same, first, "an idle pass writes nothing");
        let beat = compose(
            &outcome(Phase::Converged),
            &first,
            at("2026-11-24T10:10:00Z"),
        );
        assert_eq!(
            beat.get(keys::LAST_PASS).map(String::as_str),
            Some("2026-11-24T10:10:00Z")
        );
    }

    #[test]
    fn components_are_written_when_the_pass_got_to_them_and_kept_otherwise() {
        let t = at("2026-11-24T10:00:00Z");
        let mut o = outcome(Phase::Converged);
        let record = ComponentRecord {
            chart: "dns 1.0.0".into(),
            inputs: Some("sha256:a".into()),
            objects: 3,
            ..ComponentRecord::default()
        };
        o.components = Some([("dns".to_string(), record)].into());
        o.drift_checked = Some("2026-11-24T10:00:00Z".into());
        let s = compose(&o, &BTreeMap::new(), t);
        assert_eq!(
            s.get(keys::COMPONENTS).map(String::as_str),
            Some(
                r#"{"dns":{"chart":"dns 1.0.0","health":"Pending","inputs":"sha256:a","objects":3}}"#
            )
        );
        assert_eq!(
            s.get(keys::DRIFT_CHECKED).map(String::as_str),
            Some("2026-11-24T10:00:00Z")
        );
        // Long messages are cut.
        let mut long = o.clone();
        if let Some(c) = long.components.as_mut() {
            for r in c.values_mut() {
                r.message = Some("é".repeat(COMPONENT_MESSAGE_LIMIT));
            }
        }
        let cut = compose(&long, &BTreeMap::new(), t);
        let parsed: BTreeMap<String, ComponentRecord> = cut
            .get(keys::COMPONENTS)
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        let message = parsed
            .get("dns")
            .and_then(|r| r.message.clone())
            .unwrap_or_default();
        assert!(message.ends_with(" [...]") && message.len() <= COMPONENT_MESSAGE_LIMIT + 6);
        // A pass that failed before the components keeps what was recorded.
        let mut failed = outcome(Phase::Failed);
        failed.message = "git unreachable".into();
        let next = compose(&failed, &s, t);
        assert_eq!(next.get(keys::COMPONENTS), s.get(keys::COMPONENTS));
        assert_eq!(next.get(keys::DRIFT_CHECKED), s.get(keys::DRIFT_CHECKED));
    }
}
