//! `plan --offline`: from git alone, the route each cluster of a wave would take if its
//! wave tag moved to a given commit, through the agent's own planner.
//!
//! - What runs is taken from the cluster's status ref (`refs/tidemark/status/<cluster>`,
//!   published by `agent --report-ref`) when it has one: its observed versions, accepted
//!   declarations and components; otherwise from the declaration at the wave tag's commit
//!   today: a healthy cluster running what that commit declares, with its components
//!   applied. The output says which.
//! - The components of both commits are rendered (each for its commit's declared
//!   version); the objects to create, change and prune are the difference.
//! - Maintenance windows are judged at the given time: a closed one is named, with when it
//!   opens (the route is shown all the same).
//! - Pre-flight findings knowable offline are judged by the planner's own checks: the new
//!   commit's objects whose APIs a hop removes, and components that do not render.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::Serialize;
use tidemark_schema::resolve::{self, DesiredState};
use tidemark_schema::{ComponentSet, KubeVersion, Tree};

use super::check::capabilities_for;
use super::render::{CacheError, Outcome, RenderCache};
use crate::component::diff;
use crate::component::inputs;
use crate::component::manifest::{ObjectKey, RenderedObject};
use crate::observe::model::{
    Capabilities, NodeGroupObservation, Observed, PreviousDesired, RenderedApi,
};
use crate::plan::{self, Inputs, Phase, Plan, Step};
use crate::status::{ComponentHealth, ComponentRecord, Record, describe};

/// A commit of the fleet repo: its files and its name.
pub struct Commit<'a> {
    /// Its files.
    pub tree: &'a dyn Tree,
    /// Its id.
    pub id: String,
}

/// One cluster to plan: where it is now (its wave tag's commit, if the tag exists) and
/// the commit its tag would move to.
pub struct Request<'a> {
    /// `metadata.name`.
    pub cluster: String,
    /// Its wave (from the default branch).
    pub wave: Option<String>,
    /// Its wave's tag.
    pub tag: Option<String>,
    /// The commit the tag points at now.
    pub from: Option<Commit<'a>>,
    /// The commit it would move to.
    pub to: Commit<'a>,
    /// What its agent last published to `refs/tidemark/status/<cluster>`, if it does.
    pub reported: Option<Record>,
}

/// What moving one cluster's tag would do.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoute {
    /// `metadata.name`.
    pub cluster: String,
    /// Its wave.
    pub wave: Option<String>,
    /// The tag.
    pub tag: Option<String>,
    /// Commit the tag points at now, if it exists.
    pub from: Option<String>,
    /// Commit it would move to.
    pub to: String,
    /// Where the observed versions come from.
    pub observed_from: String,
    /// Control plane: what runs (as taken) and what the new commit declares.
    pub control_plane: (String, String),
    /// Node groups: what runs and what is declared.
    pub node_groups: BTreeMap<String, (String, String)>,
    /// The phase the agent would report at its first pass.
    pub phase: String,
    /// Its message.
    pub message: String,
    /// Every step, in order.
    pub route: Vec<String>,
    /// Control-plane hops (`1.29.6 -> 1.30.10`).
    pub hops: Vec<String>,
    /// Node-group steps (`general 1.29.6 -> 1.30.10`).
    pub node_group_steps: Vec<String>,
    /// What each changed component would do.
    pub components: Vec<ComponentChange>,
    /// A maintenance window that would delay it.
    pub window: Option<String>,
    /// Pre-flight findings (each holds the route until fixed).
    pub preflight: Vec<String>,
    /// Notes of the planner.
    pub notes: Vec<String>,
}

impl ClusterRoute {
    /// Whether the cluster would be `Blocked`, or held by a pre-flight finding that only a
    /// change to the fleet repo clears.
    pub fn is_blocked(&self) -> bool {
        self.phase == Phase::Blocked.as_str() || !self.preflight.is_empty()
    }
}

/// A component's change between the two commits.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentChange {
    /// Its name.
    pub name: String,
    /// `new`, `changed` or `removed`.
    pub action: String,
    /// Objects to create.
    pub create: Vec<String>,
    /// Objects that change.
    pub change: Vec<String>,
    /// Objects to prune.
    pub prune: Vec<String>,
    /// Why the render failed, if it did.
    pub error: Option<String>,
}

/// Per component: its inputs digest and render key, or why its inputs cannot be read.
type Asked = BTreeMap<String, Result<(String, String), String>>;

