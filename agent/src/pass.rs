//! One pass of the agent: the pipeline every feature hangs off.
//!
//! ```text
//! read the status record -> resolve the desired state (git) -> observe (cluster, provider)
//!   -> plan (pure) -> execute the next step(s) -> compose the next record (pure) -> write it
//!   (-> publish it to the fleet repo, with `--report-ref`)
//! ```
//!
//! A pass keeps nothing in memory for the next one but caches: a restart (or `kill -9`)
//! simply begins a new pass from what it observes. The phase a pass ends in is decided
//! here and only here: [`PassError::phase`] for a pass that stopped early, [`conclude`]
//! for one that planned and executed.

use std::collections::BTreeMap;

use jiff::Timestamp;
use tidemark_schema::resolve::DesiredState;
use tracing::Instrument;

use crate::converge::{self, Execution, Request, Target};
use crate::desired::{self, Desired, Resolution, Source};
use crate::observe::{self, model::Observed};
use crate::plan::{self, Downgrade, Inputs, Phase, Plan};
use crate::provider::AnyProvider;
use crate::status::{self, ComponentHealth, Events, Record, Summary, Versions, describe};

/// What a pass needs; lives as long as the agent.
pub struct Ctx {
    /// The fleet repo.
    pub source: Source,
    /// The cluster.
    pub client: kube::Client,
    /// Namespace holding the status annotations (and the Lease).
    pub status_namespace: String,
    /// The kubeconfig the agent was given, passed to `exec` provider commands as
    /// `KUBECONFIG` so they act on the same cluster.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Renders components and keeps their renders.
    pub renderer: converge::render::Renderer,
    /// How component steps wait.
    pub settings: converge::Settings,
    /// Records Events.
    pub events: Events,
    /// Gathers the facts of pre-flight checks (and keeps their renders).
    pub preflight: crate::preflight::Preflight,
    /// Publishes the record to the fleet repo too (`--report-ref`).
    pub reporter: Option<status::Reporter>,
}

