//! Cluster API, as a real installation runs it.
//!
//! - The Cluster API objects usually live in a **management cluster**: they are read and
//!   written through a client for it (a kubeconfig from a Secret in the agent's namespace, or
//!   a mounted file); without one the cluster is self-managed. Versions, nodes, pre-flight
//!   and status stay on the workload cluster, where the agent runs.
//! - Actuation: `KubeadmControlPlane.spec.version` and
//!   `MachineDeployment.spec.template.spec.version` (server-side apply of tidemark's fields
//!   only), or `Cluster.spec.topology.version` for a cluster built from a ClusterClass (the
//!   topology controller rolls the control plane, then every MachineDeployment). `maxSurge`
//!   only when declared; `nodeDrainTimeout` (which makes Cluster API delete a machine whose
//!   drain does not finish) only when the node group opts in (`drainTimeoutAction: force`).
//! - Observation: the version each object is set to, whether a MachineDeployment rolls, and
//!   the **Machines**: a Node belongs to a node group through the Machine whose
//!   `status.nodeRef` names it (Cluster API does not label Nodes with their
//!   MachineDeployment), and a drain held by a PodDisruptionBudget shows on the Machine
//!   being deleted (v1beta2 `Deleting`/`DrainingNode`, v1beta1 `DrainingSucceeded=False`).
//! - `cluster.x-k8s.io` `v1beta1` and `v1beta2` are both supported; the version used is the
//!   one the API server prefers (discovery).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::{Value, json};
use tidemark_schema::cluster::ClusterApiProvider;
use tidemark_schema::resolve::DesiredState;
use tidemark_schema::{DrainTimeoutAction, KubeVersion};

use super::{
    Error, GroupProgress, NodeGroupSelector, Provider, ProviderObservation, RolloutLimits,
};
use crate::k8s::ApiError;
use crate::keys::{self, capi};
use crate::observe::model::ProviderProblem;
use crate::status::Record;

const KUBEADM_CONTROL_PLANE: &str = "KubeadmControlPlane";
const MACHINE_DEPLOYMENT: &str = "MachineDeployment";
const MACHINE: &str = "Machine";
const CLUSTER: &str = "Cluster";
/// The label Cluster API puts on the objects of one cluster.
const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// The label Cluster API puts on a Machine of a MachineDeployment.
const DEPLOYMENT_NAME_LABEL: &str = "cluster.x-k8s.io/deployment-name";
/// The key of a Cluster API kubeconfig Secret (`<cluster>-kubeconfig`).
const KUBECONFIG_KEY: &str = "value";

/// A node group's rollout settings tidemark may set on its MachineDeployment.
#[derive(Clone, Debug)]
struct GroupSettings {
    machine_deployment: String,
    max_surge: Option<u32>,
    force_drain: bool,
}

/// The Cluster API provider of one cluster.
pub struct ClusterApi {
    /// Where the Cluster API objects are (the management cluster, or the cluster itself).
    client: kube::Client,
    namespace: String,
    cluster_name: String,
    control_plane: String,
    topology: bool,
    groups: BTreeMap<String, GroupSettings>,
    /// An explicit node label naming a node's group (one Cluster API syncs from Machines,
    /// e.g. under `node.cluster.x-k8s.io/`), used instead of the Machines when declared.
    node_group_label: Option<String>,
}

/// The served API versions of Cluster API's groups.
#[derive(Clone, Debug)]
struct Versions {
    /// `cluster.x-k8s.io` (Cluster, MachineDeployment, Machine).
    core: String,
    /// `controlplane.cluster.x-k8s.io` (KubeadmControlPlane).
    control_plane: String,
}

impl Versions {
    fn is_v1beta2(&self) -> bool {
        self.core == "v1beta2"
    }
}

impl ClusterApi {
    /// For `desired`'s cluster, its Cluster API objects read and written through `client`.
    pub fn new(client: kube::Client, desired: &DesiredState, spec: &ClusterApiProvider) -> Self {
        Self {
            client,
            namespace: spec.namespace.clone(),
            cluster_name: spec
                .cluster_name
                .clone()
                .unwrap_or_else(|| desired.cluster.clone()),
            control_plane: spec
                .control_plane
                .clone()
                .unwrap_or_else(|| desired.cluster.clone()),
            topology: spec.topology,
            groups: desired
                .node_groups
                .iter()
                .map(|g| {
                    let md = spec
                        .machine_deployments
                        .get(&g.name)
                        .cloned()
                        .unwrap_or_else(|| format!("{}-{}", desired.cluster, g.name));
                    let settings = GroupSettings {
                        machine_deployment: md,
                        max_surge: g.max_surge,
                        force_drain: g.drain_timeout_action == DrainTimeoutAction::Force,
                    };
                    (g.name.clone(), settings)
                })
                .collect(),
            node_group_label: spec.node_group_label.clone(),
        }
    }

