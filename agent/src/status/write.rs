//! Reading and writing the status record on the status Namespace, and its Events.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;

use super::{EventNote, Record};
use crate::bounded;
use crate::keys::{self, annotations, reasons};

/// Longest note of an `events.k8s.io/v1` Event (the API server refuses longer ones).
pub const EVENT_NOTE_LIMIT: usize = 1024;

/// Errors of reading or writing the status record.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The status Namespace could not be read.
    #[error("failed to read the status namespace {namespace}")]
    Read {
        /// The namespace.
        namespace: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The status Namespace could not be written.
    #[error("failed to write the status annotations of namespace {namespace}")]
    Write {
        /// The namespace.
        namespace: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// The status record on Namespace `namespace` (empty if the namespace does not exist).
pub async fn read(client: &kube::Client, namespace: &str) -> Result<Record, Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = api.get_opt(namespace).await.map_err(|source| Error::Read {
        namespace: namespace.to_string(),
        source,
    })?;
    let notes: BTreeMap<String, String> = ns
        .and_then(|n| n.metadata.annotations)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with(annotations::PREFIX))
        .collect();
    Ok(Record::from_annotations(&notes))
}

/// Writes `next` on Namespace `namespace` if its annotations differ from `before`'s:
/// one server-side apply (field manager `tidemark`) of every annotation tidemark owns,
/// which also creates the namespace if needed. Then records the Events between the two.
/// Returns whether it wrote.
pub async fn write(
    client: &kube::Client,
    namespace: &str,
    before: &Record,
    next: &Record,
    events: &Events,
) -> Result<bool, Error> {
    let annotations = next.to_annotations();
    if annotations == before.to_annotations() {
        return Ok(false);
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let body = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "annotations": annotations},
    });
    crate::crash::point("status-write");
    // Forced: these annotations are tidemark's; an earlier agent version (a merge patch)
    // or a person may hold some of them, and the record must be written whole.
    api.patch(
        namespace,
        &PatchParams::apply(keys::FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::Write {
        namespace: namespace.to_string(),
        source,
    })?;
    crate::crash::point("status-written");
    for note in super::events(before, next) {
        events.publish(namespace, &note).await;
    }
    Ok(true)
}

/// Records Events about the status Namespace (`events.k8s.io/v1`; a cluster-scoped object's
/// Events live in namespace `default`, as the API server requires). Keeps the Recorder's
/// series cache between passes.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// Events reported by `instance` (this replica).
    pub fn new(client: kube::Client, instance: &str) -> Self {
        let reporter = Reporter {
            controller: keys::EVENT_REPORTER.into(),
            instance: Some(instance.to_string()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Records `note` about Namespace `namespace`. An Event is a courtesy: failing to record
    /// one must not fail the pass.
    pub async fn publish(&self, namespace: &str, note: &EventNote) {
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Namespace".into()),
            name: Some(namespace.to_string()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.to_string(),
            note: Some(bounded::within(&note.note, EVENT_NOTE_LIMIT)),
            action: reasons::ACTION.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &regarding).await {
            tracing::warn!(error = %super::describe(&e), reason = note.reason, "failed to record an Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::converge::scripted::{self, on};
    use crate::plan::Phase;

    /// The record is written with one server-side apply of tidemark's annotations (field
    /// manager `tidemark`, forced), and not at all when nothing changed; a phase change is
    /// an events.k8s.io Event in `default` (the Namespace is cluster-scoped).
    #[tokio::test]
    async fn writes_once_by_server_side_apply_and_only_on_change() {
        let (client, log) = scripted::client(vec![
            on(
                Method::PATCH,
                "/api/v1/namespaces/tidemark-system",
                200,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tidemark-system"}}),
            ),
            on(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events",
                201,
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"}}),
            ),
        ]);
        let events = Events::new(client.clone(), "replica-1");
        let before = Record {
            paused: true,
            ..Record::default()
        };
        let next = Record {
            phase: Some(Phase::Converged),
            message: Some("converged".into()),
            ..before.clone()
        };
        let written = scripted::within(write(&client, "tidemark-system", &before, &next, &events))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(written);
        let seen = scripted::requests(&log);
        assert_eq!(
            seen.iter().map(scripted::Seen::line).collect::<Vec<_>>(),
            [
                "PATCH /api/v1/namespaces/tidemark-system",
                "POST /apis/events.k8s.io/v1/namespaces/default/events"
            ]
        );
        let apply = &seen[0];
        assert_eq!(apply.content_type, "application/apply-patch+yaml");
        assert!(apply.has_query("fieldManager", "tidemark") && apply.has_query("force", "true"));
        assert_eq!(
            apply.body,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tidemark-system",
                   "annotations": {"tidemark.dev/message": "converged", "tidemark.dev/phase": "Converged"}}}),
            "only tidemark's annotations, never the person's paused veto"
        );
        let event = &seen[1];
        assert_eq!(event.body["reason"], "Converged");
        assert_eq!(event.body["regarding"]["kind"], "Namespace");
        assert_eq!(event.body["reportingController"], "tidemark");

        let again = scripted::within(write(&client, "tidemark-system", &next, &next, &events))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!again);
        assert_eq!(
            scripted::requests(&log).len(),
            2,
            "no request when nothing changed"
        );
    }

    #[tokio::test]
    async fn an_event_note_is_cut_to_what_the_api_server_accepts() {
        let (client, log) = scripted::client(vec![on(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/default/events",
            201,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}}),
        )]);
        let events = Events::new(client, "replica-1");
        let note = EventNote {
            warning: true,
            reason: "Failed",
            note: "é".repeat(1000),
        };
        scripted::within(events.publish("tidemark-system", &note)).await;
        let seen = scripted::requests(&log);
        let sent = seen[0].body["note"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(sent.len() <= EVENT_NOTE_LIMIT, "{}", sent.len());
        assert_eq!(seen[0].body["type"], "Warning");
    }
}
