//! Executing a plan: the provider steps of the control plane and node groups, and the
//! component steps, rank by rank (DESIGN.md "Convergence order").
//!
//! - Steps run in rank order: components `before-control-plane`, the control plane,
//!   components `after-control-plane`, node groups, components `after-node-groups` and
//!   removed components.
//! - The components of one rank render together, then apply one by one, then are waited
//!   for together ([`settle`]); a component that ends its step unhealthy holds every
//!   later rank of the pass.
//! - A provider step that fails stops the pass; what earlier ranks did is kept.
//! - Every step is idempotent: a pass killed at any point is completed by the next one.
//!
//! The stages of a component step each have a module: [`render`], [`hooks`] (helm hooks
//! before and after), [`apply`], [`prune`], [`settle`], [`drift`], and [`preview`] for
//! `tidemark plan`; [`live`] is their access to the API server.

pub mod apply;
pub mod drain;
pub mod drift;
pub mod hooks;
pub mod live;
pub mod preview;
pub mod prune;
pub mod render;
pub mod settle;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tidemark_schema::KubeVersion;
use tidemark_schema::resolve::DesiredComponent;
use tracing::Instrument;

use crate::component::hooks::{Role, When};
use crate::component::inputs::{ComponentInputs, InputsError};
use crate::component::manifest::{ObjectKey, RenderedObject};
use crate::desired::{Desired, Source};
use crate::observe::model::{Capabilities, Observed};
use crate::plan::{CheckReason, Plan, Step};
use crate::provider::{self, AnyProvider, Provider, RolloutLimits};
use crate::status::{ComponentHealth, ComponentRecord, describe};
use live::{ApiError, Kinds, LiveError, LiveIndex, LiveObject};
use render::{Render, RenderCapabilities, RenderError, Rendered, Renderer};
use settle::Settle;

/// How component steps wait.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Longest a pass waits for a component to become healthy before reporting it
    /// `Progressing` and moving on (later passes check again, up to its `timeout`).
    pub health_wait: Duration,
    /// Longest a CRD may take to become Established.
    pub crd_wait: Duration,
    /// How often applied components are compared with their render.
    pub drift_interval: Duration,
}

/// What a pass executes against: the cluster, the fleet repo at the desired commit, and
/// the renderer with the renders it keeps.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// The cluster.
    pub client: &'a kube::Client,
    /// The fleet repo (charts are read from it).
    pub source: &'a Source,
    /// The desired commit.
    pub revision: &'a str,
    /// Renders components.
    pub renderer: &'a Renderer,
    /// How component steps wait.
    pub settings: &'a Settings,
    /// What the cluster offers charts (as observed for this pass).
    pub capabilities: &'a Capabilities,
}

