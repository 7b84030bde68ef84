//! The topology controller of a Cluster built from a ClusterClass (`spec.topology`), as
//! Cluster API 1.11 computes its desired state (`exp/topology/desiredstate`):
//!
//! - The control plane takes `spec.topology.version` once it is not upgrading and no
//!   MachineDeployment is upgrading; until then it keeps the version it has.
//! - A MachineDeployment takes `spec.topology.version` once the control plane is stable at
//!   it, at most `topology.cluster.x-k8s.io/upgrade-concurrency` (default 1)
//!   MachineDeployments at a time; one that is upgrading (a Machine at another version than
//!   its own) counts toward that limit and keeps its version.
//! - So a direct edit of a KubeadmControlPlane's or MachineDeployment's version is reverted:
//!   at once when it cannot roll (the edited object is set back on the next look), else once
//!   the edited rollout has finished (it is upgrading until then, and keeps its version).
//!
//! Also the Cluster's status (phase, initialization, conditions).

use serde_json::{Value, json};

use super::{Kind, Kinds, Stores, keep_times, keys, label, v1beta1_condition, v1beta2_condition};
use crate::controllers::{Ctx, i, s};
use crate::{Shared, Version};

const CONCURRENCY: &str = "topology.cluster.x-k8s.io/upgrade-concurrency";

/// The topology-owned MachineDeployments of `cluster` and whether each is upgrading.
fn machine_deployments(stores: &mut Stores, kinds: &Kinds, cluster: &Value) -> Vec<(Value, bool)> {
    let ns = s(cluster, "/metadata/namespace");
    let name = s(cluster, "/metadata/name");
    let machines = kinds.of_cluster(stores.mgmt, Kind::Machine, ns, name);
    let mut mds: Vec<(Value, bool)> = kinds
        .of_cluster(stores.mgmt, Kind::MachineDeployment, ns, name)
        .into_iter()
        .filter(|md| {
            md.pointer("/metadata/labels")
                .is_some_and(|l| l.get(keys::TOPOLOGY_OWNED).is_some())
        })
        .map(|md| {
            let want = s(&md, "/spec/template/spec/version").to_string();
            let md_name = s(&md, "/metadata/name").to_string();
            let upgrading = machines.iter().any(|m| {
                label(m, keys::DEPLOYMENT_NAME) == md_name && s(m, "/spec/version") != want
            });
            (md, upgrading)
        })
        .collect();
    mds.sort_by(|a, b| s(&a.0, "/metadata/name").cmp(s(&b.0, "/metadata/name")));
    mds
}

/// Moves the control plane, then the MachineDeployments, to `spec.topology.version`.
pub(crate) fn reconcile(stores: &mut Stores, _ctx: &mut Ctx, kinds: &Kinds, cluster: &Value) {
    let version = s(cluster, "/spec/topology/version").to_string();
    if version.is_empty() {
        return;
    }
    let Some(kcp) = super::control_plane_of(stores.mgmt, kinds, cluster) else {
        return;
    };
    let mds = machine_deployments(stores, kinds, cluster);
    let mut upgrading = mds.iter().filter(|(_, u)| *u).count();
    let kcp_version = s(&kcp, "/spec/version").to_string();
    let cp_upgrading = Version::parse(s(&kcp, "/status/version")) != Version::parse(&kcp_version);
    if kcp_version != version && !cp_upgrading && upgrading == 0 {
        let mut k = kcp.clone();
        k["spec"]["version"] = json!(version);
        kinds.write(stores.mgmt, Kind::KubeadmControlPlane, k);
        // The control plane is upgrading now.
        return;
    }
    let cp_stable = kcp_version == version && !cp_upgrading;
    let concurrency = cluster
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(CONCURRENCY))
        .and_then(Value::as_str)
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|c| *c > 0)
        .unwrap_or(1);
    for (md, _) in mds {
        if s(&md, "/spec/template/spec/version") == version
            || upgrading >= concurrency
            || !cp_stable
        {
            continue;
        }
        let mut m = md.clone();
        m["spec"]["template"]["spec"]["version"] = json!(version);
        if kinds
            .write(stores.mgmt, Kind::MachineDeployment, m)
            .is_some()
        {
            upgrading += 1;
        }
    }
}

/// The Cluster's status: provisioned, and for a topology whether it is reconciled.
pub(crate) fn cluster_status(
    stores: &mut Stores,
    kinds: &Kinds,
    cluster: &Value,
    workload: &Shared,
) {
    let generation = i(cluster, "/metadata/generation");
    let mut v2 = vec![
        v1beta2_condition("Available", true, "Available", "", generation),
        v1beta2_condition("ControlPlaneAvailable", true, "Available", "", generation),
        v1beta2_condition("InfrastructureReady", true, "Ready", "", generation),
    ];
    let mut v1 = vec![
        v1beta1_condition("Ready", true, "", "", ""),
        v1beta1_condition("ControlPlaneReady", true, "", "", ""),
        v1beta1_condition("InfrastructureReady", true, "", "", ""),
    ];
    let version = s(cluster, "/spec/topology/version").to_string();
    if !version.is_empty() {
        let cp = workload.cp_version();
        let mds = machine_deployments(stores, kinds, cluster);
        let pending: Vec<&str> = mds
            .iter()
            .filter(|(md, up)| *up || s(md, "/spec/template/spec/version") != version)
            .map(|(md, _)| s(md, "/metadata/name"))
            .collect();
        let cp_done = Version::parse(&version) == Some(cp);
        if cp_done && pending.is_empty() {
            v2.push(v1beta2_condition(
                "TopologyReconciled",
                true,
                "ReconcileSucceeded",
                "",
                generation,
            ));
            v1.push(v1beta1_condition("TopologyReconciled", true, "", "", ""));
        } else {
            let msg = if cp_done {
                format!(
                    "MachineDeployment(s) {} upgrading to {version}",
                    pending.join(", ")
                )
            } else {
                format!("Control plane upgrading to {version}")
            };
            v2.push(v1beta2_condition(
                "TopologyReconciled",
                false,
                "ClusterUpgrading",
                &msg,
                generation,
            ));
            v1.push(v1beta1_condition(
                "TopologyReconciled",
                false,
                if cp_done {
                    "TopologyReconciledMachineDeploymentsUpgradePending"
                } else {
                    "TopologyReconciledControlPlaneUpgradePending"
                },
                "Info",
                &msg,
            ));
        }
    }
    let mut status = json!({
        "phase": "Provisioned", "observedGeneration": generation,
        "initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true},
        "conditions": v2,
        "deprecated": {"v1beta1": {"conditions": v1}},
    });
    keep_times(cluster, &mut status);
    kinds.set_status(stores.mgmt, Kind::Cluster, cluster, status);
}
