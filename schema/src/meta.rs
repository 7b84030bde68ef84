//! The header every fleet-repo document shares: `apiVersion`, `kind`, `metadata`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only API version of fleet-repo documents so far.
pub const API_VERSION: &str = "tidemark.dev/v1alpha1";

/// The label on a `Cluster` that names its wave.
pub const WAVE_LABEL: &str = "tidemark.dev/wave";

/// `metadata` of a fleet-repo document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Name, unique among documents of the same kind: a DNS label
    /// (lower-case letters, digits and `-`, at most 63 characters).
    pub name: String,
    /// Labels, matched by identity selectors; `tidemark.dev/wave` names a cluster's wave.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form notes for people; tidemark does not read them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Whether `name` is a DNS-1123 label: what Kubernetes accepts as a name in most places.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("prod-eu-1"));
        assert!(!is_dns_label("Prod"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
