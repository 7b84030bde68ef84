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
