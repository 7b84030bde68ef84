//! What the agent's helm components need from the sim: server-side apply of every kind a chart
//! renders (as manager `tidemark`, labelled `tidemark.dev/component`), no-op re-applies that
//! write nothing, pruning by label across namespaces and kinds, 422s like a real API server,
//! rollouts and failures a health check can read, hand edits, and request counters.

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use serde_json::{Value, json};
use tidemark_sim::{Sim, SimConfig};

use super::support::{Kubectl, bounded, eventually, start, start_with};

const LABEL: &str = "tidemark.dev/component";
const MANAGER: &str = "tidemark";

/// A component as a chart renders it: every kind the agent applies, in namespace `addons`.
const RENDERED: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: addons}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: addons-config, namespace: addons}
data: {config.yaml: "level: info\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: addons-token, namespace: addons}
stringData: {token: s3cret}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: addons, namespace: addons}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: addons-reader}
rules:
- apiGroups: [""]
  resources: [nodes, pods]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: addons-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: addons-reader}
subjects: [{kind: ServiceAccount, name: addons, namespace: addons}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: addons-leader, namespace: addons}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: addons-leader, namespace: addons}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: addons-leader}
subjects: [{kind: ServiceAccount, name: addons, namespace: addons}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: addons}
spec:
  type: ClusterIP
  selector: {app: web}
  ports: [{name: http, port: 8080, targetPort: http, protocol: TCP}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: addons}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {checksum/config: "1"}
    spec:
      serviceAccountName: addons
      containers:
      - name: web
        image: example/web:1
        ports: [{name: http, containerPort: 8080, protocol: TCP}]
        resources: {requests: {cpu: 50m, memory: 64Mi}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: addons}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      tolerations: [{operator: Exists}]
      containers: [{name: agent, image: example/agent:1, env: [{name: MODE, value: metrics}]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: store, namespace: addons}
spec:
  replicas: 2
  serviceName: store
  selector: {matchLabels: {app: store}}
  template:
    metadata: {labels: {app: store}}
    spec: {containers: [{name: store, image: example/store:1}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: addons}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: example/migrate:1}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: addons}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: web}}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: gizmo, namespace: addons}
spec: {size: 3}
"#;

/// The documents of `yaml`, each labelled `tidemark.dev/component=<component>`.
fn rendered(yaml: &str, component: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .map(|doc| {
            let mut v: Value = serde_yaml::from_str(doc).unwrap();
            v["metadata"]["labels"][LABEL] = json!(component);
            v
        })
        .collect()
}

fn gvk(obj: &Value) -> GroupVersionKind {
    let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            obj["apiVersion"].as_str().unwrap().to_string(),
        ),
    };
    GroupVersionKind::gvk(&group, &version, obj["kind"].as_str().unwrap())
}

/// The API of `obj`'s kind (in its namespace, if namespaced), found through discovery.
fn api_for(client: &kube::Client, discovery: &Discovery, obj: &Value) -> Api<DynamicObject> {
    let (ar, caps) = discovery
        .resolve_gvk(&gvk(obj))
        .unwrap_or_else(|| panic!("discovery lacks {:?}", gvk(obj)));
    match (caps.scope, obj.pointer("/metadata/namespace")) {
        (Scope::Namespaced, Some(ns)) => {
            Api::namespaced_with(client.clone(), ns.as_str().unwrap(), &ar)
        }
        _ => Api::all_with(client.clone(), &ar),
    }
}

fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap()
}

async fn apply(
    client: &kube::Client,
    discovery: &Discovery,
    obj: &Value,
    force: bool,
) -> kube::Result<DynamicObject> {
    let mut pp = PatchParams::apply(MANAGER);
    pp.force = force;
    api_for(client, discovery, obj)
        .patch(name(obj), &pp, &Patch::Apply(obj))
        .await
}

