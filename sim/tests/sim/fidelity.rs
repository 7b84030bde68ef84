//! The fidelity contract: every step of every case recorded from a real kube-apiserver (the
//! corpus in `../shared/fidelity/` beside the workspace, format in its README) is replayed
//! against a sim, and the answers are compared by shape: status code, content type and body
//! (keys present or absent, value types, list items matched by name, scalar values after
//! normalisation), ignoring uids, timestamps, resourceVersions, generated names, IPs and
//! continue tokens, as `record.py compare` does.
//!
//! - Each case group runs against its own sim with [`PodLifecycle::Pending`]: the corpus was
//!   recorded on a control plane without scheduler and kubelet, so pods never run.
//! - Requests the recorder made without recording them (fresh namespaces, objects a case
//!   needs, waits) are repeated by each group's setup, as `record.py` does them.
//! - resourceVersions, uids, generated names and continue tokens in requests are mapped from
//!   the recording's to the sim's, learned from earlier answers.
//! - Polls (`poll #N` steps) are matched by their last answer: the sim is polled, briefly,
//!   until it answers like that. So are reads that depend on time (`after ~60 s`): the sim
//!   runs faster, and its controllers get a short, bounded time to get there.
//! - Differences the sim does not model on purpose, and differences between the recorded
//!   v1.24 and the v1.28 the sim reports, are listed in [`NOT_MODELLED`] with the reason.
//! - While investigating: `FIDELITY_REPORT=FILE` writes the differences to FILE, and
//!   `FIDELITY_SETTLE_SECS=N` bounds how long a time-dependent read is retried (10 s).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use regex::Regex;
use serde_json::{Map, Value, json};
use tidemark_sim::{PodLifecycle, Sim, SimConfig};

use super::support::{bounded, client_without_retries};

/// The corpus directory: `../shared/fidelity` beside the workspace root.
fn corpus_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fidelity");
    assert!(
        dir.join("README.md").is_file(),
        "the fidelity corpus is missing: expected {} (the shared directory beside the \
         workspace, see DESIGN.md 'Testing')",
        dir.display()
    );
    dir
}

/// One recorded case file.
struct Case {
    num: u32,
    name: String,
    steps: Vec<Value>,
}

fn load_cases() -> Vec<Case> {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read the corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.as_bytes().first().is_some_and(u8::is_ascii_digit))
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("read a case file");
            let doc: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            let file = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            Case {
                num: file[..2].parse().expect("NN- prefix"),
                name: doc["case"].as_str().unwrap_or_default().to_string(),
                steps: doc["steps"].as_array().cloned().unwrap_or_default(),
            }
        })
        .collect()
}

/// A difference the replay tolerates: in case `case` (0: any), step `step` (`None`: any),
/// differences whose path matches `path` (`*` matches anything; a trailing `*` covers
/// everything below).
struct Rule {
    case: u32,
    step: Option<usize>,
    path: &'static str,
    reason: &'static str,
}

const fn rule(case: u32, step: Option<usize>, path: &'static str, reason: &'static str) -> Rule {
    Rule {
        case,
        step,
        path,
        reason,
    }
}

