//! Reading the cluster: the API server's version and health, nodes by node group, the
//! provider's requested versions and progress, and the status object's annotations.
//! Only reads; every Kubernetes type stops here and becomes [`Observed`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde::Deserialize;
use tidemark_schema::KubeVersion;
use tidemark_schema::cluster::{ClusterApiProvider, Provider};
use tidemark_schema::resolve::DesiredState;

use super::model::{NodeGroupObservation, Observed, PreviousDesired, ProviderProblem};
use crate::keys::{annotations, capi};

/// Errors of observing. All are transient from the planner's point of view.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed.
    #[error("failed to read {what} from the API server")]
    Api {
        /// What was being read.
        what: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The API server reported a version tidemark cannot parse.
    #[error("the API server reports version `{0}`, which is not a Kubernetes version")]
    Version(String),
}

/// Observes the cluster for `desired`; `status_namespace` holds the status annotations.
pub async fn observe(
    client: &kube::Client,
    desired: &DesiredState,
    status_namespace: &str,
) -> Result<Observed, Error> {
    let api_err = |what: &str| {
        let what = what.to_string();
        move |source| Error::Api { what, source }
    };
    let info = client
        .apiserver_version()
        .await
        .map_err(api_err("/version"))?;
    let control_plane = KubeVersion::parse_observed(&info.git_version)
        .map_err(|_| Error::Version(info.git_version.clone()))?;
    let api_healthy = readyz(client).await;

    let label = desired.provider.node_group_label().to_string();
    let group_of = group_names(desired);
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node_groups: BTreeMap<String, NodeGroupObservation> = BTreeMap::new();
    let mut nodes_not_ready = Vec::new();
    for node in nodes
        .list(&ListParams::default())
        .await
        .map_err(api_err("nodes"))?
    {
        let name = node.metadata.name.clone().unwrap_or_default();
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready {
            nodes_not_ready.push(name.clone());
        }
        let Some(group) = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(&label))
            .and_then(|v| group_of.get(v.as_str()))
        else {
            continue;
        };
        let kubelet = status
            .and_then(|s| s.node_info.as_ref())
            .and_then(|i| KubeVersion::parse_observed(&i.kubelet_version).ok());
        let g = node_groups.entry(group.to_string()).or_default();
        g.nodes += 1;
        g.ready += u32::from(ready);
        g.cordoned += u32::from(
            node.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
        );
        if let Some(k) = kubelet {
            g.min_kubelet = Some(g.min_kubelet.map_or(k, |m| m.min(k)));
            g.max_kubelet = Some(g.max_kubelet.map_or(k, |m| m.max(k)));
        }
    }

    let mut control_plane_requested = None;
    if let Provider::ClusterApi(p) = &desired.provider {
        let (cp, groups) = observe_clusterapi(client, desired, p).await?;
        control_plane_requested = cp.filter(|v| v.is_newer_than(control_plane));
        for (group, (requested, rolling, problem)) in groups {
            let g = node_groups.entry(group).or_default();
            g.requested = requested;
            g.provider_rolling = rolling;
            g.provider_problem = problem;
        }
    }

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let status_object = namespaces
        .get_opt(status_namespace)
        .await
        .map_err(api_err("the status namespace"))?;
    let notes = status_object
        .and_then(|ns| ns.metadata.annotations)
        .unwrap_or_default();
    let paused_annotation = notes.get(annotations::PAUSED).is_some_and(|v| v == "true");
    let previous_desired = previous_desired(&notes);
    let components = notes
        .get(annotations::COMPONENTS)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();

    Ok(Observed {
        control_plane,
        control_plane_requested,
        node_groups,
        nodes_not_ready,
        api_healthy,
        paused_annotation,
        provider_busy: None,
        previous_desired,
        components,
        drift_due: false,
    })
}

async fn readyz(client: &kube::Client) -> bool {
    let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    client
        .request_text(req)
        .await
        .is_ok_and(|body| body.trim() == "ok")
}

/// Node-label value -> node group name. Cluster API labels nodes with their
/// MachineDeployment's name, `exec` clusters with the group name itself.
fn group_names(desired: &DesiredState) -> BTreeMap<String, String> {
    desired
        .node_groups
        .iter()
        .map(|g| {
            let value = match &desired.provider {
                Provider::ClusterApi(p) => machine_deployment(desired, p, &g.name),
                Provider::Exec(_) => g.name.clone(),
            };
            (value, g.name.clone())
        })
        .collect()
}

/// The MachineDeployment of node group `group`.
pub fn machine_deployment(desired: &DesiredState, p: &ClusterApiProvider, group: &str) -> String {
    p.machine_deployments
        .get(group)
        .cloned()
        .unwrap_or_else(|| format!("{}-{group}", desired.cluster))
}

