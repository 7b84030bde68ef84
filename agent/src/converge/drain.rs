//! tidemark's own drain, for node groups no provider drains (`drain: tidemark` with the
//! exec provider's `replaceNode` command): the job of `upgrade-manager` and
//! `eks-rolling-update`, done node by node, level-triggered.
//!
//! Every pass continues the rollout from what the cluster shows:
//! 1. a batch begins only when no node of the group is being replaced and every node is
//!    Ready (the last replacement has joined): up to `maxUnavailable` nodes below the target
//!    version are cordoned and annotated (`tidemark.dev/drain-target`,
//!    `tidemark.dev/drain-started`);
//! 2. the pods of each such node are evicted through the Eviction API, so
//!    PodDisruptionBudgets are respected; DaemonSet pods, mirror pods and finished pods are
//!    left alone; a pod with local storage (`emptyDir`) is evicted only with the group's
//!    `deleteEmptyDirData: true` (as `kubectl drain --delete-emptydir-data`), else it holds
//!    the drain and the status names it;
//! 3. once a node holds no evictable pod, `replaceNode` runs for it, the node being
//!    annotated `tidemark.dev/replace-requested` first, so it is never run twice for one
//!    node (a command that exits non-zero clears the mark: it said it did nothing, and the
//!    next pass runs it again); a marked node still there after the command timeout plus
//!    `drainTimeout` stops the rollout and the status says what to do;
//! 4. a drain that does not finish within `drainTimeout` stops: the step fails naming the
//!    pod and what holds it, the node stays cordoned (and the status says so); nothing is
//!    forced.
//!
//! No state lives outside the cluster: a restarted agent finds its cordoned, annotated
//! nodes and goes on.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};
use serde_json::json;
use tidemark_schema::KubeVersion;

use super::live::ApiError;
use crate::keys::{self, node_annotations as ann};
use crate::provider::Exec;

/// Errors of a drain.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// A request failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A node's pods were not evicted within the drain timeout.
    #[error(
        "node group {group}: the drain of node {node} did not finish within {}: {holding}; the node stays cordoned",
        tidemark_schema::Duration(*timeout)
    )]
    Timeout {
        /// The node group.
        group: String,
        /// The node.
        node: String,
        /// The drain timeout.
        timeout: Duration,
        /// The pods still there and what holds them.
        holding: String,
    },
    /// A node whose replacement was requested is still there.
    #[error(
        "node group {group}: node {node} was to be replaced (replaceNode ran, or the agent stopped just before running it) but is still there after {}; it stays cordoned and is never replaced twice: replace or delete it, or remove its annotation tidemark.dev/replace-requested to have tidemark run replaceNode again",
        tidemark_schema::Duration(*waited)
    )]
    NotReplaced {
        /// The node group.
        group: String,
        /// The node.
        node: String,
        /// How long tidemark waited.
        waited: Duration,
    },
    /// The `replaceNode` command failed.
    #[error("node group {group}: replacing node {node} failed")]
    Replace {
        /// The node group.
        group: String,
        /// The node.
        node: String,
        /// The cause.
        #[source]
        source: crate::provider::Error,
    },
}

impl DrainError {
    /// Whether a person must act: a drain that timed out does not finish by waiting.
    pub fn needs_person(&self) -> bool {
        matches!(
            self,
            DrainError::Timeout { .. } | DrainError::NotReplaced { .. }
        )
    }
}

/// Where a drain stands after a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every node of the group runs the target version.
    Done,
    /// Still going: what happens or what it waits for.
    Progress(String),
}

/// One pass of the drain of `group` (nodes labelled `label=group`) toward `to`.
pub struct Drain<'a> {
    /// The workload cluster.
    pub client: &'a kube::Client,
    /// The exec provider (its `replaceNode` command).
    pub exec: &'a Exec,
    /// The node group.
    pub group: &'a str,
    /// Nodes that may be drained at once.
    pub max_unavailable: u32,
    /// Longest drain of one node.
    pub drain_timeout: Duration,
    /// Whether pods with `emptyDir` volumes are evicted (their data is lost).
    pub delete_empty_dir_data: bool,
    /// The target version.
    pub to: KubeVersion,
    /// Now.
    pub now: Timestamp,
}

