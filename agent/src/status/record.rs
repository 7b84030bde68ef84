//! The status record: everything the agent writes on its status object, typed, and the
//! one place that reads and writes its annotations.
//!
//! - Read once per pass ([`Record::from_annotations`]) and handed to `observe`; written
//!   once per pass ([`Record::to_annotations`]) when its content changed.
//! - Lenient reading: a value this version cannot parse (hand-edited, or written by a later
//!   agent) is dropped with a warning, never fails the pass. Annotations written by the
//!   previous release (no `accepted` version, no `converged-since`) read as they did.
//! - Strict writing: compact JSON with sorted keys, component messages cut to
//!   [`COMPONENT_MESSAGE_LIMIT`] bytes (annotations share 256 KiB per object).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tidemark_schema::KubeVersion;

use crate::bounded;
use crate::keys::annotations as keys;
use crate::plan::Phase;

/// Longest message of one component in `tidemark.dev/components`.
pub const COMPONENT_MESSAGE_LIMIT: usize = 1024;

/// Everything the agent records on its status object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The cluster's manifest name (`tidemark.dev/cluster`).
    pub cluster: Option<String>,
    /// Its wave.
    pub wave: Option<String>,
    /// Commit of the desired state of the last pass that resolved one.
    pub desired_revision: Option<String>,
    /// Last commit fully converged.
    pub applied_revision: Option<String>,
    /// Phase of the last pass.
    pub phase: Option<Phase>,
    /// What happened or what blocks.
    pub message: Option<String>,
    /// Control-plane versions.
    pub control_plane: Option<Versions>,
    /// Node-group versions, by group.
    pub node_groups: BTreeMap<String, Versions>,
    /// Components, by name (including removed ones whose prune failed).
    pub components: BTreeMap<String, ComponentRecord>,
    /// When applied components were last compared with their render.
    pub drift_checked: Option<Timestamp>,
    /// When the last pass changed something, or the last heartbeat.
    pub last_pass: Option<Timestamp>,
    /// Since when the phase has been `Converged` at `applied_revision`.
    pub converged_since: Option<Timestamp>,
    /// `tidemark.dev/paused: "true"`: a local veto. Read, never written by tidemark.
    pub paused: bool,
}

/// Observed, declared and requested versions of the control plane or of one node group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Versions {
    /// What runs (`1.29.8`, `1.28.9..1.29.8` while a group is mixed, `none`).
    pub observed: String,
    /// What git declares.
    pub desired: KubeVersion,
    /// The last declaration tidemark accepted, when git now declares a version it refuses
    /// (a downgrade). Tells a lowered declaration, refused on every pass, from a version
    /// raised outside tidemark, which is reported and kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<KubeVersion>,
    /// What the provider was asked for and has not reached yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<KubeVersion>,
    /// When that request was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Timestamp>,
}

impl Versions {
    /// Versions observed between `min` and `max` (a range when they differ) against `desired`.
    pub fn new(min: Option<KubeVersion>, max: Option<KubeVersion>, desired: KubeVersion) -> Self {
        let observed = match (min, max) {
            (Some(a), Some(b)) if a != b => format!("{a}..{b}"),
            (Some(a), _) => a.to_string(),
            _ => "none".into(),
        };
        Self {
            observed,
            desired,
            accepted: None,
            requested: None,
            requested_at: None,
        }
    }

    /// The declaration the planner compares a running version with: the accepted one when
    /// git declares a refused version, else the declared one.
    pub fn baseline(&self) -> KubeVersion {
        self.accepted.unwrap_or(self.desired)
    }

    /// The request recorded, with its time, if both are known.
    pub fn request(&self) -> Option<(KubeVersion, Timestamp)> {
        Some((self.requested?, self.requested_at?))
    }
}

/// How a component is doing, as recorded in `tidemark.dev/components`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComponentHealth {
    /// Never applied, or not yet.
    #[default]
    Pending,
    /// Applied; its workloads are rolling out.
    Progressing,
    /// Applied and every workload is rolled out.
    Healthy,
    /// The render or the apply failed, or it did not become healthy within its timeout.
    Failed,
}

impl std::fmt::Display for ComponentHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ComponentHealth::Pending => "Pending",
            ComponentHealth::Progressing => "Progressing",
            ComponentHealth::Healthy => "Healthy",
            ComponentHealth::Failed => "Failed",
        })
    }
}

