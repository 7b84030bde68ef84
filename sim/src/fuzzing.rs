//! Entry point of the fuzz target of the sim's request decoding (`fuzz/`, run with
//! `cargo fuzz`) and of the smoke test replaying its seed corpus. Takes arbitrary bytes
//! and must never panic. Not an API: hidden from the docs.

use std::cell::RefCell;

use serde_json::Value;

use crate::store::{Store, Writer};

thread_local! {
    /// One store per thread: building one per input would dwarf the work under test.
    static STORE: RefCell<Store> = RefCell::new(Store::new(1, 1_000));
}

/// Decodes a request body as the API server does (the first byte picks JSON or YAML, as a
/// content type would), validates it as an object of its kind and creates it in a store.
pub fn request_body(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let decoded = if selector % 2 == 0 {
        serde_json::from_slice::<Value>(body).ok()
    } else {
        crate::yaml::parse(&String::from_utf8_lossy(body)).ok()
    };
    let Some(obj) = decoded.filter(Value::is_object) else {
        return;
    };
    let text = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (kind, api_version) = (text("kind"), text("apiVersion"));
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("", api_version.as_str()));
    STORE.with(|store| {
        let mut store = store.borrow_mut();
        let def = store
            .registry
            .all()
            .iter()
            .find(|d| d.kind == kind && d.group == group && d.version == version)
            .cloned();
        if let Some(def) = def {
            let _ = crate::validation::validate(&def, &obj, None);
            let writer = Writer {
                manager: "fuzz",
                external: true,
                ..Writer::CONTROLLER
            };
            let _ = store.create(&def, obj, writer);
        }
    });
}
