//! Simulated workloads and object lifecycle: DaemonSets, StatefulSets, Jobs, failing images,
//! finalizers, namespace deletion.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::support::{Kubectl, bounded, eventually, start};

const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: a, image: "agent:1"}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: store, namespace: default}
spec:
  replicas: 2
  serviceName: store
  selector: {matchLabels: {app: store}}
  template:
    metadata: {labels: {app: store}}
    spec: {containers: [{name: s, image: "store:1"}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: default}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: m, image: "migrate:1"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec: {containers: [{name: b, image: "example/fail:1"}]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_become_ready_and_failing_images_do_not() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    bounded(60, async {
        let out = k
            .run_stdin(&["apply", "--server-side", "-f", "-"], WORKLOADS)
            .await;
        assert!(out.ok, "{}", out.stderr);
        let ds = k
            .run(&[
                "rollout",
                "status",
                "-n",
                "kube-system",
                "daemonset/agent",
                "--timeout=30s",
            ])
            .await;
        assert!(ds.ok, "{}{}", ds.stdout, ds.stderr);
        let ready = k
            .run(&[
                "get",
                "ds",
                "-n",
                "kube-system",
                "agent",
                "-o",
                "jsonpath={.status.numberReady}",
            ])
            .await;
        assert_eq!(ready.stdout, "4");
        let sts = k
            .run(&["rollout", "status", "statefulset/store", "--timeout=30s"])
            .await;
        assert!(sts.ok, "{}{}", sts.stdout, sts.stderr);
        let pods = k
            .run(&["get", "pods", "-l", "app=store", "-o", "name"])
            .await;
        assert_eq!(pods.stdout.trim(), "pod/store-0\npod/store-1");
        let job = k
            .run(&[
                "wait",
                "--for=condition=complete",
                "job/migrate",
                "--timeout=30s",
            ])
            .await;
        assert!(job.ok, "{}{}", job.stdout, job.stderr);
        let broken = k
            .run(&["rollout", "status", "deployment/broken", "--timeout=2s"])
            .await;
        assert!(!broken.ok, "a failing image never becomes available");
        let reason = eventually(10, || async {
            let o = k
                .run(&[
                    "get",
                    "pods",
                    "-l",
                    "app=broken",
                    "-o",
                    "jsonpath={.items[0].status.containerStatuses[0].state.waiting.reason}",
                ])
                .await;
            (!o.stdout.is_empty()).then_some(o.stdout)
        })
        .await;
        assert_eq!(reason, "CrashLoopBackOff");
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_and_namespace_deletion() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let nss: Api<Namespace> = Api::all(client.clone());
        let mut ns = Namespace::default();
        ns.metadata.name = Some("team".into());
        nss.create(&PostParams::default(), &ns).await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
        let mut held = ConfigMap::default();
        held.metadata.name = Some("held".into());
        held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        cms.create(&PostParams::default(), &held).await.unwrap();
        let mut plain = ConfigMap::default();
        plain.metadata.name = Some("plain".into());
        plain.data = Some(BTreeMap::new());
        cms.create(&PostParams::default(), &plain).await.unwrap();

        nss.delete("team", &DeleteParams::default()).await.unwrap();
        let terminating = nss.get("team").await.unwrap();
        assert_eq!(
            terminating.status.unwrap().phase.as_deref(),
            Some("Terminating")
        );
        assert!(
            cms.get("plain").await.is_err(),
            "namespace deletion removes its objects"
        );
        let h = cms.get("held").await.unwrap();
        assert!(
            h.metadata.deletion_timestamp.is_some(),
            "finalizers hold the object"
        );
        let mut n = ConfigMap::default();
        n.metadata.name = Some("new".into());
        assert!(
            cms.create(&PostParams::default(), &n).await.is_err(),
            "no new objects in a terminating namespace"
        );

        cms.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
        assert!(cms.get("held").await.is_err());
        eventually(10, || async {
            nss.get("team").await.is_err().then_some(())
        })
        .await;
    })
    .await;
    sim.shutdown().await;
}