/// One component's entry in `tidemark.dev/components` (compact JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentRecord {
    /// The chart, as people read it (`metrics-lite 0.2.0`).
    #[serde(default)]
    pub chart: String,
    /// Health of the last apply.
    #[serde(default)]
    pub health: ComponentHealth,
    /// What is wrong or what happens (the failing object and reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// sha256 of the inputs (chart, version, merged values) of the last complete apply:
    /// equal to the desired inputs means no `helm` call and no apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// sha256 of the cluster's capabilities (control-plane minor, served APIs) the last
    /// complete apply was rendered for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<String>,
    /// sha256 of the inputs of the last failed attempt, when it failed (so the same
    /// failure is retried, not mistaken for a new change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_inputs: Option<String>,
    /// sha256 of the rendered output of the last complete apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered: Option<String>,
    /// Objects applied.
    #[serde(default)]
    pub objects: u32,
    /// Objects it no longer renders that were kept: CRDs (without `pruneCRDs`) and objects
    /// marked `helm.sh/resource-policy: keep`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retained: Vec<String>,
    /// When the last complete apply happened (the health timeout counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Timestamp>,
}

impl ComponentRecord {
    /// `component NAME HEALTH[: message]`, as status messages and Events say it.
    pub fn describe(&self, name: &str) -> String {
        match &self.message {
            Some(m) => format!("component {name} {}: {m}", self.health),
            None => format!("component {name} {}", self.health),
        }
    }

    /// Whether its last complete apply was of `digest` and it is healthy.
    pub fn is_healthy_at(&self, digest: &str) -> bool {
        self.health == ComponentHealth::Healthy && self.inputs.as_deref() == Some(digest)
    }
}

impl Record {
    /// The record held by the `tidemark.dev/*` annotations of the status object.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        let text = |key: &str| annotations.get(key).cloned();
        Self {
            cluster: text(keys::CLUSTER),
            wave: text(keys::WAVE),
            desired_revision: text(keys::DESIRED_REVISION),
            applied_revision: text(keys::APPLIED_REVISION),
            phase: parsed(annotations, keys::PHASE, |v| v.parse().ok()),
            message: text(keys::MESSAGE),
            control_plane: parsed(annotations, keys::CONTROL_PLANE, json),
            node_groups: parsed(annotations, keys::NODE_GROUPS, json).unwrap_or_default(),
            components: parsed(annotations, keys::COMPONENTS, json).unwrap_or_default(),
            drift_checked: parsed(annotations, keys::DRIFT_CHECKED, |v| v.parse().ok()),
            last_pass: parsed(annotations, keys::LAST_PASS, |v| v.parse().ok()),
            converged_since: parsed(annotations, keys::CONVERGED_SINCE, |v| v.parse().ok()),
            paused: annotations.get(keys::PAUSED).is_some_and(|v| v == "true"),
        }
    }

    /// The annotations tidemark owns on the status object (every one it writes; never
    /// `tidemark.dev/paused`, which belongs to people).
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                out.insert(key.to_string(), v);
            }
        };
        put(keys::CLUSTER, self.cluster.clone());
        put(keys::WAVE, self.wave.clone());
        put(keys::DESIRED_REVISION, self.desired_revision.clone());
        put(keys::APPLIED_REVISION, self.applied_revision.clone());
        put(keys::PHASE, self.phase.map(|p| p.to_string()));
        put(keys::MESSAGE, self.message.clone());
        put(
            keys::CONTROL_PLANE,
            self.control_plane.as_ref().and_then(to_json),
        );
        if !self.node_groups.is_empty() {
            put(keys::NODE_GROUPS, to_json(&self.node_groups));
        }
        if !self.components.is_empty() {
            let mut components = self.components.clone();
            for r in components.values_mut() {
                if let Some(m) = r.message.as_mut() {
                    *m = bounded::head(m, COMPONENT_MESSAGE_LIMIT);
                }
            }
            put(keys::COMPONENTS, to_json(&components));
        }
        put(
            keys::DRIFT_CHECKED,
            self.drift_checked.map(|t| t.to_string()),
        );
        put(keys::LAST_PASS, self.last_pass.map(|t| t.to_string()));
        put(
            keys::CONVERGED_SINCE,
            self.converged_since.map(|t| t.to_string()),
        );
        out
    }
}

/// The value of `key` parsed by `parse`; an unparsable value is dropped with a warning.
fn parsed<T>(
    annotations: &BTreeMap<String, String>,
    key: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    let raw = annotations.get(key)?;
    let value = parse(raw);
    if value.is_none() {
        tracing::warn!(
            annotation = key,
            "ignoring a status annotation this agent cannot read"
        );
    }
    value
}

fn json<T: serde::de::DeserializeOwned>(raw: &str) -> Option<T> {
    serde_json::from_str(raw).ok()
}

