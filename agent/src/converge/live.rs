//! The cluster as component steps see it: kinds found by discovery, server-side apply,
//! deletes, the namespaces a render needs, CRDs becoming Established, and objects listed
//! by the component label.
//!
//! - Every object tidemark applies carries `tidemark.dev/component`; nothing without it is
//!   ever deleted.
//! - A live object's group, version and kind come from the request that listed it, never
//!   from the list item (a real API server leaves them out of built-in kinds' items).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::discovery::{ApiCapabilities, Scope, verbs};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::Value;

use crate::component::manifest::{ObjectKey, RenderedObject};
use crate::keys;

pub use crate::k8s::{ApiError, Cause};

/// Errors of component steps against the cluster.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The API server does not serve this kind (and no CRD in the render defines it).
    #[error("{0}: the API server does not serve this kind")]
    UnknownKind(String),
    /// A request failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A CRD did not become Established in time.
    #[error("CustomResourceDefinition {crd} did not become Established within {}", tidemark_schema::Duration(*within))]
    NotEstablished {
        /// The CRD.
        crd: String,
        /// How long tidemark waited.
        within: Duration,
    },
    /// Watching an object for a condition failed.
    #[error("failed to watch {object}")]
    Watch {
        /// The object.
        object: String,
        /// The cause.
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// An object being replaced was not gone in time.
    #[error("{object} was not gone within {} of its deletion", tidemark_schema::Duration(*within))]
    NotGone {
        /// The object.
        object: String,
        /// How long tidemark waited.
        within: Duration,
    },
}

/// How long a replaced object may take to go away.
const REPLACE_WAIT: Duration = Duration::from_secs(60);

/// Kinds the API server serves, looked up once per kind and kept (`kind` -> resource and
/// whether it is namespaced). Misses are forgotten when CRDs were applied.
#[derive(Default)]
pub struct Kinds {
    known: HashMap<(String, String, String), Option<(ApiResource, bool)>>,
}

impl Kinds {
    /// The resource of `group/version` `kind`, if served.
    pub async fn resolve(
        &mut self,
        client: &kube::Client,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Result<Option<(ApiResource, bool)>, ApiError> {
        let key = (group.to_string(), version.to_string(), kind.to_string());
        if let Some(hit) = self.known.get(&key) {
            return Ok(hit.clone());
        }
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let found = match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((ar, caps)) => Some((ar, caps.scope == Scope::Namespaced)),
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(kube::Error::Discovery(_)) => None,
            Err(e) => {
                return Err(ApiError::new(
                    format!("discover {kind}.{group}/{version}"),
                    e,
                ));
            }
        };
        self.known.insert(key, found.clone());
        Ok(found)
    }

    /// The resource of `obj`'s kind, if served.
    pub async fn of(
        &mut self,
        client: &kube::Client,
        obj: &RenderedObject,
    ) -> Result<Option<(ApiResource, bool)>, ApiError> {
        self.resolve(client, obj.group(), obj.version(), &obj.kind)
            .await
    }

    /// Forgets kinds that were not served (a CRD may serve them now).
    pub fn forget_misses(&mut self) {
        self.known.retain(|_, v| v.is_some());
    }

    /// Whether the kind of `obj` is namespaced, as far as already resolved.
    pub fn namespaced(&self, obj: &RenderedObject) -> Option<bool> {
        self.known
            .get(&(
                obj.group().to_string(),
                obj.version().to_string(),
                obj.kind.clone(),
            ))
            .cloned()
            .flatten()
            .map(|(_, namespaced)| namespaced)
    }
}

