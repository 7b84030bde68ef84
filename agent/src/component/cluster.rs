//! The cluster side of components: discovery of kinds, server-side apply, the namespace a
//! render needs, CRDs becoming Established, listing objects by the component label,
//! pruning and health. Every object tidemark applies carries `tidemark.dev/component`;
//! nothing without it is ever deleted.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::discovery::{ApiCapabilities, Scope, verbs};
use serde_json::Value;

use super::health::{self, Health};
use super::manifest::{COMPONENT_LABEL, ObjectKey, RenderedObject};

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "tidemark";

/// Errors talking to the API server about components.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API server does not serve this kind (and no CRD in the render defines it).
    #[error("{0}: the API server does not serve this kind")]
    UnknownKind(String),
    /// A request failed.
    #[error("{what}: {message}")]
    Api {
        /// The object or request.
        what: String,
        /// The API server's answer, or the transport error.
        message: String,
    },
    /// The change touches fields the API server does not let change (a Job's template).
    #[error("{what}: {message}")]
    Immutable {
        /// The object.
        what: String,
        /// The API server's answer.
        message: String,
    },
    /// A CRD did not become Established in time.
    #[error("CustomResourceDefinition {0} did not become Established within {1:?}")]
    NotEstablished(String, Duration),
}

impl ClusterError {
    fn api(what: impl Into<String>, e: &kube::Error) -> Self {
        let message = match e {
            kube::Error::Api(s) => format!("{} ({}: {})", s.message, s.code, s.reason),
            other => other.to_string(),
        };
        if let kube::Error::Api(s) = e
            && s.code == 422
            && s.message.contains("field is immutable")
        {
            return ClusterError::Immutable {
                what: what.into(),
                message,
            };
        }
        ClusterError::Api {
            what: what.into(),
            message,
        }
    }
}

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
    ) -> Result<Option<(ApiResource, bool)>, ClusterError> {
        let key = (group.to_string(), version.to_string(), kind.to_string());
        if let Some(hit) = self.known.get(&key) {
            return Ok(hit.clone());
        }
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let found = match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((ar, caps)) => Some((ar, caps.scope == Scope::Namespaced)),
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(kube::Error::Discovery(_)) => None,
            Err(e) => return Err(ClusterError::api(format!("discovery of {kind}"), &e)),
        };
        self.known.insert(key, found.clone());
        Ok(found)
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
) -> Result<Api<DynamicObject>, ClusterError> {
    let Some((ar, namespaced)) = kinds
        .resolve(client, obj.group(), obj.version(), &obj.kind)
        .await?
    else {
        return Err(ClusterError::UnknownKind(obj.key().to_string()));
    };
    Ok(api_for(
        client,
        &ar,
        obj.namespace.as_deref().filter(|_| namespaced),
    ))
}

/// Server-side applies `obj` (field manager `tidemark`, `force` as configured).
pub async fn apply(
    client: &kube::Client,
    kinds: &mut Kinds,
    obj: &RenderedObject,
    force: bool,
) -> Result<(), ClusterError> {
    let key = obj.key().to_string();
    let api = api_of(client, kinds, obj).await?;
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if force {
        params = params.force();
    }
    api.patch(&obj.name, &params, &Patch::Apply(&obj.body))
        .await
        .map_err(|e| ClusterError::api(format!("apply {key}"), &e))?;
    Ok(())
}

