//! Version skew: the route from the observed versions to the declared ones, one
//! control-plane minor at a time, node groups brought along as the provider's kubelet skew
//! requires, never a downgrade.

use std::collections::BTreeMap;

use tidemark_schema::KubeVersion;
use tidemark_schema::resolve::{DesiredNodeGroup, DesiredState};

use super::{NodeGroupReason, Step};
use crate::observe::model::Observed;

/// A route is at most this long: far more than any real upgrade (a step per minor per group).
const MAX_ROUTE: usize = 512;

/// Versions declared below what runs and not explained by a foreign change, or a group
/// that cannot be placed: a person must act. `Err` carries the message.
pub(super) fn route(desired: &DesiredState, observed: &Observed) -> Result<Vec<Step>, String> {
    let refused = downgrades(desired, observed);
    if !refused.is_empty() {
        let reasons: Vec<String> = refused.iter().map(ToString::to_string).collect();
        return Err(reasons.join("; "));
    }
    let skew = allowed_lag(desired);
    let mut cp = observed.control_plane;
    let mut groups: BTreeMap<&str, KubeVersion> = BTreeMap::new();
    for g in &desired.node_groups {
        let Some(obs) = observed.node_groups.get(&g.name) else {
            return Err(format!(
                "node group {}: no nodes and no provider object found for it",
                g.name
            ));
        };
        let Some(v) = obs.effective_version() else {
            return Err(format!(
                "node group {}: no nodes and no provider version to upgrade from",
                g.name
            ));
        };
        groups.insert(&g.name, v);
    }
    // The target of the control plane: the declared version, or what runs if that is newer
    // (a foreign change is kept, never moved down).
    let cp_goal = if cp.is_newer_than(desired.control_plane) {
        cp
    } else {
        desired.control_plane
    };

    let mut steps = Vec::new();
    while steps.len() < MAX_ROUTE {
        let next_cp = next_control_plane(cp, cp_goal).map(|v| {
            if v.patch.is_none() {
                desired.landing(v)
            } else {
                v
            }
        });
        if let Some(step) = bring_along(desired, &groups, cp, next_cp, skew)? {
            if let Step::UpgradeNodeGroup { group, to, .. } = &step
                && let Some(v) = groups.get_mut(group.as_str())
            {
                *v = *to;
            }
            steps.push(step);
            continue;
        }
        if let Some(to) = next_cp {
            steps.push(Step::UpgradeControlPlane { from: cp, to });
            cp = to;
            continue;
        }
        // Control plane done: groups to their declared versions, in declared order.
        let Some(g) = desired.node_groups.iter().find(|g| {
            groups
                .get(g.name.as_str())
                .is_some_and(|v| needs_move(g.version, *v))
        }) else {
            return Ok(steps);
        };
        let from = groups.get(g.name.as_str()).copied();
        steps.push(group_step(g, from, g.version, NodeGroupReason::Declared));
        groups.insert(&g.name, g.version);
    }
    Err("internal error: the upgrade route did not converge; please report this".into())
}

/// A declared version below what runs that git lowered (not explained by a foreign
/// change): refused, and nothing of the commit that declares it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downgrade {
    /// The node group, or `None` for the control plane.
    pub node_group: Option<String>,
    /// What runs (a group's newest kubelet).
    pub running: KubeVersion,
    /// What git declares.
    pub declared: KubeVersion,
}

impl std::fmt::Display for Downgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            node_group,
            running,
            declared,
        } = self;
        match node_group {
            None => write!(
                f,
                "control plane runs {running}, newer than the declared {declared}: tidemark never downgrades; declare {running} or later"
            ),
            Some(g) => write!(
                f,
                "node group {g} runs {running}, newer than the declared {declared}: tidemark never downgrades"
            ),
        }
    }
}

/// Every lowered declaration: a version declared below what runs, where the declaration
/// tidemark accepted before was not lower (so git lowered it; a version raised outside
/// tidemark is a foreign change instead).
pub(super) fn downgrades(desired: &DesiredState, observed: &Observed) -> Vec<Downgrade> {
    let previous = observed.previous_desired.as_ref();
    let mut out = Vec::new();
    let cp = observed.control_plane;
    if cp.is_newer_than(desired.control_plane)
        && lowered(
            previous.and_then(|p| p.control_plane),
            desired.control_plane,
        )
    {
        out.push(Downgrade {
            node_group: None,
            running: cp,
            declared: desired.control_plane,
        });
    }
    for g in &desired.node_groups {
        let Some(obs) = observed.node_groups.get(&g.name) else {
            continue;
        };
        let Some(newest) = obs.max_kubelet.or(obs.effective_version()) else {
            continue;
        };
        if newest.is_newer_than(g.version)
            && lowered(
                previous.and_then(|p| p.node_groups.get(&g.name).copied()),
                g.version,
            )
        {
            out.push(Downgrade {
                node_group: Some(g.name.clone()),
                running: newest,
                declared: g.version,
            });
        }
    }
    out
}