/// What the sim deliberately does not model, and what v1.28 (the version the sim reports)
/// does differently from the recorded v1.24. Each entry says why. See also `sim/FIDELITY.md`.
const NOT_MODELLED: &[Rule] = &[
    // Kubernetes 1.28 differs from the recorded 1.24 (followed: the Kubernetes source of 1.28).
    rule(
        1,
        Some(12),
        "body.items[default].secrets",
        "v1.28: no token Secret is generated for a ServiceAccount (LegacyServiceAccountTokenNoAutoGeneration, on since 1.24, GA in 1.26)",
    ),
    rule(
        10,
        None,
        "body.groups[*].versions*",
        "v1.28: the v1beta1/v2beta* versions removed in 1.25-1.27 (batch, events.k8s.io, policy, node.k8s.io, discovery.k8s.io, storage.k8s.io, autoscaling v2beta1/v2beta2, flowcontrol v1beta1) are not served; flowcontrol.apiserver.k8s.io/v1beta3 is (1.26)",
    ),
    rule(
        10,
        None,
        "body.groups[flowcontrol.apiserver.k8s.io].preferredVersion*",
        "v1.28: flowcontrol.apiserver.k8s.io prefers v1beta3 (1.26)",
    ),
    rule(
        10,
        Some(2),
        "body.resources[*].singularName",
        "v1.27+: discovery names the singular of built-in resources (the recorded 1.24 left it empty)",
    ),
    rule(
        10,
        Some(4),
        "*",
        "v1.28 answers this Accept with aggregated discovery (apidiscovery.k8s.io/v2beta1; v2 only from 1.30); 1.24 had none. Checked by `aggregated_discovery_as_1_28_serves_it`",
    ),
    rule(
        10,
        Some(5),
        "*",
        "v1.28 answers this Accept with aggregated discovery (apidiscovery.k8s.io/v2beta1); checked by `aggregated_discovery_as_1_28_serves_it`",
    ),
    rule(
        10,
        Some(14),
        "*",
        "v1.28 answers this Accept with aggregated discovery (apidiscovery.k8s.io/v2beta1), the unavailable group listed as Stale; checked by `aggregated_discovery_as_1_28_serves_it`",
    ),
    rule(
        11,
        None,
        "*batch.kubernetes.io/controller-uid*",
        "v1.27+: Jobs and their pods are labelled batch.kubernetes.io/controller-uid and batch.kubernetes.io/job-name besides the old labels, and selected by the prefixed one",
    ),
    rule(
        11,
        None,
        "*batch.kubernetes.io/job-name*",
        "v1.27+: Jobs and their pods are labelled batch.kubernetes.io/job-name besides job-name",
    ),
    rule(
        11,
        None,
        "body.spec.selector.matchLabels.controller-uid",
        "v1.27+: a Job's generated selector uses batch.kubernetes.io/controller-uid",
    ),
    rule(
        11,
        None,
        "body.metadata.annotations",
        "v1.27+: tracking with finalizers is the only mode, Jobs get no batch.kubernetes.io/job-tracking annotation",
    ),
    rule(
        11,
        None,
        "body.status.ready",
        "v1.28: JobReadyPods is on (beta since 1.24; off in the recorded 1.24-development tree): a Job's status counts ready pods",
    ),
    rule(
        11,
        None,
        "body.metadata.managedFields[*].fieldsV1.f:status.f:ready",
        "v1.28: the Job controller writes status.ready (JobReadyPods)",
    ),
    rule(
        11,
        None,
        "*persistentVolumeClaimRetentionPolicy*",
        "v1.27+: StatefulSetAutoDeletePVC is beta (on): the claim retention policy is defaulted",
    ),
    rule(
        11,
        Some(21),
        "*apps.kubernetes.io/pod-index*",
        "v1.28: PodIndexLabel is beta (on): StatefulSet pods are labelled with their index",
    ),
    // The moment of recording.
    rule(
        12,
        Some(0),
        "body.items[*].status*",
        "timing: recorded the moment the ReplicaSets appeared, before their controller wrote their status; the sim's controller is a tick faster",
    ),
    rule(
        12,
        Some(0),
        "body.items[*].metadata.managedFields*",
        "timing: recorded before the ReplicaSet controller's status write (see status)",
    ),
    rule(
        12,
        Some(1),
        "body.status*",
        "timing: the recorded Deployment's status is from before its controller saw its ReplicaSet (Progressing/NewReplicaSetCreated); the sim's is a tick later",
    ),
    rule(12, Some(2), "body.status*", "timing: as the step before"),
    rule(
        12,
        Some(1),
        "body.metadata.managedFields[*].fieldsV1.f:status*",
        "timing: as its status",
    ),
    rule(
        12,
        Some(2),
        "body.metadata.managedFields[*].fieldsV1.f:status*",
        "timing: as its status",
    ),
    rule(
        10,
        Some(9),
        "body.metadata.managedFields*",
        "entries of one operation sort by time, then manager: the availability controller wrote in the same second as the create on the real server, a second later in the sim",
    ),
    rule(
        3,
        Some(2),
        "body.metadata.managedFields*",
        "entries of one operation sort by time, then manager: the CRD was established in the same second as its create on the real server (0.2 s), sometimes a second later in the sim",
    ),
    rule(
        11,
        Some(1),
        "body.metadata.managedFields",
        "timing: the TTL controller annotated the node between the recorder's writes on the real server; in the sim it may come after",
    ),
    rule(
        11,
        Some(2),
        "body.metadata.managedFields",
        "timing: as the step before",
    ),
    // Generated names and nondeterminism.
    rule(
        8,
        Some(2),
        "body.message",
        "the Event's name is generated (generateName) and part of the message",
    ),
    rule(
        17,
        Some(4),
        "body.message",
        "the real server lists the three type errors in Go map order, which varies between runs; the sim lists them in field order",
    ),
    // Not modelled.
    rule(
        10,
        None,
        "body.groups[monitoring.coreos.com]",
        "environment: CRDs of earlier acceptance runs on the recorded cluster",
    ),
    rule(
        13,
        None,
        "body.metadata.managedFields[*].fieldsV1.f:status.f:conditions.*.f:lastProbeTime",
        "managedFields: the real server counts a condition's null lastProbeTime as a field of the status writer; the sim owns no null values",
    ),
];

