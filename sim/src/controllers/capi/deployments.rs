//! MachineDeployments: Machines at the template's version, replaced as the rollout strategy
//! says, and a status that summarises them.
//!
//! - `RollingUpdate` (default `maxSurge: 1`, `maxUnavailable: 0`, ints or percentages of
//!   `replicas`): new Machines are created while there are fewer than `replicas + maxSurge`
//!   and fewer than `replicas` at the template's version; old ones are deleted (drained by
//!   the Machine controller) while at least `replicas - maxUnavailable` stay available.
//! - `OnDelete`: nothing is replaced on its own; a Machine deleted by someone is replaced by
//!   one at the template's version.
//! - Scaling: Machines are added or deleted (not Ready ones first) to reach `replicas`.
//! - New Machines are created only when the MachineSet preflight checks pass (Cluster API
//!   1.11 `machineset_preflight.go`, all on by default): the control plane is stable
//!   (`ControlPlaneIsStable`), the version is not newer than the control plane's or more than
//!   3 minors older (`KubernetesVersionSkew`), kubeadm joins only at the control plane's minor
//!   (`KubeadmVersionSkew`), and a topology cluster's version is the control plane's
//!   (`ControlPlaneVersionSkew`). A failed check holds the scale-up and shows in the status.
//! - Timeouts of the template (`deletion.nodeDrainTimeoutSeconds` and the others) are
//!   propagated to existing Machines in place, without a rollout.
//! - The status counts replicas (`upToDate`, `ready`, `available`), the phase (`ScalingUp`,
//!   `ScalingDown`, `Running`) and conditions that summarise the Machines; what holds a
//!   drain is on the Machine being deleted, not here.

use serde_json::{Value, json};

use super::machines;
use super::{Kind, Kinds, Stores, keep_times, keys, label, v1beta1_condition, v1beta2_condition};
use crate::Version;
use crate::controllers::{Ctx, i, nodes, s};

/// Reconciles every MachineDeployment of `cluster`.
pub(crate) fn reconcile(stores: &mut Stores, ctx: &mut Ctx, kinds: &Kinds, cluster: &Value) {
    let ns = s(cluster, "/metadata/namespace");
    let name = s(cluster, "/metadata/name");
    let kcp = super::control_plane_of(stores.mgmt, kinds, cluster);
    for md in kinds.of_cluster(stores.mgmt, Kind::MachineDeployment, ns, name) {
        if md.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        machine_deployment(stores, ctx, kinds, cluster, kcp.as_ref(), &md);
    }
}

