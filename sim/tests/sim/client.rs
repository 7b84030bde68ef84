//! The `kube` crate against the sim: typed and dynamic CRUD, server-side apply, conflicts,
//! watches, Leases, CRDs, eviction.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Discovery;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::support::{bounded, client_without_retries, eventually, start};

fn status_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        _ => 0,
    }
}

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c.data = Some(
        data.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect::<BTreeMap<_, _>>(),
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let nodes: Api<Node> = Api::all(client.clone());
        let list = nodes
            .list(&ListParams::default().labels("tidemark.dev/node-group=general"))
            .await
            .unwrap();
        assert_eq!(list.items.len(), 3);
        let n = &list.items[0];
        let info = n
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .unwrap();
        assert_eq!(info.kubelet_version, "v1.28.9");
        let name = n.metadata.name.clone().unwrap();
        let one = nodes.get(&name).await.unwrap();
        let labels = one.metadata.labels.unwrap();
        // Cluster API does not label Nodes with their MachineDeployment; it annotates them
        // with their Machine.
        assert!(!labels.contains_key("cluster.x-k8s.io/deployment-name"));
        assert_eq!(labels["tidemark.dev/node-group"], "general");
        let annotations = one.metadata.annotations.unwrap();
        assert_eq!(annotations["cluster.x-k8s.io/machine"], name);
        assert!(name.starts_with("sim-general-"), "{name}");
        let set = ListParams::default().labels("tidemark.dev/node-group in (gpu),!missing");
        assert_eq!(nodes.list(&set).await.unwrap().items.len(), 1);

        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let created = cms
            .create(&PostParams::default(), &cm("a", &[("k", "v")]))
            .await
            .unwrap();
        assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
        let err = cms
            .create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err();
        assert_eq!(status_code(&err), 409);
        let mut generated = cm("", &[]);
        generated.metadata.name = None;
        generated.metadata.generate_name = Some("gen-".into());
        let g = cms
            .create(&PostParams::default(), &generated)
            .await
            .unwrap();
        assert!(g.metadata.name.unwrap().starts_with("gen-"));
        let mut got = cms.get("a").await.unwrap();
        got.data = Some(BTreeMap::from([("k".to_string(), "w".to_string())]));
        let replaced = cms
            .replace("a", &PostParams::default(), &got)
            .await
            .unwrap();
        assert_eq!(replaced.data.unwrap()["k"], "w");
        let fields = cms
            .list(&ListParams::default().fields("metadata.name=a"))
            .await
            .unwrap();
        assert_eq!(fields.items.len(), 1);
        let page = cms.list(&ListParams::default().limit(1)).await.unwrap();
        assert_eq!(page.items.len(), 1);
        let rest = cms
            .list(
                &ListParams::default()
                    .limit(1)
                    .continue_token(page.metadata.continue_.as_deref().unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(rest.items.len(), 1);
        assert_ne!(rest.items[0].metadata.name, page.items[0].metadata.name);
        cms.delete("a", &DeleteParams::default()).await.unwrap();
        assert_eq!(status_code(&cms.get("a").await.unwrap_err()), 404);
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_crud_through_discovery() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let discovery = Discovery::new(client.clone()).run().await.unwrap();
        let (ar, caps) = discovery.resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment")).unwrap();
        assert!(caps.scope == kube::discovery::Scope::Namespaced);
        let kcp = GroupVersionKind::gvk("controlplane.cluster.x-k8s.io", "v1beta1", "KubeadmControlPlane");
        assert!(discovery.resolve_gvk(&kcp).is_some());
        let aggregated = Discovery::new(client.clone()).run_aggregated().await.unwrap();
        let (pods, pod_caps) = aggregated.resolve_gvk(&GroupVersionKind::gvk("", "v1", "Pod")).unwrap();
        assert_eq!(pods.plural, "pods");
        assert!(pod_caps.subresources.iter().any(|(r, _)| r.plural == "pods/eviction" || r.plural == "eviction"), "{:?}", pod_caps.subresources);
        assert!(aggregated.resolve_gvk(&kcp).is_some());
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dyn"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "dyn"}},
                "template": {"metadata": {"labels": {"app": "dyn"}}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}},
        }))
        .unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap();
        let ready = eventually(20, || async {
            let d = api.get("dyn").await.ok()?;
            (d.data.pointer("/status/readyReplicas") == Some(&json!(2))).then_some(d)
        })
        .await;
        assert_eq!(ready.metadata.generation, Some(1));
        let patched = api.patch("dyn", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.unwrap();
        assert_eq!(patched.metadata.generation, Some(2));
        let req = http::Request::builder()
            .method("PATCH")
            .uri("/apis/apps/v1/namespaces/default/deployments/dyn")
            .header("content-type", "application/json-patch+json")
            .body(br#"[{"op": "replace", "path": "/spec/replicas", "value": 1}]"#.to_vec())
            .unwrap();
        let patched: serde_json::Value = client.request(req).await.unwrap();
        assert_eq!(patched.pointer("/spec/replicas"), Some(&json!(1)));
        let sp = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:2"}]}}}});
        let patched = api.patch("dyn", &PatchParams::default(), &Patch::Strategic(sp)).await.unwrap();
        assert_eq!(patched.data.pointer("/spec/template/spec/containers/0/image"), Some(&json!("x:2")));
        api.delete("dyn", &DeleteParams::default()).await.unwrap();
        // Its ReplicaSets and pods are collected.
        let rs_ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("apps", "v1", "ReplicaSet"), "replicasets");
        let rss: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &rs_ar);
        eventually(10, || async { rss.list(&ListParams::default()).await.ok().filter(|l| l.items.is_empty()) }).await;
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflicts_and_force() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"owner": "a", "a-only": "1"}});
        cms.patch("ssa", &PatchParams::apply("manager-a"), &Patch::Apply(&a)).await.unwrap();
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"owner": "b"}});
        let err = cms.patch("ssa", &PatchParams::apply("manager-b"), &Patch::Apply(&b)).await.unwrap_err();
        let kube::Error::Api(status) = &err else { panic!("{err}") };
        assert_eq!(status.code, 409);
        assert!(status.message.contains("manager-a") && status.message.contains(".data.owner"), "{}", status.message);
        // Same value: shared ownership, no conflict.
        let same = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a-only": "1"}});
        cms.patch("ssa", &PatchParams::apply("manager-c"), &Patch::Apply(&same)).await.unwrap();
        let forced = cms.patch("ssa", &PatchParams::apply("manager-b").force(), &Patch::Apply(&b)).await.unwrap();
        assert_eq!(forced.data.as_ref().unwrap()["owner"], "b");
        let managers: Vec<String> = forced.metadata.managed_fields.unwrap().iter().filter_map(|m| m.manager.clone()).collect();
        assert!(managers.contains(&"manager-a".to_string()) && managers.contains(&"manager-b".to_string()), "{managers:?}");
        // manager-a stops applying: a-only is still owned by manager-c, so it stays.
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {}});
        let after = cms.patch("ssa", &PatchParams::apply("manager-a"), &Patch::Apply(&a2)).await.unwrap();
        assert_eq!(after.data.unwrap(), BTreeMap::from([("a-only".to_string(), "1".to_string()), ("owner".to_string(), "b".to_string())]));
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_dry_run_changes_nothing() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let dry = PostParams { dry_run: true, ..Default::default() };
        let would = cms.create(&dry, &cm("dry", &[("k", "v")])).await.unwrap();
        assert_eq!(would.metadata.name.as_deref(), Some("dry"));
        assert_eq!(status_code(&cms.get("dry").await.unwrap_err()), 404);
        cms.create(&PostParams::default(), &cm("dry", &[("k", "v")])).await.unwrap();
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dry"}, "data": {"k": "w"}});
        let diff = cms.patch("dry", &PatchParams::apply("drift").force().dry_run(), &Patch::Apply(&applied)).await.unwrap();
        assert_eq!(diff.data.unwrap()["k"], "w");
        assert_eq!(cms.get("dry").await.unwrap().data.unwrap()["k"], "v");
        let dp = DeleteParams { dry_run: true, ..Default::default() };
        cms.delete("dry", &dp).await.unwrap();
        assert!(cms.get("dry").await.is_ok());
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_resource_version_update_conflicts() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let v1 = cms
            .create(&PostParams::default(), &cm("rv", &[("n", "1")]))
            .await
            .unwrap();
        let mut first = v1.clone();
        first.data = Some(BTreeMap::from([("n".to_string(), "2".to_string())]));
        cms.replace("rv", &PostParams::default(), &first)
            .await
            .unwrap();
        let mut stale = v1;
        stale.data = Some(BTreeMap::from([("n".to_string(), "3".to_string())]));
        let err = cms
            .replace("rv", &PostParams::default(), &stale)
            .await
            .unwrap_err();
        assert_eq!(status_code(&err), 409);
        assert_eq!(cms.get("rv").await.unwrap().data.unwrap()["n"], "2");
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_survives_dropped_connections() {
    let sim = start().await;
    sim.set_faults("drop-watch=300ms".parse().unwrap());
    let client = sim.client().await.unwrap();
    bounded(40, async {
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let stream = watcher(cms.clone(), watcher::Config::default()).applied_objects();
        let mut stream = std::pin::pin!(stream);
        let writer = tokio::spawn(async move {
            for n in 0..8 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                cms.create(&PostParams::default(), &cm(&format!("w{n}"), &[]))
                    .await
                    .unwrap();
            }
        });
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 8 {
            match stream.next().await {
                Some(Ok(obj)) => {
                    seen.insert(obj.metadata.name.unwrap());
                }
                Some(Err(e)) => panic!("watcher error: {e}"),
                None => panic!("stream ended"),
            }
        }
        writer.await.unwrap();
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher_and_scale_subresource() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        cms.create(&PostParams::default(), &cm("before", &[])).await.unwrap();
        // Every namespace holds the root CA ConfigMap (the root CA publisher's): not ours.
        let stream = watcher(cms.clone(), watcher::Config::default().streaming_lists())
            .applied_objects()
            .try_filter(|c| std::future::ready(c.metadata.name.as_deref() != Some("kube-root-ca.crt")));
        let mut stream = std::pin::pin!(stream);
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.metadata.name.as_deref(), Some("before"));
        cms.create(&PostParams::default(), &cm("after", &[])).await.unwrap();
        let second = stream.next().await.unwrap().unwrap();
        assert_eq!(second.metadata.name.as_deref(), Some("after"));

        // A watch with a selector sees an object leave it as DELETED and enter it as ADDED.
        let sel = cms.watch(&kube::api::WatchParams::default().labels("tier=web"), "0").await.unwrap();
        let mut sel = std::pin::pin!(sel);
        cms.patch("before", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"tier": "web"}}}))).await.unwrap();
        assert!(matches!(sel.next().await, Some(Ok(kube::api::WatchEvent::Added(_)))));
        cms.patch("before", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"tier": "db"}}}))).await.unwrap();
        assert!(matches!(sel.next().await, Some(Ok(kube::api::WatchEvent::Deleted(_)))));

        let deploys: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), "default");
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "s"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "s"}},
                "template": {"metadata": {"labels": {"app": "s"}}, "spec": {"containers": [{"name": "c", "image": "s:1"}]}}}});
        deploys.patch("s", &PatchParams::apply("test"), &Patch::Apply(&d)).await.unwrap();
        let scale = deploys.get_scale("s").await.unwrap();
        assert_eq!(scale.spec.unwrap().replicas, Some(1));
        deploys.patch_scale("s", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.unwrap();
        assert_eq!(deploys.get("s").await.unwrap().spec.unwrap().replicas, Some(3));
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_contenders_one_wins() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let leases: Api<Lease> = Api::namespaced(client, "tidemark-system");
        let lease = |holder: &str| -> Lease {
            serde_json::from_value(json!({"metadata": {"name": "tidemark"}, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}})).unwrap()
        };
        let (la, lb, pp) = (lease("a"), lease("b"), PostParams::default());
        let (a, b) = tokio::join!(leases.create(&pp, &la), leases.create(&pp, &lb));
        assert!(a.is_ok() != b.is_ok(), "exactly one create wins");
        let current = leases.get("tidemark").await.unwrap();
        // Both renew from the same resourceVersion: one wins, one gets 409.
        let mut ra = current.clone();
        ra.spec.as_mut().unwrap().holder_identity = Some("a".into());
        ra.spec.as_mut().unwrap().lease_transitions = Some(1);
        let mut rb = current;
        rb.spec.as_mut().unwrap().holder_identity = Some("b".into());
        rb.spec.as_mut().unwrap().lease_transitions = Some(1);
        let first = leases.replace("tidemark", &PostParams::default(), &ra).await;
        let second = leases.replace("tidemark", &PostParams::default(), &rb).await;
        assert!(first.is_ok());
        assert_eq!(status_code(&second.unwrap_err()), 409);
        assert_eq!(leases.get("tidemark").await.unwrap().spec.unwrap().holder_identity.as_deref(), Some("a"));
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_created_at_run_time_is_served() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "metadata": {"name": "gadgets.example.org"},
            "spec": {"group": "example.org", "scope": "Cluster",
                "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget", "listKind": "GadgetList"},
                "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
        }))
        .unwrap();
        let created = crds.create(&PostParams::default(), &crd).await.unwrap();
        // Like a real server: not Established in the create's answer, a moment later.
        assert!(created.status.and_then(|s| s.conditions).is_none());
        eventually(10, || async {
            let crd = crds.get("gadgets.example.org").await.ok()?;
            let conds = crd.status?.conditions?;
            conds.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
        })
        .await;
        let discovery = Discovery::new(client.clone()).run().await.unwrap();
        let (ar, caps) = discovery.resolve_gvk(&GroupVersionKind::gvk("example.org", "v1alpha1", "Gadget")).unwrap();
        assert!(caps.scope == kube::discovery::Scope::Cluster);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let g: DynamicObject = serde_json::from_value(json!({"apiVersion": "example.org/v1alpha1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {"x": 1}, "status": {"ignored": true}})).unwrap();
        let created = api.create(&PostParams::default(), &g).await.unwrap();
        assert!(created.data.get("status").is_none(), "status is dropped on create");
        let st = api.patch_status("g1", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Ok"}, "spec": {"x": 2}}))).await.unwrap();
        assert_eq!(st.data.pointer("/status/phase"), Some(&json!("Ok")));
        assert_eq!(st.data.pointer("/spec/x"), Some(&json!(1)), "status patch leaves spec alone");
        crds.delete("gadgets.example.org", &DeleteParams::default()).await.unwrap();
        assert_eq!(status_code(&api.get("g1").await.unwrap_err()), 404);
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_blocked_by_pdb() {
    let sim = start().await;
    // kube retries 429 answers by default (15 times, exponential backoff): observe the first.
    let client = client_without_retries(&sim).await;
    bounded(30, async {
        let deploys: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            "default",
            &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("apps", "v1", "Deployment"), "deployments"),
        );
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "c", "image": "api:1"}]}}}});
        deploys.patch("api", &PatchParams::apply("test"), &Patch::Apply(&d)).await.unwrap();
        let pdbs: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            "default",
            &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("policy", "v1", "PodDisruptionBudget"), "poddisruptionbudgets"),
        );
        let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "api"},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "api"}}}});
        pdbs.patch("api", &PatchParams::apply("test"), &Patch::Apply(&pdb)).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let ready = eventually(20, || async {
            let l = pods.list(&ListParams::default().labels("app=api")).await.ok()?;
            let all_ready = l.items.len() == 2
                && l.items.iter().all(|p| p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")));
            all_ready.then_some(l.items)
        })
        .await;
        let name = ready[0].metadata.name.clone().unwrap();
        let err = pods.evict(&name, &Default::default()).await.unwrap_err();
        let kube::Error::Api(status) = &err else { panic!("{err}") };
        assert_eq!(status.code, 429);
        assert_eq!(status.message, "Cannot evict pod as it would violate the pod's disruption budget.");
        let st = eventually(10, || async {
            let p = pdbs.get("api").await.ok()?;
            (p.data.pointer("/status/currentHealthy") == Some(&json!(2))).then_some(p)
        })
        .await;
        assert_eq!(st.data.pointer("/status/disruptionsAllowed"), Some(&json!(0)));
        pdbs.patch("api", &PatchParams::default(), &Patch::Merge(json!({"spec": {"maxUnavailable": 1}}))).await.unwrap();
        pods.evict(&name, &Default::default()).await.unwrap();
        assert_eq!(status_code(&pods.get(&name).await.unwrap_err()), 404);
    })
    .await;
    sim.shutdown().await;
}
