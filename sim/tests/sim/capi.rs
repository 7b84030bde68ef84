//! Cluster API as the sim runs it (self-managed, and a management sim holding the objects of
//! workload sims), both served API versions, the topology controller, drains reported on
//! Machines, `nodeDrainTimeout`, `OnDelete`; and the `exec`-provider control interface.

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use tidemark_sim::{CapiApi, Sim, SimConfig};

use super::support::{Kubectl, bounded, eventually, start, start_with};

/// The Cluster API resource of `kind` at `version`, in `capi-system`.
fn capi(client: &kube::Client, kind: &str, version: &str) -> Api<DynamicObject> {
    let (group, plural) = match kind {
        "KubeadmControlPlane" => ("controlplane.cluster.x-k8s.io", "kubeadmcontrolplanes"),
        "Cluster" => ("cluster.x-k8s.io", "clusters"),
        "MachineDeployment" => ("cluster.x-k8s.io", "machinedeployments"),
        _ => ("cluster.x-k8s.io", "machines"),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Api::namespaced_with(
        client.clone(),
        "capi-system",
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

async fn kubelets(nodes: &Api<Node>, group: &str) -> Vec<String> {
    let l = nodes
        .list(&ListParams::default().labels(&format!("tidemark.dev/node-group={group}")))
        .await
        .unwrap();
    let mut v: Vec<String> = l
        .items
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
        .collect();
    v.sort();
    v
}

fn condition<'a>(obj: &'a DynamicObject, path: &str, kind: &str) -> Option<&'a Value> {
    obj.data
        .pointer(path)?
        .as_array()?
        .iter()
        .find(|c| c["type"] == json!(kind))
}

async fn ctl(k: &Kubectl, args: &[&str]) -> Result<String, tidemark_sim::Error> {
    let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
    tidemark_sim::ctl(&k.kubeconfig, &args).await
}

async fn state(k: &Kubectl) -> Value {
    serde_json::from_str(&ctl(k, &["state"]).await.unwrap()).unwrap()
}

fn group<'a>(state: &'a Value, name: &str) -> &'a Value {
    state["nodeGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == json!(name))
        .unwrap_or_else(|| panic!("no node group {name}: {state}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capi_rollout_from_spec_version() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(90, async {
        let kcps = capi(&client, "KubeadmControlPlane", "v1beta1");
        let mds = capi(&client, "MachineDeployment", "v1beta2");
        let machines = capi(&client, "Machine", "v1beta2");
        let nodes: Api<Node> = Api::all(client.clone());

        // Machines carry the deployment-name label and name their Node; Nodes carry Cluster
        // API's annotations, never the deployment-name label.
        let list = machines.list(&ListParams::default().labels("cluster.x-k8s.io/deployment-name=sim-general")).await.unwrap();
        assert_eq!(list.items.len(), 3);
        for m in &list.items {
            let node_name = m.data.pointer("/status/nodeRef/name").and_then(Value::as_str).unwrap();
            assert_eq!(m.data.pointer("/status/nodeRef"), Some(&json!({"name": node_name})));
            assert_eq!(m.data.pointer("/status/phase"), Some(&json!("Running")));
            let node = nodes.get(node_name).await.unwrap();
            let labels = node.metadata.labels.unwrap();
            assert!(!labels.contains_key("cluster.x-k8s.io/deployment-name"), "{labels:?}");
            assert_eq!(labels["tidemark.dev/node-group"], "general");
            let a = node.metadata.annotations.unwrap();
            assert_eq!(a["cluster.x-k8s.io/machine"], m.metadata.name.clone().unwrap());
            assert_eq!(a["cluster.x-k8s.io/owner-kind"], "MachineDeployment");
            assert_eq!(a["cluster.x-k8s.io/owner-name"], "sim-general");
            assert_eq!(a["cluster.x-k8s.io/cluster-name"], "sim");
        }

        // The objects belong to another manager: applying spec.version needs force.
        let apply = json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "KubeadmControlPlane",
            "metadata": {"name": "sim", "namespace": "capi-system"}, "spec": {"version": "v1.28.9"}});
        kcps.patch("sim", &PatchParams::apply("tidemark"), &Patch::Apply(&apply)).await.unwrap();
        let mut newer = apply.clone();
        newer["spec"]["version"] = json!("v1.29.1");
        let err = kcps.patch("sim", &PatchParams::apply("tidemark"), &Patch::Apply(&newer)).await.unwrap_err();
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 409), "{err}");

        // Skipping a minor is refused in the status.
        kcps.patch("sim", &PatchParams::default(), &Patch::Merge(json!({"spec": {"version": "v1.30.1"}}))).await.unwrap();
        let refused = eventually(10, || async {
            let k = kcps.get("sim").await.ok()?;
            condition(&k, "/status/conditions", "MachinesSpecUpToDate")
                .filter(|c| c["reason"] == json!("UpgradeRejected"))
                .cloned()
        })
        .await;
        assert!(refused["message"].as_str().unwrap().contains("one minor version at a time"), "{refused}");
        assert_eq!(client.apiserver_version().await.unwrap().git_version, "v1.28.9");

        kcps.patch("sim", &PatchParams::default(), &Patch::Merge(json!({"spec": {"version": "v1.29.8"}}))).await.unwrap();
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

        // A node group may not get ahead of the control plane: the MachineSet preflight
        // checks hold the new Machines, and the status says why.
        mds.patch("sim-general", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"version": "v1.30.0"}}}}))).await.unwrap();
        let held = eventually(10, || async {
            let m = mds.get("sim-general").await.ok()?;
            condition(&m, "/status/conditions", "ScalingUp")
                .filter(|c| c["message"].as_str().is_some_and(|m| m.contains("is blocked because")))
                .cloned()
        })
        .await;
        assert!(held["message"].as_str().unwrap().contains("\"KubernetesVersionSkew\" preflight check failed"), "{held}");
        let old = capi(&client, "MachineDeployment", "v1beta1").get("sim-general").await.unwrap();
        assert_eq!(condition(&old, "/status/conditions", "Ready").map(|c| c["reason"].clone()), Some(json!("PreflightCheckFailed")));
        assert_eq!(kubelets(&nodes, "general").await, ["v1.28.9"; 3]);

        mds.patch("sim-general", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"version": "v1.29.8"}}}}))).await.unwrap();
        eventually(40, || async {
            let v = kubelets(&nodes, "general").await;
            let m = mds.get("sim-general").await.ok()?;
            let done = v == ["v1.29.8"; 3] && m.data.pointer("/status/phase") == Some(&json!("Running"))
                && m.data.pointer("/status/upToDateReplicas") == Some(&json!(3));
            done.then_some(())
        })
        .await;
        let old = capi(&client, "MachineDeployment", "v1beta1").get("sim-general").await.unwrap();
        assert_eq!(old.data.pointer("/status/updatedReplicas"), Some(&json!(3)));
        assert_eq!(old.data.pointer("/status/readyReplicas"), Some(&json!(3)));
        assert_eq!(kubelets(&nodes, "gpu").await, vec!["v1.28.9"]);
        // Every replaced Machine was drained and deleted; its Node went with it.
        let all = machines.list(&ListParams::default().labels("cluster.x-k8s.io/deployment-name=sim-general")).await.unwrap();
        assert_eq!(all.items.len(), 3);
        assert!(all.items.iter().all(|m| m.data.pointer("/spec/version") == Some(&json!("v1.29.8"))));
        let k = Kubectl::new(&sim);
        assert_eq!(group(&state(&k).await, "general")["upgrading"], json!(false));
        assert_eq!(state(&k).await["machinesDeleted"], json!(3));

        // Scaling, and a faster rollout with maxUnavailable 2 (v1beta2: spec.rollout.strategy).
        let spec = json!({"spec": {"replicas": 5, "rollout": {"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 2}}}}});
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

const DB: &str = r#"
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

async fn with_db(k: &Kubectl) {
    let out = k
        .run_stdin(&["apply", "--server-side", "-f", "-"], DB)
        .await;
    assert!(out.ok, "{}", out.stderr);
    let rollout = k
        .run(&["rollout", "status", "deployment/db", "--timeout=30s"])
        .await;
    assert!(rollout.ok, "{}", rollout.stderr);
}

/// The Machine of `group` being deleted, once its drain is held.
async fn held_machine(client: &kube::Client, version: &str) -> DynamicObject {
    let machines = capi(client, "Machine", version);
    eventually(30, || async {
        let l = machines.list(&ListParams::default()).await.ok()?;
        l.items.into_iter().find(|m| {
            m.metadata.deletion_timestamp.is_some()
                && m.data
                    .pointer("/status/deletion/nodeDrainStartTime")
                    .is_some()
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_held_by_a_budget_shows_on_the_machine_until_the_budget_allows_it() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    let k = Kubectl::new(&sim);
    bounded(90, async {
        with_db(&k).await;
        ctl(&k, &["upgrade-control-plane", "1.29.8", "--wait"]).await.unwrap();
        ctl(&k, &["upgrade-node-group", "general", "1.29.8"]).await.unwrap();

        let m = held_machine(&client, "v1beta2").await;
        let name = m.metadata.name.clone().unwrap();
        let node = m.data.pointer("/status/nodeRef/name").and_then(Value::as_str).unwrap().to_string();
        let deleting = eventually(10, || async {
            let m = capi(&client, "Machine", "v1beta2").get(&name).await.ok()?;
            condition(&m, "/status/conditions", "Deleting").filter(|c| c["reason"] == json!("DrainingNode")).cloned()
        })
        .await;
        let message = deleting["message"].as_str().unwrap();
        let started = m.data.pointer("/status/deletion/nodeDrainStartTime").and_then(Value::as_str).unwrap();
        assert!(message.starts_with(&format!("Drain not completed yet (started at {started}):\n* Pod default/db-")), "{message}");
        assert!(
            message.contains(": cannot evict pod as it would violate the pod's disruption budget. The disruption budget db needs 4 healthy pods and has 4 currently"),
            "{message}"
        );
        // The same, read as v1beta1: DrainingSucceeded=False, reason Draining.
        let v1 = capi(&client, "Machine", "v1beta1").get(&name).await.unwrap();
        let draining = condition(&v1, "/status/conditions", "DrainingSucceeded").cloned().unwrap();
        assert_eq!((draining["status"].as_str(), draining["reason"].as_str(), draining["severity"].as_str()), (Some("False"), Some("Draining"), Some("Info")));
        assert_eq!(draining["message"].as_str(), Some(message));
        assert_eq!(v1.data.pointer("/status/nodeRef/kind"), Some(&json!("Node")));
        // Its Node is cordoned; the MachineDeployment only summarises.
        let n: Api<Node> = Api::all(client.clone());
        assert_eq!(n.get(&node).await.unwrap().spec.unwrap().unschedulable, Some(true));
        let md = capi(&client, "MachineDeployment", "v1beta2").get("sim-general").await.unwrap();
        let down = condition(&md, "/status/conditions", "ScalingDown").cloned().unwrap();
        assert!(down["message"].as_str().unwrap().contains(&format!("* Machine {name} is in deletion")), "{down}");
        let text = serde_json::to_string(&md.data).unwrap();
        assert!(!text.contains("disruption budget") && !text.contains("Draining"), "{text}");
        let st = state(&k).await;
        assert_eq!(st["drainsForced"], json!(0));
        assert!(group(&st, "general")["machines"].as_array().unwrap().iter().any(|m| m["deleting"] == json!(true)));

        let relax = k.run(&["patch", "pdb", "db", "--type=merge", "-p", r#"{"spec":{"minAvailable":3}}"#]).await;
        assert!(relax.ok, "{}", relax.stderr);
        ctl(&k, &["upgrade-node-group", "general", "1.29.8", "--wait"]).await.unwrap();
        let st = state(&k).await;
        assert!(group(&st, "general")["nodes"].as_array().unwrap().iter().all(|n| n["kubeletVersion"] == json!("1.29.8")), "{st}");
        assert_eq!(st["drainsForced"], json!(0));
        assert!(capi(&client, "Machine", "v1beta2").get_opt(&name).await.unwrap().is_none());
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_drain_timeout_deletes_the_machine_anyway() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    let k = Kubectl::new(&sim);
    bounded(90, async {
        with_db(&k).await;
        ctl(&k, &["upgrade-control-plane", "1.29.8", "--wait"])
            .await
            .unwrap();
        // Written as v1beta1 (a Go duration), read as v1beta2 (seconds); propagated to the
        // Machines in place, without a rollout.
        let old = capi(&client, "MachineDeployment", "v1beta1");
        old.patch(
            "sim-general",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"nodeDrainTimeout": "2s"}}}})),
        )
        .await
        .unwrap();
        let md = capi(&client, "MachineDeployment", "v1beta2")
            .get("sim-general")
            .await
            .unwrap();
        assert_eq!(
            md.data
                .pointer("/spec/template/spec/deletion/nodeDrainTimeoutSeconds"),
            Some(&json!(2))
        );
        assert_eq!(
            old.get("sim-general")
                .await
                .unwrap()
                .data
                .pointer("/spec/template/spec/nodeDrainTimeout"),
            Some(&json!("2s"))
        );
        let machines = capi(&client, "Machine", "v1beta2");
        eventually(10, || async {
            let l = machines
                .list(&ListParams::default().labels("cluster.x-k8s.io/deployment-name=sim-general"))
                .await
                .ok()?;
            l.items
                .iter()
                .all(|m| {
                    m.data.pointer("/spec/deletion/nodeDrainTimeoutSeconds") == Some(&json!(2))
                })
                .then_some(())
        })
        .await;
        assert_eq!(state(&k).await["machinesDeleted"], json!(0));

        ctl(&k, &["upgrade-node-group", "general", "1.29.8"])
            .await
            .unwrap();
        held_machine(&client, "v1beta2").await;
        // The budget never allows it; the drain timeout does.
        ctl(&k, &["upgrade-node-group", "general", "1.29.8", "--wait"])
            .await
            .unwrap();
        let st = state(&k).await;
        assert!(st["drainsForced"].as_u64().unwrap() >= 1, "{st}");
        assert_eq!(st["machinesDeleted"], json!(3));
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_replaces_only_the_machines_someone_deletes() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    let k = Kubectl::new(&sim);
    bounded(60, async {
        ctl(&k, &["upgrade-control-plane", "1.29.8", "--wait"]).await.unwrap();
        let mds = capi(&client, "MachineDeployment", "v1beta2");
        let spec = json!({"spec": {"rollout": {"strategy": {"type": "OnDelete"}}, "template": {"spec": {"version": "v1.29.8"}}}});
        mds.patch("sim-general", &PatchParams::default(), &Patch::Merge(spec)).await.unwrap();
        let nodes: Api<Node> = Api::all(client.clone());
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        assert_eq!(kubelets(&nodes, "general").await, ["v1.28.9"; 3], "OnDelete rolls nothing by itself");
        let machines = capi(&client, "Machine", "v1beta2");
        let l = machines.list(&ListParams::default().labels("cluster.x-k8s.io/deployment-name=sim-general")).await.unwrap();
        let victim = l.items[0].metadata.name.clone().unwrap();
        machines.delete(&victim, &DeleteParams::default()).await.unwrap();
        eventually(20, || async {
            let v = kubelets(&nodes, "general").await;
            (v == ["v1.28.9", "v1.28.9", "v1.29.8"]).then_some(())
        })
        .await;
        assert!(machines.get_opt(&victim).await.unwrap().is_none());
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert_eq!(kubelets(&nodes, "general").await, ["v1.28.9", "v1.28.9", "v1.29.8"]);
        assert_eq!(group(&state(&k).await, "general")["strategy"], json!("OnDelete"));
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_api_versions_serve_the_same_objects_and_v1beta1_only_serves_one() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    let k = Kubectl::new(&sim);
    bounded(60, async {
        let apis = k.run(&["get", "--raw", "/apis/cluster.x-k8s.io"]).await;
        let group: Value = serde_json::from_str(&apis.stdout).unwrap();
        assert_eq!(group["preferredVersion"]["version"], json!("v1beta2"), "{group}");
        assert_eq!(group["versions"].as_array().unwrap().len(), 2);

        // One object behind both versions: the same resourceVersion (read again if the
        // MachineDeployment controller wrote its status between the two reads).
        let (mut v1, mut v2);
        let mut tries = 0;
        loop {
            v1 = capi(&client, "MachineDeployment", "v1beta1").get("sim-general").await.unwrap();
            v2 = capi(&client, "MachineDeployment", "v1beta2").get("sim-general").await.unwrap();
            tries += 1;
            if v1.metadata.resource_version == v2.metadata.resource_version || tries == 20 {
                break;
            }
        }
        assert_eq!(v1.data.pointer("/spec/strategy/rollingUpdate/maxSurge"), Some(&json!(1)));
        assert_eq!(v2.data.pointer("/spec/rollout/strategy/rollingUpdate/maxSurge"), Some(&json!(1)));
        assert!(v2.data.pointer("/spec/strategy").is_none());
        assert_eq!(v1.metadata.resource_version, v2.metadata.resource_version);
        // Written through v1beta2, read through v1beta1.
        let p = json!({"spec": {"rollout": {"strategy": {"rollingUpdate": {"maxUnavailable": 2}}}, "template": {"spec": {"deletion": {"nodeDrainTimeoutSeconds": 600}}}}});
        capi(&client, "MachineDeployment", "v1beta2").patch("sim-general", &PatchParams::default(), &Patch::Merge(p)).await.unwrap();
        let v1 = capi(&client, "MachineDeployment", "v1beta1").get("sim-general").await.unwrap();
        assert_eq!(v1.data.pointer("/spec/strategy/rollingUpdate/maxUnavailable"), Some(&json!(2)));
        assert_eq!(v1.data.pointer("/spec/template/spec/nodeDrainTimeout"), Some(&json!("10m0s")));
        // An unchanged write through the other version changes nothing (the generation: the
        // controller may write status meanwhile, which moves the resourceVersion).
        let generation = v1.metadata.generation;
        let same = json!({"spec": {"template": {"spec": {"nodeDrainTimeout": "10m0s"}}}});
        let after = capi(&client, "MachineDeployment", "v1beta1").patch("sim-general", &PatchParams::default(), &Patch::Merge(same)).await.unwrap();
        assert_eq!(after.metadata.generation, generation);
        // kubectl reads the preferred version.
        let out = k.run(&["get", "machinedeployments.cluster.x-k8s.io", "sim-general", "-n", "capi-system", "-o", "jsonpath={.apiVersion} {.spec.rollout.strategy.rollingUpdate.maxUnavailable}"]).await;
        assert_eq!(out.stdout, "cluster.x-k8s.io/v1beta2 2", "{}", out.stderr);
    })
    .await;
    sim.shutdown().await;

    let old = start_with(SimConfig {
        speed: 50.0,
        capi_api: CapiApi::V1beta1,
        ..Default::default()
    })
    .await;
    let k = Kubectl::new(&old);
    let client = old.client().await.unwrap();
    bounded(30, async {
        let apis = k.run(&["get", "--raw", "/apis/cluster.x-k8s.io"]).await;
        let group: Value = serde_json::from_str(&apis.stdout).unwrap();
        assert_eq!(
            group["versions"],
            json!([{"groupVersion": "cluster.x-k8s.io/v1beta1", "version": "v1beta1"}]),
            "{group}"
        );
        let v2 = k
            .run(&["get", "--raw", "/apis/cluster.x-k8s.io/v1beta2/machines"])
            .await;
        assert!(!v2.ok);
        let l = capi(&client, "Machine", "v1beta1")
            .list(&ListParams::default())
            .await
            .unwrap();
        let m = &l.items[0];
        assert_eq!(m.data.pointer("/status/nodeRef/kind"), Some(&json!("Node")));
        assert!(condition(m, "/status/conditions", "NodeHealthy").is_some());
        assert!(
            m.data.pointer("/status/v1beta2").is_none(),
            "Cluster API 1.8 has no v1beta2 status"
        );
        let st = state(&k).await;
        assert_eq!(st["clusterApi"], json!("v1beta1"));
    })
    .await;
    old.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_controller_rolls_the_control_plane_then_each_deployment_and_reverts_a_control_plane_edit()
 {
    let sim = start_with(SimConfig {
        speed: 50.0,
        topology: true,
        node_groups: vec![("general".into(), 2), ("gpu".into(), 1)],
        ..Default::default()
    })
    .await;
    let client = sim.client().await.unwrap();
    let k = Kubectl::new(&sim);
    bounded(90, async {
        let clusters = capi(&client, "Cluster", "v1beta2");
        let mds = capi(&client, "MachineDeployment", "v1beta2");
        let nodes: Api<Node> = Api::all(client.clone());
        // The Cluster webhook: at most one minor at a time.
        let skip = clusters.patch("sim", &PatchParams::default(), &Patch::Merge(json!({"spec": {"topology": {"version": "v1.30.0"}}}))).await.unwrap_err();
        assert!(
            matches!(&skip, kube::Error::Api(s) if s.code == 422 && s.message == "admission webhook \"validation.cluster.cluster.x-k8s.io\" denied the request: Cluster.cluster.x-k8s.io \"sim\" is invalid: spec.topology.version: Invalid value: \"v1.30.0\": version cannot be increased from \"1.28.9\" to \"1.30.0\""),
            "{skip}"
        );
        // The simulated cloud does not move a topology cluster's node groups.
        assert!(ctl(&k, &["upgrade-node-group", "gpu", "1.28.9"]).await.is_err());

        clusters.patch("sim", &PatchParams::default(), &Patch::Merge(json!({"spec": {"topology": {"version": "v1.29.8"}}}))).await.unwrap();
        // The next minor is refused until everything runs this one.
        let early = clusters.patch("sim", &PatchParams::default(), &Patch::Merge(json!({"spec": {"topology": {"version": "v1.30.2"}}}))).await.unwrap_err();
        assert!(matches!(&early, kube::Error::Api(s) if s.message.contains("version cannot be changed: ")), "{early}");
        let most_rolling = std::sync::atomic::AtomicUsize::new(0);
        eventually(60, || {
            let (mds, nodes, k, most) = (mds.clone(), nodes.clone(), &k, &most_rolling);
            async move {
                let st = state(k).await;
                let rolling = st["nodeGroups"].as_array()?.iter().filter(|g| g["machines"].as_array().is_some_and(|ms| ms.iter().any(|m| m["version"] != g["targetVersion"]))).count();
                most.fetch_max(rolling, std::sync::atomic::Ordering::Relaxed);
                let all = [kubelets(&nodes, "general").await, kubelets(&nodes, "gpu").await].concat();
                let versions = mds.list(&ListParams::default()).await.ok()?;
                let done = all == ["v1.29.8"; 3]
                    && versions.items.iter().all(|m| m.data.pointer("/spec/template/spec/version") == Some(&json!("v1.29.8")));
                done.then_some(())
            }
        })
        .await;
        assert_eq!(most_rolling.into_inner(), 1, "one MachineDeployment at a time");
        assert_eq!(client.apiserver_version().await.unwrap().git_version, "v1.29.8");

        // A direct edit of the control plane's version is reverted once it has rolled out
        // (while it rolls, the control plane is upgrading and the topology keeps it).
        let kcps = capi(&client, "KubeadmControlPlane", "v1beta2");
        kcps.patch("sim", &PatchParams::default(), &Patch::Merge(json!({"spec": {"version": "v1.29.9"}}))).await.unwrap();
        eventually(30, || async { (client.apiserver_version().await.ok()?.git_version == "v1.29.9").then_some(()) }).await;
        eventually(30, || async {
            let k = kcps.get("sim").await.ok()?;
            let back = k.data.pointer("/spec/version") == Some(&json!("v1.29.8"));
            (back && client.apiserver_version().await.ok()?.git_version == "v1.29.8").then_some(())
        })
        .await;
        // A direct edit of a MachineDeployment's version is upgrading from then on (its
        // Machines differ), so the topology controller keeps it; and a topology cluster's
        // MachineSets create Machines only at the control plane's version (the
        // ControlPlaneVersionSkew preflight check), so nothing rolls: it stays until a
        // person puts it back. This is what Cluster API 1.11 does.
        let out = k.run(&["patch", "machinedeployments.cluster.x-k8s.io", "sim-gpu", "-n", "capi-system", "--type=merge", "-p", r#"{"spec":{"template":{"spec":{"version":"v1.29.1"}}}}"#]).await;
        assert!(out.ok, "{}", out.stderr);
        let held = eventually(10, || async {
            let m = mds.get("sim-gpu").await.ok()?;
            condition(&m, "/status/conditions", "ScalingUp")
                .filter(|c| c["message"].as_str().is_some_and(|m| m.contains("ControlPlaneVersionSkew")))
                .cloned()
        })
        .await;
        assert!(held["message"].as_str().unwrap().contains("MachineSet version (v1.29.1) is not yet the same as the ControlPlane version (v1.29.8)"), "{held}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert_eq!(kubelets(&nodes, "gpu").await, ["v1.29.8"]);
        assert_eq!(mds.get("sim-gpu").await.unwrap().data.pointer("/spec/template/spec/version"), Some(&json!("v1.29.1")));
        let out = k.run(&["patch", "machinedeployments.cluster.x-k8s.io", "sim-gpu", "-n", "capi-system", "--type=merge", "-p", r#"{"spec":{"template":{"spec":{"version":"v1.29.8"}}}}"#]).await;
        assert!(out.ok, "{}", out.stderr);
        let c = clusters.get("sim").await.unwrap();
        eventually(10, || async {
            let c = clusters.get("sim").await.ok()?;
            condition(&c, "/status/conditions", "TopologyReconciled").filter(|x| x["status"] == json!("True")).map(|_| ())
        })
        .await;
        assert_eq!(c.data.pointer("/spec/topology/version"), Some(&json!("v1.29.8")));
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_management_sim_holds_the_objects_of_its_workload_sims() {
    let cluster = |name: &str| SimConfig {
        speed: 50.0,
        cluster_name: name.into(),
        node_groups: vec![("general".into(), 2)],
        ..Default::default()
    };
    let managed = Sim::start_managed(
        SimConfig {
            speed: 50.0,
            cluster_name: "mgmt".into(),
            node_groups: vec![("general".into(), 1)],
            ..Default::default()
        },
        vec![cluster("a"), cluster("b")],
    )
    .await
    .unwrap();
    let mgmt = managed.management.client().await.unwrap();
    let a = managed.workloads[0].client().await.unwrap();
    let b = managed.workloads[1].client().await.unwrap();
    bounded(60, async {
        // The management cluster holds the objects; its own node is no Machine's.
        let machines = capi(&mgmt, "Machine", "v1beta2");
        let of_a = machines
            .list(&ListParams::default().labels("cluster.x-k8s.io/cluster-name=a"))
            .await
            .unwrap();
        assert_eq!(of_a.items.len(), 2);
        let a_nodes: Api<Node> = Api::all(a.clone());
        for m in &of_a.items {
            let node = m
                .data
                .pointer("/status/nodeRef/name")
                .and_then(Value::as_str)
                .unwrap();
            let n = a_nodes.get(node).await.unwrap();
            assert!(
                !n.metadata
                    .labels
                    .unwrap()
                    .contains_key("cluster.x-k8s.io/deployment-name")
            );
            assert_eq!(
                n.metadata.annotations.unwrap()["cluster.x-k8s.io/cluster-name"],
                "a"
            );
        }
        let mgmt_nodes: Api<Node> = Api::all(mgmt.clone());
        let own = mgmt_nodes.list(&ListParams::default()).await.unwrap();
        assert_eq!(own.items.len(), 1);
        assert!(
            own.items[0]
                .metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key("cluster.x-k8s.io/machine"))
        );
        // The workload clusters have no Cluster API.
        let ka = Kubectl::new(&managed.workloads[0]);
        let none = ka
            .run(&["get", "machinedeployments.cluster.x-k8s.io", "-A"])
            .await;
        assert!(!none.ok, "{}", none.stdout);
        // Cluster API's kubeconfig Secret of a workload cluster reaches it.
        let secrets: Api<Secret> = Api::namespaced(mgmt.clone(), "capi-system");
        let s = secrets.get("a-kubeconfig").await.unwrap();
        assert_eq!(s.type_.as_deref(), Some("cluster.x-k8s.io/secret"));
        let text = String::from_utf8(s.data.unwrap()["value"].0.clone()).unwrap();
        assert_eq!(text, managed.workloads[0].kubeconfig_yaml());

        // The simulated cloud through a workload's kubeconfig moves that cluster only.
        ctl(&ka, &["upgrade-control-plane", "1.29.8", "--wait"])
            .await
            .unwrap();
        assert_eq!(a.apiserver_version().await.unwrap().git_version, "v1.29.8");
        assert_eq!(b.apiserver_version().await.unwrap().git_version, "v1.28.9");
        assert_eq!(
            mgmt.apiserver_version().await.unwrap().git_version,
            "v1.28.9"
        );
        ctl(&ka, &["upgrade-node-group", "general", "1.29.8", "--wait"])
            .await
            .unwrap();
        assert_eq!(kubelets(&a_nodes, "general").await, ["v1.29.8"; 2]);
        assert_eq!(
            kubelets(&Api::all(b.clone()), "general").await,
            ["v1.28.9"; 2]
        );
        let kd = capi(&mgmt, "KubeadmControlPlane", "v1beta2")
            .get("a")
            .await
            .unwrap();
        assert_eq!(kd.data.pointer("/status/version"), Some(&json!("v1.29.8")));
        // The management sim's state lists every cluster.
        let km = Kubectl::new(&managed.management);
        let st = state(&km).await;
        let names: Vec<&str> = st["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(
            ctl(&km, &["upgrade-control-plane", "1.29.8"])
                .await
                .is_err(),
            "the management sim has no managed control plane"
        );
        assert_eq!(state(&ka).await["machinesDeleted"], json!(2));
    })
    .await;
    for w in managed.workloads {
        w.shutdown().await;
    }
    managed.management.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_ctl_upgrades_with_skew_rules() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    bounded(60, async {
        let skip = ctl(&k, &["upgrade-control-plane", "1.30.0"])
            .await
            .unwrap_err();
        assert!(
            skip.to_string().contains("one minor version at a time"),
            "{skip}"
        );
        let ahead = ctl(&k, &["upgrade-node-group", "gpu", "1.29.8"])
            .await
            .unwrap_err();
        assert!(
            ahead.to_string().contains("newer than the control plane"),
            "{ahead}"
        );
        let unknown = ctl(&k, &["upgrade-node-group", "nope", "1.28.9"])
            .await
            .unwrap_err();
        assert!(unknown.to_string().contains("not found"), "{unknown}");
        assert!(ctl(&k, &["bogus"]).await.is_err());

        ctl(&k, &["upgrade-control-plane", "1.29.8", "--wait"])
            .await
            .unwrap();
        assert_eq!(sim.control_plane_version(), "1.29.8");
        // Idempotent.
        ctl(&k, &["upgrade-control-plane", "1.29.8"]).await.unwrap();
        ctl(&k, &["upgrade-node-group", "gpu", "1.29.8", "--wait"])
            .await
            .unwrap();
        let down = ctl(&k, &["upgrade-node-group", "gpu", "1.28.9"])
            .await
            .unwrap_err();
        assert!(down.to_string().contains("downgrade"), "{down}");
        let state = state(&k).await;
        assert_eq!(state["controlPlane"]["version"], json!("1.29.8"));
        assert_eq!(
            group(&state, "gpu")["nodes"][0]["kubeletVersion"],
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
    let config = SimConfig {
        speed: 50.0,
        node_groups: vec![("general".into(), 1), ("gpu".into(), 1)],
        node_versions: vec![("gpu".into(), "1.26.15".into())],
        ..Default::default()
    };
    let sim = start_with(config).await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let nodes: Api<Node> = Api::all(client.clone());
        assert_eq!(kubelets(&nodes, "gpu").await, vec!["v1.26.15"]);
        assert_eq!(kubelets(&nodes, "general").await, vec!["v1.28.9"]);
        let md = capi(&client, "MachineDeployment", "v1beta1")
            .get("sim-gpu")
            .await
            .unwrap();
        assert_eq!(
            md.data.pointer("/spec/template/spec/version"),
            Some(&json!("v1.26.15"))
        );
        let k = Kubectl::new(&sim);
        // kubeadm joins new nodes only at the control plane's minor.
        let behind = ctl(&k, &["upgrade-node-group", "gpu", "1.27.16"])
            .await
            .unwrap_err();
        assert!(behind.to_string().contains("kubeadm"), "{behind}");
        ctl(&k, &["upgrade-node-group", "gpu", "1.28.9", "--wait"])
            .await
            .unwrap();
        assert_eq!(kubelets(&nodes, "gpu").await, vec!["v1.28.9"]);
    })
    .await;
    sim.shutdown().await;
}
