//! Health: whether a live object has rolled out, judged from its own JSON.
//!
//! The rules follow `kubectl rollout status` for workloads and the `Established` condition for
//! CRDs; every other kind is healthy as soon as it exists. [`pod_problem`] names why a
//! workload's pods are not ready, for status messages.
//!
//! Pure: callers fetch the objects. Odd JSON never panics: a missing or mistyped field counts as
//! 0, absent or "not yet".

use serde_json::Value;

/// Rollout state of one live object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectHealth {
    /// Rolled out (or a kind without a rollout).
    Healthy,
    /// Not there yet; the message says what is awaited. Coming back later may help.
    Progressing(String),
    /// Will not get there without a change (e.g. a progress deadline passed, a Job failed).
    Failed(String),
}

/// The health of a live object, by its `apiVersion` group and `kind`.
///
/// - `apps` Deployment, StatefulSet, DaemonSet: rolled out as `kubectl rollout status` reads it.
/// - `batch` Job: `Complete` condition.
/// - `apiextensions.k8s.io` CustomResourceDefinition: `Established` condition.
/// - anything else: [`ObjectHealth::Healthy`] (existence is enough).
pub fn object_health(obj: &Value) -> ObjectHealth {
    let group = match str_at(obj, &["apiVersion"]).split_once('/') {
        Some((group, _)) => group,
        None => "",
    };
    match (group, str_at(obj, &["kind"])) {
        ("apps", "Deployment") => deployment(obj),
        ("apps", "StatefulSet") => stateful_set(obj),
        ("apps", "DaemonSet") => daemon_set(obj),
        ("batch", "Job") => job(obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(obj),
        _ => ObjectHealth::Healthy,
    }
}

fn deployment(d: &Value) -> ObjectHealth {
    let name = display_name(d);
    // kubectl checks the deadline first: a Deployment past it stays "progressing" forever.
    if let Some(c) = condition(d, "Progressing")
        && c.status == "False"
        && c.reason == "ProgressDeadlineExceeded"
    {
        return ObjectHealth::Failed(format!(
            "{name}: progress deadline exceeded: {}",
            or_default(c.message, "no message")
        ));
    }
    if let Some(waiting) = generation_pending(d, &name) {
        return waiting;
    }
    let replicas = int_at(d, &["spec", "replicas"]).unwrap_or(1);
    let updated = int_at(d, &["status", "updatedReplicas"]).unwrap_or(0);
    let total = int_at(d, &["status", "replicas"]).unwrap_or(0);
    let available = int_at(d, &["status", "availableReplicas"]).unwrap_or(0);
    let paused = if bool_at(d, &["spec", "paused"]) {
        " (the Deployment is paused)"
    } else {
        ""
    };
    if updated != replicas {
        return ObjectHealth::Progressing(format!(
            "{name}: {updated} of {replicas} replicas updated{paused}"
        ));
    }
    if total > replicas {
        // Old replicas still running (or, while scaling down, extra ones terminating).
        let old = total - replicas;
        return ObjectHealth::Progressing(format!(
            "{name}: {old} old replicas pending termination{paused}"
        ));
    }
    if total < replicas {
        return ObjectHealth::Progressing(format!(
            "{name}: {total} of {replicas} replicas exist{paused}"
        ));
    }
    if available != replicas {
        return ObjectHealth::Progressing(format!(
            "{name}: {available} of {replicas} updated replicas available{paused}"
        ));
    }
    ObjectHealth::Healthy
}

fn stateful_set(s: &Value) -> ObjectHealth {
    let name = display_name(s);
    if let Some(waiting) = generation_pending(s, &name) {
        return waiting;
    }
    let replicas = int_at(s, &["spec", "replicas"]).unwrap_or(1);
    let ready = int_at(s, &["status", "readyReplicas"]).unwrap_or(0);
    let updated = int_at(s, &["status", "updatedReplicas"]).unwrap_or(0);
    let strategy = str_at(s, &["spec", "updateStrategy", "type"]);
    if ready != replicas {
        return ObjectHealth::Progressing(format!("{name}: {ready} of {replicas} replicas ready"));
    }
    if strategy == "OnDelete" {
        // Pods change only when someone deletes them: waiting for updates would never end.
        return ObjectHealth::Healthy;
    }
    // With a partition only ordinals >= partition are updated; the rest keep the old revision
    // by design, and the revisions only converge once the partition is lowered.
    let partition = int_at(s, &["spec", "updateStrategy", "rollingUpdate", "partition"])
        .unwrap_or(0)
        .clamp(0, replicas.max(0));
    let want_updated = replicas - partition;
    if updated < want_updated {
        return ObjectHealth::Progressing(format!(
            "{name}: {updated} of {want_updated} replicas updated"
        ));
    }
    if partition > 0 {
        return ObjectHealth::Healthy;
    }
    let current = str_at(s, &["status", "currentRevision"]);
    let update = str_at(s, &["status", "updateRevision"]);
    if !current.is_empty() && !update.is_empty() && current != update {
        return ObjectHealth::Progressing(format!(
            "{name}: rolling update to revision {update} not complete"
        ));
    }
    ObjectHealth::Healthy
}

fn daemon_set(d: &Value) -> ObjectHealth {
    let name = display_name(d);
    if let Some(waiting) = generation_pending(d, &name) {
        return waiting;
    }
    let desired = int_at(d, &["status", "desiredNumberScheduled"]).unwrap_or(0);
    let updated = int_at(d, &["status", "updatedNumberScheduled"]).unwrap_or(0);
    let available = int_at(d, &["status", "numberAvailable"]).unwrap_or(0);
    let on_delete = str_at(d, &["spec", "updateStrategy", "type"]) == "OnDelete";
    // Nodes come and go while a DaemonSet rolls: more updated or available pods than desired
    // is a node that just left, not a rollout in progress, hence `<` rather than `!=`.
    if !on_delete && updated < desired {
        return ObjectHealth::Progressing(format!(
            "{name}: {updated} of {desired} scheduled pods updated"
        ));
    }
    if available < desired {
        return ObjectHealth::Progressing(format!(
            "{name}: {available} of {desired} scheduled pods available"
        ));
    }
    ObjectHealth::Healthy
}

fn job(j: &Value) -> ObjectHealth {
    let name = display_name(j);
    if condition(j, "Complete").is_some_and(|c| c.status == "True") {
        return ObjectHealth::Healthy;
    }
    if let Some(c) = condition(j, "Failed").filter(|c| c.status == "True") {
        return ObjectHealth::Failed(format!(
            "{name}: {}: {}",
            or_default(c.reason, "Failed"),
            or_default(c.message, "no message")
        ));
    }
    let active = int_at(j, &["status", "active"]).unwrap_or(0);
    let succeeded = int_at(j, &["status", "succeeded"]).unwrap_or(0);
    let failed = int_at(j, &["status", "failed"]).unwrap_or(0);
    let suspended = if bool_at(j, &["spec", "suspend"]) {
        " (the Job is suspended)"
    } else {
        ""
    };
    ObjectHealth::Progressing(format!(
        "{name}: not complete: {active} active, {succeeded} succeeded, {failed} failed{suspended}"
    ))
}

fn crd(c: &Value) -> ObjectHealth {
    let name = display_name(c);
    if condition(c, "Established").is_some_and(|c| c.status == "True") {
        return ObjectHealth::Healthy;
    }
    if let Some(names) = condition(c, "NamesAccepted").filter(|c| c.status == "False") {
        return ObjectHealth::Failed(format!(
            "{name}: names not accepted: {}",
            or_default(names.message, or_default(names.reason, "no message"))
        ));
    }
    ObjectHealth::Progressing(format!("{name}: not established yet"))
}

/// Why a pod is not ready, when it says so: a container waiting for a reason that needs a person
/// (`CrashLoopBackOff`, `ImagePullBackOff`, ...), a container that exited non-zero, an
/// unschedulable pod, or a failed pod. `None` when the pod gives no such reason (it may simply
/// still be starting).
///
/// Init containers are looked at first: while one of them fails, the app containers only wait
/// with `PodInitializing`.
pub fn pod_problem(pod: &Value) -> Option<String> {
    let name = str_at(pod, &["metadata", "name"]);
    let pod_name = if name.is_empty() { "?" } else { name };
    let lists = [
        ("initContainerStatuses", "init container"),
        ("containerStatuses", "container"),
    ];
    for (list, what) in lists {
        let statuses = pod
            .get("status")
            .and_then(|s| s.get(list))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for status in statuses {
            if let Some(problem) = container_problem(status) {
                let container = str_at(status, &["name"]);
                return Some(format!("pod {pod_name}: {what} {container}: {problem}"));
            }
        }
    }
    if let Some(c) = condition(pod, "PodScheduled").filter(|c| c.status == "False") {
        return Some(format!(
            "pod {pod_name}: {}: {}",
            or_default(c.reason, "Unschedulable"),
            or_default(c.message, "no message")
        ));
    }
    if str_at(pod, &["status", "phase"]) == "Failed" {
        let reason = or_default(str_at(pod, &["status", "reason"]), "Failed");
        let message = str_at(pod, &["status", "message"]);
        return Some(if message.is_empty() {
            format!("pod {pod_name}: {reason}")
        } else {
            format!("pod {pod_name}: {reason}: {message}")
        });
    }
    None
}

/// Waiting reasons that are part of every normal start, not problems.
const BENIGN_WAITING: &[&str] = &["ContainerCreating", "PodInitializing"];

fn container_problem(status: &Value) -> Option<String> {
    let state = status.get("state")?;
    if let Some(waiting) = state.get("waiting") {
        let reason = str_at(waiting, &["reason"]);
        if !reason.is_empty() && !BENIGN_WAITING.contains(&reason) {
            let message = str_at(waiting, &["message"]);
            return Some(if message.is_empty() {
                reason.to_owned()
            } else {
                format!("{reason}: {message}")
            });
        }
    }
    if let Some(terminated) = state.get("terminated") {
        let code = int_at(terminated, &["exitCode"]).unwrap_or(0);
        if code != 0 {
            let reason = or_default(str_at(terminated, &["reason"]), "Error");
            let message = str_at(terminated, &["message"]);
            return Some(if message.is_empty() {
                format!("{reason}: exit code {code}")
            } else {
                format!("{reason}: exit code {code}: {message}")
            });
        }
    }
    None
}

/// `Progressing` while the controller has not yet seen the latest spec: every count in the
/// status describes an older generation until it has.
fn generation_pending(obj: &Value, name: &str) -> Option<ObjectHealth> {
    let generation = int_at(obj, &["metadata", "generation"]).unwrap_or(0);
    let observed = int_at(obj, &["status", "observedGeneration"]).unwrap_or(0);
    (observed < generation).then(|| {
        ObjectHealth::Progressing(format!(
            "{name}: generation {generation} not yet observed by its controller"
        ))
    })
}

/// `Kind ns/name` or `Kind name`, as status messages name objects.
fn display_name(obj: &Value) -> String {
    let kind = or_default(str_at(obj, &["kind"]), "object");
    let name = str_at(obj, &["metadata", "name"]);
    match str_at(obj, &["metadata", "namespace"]) {
        "" => format!("{kind} {name}"),
        ns => format!("{kind} {ns}/{name}"),
    }
}

/// The parts of a status condition this module reads; absent fields are empty strings.
struct Condition<'a> {
    status: &'a str,
    reason: &'a str,
    message: &'a str,
}