/// One answer from a server, in the corpus' terms.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Value,
    events: Option<Vec<Value>>,
}

fn answer_of(step: &Value) -> Answer {
    let r = &step["response"];
    Answer {
        status: r["status"].as_u64().unwrap_or_default() as u16,
        content_type: r["headers"]["content-type"].as_str().map(str::to_string),
        body: r["body"].clone(),
        events: r["events"].as_array().cloned(),
    }
}

/// Replays steps against one sim and collects the differences.
struct Replay {
    client: kube::Client,
    /// Recorded value -> the sim's (resourceVersions, uids, generated names, continue tokens).
    ids: HashMap<String, String>,
    differences: Vec<String>,
    tolerated: Vec<String>,
    compared: usize,
    replayed: usize,
}

/// Whether a step's query asks for a watch.
fn is_watch(query: &Map<String, Value>) -> bool {
    matches!(
        query.get("watch").and_then(Value::as_str),
        Some("1" | "true")
    )
}

impl Replay {
    async fn new(sim: &Sim) -> Self {
        Replay {
            client: client_without_retries(sim).await,
            ids: HashMap::new(),
            differences: Vec::new(),
            tolerated: Vec::new(),
            compared: 0,
            replayed: 0,
        }
    }

    /// Sends one request; a watch is read until `expect_events` events came (then a little
    /// longer, to see extra ones) or the server ended it.
    async fn send(
        &self,
        method: &str,
        path: &str,
        query: &Map<String, Value>,
        headers: &Map<String, Value>,
        body: &Value,
        expect_events: Option<usize>,
    ) -> Answer {
        let mut uri = path.to_string();
        if !query.is_empty() {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in query {
                ser.append_pair(k, v.as_str().unwrap_or_default());
            }
            uri.push('?');
            uri.push_str(&ser.finish());
        }
        let mut req = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header("user-agent", "fidelity-recorder/1.0");
        for (k, v) in headers {
            if let Some(v) = v.as_str() {
                req = req.header(k.as_str(), v);
            }
        }
        let bytes = match body {
            Value::Null => Vec::new(),
            Value::String(s) => s.clone().into_bytes(),
            other => serde_json::to_vec(other).unwrap_or_default(),
        };
        let req = req.body(kube::client::Body::from(bytes)).unwrap();
        let resp = bounded(30, self.client.send(req))
            .await
            .unwrap_or_else(|e| panic!("{method} {uri}: no answer: {e}"));
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = resp.into_body();
        let mut raw: Vec<u8> = Vec::new();
        if is_watch(query) && status == 200 {
            let want = expect_events.unwrap_or(0);
            let deadline = Instant::now() + Duration::from_secs(4);
            let mut extra_until: Option<Instant> = None;
            loop {
                let lines = raw.iter().filter(|b| **b == b'\n').count();
                if lines >= want && extra_until.is_none() {
                    extra_until = Some(Instant::now() + Duration::from_millis(300));
                }
                let until = extra_until.unwrap_or(deadline).min(deadline);
                let left = until.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            raw.extend_from_slice(&data);
                        }
                    }
                    Ok(_) | Err(_) => break,
                }
            }
        } else {
            let collected = bounded(30, body.collect())
                .await
                .unwrap_or_else(|e| panic!("{method} {uri}: body: {e}"));
            raw = collected.to_bytes().to_vec();
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let json_ct = content_type.as_deref().is_some_and(|c| c.contains("json"));
        if is_watch(query) && status == 200 {
            let events = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.into())))
                .collect();
            return Answer {
                status,
                content_type,
                body: Value::String(text),
                events: Some(events),
            };
        }
        let body = if json_ct {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        } else if text.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        };
        Answer {
            status,
            content_type,
            body,
            events: None,
        }
    }

    /// A request of a setup (not compared): JSON body, JSON accept.
    async fn call(&self, method: &str, path: &str, body: Value) -> Answer {
        let mut headers = Map::new();
        headers.insert("accept".into(), json!("application/json"));
        if !body.is_null() {
            headers.insert("content-type".into(), json!("application/json"));
        }
        self.send(method, path, &Map::new(), &headers, &body, None)
            .await
    }

    /// Polls GET `path` until `done` holds for its answer (at most `secs`); a setup that
    /// does not get there is a difference.
    async fn wait_for(&mut self, path: &str, secs: u64, done: impl Fn(&Answer) -> bool) {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let a = self.call("GET", path, Value::Null).await;
            if done(&a) {
                return;
            }
            if Instant::now() >= end {
                self.differences.push(format!(
                    "setup: GET {path} did not get there in {secs} s: {} {}",
                    a.status,
                    short(&a.body)
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates namespace `ns` (deleting a left-over one first, as `record.py` does).
    async fn fresh_namespace(&mut self, ns: &str) {
        let p = format!("/api/v1/namespaces/{ns}");
        if self.call("GET", &p, Value::Null).await.status == 200 {
            self.call("DELETE", &p, Value::Null).await;
            self.wait_for(&p, 30, |a| a.status == 404).await;
        }
        let a = self
            .call(
                "POST",
                "/api/v1/namespaces",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .await;
        assert_eq!(a.status, 201, "setup: namespace {ns}: {}", a.body);
    }

    /// Rewrites the recorded ids in a request to the sim's.
    fn map_ids(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| {
                        let mapped = match (k.as_str(), x.as_str()) {
                            ("uid" | "resourceVersion" | "name" | "continue", Some(s)) => {
                                self.ids.get(s).map(|t| json!(t))
                            }
                            _ => None,
                        };
                        (k.clone(), mapped.unwrap_or_else(|| self.map_ids(x)))
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.map_ids(x)).collect()),
            other => other.clone(),
        }
    }

    /// Learns recorded -> sim ids from two answers to the same request.
    fn learn(&mut self, real: &Value, sim: &Value) {
        match (real, sim) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, x) in a {
                    let Some(y) = b.get(k) else { continue };
                    match (k.as_str(), x, y) {
                        (
                            "uid" | "resourceVersion" | "continue",
                            Value::String(s),
                            Value::String(t),
                        ) if !s.is_empty() => {
                            self.ids.insert(s.clone(), t.clone());
                        }
                        _ => self.learn(x, y),
                    }
                }
                // Generated names.
                if a.contains_key("generateName")
                    && let (Some(Value::String(s)), Some(Value::String(t))) =
                        (a.get("name"), b.get("name"))
                {
                    self.ids.insert(s.clone(), t.clone());
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (x, y) in a.iter().zip(b) {
                    self.learn(x, y);
                }
            }
            _ => {}
        }
    }

    /// Replays one recorded step (or, for polls and reads that depend on time, polls the sim
    /// until it answers like the recording, at most `settle` long) and compares.
    async fn step(&mut self, case: &Case, i: usize, settle: Option<Duration>) {
        let step = &case.steps[i];
        let r = &step["request"];
        let method = r["method"].as_str().unwrap_or("GET");
        let path = r["path"].as_str().unwrap_or("/");
        let mut query = r["query"].as_object().cloned().unwrap_or_default();
        for k in ["resourceVersion", "continue"] {
            if let Some(Value::String(v)) = query.get(k)
                && let Some(t) = self.ids.get(v)
            {
                query.insert(k.into(), json!(t));
            }
        }
        let headers = r["headers"].as_object().cloned().unwrap_or_default();
        let body = self.map_ids(&r["body"]);
        let want = answer_of(step);
        let note = step["note"].as_str().unwrap_or_default();
        let tag = format!(
            "case {:02} {} step {i}: {method} {path}{}{}",
            case.num,
            case.name,
            if query.is_empty() {
                String::new()
            } else {
                format!("?{}", Value::Object(query.clone()))
            },
            if note.is_empty() {
                String::new()
            } else {
                format!(" ({note})")
            }
        );
        self.replayed += 1;
        let end = settle.map(|d| Instant::now() + d);
        let (got, diffs) = loop {
            let got = self
                .send(
                    method,
                    path,
                    &query,
                    &headers,
                    &body,
                    want.events.as_ref().map(Vec::len),
                )
                .await;
            let diffs = compare(&want, &got);
            let untolerated = diffs
                .iter()
                .filter(|d| tolerated(case.num, i, d).is_none())
                .count();
            match end {
                Some(end) if untolerated > 0 && Instant::now() < end => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => break (got, diffs),
            }
        };
        self.compared += 1;
        self.learn(&want.body, &got.body);
        if let (Some(a), Some(b)) = (&want.events, &got.events) {
            self.learn(&Value::Array(a.clone()), &Value::Array(b.clone()));
        }
        for d in diffs {
            match tolerated(case.num, i, &d) {
                Some(reason) => self
                    .tolerated
                    .push(format!("{tag}\n    {d}\n    ({reason})")),
                None => self.differences.push(format!("{tag}\n    {d}")),
            }
        }
    }
}

