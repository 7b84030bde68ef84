//! Versions of one resource: objects are stored in one shape (the storage version of a CRD,
//! core Events for both Event APIs) and shown in the shape of the version a request
//! addresses. Every path that reads or writes the store through a [`ResourceDef`] goes
//! through [`to_storage`] and [`from_storage`] (requests, watches, server-side apply, the
//! store's updates), so a request at any served version sees and writes the same object.
//!
//! - Events: `events.k8s.io/v1` Events are core Events renamed (`events`).
//! - CRDs with `conversion.strategy: None`: only `apiVersion` changes, as on a real server.
//! - CRDs with a `Webhook` strategy: the sim serves Cluster API's conversion webhooks in
//!   process (`controllers::capi::convert`: `v1beta1` <-> `v1beta2`, the fields that moved).
//!   Any other webhook cannot be called: a request at a version other than the storage
//!   version fails with 500, as when a real server cannot reach the webhook ([`check`]).

use serde_json::{Value, json};

use crate::api::status::ApiError;
use crate::registry::{ConversionStrategy, ResourceDef};

/// An object of `def` (in the shape of `def`'s version) as stored.
pub(crate) fn to_storage(def: &ResourceDef, obj: Value) -> Value {
    if crate::events::is_events_api(def) {
        return crate::events::to_storage(def, obj);
    }
    let Some(c) = &def.conversion else {
        return obj;
    };
    let mut obj = obj;
    if c.storage != def.version && c.strategy == ConversionStrategy::ClusterApi {
        crate::controllers::capi::convert::convert(&def.kind, &mut obj, &def.version, &c.storage);
    }
    set_api_version(&mut obj, &def.group, &c.storage);
    obj
}

/// A stored object in the shape of `def`'s version.
pub(crate) fn from_storage(def: &ResourceDef, obj: Value) -> Value {
    if crate::events::is_events_api(def) {
        return crate::events::from_storage(def, obj);
    }
    let Some(c) = &def.conversion else {
        return obj;
    };
    let mut obj = obj;
    if c.storage != def.version && c.strategy == ConversionStrategy::ClusterApi {
        crate::controllers::capi::convert::convert(&def.kind, &mut obj, &c.storage, &def.version);
    }
    set_api_version(&mut obj, &def.group, &def.version);
    obj
}

fn set_api_version(obj: &mut Value, group: &str, version: &str) {
    if let Some(m) = obj.as_object_mut()
        && m.contains_key("apiVersion")
    {
        m.insert("apiVersion".into(), json!(format!("{group}/{version}")));
    }
}

/// Whether requests at `def`'s version can be served: not when objects would need a
/// conversion webhook the sim cannot call (500, as the real server answers then).
pub(crate) fn check(def: &ResourceDef) -> Result<(), ApiError> {
    let Some(c) = &def.conversion else {
        return Ok(());
    };
    match &c.strategy {
        ConversionStrategy::Unreachable { service } if c.storage != def.version => {
            let name = service.rsplit('/').next().unwrap_or(service);
            let ns = service.split('/').next().unwrap_or_default();
            Err(ApiError::internal(format!(
                "conversion webhook for {}/{}, Kind={} failed: Post \"https://{name}.{ns}.svc:443/convert?timeout=30s\": service \"{name}\" not found",
                def.group, c.storage, def.kind
            )))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn crd(conversion: Value) -> Value {
        json!({
            "spec": {
                "group": "example.com", "scope": "Namespaced",
                "names": {"kind": "Widget", "plural": "widgets"},
                "versions": [
                    {"name": "v1", "served": true, "storage": true},
                    {"name": "v1beta1", "served": true, "storage": false},
                ],
                "conversion": conversion,
            }
        })
    }

    #[test]
    fn none_changes_the_api_version_only_and_an_unknown_webhook_cannot_be_reached() {
        let mut r = Registry::builtin();
        let ok = r.set_crd("widgets.example.com", &crd(json!({"strategy": "None"})));
        assert!(ok.is_ok(), "{ok:?}");
        let old = r.find("example.com", "v1beta1", "widgets").cloned();
        let old = old.unwrap_or_else(|| panic!("v1beta1 served"));
        let w = json!({"apiVersion": "example.com/v1beta1", "kind": "Widget", "spec": {"a": 1}});
        let stored = to_storage(&old, w.clone());
        assert_eq!(stored["apiVersion"], "example.com/v1");
        assert_eq!(from_storage(&old, stored), w);
        assert!(check(&old).is_ok());

        let hook = json!({"strategy": "Webhook", "webhook": {"clientConfig": {"service": {"namespace": "ns", "name": "svc"}}}});
        let ok = r.set_crd("widgets.example.com", &crd(hook));
        assert!(ok.is_ok(), "{ok:?}");
        let old = r.find("example.com", "v1beta1", "widgets").cloned();
        let old = old.unwrap_or_else(|| panic!("v1beta1 served"));
        let e = check(&old).err().map(|e| e.message).unwrap_or_default();
        assert_eq!(
            e,
            "conversion webhook for example.com/v1, Kind=Widget failed: Post \"https://svc.ns.svc:443/convert?timeout=30s\": service \"svc\" not found"
        );
        let new = r.find("example.com", "v1", "widgets").cloned();
        assert!(new.is_some_and(|d| check(&d).is_ok()));
    }
}
