//! Fault injection: latency, error responses per verb, write conflicts, dropped watches and an
//! API-server outage window, decided by a seedable RNG so that a run can be replayed. Faults
//! apply to Kubernetes API requests only, never to `/sim/v1/*` or health endpoints.
//!
//! # Syntax
//!
//! A comma-separated list of `key=value` terms (all optional, any order):
//!
//! | term | meaning |
//! |---|---|
//! | `latency=20ms` | delay every API request by this long (`ms`, `s`, `m`) |
//! | `latency-rate=0.2` | delay only this fraction of requests (default 1: all) |
//! | `error-rate=0.05` | probability of answering a request with an error instead |
//! | `error-codes=500\|503\|429` | the error codes to pick from (default `500\|503\|429`) |
//! | `error-verbs=get\|list` | verbs the errors apply to (default: all; verbs are `get list watch create update patch delete deletecollection`) |
//! | `retry-after=2s` | the `Retry-After` of an injected 429, in whole seconds (default `1s`, as the API server's max-in-flight filter) |
//! | `conflict-rate=0.1` | probability of a 409 Conflict on a write (`create update patch delete`) |
//! | `drop-watch=30s` | close every watch connection after this long |
//! | `outage=10s+30s` | starting 10 s after the faults are set, answer every API request with 503 for 30 s |
//! | `outage-mode=refuse` | during the outage drop connections instead (new ones are closed at once, open ones are cut): clients see connection errors, not 503; `/sim/v1` is unreachable too, like a server that is down (`Sim::set_faults` still works) |
//! | `seed=7` | seed of the fault RNG (default: the sim's seed) |
//!
//! The empty string (or `none`) means no faults.
//!
//! # Throttling, as the API server throttles
//!
//! An injected 429 is the answer of kube-apiserver's max-in-flight and API Priority and
//! Fairness filters (`tooManyRequests` in `apiserver/pkg/server/filters`): no `Status` but
//! `http.Error`'s plain text `Too many requests, please try again later.` with a
//! `Retry-After: SECONDS` header (`X-Content-Type-Options: nosniff`, and APF's
//! `X-Kubernetes-PF-FlowSchema-UID` / `X-Kubernetes-PF-PriorityLevel-UID`).
//!
//! Whether clients honour `Retry-After` is recorded: for each 429 the sim answers, the next
//! request of the same client (User-Agent) with the same verb and path is its retry, early
//! when it arrives before `Retry-After` has elapsed. `tidemark sim ctl state` reports the
//! counts under `faults` (`throttled`, `retried`, `retriedEarly`, and the shortest wait seen,
//! `shortestRetryWaitMs`), in all and `byClient` (the User-Agent's product: `tidemark`,
//! `kubectl`); they survive a change of the faults.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::api::status::ApiError;
use crate::rng::Rng;

/// Which faults to inject; see the module docs for the string syntax.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec {
    /// Delay added to API requests.
    pub latency: Duration,
    /// Fraction of requests delayed by `latency`; `None` means all.
    pub latency_rate: Option<f64>,
    /// Probability of an error response (codes from `error_codes`).
    pub error_rate: f64,
    /// Error codes to pick from; empty means 500, 503 and 429.
    pub error_codes: Vec<u16>,
    /// Verbs errors apply to; empty means all verbs.
    pub error_verbs: Vec<String>,
    /// `Retry-After` of an injected 429 (whole seconds); `None` means one second.
    pub retry_after: Option<Duration>,
    /// Probability of a 409 Conflict on writes.
    pub conflict_rate: f64,
    /// Close watches after this long.
    pub drop_watch: Option<Duration>,
    /// Outage window: (start after the faults are set, duration).
    pub outage: Option<(Duration, Duration)>,
    /// During the outage, drop connections instead of answering 503.
    pub outage_refuse: bool,
    /// RNG seed for fault decisions.
    pub seed: Option<u64>,
}

/// A fault spec that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid fault spec term {term:?}: {reason}")]
pub struct FaultSpecError {
    term: String,
    reason: String,
}

/// Parses `20ms`, `1.5s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return Err(format!("duration {s:?} needs a unit (ms, s, m)"));
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("bad duration {s:?}"));
    }
    Duration::try_from_secs_f64(v * mult).map_err(|_| format!("duration {s:?} is out of range"))
}

