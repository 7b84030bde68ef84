//! Gathering the facts of the pre-flight checks (`plan::preflight` judges them), only when
//! the step they guard is the next one the planner would take:
//!
//! - before a control-plane hop to M: the API server's `/metrics` series
//!   `apiserver_requested_deprecated_apis`, and the desired commit's components rendered
//!   for M (`--kube-version` M, `--api-versions` what the cluster serves now less what M
//!   removes); renders are kept by inputs and version, so a hop held for many passes
//!   renders once;
//! - before a node-group rollout: the PodDisruptionBudgets, the pods they select and the
//!   node groups those pods run on.
//!
//! Reads only. Also owns the agent's metric `tidemark_preflight_findings{check}`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tidemark_schema::{KubeVersion, LabelSelector};

use crate::apis::{self, RemovedApis};
use crate::converge::render::RenderCapabilities;
use crate::converge::{Scratch, Target};
use crate::desired::Desired;
use crate::observe::model::{
    DeprecatedRequest, DisruptionBudget, Observed, Preflight as Facts, RenderedApi,
};
use crate::plan::{Finding, PreflightCheck, Step};
use crate::status::describe;

/// The metric family of the API server that names deprecated APIs in use.
pub const DEPRECATED_METRIC: &str = "apiserver_requested_deprecated_apis";

/// Renders kept at most (a hop renders each component once; old versions are dropped).
const KEPT_RENDERS: usize = 256;

/// Labels of `tidemark_preflight_findings`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabel {
    /// The check (`deprecated-api-requests`, `removed-api-renders`, `pod-disruption-budgets`).
    pub check: String,
}

/// Gathers pre-flight facts; lives as long as the agent.
#[derive(Default)]
pub struct Preflight {
    renders: Mutex<HashMap<String, Arc<Vec<RenderedApi>>>>,
    findings: Family<CheckLabel, Gauge>,
}

