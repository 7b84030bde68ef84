//! The aggregator's availability controller: an APIService with a `spec.service` is
//! `Available` only while that Service exists and has an endpoint (an Endpoints object with
//! an address, or a Ready pod its selector selects); an APIService without one is served
//! by the API server itself (`Local`). An unavailable APIService's group stays listed in
//! discovery, but its group-version answers 503 (see `api::discovery`). Written by the
//! manager `Go-http-client`, like the real aggregator's loopback client.

use serde_json::{Value, json};

use super::queue::Queue;
use super::{Ctx, condition, def, keep_transitions, s, set_status_as};
use crate::selector::LabelSelector;
use crate::store::{Store, Writer};

const WRITER: Writer<'static> = Writer {
    manager: "Go-http-client",
    ..Writer::CONTROLLER
};

/// Whether Service `ns/name` has an endpoint.
fn has_endpoints(store: &Store, ns: &str, name: &str) -> bool {
    let from_endpoints = def(store, "", "v1", "endpoints")
        .and_then(|d| store.get(&d.gr(), ns, name).cloned())
        .and_then(|ep| ep.get("subsets").and_then(Value::as_array).cloned())
        .is_some_and(|subsets| {
            subsets.iter().any(|ss| {
                ss.get("addresses")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())
            })
        });
    if from_endpoints {
        return true;
    }
    let (Some(sd), Some(pd)) = (
        def(store, "", "v1", "services"),
        def(store, "", "v1", "pods"),
    ) else {
        return false;
    };
    let Some(selector) = store
        .get(&sd.gr(), ns, name)
        .and_then(|svc| svc.pointer("/spec/selector"))
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .cloned()
    else {
        return false;
    };
    let sel = LabelSelector::from_object(Some(&json!({"matchLabels": selector})), true);
    store
        .list(&pd.gr(), Some(ns))
        .any(|p| sel.matches(p) && super::eviction::pod_ready(p))
}

/// (available, reason, message) of an APIService.
fn availability(store: &Store, svc: &Value) -> (bool, &'static str, String) {
    let Some(reference) = svc.pointer("/spec/service").filter(|v| v.is_object()) else {
        return (
            true,
            "Local",
            "Local APIServices are always available".into(),
        );
    };
    let (ns, name) = (s(reference, "/namespace"), s(reference, "/name"));
    let exists =
        def(store, "", "v1", "services").is_some_and(|d| store.get(&d.gr(), ns, name).is_some());
    if !exists {
        return (
            false,
            "ServiceNotFound",
            format!("service/{name} in \"{ns}\" is not present"),
        );
    }
    if !has_endpoints(store, ns, name) {
        return (
            false,
            "EndpointsNotFound",
            format!("cannot find endpoints for service/{name} in \"{ns}\""),
        );
    }
    (true, "Passed", "all checks passed".into())
}

pub(crate) fn reconcile(store: &mut Store, ctx: &mut Ctx, queue: &mut Queue) {
    let Some(d) = def(store, "apiregistration.k8s.io", "v1", "apiservices") else {
        return;
    };
    let gr = d.gr();
    let keys = queue.take(store, &gr, ctx.now, |ev, keys| {
        // Services, their endpoints and pods decide availability: look at every APIService.
        let relevant = ev.gr.group.is_empty()
            && matches!(ev.gr.plural.as_str(), "services" | "endpoints" | "pods");
        if relevant {
            keys.extend(store.list(&gr, None).map(super::queue::key_of));
        }
    });
    queue.reconcile(store, ctx, &gr, keys, |store, _, svc| {
        let (ok, reason, message) = availability(store, svc);
        let mut conds = vec![condition("Available", ok, reason, &message)];
        keep_transitions(svc.pointer("/status/conditions"), &mut conds);
        set_status_as(store, &d, svc, json!({"conditions": conds}), WRITER);
    });
}

