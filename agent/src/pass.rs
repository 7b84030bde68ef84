//! One pass of the agent: resolve the desired state from git, observe the cluster, plan,
//! execute at most the next step, and report status, whatever happened.
//!
//! A pass keeps nothing in memory for the next one: a restart (or `kill -9`) simply begins
//! a new pass from what it observes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use tidemark_schema::cluster::Provider as ProviderSpec;
use tidemark_schema::resolve::{DesiredComponent, DesiredState};
use tidemark_schema::{KubeVersion, LabelSelector};
use tracing::Instrument;

use crate::component::inputs::ComponentInputs;
use crate::component::{PassScratch, Runner, Settle, Target};
use crate::desired::{self, Outcome};
use crate::keys::annotations as keys;
use crate::observe::model::{ComponentHealth, ComponentRecord, Observed};
use crate::plan::{self, CheckReason, Inputs, Phase, Step};
use crate::provider::{AnyProvider, Provider, RolloutLimits};
use crate::source::GitCache;
use crate::status::{self, PassOutcome, VersionsNote};

/// What a pass needs.
pub struct Ctx {
    /// The git cache of the fleet repo.
    pub cache: GitCache,
    /// Branch to follow (default: the remote's HEAD).
    pub branch: Option<String>,
    /// Identity selector of this cluster's manifest.
    pub selector: LabelSelector,
    /// With a policy, the wave tag must be signed by one of these keys.
    pub allowed_signers: Option<crate::trust::AllowedSigners>,
    /// The cluster.
    pub client: kube::Client,
    /// Namespace holding the status annotations.
    pub status_namespace: String,
    /// The kubeconfig the agent was given, passed to `exec` provider commands as
    /// `KUBECONFIG` so they act on the same cluster.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Renders and applies components; keeps the inputs and renders of earlier passes.
    pub components: Runner,
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
}

/// Runs one pass at `now`.
pub async fn run(ctx: &Ctx, now: Timestamp) -> PassReport {
    let span = tracing::info_span!("pass", selector = %ctx.selector);
    async {
        let current = match status::read(&ctx.client, &ctx.status_namespace).await {
            Ok(c) => c,
            Err(e) => {
                // Without the status object nothing can be reported either.
                let message = format!(
                    "failed to read the status namespace {}: {e}",
                    ctx.status_namespace
                );
                tracing::warn!(%message, "pass failed");
                return PassReport {
                    phase: Phase::Failed,
                    message,
                    executed: vec![],
                    status_written: false,
                };
            }
        };
        let (outcome, executed) = converge(ctx, &current, now).await;
        let next = status::compose(&outcome, &current, now);
        let status_written =
            match status::write(&ctx.client, &ctx.status_namespace, &current, &next).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "failed to write status");
                    false
                }
            };
        let phase = outcome.phase.unwrap_or(Phase::Failed);
        tracing::info!(%phase, message = %outcome.message, steps = executed.len(), "pass finished");
        PassReport {
            phase,
            message: outcome.message,
            executed,
            status_written,
        }
    }
    .instrument(span)
    .await
}