fn tolerated(case: u32, step: usize, diff: &str) -> Option<&'static str> {
    let path = diff
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches(':');
    NOT_MODELLED
        .iter()
        .find(|r| {
            (r.case == 0 || r.case == case)
                && r.step.is_none_or(|s| s == step)
                && glob(r.path, path)
        })
        .map(|r| r.reason)
}

/// `*` matches any run of characters.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob(tail, &rest[i..]))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Normalisation and comparison (as `record.py compare`).

const VOLATILE_KEYS: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "time",
    "lastTransitionTime",
    "lastUpdateTime",
    "lastHeartbeatTime",
    "lastProbeTime",
    "startTime",
    "eventTime",
    "firstTimestamp",
    "lastTimestamp",
    "renewTime",
    "acquireTime",
    "clusterIP",
    "clusterIPs",
    "continue",
    "selfLink",
    "caBundle",
    "podIP",
    "podIPs",
    "hostIP",
    "serverAddress",
    "currentRevision",
    "updateRevision",
    "pod-template-hash",
    "controller-revision-hash",
    "collisionCount",
    "remainingItemCount",
    "observedGeneration",
    "gitVersion",
    "gitCommit",
    "buildDate",
    "goVersion",
    "major",
    "minor",
];
const VOLATILE_LISTS: &[&str] = &["clusterIPs", "podIPs"];

