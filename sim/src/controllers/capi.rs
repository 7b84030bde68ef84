//! Cluster API: the `KubeadmControlPlane` and `MachineDeployment` CRDs and one object of each
//! per cluster / node group (namespace `SimConfig::capi_namespace`), and their simulated
//! controllers. A changed `KubeadmControlPlane.spec.version` upgrades the control plane (one
//! minor at a time; skips and downgrades are refused in the status); a changed
//! `MachineDeployment.spec.template.spec.version` replaces the group's nodes one by one (surge
//! one new node, cordon and drain an old one through the eviction rules, delete it). A kubelet
//! never gets newer than the control plane.

use serde_json::{Value, json};

use super::eviction;
use super::nodes;
use super::queue::{Queue, key_of};
use super::{Ctx, condition, def, durations, i, keep_transitions, s, set_status, write};
use crate::labels::{CLUSTER_NAME, DEPLOYMENT_NAME, NODE_GROUP};
use crate::registry::ResourceDef;
use crate::store::{Store, Writer};
use crate::{SimConfig, Version};

pub(crate) const KCP_GROUP: &str = "controlplane.cluster.x-k8s.io";
pub(crate) const MD_GROUP: &str = "cluster.x-k8s.io";
pub(crate) const VERSION: &str = "v1beta1";
const DRAINING: &str = "sim.tidemark.dev/draining";

