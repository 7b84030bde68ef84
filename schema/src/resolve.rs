//! The fully resolved desired state of one cluster: its manifest with the fleet's defaults
//! applied and its component sets expanded. This is what the agent plans against and what
//! `tidemark desired` prints. Pure: it assumes the inputs passed [`crate::validate`].

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cluster::{Cluster, DrainBy, DrainTimeoutAction, Provider};
use crate::component::{ChartRef, Component, ComponentPhase, ComponentSet};
use crate::duration::Duration;
use crate::fleet::Fleet;
use crate::selector::Labels;
use crate::version::KubeVersion;
use crate::window::MaintenanceWindow;

/// Default `maxUnavailable` of a node group.
pub const DEFAULT_MAX_UNAVAILABLE: u32 = 1;
/// Default `drainTimeout` of a node group.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// Default health timeout of a component.
pub const DEFAULT_COMPONENT_TIMEOUT: Duration = Duration::from_secs(300);

/// What one cluster should run, with every default filled in.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredState {
    /// The cluster's `metadata.name`.
    pub cluster: String,
    /// Its labels at the resolved commit.
    pub labels: Labels,
    /// Its wave, from the default branch; `None` when it follows the default branch.
    pub wave: Option<String>,
    /// How to change it.
    pub provider: Provider,
    /// Desired control-plane version.
    pub control_plane: KubeVersion,
    /// Desired node groups.
    pub node_groups: Vec<DesiredNodeGroup>,
    /// Components, set components first (in set order), then the cluster's own.
    pub components: Vec<DesiredComponent>,
    /// When control-plane and node-group steps may run.
    pub maintenance_window: Option<MaintenanceWindow>,
    /// Whether git pauses this cluster.
    pub paused: bool,
    /// Whether the whole fleet is paused (`spec.paused` of `fleet.yaml` on the default
    /// branch, which [`resolve`] does not read: the agent sets it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fleet_paused: bool,
    /// Known patch releases, highest per minor: where intermediate control-plane hops land.
    /// From fleet.yaml `kubernetesVersions` and every version this cluster declares.
    pub patch_releases: Vec<KubeVersion>,
}

impl DesiredState {
    /// The version to land on when passing through `minor` (a minor-only version): the
    /// highest known patch of that minor, or the minor itself when none is known.
    pub fn landing(&self, minor: KubeVersion) -> KubeVersion {
        self.patch_releases
            .iter()
            .filter(|v| v.minor_version() == minor.minor_version() && v.patch.is_some())
            .max()
            .copied()
            .unwrap_or(minor)
    }
}

/// A node group with defaults applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredNodeGroup {
    /// Group name.
    pub name: String,
    /// Desired kubelet version.
    pub version: KubeVersion,
    /// Nodes that may be unavailable at once.
    pub max_unavailable: u32,
    /// Longest drain of one node.
    pub drain_timeout: Duration,
    /// Follows every control-plane minor.
    pub follow_control_plane: bool,
    /// Nodes that may be added while it rolls, when declared.
    pub max_surge: Option<u32>,
    /// What happens when a drain outlasts `drain_timeout`.
    pub drain_timeout_action: DrainTimeoutAction,
    /// Who drains its nodes.
    pub drain: DrainBy,
    /// tidemark's drain evicts pods with `emptyDir` volumes.
    pub delete_empty_dir_data: bool,
}

/// A component with its values layers in merge order.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredComponent {
    /// Component name.
    pub name: String,
    /// Helm release name.
    pub release: String,
    /// Target namespace.
    pub namespace: String,
    /// The chart.
    pub chart: ChartRef,
    /// Values, in the order they are given to helm (later wins).
    pub values: Vec<ValuesLayer>,
    /// Phase of the plan it is applied in.
    pub phase: ComponentPhase,
    /// Server-side apply with `force`.
    pub force: bool,
    /// Delete CRDs the chart no longer renders.
    pub prune_crds: bool,
    /// Health timeout.
    pub timeout: Duration,
    /// Where it was declared: `cluster` or `componentSet/<name>`.
    pub origin: String,
}