struct Patterns {
    pem: Regex,
    time: Regex,
    too_old: Regex,
    uid: Regex,
    generated: Regex,
}

fn patterns() -> &'static Patterns {
    static P: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
    P.get_or_init(|| Patterns {
        pem: Regex::new(r"-----BEGIN ([A-Z ]+)-----(?s:.*?)-----END [A-Z ]+-----").unwrap(),
        time: Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z").unwrap(),
        too_old: Regex::new(r"resource version: \d+ \(\d+\)").unwrap(),
        uid: Regex::new(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
            .unwrap(),
        generated: Regex::new(r"^(tidemark|job|job-ttl0|ds|kube-api-access)-[a-z0-9]{5}$").unwrap(),
    })
}

fn normalise(v: &Value, key: Option<&str>) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    // uids in keys (`k:{"uid":...}` of managedFields).
                    let nk = patterns().uid.replace_all(k, "<uid>").into_owned();
                    let volatile = VOLATILE_KEYS.contains(&k.as_str())
                        && (!(x.is_object() || x.is_array())
                            || VOLATILE_LISTS.contains(&k.as_str()));
                    let nv = if volatile {
                        json!("<volatile>")
                    } else {
                        normalise(x, Some(k))
                    };
                    (nk, nv)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| normalise(x, key)).collect()),
        Value::String(s) => {
            let p = patterns();
            // The recorder redacts certificates (the ca.crt of kube-root-ca.crt).
            let s = p.pem.replace_all(s, |c: &regex::Captures| {
                format!("<redacted PEM {}>", c[1].to_lowercase())
            });
            let s = p.time.replace_all(&s, "<time>");
            let s = p.too_old.replace_all(&s, "resource version: N (N)");
            let s = p.uid.replace_all(&s, "<uid>");
            // Pod-template hashes and generated suffixes: a hash has at least one digit.
            let s = hashes(&s);
            let mut s = s;
            if matches!(key, Some("name" | "generateName" | "podName")) && p.generated.is_match(&s)
            {
                s.truncate(s.len() - 5);
                s.push_str("<gen>");
            }
            Value::String(s)
        }
        other => other.clone(),
    }
}

