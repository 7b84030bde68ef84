//! Cluster API: set `KubeadmControlPlane.spec.version` and
//! `MachineDeployment.spec.template.spec.version`; Cluster API rolls the machines. Progress
//! is read back from the same objects: the version each is set to, whether a
//! MachineDeployment is still rolling, and what its conditions say holds it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use tidemark_schema::KubeVersion;
use tidemark_schema::cluster::ClusterApiProvider;
use tidemark_schema::resolve::DesiredState;

use super::{
    Error, GroupProgress, NodeGroupSelector, Provider, ProviderObservation, RolloutLimits,
};
use crate::keys::{self, capi};
use crate::observe::model::ProviderProblem;
use crate::status::Record;

const KUBEADM_CONTROL_PLANE: &str = "KubeadmControlPlane";
const MACHINE_DEPLOYMENT: &str = "MachineDeployment";

/// The Cluster API provider of one cluster.
pub struct ClusterApi {
    client: kube::Client,
    namespace: String,
    control_plane: String,
    /// Node group -> its MachineDeployment.
    machine_deployments: BTreeMap<String, String>,
    node_group_label: String,
}

impl ClusterApi {
    /// For `desired`'s cluster.
    pub fn new(client: kube::Client, desired: &DesiredState, spec: &ClusterApiProvider) -> Self {
        Self {
            client,
            namespace: spec.namespace.clone(),
            control_plane: spec
                .control_plane
                .clone()
                .unwrap_or_else(|| desired.cluster.clone()),
            machine_deployments: desired
                .node_groups
                .iter()
                .map(|g| {
                    let md = spec
                        .machine_deployments
                        .get(&g.name)
                        .cloned()
                        .unwrap_or_else(|| format!("{}-{}", desired.cluster, g.name));
                    (g.name.clone(), md)
                })
                .collect(),
            node_group_label: desired.provider.node_group_label().to_string(),
        }
    }

    fn api(&self, kind: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &resource(kind))
    }

    async fn get(&self, kind: &str, name: &str) -> Result<Option<DynamicObject>, Error> {
        self.api(kind)
            .get_opt(name)
            .await
            .map_err(|source| Error::Api {
                action: format!("read {kind} {}/{name}", self.namespace),
                source,
            })
    }

    /// Server-side applies `spec` to `kind/name` with field manager `tidemark`: only the
    /// fields in `spec` become (or stay) tidemark's; every other field keeps its owner.
    /// `force` takes a field over from the manager that created the object (the version
    /// was theirs until tidemark was told to manage it).
    async fn apply(&self, kind: &str, name: &str, spec: Value) -> Result<(), Error> {
        let group = resource(kind).api_version;
        let body = json!({
            "apiVersion": group,
            "kind": kind,
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        });
        self.api(kind)
            .patch(
                name,
                &PatchParams::apply(keys::FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|source| Error::Api {
                action: format!("apply {kind} {}/{name}", self.namespace),
                source,
            })?;
        Ok(())
    }
}

/// The API resource of a Cluster API kind.
fn resource(kind: &str) -> ApiResource {
    let group = if kind == KUBEADM_CONTROL_PLANE {
        capi::CONTROL_PLANE_GROUP
    } else {
        capi::CLUSTER_GROUP
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, capi::VERSION, kind))
}

/// Cluster API wants `v1.29.8`.
fn exact(to: KubeVersion) -> Result<String, Error> {
    if to.patch.is_none() {
        return Err(Error::NeedsPatch(to));
    }
    Ok(format!("v{to}"))
}

fn version_at(obj: &DynamicObject, pointer: &str) -> Option<KubeVersion> {
    obj.data
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|v| KubeVersion::parse_observed(v).ok())
}

impl Provider for ClusterApi {
    fn node_groups(&self) -> NodeGroupSelector {
        NodeGroupSelector {
            label: self.node_group_label.clone(),
            groups: self
                .machine_deployments
                .iter()
                .map(|(group, md)| (md.clone(), group.clone()))
                .collect(),
        }
    }

    /// The KubeadmControlPlane's `spec.version`, and per node group its MachineDeployment's
    /// version, whether it rolls and what holds it. Cluster API keeps its targets in its
    /// objects, so `record` is not needed.
    async fn observe(
        &self,
        _record: &Record,
        _now: Timestamp,
    ) -> Result<ProviderObservation, Error> {
        let kcp = self.get(KUBEADM_CONTROL_PLANE, &self.control_plane).await?;
        let mut out = ProviderObservation {
            control_plane_requested: kcp.as_ref().and_then(|o| version_at(o, "/spec/version")),
            ..ProviderObservation::default()
        };
        for (group, name) in &self.machine_deployments {
            let Some(md) = self.get(MACHINE_DEPLOYMENT, name).await? else {
                continue;
            };
            out.node_groups
                .insert(group.clone(), machine_deployment_progress(&md));
        }
        Ok(out)
    }