fn to_json<T: Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    /// What the previous release wrote (one pass of a cluster mid-rollout).
    fn previous_release() -> BTreeMap<String, String> {
        [
            (keys::CLUSTER, "prod-eu-1"),
            (keys::WAVE, "early"),
            (keys::DESIRED_REVISION, "abc"),
            (keys::APPLIED_REVISION, "9f0"),
            (keys::PHASE, "Progressing"),
            (keys::MESSAGE, "upgrade control plane 1.28.9 -> 1.29.8"),
            (
                keys::CONTROL_PLANE,
                r#"{"observed":"1.28.9","desired":"1.29.8","requested":"1.29.8","requestedAt":"2026-11-24T10:00:00Z"}"#,
            ),
            (
                keys::NODE_GROUPS,
                r#"{"general":{"observed":"1.28.9..1.29.8","desired":"1.29.8"}}"#,
            ),
            (
                keys::COMPONENTS,
                r#"{"dns":{"chart":"dns 1.0.0","health":"Healthy","inputs":"sha256:a","rendered":"sha256:b","objects":3,"appliedAt":"2026-11-24T09:00:00Z"}}"#,
            ),
            (keys::DRIFT_CHECKED, "2026-11-24T09:30:00Z"),
            (keys::LAST_PASS, "2026-11-24T10:00:00Z"),
            (keys::PAUSED, "true"),
            ("other.io/kept", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn reads_what_the_previous_release_wrote() {
        let r = Record::from_annotations(&previous_release());
        assert_eq!(r.cluster.as_deref(), Some("prod-eu-1"));
        assert_eq!(r.phase, Some(Phase::Progressing));
        let cp = r.control_plane.clone().unwrap_or_else(|| panic!("no cp"));
        assert_eq!(cp.desired, KubeVersion::new(1, 29, 8));
        assert_eq!(cp.baseline(), KubeVersion::new(1, 29, 8));
        assert_eq!(
            cp.request(),
            Some((KubeVersion::new(1, 29, 8), at("2026-11-24T10:00:00Z")))
        );
        assert_eq!(r.node_groups["general"].observed, "1.28.9..1.29.8");
        assert_eq!(r.components["dns"].health, ComponentHealth::Healthy);
        assert_eq!(
            r.components["dns"].applied_at,
            Some(at("2026-11-24T09:00:00Z"))
        );
        assert_eq!(r.drift_checked, Some(at("2026-11-24T09:30:00Z")));
        assert!(r.paused);
        assert_eq!(r.converged_since, None);
    }

    #[test]
    fn writes_back_the_same_annotations_it_read() {
        let before = previous_release();
        let written = Record::from_annotations(&before).to_annotations();
        for (k, v) in &written {
            assert_eq!(before.get(k), Some(v), "{k}");
        }
        // Everything tidemark owns comes back; the person's veto and others' keys are not
        // tidemark's to write.
        assert_eq!(written.len(), before.len() - 2);
        assert!(!written.contains_key(keys::PAUSED));
    }

    #[test]
    fn unreadable_values_are_dropped_not_fatal() {
        let mut notes = previous_release();
        notes.insert(keys::PHASE.into(), "Exploded".into());
        notes.insert(keys::CONTROL_PLANE.into(), "{not json".into());
        notes.insert(keys::LAST_PASS.into(), "yesterday".into());
        let r = Record::from_annotations(&notes);
        assert_eq!(r.phase, None);
        assert_eq!(r.control_plane, None);
        assert_eq!(r.last_pass, None);
        assert_eq!(r.cluster.as_deref(), Some("prod-eu-1"));
    }

    #[test]
    fn a_refused_declaration_keeps_the_accepted_one() {
        let mut v = Versions::new(
            Some(KubeVersion::new(1, 30, 4)),
            None,
            KubeVersion::new(1, 29, 8),
        );
        v.accepted = Some(KubeVersion::new(1, 30, 4));
        let text = to_json(&v).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"observed":"1.30.4","desired":"1.29.8","accepted":"1.30.4"}"#
        );
        let back: Versions = json(&text).unwrap_or_else(|| panic!("{text}"));
        assert_eq!(back.baseline(), KubeVersion::new(1, 30, 4));
    }

    #[test]
    fn long_component_messages_are_cut() {
        let mut r = Record::default();
        r.components.insert(
            "dns".into(),
            ComponentRecord {
                message: Some("é".repeat(COMPONENT_MESSAGE_LIMIT)),
                ..ComponentRecord::default()
            },
        );
        let back = Record::from_annotations(&r.to_annotations());
        let message = back.components["dns"].message.clone().unwrap_or_default();
        assert!(message.ends_with(" [...]") && message.len() <= COMPONENT_MESSAGE_LIMIT + 6);
    }
}