/// One layer of values.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ValuesLayer {
    /// A values file in the fleet repo (read at the same commit).
    File(String),
    /// Inline values.
    Inline(serde_json::Map<String, serde_json::Value>),
}

/// Resolves `cluster` against the fleet's defaults and the component sets it names.
/// Sets that do not exist are skipped (validation reports them).
pub fn resolve(
    fleet: Option<&Fleet>,
    cluster: &Cluster,
    wave: Option<String>,
    sets: &BTreeMap<String, &ComponentSet>,
) -> DesiredState {
    let spec = &cluster.spec;
    let labels = &cluster.metadata.labels;
    let mut window = None;
    let mut max_unavailable = None;
    let mut drain_timeout = None;
    for d in fleet
        .iter()
        .flat_map(|f| &f.spec.defaults)
        .filter(|d| d.clusters.matches(labels))
    {
        window = d.maintenance_window.clone().or(window);
        max_unavailable = d.max_unavailable.or(max_unavailable);
        drain_timeout = d.drain_timeout.or(drain_timeout);
    }
    let node_groups = spec
        .node_groups
        .iter()
        .map(|g| DesiredNodeGroup {
            name: g.name.clone(),
            version: g.version,
            max_unavailable: g
                .max_unavailable
                .or(max_unavailable)
                .unwrap_or(DEFAULT_MAX_UNAVAILABLE),
            drain_timeout: g
                .drain_timeout
                .or(drain_timeout)
                .unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            follow_control_plane: g.follow_control_plane,
            max_surge: g.max_surge,
            drain_timeout_action: g.drain_timeout_action.unwrap_or_default(),
            drain: g.drain.unwrap_or_default(),
            delete_empty_dir_data: g.delete_empty_dir_data,
        })
        .collect();

    let own: BTreeMap<&str, &Component> = spec
        .components
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let mut components = Vec::new();
    for set_name in &spec.component_sets {
        let Some(set) = sets.get(set_name) else {
            continue;
        };
        for c in &set.spec.components {
            if own.contains_key(c.name.as_str()) {
                continue; // the cluster's own component of that name replaces the set's
            }
            let mut desired = desired_component(c, format!("componentSet/{set_name}"));
            if let Some(extra) = spec.component_values.get(&c.name) {
                desired
                    .values
                    .extend(extra.values_files.iter().cloned().map(ValuesLayer::File));
                desired
                    .values
                    .extend(extra.values.clone().map(ValuesLayer::Inline));
            }
            components.push(desired);
        }
    }
    components.extend(
        spec.components
            .iter()
            .map(|c| desired_component(c, "cluster".into())),
    );

    DesiredState {
        cluster: cluster.metadata.name.clone(),
        labels: labels.clone(),
        wave,
        provider: spec.provider.clone(),
        control_plane: spec.control_plane.version,
        node_groups,
        components,
        maintenance_window: spec.maintenance_window.clone().or(window),
        paused: spec.paused,
        fleet_paused: false,
        patch_releases: patch_releases(fleet, cluster),
    }
}

fn patch_releases(fleet: Option<&Fleet>, cluster: &Cluster) -> Vec<KubeVersion> {
    let mut all: Vec<KubeVersion> = fleet
        .iter()
        .flat_map(|f| f.spec.kubernetes_versions.iter().copied())
        .collect();
    all.push(cluster.spec.control_plane.version);
    all.extend(cluster.spec.node_groups.iter().map(|g| g.version));
    all.retain(|v| v.patch.is_some());
    all.sort();
    all.dedup();
    all
}

fn desired_component(c: &Component, origin: String) -> DesiredComponent {
    let mut values: Vec<ValuesLayer> = c
        .values_files
        .iter()
        .cloned()
        .map(ValuesLayer::File)
        .collect();
    values.extend(c.values.clone().map(ValuesLayer::Inline));
    DesiredComponent {
        name: c.name.clone(),
        release: c.release.clone().unwrap_or_else(|| c.name.clone()),
        namespace: c.namespace.clone(),
        chart: c.chart.clone(),
        values,
        phase: c.phase,
        force: c.force,
        prune_crds: c.prune_crds,
        timeout: c.timeout.unwrap_or(DEFAULT_COMPONENT_TIMEOUT),
        origin,
    }
}
