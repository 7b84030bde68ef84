//! The planner: desired state + observed state + clock -> the next step(s) and why.
//!
//! Pure and deterministic: no I/O, no clock of its own, no Kubernetes types. The rules
//! (DESIGN.md "Convergence order and rules"):
//! - the control plane moves one minor at a time; a declared 1.28 -> 1.30 runs as 1.29,
//!   then 1.30;
//! - before each control-plane hop, node groups that the hop would leave outside the
//!   provider's kubelet skew are brought along (as far as the current control plane, never
//!   above it, never past their own declared version); groups set to follow the control
//!   plane follow every hop;
//! - never downgrade: a declared version below the observed one is refused (`Blocked`);
//! - control-plane and node-group steps run only inside the maintenance window, while not
//!   paused, and after pre-flight checks pass (health, and [`preflight`]: removed APIs in
//!   use or rendered, disruption budgets that never allow an eviction); one disruptive
//!   step at a time.

mod components;
mod gates;
mod preflight;
mod skew;
#[cfg(test)]
mod tests;

use std::fmt;

use jiff::Timestamp;
use tidemark_schema::KubeVersion;
use tidemark_schema::resolve::DesiredState;

use crate::observe::model::Observed;

pub use components::{ApplyReason, CheckReason, Inputs, plan};
pub use preflight::{
    Check as PreflightCheck, Finding, findings as preflight_findings, never_evicts,
};
pub use skew::Downgrade;
pub use tidemark_schema::ComponentPhase;

/// The phase a pass ends in, as written to `tidemark.dev/phase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Observed equals desired.
    Converged,
    /// A step was (or is being) executed.
    Progressing,
    /// Nothing can be done now but will be later (window, rollout in progress, checks).
    Waiting,
    /// A person must act (downgrade declared, node group too far behind, no manifest).
    Blocked,
    /// A transient failure; retried with backoff.
    Failed,
    /// Paused in git or by the local annotation.
    Paused,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 6] = [
        Phase::Converged,
        Phase::Progressing,
        Phase::Waiting,
        Phase::Blocked,
        Phase::Failed,
        Phase::Paused,
    ];

    /// Its name, as written to `tidemark.dev/phase` and used as an Event reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Converged => "Converged",
            Phase::Progressing => "Progressing",
            Phase::Waiting => "Waiting",
            Phase::Blocked => "Blocked",
            Phase::Failed => "Failed",
            Phase::Paused => "Paused",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a phase"))
    }
}

/// One actuation. Steps are idempotent: executing one whose target is already requested
/// is a no-op for the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Move the control plane by one minor (or to a later patch of its minor).
    UpgradeControlPlane {
        /// Observed version.
        from: KubeVersion,
        /// Target version.
        to: KubeVersion,
    },
    /// Move a node group's kubelets.
    UpgradeNodeGroup {
        /// Group name.
        group: String,
        /// Its oldest kubelet now.
        from: Option<KubeVersion>,
        /// Target version.
        to: KubeVersion,
        /// Why now.
        reason: NodeGroupReason,
        /// Nodes that may be unavailable at once.
        max_unavailable: u32,
        /// Longest drain of one node.
        drain_timeout: std::time::Duration,
    },
    /// Render a component and apply it (then prune what it no longer renders, then wait
    /// for its health).
    ApplyComponent {
        /// Component name.
        name: String,
        /// Its declared phase.
        phase: ComponentPhase,
        /// Why.
        reason: ApplyReason,
    },
    /// Read a component's state: its health while it rolls out, or drift from what was
    /// applied (corrected by re-applying the drifted objects).
    CheckComponent {
        /// Component name.
        name: String,
        /// Its declared phase.
        phase: ComponentPhase,
        /// What to check.
        reason: CheckReason,
    },
    /// Delete every object of a component that is no longer declared.
    PruneComponent {
        /// Component name.
        name: String,
    },
}

impl Step {
    /// Where the step runs in a pass (DESIGN.md "Convergence order"): components
    /// `before-control-plane` (0), the control plane (1), components `after-control-plane`
    /// (2), node groups (3), components `after-node-groups` and removed components (4).
    /// A component that ends a step unhealthy holds every later rank of the same pass.
    pub fn rank(&self) -> u8 {
        let of_phase = |p: &ComponentPhase| match p {
            ComponentPhase::BeforeControlPlane => 0,
            ComponentPhase::AfterControlPlane => 2,
            ComponentPhase::AfterNodeGroups => 4,
        };
        match self {
            Step::ApplyComponent { phase, .. } | Step::CheckComponent { phase, .. } => {
                of_phase(phase)
            }
            Step::UpgradeControlPlane { .. } => 1,
            Step::UpgradeNodeGroup { .. } => 3,
            Step::PruneComponent { .. } => 4,
        }
    }

    /// Whether the step changes the control plane or node groups (at most one per pass).
    pub fn is_disruptive(&self) -> bool {
        matches!(
            self,
            Step::UpgradeControlPlane { .. } | Step::UpgradeNodeGroup { .. }
        )
    }
}