/// Resolve, observe, plan, execute; every failure becomes a phase and a message.
async fn converge(
    ctx: &Ctx,
    current: &BTreeMap<String, String>,
    now: Timestamp,
) -> (PassOutcome, Vec<String>) {
    let mut outcome = PassOutcome::default();
    let fail = |mut o: PassOutcome, phase: Phase, message: String| {
        o.phase = Some(phase);
        o.message = message;
        (o, vec![])
    };
    // git2 is blocking; the sync is one ref listing when nothing moved, so it runs inline.
    let resolved = match desired::resolve(
        &ctx.cache,
        ctx.branch.as_deref(),
        &ctx.selector,
        ctx.allowed_signers.as_ref(),
        now,
    ) {
        Ok(r) => r,
        Err(desired::Error::Select(e)) => return fail(outcome, Phase::Blocked, e.to_string()),
        Err(e @ desired::Error::Untrusted { .. }) => {
            return fail(outcome, Phase::Blocked, describe(&e));
        }
        Err(e) => return fail(outcome, Phase::Failed, e.to_string()),
    };
    outcome.cluster = Some(resolved.selection.name.clone());
    outcome.wave = resolved.selection.wave.clone();
    let (state, revision) = match resolved.outcome {
        Outcome::NothingYet { reason } => {
            return fail(
                outcome,
                Phase::Waiting,
                format!("nothing to do yet: {reason}"),
            );
        }
        Outcome::Desired { state, revision } => (state, revision),
    };
    outcome.desired_revision = Some(revision.clone());

    let mut observed =
        match crate::observe::observe(&ctx.client, &state, &ctx.status_namespace).await {
            Ok(o) => o,
            Err(e) => return fail(outcome, Phase::Failed, describe(&e)),
        };
    let provider = AnyProvider::for_cluster(&ctx.client, &state, ctx.kubeconfig.as_deref());
    if let AnyProvider::Exec(exec) = &provider {
        match exec.busy().await {
            Ok(busy) => observed.provider_busy = busy,
            Err(e) => {
                return fail(
                    outcome,
                    Phase::Failed,
                    format!("provider status: {}", describe(&e)),
                );
            }
        }
    }
    let in_flight = requests_in_flight(&state, &observed, current, now);
    if let ProviderSpec::Exec(_) = state.provider {
        observed.control_plane_requested = in_flight.control_plane;
        for (group, v) in &in_flight.node_groups {
            if let Some(g) = observed.node_groups.get_mut(group) {
                g.requested = Some(*v);
            }
        }
    }
    for (group, at) in &in_flight.node_groups_at {
        if let Some(g) = observed.node_groups.get_mut(group) {
            g.requested_at = at.parse().ok();
        }
    }
    outcome.control_plane = Some(VersionsNote {
        requested: observed.control_plane_requested.map(|v| v.to_string()),
        requested_at: in_flight.control_plane_at.clone(),
        ..VersionsNote::new(Some(observed.control_plane), None, state.control_plane)
    });
    for g in &state.node_groups {
        let o = observed.node_groups.get(&g.name);
        let mut note = VersionsNote::new(
            o.and_then(|o| o.min_kubelet),
            o.and_then(|o| o.max_kubelet),
            g.version,
        );
        note.requested = o
            .and_then(|o| o.requested)
            .filter(|r| {
                o.and_then(|o| o.min_kubelet)
                    .is_none_or(|m| r.is_newer_than(m))
            })
            .map(|v| v.to_string());
        note.requested_at = in_flight.node_groups_at.get(&g.name).cloned();
        outcome.node_groups.insert(g.name.clone(), note);
    }

    let inputs = match ctx.components.inputs(&ctx.cache, &revision, &state) {
        Ok(i) => i,
        Err(e) => return fail(outcome, Phase::Failed, describe(&e)),
    };
    let drift_interval = ctx.components.settings().drift_interval;
    observed.drift_due = current
        .get(keys::DRIFT_CHECKED)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_none_or(|t| now.duration_since(t).unsigned_abs() >= drift_interval);
    let plan_inputs = plan_inputs(&inputs);

    let base = plan::plan(&state, &observed, now);
    let p = plan::plan_pass(&state, &plan_inputs, &observed, now);
    tracing::debug!(plan = ?p, "planned");
    let mut message = p.message.clone();
    for note in &p.notes {
        message.push_str("; ");
        message.push_str(note);
    }
    outcome.phase = Some(p.phase);
    outcome.message = message;

    let mut work = ComponentWork {
        records: observed.components.clone(),
        scratch: PassScratch::new(state.components.iter().map(|c| c.name.clone())),
    };
    let target = Target {
        client: &ctx.client,
        cache: &ctx.cache,
        revision: &revision,
    };
    let mut executed = Vec::new();
    // A component that ends its step unhealthy holds every later rank of this pass.
    let mut held_by: Option<(u8, String)> = None;
    let mut drift_checked = observed.drift_due && !state.components.is_empty();
    let ranks: std::collections::BTreeSet<u8> = p.steps.iter().map(Step::rank).collect();
    for rank in ranks {
        let here: Vec<&Step> = p.steps.iter().filter(|s| s.rank() == rank).collect();
        if let Some((_, why)) = &held_by {
            for step in &here {
                tracing::info!(%step, held_by = %why, "step held");
                if matches!(
                    step,
                    Step::CheckComponent {
                        reason: CheckReason::Drift,
                        ..
                    }
                ) {
                    drift_checked = false;
                }
            }
            continue;
        }
        // Components of one rank are rendered together (several helm processes at once)
        // and waited for together.
        let renders: Vec<(&DesiredComponent, &ComponentInputs)> = here
            .iter()
            .filter_map(|step| match step {
                Step::ApplyComponent { name, .. }
                | Step::CheckComponent {
                    name,
                    reason: CheckReason::Drift,
                    ..
                } => {
                    let c = state.components.iter().find(|c| &c.name == name)?;
                    let i = inputs.get(name)?.as_ref().ok()?;
                    Some((c, i))
                }
                _ => None,
            })
            .collect();
        ctx.components
            .prerender(target, &renders, &mut work.scratch)
            .await;
        let mut settle = Vec::new();
        for step in here {
            let span = tracing::info_span!("step", step = %step);
            if !step.is_disruptive() {
                let component =
                    run_component_step(ctx, target, &state, &inputs, step, &mut work, now)
                        .instrument(span)
                        .await;
                executed.extend(component.executed);
                settle.extend(component.settle);
                continue;
            }
            let result = execute(&provider, step).instrument(span).await;
            match result {
                Ok(()) => {
                    tracing::info!(%step, "step requested");
                    executed.push(step.to_string());
                    record_request(&mut outcome, step, now);
                }
                Err(e) => {
                    tracing::warn!(%step, error = %e, "step failed");
                    let phase = if e.needs_person() {
                        Phase::Blocked
                    } else {
                        Phase::Failed
                    };
                    outcome.components = Some(keep_declared(work.records, &state));
                    return (
                        PassOutcome {
                            phase: Some(phase),
                            message: format!("{step}: {}", describe(&e)),
                            ..outcome
                        },
                        executed,
                    );
                }
            }
        }
        for (name, record) in ctx.components.settle(&ctx.client, settle, now).await {
            if record.health != ComponentHealth::Healthy && held_by.is_none() {
                held_by = Some((rank, record.describe(&name)));
            }
            work.records.insert(name, record);
        }
    }
    let mut records = work.records;
    for c in &state.components {
        // Held before ever being applied: say so.
        records
            .entry(c.name.clone())
            .or_insert_with(|| ComponentRecord {
                chart: inputs
                    .get(&c.name)
                    .and_then(|i| i.as_ref().ok())
                    .map(|i| i.display.clone())
                    .unwrap_or_default(),
                health: ComponentHealth::Pending,
                message: Some(held_by.as_ref().map_or_else(
                    || "waits for its phase".to_string(),
                    |(_, why)| format!("held: {why}"),
                )),
                ..ComponentRecord::default()
            });
    }
    let records = keep_declared(records, &state);
    let (phase, message) = plan::conclude(
        &base,
        outcome.phase.unwrap_or(Phase::Failed),
        &outcome.message,
        &records,
        &plan_inputs,
        &state,
    );
    outcome.phase = Some(phase);
    outcome.message = message;
    outcome.components = Some(records);
    if drift_checked {
        outcome.drift_checked = Some(now.to_string());
    }
    (outcome, executed)
}