/// Replaces `-xxxxxxxx` (8 to 10 lower-case letters and digits, at least one digit, not
/// followed by another) by `-<hash>`, and `-<hash>-xxxxx` by `-<hash>-<gen>`, as
/// `record.py` does with look-ahead patterns.
fn hashes(s: &str) -> String {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let run = |b: &[u8], start: usize| b[start..].iter().take_while(|c| alnum(**c)).count();
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            let n = run(b, i + 1);
            let word = &s[i + 1..i + 1 + n];
            if (8..=10).contains(&n) && word.bytes().any(|c| c.is_ascii_digit()) {
                out.push_str("-<hash>");
                i += 1 + n;
                if i < b.len() && b[i] == b'-' && run(b, i + 1) == 5 {
                    out.push_str("-<gen>");
                    i += 6;
                }
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or('-');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 160 {
        let mut end = 160;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// The name a list item is matched by, if it has one.
fn item_name(v: &Value) -> Option<String> {
    v.pointer("/metadata/name")
        .or_else(|| v.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(v), None) => out.push(format!("missing {p} = {}", short(v))),
                    (None, Some(v)) => out.push(format!("extra {p} = {}", short(v))),
                    (Some(v), Some(w)) => diff(v, w, &p, out),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            let names_x: Option<Vec<String>> = x.iter().map(item_name).collect();
            let names_y: Option<Vec<String>> = y.iter().map(item_name).collect();
            match (names_x, names_y) {
                (Some(nx), Some(ny)) if !(nx.is_empty() && ny.is_empty()) => {
                    // Lists are in name order; names with generated parts have no order.
                    let generated = nx.iter().any(|n| n.contains('<'));
                    if nx != ny && !generated {
                        let mut sx = nx.clone();
                        let mut sy = ny.clone();
                        sx.sort();
                        sy.sort();
                        if sx == sy {
                            out.push(format!("order {path}: real {nx:?}, sim {ny:?}"));
                        }
                    }
                    for (i, n) in nx.iter().enumerate() {
                        match ny.iter().position(|m| m == n) {
                            Some(j) => diff(&x[i], &y[j], &format!("{path}[{n}]"), out),
                            None => out.push(format!("missing {path}[{n}]")),
                        }
                    }
                    for n in ny.iter().filter(|n| !nx.contains(n)) {
                        out.push(format!("extra {path}[{n}]"));
                    }
                }
                _ if x.len() != y.len() => out.push(format!(
                    "length {path}: real {}, sim {}: real {}, sim {}",
                    x.len(),
                    y.len(),
                    short(a),
                    short(b)
                )),
                _ => {
                    for (i, (v, w)) in x.iter().zip(y).enumerate() {
                        diff(v, w, &format!("{path}[{i}]"), out);
                    }
                }
            }
        }
        _ if type_name(a) != type_name(b) => out.push(format!(
            "type {path}: real {} {}, sim {} {}",
            type_name(a),
            short(a),
            type_name(b),
            short(b)
        )),
        _ if a != b => out.push(format!("value {path}: real {}, sim {}", short(a), short(b))),
        _ => {}
    }
}

/// A Table's `Age` cells depend on when it was asked: `<age>`.
fn table_ages(v: &mut Value) {
    if v.get("kind").and_then(Value::as_str) != Some("Table") {
        return;
    }
    let Some(at) = v["columnDefinitions"]
        .as_array()
        .and_then(|c| c.iter().position(|c| c["name"] == "Age"))
    else {
        return;
    };
    for row in v["rows"].as_array_mut().into_iter().flatten() {
        if let Some(cell) = row["cells"].get_mut(at) {
            *cell = json!("<age>");
        }
    }
}

/// The differences between a recorded answer and the sim's.
fn compare(want: &Answer, got: &Answer) -> Vec<String> {
    let mut out = Vec::new();
    if want.status != got.status {
        out.push(format!(
            "status status: real {}, sim {}: sim body {}",
            want.status,
            got.status,
            short(&got.body)
        ));
    }
    if want.content_type != got.content_type {
        out.push(format!(
            "content-type content-type: real {:?}, sim {:?}",
            want.content_type, got.content_type
        ));
    }
    match (&want.events, &got.events) {
        (Some(a), Some(b)) => diff(
            &normalise(&Value::Array(a.clone()), None),
            &normalise(&Value::Array(b.clone()), None),
            "events",
            &mut out,
        ),
        (Some(_), None) | (None, Some(_)) => {
            out.push("events events: a watch answered by one side only".into());
        }
        (None, None) => {
            let (mut a, mut b) = (normalise(&want.body, None), normalise(&got.body, None));
            table_ages(&mut a);
            table_ages(&mut b);
            diff(&a, &b, "body", &mut out)
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The cases: how each group is set up (what `record.py` does without recording it), which
// steps are polled.

/// The sim a group replays against: no scheduler, no kubelet (pods never run), as recorded.
fn config(speed: f64) -> SimConfig {
    SimConfig {
        speed,
        pods: PodLifecycle::Pending,
        // The recorded cluster served Cluster API's groups at v1beta1 only.
        capi_api: tidemark_sim::CapiApi::V1beta1,
        ..Default::default()
    }
}

fn configmap(name: &str, ns: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": {"key": "value"}})
}

fn deployment(name: &str, ns: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
            },
        },
    })
}