/// A cluster's renders asked for, before they are made.
pub struct Pending {
    request_cluster: String,
    wave: Option<String>,
    tag: Option<String>,
    from_id: Option<String>,
    to_id: String,
    previous: Option<DesiredState>,
    desired: Option<DesiredState>,
    problem: Option<String>,
    reported: Option<Record>,
    /// At the new commit.
    new: Asked,
    /// At the current commit.
    old: Asked,
}

fn state_at(
    tree: &dyn Tree,
    name: &str,
    wave: Option<String>,
) -> Result<Option<DesiredState>, String> {
    let (repo, diags) = tidemark_schema::load(tree);
    let Some(doc) = repo.clusters.iter().find(|d| d.value.metadata.name == name) else {
        return Ok(None);
    };
    if diags.iter().any(|d| d.file == doc.file()) {
        return Err(format!("{} does not parse:\n{diags}", doc.file()));
    }
    let sets: BTreeMap<String, &ComponentSet> = repo
        .component_sets
        .iter()
        .map(|d| (d.value.metadata.name.clone(), &d.value))
        .collect();
    Ok(Some(resolve::resolve(
        repo.fleet.as_ref().map(|d| &d.value),
        &doc.value,
        wave,
        &sets,
    )))
}

fn ask(
    tree: &dyn Tree,
    state: &DesiredState,
    cache: &mut RenderCache,
) -> Result<Asked, CacheError> {
    let caps = capabilities_for(state.control_plane);
    let mut out = BTreeMap::new();
    for c in &state.components {
        let r = match inputs::gather(tree, c) {
            Err(e) => Err(format!("cannot read its inputs: {}", describe(&e))),
            Ok(i) => match cache.request(tree, c, &i, &caps) {
                Ok(key) => Ok((i.digest.clone(), key)),
                Err(CacheError::Inputs(e)) => {
                    Err(format!("cannot read its chart: {}", describe(&e)))
                }
                Err(e) => return Err(e),
            },
        };
        out.insert(c.name.clone(), r);
    }
    Ok(out)
}