/// Applies every object (the custom resource once its CRD is established and discovered),
/// like a component's first pass. Returns the discovery that knows the CRD's kind.
async fn apply_all(client: &kube::Client, objs: &[Value]) -> (Discovery, Vec<DynamicObject>) {
    let mut discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut out = Vec::new();
    for (n, obj) in objs.iter().enumerate() {
        if discovery.resolve_gvk(&gvk(obj)).is_none() {
            discovery = Discovery::new(client.clone()).run().await.unwrap();
        }
        let applied = apply(client, &discovery, obj, n % 2 == 0).await;
        out.push(applied.unwrap_or_else(|e| panic!("apply {}: {e}", name(obj))));
        if obj["kind"] == "CustomResourceDefinition" {
            // As on a real server, a new CRD is Established a moment later (its custom
            // resources are not served before).
            let crds = api_for(client, &discovery, obj);
            eventually(10, || async {
                let crd = crds.get(name(obj)).await.ok()?;
                let conditions = crd.data.pointer("/status/conditions")?.as_array()?.clone();
                conditions
                    .iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
                    .then_some(())
            })
            .await;
        }
    }
    (discovery, out)
}

fn rv(o: &DynamicObject) -> String {
    o.metadata.resource_version.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_kind_applies_and_a_second_apply_writes_nothing() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let objs = rendered(RENDERED, "addons");
        let (discovery, first) = apply_all(&client, &objs).await;
        for o in &first {
            let mine = o.metadata.managed_fields.iter().flatten().any(|m| {
                m.manager.as_deref() == Some(MANAGER) && m.operation.as_deref() == Some("Apply")
            });
            assert!(
                mine,
                "{:?} lacks an Apply entry of {MANAGER}",
                o.metadata.name
            );
            assert_eq!(o.labels()[LABEL], "addons");
        }
        let secret = first
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some("addons-token"))
            .unwrap();
        assert_eq!(
            secret.data.pointer("/data/token"),
            Some(&json!("czNjcmV0")),
            "stringData is stored as data"
        );
        assert!(secret.data.get("stringData").is_none());

        // Once the controllers are done writing status...
        for o in objs.iter().filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("Deployment" | "DaemonSet" | "StatefulSet")
            )
        }) {
            wait_rolled_out(&api_for(&client, &discovery, o), name(o), 20).await;
        }
        let job = objs.iter().find(|o| o["kind"] == "Job").unwrap();
        let jobs = api_for(&client, &discovery, job);
        eventually(20, || async {
            condition(&jobs.get("migrate").await.ok()?, "Complete").then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut stored = Vec::new();
        for obj in &objs {
            stored.push(
                api_for(&client, &discovery, obj)
                    .get(name(obj))
                    .await
                    .unwrap(),
            );
        }
        // ...Kubernetes does not write for an apply that changes nothing, even a second later
        // (managedFields times have a resolution of one second).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let before = sim.request_counts();
        for (obj, was) in objs.iter().zip(&stored) {
            let again = apply(&client, &discovery, obj, true).await.unwrap();
            assert_eq!(
                rv(&again),
                rv(was),
                "re-applying {} bumped its resourceVersion",
                name(obj)
            );
            assert_eq!(again.metadata.managed_fields, was.metadata.managed_fields);
        }
        let counted = sim.request_counts().since(&before);
        assert_eq!(counted.verb("patch"), objs.len() as u64, "{counted:?}");
        assert_eq!(counted.writes(), objs.len() as u64);
        assert_eq!(
            counted.verb("create") + counted.verb("update") + counted.verb("get"),
            0
        );
        assert_eq!(counted.resource("patch", "deployments"), 1);
        assert_eq!(counted.resource("patch", "widgets"), 1);
        assert_eq!(counted.resource("patch", "customresourcedefinitions"), 1);

        // A dry run is counted as such and is no write.
        let before = sim.request_counts();
        let cm = &objs[2];
        let dry = PatchParams {
            dry_run: true,
            ..PatchParams::apply(MANAGER)
        };
        api_for(&client, &discovery, cm)
            .patch(name(cm), &dry, &Patch::Apply(cm))
            .await
            .unwrap();
        let counted = sim.request_counts().since(&before);
        assert_eq!(
            (counted.verb("patch"), counted.dry_run, counted.writes()),
            (1, 1, 0)
        );

        // The same counters in /sim/v1/state, which `tidemark sim ctl state` prints.
        let k = Kubectl::new(&sim);
        let state: Value = serde_json::from_str(
            &tidemark_sim::ctl(&k.kubeconfig, &["state".to_string()])
                .await
                .unwrap(),
        )
        .unwrap();
        let all = sim.request_counts();
        for verb in tidemark_sim::REQUEST_VERBS {
            assert_eq!(
                state["requests"][verb],
                json!(all.verb(verb)),
                "{verb}: {state}"
            );
        }
        assert_eq!(state["requests"]["dryRun"], json!(1));
        assert_eq!(
            state["requestsByResource"]["patch configmaps"],
            json!(3),
            "{state}"
        );
        assert!(
            state["requestsByResource"]["get discovery"]
                .as_u64()
                .unwrap()
                > 0
        );
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_into_a_missing_namespace_is_not_found_until_it_exists() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let discovery = Discovery::new(client.clone()).run().await.unwrap();
        let objs = rendered(RENDERED, "addons");
        let cm = objs.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
        let err = apply(&client, &discovery, cm, true).await.unwrap_err();
        let kube::Error::Api(status) = &err else {
            panic!("{err}")
        };
        assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
        assert_eq!(status.message, "namespaces \"addons\" not found");
        apply(&client, &discovery, &objs[0], true).await.unwrap();
        apply(&client, &discovery, cm, true).await.unwrap();
    })
    .await;
    sim.shutdown().await;
}

