//! The apiextensions controllers: a new CustomResourceDefinition gets its names accepted and
//! becomes `Established` a moment after it is created (not at once, as on a real server:
//! its resources are not served before), written by the manager `Go-http-client` as the
//! real API server's loopback client is named.

use serde_json::{Value, json};

use super::queue::Queue;
use super::{Ctx, condition, def, keep_transitions, s};
use crate::apply::Scope;
use crate::registry::ResourceDef;
use crate::store::{Store, Writer};

/// The apiextensions API server's own controllers.
const WRITER: Writer<'static> = Writer {
    manager: "Go-http-client",
    ..Writer::CONTROLLER
};

pub(crate) fn reconcile(store: &mut Store, ctx: &mut Ctx, queue: &mut Queue) {
    let Some(d) = def(
        store,
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
    ) else {
        return;
    };
    let gr = d.gr();
    let keys = queue.take(store, &gr, ctx.now, |_, _| {});
    queue.reconcile(store, ctx, &gr, keys, |store, _, crd| {
        establish(store, &d, crd);
    });
}

/// Accepts the names of `crd`, marks it Established and serves its resources.
pub(crate) fn establish(store: &mut Store, d: &ResourceDef, crd: &Value) {
    if crd.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut accepted = serde_json::Map::new();
    for k in [
        "plural",
        "singular",
        "shortNames",
        "kind",
        "listKind",
        "categories",
    ] {
        if let Some(v) = names.get(k) {
            accepted.insert(k.to_string(), v.clone());
        }
    }
    let mut conditions = vec![
        condition("NamesAccepted", true, "NoConflicts", "no conflicts found"),
        condition(
            "Established",
            true,
            "InitialNamesAccepted",
            "the initial names have been accepted",
        ),
    ];
    keep_transitions(crd.pointer("/status/conditions"), &mut conditions);
    let mut status = crd.get("status").cloned().unwrap_or_else(|| json!({}));
    status["conditions"] = json!(conditions);
    status["acceptedNames"] = json!(accepted);
    if crd.get("status") != Some(&status) {
        let mut new = crd.clone();
        new["status"] = status;
        if let Err(e) = store.update(d, new, Scope::Status, WRITER) {
            tracing::debug!(error = %e.message, "crd status write failed");
            return;
        }
    }
    store.registry.establish(s(crd, "/metadata/name"));
}