    async fn upgrade_control_plane(&self, to: KubeVersion) -> Result<(), Error> {
        let version = exact(to)?;
        self.apply(
            KUBEADM_CONTROL_PLANE,
            &self.control_plane,
            json!({"version": version}),
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
        // The version, and how Cluster API may roll: maxUnavailable (no surge beyond one
        // node) and the drain timeout of each node, as the manifest declares them.
        self.apply(
            MACHINE_DEPLOYMENT,
            &name,
            json!({
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": limits.max_unavailable, "maxSurge": 1}},
                "template": {"spec": {"version": version, "nodeDrainTimeout": format!("{}s", limits.drain_timeout.as_secs())}},
            }),
        )
        .await
    }
}

/// A MachineDeployment's version, whether it rolls (a spec not yet observed, or fewer
/// updated replicas than wanted) and what its `Ready` condition says holds it.
fn machine_deployment_progress(md: &DynamicObject) -> GroupProgress {
    let int = |p: &str| md.data.pointer(p).and_then(Value::as_i64);
    let stale = int("/status/observedGeneration")
        .is_some_and(|o| md.metadata.generation.is_some_and(|g| o < g));
    let behind = matches!(
        (int("/spec/replicas"), int("/status/updatedReplicas")),
        (Some(r), Some(u)) if u < r
    );
    GroupProgress {
        requested: version_at(md, "/spec/template/spec/version"),
        rolling: stale || behind,
        problem: machine_deployment_problem(&md.data),
    }
}

/// A `Ready=False` condition whose reason says the rollout is stuck (Cluster API's
/// `DrainingFailed`, or a rejected version), with its message.
fn machine_deployment_problem(md: &Value) -> Option<ProviderProblem> {
    let conditions = md.pointer("/status/conditions")?.as_array()?;
    let ready = conditions
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))?;
    if ready.get("status").and_then(Value::as_str) != Some("False") {
        return None;
    }
    let text = |k: &str| ready.get(k).and_then(Value::as_str).unwrap_or_default();
    let permanent = match text("reason") {
        "DrainingFailed" => false,
        "UpgradeRejected" => true,
        _ => return None,
    };
    Some(ProviderProblem {
        permanent,
        message: text("message").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_false_with_a_drain_or_rejection_is_a_problem() {
        let md = |reason: &str, status: &str| {
            json!({"status": {"conditions": [
                {"type": "Available", "status": "True"},
                {"type": "Ready", "status": status, "reason": reason, "message": "drain of node n1 blocked by PodDisruptionBudget web"},
            ]}})
        };
        assert_eq!(
            machine_deployment_problem(&md("DrainingFailed", "False")),
            Some(ProviderProblem {
                permanent: false,
                message: "drain of node n1 blocked by PodDisruptionBudget web".into()
            })
        );
        assert!(
            machine_deployment_problem(&md("UpgradeRejected", "False"))
                .is_some_and(|p| p.permanent)
        );
        assert_eq!(
            machine_deployment_problem(&md("DrainingFailed", "True")),
            None
        );
        assert_eq!(machine_deployment_problem(&md("ScalingUp", "False")), None);
        assert_eq!(machine_deployment_problem(&json!({})), None);
    }

    #[test]
    fn versions_need_a_patch_release() {
        assert_eq!(
            exact(KubeVersion::new(1, 29, 8)).ok().as_deref(),
            Some("v1.29.8")
        );
        assert!(matches!(
            exact(KubeVersion::minor_only(1, 29)),
            Err(Error::NeedsPatch(_))
        ));
    }
}

#[cfg(test)]
mod actuation_tests {
    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::converge::scripted::{self, on};
    use crate::fixtures::{DesiredExt, desired};

    /// The version is set by server-side apply of that field alone, as field manager
    /// `tidemark` (forced: the field was its creator's until tidemark manages it).
    #[tokio::test]
    async fn versions_are_set_by_server_side_apply_of_tidemarks_fields() {
        let kcp = "/apis/controlplane.cluster.x-k8s.io/v1beta1/namespaces/capi-system/kubeadmcontrolplanes/test";
        let md =
            "/apis/cluster.x-k8s.io/v1beta1/namespaces/capi-system/machinedeployments/test-general";
        let (client, log) = scripted::client(vec![
            on(
                Method::PATCH,
                kcp,
                200,
                json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "KubeadmControlPlane", "metadata": {"name": "test"}}),
            ),
            on(
                Method::PATCH,
                md,
                200,
                json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineDeployment", "metadata": {"name": "test-general"}}),
            ),
        ]);
        let state = desired("1.30.4").group("general", "1.30.4");
        let tidemark_schema::Provider::ClusterApi(spec) = &state.provider else {
            panic!("the fixture is a Cluster API cluster");
        };
        let capi = ClusterApi::new(client, &state, spec);
        scripted::within(capi.upgrade_control_plane(KubeVersion::new(1, 30, 4)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let limits = RolloutLimits {
            max_unavailable: 2,
            drain_timeout: std::time::Duration::from_secs(600),
        };
        scripted::within(capi.upgrade_node_group("general", KubeVersion::new(1, 30, 4), limits))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let seen = scripted::requests(&log);
        assert_eq!(seen.len(), 2);
        for s in &seen {
            assert_eq!(s.content_type, "application/apply-patch+yaml");
            assert!(s.has_query("fieldManager", "tidemark") && s.has_query("force", "true"));
        }
        assert_eq!(
            seen[0].body,
            json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "KubeadmControlPlane",
                   "metadata": {"name": "test", "namespace": "capi-system"}, "spec": {"version": "v1.30.4"}})
        );
        assert_eq!(
            seen[1].body["spec"]["template"]["spec"]["version"],
            "v1.30.4"
        );
        assert_eq!(
            seen[1].body["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            2
        );
    }
}
