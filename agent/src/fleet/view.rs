//! The fleet by wave: what git declares ([`Layout`]) joined with what the clusters
//! report ([`Reports`]), at a given time. Pure: no I/O, no clock.
//!
//! - A cluster is matched to its manifest by the `tidemark.dev/cluster` of its record.
//! - A cluster in git that nothing reported, or whose agent was last seen more than
//!   [`STALE_AFTER`] ago (twice the agent's heartbeat), is `Unreachable`, with the reason:
//!   never silently missing.
//! - Records of clusters git does not declare, and contexts that could not be read and
//!   name no declared cluster, are listed apart.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tidemark_schema::KubeVersion;

use super::layout::{ClusterLayout, Layout};
use super::reports::{Reported, Reports};
use crate::plan::Phase;
use crate::status::{ComponentHealth, HEARTBEAT, Record, Versions};

/// A record whose agent was last seen longer ago than this counts as unreachable: twice
/// the agent's heartbeat ([`HEARTBEAT`]), so one missed heartbeat is tolerated.
pub const STALE_AFTER: Duration = Duration::from_secs(2 * HEARTBEAT.as_secs());

/// Where the records were read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    /// Kubeconfig contexts.
    Kubeconfig,
    /// Status refs in the fleet repo.
    Git,
}

/// The fleet at one instant.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetView {
    /// The fleet's name.
    pub fleet: String,
    /// The branch read.
    pub branch: String,
    /// Its commit.
    pub commit: String,
    /// Where the records came from.
    pub origin: Origin,
    /// When this view was made.
    pub at: Timestamp,
    /// Whether `fleet.yaml` pauses every agent.
    pub paused: bool,
    /// The freeze in force, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen: Option<FrozenView>,
    /// Waves in rollout order; clusters without a wave last, under `(branch)`.
    pub waves: Vec<WaveView>,
    /// Records of clusters that git does not declare.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<Unknown>,
    /// Contexts that could not be read and name no declared cluster.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<Unread>,
    /// Other things worth saying (a cluster reported twice).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A freeze in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FrozenView {
    /// The freezes.
    pub freezes: Vec<String>,
    /// When promotions may resume.
    pub until: Timestamp,
}

/// One wave.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveView {
    /// Its name (`(branch)` for clusters without a wave).
    pub name: String,
    /// Its tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The commit its tag (or the branch) names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Its soak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<String>,
    /// Its failure budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unhealthy: Option<String>,
    /// Its description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its clusters, by name.
    pub clusters: Vec<ClusterView>,
}

/// One cluster.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// Its manifest name.
    pub name: String,
    /// Its wave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
    /// Its phase, or `Unreachable`.
    pub phase: String,
    /// Why it is unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
    /// The phase its last record says (kept for an unreachable cluster's last record).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "phase_name")]
    pub last_phase: Option<Phase>,
    /// The record's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The control-plane version git declares where its agent reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<KubeVersion>,
    /// The control-plane version observed by the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    /// Node groups behind their declared version (`general 1.28.9 -> 1.29.8`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_groups_behind: Vec<String>,
    /// Components that are not healthy (`dns Failed: ...`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components_unhealthy: Vec<String>,
    /// The last commit it fully converged to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_revision: Option<String>,
    /// Whether that is the commit of its wave's tag (or of the branch, without a wave).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_wave_tag: Option<bool>,
    /// Its last pass, on the agent's clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_pass: Option<Timestamp>,
    /// Seconds since the agent was last seen (its last pass or publish).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<u64>,
    /// Since when it has been `Converged` at the applied revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converged_since: Option<Timestamp>,
    /// Where its record was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The record itself, for deciding promotions.
    #[serde(skip)]
    pub record: Option<Record>,
}

impl ClusterView {
    /// Whether its agent reported recently enough to be judged.
    pub fn is_reachable(&self) -> bool {
        self.unreachable.is_none()
    }

    /// Its phase, when reachable.
    pub fn current_phase(&self) -> Option<Phase> {
        if self.is_reachable() {
            self.last_phase
        } else {
            None
        }
    }
}

fn phase_name<S: serde::Serializer>(phase: &Option<Phase>, s: S) -> Result<S::Ok, S::Error> {
    match phase {
        Some(p) => s.serialize_str(p.as_str()),
        None => s.serialize_none(),
    }
}

/// Records of a cluster git does not declare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unknown {
    /// The cluster its record names.
    pub cluster: String,
    /// Where it was read.
    pub via: String,
}

/// A context that could not be read and names no declared cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unread {
    /// Where.
    pub via: String,
    /// Why.
    pub reason: String,
}

