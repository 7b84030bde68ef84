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
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://tidemark.dev/schemas/v1alpha1/fleet-repo.json",
        "title": "tidemark fleet repository document (tidemark.dev/v1alpha1)",
        "oneOf": refs,
        "$defs": defs,
    })
}
