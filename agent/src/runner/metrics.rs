//! The agent's own metrics: passes, their duration and phase, steps, and the Lease, under
//! the `tidemark_` prefix. (Modules register what they own: the renderer its helm count.)
//!
//! What a fleet dashboard shows of one cluster comes from the status record after each
//! pass ([`Metrics::record_pass`]): `tidemark_info` (cluster, wave, revisions, agent
//! version), the phase, the control-plane and node-group versions, components by health,
//! and when the last pass and the last successful one ended. Only the replica holding the
//! Lease exports the cluster's state: a standby drops it ([`Metrics::set_leading`]), so a
//! query never sees a former leader's stale phase. No secret reaches a label: the labels
//! are names, versions and commit ids.

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tidemark_schema::KubeVersion;

use crate::pass::PassReport;
use crate::plan::Phase;
use crate::status::record::{ComponentHealth, Versions};

/// Labels of per-phase metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// The phase.
    pub phase: String,
}

/// Labels of `tidemark_info`: what the last pass knew of the cluster ("" when unknown).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    /// The cluster's manifest name.
    pub cluster: String,
    /// Its wave.
    pub wave: String,
    /// Commit of the desired state.
    pub desired_revision: String,
    /// Last commit fully converged.
    pub applied_revision: String,
    /// This agent's version.
    pub version: String,
}

/// Labels of the version series: observed and declared versions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    /// What runs (`1.29.8`, `1.28.9..1.29.8` while a group is mixed, `none`).
    pub observed: String,
    /// What git declares.
    pub desired: String,
}

/// [`VersionLabels`] of one node group.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeGroupVersionLabels {
    /// The node group.
    pub node_group: String,
    /// What runs.
    pub observed: String,
    /// What git declares.
    pub desired: String,
}

/// Labels of the numeric minor versions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MinorLabels {
    /// `observed` (the lowest running) or `desired`.
    pub version: &'static str,
}

/// [`MinorLabels`] of one node group.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeGroupMinorLabels {
    /// The node group.
    pub node_group: String,
    /// `observed` (the lowest running) or `desired`.
    pub version: &'static str,
}

/// Labels of the components-by-health gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabel {
    /// `Pending`, `Progressing`, `Healthy` or `Failed`.
    pub health: String,
}

/// A Unix time in seconds, as a gauge.
type Seconds = Gauge<f64, AtomicU64>;

/// The agent's metrics, registered under the `tidemark_` prefix.
pub struct Metrics {
    /// Passes by the phase they ended in.
    pub passes: Family<PhaseLabel, Counter>,
    /// Pass duration in seconds.
    pub pass_duration: Histogram,
    /// 1 for the current phase, 0 for the others.
    pub phase: Family<PhaseLabel, Gauge>,
    /// Steps executed: provider requests and component actions.
    pub steps: Counter,
    /// Passes that ended Failed or Blocked.
    pub errors: Family<PhaseLabel, Counter>,
    /// 1 while this replica holds the Lease.
    pub leader: Gauge,
    /// 1, labelled with the cluster, wave, revisions and agent version.
    pub info: Family<InfoLabels, Gauge>,
    /// 1, labelled with the observed and declared versions of the control plane.
    pub control_plane: Family<VersionLabels, Gauge>,
    /// The control plane's minor versions, observed and declared.
    pub control_plane_minor: Family<MinorLabels, Gauge>,
    /// 1, labelled with the observed and declared versions of each node group.
    pub node_groups: Family<NodeGroupVersionLabels, Gauge>,
    /// Each node group's minor versions, observed (the lowest running) and declared.
    pub node_group_minor: Family<NodeGroupMinorLabels, Gauge>,
    /// Components by health.
    pub components: Family<HealthLabel, Gauge>,
    /// When the last pass ended (Unix seconds).
    pub last_pass: Seconds,
    /// When the last successful pass ended: any phase but Failed or Blocked.
    pub last_success: Seconds,
    /// The poll interval, so alerts can say "no pass for 3 intervals".
    pub interval: Seconds,
}

/// `tidemark_seconds_since_last_success`, computed at each scrape (absent before the first
/// successful pass).
#[derive(Debug)]
struct SinceLastSuccess(Seconds);