/// Replaces `obj`: deletes it (its dependents are collected in the background), waits
/// until it is gone, then applies it. For Jobs, whose template cannot change: a chart's
/// new Job version is a new Job, as `kubectl replace --force` would make it.
pub async fn replace(
    client: &kube::Client,
    kinds: &mut Kinds,
    obj: &RenderedObject,
    force: bool,
) -> Result<(), ClusterError> {
    let key = obj.key().to_string();
    let api = api_of(client, kinds, obj).await?;
    match api.delete(&obj.name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(ClusterError::api(format!("delete {key}"), &e)),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while api
        .get_opt(&obj.name)
        .await
        .map_err(|e| ClusterError::api(format!("get {key}"), &e))?
        .is_some()
    {
        if tokio::time::Instant::now() >= deadline {
            return Err(ClusterError::Api {
                what: format!("replace {key}"),
                message: "the old object was not gone within 60s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    apply(client, kinds, obj, force).await
}

/// Creates each namespace of `namespaces` that does not exist (unlabelled: a namespace
/// tidemark only needed is never pruned with a component).
pub async fn ensure_namespaces(
    client: &kube::Client,
    namespaces: impl IntoIterator<Item = &str>,
) -> Result<(), ClusterError> {
    let api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        if api
            .get_opt(ns)
            .await
            .map_err(|e| ClusterError::api(format!("namespace {ns}"), &e))?
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
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => tracing::info!(namespace = ns, "created namespace"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(ClusterError::api(format!("create namespace {ns}"), &e)),
        }
    }
    Ok(())
}

/// Waits until the CRD `name` is Established.
pub async fn wait_established(
    client: &kube::Client,
    name: &str,
    limit: Duration,
) -> Result<(), ClusterError> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let crd = api
            .get_opt(name)
            .await
            .map_err(|e| ClusterError::api(format!("CustomResourceDefinition {name}"), &e))?;
        if let Some(crd) = crd {
            let value = serde_json::to_value(&crd).unwrap_or(Value::Null);
            if health::object_health(&value) == Health::Healthy {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ClusterError::NotEstablished(name.to_string(), limit));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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
    /// The whole object.
    pub body: Value,
}

impl LiveObject {
    /// Whether tidemark applied it: it has a server-side apply entry of our field manager
    /// and no controller owns it. Objects that only copied the label (pods of a
    /// workload whose template carries it) are never pruned.
    pub fn applied_by_tidemark(&self) -> bool {
        let ours = self
            .body
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .is_some_and(|fs| {
                fs.iter().any(|f| {
                    f.get("manager").and_then(Value::as_str) == Some(FIELD_MANAGER)
                        && f.get("operation").and_then(Value::as_str) == Some("Apply")
                })
            });
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
}

/// Lists every object of resource `ar` carrying the component label (any value).
pub async fn list_labelled(
    client: &kube::Client,
    ar: &ApiResource,
    namespaced: bool,
    selector: &str,
) -> Result<Vec<LiveObject>, ClusterError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| ClusterError::api(format!("list {}", ar.plural), &e))?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|o| {
            let component = o.metadata.labels.as_ref()?.get(COMPONENT_LABEL)?.clone();
            let key = ObjectKey {
                group: ar.group.clone(),
                kind: ar.kind.clone(),
                namespace: if namespaced {
                    o.metadata.namespace.clone()
                } else {
                    None
                },
                name: o.metadata.name.clone()?,
            };
            Some(LiveObject {
                key,
                component,
                resource: ar.clone(),
                namespaced,
                body: serde_json::to_value(&o).ok()?,
            })
        })
        .collect())
}

/// Every object of every served kind that carries the component label, found with
/// discovery: one list per listable, deletable resource. Used to prune.
pub async fn sweep(client: &kube::Client) -> Result<Vec<LiveObject>, ClusterError> {
    let discovery = kube::Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| ClusterError::api("discovery", &e))?;
    let mut resources: Vec<(ApiResource, ApiCapabilities)> = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            // Events carry no labels of ours; pods and replica sets are owned by their
            // workloads (and filtered below anyway): skip what cannot be ours cheaply.
            if ar.plural == "events"
                || !caps.supports_operation(verbs::LIST)
                || !caps.supports_operation(verbs::DELETE)
            {
                continue;
            }
            resources.push((ar, caps));
        }
    }
    let mut out = Vec::new();
    for (ar, caps) in resources {
        let namespaced = caps.scope == Scope::Namespaced;
        match list_labelled(client, &ar, namespaced, COMPONENT_LABEL).await {
            Ok(found) => out.extend(found),
            // A resource that refuses a list (aggregated API down) cannot be swept now;
            // what it holds is pruned on a later pass.
            Err(e) => tracing::warn!(resource = %ar.plural, error = %e, "cannot list for prune"),
        }
    }
    Ok(out)
}

