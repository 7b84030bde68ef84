//! The real kubectl against the sim.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use tokio::io::AsyncBufReadExt;

use super::support::{Kubectl, bounded, eventually, start};

const MANIFEST: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: default}
data: {greeting: hello}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec:
  minAvailable: 3
  selector: {matchLabels: {app: web}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wg]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, namespace: default}
spec: {size: 3}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nodes_version_and_api_resources() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    let nodes = k.run(&["get", "nodes", "-o", "name"]).await;
    assert!(nodes.ok, "{}", nodes.stderr);
    assert_eq!(nodes.stdout.lines().count(), 4, "{}", nodes.stdout);
    let table = k.run(&["get", "nodes"]).await;
    assert!(
        table.ok && table.stdout.contains("sim-general-"),
        "{}{}",
        table.stdout,
        table.stderr
    );
    let version = k.run(&["version", "-o", "json"]).await;
    assert!(
        version.stdout.contains("\"gitVersion\": \"v1.28.9\""),
        "{}",
        version.stdout
    );
    let res = k.run(&["api-resources"]).await;
    assert!(res.ok, "{}", res.stderr);
    for want in [
        "deployments",
        "poddisruptionbudgets",
        "pdb",
        "leases",
        "kubeadmcontrolplanes",
        "machinedeployments",
    ] {
        assert!(
            res.stdout.contains(want),
            "api-resources lacks {want}: {}",
            res.stdout
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_server_side_get_yaml_rollout_delete() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    // As on a real cluster, the custom resource cannot be mapped before its CRD exists:
    // the first apply creates everything else, the second the Widget.
    let first = k
        .run_stdin(&["apply", "--server-side", "-f", "-"], MANIFEST)
        .await;
    assert!(
        first
            .stdout
            .contains("deployment.apps/web serverside-applied"),
        "{}{}",
        first.stdout,
        first.stderr
    );
    let second = k
        .run_stdin(&["apply", "--server-side", "-f", "-"], MANIFEST)
        .await;
    assert!(second.ok, "{}{}", second.stdout, second.stderr);
    assert!(
        second
            .stdout
            .contains("widget.example.com/w1 serverside-applied"),
        "{}",
        second.stdout
    );

    let rollout = k
        .run(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    assert!(rollout.ok, "{}{}", rollout.stdout, rollout.stderr);
    let yaml = k.run(&["get", "deployment", "web", "-o", "yaml"]).await;
    assert!(yaml.stdout.contains("readyReplicas: 3"), "{}", yaml.stdout);
    let cm = k
        .run(&[
            "get",
            "cm",
            "web-config",
            "-o",
            "yaml",
            "--show-managed-fields",
        ])
        .await;
    assert!(
        cm.stdout.contains("greeting: hello") && cm.stdout.contains("manager: kubectl"),
        "{}",
        cm.stdout
    );
    let widget = k
        .run(&["get", "wg", "w1", "-o", "jsonpath={.spec.size}"])
        .await;
    assert_eq!(widget.stdout, "3", "{}", widget.stderr);

    let del = k.run(&["delete", "configmap", "web-config"]).await;
    assert!(del.ok, "{}", del.stderr);
    let gone = k.run(&["get", "configmap", "web-config"]).await;
    assert!(
        !gone.ok && gone.stderr.contains("NotFound"),
        "{}",
        gone.stderr
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_sees_a_change() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    let mut child = k
        .command(&["get", "configmaps", "--watch", "-o", "name"])
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let client = sim.client().await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("watched".into());
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    bounded(20, async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.contains("configmap/watched") {
                return;
            }
        }
        panic!("watch ended without the change");
    })
    .await;
    let _ = child.kill().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_blocked_by_pdb_then_allowed() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    let applied = k
        .run_stdin(&["apply", "--server-side", "-f", "-"], MANIFEST)
        .await;
    assert!(
        applied.stdout.contains("poddisruptionbudget.policy/web"),
        "{}",
        applied.stderr
    );
    let rollout = k
        .run(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    assert!(rollout.ok, "{}", rollout.stderr);
    let node = eventually(10, || async {
        let o = k
            .run(&[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[0].spec.nodeName}",
            ])
            .await;
        (!o.stdout.is_empty()).then_some(o.stdout)
    })
    .await;
    let blocked = k
        .run(&[
            "drain",
            &node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=5s",
        ])
        .await;
    assert!(!blocked.ok, "drain should fail: {}", blocked.stdout);
    assert!(
        blocked.stderr.contains("disruption budget") || blocked.stderr.contains("global timeout"),
        "{}",
        blocked.stderr
    );

    let relax = k
        .run(&[
            "patch",
            "pdb",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"minAvailable":2}}"#,
        ])
        .await;
    assert!(relax.ok, "{}", relax.stderr);
    let drained = k
        .run(&[
            "drain",
            &node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=20s",
        ])
        .await;
    assert!(drained.ok, "{}{}", drained.stdout, drained.stderr);
    assert!(drained.stdout.contains("drained"), "{}", drained.stdout);
    // The evicted pod is replaced on another node.
    let rollout = k
        .run(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    assert!(rollout.ok, "{}", rollout.stderr);
    let on_node = k
        .run(&[
            "get",
            "pods",
            "--field-selector",
            &format!("spec.nodeName={node}"),
            "-o",
            "name",
        ])
        .await;
    assert_eq!(on_node.stdout.trim(), "", "pods left on the drained node");
    sim.shutdown().await;
}
