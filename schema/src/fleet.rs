//! `kind: Fleet` (`fleet.yaml`): the waves, the tag pattern that maps a wave to a git tag,
//! and defaults that apply to clusters chosen by a selector.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::meta::ObjectMeta;
use crate::selector::LabelSelector;
use crate::window::MaintenanceWindow;

/// The default tag pattern: wave `canary` follows tag `wave/canary`.
pub const DEFAULT_TAG_PATTERN: &str = "wave/{wave}";

/// The placeholder in a tag pattern that stands for the wave name.
pub const WAVE_PLACEHOLDER: &str = "{wave}";

/// `fleet.yaml`, one per repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fleet {
    /// Always `tidemark.dev/v1alpha1`.
    #[schemars(extend("const" = "tidemark.dev/v1alpha1"))]
    pub api_version: String,
    /// Always `Fleet`.
    #[schemars(extend("const" = "Fleet"))]
    pub kind: String,
    /// Name of the fleet.
    pub metadata: ObjectMeta,
    /// Waves and defaults.
    pub spec: FleetSpec,
}

/// The body of a `Fleet`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetSpec {
    /// Waves in rollout order: `tidemark promote` moves them one after another.
    pub waves: Vec<Wave>,
    /// Git tag of a wave; `{wave}` is replaced by the wave name. Default `wave/{wave}`.
    #[serde(default = "default_tag_pattern")]
    pub tag_pattern: String,
    /// Defaults for clusters matched by a selector. Every matching entry applies in order
    /// (a later one overrides an earlier one); fields set in the cluster manifest win.
    /// Read from the same commit as the cluster's manifest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub defaults: Vec<ClusterDefaults>,
    /// Patch releases to land on when a control plane passes through a minor on its way
    /// to a later one (`1.28` -> `1.30` goes through `1.29`: which 1.29?). Providers that
    /// need an exact version (Cluster API) use the highest listed patch of that minor.
    /// Read from the same commit as the cluster's manifest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kubernetes_versions: Vec<crate::version::KubeVersion>,
}

fn default_tag_pattern() -> String {
    DEFAULT_TAG_PATTERN.to_string()
}

/// One wave of the rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Wave {
    /// Wave name, used as the value of the `tidemark.dev/wave` label and in the tag.
    pub name: String,
    /// How long the wave must stay converged and healthy before the next may be promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<Duration>,
    /// What the wave is for, shown by `tidemark status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Defaults for the clusters a selector matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterDefaults {
    /// Which clusters these defaults apply to (string or structured selector).
    #[schemars(with = "SelectorSchema")]
    pub clusters: LabelSelector,
    /// Maintenance window for clusters that declare none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,
    /// `maxUnavailable` for node groups that declare none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
    /// `drainTimeout` for node groups that declare none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<Duration>,
}

/// JSON Schema of a selector field: the string form or the structured form.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum SelectorSchema {
    /// `env=prod,region in (eu,us),!legacy`
    Text(String),
    /// `matchLabels` / `matchExpressions`
    Structured(LabelSelector),
}

impl Fleet {
    /// The tag of `wave` under this fleet's pattern.
    pub fn wave_tag(&self, wave: &str) -> String {
        self.spec.tag_pattern.replace(WAVE_PLACEHOLDER, wave)
    }

    /// The declared wave called `name`.
    pub fn wave(&self, name: &str) -> Option<&Wave> {
        self.spec.waves.iter().find(|w| w.name == name)
    }
}