impl Drain<'_> {
    /// Continues the drain (see the module docs).
    pub async fn step(&self) -> Result<Drained, DrainError> {
        let nodes_api: Api<Node> = Api::all(self.client.clone());
        let label = self.exec.node_group_label();
        let nodes = nodes_api
            .list(&ListParams::default().labels(&format!("{label}={}", self.group)))
            .await
            .map_err(|e| ApiError::new(format!("list the nodes of group {}", self.group), e))?
            .items;
        let mut in_progress: Vec<&Node> = nodes
            .iter()
            .filter(|n| annotation(n, ann::DRAIN_TARGET).is_some())
            .collect();
        let mut old: Vec<&Node> = nodes
            .iter()
            .filter(|n| annotation(n, ann::DRAIN_TARGET).is_none())
            .filter(|n| kubelet(n).is_none_or(|v| !self.to.satisfied_by(v)))
            .collect();
        old.sort_by_key(|n| n.metadata.name.clone());
        if old.is_empty() && in_progress.is_empty() {
            return Ok(Drained::Done);
        }
        let all_ready = nodes.iter().all(is_ready);
        if in_progress.is_empty() && !all_ready {
            let waiting: Vec<String> = nodes
                .iter()
                .filter(|n| !is_ready(n))
                .filter_map(|n| n.metadata.name.clone())
                .collect();
            return Ok(Drained::Progress(format!(
                "node group {}: waiting for node(s) {} to be Ready before the next batch",
                self.group,
                waiting.join(", ")
            )));
        }
        // A new batch: cordon and mark up to maxUnavailable nodes.
        if in_progress.is_empty() {
            let batch = usize::try_from(self.max_unavailable).unwrap_or(1).max(1);
            for n in old.iter().take(batch) {
                self.cordon(&nodes_api, n).await?;
                in_progress.push(n);
            }
        }
        let mut progress = Vec::new();
        for n in in_progress {
            let name = n.metadata.name.clone().unwrap_or_default();
            if let Some(at) = annotation(n, ann::REPLACE_REQUESTED) {
                // The command ran, or the agent stopped right before running it: either
                // way it is never run again for this node. A node still there long after
                // needs a person.
                let waited = at
                    .parse::<Timestamp>()
                    .map(|at| self.now.duration_since(at).unsigned_abs())
                    .unwrap_or_default();
                let limit = self.exec.timeout() + self.drain_timeout;
                if waited > limit {
                    return Err(DrainError::NotReplaced {
                        group: self.group.to_string(),
                        node: name,
                        waited: limit,
                    });
                }
                progress.push(format!("node {name} drained and being replaced"));
                continue;
            }
            let started = annotation(n, ann::DRAIN_STARTED)
                .and_then(|t| t.parse::<Timestamp>().ok())
                .unwrap_or(self.now);
            let left = self.evict(&name).await?;
            if left.is_empty() {
                self.replace(&nodes_api, &name).await?;
                progress.push(format!("node {name} drained; replacing it"));
                continue;
            }
            let holding = left.join("; ");
            if self.now.duration_since(started).unsigned_abs() > self.drain_timeout {
                return Err(DrainError::Timeout {
                    group: self.group.to_string(),
                    node: name,
                    timeout: self.drain_timeout,
                    holding,
                });
            }
            progress.push(format!("draining node {name}: {holding}"));
        }
        Ok(Drained::Progress(format!(
            "node group {} rolling to {}: {}",
            self.group,
            self.to,
            progress.join("; ")
        )))
    }

    /// Cordons `node` and marks it as being drained (one server-side apply).
    async fn cordon(&self, api: &Api<Node>, node: &Node) -> Result<(), ApiError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        tracing::info!(group = self.group, node = %name, to = %self.to, "cordoning node to replace it");
        let body = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {
                ann::DRAIN_TARGET: self.to.to_string(),
                ann::DRAIN_STARTED: self.now.to_string(),
            }},
            "spec": {"unschedulable": true},
        });
        api.patch(
            &name,
            &PatchParams::apply(keys::FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| ApiError::new(format!("cordon node {name}"), e))?;
        Ok(())
    }

    /// Evicts the evictable pods of `node`; returns those still there, each with what
    /// holds it.
    async fn evict(&self, node: &str) -> Result<Vec<String>, ApiError> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let on_node = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(|e| ApiError::new(format!("list the pods of node {node}"), e))?;
        let mut left = Vec::new();
        for pod in on_node.items.iter().filter(|p| is_evictable(p)) {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            if !self.delete_empty_dir_data && has_local_storage(pod) {
                left.push(format!(
                    "pod {ns}/{name} uses local storage (emptyDir), lost with the node: evict it by hand, or set deleteEmptyDirData: true on the node group"
                ));
                continue;
            }
            if pod.metadata.deletion_timestamp.is_some() {
                left.push(format!("pod {ns}/{name} is terminating"));
                continue;
            }
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            match api.evict(&name, &EvictParams::default()).await {
                Ok(_) => left.push(format!("pod {ns}/{name} evicted, terminating")),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                // 429: a PodDisruptionBudget does not allow it now (its causes name it), or
                // the API server throttles (its message says so); either way the pod stays
                // for the next round and the status quotes the reason.
                Err(kube::Error::Api(s)) if s.code == 429 => {
                    let why = s
                        .details
                        .as_ref()
                        .and_then(|d| {
                            d.causes
                                .iter()
                                .find_map(|c| Some(c.message.clone()).filter(|m| !m.is_empty()))
                        })
                        .unwrap_or(s.message);
                    left.push(format!("pod {ns}/{name} cannot be evicted: {why}"));
                }
                Err(e) => return Err(ApiError::new(format!("evict pod {ns}/{name}"), e)),
            }
        }
        Ok(left)
    }

    /// Marks `node` as replace-requested, then runs `replaceNode` for it: a crash between
    /// the two leaves a node that is never replaced twice (and the status names it).
    async fn replace(&self, api: &Api<Node>, node: &str) -> Result<(), DrainError> {
        let body = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "annotations": {
                ann::REPLACE_REQUESTED: self.now.to_string(),
            }},
        });
        // A merge patch: an apply would have to send the cordon's fields again to keep
        // them.
        let merged = json!({"metadata": body["metadata"]});
        api.patch(
            node,
            &PatchParams {
                field_manager: Some(keys::FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&merged),
        )
        .await
        .map_err(|e| ApiError::new(format!("mark node {node} as being replaced"), e))?;
        tracing::info!(group = self.group, node, to = %self.to, "replacing node");
        let Err(source) = self.exec.replace_node(node, self.group, self.to).await else {
            return Ok(());
        };
        // The command said it failed: the next pass runs it again.
        let cleared = json!({"metadata": {"annotations": {ann::REPLACE_REQUESTED: null}}});
        if let Err(e) = api
            .patch(node, &PatchParams::default(), &Patch::Merge(&cleared))
            .await
        {
            tracing::warn!(node, error = %ApiError::new("clear the replace request", e), "replaceNode failed and the node stays marked; it is not run again");
        }
        Err(DrainError::Replace {
            group: self.group.to_string(),
            node: node.to_string(),
            source,
        })
    }
}

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn kubelet(node: &Node) -> Option<KubeVersion> {
    node.status
        .as_ref()?
        .node_info
        .as_ref()
        .and_then(|i| KubeVersion::parse_observed(&i.kubelet_version).ok())
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether `pod` has a volume whose data lives on the node.
fn has_local_storage(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| vs.iter().any(|v| v.empty_dir.is_some()))
}

/// Whether a drain evicts `pod`: not owned by a DaemonSet, not a mirror pod, not finished.
fn is_evictable(pod: &Pod) -> bool {
    let daemon = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    !daemon && !mirror && !finished
}
