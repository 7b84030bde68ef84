//! Status: what the agent has seen and done, written as annotations on one object (the
//! Namespace it runs in) at the end of every pass, and a Kubernetes Event on each change of
//! phase or of a component's health.
//!
//! - [`Record`] is the typed record and the only reader and writer of the annotations.
//! - [`compose`] (pure) turns the previous record and what a pass found into the next one.
//! - [`events`] (pure) names the Events between two records.
//! - [`read`] and [`write`] talk to the API server: one read and at most one write per pass.
//! - [`publish`] also pushes the record to the fleet repo (`--report-ref`), on a change of
//!   phase or revision and as a heartbeat.

pub mod publish;
pub mod record;
mod write;

use jiff::Timestamp;

use crate::keys::reasons;
use crate::plan::Phase;

pub use publish::{Reporter, publish};
pub use record::{ComponentHealth, ComponentRecord, Record, Versions};
pub use write::{Error, Events, read, write};

/// How often `last-pass` is refreshed when nothing else changed: an idle agent does not
/// write on every pass, but its status shows it is alive.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(600);

/// What one pass found, as far as status is concerned.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The cluster's manifest name and wave, when one was selected.
    pub cluster: Option<(String, Option<String>)>,
    /// Commit of the desired state, when there is one.
    pub desired_revision: Option<String>,
    /// Phase the pass ended in.
    pub phase: Phase,
    /// What happens or what blocks.
    pub message: String,
    /// Control-plane and node-group versions, when observed.
    pub versions: Option<(Versions, std::collections::BTreeMap<String, Versions>)>,
    /// Components, when the pass got as far as them (else the recorded ones stay).
    pub components: Option<std::collections::BTreeMap<String, ComponentRecord>>,
    /// Whether a drift check of every applied component completed in this pass.
    pub drift_checked: bool,
}

/// The record to hold after a pass that found `summary`, given the one held before. Pure.
///
/// - What the pass did not get to (components, versions) stays as recorded;
/// - `applied-revision` moves to the desired revision only when the pass converged;
/// - `converged-since` is set when the phase becomes `Converged` (or converges at another
///   revision) and kept while it stays so;
/// - `last-pass` is refreshed when anything else changed, or after [`HEARTBEAT`].
pub fn compose(previous: &Record, summary: &Summary, now: Timestamp) -> Record {
    let mut next = previous.clone();
    if let Some((cluster, wave)) = &summary.cluster {
        next.cluster = Some(cluster.clone());
        next.wave = wave.clone();
    }
    if let Some(rev) = &summary.desired_revision {
        next.desired_revision = Some(rev.clone());
    }
    next.phase = Some(summary.phase);
    next.message = Some(summary.message.clone());
    if summary.phase == Phase::Converged
        && let Some(rev) = &summary.desired_revision
    {
        next.applied_revision = Some(rev.clone());
    }
    next.converged_since = match summary.phase {
        Phase::Converged
            if previous.phase == Some(Phase::Converged)
                && previous.applied_revision == next.applied_revision =>
        {
            previous.converged_since.or(Some(now))
        }
        Phase::Converged => Some(now),
        _ => None,
    };
    if let Some((control_plane, node_groups)) = &summary.versions {
        next.control_plane = Some(control_plane.clone());
        next.node_groups = node_groups.clone();
    }
    if let Some(components) = &summary.components {
        next.components = components.clone();
    }
    if summary.drift_checked {
        next.drift_checked = Some(now);
    }
    let changed = Record {
        last_pass: previous.last_pass,
        ..next.clone()
    } != *previous;
    let stale = previous
        .last_pass
        .is_none_or(|t| now.duration_since(t).unsigned_abs() >= HEARTBEAT);
    if changed || stale {
        next.last_pass = Some(now);
    }
    next
}

/// One Event to record on the status object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    /// A Warning (else Normal).
    pub warning: bool,
    /// Its reason (`Converged`, `ComponentFailed`, ...).
    pub reason: &'static str,
    /// What happened.
    pub note: String,
}

/// The Events between two records: a change of phase, and each component whose health
/// changed (to anything but `Pending`). Pure.
pub fn events(before: &Record, after: &Record) -> Vec<EventNote> {
    let mut out = Vec::new();
    if let Some(phase) = after.phase
        && before.phase != after.phase
    {
        out.push(EventNote {
            warning: matches!(phase, Phase::Blocked | Phase::Failed),
            reason: phase.as_str(),
            note: after.message.clone().unwrap_or_default(),
        });
    }
    for (name, record) in &after.components {
        let was = before.components.get(name).map(|r| r.health);
        if was == Some(record.health) || record.health == ComponentHealth::Pending {
            continue;
        }
        let reason = match record.health {
            ComponentHealth::Healthy => reasons::COMPONENT_HEALTHY,
            ComponentHealth::Progressing => reasons::COMPONENT_PROGRESSING,
            _ => reasons::COMPONENT_FAILED,
        };
        out.push(EventNote {
            warning: record.health == ComponentHealth::Failed,
            reason,
            note: format!("{} ({})", record.describe(name), record.chart),
        });
    }
    out
}

