//! The agent's own metrics: passes, their duration and phase, steps, and the Lease, under
//! the `tidemark_` prefix. (Modules register what they own: the renderer its helm count.)

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::plan::Phase;

/// Labels of per-phase metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// The phase.
    pub phase: String,
}

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
        m
    }

    /// Records one finished pass.
    pub fn record_pass(&self, phase: Phase, seconds: f64, steps: usize) {
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
        if matches!(phase, Phase::Failed | Phase::Blocked) {
            self.errors.get_or_create(&label).inc();
        }
    }
}
