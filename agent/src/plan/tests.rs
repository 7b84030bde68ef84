//! Planner rules, one test per rule, and property tests over random observed states.

use std::collections::BTreeMap;

use jiff::Timestamp;
use proptest::prelude::*;
use tidemark_schema::resolve::DesiredState;
use tidemark_schema::{KubeVersion, MaintenanceWindow};

use super::{NodeGroupReason, Phase, Plan, Step, plan_versions};
use crate::fixtures::{DesiredExt, desired, now, observed, v};
use crate::observe::model::{Observed, PreviousDesired};

fn cp_step(from: &str, to: &str) -> Step {
    Step::UpgradeControlPlane {
        from: v(from),
        to: v(to),
    }
}

fn group_step(group: &str, from: &str, to: &str, reason: NodeGroupReason) -> Step {
    Step::UpgradeNodeGroup {
        group: group.into(),
        from: Some(v(from)),
        to: v(to),
        reason,
        max_unavailable: 1,
        drain_timeout: std::time::Duration::from_secs(600),
    }
}

#[test]
fn converged_when_observed_meets_desired() {
    let p = plan_versions(
        &desired("1.30").group("general", "1.30"),
        &observed("1.30.4", &[("general", "1.30.4")]),
        now(),
    );
    assert_eq!(p.phase, Phase::Converged);
    assert!(p.steps.is_empty() && p.remaining.is_empty());
}

#[test]
fn control_plane_moves_one_minor_at_a_time() {
    let d = desired("1.30.4").group("general", "1.30.4");
    let p = plan_versions(&d, &observed("1.28.9", &[("general", "1.28.9")]), now());
    assert_eq!(p.phase, Phase::Progressing);
    assert_eq!(p.steps, [cp_step("1.28.9", "1.29")]);
    assert_eq!(
        p.remaining,
        [
            cp_step("1.28.9", "1.29"),
            cp_step("1.29", "1.30.4"),
            group_step("general", "1.28.9", "1.30.4", NodeGroupReason::Declared),
        ]
    );
    assert_eq!(p.message, "upgrade control plane 1.28.9 -> 1.29");
}

#[test]
fn intermediate_hops_land_on_known_patch_releases() {
    let mut d = desired("1.31.2").group("g", "1.29.8");
    d.patch_releases = vec![v("1.29.8"), v("1.30.1"), v("1.30.6"), v("1.31.2")];
    let p = plan_versions(&d, &observed("1.28.9", &[("g", "1.28.9")]), now());
    assert_eq!(
        p.remaining,
        [
            cp_step("1.28.9", "1.29.8"),
            cp_step("1.29.8", "1.30.6"),
            // Skew 3 would allow 1.28 under 1.31, but the group is declared at 1.29.8.
            cp_step("1.30.6", "1.31.2"),
            group_step("g", "1.28.9", "1.29.8", NodeGroupReason::Declared),
        ]
    );
}

#[test]
fn patch_upgrade_within_a_minor_is_one_step() {
    let p = plan_versions(
        &desired("1.29.8").group("g", "1.29.2"),
        &observed("1.29.2", &[("g", "1.29.2")]),
        now(),
    );
    assert_eq!(p.remaining, [cp_step("1.29.2", "1.29.8")]);
}

#[test]
fn node_group_brought_along_only_when_the_next_hop_breaks_skew() {
    // Upstream skew 3: a group at 1.26 may stay while the control plane goes to 1.29, but
    // must move before 1.30.
    let d = desired("1.30.4").group("old", "1.30.4");
    let p = plan_versions(&d, &observed("1.28.9", &[("old", "1.26.5")]), now());
    assert_eq!(
        p.remaining,
        [
            cp_step("1.28.9", "1.29"),
            group_step("old", "1.26.5", "1.29", NodeGroupReason::Skew),
            cp_step("1.29", "1.30.4"),
            group_step("old", "1.29", "1.30.4", NodeGroupReason::Declared),
        ]
    );
}