/// What a component step did: a line for the report, and the component to wait for.
struct ComponentStepResult<'a> {
    executed: Option<String>,
    settle: Option<Settle<'a>>,
}

/// The component records and shared work of one pass.
struct ComponentWork {
    records: BTreeMap<String, ComponentRecord>,
    scratch: PassScratch,
}

async fn run_component_step<'a>(
    ctx: &Ctx,
    target: Target<'_>,
    state: &'a DesiredState,
    inputs: &BTreeMap<String, Result<ComponentInputs, String>>,
    step: &Step,
    work: &mut ComponentWork,
    now: Timestamp,
) -> ComponentStepResult<'a> {
    let runner = &ctx.components;
    let (records, scratch) = (&mut work.records, &mut work.scratch);
    let nothing = || ComponentStepResult {
        executed: None,
        settle: None,
    };
    let name = match step {
        Step::ApplyComponent { name, .. }
        | Step::CheckComponent { name, .. }
        | Step::PruneComponent { name } => name.clone(),
        _ => return nothing(),
    };
    if let Step::PruneComponent { .. } = step {
        return match runner.prune_removed(&ctx.client, &name, scratch).await {
            Ok(n) => {
                records.remove(&name);
                ComponentStepResult {
                    executed: Some(format!("pruned component {name} ({n} objects)")),
                    settle: None,
                }
            }
            Err(e) => {
                let r = records.entry(name.clone()).or_default();
                r.health = ComponentHealth::Failed;
                r.message = Some(format!("prune of removed component failed: {e}"));
                nothing()
            }
        };
    }
    let Some(c) = state.components.iter().find(|c| c.name == name) else {
        return nothing();
    };
    let own_inputs = inputs
        .get(&name)
        .map(|r| r.as_ref().map_err(String::as_str))
        .unwrap_or(Err("component inputs missing"));
    let previous = records.get(&name).cloned();
    let applied_at = |r: &ComponentRecord| {
        r.applied_at
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or(now)
    };
    let (record, since, executed) = match step {
        Step::ApplyComponent { .. } => {
            let r = runner
                .apply(target, c, own_inputs, previous.as_ref(), scratch, now)
                .await;
            let line = (r.health != ComponentHealth::Failed)
                .then(|| format!("applied component {name} ({} objects)", r.objects));
            (r, now, line)
        }
        Step::CheckComponent {
            reason: CheckReason::Drift,
            ..
        } => {
            let (Ok(i), Some(prev)) = (own_inputs, previous.as_ref()) else {
                return nothing();
            };
            let (r, corrected) = runner.check_drift(target, c, i, prev, scratch, now).await;
            let line = (!corrected.is_empty()).then(|| {
                format!(
                    "corrected drift of component {name}: {}",
                    corrected.join(", ")
                )
            });
            // Waits for what a correction rolls out; otherwise a look at its health.
            (r, now, line)
        }
        _ => {
            let prev = previous.clone().unwrap_or_default();
            let since = applied_at(&prev);
            (prev, since, None)
        }
    };
    ComponentStepResult {
        executed,
        settle: Some(Settle {
            component: c,
            record,
            since,
        }),
    }
}