/// An error and its causes joined (`a: b: c`), as status messages and logs say them.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        // `#[error(transparent)]` wrappers repeat their source's text; say it once.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tidemark_schema::KubeVersion;

    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn summary(phase: Phase) -> Summary {
        Summary {
            cluster: Some(("a".into(), Some("canary".into()))),
            desired_revision: Some("abc".into()),
            phase,
            message: "m".into(),
            versions: Some((
                Versions::new(
                    Some(KubeVersion::new(1, 29, 8)),
                    None,
                    KubeVersion::new(1, 30, 4),
                ),
                BTreeMap::new(),
            )),
            components: None,
            drift_checked: false,
        }
    }

    #[test]
    fn applied_revision_and_converged_since_move_only_when_converged() {
        let t = at("2026-11-24T10:00:00Z");
        let r = compose(&Record::default(), &summary(Phase::Progressing), t);
        assert_eq!(r.applied_revision, None);
        assert_eq!(r.phase, Some(Phase::Progressing));
        assert_eq!(r.converged_since, None);
        let t2 = at("2026-11-24T10:05:00Z");
        let r = compose(&r, &summary(Phase::Converged), t2);
        assert_eq!(r.applied_revision.as_deref(), Some("abc"));
        assert_eq!(r.converged_since, Some(t2));
        // Staying converged keeps the time; converging at another revision restarts it.
        let r = compose(&r, &summary(Phase::Converged), at("2026-11-24T10:20:00Z"));
        assert_eq!(r.converged_since, Some(t2));
        let mut moved = summary(Phase::Converged);
        moved.desired_revision = Some("def".into());
        let t3 = at("2026-11-24T10:30:00Z");
        let r = compose(&r, &moved, t3);
        assert_eq!(r.converged_since, Some(t3));
        let mut later = summary(Phase::Progressing);
        later.desired_revision = Some("fed".into());
        let r = compose(&r, &later, t3);
        assert_eq!(r.applied_revision.as_deref(), Some("def"));
        assert_eq!(r.converged_since, None);
    }

    #[test]
    fn idle_passes_change_nothing_until_the_heartbeat() {
        let t0 = at("2026-11-24T10:00:00Z");
        let first = compose(&Record::default(), &summary(Phase::Converged), t0);
        let same = compose(
            &first,
            &summary(Phase::Converged),
            at("2026-11-24T10:05:00Z"),
        );
        assert_eq!(same, first, "an idle pass writes nothing");
        let beat = compose(
            &first,
            &summary(Phase::Converged),
            at("2026-11-24T10:10:00Z"),
        );
        assert_eq!(beat.last_pass, Some(at("2026-11-24T10:10:00Z")));
    }

    #[test]
    fn what_a_pass_did_not_reach_stays_recorded() {
        let t = at("2026-11-24T10:00:00Z");
        let mut s = summary(Phase::Converged);
        let record = ComponentRecord {
            chart: "dns 1.0.0".into(),
            inputs: Some("sha256:a".into()),
            objects: 3,
            ..ComponentRecord::default()
        };
        s.components = Some([("dns".to_string(), record)].into());
        s.drift_checked = true;
        let r = compose(&Record::default(), &s, t);
        assert_eq!(r.drift_checked, Some(t));
        let failed = Summary {
            cluster: None,
            desired_revision: None,
            phase: Phase::Failed,
            message: "git unreachable".into(),
            versions: None,
            components: None,
            drift_checked: false,
        };
        let next = compose(&r, &failed, t);
        assert_eq!(next.components, r.components);
        assert_eq!(next.drift_checked, r.drift_checked);
        assert_eq!(next.cluster, r.cluster);
        assert_eq!(next.control_plane, r.control_plane);
        assert_eq!(next.applied_revision, r.applied_revision);
    }

    #[test]
    fn events_name_phase_changes_and_component_health_changes() {
        let before = Record {
            phase: Some(Phase::Progressing),
            components: [(
                "dns".to_string(),
                ComponentRecord {
                    health: ComponentHealth::Progressing,
                    ..ComponentRecord::default()
                },
            )]
            .into(),
            ..Record::default()
        };
        let mut after = before.clone();
        assert_eq!(events(&before, &after), vec![]);
        after.phase = Some(Phase::Failed);
        after.message = Some("component dns Failed: boom".into());
        if let Some(r) = after.components.get_mut("dns") {
            r.health = ComponentHealth::Failed;
            r.message = Some("boom".into());
            r.chart = "dns 1.0.0".into();
        }
        assert_eq!(
            events(&before, &after),
            vec![
                EventNote {
                    warning: true,
                    reason: "Failed",
                    note: "component dns Failed: boom".into()
                },
                EventNote {
                    warning: true,
                    reason: "ComponentFailed",
                    note: "component dns Failed: boom (dns 1.0.0)".into()
                },
            ]
        );
    }

    #[test]
    fn describe_joins_causes_and_adds_nothing_without_one() {
        #[derive(Debug, thiserror::Error)]
        #[error("failed to fetch")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(describe(&e), "failed to fetch: connection refused");
        let alone = std::io::Error::other("no such thing");
        assert_eq!(describe(&alone), "no such thing");
    }
}
