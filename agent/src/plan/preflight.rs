//! Pre-flight checks of a disruptive step, judged from the facts the pass gathered for it
//! (`observe::model::Preflight`):
//!
//! - before a control-plane hop to minor M: no client still calls an API that M removes
//!   (`apiserver_requested_deprecated_apis` with `removed_release` <= M), and the desired
//!   commit's components, rendered for M, neither fail nor render an object whose API M
//!   no longer serves (`removed-apis.txt`);
//! - before a node-group rollout begins (not while it continues): no PodDisruptionBudget
//!   whose pods run on the group's nodes can never allow an eviction (`maxUnavailable: 0`,
//!   or a `minAvailable` as large as the pods it selects): the drain could never finish.
//!
//! A finding holds the step `Waiting` and is named; a fact that could not be gathered
//! holds it too. Facts not gathered at all (`None`) are not judged.

use std::fmt;

use tidemark_schema::resolve::DesiredState;
use tidemark_schema::{DrainTimeoutAction, KubeVersion};

use super::Step;
use crate::apis::RemovedApis;
use crate::observe::model::{DisruptionBudget, Observed, RenderedApi};

/// Which check a finding comes from (the `check` label of the agent's metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// Clients calling APIs the next minor removes.
    DeprecatedApiRequests,
    /// Components rendering APIs the next minor removes, or not rendering for it.
    RemovedApiRenders,
    /// PodDisruptionBudgets that never allow an eviction.
    DisruptionBudgets,
}

impl Check {
    /// Every check, in order.
    pub const ALL: [Check; 3] = [
        Check::DeprecatedApiRequests,
        Check::RemovedApiRenders,
        Check::DisruptionBudgets,
    ];

    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::DeprecatedApiRequests => "deprecated-api-requests",
            Check::RemovedApiRenders => "removed-api-renders",
            Check::DisruptionBudgets => "pod-disruption-budgets",
        }
    }
}

/// One thing that holds a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The check.
    pub check: Check,
    /// What holds it, named.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What holds `next`, judged from `observed.preflight`. A group whose drains end by force
/// after `drainTimeout` (`drainTimeoutAction: force`) is not held by a budget: its drain
/// does finish.
pub fn findings(desired: &DesiredState, observed: &Observed, next: &Step) -> Vec<Finding> {
    match next {
        Step::UpgradeControlPlane { to, .. } => hop(observed, *to),
        Step::UpgradeNodeGroup { group, .. }
            if !observed
                .node_groups
                .get(group)
                .is_some_and(|g| g.is_rolling())
                && !desired.node_groups.iter().any(|g| {
                    &g.name == group && g.drain_timeout_action == DrainTimeoutAction::Force
                }) =>
        {
            rollout(observed, group)
        }
        _ => Vec::new(),
    }
}