fn crd(group: &str, kind: &str, plural: &str, short: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural, "singular": kind.to_lowercase(), "shortNames": [short], "categories": ["cluster-api"]},
            "versions": [{
                "name": VERSION, "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    })
}

/// The name of the KubeadmControlPlane of a cluster: the cluster's name.
pub(crate) fn kcp_name(cluster: &str) -> String {
    cluster.to_string()
}

/// The name of the MachineDeployment of a node group: `<cluster>-<group>`.
pub(crate) fn md_name(cluster: &str, group: &str) -> String {
    format!("{cluster}-{group}")
}

/// Installs the CRDs and creates the KubeadmControlPlane and one MachineDeployment per group.
pub(crate) fn bootstrap(store: &mut Store, config: &SimConfig, version: Version) {
    let Some(crd_def) = def(
        store,
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
    ) else {
        return;
    };
    for c in [
        crd(
            KCP_GROUP,
            "KubeadmControlPlane",
            "kubeadmcontrolplanes",
            "kcp",
        ),
        crd(MD_GROUP, "MachineDeployment", "machinedeployments", "md"),
    ] {
        // A cluster that has been running: its CRDs are Established.
        if let Ok(created) = store.create(&crd_def, c, Writer::CONTROLLER) {
            super::crds::establish(store, &crd_def, &created);
        }
    }
    let ns = &config.capi_namespace;
    let cluster = &config.cluster_name;
    if let Some(d) = def(store, KCP_GROUP, VERSION, "kubeadmcontrolplanes") {
        let kcp = json!({
            "apiVersion": format!("{KCP_GROUP}/{VERSION}"), "kind": "KubeadmControlPlane",
            "metadata": {"name": kcp_name(cluster), "namespace": ns, "labels": {CLUSTER_NAME: cluster}},
            "spec": {"replicas": 3, "version": format!("v{version}"),
                "machineTemplate": {"infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "SimMachineTemplate", "name": format!("{cluster}-control-plane")}},
                "kubeadmConfigSpec": {}},
            "status": {"version": format!("v{version}"), "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "unavailableReplicas": 0, "ready": true, "initialized": true},
        });
        let _ = store.create(&d, kcp, Writer::CONTROLLER);
    }
    if let Some(d) = def(store, MD_GROUP, VERSION, "machinedeployments") {
        for (group, count) in &config.node_groups {
            let version = config.group_version(group).unwrap_or(version);
            let name = md_name(cluster, group);
            let md = json!({
                "apiVersion": format!("{MD_GROUP}/{VERSION}"), "kind": "MachineDeployment",
                "metadata": {"name": name, "namespace": ns, "labels": {CLUSTER_NAME: cluster}},
                "spec": {
                    "clusterName": cluster, "replicas": count,
                    "selector": {"matchLabels": {DEPLOYMENT_NAME: name}},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                    "template": {
                        "metadata": {"labels": {DEPLOYMENT_NAME: name, CLUSTER_NAME: cluster, NODE_GROUP: group}},
                        "spec": {"clusterName": cluster, "version": format!("v{version}"),
                            "bootstrap": {"configRef": {"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "KubeadmConfigTemplate", "name": group}},
                            "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "SimMachineTemplate", "name": group}},
                    },
                },
                "status": {"replicas": count, "updatedReplicas": count, "readyReplicas": count, "availableReplicas": count, "unavailableReplicas": 0, "phase": "Running"},
            });
            let _ = store.create(&d, md, Writer::CONTROLLER);
        }
    }
}

/// Why a control-plane target version is refused, if it is.
pub(crate) fn control_plane_refusal(current: Version, target: Version) -> Option<String> {
    if target < current {
        Some(format!(
            "cannot downgrade the control plane from v{current} to v{target}"
        ))
    } else if target.major != current.major || target.minor > current.minor + 1 {
        Some(format!(
            "cannot upgrade the control plane from v{current} to v{target}: it moves one minor version at a time"
        ))
    } else {
        None
    }
}

/// Why a node-group target version is refused, if it is.
pub(crate) fn node_group_refusal(
    control_plane: Version,
    lowest: Option<Version>,
    target: Version,
) -> Option<String> {
    if target > control_plane {
        Some(format!(
            "kubelet version v{target} would be newer than the control plane v{control_plane}"
        ))
    } else if lowest.is_some_and(|l| target < l) {
        Some(format!("cannot downgrade nodes to v{target}"))
    } else {
        None
    }
}

/// What the Cluster API controllers remember between ticks.
#[derive(Default)]
pub(crate) struct Queues {
    control_planes: Queue,
    machine_deployments: Queue,
    /// The control plane's version when the MachineDeployments were last looked at.
    cp: Option<Version>,
}

pub(crate) fn reconcile(store: &mut Store, ctx: &mut Ctx, queues: &mut Queues) {
    control_plane(store, ctx, &mut queues.control_planes);
    machine_deployments(store, ctx, queues);
}

fn control_plane(store: &mut Store, ctx: &mut Ctx, queue: &mut Queue) {
    let Some(d) = def(store, KCP_GROUP, VERSION, "kubeadmcontrolplanes") else {
        return;
    };
    let gr = d.gr();
    let keys = queue.take(store, &gr, ctx.now, |_, _| {});
    queue.reconcile(store, ctx, &gr, keys, |store, ctx, kcp| {
        control_plane_status(store, ctx, &d, kcp);
    });
}

/// Upgrades the control plane to `spec.version` over time, and reports where it is.
fn control_plane_status(store: &mut Store, ctx: &mut Ctx, d: &ResourceDef, kcp: &Value) {
    let cp = ctx.shared.cp_version();
    let replicas = kcp
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(3);
    let spec_version = s(kcp, "/spec/version").to_string();
    let uid = s(kcp, "/metadata/uid").to_string();
    let mut updated = replicas;
    let mut conds;
    match Version::parse(&spec_version) {
        None => {
            conds = vec![
                condition("Ready", true, "", ""),
                condition(
                    "MachinesSpecUpToDate",
                    false,
                    "InvalidVersion",
                    &format!("spec.version {spec_version:?} is not a version"),
                ),
            ];
        }
        Some(target) if target == cp => {
            conds = vec![
                condition("Ready", true, "", ""),
                condition("MachinesSpecUpToDate", true, "", ""),
            ];
        }
        Some(target) => match control_plane_refusal(cp, target) {
            Some(msg) => {
                ctx.report(
                    store,
                    &format!("kcp/{uid}"),
                    kcp,
                    "Warning",
                    "UpgradeRejected",
                    &msg,
                );
                conds = vec![
                    condition("Ready", true, "", ""),
                    condition("MachinesSpecUpToDate", false, "UpgradeRejected", &msg),
                ];
            }
            None => {
                let key = format!("kcp-upgrade/{uid}/{target}");
                let msg = format!("upgrading the control plane from v{cp} to v{target}");
                ctx.report(
                    store,
                    &format!("kcp/{uid}"),
                    kcp,
                    "Normal",
                    "UpgradeStarted",
                    &msg,
                );
                let total = ctx.shared.scaled(durations::CONTROL_PLANE_UPGRADE);
                let frac = ctx.since(&key).as_secs_f64() / total.as_secs_f64().max(1e-6);
                if frac >= 1.0 {
                    *ctx.shared
                        .control_plane
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = target;
                    ctx.forget(&key);
                    ctx.report(
                        store,
                        &format!("kcp/{uid}"),
                        kcp,
                        "Normal",
                        "UpgradeCompleted",
                        &format!("the control plane is at v{target}"),
                    );
                    conds = vec![
                        condition("Ready", true, "", ""),
                        condition("MachinesSpecUpToDate", true, "", ""),
                    ];
                } else {
                    // The upgrade progresses with time: look again on the next tick.
                    ctx.requeue();
                    updated = ((frac * replicas as f64) as i64).min(replicas - 1);
                    conds = vec![
                        condition("Ready", true, "", ""),
                        condition(
                            "MachinesSpecUpToDate",
                            false,
                            "RollingUpdateInProgress",
                            &format!(
                                "Rolling {replicas} replicas with outdated spec ({} replicas up to date)",
                                updated
                            ),
                        ),
                    ];
                }
            }
        },
    }
    keep_transitions(kcp.pointer("/status/conditions"), &mut conds);
    let now_cp = ctx.shared.cp_version();
    let status = json!({
        "version": format!("v{now_cp}"), "replicas": replicas, "updatedReplicas": updated,
        "readyReplicas": replicas, "unavailableReplicas": 0, "ready": true, "initialized": true,
        "observedGeneration": i(kcp, "/metadata/generation"), "conditions": conds,
        "selector": format!("{CLUSTER_NAME}={},cluster.x-k8s.io/control-plane", s(kcp, "/metadata/labels/cluster.x-k8s.io~1cluster-name")),
    });
    set_status(store, d, kcp, status);
}

/// The node group of a MachineDeployment: its template's `tidemark.dev/node-group` label,
/// else its name.
pub(crate) fn group_of(md: &Value) -> String {
    md.pointer("/spec/template/metadata/labels")
        .and_then(|l| l.get(NODE_GROUP))
        .and_then(Value::as_str)
        .unwrap_or(s(md, "/metadata/name"))
        .to_string()
}

fn machine_deployments(store: &mut Store, ctx: &mut Ctx, queues: &mut Queues) {
    let Some(d) = def(store, MD_GROUP, VERSION, "machinedeployments") else {
        return;
    };
    let gr = d.gr();
    let cp = ctx.shared.cp_version();
    let cp_changed = queues.cp.replace(cp) != Some(cp);
    let queue = &mut queues.machine_deployments;
    let mut keys = queue.take(store, &gr, ctx.now, |ev, keys| {
        // A node of a group came, went or changed.
        if ev.gr.group.is_empty() && ev.gr.plural == "nodes" {
            let md = nodes::deployment_of(&ev.object);
            keys.extend(
                store
                    .list(&gr, None)
                    .filter(|m| s(m, "/metadata/name") == md)
                    .map(key_of),
            );
        }
    });
    if cp_changed {
        // The skew rules depend on the control plane's version.
        keys.extend(store.list(&gr, None).map(key_of));
    }
    queue.reconcile(store, ctx, &gr, keys, |store, ctx, md| {
        machine_deployment(store, ctx, &d, md);
    });
}

/// Rolls a node group to its version and scale one step, and reports where it is.
fn machine_deployment(store: &mut Store, ctx: &mut Ctx, d: &ResourceDef, md: &Value) {
    let group = group_of(md);
    let md_name = s(md, "/metadata/name").to_string();
    let uid = s(md, "/metadata/uid").to_string();
    let replicas = md
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0) as usize;
    let spec_version = s(md, "/spec/template/spec/version").to_string();
    let cp = ctx.shared.cp_version();
    let group_nodes: Vec<Value> = nodes::of_deployment(store, Some(&md_name))
        .into_iter()
        .filter(|n| n.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    let lowest = group_nodes.iter().filter_map(nodes::kubelet_version).min();
    let mut problem: Option<(String, String)> = None;
    let mut rolling = false;
    match Version::parse(&spec_version) {
        None => {
            problem = Some((
                "InvalidVersion".into(),
                format!("spec.template.spec.version {spec_version:?} is not a version"),
            ))
        }
        Some(target) => {
            let highest_ok = group_nodes
                .iter()
                .filter_map(nodes::kubelet_version)
                .all(|v| v <= target);
            match node_group_refusal(cp, if highest_ok { None } else { lowest }, target) {
                Some(msg) => problem = Some(("UpgradeRejected".into(), msg)),
                None => {
                    let (outcome, is_rolling) =
                        step(store, ctx, md, &group, &group_nodes, target, replicas);
                    rolling = is_rolling;
                    if let Some(msg) = outcome {
                        problem = Some(("DrainingFailed".into(), msg));
                    }
                }
            }
        }
    }
    if rolling
        || problem
            .as_ref()
            .is_some_and(|(reason, _)| reason == "DrainingFailed")
    {
        // Nodes boot and drains wait for pods and budgets elsewhere: look again on the next
        // tick until the rollout is done.
        ctx.requeue();
    }
    if let Some((reason, msg)) = &problem {
        ctx.report(store, &format!("md/{uid}"), md, "Warning", reason, msg);
    } else {
        ctx.report(
            store,
            &format!("md/{uid}"),
            md,
            "Normal",
            "Progressing",
            if rolling { "rolling out" } else { "up to date" },
        );
    }
    let group_nodes: Vec<Value> = nodes::of_deployment(store, Some(&md_name));
    let target = Version::parse(&spec_version);
    let updated = group_nodes
        .iter()
        .filter(|n| target.is_some() && nodes::kubelet_version(n) == target)
        .count();
    let ready = group_nodes.iter().filter(|n| nodes::is_ready(n)).count();
    let phase = if rolling || group_nodes.len() < replicas {
        "ScalingUp"
    } else if group_nodes.len() > replicas {
        "ScalingDown"
    } else {
        "Running"
    };
    let mut conds = match &problem {
        Some((reason, msg)) => vec![
            condition("Ready", false, reason, msg),
            condition("Available", ready >= replicas, "", ""),
        ],
        None => vec![
            condition(
                "Ready",
                !rolling,
                if rolling {
                    "RollingUpdateInProgress"
                } else {
                    ""
                },
                "",
            ),
            condition("Available", ready >= replicas, "", ""),
        ],
    };
    keep_transitions(md.pointer("/status/conditions"), &mut conds);
    let status = json!({
        "observedGeneration": i(md, "/metadata/generation"),
        "selector": format!("{DEPLOYMENT_NAME}={md_name}"),
        "replicas": group_nodes.len(), "updatedReplicas": updated, "readyReplicas": ready,
        "availableReplicas": ready, "unavailableReplicas": replicas.saturating_sub(ready),
        "phase": phase, "conditions": conds,
    });
    set_status(store, d, md, status);
}

/// One step of a node group's rollout or scaling. Returns (blocking message, still rolling).
/// `maxSurge`/`maxUnavailable` of a MachineDeployment (int or percent of `replicas`;
/// defaults 1 and 0, as Cluster API's).
fn rollout_limits(md: &Value, replicas: usize) -> (usize, usize) {
    let get = |key: &str, default: usize, round_up: bool| -> usize {
        match md.pointer(&format!("/spec/strategy/rollingUpdate/{key}")) {
            Some(Value::Number(n)) => n.as_u64().map_or(default, |n| n as usize),
            Some(Value::String(p)) => match p
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<usize>().ok())
            {
                Some(pct) => {
                    let scaled = replicas.saturating_mul(pct.min(100));
                    if round_up {
                        scaled.div_ceil(100)
                    } else {
                        scaled / 100
                    }
                }
                None => default,
            },
            _ => default,
        }
    };
    let surge = get("maxSurge", 1, true);
    let unavailable = get("maxUnavailable", 0, false);
    if surge == 0 && unavailable == 0 {
        (1, 0)
    } else {
        (surge, unavailable)
    }
}

/// One step of a node group's rollout or scaling: surge new nodes at `target` (up to
/// `maxSurge` above `replicas`), cordon and drain old nodes while no more than
/// `maxUnavailable` are missing, delete drained nodes. Returns (blocking message, still
/// rolling).
fn step(
    store: &mut Store,
    ctx: &mut Ctx,
    md: &Value,
    group: &str,
    group_nodes: &[Value],
    target: Version,
    replicas: usize,
) -> (Option<String>, bool) {
    let config = &ctx.shared.config;
    let md_name = s(md, "/metadata/name").to_string();
    let (surge, max_unavailable) = rollout_limits(md, replicas);
    let is_draining = |n: &Value| {
        n.pointer("/metadata/annotations")
            .and_then(|a| a.get(DRAINING))
            .is_some()
    };
    let old: Vec<&Value> = group_nodes
        .iter()
        .filter(|n| nodes::kubelet_version(n) != Some(target) && !is_draining(n))
        .collect();
    let available = group_nodes
        .iter()
        .filter(|n| nodes::is_ready(n) && !is_draining(n))
        .count();
    let mut can_drain = available.saturating_sub(replicas.saturating_sub(max_unavailable));
    let mut rolling = group_nodes
        .iter()
        .any(|n| is_draining(n) || !nodes::is_ready(n));
    let on_delete = s(md, "/spec/strategy/type") == "OnDelete";
    if on_delete {
        // Cluster API's `OnDelete`: machines are replaced only when deleted, each by one at
        // the template's version; the group never rolls by itself.
        if group_nodes.len() < replicas {
            rolling = true;
            nodes::create(store, config, group, &md_name, target, false);
        }
        return (None, rolling);
    }
    if !old.is_empty() {
        rolling = true;
        if group_nodes.len() < replicas + surge {
            nodes::create(store, config, group, &md_name, target, false);
        }
        let mut victims = old;
        victims.sort_by_key(|n| s(n, "/metadata/name"));
        for victim in victims {
            if can_drain == 0 {
                break;
            }
            mark_draining(store, victim);
            can_drain -= 1;
        }
    } else if group_nodes.len() < replicas {
        rolling = true;
        nodes::create(store, config, group, &md_name, target, false);
    } else {
        let not_draining: Vec<&Value> = group_nodes.iter().filter(|n| !is_draining(n)).collect();
        let mut extra = not_draining.len().saturating_sub(replicas);
        let mut victims = not_draining;
        victims.sort_by_key(|n| (nodes::is_ready(n), s(n, "/metadata/name").to_string()));
        for victim in victims {
            if extra == 0 {
                break;
            }
            rolling = true;
            mark_draining(store, victim);
            extra -= 1;
        }
    }
    let mut blocked = None;
    let draining: Vec<Value> = nodes::of_deployment(store, Some(&md_name))
        .into_iter()
        .filter(|n| is_draining(n))
        .collect();
    for node in &draining {
        if let Some(msg) = drain(store, ctx, md, node) {
            blocked = Some(msg);
        }
    }
    (blocked, rolling)
}

fn mark_draining(store: &mut Store, node: &Value) {
    let Some(d) = def(store, "", "v1", "nodes") else {
        return;
    };
    let mut n = node.clone();
    n["metadata"]["annotations"][DRAINING] = json!("true");
    n["spec"]["unschedulable"] = json!(true);
    n["spec"]["taints"] =
        json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]);
    write(store, &d, n);
}

/// Evicts what can be evicted from a cordoned node; deletes the node once empty.
fn drain(store: &mut Store, ctx: &mut Ctx, md: &Value, node: &Value) -> Option<String> {
    let (Some(pd), Some(nd)) = (def(store, "", "v1", "pods"), def(store, "", "v1", "nodes")) else {
        return None;
    };
    nodes::cordon(store, node);
    let name = s(node, "/metadata/name").to_string();
    let pods: Vec<Value> = store
        .list(&pd.gr(), None)
        .filter(|p| {
            s(p, "/spec/nodeName") == name && p.pointer("/metadata/deletionTimestamp").is_none()
        })
        .filter(|p| {
            p.pointer("/metadata/ownerReferences/0/kind")
                .and_then(Value::as_str)
                != Some("DaemonSet")
        })
        .filter(|p| !matches!(s(p, "/status/phase"), "Succeeded" | "Failed"))
        .cloned()
        .collect();
    let mut blocked = None;
    for p in pods {
        match eviction::check(store, &p) {
            Ok(()) => {
                let _ = store.delete(&pd, s(&p, "/metadata/namespace"), s(&p, "/metadata/name"));
            }
            Err(e) => {
                let cause = e
                    .details
                    .as_ref()
                    .and_then(|d| d.pointer("/causes/0/message"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                blocked = Some(format!(
                    "drain of node {name} blocked: cannot evict pod {}/{}: {} {cause}",
                    s(&p, "/metadata/namespace"),
                    s(&p, "/metadata/name"),
                    e.message
                ));
            }
        }
    }
    if blocked.is_some() {
        return blocked;
    }
    let _ = store.delete(&nd, "", &name);
    ctx.report(
        store,
        &format!("md-node/{}", s(md, "/metadata/uid")),
        md,
        "Normal",
        "NodeReplaced",
        &format!("drained and deleted node {name}"),
    );
    None
}
