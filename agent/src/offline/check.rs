//! `validate --render`: every cluster's components rendered for its declared control-plane
//! version, at the default branch and at its wave tag, and what the renders say:
//!
//! - a render that fails (helm's error, or a render the agent could not apply);
//! - an object whose API the declared version no longer serves (`removed-apis.txt`);
//! - an object two components of one cluster both render.
//!
//! Each is a diagnostic at the component's entry in the cluster manifest
//! (`spec.components[i]`, or `spec.componentSets[k]` for a component of a set), at the
//! commit it was found in. Charts are rendered for what a cluster of that minor serves by
//! default ([`crate::apis::served_api_versions`]), each distinct render once
//! ([`super::render::RenderCache`]).

use std::collections::BTreeMap;

use tidemark_schema::load::Document;
use tidemark_schema::resolve::{self, DesiredComponent};
use tidemark_schema::{Cluster, ComponentSet, Diagnostic, KubeVersion, Tree};

use super::render::{CacheError, RenderCache};
use crate::apis::{self, RemovedApis};
use crate::component::inputs;
use crate::converge::render::RenderCapabilities;
use crate::status::describe;

/// One commit to check: the default branch, or a wave tag's.
pub struct Snapshot<'a> {
    /// Its files.
    pub tree: &'a dyn Tree,
    /// `None` for the default branch; `wave/canary (commit 0123456789ab)` for a tag.
    pub label: Option<String>,
    /// For a tag: only the clusters of this wave (their wave as the default branch says).
    pub wave: Option<String>,
}

/// A cluster's components at one commit, their renders asked for.
pub struct ClusterRenders {
    label: Option<String>,
    doc: Document<Cluster>,
    declared: KubeVersion,
    components: Vec<ComponentRender>,
}

struct ComponentRender {
    component: DesiredComponent,
    field: String,
    render: Result<String, String>,
}

/// The capabilities a chart is rendered with for a cluster declaring `version`.
pub fn capabilities_for(version: KubeVersion) -> RenderCapabilities {
    let minor = version.minor_version();
    RenderCapabilities {
        kube_version: Some(landing(version).to_string()),
        api_versions: apis::served_api_versions(minor, RemovedApis::builtin())
            .into_iter()
            .collect(),
    }
}

/// helm wants a full version: a minor-only declaration renders as its `.0`.
fn landing(v: KubeVersion) -> KubeVersion {
    KubeVersion::new(v.major, v.minor, v.patch.unwrap_or(0))
}

/// Reads every cluster of `snapshot` (of its wave, for a tag; `waves` maps cluster names to
/// their wave on the default branch) and asks `cache` for its components' renders. Files
/// that do not parse are left to `validate`'s own diagnostics.
pub fn request(
    snapshot: &Snapshot<'_>,
    waves: &BTreeMap<String, Option<String>>,
    cache: &mut RenderCache,
) -> Result<Vec<ClusterRenders>, CacheError> {
    let (repo, _) = tidemark_schema::load(snapshot.tree);
    let fleet = repo.fleet.as_ref().map(|d| &d.value);
    let sets: BTreeMap<String, &ComponentSet> = repo
        .component_sets
        .iter()
        .map(|d| (d.value.metadata.name.clone(), &d.value))
        .collect();
    let mut out = Vec::new();
    for doc in repo.clusters {
        let name = doc.value.metadata.name.clone();
        let wave = match (&snapshot.wave, waves.get(&name)) {
            (None, _) => doc.value.wave().map(str::to_string),
            (Some(w), Some(Some(of))) if w == of => Some(w.clone()),
            _ => continue,
        };
        let state = resolve::resolve(fleet, &doc.value, wave, &sets);
        let capabilities = capabilities_for(state.control_plane);
        let mut components = Vec::new();
        for c in &state.components {
            let field = entry_field(&doc.value, c);
            let render = match inputs::gather(snapshot.tree, c) {
                // At the default branch `validate` itself reports unreadable inputs.
                Err(_) if snapshot.label.is_none() => continue,
                Err(e) => Err(format!("cannot read its inputs: {}", describe(&e))),
                Ok(i) => match cache.request(snapshot.tree, c, &i, &capabilities) {
                    Ok(key) => Ok(key),
                    Err(CacheError::Inputs(e)) => {
                        Err(format!("cannot read its chart: {}", describe(&e)))
                    }
                    Err(e) => return Err(e),
                },
            };
            components.push(ComponentRender {
                component: c.clone(),
                field,
                render,
            });
        }
        out.push(ClusterRenders {
            label: snapshot.label.clone(),
            doc,
            declared: state.control_plane,
            components,
        });
    }
    Ok(out)
}

