//! What can be known of a fleet from git alone: every cluster's components rendered for
//! its declared Kubernetes version (`validate --render`), and the route each cluster of a
//! wave would take if its tag moved (`plan --offline`).
//!
//! - [`render`]: renders keyed by their inputs, each made once, several at a time.
//! - [`check`]: the diagnostics of `validate --render` (render errors, APIs the declared
//!   version no longer serves, objects two components render).
//! - [`route`]: `plan --offline`, through the agent's own planner.

pub mod check;
pub mod render;
pub mod route;

use std::collections::HashMap;

use crate::apis::{self, Removal, RemovedApis};
use crate::component::manifest::{self, ManifestError, ObjectKey, RenderedObject};
use tidemark_schema::KubeVersion;

/// `objects` of component `name` (namespace `namespace`) prepared as the agent prepares
/// them, with the scopes of built-in kinds and of the CRDs in `crd_scopes` (those of every
/// component of the cluster) standing in for discovery. A custom resource of a kind no CRD
/// of the cluster defines counts as namespaced.
pub fn prepare(
    objects: Vec<RenderedObject>,
    name: &str,
    namespace: &str,
    crd_scopes: &HashMap<(String, String), bool>,
) -> Result<Vec<RenderedObject>, ManifestError> {
    manifest::prepare(objects, name, namespace, |o| {
        apis::builtin_namespaced(o.group(), &o.kind)
            .or_else(|| {
                crd_scopes
                    .get(&(o.group().to_string(), o.kind.clone()))
                    .copied()
            })
            .or(Some(true))
    })
}

/// `(group, kind) -> namespaced` of the CRDs in `objects`.
pub fn crd_scopes<'a>(
    objects: impl IntoIterator<Item = &'a RenderedObject>,
) -> HashMap<(String, String), bool> {
    objects
        .into_iter()
        .filter(|o| manifest::is_crd(o))
        .filter_map(|o| {
            let spec = o.body.get("spec")?;
            let group = spec.get("group")?.as_str()?;
            let kind = spec.pointer("/names/kind")?.as_str()?;
            let namespaced = spec.get("scope").and_then(|s| s.as_str()) != Some("Cluster");
            Some(((group.to_string(), kind.to_string()), namespaced))
        })
        .collect()
}

/// The objects of `objects` whose API a cluster of `minor` no longer serves, each with its
/// removal.
pub fn removed_objects<'a>(
    objects: &'a [RenderedObject],
    minor: KubeVersion,
    removed: &'a RemovedApis,
) -> Vec<(&'a RenderedObject, &'a Removal)> {
    objects
        .iter()
        .filter_map(|o| {
            removed
                .removed_by(&o.api_version, &o.kind, minor)
                .map(|r| (o, r))
        })
        .collect()
}

/// Objects rendered by more than one component: each object after its first, with the
/// component that rendered it first. `components` are `(name, prepared objects)` in
/// declaration order.
pub fn duplicates(components: &[(String, Vec<RenderedObject>)]) -> Vec<(&str, ObjectKey, &str)> {
    let mut first: HashMap<ObjectKey, &str> = HashMap::new();
    let mut out = Vec::new();
    for (name, objects) in components {
        for o in objects {
            match first.get(&o.key()) {
                Some(owner) if *owner != name.as_str() => {
                    out.push((name.as_str(), o.key(), *owner));
                }
                Some(_) => {}
                None => {
                    first.insert(o.key(), name.as_str());
                }
            }
        }
    }
    out
}

/// `Kind/ns/name` as people read it, with its apiVersion: `FlowSchema/x
/// (flowcontrol.apiserver.k8s.io/v1beta3)`.
pub fn describe_object(o: &RenderedObject) -> String {
    let mut key = o.key();
    key.group.clear();
    format!("{key} ({})", o.api_version)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fixtures::v;

    fn object(api_version: &str, kind: &str, name: &str, ns: Option<&str>) -> RenderedObject {
        let mut body = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
        if let Some(ns) = ns {
            body["metadata"]["namespace"] = json!(ns);
        }
        RenderedObject {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: ns.map(str::to_string),
            source: None,
            body,
        }
    }

    #[test]
    fn removed_apis_are_found_for_the_minor() {
        let objects = vec![
            object(
                "flowcontrol.apiserver.k8s.io/v1beta3",
                "FlowSchema",
                "a",
                None,
            ),
            object("flowcontrol.apiserver.k8s.io/v1", "FlowSchema", "b", None),
            object("apps/v1", "Deployment", "c", Some("x")),
        ];
        let removed = RemovedApis::builtin();
        assert!(removed_objects(&objects, v("1.31.4"), removed).is_empty());
        let found = removed_objects(&objects, v("1.32.0"), removed);
        assert_eq!(found.len(), 1);
        assert_eq!(
            describe_object(found[0].0),
            "FlowSchema/a (flowcontrol.apiserver.k8s.io/v1beta3)"
        );
    }

    #[test]
    fn objects_two_components_render_are_found_once_each() {
        let scopes = HashMap::new();
        let prep = |name: &str, objs: Vec<RenderedObject>| {
            (
                name.to_string(),
                prepare(objs, name, "ns", &scopes).unwrap_or_default(),
            )
        };
        let components = vec![
            prep(
                "a",
                vec![
                    object("v1", "ConfigMap", "shared", None),
                    object(
                        "rbac.authorization.k8s.io/v1",
                        "ClusterRole",
                        "r",
                        Some("ignored"),
                    ),
                ],
            ),
            prep(
                "b",
                vec![
                    object("v1", "ConfigMap", "shared", Some("ns")),
                    object("v1", "ConfigMap", "own", None),
                ],
            ),
            prep(
                "c",
                vec![object(
                    "rbac.authorization.k8s.io/v1",
                    "ClusterRole",
                    "r",
                    None,
                )],
            ),
        ];
        let found: Vec<String> = duplicates(&components)
            .iter()
            .map(|(second, key, first)| format!("{second} {key} {first}"))
            .collect();
        assert_eq!(
            found,
            [
                "b ConfigMap/ns/shared a",
                "c ClusterRole.rbac.authorization.k8s.io/r a"
            ]
        );
    }
}