/// Errors of one component's step: the component is `Failed` with this message, the rest
/// of the pass goes on.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// Its inputs could not be read from the fleet repo.
    #[error("failed to read its inputs from the fleet repo")]
    Inputs(#[source] Arc<InputsError>),
    /// The render failed.
    #[error("failed to render")]
    Render(#[source] RenderError),
    /// The render could not be applied.
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    /// Objects it no longer renders could not be pruned.
    #[error(transparent)]
    Prune(#[from] prune::PruneError),
    /// A hook failed.
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
}

/// Work shared by the component steps of one pass.
#[derive(Default)]
pub struct Scratch {
    /// Kinds resolved by discovery.
    pub kinds: Kinds,
    /// Live objects listed per kind.
    pub live: LiveIndex,
    served: Option<live::Served>,
    swept: Option<Vec<LiveObject>>,
    /// Objects applied in this pass, by the component that applied them.
    pub applied: HashMap<ObjectKey, String>,
    /// Namespaces known to exist (created or found) in this pass.
    pub namespaces: BTreeSet<String>,
    /// The components declared now (an object of one that is not may be adopted).
    pub declared: BTreeSet<String>,
    /// Renders made ahead for this pass's steps.
    pub rendered: HashMap<String, Result<Rendered, RenderError>>,
    render_capabilities: Option<Result<RenderCapabilities, Arc<ApiError>>>,
}

/// What the cluster holds for a rendered object.
pub enum Lookup {
    /// The API server does not serve its kind (yet).
    NotServed,
    /// No such object labelled for the component.
    Absent,
    /// The live object.
    Found(serde_json::Value),
}

impl Scratch {
    /// Scratch for a pass in which `declared` are the declared components.
    pub fn new(declared: impl IntoIterator<Item = String>) -> Self {
        Self {
            declared: declared.into_iter().collect(),
            ..Self::default()
        }
    }

    /// What the API server serves, discovered once per pass.
    pub async fn served(&mut self, client: &kube::Client) -> Result<&live::Served, ApiError> {
        if self.served.is_none() {
            self.served = Some(live::Served::discover(client).await?);
        }
        Ok(self.served.get_or_insert_with(live::Served::default))
    }

    /// What charts are rendered for in this pass: `capabilities`' Kubernetes version and
    /// every group/version and kind the cluster serves (discovered once per pass, and only
    /// when something is rendered).
    pub async fn render_capabilities(
        &mut self,
        client: &kube::Client,
        capabilities: &Capabilities,
    ) -> Result<RenderCapabilities, RenderError> {
        if self.render_capabilities.is_none() {
            let found = match self.served(client).await {
                Ok(served) => Ok(RenderCapabilities {
                    kube_version: capabilities.kube_version.map(|v| v.to_string()),
                    api_versions: served.api_versions.iter().cloned().collect(),
                }),
                Err(e) => Err(Arc::new(e)),
            };
            self.render_capabilities = Some(found);
        }
        match &self.render_capabilities {
            Some(Ok(c)) => Ok(c.clone()),
            Some(Err(e)) => Err(RenderError::Discovery(e.clone())),
            None => Ok(RenderCapabilities::default()),
        }
    }

    /// Every labelled object of the cluster, swept once per pass (see [`live::sweep`]).
    pub async fn swept(&mut self, client: &kube::Client) -> Result<&[LiveObject], ApiError> {
        if self.swept.is_none() {
            let served = self.served(client).await?.clone();
            self.swept = Some(live::sweep(client, &served).await);
        }
        Ok(self.swept.as_deref().unwrap_or_default())
    }

    /// The live object of component `component` that `obj` renders to.
    pub async fn lookup(
        &mut self,
        client: &kube::Client,
        component: &str,
        obj: &RenderedObject,
    ) -> Result<Lookup, LiveError> {
        let Some((ar, namespaced)) = self.kinds.of(client, obj).await? else {
            return Ok(Lookup::NotServed);
        };
        let index = self.live.of_kind(client, &ar, namespaced).await?;
        Ok(match index.get(&(component.to_string(), obj.key())) {
            Some(l) => Lookup::Found(l.body.clone()),
            None => Lookup::Absent,
        })
    }
}

/// A provider request made in this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The node group, or `None` for the control plane.
    pub node_group: Option<String>,
    /// The version asked for.
    pub version: KubeVersion,
}

/// A provider step that failed; the pass stopped there.
#[derive(Debug)]
pub struct StepFailure {
    /// The step.
    pub step: Step,
    /// Why.
    pub error: StepError,
}

/// Why a control-plane or node-group step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The provider refused or failed.
    #[error(transparent)]
    Provider(#[from] provider::Error),
    /// tidemark's own drain stopped.
    #[error(transparent)]
    Drain(#[from] drain::DrainError),
}

impl StepError {
    /// Whether a person must act (as opposed to retrying later).
    pub fn needs_person(&self) -> bool {
        match self {
            StepError::Provider(e) => e.needs_person(),
            StepError::Drain(e) => e.needs_person(),
        }
    }
}

/// What executing a plan did.
#[derive(Debug, Default)]
pub struct Execution {
    /// What was done, one line per step that changed something.
    pub executed: Vec<String>,
    /// Provider requests made.
    pub requests: Vec<Request>,
    /// The provider step that failed, if one did.
    pub failure: Option<StepFailure>,
    /// Every declared component's record after the pass (plus removed components whose
    /// prune failed).
    pub components: BTreeMap<String, ComponentRecord>,
    /// Whether every applied component was checked for drift in this pass.
    pub drift_checked: bool,
    /// What a step in progress reports (tidemark's own drain: the node it waits for).
    pub progress: Vec<String>,
}

/// Executes the steps of `plan` for `desired`, observed as `observed`.
pub async fn execute(
    target: &Target<'_>,
    plan: &Plan,
    desired: &Desired,
    observed: &Observed,
    provider: &AnyProvider,
    now: Timestamp,
) -> Execution {
    let state = &desired.state;
    let mut scratch = Scratch::new(state.components.iter().map(|c| c.name.clone()));
    let mut out = Execution {
        components: observed.components.clone(),
        drift_checked: observed.drift_due && !state.components.is_empty(),
        ..Execution::default()
    };
    // A component that ends its step unhealthy holds every later rank of this pass.
    let mut held_by: Option<String> = None;
    let ranks: BTreeSet<u8> = plan.steps.iter().map(Step::rank).collect();
    for rank in ranks {
        let here: Vec<&Step> = plan.steps.iter().filter(|s| s.rank() == rank).collect();
        if let Some(why) = &held_by {
            for step in &here {
                tracing::info!(%step, held_by = %why, "step held");
                if is_drift_check(step) {
                    out.drift_checked = false;
                }
            }
            continue;
        }
        // The components of one rank are rendered together and waited for together.
        let jobs: Vec<(&DesiredComponent, &ComponentInputs)> = here
            .iter()
            .filter(|s| matches!(s, Step::ApplyComponent { .. }) || is_drift_check(s))
            .filter_map(|s| component_of(s, desired))
            .filter_map(|(c, i)| Some((c, i.ok()?)))
            .collect();
        if !jobs.is_empty() {
            scratch.rendered = match scratch
                .render_capabilities(target.client, target.capabilities)
                .await
            {
                Ok(caps) => {
                    target
                        .renderer
                        .render_all(target.source, target.revision, &caps, &jobs)
                        .await
                }
                Err(RenderError::Discovery(e)) => jobs
                    .iter()
                    .map(|(c, _)| (c.name.clone(), Err(RenderError::Discovery(e.clone()))))
                    .collect(),
                Err(_) => HashMap::new(),
            };
        }
        let mut waiting = Vec::new();
        for step in here {
            let span = tracing::info_span!("step", %step);
            if step.is_disruptive() {
                match request(target, provider, step, desired, now)
                    .instrument(span)
                    .await
                {
                    Err(error) => {
                        tracing::warn!(%step, error = %describe(&error), "step failed");
                        out.failure = Some(StepFailure {
                            step: step.clone(),
                            error,
                        });
                        return finish(out, desired, held_by);
                    }
                    Ok(Requested::Once) => {
                        tracing::info!(%step, "step requested");
                        out.executed.push(step.to_string());
                        out.requests.extend(requested(step));
                    }
                    Ok(Requested::Continuing(progress)) => {
                        out.executed.push(step.to_string());
                        out.progress.push(progress);
                    }
                    Ok(Requested::Finished) => out.executed.push(step.to_string()),
                }
                continue;
            }
            let done = component_step(target, &mut scratch, step, desired, &out.components, now)
                .instrument(span)
                .await;
            match done {
                StepDone::Settle { settle, line } => {
                    out.executed.extend(line);
                    waiting.push(settle);
                }
                StepDone::Pruned { name, line } => {
                    out.executed.push(line);
                    out.components.remove(&name);
                }
                StepDone::Record { name, record } => {
                    out.components.insert(name, record);
                }
                StepDone::Nothing => {}
            }
        }
        let settled =
            settle::settle(target.client, waiting, target.settings.health_wait, now).await;
        for (name, record) in settled {
            if record.health != ComponentHealth::Healthy && held_by.is_none() {
                held_by = Some(record.describe(&name));
            }
            out.components.insert(name, record);
        }
    }
    finish(out, desired, held_by)
}

/// Records for declared components never reached in this pass, and only the records of
/// declared components (and removed ones whose prune failed).
fn finish(mut out: Execution, desired: &Desired, held_by: Option<String>) -> Execution {
    for c in &desired.state.components {
        out.components
            .entry(c.name.clone())
            .or_insert_with(|| ComponentRecord {
                chart: desired
                    .inputs
                    .get(&c.name)
                    .and_then(|i| i.as_ref().ok())
                    .map(|i| i.display.clone())
                    .unwrap_or_default(),
                health: ComponentHealth::Pending,
                message: Some(held_by.as_ref().map_or_else(
                    || "waits for its phase".to_string(),
                    |why| format!("held: {why}"),
                )),
                ..ComponentRecord::default()
            });
    }
    let declared: BTreeSet<&str> = desired
        .state
        .components
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    out.components
        .retain(|name, r| declared.contains(name.as_str()) || r.health == ComponentHealth::Failed);
    out
}

fn is_drift_check(step: &Step) -> bool {
    matches!(
        step,
        Step::CheckComponent {
            reason: CheckReason::Drift,
            ..
        }
    )
}

/// The declared component a step is about, with its inputs.
fn component_of<'a>(
    step: &Step,
    desired: &'a Desired,
) -> Option<(
    &'a DesiredComponent,
    Result<&'a ComponentInputs, &'a Arc<InputsError>>,
)> {
    let name = match step {
        Step::ApplyComponent { name, .. } | Step::CheckComponent { name, .. } => name,
        _ => return None,
    };
    let c = desired.state.components.iter().find(|c| &c.name == name)?;
    let inputs = desired.inputs.get(name)?.as_ref();
    Some((c, inputs))
}

/// What a control-plane or node-group step did.
enum Requested {
    /// The provider was asked (it rolls on its own).
    Once,
    /// tidemark's own drain went on: what it waits for now.
    Continuing(String),
    /// tidemark's own drain finished.
    Finished,
}

/// Asks the provider for a control-plane or node-group step, or drives tidemark's own
/// drain of a `drain: tidemark` group one pass further.
async fn request(
    target: &Target<'_>,
    provider: &AnyProvider,
    step: &Step,
    desired: &Desired,
    now: Timestamp,
) -> Result<Requested, StepError> {
    tracing::info!(%step, "executing step");
    match step {
        Step::UpgradeControlPlane { to, .. } => {
            provider.upgrade_control_plane(*to).await?;
            crate::crash::point("provider-requested");
            Ok(Requested::Once)
        }
        Step::UpgradeNodeGroup {
            group,
            to,
            max_unavailable,
            drain_timeout,
            ..
        } => {
            let ours = desired
                .state
                .node_groups
                .iter()
                .find(|g| &g.name == group && g.drain == tidemark_schema::DrainBy::Tidemark);
            if let (Some(declared), AnyProvider::Exec(exec)) = (ours, provider) {
                let drain = drain::Drain {
                    client: target.client,
                    exec,
                    group,
                    max_unavailable: *max_unavailable,
                    drain_timeout: *drain_timeout,
                    delete_empty_dir_data: declared.delete_empty_dir_data,
                    to: *to,
                    now,
                };
                return Ok(match drain.step().await? {
                    drain::Drained::Done => Requested::Finished,
                    drain::Drained::Progress(p) => Requested::Continuing(p),
                });
            }
            let limits = RolloutLimits {
                max_unavailable: *max_unavailable,
                drain_timeout: *drain_timeout,
            };
            provider.upgrade_node_group(group, *to, limits).await?;
            crate::crash::point("provider-requested");
            Ok(Requested::Once)
        }
        _ => Ok(Requested::Once),
    }
}

/// The request a provider step makes.
fn requested(step: &Step) -> Option<Request> {
    match step {
        Step::UpgradeControlPlane { to, .. } => Some(Request {
            node_group: None,
            version: *to,
        }),
        Step::UpgradeNodeGroup { group, to, .. } => Some(Request {
            node_group: Some(group.clone()),
            version: *to,
        }),
        _ => None,
    }
}

/// What a component step did.
enum StepDone<'a> {
    /// Wait for the component's health (after an apply, a drift check or for a rollout).
    Settle {
        settle: Settle<'a>,
        line: Option<String>,
    },
    /// A removed component was pruned.
    Pruned { name: String, line: String },
    /// A record to keep as it is (a failed prune).
    Record {
        name: String,
        record: ComponentRecord,
    },
    /// Nothing to do (inputs missing for a drift check).
    Nothing,
}

