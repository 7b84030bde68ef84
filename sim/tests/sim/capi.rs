//! Cluster API and the `exec`-provider control interface: control-plane and node-group upgrades.

use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::support::{Kubectl, bounded, eventually, start};

fn kcp_api(client: kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(
        "controlplane.cluster.x-k8s.io",
        "v1beta1",
        "KubeadmControlPlane",
    );
    Api::namespaced_with(
        client,
        "capi-system",
        &ApiResource::from_gvk_with_plural(&gvk, "kubeadmcontrolplanes"),
    )
}

fn md_api(client: kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta1", "MachineDeployment");
    Api::namespaced_with(
        client,
        "capi-system",
        &ApiResource::from_gvk_with_plural(&gvk, "machinedeployments"),
    )
}

async fn kubelets(nodes: &Api<Node>, group: &str) -> Vec<String> {
    let l = nodes
        .list(&ListParams::default().labels(&format!("tidemark.dev/node-group={group}")))
        .await
        .unwrap();
    l.items
        .iter()
        .map(|n| {
            n.status
                .as_ref()
                .unwrap()
                .node_info
                .as_ref()
                .unwrap()
                .kubelet_version
                .clone()
        })
        .collect()
}

fn condition<'a>(obj: &'a DynamicObject, kind: &str) -> Option<&'a Value> {
    obj.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == json!(kind))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capi_rollout_from_spec_version() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(60, async {
        let kcps = kcp_api(client.clone());
        let mds = md_api(client.clone());
        let nodes: Api<Node> = Api::all(client.clone());

        // The objects belong to another manager: applying spec.version needs force.
        let apply = json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "KubeadmControlPlane",
            "metadata": {"name": "sim", "namespace": "capi-system"}, "spec": {"version": "v1.28.9"}});
        kcps.patch("sim", &PatchParams::apply("tidemark"), &Patch::Apply(&apply)).await.unwrap();
        let mut newer = apply.clone();
        newer["spec"]["version"] = json!("v1.29.1");
        let err = kcps.patch("sim", &PatchParams::apply("tidemark"), &Patch::Apply(&newer)).await.unwrap_err();
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 409), "{err}");

        // Skipping a minor is refused in the status.
        kcps.patch(
            "sim",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": "v1.30.1"}})),
        )
        .await
        .unwrap();
        let refused = eventually(10, || async {
            let k = kcps.get("sim").await.ok()?;
            condition(&k, "MachinesSpecUpToDate")
                .filter(|c| c["reason"] == json!("UpgradeRejected"))
                .cloned()
        })
        .await;
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("one minor version at a time"),
            "{refused}"
        );
        assert_eq!(
            client.apiserver_version().await.unwrap().git_version,
            "v1.28.9"
        );

        kcps.patch(
            "sim",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": "v1.29.8"}})),
        )
        .await
        .unwrap();
        eventually(20, || async {
            (client.apiserver_version().await.ok()?.git_version == "v1.29.8").then_some(())
        })
        .await;
        let kcp = eventually(10, || async {
            let k = kcps.get("sim").await.ok()?;
            (k.data.pointer("/status/version") == Some(&json!("v1.29.8"))).then_some(k)
        })
        .await;
        assert_eq!(kcp.data.pointer("/status/updatedReplicas"), Some(&json!(3)));

        // A node group may not get ahead of the control plane.
        mds.patch(
            "sim-general",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"version": "v1.30.0"}}}})),
        )
        .await
        .unwrap();
        eventually(10, || async {
            let m = mds.get("sim-general").await.ok()?;
            condition(&m, "Ready")
                .filter(|c| c["reason"] == json!("UpgradeRejected"))
                .map(|_| ())
        })
        .await;
        assert!(
            kubelets(&nodes, "general")
                .await
                .iter()
                .all(|v| v == "v1.28.9")
        );

        mds.patch(
            "sim-general",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"version": "v1.29.8"}}}})),
        )
        .await
        .unwrap();
        eventually(40, || async {
            let v = kubelets(&nodes, "general").await;
            let m = mds.get("sim-general").await.ok()?;
            let done = v.len() == 3
                && v.iter().all(|v| v == "v1.29.8")
                && m.data.pointer("/status/phase") == Some(&json!("Running"));
            done.then_some(())
        })
        .await;
        let md = mds.get("sim-general").await.unwrap();
        assert_eq!(md.data.pointer("/status/updatedReplicas"), Some(&json!(3)));
        assert_eq!(md.data.pointer("/status/readyReplicas"), Some(&json!(3)));
        assert_eq!(kubelets(&nodes, "gpu").await, vec!["v1.28.9"]);

        // Scaling, and a faster rollout with maxUnavailable 2.
        let spec = json!({"spec": {"replicas": 5, "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 2}}}});
        mds.patch("sim-general", &PatchParams::default(), &Patch::Merge(spec)).await.unwrap();
        eventually(20, || async { (kubelets(&nodes, "general").await.len() == 5).then_some(()) }).await;
        kcps.patch("sim", &PatchParams::default(), &Patch::Merge(json!({"spec": {"version": "v1.30.2"}}))).await.unwrap();
        eventually(20, || async { (client.apiserver_version().await.ok()?.git_version == "v1.30.2").then_some(()) }).await;
        let v = json!({"spec": {"replicas": 2, "template": {"spec": {"version": "v1.30.2"}}}});
        mds.patch("sim-general", &PatchParams::default(), &Patch::Merge(v)).await.unwrap();
        eventually(40, || async {
            let v = kubelets(&nodes, "general").await;
            let m = mds.get("sim-general").await.ok()?;
            let done = v == ["v1.30.2", "v1.30.2"] && m.data.pointer("/status/phase") == Some(&json!("Running"));
            done.then_some(())
        })
        .await;
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_rollout_blocked_by_pdb_until_relaxed() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    let k = Kubectl::new(&sim);
    bounded(60, async {
        let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: db, namespace: default}
spec:
  replicas: 4
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: "db:1"}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: db, namespace: default}
spec:
  minAvailable: 4
  selector: {matchLabels: {app: db}}
"#;
        let out = k
            .run_stdin(&["apply", "--server-side", "-f", "-"], manifest)
            .await;
        assert!(out.ok, "{}", out.stderr);
        let rollout = k
            .run(&["rollout", "status", "deployment/db", "--timeout=30s"])
            .await;
        assert!(rollout.ok, "{}", rollout.stderr);
        let ctl = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
            let path = k.kubeconfig.clone();
            async move { tidemark_sim::ctl(&path, &args).await }
        };
        ctl(&["upgrade-control-plane", "1.29.8", "--wait"])
            .await
            .unwrap();
        ctl(&["upgrade-node-group", "general", "1.29.8"])
            .await
            .unwrap();
        let mds = md_api(client.clone());
        let blocked = eventually(20, || async {
            let m = mds.get("sim-general").await.ok()?;
            condition(&m, "Ready")
                .filter(|c| c["reason"] == json!("DrainingFailed"))
                .cloned()
        })
        .await;
        assert!(
            blocked["message"]
                .as_str()
                .unwrap()
                .contains("disruption budget"),
            "{blocked}"
        );
        let events: Api<Event> = Api::namespaced(client.clone(), "capi-system");
        let evs = events.list(&ListParams::default()).await.unwrap();
        assert!(
            evs.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("DrainingFailed")),
            "no DrainingFailed event"
        );

        let relax = k
            .run(&[
                "patch",
                "pdb",
                "db",
                "--type=merge",
                "-p",
                r#"{"spec":{"minAvailable":3}}"#,
            ])
            .await;
        assert!(relax.ok, "{}", relax.stderr);
        ctl(&["upgrade-node-group", "general", "1.29.8", "--wait"])
            .await
            .unwrap();
        let state: Value = serde_json::from_str(&ctl(&["state"]).await.unwrap()).unwrap();
        let general = state["nodeGroups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == json!("general"))
            .unwrap();
        assert!(
            general["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["kubeletVersion"] == json!("1.29.8")),
            "{state}"
        );
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_ctl_upgrades_with_skew_rules() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    bounded(60, async {
        let ctl = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
            let path = k.kubeconfig.clone();
            async move { tidemark_sim::ctl(&path, &args).await }
        };
        let skip = ctl(&["upgrade-control-plane", "1.30.0"]).await.unwrap_err();
        assert!(
            skip.to_string().contains("one minor version at a time"),
            "{skip}"
        );
        let ahead = ctl(&["upgrade-node-group", "gpu", "1.29.8"])
            .await
            .unwrap_err();
        assert!(
            ahead.to_string().contains("newer than the control plane"),
            "{ahead}"
        );
        let unknown = ctl(&["upgrade-node-group", "nope", "1.28.9"])
            .await
            .unwrap_err();
        assert!(unknown.to_string().contains("not found"), "{unknown}");
        assert!(ctl(&["bogus"]).await.is_err());

        ctl(&["upgrade-control-plane", "1.29.8", "--wait"])
            .await
            .unwrap();
        assert_eq!(sim.control_plane_version(), "1.29.8");
        // Idempotent.
        ctl(&["upgrade-control-plane", "1.29.8"]).await.unwrap();
        ctl(&["upgrade-node-group", "gpu", "1.29.8", "--wait"])
            .await
            .unwrap();
        let down = ctl(&["upgrade-node-group", "gpu", "1.28.9"])
            .await
            .unwrap_err();
        assert!(down.to_string().contains("downgrade"), "{down}");
        let state: Value = serde_json::from_str(&ctl(&["state"]).await.unwrap()).unwrap();
        assert_eq!(state["controlPlane"]["version"], json!("1.29.8"));
        let gpu = state["nodeGroups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == json!("gpu"))
            .unwrap();
        assert_eq!(
            gpu["nodes"][0]["kubeletVersion"],
            json!("1.29.8"),
            "{state}"
        );
        let v = k.run(&["version", "-o", "json"]).await;
        assert!(v.stdout.contains("v1.29.8"), "{}", v.stdout);
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_groups_can_start_behind_the_control_plane() {
    let config = tidemark_sim::SimConfig {
        speed: 50.0,
        node_groups: vec![("general".into(), 1), ("gpu".into(), 1)],
        node_versions: vec![("gpu".into(), "1.26.15".into())],
        ..Default::default()
    };
    let sim = super::support::start_with(config).await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let nodes: Api<Node> = Api::all(client.clone());
        assert_eq!(kubelets(&nodes, "gpu").await, vec!["v1.26.15"]);
        assert_eq!(kubelets(&nodes, "general").await, vec!["v1.28.9"]);
        let md = md_api(client.clone()).get("sim-gpu").await.unwrap();
        assert_eq!(
            md.data.pointer("/spec/template/spec/version"),
            Some(&json!("v1.26.15"))
        );
        let k = Kubectl::new(&sim);
        let args: Vec<String> = ["upgrade-node-group", "gpu", "1.27.16", "--wait"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        tidemark_sim::ctl(&k.kubeconfig, &args).await.unwrap();
        assert_eq!(kubelets(&nodes, "gpu").await, vec!["v1.27.16"]);
    })
    .await;
    sim.shutdown().await;
}
