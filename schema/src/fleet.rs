//! `kind: Fleet` (`fleet.yaml`): the waves, the tag pattern that maps a wave to a git tag,
//! and defaults that apply to clusters chosen by a selector.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::freeze::Freeze;
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
    /// Stop every agent of the fleet from starting a new step (components included): a
    /// stop-all switch one commit away. Read from the default branch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Times when `tidemark promote` refuses to move any wave tag (calendar dates or
    /// weekly windows, each in a time zone). Read from the default branch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freezes: Vec<Freeze>,
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
    /// How many of this wave's clusters may be unreachable, `Failed` or `Blocked` when the
    /// next wave is promoted: a count (`1`) or a percentage of the wave's clusters
    /// (`10%`, rounded down). Default 0: every cluster must have converged and soaked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unhealthy: Option<FailureBudget>,
}

/// A wave's failure budget: how many of its clusters may be unhealthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureBudget {
    /// At most this many clusters.
    Count(u32),
    /// At most this percentage of the wave's clusters, rounded down (0 to 100).
    Percent(u8),
}

impl FailureBudget {
    /// How many of `clusters` clusters may be unhealthy.
    pub fn allowed(self, clusters: usize) -> usize {
        match self {
            FailureBudget::Count(n) => usize::try_from(n).unwrap_or(usize::MAX),
            FailureBudget::Percent(p) => clusters * usize::from(p) / 100,
        }
    }
}

impl std::fmt::Display for FailureBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureBudget::Count(n) => write!(f, "{n}"),
            FailureBudget::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for FailureBudget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            format!(
                "`{s}` is not a failure budget (expected a count like 1 or a percentage like 10%)"
            )
        };
        match s.strip_suffix('%') {
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= 100 => Ok(FailureBudget::Percent(p)),
                _ => Err(err()),
            },
            None => s.parse().map(FailureBudget::Count).map_err(|_| err()),
        }
    }
}

impl Serialize for FailureBudget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FailureBudget::Count(n) => s.serialize_u32(*n),
            FailureBudget::Percent(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for FailureBudget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FailureBudget;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a count like 1 or a percentage like \"10%\"")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(FailureBudget::Count)
                    .map_err(|_| E::custom(format!("{v} is too large for a failure budget")))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("a failure budget cannot be negative ({v})")))
                    .and_then(|v| self.visit_u64(v))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for FailureBudget {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FailureBudget".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A count of clusters (1) or a percentage of the wave's clusters (\"10%\", rounded down)",
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^(100|[1-9]?[0-9])%$"}
            ]
        })
    }
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

    /// The wave before `name` in rollout order (`None` for the first, or an unknown wave).
    pub fn previous_wave(&self, name: &str) -> Option<&Wave> {
        let i = self.spec.waves.iter().position(|w| w.name == name)?;
        i.checked_sub(1).and_then(|j| self.spec.waves.get(j))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_budgets_are_counts_or_percentages() {
        let wave = |yaml: &str| serde_yaml::from_str::<Wave>(yaml).map(|w| w.max_unhealthy);
        assert_eq!(
            wave("{name: a, maxUnhealthy: 1}").ok(),
            Some(Some(FailureBudget::Count(1)))
        );
        assert_eq!(
            wave("{name: a, maxUnhealthy: 10%}").ok(),
            Some(Some(FailureBudget::Percent(10)))
        );
        assert_eq!(wave("{name: a}").ok(), Some(None));
        for bad in ["-1", "101%", "ten", "1.5", "%"] {
            let err = wave(&format!("{{name: a, maxUnhealthy: {bad}}}"));
            assert!(err.is_err(), "{bad}");
        }
        assert_eq!(FailureBudget::Percent(10).allowed(5), 0);
        assert_eq!(FailureBudget::Percent(10).allowed(20), 2);
        assert_eq!(FailureBudget::Percent(100).allowed(3), 3);
        assert_eq!(FailureBudget::Count(1).allowed(0), 1);
    }
}