fn fmt_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut spec = FaultSpec::default();
        let s = s.trim();
        if s.is_empty() || s == "none" {
            return Ok(spec);
        }
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let err = |reason: String| FaultSpecError {
                term: term.to_string(),
                reason,
            };
            let (k, v) = term
                .split_once('=')
                .ok_or_else(|| err("expected key=value".into()))?;
            let rate = |v: &str| -> Result<f64, FaultSpecError> {
                let r: f64 = v
                    .parse()
                    .map_err(|_| err(format!("{v:?} is not a number")))?;
                if (0.0..=1.0).contains(&r) {
                    Ok(r)
                } else {
                    Err(err("a rate is between 0 and 1".into()))
                }
            };
            match k.trim() {
                "latency" => spec.latency = parse_duration(v).map_err(err)?,
                "latency-rate" => spec.latency_rate = Some(rate(v)?),
                "error-rate" => spec.error_rate = rate(v)?,
                "retry-after" => {
                    let d = parse_duration(v).map_err(err)?;
                    if d.is_zero() || d.subsec_nanos() != 0 {
                        return Err(err(
                            "Retry-After is a whole number of seconds, at least 1s".into()
                        ));
                    }
                    spec.retry_after = Some(d);
                }
                "conflict-rate" => spec.conflict_rate = rate(v)?,
                "error-codes" => {
                    spec.error_codes = v
                        .split('|')
                        .map(|c| {
                            c.trim()
                                .parse::<u16>()
                                .ok()
                                .filter(|c| (400..600).contains(c))
                        })
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            err("codes are HTTP error statuses such as 500|503|429".into())
                        })?;
                }
                "error-verbs" => {
                    let verbs: Vec<String> =
                        v.split('|').map(|x| x.trim().to_lowercase()).collect();
                    if let Some(bad) = verbs.iter().find(|x| !VERBS.contains(&x.as_str())) {
                        return Err(err(format!("unknown verb {bad:?}")));
                    }
                    spec.error_verbs = verbs;
                }
                "drop-watch" => spec.drop_watch = Some(parse_duration(v).map_err(err)?),
                "outage" => {
                    let (a, b) = v
                        .split_once('+')
                        .ok_or_else(|| err("expected START+DURATION, e.g. 10s+30s".into()))?;
                    spec.outage = Some((
                        parse_duration(a).map_err(err)?,
                        parse_duration(b).map_err(err)?,
                    ));
                }
                "outage-mode" => match v.trim() {
                    "refuse" => spec.outage_refuse = true,
                    "unavailable" | "503" => spec.outage_refuse = false,
                    other => {
                        return Err(err(format!(
                            "outage-mode is refuse or unavailable, not {other:?}"
                        )));
                    }
                },
                "seed" => {
                    spec.seed = Some(
                        v.trim()
                            .parse()
                            .map_err(|_| err("seed is an integer".into()))?,
                    )
                }
                other => return Err(err(format!("unknown key {other:?}"))),
            }
        }
        Ok(spec)
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut terms = Vec::new();
        if !self.latency.is_zero() {
            terms.push(format!("latency={}", fmt_duration(self.latency)));
        }
        if let Some(r) = self.latency_rate {
            terms.push(format!("latency-rate={r}"));
        }
        if self.error_rate > 0.0 {
            terms.push(format!("error-rate={}", self.error_rate));
        }
        if !self.error_codes.is_empty() {
            terms.push(format!(
                "error-codes={}",
                self.error_codes
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join("|")
            ));
        }
        if !self.error_verbs.is_empty() {
            terms.push(format!("error-verbs={}", self.error_verbs.join("|")));
        }
        if let Some(d) = self.retry_after {
            terms.push(format!("retry-after={}s", d.as_secs()));
        }
        if self.conflict_rate > 0.0 {
            terms.push(format!("conflict-rate={}", self.conflict_rate));
        }
        if let Some(d) = self.drop_watch {
            terms.push(format!("drop-watch={}", fmt_duration(d)));
        }
        if let Some((a, b)) = self.outage {
            terms.push(format!("outage={}+{}", fmt_duration(a), fmt_duration(b)));
        }
        if self.outage_refuse {
            terms.push("outage-mode=refuse".into());
        }
        if let Some(s) = self.seed {
            terms.push(format!("seed={s}"));
        }
        if terms.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&terms.join(","))
        }
    }
}

