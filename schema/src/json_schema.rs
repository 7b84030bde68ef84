//! JSON Schema of the fleet repo's documents, generated from the types, for editors and
//! for checking manifests with any JSON Schema validator.

use schemars::generate::SchemaSettings;

use crate::cluster::Cluster;
use crate::component::ComponentSet;
use crate::fleet::Fleet;

/// One schema accepting any fleet-repo document (`Fleet`, `Cluster` or `ComponentSet`),
/// each kind under `$defs`.
pub fn fleet_repo_schema() -> serde_json::Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let refs = [
        generator.subschema_for::<Fleet>(),
        generator.subschema_for::<Cluster>(),
        generator.subschema_for::<ComponentSet>(),
    ];
    let defs = generator.take_definitions(true);
    // Dispatch on `kind` so a validator reports the errors of the intended kind, not a
    // best guess among all three.
    let by_kind: Vec<serde_json::Value> = ["Fleet", "Cluster", "ComponentSet"]
        .iter()
        .zip(refs)
        .map(|(kind, schema)| {
            serde_json::json!({
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": schema,
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://tidemark.dev/schemas/v1alpha1/fleet-repo.json",
        "title": "tidemark fleet repository document (tidemark.dev/v1alpha1)",
        "type": "object",
        "required": ["apiVersion", "kind"],
        "properties": {"kind": {"enum": ["Fleet", "Cluster", "ComponentSet"]}},
        "allOf": by_kind,
        "$defs": defs,
    })
}