/// Reads both commits of `req` and asks `cache` for their renders.
pub fn request(req: &Request<'_>, cache: &mut RenderCache) -> Result<Pending, CacheError> {
    let mut pending = Pending {
        request_cluster: req.cluster.clone(),
        wave: req.wave.clone(),
        tag: req.tag.clone(),
        from_id: req.from.as_ref().map(|c| c.id.clone()),
        to_id: req.to.id.clone(),
        previous: None,
        desired: None,
        problem: None,
        reported: req.reported.clone(),
        new: BTreeMap::new(),
        old: BTreeMap::new(),
    };
    match state_at(req.to.tree, &req.cluster, req.wave.clone()) {
        Ok(Some(s)) => pending.desired = Some(s),
        Ok(None) => {
            pending.problem = Some(format!(
                "the commit {} has no cluster {}",
                short(&req.to.id),
                req.cluster
            ))
        }
        Err(e) => pending.problem = Some(e),
    }
    if let Some(from) = &req.from {
        match state_at(from.tree, &req.cluster, req.wave.clone()) {
            Ok(s) => pending.previous = s,
            Err(e) => pending.problem = Some(e),
        }
    }
    if let Some(d) = &pending.desired {
        pending.new = ask(req.to.tree, d, cache)?;
    }
    if let (Some(p), Some(from)) = (&pending.previous, &req.from) {
        pending.old = ask(from.tree, p, cache)?;
    }
    Ok(pending)
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn objects(
    cache: &RenderCache,
    key: &Result<(String, String), String>,
    c: &str,
    ns: &str,
) -> Result<Vec<RenderedObject>, String> {
    let (_, key) = key.as_ref().map_err(Clone::clone)?;
    let outcome: Outcome = cache
        .outcome(key)
        .ok_or_else(|| "not rendered".to_string())?;
    let objs = outcome.as_ref().as_ref().map_err(Clone::clone)?.clone();
    super::prepare(objs, c, ns, &Default::default()).map_err(|e| describe(&e))
}

/// The route of a cluster whose renders were made, planned at `now`.
pub fn finish(p: Pending, cache: &RenderCache, now: Timestamp) -> ClusterRoute {
    let mut route = ClusterRoute {
        cluster: p.request_cluster.clone(),
        wave: p.wave.clone(),
        tag: p.tag.clone(),
        from: p.from_id.clone(),
        to: p.to_id.clone(),
        observed_from: String::new(),
        control_plane: Default::default(),
        node_groups: BTreeMap::new(),
        phase: String::new(),
        message: String::new(),
        route: vec![],
        hops: vec![],
        node_group_steps: vec![],
        components: vec![],
        window: None,
        preflight: vec![],
        notes: vec![],
    };
    let Some(desired) = p.desired.clone() else {
        route.phase = Phase::Blocked.to_string();
        route.message = p.problem.clone().unwrap_or_default();
        return route;
    };
    let tag = p.tag.clone().unwrap_or_else(|| "the branch".into());
    // What runs: the previous declaration, or (no tag yet) the new one itself.
    let (previous, observed_from) = match (&p.previous, &p.from_id) {
        (Some(prev), Some(id)) => (
            prev.clone(),
            format!(
                "the declaration at {tag} ({}): no status ref of this cluster was read",
                short(id)
            ),
        ),
        (None, Some(id)) => (
            desired.clone(),
            format!(
                "{tag} ({}) does not hold this cluster yet: it would be new, taken as running what it declares",
                short(id)
            ),
        ),
        _ => (
            desired.clone(),
            format!("{tag} does not exist yet: taken as running what the commit declares"),
        ),
    };
    route.observed_from = observed_from;
    let mut observed = observed_from_declaration(&previous, &desired, &p, cache);
    if let Some(record) = &p.reported {
        apply_report(&mut observed, record);
        route.observed_from = format!(
            "its status ref refs/tidemark/status/{} (last pass {})",
            p.request_cluster,
            record
                .last_pass
                .map(|t| t.to_string())
                .unwrap_or_else(|| "unknown".into())
        );
    }
    route.control_plane = (
        observed.control_plane.to_string(),
        desired.control_plane.to_string(),
    );
    for g in &desired.node_groups {
        let running = observed
            .node_groups
            .get(&g.name)
            .and_then(|o| o.min_kubelet)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into());
        route
            .node_groups
            .insert(g.name.clone(), (running, g.version.to_string()));
    }
    let digests: BTreeMap<String, Inputs> = p
        .new
        .iter()
        .map(|(n, r)| {
            let i = match r {
                Ok((d, _)) => Inputs::Digest(d.clone()),
                Err(e) => Inputs::Unreadable(e.clone()),
            };
            (n.clone(), i)
        })
        .collect();
    // The whole route, gates aside: planned inside an open window (the window is judged
    // separately below).
    let mut planned = plan::plan(&without_window(&desired), &digests, &observed, now);
    // Pre-flight: the new commit's renders, judged for each hop (the planner judges the
    // first; later hops are judged here the same way).
    let hops: Vec<KubeVersion> = planned
        .remaining
        .iter()
        .filter_map(|s| match s {
            Step::UpgradeControlPlane { to, .. } => Some(*to),
            _ => None,
        })
        .collect();
    let rendered = rendered_apis(&desired, &p, cache);
    let mut preflight = BTreeSet::new();
    for to in &hops {
        let mut o = observed.clone();
        o.preflight.hop = Some(*to);
        o.preflight.rendered_for_hop = Some(Ok(rendered.clone()));
        let step = Step::UpgradeControlPlane {
            from: observed.control_plane,
            to: *to,
        };
        for f in plan::preflight_findings(&desired, &o, &step) {
            preflight.insert(format!("before the hop to {to}: {f}"));
        }
    }
    if let Some(first) = hops.first() {
        observed.preflight.hop = Some(*first);
        observed.preflight.rendered_for_hop = Some(Ok(rendered));
        planned = plan::plan(&without_window(&desired), &digests, &observed, now);
    }
    route.preflight = preflight.into_iter().collect();
    if let Some(w) = &desired.maintenance_window
        && !w.is_open(now)
        && planned.remaining.iter().any(Step::is_disruptive)
    {
        let next = w
            .next_open(now)
            .map(|t| format!("; next opens {t}"))
            .unwrap_or_default();
        route.window = Some(format!("the maintenance window is closed at {now}{next}"));
    }
    let real = plan::plan(&desired, &digests, &observed, now);
    route.phase = real.phase.to_string();
    route.message = real.message.clone();
    route.notes = real.notes.clone();
    fill_steps(&mut route, &planned);
    route.components = component_changes(&previous, &desired, &p, cache);
    route
}