impl Collector for SinceLastSuccess {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let last = self.0.get();
        if last <= 0.0 {
            return Ok(());
        }
        let since = (unix_now() - last).max(0.0);
        let metric = encoder.encode_descriptor(
            "seconds_since_last_success",
            "Seconds since the last successful pass ended (any phase but Failed or Blocked)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(since).encode(metric)
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` (already prefixed `tidemark`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            passes: Family::default(),
            pass_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            phase: Family::default(),
            steps: Counter::default(),
            errors: Family::default(),
            leader: Gauge::default(),
            info: Family::default(),
            control_plane: Family::default(),
            control_plane_minor: Family::default(),
            node_groups: Family::default(),
            node_group_minor: Family::default(),
            components: Family::default(),
            last_pass: Seconds::default(),
            last_success: Seconds::default(),
            interval: Seconds::default(),
        };
        let r = registry;
        r.register(
            "passes",
            "Passes of the control loop, by resulting phase",
            m.passes.clone(),
        );
        r.register(
            "pass_duration_seconds",
            "Duration of a pass",
            m.pass_duration.clone(),
        );
        r.register(
            "phase",
            "Current phase (1) of this cluster",
            m.phase.clone(),
        );
        r.register(
            "steps",
            "Steps executed: provider requests and component actions",
            m.steps.clone(),
        );
        r.register(
            "errors",
            "Passes that ended Failed or Blocked",
            m.errors.clone(),
        );
        r.register(
            "leader",
            "Whether this replica holds the Lease",
            m.leader.clone(),
        );
        r.register(
            "info",
            "The cluster this agent converges: cluster, wave, desired and applied revision, agent version",
            m.info.clone(),
        );
        r.register(
            "control_plane_version_info",
            "Observed and declared versions of the control plane",
            m.control_plane.clone(),
        );
        r.register(
            "control_plane_minor",
            "Minor version of the control plane, observed and declared",
            m.control_plane_minor.clone(),
        );
        r.register(
            "node_group_version_info",
            "Observed and declared versions of each node group",
            m.node_groups.clone(),
        );
        r.register(
            "node_group_minor",
            "Minor version of each node group, observed (the lowest running) and declared",
            m.node_group_minor.clone(),
        );
        r.register(
            "components",
            "Components of this cluster by health",
            m.components.clone(),
        );
        r.register(
            "last_pass_timestamp_seconds",
            "When the last pass ended",
            m.last_pass.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "When the last successful pass ended (any phase but Failed or Blocked)",
            m.last_success.clone(),
        );
        r.register(
            "interval_seconds",
            "Time between passes (before jitter)",
            m.interval.clone(),
        );
        r.register_collector(Box::new(SinceLastSuccess(m.last_success.clone())));
        m
    }

    /// Whether this replica holds the Lease. A standby drops the cluster's state (its
    /// phase, versions, components): the active replica reports it.
    pub fn set_leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
        if !leading {
            self.phase.clear();
            self.info.clear();
            self.clear_versions();
            self.components.clear();
        }
    }

    /// Records one finished pass: its phase, duration and steps, and the cluster's state
    /// from the record it wrote.
    pub fn record_pass(&self, report: &PassReport, seconds: f64) {
        let phase = report.phase;
        let steps = report.executed.len();
        let label = PhaseLabel {
            phase: phase.to_string(),
        };
        self.passes.get_or_create(&label).inc();
        self.pass_duration.observe(seconds);
        for p in Phase::ALL {
            self.phase
                .get_or_create(&PhaseLabel {
                    phase: p.to_string(),
                })
                .set(i64::from(p == phase));
        }
        self.steps.inc_by(u64::try_from(steps).unwrap_or(0));
        let now = unix_now();
        self.last_pass.set(now);
        if matches!(phase, Phase::Failed | Phase::Blocked) {
            self.errors.get_or_create(&label).inc();
        } else {
            self.last_success.set(now);
        }
        self.record_state(report);
    }

    /// The cluster's state, from the record after the pass.
    fn record_state(&self, report: &PassReport) {
        let record = &report.record;
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        self.info.clear();
        self.info
            .get_or_create(&InfoLabels {
                cluster: text(&record.cluster),
                wave: text(&record.wave),
                desired_revision: text(&record.desired_revision),
                applied_revision: text(&record.applied_revision),
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        self.clear_versions();
        if let Some(v) = &record.control_plane {
            self.control_plane
                .get_or_create(&VersionLabels {
                    observed: v.observed.clone(),
                    desired: v.desired.to_string(),
                })
                .set(1);
            for (version, minor) in minors(v) {
                self.control_plane_minor
                    .get_or_create(&MinorLabels { version })
                    .set(minor);
            }
        }
        for (group, v) in &record.node_groups {
            self.node_groups
                .get_or_create(&NodeGroupVersionLabels {
                    node_group: group.clone(),
                    observed: v.observed.clone(),
                    desired: v.desired.to_string(),
                })
                .set(1);
            for (version, minor) in minors(v) {
                self.node_group_minor
                    .get_or_create(&NodeGroupMinorLabels {
                        node_group: group.clone(),
                        version,
                    })
                    .set(minor);
            }
        }
        for health in [
            ComponentHealth::Pending,
            ComponentHealth::Progressing,
            ComponentHealth::Healthy,
            ComponentHealth::Failed,
        ] {
            let count = record
                .components
                .values()
                .filter(|c| c.health == health)
                .count();
            self.components
                .get_or_create(&HealthLabel {
                    health: health.to_string(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    fn clear_versions(&self) {
        self.control_plane.clear();
        self.control_plane_minor.clear();
        self.node_groups.clear();
        self.node_group_minor.clear();
    }
}

/// The observed minor (the lowest version running: `1.28.9..1.29.8` while a group is
/// mixed; none when nothing runs) and the declared one.
fn minors(v: &Versions) -> Vec<(&'static str, i64)> {
    let observed = v
        .observed
        .split("..")
        .next()
        .and_then(|o| KubeVersion::parse_observed(o).ok());
    let mut out = Vec::new();
    if let Some(o) = observed {
        out.push(("observed", i64::from(o.minor)));
    }
    out.push(("desired", i64::from(v.desired.minor)));
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::status::record::{ComponentRecord, Record};

    fn report(phase: Phase) -> Result<PassReport, Box<dyn std::error::Error>> {
        let component = |health| ComponentRecord {
            health,
            ..ComponentRecord::default()
        };
        Ok(PassReport {
            phase,
            message: String::new(),
            executed: vec!["step".into()],
            status_written: true,
            record: Record {
                cluster: Some("prod-eu-1".into()),
                wave: Some("early".into()),
                desired_revision: Some("abc".into()),
                applied_revision: Some("def".into()),
                control_plane: Some(Versions::new(
                    Some("1.29.8".parse()?),
                    None,
                    "1.30.4".parse()?,
                )),
                node_groups: BTreeMap::from([(
                    "gpu".to_string(),
                    Versions::new(
                        Some("1.28.9".parse()?),
                        Some("1.29.8".parse()?),
                        "1.29.8".parse()?,
                    ),
                )]),
                components: BTreeMap::from([
                    ("a".to_string(), component(ComponentHealth::Healthy)),
                    ("b".to_string(), component(ComponentHealth::Healthy)),
                    ("c".to_string(), component(ComponentHealth::Failed)),
                ]),
                ..Record::default()
            },
        })
    }

    fn scrape(registry: &Registry) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry)?;
        Ok(text)
    }

    #[test]
    fn a_pass_exports_the_cluster_state_and_a_standby_drops_it()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut registry = Registry::default();
        let m = Metrics::register(registry.sub_registry_with_prefix("tidemark"));
        assert!(!scrape(&registry)?.contains("tidemark_seconds_since_last_success"));
        m.set_leading(true);
        m.record_pass(&report(Phase::Progressing)?, 0.5);
        let text = scrape(&registry)?;
        for line in [
            "tidemark_info{cluster=\"prod-eu-1\",wave=\"early\",desired_revision=\"abc\",applied_revision=\"def\",version=\"0.1.0\"} 1",
            "tidemark_phase{phase=\"Progressing\"} 1",
            "tidemark_phase{phase=\"Blocked\"} 0",
            "tidemark_control_plane_version_info{observed=\"1.29.8\",desired=\"1.30.4\"} 1",
            "tidemark_node_group_version_info{node_group=\"gpu\",observed=\"1.28.9..1.29.8\",desired=\"1.29.8\"} 1",
            "tidemark_control_plane_minor{version=\"observed\"} 29",
            "tidemark_control_plane_minor{version=\"desired\"} 30",
            "tidemark_node_group_minor{node_group=\"gpu\",version=\"observed\"} 28",
            "tidemark_components{health=\"Healthy\"} 2",
            "tidemark_components{health=\"Failed\"} 1",
            "tidemark_components{health=\"Pending\"} 0",
            "tidemark_leader 1",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert!(
            text.contains("tidemark_seconds_since_last_success "),
            "{text}"
        );
        let success = m.last_success.get();
        assert!(success > 0.0 && m.last_pass.get() >= success);

        // A Blocked pass is not a success; a standby drops the cluster's state.
        m.record_pass(&report(Phase::Blocked)?, 0.5);
        assert_eq!(m.last_success.get(), success);
        m.set_leading(false);
        let text = scrape(&registry)?;
        for gone in [
            "tidemark_info{",
            "tidemark_phase{",
            "tidemark_components{",
            "tidemark_control_plane_minor{",
        ] {
            assert!(!text.contains(gone), "{gone} still in:\n{text}");
        }
        assert!(text.contains("tidemark_leader 0"), "{text}");
        Ok(())
    }
}