/// The aggregator's priorities of the built-in group versions (`groupPriorityMinimum`,
/// `versionPriority`): discovery lists groups in this order.
fn priority(group: &str, version: &str) -> (i64, i64) {
    match (group, version) {
        ("" | "apiregistration.k8s.io", _) => (18000, if group.is_empty() { 1 } else { 15 }),
        ("apps", _) => (17800, 15),
        ("events.k8s.io", _) => (17750, 15),
        ("authentication.k8s.io", _) => (17700, 15),
        ("authorization.k8s.io", _) => (17600, 15),
        ("autoscaling", "v2") => (17500, 30),
        ("autoscaling", _) => (17500, 15),
        ("batch", _) => (17400, 15),
        ("certificates.k8s.io", _) => (17300, 15),
        ("networking.k8s.io", _) => (17200, 15),
        ("policy", _) => (17100, 15),
        ("rbac.authorization.k8s.io", _) => (17000, 15),
        ("storage.k8s.io", _) => (16800, 15),
        ("admissionregistration.k8s.io" | "apiextensions.k8s.io", _) => (16700, 15),
        ("scheduling.k8s.io", _) => (16600, 15),
        ("coordination.k8s.io", _) => (16500, 15),
        ("node.k8s.io", _) => (16300, 15),
        ("discovery.k8s.io", _) => (16200, 15),
        ("flowcontrol.apiserver.k8s.io", "v1beta3") => (16100, 18),
        ("flowcontrol.apiserver.k8s.io", _) => (16100, 15),
        _ => (1000, 100),
    }
}

/// Creates the APIServices of a fresh cluster: a local one per built-in group version, and
/// one per `unavailable` name (`v1beta1.metrics.k8s.io`) pointing at a Service in
/// `kube-system` that has no endpoint, so it stays unavailable.
pub(crate) fn bootstrap(store: &mut Store, unavailable: &[String]) {
    let (Some(d), Some(sd)) = (
        def(store, "apiregistration.k8s.io", "v1", "apiservices"),
        def(store, "", "v1", "services"),
    ) else {
        return;
    };
    for (group, versions) in store.registry.groups() {
        for version in versions {
            let (gp, vp) = priority(&group, &version);
            let name = format!("{version}.{group}");
            let api = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": name, "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
                "spec": {"group": group, "version": version, "groupPriorityMinimum": gp, "versionPriority": vp}});
            let _ = store.create(&d, api, Writer::CONTROLLER);
        }
    }
    for name in unavailable {
        let Some((version, group)) = name.split_once('.') else {
            continue;
        };
        let service = format!("{}-unavailable", group.replace('.', "-"));
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service, "namespace": "kube-system"},
            "spec": {"ports": [{"port": 443, "targetPort": 4443}]}});
        let _ = store.create(&sd, svc, Writer::CONTROLLER);
        let api = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": name},
            "spec": {"group": group, "version": version, "insecureSkipTLSVerify": true,
                "groupPriorityMinimum": 100, "versionPriority": 100,
                "service": {"namespace": "kube-system", "name": service, "port": 443}}});
        let _ = store.create(&d, api, Writer::CONTROLLER);
    }
}

/// An APIService that is not local and serves `group/version`: (its object, available).
pub(crate) fn aggregated(store: &Store, group: &str, version: &str) -> Option<(Value, bool)> {
    let d = def(store, "apiregistration.k8s.io", "v1", "apiservices")?;
    let svc = store.get(&d.gr(), "", &format!("{version}.{group}"))?;
    svc.pointer("/spec/service").filter(|v| v.is_object())?;
    let available = svc
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| s(c, "/type") == "Available" && s(c, "/status") == "True")
        });
    Some((svc.clone(), available))
}

/// The groups only APIServices serve (not built in, not of a CRD), with their versions,
/// ordered by priority.
pub(crate) fn aggregated_groups(store: &Store) -> Vec<(String, Vec<String>)> {
    let Some(d) = def(store, "apiregistration.k8s.io", "v1", "apiservices") else {
        return Vec::new();
    };
    let served = store.registry.groups();
    let mut found: Vec<(i64, i64, String, String)> = store
        .list(&d.gr(), None)
        .filter(|a| a.pointer("/spec/service").is_some_and(Value::is_object))
        .map(|a| {
            let g = s(a, "/spec/group").to_string();
            let v = s(a, "/spec/version").to_string();
            let gp = a
                .pointer("/spec/groupPriorityMinimum")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let vp = a
                .pointer("/spec/versionPriority")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            (gp, vp, g, v)
        })
        .filter(|(_, _, g, _)| !served.iter().any(|(sg, _)| sg == g))
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (_, _, g, v) in found {
        match out.iter_mut().find(|(x, _)| *x == g) {
            Some((_, vs)) => vs.push(v),
            None => out.push((g, vec![v])),
        }
    }
    out
}