impl Preflight {
    /// Registers `tidemark_preflight_findings{check}` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "preflight_findings",
            "Findings of the pre-flight checks holding the next control-plane hop or node-group rollout, by check",
            self.findings.clone(),
        );
    }

    /// Sets the metric from the findings of a pass (none: every check at 0).
    pub fn record(&self, found: &[Finding]) {
        for check in PreflightCheck::ALL {
            let n = found.iter().filter(|f| f.check == check).count();
            self.findings
                .get_or_create(&CheckLabel {
                    check: check.as_str().to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The findings currently recorded for `check` (for tests and `tidemark plan`).
    pub fn recorded(&self, check: PreflightCheck) -> i64 {
        self.findings
            .get_or_create(&CheckLabel {
                check: check.as_str().to_string(),
            })
            .get()
    }

    /// The facts `next` is judged by.
    pub async fn gather(
        &self,
        target: &Target<'_>,
        desired: &Desired,
        observed: &Observed,
        next: &Step,
    ) -> Facts {
        match next {
            Step::UpgradeControlPlane { to, .. } => Facts {
                hop: Some(*to),
                deprecated_requests: Some(deprecated_requests(target.client).await),
                rendered_for_hop: Some(self.rendered_for(target, desired, *to).await),
                disruption_budgets: None,
            },
            Step::UpgradeNodeGroup { group, .. }
                if !observed
                    .node_groups
                    .get(group)
                    .is_some_and(|g| g.is_rolling()) =>
            {
                Facts {
                    disruption_budgets: Some(
                        disruption_budgets(target.client, &observed.node_group_of)
                            .await
                            .map_err(|e| describe(&e)),
                    ),
                    ..Facts::default()
                }
            }
            _ => Facts::default(),
        }
    }

    /// What the components of `desired` render for `to`.
    async fn rendered_for(
        &self,
        target: &Target<'_>,
        desired: &Desired,
        to: KubeVersion,
    ) -> Result<Vec<RenderedApi>, String> {
        // Only its discovery is used: no records, no prune scan.
        let mut scratch = Scratch::new(
            desired.state.components.iter().map(|c| c.name.clone()),
            &BTreeMap::new(),
            false,
        );
        let now = scratch
            .render_capabilities(target.client, target.capabilities)
            .await
            .map_err(|e| describe(&e))?;
        let capabilities = for_hop(&now, to);
        let caps_key = format!("{to}|{}", capabilities.api_versions.join(","));
        let mut out = Vec::new();
        for c in &desired.state.components {
            let inputs = match desired.inputs.get(&c.name) {
                Some(Ok(i)) => i,
                // The component step reports unreadable inputs; nothing to judge here.
                _ => continue,
            };
            let key = format!("{}|{caps_key}", inputs.digest);
            let kept = self.renders.lock().ok().and_then(|k| k.get(&key).cloned());
            let apis = match kept {
                Some(apis) => apis,
                None => {
                    let apis = match target
                        .renderer
                        .render(target.source, target.revision, &capabilities, c, inputs)
                        .await
                    {
                        Ok(r) => r
                            .objects
                            .iter()
                            .map(|o| RenderedApi::Object {
                                component: c.name.clone(),
                                object: {
                                    let mut k = o.key();
                                    k.group.clear();
                                    k.to_string()
                                },
                                api_version: o.api_version.clone(),
                                kind: o.kind.clone(),
                            })
                            .collect(),
                        Err(e) => vec![RenderedApi::Failed {
                            component: c.name.clone(),
                            message: describe(&e),
                        }],
                    };
                    let apis = Arc::new(apis);
                    if let Ok(mut kept) = self.renders.lock() {
                        if kept.len() >= KEPT_RENDERS {
                            kept.clear();
                        }
                        kept.insert(key, apis.clone());
                    }
                    apis
                }
            };
            out.extend(apis.iter().cloned());
        }
        Ok(out)
    }
}

/// What a chart is rendered for on the far side of a hop to `to`: that version, and what
/// the cluster serves now less what `to` removes.
pub fn for_hop(now: &RenderCapabilities, to: KubeVersion) -> RenderCapabilities {
    let removed = RemovedApis::builtin();
    let api_versions = now
        .api_versions
        .iter()
        .filter(|v| {
            let parts: Vec<&str> = v.split('/').collect();
            let (gv, kind) = match parts.as_slice() {
                // `group/version/Kind`
                [g, ver, kind] => (format!("{g}/{ver}"), Some(*kind)),
                _ => ((*v).clone(), None),
            };
            match kind {
                Some(kind) => removed.removed_by(&gv, kind, to).is_none(),
                None => {
                    !removed
                        .all()
                        .iter()
                        .filter(|r| r.group_version == gv)
                        .all(|r| to.minor_gap(r.removed_in) >= 0)
                        || !removed.all().iter().any(|r| r.group_version == gv)
                }
            }
        })
        .cloned()
        .collect();
    RenderCapabilities {
        kube_version: Some(to.to_string()),
        api_versions,
    }
}

/// Errors of reading facts from the cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request failed.
    #[error("failed to read {what} from the API server")]
    Api {
        /// What was read.
        what: &'static str,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// The `apiserver_requested_deprecated_apis` series of the API server's `/metrics`.
async fn deprecated_requests(client: &kube::Client) -> Result<Vec<DeprecatedRequest>, String> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = client.request_text(req).await.map_err(|source| {
        describe(&Error::Api {
            what: "/metrics",
            source,
        })
    })?;
    Ok(parse_deprecated(&text))
}

/// The series of [`DEPRECATED_METRIC`] with a non-zero value in Prometheus text `text`.
///
/// NB: a small reader of the text exposition format's sample lines rather than a crate:
/// the one Rust reader of it (`prometheus-parse`) brings chrono and lazy_static for this
/// one family, and the line syntax (name, `{label="value",...}`, value) is small.
pub fn parse_deprecated(text: &str) -> Vec<DeprecatedRequest> {
    let mut out: Vec<DeprecatedRequest> = text
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix(DEPRECATED_METRIC)?;
            let rest = rest.strip_prefix('{')?;
            let (labels, value) = split_labels(rest)?;
            let value: f64 = value.split_whitespace().next()?.parse().ok()?;
            if value == 0.0 {
                return None;
            }
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            Some(DeprecatedRequest {
                group: get("group"),
                version: get("version"),
                resource: get("resource"),
                subresource: get("subresource"),
                removed_release: KubeVersion::parse_observed(&get("removed_release")).ok(),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `label="value",...}` and what follows the closing brace.
fn split_labels(s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars
            .next_if(|(_, c)| *c == ',' || c.is_whitespace())
            .is_some()
        {}
        let (start, c) = chars.next()?;
        if c == '}' {
            return Some((labels, &s[start + 1..]));
        }
        let mut end = start;
        for (i, c) in chars.by_ref() {
            if c == '=' {
                end = i;
                break;
            }
        }
        let name = s[start..end].trim().to_string();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()?.1 {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name, value);
    }
}

/// Every PodDisruptionBudget with the pods it selects and the node groups they run on.
async fn disruption_budgets(
    client: &kube::Client,
    group_of: &BTreeMap<String, String>,
) -> Result<Vec<DisruptionBudget>, Error> {
    let api = |what| move |source| Error::Api { what, source };
    let budgets = Api::<PodDisruptionBudget>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(api("PodDisruptionBudgets"))?;
    if budgets.items.is_empty() {
        return Ok(Vec::new());
    }
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(api("pods"))?;
    let int_or_percent = |v: &Option<IntOrString>| {
        v.as_ref().map(|v| match v {
            IntOrString::Int(i) => i.to_string(),
            IntOrString::String(s) => s.clone(),
        })
    };
    let mut out = Vec::new();
    for b in &budgets.items {
        let namespace = b.metadata.namespace.clone().unwrap_or_default();
        let spec = b.spec.clone().unwrap_or_default();
        let Some(selector) = spec
            .selector
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| serde_json::from_value::<LabelSelector>(v).ok())
        else {
            continue; // a budget without a valid selector selects nothing
        };
        let mut matching = 0;
        let mut healthy = 0;
        let mut groups = BTreeSet::new();
        for p in pods.items.iter().filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace.as_str())
                && p.metadata.deletion_timestamp.is_none()
                && !p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
                && selector.matches(
                    &p.metadata
                        .labels
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                )
        }) {
            matching += 1;
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            healthy += u32::from(ready);
            if let Some(g) = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .and_then(|n| group_of.get(n))
            {
                groups.insert(g.clone());
            }
        }
        out.push(DisruptionBudget {
            namespace,
            name: b.metadata.name.clone().unwrap_or_default(),
            max_unavailable: int_or_percent(&spec.max_unavailable),
            min_available: int_or_percent(&spec.min_available),
            pods: matching,
            healthy,
            node_groups: groups,
        });
    }
    Ok(out)
}

/// The built-in group/versions of `minor` (for tests of [`for_hop`]).
pub fn served_at(minor: KubeVersion) -> BTreeSet<String> {
    apis::served_api_versions(minor, RemovedApis::builtin())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::v;

    #[test]
    fn the_deprecated_series_are_read_from_the_text_format() {
        let text = "# HELP apiserver_requested_deprecated_apis [STABLE] Gauge of deprecated APIs that have been requested, broken out by API group, version, resource, subresource, and removed_release.
# TYPE apiserver_requested_deprecated_apis gauge
apiserver_requested_deprecated_apis{group=\"flowcontrol.apiserver.k8s.io\",removed_release=\"1.32\",resource=\"flowschemas\",subresource=\"\",version=\"v1beta3\"} 1
apiserver_requested_deprecated_apis{group=\"\",removed_release=\"\",resource=\"componentstatuses\",subresource=\"\",version=\"v1\"} 1
apiserver_requested_deprecated_apis{group=\"x\",removed_release=\"1.40\",resource=\"y\",subresource=\"status\",version=\"v1\"} 0
apiserver_request_total{code=\"200\"} 5
";
        let found = parse_deprecated(text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].resource, "componentstatuses");
        assert_eq!(found[0].removed_release, None);
        assert_eq!(found[1].group, "flowcontrol.apiserver.k8s.io");
        assert_eq!(found[1].version, "v1beta3");
        assert_eq!(found[1].removed_release, Some(v("1.32")));
        assert!(
            parse_deprecated("apiserver_requested_deprecated_apis{group=\"a\\\"b\"} 1").len() == 1
        );
        assert!(parse_deprecated("apiserver_requested_deprecated_apis{broken 1").is_empty());
    }

    #[test]
    fn the_metric_counts_findings_by_check() {
        let p = Preflight::default();
        let mut registry = Registry::with_prefix("tidemark");
        p.register(&mut registry);
        let finding = |check| Finding {
            check,
            message: String::new(),
        };
        p.record(&[
            finding(PreflightCheck::RemovedApiRenders),
            finding(PreflightCheck::RemovedApiRenders),
            finding(PreflightCheck::DisruptionBudgets),
        ]);
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        assert!(
            text.contains("tidemark_preflight_findings{check=\"removed-api-renders\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tidemark_preflight_findings{check=\"pod-disruption-budgets\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tidemark_preflight_findings{check=\"deprecated-api-requests\"} 0"),
            "{text}"
        );
        p.record(&[]);
        assert_eq!(p.recorded(PreflightCheck::RemovedApiRenders), 0);
    }

    #[test]
    fn a_hop_renders_without_what_it_removes() {
        let now = RenderCapabilities {
            kube_version: Some("1.31.4".into()),
            api_versions: served_at(v("1.31")).into_iter().collect(),
        };
        let next = for_hop(&now, v("1.32.0"));
        assert_eq!(next.kube_version.as_deref(), Some("1.32.0"));
        let fc = "flowcontrol.apiserver.k8s.io";
        assert!(now.api_versions.contains(&format!("{fc}/v1beta3")));
        assert!(!next.api_versions.contains(&format!("{fc}/v1beta3")));
        assert!(
            !next
                .api_versions
                .contains(&format!("{fc}/v1beta3/FlowSchema"))
        );
        assert!(next.api_versions.contains(&format!("{fc}/v1")));
        assert!(next.api_versions.contains(&"apps/v1".to_string()));
    }
}
