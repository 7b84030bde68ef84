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
//! - Each component's [`Inventory`] (what it applied, what prune may delete) has an
//!   annotation of its own, `tidemark.dev/inventory`, so `tidemark.dev/components` stays
//!   short enough to read. Inventories that would take the record past
//!   [`ANNOTATION_BUDGET`] are left out with a warning (see [`Record::to_annotations`]).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tidemark_schema::KubeVersion;

use crate::bounded;
use crate::component::manifest::ObjectKey;
use crate::keys::annotations as keys;
use crate::plan::Phase;

/// Longest message of one component in `tidemark.dev/components`.
pub const COMPONENT_MESSAGE_LIMIT: usize = 1024;

/// Most bytes tidemark's annotations may take together. The API server refuses an object
/// whose annotations exceed 256 KiB; a quarter of that is left to annotations of others
/// (`kubectl apply`'s last-applied configuration of the Namespace, for one).
pub const ANNOTATION_BUDGET: usize = 192 * 1024;

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
    /// The objects it applied, which prune may delete (written to its own annotation,
    /// `tidemark.dev/inventory`). `None`: not recorded (a record of a release before
    /// inventories, or one left out for the annotation budget): prune then sweeps every
    /// listable kind for the component's label, as `--prune-scan` does.
    #[serde(skip)]
    pub inventory: Option<Inventory>,
}

/// The objects a component applied, with the uid each had when applied: prune deletes
/// only objects of the inventory (and, with `--prune-scan`, what a sweep of every kind
/// finds labelled for the component).
///
/// In the annotation: `{"Kind[.group]": {"namespace" or "": {"name": "uid"}}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    objects: BTreeMap<ObjectKey, String>,
}

impl Inventory {
    /// Records `key`, applied as `uid` (`""` when unknown).
    pub fn insert(&mut self, key: ObjectKey, uid: String) {
        self.objects.insert(key, uid);
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &ObjectKey) {
        self.objects.remove(key);
    }

    /// Whether `key` is recorded.
    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.objects.contains_key(key)
    }

    /// Every object with its uid, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &str)> {
        self.objects.iter().map(|(k, u)| (k, u.as_str()))
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Adds every object of `other` (its uids win).
    pub fn extend(&mut self, other: &Inventory) {
        self.objects
            .extend(other.objects.iter().map(|(k, u)| (k.clone(), u.clone())));
    }
}

/// `Kind[.group]` -> namespace (`""`: cluster-scoped) -> name -> uid.
type Nested = BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>;