/// Where a component is declared in its cluster's manifest.
fn entry_field(cluster: &Cluster, c: &DesiredComponent) -> String {
    if let Some(set) = c.origin.strip_prefix("componentSet/")
        && let Some(k) = cluster.spec.component_sets.iter().position(|s| s == set)
    {
        return format!("spec.componentSets[{k}]");
    }
    match cluster
        .spec
        .components
        .iter()
        .position(|o| o.name == c.name)
    {
        Some(i) => format!("spec.components[{i}]"),
        None => "spec".into(),
    }
}

/// The diagnostics of the renders of `clusters` (after [`RenderCache::run`]).
pub fn diagnose(clusters: &[ClusterRenders], cache: &RenderCache) -> Vec<Diagnostic> {
    let removed = RemovedApis::builtin();
    let mut out = Vec::new();
    for cluster in clusters {
        let at = |field: &str, message: String| {
            let message = match &cluster.label {
                Some(label) => format!("at {label}: {message}"),
                None => message,
            };
            cluster.doc.diagnostic(field, message)
        };
        let version = landing(cluster.declared);
        let outcomes: Vec<_> = cluster
            .components
            .iter()
            .map(|c| {
                c.render
                    .as_ref()
                    .map(|key| cache.outcome(key))
                    .map_err(Clone::clone)
            })
            .collect();
        let crds = super::crd_scopes(
            outcomes
                .iter()
                .filter_map(|o| o.as_ref().ok().and_then(Option::as_ref))
                .filter_map(|o| o.as_ref().as_ref().ok())
                .flatten(),
        );
        let mut prepared: Vec<(String, Vec<_>)> = Vec::new();
        let mut fields = BTreeMap::new();
        for (c, outcome) in cluster.components.iter().zip(outcomes) {
            let name = &c.component.name;
            fields.insert(name.clone(), c.field.clone());
            let objects = match outcome {
                Err(why) => {
                    out.push(at(&c.field, format!("component `{name}`: {why}")));
                    continue;
                }
                Ok(None) => continue,
                Ok(Some(outcome)) => {
                    match outcome.as_ref() {
                        Err(why) => {
                            out.push(at(
                            &c.field,
                            format!("component `{name}` does not render for Kubernetes {version}: {why}"),
                        ));
                            continue;
                        }
                        Ok(objects) => objects.clone(),
                    }
                }
            };
            let objects = match super::prepare(objects, name, &c.component.namespace, &crds) {
                Ok(o) => o,
                Err(e) => {
                    out.push(at(
                        &c.field,
                        format!(
                            "component `{name}`: its render cannot be applied: {}",
                            describe(&e)
                        ),
                    ));
                    continue;
                }
            };
            for (o, r) in super::removed_objects(&objects, cluster.declared, removed) {
                out.push(at(
                    &c.field,
                    format!(
                        "component `{name}` renders {}, which Kubernetes {version} does not serve: {r}",
                        super::describe_object(o)
                    ),
                ));
            }
            prepared.push((name.clone(), objects));
        }
        for (second, key, first) in super::duplicates(&prepared) {
            let field = fields.get(second).cloned().unwrap_or_default();
            out.push(at(
                &field,
                format!(
                    "component `{second}` renders {key}, which component `{first}` renders too"
                ),
            ));
        }
    }
    out
}
