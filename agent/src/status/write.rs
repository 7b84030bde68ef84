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