/// What an agent's published record says runs: its observed versions (the oldest of a
/// mixed group), the declarations it accepted, its components' inputs and health.
fn apply_report(observed: &mut Observed, record: &Record) {
    let oldest = |text: &str| {
        let first = text.split("..").next().unwrap_or(text);
        KubeVersion::parse_observed(first).ok()
    };
    if let Some(v) = record
        .control_plane
        .as_ref()
        .and_then(|v| oldest(&v.observed))
    {
        observed.control_plane = v;
        observed.capabilities.kube_version = Some(v);
    }
    for (name, versions) in &record.node_groups {
        let Some(g) = observed.node_groups.get_mut(name) else {
            continue;
        };
        let min = oldest(&versions.observed);
        let max = versions
            .observed
            .rsplit("..")
            .next()
            .and_then(|t| KubeVersion::parse_observed(t).ok());
        if let Some(min) = min {
            g.min_kubelet = Some(min);
            g.max_kubelet = max.or(Some(min));
            g.requested = versions.requested.or(Some(min));
        }
    }
    let mut previous = observed.previous_desired.clone().unwrap_or_default();
    if let Some(v) = &record.control_plane {
        previous.control_plane = Some(v.baseline());
    }
    for (name, v) in &record.node_groups {
        previous.node_groups.insert(name.clone(), v.baseline());
    }
    observed.previous_desired = Some(previous);
    let digest = observed.capabilities.digest();
    observed.components = record
        .components
        .iter()
        .map(|(name, c)| {
            (
                name.clone(),
                ComponentRecord {
                    capabilities: Some(digest.clone()),
                    ..c.clone()
                },
            )
        })
        .collect();
}

fn without_window(d: &DesiredState) -> DesiredState {
    let mut d = d.clone();
    d.maintenance_window = None;
    d
}

fn fill_steps(route: &mut ClusterRoute, planned: &Plan) {
    for s in &planned.remaining {
        route.route.push(s.to_string());
        match s {
            Step::UpgradeControlPlane { from, to } => route.hops.push(format!("{from} -> {to}")),
            Step::UpgradeNodeGroup {
                group, from, to, ..
            } => route.node_group_steps.push(format!(
                "{group} {} -> {to}",
                from.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
            )),
            _ => {}
        }
    }
}

/// A healthy cluster running `previous`'s versions, with `previous`'s components applied
/// (rendered for what it runs).
fn observed_from_declaration(
    previous: &DesiredState,
    desired: &DesiredState,
    p: &Pending,
    _cache: &RenderCache,
) -> Observed {
    let cp = previous.control_plane;
    let caps = capabilities_for(cp);
    let capabilities = Capabilities {
        kube_version: Some(cp),
        group_versions: caps
            .api_versions
            .iter()
            .filter(|v| v.split('/').count() <= 2)
            .cloned()
            .collect(),
    };
    let node_groups = desired
        .node_groups
        .iter()
        .map(|g| {
            let v = previous
                .node_groups
                .iter()
                .find(|o| o.name == g.name)
                .map(|o| o.version)
                .unwrap_or(g.version);
            (
                g.name.clone(),
                NodeGroupObservation {
                    min_kubelet: Some(v),
                    max_kubelet: Some(v),
                    nodes: 1,
                    ready: 1,
                    cordoned: 0,
                    requested: Some(v),
                    provider_rolling: false,
                    provider_problem: None,
                    requested_at: None,
                },
            )
        })
        .collect();
    let records = previous
        .components
        .iter()
        .map(|c| {
            let digest = p
                .old
                .get(&c.name)
                .and_then(|r| r.as_ref().ok())
                .map(|(d, _)| d.clone());
            (
                c.name.clone(),
                ComponentRecord {
                    health: ComponentHealth::Healthy,
                    inputs: digest,
                    capabilities: Some(capabilities.digest()),
                    ..ComponentRecord::default()
                },
            )
        })
        .collect();
    Observed {
        control_plane: cp,
        control_plane_requested: None,
        control_plane_requested_at: None,
        node_groups,
        nodes_not_ready: vec![],
        node_group_of: BTreeMap::new(),
        api_healthy: true,
        paused_annotation: false,
        provider_busy: None,
        previous_desired: Some(PreviousDesired {
            control_plane: Some(previous.control_plane),
            node_groups: previous
                .node_groups
                .iter()
                .map(|g| (g.name.clone(), g.version))
                .collect(),
        }),
        components: records,
        drift_due: false,
        capabilities,
        preflight: Default::default(),
    }
}