/// The faults in force, the RNG that decides them, and what clients did after a 429.
pub(crate) struct Faults {
    pub spec: FaultSpec,
    rng: Rng,
    set_at: Instant,
    throttles: Throttles,
}

/// What to do to one request.
pub(crate) struct Decision {
    pub latency: Duration,
    pub error: Option<ApiError>,
}

/// Who sent a request and what it asked: a retry is the same client asking the same again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RequestKey {
    /// The User-Agent.
    pub client: String,
    /// `get`, `list`, `patch`, ...
    pub verb: &'static str,
    /// The URL path (no query).
    pub path: String,
}

/// The 429s answered and what followed them.
#[derive(Debug, Default)]
struct Throttles {
    /// A 429 answered and not yet retried: when, and the `Retry-After` it carried.
    pending: HashMap<RequestKey, (Instant, Duration)>,
    /// In all, and by client (the User-Agent's product, `tidemark` of `tidemark/0.1.0`).
    all: ThrottleRecord,
    by_client: BTreeMap<String, ThrottleRecord>,
}

impl ThrottleRecord {
    fn retry(&mut self, waited: Duration, after: Duration) {
        self.retried += 1;
        if waited < after {
            self.retried_early += 1;
        }
        self.shortest_wait = Some(self.shortest_wait.map_or(waited, |s| s.min(waited)));
    }
}

