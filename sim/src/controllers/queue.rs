//! Work queues: which objects a controller reconciles on a tick. As a Kubernetes controller
//! works from its informer's changes rather than from a full list, a tick reconciles only
//! the objects that changed since the controller last looked (read from the store's event
//! log, the one watches replay from), the objects those changes concern (a pod's owner, the
//! PodDisruptionBudgets of its namespace, ...) and the objects whose timer is due. A tick with
//! no change and no timer due reconciles nothing, however many objects there are.
//!
//! - The first look reconciles every object, and so does a look after the event log has
//!   dropped changes the controller had not seen yet (more changes than the watch window
//!   between two looks).
//! - A look reads the changes up to the resourceVersion at its start: the controller's own
//!   writes during the look are seen on its next look, so it reconciles those objects once
//!   more (a pod it scheduled starts its start timer then, a status it wrote is checked
//!   against its owner's), as when every object was reconciled on every tick.
//! - A reconcile that waits for time asks to be woken ([`Ctx::wake_at`]); a failed write asks
//!   to be retried on the next tick ([`Ctx::requeue`]).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use serde_json::Value;

use super::{Ctx, s};
use crate::registry::GroupResource;
use crate::store::{Store, WatchEvent};

/// An object's namespace (empty for cluster-scoped objects) and name, as the store keys it.
pub(crate) type Key = (String, String);

/// Objects to reconcile, in the store's order (namespace, then name).
pub(crate) type Keys = BTreeSet<Key>;

pub(crate) fn key_of(obj: &Value) -> Key {
    (
        s(obj, "/metadata/namespace").to_string(),
        s(obj, "/metadata/name").to_string(),
    )
}

/// What one controller remembers between ticks.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// The store's resourceVersion up to which changes have been seen; `None` before the
    /// first look.
    seen: Option<u64>,
    /// Objects to reconcile again once an instant has come (a timer of theirs runs out, or a
    /// write is to be retried).
    due: HashMap<Key, Instant>,
}

impl Queue {
    /// The objects of `gr` to reconcile now: those whose timer is due, and those changed
    /// since the last look plus those `related` adds for a change to another resource — or
    /// every object of `gr` when the changes are not known (see the module docs).
    pub fn take(
        &mut self,
        store: &Store,
        gr: &GroupResource,
        now: Instant,
        mut related: impl FnMut(&WatchEvent, &mut Keys),
    ) -> Keys {
        let mut keys: Keys = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            self.due.remove(k);
        }
        let since = self.seen.replace(store.resource_version());
        match since.and_then(|rv| store.events_since(rv)) {
            Some(events) => {
                for ev in &events {
                    if ev.gr == *gr {
                        keys.insert(key_of(&ev.object));
                    } else {
                        related(ev, &mut keys);
                    }
                }
            }
            None => keys.extend(store.list(gr, None).map(key_of)),
        }
        keys
    }

    /// Reconciles each of `keys` that is (still) an object of `gr`, in order, with
    /// `reconcile`, which gets a copy of it; queues it again when the reconcile asked to be
    /// woken.
    pub fn reconcile(
        &mut self,
        store: &mut Store,
        ctx: &mut Ctx,
        gr: &GroupResource,
        keys: Keys,
        mut reconcile: impl FnMut(&mut Store, &mut Ctx, &Value),
    ) {
        for key in keys {
            let Some(obj) = store.get(gr, &key.0, &key.1).cloned() else {
                self.due.remove(&key);
                continue;
            };
            ctx.wake = None;
            reconcile(store, ctx, &obj);
            match ctx.wake.take() {
                Some(at) => self.due.insert(key, at),
                None => self.due.remove(&key),
            };
        }
    }
}

/// The uids of the owners `obj` names (of its controller only, with `controller_only`).
pub(crate) fn owner_uids(obj: &Value, controller_only: bool) -> impl Iterator<Item = &str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |r| {
            !controller_only || r.get("controller").and_then(Value::as_bool) == Some(true)
        })
        .filter_map(|r| r.get("uid").and_then(Value::as_str))
}

/// Adds to `keys` the owners of `dependent` among the objects of `gr` in its namespace
/// (matched by uid, as `ownerReferences` are). A dependent that names no owner may just have
/// been released by one: then every object of `gr` in its namespace looks again.
pub(crate) fn add_owners(
    store: &Store,
    gr: &GroupResource,
    dependent: &Value,
    controller_only: bool,
    keys: &mut Keys,
) {
    let ns = s(dependent, "/metadata/namespace");
    let uids: Vec<&str> = owner_uids(dependent, controller_only).collect();
    keys.extend(
        store
            .list(gr, Some(ns))
            .filter(|o| uids.is_empty() || uids.contains(&s(o, "/metadata/uid")))
            .map(key_of),
    );
}