    /// The client of the cluster holding `spec`'s Cluster API objects: the management
    /// cluster's (from a Secret in `agent_namespace` of `workload`, or a file), or
    /// `workload` itself. Read on every pass, so a rotated kubeconfig needs no restart.
    pub async fn management_client(
        workload: &kube::Client,
        agent_namespace: &str,
        spec: &ClusterApiProvider,
    ) -> Result<kube::Client, Error> {
        let text = match (&spec.kubeconfig_secret, &spec.kubeconfig_file) {
            (Some(secret), _) => {
                let api: Api<Secret> = Api::namespaced(workload.clone(), agent_namespace);
                let found = api
                    .get_opt(secret)
                    .await
                    .map_err(|e| Error::Api(ApiError::new(format!(
                            "read the management cluster's kubeconfig Secret {agent_namespace}/{secret}"
                        ), e)))?
                    .ok_or_else(|| Error::Management {
                        from: format!("Secret {agent_namespace}/{secret}"),
                        problem: "not found".into(),
                    })?;
                let bytes = found
                    .data
                    .as_ref()
                    .and_then(|d| d.get(KUBECONFIG_KEY).or_else(|| d.get("kubeconfig")))
                    .ok_or_else(|| Error::Management {
                        from: format!("Secret {agent_namespace}/{secret}"),
                        problem: format!("no key `{KUBECONFIG_KEY}` (or `kubeconfig`)"),
                    })?;
                String::from_utf8(bytes.0.clone()).map_err(|_| Error::Management {
                    from: format!("Secret {agent_namespace}/{secret}"),
                    problem: "the kubeconfig is not UTF-8".into(),
                })?
            }
            (None, Some(file)) => {
                tokio::fs::read_to_string(file)
                    .await
                    .map_err(|e| Error::Management {
                        from: file.clone(),
                        problem: e.to_string(),
                    })?
            }
            (None, None) => return Ok(workload.clone()),
        };
        let from = spec
            .kubeconfig_secret
            .as_ref()
            .map(|s| format!("Secret {agent_namespace}/{s}"))
            .or_else(|| spec.kubeconfig_file.clone())
            .unwrap_or_default();
        // The kubeconfig's text holds credentials: only what failed, never the text, goes
        // into the error.
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&text).map_err(|_| Error::Management {
                from: from.clone(),
                problem: "not a kubeconfig".into(),
            })?;
        crate::k8s::client_from(kubeconfig)
            .await
            .map_err(|e| Error::Management {
                from,
                problem: e.to_string(),
            })
    }

    /// The preferred versions of Cluster API's groups.
    async fn versions(&self) -> Result<Versions, Error> {
        let preferred = |group: &'static str| async move {
            let g =
                self.client.list_api_groups().await.map_err(|e| {
                    Error::Api(ApiError::new("discover Cluster API's API groups", e))
                })?;
            g.groups
                .into_iter()
                .find(|x| x.name == group)
                .and_then(|x| x.preferred_version.map(|p| p.version))
                .ok_or_else(|| Error::Management {
                    from: "the Cluster API objects' cluster".into(),
                    problem: format!(
                        "the API group {group} is not served (is Cluster API installed there?)"
                    ),
                })
        };
        Ok(Versions {
            core: preferred(capi::CLUSTER_GROUP).await?,
            control_plane: preferred(capi::CONTROL_PLANE_GROUP).await?,
        })
    }

    fn api(&self, versions: &Versions, kind: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &resource(versions, kind),
        )
    }

    async fn get(
        &self,
        versions: &Versions,
        kind: &str,
        name: &str,
    ) -> Result<Option<DynamicObject>, Error> {
        self.api(versions, kind).get_opt(name).await.map_err(|e| {
            Error::Api(ApiError::new(
                format!("read {kind} {}/{name}", self.namespace),
                e,
            ))
        })
    }

    /// Server-side applies `spec` to `kind/name` with field manager `tidemark`: only the
    /// fields in `spec` become (or stay) tidemark's; every other field keeps its owner.
    /// `force` takes a field over from the manager that created the object (the version
    /// was theirs until tidemark was told to manage it).
    async fn apply(
        &self,
        versions: &Versions,
        kind: &str,
        name: &str,
        spec: Value,
    ) -> Result<(), Error> {
        let body = json!({
            "apiVersion": resource(versions, kind).api_version,
            "kind": kind,
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        });
        self.api(versions, kind)
            .patch(
                name,
                &PatchParams::apply(keys::FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| {
                Error::Api(ApiError::new(
                    format!("apply {kind} {}/{name}", self.namespace),
                    e,
                ))
            })?;
        Ok(())
    }

    /// Machines of this cluster's MachineDeployments, by node group.
    async fn machines(&self, versions: &Versions) -> Result<Vec<(String, Value)>, Error> {
        let listed = self
            .api(versions, MACHINE)
            .list(
                &ListParams::default()
                    .labels(&format!("{CLUSTER_NAME_LABEL}={}", self.cluster_name)),
            )
            .await
            .map_err(|e| {
                ApiError::new(
                    format!("list the Machines of cluster {}", self.cluster_name),
                    e,
                )
            });
        let list = listed?;
        let group_of: BTreeMap<&str, &str> = self
            .groups
            .iter()
            .map(|(g, s)| (s.machine_deployment.as_str(), g.as_str()))
            .collect();
        Ok(
            crate::converge::live::typed_items(&resource(versions, MACHINE), list.items)
                .into_iter()
                .filter_map(|m| {
                    let md = m
                        .pointer(&format!(
                            "/metadata/labels/{}",
                            DEPLOYMENT_NAME_LABEL.replace('/', "~1")
                        ))
                        .and_then(Value::as_str)?;
                    Some((group_of.get(md)?.to_string(), m))
                })
                .collect(),
        )
    }
}