fn hop(observed: &Observed, to: KubeVersion) -> Vec<Finding> {
    let facts = &observed.preflight;
    let Some(gathered_for) = facts.hop else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if gathered_for != to {
        out.push(Finding {
            check: Check::RemovedApiRenders,
            message: format!("its facts were gathered for {gathered_for}, not {to}"),
        });
        return out;
    }
    match &facts.deprecated_requests {
        None => {}
        Some(Err(why)) => out.push(Finding {
            check: Check::DeprecatedApiRequests,
            message: format!("cannot read the API server's deprecated-API metric: {why}"),
        }),
        Some(Ok(requests)) => {
            let removed: Vec<String> = requests
                .iter()
                .filter(|r| r.removed_release.is_some_and(|m| to.minor_gap(m) >= 0))
                .map(|r| {
                    let gv = if r.group.is_empty() {
                        r.version.clone()
                    } else {
                        format!("{}/{}", r.group, r.version)
                    };
                    let sub = if r.subresource.is_empty() {
                        String::new()
                    } else {
                        format!("/{}", r.subresource)
                    };
                    let when = r.removed_release.map(|m| m.to_string()).unwrap_or_default();
                    format!("{gv} {}{sub} (removed in {when})", r.resource)
                })
                .collect();
            if !removed.is_empty() {
                out.push(Finding {
                    check: Check::DeprecatedApiRequests,
                    message: format!(
                        "clients still call APIs that {} removes: {} (apiserver_requested_deprecated_apis; the API server's audit log names the clients)",
                        to.minor_version(),
                        removed.join(", ")
                    ),
                });
            }
        }
    }
    match &facts.rendered_for_hop {
        None => {}
        Some(Err(why)) => out.push(Finding {
            check: Check::RemovedApiRenders,
            message: format!("cannot render the components for {to}: {why}"),
        }),
        Some(Ok(apis)) => {
            let removed = RemovedApis::builtin();
            for api in apis {
                match api {
                    RenderedApi::Failed { component, message } => out.push(Finding {
                        check: Check::RemovedApiRenders,
                        message: format!(
                            "component {component} does not render for {to}: {message}"
                        ),
                    }),
                    RenderedApi::Object {
                        component,
                        object,
                        api_version,
                        kind,
                    } => {
                        if let Some(r) = removed.removed_by(api_version, kind, to) {
                            out.push(Finding {
                                check: Check::RemovedApiRenders,
                                message: format!(
                                    "component {component} renders {object} in {api_version}, which {} no longer serves{}",
                                    to.minor_version(),
                                    r.replacement
                                        .as_ref()
                                        .map(|u| format!(" (use {u})"))
                                        .unwrap_or_default()
                                ),
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

fn rollout(observed: &Observed, group: &str) -> Vec<Finding> {
    match &observed.preflight.disruption_budgets {
        None => Vec::new(),
        Some(Err(why)) => vec![Finding {
            check: Check::DisruptionBudgets,
            message: format!("cannot read the PodDisruptionBudgets: {why}"),
        }],
        Some(Ok(budgets)) => budgets
            .iter()
            .filter(|b| b.node_groups.contains(group))
            .filter_map(|b| {
                never_evicts(b).map(|why| Finding {
                    check: Check::DisruptionBudgets,
                    message: format!(
                        "node group {group}: PodDisruptionBudget {}/{} never allows an eviction ({why}), so draining the nodes its pods run on could never finish; change it or scale its workload",
                        b.namespace, b.name
                    ),
                })
            })
            .collect(),
    }
}

/// Why `b` can never allow an eviction, if it cannot: `maxUnavailable` 0, or a
/// `minAvailable` (a percentage of the pods it selects, rounded up as Kubernetes does) at
/// least the matching healthy pods: the disruption controller allows
/// `healthy - minAvailable` evictions.
pub fn never_evicts(b: &DisruptionBudget) -> Option<String> {
    if b.pods == 0 {
        return None;
    }
    if let Some(max) = &b.max_unavailable {
        let allowed = scaled(max, b.pods)?;
        return (allowed == 0).then(|| format!("maxUnavailable: {max}"));
    }
    let min = b.min_available.as_ref()?;
    let needed = scaled(min, b.pods)?;
    (needed >= b.healthy).then(|| {
        format!(
            "minAvailable: {min} with {} matching pods, {} healthy",
            b.pods, b.healthy
        )
    })
}

/// An int-or-percent of `total`; a percentage rounds up, as Kubernetes' disruption
/// controller rounds both fields (`GetScaledValueFromIntOrPercent(.., true)`).
fn scaled(value: &str, total: u32) -> Option<u32> {
    match value.strip_suffix('%') {
        Some(p) => {
            let p: u64 = p.trim().parse().ok()?;
            let v = (p * u64::from(total)).div_ceil(100);
            u32::try_from(v).ok()
        }
        None => value.trim().parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::fixtures::{DesiredExt, desired, observed, v};
    use crate::observe::model::DeprecatedRequest;

    fn budget(max: Option<&str>, min: Option<&str>, pods: u32) -> DisruptionBudget {
        DisruptionBudget {
            namespace: "default".into(),
            name: "web".into(),
            max_unavailable: max.map(str::to_string),
            min_available: min.map(str::to_string),
            pods,
            healthy: pods,
            node_groups: BTreeSet::from(["general".to_string()]),
        }
    }

    #[test]
    fn budgets_that_never_allow_an_eviction_are_named() {
        for (max, min, pods, never) in [
            (Some("0"), None, 2, true),
            (Some("0%"), None, 2, true),
            (Some("1"), None, 2, false),
            (Some("10%"), None, 3, false),
            (None, Some("2"), 2, true),
            (None, Some("3"), 2, true),
            (None, Some("1"), 2, false),
            (None, Some("100%"), 4, true),
            (None, Some("50%"), 1, true),
            (None, Some("50%"), 4, false),
            (Some("0"), None, 0, false),
            (None, None, 3, false),
        ] {
            assert_eq!(
                never_evicts(&budget(max, min, pods)).is_some(),
                never,
                "{max:?} {min:?} {pods}"
            );
        }
    }

    #[test]
    fn min_available_counts_the_healthy_pods() {
        let mut b = budget(None, Some("2"), 3);
        assert!(never_evicts(&b).is_none());
        b.healthy = 2;
        assert_eq!(
            never_evicts(&b).as_deref(),
            Some("minAvailable: 2 with 3 matching pods, 2 healthy")
        );
    }

    #[test]
    fn a_hop_waits_for_deprecated_calls_and_removed_renders_of_its_minor_only() {
        let mut o = observed("1.31.4", &[]);
        let step = Step::UpgradeControlPlane {
            from: v("1.31.4"),
            to: v("1.32.0"),
        };
        assert!(
            findings(&desired("1.32.0"), &o, &step).is_empty(),
            "nothing gathered, nothing judged"
        );
        o.preflight.hop = Some(v("1.32.0"));
        let request = |version: &str, removed: &str| DeprecatedRequest {
            group: "flowcontrol.apiserver.k8s.io".into(),
            version: version.into(),
            resource: "flowschemas".into(),
            subresource: String::new(),
            removed_release: Some(v(removed)),
        };
        o.preflight.deprecated_requests = Some(Ok(vec![
            request("v1beta3", "1.32"),
            request("v1beta9", "1.33"),
        ]));
        o.preflight.rendered_for_hop = Some(Ok(vec![
            RenderedApi::Object {
                component: "flow".into(),
                object: "FlowSchema/x".into(),
                api_version: "flowcontrol.apiserver.k8s.io/v1beta3".into(),
                kind: "FlowSchema".into(),
            },
            RenderedApi::Object {
                component: "flow".into(),
                object: "FlowSchema/y".into(),
                api_version: "flowcontrol.apiserver.k8s.io/v1".into(),
                kind: "FlowSchema".into(),
            },
        ]));
        let found: Vec<String> = findings(&desired("1.32.0"), &o, &step)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "clients still call APIs that 1.32 removes: flowcontrol.apiserver.k8s.io/v1beta3 flowschemas (removed in 1.32) (apiserver_requested_deprecated_apis; the API server's audit log names the clients)",
                "component flow renders FlowSchema/x in flowcontrol.apiserver.k8s.io/v1beta3, which 1.32 no longer serves (use flowcontrol.apiserver.k8s.io/v1)",
            ]
        );
        o.preflight.rendered_for_hop = Some(Err("boom".into()));
        o.preflight.deprecated_requests = Some(Ok(vec![]));
        assert_eq!(
            findings(&desired("1.32.0"), &o, &step)[0].message,
            "cannot render the components for 1.32.0: boom"
        );
    }

    #[test]
    fn a_rollout_waits_for_a_budget_only_before_it_begins_and_only_on_its_group() {
        let mut o = observed("1.31.4", &[("general", "1.30.4"), ("gpu", "1.30.4")]);
        o.preflight.disruption_budgets = Some(Ok(vec![budget(Some("0"), None, 1)]));
        let step = |group: &str| Step::UpgradeNodeGroup {
            group: group.into(),
            from: Some(v("1.30.4")),
            to: v("1.31.4"),
            reason: super::super::NodeGroupReason::Declared,
            max_unavailable: 1,
            drain_timeout: std::time::Duration::from_secs(60),
        };
        let d = desired("1.31.4").group("general", "1.31.4");
        assert_eq!(findings(&d, &o, &step("general")).len(), 1);
        assert!(findings(&d, &o, &step("general"))[0].message.contains(
            "PodDisruptionBudget default/web never allows an eviction (maxUnavailable: 0)"
        ));
        assert!(findings(&d, &o, &step("gpu")).is_empty());
        let mut forced = d.clone();
        forced.node_groups[0].drain_timeout_action = DrainTimeoutAction::Force;
        assert!(
            findings(&forced, &o, &step("general")).is_empty(),
            "a drain that ends by force finishes"
        );
        if let Some(g) = o.node_groups.get_mut("general") {
            g.cordoned = 1;
        }
        assert!(
            findings(&d, &o, &step("general")).is_empty(),
            "a rollout under way is not held"
        );
    }
}
