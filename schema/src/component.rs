//! Components (helm charts rendered and applied by tidemark) and `kind: ComponentSet`,
//! a reusable, named list of components.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::meta::ObjectMeta;

/// One helm chart to render with `helm template` and apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Component {
    /// Component name: unique per cluster, the value of the `tidemark.dev/component` label
    /// and the default helm release name.
    pub name: String,
    /// Where the chart comes from.
    pub chart: ChartRef,
    /// Namespace the release is rendered for; created if missing.
    pub namespace: String,
    /// Helm release name; default the component name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Inline values, merged last (they win over values files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Map<String, serde_json::Value>>,
    /// Values files in the fleet repo, merged in order after the component set's files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// When the component is applied relative to the control plane and node groups.
    #[serde(default)]
    pub phase: ComponentPhase,
    /// Take over fields owned by other field managers on apply (server-side apply `force`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Delete CustomResourceDefinitions the chart no longer renders (or all of the
    /// component's, when the component is removed). Off by default: deleting a CRD deletes
    /// every custom resource of its kind, in the whole cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune_crds: bool,
    /// How long to wait for the component to become healthy. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// A chart kept in the fleet repo (`path`) or in a chart repository (`repository` + `name`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartRef {
    /// Directory of a chart in the fleet repo (holding `Chart.yaml`), read at the same commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// URL of a chart repository (`https://...` or `oci://...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Chart name in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Chart version: required for repository charts; for in-repo charts, if given, must
    /// equal the version in `Chart.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl ChartRef {
    /// What is wrong with the combination of fields, if anything: `(field, message)`.
    pub fn check(&self) -> Option<(&'static str, &'static str)> {
        match (&self.path, &self.repository) {
            (Some(_), Some(_)) => Some(("repository", "give either path or repository, not both")),
            (None, None) => Some((
                "path",
                "give either path (a chart in the fleet repo) or repository",
            )),
            (Some(_), None) if self.name.is_some() => Some((
                "name",
                "name is only for repository charts; an in-repo chart is named by its Chart.yaml",
            )),
            (None, Some(_)) if self.name.is_none() => {
                Some(("name", "a repository chart needs a name"))
            }
            (None, Some(_)) if self.version.is_none() => {
                Some(("version", "a repository chart needs a version"))
            }
            _ => None,
        }
    }
}

/// When a component is applied.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentPhase {
    /// Before the control plane is upgraded (e.g. a CNI that must support the next minor).
    BeforeControlPlane,
    /// Right after each control-plane step.
    AfterControlPlane,
    /// After the node groups have converged (the default).
    #[default]
    AfterNodeGroups,
}

/// `components/<name>.yaml`: a reusable list of components.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentSet {
    /// Always `tidemark.dev/v1alpha1`.
    #[schemars(extend("const" = "tidemark.dev/v1alpha1"))]
    pub api_version: String,
    /// Always `ComponentSet`.
    #[schemars(extend("const" = "ComponentSet"))]
    pub kind: String,
    /// Name, referenced from `Cluster.spec.componentSets`.
    pub metadata: ObjectMeta,
    /// The components.
    pub spec: ComponentSetSpec,
}

/// The body of a `ComponentSet`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentSetSpec {
    /// Components of the set, in order.
    pub components: Vec<Component>,
}