async fn component_step<'a>(
    target: &Target<'_>,
    scratch: &mut Scratch,
    step: &Step,
    desired: &'a Desired,
    records: &BTreeMap<String, ComponentRecord>,
    now: Timestamp,
) -> StepDone<'a> {
    if let Step::PruneComponent { name } = step {
        target.renderer.forget(name);
        // A removed component's CRDs stay: its `pruneCRDs` is gone with it.
        return match prune::prune(target.client, scratch, name, None, false).await {
            Ok((n, retained)) => StepDone::Pruned {
                name: name.clone(),
                line: if retained.is_empty() {
                    format!("pruned component {name} ({n} objects)")
                } else {
                    format!(
                        "pruned component {name} ({n} objects; kept: {})",
                        retained.join(", ")
                    )
                },
            },
            Err(e) => {
                let mut record = records.get(name).cloned().unwrap_or_default();
                record.health = ComponentHealth::Failed;
                record.message = Some(format!(
                    "prune of removed component failed: {}",
                    describe(&e)
                ));
                StepDone::Record {
                    name: name.clone(),
                    record,
                }
            }
        };
    }
    let Some((c, inputs)) = component_of(step, desired) else {
        return StepDone::Nothing;
    };
    let previous = records.get(&c.name);
    match step {
        Step::ApplyComponent { .. } => {
            let (record, written) =
                apply_component(target, scratch, c, inputs, previous, now).await;
            let line = (written && record.health != ComponentHealth::Failed)
                .then(|| format!("applied component {} ({} objects)", c.name, record.objects));
            let since = record.applied_at.unwrap_or(now);
            StepDone::Settle {
                settle: Settle {
                    component: c,
                    record,
                    since,
                },
                line,
            }
        }
        Step::CheckComponent {
            reason: CheckReason::Drift,
            ..
        } => {
            let (Ok(inputs), Some(previous)) = (inputs, previous) else {
                return StepDone::Nothing;
            };
            let (record, corrected) = check_drift(target, scratch, c, inputs, previous, now).await;
            let line = (!corrected.is_empty()).then(|| {
                format!(
                    "corrected drift of component {}: {}",
                    c.name,
                    corrected.join(", ")
                )
            });
            // Waits for what a correction rolls out; otherwise a look at its health.
            StepDone::Settle {
                settle: Settle {
                    component: c,
                    record,
                    since: now,
                },
                line,
            }
        }
        _ => {
            // Git wants what was last applied completely: a failed attempt of other inputs
            // (a change since reverted) no longer matters, and the health is read afresh,
            // never carried over (issue 10: a reverted change stayed Failed for ever).
            let mut record = previous.cloned().unwrap_or_default();
            record.failed_inputs = None;
            if record.health == ComponentHealth::Failed {
                record.health = ComponentHealth::Progressing;
            }
            let since = record.applied_at.unwrap_or(now);
            StepDone::Settle {
                settle: Settle {
                    component: c,
                    record,
                    since,
                },
                line: None,
            }
        }
    }
}