/// What the planner needs of the components' inputs: their digests.
pub fn plan_inputs(
    inputs: &BTreeMap<String, Result<ComponentInputs, String>>,
) -> BTreeMap<String, Inputs> {
    inputs
        .iter()
        .map(|(name, i)| {
            let i = match i {
                Ok(i) => Inputs::Digest(i.digest.clone()),
                Err(e) => Inputs::Unreadable(e.clone()),
            };
            (name.clone(), i)
        })
        .collect()
}

/// The records of declared components, plus removed ones whose prune failed.
fn keep_declared(
    mut records: BTreeMap<String, ComponentRecord>,
    state: &DesiredState,
) -> BTreeMap<String, ComponentRecord> {
    records.retain(|name, r| {
        state.components.iter().any(|c| &c.name == name) || r.health == ComponentHealth::Failed
    });
    records
}

async fn execute(provider: &AnyProvider, step: &Step) -> Result<(), crate::provider::Error> {
    tracing::info!(%step, "executing step");
    match step {
        // Component steps are run by the component runner.
        Step::ApplyComponent { .. } | Step::CheckComponent { .. } | Step::PruneComponent { .. } => {
            Ok(())
        }
        Step::UpgradeControlPlane { to, .. } => provider.upgrade_control_plane(*to).await,
        Step::UpgradeNodeGroup {
            group,
            to,
            max_unavailable,
            drain_timeout,
            ..
        } => {
            let limits = RolloutLimits {
                max_unavailable: *max_unavailable,
                drain_timeout: *drain_timeout,
            };
            provider.upgrade_node_group(group, *to, limits).await
        }
    }
}

