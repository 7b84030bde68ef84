//! Settle: wait for applied components to become healthy, within bounds.
//!
//! - Every poll lists each workload kind once for all components that wait.
//! - A component waits at most the pass's health wait, and no longer than its `timeout`
//!   since tidemark last changed it; still rolling out after its timeout, it is `Failed`,
//!   naming the object and what its first troubled pod says.
//! - Records that are already `Failed` (the step failed) pass through.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;
use tidemark_schema::resolve::DesiredComponent;

use super::live::{self, ApiError, LiveObject};
use crate::component::health::{self, ObjectHealth};
use crate::keys;
use crate::status::{ComponentHealth, ComponentRecord, describe};

/// A component whose health a pass waits for: its record so far, and since when tidemark
/// waits for it (its apply, or now for a drift correction).
pub struct Settle<'a> {
    /// The component.
    pub component: &'a DesiredComponent,
    /// Its record after the step.
    pub record: ComponentRecord,
    /// When tidemark last changed it.
    pub since: Timestamp,
}

/// How often a waiting pass looks again.
const POLL: Duration = Duration::from_millis(500);

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

/// Waits for `items` (see the module docs) and returns each component's new record.
pub async fn settle(
    client: &kube::Client,
    items: Vec<Settle<'_>>,
    health_wait: Duration,
    now: Timestamp,
) -> Vec<(String, ComponentRecord)> {
    let started = tokio::time::Instant::now();
    let age = |since: Timestamp| {
        now.duration_since(since)
            .unsigned_abs()
            .min(Duration::from_secs(365 * 86_400))
    };
    let budget = |item: &Settle<'_>| {
        health_wait.min(
            item.component
                .timeout
                .as_std()
                .saturating_sub(age(item.since)),
        )
    };
    let mut latest: BTreeMap<String, Result<ObjectHealth, String>> = BTreeMap::new();
    let open: Vec<&Settle<'_>> = items
        .iter()
        .filter(|i| i.record.health != ComponentHealth::Failed)
        .collect();
    while !open.is_empty() {
        match health_by_component(client).await {
            Ok(by_name) => {
                for i in &open {
                    let h = by_name
                        .get(&i.component.name)
                        .cloned()
                        .unwrap_or(ObjectHealth::Healthy);
                    latest.insert(i.component.name.clone(), Ok(h));
                }
            }
            Err(e) => {
                for i in &open {
                    latest.insert(i.component.name.clone(), Err(describe(&e)));
                }
                break;
            }
        }
        let waiting = open.iter().any(|i| {
            matches!(
                latest.get(&i.component.name),
                Some(Ok(ObjectHealth::Progressing(_)))
            ) && started.elapsed() < budget(i)
        });
        if !waiting {
            break;
        }
        tokio::time::sleep(POLL).await;
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
            Some(Ok(ObjectHealth::Healthy)) => {
                record.health = ComponentHealth::Healthy;
                record.message = None;
            }
            Some(Ok(ObjectHealth::Failed(m))) => {
                record.health = ComponentHealth::Failed;
                record.message = Some(m);
            }
            Some(Ok(ObjectHealth::Progressing(m))) => {
                // Name what the pods say, for the one component at a time that waits.
                let m = match component_health(client, &c.name).await {
                    Ok(ObjectHealth::Progressing(detailed) | ObjectHealth::Failed(detailed)) => {
                        detailed
                    }
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

/// Every Deployment, StatefulSet, DaemonSet, Job and CRD matching `selector`, with its
/// health: one list per kind.
async fn workloads(
    client: &kube::Client,
    selector: &str,
) -> Result<Vec<(LiveObject, ObjectHealth)>, ApiError> {
    let mut out = Vec::new();
    for (group, version, kind, plural) in HEALTH_KINDS {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let namespaced = *kind != "CustomResourceDefinition";
        for obj in live::list_labelled(client, &ar, namespaced, selector).await? {
            let h = health::object_health(&obj.body);
            out.push((obj, h));
        }
    }
    Ok(out)
}

/// How bad a health is, for picking the worst.
fn severity(h: &ObjectHealth) -> u8 {
    match h {
        ObjectHealth::Healthy => 0,
        ObjectHealth::Progressing(_) => 1,
        ObjectHealth::Failed(_) => 2,
    }
}

/// The health of component `name`: its worst workload, and for one still rolling out what
/// its first troubled pod says.
async fn component_health(client: &kube::Client, name: &str) -> Result<ObjectHealth, ApiError> {
    let selector = format!("{}={name}", keys::labels::COMPONENT);
    let worst = workloads(client, &selector)
        .await?
        .into_iter()
        .max_by_key(|(_, h)| severity(h));
    Ok(match worst {
        None => ObjectHealth::Healthy,
        Some((obj, ObjectHealth::Progressing(m))) => {
            ObjectHealth::Progressing(with_pod_problem(client, &obj, m).await)
        }
        Some((_, h)) => h,
    })
}

/// The health of every component at once (its worst workload), with one list per
/// workload kind: components without workloads are absent (healthy by existence).
async fn health_by_component(
    client: &kube::Client,
) -> Result<BTreeMap<String, ObjectHealth>, ApiError> {
    let mut worst: BTreeMap<String, ObjectHealth> = BTreeMap::new();
    for (obj, h) in workloads(client, keys::labels::COMPONENT).await? {
        let entry = worst.entry(obj.component).or_insert(ObjectHealth::Healthy);
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
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Pod"), "pods");
    let pods: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let Ok(list) = pods
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
    else {
        return message;
    };
    live::typed_items(&ar, list.items)
        .iter()
        .find_map(health::pod_problem)
        .map(|problem| format!("{message}: {problem}"))
        .unwrap_or(message)
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;
    use tidemark_schema::ComponentPhase;

    use super::*;
    use crate::converge::scripted::{self, on};
    use crate::fixtures::{desired, now, with_component};

    /// A real API server's lists: built-in items carry no apiVersion or kind.
    fn cluster_with_an_unavailable_deployment() -> kube::Client {
        let deployment = json!({
            "metadata": {"name": "web", "namespace": "addons", "generation": 1,
                         "labels": {"tidemark.dev/component": "web"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1,
                       "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
                                      {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]},
        });
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "addons", "labels": {"app": "web"}},
            "status": {"phase": "Running", "containerStatuses": [{"name": "web", "ready": false, "restartCount": 4,
                       "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}}]},
        });
        let list = |kind: &str, items: serde_json::Value| json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "9"}, "items": items});
        let (client, _) = scripted::client(vec![
            on(
                Method::GET,
                "/apis/apps/v1/deployments",
                200,
                list("DeploymentList", json!([deployment])),
            ),
            on(
                Method::GET,
                "/apis/apps/v1/statefulsets",
                200,
                list("StatefulSetList", json!([])),
            ),
            on(
                Method::GET,
                "/apis/apps/v1/daemonsets",
                200,
                list("DaemonSetList", json!([])),
            ),
            on(
                Method::GET,
                "/apis/batch/v1/jobs",
                200,
                list("JobList", json!([])),
            ),
            on(
                Method::GET,
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                200,
                list("CustomResourceDefinitionList", json!([])),
            ),
            on(
                Method::GET,
                "/api/v1/namespaces/addons/pods",
                200,
                list("PodList", json!([pod])),
            ),
        ]);
        client
    }

    fn web(since: Timestamp) -> (DesiredComponent, ComponentRecord, Timestamp) {
        let c = with_component(desired("1.30.4"), "web", ComponentPhase::AfterNodeGroups)
            .components[0]
            .clone();
        let record = ComponentRecord {
            health: ComponentHealth::Progressing,
            ..ComponentRecord::default()
        };
        (c, record, since)
    }

    /// Issue 10: health read list items' missing type fields as "any other kind" and called
    /// every component Healthy. A Deployment with no available replica is Progressing, and
    /// Failed once its timeout has passed, naming what its pod says.
    #[tokio::test]
    async fn a_deployment_without_an_available_replica_is_never_healthy() {
        let client = cluster_with_an_unavailable_deployment();
        let (c, record, _) = web(now());
        let settled = scripted::within(settle(
            &client,
            vec![Settle {
                component: &c,
                record: record.clone(),
                since: now(),
            }],
            Duration::ZERO,
            now(),
        ))
        .await;
        let (name, r) = &settled[0];
        assert_eq!(name, "web");
        assert_eq!(r.health, ComponentHealth::Progressing);
        let message = r.message.clone().unwrap_or_default();
        assert!(
            message.contains("Deployment") && message.contains("CrashLoopBackOff"),
            "{message}"
        );

        // Applied longer ago than its timeout (5m): Failed.
        let long_ago = now() - jiff::SignedDuration::from_secs(600);
        let settled = scripted::within(settle(
            &client,
            vec![Settle {
                component: &c,
                record,
                since: long_ago,
            }],
            Duration::ZERO,
            now(),
        ))
        .await;
        let r = &settled[0].1;
        assert_eq!(r.health, ComponentHealth::Failed);
        let message = r.message.clone().unwrap_or_default();
        assert!(message.starts_with("not healthy within 5m: "), "{message}");
    }
}
