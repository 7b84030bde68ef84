//! Entry points of the fuzz targets (`fuzz/`, run with `cargo fuzz`) and of the smoke test
//! that replays their seed corpora on every test run. Each takes arbitrary bytes and must
//! never panic, whatever they hold. Not an API: hidden from the docs.

use crate::component::{manifest, values};

/// Splits and reads rendered manifests (`helm template` output) as the agent does.
pub fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(objects) = manifest::parse(&text) {
        for o in &objects {
            let _ = (o.key(), manifest::is_crd(o));
        }
        let _ = manifest::prepare(objects, "fuzz", "default", |_| None);
    }
}

/// Reads values files (separated by a NUL byte) and merges them in order.
pub fn values(data: &[u8]) {
    let layers: Vec<values::Values> = data
        .split(|b| *b == 0)
        .filter_map(|part| {
            values::parse_values_file("values.yaml", &String::from_utf8_lossy(part)).ok()
        })
        .collect();
    let merged = values::merge(layers);
    let _ = values::canonical_json(&serde_json::Value::Object(merged));
}

/// Checks a host key against a known_hosts file: the file is the input up to the last line,
/// which names the host; the key offered is a fixed ed25519 key.
pub fn known_hosts(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (file, host) = text.rsplit_once('\n').unwrap_or((&text, "example.com"));
    let key = [0u8, 0, 0, 11]
        .iter()
        .copied()
        .chain(*b"ssh-ed25519")
        .chain([0, 0, 0, 32])
        .chain([7u8; 32])
        .collect::<Vec<u8>>();
    let _ = crate::source::host_key_status("known_hosts", file, host.trim(), &key);
}

/// Parses an allowed-signers file.
pub fn allowed_signers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::trust::allowed_signers::AllowedSigners::parse(
        "allowed_signers",
        &text,
        &jiff::tz::TimeZone::UTC,
    );
}
