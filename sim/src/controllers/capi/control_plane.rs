//! The KubeadmControlPlane: a changed `spec.version` upgrades the workload cluster's control
//! plane (what its `/version` reports) over time, one minor at a time (a skipped minor or a
//! downgrade is refused in the status, condition reason `UpgradeRejected`; Cluster API's
//! webhook refuses a skipped minor at admission). The sim has no control-plane Machines or
//! Nodes: `replicas` are counted, not run.

use serde_json::{Value, json};

use super::{Kind, Kinds, Stores, keep_times, keys, v, v1beta1_condition, v1beta2_condition};
use crate::controllers::{Ctx, durations, i, s};
use crate::{Shared, Version};

/// The status of a control plane at rest at `version`.
pub(crate) fn steady_status(
    cluster: &str,
    version: Version,
    replicas: i64,
    generation: i64,
) -> Value {
    status(cluster, version, replicas, replicas, generation, None)
}

/// The status (v1beta2 shape) of a control plane at `version` with `updated` of `replicas`
/// up to date; `problem`: (v1beta2 MachinesUpToDate reason, v1beta1 reason, message) while
/// not up to date.
fn status(
    cluster: &str,
    version: Version,
    replicas: i64,
    updated: i64,
    generation: i64,
    problem: Option<(&str, &str, String)>,
) -> Value {
    let (v2, v1) = match &problem {
        None => (
            vec![
                v1beta2_condition("Available", true, "Available", "", generation),
                v1beta2_condition("MachinesUpToDate", true, "UpToDate", "", generation),
                v1beta2_condition("RollingOut", false, "NotRollingOut", "", generation),
            ],
            vec![
                v1beta1_condition("Ready", true, "", "", ""),
                v1beta1_condition("MachinesSpecUpToDate", true, "", "", ""),
            ],
        ),
        Some((reason2, reason1, msg)) => (
            vec![
                v1beta2_condition("Available", true, "Available", "", generation),
                v1beta2_condition("MachinesUpToDate", false, reason2, msg, generation),
                v1beta2_condition(
                    "RollingOut",
                    *reason2 == "NotUpToDate",
                    if *reason2 == "NotUpToDate" {
                        "RollingOut"
                    } else {
                        "NotRollingOut"
                    },
                    if *reason2 == "NotUpToDate" { msg } else { "" },
                    generation,
                ),
            ],
            vec![
                v1beta1_condition("Ready", true, "", "", ""),
                v1beta1_condition("MachinesSpecUpToDate", false, reason1, "Warning", msg),
            ],
        ),
    };
    json!({
        "version": v(version), "replicas": replicas, "readyReplicas": replicas,
        "availableReplicas": replicas, "upToDateReplicas": updated,
        "observedGeneration": generation,
        "initialization": {"controlPlaneInitialized": true},
        "selector": format!("{}={cluster},{}", keys::CLUSTER_NAME, keys::CONTROL_PLANE),
        "conditions": v2,
        "deprecated": {"v1beta1": {"conditions": v1, "updatedReplicas": updated,
            "readyReplicas": replicas, "unavailableReplicas": 0}},
    })
}

/// Upgrades the control plane of `cluster` toward its KubeadmControlPlane's `spec.version`,
/// and reports where it is.
pub(crate) fn reconcile(
    stores: &mut Stores,
    ctx: &mut Ctx,
    kinds: &Kinds,
    cluster: &Value,
    workload: &Shared,
) {
    let Some(kcp) = super::control_plane_of(stores.mgmt, kinds, cluster) else {
        return;
    };
    let cluster_name = s(cluster, "/metadata/name").to_string();
    let cp = workload.cp_version();
    let replicas = kcp
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(3);
    let generation = i(&kcp, "/metadata/generation");
    let spec_version = s(&kcp, "/spec/version").to_string();
    let uid = s(&kcp, "/metadata/uid").to_string();
    let mut new = match Version::parse(&spec_version) {
        None => status(
            &cluster_name,
            cp,
            replicas,
            replicas,
            generation,
            Some((
                "InvalidVersion",
                "InvalidVersion",
                format!("spec.version {spec_version:?} is not a version"),
            )),
        ),
        Some(target) if target == cp => steady_status(&cluster_name, cp, replicas, generation),
        Some(target) => match super::control_plane_refusal(cp, target) {
            Some(msg) => {
                ctx.report(
                    stores.mgmt,
                    &format!("kcp/{uid}"),
                    &kinds.stored(Kind::KubeadmControlPlane, kcp.clone()),
                    "Warning",
                    "UpgradeRejected",
                    &msg,
                );
                status(
                    &cluster_name,
                    cp,
                    replicas,
                    replicas,
                    generation,
                    Some(("UpgradeRejected", "UpgradeRejected", msg)),
                )
            }
            None => {
                let stored = kinds.stored(Kind::KubeadmControlPlane, kcp.clone());
                let key = format!("kcp-upgrade/{uid}/{target}");
                let msg = format!("upgrading the control plane from v{cp} to v{target}");
                ctx.report(
                    stores.mgmt,
                    &format!("kcp/{uid}"),
                    &stored,
                    "Normal",
                    "UpgradeStarted",
                    &msg,
                );
                let total = ctx.shared.scaled(durations::CONTROL_PLANE_UPGRADE);
                let frac = ctx.since(&key).as_secs_f64() / total.as_secs_f64().max(1e-6);
                if frac >= 1.0 {
                    *workload
                        .control_plane
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = target;
                    ctx.forget(&key);
                    ctx.report(
                        stores.mgmt,
                        &format!("kcp/{uid}"),
                        &stored,
                        "Normal",
                        "UpgradeCompleted",
                        &format!("the control plane is at v{target}"),
                    );
                    steady_status(&cluster_name, target, replicas, generation)
                } else {
                    // The upgrade progresses with time: look again on the next tick.
                    ctx.requeue();
                    let updated = ((frac * replicas as f64) as i64).min(replicas - 1);
                    status(
                        &cluster_name,
                        cp,
                        replicas,
                        updated,
                        generation,
                        Some((
                            "NotUpToDate",
                            "RollingUpdateInProgress",
                            format!(
                                "Rolling {replicas} replicas with outdated spec ({updated} replicas up to date)"
                            ),
                        )),
                    )
                }
            }
        },
    };
    keep_times(&kcp, &mut new);
    kinds.set_status(stores.mgmt, Kind::KubeadmControlPlane, &kcp, new);
}