#[test]
fn zero_skew_provider_moves_groups_before_every_hop() {
    let d = desired("1.30.4").group("ng", "1.30.4").skew(0);
    let p = plan_versions(&d, &observed("1.28.9", &[("ng", "1.28.9")]), now());
    assert_eq!(
        p.remaining,
        [
            // Skew 0: the group must match the control plane before each next hop.
            cp_step("1.28.9", "1.29"),
            group_step("ng", "1.28.9", "1.29", NodeGroupReason::Skew),
            cp_step("1.29", "1.30.4"),
            group_step("ng", "1.29", "1.30.4", NodeGroupReason::Declared),
        ]
    );
    // Skew 0 and the group already behind the control plane: it moves first.
    let p = plan_versions(&d, &observed("1.29.8", &[("ng", "1.28.9")]), now());
    assert_eq!(
        p.steps,
        [group_step("ng", "1.28.9", "1.29.8", NodeGroupReason::Skew)]
    );
}

#[test]
fn following_groups_follow_every_hop() {
    let d = desired("1.31.1")
        .following("auto", "1.31.1")
        .group("fixed", "1.29.3");
    let p = plan_versions(
        &d,
        &observed("1.29.3", &[("auto", "1.29.3"), ("fixed", "1.29.3")]),
        now(),
    );
    assert_eq!(
        p.remaining,
        [
            cp_step("1.29.3", "1.30"),
            group_step(
                "auto",
                "1.29.3",
                "1.30",
                NodeGroupReason::FollowsControlPlane
            ),
            cp_step("1.30", "1.31.1"),
            group_step("auto", "1.30", "1.31.1", NodeGroupReason::Declared),
        ]
    );
}

#[test]
fn group_never_goes_above_its_declared_version_when_brought_along() {
    // The group is declared at 1.27; skew 3 lets the control plane reach 1.30 with it.
    let d = desired("1.30.2").group("legacy", "1.27.16");
    let p = plan_versions(&d, &observed("1.28.9", &[("legacy", "1.26.15")]), now());
    assert_eq!(
        p.remaining,
        [
            cp_step("1.28.9", "1.29"),
            group_step("legacy", "1.26.15", "1.27.16", NodeGroupReason::Skew),
            cp_step("1.29", "1.30.2"),
        ]
    );
}

#[test]
fn downgrade_declared_is_blocked_and_nothing_changes() {
    let mut o = observed("1.30.4", &[("general", "1.30.4")]);
    o.previous_desired = Some(PreviousDesired {
        control_plane: Some(v("1.30.4")),
        node_groups: BTreeMap::new(),
    });
    let p = plan_versions(&desired("1.29.8").group("general", "1.29.8"), &o, now());
    assert_eq!(p.phase, Phase::Blocked);
    assert!(p.steps.is_empty());
    // Every refused declaration is named.
    assert_eq!(
        p.message,
        "control plane runs 1.30.4, newer than the declared 1.29.8: tidemark never downgrades; declare 1.30.4 or later; \
         node group general runs 1.30.4, newer than the declared 1.29.8: tidemark never downgrades"
    );
    assert_eq!(p.refused.len(), 2);
    // Without any record, a declared version below the running one is refused too.
    let p = plan_versions(
        &desired("1.29.8").group("general", "1.29.8"),
        &observed("1.30.4", &[("general", "1.30.4")]),
        now(),
    );
    assert_eq!(p.phase, Phase::Blocked);
}

#[test]
fn node_group_downgrade_is_blocked() {
    let mut o = observed("1.30.4", &[("gpu", "1.30.4")]);
    o.previous_desired = Some(PreviousDesired {
        control_plane: Some(v("1.30.4")),
        node_groups: [("gpu".into(), v("1.30.4"))].into(),
    });
    let p = plan_versions(&desired("1.30.4").group("gpu", "1.29.1"), &o, now());
    assert_eq!(p.phase, Phase::Blocked);
    assert_eq!(
        p.message,
        "node group gpu runs 1.30.4, newer than the declared 1.29.1: tidemark never downgrades"
    );
}