/// The label of the pseudo-wave of clusters without a wave.
pub const BRANCH_WAVE: &str = "(branch)";

/// The fleet view of `layout` and `reports` at `now`.
pub fn assess(layout: &Layout, reports: &Reports, origin: Origin, now: Timestamp) -> FleetView {
    let mut notes = Vec::new();
    let mut unknown = Vec::new();
    let mut by_cluster: std::collections::BTreeMap<&str, Vec<&Reported>> = Default::default();
    for r in &reports.records {
        let name = r.record.cluster.as_deref().unwrap_or_default();
        if layout.clusters.contains_key(name) {
            by_cluster.entry(name).or_default().push(r);
        } else {
            unknown.push(Unknown {
                cluster: name.to_string(),
                via: r.via.clone(),
            });
        }
    }
    let mut attributed = vec![false; reports.failures.len()];
    let mut view_of = |c: &ClusterLayout, tag_commit: Option<&str>| -> ClusterView {
        let mut reported = by_cluster.remove(c.name.as_str()).unwrap_or_default();
        reported.sort_by_key(|r| std::cmp::Reverse(r.seen));
        if reported.len() > 1 {
            let vias: Vec<&str> = reported.iter().map(|r| r.via.as_str()).collect();
            notes.push(format!(
                "cluster {} is reported by {} ({}); the most recent record is shown",
                c.name,
                vias.len(),
                vias.join(", ")
            ));
        }
        match reported.first() {
            Some(r) => cluster_view(c, r, tag_commit, origin, now),
            None => {
                let failure = reports
                    .failures
                    .iter()
                    .enumerate()
                    .find(|(_, f)| f.names.iter().any(|n| n == &c.name));
                let reason = match failure {
                    Some((i, f)) => {
                        attributed[i] = true;
                        format!("{}: {}", f.via, f.reason)
                    }
                    None => match origin {
                        Origin::Kubeconfig => "no context read reports it".to_string(),
                        Origin::Git => {
                            "no status ref in the fleet repo (is its agent run with --report-ref?)"
                                .to_string()
                        }
                    },
                };
                unreachable_view(c, reason)
            }
        }
    };
    let mut waves = Vec::new();
    for w in &layout.waves {
        let clusters = layout
            .clusters_of(&w.wave.name)
            .map(|c| view_of(c, w.commit.as_deref()))
            .collect();
        waves.push(WaveView {
            name: w.wave.name.clone(),
            tag: Some(w.tag.clone()),
            commit: w.commit.clone(),
            soak: w.wave.soak.map(|s| s.to_string()),
            max_unhealthy: w.wave.max_unhealthy.map(|b| b.to_string()),
            description: w.wave.description.clone(),
            clusters,
        });
    }
    let unwaved: Vec<ClusterView> = layout
        .clusters
        .values()
        .filter(|c| c.wave.is_none())
        .map(|c| view_of(c, Some(&layout.branch_commit)))
        .collect();
    if !unwaved.is_empty() {
        waves.push(WaveView {
            name: BRANCH_WAVE.into(),
            tag: None,
            commit: Some(layout.branch_commit.clone()),
            soak: None,
            max_unhealthy: None,
            description: Some(format!("clusters without a wave follow {}", layout.branch)),
            clusters: unwaved,
        });
    }
    let unread = reports
        .failures
        .iter()
        .zip(attributed)
        .filter(|(_, used)| !used)
        .map(|(f, _)| Unread {
            via: f.via.clone(),
            reason: f.reason.clone(),
        })
        .collect();
    FleetView {
        fleet: layout.fleet.metadata.name.clone(),
        branch: layout.branch.clone(),
        commit: layout.branch_commit.clone(),
        origin,
        at: now,
        paused: layout.fleet.spec.paused,
        frozen: tidemark_schema::freeze::frozen(&layout.fleet.spec.freezes, now).map(|f| {
            FrozenView {
                freezes: f.names,
                until: f.until,
            }
        }),
        waves,
        unknown,
        unread,
        notes,
    }
}

fn unreachable_view(c: &ClusterLayout, reason: String) -> ClusterView {
    ClusterView {
        name: c.name.clone(),
        wave: c.wave.clone(),
        phase: "Unreachable".into(),
        unreachable: Some(reason),
        last_phase: None,
        message: None,
        declared: c.declared,
        observed: None,
        node_groups_behind: vec![],
        components_unhealthy: vec![],
        applied_revision: None,
        at_wave_tag: None,
        last_pass: None,
        age_seconds: None,
        converged_since: None,
        via: None,
        record: None,
    }
}