/// Renders (or takes the render made ahead), prepares, checks ownership, applies and
/// prunes one component. The record is `Progressing` (the pass then waits for its health)
/// or `Failed`; a failed attempt keeps the last complete apply recorded. Returns whether
/// anything was written (a render equal to the last one applied writes nothing).
async fn apply_component(
    target: &Target<'_>,
    scratch: &mut Scratch,
    c: &DesiredComponent,
    inputs: Result<&ComponentInputs, &Arc<InputsError>>,
    previous: Option<&ComponentRecord>,
    now: Timestamp,
) -> (ComponentRecord, bool) {
    let attempted = inputs.ok().map(|i| i.digest.clone());
    let display = inputs.map(|i| i.display.clone()).unwrap_or_default();
    match try_apply(target, scratch, c, inputs, previous).await {
        Ok(Applied::Unchanged(render)) => {
            // Rendered again (new capabilities, or inputs that do not change the output):
            // the objects are the ones applied last time. Nothing to write.
            tracing::info!(component = %c.name, "rendered again; unchanged, nothing to apply");
            let record = ComponentRecord {
                chart: display,
                inputs: Some(render.inputs.clone()),
                capabilities: Some(target.capabilities.digest()),
                failed_inputs: None,
                ..previous.cloned().unwrap_or_default()
            };
            target.renderer.keep(&c.name, render);
            (record, false)
        }
        Ok(Applied::Applied(render, retained)) => {
            let record = ComponentRecord {
                retained,
                chart: display,
                health: ComponentHealth::Progressing,
                message: None,
                failed_inputs: None,
                inputs: Some(render.inputs.clone()),
                capabilities: Some(target.capabilities.digest()),
                rendered: Some(render.rendered.clone()),
                objects: u32::try_from(render.objects.len()).unwrap_or(u32::MAX),
                applied_at: Some(now),
            };
            tracing::info!(component = %c.name, objects = record.objects, "applied");
            target.renderer.keep(&c.name, render);
            (record, true)
        }
        Err(e) => {
            tracing::warn!(component = %c.name, error = %describe(&e), "component failed");
            let record = ComponentRecord {
                chart: display,
                health: ComponentHealth::Failed,
                message: Some(describe(&e)),
                // The last complete apply stays recorded: a failed attempt changes nothing
                // of what runs, and the same inputs are tried again next pass.
                failed_inputs: attempted,
                ..previous.cloned().unwrap_or_default()
            };
            (record, false)
        }
    }
}