/// Deletes `obj` (foreground: its dependents go with it). Gone already is fine.
pub async fn delete(client: &kube::Client, obj: &LiveObject) -> Result<(), ClusterError> {
    let api = api_for(
        client,
        &obj.resource,
        obj.key.namespace.as_deref().filter(|_| obj.namespaced),
    );
    match api.delete(&obj.key.name, &DeleteParams::foreground()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(ClusterError::api(format!("delete {}", obj.key), &e)),
    }
}

/// The kinds whose health is more than existence.
const HEALTH_KINDS: &[(&str, &str, &str, &str)] = &[
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("batch", "v1", "Job", "jobs"),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
    ),
];

/// Every Deployment, StatefulSet, DaemonSet, Job and CRD matching `selector`, with its
/// health: one list per kind.
async fn workloads(
    client: &kube::Client,
    selector: &str,
) -> Result<Vec<(LiveObject, Health)>, ClusterError> {
    let mut out = Vec::new();
    for (group, version, kind, plural) in HEALTH_KINDS {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let namespaced = *kind != "CustomResourceDefinition";
        for obj in list_labelled(client, &ar, namespaced, selector).await? {
            let h = health::object_health(&obj.body);
            out.push((obj, h));
        }
    }
    Ok(out)
}

/// How bad a health is, for picking the worst.
fn severity(h: &Health) -> u8 {
    match h {
        Health::Healthy => 0,
        Health::Progressing(_) => 1,
        Health::Failed(_) => 2,
    }
}

/// The health of component `name`: its worst workload, and for one still rolling out what
/// its first troubled pod says.
pub async fn component_health(client: &kube::Client, name: &str) -> Result<Health, ClusterError> {
    let selector = format!("{COMPONENT_LABEL}={name}");
    let worst = workloads(client, &selector)
        .await?
        .into_iter()
        .max_by_key(|(_, h)| severity(h));
    Ok(match worst {
        None => Health::Healthy,
        Some((obj, Health::Progressing(m))) => {
            Health::Progressing(with_pod_problem(client, &obj, m).await)
        }
        Some((_, h)) => h,
    })
}

/// The health of every component at once (its worst workload), with one list per
/// workload kind: components without workloads are absent (healthy by existence).
pub async fn health_by_component(
    client: &kube::Client,
) -> Result<BTreeMap<String, Health>, ClusterError> {
    let mut worst: BTreeMap<String, Health> = BTreeMap::new();
    for (obj, h) in workloads(client, COMPONENT_LABEL).await? {
        let entry = worst.entry(obj.component).or_insert(Health::Healthy);
        if severity(&h) > severity(entry) {
            *entry = h;
        }
    }
    Ok(worst)
}

/// `message`, followed by what the first troubled pod of workload `obj` says, if any.
async fn with_pod_problem(client: &kube::Client, obj: &LiveObject, message: String) -> String {
    let Some(ns) = obj.key.namespace.as_deref() else {
        return message;
    };
    let Some(labels) = obj
        .body
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
    else {
        return message;
    };
    let selector: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
        .collect();
    let pods: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Pod"), "pods"),
    );
    let Ok(list) = pods
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
    else {
        return message;
    };
    list.items
        .iter()
        .filter_map(|p| health::pod_problem(&serde_json::to_value(p).ok()?))
        .next()
        .map(|problem| format!("{message}: {problem}"))
        .unwrap_or(message)
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
    ) -> Result<&BTreeMap<(String, ObjectKey), LiveObject>, ClusterError> {
        let key = (ar.api_version.clone(), ar.kind.clone());
        match self.listed.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                let found = list_labelled(client, ar, namespaced, COMPONENT_LABEL).await?;
                let by_key = found
                    .into_iter()
                    .map(|o| ((o.component.clone(), o.key.clone()), o))
                    .collect();
                Ok(v.insert(by_key))
            }
        }
    }
}