#[test]
fn foreign_change_is_reported_and_kept() {
    // Git still says 1.29.2 as before; the provider auto-upgraded to 1.29.5.
    let mut o = observed("1.29.5", &[("general", "1.29.2")]);
    o.previous_desired = Some(PreviousDesired {
        control_plane: Some(v("1.29.2")),
        node_groups: BTreeMap::new(),
    });
    let p = plan_versions(&desired("1.29.2").group("general", "1.29.2"), &o, now());
    assert_eq!(p.phase, Phase::Converged);
    assert_eq!(
        p.notes,
        [
            "foreign change: control plane runs 1.29.5, newer than the declared 1.29.2 (changed outside tidemark; kept)"
        ]
    );
}

#[test]
fn paused_in_git_or_by_annotation() {
    let mut d = desired("1.30.4").group("g", "1.30.4");
    d.paused = true;
    let p = plan_versions(&d, &observed("1.29.8", &[("g", "1.29.8")]), now());
    assert_eq!(
        (p.phase, p.message.as_str()),
        (Phase::Paused, "paused in git (spec.paused: true)")
    );
    assert!(p.steps.is_empty());
    assert_eq!(
        p.remaining.len(),
        2,
        "the plan still shows what would happen"
    );

    let mut o = observed("1.29.8", &[("g", "1.29.8")]);
    o.paused_annotation = true;
    let p = plan_versions(&desired("1.30.4").group("g", "1.30.4"), &o, now());
    assert_eq!(p.phase, Phase::Paused);
    assert!(p.message.contains("tidemark.dev/paused"));
}

#[test]
fn outside_the_maintenance_window_waits() {
    let mut d = desired("1.30.4").group("g", "1.30.4");
    d.maintenance_window =
        serde_yaml::from_str::<MaintenanceWindow>("{days: [Sat], start: \"02:00\", duration: 4h}")
            .ok();
    let p = plan_versions(&d, &observed("1.29.8", &[("g", "1.29.8")]), now());
    assert_eq!(p.phase, Phase::Waiting);
    assert!(p.steps.is_empty());
    assert_eq!(
        p.message,
        "upgrade control plane 1.29.8 -> 1.30.4 waits for the maintenance window; next opens 2026-11-28T02:00:00Z"
    );
    let saturday: Timestamp = "2026-11-28T03:00:00Z"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        plan_versions(&d, &observed("1.29.8", &[("g", "1.29.8")]), saturday).phase,
        Phase::Progressing
    );
}

#[test]
fn preflight_names_what_fails() {
    let d = desired("1.30.4").group("g", "1.30.4");
    let mut o = observed("1.29.8", &[("g", "1.29.8")]);
    o.nodes_not_ready = vec!["node-b".into(), "node-a".into()];
    let p = plan_versions(&d, &o, now());
    assert_eq!(
        (p.phase, p.message.as_str()),
        (
            Phase::Waiting,
            "pre-flight check failed: 2 node(s) not Ready: node-a, node-b"
        )
    );
    o.nodes_not_ready.clear();
    o.api_healthy = false;
    assert_eq!(
        plan_versions(&d, &o, now()).message,
        "pre-flight check failed: the API server is not ready (/readyz)"
    );
}

#[test]
fn a_request_in_flight_is_followed_not_repeated() {
    let d = desired("1.30.4").group("g", "1.30.4");
    let mut o = observed("1.29.8", &[("g", "1.29.8")]);
    o.control_plane_requested = Some(v("1.30.4"));
    let p = plan_versions(&d, &o, now());
    assert_eq!(
        (p.phase, p.message.as_str()),
        (
            Phase::Progressing,
            "control plane upgrading 1.29.8 -> 1.30.4"
        )
    );
    assert!(p.steps.is_empty());

    let mut o = observed("1.30.4", &[("g", "1.29.8")]);
    if let Some(g) = o.node_groups.get_mut("g") {
        g.max_kubelet = Some(v("1.30.4"));
        g.requested = Some(v("1.30.4"));
        g.cordoned = 1;
    }
    let p = plan_versions(&d, &o, now());
    assert_eq!(p.phase, Phase::Progressing);
    assert!(p.steps.is_empty());
    assert!(
        p.message.starts_with("node group g rolling to 1.30.4"),
        "{}",
        p.message
    );
}

