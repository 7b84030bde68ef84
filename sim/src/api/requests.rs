//! Request counters: every Kubernetes API request the sim serves, by verb and by resource, like
//! the API server's `apiserver_request_total`. Tests read them to assert how many reads and
//! writes a client made (e.g. "a second pass with nothing changed makes no writes"). Requests
//! to `/sim/v1/*` and the health endpoints are not counted; requests answered with an injected
//! fault are (the client sent them).

use std::collections::BTreeMap;

use http::Method;
use serde_json::{Value, json};

use super::Req;
use crate::Shared;

/// The verbs requests are counted by, in the order `/sim/v1/state` prints them.
pub const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// The verbs that write (when not a dry run).
const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// How many Kubernetes API requests a sim has served since it started; see [`crate::Sim::request_counts`].
///
/// - Every counted request has exactly one verb of [`VERBS`]: `get` (also discovery, `/version`
///   and `/openapi`), `list`, `watch`, `create` (also `pods/eviction`), `update`, `patch`
///   (server-side apply included), `delete`, `deletecollection`.
/// - `by_resource` keys are `"VERB RESOURCE"`: RESOURCE is the plural resource name without
///   its group (`configmaps`, `deployments`, `widgets`; `events` counts both Event APIs), with
///   `/SUBRESOURCE` for subresources (`deployments/status`, `pods/eviction`); requests that
///   address no resource are `discovery`, `version`, `openapi` or `unknown` (a path the server
///   does not serve).
/// - A request with `dryRun=All` is counted under its verb and resource and, when its verb
///   writes, also in `dry_run`; [`RequestCounts::writes`] leaves those out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// By verb; every verb of [`VERBS`] is present (0 when none).
    pub by_verb: BTreeMap<String, u64>,
    /// By `"VERB RESOURCE"` (only those seen).
    pub by_resource: BTreeMap<String, u64>,
    /// Write requests that were dry runs.
    pub dry_run: u64,
}

impl RequestCounts {
    fn empty() -> Self {
        RequestCounts {
            by_verb: VERBS.iter().map(|v| ((*v).to_string(), 0)).collect(),
            ..Default::default()
        }
    }

    /// Requests with `verb`.
    pub fn verb(&self, verb: &str) -> u64 {
        self.by_verb.get(verb).copied().unwrap_or_default()
    }

    /// Requests with `verb` on `resource` (`"patch"`, `"deployments"`).
    pub fn resource(&self, verb: &str, resource: &str) -> u64 {
        self.by_resource
            .get(&format!("{verb} {resource}"))
            .copied()
            .unwrap_or_default()
    }

    /// Requests that may have changed something: creates, updates, patches, deletes and
    /// deletecollections that were not dry runs (no-op patches included: they were sent).
    pub fn writes(&self) -> u64 {
        let all: u64 = WRITES.iter().map(|v| self.verb(v)).sum();
        all.saturating_sub(self.dry_run)
    }

    /// The requests counted after `earlier` (a copy taken from the same sim before).
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        let minus = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>| {
            now.iter()
                .map(|(k, n)| {
                    let before = then.get(k).copied().unwrap_or_default();
                    (k.clone(), n.saturating_sub(before))
                })
                .filter(|(k, n)| *n > 0 || VERBS.contains(&k.as_str()))
                .collect()
        };
        RequestCounts {
            by_verb: minus(&self.by_verb, &earlier.by_verb),
            by_resource: minus(&self.by_resource, &earlier.by_resource)
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect(),
            dry_run: self.dry_run.saturating_sub(earlier.dry_run),
        }
    }

    /// `{"requests": {...verbs, "dryRun": N}, "requestsByResource": {...}}` for `/sim/v1/state`.
    pub(crate) fn to_json(&self) -> (Value, Value) {
        let mut verbs = serde_json::Map::new();
        for v in VERBS {
            verbs.insert(v.to_string(), json!(self.verb(v)));
        }
        verbs.insert("dryRun".into(), json!(self.dry_run));
        (Value::Object(verbs), json!(self.by_resource))
    }
}