impl Serialize for Inventory {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut nested = Nested::new();
        for (k, uid) in &self.objects {
            let kind = if k.group.is_empty() {
                k.kind.clone()
            } else {
                format!("{}.{}", k.kind, k.group)
            };
            nested
                .entry(kind)
                .or_default()
                .entry(k.namespace.clone().unwrap_or_default())
                .or_default()
                .insert(k.name.clone(), uid.clone());
        }
        nested.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Inventory {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let nested = Nested::deserialize(deserializer)?;
        let mut out = Inventory::default();
        for (kind, namespaces) in nested {
            // Kinds have no dots; groups do.
            let (kind, group) = kind.split_once('.').unwrap_or((kind.as_str(), ""));
            for (namespace, names) in namespaces {
                for (name, uid) in names {
                    out.insert(
                        ObjectKey {
                            group: group.to_string(),
                            kind: kind.to_string(),
                            namespace: (!namespace.is_empty()).then(|| namespace.clone()),
                            name,
                        },
                        uid,
                    );
                }
            }
        }
        Ok(out)
    }
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
        let mut components: BTreeMap<String, ComponentRecord> =
            parsed(annotations, keys::COMPONENTS, json).unwrap_or_default();
        let inventories: BTreeMap<String, Inventory> =
            parsed(annotations, keys::INVENTORY, json).unwrap_or_default();
        for (name, inventory) in inventories {
            if let Some(r) = components.get_mut(&name) {
                r.inventory = Some(inventory);
            }
        }
        Self {
            cluster: text(keys::CLUSTER),
            wave: text(keys::WAVE),
            desired_revision: text(keys::DESIRED_REVISION),
            applied_revision: text(keys::APPLIED_REVISION),
            phase: parsed(annotations, keys::PHASE, |v| v.parse().ok()),
            message: text(keys::MESSAGE),
            control_plane: parsed(annotations, keys::CONTROL_PLANE, json),
            node_groups: parsed(annotations, keys::NODE_GROUPS, json).unwrap_or_default(),
            components,
            drift_checked: parsed(annotations, keys::DRIFT_CHECKED, |v| v.parse().ok()),
            last_pass: parsed(annotations, keys::LAST_PASS, |v| v.parse().ok()),
            converged_since: parsed(annotations, keys::CONVERGED_SINCE, |v| v.parse().ok()),
            paused: annotations.get(keys::PAUSED).is_some_and(|v| v == "true"),
        }
    }

    /// The annotations tidemark owns on the status object (every one it writes; never
    /// `tidemark.dev/paused`, which belongs to people).
    ///
    /// When the inventories would take them past [`ANNOTATION_BUDGET`], they are left out
    /// (with a warning), and read back as not recorded: prune then sweeps for the
    /// components' labels (which needs `list` on every kind), rather than the status never
    /// being written again.
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let mut out = self.without_inventories();
        let inventories: BTreeMap<&String, &Inventory> = self
            .components
            .iter()
            .filter_map(|(name, r)| Some((name, r.inventory.as_ref()?)))
            .collect();
        if inventories.is_empty() {
            return out;
        }
        let Some(text) = to_json(&inventories) else {
            return out;
        };
        let size = |m: &BTreeMap<String, String>| -> usize {
            m.iter().map(|(k, v)| k.len() + v.len()).sum()
        };
        let total = size(&out) + keys::INVENTORY.len() + text.len();
        if total > ANNOTATION_BUDGET {
            tracing::warn!(
                bytes = total,
                budget = ANNOTATION_BUDGET,
                objects = inventories.values().map(|i| i.len()).sum::<usize>(),
                "the components' inventories do not fit in the status annotations; left out (prune sweeps every kind instead)"
            );
            return out;
        }
        out.insert(keys::INVENTORY.to_string(), text);
        out
    }

    fn without_inventories(&self) -> BTreeMap<String, String> {
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

    fn key(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectKey {
        ObjectKey {
            group: group.into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
        }
    }

    /// Inventories have their own annotation, compact and grouped by kind and namespace,
    /// and come back to the components they belong to.
    #[test]
    fn inventories_are_written_apart_and_read_back() {
        let mut inventory = Inventory::default();
        inventory.insert(key("", "ConfigMap", Some("apps"), "shared"), "u1".into());
        inventory.insert(key("apps", "Deployment", Some("apps"), "web"), "u2".into());
        inventory.insert(
            key("rbac.authorization.k8s.io", "ClusterRole", None, "web"),
            "u3".into(),
        );
        let mut r = Record::default();
        r.components.insert(
            "web".into(),
            ComponentRecord {
                objects: 3,
                inventory: Some(inventory.clone()),
                ..ComponentRecord::default()
            },
        );
        // A component of a release before inventories: none recorded.
        r.components
            .insert("legacy".into(), ComponentRecord::default());
        let notes = r.to_annotations();
        assert_eq!(
            notes[keys::INVENTORY],
            r#"{"web":{"ClusterRole.rbac.authorization.k8s.io":{"":{"web":"u3"}},"ConfigMap":{"apps":{"shared":"u1"}},"Deployment.apps":{"apps":{"web":"u2"}}}}"#
        );
        assert!(!notes[keys::COMPONENTS].contains("u1"), "{notes:?}");
        let back = Record::from_annotations(&notes);
        assert_eq!(back.components["web"].inventory.as_ref(), Some(&inventory));
        assert_eq!(back.components["legacy"].inventory, None);
        assert_eq!(back, r);
    }

    /// Past the budget, the inventories are left out rather than the record refused by the
    /// API server on every pass; they read back as not recorded.
    #[test]
    fn inventories_past_the_budget_are_left_out() {
        let mut inventory = Inventory::default();
        for i in 0..4000 {
            inventory.insert(
                key("", "ConfigMap", Some("apps"), &format!("config-{i:05}")),
                format!("{i:08}-0000-4000-8000-000000000000"),
            );
        }
        let mut r = Record::default();
        r.components.insert(
            "big".into(),
            ComponentRecord {
                inventory: Some(inventory),
                ..ComponentRecord::default()
            },
        );
        let notes = r.to_annotations();
        assert!(!notes.contains_key(keys::INVENTORY));
        assert!(notes.contains_key(keys::COMPONENTS));
        assert_eq!(
            Record::from_annotations(&notes).components["big"].inventory,
            None
        );
    }

    #[test]
    fn an_unreadable_inventory_is_not_recorded() {
        let mut notes = previous_release();
        notes.insert(
            keys::INVENTORY.into(),
            r#"{"dns":["not","a","map"]}"#.into(),
        );
        let r = Record::from_annotations(&notes);
        assert_eq!(r.components["dns"].inventory, None);
        assert_eq!(r.components["dns"].objects, 3);
    }
}