/// `maxSurge`/`maxUnavailable` (ints or percentages of `replicas`; defaults 1 and 0).
fn rollout_limits(md: &Value, replicas: usize) -> (usize, usize) {
    let get = |key: &str, default: usize, round_up: bool| -> usize {
        match md.pointer(&format!("/spec/rollout/strategy/rollingUpdate/{key}")) {
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

const CHECK: &str = "preflight check failed";

/// Why new Machines of `md` cannot be created now (the failed preflight checks), if any.
fn preflight(cluster: &Value, kcp: Option<&Value>, md: &Value) -> Vec<String> {
    let Some(kcp) = kcp else {
        return vec![];
    };
    let mut out = Vec::new();
    let cp_ref = format!(
        "{}/{}",
        s(kcp, "/metadata/namespace"),
        s(kcp, "/metadata/name")
    );
    let cp_raw = s(kcp, "/spec/version");
    let Some(cp) = Version::parse(cp_raw) else {
        return vec![];
    };
    let topology = s(cluster, "/spec/topology/version");
    if !topology.is_empty() && topology != cp_raw {
        out.push(format!(
            "KubeadmControlPlane {cp_ref} has a pending version upgrade to {topology} (\"ControlPlaneIsStable\" {CHECK})"
        ));
    } else if Version::parse(s(kcp, "/status/version")) != Some(cp) {
        out.push(format!(
            "KubeadmControlPlane {cp_ref} is upgrading (\"ControlPlaneIsStable\" {CHECK})"
        ));
    }
    let ms_raw = s(md, "/spec/template/spec/version");
    let Some(ms) = Version::parse(ms_raw) else {
        return out;
    };
    if ms.major != cp.major || ms.minor > cp.minor {
        out.push(format!(
            "MachineSet version ({ms}) and ControlPlane version ({cp}) do not conform to the kubernetes version skew policy as MachineSet version is higher than ControlPlane version (\"KubernetesVersionSkew\" {CHECK})"
        ));
    } else if ms.minor + 3 < cp.minor {
        out.push(format!(
            "MachineSet version ({ms}) and ControlPlane version ({cp}) do not conform to the kubernetes version skew policy as MachineSet version is more than 3 minor versions older than the ControlPlane version (\"KubernetesVersionSkew\" {CHECK})"
        ));
    }
    let kubeadm = s(md, "/spec/template/spec/bootstrap/configRef/kind") == "KubeadmConfigTemplate"
        && s(md, "/spec/template/spec/bootstrap/configRef/apiGroup") == super::BOOTSTRAP_GROUP;
    if kubeadm && ms.minor != cp.minor {
        out.push(format!(
            "MachineSet version ({ms}) and ControlPlane version ({cp}) do not conform to kubeadm version skew policy as kubeadm only supports joining with the same major+minor version as the control plane (\"KubeadmVersionSkew\" {CHECK})"
        ));
    }
    if !topology.is_empty() && ms_raw != cp_raw {
        out.push(format!(
            "MachineSet version ({ms_raw}) is not yet the same as the ControlPlane version ({cp_raw}), waiting for version to be propagated to the MachineSet (\"ControlPlaneVersionSkew\" {CHECK})"
        ));
    }
    out
}

/// Propagates the template's deletion timeouts to `machine` in place (no rollout).
fn propagate(stores: &mut Stores, kinds: &Kinds, md: &Value, machine: &Value) {
    let want = md
        .pointer("/spec/template/spec/deletion")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let have = machine
        .pointer("/spec/deletion")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if want == have {
        return;
    }
    let mut m = machine.clone();
    if want.as_object().is_some_and(|o| o.is_empty()) {
        if let Some(spec) = m.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("deletion");
        }
    } else {
        m["spec"]["deletion"] = want;
    }
    kinds.write(stores.mgmt, Kind::Machine, m);
}

/// Rolls and scales one MachineDeployment one step, and reports where it is.
fn machine_deployment(
    stores: &mut Stores,
    ctx: &mut Ctx,
    kinds: &Kinds,
    cluster: &Value,
    kcp: Option<&Value>,
    md: &Value,
) {
    let md_name = s(md, "/metadata/name").to_string();
    let ns = s(md, "/metadata/namespace").to_string();
    let replicas = md
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0) as usize;
    let strategy = match s(md, "/spec/rollout/strategy/type") {
        "" => "RollingUpdate",
        other => other,
    }
    .to_string();
    let target = Version::parse(s(md, "/spec/template/spec/version"));
    let (surge, max_unavailable) = rollout_limits(md, replicas);
    let cluster_name = s(cluster, "/metadata/name").to_string();
    let of_md = |stores: &mut Stores| -> Vec<Value> {
        kinds
            .of_cluster(stores.mgmt, Kind::Machine, &ns, &cluster_name)
            .into_iter()
            .filter(|m| label(m, keys::DEPLOYMENT_NAME) == md_name)
            .collect()
    };
    for m in of_md(stores) {
        propagate(stores, kinds, md, &m);
    }
    let machines = of_md(stores);
    let ready = |stores: &mut Stores, m: &Value| machines::node_ready(stores.wl(), m);
    let live: Vec<&Value> = machines
        .iter()
        .filter(|m| m.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    let is_new = |m: &Value| target.is_some() && Version::parse(s(m, "/spec/version")) == target;
    let new_count = live.iter().filter(|m| is_new(m)).count();
    let mut old: Vec<&Value> = live.iter().copied().filter(|m| !is_new(m)).collect();
    let available = live.iter().filter(|m| ready(stores, m)).count();
    let blocked = preflight(cluster, kcp, md);
    let mut scaling_up_blocked = false;
    // Scale up.
    let want_new = match strategy.as_str() {
        "OnDelete" => replicas.saturating_sub(live.len()),
        _ => (replicas + surge)
            .saturating_sub(live.len())
            .min(replicas.saturating_sub(new_count)),
    };
    if want_new > 0 {
        match target {
            Some(t) if blocked.is_empty() => {
                for _ in 0..want_new {
                    machines::create(stores, kinds, md, t, false);
                }
            }
            _ => scaling_up_blocked = true,
        }
    }
    // Scale down and roll: old Machines first, not Ready ones first.
    old.sort_by_key(|m| (ready(stores, m), s(m, "/metadata/name").to_string()));
    let mut delete: Vec<Value> = Vec::new();
    if strategy != "OnDelete" {
        let min_available = replicas.saturating_sub(max_unavailable);
        let mut can_remove = available.saturating_sub(min_available);
        for m in &old {
            let unready = !ready(stores, m);
            if unready || can_remove > 0 {
                if !unready {
                    can_remove -= 1;
                }
                delete.push((*m).clone());
            }
        }
    }
    let remaining = live.len() - delete.len();
    let allowed = if strategy != "OnDelete" && !old.is_empty() {
        replicas + surge
    } else {
        replicas
    };
    if remaining > allowed {
        // Too many: scale down (old, then not Ready, then by name).
        let mut rest: Vec<&Value> = live
            .iter()
            .copied()
            .filter(|m| {
                !delete
                    .iter()
                    .any(|d| s(d, "/metadata/name") == s(m, "/metadata/name"))
            })
            .collect();
        rest.sort_by_key(|m| {
            (
                is_new(m),
                ready(stores, m),
                s(m, "/metadata/name").to_string(),
            )
        });
        let extra = remaining - allowed;
        delete.extend(rest.into_iter().take(extra).cloned());
    }
    for m in &delete {
        machines::delete(stores, kinds, m);
    }
    let rolling = !old.is_empty() || machines.len() != live.len() || want_new > 0;
    if rolling {
        // Machines boot and drain: look again on the next tick until the rollout is done.
        ctx.requeue();
    }
    status(
        stores,
        kinds,
        md,
        target,
        replicas,
        max_unavailable,
        &blocked,
        scaling_up_blocked,
    );
}

/// Writes the status of `md` from its Machines as they are now.
#[allow(clippy::too_many_arguments)]
fn status(
    stores: &mut Stores,
    kinds: &Kinds,
    md: &Value,
    target: Option<Version>,
    replicas: usize,
    max_unavailable: usize,
    blocked: &[String],
    scaling_up_blocked: bool,
) {
    let md_name = s(md, "/metadata/name");
    let cluster = label(md, keys::CLUSTER_NAME);
    let machines: Vec<Value> = kinds
        .of_cluster(
            stores.mgmt,
            Kind::Machine,
            s(md, "/metadata/namespace"),
            cluster,
        )
        .into_iter()
        .filter(|m| label(m, keys::DEPLOYMENT_NAME) == md_name)
        .collect();
    let generation = i(md, "/metadata/generation");
    let deleting: Vec<&Value> = machines
        .iter()
        .filter(|m| m.pointer("/metadata/deletionTimestamp").is_some())
        .collect();
    let live: Vec<&Value> = machines
        .iter()
        .filter(|m| m.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    let up_to_date = live
        .iter()
        .filter(|m| target.is_some() && Version::parse(s(m, "/spec/version")) == target)
        .count();
    let ready = live
        .iter()
        .filter(|m| machines::node_ready(stores.wl(), m))
        .count();
    let total = machines.len();
    let phase = if live.len() < replicas {
        "ScalingUp"
    } else if total > replicas {
        "ScalingDown"
    } else {
        "Running"
    };
    let min_available = replicas.saturating_sub(max_unavailable);
    let available_ok = ready >= min_available;
    let not_up_to_date = live.len() - up_to_date;
    let blocked_msg = blocked
        .iter()
        .map(|b| format!("\n* {b}"))
        .collect::<String>();
    let scale_up_msg = if live.len() < replicas || scaling_up_blocked {
        let mut m = format!("Scaling up from {} to {replicas} replicas", live.len());
        if scaling_up_blocked && !blocked.is_empty() {
            m.push_str(" is blocked because:");
            m.push_str(&blocked_msg);
        }
        m
    } else {
        String::new()
    };
    let scale_down_msg = if total > replicas {
        let mut m = format!("Scaling down from {total} to {replicas} replicas");
        for d in &deleting {
            m.push_str(&format!(
                "\n* Machine {} is in deletion",
                s(d, "/metadata/name")
            ));
        }
        m
    } else {
        String::new()
    };
    let v2 = vec![
        v1beta2_condition(
            "Available",
            available_ok,
            if available_ok {
                "Available"
            } else {
                "NotAvailable"
            },
            &if available_ok {
                String::new()
            } else {
                format!(
                    "{ready} available replicas, at least {min_available} required (spec.rollout.strategy.rollingUpdate.maxUnavailable is {max_unavailable}, spec.replicas is {replicas})"
                )
            },
            generation,
        ),
        v1beta2_condition(
            "RollingOut",
            not_up_to_date > 0,
            if not_up_to_date > 0 {
                "RollingOut"
            } else {
                "NotRollingOut"
            },
            &if not_up_to_date > 0 {
                format!("Rolling out {not_up_to_date} not up-to-date replicas")
            } else {
                String::new()
            },
            generation,
        ),
        v1beta2_condition(
            "ScalingUp",
            !scale_up_msg.is_empty(),
            if scale_up_msg.is_empty() {
                "NotScalingUp"
            } else {
                "ScalingUp"
            },
            &scale_up_msg,
            generation,
        ),
        v1beta2_condition(
            "ScalingDown",
            !scale_down_msg.is_empty(),
            if scale_down_msg.is_empty() {
                "NotScalingDown"
            } else {
                "ScalingDown"
            },
            &scale_down_msg,
            generation,
        ),
        v1beta2_condition(
            "MachinesReady",
            ready == live.len(),
            if ready == live.len() {
                "Ready"
            } else {
                "NotReady"
            },
            "",
            generation,
        ),
    ];
    let ms_ready = if scaling_up_blocked && !blocked.is_empty() {
        v1beta1_condition(
            "MachineSetReady",
            false,
            "PreflightCheckFailed",
            "Error",
            blocked.join("; ").as_str(),
        )
    } else if live.len() < replicas {
        v1beta1_condition(
            "MachineSetReady",
            false,
            "ScalingUp",
            "Info",
            &format!(
                "Scaling up MachineSet to {replicas} replicas (actual {})",
                live.len()
            ),
        )
    } else if total > replicas {
        v1beta1_condition(
            "MachineSetReady",
            false,
            "ScalingDown",
            "Info",
            &format!("Scaling down MachineSet to {replicas} replicas (actual {total})"),
        )
    } else if ready < live.len() {
        v1beta1_condition("MachineSetReady", false, "WaitingForMachines", "Info", "")
    } else {
        v1beta1_condition("MachineSetReady", true, "", "", "")
    };
    let available1 = if available_ok {
        v1beta1_condition("Available", true, "", "", "")
    } else {
        v1beta1_condition(
            "Available",
            false,
            "WaitingForAvailableMachines",
            "Warning",
            &format!(
                "Minimum availability requires {min_available} replicas, current {ready} available"
            ),
        )
    };
    let ready1 = match [&available1, &ms_ready]
        .into_iter()
        .find(|c| c["status"] == json!("False"))
    {
        Some(c) => {
            let mut r = c.clone();
            r["type"] = json!("Ready");
            r
        }
        None => v1beta1_condition("Ready", true, "", "", ""),
    };
    let selector = format!(
        "{}={cluster},{}={md_name}",
        keys::CLUSTER_NAME,
        keys::DEPLOYMENT_NAME
    );
    let mut new = json!({
        "observedGeneration": generation, "selector": selector,
        "replicas": total, "readyReplicas": ready, "availableReplicas": ready,
        "upToDateReplicas": up_to_date, "phase": phase, "conditions": v2,
        "deprecated": {"v1beta1": {"conditions": [ready1, available1, ms_ready],
            "updatedReplicas": up_to_date, "readyReplicas": ready, "availableReplicas": ready,
            "unavailableReplicas": replicas.saturating_sub(ready)}},
    });
    keep_times(md, &mut new);
    kinds.set_status(stores.mgmt, Kind::MachineDeployment, md, new);
}

/// The nodes of the Machines of MachineDeployment `md_name` in `cluster` (ctl's view).
pub(crate) fn nodes_of(
    stores: &mut Stores,
    kinds: &Kinds,
    ns: &str,
    cluster: &str,
    md_name: &str,
) -> Vec<Value> {
    let machines: Vec<Value> = kinds
        .of_cluster(stores.mgmt, Kind::Machine, ns, cluster)
        .into_iter()
        .filter(|m| label(m, keys::DEPLOYMENT_NAME) == md_name)
        .collect();
    let all = nodes::all(stores.wl());
    all.into_iter()
        .filter(|n| {
            machines
                .iter()
                .any(|m| s(m, "/status/nodeRef/name") == s(n, "/metadata/name"))
        })
        .collect()
}