/// The API resource of a Cluster API kind at the served version.
fn resource(versions: &Versions, kind: &str) -> ApiResource {
    let (group, version) = if kind == KUBEADM_CONTROL_PLANE {
        (capi::CONTROL_PLANE_GROUP, versions.control_plane.as_str())
    } else {
        (capi::CLUSTER_GROUP, versions.core.as_str())
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
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
        // Used only with an explicit node label (`nodeGroupLabel`, one Cluster API syncs from
        // the Machines); otherwise `observe` maps nodes through the Machines' nodeRefs.
        NodeGroupSelector {
            label: self
                .node_group_label
                .clone()
                .unwrap_or_else(|| DEPLOYMENT_NAME_LABEL.to_string()),
            groups: self
                .groups
                .iter()
                .map(|(group, s)| (s.machine_deployment.clone(), group.clone()))
                .collect(),
        }
    }

    async fn observe(
        &self,
        _record: &Record,
        _now: Timestamp,
    ) -> Result<ProviderObservation, Error> {
        let versions = self.versions().await?;
        let control_plane_requested = if self.topology {
            let cluster = self.get(&versions, CLUSTER, &self.cluster_name).await?;
            cluster
                .as_ref()
                .and_then(|c| version_at(c, "/spec/topology/version"))
        } else {
            let kcp = self
                .get(&versions, KUBEADM_CONTROL_PLANE, &self.control_plane)
                .await?;
            kcp.as_ref().and_then(|o| version_at(o, "/spec/version"))
        };
        let mut out = ProviderObservation {
            control_plane_requested,
            ..ProviderObservation::default()
        };
        for (group, s) in &self.groups {
            let Some(md) = self
                .get(&versions, MACHINE_DEPLOYMENT, &s.machine_deployment)
                .await?
            else {
                continue;
            };
            out.node_groups
                .insert(group.clone(), machine_deployment_progress(&md, &versions));
        }
        let machines = self.machines(&versions).await?;
        let mut nodes = BTreeMap::new();
        for (group, m) in &machines {
            if let Some(node) = m.pointer("/status/nodeRef/name").and_then(Value::as_str) {
                nodes.insert(node.to_string(), group.clone());
            }
            if let Some(problem) = drain_problem(m)
                && let Some(progress) = out.node_groups.get_mut(group)
                && progress.problem.is_none()
            {
                progress.problem = Some(problem);
            }
        }
        // Nodes belong to groups through their Machines, unless a node label is declared.
        if self.node_group_label.is_none() {
            out.nodes = Some(nodes);
        }
        Ok(out)
    }

    async fn upgrade_control_plane(&self, to: KubeVersion) -> Result<(), Error> {
        let version = exact(to)?;
        let versions = self.versions().await?;
        if self.topology {
            return self
                .apply(
                    &versions,
                    CLUSTER,
                    &self.cluster_name,
                    json!({"topology": {"version": version}}),
                )
                .await;
        }
        self.apply(
            &versions,
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
        let versions = self.versions().await?;
        let Some(s) = self.groups.get(group) else {
            return Err(Error::Management {
                from: format!("node group {group}"),
                problem: "not declared".into(),
            });
        };
        let spec = machine_deployment_spec(&versions, s, &version, limits);
        self.apply(&versions, MACHINE_DEPLOYMENT, &s.machine_deployment, spec)
            .await
    }
}

/// The MachineDeployment fields tidemark owns: the version, `maxUnavailable`, `maxSurge`
/// when declared, the drain timeout only when the group opts in to forcing.
fn machine_deployment_spec(
    versions: &Versions,
    s: &GroupSettings,
    version: &str,
    limits: RolloutLimits,
) -> Value {
    let mut rolling = json!({"maxUnavailable": limits.max_unavailable});
    if let Some(surge) = s.max_surge {
        rolling["maxSurge"] = json!(surge);
    }
    let mut template_spec = json!({"version": version});
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": rolling});
    if versions.is_v1beta2() {
        if s.force_drain {
            template_spec["deletion"] =
                json!({"nodeDrainTimeoutSeconds": limits.drain_timeout.as_secs()});
        }
        json!({"rollout": {"strategy": strategy}, "template": {"spec": template_spec}})
    } else {
        if s.force_drain {
            template_spec["nodeDrainTimeout"] =
                json!(format!("{}s", limits.drain_timeout.as_secs()));
        }
        json!({"strategy": strategy, "template": {"spec": template_spec}})
    }
}

/// A MachineDeployment's version and whether it rolls (a spec not yet observed, or fewer
/// up-to-date replicas than wanted).
fn machine_deployment_progress(md: &DynamicObject, versions: &Versions) -> GroupProgress {
    let int = |p: &str| md.data.pointer(p).and_then(Value::as_i64);
    let stale = int("/status/observedGeneration")
        .is_some_and(|o| md.metadata.generation.is_some_and(|g| o < g));
    let up_to_date = if versions.is_v1beta2() {
        int("/status/upToDateReplicas")
    } else {
        int("/status/updatedReplicas").or_else(|| int("/status/v1beta2/upToDateReplicas"))
    };
    let behind = matches!(
        (int("/spec/replicas"), up_to_date),
        (Some(r), Some(u)) if u < r
    );
    GroupProgress {
        requested: version_at(md, "/spec/template/spec/version"),
        rolling: stale || behind,
        problem: None,
    }
}

/// What holds a Machine being deleted: its drain (v1beta2 `Deleting` with reason
/// `DrainingNode`, v1beta1 `DrainingSucceeded=False`), naming the Machine and its Node.
fn drain_problem(machine: &Value) -> Option<ProviderProblem> {
    machine.pointer("/metadata/deletionTimestamp")?;
    let find = |path: &str, type_: &str| -> Option<Value> {
        machine
            .pointer(path)?
            .as_array()?
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
            .cloned()
    };
    let text = |c: &Value, k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    // v1beta2 conditions: in status.conditions (v1beta2 objects) or status.v1beta2 (v1beta1
    // objects of Cluster API >= 1.9).
    let deleting = find("/status/conditions", "Deleting")
        .or_else(|| find("/status/v1beta2/conditions", "Deleting"))
        .filter(|c| text(c, "reason") == "DrainingNode");
    let draining = find("/status/conditions", "DrainingSucceeded")
        .or_else(|| find("/status/deprecated/v1beta1/conditions", "DrainingSucceeded"))
        .filter(|c| text(c, "status") == "False");
    let message = deleting
        .map(|c| text(&c, "message"))
        .or_else(|| draining.map(|c| text(&c, "message")))?;
    let name = machine
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let node = machine
        .pointer("/status/nodeRef/name")
        .and_then(Value::as_str)
        .map(|n| format!(" (node {n})"))
        .unwrap_or_default();
    // Cluster API's message is a list ("Drain not completed yet (started at ...):\n* Pod
    // ns/a: ..."); a status message is one line.
    let message: Vec<&str> = message
        .lines()
        .map(|l| l.trim().trim_start_matches("* ").trim())
        .filter(|l| !l.is_empty())
        .collect();
    Some(ProviderProblem {
        permanent: false,
        message: format!("machine {name}{node} draining: {}", message.join(" ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1beta1() -> Versions {
        Versions {
            core: "v1beta1".into(),
            control_plane: "v1beta1".into(),
        }
    }

    fn v1beta2() -> Versions {
        Versions {
            core: "v1beta2".into(),
            control_plane: "v1beta2".into(),
        }
    }

    #[test]
    fn a_drain_held_shows_on_the_machine_being_deleted_in_both_api_versions() {
        let v2 = json!({
            "metadata": {"name": "md-1-abc", "deletionTimestamp": "2026-11-28T10:00:00Z"},
            "status": {"nodeRef": {"name": "node-3"}, "conditions": [
                {"type": "Deleting", "status": "True", "reason": "DrainingNode",
                 "message": "Drain not completed yet (started at 2026-11-28T10:00:00Z):\n* Pod default/web-1: cannot evict pod as it would violate the pod's disruption budget. The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}]}
        });
        let p = drain_problem(&v2).unwrap_or_else(|| panic!("no problem"));
        assert_eq!(
            p.message,
            "machine md-1-abc (node node-3) draining: Drain not completed yet (started at 2026-11-28T10:00:00Z): Pod default/web-1: cannot evict pod as it would violate the pod's disruption budget. The disruption budget web-pdb needs 2 healthy pods and has 2 currently"
        );
        assert!(!p.permanent);
        let v1 = json!({
            "metadata": {"name": "md-1-def", "deletionTimestamp": "2026-11-28T10:00:00Z"},
            "status": {"nodeRef": {"name": "node-4", "kind": "Node"}, "conditions": [
                {"type": "DrainingSucceeded", "status": "False", "reason": "Draining",
                 "message": "Draining the node: Cannot evict pod as it would violate the pod's disruption budget."}]}
        });
        let p = drain_problem(&v1).unwrap_or_else(|| panic!("no problem"));
        assert_eq!(
            p.message,
            "machine md-1-def (node node-4) draining: Draining the node: Cannot evict pod as it would violate the pod's disruption budget."
        );
        // Not being deleted, or deleting for another reason: nothing holds a drain.
        let mut running = v2.clone();
        if let Some(m) = running["metadata"].as_object_mut() {
            m.remove("deletionTimestamp");
        }
        assert_eq!(drain_problem(&running), None);
        let mut other = v2;
        other["status"]["conditions"][0]["reason"] = json!("WaitingForInfrastructureDeletion");
        assert_eq!(drain_problem(&other), None);
    }

    #[test]
    fn machine_deployment_fields_follow_the_served_version_and_force_only_on_opt_in() {
        let limits = RolloutLimits {
            max_unavailable: 2,
            drain_timeout: std::time::Duration::from_secs(600),
        };
        let plain = GroupSettings {
            machine_deployment: "c-general".into(),
            max_surge: None,
            force_drain: false,
        };
        assert_eq!(
            machine_deployment_spec(&v1beta1(), &plain, "v1.30.4", limits),
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}},
                   "template": {"spec": {"version": "v1.30.4"}}})
        );
        let forced = GroupSettings {
            max_surge: Some(0),
            force_drain: true,
            ..plain
        };
        assert_eq!(
            machine_deployment_spec(&v1beta1(), &forced, "v1.30.4", limits),
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2, "maxSurge": 0}},
                   "template": {"spec": {"version": "v1.30.4", "nodeDrainTimeout": "600s"}}})
        );
        assert_eq!(
            machine_deployment_spec(&v1beta2(), &forced, "v1.30.4", limits),
            json!({"rollout": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2, "maxSurge": 0}}},
                   "template": {"spec": {"version": "v1.30.4", "deletion": {"nodeDrainTimeoutSeconds": 600}}}})
        );
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