/// The first condition of `type_` in `status.conditions`.
fn condition<'a>(obj: &'a Value, type_: &str) -> Option<Condition<'a>> {
    obj.get("status")?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| str_at(c, &["type"]) == type_)
        .map(|c| Condition {
            status: str_at(c, &["status"]),
            reason: str_at(c, &["reason"]),
            message: str_at(c, &["message"]),
        })
}

fn value_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |at, key| at.get(key))
}

/// The string at `path`, or `""` when absent or not a string.
fn str_at<'a>(obj: &'a Value, path: &[&str]) -> &'a str {
    value_at(obj, path).and_then(Value::as_str).unwrap_or("")
}

/// The integer at `path`; a float is truncated, anything else is `None`.
fn int_at(obj: &Value, path: &[&str]) -> Option<i64> {
    let v = value_at(obj, path)?;
    v.as_i64().or_else(|| {
        // Counts never approach i64::MAX; `as` saturates for absurd values instead of panicking.
        v.as_f64().map(|f| f as i64)
    })
}

fn bool_at(obj: &Value, path: &[&str]) -> bool {
    value_at(obj, path)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn or_default<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn progressing(h: &ObjectHealth) -> &str {
        match h {
            ObjectHealth::Progressing(m) => m,
            other => panic!("expected Progressing, got {other:?}"),
        }
    }

    fn failed(h: &ObjectHealth) -> &str {
        match h {
            ObjectHealth::Failed(m) => m,
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    fn deployment(spec_replicas: Option<i64>, status: Value) -> Value {
        let mut spec = json!({});
        if let Some(r) = spec_replicas {
            spec = json!({"replicas": r});
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "metrics", "namespace": "monitoring", "generation": 3},
            "spec": spec,
            "status": status,
        })
    }

    #[test]
    fn a_rolled_out_deployment_is_healthy() {
        let d = deployment(
            Some(2),
            json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2,
                   "readyReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(object_health(&d), ObjectHealth::Healthy);
    }

    #[test]
    fn deployment_replicas_default_to_one() {
        let d = deployment(
            None,
            json!({"observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
        );
        assert_eq!(object_health(&d), ObjectHealth::Healthy);
        let d = deployment(None, json!({"observedGeneration": 3}));
        assert_eq!(
            progressing(&object_health(&d)),
            "Deployment monitoring/metrics: 0 of 1 replicas updated"
        );
    }

    #[test]
    fn deployment_progress_cases() {
        let cases = [
            (
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
                "Deployment monitoring/metrics: generation 3 not yet observed by its controller",
            ),
            (
                json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}),
                "Deployment monitoring/metrics: 1 of 2 replicas updated",
            ),
            (
                json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
                "Deployment monitoring/metrics: 1 old replicas pending termination",
            ),
            (
                json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
                "Deployment monitoring/metrics: 1 of 2 updated replicas available",
            ),
            (
                json!({}),
                "Deployment monitoring/metrics: generation 3 not yet observed by its controller",
            ),
        ];
        for (status, want) in cases {
            let d = deployment(Some(2), status);
            assert_eq!(progressing(&object_health(&d)), want);
        }
    }

    #[test]
    fn deployment_scaled_to_zero_is_healthy_once_pods_are_gone() {
        let d = deployment(Some(0), json!({"observedGeneration": 3}));
        assert_eq!(object_health(&d), ObjectHealth::Healthy);
        let d = deployment(
            Some(0),
            json!({"observedGeneration": 3, "replicas": 1, "availableReplicas": 1}),
        );
        assert!(matches!(object_health(&d), ObjectHealth::Progressing(_)));
    }

    #[test]
    fn deployment_past_its_progress_deadline_failed() {
        let d = deployment(
            Some(2),
            json!({
                "observedGeneration": 3, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2,
                "conditions": [
                    {"type": "Available", "status": "True"},
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                     "message": "ReplicaSet \"metrics-7d9\" has timed out progressing."}
                ]
            }),
        );
        assert_eq!(
            failed(&object_health(&d)),
            "Deployment monitoring/metrics: progress deadline exceeded: ReplicaSet \"metrics-7d9\" has timed out progressing."
        );
    }

    #[test]
    fn a_progressing_condition_for_another_reason_is_not_a_failure() {
        let d = deployment(
            Some(1),
            json!({"observedGeneration": 3, "conditions": [
                {"type": "Progressing", "status": "False", "reason": "Something"}]}),
        );
        assert!(matches!(object_health(&d), ObjectHealth::Progressing(_)));
    }

    #[test]
    fn a_paused_deployment_says_so() {
        let mut d = deployment(Some(1), json!({"observedGeneration": 3}));
        d["spec"]["paused"] = json!(true);
        assert!(progressing(&object_health(&d)).ends_with("(the Deployment is paused)"));
    }

    fn stateful_set(spec: Value, status: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "data", "generation": 2},
            "spec": spec,
            "status": status,
        })
    }

    #[test]
    fn stateful_set_cases() {
        let done = json!({"observedGeneration": 2, "replicas": 3, "readyReplicas": 3,
                          "updatedReplicas": 3, "currentRevision": "db-2", "updateRevision": "db-2"});
        assert_eq!(
            object_health(&stateful_set(json!({"replicas": 3}), done)),
            ObjectHealth::Healthy
        );

        let cases = [
            (
                json!({"observedGeneration": 1}),
                "StatefulSet data/db: generation 2 not yet observed by its controller",
            ),
            (
                json!({"observedGeneration": 2, "readyReplicas": 2, "updatedReplicas": 3}),
                "StatefulSet data/db: 2 of 3 replicas ready",
            ),
            (
                json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 1}),
                "StatefulSet data/db: 1 of 3 replicas updated",
            ),
            (
                json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3,
                       "currentRevision": "db-1", "updateRevision": "db-2"}),
                "StatefulSet data/db: rolling update to revision db-2 not complete",
            ),
        ];
        for (status, want) in cases {
            let s = stateful_set(json!({"replicas": 3}), status);
            assert_eq!(progressing(&object_health(&s)), want);
        }
    }

    #[test]
    fn stateful_set_revisions_count_only_when_both_are_present() {
        let s = stateful_set(
            json!({"replicas": 1}),
            json!({"observedGeneration": 2, "readyReplicas": 1, "updatedReplicas": 1,
                   "updateRevision": "db-2"}),
        );
        assert_eq!(object_health(&s), ObjectHealth::Healthy);
    }

    #[test]
    fn stateful_set_partition_counts_only_ordinals_above_it() {
        let spec = json!({"replicas": 4, "updateStrategy":
            {"type": "RollingUpdate", "rollingUpdate": {"partition": 3}}});
        // Ordinal 3 updated; 0..2 stay on the old revision by design.
        let s = stateful_set(
            spec.clone(),
            json!({"observedGeneration": 2, "readyReplicas": 4, "updatedReplicas": 1,
                   "currentRevision": "db-1", "updateRevision": "db-2"}),
        );
        assert_eq!(object_health(&s), ObjectHealth::Healthy);
        let s = stateful_set(
            spec,
            json!({"observedGeneration": 2, "readyReplicas": 4, "updatedReplicas": 0,
                   "currentRevision": "db-1", "updateRevision": "db-2"}),
        );
        assert_eq!(
            progressing(&object_health(&s)),
            "StatefulSet data/db: 0 of 1 replicas updated"
        );
        // A partition above the replica count updates nothing.
        let s = stateful_set(
            json!({"replicas": 2, "updateStrategy": {"rollingUpdate": {"partition": 5}}}),
            json!({"observedGeneration": 2, "readyReplicas": 2}),
        );
        assert_eq!(object_health(&s), ObjectHealth::Healthy);
    }

    #[test]
    fn stateful_set_on_delete_needs_only_ready_pods() {
        let s = stateful_set(
            json!({"replicas": 2, "updateStrategy": {"type": "OnDelete"}}),
            json!({"observedGeneration": 2, "readyReplicas": 2, "updatedReplicas": 0,
                   "currentRevision": "db-1", "updateRevision": "db-2"}),
        );
        assert_eq!(object_health(&s), ObjectHealth::Healthy);
    }

    fn daemon_set(strategy: &str, status: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "kube-system", "generation": 5},
            "spec": {"updateStrategy": {"type": strategy}},
            "status": status,
        })
    }

    #[test]
    fn daemon_set_cases() {
        let ok = daemon_set(
            "RollingUpdate",
            json!({"observedGeneration": 5, "desiredNumberScheduled": 3,
                   "updatedNumberScheduled": 3, "numberAvailable": 3}),
        );
        assert_eq!(object_health(&ok), ObjectHealth::Healthy);
        let cases = [
            (
                json!({"observedGeneration": 4, "desiredNumberScheduled": 3}),
                "DaemonSet kube-system/agent: generation 5 not yet observed by its controller",
            ),
            (
                json!({"observedGeneration": 5, "desiredNumberScheduled": 3,
                       "updatedNumberScheduled": 2, "numberAvailable": 3}),
                "DaemonSet kube-system/agent: 2 of 3 scheduled pods updated",
            ),
            (
                json!({"observedGeneration": 5, "desiredNumberScheduled": 3,
                       "updatedNumberScheduled": 3, "numberAvailable": 1}),
                "DaemonSet kube-system/agent: 1 of 3 scheduled pods available",
            ),
        ];
        for (status, want) in cases {
            let d = daemon_set("RollingUpdate", status);
            assert_eq!(progressing(&object_health(&d)), want);
        }
    }

    #[test]
    fn daemon_set_on_no_nodes_and_on_delete() {
        let none = daemon_set(
            "RollingUpdate",
            json!({"observedGeneration": 5, "desiredNumberScheduled": 0}),
        );
        assert_eq!(object_health(&none), ObjectHealth::Healthy);
        let on_delete = daemon_set(
            "OnDelete",
            json!({"observedGeneration": 5, "desiredNumberScheduled": 2,
                   "updatedNumberScheduled": 0, "numberAvailable": 2}),
        );
        assert_eq!(object_health(&on_delete), ObjectHealth::Healthy);
    }

    fn job(conditions: Value) -> Value {
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "migrate", "namespace": "app"},
            "status": {"active": 1, "conditions": conditions},
        })
    }

    #[test]
    fn job_cases() {
        assert_eq!(
            object_health(&job(json!([{"type": "Complete", "status": "True"}]))),
            ObjectHealth::Healthy
        );
        assert_eq!(
            failed(&object_health(&job(
                json!([{"type": "Failed", "status": "True",
                "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}])
            ))),
            "Job app/migrate: BackoffLimitExceeded: Job has reached the specified backoff limit"
        );
        assert_eq!(
            progressing(&object_health(&job(json!([])))),
            "Job app/migrate: not complete: 1 active, 0 succeeded, 0 failed"
        );
        // Complete=False is not complete.
        assert!(matches!(
            object_health(&job(json!([{"type": "Complete", "status": "False"}]))),
            ObjectHealth::Progressing(_)
        ));
    }

    fn crd(conditions: Value) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "status": {"conditions": conditions},
        })
    }

    #[test]
    fn crd_cases() {
        assert_eq!(
            object_health(&crd(json!([
                {"type": "NamesAccepted", "status": "True"},
                {"type": "Established", "status": "True"}]))),
            ObjectHealth::Healthy
        );
        assert_eq!(
            failed(&object_health(&crd(
                json!([{"type": "NamesAccepted", "status": "False",
                "reason": "ListKindConflict", "message": "\"WidgetList\" is already in use"}])
            ))),
            "CustomResourceDefinition widgets.example.com: names not accepted: \"WidgetList\" is already in use"
        );
        assert_eq!(
            progressing(&object_health(&crd(json!([])))),
            "CustomResourceDefinition widgets.example.com: not established yet"
        );
    }

    #[test]
    fn other_kinds_are_healthy_when_they_exist() {
        for obj in [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
            json!({"apiVersion": "v1", "kind": "Service"}),
            // A Deployment-named kind of another group is not a Deployment.
            json!({"apiVersion": "example.com/v1", "kind": "Deployment"}),
            // The core group has no Deployment either.
            json!({"apiVersion": "v1", "kind": "Deployment"}),
        ] {
            assert_eq!(object_health(&obj), ObjectHealth::Healthy, "{obj}");
        }
    }

    #[test]
    fn odd_json_never_panics() {
        let odd = [
            json!(null),
            json!(42),
            json!("Deployment"),
            json!([]),
            json!({"apiVersion": 5, "kind": "Deployment"}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": "x", "spec": [],
                   "status": {"conditions": "x", "replicas": "2"}}),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"replicas": -3,
                   "updateStrategy": {"rollingUpdate": {"partition": 1e300}}}}),
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "status": {"desiredNumberScheduled": 1.5}}),
            json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"conditions": [1, null, {"type": 3}]}}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "status": null}),
        ];
        for obj in odd {
            let _ = object_health(&obj);
            let _ = pod_problem(&obj);
        }
        assert_eq!(
            progressing(&object_health(
                &json!({"apiVersion": "apps/v1", "kind": "Deployment"})
            )),
            "Deployment : 0 of 1 replicas updated"
        );
    }

    fn pod(status: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "metrics-7d9-x2"}, "status": status})
    }

    #[test]
    fn pod_problem_names_a_waiting_container() {
        let p = pod(json!({"containerStatuses": [
            {"name": "sidecar", "state": {"running": {}}},
            {"name": "metrics", "state": {"waiting": {"reason": "CrashLoopBackOff",
                "message": "back-off restarting failed container"}}},
        ]}));
        assert_eq!(
            pod_problem(&p).as_deref(),
            Some(
                "pod metrics-7d9-x2: container metrics: CrashLoopBackOff: back-off restarting failed container"
            )
        );
    }

    #[test]
    fn pod_problem_without_a_message() {
        let p = pod(json!({"containerStatuses": [
            {"name": "metrics", "state": {"waiting": {"reason": "ErrImagePull"}}}]}));
        assert_eq!(
            pod_problem(&p).as_deref(),
            Some("pod metrics-7d9-x2: container metrics: ErrImagePull")
        );
    }

    #[test]
    fn pod_problem_looks_at_init_containers_first() {
        let p = pod(json!({
            "initContainerStatuses": [{"name": "setup", "state": {"waiting": {
                "reason": "ImagePullBackOff", "message": "Back-off pulling image \"x:1\""}}}],
            "containerStatuses": [{"name": "metrics", "state": {"waiting": {"reason": "PodInitializing"}}}],
        }));
        assert_eq!(
            pod_problem(&p).as_deref(),
            Some(
                "pod metrics-7d9-x2: init container setup: ImagePullBackOff: Back-off pulling image \"x:1\""
            )
        );
    }

    #[test]
    fn pod_problem_names_a_non_zero_exit() {
        let p = pod(json!({"containerStatuses": [
            {"name": "job", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "metrics", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}},
        ]}));
        assert_eq!(
            pod_problem(&p).as_deref(),
            Some("pod metrics-7d9-x2: container metrics: OOMKilled: exit code 137")
        );
    }

    #[test]
    fn pod_problem_names_an_unschedulable_pod() {
        let p = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient cpu."}]}),
        );
        assert_eq!(
            pod_problem(&p).as_deref(),
            Some("pod metrics-7d9-x2: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.")
        );
    }

    #[test]
    fn pod_problem_names_a_failed_pod() {
        let p = pod(json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."}));
        assert_eq!(
            pod_problem(&p).as_deref(),
            Some("pod metrics-7d9-x2: Evicted: The node was low on resource: memory.")
        );
    }

    #[test]
    fn a_starting_or_running_pod_has_no_problem() {
        for status in [
            json!({}),
            json!({"phase": "Pending", "containerStatuses": [
                {"name": "m", "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
            json!({"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}],
                   "containerStatuses": [{"name": "m", "ready": false, "state": {"running": {}}}]}),
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}),
        ] {
            assert_eq!(pod_problem(&pod(status.clone())), None, "{status}");
        }
    }
}