/// What an apply did.
enum Applied {
    /// The render was applied (and what it no longer holds pruned, except what it keeps:
    /// CRDs without `pruneCRDs`, `helm.sh/resource-policy: keep`).
    Applied(Render, Vec<String>),
    /// The render is the one applied last time: nothing was written.
    Unchanged(Render),
}

async fn try_apply(
    target: &Target<'_>,
    scratch: &mut Scratch,
    c: &DesiredComponent,
    inputs: Result<&ComponentInputs, &Arc<InputsError>>,
    previous: Option<&ComponentRecord>,
) -> Result<Applied, ComponentError> {
    let inputs = inputs.map_err(|e| ComponentError::Inputs(e.clone()))?;
    let mut render = render_prepared(target, scratch, c, inputs).await?;
    if previous.is_some_and(|p| p.rendered.as_deref() == Some(render.rendered.as_str())) {
        return Ok(Applied::Unchanged(render));
    }
    apply::check_ownership(target.client, scratch, c, &render.objects).await?;
    apply::ensure_namespaces(target.client, scratch, c, &render.objects).await?;
    // Hooks of this apply (an install is the component's first apply) around the others.
    let install = previous.is_none_or(|p| p.inputs.is_none());
    let (mut ordinary, mut pre, mut post, mut skipped) = (vec![], vec![], vec![], vec![]);
    for o in std::mem::take(&mut render.objects) {
        match crate::component::hooks::role(&o.body, install) {
            Role::Ordinary => ordinary.push(o),
            Role::Hook(h) if h.when == When::Pre => pre.push((o, h)),
            Role::Hook(h) => post.push((o, h)),
            Role::Skipped => skipped.push(o),
        }
    }
    let timeout = c.timeout.as_std();
    let mut refs: Vec<_> = pre.iter_mut().map(|(o, h)| (o, *h)).collect();
    hooks::run(target.client, scratch, c.force, &mut refs, timeout).await?;
    apply::apply_objects(
        target.client,
        scratch,
        c,
        &mut ordinary,
        target.settings.crd_wait,
    )
    .await?;
    let mut rendered_now = ordinary.clone();
    rendered_now.extend(pre.iter().chain(&post).map(|(o, _)| o.clone()));
    rendered_now.extend(skipped.iter().cloned());
    let (pruned, retained) = prune::prune(
        target.client,
        scratch,
        &c.name,
        Some(&rendered_now),
        c.prune_crds,
    )
    .await?;
    if pruned > 0 {
        tracing::info!(component = %c.name, pruned, "pruned what the render no longer holds");
    }
    let mut refs: Vec<_> = post.iter_mut().map(|(o, h)| (o, *h)).collect();
    hooks::run(target.client, scratch, c.force, &mut refs, timeout).await?;
    render.objects = ordinary;
    render
        .objects
        .extend(pre.into_iter().chain(post).map(|(o, _)| o));
    render.objects.extend(skipped);
    Ok(Applied::Applied(render, retained))
}