/// Notes the request in the status so the next pass follows it rather than repeating it.
fn record_request(outcome: &mut PassOutcome, step: &Step, now: Timestamp) {
    let (note, to) = match step {
        Step::UpgradeControlPlane { to, .. } => (outcome.control_plane.as_mut(), to),
        Step::UpgradeNodeGroup { group, to, .. } => (outcome.node_groups.get_mut(group), to),
        _ => return,
    };
    if let Some(note) = note {
        note.requested = Some(to.to_string());
        note.requested_at = Some(now.to_string());
    }
}

/// Requests recorded by earlier passes that are still in flight: newer than what runs and
/// younger than the provider's timeout. The `exec` provider follows them instead of
/// repeating a command; for every provider they date a node group's rollout.
#[derive(Default)]
struct InFlight {
    control_plane: Option<KubeVersion>,
    control_plane_at: Option<String>,
    node_groups: BTreeMap<String, KubeVersion>,
    node_groups_at: BTreeMap<String, String>,
}

fn requests_in_flight(
    state: &DesiredState,
    observed: &Observed,
    current: &BTreeMap<String, String>,
    now: Timestamp,
) -> InFlight {
    // `exec` requests expire after the command timeout (the provider may have dropped
    // them); Cluster API keeps its targets in its objects, so its requests only date the
    // rollout (for the drain timeout) and never expire.
    let timeout = match &state.provider {
        ProviderSpec::Exec(exec) => exec
            .timeout
            .map(|t| t.as_std())
            .unwrap_or(std::time::Duration::from_secs(1800)),
        ProviderSpec::ClusterApi(_) => std::time::Duration::MAX,
    };
    let fresh = |note: &serde_json::Value| -> Option<(KubeVersion, String)> {
        let requested = KubeVersion::parse_observed(note.get("requested")?.as_str()?).ok()?;
        let at_text = note.get("requestedAt")?.as_str()?.to_string();
        let at: Timestamp = at_text.parse().ok()?;
        (now.duration_since(at).unsigned_abs() < timeout).then_some((requested, at_text))
    };
    let mut out = InFlight::default();
    if let Some((v, at)) = current
        .get(keys::CONTROL_PLANE)
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .and_then(|n| fresh(&n))
        .filter(|(v, _)| v.is_newer_than(observed.control_plane))
    {
        out.control_plane = Some(v);
        out.control_plane_at = Some(at);
    }
    let groups = current
        .get(keys::NODE_GROUPS)
        .and_then(|j| serde_json::from_str::<BTreeMap<String, serde_json::Value>>(j).ok())
        .unwrap_or_default();
    for (name, note) in groups {
        let Some((v, at)) = fresh(&note) else {
            continue;
        };
        let min = observed.node_groups.get(&name).and_then(|g| g.min_kubelet);
        if min.is_none_or(|m| v.is_newer_than(m)) {
            out.node_groups.insert(name.clone(), v);
            out.node_groups_at.insert(name, at);
        }
    }
    out
}

/// The error and its causes, joined (`a: b: c`), for status messages.
fn describe(e: &dyn std::error::Error) -> String {
    let causes = source_chain(e);
    if causes.is_empty() {
        e.to_string()
    } else {
        format!("{e}: {causes}")
    }
}

/// The causes of an error, joined (`b: c`).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    if parts.is_empty() {
        "no further detail".into()
    } else {
        parts.join(": ")
    }
}
