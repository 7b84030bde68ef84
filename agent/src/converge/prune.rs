//! Prune: delete the objects of a component that its render no longer holds, or all of a
//! component that is no longer declared.
//!
//! Only objects tidemark applied are candidates (labelled for the component, applied by
//! the `tidemark` field manager, owned by no controller), and never one another component
//! adopted in the same pass or one already being deleted. Never pruned either: helm hooks,
//! objects marked `helm.sh/resource-policy: keep`, and CustomResourceDefinitions unless the
//! component opts in (`pruneCRDs`): deleting a CRD deletes every resource of its kind.

use std::collections::BTreeSet;

use super::Scratch;
use super::live::{self, ApiError, LiveObject};
use crate::component::hooks;
use crate::component::manifest::{ObjectKey, RenderedObject};

/// Errors of pruning.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The objects tidemark applied could not be listed.
    #[error("failed to list the objects tidemark applied")]
    Sweep(#[source] ApiError),
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

/// The live objects of component `name` that a prune would delete: those `keep` does not
/// hold (all of them when `keep` is `None`). CRDs only with `prune_crds`.
pub async fn prunable(
    client: &kube::Client,
    scratch: &mut Scratch,
    name: &str,
    keep: Option<&[RenderedObject]>,
    prune_crds: bool,
) -> Result<Prunable, PruneError> {
    let keep: BTreeSet<ObjectKey> = keep
        .unwrap_or_default()
        .iter()
        .map(RenderedObject::key)
        .collect();
    let adopted = scratch.applied.clone();
    let swept = scratch.swept(client).await.map_err(PruneError::Sweep)?;
    let gone = swept
        .iter()
        .filter(|o| o.component == name && o.applied_by_tidemark())
        .filter(|o| !keep.contains(&o.key))
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
            out.retained.push(o.clone());
        } else {
            out.doomed.push(o.clone());
        }
    }
    Ok(out)
}

/// Deletes the objects of component `name` that `keep` does not hold (CRDs only with
/// `prune_crds`). Returns how many it deleted, and the objects it left in place.
pub async fn prune(
    client: &kube::Client,
    scratch: &mut Scratch,
    name: &str,
    keep: Option<&[RenderedObject]>,
    prune_crds: bool,
) -> Result<(usize, Vec<String>), PruneError> {
    let found = prunable(client, scratch, name, keep, prune_crds).await?;
    for o in &found.doomed {
        live::delete(client, o).await.map_err(PruneError::Delete)?;
        tracing::info!(component = name, object = %o.key, "pruned");
        crate::crash::point("object-pruned");
    }
    let retained: Vec<String> = found.retained.iter().map(|o| o.key.to_string()).collect();
    for o in &retained {
        tracing::info!(component = name, object = %o, "no longer rendered; kept");
    }
    Ok((found.doomed.len(), retained))
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::{Value, json};

    use super::*;
    use crate::component::manifest;
    use crate::converge::scripted::{self, discovery, on};

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

    /// Only objects tidemark applied, still labelled for the component, not rendered, not
    /// controlled, not already terminating are deleted; each with one foreground DELETE.
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
            on(
                Method::GET,
                "/api",
                200,
                json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            ),
            on(
                Method::GET,
                "/apis",
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
            ),
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
        let (pruned, retained) =
            scripted::within(prune(&client, &mut scratch, "web", Some(&kept), false))
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
}
