//! Reads the fidelity corpus from disk, so it lives outside `diff.rs`, which is a pure module
//! (the CI purity check greps it for file I/O).

use super::*;
use serde_json::Value;

/// The corpus recorded from a real kube-apiserver (`../shared/fidelity`): every object
/// tidemark-style writes created (server-side apply and plain creates), compared with
/// what the server answered and with what later reads and lists of it show, as a drift
/// check would, with nothing touched in between. Zero false drift.
#[test]
fn no_false_drift_on_objects_a_real_api_server_stored() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fidelity");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!(
            "the fidelity corpus is missing at {} (CI has ../shared beside the clone)",
            dir.display()
        );
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut compared = 0;
    let mut dropped_by_server = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let Ok(case) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let steps = case["steps"].as_array().cloned().unwrap_or_default();
        for (i, step) in steps.iter().enumerate() {
            let req = &step["request"];
            let resp = &step["response"];
            let method = req["method"].as_str().unwrap_or_default();
            let status = resp["status"].as_u64().unwrap_or(0);
            let path = req["path"].as_str().unwrap_or_default().to_string();
            let ctype = req["headers"]["content-type"].as_str().unwrap_or_default();
            let apply = method == "PATCH"
                && ctype.starts_with("application/apply-patch")
                && req["query"]["fieldManager"] == "tidemark"
                && req["query"].get("dryRun").is_none();
            let create = method == "POST" && ctype == "application/json";
            let applied = &req["body"];
            if !(apply || create)
                || !(200..300).contains(&status)
                || !applied.is_object()
                || applied["kind"] == "Event"
                || resp["body"]["kind"] == "Status"
            {
                continue;
            }
            let stored = &resp["body"];
            let effective = kept_by_server(applied, stored);
            if first_difference(applied, stored).is_some() {
                // A field the server did not keep (a CRD schema pruned it).
                dropped_by_server += 1;
            }
            let name = applied["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let object_path = if create {
                format!("{path}/{name}")
            } else {
                path.clone()
            };
            let at = format!("{} step {i} ({object_path})", file.display());
            assert_eq!(
                first_difference(&effective, stored),
                None,
                "{at}: the answer to the write"
            );
            compared += 1;
            // Later reads with nothing written to the object in between.
            for later in &steps[i + 1..] {
                let r = &later["request"];
                let lpath = r["path"].as_str().unwrap_or_default();
                if r["method"] != "GET" && lpath.starts_with(&object_path) {
                    break; // written again: later reads show that write
                }
                if r["method"] != "GET" || later["response"]["status"] != 200 {
                    continue;
                }
                let body = &later["response"]["body"];
                let mut seen: Vec<Value> = Vec::new();
                if lpath == object_path {
                    seen.push(body.clone());
                } else if r["query"].get("watch").is_none()
                    && let Some(items) = body["items"].as_array()
                {
                    for item in items {
                        let same_name = item["metadata"]["name"] == applied["metadata"]["name"];
                        let same_ns =
                            item["metadata"]["namespace"] == stored["metadata"]["namespace"];
                        if same_name && same_ns && object_path.starts_with(lpath) {
                            // As tidemark reads a list: types from the request.
                            let mut typed = item.clone();
                            typed["apiVersion"] = applied["apiVersion"].clone();
                            typed["kind"] = applied["kind"].clone();
                            seen.push(typed);
                        }
                    }
                }
                for live in seen {
                    assert_eq!(
                        first_difference(&effective, &live),
                        None,
                        "{at}: a later read"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert!(
        compared >= 30,
        "only {compared} comparisons: is the corpus complete?"
    );
    // Without `kept_by_server`, these would be drift on every check.
    assert!(
        dropped_by_server >= 1,
        "the corpus has a field the server prunes"
    );
}