/// What `record.py` does before a group's first recorded step.
async fn setup(r: &mut Replay, group: u32) {
    match group {
        1 => r.fresh_namespace("fidelity-01").await,
        3 => r.fresh_namespace("fidelity-03").await,
        4 => {
            r.fresh_namespace("fidelity-04").await;
            r.call(
                "POST",
                "/api/v1/namespaces/fidelity-04/configmaps",
                configmap("web-config", "fidelity-04"),
            )
            .await;
        }
        8 => {
            // The recorder created tidemark-system (the sim makes it at start).
            let p = "/api/v1/namespaces/tidemark-system";
            r.call("DELETE", p, Value::Null).await;
            r.wait_for(p, 30, |a| a.status == 404).await;
        }
        10..=19 => {
            let ns = format!("fidelity-{group:02}");
            r.fresh_namespace(&ns).await;
            let base = format!("/api/v1/namespaces/{ns}");
            let apps = format!("/apis/apps/v1/namespaces/{ns}/deployments");
            match group {
                12 => {
                    r.call("POST", &apps, deployment("fg", &ns, 2)).await;
                    r.call("POST", &apps, deployment("bg", &ns, 1)).await;
                    r.call("POST", &format!("{base}/configmaps"), configmap("cm", &ns))
                        .await;
                    r.wait_for(
                        &format!("/apis/apps/v1/namespaces/{ns}/replicasets"),
                        20,
                        |a| a.body["items"].as_array().is_some_and(|i| i.len() >= 2),
                    )
                    .await;
                }
                13 => {
                    // The ServiceAccount admission plugin wants the default ServiceAccount.
                    r.wait_for(&format!("{base}/serviceaccounts/default"), 15, |a| {
                        a.status == 200
                    })
                    .await;
                }
                15 => {
                    r.wait_for(&format!("{base}/configmaps/kube-root-ca.crt"), 15, |a| {
                        a.status == 200
                    })
                    .await;
                }
                17 => {
                    r.call("POST", &format!("{base}/configmaps"), configmap("cfg", &ns))
                        .await;
                }
                18 => {
                    for n in ["a", "b", "c"] {
                        r.call(
                            "POST",
                            &format!("{base}/configmaps"),
                            configmap(&format!("cm-{n}"), &ns),
                        )
                        .await;
                    }
                    r.call("POST", &apps, deployment("deploy", &ns, 1)).await;
                }
                19 => {
                    let mut d = deployment("d", &ns, 1);
                    d["spec"]["template"]["spec"]["containers"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"name": "side", "image": "busybox:1.36", "env": [{"name": "A", "value": "1"}]}));
                    r.call("POST", &apps, d).await;
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// Extra requests between steps (`record.py` does them unrecorded): before step `i` of case `case`.
async fn between(r: &mut Replay, case: u32, i: usize) {
    if case == 10 && i == 15 {
        // The recorder deleted the APIService and waited for it to go.
        let p = "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io";
        r.call("DELETE", p, Value::Null).await;
        r.wait_for(p, 15, |a| a.status == 404).await;
    }
}

/// Steps whose answer depends on time: the sim is polled until it answers like the
/// recording (bounded).
fn settles(case: u32, step: &Value, i: usize) -> Option<Duration> {
    let note = step["note"].as_str().unwrap_or_default();
    let timed = note.starts_with("poll #")
        || note.contains("s after creation")
        || note.contains("s later")
        || matches!(
            (case, i),
            (1, 8..=13) | (12, 0 | 3) | (13, 12) | (18, 0..=2)
        );
    let secs = std::env::var("FIDELITY_SETTLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    timed.then(|| Duration::from_secs(secs))
}

/// The case groups: cases that share a namespace share a sim, as when recorded.
const GROUPS: &[&[u32]] = &[
    &[1, 2],
    &[3],
    &[4, 5, 6, 7],
    &[8],
    &[9],
    &[10],
    &[11],
    &[12],
    &[13],
    &[14],
    &[15],
    &[16],
    &[17],
    &[18],
    &[19],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_answers_like_the_recorded_api_server() {
    let cases = load_cases();
    assert_eq!(cases.len(), 19, "the corpus has 19 cases");
    let mut differences = Vec::new();
    let mut tolerated_all = Vec::new();
    let (mut replayed, mut compared) = (0, 0);
    for group in GROUPS {
        let speed = if group.contains(&11) { 20.0 } else { 1.0 };
        let sim = Sim::start(config(speed)).await.expect("sim starts");
        let mut r = Replay::new(&sim).await;
        setup(&mut r, group[0]).await;
        for num in *group {
            let case = cases
                .iter()
                .find(|c| c.num == *num)
                .unwrap_or_else(|| panic!("case {num} is missing from the corpus"));
            let n = case.steps.len();
            let mut i = 0;
            while i < n {
                between(&mut r, case.num, i).await;
                // A poll is matched by its last answer.
                let poll_end = poll_group_end(case, i);
                if poll_end > i {
                    r.replayed += poll_end - i;
                    i = poll_end;
                }
                let settle = settles(case.num, &case.steps[i], i);
                r.step(case, i, settle).await;
                i += 1;
            }
        }
        differences.append(&mut r.differences);
        tolerated_all.append(&mut r.tolerated);
        replayed += r.replayed;
        compared += r.compared;
        sim.shutdown().await;
    }
    println!(
        "fidelity: {} cases, {replayed} steps replayed, {compared} answers compared, {} \
         tolerated differences (NOT_MODELLED), {} differences",
        cases.len(),
        tolerated_all.len(),
        differences.len()
    );
    for t in &tolerated_all {
        println!("tolerated: {t}");
    }
    if let Ok(out) = std::env::var("FIDELITY_REPORT") {
        let _ = std::fs::write(out, differences.join("\n"));
    }
    assert!(
        differences.is_empty(),
        "the sim answers differently from the recorded API server ({} differences):\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// For a step that starts a run of polls of one path, the index of the run's last step.
fn poll_group_end(case: &Case, i: usize) -> usize {
    let is_poll = |s: &Value| s["note"].as_str().is_some_and(|n| n.starts_with("poll #"));
    if !is_poll(&case.steps[i]) {
        return i;
    }
    let path = &case.steps[i]["request"]["path"];
    let mut j = i;
    while j + 1 < case.steps.len()
        && is_poll(&case.steps[j + 1])
        && case.steps[j + 1]["request"]["path"] == *path
    {
        j += 1;
    }
    j
}

/// Aggregated discovery as 1.28 serves it (the steps of case 10 that asked for it got the
/// plain documents from 1.24): `apidiscovery.k8s.io/v2beta1` for the recorder's (and
/// kubectl's) Accept, plain documents for a client asking only for `v2`, and `v2` from 1.30.
/// An unavailable aggregated API is listed, stale; its group-version answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_discovery_as_1_28_serves_it() {
    const RECORDER: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    const V2_ONLY: &str =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let sim = Sim::start(SimConfig {
        unavailable_api_services: vec!["v1beta1.metrics.k8s.io".into()],
        ..Default::default()
    })
    .await
    .expect("sim starts");
    let r = Replay::new(&sim).await;
    let get = |path: &'static str, accept: &'static str| {
        let mut headers = Map::new();
        headers.insert("accept".into(), json!(accept));
        let r = &r;
        async move {
            r.send("GET", path, &Map::new(), &headers, &Value::Null, None)
                .await
        }
    };
    for path in ["/api", "/apis"] {
        let a = get(path, RECORDER).await;
        assert_eq!(a.status, 200);
        assert_eq!(
            a.content_type.as_deref(),
            Some("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList")
        );
        assert_eq!(a.body["kind"], "APIGroupDiscoveryList", "{}", a.body);
        assert_eq!(a.body["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        let plain = get(path, V2_ONLY).await;
        assert_eq!(plain.content_type.as_deref(), Some("application/json"));
    }
    let apis = get("/apis", RECORDER).await;
    let groups = apis.body["items"].as_array().cloned().unwrap_or_default();
    let metrics = groups
        .iter()
        .find(|g| g["metadata"]["name"] == "metrics.k8s.io")
        .unwrap_or_else(|| panic!("metrics.k8s.io listed: {}", apis.body));
    assert_eq!(metrics["versions"][0]["freshness"], "Stale");
    let apps = groups
        .iter()
        .find(|g| g["metadata"]["name"] == "apps")
        .unwrap();
    assert!(
        apps["versions"][0]["resources"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );
    let gv = get("/apis/metrics.k8s.io/v1beta1", "application/json").await;
    assert_eq!(
        (gv.status, gv.content_type.as_deref(), gv.body.as_str()),
        (
            503,
            Some("text/plain; charset=utf-8"),
            Some("service unavailable\n")
        )
    );
    let plain = get("/apis", "application/json").await;
    assert!(
        plain.body["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["name"] == "metrics.k8s.io")),
        "{}",
        plain.body
    );
    sim.shutdown().await;

    let newer = Sim::start(SimConfig {
        version: "1.30.2".into(),
        ..Default::default()
    })
    .await
    .expect("sim starts");
    let r = Replay::new(&newer).await;
    let mut headers = Map::new();
    headers.insert("accept".into(), json!(RECORDER));
    let a = r
        .send("GET", "/apis", &Map::new(), &headers, &Value::Null, None)
        .await;
    assert_eq!(a.body["apiVersion"], "apidiscovery.k8s.io/v2");
    newer.shutdown().await;
}