#[test]
fn a_drain_held_by_a_disruption_budget_blocks_after_the_drain_timeout() {
    use crate::observe::model::ProviderProblem;
    let d = desired("1.30.4").group("g", "1.30.4");
    let mut o = observed("1.30.4", &[("g", "1.29.8")]);
    if let Some(g) = o.node_groups.get_mut("g") {
        g.max_kubelet = Some(v("1.30.4"));
        g.requested = Some(v("1.30.4"));
        g.cordoned = 1;
        g.requested_at = Some(
            "2026-11-24T09:55:00Z"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        g.provider_problem = Some(ProviderProblem {
            permanent: false,
            message: "PodDisruptionBudget web-pdb blocks the drain of node n1".into(),
        });
    }
    // Five minutes into a ten-minute drain timeout: still rolling, and the status says why.
    let p = plan_versions(&d, &o, now());
    assert_eq!(
        (p.phase, p.message.as_str()),
        (
            Phase::Progressing,
            "node group g rolling, held: PodDisruptionBudget web-pdb blocks the drain of node n1"
        )
    );
    // Past the timeout: the step stops and a person is asked to act.
    let later: Timestamp = "2026-11-24T10:06:00Z"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let p = plan_versions(&d, &o, later);
    assert_eq!(p.phase, Phase::Blocked);
    assert_eq!(
        p.message,
        "node group g: rollout not finished within drainTimeout 10m: PodDisruptionBudget web-pdb blocks the drain of node n1"
    );
    // A group that lets the provider force the drain is not blocked: it says so.
    let mut forced = d.clone();
    forced.node_groups[0].drain_timeout_action = tidemark_schema::DrainTimeoutAction::Force;
    for at in [now(), later] {
        let p = plan_versions(&forced, &o, at);
        assert_eq!(
            (p.phase, p.message.as_str()),
            (
                Phase::Progressing,
                "node group g rolling, held: PodDisruptionBudget web-pdb blocks the drain of node n1; the provider deletes the node anyway once drainTimeout 10m has passed (drainTimeoutAction: force)"
            )
        );
    }
}

#[test]
fn a_group_tidemark_drains_is_continued_pass_after_pass_while_others_are_waited_for() {
    let mut d = desired("1.29.8")
        .group("self", "1.29.8")
        .group("managed", "1.29.8");
    d.node_groups[0].drain = tidemark_schema::DrainBy::Tidemark;
    d.node_groups[0].max_unavailable = 2;
    // tidemark's own drain is half way: two nodes cordoned, one already replaced.
    let mut o = observed("1.29.8", &[("self", "1.28.9"), ("managed", "1.28.9")]);
    if let Some(g) = o.node_groups.get_mut("self") {
        g.max_kubelet = Some(v("1.29.8"));
        g.cordoned = 2;
    }
    let p = plan_versions(&d, &o, now());
    assert_eq!(p.phase, Phase::Progressing);
    assert_eq!(
        p.steps.first().map(ToString::to_string).as_deref(),
        Some("upgrade node group self 1.28.9 -> 1.29.8 (to its declared version)"),
        "the drain goes on: {}",
        p.message
    );
    // A provider-drained group that rolls is followed, not asked again.
    let mut o = observed("1.29.8", &[("self", "1.28.9"), ("managed", "1.28.9")]);
    if let Some(g) = o.node_groups.get_mut("managed") {
        g.max_kubelet = Some(v("1.29.8"));
        g.requested = Some(v("1.29.8"));
        g.cordoned = 1;
    }
    let p = plan_versions(&d, &o, now());
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert!(
        p.message
            .starts_with("node group managed rolling to 1.29.8"),
        "{}",
        p.message
    );
}

#[test]
fn a_busy_exec_provider_is_followed_not_asked_again() {
    let mut o = observed("1.29.8", &[("g", "1.29.8")]);
    o.provider_busy = Some("cluster update in progress".into());
    let p = plan_versions(&desired("1.30.4").group("g", "1.30.4"), &o, now());
    assert_eq!(
        (p.phase, p.message.as_str()),
        (
            Phase::Progressing,
            "the provider reports a request in progress: cluster update in progress"
        )
    );
    assert!(p.steps.is_empty());
}

#[test]
fn missing_node_group_is_blocked() {
    let p = plan_versions(
        &desired("1.30.4").group("ghost", "1.30.4"),
        &observed("1.30.4", &[]),
        now(),
    );
    assert_eq!(p.phase, Phase::Blocked);
    assert_eq!(
        p.message,
        "node group ghost: no nodes and no provider object found for it"
    );
}

// --- properties --------------------------------------------------------------------------

/// Executes a step on the model cluster the way a provider would.
fn apply(o: &mut Observed, step: &Step) {
    let landed = |to: KubeVersion| KubeVersion::new(to.major, to.minor, to.patch.unwrap_or(0));
    match step {
        Step::UpgradeControlPlane { to, .. } => o.control_plane = landed(*to),
        Step::UpgradeNodeGroup { group, to, .. } => {
            if let Some(g) = o.node_groups.get_mut(group) {
                g.min_kubelet = Some(landed(*to));
                g.max_kubelet = Some(landed(*to));
                g.requested = Some(landed(*to));
            }
        }
        // No components in these scenarios.
        _ => {}
    }
}

fn scenario() -> impl Strategy<Value = (DesiredState, Observed)> {
    (
        20u32..28,
        0u32..4,
        0u32..=3,
        proptest::collection::vec((0u32..=3, 0u32..=3, any::<bool>()), 1..4),
        0u32..10,
    )
        .prop_map(|(cp_minor, hops, skew, groups, patch)| {
            let cp = KubeVersion::new(1, cp_minor, patch);
            let goal = KubeVersion::new(1, cp_minor + hops, patch + 1);
            let mut d = desired(&goal.to_string()).skew(skew);
            let mut obs = Vec::new();
            for (i, (lag, declared_lag, follow)) in groups.into_iter().enumerate() {
                // Observed within skew of the observed control plane; declared within skew
                // of the declared one and not below what runs (what validation allows).
                let lag = lag.min(skew.max(1));
                // A kubelet of the control plane's own minor is at most at its patch.
                let at = KubeVersion::new(1, cp_minor - lag, if lag == 0 { patch } else { 3 });
                let declared_minor = (goal.minor - declared_lag.min(skew)).max(at.minor);
                let declared = KubeVersion::new(
                    1,
                    declared_minor,
                    if declared_minor == at.minor {
                        at.patch.unwrap_or(0)
                    } else {
                        1
                    },
                );
                let name = format!("g{i}");
                d = if follow {
                    d.following(&name, &declared.to_string())
                } else {
                    d.group(&name, &declared.to_string())
                };
                obs.push((name, at));
            }
            let refs: Vec<(String, String)> = obs
                .iter()
                .map(|(n, v)| (n.clone(), v.to_string()))
                .collect();
            let pairs: Vec<(&str, &str)> =
                refs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            (d, observed(&cp.to_string(), &pairs))
        })
}

proptest! {
    #[test]
    fn executing_the_plan_step_by_step_is_safe_and_minimal((d, mut o) in scenario()) {
        let skew = super::skew::allowed_lag(&d);
        let start_cp = o.control_plane;
        let first: Plan = plan_versions(&d, &o, now());
        prop_assert_ne!(first.phase, Phase::Blocked, "{}", first.message);
        let planned = first.remaining.len();
        let mut executed = 0;
        let mut cp_steps = 0;
        let mut last_moved: Option<String> = None;
        for _ in 0..100 {
            let p = plan_versions(&d, &o, now());
            if p.phase == Phase::Converged {
                break;
            }
            prop_assert_eq!(p.phase, Phase::Progressing, "{}", p.message);
            prop_assert_eq!(p.steps.len(), 1, "one disruptive step at a time");
            let step = &p.steps[0];
            let before = o.clone();
            apply(&mut o, step);
            executed += 1;
            match step {
                Step::UpgradeControlPlane { from, to } => {
                    cp_steps += 1;
                    prop_assert!(to.minor_gap(*from) <= 1, "one minor at a time: {step}");
                    prop_assert!(o.control_plane >= before.control_plane, "never down: {step}");
                    last_moved = None;
                }
                Step::UpgradeNodeGroup { group, .. } => {
                    // Minimal: a group never moves twice without the control plane moving.
                    prop_assert_ne!(last_moved.as_deref(), Some(group.as_str()), "{} moved twice in a row", group);
                    last_moved = Some(group.clone());
                    let old = before.node_groups.get(group).and_then(|g| g.min_kubelet);
                    let new = o.node_groups.get(group).and_then(|g| g.min_kubelet);
                    prop_assert!(new >= old, "never down: {step}");
                }
                _ => prop_assert!(false, "no components declared, yet {step}"),
            }
            for (name, g) in &o.node_groups {
                let kubelet = g.max_kubelet.unwrap_or(o.control_plane);
                prop_assert!(kubelet.minor_gap(o.control_plane) <= 0, "{name} above the control plane's minor after {step}");
                prop_assert!(o.control_plane.minor_gap(g.min_kubelet.unwrap_or(kubelet)) <= skew, "{name} outside skew after {step}");
            }
        }
        let end = plan_versions(&d, &o, now());
        prop_assert_eq!(end.phase, Phase::Converged, "{}", end.message);
        prop_assert!(d.control_plane.satisfied_by(o.control_plane));
        for g in &d.node_groups {
            let at = o.node_groups.get(&g.name).and_then(|x| x.min_kubelet);
            prop_assert!(at.is_some_and(|a| g.version.satisfied_by(a)), "{} at {:?}, declared {}", g.name, at, g.version);
        }
        // Fewest control-plane steps: one per minor, or one patch step.
        let minimal_cp = if d.control_plane.satisfied_by(start_cp) { 0 } else { d.control_plane.minor_gap(start_cp).max(1) };
        prop_assert_eq!(cp_steps, minimal_cp);
        // The plan announced exactly the route it then took.
        prop_assert_eq!(executed, planned);
    }
}

// ---- components in the plan ----

mod components {
    use super::*;
    use crate::fixtures::with_component;
    use crate::observe::model::{ComponentHealth, ComponentRecord};
    use crate::plan::{ApplyReason, CheckReason, ComponentPhase, Inputs, plan};

    fn inputs(pairs: &[(&str, &str)]) -> BTreeMap<String, Inputs> {
        pairs
            .iter()
            .map(|(n, d)| (n.to_string(), Inputs::Digest(d.to_string())))
            .collect()
    }

    fn applied(o: &mut Observed, name: &str, digest: &str, health: ComponentHealth) {
        o.components.insert(
            name.into(),
            ComponentRecord {
                chart: format!("{name} 1.0.0"),
                health,
                inputs: Some(digest.into()),
                capabilities: Some(o.capabilities.digest()),
                objects: 3,
                ..ComponentRecord::default()
            },
        );
    }

    fn apply(name: &str, phase: ComponentPhase, reason: ApplyReason) -> Step {
        Step::ApplyComponent {
            name: name.into(),
            phase,
            reason,
        }
    }

    #[test]
    fn unchanged_inputs_mean_no_step() {
        let d = with_component(desired("1.30.4"), "dns", ComponentPhase::AfterNodeGroups);
        let mut o = observed("1.30.4", &[]);
        applied(&mut o, "dns", "sha256:a", ComponentHealth::Healthy);
        let p = plan(&d, &inputs(&[("dns", "sha256:a")]), &o, now());
        assert_eq!(p.phase, Phase::Converged);
        assert!(p.steps.is_empty(), "{:?}", p.steps);
    }

    #[test]
    fn a_component_only_change_needs_no_other_step() {
        let d = with_component(desired("1.30.4"), "dns", ComponentPhase::AfterNodeGroups);
        let mut o = observed("1.30.4", &[]);
        applied(&mut o, "dns", "sha256:a", ComponentHealth::Healthy);
        let p = plan(&d, &inputs(&[("dns", "sha256:b")]), &o, now());
        assert_eq!(p.phase, Phase::Progressing);
        assert_eq!(
            p.steps,
            vec![apply(
                "dns",
                ComponentPhase::AfterNodeGroups,
                ApplyReason::Changed
            )]
        );
        let new = plan(
            &d,
            &inputs(&[("dns", "sha256:b")]),
            &observed("1.30.4", &[]),
            now(),
        );
        assert_eq!(
            new.steps,
            vec![apply(
                "dns",
                ComponentPhase::AfterNodeGroups,
                ApplyReason::New
            )]
        );
    }

    #[test]
    fn phases_order_components_around_the_control_plane() {
        let d = with_component(desired("1.30.4"), "cni", ComponentPhase::BeforeControlPlane);
        let d = with_component(d, "metrics", ComponentPhase::AfterControlPlane);
        let d = with_component(d, "ingress", ComponentPhase::AfterNodeGroups);
        let o = observed("1.29.8", &[]);
        let digests = inputs(&[("cni", "c"), ("metrics", "m"), ("ingress", "i")]);
        let p = plan(&d, &digests, &o, now());
        // The CNI goes first, in the same pass as the hop; the others wait for it.
        assert_eq!(
            p.steps,
            vec![
                apply("cni", ComponentPhase::BeforeControlPlane, ApplyReason::New),
                cp_step("1.29.8", "1.30.4"),
            ]
        );
        assert_eq!(
            p.remaining,
            vec![
                apply("cni", ComponentPhase::BeforeControlPlane, ApplyReason::New),
                cp_step("1.29.8", "1.30.4"),
                apply(
                    "metrics",
                    ComponentPhase::AfterControlPlane,
                    ApplyReason::New
                ),
                apply("ingress", ComponentPhase::AfterNodeGroups, ApplyReason::New),
            ]
        );
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("metrics waits for the control plane")),
            "{:?}",
            p.notes
        );
        // With the control plane there, after-control-plane components go; the rest wait
        // for the node group.
        let d = d.group("general", "1.30.4");
        let o = observed("1.30.4", &[("general", "1.29.8")]);
        let p = plan(&d, &digests, &o, now());
        assert_eq!(
            p.steps,
            vec![
                apply("cni", ComponentPhase::BeforeControlPlane, ApplyReason::New),
                apply(
                    "metrics",
                    ComponentPhase::AfterControlPlane,
                    ApplyReason::New
                ),
                group_step("general", "1.29.8", "1.30.4", NodeGroupReason::Declared),
            ]
        );
        assert_eq!(
            p.steps.iter().map(Step::rank).collect::<Vec<_>>(),
            vec![0, 2, 3]
        );
    }

    #[test]
    fn rolling_components_are_checked_and_healthy_ones_checked_for_drift_when_due() {
        let d = with_component(desired("1.30.4"), "dns", ComponentPhase::AfterNodeGroups);
        let mut o = observed("1.30.4", &[]);
        applied(&mut o, "dns", "d", ComponentHealth::Progressing);
        let p = plan(&d, &inputs(&[("dns", "d")]), &o, now());
        assert_eq!(
            p.steps,
            vec![Step::CheckComponent {
                name: "dns".into(),
                phase: ComponentPhase::AfterNodeGroups,
                reason: CheckReason::Health
            }]
        );
        applied(&mut o, "dns", "d", ComponentHealth::Healthy);
        o.drift_due = true;
        let p = plan(&d, &inputs(&[("dns", "d")]), &o, now());
        assert_eq!(
            p.steps,
            vec![Step::CheckComponent {
                name: "dns".into(),
                phase: ComponentPhase::AfterNodeGroups,
                reason: CheckReason::Drift
            }]
        );
    }

    #[test]
    fn a_failed_apply_is_retried_and_unreadable_inputs_are_applied_to_report_why() {
        let d = with_component(desired("1.30.4"), "dns", ComponentPhase::AfterNodeGroups);
        let mut o = observed("1.30.4", &[]);
        o.components.insert(
            "dns".into(),
            ComponentRecord {
                health: ComponentHealth::Failed,
                message: Some("render failed".into()),
                failed_inputs: Some("d".into()),
                ..ComponentRecord::default()
            },
        );
        let p = plan(&d, &inputs(&[("dns", "d")]), &o, now());
        assert_eq!(
            p.steps,
            vec![apply(
                "dns",
                ComponentPhase::AfterNodeGroups,
                ApplyReason::Retry
            )]
        );
        // Other inputs after a failure: a fix, not a retry.
        let p = plan(&d, &inputs(&[("dns", "e")]), &o, now());
        assert_eq!(
            p.steps,
            vec![apply(
                "dns",
                ComponentPhase::AfterNodeGroups,
                ApplyReason::New
            )]
        );
        let unreadable: BTreeMap<String, Inputs> = [(
            "dns".to_string(),
            Inputs::Unreadable("values/x.yaml: no such file".into()),
        )]
        .into();
        let p = plan(&d, &unreadable, &o, now());
        assert_eq!(p.steps.len(), 1);
    }

    #[test]
    fn removed_components_are_pruned_and_paused_clusters_do_nothing() {
        let d = desired("1.30.4");
        let mut o = observed("1.30.4", &[]);
        applied(&mut o, "old", "x", ComponentHealth::Healthy);
        let p = plan(&d, &BTreeMap::new(), &o, now());
        assert_eq!(p.steps, vec![Step::PruneComponent { name: "old".into() }]);
        assert_eq!(p.phase, Phase::Progressing);
        o.paused_annotation = true;
        let p = plan(&d, &BTreeMap::new(), &o, now());
        assert_eq!(p.phase, Phase::Paused);
        assert!(p.steps.is_empty());
    }

    #[test]
    fn a_paused_fleet_starts_no_step_components_included() {
        let mut d = with_component(
            desired("1.30.4").group("g", "1.30.4"),
            "dns",
            ComponentPhase::BeforeControlPlane,
        );
        d.fleet_paused = true;
        let o = observed("1.29.8", &[("g", "1.29.8")]);
        let p = plan(&d, &BTreeMap::new(), &o, now());
        assert_eq!(
            (p.phase, p.message.as_str()),
            (
                Phase::Paused,
                "the whole fleet is paused in git (fleet.yaml spec.paused: true)"
            )
        );
        assert!(p.steps.is_empty(), "{:?}", p.steps);
    }
}

