//! Gates in front of a control-plane or node-group step: pause, a rollout already in
//! flight, the maintenance window, pre-flight health checks.

use jiff::Timestamp;
use tidemark_schema::DrainTimeoutAction;
use tidemark_schema::resolve::DesiredState;

use super::{Phase, Step};
use crate::observe::model::{NodeGroupObservation, Observed};

/// Why the plan must not act now, if anything holds it: the phase and a message naming it.
pub(super) fn paused(desired: &DesiredState, observed: &Observed) -> Option<String> {
    if desired.fleet_paused {
        return Some("the whole fleet is paused in git (fleet.yaml spec.paused: true)".into());
    }
    if desired.paused {
        return Some("paused in git (spec.paused: true)".into());
    }
    if observed.paused_annotation {
        return Some(
            "paused by the annotation tidemark.dev/paused=\"true\" on the status object".into(),
        );
    }
    None
}

/// Holds `next` back while a rollout is in flight, outside the maintenance window, or
/// while a pre-flight check fails.
pub(super) fn hold(
    desired: &DesiredState,
    observed: &Observed,
    next: &Step,
    now: Timestamp,
) -> Option<(Phase, String)> {
    // A request already in flight is followed, never issued twice.
    if let Some(target) = observed.control_plane_requested
        && target.is_newer_than(observed.control_plane)
    {
        return Some((
            Phase::Progressing,
            format!(
                "control plane upgrading {} -> {target}",
                observed.control_plane
            ),
        ));
    }
    if let Some(busy) = &observed.provider_busy {
        return Some((
            Phase::Progressing,
            format!("the provider reports a request in progress: {busy}"),
        ));
    }
    // A group tidemark drains itself (`drain: tidemark`) rolls by this very step, pass
    // after pass: its rollout is continued, not waited for, even outside the window.
    let drained_by_us = |name: &str| {
        desired
            .node_groups
            .iter()
            .any(|d| d.name == name && d.drain == tidemark_schema::DrainBy::Tidemark)
    };
    let continuing = matches!(next, Step::UpgradeNodeGroup { group, .. }
        if drained_by_us(group) && observed.node_groups.get(group).is_some_and(|g| g.is_rolling()));
    if continuing {
        return None;
    }
    if let Some((name, g)) = observed
        .node_groups
        .iter()
        .find(|(name, g)| g.is_rolling() && !drained_by_us(name))
    {
        return Some(rolling(desired, name, g, now));
    }
    if let Some(window) = &desired.maintenance_window
        && !window.is_open(now)
    {
        let next_open = window
            .next_open(now)
            .map(|t| format!("; next opens {t}"))
            .unwrap_or_default();
        return Some((
            Phase::Waiting,
            format!("{next} waits for the maintenance window{next_open}"),
        ));
    }
    if !observed.api_healthy {
        return Some((
            Phase::Waiting,
            "pre-flight check failed: the API server is not ready (/readyz)".into(),
        ));
    }
    if !observed.nodes_not_ready.is_empty() {
        let mut names = observed.nodes_not_ready.clone();
        names.sort();
        let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        let more = if names.len() > 5 {
            format!(" and {} more", names.len() - 5)
        } else {
            String::new()
        };
        return Some((
            Phase::Waiting,
            format!(
                "pre-flight check failed: {} node(s) not Ready: {}{more}",
                names.len(),
                shown.join(", ")
            ),
        ));
    }
    let found = super::preflight::findings(desired, observed, next);
    if !found.is_empty() {
        let named: Vec<String> = found.iter().map(ToString::to_string).collect();
        return Some((
            Phase::Waiting,
            format!(
                "{next} waits: pre-flight check failed: {}",
                named.join("; ")
            ),
        ));
    }
    None
}

/// Where node group `name` is in its rollout: what holds it (a drain: `Progressing`, then
/// `Blocked` after `drainTimeout` unless the group lets the provider force it), or how far
/// it is.
pub(super) fn rolling(
    desired: &DesiredState,
    name: &str,
    g: &NodeGroupObservation,
    now: Timestamp,
) -> (Phase, String) {
    if let Some(problem) = &g.provider_problem {
        let declared = desired.node_groups.iter().find(|d| d.name == name);
        let drain_timeout = declared.map(|d| d.drain_timeout.as_std());
        // The provider was told to give up draining after drainTimeout (Cluster API's
        // nodeDrainTimeout): the drain does not block, it ends by force.
        let forced = declared.is_some_and(|d| d.drain_timeout_action == DrainTimeoutAction::Force);
        let overdue = match (g.requested_at, drain_timeout) {
            (Some(at), Some(limit)) => now.duration_since(at).unsigned_abs() > limit,
            _ => false,
        };
        let limit = drain_timeout
            .map(|d| tidemark_schema::Duration(d).to_string())
            .unwrap_or_default();
        if problem.permanent || (overdue && !forced) {
            let why = if problem.permanent {
                String::new()
            } else {
                format!(" not finished within drainTimeout {limit}")
            };
            return (
                Phase::Blocked,
                format!("node group {name}: rollout{why}: {}", problem.message),
            );
        }
        let force = if forced {
            format!(
                "; the provider deletes the node anyway once drainTimeout {limit} has passed (drainTimeoutAction: force)"
            )
        } else {
            String::new()
        };
        return (
            Phase::Progressing,
            format!(
                "node group {name} rolling, held: {}{force}",
                problem.message
            ),
        );
    }
    let target = g
        .requested
        .or(g.max_kubelet)
        .map(|v| v.to_string())
        .unwrap_or_else(|| "?".into());
    let at_target = if g.min_kubelet == g.max_kubelet {
        g.nodes
    } else {
        g.nodes.saturating_sub(1)
    };
    (
        Phase::Progressing,
        format!(
            "node group {name} rolling to {target}: {} nodes, {} ready, {} cordoned{}",
            g.nodes,
            g.ready,
            g.cordoned,
            if at_target == g.nodes {
                ""
            } else {
                ", mixed kubelet versions"
            }
        ),
    )
}