fn api_for(client: &kube::Client, ar: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

/// The API of `obj`'s kind, in its namespace when the kind is namespaced.
async fn api_of(
    client: &kube::Client,
    kinds: &mut Kinds,
    obj: &RenderedObject,
) -> Result<Api<DynamicObject>, LiveError> {
    let Some((ar, namespaced)) = kinds.of(client, obj).await? else {
        return Err(LiveError::UnknownKind(obj.key().to_string()));
    };
    Ok(api_for(
        client,
        &ar,
        obj.namespace.as_deref().filter(|_| namespaced),
    ))
}

/// Server-side applies `obj` with field manager `tidemark` (`force` takes over fields other
/// managers own). Returns the object as the server stored it.
pub async fn apply(
    client: &kube::Client,
    kinds: &mut Kinds,
    obj: &RenderedObject,
    force: bool,
) -> Result<Value, LiveError> {
    let api = api_of(client, kinds, obj).await?;
    let mut params = PatchParams::apply(keys::FIELD_MANAGER);
    if force {
        params = params.force();
    }
    let stored = api
        .patch(&obj.name, &params, &Patch::Apply(&obj.body))
        .await
        .map_err(|e| ApiError::new(format!("apply {}", obj.key()), e))?;
    Ok(serde_json::to_value(stored).unwrap_or(Value::Null))
}

/// Replaces `obj`: deletes it (its dependents are collected in the background), waits
/// until it is gone, then applies it (returning the object as stored). For Jobs, whose template cannot change: a chart's
/// new Job version is a new Job, as `kubectl replace --force` would make it.
pub async fn replace(
    client: &kube::Client,
    kinds: &mut Kinds,
    obj: &RenderedObject,
    force: bool,
) -> Result<Value, LiveError> {
    let api = api_of(client, kinds, obj).await?;
    let key = obj.key().to_string();
    let uid = match api.delete(&obj.name, &DeleteParams::background()).await {
        Ok(either) => either.either(|o| o.metadata.uid, |s| s.details.map(|d| d.uid)),
        Err(e) => {
            let e = ApiError::new(format!("delete {key}"), e);
            if !e.is_not_found() {
                return Err(e.into());
            }
            None
        }
    };
    if let Some(uid) = uid.filter(|u| !u.is_empty()) {
        let gone = await_condition(api.clone(), &obj.name, conditions::is_deleted(&uid));
        match tokio::time::timeout(REPLACE_WAIT, gone).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(LiveError::Watch {
                    object: key,
                    source,
                });
            }
            Err(_) => {
                return Err(LiveError::NotGone {
                    object: key,
                    within: REPLACE_WAIT,
                });
            }
        }
    }
    apply(client, kinds, obj, force).await
}

/// Creates each namespace of `namespaces` that does not exist (unlabelled: a namespace
/// tidemark only needed is never pruned with a component).
pub async fn ensure_namespaces(
    client: &kube::Client,
    namespaces: impl IntoIterator<Item = &str>,
) -> Result<(), ApiError> {
    let api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        if api
            .get_opt(ns)
            .await
            .map_err(|e| ApiError::new(format!("read namespace {ns}"), e))?
            .is_some()
        {
            continue;
        }
        let object = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(ns.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let params = PostParams {
            field_manager: Some(keys::FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match api.create(&params, &object).await {
            Ok(_) => tracing::info!(namespace = ns, "created namespace"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(ApiError::new(format!("create namespace {ns}"), e)),
        }
    }
    Ok(())
}

/// Waits until the CRD `name` is Established (a watch, at most `limit`).
pub async fn wait_established(
    client: &kube::Client,
    name: &str,
    limit: Duration,
) -> Result<(), LiveError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let established = await_condition(api, name, conditions::is_crd_established());
    match tokio::time::timeout(limit, established).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(LiveError::Watch {
            object: format!("CustomResourceDefinition/{name}"),
            source,
        }),
        Err(_) => Err(LiveError::NotEstablished {
            crd: name.to_string(),
            within: limit,
        }),
    }
}

/// A live object carrying the component label.
#[derive(Clone, Debug)]
pub struct LiveObject {
    /// Its identity.
    pub key: ObjectKey,
    /// The value of its `tidemark.dev/component` label.
    pub component: String,
    /// Its resource, for deleting or re-reading it.
    pub resource: ApiResource,
    /// Whether its kind is namespaced.
    pub namespaced: bool,
    /// The whole object, `apiVersion` and `kind` set from the resource that listed it.
    pub body: Value,
}

/// Whether `body` has a server-side apply entry of tidemark's field manager.
pub fn has_our_apply_entry(body: &Value) -> bool {
    body.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|fs| {
            fs.iter().any(|f| {
                f.get("manager").and_then(Value::as_str) == Some(keys::FIELD_MANAGER)
                    && f.get("operation").and_then(Value::as_str) == Some("Apply")
            })
        })
}