#[test]
fn a_topology_cluster_moves_the_control_plane_only_and_waits_for_its_groups() {
    let mut d = desired("1.30.4").group("general", "1.30.4");
    if let tidemark_schema::Provider::ClusterApi(p) = &mut d.provider {
        p.topology = true;
    }
    d.patch_releases = vec![v("1.29.8")];
    let p = plan_versions(&d, &observed("1.28.9", &[("general", "1.28.9")]), now());
    assert_eq!(p.steps, [cp_step("1.28.9", "1.29.8")]);
    assert_eq!(
        p.remaining,
        [cp_step("1.28.9", "1.29.8"), cp_step("1.29.8", "1.30.4")]
    );
    // The control plane moved; the group has not followed yet: the next minor waits (Cluster
    // API's webhook would refuse it).
    let p = plan_versions(&d, &observed("1.29.8", &[("general", "1.28.9")]), now());
    assert_eq!(p.phase, Phase::Progressing);
    assert!(p.steps.is_empty());
    assert_eq!(p.remaining, [cp_step("1.29.8", "1.30.4")]);
    assert_eq!(
        p.message,
        "node group general follows the control plane (ClusterClass topology): oldest kubelet 1.28.9"
    );
    let p = plan_versions(&d, &observed("1.29.8", &[("general", "1.29.8")]), now());
    assert_eq!(p.steps, [cp_step("1.29.8", "1.30.4")]);
    // The control plane is at its version; the topology controller rolls the group.
    let p = plan_versions(&d, &observed("1.30.4", &[("general", "1.29.8")]), now());
    assert_eq!(p.phase, Phase::Progressing);
    assert!(p.steps.is_empty());
    assert_eq!(
        p.message,
        "node group general follows the control plane (ClusterClass topology): oldest kubelet 1.29.8"
    );
    let p = plan_versions(&d, &observed("1.30.4", &[("general", "1.30.4")]), now());
    assert_eq!(p.phase, Phase::Converged);
}