/// Another component, in another namespace.
const OTHER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: other}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: api, image: example/api:1}]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: other-reader}
rules: []
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: sprocket, namespace: other}
spec: {size: 1}
"#;

/// Lists `kind` cluster-wide with a label selector, by name.
async fn names(api: &Api<DynamicObject>, selector: &str) -> Vec<String> {
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap();
    list.items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_lists_by_label_across_namespaces_and_deletes() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let (discovery, _) = apply_all(&client, &rendered(RENDERED, "addons")).await;
        // Another component's objects in another namespace, and an unlabelled one.
        let other = rendered(OTHER, "other");
        for o in &other {
            apply(&client, &discovery, o, true).await.unwrap();
        }
        let mut plain = other[1].clone();
        plain["metadata"] = json!({"name": "plain", "namespace": "default"});
        apply(&client, &discovery, &plain, true).await.unwrap();

        let all = |kind: &str, group: &str, version: &str| {
            let (ar, _) = discovery
                .resolve_gvk(&GroupVersionKind::gvk(group, version, kind))
                .unwrap();
            Api::<DynamicObject>::all_with(client.clone(), &ar)
        };
        let deployments = all("Deployment", "apps", "v1");
        let clusterroles = all("ClusterRole", "rbac.authorization.k8s.io", "v1");
        let widgets = all("Widget", "example.com", "v1");
        assert_eq!(names(&deployments, LABEL).await, ["web", "api"]);
        assert_eq!(
            names(&deployments, &format!("{LABEL}=other")).await,
            ["api"]
        );
        assert_eq!(names(&deployments, &format!("!{LABEL}")).await, ["plain"]);
        assert_eq!(
            names(&clusterroles, LABEL).await,
            ["addons-reader", "other-reader"]
        );
        assert_eq!(
            names(&clusterroles, &format!("{LABEL}=addons")).await,
            ["addons-reader"]
        );
        assert_eq!(names(&widgets, LABEL).await, ["gizmo", "sprocket"]);
        assert_eq!(names(&widgets, &format!("{LABEL}=addons")).await, ["gizmo"]);
        // The raw path the agent uses, with `exists` and `key=value`.
        for query in [LABEL.to_string(), format!("{LABEL}=other")] {
            let path = format!(
                "/apis/apps/v1/deployments?labelSelector={}",
                query.replace('/', "%2F")
            );
            let req = http::Request::get(path).body(Vec::new()).unwrap();
            let list: Value = client.request(req).await.unwrap();
            assert!(
                list["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["metadata"]["name"] == "api")
            );
        }

        // Pruning the "other" component: namespaced, cluster-scoped and custom objects. In the
        // foreground, a Deployment's ReplicaSets and pods go first.
        let other_deployments = api_for(&client, &discovery, &other[1]);
        wait_rolled_out(&other_deployments, "api", 20).await;
        let dp = DeleteParams::default();
        let deleting = other_deployments
            .delete("api", &DeleteParams::foreground())
            .await
            .unwrap();
        let deleting = deleting.left().expect("the object being deleted");
        assert!(deleting.metadata.deletion_timestamp.is_some());
        assert_eq!(
            deleting.metadata.finalizers,
            Some(vec!["foregroundDeletion".to_string()])
        );
        api_for(&client, &discovery, &other[2])
            .delete("other-reader", &dp)
            .await
            .unwrap();
        api_for(&client, &discovery, &other[3])
            .delete("sprocket", &dp)
            .await
            .unwrap();
        eventually(10, || async {
            other_deployments.get("api").await.is_err().then_some(())
        })
        .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "other");
        assert!(
            pods.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        for api in [&deployments, &clusterroles, &widgets] {
            assert!(names(api, &format!("{LABEL}=other")).await.is_empty());
        }
        // A dependent's finalizer holds a foreground deletion up until it is removed.
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let pp = Default::default();
        let owner = json!({"metadata": {"name": "owner"}});
        let owner = cms
            .create(&pp, &serde_json::from_value(owner).unwrap())
            .await
            .unwrap();
        let owner_ref = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner.metadata.uid, "blockOwnerDeletion": true});
        let held = json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"],
            "ownerReferences": [owner_ref]}});
        cms.create(&pp, &serde_json::from_value(held).unwrap())
            .await
            .unwrap();
        cms.delete("owner", &DeleteParams::foreground())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waiting = cms.get("owner").await.unwrap();
        assert_eq!(
            waiting.metadata.finalizers,
            Some(vec!["foregroundDeletion".to_string()])
        );
        assert!(
            cms.get("held")
                .await
                .unwrap()
                .metadata
                .deletion_timestamp
                .is_some()
        );
        cms.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
        eventually(10, || async {
            cms.get("owner").await.is_err().then_some(())
        })
        .await;
        // Orphaning leaves the ReplicaSet, without its owner.
        let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
        let plain_rs = ListParams::default().labels("app=api");
        eventually(10, || async {
            (!rss.list(&plain_rs).await.ok()?.items.is_empty()).then_some(())
        })
        .await;
        let default_deployments = api_for(&client, &discovery, &plain);
        default_deployments
            .delete("plain", &DeleteParams::orphan())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let orphans = rss.list(&plain_rs).await.unwrap().items;
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].metadata.owner_references, None);

        // Deleting the CRD takes its custom resources and its discovery entry.
        let (crd_ar, _) = discovery
            .resolve_gvk(&GroupVersionKind::gvk(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
            ))
            .unwrap();
        Api::<DynamicObject>::all_with(client.clone(), &crd_ar)
            .delete("widgets.example.com", &dp)
            .await
            .unwrap();
        let after = Discovery::new(client.clone()).run().await.unwrap();
        assert!(
            after
                .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
                .is_none()
        );
        let err = widgets.list(&ListParams::default()).await.unwrap_err();
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 404),
            "{err}"
        );
        let k = Kubectl::new(&sim);
        let res = k
            .run(&["api-resources", "--api-group=example.com", "-o", "name"])
            .await;
        assert_eq!(res.stdout.trim(), "", "{}", res.stderr);
    })
    .await;
    sim.shutdown().await;
}