fn cluster_view(
    c: &ClusterLayout,
    r: &Reported,
    tag_commit: Option<&str>,
    origin: Origin,
    now: Timestamp,
) -> ClusterView {
    let record = &r.record;
    let age = r
        .seen
        .map(|t| now.duration_since(t).as_secs().max(0).unsigned_abs());
    let stale = match age {
        None => Some("its record has no last-pass time".to_string()),
        Some(a) if a > STALE_AFTER.as_secs() => Some(format!(
            "{} last seen {} ago, more than twice the agent's {} heartbeat",
            match origin {
                Origin::Kubeconfig => "its agent was",
                Origin::Git => "its status ref says its agent was",
            },
            tidemark_schema::Duration::from_secs(a),
            tidemark_schema::Duration(HEARTBEAT)
        )),
        Some(_) => None,
    };
    let phase = match (&stale, record.phase) {
        (Some(_), _) => "Unreachable".to_string(),
        (None, Some(p)) => p.to_string(),
        (None, None) => "Unknown".to_string(),
    };
    ClusterView {
        name: c.name.clone(),
        wave: c.wave.clone(),
        phase,
        unreachable: stale,
        last_phase: record.phase,
        message: record.message.clone(),
        declared: c
            .declared
            .or(record.control_plane.as_ref().map(|v| v.desired)),
        observed: record.control_plane.as_ref().map(|v| v.observed.clone()),
        node_groups_behind: record
            .node_groups
            .iter()
            .filter(|(_, v)| is_behind(v))
            .map(|(name, v)| format!("{name} {} -> {}", v.observed, v.desired))
            .collect(),
        components_unhealthy: record
            .components
            .iter()
            .filter(|(_, r)| r.health != ComponentHealth::Healthy)
            .map(|(name, r)| {
                r.describe(name)
                    .trim_start_matches("component ")
                    .to_string()
            })
            .collect(),
        applied_revision: record.applied_revision.clone(),
        at_wave_tag: tag_commit.map(|t| record.applied_revision.as_deref() == Some(t)),
        last_pass: record.last_pass,
        age_seconds: age,
        converged_since: record.converged_since,
        via: Some(r.via.clone()),
        record: Some(record.clone()),
    }
}

/// Whether a node group runs below what git declares (its oldest kubelet, when mixed).
fn is_behind(v: &Versions) -> bool {
    let oldest = v.observed.split("..").next().unwrap_or_default();
    match KubeVersion::parse_observed(oldest) {
        Ok(o) => v.desired.is_newer_than(o),
        // "none": a group without nodes has nothing behind.
        Err(_) => false,
    }
}

impl FleetView {
    /// Every cluster, wave by wave.
    pub fn clusters(&self) -> impl Iterator<Item = &ClusterView> {
        self.waves.iter().flat_map(|w| w.clusters.iter())
    }

    /// Whether any reachable cluster is `Blocked` or `Failed` (the exit status of
    /// `tidemark status` says so, for CI).
    pub fn has_blocked_or_failed(&self) -> bool {
        self.clusters()
            .any(|c| matches!(c.current_phase(), Some(Phase::Blocked | Phase::Failed)))
    }