impl LiveObject {
    /// Whether tidemark applied it: it has a server-side apply entry of our field manager
    /// and no controller owns it. Objects that only copied the label (pods of a workload
    /// whose template carries it) are never pruned.
    pub fn applied_by_tidemark(&self) -> bool {
        let ours = has_our_apply_entry(&self.body);
        let controlled = self
            .body
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|os| {
                os.iter()
                    .any(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
            });
        ours && !controlled
    }

    /// Whether it is being deleted already.
    pub fn is_terminating(&self) -> bool {
        self.body.pointer("/metadata/deletionTimestamp").is_some()
    }

    /// Its uid.
    pub fn uid(&self) -> Option<&str> {
        self.body.pointer("/metadata/uid").and_then(Value::as_str)
    }
}

/// The uid of an object as the API server answered it (`""` when it has none).
pub fn uid_of(stored: &Value) -> String {
    stored
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The list items of `ar` as JSON values with their type fields set from `ar`: a real API
/// server sends built-in kinds' items without `apiVersion` and `kind`.
pub fn typed_items(ar: &ApiResource, items: Vec<DynamicObject>) -> Vec<Value> {
    items
        .into_iter()
        .filter_map(|o| {
            let mut body = serde_json::to_value(&o).ok()?;
            if let Some(map) = body.as_object_mut() {
                map.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
                map.insert("kind".into(), Value::String(ar.kind.clone()));
            }
            Some(body)
        })
        .collect()
}

/// The object `key` of resource `ar` (one GET), whatever its labels; `None` when it does
/// not exist. `component` is the value of its `tidemark.dev/component` label (`""` when it
/// has none).
pub async fn get(
    client: &kube::Client,
    ar: &ApiResource,
    namespaced: bool,
    key: &ObjectKey,
) -> Result<Option<LiveObject>, ApiError> {
    let namespace = key.namespace.as_deref().filter(|_| namespaced);
    let found = api_for(client, ar, namespace)
        .get_opt(&key.name)
        .await
        .map_err(|e| ApiError::new(format!("read {key}"), e))?;
    let Some(body) = found.and_then(|o| typed_items(ar, vec![o]).pop()) else {
        return Ok(None);
    };
    let component = body
        .pointer(&format!(
            "/metadata/labels/{}",
            keys::labels::COMPONENT.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok(Some(LiveObject {
        key: key.clone(),
        component,
        resource: ar.clone(),
        namespaced,
        body,
    }))
}

/// Lists every object of resource `ar` matching the label `selector`.
pub async fn list_labelled(
    client: &kube::Client,
    ar: &ApiResource,
    namespaced: bool,
    selector: &str,
) -> Result<Vec<LiveObject>, ApiError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| ApiError::new(format!("list {}", ar.plural), e))?;
    Ok(typed_items(ar, list.items)
        .into_iter()
        .filter_map(|body| {
            let meta = body.get("metadata")?;
            let component = meta
                .pointer(&format!(
                    "/labels/{}",
                    keys::labels::COMPONENT.replace('/', "~1")
                ))?
                .as_str()?
                .to_string();
            let key = ObjectKey {
                group: ar.group.clone(),
                kind: ar.kind.clone(),
                namespace: if namespaced {
                    meta.get("namespace")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                } else {
                    None
                },
                name: meta.get("name")?.as_str()?.to_string(),
            };
            Some(LiveObject {
                key,
                component,
                resource: ar.clone(),
                namespaced,
                body,
            })
        })
        .collect())
}

/// What the API server serves: every group/version and kind whose discovery answered, and
/// the group/versions whose discovery failed this pass.
///
/// Written here rather than with `kube::Discovery`, which fails as a whole when one group
/// fails: an aggregated API whose backend is not running yet (metrics-server's, until its
/// pod is ready) answers 503, and must not stop every component of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Served {
    /// Per group, its resources at the preferred version (and kinds only other versions
    /// have, at the first of those), with their capabilities.
    pub resources: Vec<(ApiResource, ApiCapabilities)>,
    /// Every served group/version (`v1`, `apps/v1`, ...) and `group/version/Kind`.
    pub api_versions: BTreeSet<String>,
    /// Group/versions whose discovery failed, and why.
    pub unavailable: BTreeMap<String, String>,
}

