//! Components in the plan: which component steps a pass takes, and where they go among the
//! control-plane and node-group steps.
//!
//! - A component whose inputs (chart, version, merged values: their sha256, computed from
//!   git by the pass) or whose cluster capabilities (control-plane minor, served APIs)
//!   differ from those of its last complete apply is applied; equal inputs mean no render
//!   and no apply.
//! - An applied component that is not yet healthy is checked (read-only); a healthy one is
//!   checked for drift when the drift interval has passed.
//! - Phases (DESIGN.md "Convergence order"): `before-control-plane` components may always
//!   be applied, and ahead of a control-plane step; `after-control-plane` ones once the
//!   control plane has reached its declared version; `after-node-groups` ones once the
//!   control plane and every node group have converged. Component-only changes need no
//!   other step.
//! - Components recorded in the status but no longer declared are pruned.
//! - Pausing (git or the local annotation) stops components too.
//! - A refused declaration (a downgrade) refuses the whole commit: no component step.

use std::collections::BTreeMap;

use jiff::Timestamp;
use tidemark_schema::resolve::DesiredState;

use super::{ComponentPhase, Phase, Plan, Step, plan_versions};
use crate::observe::model::{ComponentHealth, Observed};

/// The desired inputs of one component, as the pass read them from git.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inputs {
    /// sha256 of chart, version and merged values.
    Digest(String),
    /// They could not be read (the apply step reports why).
    Unreadable(String),
}

/// Why a component is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyReason {
    /// Never applied.
    New,
    /// Its chart, version or values changed.
    Changed,
    /// The last apply of these inputs failed.
    Retry,
    /// The cluster's version or served APIs changed: rendered again (applied only if the
    /// render changed).
    Capabilities,
}

/// What a component check looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckReason {
    /// Its workloads are still rolling out (or failed to).
    Health,
    /// The drift interval has passed.
    Drift,
}

/// Plans one pass: the control plane and node groups with the component steps woven in
/// by phase. `inputs` are the digests of the components' inputs at the desired commit.
pub fn plan(
    desired: &DesiredState,
    inputs: &BTreeMap<String, Inputs>,
    observed: &Observed,
    now: Timestamp,
) -> Plan {
    let mut base = plan_versions(desired, observed, now);
    if base.phase == Phase::Paused || !base.refused.is_empty() {
        return base;
    }
    let cp_steps_left = base
        .remaining
        .iter()
        .any(|s| matches!(s, Step::UpgradeControlPlane { .. }));
    let control_plane_done = base.phase != Phase::Blocked
        && !cp_steps_left
        && observed.control_plane_requested.is_none()
        && !desired.control_plane.is_newer_than(observed.control_plane);
    let everything_done = base.phase == Phase::Converged;

    let mut now_steps: Vec<Step> = Vec::new();
    let mut held: Vec<Step> = Vec::new();
    let capabilities = observed.capabilities.digest();
    for c in &desired.components {
        let record = observed.components.get(&c.name);
        let rendered_for_now = record.and_then(|r| r.capabilities.as_ref()) == Some(&capabilities);
        let step = match inputs.get(&c.name) {
            Some(Inputs::Digest(d))
                if record.and_then(|r| r.inputs.as_ref()) == Some(d) && rendered_for_now =>
            {
                let health = record.map(|r| r.health).unwrap_or_default();
                if health != ComponentHealth::Healthy {
                    Some(Step::CheckComponent {
                        name: c.name.clone(),
                        phase: c.phase,
                        reason: CheckReason::Health,
                    })
                } else if observed.drift_due {
                    Some(Step::CheckComponent {
                        name: c.name.clone(),
                        phase: c.phase,
                        reason: CheckReason::Drift,
                    })
                } else {
                    None
                }
            }
            wanted => {
                let digest = match wanted {
                    Some(Inputs::Digest(d)) => Some(d),
                    _ => None,
                };
                let reason = match record {
                    None => ApplyReason::New,
                    Some(r) if digest.is_some() && r.failed_inputs.as_ref() == digest => {
                        ApplyReason::Retry
                    }
                    Some(r) if r.inputs.is_none() => ApplyReason::New,
                    Some(r) if r.inputs.as_ref() == digest => ApplyReason::Capabilities,
                    Some(_) => ApplyReason::Changed,
                };
                Some(Step::ApplyComponent {
                    name: c.name.clone(),
                    phase: c.phase,
                    reason,
                })
            }
        };
        let Some(step) = step else { continue };
        let eligible = match c.phase {
            ComponentPhase::BeforeControlPlane => true,
            ComponentPhase::AfterControlPlane => control_plane_done,
            ComponentPhase::AfterNodeGroups => everything_done,
        };
        // Checks only read (a drift correction re-applies what is already applied).
        if eligible || matches!(step, Step::CheckComponent { .. }) {
            now_steps.push(step);
        } else {
            held.push(step);
        }
    }
    for name in observed.components.keys() {
        if !desired.components.iter().any(|c| &c.name == name) {
            now_steps.push(Step::PruneComponent { name: name.clone() });
        }
    }

    let component_work = now_steps.iter().any(|s| !s.is_disruptive());
    // Steps of this pass: components and the base's (at most one disruptive) step, by rank.
    let mut steps: Vec<Step> = now_steps.clone();
    steps.extend(base.steps.iter().cloned());
    steps.sort_by_key(Step::rank);
    // The whole road ahead, for `tidemark plan`: components of a phase sit where that
    // phase runs relative to the route.
    base.remaining = weave(
        &base.remaining,
        now_steps.into_iter().chain(held.iter().cloned()),
    );

    if !held.is_empty() {
        let names: Vec<String> = held
            .iter()
            .filter_map(|s| match s {
                Step::ApplyComponent { name, phase, .. } => Some(format!(
                    "{name} waits for {}",
                    match phase {
                        ComponentPhase::AfterControlPlane => "the control plane",
                        _ => "the control plane and node groups",
                    }
                )),
                _ => None,
            })
            .collect();
        base.notes.push(format!("component {}", names.join(", ")));
    }
    if base.phase == Phase::Converged && component_work {
        base.phase = Phase::Progressing;
        base.message = steps
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
    }
    base.steps = steps;
    base
}

/// `route` with component steps inserted where their phase runs: `before-control-plane`
/// first, `after-control-plane` right after the last control-plane step, the rest last.
fn weave(route: &[Step], components: impl Iterator<Item = Step>) -> Vec<Step> {
    let mut before = Vec::new();
    let mut after_cp = Vec::new();
    let mut last = Vec::new();
    for s in components {
        match s.rank() {
            0 => before.push(s),
            2 => after_cp.push(s),
            _ => last.push(s),
        }
    }
    let last_cp = route
        .iter()
        .rposition(|s| matches!(s, Step::UpgradeControlPlane { .. }));
    let mut out = before;
    match last_cp {
        Some(i) => {
            out.extend(route[..=i].iter().cloned());
            out.extend(after_cp);
            out.extend(route[i + 1..].iter().cloned());
        }
        None => {
            out.extend(after_cp);
            out.extend(route.iter().cloned());
        }
    }
    out.extend(last);
    out
}
