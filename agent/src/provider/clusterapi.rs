//! Cluster API: set `KubeadmControlPlane.spec.version` and
//! `MachineDeployment.spec.template.spec.version`; Cluster API rolls the machines.

use std::collections::BTreeMap;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use tidemark_schema::KubeVersion;
use tidemark_schema::cluster::ClusterApiProvider;
use tidemark_schema::resolve::DesiredState;

use super::{Error, Provider, RolloutLimits};
use crate::observe::cluster::{capi_resource, control_plane_name, machine_deployment};

/// The Cluster API provider of one cluster.
pub struct ClusterApi {
    client: kube::Client,
    namespace: String,
    control_plane: String,
    machine_deployments: BTreeMap<String, String>,
}

impl ClusterApi {
    /// For `desired`'s cluster.
    pub fn new(client: kube::Client, desired: &DesiredState, spec: &ClusterApiProvider) -> Self {
        Self {
            client,
            namespace: spec.namespace.clone(),
            control_plane: control_plane_name(desired, spec),
            machine_deployments: desired
                .node_groups
                .iter()
                .map(|g| (g.name.clone(), machine_deployment(desired, spec, &g.name)))
                .collect(),
        }
    }

    async fn patch(&self, kind: &str, name: &str, body: serde_json::Value) -> Result<(), Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &capi_resource(kind));
        // A merge patch of the one field: other fields and their owners stay as they are.
        api.patch(name, &PatchParams::default(), &Patch::Merge(body))
            .await
            .map_err(|source| Error::Api {
                action: format!("patch {kind} {}/{name}", self.namespace),
                source,
            })?;
        Ok(())
    }
}

/// Cluster API wants `v1.29.8`.
fn exact(to: KubeVersion) -> Result<String, Error> {
    if to.patch.is_none() {
        return Err(Error::NeedsPatch(to));
    }
    Ok(format!("v{to}"))
}

impl Provider for ClusterApi {
    async fn upgrade_control_plane(&self, to: KubeVersion) -> Result<(), Error> {
        let version = exact(to)?;
        self.patch(
            "KubeadmControlPlane",
            &self.control_plane,
            serde_json::json!({"spec": {"version": version}}),
        )
        .await
    }

    async fn upgrade_node_group(
        &self,
        group: &str,
        to: KubeVersion,
        limits: RolloutLimits,
    ) -> Result<(), Error> {
        let version = exact(to)?;
        let name = self
            .machine_deployments
            .get(group)
            .cloned()
            .unwrap_or_else(|| group.to_string());
        self.patch(
            "MachineDeployment",
            &name,
            // The version, and how Cluster API may roll: maxUnavailable (no surge beyond one
            // node) and the drain timeout of each node, as the manifest declares them.
            serde_json::json!({"spec": {
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": limits.max_unavailable, "maxSurge": 1}},
                "template": {"spec": {"version": version, "nodeDrainTimeout": format!("{}s", limits.drain_timeout.as_secs())}},
            }}),
        )
        .await
    }
}
