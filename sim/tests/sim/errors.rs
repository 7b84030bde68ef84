//! Bad requests get Kubernetes-shaped `Status` errors, never a panic or a hang.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use tidemark_sim::SimConfig;

use super::support::{bounded, start, start_with};

async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body.as_bytes().to_vec())
        .unwrap();
    match client.request_text(req).await {
        Ok(_) => (200, String::new()),
        Err(kube::Error::Api(s)) => (s.code, s.reason),
        Err(e) => panic!("not a Status error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_status_errors() {
    let sim = start().await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let cms = "/api/v1/namespaces/default/configmaps";
        let json = "application/json";
        let cases: Vec<(&str, String, &str, &str, u16, &str)> = vec![
            ("POST", cms.into(), json, "{not json", 400, "BadRequest"),
            ("POST", cms.into(), json, "[1,2]", 400, "BadRequest"),
            ("POST", cms.into(), json, r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#, 400, "BadRequest"),
            ("POST", cms.into(), json, r#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#, 400, "BadRequest"),
            ("POST", cms.into(), json, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#, 422, "Invalid"),
            ("POST", cms.into(), json, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#, 422, "Invalid"),
            ("POST", "/api/v1/namespaces/nope/configmaps".into(), json, r#"{"metadata":{"name":"x"}}"#, 404, "NotFound"),
            ("GET", "/api/v1/namespaces/default/bogus".into(), json, "", 404, "NotFound"),
            // An unknown group is the Go mux's plain-text 404 (kube cannot read a reason).
            ("GET", "/apis/nope.example.com/v1/things".into(), json, "", 404, "Failed to parse error data"),
            ("GET", format!("{cms}?labelSelector=a%20in%20b"), json, "", 400, "BadRequest"),
            ("GET", format!("{cms}?continue=%%%"), json, "", 400, "BadRequest"),
            ("PATCH", format!("{cms}/seed"), "application/json-patch+json", r#"[{"op":"remove","path":"/nope"}]"#, 422, "Invalid"),
            ("PATCH", format!("{cms}/seed"), "application/json-patch+json", r#"{"op":"x"}"#, 422, "Invalid"),
            ("PATCH", format!("{cms}/seed"), "text/plain", "x", 415, "UnsupportedMediaType"),
            ("PATCH", format!("{cms}/seed"), "application/merge-patch+json", "{", 400, "BadRequest"),
            ("PATCH", format!("{cms}/seed"), "application/apply-patch+yaml", "metadata: {name: seed}", 422, "Invalid"),
            ("PATCH", format!("{cms}/seed?fieldManager=t"), "application/apply-patch+yaml", "data: [unclosed", 400, "BadRequest"),
            ("PATCH", format!("{cms}/seed?fieldManager=t"), "application/apply-patch+yaml", ": : :", 400, "BadRequest"),
            ("PATCH", format!("{cms}/missing"), "application/merge-patch+json", "{}", 404, "NotFound"),
            ("PUT", format!("{cms}/seed"), json, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"other"}}"#, 400, "BadRequest"),
            ("PUT", format!("{cms}/seed"), json, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"seed","resourceVersion":"1"}}"#, 409, "Conflict"),
            ("POST", "/api/v1/namespaces/default/pods/nope/eviction".into(), json, r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"nope"}}"#, 404, "NotFound"),
            ("POST", "/api/v1/namespaces/default/pods/nope/eviction".into(), json, r#"{"apiVersion":"v1","kind":"Pod"}"#, 400, "BadRequest"),
            ("DELETE", format!("{cms}/missing"), json, "", 404, "NotFound"),
            ("DELETE", format!("{cms}/seed"), json, r#"{"preconditions":{"uid":"nope"}}"#, 409, "Conflict"),
            ("POST", format!("{cms}/seed/bogus"), json, "{}", 404, "NotFound"),
            ("POST", format!("{cms}?dryRun=Maybe"), json, "{}", 422, "Invalid"),
        ];
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let mut seed = ConfigMap::default();
        seed.metadata.name = Some("seed".into());
        api.create(&PostParams::default(), &seed).await.unwrap();
        for (method, path, ct, body, code, reason) in cases {
            let (got_code, got_reason) = send(&client, method, &path, ct, body).await;
            assert_eq!((got_code, got_reason.as_str()), (code, reason), "{method} {path} {body}");
        }
        // RBAC names are path segments; odd but valid inputs do not upset the controllers.
        let rbac = "/apis/rbac.authorization.k8s.io/v1/clusterroles";
        let role = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"system:test"},"rules":[]}"#;
        assert_eq!(send(&client, "POST", rbac, json, role).await.0, 200);
        let pdb = r#"{"apiVersion":"policy/v1","kind":"PodDisruptionBudget","metadata":{"name":"p"},"spec":{"maxUnavailable":"99999999999999999%","selector":{}}}"#;
        assert_eq!(send(&client, "POST", "/apis/policy/v1/namespaces/default/poddisruptionbudgets", json, pdb).await.0, 200);
        assert!("latency=1e30s".parse::<tidemark_sim::FaultSpec>().is_err());
        assert!(tidemark_sim::Sim::start(SimConfig { speed: 0.0, ..Default::default() }).await.is_err());
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // Still serving.
        assert!(api.get("seed").await.is_ok());
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_an_expired_resource_version_is_gone() {
    let sim = start_with(SimConfig {
        watch_window: 16,
        ..Default::default()
    })
    .await;
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        for n in 0..40 {
            let mut c = ConfigMap::default();
            c.metadata.name = Some(format!("c{n}"));
            api.create(&PostParams::default(), &c).await.unwrap();
        }
        let stream = api.watch(&WatchParams::default(), "2").await.unwrap();
        let mut stream = std::pin::pin!(stream);
        match stream.next().await {
            Some(Ok(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
            other => panic!("expected a 410 error event, got {other:?}"),
        }
    })
    .await;
    sim.shutdown().await;
}