/// The product of a User-Agent: `kubectl` of `kubectl/v1.32.0 (linux/amd64) kubernetes/abc`.
fn product(user_agent: &str) -> String {
    user_agent
        .split('/')
        .next()
        .filter(|p| !p.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

/// What clients did after the 429s the sim answered; see the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThrottleRecord {
    /// 429s answered.
    pub throttled: u64,
    /// Of those, retried by the same client (same verb and path).
    pub retried: u64,
    /// Of those, retried before `Retry-After` had elapsed.
    pub retried_early: u64,
    /// The shortest wait between a 429 and its retry.
    pub shortest_wait: Option<Duration>,
}

impl Faults {
    pub fn new(spec: FaultSpec, default_seed: u64) -> Self {
        let rng = Rng::new(spec.seed.unwrap_or(default_seed));
        Faults {
            spec,
            rng,
            set_at: Instant::now(),
            throttles: Throttles::default(),
        }
    }

    /// Puts `spec` in force (the outage window starts counting now); the record of
    /// throttled requests is kept.
    pub fn replace(&mut self, spec: FaultSpec, default_seed: u64) {
        let throttles = std::mem::take(&mut self.throttles);
        *self = Faults::new(spec, default_seed);
        self.throttles = throttles;
    }

    /// The `Retry-After` of an injected 429.
    pub fn retry_after(&self) -> Duration {
        self.spec.retry_after.unwrap_or(Duration::from_secs(1))
    }

    /// Notes a request as it arrives: when it repeats one that was answered 429, it is that
    /// one's retry, early or not.
    pub fn arrived(&mut self, key: &RequestKey) {
        let Some((sent, after)) = self.throttles.pending.remove(key) else {
            return;
        };
        let waited = sent.elapsed();
        let t = &mut self.throttles;
        t.all.retry(waited, after);
        t.by_client
            .entry(product(&key.client))
            .or_default()
            .retry(waited, after);
    }

    /// Notes a 429 with `Retry-After: after` answered to `key`, now.
    pub fn throttled(&mut self, key: RequestKey, after: Duration) {
        let t = &mut self.throttles;
        t.all.throttled += 1;
        t.by_client
            .entry(product(&key.client))
            .or_default()
            .throttled += 1;
        t.pending.insert(key, (Instant::now(), after));
    }

    /// What clients did after 429s so far: in all, and by client (the User-Agent's product).
    pub fn throttle_record(&self) -> (ThrottleRecord, BTreeMap<String, ThrottleRecord>) {
        (self.throttles.all, self.throttles.by_client.clone())
    }

    /// Whether connections are to be dropped now (an outage in `refuse` mode).
    pub fn refusing(&self) -> bool {
        self.spec.outage_refuse && self.in_outage()
    }

    /// Whether the API server is in its outage window.
    pub fn in_outage(&self) -> bool {
        self.spec.outage.is_some_and(|(start, len)| {
            let e = self.set_at.elapsed();
            e >= start && e < start + len
        })
    }

    /// Decides the fate of one request with `verb`.
    pub fn decide(&mut self, verb: &str) -> Decision {
        let delayed = match self.spec.latency_rate {
            _ if self.spec.latency.is_zero() => false,
            None => true,
            Some(rate) => self.rng.unit() < rate,
        };
        let latency = if delayed {
            self.spec.latency
        } else {
            Duration::ZERO
        };
        if self.in_outage() {
            return Decision {
                latency,
                error: Some(ApiError::unavailable(
                    "the API server is unavailable (simulated outage)",
                )),
            };
        }
        let verb_hit =
            self.spec.error_verbs.is_empty() || self.spec.error_verbs.iter().any(|v| v == verb);
        if self.spec.error_rate > 0.0 && verb_hit && self.rng.unit() < self.spec.error_rate {
            let codes: &[u16] = if self.spec.error_codes.is_empty() {
                &[500, 503, 429]
            } else {
                &self.spec.error_codes
            };
            let code = codes[(self.rng.next_u64() % codes.len() as u64) as usize];
            let error = match code {
                429 => ApiError::throttled(),
                503 => ApiError::unavailable("service unavailable (simulated)"),
                500 => ApiError::internal("internal error (simulated)"),
                c => ApiError::new(c, "InternalError", "error (simulated)"),
            };
            return Decision {
                latency,
                error: Some(error),
            };
        }
        let is_write = matches!(verb, "create" | "update" | "patch" | "delete");
        if is_write && self.spec.conflict_rate > 0.0 && self.rng.unit() < self.spec.conflict_rate {
            let error = ApiError::new(
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again (simulated)",
            );
            return Decision {
                latency,
                error: Some(error),
            };
        }
        Decision {
            latency,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let s: Result<FaultSpec, _> = "latency=20ms,error-rate=0.05,error-verbs=get|list,conflict-rate=0.1,drop-watch=30s,outage=10s+30s,seed=7".parse();
        let s = s.unwrap_or_default();
        assert_eq!(s.latency, Duration::from_millis(20));
        assert_eq!(s.error_verbs, vec!["get", "list"]);
        assert_eq!(
            s.outage,
            Some((Duration::from_secs(10), Duration::from_secs(30)))
        );
        assert_eq!(s.seed, Some(7));
        assert_eq!(s.to_string().parse::<FaultSpec>().ok(), Some(s));
        let refuse: Result<FaultSpec, _> = "outage=1s+2s,outage-mode=refuse".parse();
        assert!(refuse.as_ref().is_ok_and(|r| r.outage_refuse));
        assert_eq!(
            refuse.ok().map(|r| r.to_string()),
            Some("outage=1000ms+2000ms,outage-mode=refuse".into())
        );
        assert!("outage-mode=maybe".parse::<FaultSpec>().is_err());
        assert!("latency=5".parse::<FaultSpec>().is_err());
        assert!("error-rate=2".parse::<FaultSpec>().is_err());
        assert!("bogus=1".parse::<FaultSpec>().is_err());
        let t: Result<FaultSpec, _> = "latency=5s,latency-rate=0.2,retry-after=2s".parse();
        let t = t.unwrap_or_default();
        assert_eq!(t.latency_rate, Some(0.2));
        assert_eq!(t.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(
            t.to_string(),
            "latency=5000ms,latency-rate=0.2,retry-after=2s"
        );
        assert!("retry-after=500ms".parse::<FaultSpec>().is_err());
        assert!("retry-after=0s".parse::<FaultSpec>().is_err());
        assert!("latency-rate=1.5".parse::<FaultSpec>().is_err());
        assert_eq!("".parse::<FaultSpec>().ok(), Some(FaultSpec::default()));
    }

    #[test]
    fn latency_rate_delays_a_fraction() {
        let spec: FaultSpec = "latency=5s,latency-rate=0.2,seed=3"
            .parse()
            .unwrap_or_default();
        let mut f = Faults::new(spec, 1);
        let delayed = (0..2000)
            .filter(|_| f.decide("get").latency == Duration::from_secs(5))
            .count();
        assert!((300..500).contains(&delayed), "{delayed} of 2000 delayed");
        let mut all = Faults::new("latency=5s".parse().unwrap_or_default(), 1);
        assert!((0..50).all(|_| !all.decide("patch").latency.is_zero()));
    }
}
