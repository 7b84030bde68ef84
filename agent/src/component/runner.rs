//! Executing component steps: render -> apply -> prune -> health, health checks, drift
//! checks and the pruning of removed components. Each returns the component's new record
//! for `tidemark.dev/components`; failures become a `Failed` record naming the object
//! and the reason, never a panic or a half-reported state.
//!
//! The runner lives as long as the agent and keeps two caches, both only shortcuts:
//! the inputs of the last desired revision (so an idle pass reads nothing from git) and
//! the last render of each component (so a drift check needs no `helm` process). After a
//! restart both are rebuilt from git.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use tidemark_schema::resolve::{DesiredComponent, DesiredState};

use super::cluster::{self, ClusterError, Kinds, LiveIndex, LiveObject};
use super::drift;
use super::health::Health;
use super::helm::{Helm, RenderRequest};
use super::inputs::{self, ChartSource, ComponentInputs};
use super::manifest::{self, RenderedObject};
use crate::observe::model::{ComponentHealth, ComponentRecord};
use crate::source::GitCache;

/// How components are rendered and waited for.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The `helm` executable and its timeout.
    pub helm: Helm,
    /// Longest a pass waits for a component to become healthy before reporting it
    /// `Progressing` and moving on (later passes check again, up to its `timeout`).
    pub health_wait: Duration,
    /// Longest a CRD may take to become Established.
    pub crd_wait: Duration,
    /// How often applied components are compared with their render.
    pub drift_interval: Duration,
}

/// The cluster and the desired commit a component step works against.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// The cluster.
    pub client: &'a kube::Client,
    /// The fleet repo's git cache.
    pub cache: &'a GitCache,
    /// The desired commit.
    pub revision: &'a str,
}

/// Work shared by the component steps of one pass.
#[derive(Default)]
pub struct PassScratch {
    kinds: Kinds,
    swept: Option<Vec<LiveObject>>,
    live: LiveIndex,
    /// Renders made ahead (several helm processes at once) for the steps of this pass.
    rendered: HashMap<String, RenderResult>,
    /// Objects applied in this pass, by the component that applied them.
    applied: HashMap<manifest::ObjectKey, String>,
    /// The components declared now (an object of one that is not may be adopted).
    declared: BTreeSet<String>,
}

