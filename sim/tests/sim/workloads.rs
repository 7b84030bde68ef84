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

/// The TTL-after-finished controller: a Job with `ttlSecondsAfterFinished` is deleted (with
/// its pods) once it has finished; one without stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_with_a_ttl_are_deleted() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    bounded(60, async {
        let jobs = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: once, namespace: default}
spec:
  ttlSecondsAfterFinished: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: m, image: "migrate:1"}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: kept, namespace: default}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: m, image: "migrate:1"}]
"#;
        let out = k
            .run_stdin(&["apply", "--server-side", "-f", "-"], jobs)
            .await;
        assert!(out.ok, "{}", out.stderr);
        // Both complete; then `once` goes, pods and all, and `kept` stays.
        eventually(30, || async {
            let out = k
                .run(&["get", "job", "kept", "-o", "jsonpath={.status.succeeded}"])
                .await;
            (out.stdout.trim() == "1").then_some(())
        })
        .await;
        eventually(30, || async {
            let out = k.run(&["get", "jobs", "-o", "name"]).await;
            (out.ok && out.stdout.trim() == "job.batch/kept").then_some(())
        })
        .await;
        let pods = k
            .run(&["get", "pods", "-l", "job-name=once", "-o", "name"])
            .await;
        assert_eq!(pods.stdout.trim(), "", "{}", pods.stderr);
    })
    .await;
    sim.shutdown().await;
}

/// `PodLifecycle::Pending`: pods are made but never scheduled nor started, so a Deployment
/// never becomes available and a Job never finishes, as on a cluster without kubelet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_never_start_leave_workloads_unavailable() {
    let sim = super::support::start_with(tidemark_sim::SimConfig {
        speed: 50.0,
        pods: tidemark_sim::PodLifecycle::Pending,
        ..Default::default()
    })
    .await;
    let k = Kubectl::new(&sim);
    bounded(60, async {
        let out = k.run_stdin(&["apply", "--server-side", "-f", "-"], WORKLOADS).await;
        assert!(out.ok, "{}", out.stderr);
        // Pods exist, Pending, on no node.
        let pods = eventually(10, || async {
            let out = k
                .run(&["get", "pods", "-l", "app=broken", "-o", "jsonpath={.items[*].status.phase}/{.items[*].spec.nodeName}"])
                .await;
            (out.stdout.trim() == "Pending/").then_some(out.stdout)
        })
        .await;
        assert_eq!(pods.trim(), "Pending/");
        // The Deployment says why, after its progress deadline (600 s / 50) it has failed.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let d = k
            .run(&["get", "deployment", "broken", "-o", "jsonpath={.status.availableReplicas}|{.status.unavailableReplicas}|{.status.conditions[?(@.type==\"Available\")].reason}"])
            .await;
        assert_eq!(d.stdout.trim(), "|1|MinimumReplicasUnavailable", "{}", d.stderr);
        let job = k
            .run(&["get", "job", "migrate", "-o", "jsonpath={.status.active}|{.status.succeeded}"])
            .await;
        assert_eq!(job.stdout.trim(), "1|", "{}", job.stderr);
    })
    .await;
    sim.shutdown().await;
}