    /// The wave called `name`.
    pub fn wave(&self, name: &str) -> Option<&WaveView> {
        self.waves.iter().find(|w| w.name == name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fleet::layout::WaveLayout;
    use crate::fleet::reports::Failure;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn layout() -> Layout {
        let fleet: tidemark_schema::Fleet = serde_yaml::from_str(
            "apiVersion: tidemark.dev/v1alpha1\nkind: Fleet\nmetadata: {name: f}\nspec:\n  waves: [{name: canary, soak: 10m}, {name: main}]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let wave = |name: &str, commit: &str| WaveLayout {
            wave: fleet
                .wave(name)
                .cloned()
                .unwrap_or_else(|| panic!("{name}")),
            tag: format!("wave/{name}"),
            tag_ref: Some(format!("{commit}-tag")),
            commit: Some(commit.into()),
        };
        let cluster = |name: &str, wave: Option<&str>| ClusterLayout {
            name: name.into(),
            wave: wave.map(str::to_string),
            declared: Some(KubeVersion::new(1, 29, 8)),
        };
        Layout {
            branch: "main".into(),
            branch_commit: "head".into(),
            waves: vec![wave("canary", "c1"), wave("main", "c0")],
            clusters: [
                cluster("a", Some("canary")),
                cluster("b", Some("canary")),
                cluster("c", Some("main")),
                cluster("d", None),
            ]
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect(),
            fleet,
        }
    }

    pub(crate) fn reported(cluster: &str, phase: Phase, applied: &str, seen: &str) -> Reported {
        Reported {
            record: Record {
                cluster: Some(cluster.into()),
                phase: Some(phase),
                applied_revision: Some(applied.into()),
                last_pass: Some(at(seen)),
                ..Record::default()
            },
            seen: Some(at(seen)),
            via: format!("context {cluster}"),
        }
    }

    #[test]
    fn every_cluster_in_git_is_shown_and_the_silent_ones_are_unreachable() {
        let now = at("2026-11-24T10:30:00Z");
        let reports = Reports {
            records: vec![
                reported("a", Phase::Converged, "c1", "2026-11-24T10:29:00Z"),
                // Last seen 25 minutes ago: more than two heartbeats.
                reported("c", Phase::Converged, "c0", "2026-11-24T10:05:00Z"),
                reported("zz", Phase::Converged, "c0", "2026-11-24T10:29:00Z"),
            ],
            failures: vec![
                Failure {
                    via: "context b".into(),
                    names: vec!["b".into()],
                    reason: "no answer within 5s".into(),
                },
                Failure {
                    via: "context other".into(),
                    names: vec!["other".into()],
                    reason: "connection refused".into(),
                },
            ],
        };
        let view = assess(&layout(), &reports, Origin::Kubeconfig, now);
        let rows: Vec<(&str, &str, Option<&str>)> = view
            .clusters()
            .map(|c| (c.name.as_str(), c.phase.as_str(), c.unreachable.as_deref()))
            .collect();
        assert_eq!(
            rows,
            [
                ("a", "Converged", None),
                ("b", "Unreachable", Some("context b: no answer within 5s")),
                (
                    "c",
                    "Unreachable",
                    Some(
                        "its agent was last seen 25m ago, more than twice the agent's 10m heartbeat"
                    )
                ),
                ("d", "Unreachable", Some("no context read reports it")),
            ]
        );
        assert_eq!(
            view.waves
                .iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>(),
            ["canary", "main", "(branch)"]
        );
        assert_eq!(
            view.clusters().next().and_then(|c| c.at_wave_tag),
            Some(true)
        );
        assert_eq!(view.unknown.len(), 1);
        assert_eq!(view.unread.len(), 1);
        assert_eq!(view.unread[0].via, "context other");
        assert!(
            !view.has_blocked_or_failed(),
            "unreachable is not Blocked or Failed"
        );
    }

    #[test]
    fn blocked_or_failed_is_said_once_reachable() {
        let now = at("2026-11-24T10:30:00Z");
        let reports = Reports {
            records: vec![reported("a", Phase::Blocked, "c0", "2026-11-24T10:29:00Z")],
            failures: vec![],
        };
        let view = assess(&layout(), &reports, Origin::Git, now);
        assert!(view.has_blocked_or_failed());
        let a = view.clusters().next().unwrap_or_else(|| panic!("no a"));
        assert_eq!(a.at_wave_tag, Some(false));
        let d = view.clusters().last().unwrap_or_else(|| panic!("no d"));
        assert!(
            d.unreachable
                .as_deref()
                .is_some_and(|r| r.contains("--report-ref"))
        );
    }

    #[test]
    fn node_groups_behind_and_unhealthy_components_are_named() {
        let mut r = reported("a", Phase::Progressing, "c0", "2026-11-24T10:29:00Z");
        r.record.node_groups.insert(
            "general".into(),
            Versions::new(
                Some(KubeVersion::new(1, 28, 9)),
                Some(KubeVersion::new(1, 29, 8)),
                KubeVersion::new(1, 29, 8),
            ),
        );
        r.record.node_groups.insert(
            "gpu".into(),
            Versions::new(
                Some(KubeVersion::new(1, 29, 8)),
                None,
                KubeVersion::new(1, 29, 8),
            ),
        );
        r.record.components.insert(
            "dns".into(),
            crate::status::ComponentRecord {
                health: ComponentHealth::Failed,
                message: Some("boom".into()),
                ..Default::default()
            },
        );
        let reports = Reports {
            records: vec![r],
            failures: vec![],
        };
        let view = assess(
            &layout(),
            &reports,
            Origin::Kubeconfig,
            at("2026-11-24T10:30:00Z"),
        );
        let a = view.clusters().next().unwrap_or_else(|| panic!("no a"));
        assert_eq!(a.node_groups_behind, ["general 1.28.9..1.29.8 -> 1.29.8"]);
        assert_eq!(a.components_unhealthy, ["dns Failed: boom"]);
    }
}
