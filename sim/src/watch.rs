//! Watches: a streamed response of `{"type":...,"object":...}` lines for one resource (in one
//! namespace or all), filtered by label and field selectors. Starts from a resourceVersion
//! (replayed from the store's event log; too old -> an `ERROR` event with 410 `Expired`) or
//! with the current objects as `ADDED` (`resourceVersion` unset/0, or `sendInitialEvents`),
//! sends `BOOKMARK`s when allowed, and ends at `timeoutSeconds`, on a dropped-watch fault, on
//! shutdown, or when the client goes away.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::Shared;
use crate::api::resources::selectors;
use crate::api::status::ApiError;
use crate::api::{Body, Req, Target};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{EventType, WatchEvent};

struct Filter {
    def: crate::registry::ResourceDef,
    t_gr: crate::registry::GroupResource,
    ns: Option<String>,
    label: LabelSelector,
    field: FieldSelector,
    api_version: String,
    /// With selectors: the objects the client currently sees as selected.
    seen: Option<HashSet<String>>,
    /// Send each object as a one-row Table (`includeObject` value), as `kubectl get -w` asks.
    table: Option<(crate::registry::ResourceDef, String)>,
}

impl Filter {
    fn in_scope(&self, ev: &WatchEvent) -> bool {
        ev.gr == self.t_gr
            && self.ns.as_ref().is_none_or(|ns| {
                ev.object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    == Some(ns)
            })
    }

    fn selects(&self, obj: &Value) -> bool {
        self.label.matches(obj) && self.field.matches(obj)
    }

    /// The event type to send for `ev`, if any. With selectors, an object that starts matching
    /// is `ADDED` and one that stops matching is `DELETED`, as the real server does.
    fn translate(&mut self, ev: &WatchEvent) -> Option<&'static str> {
        if !self.in_scope(ev) {
            return None;
        }
        let selected = self.selects(&ev.object);
        let Some(seen) = &mut self.seen else {
            return selected.then(|| ev.kind.as_str());
        };
        let key = object_key(&ev.object);
        match (ev.kind, selected, seen.contains(&key)) {
            (EventType::Deleted, _, true) => {
                seen.remove(&key);
                Some("DELETED")
            }
            (EventType::Deleted, _, false) | (_, false, false) => None,
            (_, true, true) => Some(ev.kind.as_str()),
            (_, true, false) => {
                seen.insert(key);
                Some("ADDED")
            }
            (_, false, true) => {
                seen.remove(&key);
                Some("DELETED")
            }
        }
    }

    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        let mut obj = crate::convert::from_storage(&self.def, obj.clone());
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), json!(self.api_version));
        }
        if let Some((def, include)) = &self.table {
            let meta = json!({"resourceVersion": obj.pointer("/metadata/resourceVersion")});
            obj = crate::api::table::render(def, &[obj], meta, include);
        }
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

fn object_key(obj: &Value) -> String {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
    format!("{}/{}", s("/metadata/namespace"), s("/metadata/name"))
}

fn bookmark(api_version: &str, kind: &str, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let mut line = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": meta}})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn gone_line(rv: u64, oldest: u64) -> Bytes {
    let e = ApiError::gone(format!("too old resource version: {rv} ({oldest})"));
    let mut line =
        serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_json()})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Starts a watch and returns the streaming response.
pub(crate) fn serve(
    shared: &Arc<Shared>,
    req: &Req,
    t: &Target,
) -> Result<http::Response<Body>, ApiError> {
    let (label, field) = selectors(req, t)?;
    let table = crate::api::table::wanted(&req.accept).then(|| {
        (
            t.def.clone(),
            req.q("includeObject").unwrap_or("Metadata").to_string(),
        )
    });
    let seen = (!label.is_empty() || !field.is_empty()).then(HashSet::new);
    let mut filter = Filter {
        def: t.def.clone(),
        t_gr: t.def.gr(),
        ns: t.ns.clone(),
        label,
        field,
        api_version: t.def.api_version(),
        seen,
        table,
    };
    let rv_param = req.q("resourceVersion").unwrap_or("0");
    let start_rv: Option<u64> = match rv_param {
        "0" => None,
        s => Some(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
        ),
    };
    let send_initial = req.flag("sendInitialEvents");
    let bookmarks = req.flag("allowWatchBookmarks");
    let timeout = req
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let drop_after = shared.faults.lock().ok().and_then(|f| f.spec.drop_watch);
    let deadline = drop_after.map_or(timeout, |d| d.min(timeout));

    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut first: Vec<Bytes> = Vec::new();
    let (events, last_rv) = {
        let store = shared.lock_store();
        let events = store.subscribe();
        let current = store.resource_version();
        let initial = start_rv.is_none() || send_initial;
        for o in store.list(&t.def.gr(), t.ns.as_deref()) {
            if filter.selects(o) {
                if let Some(seen) = &mut filter.seen {
                    seen.insert(object_key(o));
                }
                if initial {
                    first.push(filter.line("ADDED", o));
                }
            }
        }
        let last = if initial {
            if send_initial {
                first.push(bookmark(&filter.api_version, &t.def.kind, current, true));
            }
            current
        } else {
            let rv = start_rv.unwrap_or(current);
            match store.events_since(rv) {
                Some(evs) => {
                    for ev in &evs {
                        if let Some(kind) = filter.translate(ev) {
                            first.push(filter.line(kind, &ev.object));
                        }
                    }
                    evs.last().map_or(rv.max(current), |e| e.rv.max(current))
                }
                None => {
                    first.push(gone_line(rv, store.compacted()));
                    0
                }
            }
        };
        (events, last)
    };
    let gone = last_rv == 0;
    let kind = t.def.kind.clone();
    tokio::spawn(pump(
        shared.clone(),
        filter,
        events,
        first,
        tx,
        last_rv,
        gone,
        bookmarks,
        deadline,
        kind,
    ));

    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    });
    let mut r = http::Response::new(StreamBody::new(stream).boxed());
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    shared: Arc<Shared>,
    mut filter: Filter,
    mut events: broadcast::Receiver<Arc<WatchEvent>>,
    first: Vec<Bytes>,
    tx: mpsc::Sender<Bytes>,
    mut last_rv: u64,
    gone: bool,
    bookmarks: bool,
    deadline: Duration,
    kind: String,
) {
    for line in first {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    if gone {
        return;
    }
    let mut shutdown = shared.shutdown.clone();
    let end = tokio::time::sleep(deadline);
    tokio::pin!(end);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        let batch: Vec<Arc<WatchEvent>> = tokio::select! {
            _ = &mut end => return,
            _ = shutdown.changed() => return,
            _ = tx.closed() => return,
            _ = tick.tick(), if bookmarks => {
                if tx.send(bookmark(&filter.api_version, &kind, last_rv, false)).await.is_err() {
                    return;
                }
                continue;
            }
            ev = events.recv() => match ev {
                Ok(ev) => vec![ev],
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let (missed, oldest) = {
                        let store = shared.lock_store();
                        (store.events_since(last_rv), store.compacted())
                    };
                    let Some(evs) = missed else {
                        let _ = tx.send(gone_line(last_rv, oldest)).await;
                        return;
                    };
                    evs
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        for ev in batch {
            if ev.rv <= last_rv {
                continue;
            }
            last_rv = ev.rv;
            if let Some(kind) = filter.translate(&ev)
                && tx.send(filter.line(kind, &ev.object)).await.is_err()
            {
                return;
            }
        }
    }
}