impl PassScratch {
    /// Work for a pass in which `declared` are the declared components.
    pub fn new(declared: impl IntoIterator<Item = String>) -> Self {
        Self {
            declared: declared.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Sweeps every labelled object of the cluster, once per pass (see `cluster::sweep`).
    async fn sweep(&mut self, client: &kube::Client) -> Result<(), ClusterError> {
        if self.swept.is_none() {
            self.swept = Some(cluster::sweep(client).await?);
        }
        Ok(())
    }
}

/// A render's raw output and parsed objects, or why it failed.
type RenderResult = Result<(String, Vec<RenderedObject>), String>;

/// How many `helm template` processes run at once when a pass renders several components.
const RENDER_CONCURRENCY: usize = 4;

/// A component whose health a pass waits for: its record so far, and since when tidemark
/// waits for it (its apply, or now for a drift check).
pub struct Settle<'a> {
    /// The component.
    pub component: &'a DesiredComponent,
    /// Its record after the step.
    pub record: ComponentRecord,
    /// When tidemark last changed it.
    pub since: Timestamp,
}

/// A render, prepared for apply.
#[derive(Clone)]
struct Render {
    inputs: String,
    rendered: String,
    objects: Vec<RenderedObject>,
}

type InputsByName = BTreeMap<String, Result<ComponentInputs, String>>;

/// Executes component steps. See the module docs.
pub struct Runner {
    settings: Settings,
    inputs: Mutex<Option<(String, InputsByName)>>,
    renders: Mutex<HashMap<String, Render>>,
}

impl Runner {
    /// A runner with empty caches.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            inputs: Mutex::new(None),
            renders: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The inputs of every desired component at `revision` (read from git once per
    /// revision and cluster).
    pub fn inputs(
        &self,
        cache: &GitCache,
        revision: &str,
        state: &DesiredState,
    ) -> Result<InputsByName, crate::source::Error> {
        let key = format!("{revision}/{}", state.cluster);
        if let Ok(guard) = self.inputs.lock()
            && let Some((k, v)) = guard.as_ref()
            && *k == key
            && v.len() == state.components.len()
        {
            return Ok(v.clone());
        }
        let tree = cache.tree_at(revision)?;
        let map: InputsByName = state
            .components
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    inputs::gather(&tree, c).map_err(|e| e.to_string()),
                )
            })
            .collect();
        if let Ok(mut guard) = self.inputs.lock() {
            *guard = Some((key, map.clone()));
        }
        Ok(map)
    }

    /// Renders `c` with helm: the chart materialised from git (or named in a chart
    /// repository), the merged values in one file.
    async fn render(
        &self,
        target: Target<'_>,
        c: &DesiredComponent,
        inputs: &ComponentInputs,
    ) -> RenderResult {
        let dir = tempfile::Builder::new()
            .prefix("tidemark-render-")
            .tempdir()
            .map_err(|e| format!("failed to create a temporary directory: {e}"))?;
        let chart_dir = dir.path().join("chart");
        if let ChartSource::InRepo { path } = &inputs.chart {
            std::fs::create_dir_all(&chart_dir)
                .map_err(|e| format!("failed to create {}: {e}", chart_dir.display()))?;
            // The git tree is not Send: read and write the chart before any await.
            let tree = target
                .cache
                .tree_at(target.revision)
                .map_err(|e| e.to_string())?;
            inputs::materialise(&tree, path, &chart_dir).map_err(|e| e.to_string())?;
        }
        let values_file = dir.path().join("values.yaml");
        // JSON is YAML: the merged values go to helm as one file.
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(inputs.values.clone()))
            .map_err(|e| format!("failed to serialise values: {e}"))?;
        std::fs::write(&values_file, text)
            .map_err(|e| format!("failed to write {}: {e}", values_file.display()))?;
        let req = RenderRequest {
            release: &c.release,
            namespace: &c.namespace,
            chart: inputs::chart_arg(&inputs.chart, &chart_dir),
            version: inputs.version.as_deref(),
            values_file: &values_file,
        };
        let out = self
            .settings
            .helm
            .render(&req)
            .await
            .map_err(|e| format!("render failed: {e}"))?;
        let mut objects = manifest::parse(&out).map_err(|e| format!("render output: {e}"))?;
        // `helm test` hooks are for `helm test`, never part of what is installed.
        objects.retain(|o| !is_test_hook(o));
        Ok((out, objects))
    }

    /// Renders `jobs` ahead, [`RENDER_CONCURRENCY`] helm processes at a time; the steps of
    /// the pass take the results from `scratch`. Components whose render is cached for
    /// their inputs are skipped.
    pub async fn prerender(
        &self,
        target: Target<'_>,
        jobs: &[(&DesiredComponent, &ComponentInputs)],
        scratch: &mut PassScratch,
    ) {
        use futures::StreamExt;
        let todo: Vec<&(&DesiredComponent, &ComponentInputs)> = jobs
            .iter()
            .filter(|(c, i)| !self.has_render(&c.name, &i.digest))
            .filter(|(c, _)| !scratch.rendered.contains_key(&c.name))
            .collect();
        if todo.len() < 2 {
            return; // nothing to gain: the step renders it itself
        }
        let results: Vec<(String, RenderResult)> = futures::stream::iter(
            todo.into_iter()
                .map(|(c, i)| async move { (c.name.clone(), self.render(target, c, i).await) }),
        )
        .buffer_unordered(RENDER_CONCURRENCY)
        .collect()
        .await;
        scratch.rendered.extend(results);
    }

    /// Whether this process holds the render of `name` for inputs `digest`.
    pub fn has_render(&self, name: &str, digest: &str) -> bool {
        self.renders
            .lock()
            .ok()
            .is_some_and(|r| r.get(name).is_some_and(|r| r.inputs == digest))
    }

    /// The render of `c` made ahead for this pass, or a new one.
    async fn render_for(
        &self,
        target: Target<'_>,
        c: &DesiredComponent,
        inputs: &ComponentInputs,
        scratch: &mut PassScratch,
    ) -> RenderResult {
        match scratch.rendered.remove(&c.name) {
            Some(r) => r,
            None => self.render(target, c, inputs).await,
        }
    }

    /// Resolves kinds and prepares the objects (namespace, label, order).
    async fn prepare(
        &self,
        client: &kube::Client,
        scratch: &mut PassScratch,
        c: &DesiredComponent,
        objects: Vec<RenderedObject>,
    ) -> Result<Vec<RenderedObject>, String> {
        let mut seen = BTreeSet::new();
        for o in &objects {
            if seen.insert((o.api_version.clone(), o.kind.clone())) {
                scratch
                    .kinds
                    .resolve(client, o.group(), o.version(), &o.kind)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let kinds = &scratch.kinds;
        manifest::prepare(objects, &c.name, &c.namespace, |o| kinds.namespaced(o))
            .map_err(|e| e.to_string())
    }

    /// Renders, applies and prunes; the record is `Progressing` (the pass then waits for
    /// its health with [`Runner::settle`]) or `Failed`.
    pub async fn apply(
        &self,
        target: Target<'_>,
        c: &DesiredComponent,
        inputs: Result<&ComponentInputs, &str>,
        previous: Option<&ComponentRecord>,
        scratch: &mut PassScratch,
        now: Timestamp,
    ) -> ComponentRecord {
        let client = target.client;
        let attempted = inputs.ok().map(|i| i.digest.clone());
        let failed = |display: String, message: String| ComponentRecord {
            chart: display,
            health: ComponentHealth::Failed,
            message: Some(message),
            // The last complete apply stays recorded: a failed attempt changes nothing
            // of what runs, and the same inputs are tried again next pass.
            failed_inputs: attempted.clone(),
            ..previous.cloned().unwrap_or_default()
        };
        let inputs = match inputs {
            Ok(i) => i,
            Err(e) => return failed(String::new(), e.to_string()),
        };
        let display = inputs.display.clone();
        let (text, objects) = match self.render_for(target, c, inputs, scratch).await {
            Ok(r) => r,
            Err(e) => return failed(display, e),
        };
        let objects = match self.prepare(client, scratch, c, objects).await {
            Ok(o) => o,
            Err(e) => return failed(display, e),
        };
        let render = Render {
            inputs: inputs.digest.clone(),
            rendered: manifest::digest(&text),
            objects,
        };
        if let Err(e) = self
            .check_ownership(client, scratch, c, &render.objects)
            .await
        {
            return failed(display, e);
        }
        if let Err(e) = self
            .apply_objects(client, scratch, c, &render.objects)
            .await
        {
            return failed(display, e);
        }
        let pruned = match self
            .prune(client, scratch, &c.name, Some(&render.objects))
            .await
        {
            Ok(n) => n,
            Err(e) => return failed(display, format!("prune: {e}")),
        };
        let count = u32::try_from(render.objects.len()).unwrap_or(u32::MAX);
        let record = ComponentRecord {
            chart: display,
            health: ComponentHealth::Progressing,
            message: None,
            failed_inputs: None,
            inputs: Some(render.inputs.clone()),
            rendered: Some(render.rendered.clone()),
            objects: count,
            applied_at: Some(now.to_string()),
        };
        tracing::info!(component = %c.name, objects = count, pruned, "applied");
        if let Ok(mut renders) = self.renders.lock() {
            renders.insert(c.name.clone(), render);
        }
        record
    }

    /// Refuses a render holding an object that another component applied: two components
    /// owning one object would overwrite each other on every change, and removing one
    /// would delete what the other still declares.
    async fn check_ownership(
        &self,
        client: &kube::Client,
        scratch: &mut PassScratch,
        c: &DesiredComponent,
        objects: &[RenderedObject],
    ) -> Result<(), String> {
        scratch.sweep(client).await.map_err(|e| e.to_string())?;
        let mut owners: HashMap<&manifest::ObjectKey, &str> = scratch
            .swept
            .iter()
            .flatten()
            .filter(|o| o.applied_by_tidemark())
            .map(|o| (&o.key, o.component.as_str()))
            .collect();
        owners.extend(scratch.applied.iter().map(|(k, v)| (k, v.as_str())));
        for o in objects {
            // A component no longer declared hands its objects over (a renamed component).
            if let Some(owner) = owners.get(&o.key())
                && *owner != c.name
                && scratch.declared.contains(*owner)
            {
                return Err(format!(
                    "{} is applied by component {owner}; one object cannot belong to two \
                     components (remove it from one of them)",
                    o.key()
                ));
            }
        }
        scratch
            .applied
            .extend(objects.iter().map(|o| (o.key(), c.name.clone())));
        Ok(())
    }

    /// Applies prepared objects: CRDs (then waits until Established), Namespaces, the
    /// rest; the namespaces the objects need are created first. Every object is tried;
    /// the first failure is reported with how many failed.
    async fn apply_objects(
        &self,
        client: &kube::Client,
        scratch: &mut PassScratch,
        c: &DesiredComponent,
        objects: &[RenderedObject],
    ) -> Result<(), String> {
        let rendered_namespaces: BTreeSet<&str> = objects
            .iter()
            .filter(|o| o.kind == "Namespace" && o.group().is_empty())
            .map(|o| o.name.as_str())
            .collect();
        let mut needed: BTreeSet<&str> = objects
            .iter()
            .filter_map(|o| o.namespace.as_deref())
            .filter(|ns| !rendered_namespaces.contains(ns))
            .collect();
        needed.insert(c.namespace.as_str());
        needed.retain(|ns| !rendered_namespaces.contains(ns));
        cluster::ensure_namespaces(client, needed)
            .await
            .map_err(|e| e.to_string())?;

        let mut failures: Vec<String> = Vec::new();
        let mut crds_applied = false;
        for o in objects.iter().filter(|o| manifest::is_crd(o)) {
            match cluster::apply(client, &mut scratch.kinds, o, c.force).await {
                Ok(()) => {
                    crds_applied = true;
                    if let Err(e) =
                        cluster::wait_established(client, &o.name, self.settings.crd_wait).await
                    {
                        failures.push(e.to_string());
                    }
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        if crds_applied {
            scratch.kinds.forget_misses();
        }
        if !failures.is_empty() {
            // Custom resources cannot be applied without their definitions.
            return Err(summarise(&failures, objects.len()));
        }
        for o in objects.iter().filter(|o| !manifest::is_crd(o)) {
            let result = match cluster::apply(client, &mut scratch.kinds, o, c.force).await {
                // A Job's template is immutable: its new version replaces it.
                Err(cluster::ClusterError::Immutable { .. })
                    if o.kind == "Job" && o.group() == "batch" =>
                {
                    tracing::info!(component = %c.name, object = %o.key(), "replacing (immutable)");
                    cluster::replace(client, &mut scratch.kinds, o, c.force).await
                }
                other => other,
            };
            if let Err(e) = result {
                tracing::warn!(component = %c.name, error = %e, "apply failed");
                failures.push(e.to_string());
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(summarise(&failures, objects.len()))
        }
    }

    /// Deletes the objects of component `name` that `keep` does not hold (all of them
    /// when `keep` is `None`). Only objects tidemark applied are candidates.
    async fn prune(
        &self,
        client: &kube::Client,
        scratch: &mut PassScratch,
        name: &str,
        keep: Option<&[RenderedObject]>,
    ) -> Result<usize, ClusterError> {
        let doomed = self.prunable(client, scratch, name, keep).await?;
        for o in &doomed {
            cluster::delete(client, o).await?;
            tracing::info!(component = name, object = %o.key, "pruned");
        }
        Ok(doomed.len())
    }

    /// Deletes everything of a component that is no longer declared.
    pub async fn prune_removed(
        &self,
        client: &kube::Client,
        name: &str,
        scratch: &mut PassScratch,
    ) -> Result<usize, ClusterError> {
        if let Ok(mut renders) = self.renders.lock() {
            renders.remove(name);
        }
        self.prune(client, scratch, name, None).await
    }

    /// Waits for the health of several components at once: every poll lists each
    /// workload kind once for all of them. A component waits at most the health wait, and
    /// no longer than its `timeout` since tidemark last changed it; still rolling out after
    /// its timeout, it is `Failed`, naming the object and what its pods say. Records that
    /// are already `Failed` (the step failed) pass through.
    pub async fn settle(
        &self,
        client: &kube::Client,
        items: Vec<Settle<'_>>,
        now: Timestamp,
    ) -> Vec<(String, ComponentRecord)> {
        let started = tokio::time::Instant::now();
        let age = |since: Timestamp| {
            now.duration_since(since)
                .unsigned_abs()
                .min(Duration::from_secs(365 * 86_400))
        };
        let budget = |item: &Settle<'_>| {
            self.settings.health_wait.min(
                item.component
                    .timeout
                    .as_std()
                    .saturating_sub(age(item.since)),
            )
        };
        let mut latest: BTreeMap<String, Result<Health, String>> = BTreeMap::new();
        let open: Vec<&Settle<'_>> = items
            .iter()
            .filter(|i| i.record.health != ComponentHealth::Failed)
            .collect();
        while !open.is_empty() {
            match cluster::health_by_component(client).await {
                Ok(by_name) => {
                    for i in &open {
                        let h = by_name
                            .get(&i.component.name)
                            .cloned()
                            .unwrap_or(Health::Healthy);
                        latest.insert(i.component.name.clone(), Ok(h));
                    }
                }
                Err(e) => {
                    for i in &open {
                        latest.insert(i.component.name.clone(), Err(e.to_string()));
                    }
                    break;
                }
            }
            let waiting = open.iter().any(|i| {
                matches!(
                    latest.get(&i.component.name),
                    Some(Ok(Health::Progressing(_)))
                ) && started.elapsed() < budget(i)
            });
            if !waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut out = Vec::new();
        for item in items {
            let Settle {
                component: c,
                mut record,
                since,
            } = item;
            let waited = age(since) + started.elapsed();
            let timeout = c.timeout.as_std();
            match latest.remove(&c.name) {
                None => {} // already Failed
                Some(Ok(Health::Healthy)) => {
                    record.health = ComponentHealth::Healthy;
                    record.message = None;
                }
                Some(Ok(Health::Failed(m))) => {
                    record.health = ComponentHealth::Failed;
                    record.message = Some(m);
                }
                Some(Ok(Health::Progressing(m))) => {
                    // Name what the pods say, for the one component at a time that waits.
                    let m = match cluster::component_health(client, &c.name).await {
                        Ok(Health::Progressing(detailed) | Health::Failed(detailed)) => detailed,
                        _ => m,
                    };
                    if waited < timeout {
                        record.health = ComponentHealth::Progressing;
                        record.message = Some(m);
                    } else {
                        record.health = ComponentHealth::Failed;
                        record.message = Some(format!(
                            "not healthy within {}: {m}",
                            tidemark_schema::Duration::from_secs(timeout.as_secs())
                        ));
                    }
                }
                Some(Err(e)) => {
                    // Could not look: keep what was known, say why.
                    record.message = Some(format!("health check failed: {e}"));
                    if record.health == ComponentHealth::Healthy {
                        record.health = ComponentHealth::Progressing;
                    }
                }
            }
            out.push((c.name.clone(), record));
        }
        out
    }

    /// Compares the live objects of an applied component with its render, re-applies
    /// what was edited or deleted by hand and deletes labelled leftovers. The render comes
    /// from the cache, or from helm when this process has not rendered it yet; a render
    /// that differs from the recorded one is applied in full. Returns the new record and
    /// what was corrected.
    pub async fn check_drift(
        &self,
        target: Target<'_>,
        c: &DesiredComponent,
        inputs: &ComponentInputs,
        record: &ComponentRecord,
        scratch: &mut PassScratch,
        now: Timestamp,
    ) -> (ComponentRecord, Vec<String>) {
        let client = target.client;
        let cached = self
            .renders
            .lock()
            .ok()
            .and_then(|r| r.get(&c.name).cloned())
            .filter(|r| r.inputs == inputs.digest);
        let render = match cached {
            Some(r) => r,
            None => {
                let fresh = match self.render_for(target, c, inputs, scratch).await {
                    Ok((text, objects)) => match self.prepare(client, scratch, c, objects).await {
                        Ok(objects) => Render {
                            inputs: inputs.digest.clone(),
                            rendered: manifest::digest(&text),
                            objects,
                        },
                        Err(e) => return (failed_record(record, e), vec![]),
                    },
                    Err(e) => return (failed_record(record, e), vec![]),
                };
                if record.rendered.as_deref() != Some(fresh.rendered.as_str()) {
                    // Same inputs, different output (a chart using randomness or a
                    // different helm): apply it as a change.
                    tracing::info!(component = %c.name, "render differs from the recorded one");
                    let r = self
                        .apply(target, c, Ok(inputs), Some(record), scratch, now)
                        .await;
                    return (r, vec!["render changed; re-applied".into()]);
                }
                if let Ok(mut renders) = self.renders.lock() {
                    renders.insert(c.name.clone(), fresh.clone());
                }
                fresh
            }
        };

        let mut corrected = Vec::new();
        let mut errors = Vec::new();
        let mut kinds_seen = BTreeSet::new();
        for o in &render.objects {
            let resolved = scratch
                .kinds
                .resolve(client, o.group(), o.version(), &o.kind)
                .await;
            let Ok(Some((ar, namespaced))) = resolved else {
                corrected.push(format!("{} (kind not served)", o.key()));
                continue;
            };
            kinds_seen.insert((ar.api_version.clone(), ar.kind.clone()));
            let live = match scratch.live.of_kind(client, &ar, namespaced).await {
                Ok(index) => index
                    .get(&(c.name.clone(), o.key()))
                    .map(|l| l.body.clone()),
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            let why = match &live {
                None => Some("deleted".to_string()),
                Some(live) => drift::first_difference(&o.body, live),
            };
            let Some(why) = why else { continue };
            tracing::info!(component = %c.name, object = %o.key(), drift = %why, "drift found");
            // The fields were tidemark's and someone changed them by hand (taking them
            // over as their field manager): correcting drift takes them back.
            match cluster::apply(client, &mut scratch.kinds, o, true).await {
                Ok(()) => corrected.push(format!("{} ({why})", o.key())),
                Err(e) => errors.push(e.to_string()),
            }
        }
        // Leftovers of kinds the render has: labelled for this component, applied by
        // tidemark, not rendered.
        let keep: BTreeSet<manifest::ObjectKey> =
            render.objects.iter().map(RenderedObject::key).collect();
        let mut leftovers = Vec::new();
        for o in &render.objects {
            if let Ok(Some((ar, namespaced))) = scratch
                .kinds
                .resolve(client, o.group(), o.version(), &o.kind)
                .await
                && let Ok(index) = scratch.live.of_kind(client, &ar, namespaced).await
            {
                leftovers.extend(
                    index
                        .values()
                        .filter(|l| {
                            l.component == c.name
                                && l.applied_by_tidemark()
                                && !keep.contains(&l.key)
                        })
                        .cloned(),
                );
            }
        }
        leftovers.sort_by(|a, b| a.key.cmp(&b.key));
        leftovers.dedup_by(|a, b| a.key == b.key);
        for l in &leftovers {
            match cluster::delete(client, l).await {
                Ok(()) => corrected.push(format!("{} (not rendered; deleted)", l.key)),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if let Ok(mut renders) = self.renders.lock() {
            renders.insert(c.name.clone(), render);
        }
        if !errors.is_empty() {
            return (
                failed_record(record, format!("drift correction: {}", errors.join("; "))),
                corrected,
            );
        }
        let mut next = record.clone();
        if !corrected.is_empty() {
            // A correction is an apply: its rollout gets the component's timeout anew.
            next.applied_at = Some(now.to_string());
        }
        (next, corrected)
    }
}

/// What applying a component would do, for `tidemark plan`.
#[derive(Clone, Debug, Default)]
pub struct Preview {
    /// The chart (`metrics-lite 0.2.0`).
    pub chart: String,
    /// Objects rendered.
    pub rendered: usize,
    /// Objects that do not exist yet.
    pub create: usize,
    /// Objects whose live state differs from the render.
    pub change: usize,
    /// Objects already as rendered.
    pub unchanged: usize,
    /// Objects of the component that the render no longer holds (deleted by prune).
    pub prune: Vec<String>,
}

impl Runner {
    /// Renders `c` and compares it with the cluster without changing anything.
    pub async fn preview(
        &self,
        target: Target<'_>,
        c: &DesiredComponent,
        inputs: &ComponentInputs,
        scratch: &mut PassScratch,
    ) -> Result<Preview, String> {
        let client = target.client;
        let (_, objects) = self.render(target, c, inputs).await?;
        let objects = self.prepare(client, scratch, c, objects).await?;
        let mut preview = Preview {
            chart: inputs.display.clone(),
            rendered: objects.len(),
            ..Preview::default()
        };
        for o in &objects {
            let live = match scratch
                .kinds
                .resolve(client, o.group(), o.version(), &o.kind)
                .await
            {
                Ok(Some((ar, namespaced))) => scratch
                    .live
                    .of_kind(client, &ar, namespaced)
                    .await
                    .map_err(|e| e.to_string())?
                    .get(&(c.name.clone(), o.key()))
                    .map(|l| l.body.clone()),
                // A kind a CRD of this render will define.
                Ok(None) => None,
                Err(e) => return Err(e.to_string()),
            };
            match live {
                None => preview.create += 1,
                Some(live) if drift::first_difference(&o.body, &live).is_some() => {
                    preview.change += 1;
                }
                Some(_) => preview.unchanged += 1,
            }
        }
        preview.prune = self
            .prunable(client, scratch, &c.name, Some(&objects))
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .map(|o| o.key.to_string())
            .collect();
        Ok(preview)
    }

    /// The live objects of component `name` that a prune would delete.
    pub async fn prunable(
        &self,
        client: &kube::Client,
        scratch: &mut PassScratch,
        name: &str,
        keep: Option<&[RenderedObject]>,
    ) -> Result<Vec<LiveObject>, ClusterError> {
        scratch.sweep(client).await?;
        let keep: BTreeSet<manifest::ObjectKey> = keep
            .unwrap_or_default()
            .iter()
            .map(RenderedObject::key)
            .collect();
        Ok(scratch
            .swept
            .iter()
            .flatten()
            // Already being deleted: another DELETE would only be one more write.
            .filter(|o| o.body.pointer("/metadata/deletionTimestamp").is_none())
            // Adopted in this pass by another component.
            .filter(|o| {
                scratch
                    .applied
                    .get(&o.key)
                    .is_none_or(|owner| owner == name)
            })
            .filter(|o| o.component == name && o.applied_by_tidemark() && !keep.contains(&o.key))
            .cloned()
            .collect())
    }
}

/// Whether `o` is a `helm test` hook (`helm.sh/hook: test`, or the older `test-success`
/// and `test-failure`).
fn is_test_hook(o: &RenderedObject) -> bool {
    o.body
        .pointer("/metadata/annotations/helm.sh~1hook")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|hooks| {
            hooks
                .split(',')
                .any(|h| matches!(h.trim(), "test" | "test-success" | "test-failure"))
        })
}

fn failed_record(record: &ComponentRecord, message: String) -> ComponentRecord {
    ComponentRecord {
        health: ComponentHealth::Failed,
        message: Some(message),
        ..record.clone()
    }
}

fn summarise(failures: &[String], total: usize) -> String {
    match failures {
        [only] => only.clone(),
        [first, rest @ ..] => format!(
            "{first} (and {} more of {total} objects failed)",
            rest.len()
        ),
        [] => String::new(),
    }
}