/// Adds to `keys` every object of `gr` in `ns`.
pub(crate) fn add_namespace(store: &Store, gr: &GroupResource, ns: &str, keys: &mut Keys) {
    keys.extend(store.list(gr, Some(ns)).map(key_of));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::store::Writer;
    use crate::{Shared, SimConfig, Version, api, faults};

    fn shared(store: Store) -> Shared {
        Shared {
            store: Mutex::new(store),
            faults: Mutex::new(faults::Faults::new(Default::default(), 1)),
            config: SimConfig::default(),
            control_plane: Mutex::new(Version::parse("1.28.9").unwrap()),
            requests: Mutex::new(api::requests::Counters::default()),
            shutdown: tokio::sync::watch::channel(false).1,
            ca_pem: String::new(),
            address: String::new(),
            capi: None,
            management: Default::default(),
            replaced_nodes: Mutex::default(),
            deprecated: Mutex::default(),
        }
    }

    fn store_with_configmaps(log_cap: usize, names: &[&str]) -> Store {
        let mut store = Store::new(1, log_cap);
        let ns = store
            .registry
            .find("", "v1", "namespaces")
            .cloned()
            .unwrap();
        let ns_obj = json!({"metadata": {"name": "default"}});
        store.create(&ns, ns_obj, Writer::CONTROLLER).unwrap();
        for name in names {
            put(&mut store, name, "1");
        }
        store
    }

    /// Creates or changes ConfigMap `default/name`.
    fn put(store: &mut Store, name: &str, data: &str) {
        let def = store
            .registry
            .find("", "v1", "configmaps")
            .cloned()
            .unwrap();
        let obj = json!({"metadata": {"name": name, "namespace": "default"}, "data": {"v": data}});
        if store.get(&def.gr(), "default", name).is_some() {
            let scope = crate::apply::Scope::Main { has_status: false };
            store.update(&def, obj, scope, Writer::CONTROLLER).unwrap();
        } else {
            store.create(&def, obj, Writer::CONTROLLER).unwrap();
        }
    }

    fn names(keys: &Keys) -> Vec<&str> {
        keys.iter().map(|(_, n)| n.as_str()).collect()
    }

    fn gr(plural: &str) -> GroupResource {
        GroupResource {
            group: String::new(),
            plural: plural.into(),
        }
    }

    #[test]
    fn a_look_names_what_changed_since_the_last_what_it_concerns_and_what_is_due() {
        let shared = shared(store_with_configmaps(100, &["a", "b", "c"]));
        let mut store = shared.lock_store();
        let (cms, namespaces) = (gr("configmaps"), gr("namespaces"));
        let now = Instant::now();
        let mut q = Queue::default();
        let nothing = |_: &WatchEvent, _: &mut Keys| {};

        let first = q.take(&store, &cms, now, nothing);
        assert_eq!(names(&first), ["a", "b", "c"], "the first look sees all");
        assert!(q.take(&store, &cms, now, nothing).is_empty(), "nothing new");

        put(&mut store, "b", "1");
        assert!(
            q.take(&store, &cms, now, nothing).is_empty(),
            "a no-op write changes nothing"
        );
        put(&mut store, "b", "2");
        assert_eq!(names(&q.take(&store, &cms, now, nothing)), ["b"]);

        // A change to another resource concerns what `related` says.
        let ns = store
            .registry
            .find("", "v1", "namespaces")
            .cloned()
            .unwrap();
        let other = json!({"metadata": {"name": "other"}});
        store.create(&ns, other, Writer::CONTROLLER).unwrap();
        let keys = q.take(&store, &cms, now, |ev, keys| {
            if ev.gr == namespaces {
                keys.insert(("default".into(), "c".into()));
            }
        });
        assert_eq!(names(&keys), ["c"]);

        // A reconcile that waits is looked at again when its time has come, and only then;
        // an object that is gone is dropped.
        let mut timers = HashMap::new();
        let mut reported = HashMap::new();
        let mut ctx = Ctx {
            shared: &shared,
            now,
            timers: &mut timers,
            reported: &mut reported,
            wake: None,
        };
        let keys: Keys = [("default", "a"), ("default", "gone")]
            .into_iter()
            .map(|(ns, n)| (ns.to_string(), n.to_string()))
            .collect();
        let mut seen = Vec::new();
        q.reconcile(&mut store, &mut ctx, &cms, keys, |_, ctx, obj| {
            seen.push(s(obj, "/metadata/name").to_string());
            ctx.wake_at(now + Duration::from_secs(2));
            ctx.wake_at(now + Duration::from_secs(1));
        });
        assert_eq!(seen, ["a"]);
        assert!(q.take(&store, &cms, now, nothing).is_empty());
        let later = now + Duration::from_secs(1);
        assert_eq!(names(&q.take(&store, &cms, later, nothing)), ["a"]);
        assert!(
            q.take(&store, &cms, later, nothing).is_empty(),
            "taken once"
        );
    }

    #[test]
    fn changes_the_event_log_no_longer_has_mean_looking_at_everything() {
        let mut store = store_with_configmaps(16, &["a", "b"]);
        let cms = gr("configmaps");
        let now = Instant::now();
        let mut q = Queue::default();
        let nothing = |_: &WatchEvent, _: &mut Keys| {};
        q.take(&store, &cms, now, nothing);
        for i in 0..20 {
            put(&mut store, "b", &i.to_string());
        }
        assert_eq!(names(&q.take(&store, &cms, now, nothing)), ["a", "b"]);
    }
}
