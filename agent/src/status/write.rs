//! Reading and writing the status annotations, and the Event of a phase change.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Namespace, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::keys::annotations as keys;
use crate::observe::model::{ComponentHealth, ComponentRecord};

/// The `tidemark.dev/*` annotations of the status namespace (empty if it does not exist).
pub async fn read(
    client: &kube::Client,
    namespace: &str,
) -> Result<BTreeMap<String, String>, kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = api.get_opt(namespace).await?;
    Ok(ns
        .and_then(|n| n.metadata.annotations)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("tidemark.dev/"))
        .collect())
}

/// Writes `next` if it differs from `current` (one merge patch), creating the namespace if
/// needed, and records an Event when the phase changed. Returns whether it wrote.
pub async fn write(
    client: &kube::Client,
    namespace: &str,
    current: &BTreeMap<String, String>,
    next: &BTreeMap<String, String>,
) -> Result<bool, kube::Error> {
    let changed: BTreeMap<&String, &String> = next
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .collect();
    if changed.is_empty() {
        return Ok(false);
    }
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(namespace).await?.is_none() {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &ns).await?;
    }
    let patch = serde_json::json!({"metadata": {"annotations": changed}});
    api.patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;

    let instance = next
        .get(keys::CLUSTER)
        .cloned()
        .unwrap_or_else(|| "tidemark".into());
    let (before, after) = (current.get(keys::PHASE), next.get(keys::PHASE));
    if let Some(phase) = after
        && before != after
    {
        let message = next.get(keys::MESSAGE).cloned().unwrap_or_default();
        record_event(client, namespace, &instance, phase, &message).await;
    }
    // A component whose health changed gets an Event of its own.
    let components = |m: &BTreeMap<String, String>| -> BTreeMap<String, ComponentRecord> {
        m.get(keys::COMPONENTS)
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default()
    };
    let (was, now) = (components(current), components(next));
    for (name, record) in &now {
        if was.get(name).map(|r| r.health) != Some(record.health)
            && record.health != ComponentHealth::Pending
        {
            let message = format!("{} ({})", record.describe(name), record.chart);
            let reason = format!("Component{}", record.health);
            record_event(client, namespace, &instance, &reason, &message).await;
        }
    }
    Ok(true)
}

/// Records an Event on the status namespace. An Event is a courtesy: failing to record
/// one must not fail the pass.
async fn record_event(
    client: &kube::Client,
    namespace: &str,
    instance: &str,
    reason: &str,
    message: &str,
) {
    let now = k8s_openapi::jiff::Timestamp::now();
    let warning = matches!(reason, "Blocked" | "Failed" | "ComponentFailed");
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some("tidemark-".into()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Namespace".into()),
            name: Some(namespace.to_string()),
            ..ObjectReference::default()
        },
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        reporting_component: Some("tidemark".into()),
        reporting_instance: Some(instance.to_string()),
        action: Some("Converge".into()),
        count: Some(1),
        ..Event::default()
    };
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    if let Err(e) = events.create(&PostParams::default(), &event).await {
        tracing::warn!(error = %e, "failed to record an Event");
    }
}
