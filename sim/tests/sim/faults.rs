//! Injected faults: errors per verb, conflicts, outages, latency; set at run time.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

use super::support::{Kubectl, bounded, client_without_retries, eventually, start};

fn code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_per_verb_conflicts_and_outage() {
    let sim = start().await;
    let client = client_without_retries(&sim).await;
    bounded(30, async {
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let mut c = ConfigMap::default();
        c.metadata.name = Some("f".into());
        api.create(&PostParams::default(), &c).await.unwrap();

        sim.set_faults(
            "error-rate=1,error-verbs=get,error-codes=500|503"
                .parse()
                .unwrap(),
        );
        let e = code(api.get("f").await.unwrap_err());
        assert!(e == 500 || e == 503, "{e}");
        assert!(
            api.list(&ListParams::default()).await.is_ok(),
            "lists are not affected"
        );

        sim.set_faults("conflict-rate=1".parse().unwrap());
        let mut d = c.clone();
        d.metadata.name = Some("g".into());
        assert_eq!(
            code(api.create(&PostParams::default(), &d).await.unwrap_err()),
            409
        );

        sim.set_faults("outage=0s+700ms".parse().unwrap());
        assert_eq!(code(api.get("f").await.unwrap_err()), 503);
        eventually(5, || async { api.get("f").await.ok() }).await;

        sim.set_faults("outage=0s+700ms,outage-mode=refuse".parse().unwrap());
        match api.get("f").await {
            Err(kube::Error::Api(s)) => {
                panic!("expected a connection error, got status {}", s.code)
            }
            Err(_) => {}
            Ok(_) => panic!("expected a connection error"),
        }
        eventually(10, || async { api.get("f").await.ok() }).await;

        sim.set_faults(Default::default());
        assert!(api.get("f").await.is_ok());
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_through_ctl_add_latency() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    let client = sim.client().await.unwrap();
    bounded(30, async {
        let set = tidemark_sim::ctl(&k.kubeconfig, &["faults".into(), "latency=150ms".into()])
            .await
            .unwrap();
        assert_eq!(set, "latency=150ms");
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let t = Instant::now();
        api.list(&ListParams::default()).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(150));
        let bad = tidemark_sim::ctl(&k.kubeconfig, &["faults".into(), "latency=fast".into()]).await;
        assert!(bad.is_err());
        // The control interface itself is never slowed down or failed.
        sim.set_faults("error-rate=1".parse().unwrap());
        let got = tidemark_sim::ctl(&k.kubeconfig, &["faults".into()])
            .await
            .unwrap();
        assert_eq!(got, "error-rate=1");
    })
    .await;
    sim.shutdown().await;
}

/// One GET of ConfigMap `f` in `default` with `client`, answered as it is (no retries).
async fn raw_get(client: &kube::Client) -> http::Response<kube::client::Body> {
    let req = http::Request::get("/api/v1/namespaces/default/configmaps/f")
        .body(kube::client::Body::empty())
        .unwrap();
    client.send(req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_answers_like_the_api_server_and_records_early_retries() {
    use http_body_util::BodyExt;
    let sim = start().await;
    let client = client_without_retries(&sim).await;
    bounded(30, async {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let mut c = ConfigMap::default();
        c.metadata.name = Some("f".into());
        api.create(&PostParams::default(), &c).await.unwrap();

        // The max-in-flight / priority-and-fairness answer: plain text, Retry-After.
        sim.set_faults(
            "error-rate=1,error-codes=429,retry-after=2s"
                .parse()
                .unwrap(),
        );
        let r = raw_get(&client).await;
        assert_eq!(r.status(), 429);
        let h = r.headers();
        assert_eq!(h["retry-after"], "2");
        assert_eq!(h["content-type"], "text/plain; charset=utf-8");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h.contains_key("x-kubernetes-pf-flowschema-uid"));
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"Too many requests, please try again later.\n");
        // kube reads it as an API error with the code (its reason is made up by kube).
        assert_eq!(code(api.get("f").await.unwrap_err()), 429);

        // That second GET came at once: an early retry of the first 429.
        let (t, by_client) = sim.throttle_record();
        assert_eq!((t.throttled, t.retried, t.retried_early), (2, 1, 1));
        // One client (this kube client sends no User-Agent: `unknown`).
        assert_eq!(
            by_client.into_iter().collect::<Vec<_>>(),
            [("unknown".to_string(), t)]
        );

        // A retry after Retry-After has elapsed is not early; other paths are not retries.
        tokio::time::sleep(Duration::from_millis(2050)).await;
        sim.set_faults(Default::default());
        assert!(api.list(&ListParams::default()).await.is_ok());
        assert_eq!(
            sim.throttle_record().0.retried,
            1,
            "a list is not the GET's retry"
        );
        assert!(api.get("f").await.is_ok());
        let (t, _) = sim.throttle_record();
        assert_eq!((t.throttled, t.retried, t.retried_early), (2, 2, 1));
        assert!(t.shortest_wait.is_some_and(|d| d < Duration::from_secs(2)));

        // The default is one second, as the API server's filter.
        sim.set_faults("error-rate=1,error-codes=429".parse().unwrap());
        assert_eq!(raw_get(&client).await.headers()["retry-after"], "1");
        sim.set_faults(Default::default());
    })
    .await;
    sim.shutdown().await;
}