impl Served {
    /// Discovers what the API server serves (one request for the core group's versions,
    /// one for the group list, one per group/version).
    pub async fn discover(client: &kube::Client) -> Result<Self, ApiError> {
        let mut out = Self::default();
        let core = client
            .list_core_api_versions()
            .await
            .map_err(|e| ApiError::new("discover the core API versions", e))?;
        let groups = client
            .list_api_groups()
            .await
            .map_err(|e| ApiError::new("discover the API groups", e))?;
        let mut versions_of: Vec<(String, Vec<String>)> =
            vec![(String::new(), core.versions.clone())];
        for g in groups.groups {
            let mut versions: Vec<String> =
                g.versions.iter().map(|v| v.group_version.clone()).collect();
            // Preferred first: its resources are the ones to use.
            if let Some(p) = g
                .preferred_version
                .as_ref()
                .map(|p| p.group_version.clone())
            {
                versions.retain(|v| *v != p);
                versions.insert(0, p);
            }
            versions_of.push((g.name, versions));
        }
        for (group, versions) in versions_of {
            let mut kinds_seen = BTreeSet::new();
            for gv in versions {
                let list = if group.is_empty() {
                    client.list_core_api_resources(&gv).await
                } else {
                    client.list_api_group_resources(&gv).await
                };
                let list = match list {
                    Ok(l) => l,
                    Err(e) => {
                        let e = ApiError::new(format!("discover {gv}"), e);
                        tracing::warn!(group_version = %gv, error = %crate::status::describe(&e), "API group unavailable; skipped this pass");
                        out.unavailable.insert(gv, crate::status::describe(&e));
                        continue;
                    }
                };
                out.api_versions.insert(gv.clone());
                for r in list.resources.iter().filter(|r| !r.name.contains('/')) {
                    out.api_versions.insert(format!("{gv}/{}", r.kind));
                    if !kinds_seen.insert(r.kind.clone()) {
                        continue;
                    }
                    let (g, v) = gv.split_once('/').unwrap_or(("", gv.as_str()));
                    let ar = ApiResource {
                        group: g.to_string(),
                        version: v.to_string(),
                        api_version: gv.clone(),
                        kind: r.kind.clone(),
                        plural: r.name.clone(),
                    };
                    let caps = ApiCapabilities {
                        scope: if r.namespaced {
                            Scope::Namespaced
                        } else {
                            Scope::Cluster
                        },
                        subresources: vec![],
                        operations: r.verbs.clone(),
                    };
                    out.resources.push((ar, caps));
                }
            }
        }
        Ok(out)
    }

    /// Why the group/version of `api_version` could not be discovered this pass, if it
    /// could not.
    pub fn unavailable(&self, api_version: &str) -> Option<&str> {
        self.unavailable.get(api_version).map(String::as_str)
    }
}

/// Every object of every served kind that carries the component label: one list per
/// listable, deletable resource. Used to prune and to check that one object has one owner.
pub async fn sweep(client: &kube::Client, served: &Served) -> Vec<LiveObject> {
    let mut out = Vec::new();
    for (ar, caps) in &served.resources {
        // Events carry no labels of ours: skip what cannot be ours cheaply.
        if ar.plural == "events"
            || !caps.supports_operation(verbs::LIST)
            || !caps.supports_operation(verbs::DELETE)
        {
            continue;
        }
        let namespaced = caps.scope == Scope::Namespaced;
        match list_labelled(client, ar, namespaced, keys::labels::COMPONENT).await {
            Ok(found) => out.extend(found),
            // A resource that refuses a list cannot be swept now; what it holds is pruned
            // on a later pass.
            Err(e) => {
                tracing::warn!(resource = %ar.plural, error = %crate::status::describe(&e), "cannot list for prune")
            }
        }
    }
    out
}