/// The render of `c` made ahead for this pass, or a new one, prepared for apply.
async fn render_prepared(
    target: &Target<'_>,
    scratch: &mut Scratch,
    c: &DesiredComponent,
    inputs: &ComponentInputs,
) -> Result<Render, ComponentError> {
    let rendered = match scratch.rendered.remove(&c.name) {
        Some(r) => r,
        None => match scratch
            .render_capabilities(target.client, target.capabilities)
            .await
        {
            Ok(caps) => {
                target
                    .renderer
                    .render(target.source, target.revision, &caps, c, inputs)
                    .await
            }
            Err(e) => Err(e),
        },
    }
    .map_err(ComponentError::Render)?;
    let objects = apply::prepare(target.client, scratch, c, rendered.objects).await?;
    Ok(Render {
        inputs: inputs.digest.clone(),
        rendered: rendered.digest,
        objects,
    })
}

/// Checks an applied component for drift against its recorded render: the kept one, or a
/// new render that must equal the recorded one (else it is applied in full, as a change).
async fn check_drift(
    target: &Target<'_>,
    scratch: &mut Scratch,
    c: &DesiredComponent,
    inputs: &ComponentInputs,
    record: &ComponentRecord,
    now: Timestamp,
) -> (ComponentRecord, Vec<String>) {
    let mut render = match target.renderer.kept(&c.name, &inputs.digest) {
        Some(r) => r,
        None => {
            let fresh = match render_prepared(target, scratch, c, inputs).await {
                Ok(r) => r,
                Err(e) => {
                    let failed = ComponentRecord {
                        health: ComponentHealth::Failed,
                        message: Some(describe(&e)),
                        ..record.clone()
                    };
                    return (failed, vec![]);
                }
            };
            if !drift::matches_record(&fresh, inputs, record) {
                // Same inputs, different output (a chart using randomness, another helm):
                // apply it as a change.
                tracing::info!(component = %c.name, "render differs from the recorded one");
                scratch
                    .rendered
                    .insert(c.name.clone(), Ok(rendered_of(&fresh)));
                let (applied, _) =
                    apply_component(target, scratch, c, Ok(inputs), Some(record), now).await;
                return (applied, vec!["render changed; re-applied".into()]);
            }
            fresh
        }
    };
    let checked = drift::check(target, scratch, c, &mut render, record, now).await;
    target.renderer.keep(&c.name, render);
    checked
}

/// A prepared render handed back to apply as if just rendered (preparing is idempotent).
fn rendered_of(render: &Render) -> Rendered {
    Rendered {
        digest: render.rendered.clone(),
        objects: render.objects.clone(),
    }
}

#[cfg(test)]
pub(crate) mod scripted;