/// The new commit's rendered objects' APIs (and its failed renders), for the hop checks.
fn rendered_apis(desired: &DesiredState, p: &Pending, cache: &RenderCache) -> Vec<RenderedApi> {
    let mut out = Vec::new();
    for c in &desired.components {
        let Some(key) = p.new.get(&c.name) else {
            continue;
        };
        match objects(cache, key, &c.name, &c.namespace) {
            Ok(objs) => out.extend(objs.iter().map(|o| RenderedApi::Object {
                component: c.name.clone(),
                object: {
                    let mut k = o.key();
                    k.group.clear();
                    k.to_string()
                },
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
            })),
            Err(message) => out.push(RenderedApi::Failed {
                component: c.name.clone(),
                message,
            }),
        }
    }
    out
}

/// Objects to create, change and prune per component, from the renders of both commits.
fn component_changes(
    previous: &DesiredState,
    desired: &DesiredState,
    p: &Pending,
    cache: &RenderCache,
) -> Vec<ComponentChange> {
    let mut out = Vec::new();
    let old_of = |name: &str| -> Option<Result<Vec<RenderedObject>, String>> {
        let c = previous.components.iter().find(|c| c.name == name)?;
        Some(objects(cache, p.old.get(name)?, name, &c.namespace))
    };
    for c in &desired.components {
        let new_digest = p
            .new
            .get(&c.name)
            .and_then(|r| r.as_ref().ok())
            .map(|(d, _)| d);
        let old_digest = p
            .old
            .get(&c.name)
            .and_then(|r| r.as_ref().ok())
            .map(|(d, _)| d);
        if new_digest.is_some() && new_digest == old_digest {
            continue;
        }
        let mut change = ComponentChange {
            name: c.name.clone(),
            action: if old_digest.is_some() || p.old.contains_key(&c.name) {
                "changed"
            } else {
                "new"
            }
            .into(),
            ..ComponentChange::default()
        };
        let new = match p
            .new
            .get(&c.name)
            .map(|k| objects(cache, k, &c.name, &c.namespace))
        {
            Some(Ok(o)) => o,
            Some(Err(e)) => {
                change.error = Some(e);
                out.push(change);
                continue;
            }
            None => continue,
        };
        let old = match old_of(&c.name) {
            Some(Ok(o)) => o,
            _ => Vec::new(),
        };
        let old_by_key: BTreeMap<ObjectKey, &RenderedObject> =
            old.iter().map(|o| (o.key(), o)).collect();
        let new_keys: BTreeSet<ObjectKey> = new.iter().map(RenderedObject::key).collect();
        for o in &new {
            match old_by_key.get(&o.key()) {
                None => change.create.push(o.key().to_string()),
                Some(before)
                    if diff::first_difference(&o.body, &before.body).is_some()
                        || o.body != before.body =>
                {
                    change.change.push(o.key().to_string());
                }
                Some(_) => {}
            }
        }
        change.prune = old
            .iter()
            .filter(|o| !new_keys.contains(&o.key()))
            .map(|o| o.key().to_string())
            .collect();
        out.push(change);
    }
    for c in &previous.components {
        if desired.components.iter().any(|d| d.name == c.name) {
            continue;
        }
        let prune = match old_of(&c.name) {
            Some(Ok(o)) => o.iter().map(|o| o.key().to_string()).collect(),
            _ => Vec::new(),
        };
        out.push(ComponentChange {
            name: c.name.clone(),
            action: "removed".into(),
            prune,
            ..ComponentChange::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{observed, v};
    use crate::status::Versions;

    #[test]
    fn a_status_ref_says_what_runs() {
        let mut o = observed("1.29.6", &[("general", "1.29.6"), ("batch", "1.28.11")]);
        let mut record = Record {
            control_plane: Some(Versions::new(Some(v("1.30.2")), None, v("1.30.2"))),
            ..Record::default()
        };
        record.node_groups.insert(
            "general".into(),
            Versions::new(Some(v("1.29.6")), Some(v("1.30.2")), v("1.30.2")),
        );
        apply_report(&mut o, &record);
        assert_eq!(o.control_plane, v("1.30.2"));
        assert_eq!(o.node_groups["general"].min_kubelet, Some(v("1.29.6")));
        assert_eq!(o.node_groups["general"].max_kubelet, Some(v("1.30.2")));
        assert_eq!(
            o.node_groups["batch"].min_kubelet,
            Some(v("1.28.11")),
            "not reported: kept"
        );
        assert_eq!(
            o.previous_desired.and_then(|p| p.control_plane),
            Some(v("1.30.2"))
        );
    }
}
