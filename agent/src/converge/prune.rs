//! Prune: delete the objects of a component that its render no longer holds, or all of a
//! component that is no longer declared.
//!
//! Candidates are the objects of the component's inventory (what it applied, recorded in
//! the status record), each read by name; a sweep of every listable kind for the
//! component's label happens only with `--prune-scan` (adoption of objects applied before
//! inventories, or by a pass that died before it recorded them), or for a component whose
//! record has no inventory (written by an earlier release). So the agent needs no `list`
//! on kinds its components do not render, and none on Secrets.
//!
//! A candidate is deleted only if it still carries the component's label, was applied by
//! the `tidemark` field manager and is owned by no controller, and never one another
//! component adopted in the same pass or one already being deleted. Never pruned either:
//! helm hooks, objects marked `helm.sh/resource-policy: keep`, and CustomResourceDefinitions
//! unless the component opts in (`pruneCRDs`): deleting a CRD deletes every resource of its
//! kind. The delete carries the uid read as a precondition.

use std::collections::{BTreeMap, BTreeSet};

use super::Scratch;
use super::live::{self, ApiError, LiveObject};
use crate::component::hooks;
use crate::component::manifest::{ObjectKey, RenderedObject};
use crate::status::record::Inventory;

/// Errors of pruning.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The objects tidemark applied could not be listed.
    #[error("failed to list the objects tidemark applied")]
    Sweep(#[source] ApiError),
    /// An object of the inventory could not be read.
    #[error("failed to read an object of the inventory")]
    Read(#[source] ApiError),
    /// An object could not be deleted.
    #[error("failed to prune")]
    Delete(#[source] ApiError),
}

/// What a prune found.
#[derive(Debug, Default)]
pub struct Prunable {
    /// Objects to delete.
    pub doomed: Vec<LiveObject>,
    /// Objects no longer rendered that stay: CRDs (without `pruneCRDs`) and objects marked
    /// `helm.sh/resource-policy: keep`.
    pub retained: Vec<LiveObject>,
}

/// The live objects of component `name` that a prune would delete: those of `inventory`
/// (and of a sweep, with `--prune-scan` or when `inventory` is `None`) that `keep` does not
/// hold (all of them when `keep` is `None`). CRDs only with `prune_crds`.
pub async fn prunable(
    client: &kube::Client,
    scratch: &mut Scratch,
    name: &str,
    inventory: Option<&Inventory>,
    keep: Option<&[RenderedObject]>,
    prune_crds: bool,
) -> Result<Prunable, PruneError> {
    let keep: BTreeSet<ObjectKey> = keep
        .unwrap_or_default()
        .iter()
        .map(RenderedObject::key)
        .collect();
    let mut candidates: BTreeMap<ObjectKey, LiveObject> = BTreeMap::new();
    if inventory.is_none() || scratch.prune_scan {
        let swept = scratch.swept(client).await.map_err(PruneError::Sweep)?;
        candidates.extend(
            swept
                .iter()
                .filter(|o| o.component == name && !keep.contains(&o.key))
                .map(|o| (o.key.clone(), o.clone())),
        );
    }
    for (key, recorded_uid) in inventory.into_iter().flat_map(Inventory::iter) {
        if keep.contains(key) || candidates.contains_key(key) {
            continue;
        }
        let Some((ar, namespaced)) = scratch
            .resource_of(client, key)
            .await
            .map_err(PruneError::Read)?
        else {
            // Its kind is not served any more (its CRD is gone): so is the object.
            continue;
        };
        let Some(live) = live::get(client, &ar, namespaced, key)
            .await
            .map_err(PruneError::Read)?
        else {
            continue;
        };
        if !recorded_uid.is_empty() && live.uid() != Some(recorded_uid) {
            tracing::info!(component = name, object = %key, "recreated since it was applied");
        }
        candidates.insert(key.clone(), live);
    }
    let adopted = &scratch.applied;
    let gone = candidates
        .into_values()
        // Relabelled, or never ours: an object without the component's label is never
        // touched.
        .filter(|o| o.component == name && o.applied_by_tidemark())
        // Already being deleted: another DELETE would only be one more write.
        .filter(|o| !o.is_terminating())
        // Adopted in this pass by another component.
        .filter(|o| adopted.get(&o.key).is_none_or(|owner| owner == name))
        // Hooks are the hooks' business (their delete policy), never the prune's.
        .filter(|o| !hooks::is_hook(&o.body));
    let mut out = Prunable::default();
    for o in gone {
        let is_crd =
            o.key.group == "apiextensions.k8s.io" && o.key.kind == "CustomResourceDefinition";
        if hooks::is_kept(&o.body) || (is_crd && !prune_crds) {
            out.retained.push(o);
        } else {
            out.doomed.push(o);
        }
    }
    Ok(out)
}

/// Deletes the objects of component `name` that `keep` does not hold (CRDs only with
/// `prune_crds`), from its `inventory` (see [`prunable`]). Returns how many it deleted, and
/// the objects it left in place.
pub async fn prune(
    client: &kube::Client,
    scratch: &mut Scratch,
    name: &str,
    inventory: Option<&Inventory>,
    keep: Option<&[RenderedObject]>,
    prune_crds: bool,
) -> Result<(usize, Vec<String>), PruneError> {
    let found = prunable(client, scratch, name, inventory, keep, prune_crds).await?;
    let mut deleted = 0;
    for o in &found.doomed {
        if live::delete(client, o).await.map_err(PruneError::Delete)? {
            deleted += 1;
            tracing::info!(component = name, object = %o.key, "pruned");
            crate::crash::point("object-pruned");
        }
    }
    let retained: Vec<String> = found.retained.iter().map(|o| o.key.to_string()).collect();
    for o in &retained {
        tracing::info!(component = name, object = %o, "no longer rendered; kept");
    }
    Ok((deleted, retained))
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::{Value, json};

    use super::*;
    use crate::component::manifest;
    use crate::converge::scripted::{self, core_only_roots, discovery, on};
    use crate::status::record::Inventory;

    fn cm(name: &str, component: &str, managers: Value, extra: Value) -> Value {
        let mut meta = json!({
            "name": name, "namespace": "ns",
            "labels": {"tidemark.dev/component": component},
            "managedFields": managers,
        });
        if let (Some(m), Some(e)) = (meta.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        json!({"metadata": meta, "data": {}})
    }

    /// Without an inventory (a record of a release before inventories), a sweep finds the
    /// candidates. Only objects tidemark applied, still labelled for the component, not
    /// rendered, not controlled, not already terminating are deleted; each with one
    /// foreground DELETE.
    #[tokio::test]
    async fn prune_deletes_only_what_tidemark_applied_and_no_longer_renders() {
        let ours = json!([{"manager": "tidemark", "operation": "Apply"}]);
        let theirs = json!([{"manager": "kubectl-client-side-apply", "operation": "Update"}]);
        let items = json!([
            cm("gone", "web", ours.clone(), json!({})),
            cm("hand-made", "web", theirs, json!({})),
            cm(
                "controlled",
                "web",
                ours.clone(),
                json!({"ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u", "controller": true}]})
            ),
            cm(
                "terminating",
                "web",
                ours.clone(),
                json!({"deletionTimestamp": "2026-11-24T10:00:00Z"})
            ),
            cm("other-component", "db", ours.clone(), json!({})),
            cm(
                "hook",
                "web",
                ours.clone(),
                json!({"annotations": {"helm.sh/hook": "pre-upgrade"}})
            ),
            cm(
                "kept-by-policy",
                "web",
                ours.clone(),
                json!({"annotations": {"helm.sh/resource-policy": "keep"}})
            ),
            cm("kept", "web", ours, json!({})),
        ]);
        let (client, log) = scripted::client(vec![
            core_only_roots(),
            discovery("v1", &[("ConfigMap", "configmaps", true)]),
            on(
                Method::GET,
                "/api/v1/configmaps",
                200,
                json!({"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {}, "items": items}),
            ),
            on(
                Method::DELETE,
                "/api/v1/namespaces/ns/configmaps/gone",
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
        ]);
        let kept = manifest::parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept, namespace: ns}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut scratch = Scratch::default();
        let (pruned, retained) = scripted::within(prune(
            &client,
            &mut scratch,
            "web",
            None,
            Some(&kept),
            false,
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", crate::status::describe(&e)));
        assert_eq!(pruned, 1);
        assert_eq!(retained, ["ConfigMap/ns/kept-by-policy"]);
        let deletes: Vec<scripted::Seen> = scripted::requests(&log)
            .into_iter()
            .filter(|s| s.method == Method::DELETE)
            .collect();
        assert_eq!(deletes.len(), 1);
        assert_eq!(deletes[0].path, "/api/v1/namespaces/ns/configmaps/gone");
        assert_eq!(deletes[0].body["propagationPolicy"], "Foreground");
        // The sweep listed by the component label, once.
        let lists: Vec<scripted::Seen> = scripted::requests(&log)
            .into_iter()
            .filter(|s| s.path == "/api/v1/configmaps")
            .collect();
        assert_eq!(lists.len(), 1);
        assert!(
            lists[0].has_query("labelSelector", "tidemark.dev%2Fcomponent"),
            "{}",
            lists[0].query
        );
    }

    fn key(kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: kind.into(),
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    /// With an inventory, nothing is listed: each inventoried object the render no longer
    /// holds is read by name and deleted with its uid as a precondition. An object gone
    /// already, one relabelled by hand, one of a kind no longer served and one replaced
    /// meanwhile (the precondition fails) are left alone; Secrets are never listed.
    #[tokio::test]
    async fn prune_reads_the_inventory_by_name_and_lists_nothing() {
        let ours = json!([{"manager": "tidemark", "operation": "Apply"}]);
        let with_uid = |mut o: Value, uid: &str| {
            o["metadata"]["uid"] = json!(uid);
            o
        };
        let (client, log) = scripted::client(vec![
            core_only_roots(),
            discovery(
                "v1",
                &[
                    ("ConfigMap", "configmaps", true),
                    ("Service", "services", true),
                    ("Secret", "secrets", true),
                ],
            ),
            on(
                Method::GET,
                "/api/v1/namespaces/ns/configmaps/gone",
                200,
                with_uid(cm("gone", "web", ours.clone(), json!({})), "u-gone"),
            ),
            on(
                Method::GET,
                "/api/v1/namespaces/ns/configmaps/relabelled",
                200,
                with_uid(cm("relabelled", "someone", ours.clone(), json!({})), "u-r"),
            ),
            on(
                Method::GET,
                "/api/v1/namespaces/ns/services/replaced",
                200,
                with_uid(cm("replaced", "web", ours, json!({})), "u-new"),
            ),
            on(
                Method::DELETE,
                "/api/v1/namespaces/ns/configmaps/gone",
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
            on(
                Method::DELETE,
                "/api/v1/namespaces/ns/services/replaced",
                409,
                scripted::status(
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled on services \"replaced\": Precondition failed: UID in precondition: u-new, UID in object meta: u-newer",
                ),
            ),
        ]);
        let mut inventory = Inventory::default();
        inventory.insert(key("ConfigMap", "gone"), "u-gone".into());
        inventory.insert(key("ConfigMap", "kept"), "u-kept".into());
        inventory.insert(key("ConfigMap", "already-deleted"), "u-a".into());
        inventory.insert(key("ConfigMap", "relabelled"), "u-r".into());
        inventory.insert(key("Service", "replaced"), "u-old".into());
        inventory.insert(key("Widget", "unserved"), "u-w".into());
        let kept = manifest::parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept, namespace: ns}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut scratch = Scratch::default();
        let (pruned, retained) = scripted::within(prune(
            &client,
            &mut scratch,
            "web",
            Some(&inventory),
            Some(&kept),
            false,
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", crate::status::describe(&e)));
        assert_eq!(pruned, 1);
        assert!(retained.is_empty());
        let seen = scripted::requests(&log);
        let objects: Vec<String> = seen
            .iter()
            .filter(|s| s.path.contains("/namespaces/"))
            .map(scripted::Seen::line)
            .collect();
        assert_eq!(
            objects,
            [
                "GET /api/v1/namespaces/ns/configmaps/already-deleted",
                "GET /api/v1/namespaces/ns/configmaps/gone",
                "GET /api/v1/namespaces/ns/configmaps/relabelled",
                "GET /api/v1/namespaces/ns/services/replaced",
                "DELETE /api/v1/namespaces/ns/configmaps/gone",
                "DELETE /api/v1/namespaces/ns/services/replaced",
            ]
        );
        let delete = |path: &str| {
            seen.iter()
                .find(|s| s.method == Method::DELETE && s.path == path)
                .map(|s| s.body.clone())
                .unwrap_or_default()
        };
        let gone = delete("/api/v1/namespaces/ns/configmaps/gone");
        assert_eq!(gone["preconditions"]["uid"], "u-gone");
        assert_eq!(gone["propagationPolicy"], "Foreground");
        assert_eq!(
            delete("/api/v1/namespaces/ns/services/replaced")["preconditions"]["uid"],
            "u-new"
        );
        assert!(
            !seen
                .iter()
                .any(|s| s.path.ends_with("/configmaps") || s.path.contains("secrets")),
            "{:?}",
            scripted::lines(&log)
        );
    }
}
