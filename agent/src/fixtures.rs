//! Builders for the values pure code works on, shared by unit tests:
//! `desired("1.30.4").group("general", "1.30.4")`, `observed("1.29.8", &[("general", "1.29.8")])`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use tidemark_schema::cluster::{ClusterApiProvider, Provider};
use tidemark_schema::component::ChartRef;
use tidemark_schema::resolve::{DesiredComponent, DesiredNodeGroup, DesiredState};
use tidemark_schema::{ComponentPhase, Duration, KubeVersion};

use crate::observe::model::{Capabilities, NodeGroupObservation, Observed};

/// Builder: `desired("1.30.4").group("general", "1.30.4")`.
pub fn v(s: &str) -> KubeVersion {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test version {s}: {e}"))
}

pub fn now() -> Timestamp {
    // A Tuesday.
    "2026-11-24T10:00:00Z"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn desired(cp: &str) -> DesiredState {
    DesiredState {
        cluster: "test".into(),
        labels: BTreeMap::new(),
        wave: None,
        provider: Provider::ClusterApi(ClusterApiProvider {
            namespace: "capi-system".into(),
            ..ClusterApiProvider::default()
        }),
        control_plane: v(cp),
        node_groups: vec![],
        components: vec![],
        maintenance_window: None,
        paused: false,
        fleet_paused: false,
        patch_releases: vec![],
    }
}

pub trait DesiredExt {
    fn group(self, name: &str, version: &str) -> Self;
    fn following(self, name: &str, version: &str) -> Self;
    fn skew(self, n: u32) -> Self;
}

impl DesiredExt for DesiredState {
    fn group(mut self, name: &str, version: &str) -> Self {
        self.node_groups.push(DesiredNodeGroup {
            name: name.into(),
            version: v(version),
            max_unavailable: 1,
            drain_timeout: Duration::from_secs(600),
            follow_control_plane: false,
            max_surge: None,
            drain_timeout_action: Default::default(),
            drain: Default::default(),
            delete_empty_dir_data: false,
        });
        self
    }

    fn following(mut self, name: &str, version: &str) -> Self {
        self = self.group(name, version);
        if let Some(g) = self.node_groups.last_mut() {
            g.follow_control_plane = true;
        }
        self
    }

    fn skew(mut self, n: u32) -> Self {
        if let Provider::ClusterApi(p) = &mut self.provider {
            p.max_kubelet_skew = Some(n);
        }
        self
    }
}

/// A healthy cluster: every node Ready, nothing rolling.
pub fn observed(cp: &str, groups: &[(&str, &str)]) -> Observed {
    Observed {
        control_plane: v(cp),
        control_plane_requested: None,
        control_plane_requested_at: None,
        node_groups: groups
            .iter()
            .map(|(name, ver)| {
                let ver = v(ver);
                (
                    name.to_string(),
                    NodeGroupObservation {
                        min_kubelet: Some(ver),
                        max_kubelet: Some(ver),
                        nodes: 3,
                        ready: 3,
                        cordoned: 0,
                        requested: Some(ver),
                        provider_rolling: false,
                        provider_problem: None,
                        requested_at: None,
                    },
                )
            })
            .collect(),
        nodes_not_ready: vec![],
        node_group_of: BTreeMap::new(),
        api_healthy: true,
        paused_annotation: false,
        provider_busy: None,
        previous_desired: None,
        components: BTreeMap::new(),
        drift_due: false,
        capabilities: Capabilities {
            kube_version: Some(v(cp)),
            group_versions: ["v1".to_string(), "apps/v1".to_string()].into(),
        },
        preflight: Default::default(),
    }
}

/// `d` with an in-repo chart component `name` of `phase`.
pub fn with_component(mut d: DesiredState, name: &str, phase: ComponentPhase) -> DesiredState {
    d.components.push(DesiredComponent {
        name: name.into(),
        release: name.into(),
        namespace: "addons".into(),
        chart: ChartRef {
            path: Some(format!("charts/{name}")),
            repository: None,
            name: None,
            version: None,
        },
        values: vec![],
        phase,
        force: false,
        prune_crds: false,
        timeout: Duration::from_secs(300),
        origin: "cluster".into(),
    });
    d
}