/// Sends `body` as a server-side apply and returns the answer's status code and `Status`.
async fn apply_raw(client: &kube::Client, path: &str, body: &Value) -> (u16, Status) {
    let req = http::Request::patch(format!("{path}?fieldManager={MANAGER}&force=true"))
        .header("content-type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(body).unwrap())
        .unwrap();
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let status: Status = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not a Status ({e}): {}", String::from_utf8_lossy(&bytes)));
    (code, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_are_422_with_a_status_naming_the_field() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let deploy = |spec: Value| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": spec});
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "example/web:1"}]}});
        let deployments = "/apis/apps/v1/namespaces/default/deployments/web";
        let cases = [
            (
                "/api/v1/namespaces/default/configmaps/Bad_Name",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}),
                "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain",
                vec![("metadata.name", "FieldValueInvalid")],
            ),
            (
                deployments,
                deploy(json!({"template": template})),
                "Deployment.apps \"web\" is invalid: [spec.selector: Required value, spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`]",
                vec![("spec.selector", "FieldValueRequired"), ("spec.template.metadata.labels", "FieldValueInvalid")],
            ),
            (
                deployments,
                deploy(json!({"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {}}})),
                "Deployment.apps \"web\" is invalid: spec.template.spec.containers: Required value",
                vec![("spec.template.spec.containers", "FieldValueRequired")],
            ),
            (
                deployments,
                deploy(json!({"selector": {"matchLabels": {"app": "api"}}, "template": template})),
                "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
                vec![("spec.template.metadata.labels", "FieldValueInvalid")],
            ),
        ];
        for (path, body, message, causes) in cases {
            let (code, status) = apply_raw(&client, path, &body).await;
            assert_eq!(code, 422, "{status:?}");
            assert_eq!(status.status.as_deref(), Some("Failure"));
            assert_eq!((status.code, status.reason.as_deref()), (Some(422), Some("Invalid")));
            let got = status.message.clone().unwrap_or_default();
            assert!(got.starts_with(message), "{got}\n  wanted {message}");
            let details = status.details.unwrap();
            let fields: Vec<(String, String)> = details.causes.unwrap().into_iter().map(|c| (c.field.unwrap_or_default(), c.reason.unwrap_or_default())).collect();
            let want: Vec<(String, String)> = causes.iter().map(|(f, r)| (f.to_string(), r.to_string())).collect();
            assert_eq!(fields, want);
        }
        // Nothing was stored; a valid Deployment is, and its selector cannot change later.
        let k = Kubectl::new(&sim);
        // (The root CA publisher's ConfigMap is in every namespace.)
        let none = k.run(&["get", "deployments,configmaps", "-o", "name"]).await;
        assert_eq!(none.stdout.trim(), "configmap/kube-root-ca.crt", "{}", none.stderr);
        let valid = format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template: {template}\n");
        let created = k.run_stdin(&["apply", "--server-side", "-f", "-"], &valid).await;
        assert!(created.ok, "{}", created.stderr);
        let moved = valid.replace("matchLabels: {app: web}", "matchLabels: {app: web, tier: x}").replace("\"labels\":{\"app\":\"web\"}", "\"labels\":{\"app\":\"web\",\"tier\":\"x\"}");
        let refused = k.run_stdin(&["apply", "--server-side", "-f", "-"], &moved).await;
        assert!(!refused.ok && refused.stderr.contains("spec.selector: Invalid value") && refused.stderr.contains("field is immutable"), "{}", refused.stderr);
    })
    .await;
    sim.shutdown().await;
}