/// The counters of a running sim.
#[derive(Debug)]
pub(crate) struct Counters {
    counts: RequestCounts,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            counts: RequestCounts::empty(),
        }
    }
}

impl Counters {
    pub fn record(&mut self, verb: &'static str, resource: &str, dry_run: bool) {
        *self.counts.by_verb.entry(verb.to_string()).or_default() += 1;
        *self
            .counts
            .by_resource
            .entry(format!("{verb} {resource}"))
            .or_default() += 1;
        if dry_run && WRITES.contains(&verb) {
            self.counts.dry_run += 1;
        }
    }

    pub fn snapshot(&self) -> RequestCounts {
        self.counts.clone()
    }
}

/// Whether a request asks for a dry run (`?dryRun=All`, or `DeleteOptions` in the body).
fn is_dry_run(req: &Req) -> bool {
    if req.q("dryRun").is_some() {
        return true;
    }
    req.method == Method::DELETE
        && !req.body.is_empty()
        && serde_json::from_slice::<Value>(&req.body).is_ok_and(|o| {
            o.get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|v| v == "All"))
        })
}

/// The verb and resource key of a request (see [`RequestCounts`]), and whether it is a dry run.
pub(crate) fn classify(shared: &Shared, req: &Req) -> (&'static str, String, bool) {
    let path = req.path.trim_end_matches('/');
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let resource = match segs.as_slice() {
        ["version"] => Some("version".to_string()),
        ["metrics"] => Some("metrics".to_string()),
        ["openapi", ..] => Some("openapi".to_string()),
        ["api"] | ["apis"] | ["api", _] | ["apis", _] | ["apis", _, _] => {
            Some("discovery".to_string())
        }
        _ => None,
    };
    if let Some(resource) = resource {
        return ("get", resource, false);
    }
    let target = match segs.as_slice() {
        ["api", v, rest @ ..] => super::parse_target(shared, "", v, rest).ok(),
        ["apis", g, v, rest @ ..] => super::parse_target(shared, g, v, rest).ok(),
        _ => None,
    };
    let Some(t) = target else {
        let verb = super::verb_of(&req.method, &req.path, &req.query);
        return (verb, "unknown".to_string(), false);
    };
    let verb = match (&req.method, t.name.is_some()) {
        (&Method::GET, false) if req.flag("watch") => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "get",
    };
    let mut resource = t.def.plural.clone();
    if let Some(sub) = &t.sub {
        resource.push('/');
        resource.push_str(sub);
    }
    (verb, resource, is_dry_run(req))
}

/// The counts after `requests` (verb, resource, dry run).
#[cfg(test)]
fn tally(requests: &[(&'static str, &str, bool)]) -> RequestCounts {
    let mut c = Counters::default();
    for (verb, resource, dry) in requests {
        c.record(verb, resource, *dry);
    }
    c.snapshot()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_leave_out_dry_runs_and_since_subtracts() {
        let before = tally(&[("get", "configmaps", false)]);
        let after = tally(&[
            ("get", "configmaps", false),
            ("patch", "configmaps", false),
            ("patch", "configmaps", true),
            ("list", "deployments", true),
            ("create", "pods/eviction", false),
        ]);
        assert_eq!(after.writes(), 2);
        assert_eq!(after.dry_run, 1);
        assert_eq!(after.resource("patch", "configmaps"), 2);
        let diff = after.since(&before);
        assert_eq!(diff.verb("get"), 0);
        assert_eq!(diff.verb("patch"), 2);
        assert!(diff.by_verb.contains_key("deletecollection"));
        assert!(!diff.by_resource.contains_key("get configmaps"));
        let (verbs, by_resource) = diff.to_json();
        assert_eq!(verbs["dryRun"], json!(1));
        assert_eq!(by_resource["create pods/eviction"], json!(1));
    }

    #[test]
    fn counters_start_with_every_verb() {
        let c = Counters::default().snapshot();
        assert_eq!(c.by_verb.len(), VERBS.len());
        assert_eq!(c.writes(), 0);
    }
}
