//! Reading the cluster: the API server's version, served APIs and health, nodes by node
//! group, what the provider knows of changes in progress, and what the status record says
//! earlier passes did. Only reads; every Kubernetes type stops here and becomes [`Observed`], complete
//! before planning: `tidemark plan` and the agent's pass call the same [`cluster`], so they
//! see the same world.

pub mod model;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use tidemark_schema::KubeVersion;

use crate::provider::{AnyProvider, GroupProgress, Provider};
use crate::status::Record;
use model::{Capabilities, NodeGroupObservation, Observed, PreviousDesired};

/// Errors of observing. All are transient from the planner's point of view.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed.
    #[error("failed to read {what} from the API server")]
    Api {
        /// What was being read.
        what: &'static str,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The API server reported a version tidemark cannot parse.
    #[error("the API server reports version `{0}`, which is not a Kubernetes version")]
    Version(String),
    /// The provider could not say what it is doing.
    #[error("failed to observe the provider")]
    Provider(#[source] crate::provider::Error),
}

/// Observes the cluster at `now`: versions, nodes by the node groups of `provider`, the
/// provider's progress, and from `record` the local veto, the declarations accepted so far,
/// the components and whether a drift check is due (every `drift_interval`).
pub async fn cluster(
    client: &kube::Client,
    provider: &AnyProvider,
    record: &Record,
    drift_interval: Duration,
    now: Timestamp,
) -> Result<Observed, Error> {
    let info = client
        .apiserver_version()
        .await
        .map_err(|source| Error::Api {
            what: "/version",
            source,
        })?;
    let control_plane = KubeVersion::parse_observed(&info.git_version)
        .map_err(|_| Error::Version(info.git_version.clone()))?;
    let api_healthy = readyz(client).await;
    let groups = client
        .list_api_groups()
        .await
        .map_err(|source| Error::Api {
            what: "the API group list",
            source,
        })?;
    let capabilities = Capabilities {
        kube_version: Some(control_plane),
        group_versions: std::iter::once("v1".to_string())
            .chain(
                groups
                    .groups
                    .iter()
                    .flat_map(|g| g.versions.iter().map(|v| v.group_version.clone())),
            )
            .collect(),
    };
    let progress = provider
        .observe(record, now)
        .await
        .map_err(Error::Provider)?;
    let (mut node_groups, nodes_not_ready, node_group_of) =
        nodes(client, provider, progress.nodes.as_ref()).await?;
    // A request counts while it is ahead of what runs; its time comes from the record when
    // tidemark made it.
    let control_plane_requested = progress
        .control_plane_requested
        .filter(|v| v.is_newer_than(control_plane));
    let control_plane_requested_at = record
        .control_plane
        .as_ref()
        .and_then(|v| v.request())
        .filter(|(v, _)| Some(*v) == control_plane_requested)
        .map(|(_, at)| at);
    for (name, p) in progress.node_groups {
        if !node_groups.contains_key(&name) && p == GroupProgress::default() {
            continue; // no nodes, and nothing the provider knows of it
        }
        let g = node_groups.entry(name.clone()).or_default();
        g.requested = p.requested;
        g.provider_rolling = p.rolling;
        g.provider_problem = p.problem;
        g.requested_at = record
            .node_groups
            .get(&name)
            .and_then(|v| v.request())
            .filter(|(v, _)| {
                Some(*v) == g.requested && g.min_kubelet.is_none_or(|m| v.is_newer_than(m))
            })
            .map(|(_, at)| at);
    }

    Ok(Observed {
        control_plane,
        control_plane_requested,
        control_plane_requested_at,
        node_groups,
        nodes_not_ready,
        node_group_of,
        api_healthy,
        paused_annotation: record.paused,
        provider_busy: progress.busy,
        previous_desired: previous_desired(record),
        components: record.components.clone(),
        drift_due: record
            .drift_checked
            .is_none_or(|t| now.duration_since(t).unsigned_abs() >= drift_interval),
        capabilities,
        preflight: model::Preflight::default(),
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

/// Nodes by node group (matched by name when the provider maps them, else by its label),
/// and the names of nodes that are not Ready (any group).
async fn nodes(
    client: &kube::Client,
    provider: &AnyProvider,
    by_name: Option<&BTreeMap<String, String>>,
) -> Result<NodesByGroup, Error> {
    let selector = provider.node_groups();
    let api: Api<Node> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Api {
            what: "nodes",
            source,
        })?;
    let mut groups: BTreeMap<String, NodeGroupObservation> = BTreeMap::new();
    let mut not_ready = Vec::new();
    let mut group_of = BTreeMap::new();
    for node in list {
        let name = node.metadata.name.clone().unwrap_or_default();
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready {
            not_ready.push(name.clone());
        }
        let group = match by_name {
            Some(map) => map.get(&name),
            None => node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(&selector.label))
                .and_then(|v| selector.groups.get(v)),
        };
        let Some(group) = group else {
            continue;
        };
        group_of.insert(name.clone(), group.clone());
        let kubelet = status
            .and_then(|s| s.node_info.as_ref())
            .and_then(|i| KubeVersion::parse_observed(&i.kubelet_version).ok());
        let g = groups.entry(group.clone()).or_default();
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
    Ok((groups, not_ready, group_of))
}

/// Node groups, the nodes that are not Ready, and each grouped node's group.
type NodesByGroup = (
    BTreeMap<String, NodeGroupObservation>,
    Vec<String>,
    BTreeMap<String, String>,
);

/// The declarations tidemark accepted on earlier passes (a refused downgrade keeps the
/// last accepted one).
fn previous_desired(record: &Record) -> Option<PreviousDesired> {
    let control_plane = record.control_plane.as_ref().map(|v| v.baseline());
    let node_groups: BTreeMap<String, KubeVersion> = record
        .node_groups
        .iter()
        .map(|(name, v)| (name.clone(), v.baseline()))
        .collect();
    (control_plane.is_some() || !node_groups.is_empty()).then_some(PreviousDesired {
        control_plane,
        node_groups,
    })
}