/// The status fields a component health check reads, for a Deployment, StatefulSet or DaemonSet.
fn rolled_out(o: &DynamicObject) -> bool {
    let n = |p: &str| o.data.pointer(p).and_then(Value::as_i64);
    let observed = n("/status/observedGeneration") >= o.metadata.generation;
    match o.types.as_ref().map(|t| t.kind.as_str()) {
        Some("DaemonSet") => {
            let desired = n("/status/desiredNumberScheduled").unwrap_or(-1);
            observed
                && desired > 0
                && n("/status/numberAvailable") == Some(desired)
                && n("/status/updatedNumberScheduled") == Some(desired)
        }
        _ => {
            let want = n("/spec/replicas");
            observed
                && n("/status/replicas") == want
                && n("/status/updatedReplicas") == want
                && n("/status/readyReplicas") == want
                && n("/status/availableReplicas").or(n("/status/readyReplicas")) == want
        }
    }
}

fn condition(o: &DynamicObject, kind: &str) -> bool {
    o.data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

async fn wait_rolled_out(api: &Api<DynamicObject>, name: &str, secs: u64) -> DynamicObject {
    eventually(secs, || async {
        let o = api.get(name).await.ok()?;
        rolled_out(&o).then_some(o)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_roll_out_at_default_speed() {
    // Speed 1.0, as `tidemark sim` runs by default.
    let sim: Sim = start_with(SimConfig {
        node_groups: vec![("general".into(), 3)],
        ..Default::default()
    })
    .await;
    let client = sim.client().await.unwrap();
    bounded(40, async {
        let objs = rendered(RENDERED, "addons");
        let (discovery, _) = apply_all(&client, &objs).await;
        let api = |kind: &str| {
            let obj = objs.iter().find(|o| o["kind"] == kind).unwrap();
            (api_for(&client, &discovery, obj), name(obj).to_string())
        };
        let started = std::time::Instant::now();
        for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
            let (a, n) = api(kind);
            let o = wait_rolled_out(&a, &n, 20).await;
            assert_eq!(
                o.data.pointer("/status/observedGeneration"),
                Some(&json!(1)),
                "{kind}"
            );
        }
        let (sts, _) = api("StatefulSet");
        let st = sts.get("store").await.unwrap();
        assert_eq!(
            st.data.pointer("/status/currentRevision"),
            st.data.pointer("/status/updateRevision")
        );
        let (ds, _) = api("DaemonSet");
        assert_eq!(
            ds.get("agent")
                .await
                .unwrap()
                .data
                .pointer("/status/desiredNumberScheduled"),
            Some(&json!(3))
        );
        let (jobs, _) = api("Job");
        eventually(20, || async {
            condition(&jobs.get("migrate").await.ok()?, "Complete").then_some(())
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
    })
    .await;
    sim.shutdown().await;
}

const FAILING: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken, namespace: default}
spec:
  replicas: 1
  progressDeadlineSeconds: 10
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec: {containers: [{name: broken, image: example/fail:1}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: doomed, namespace: default}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: doomed, image: example/fail-migrate:1}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_images_never_become_available_and_say_why() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let objs = rendered(FAILING, "broken");
        let (discovery, _) = apply_all(&client, &objs).await;
        let deployments = api_for(&client, &discovery, &objs[0]);
        let jobs = api_for(&client, &discovery, &objs[1]);
        let failed = eventually(20, || async {
            let j = jobs.get("doomed").await.ok()?;
            condition(&j, "Failed").then_some(j)
        })
        .await;
        assert!(!condition(&failed, "Complete"));
        assert_eq!(
            failed.data.pointer("/status/conditions/0/reason"),
            Some(&json!("BackoffLimitExceeded"))
        );
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let waiting = eventually(10, || async {
            let list = pods
                .list(&ListParams::default().labels("app=broken"))
                .await
                .ok()?;
            let status = list.items.first()?.status.clone()?;
            let cs = status.container_statuses?.into_iter().next()?;
            cs.state?.waiting?.reason
        })
        .await;
        assert_eq!(waiting, "CrashLoopBackOff");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let d = deployments.get("broken").await.unwrap();
        assert!(!rolled_out(&d), "{:?}", d.data["status"]);
        // Zero counters are left out, as the real server's encoding does.
        assert_eq!(d.data.pointer("/status/availableReplicas"), None);
        assert!(!condition(&d, "Available"));
        // After progressDeadlineSeconds (10 s, scaled by speed 50) the rollout has failed.
        let stuck = eventually(10, || async {
            let d = deployments.get("broken").await.ok()?;
            let cs = d.data.pointer("/status/conditions")?.as_array()?.clone();
            cs.into_iter()
                .find(|c| c["type"] == "Progressing" && c["status"] == "False")
        })
        .await;
        assert_eq!(stuck["reason"], "ProgressDeadlineExceeded");
        let k = Kubectl::new(&sim);
        let rollout = k
            .run(&["rollout", "status", "deployment/broken", "--timeout=5s"])
            .await;
        assert!(
            rollout.stderr.contains("exceeded its progress deadline"),
            "{}",
            rollout.stderr
        );
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_changes_roll_out_again_and_hand_edits_stick_until_forced() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    let k = Kubectl::new(&sim);
    bounded(45, async {
        let mut objs = rendered(RENDERED, "addons");
        let (discovery, _) = apply_all(&client, &objs).await;
        let index = |kind: &str| objs.iter().position(|o| o["kind"] == kind).unwrap();
        let cm = index("ConfigMap");
        let (d, ds, sts) = (
            index("Deployment"),
            index("DaemonSet"),
            index("StatefulSet"),
        );
        for i in [d, ds, sts] {
            wait_rolled_out(&api_for(&client, &discovery, &objs[i]), name(&objs[i]), 20).await;
        }
        // A new config checksum and images: every workload rolls out again.
        objs[d]["spec"]["template"]["metadata"]["annotations"]["checksum/config"] = json!("2");
        objs[ds]["spec"]["template"]["spec"]["containers"][0]["image"] = json!("example/agent:2");
        objs[sts]["spec"]["template"]["spec"]["containers"][0]["image"] = json!("example/store:2");
        for i in [d, ds, sts] {
            let applied = apply(&client, &discovery, &objs[i], true).await.unwrap();
            assert_eq!(applied.metadata.generation, Some(2), "{}", name(&objs[i]));
            let done =
                wait_rolled_out(&api_for(&client, &discovery, &objs[i]), name(&objs[i]), 20).await;
            assert_eq!(
                done.data.pointer("/status/observedGeneration"),
                Some(&json!(2))
            );
        }
        let pods = k
            .run(&[
                "get",
                "pods",
                "-n",
                "addons",
                "-l",
                "app=agent",
                "-o",
                "jsonpath={.items[*].spec.containers[0].image}",
            ])
            .await;
        assert_eq!(
            pods.stdout
                .split(' ')
                .filter(|i| *i == "example/agent:2")
                .count(),
            4,
            "{}",
            pods.stdout
        );

        // Hand edits by someone else change the objects...
        let edit = k
            .run(&[
                "patch",
                "configmap",
                "addons-config",
                "-n",
                "addons",
                "--type=merge",
                "-p",
                r#"{"data":{"config.yaml":"level: debug\n"}}"#,
            ])
            .await;
        assert!(edit.ok, "{}", edit.stderr);
        let scaled = k
            .run(&["scale", "deployment", "web", "-n", "addons", "--replicas=3"])
            .await;
        assert!(scaled.ok, "{}", scaled.stderr);
        let deployments = api_for(&client, &discovery, &objs[d]);
        assert_eq!(
            deployments
                .get("web")
                .await
                .unwrap()
                .data
                .pointer("/spec/replicas"),
            Some(&json!(3))
        );
        // ...an apply without force conflicts with them, naming the other manager...
        let err = apply(&client, &discovery, &objs[cm], false)
            .await
            .unwrap_err();
        let kube::Error::Api(status) = &err else {
            panic!("{err}")
        };
        assert_eq!(status.code, 409);
        assert!(
            status.message.contains("kubectl-patch")
                && status.message.contains(".data.config.yaml"),
            "{}",
            status.message
        );
        // ...and a forced apply takes the fields back.
        let restored = apply(&client, &discovery, &objs[cm], true).await.unwrap();
        assert_eq!(
            restored.data.pointer("/data/config.yaml"),
            Some(&json!("level: info\n"))
        );
        let restored = apply(&client, &discovery, &objs[d], true).await.unwrap();
        assert_eq!(restored.data.pointer("/spec/replicas"), Some(&json!(2)));
        wait_rolled_out(&deployments, "web", 20).await;

        let del = k
            .run(&["delete", "deployment", "web", "-n", "addons"])
            .await;
        assert!(del.ok, "{}", del.stderr);
        assert!(names(&deployments, LABEL).await.is_empty());
    })
    .await;
    sim.shutdown().await;
}