/// Why a node-group step is planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeGroupReason {
    /// The next control-plane hop would put it outside the allowed kubelet skew.
    Skew,
    /// It follows every control-plane hop.
    FollowsControlPlane,
    /// The control plane is done; the group moves to its declared version.
    Declared,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::UpgradeControlPlane { from, to } => {
                write!(f, "upgrade control plane {from} -> {to}")
            }
            Step::UpgradeNodeGroup {
                group,
                from,
                to,
                reason,
                ..
            } => {
                let from = from
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "(no nodes)".into());
                let why = match reason {
                    NodeGroupReason::Skew => {
                        "to stay within kubelet skew of the next control-plane minor"
                    }
                    NodeGroupReason::FollowsControlPlane => "following the control plane",
                    NodeGroupReason::Declared => "to its declared version",
                };
                write!(f, "upgrade node group {group} {from} -> {to} ({why})")
            }
            Step::ApplyComponent { name, reason, .. } => {
                let why = match reason {
                    ApplyReason::New => "new",
                    ApplyReason::Changed => "chart, version or values changed",
                    ApplyReason::Retry => "retrying the last failed apply",
                    ApplyReason::Capabilities => {
                        "rendered again for the cluster's Kubernetes version and APIs"
                    }
                };
                write!(f, "apply component {name} ({why})")
            }
            Step::CheckComponent { name, reason, .. } => match reason {
                CheckReason::Health => write!(f, "check health of component {name}"),
                CheckReason::Drift => write!(f, "check component {name} for drift"),
            },
            Step::PruneComponent { name } => {
                write!(f, "prune component {name} (no longer declared)")
            }
        }
    }
}

/// The planner's answer for one pass.
///
/// - `steps` hold at most one disruptive step (control plane or node group);
/// - while a declaration is refused (`refused`), `steps` and `remaining` are empty:
///   nothing of that commit is applied, components included;
/// - `phase` assumes the steps succeed; the pass concludes from what they did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The phase to report if the steps succeed.
    pub phase: Phase,
    /// Steps to execute now, in order (at most one disruptive step).
    pub steps: Vec<Step>,
    /// The whole sequence still ahead from the observed state, `steps` first, assuming each
    /// step succeeds (shown by `tidemark plan`).
    pub remaining: Vec<Step>,
    /// A sentence naming what happens or what blocks.
    pub message: String,
    /// Things to report that do not change the phase (versions changed outside tidemark).
    pub notes: Vec<String>,
    /// The control plane and node groups alone, components aside.
    pub versions: Verdict,
    /// Declarations refused because they would downgrade what runs.
    pub refused: Vec<Downgrade>,
}

/// Where the control plane and node groups stand, components aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Their phase.
    pub phase: Phase,
    /// What happens or what blocks.
    pub message: String,
}

/// Whether the cluster is built from a ClusterClass (Cluster API topology).
fn is_topology(desired: &DesiredState) -> bool {
    matches!(&desired.provider, tidemark_schema::Provider::ClusterApi(p) if p.topology)
}

/// Plans the next step of the control plane and node groups (components are woven in by
/// [`plan`]).
fn plan_versions(desired: &DesiredState, observed: &Observed, now: Timestamp) -> Plan {
    let notes = skew::foreign_changes(desired, observed);
    let refused = skew::downgrades(desired, observed);
    let answer = |phase: Phase, steps: Vec<Step>, remaining: Vec<Step>, message: String| Plan {
        versions: Verdict {
            phase,
            message: message.clone(),
        },
        phase,
        steps,
        remaining,
        message,
        notes: notes.clone(),
        refused: refused.clone(),
    };
    if let Some(message) = gates::paused(desired, observed) {
        let remaining = skew::route(desired, observed).unwrap_or_default();
        return answer(Phase::Paused, vec![], remaining, message);
    }
    let mut route = match skew::route(desired, observed) {
        Ok(route) => route,
        Err(blocked) => return answer(Phase::Blocked, vec![], vec![], blocked),
    };
    if is_topology(desired) {
        // The topology controller moves every MachineDeployment after the control plane:
        // node groups take no step of their own. And Cluster API's webhook refuses the next
        // `topology.version` until the control plane and every MachineDeployment run the
        // current one: a node group behind the control plane (behind its declared version once
        // the control plane is there) or still rolling is waited for.
        route.retain(|s| !matches!(s, Step::UpgradeNodeGroup { .. }));
        let lagging = desired.node_groups.iter().find_map(|d| {
            let g = observed.node_groups.get(&d.name)?;
            let target = if route.is_empty() {
                d.version
            } else {
                observed.control_plane
            };
            let behind = g.min_kubelet.is_none_or(|v| !target.satisfied_by(v)) || g.is_rolling();
            behind.then_some((&d.name, g))
        });
        if let Some((name, g)) = lagging {
            if g.is_rolling() {
                let (phase, message) = gates::rolling(desired, name, g, now);
                return answer(phase, vec![], route, message);
            }
            let at = g
                .min_kubelet
                .map(|v| v.to_string())
                .unwrap_or_else(|| "no nodes".into());
            let message = format!(
                "node group {name} follows the control plane (ClusterClass topology): oldest kubelet {at}"
            );
            return answer(Phase::Progressing, vec![], route, message);
        }
    }
    let Some(next) = route.first().cloned() else {
        let message = format!("converged: control plane {}", observed.control_plane);
        return answer(Phase::Converged, vec![], vec![], message);
    };
    if let Some((phase, message)) = gates::hold(desired, observed, &next, now) {
        return answer(phase, vec![], route, message);
    }
    let message = next.to_string();
    answer(Phase::Progressing, vec![next], route, message)
}