/// Why a pass stopped before it could plan. Each is classified in [`PassError::phase`].
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The status record could not be read (nor can anything be reported).
    #[error(transparent)]
    Status(#[from] status::Error),
    /// The desired state could not be resolved.
    #[error(transparent)]
    Desired(#[from] desired::Error),
    /// There is nothing to do yet.
    #[error("nothing to do yet: {0}")]
    NothingYet(String),
    /// The cluster could not be observed.
    #[error(transparent)]
    Observe(#[from] observe::Error),
    /// The provider could not be set up (a management cluster's kubeconfig).
    #[error("failed to set up the provider")]
    Provider(#[source] crate::provider::Error),
}

impl PassError {
    /// The phase a pass that stopped with this error reports.
    ///
    /// - `Blocked`: a person must act (the repo or the selector is wrong, the wave tag is not
    ///   signed by an allowed key);
    /// - `Waiting`: nothing to do yet (the wave's tag does not hold the cluster);
    /// - `Failed`: transient; retried with backoff (git, the API server, the provider).
    pub fn phase(&self) -> Phase {
        match self {
            PassError::Desired(desired::Error::Select(_) | desired::Error::Untrusted { .. }) => {
                Phase::Blocked
            }
            PassError::NothingYet(_) => Phase::Waiting,
            PassError::Status(_)
            | PassError::Desired(_)
            | PassError::Observe(_)
            | PassError::Provider(_) => Phase::Failed,
        }
    }
}

/// A pass that planned and executed.
pub struct Progress {
    /// What git declares.
    pub desired: Desired,
    /// What the cluster looked like.
    pub observed: Observed,
    /// What the planner chose.
    pub plan: Plan,
    /// What executing it did.
    pub execution: Execution,
}

/// The result of a pass, for the runner and for `--once`.
#[derive(Clone, Debug)]
pub struct PassReport {
    /// The phase reported.
    pub phase: Phase,
    /// The message reported.
    pub message: String,
    /// Steps executed.
    pub executed: Vec<String>,
    /// Whether the status object was written.
    pub status_written: bool,
    /// The record after the pass, as written (or as it would have been).
    pub record: Record,
}

/// What a pass learned before it stopped, for the status of a pass that stopped early.
#[derive(Default)]
struct Trail {
    cluster: Option<(String, Option<String>)>,
}

/// Runs one pass at `now`.
pub async fn run(ctx: &Ctx, now: Timestamp) -> PassReport {
    let span = tracing::info_span!(
        "pass",
        cluster = tracing::field::Empty,
        wave = tracing::field::Empty,
        revision = tracing::field::Empty
    );
    async {
        let record = match status::read(&ctx.client, &ctx.status_namespace).await {
            Ok(r) => r,
            Err(e) => {
                // Without the status object nothing can be reported either.
                let e = PassError::from(e);
                let message = describe(&e);
                tracing::warn!(%message, "pass failed");
                return PassReport {
                    phase: e.phase(),
                    message,
                    executed: vec![],
                    status_written: false,
                    record: Record::default(),
                };
            }
        };
        let mut trail = Trail::default();
        let outcome = pipeline(ctx, &record, now, &mut trail).await;
        let summary = summarise(&outcome, trail, now);
        let next = status::compose(&record, &summary, now);
        let status_written =
            match status::write(&ctx.client, &ctx.status_namespace, &record, &next, &ctx.events)
                .await
            {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %describe(&e), "failed to write status");
                    false
                }
            };
        status::publish(ctx.reporter.as_ref(), &next, now).await;
        let executed = outcome
            .map(|p| p.execution.executed)
            .unwrap_or_default();
        tracing::info!(phase = %summary.phase, message = %summary.message, steps = executed.len(), "pass finished");
        PassReport {
            phase: summary.phase,
            message: summary.message,
            executed,
            status_written,
            record: next,
        }
    }
    .instrument(span)
    .await
}

/// Resolve, observe, plan, execute.
async fn pipeline(
    ctx: &Ctx,
    record: &Record,
    now: Timestamp,
    trail: &mut Trail,
) -> Result<Progress, PassError> {
    let desired = match ctx
        .source
        .resolve(record.applied_revision.clone(), now)
        .await?
    {
        Resolution::NothingYet { selection, reason } => {
            trail.cluster = Some((selection.name, selection.wave));
            return Err(PassError::NothingYet(reason));
        }
        Resolution::Desired(d) => *d,
    };
    let span = tracing::Span::current();
    span.record("cluster", desired.selection.name.as_str());
    span.record("wave", desired.selection.wave.as_deref().unwrap_or("-"));
    span.record("revision", desired::short(&desired.revision));
    trail.cluster = Some((
        desired.selection.name.clone(),
        desired.selection.wave.clone(),
    ));

    let provider = AnyProvider::for_cluster(
        &ctx.client,
        &ctx.status_namespace,
        &desired.state,
        ctx.kubeconfig.as_deref(),
    )
    .await
    .map_err(PassError::Provider)?;
    let mut observed = observe::cluster(
        &ctx.client,
        &provider,
        record,
        ctx.settings.drift_interval,
        now,
    )
    .await?;
    let digests = input_digests(&desired);
    let capabilities = observed.capabilities.clone();
    let target = Target {
        client: &ctx.client,
        source: &ctx.source,
        revision: &desired.revision,
        renderer: &ctx.renderer,
        settings: &ctx.settings,
        capabilities: &capabilities,
    };
    let mut plan = plan::plan(&desired.state, &digests, &observed, now);
    // The pre-flight facts of a disruptive step are gathered only when it is next.
    let mut findings = Vec::new();
    if let Some(next) = plan.steps.iter().find(|s| s.is_disruptive()).cloned() {
        observed.preflight = ctx
            .preflight
            .gather(&target, &desired, &observed, &next)
            .await;
        plan = plan::plan(&desired.state, &digests, &observed, now);
        findings = plan::preflight_findings(&desired.state, &observed, &next);
    }
    ctx.preflight.record(&findings);
    tracing::debug!(?plan, "planned");
    let execution = converge::execute(&target, &plan, &desired, &observed, &provider, now).await;
    Ok(Progress {
        desired,
        observed,
        plan,
        execution,
    })
}

/// What the planner needs of the components' inputs: their digests.
pub fn input_digests(desired: &Desired) -> BTreeMap<String, Inputs> {
    desired
        .inputs
        .iter()
        .map(|(name, i)| {
            let i = match i {
                Ok(i) => Inputs::Digest(i.digest.clone()),
                Err(e) => Inputs::Unreadable(describe(e.as_ref())),
            };
            (name.clone(), i)
        })
        .collect()
}

/// The status summary of a pass.
fn summarise(outcome: &Result<Progress, PassError>, trail: Trail, now: Timestamp) -> Summary {
    match outcome {
        Err(e) => Summary {
            cluster: trail.cluster,
            desired_revision: None,
            phase: e.phase(),
            message: describe(e),
            versions: None,
            components: None,
            drift_checked: false,
        },
        Ok(p) => {
            let (phase, message) = conclude(p);
            Summary {
                cluster: trail.cluster,
                desired_revision: Some(p.desired.revision.clone()),
                phase,
                message,
                versions: Some(versions(
                    &p.desired.state,
                    &p.observed,
                    &p.plan.refused,
                    &p.execution.requests,
                    now,
                )),
                components: Some(p.execution.components.clone()),
                drift_checked: p.execution.drift_checked,
            }
        }
    }
}

/// The phase and message of a pass that planned and executed:
///
/// - a provider step that failed: `Blocked` when a person must act, else `Failed`;
/// - a failed component fails the pass (a refused or paused plan keeps its phase);
/// - while the control plane or node groups move, the plan's phase stands;
/// - then components still rolling out keep it `Progressing`;
/// - `Converged` only when the control plane, node groups and every component are.
pub fn conclude(p: &Progress) -> (Phase, String) {
    let Progress {
        desired,
        plan,
        execution,
        ..
    } = p;
    let mut notes = execution.progress.clone();
    notes.extend(plan.notes.iter().cloned());
    if desired.descends_from_applied == Some(false) {
        notes.push(format!(
            "the desired commit {} does not descend from the last applied one (the wave tag moved back): it is a new desired state, and versions never go down",
            desired::short(&desired.revision)
        ));
    }
    let with_notes = |message: String| {
        std::iter::once(message)
            .chain(notes.iter().cloned())
            .collect::<Vec<_>>()
            .join("; ")
    };
    if let Some(failure) = &execution.failure {
        let phase = if failure.error.needs_person() {
            Phase::Blocked
        } else {
            Phase::Failed
        };
        return (
            phase,
            format!("{}: {}", failure.step, describe(&failure.error)),
        );
    }
    let message = with_notes(plan.message.clone());
    let failed: Vec<String> = execution
        .components
        .iter()
        .filter(|(_, r)| r.health == ComponentHealth::Failed)
        .map(|(n, r)| r.describe(n))
        .collect();
    if !failed.is_empty() {
        let joined = failed.join("; ");
        return match plan.phase {
            // A person must act, or has paused: that stays the phase.
            Phase::Blocked | Phase::Paused => (plan.phase, format!("{message}; {joined}")),
            _ if plan.versions.phase == Phase::Converged => (Phase::Failed, joined),
            _ => (Phase::Failed, format!("{joined}; {message}")),
        };
    }
    if plan.versions.phase != Phase::Converged || plan.phase == Phase::Paused {
        return (plan.phase, message);
    }
    let digests = input_digests(desired);
    let pending: Vec<String> = desired
        .state
        .components
        .iter()
        .filter_map(|c| {
            let r = execution.components.get(&c.name)?;
            let current =
                matches!(digests.get(&c.name), Some(Inputs::Digest(d)) if r.is_healthy_at(d));
            (!current).then(|| r.describe(&c.name))
        })
        .collect();
    if !pending.is_empty() {
        return (Phase::Progressing, pending.join("; "));
    }
    let healthy = desired.state.components.len();
    let converged = if healthy == 0 {
        plan.versions.message.clone()
    } else {
        format!("{}, {healthy} components healthy", plan.versions.message)
    };
    (Phase::Converged, with_notes(converged))
}

/// The control-plane and node-group versions to record: what runs, what git declares,
/// what was requested (in this pass, or earlier and still in flight), and, for a refused
/// declaration, the one accepted before.
pub fn versions(
    state: &DesiredState,
    observed: &Observed,
    refused: &[Downgrade],
    requests: &[Request],
    now: Timestamp,
) -> (Versions, BTreeMap<String, Versions>) {
    let previous = observed.previous_desired.as_ref();
    let accepted = |group: Option<&str>, declared| {
        refused
            .iter()
            .any(|d| d.node_group.as_deref() == group)
            .then(|| match group {
                None => previous.and_then(|p| p.control_plane),
                Some(g) => previous.and_then(|p| p.node_groups.get(g).copied()),
            })
            .flatten()
            .filter(|a| *a != declared)
    };
    let requested_now = |group: Option<&str>| {
        requests
            .iter()
            .find(|r| r.node_group.as_deref() == group)
            .map(|r| r.version)
    };
    let now_or =
        |group, earlier: Option<tidemark_schema::KubeVersion>, at| match requested_now(group) {
            Some(v) => (Some(v), Some(now)),
            None => (earlier, at),
        };

    let mut control_plane = Versions::new(Some(observed.control_plane), None, state.control_plane);
    control_plane.accepted = accepted(None, state.control_plane);
    (control_plane.requested, control_plane.requested_at) = now_or(
        None,
        observed.control_plane_requested,
        observed.control_plane_requested_at,
    );
    let node_groups = state
        .node_groups
        .iter()
        .map(|g| {
            let o = observed.node_groups.get(&g.name);
            let min = o.and_then(|o| o.min_kubelet);
            let mut v = Versions::new(min, o.and_then(|o| o.max_kubelet), g.version);
            v.accepted = accepted(Some(&g.name), g.version);
            let earlier = o
                .and_then(|o| o.requested)
                .filter(|r| min.is_none_or(|m| r.is_newer_than(m)));
            (v.requested, v.requested_at) =
                now_or(Some(&g.name), earlier, o.and_then(|o| o.requested_at));
            (g.name.clone(), v)
        })
        .collect();
    (control_plane, node_groups)
}

#[cfg(test)]
mod tests {
    use tidemark_schema::ComponentPhase;

    use super::*;
    use crate::converge::StepFailure;
    use crate::fixtures::{DesiredExt, desired, now, observed, v, with_component};
    use crate::observe::model::PreviousDesired;
    use crate::select::Selection;
    use crate::status::ComponentRecord;

    fn wrap(state: DesiredState) -> Desired {
        Desired {
            selection: Selection {
                name: state.cluster.clone(),
                file: "clusters/test.yaml".into(),
                wave: None,
                tag: None,
            },
            branch: "main".into(),
            revision: "abc".into(),
            inputs: state
                .components
                .iter()
                .map(|c| {
                    let inputs = crate::component::inputs::ComponentInputs {
                        digest: "d".into(),
                        chart: crate::component::inputs::ChartSource::InRepo {
                            path: format!("charts/{}", c.name),
                        },
                        version: None,
                        display: format!("{} 1.0.0", c.name),
                        values: serde_json::Map::new(),
                    };
                    (c.name.clone(), Ok(inputs))
                })
                .collect(),
            state,
            descends_from_applied: None,
        }
    }

    fn progress(state: DesiredState, observed: Observed) -> Progress {
        let desired = wrap(state);
        let plan = plan::plan(&desired.state, &input_digests(&desired), &observed, now());
        Progress {
            desired,
            observed,
            plan,
            execution: Execution::default(),
        }
    }

    fn record(health: ComponentHealth, inputs: &str, message: Option<&str>) -> ComponentRecord {
        ComponentRecord {
            chart: "dns 1.0.0".into(),
            health,
            inputs: Some(inputs.into()),
            message: message.map(str::to_string),
            ..ComponentRecord::default()
        }
    }

    #[test]
    fn a_pass_is_converged_only_when_every_component_is_applied_and_healthy() {
        let d = with_component(desired("1.30.4"), "dns", ComponentPhase::AfterNodeGroups);
        let mut p = progress(d, observed("1.30.4", &[]));
        let mut set = |r: ComponentRecord| {
            p.execution.components.insert("dns".into(), r);
            conclude(&p)
        };
        assert_eq!(
            set(record(ComponentHealth::Healthy, "d", None)),
            (
                Phase::Converged,
                "converged: control plane 1.30.4, 1 components healthy".into()
            )
        );
        assert_eq!(
            set(record(
                ComponentHealth::Progressing,
                "d",
                Some("Deployment a/b: 0 of 1 available")
            )),
            (
                Phase::Progressing,
                "component dns Progressing: Deployment a/b: 0 of 1 available".into()
            )
        );
        // Healthy, but with the inputs of an earlier commit: not converged.
        assert_eq!(
            set(record(ComponentHealth::Healthy, "old", None)).0,
            Phase::Progressing
        );
        assert_eq!(
            set(record(
                ComponentHealth::Failed,
                "d",
                Some("failed to render: boom")
            )),
            (
                Phase::Failed,
                "component dns Failed: failed to render: boom".into()
            )
        );
    }

    #[test]
    fn a_failure_never_hides_a_refused_declaration_and_a_failed_step_names_itself() {
        let d = with_component(
            desired("1.29.8").group("general", "1.29.8"),
            "dns",
            ComponentPhase::AfterNodeGroups,
        );
        let mut p = progress(d, observed("1.30.4", &[("general", "1.30.4")]));
        assert_eq!(p.plan.phase, Phase::Blocked);
        p.execution.components.insert(
            "dns".into(),
            record(ComponentHealth::Failed, "d", Some("boom")),
        );
        let (phase, message) = conclude(&p);
        assert_eq!(phase, Phase::Blocked);
        assert!(
            message.ends_with("; component dns Failed: boom"),
            "{message}"
        );

        let mut p = progress(
            desired("1.30.4").group("general", "1.29.8"),
            observed("1.29.8", &[("general", "1.29.8")]),
        );
        let step = p.plan.steps[0].clone();
        p.execution.failure = Some(StepFailure {
            step,
            error: crate::provider::Error::NeedsPatch(v("1.30")).into(),
        });
        assert_eq!(
            conclude(&p),
            (
                Phase::Blocked,
                "upgrade control plane 1.29.8 -> 1.30.4: no patch release of 1.30 is known: list one in fleet.yaml spec.kubernetesVersions".into()
            )
        );
    }

    #[test]
    fn a_tag_moved_back_is_said() {
        let mut p = progress(desired("1.30.4"), observed("1.30.4", &[]));
        p.desired.descends_from_applied = Some(false);
        let (phase, message) = conclude(&p);
        assert_eq!(phase, Phase::Converged);
        assert!(
            message.contains("does not descend from the last applied one"),
            "{message}"
        );
    }

    /// Defect of issue 9: a refused downgrade turned `Converged` on the next pass, because
    /// the record kept the lowered declaration as "what was declared before".
    #[test]
    fn r9_a_refused_downgrade_stays_refused_on_every_pass() {
        let lowered = with_component(
            desired("1.29.8").group("general", "1.30.4"),
            "dns",
            ComponentPhase::BeforeControlPlane,
        );
        // Pass 1: git declared 1.30.4 before; now 1.29.8.
        let mut o = observed("1.30.4", &[("general", "1.30.4")]);
        o.previous_desired = Some(PreviousDesired {
            control_plane: Some(v("1.30.4")),
            node_groups: [("general".to_string(), v("1.30.4"))].into(),
        });
        let mut record = Record::default();
        for pass in 1..=3 {
            let p = progress(lowered.clone(), o.clone());
            assert_eq!(p.plan.phase, Phase::Blocked, "pass {pass}");
            assert!(p.plan.steps.is_empty(), "nothing of that commit is applied");
            let (phase, _) = conclude(&p);
            assert_eq!(phase, Phase::Blocked, "pass {pass}");
            let (cp, groups) = versions(&p.desired.state, &p.observed, &p.plan.refused, &[], now());
            assert_eq!(cp.desired, v("1.29.8"));
            assert_eq!(cp.accepted, Some(v("1.30.4")), "pass {pass}");
            assert_eq!(groups["general"].accepted, None);
            let summary = Summary {
                cluster: Some(("test".into(), None)),
                desired_revision: Some("abc".into()),
                phase,
                message: String::new(),
                versions: Some((cp, groups)),
                components: None,
                drift_checked: false,
            };
            record = status::compose(&record, &summary, now());
            assert_eq!(record.applied_revision, None, "pass {pass}");
            // The next pass observes what this one recorded.
            o.previous_desired = Some(PreviousDesired {
                control_plane: record.control_plane.as_ref().map(Versions::baseline),
                node_groups: record
                    .node_groups
                    .iter()
                    .map(|(k, v)| (k.clone(), v.baseline()))
                    .collect(),
            });
        }
        // Git declares the running version again: converged, and the refusal is gone.
        let fixed = desired("1.30.4").group("general", "1.30.4");
        let p = progress(fixed, o);
        assert_eq!(p.plan.phase, Phase::Converged);
        let (cp, _) = versions(&p.desired.state, &p.observed, &p.plan.refused, &[], now());
        assert_eq!(cp.accepted, None);
    }

    #[test]
    fn requests_made_now_are_dated_now() {
        let state = desired("1.30.4").group("general", "1.29.8");
        let o = observed("1.29.8", &[("general", "1.29.8")]);
        let requests = [Request {
            node_group: None,
            version: v("1.30.4"),
        }];
        let (cp, groups) = versions(&state, &o, &[], &requests, now());
        assert_eq!(cp.requested, Some(v("1.30.4")));
        assert_eq!(cp.requested_at, Some(now()));
        assert_eq!(groups["general"].requested, None);
    }
}