/// The `KubeadmControlPlane` of the cluster.
pub fn control_plane_name(desired: &DesiredState, p: &ClusterApiProvider) -> String {
    p.control_plane
        .clone()
        .unwrap_or_else(|| desired.cluster.clone())
}

/// The API resource of a Cluster API kind.
pub fn capi_resource(kind: &str) -> ApiResource {
    let group = if kind == "KubeadmControlPlane" {
        capi::CONTROL_PLANE_GROUP
    } else {
        capi::CLUSTER_GROUP
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, capi::VERSION, kind))
}

type GroupProgress = BTreeMap<String, (Option<KubeVersion>, bool, Option<ProviderProblem>)>;

/// The KubeadmControlPlane's `spec.version`, and per node group its MachineDeployment's
/// version and whether it is rolling.
async fn observe_clusterapi(
    client: &kube::Client,
    desired: &DesiredState,
    p: &ClusterApiProvider,
) -> Result<(Option<KubeVersion>, GroupProgress), Error> {
    let kcp_api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &p.namespace,
        &capi_resource("KubeadmControlPlane"),
    );
    let name = control_plane_name(desired, p);
    let kcp = kcp_api.get_opt(&name).await.map_err(|source| Error::Api {
        what: format!("KubeadmControlPlane {name}"),
        source,
    })?;
    let cp = kcp.and_then(|o| {
        o.data
            .pointer("/spec/version")
            .and_then(|v| v.as_str())
            .and_then(|v| KubeVersion::parse_observed(v).ok())
    });

    let md_api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &p.namespace,
        &capi_resource("MachineDeployment"),
    );
    let mut groups = BTreeMap::new();
    for g in &desired.node_groups {
        let name = machine_deployment(desired, p, &g.name);
        let md = md_api.get_opt(&name).await.map_err(|source| Error::Api {
            what: format!("MachineDeployment {name}"),
            source,
        })?;
        let Some(md) = md else { continue };
        let version = md
            .data
            .pointer("/spec/template/spec/version")
            .and_then(|v| v.as_str())
            .and_then(|v| KubeVersion::parse_observed(v).ok());
        let replicas = md.data.pointer("/spec/replicas").and_then(|v| v.as_i64());
        let updated = md
            .data
            .pointer("/status/updatedReplicas")
            .and_then(|v| v.as_i64());
        let observed_gen = md
            .data
            .pointer("/status/observedGeneration")
            .and_then(|v| v.as_i64());
        let stale = observed_gen.is_some_and(|o| md.metadata.generation.is_some_and(|g| o < g));
        let rolling = stale || matches!((replicas, updated), (Some(r), Some(u)) if u < r);
        groups.insert(
            g.name.clone(),
            (version, rolling, machine_deployment_problem(&md)),
        );
    }
    Ok((cp, groups))
}

/// A `Ready=False` condition whose reason says the rollout is stuck (Cluster API's
/// `DrainingFailed`, or a rejected version), with its message.
fn machine_deployment_problem(md: &DynamicObject) -> Option<ProviderProblem> {
    let conditions = md.data.pointer("/status/conditions")?.as_array()?;
    let ready = conditions
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Ready"))?;
    if ready.get("status").and_then(|s| s.as_str()) != Some("False") {
        return None;
    }
    let reason = ready
        .get("reason")
        .and_then(|r| r.as_str())
        .unwrap_or_default();
    let message = ready
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    match reason {
        "DrainingFailed" => Some(ProviderProblem {
            permanent: false,
            message: message.to_string(),
        }),
        "UpgradeRejected" => Some(ProviderProblem {
            permanent: true,
            message: message.to_string(),
        }),
        _ => None,
    }
}

#[derive(Deserialize)]
struct VersionsNote {
    desired: Option<String>,
}

/// The declared versions the previous pass wrote into the status annotations.
fn previous_desired(notes: &BTreeMap<String, String>) -> Option<PreviousDesired> {
    let cp = notes
        .get(annotations::CONTROL_PLANE)
        .and_then(|j| serde_json::from_str::<VersionsNote>(j).ok())
        .and_then(|n| n.desired)
        .and_then(|v| KubeVersion::parse_observed(&v).ok());
    let groups: BTreeMap<String, KubeVersion> = notes
        .get(annotations::NODE_GROUPS)
        .and_then(|j| serde_json::from_str::<BTreeMap<String, VersionsNote>>(j).ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, n)| Some((name, KubeVersion::parse_observed(&n.desired?).ok()?)))
        .collect();
    (cp.is_some() || !groups.is_empty()).then_some(PreviousDesired {
        control_plane: cp,
        node_groups: groups,
    })
}