/// Deletes `obj` (foreground: its dependents go with it), only if it is still the object
/// that was read (its uid, as a precondition). Gone already is fine. Returns whether it
/// was deleted: `false` when another object of the same name replaced it meanwhile (the
/// API server answers 409 Conflict to the precondition), which is left alone.
pub async fn delete(client: &kube::Client, obj: &LiveObject) -> Result<bool, ApiError> {
    let api = api_for(
        client,
        &obj.resource,
        obj.key.namespace.as_deref().filter(|_| obj.namespaced),
    );
    let mut params = DeleteParams::foreground();
    if let Some(uid) = obj.uid().filter(|u| !u.is_empty()) {
        params.preconditions = Some(kube::api::Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        });
    }
    match api.delete(&obj.key.name, &params).await {
        Ok(_) => Ok(true),
        Err(e) => {
            let e = ApiError::new(format!("delete {}", obj.key), e);
            match &e.cause {
                Cause::Refused { code: 404, .. } => Ok(true),
                Cause::Refused { code: 409, .. } if params.preconditions.is_some() => {
                    tracing::info!(object = %obj.key, "replaced by another object since it was read; left alone");
                    Ok(false)
                }
                _ => Err(e),
            }
        }
    }
}

/// Live objects by component and identity, listed once per kind for a pass.
#[derive(Default)]
pub struct LiveIndex {
    listed: HashMap<(String, String), BTreeMap<(String, ObjectKey), LiveObject>>,
}

impl LiveIndex {
    /// The live objects of kind `ar` labelled for any component (listed on first use).
    pub async fn of_kind(
        &mut self,
        client: &kube::Client,
        ar: &ApiResource,
        namespaced: bool,
    ) -> Result<&BTreeMap<(String, ObjectKey), LiveObject>, ApiError> {
        let key = (ar.api_version.clone(), ar.kind.clone());
        match self.listed.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                let found = list_labelled(client, ar, namespaced, keys::labels::COMPONENT).await?;
                let by_key = found
                    .into_iter()
                    .map(|o| ((o.component.clone(), o.key.clone()), o))
                    .collect();
                Ok(v.insert(by_key))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: u16, reason: &str, message: &str) -> ApiError {
        ApiError {
            action: "apply Job.batch/ns/migrate".into(),
            cause: Cause::Refused {
                code,
                reason: reason.into(),
                message: message.into(),
            },
        }
    }

    #[test]
    fn immutable_is_the_api_servers_invalid_answer_about_an_immutable_field() {
        // As a real API server words it for a Job whose template changed.
        let job = refused(
            422,
            "Invalid",
            "Job.batch \"migrate\" is invalid: spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable",
        );
        assert!(job.is_immutable());
        assert!(!refused(422, "Invalid", "spec.replicas: Invalid value: -1").is_immutable());
        assert!(!refused(409, "Conflict", "field is immutable").is_immutable());
        assert!(refused(404, "NotFound", "jobs.batch \"migrate\" not found").is_not_found());
    }

    #[test]
    fn errors_read_as_what_was_attempted_then_the_answer() {
        let e = refused(422, "Invalid", "spec.replicas: Invalid value: -1");
        assert_eq!(
            crate::status::describe(&e),
            "failed to apply Job.batch/ns/migrate: spec.replicas: Invalid value: -1 (422 Invalid)"
        );
    }

    #[test]
    fn list_items_take_their_type_from_the_request() {
        let ar = ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("apps", "v1", "Deployment"),
            "deployments",
        );
        // A real API server's list item of a built-in kind: no apiVersion, no kind.
        let item: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"replicas": 1},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let typed = typed_items(&ar, vec![item]);
        assert_eq!(typed[0]["apiVersion"], "apps/v1");
        assert_eq!(typed[0]["kind"], "Deployment");
        assert_eq!(typed[0]["spec"]["replicas"], 1);
    }
}