/// How many minors a group may lag the control plane. A provider skew of 0 (EKS managed
/// node groups) means "match the control plane before its next hop": right after a hop the
/// group lags by one until it is moved, so the lag allowed in between is at least 1.
pub(super) fn allowed_lag(desired: &DesiredState) -> i64 {
    i64::from(desired.provider.max_kubelet_skew()).max(1)
}

/// Whether `declared` is lower than what was declared before (a downgrade written in git).
/// Without a record, a declared version below the running one counts as lowered: refusing
/// is the safe reading.
fn lowered(before: Option<KubeVersion>, declared: KubeVersion) -> bool {
    before.is_none_or(|b| b.is_newer_than(declared))
}

/// Whether a group at `current` still has to move to reach `declared` (never down).
fn needs_move(declared: KubeVersion, current: KubeVersion) -> bool {
    !declared.satisfied_by(current) && !current.is_newer_than(declared)
}

/// The next control-plane version on the way from `cp` to `goal`: the next minor (the
/// goal itself when it is that minor), or the goal's patch within the same minor.
pub(super) fn next_control_plane(cp: KubeVersion, goal: KubeVersion) -> Option<KubeVersion> {
    if goal.satisfied_by(cp) || cp.is_newer_than(goal) {
        return None;
    }
    if goal.minor_gap(cp) > 1 {
        Some(cp.next_minor())
    } else {
        Some(goal)
    }
}

/// The node-group step needed before the control plane may move to `next_cp` (or, when
/// the control plane is done, none): a group that is or would be outside the skew, or that
/// follows the control plane and lags it.
fn bring_along(
    desired: &DesiredState,
    groups: &BTreeMap<&str, KubeVersion>,
    cp: KubeVersion,
    next_cp: Option<KubeVersion>,
    skew: i64,
) -> Result<Option<Step>, String> {
    for g in &desired.node_groups {
        let Some(&v) = groups.get(g.name.as_str()) else {
            continue;
        };
        let too_far_now = cp.minor_gap(v) > skew;
        let too_far_next = next_cp.is_some_and(|t| t.minor_gap(v) > skew);
        // Followers catch up before the next hop; after the last one they simply move to
        // their declared version.
        let follows = g.follow_control_plane
            && next_cp.is_some()
            && cp.minor_gap(v) > 0
            && g.version.minor_gap(v) > 0;
        if !(too_far_now || too_far_next || follows) {
            continue;
        }
        // As far as the control plane, never above it, never past the declared version.
        // The skew policy is about minors: a kubelet of the control plane's minor may carry
        // a later patch (intermediate hops land on whatever patch the provider picks).
        let to = if g.version.minor_gap(cp) > 0 {
            cp
        } else {
            g.version
        };
        if !to.is_newer_than(v) {
            let limit = next_cp.unwrap_or(cp);
            return Err(format!(
                "node group {} is at {v} and declared at {}: the control plane cannot move to {limit} while the group is more than {skew} minor(s) behind",
                g.name, g.version
            ));
        }
        let reason = if too_far_now || too_far_next {
            NodeGroupReason::Skew
        } else {
            NodeGroupReason::FollowsControlPlane
        };
        return Ok(Some(group_step(g, Some(v), to, reason)));
    }
    Ok(None)
}

fn group_step(
    g: &DesiredNodeGroup,
    from: Option<KubeVersion>,
    to: KubeVersion,
    reason: NodeGroupReason,
) -> Step {
    Step::UpgradeNodeGroup {
        group: g.name.clone(),
        from,
        to,
        reason,
        max_unavailable: g.max_unavailable,
        drain_timeout: g.drain_timeout.as_std(),
    }
}

/// Versions that run newer than declared although git did not lower them: changed outside
/// tidemark. Reported, never moved back down.
pub(super) fn foreign_changes(desired: &DesiredState, observed: &Observed) -> Vec<String> {
    let previous = observed.previous_desired.as_ref();
    let mut notes = Vec::new();
    let cp = observed.control_plane;
    if cp.is_newer_than(desired.control_plane)
        && !lowered(
            previous.and_then(|p| p.control_plane),
            desired.control_plane,
        )
    {
        notes.push(format!(
            "foreign change: control plane runs {cp}, newer than the declared {} (changed outside tidemark; kept)",
            desired.control_plane
        ));
    }
    for g in &desired.node_groups {
        let Some(newest) = observed
            .node_groups
            .get(&g.name)
            .and_then(|o| o.max_kubelet)
        else {
            continue;
        };
        let before = previous.and_then(|p| p.node_groups.get(&g.name).copied());
        if newest.is_newer_than(g.version) && !lowered(before, g.version) {
            notes.push(format!(
                "foreign change: node group {} runs {newest}, newer than the declared {} (changed outside tidemark; kept)",
                g.name, g.version
            ));
        }
    }
    notes
}
