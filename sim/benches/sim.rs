//! Figures for the sim (`cargo bench -p tidemark-sim`): one sim with 500 nodes and 5,000
//! objects — create, list and watch throughput, server-side apply of 1,000 objects, memory —
//! and the memory of idle sims with 50 running. Prints a report; asserts nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use tidemark_sim::{Sim, SimConfig};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn cm(i: usize) -> ConfigMap {
    let name = format!("obj-{i:05}");
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"bench": "yes", "shard": (i % 7).to_string()}}, "data": {"key": "value", "name": name}})).unwrap()
}

/// Starts 50 small sims and reports the memory each costs while idle.
async fn idle_sims() {
    let before = rss_mib();
    let mut sims = Vec::new();
    let t = Instant::now();
    for _ in 0..50 {
        sims.push(Sim::start(SimConfig::default()).await.unwrap());
    }
    let started = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_mib();
    println!(
        "50 idle sims (3 nodes each): started in {started:?}, RSS {before:.1} -> {after:.1} MiB, {:.2} MiB per sim",
        (after - before) / 50.0
    );
    for s in sims {
        s.shutdown().await;
    }
}

#[tokio::main]
async fn main() {
    idle_sims().await;
    let rss0 = rss_mib();
    let t = Instant::now();
    let sim = Sim::start(SimConfig {
        node_groups: vec![("general".into(), 300), ("gpu".into(), 200)],
        ..Default::default()
    })
    .await
    .unwrap();
    println!("start with 500 nodes: {:?}", t.elapsed());
    let client = sim.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let t = Instant::now();
    stream::iter(0..5000)
        .for_each_concurrent(32, |i| {
            let cms = cms.clone();
            async move {
                cms.create(&PostParams::default(), &cm(i)).await.unwrap();
            }
        })
        .await;
    let el = t.elapsed();
    println!(
        "create 5,000 configmaps (32 in flight): {el:?} ({:.0}/s)",
        5000.0 / el.as_secs_f64()
    );

    let t = Instant::now();
    let mut n = 0;
    for _ in 0..10 {
        n += cms.list(&ListParams::default()).await.unwrap().items.len();
    }
    let el = t.elapsed();
    println!(
        "list 5,000 configmaps x10: {:?} per list ({:.0} objects/s)",
        el / 10,
        n as f64 / el.as_secs_f64()
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let t = Instant::now();
    let nn = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    println!("list {nn} nodes: {:?}", t.elapsed());
    let t = Instant::now();
    let sel = cms
        .list(&ListParams::default().labels("shard in (3,4)"))
        .await
        .unwrap()
        .items
        .len();
    println!(
        "list with a set-based selector ({sel} of 5,000): {:?}",
        t.elapsed()
    );

    // Watch throughput: 2,000 updates seen by one watch.
    let rv = cms
        .list_metadata(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let watch = cms
        .watch(&WatchParams::default().timeout(290), &rv)
        .await
        .unwrap();
    let t = Instant::now();
    let writer = {
        let cms = cms.clone();
        tokio::spawn(async move {
            stream::iter(0..2000)
                .for_each_concurrent(32, |i| {
                    let cms = cms.clone();
                    async move {
                        let p = json!({"data": {"n": i.to_string()}});
                        cms.patch(
                            &format!("obj-{:05}", i),
                            &PatchParams::default(),
                            &Patch::Merge(&p),
                        )
                        .await
                        .unwrap();
                    }
                })
                .await;
        })
    };
    let mut watch = std::pin::pin!(watch);
    let mut seen = 0;
    while seen < 2000 {
        match tokio::time::timeout(Duration::from_secs(60), watch.next()).await {
            Ok(Some(Ok(WatchEvent::Modified(_)))) => seen += 1,
            Ok(Some(Ok(_))) => {}
            other => {
                println!(
                    "watch ended early after {seen} events: {:?}",
                    other.map(|o| o.map(|r| r.map(|_| ())))
                );
                break;
            }
        }
    }
    writer.await.unwrap();
    let el = t.elapsed();
    println!(
        "watch: {seen} update events in {el:?} ({:.0} events/s, writers 32 in flight)",
        seen as f64 / el.as_secs_f64()
    );

    // Server-side apply of 1,000 objects, one at a time.
    let mut times = Vec::with_capacity(1000);
    let t = Instant::now();
    for i in 0..1000 {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("ssa-{i:04}"), "labels": {"app": "bench"}},
            "data": {"a": "1", "b": i.to_string()}});
        let s = Instant::now();
        cms.patch(
            &format!("ssa-{i:04}"),
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap();
        times.push(s.elapsed());
    }
    let total = t.elapsed();
    times.sort();
    println!(
        "server-side apply of 1,000 objects: total {total:?}, median {:?}, p99 {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
    let t = Instant::now();
    for i in 0..1000 {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("ssa-{i:04}"), "labels": {"app": "bench"}},
            "data": {"a": "2", "b": i.to_string()}});
        cms.patch(
            &format!("ssa-{i:04}"),
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap();
    }
    println!(
        "server-side re-apply (changed) of 1,000 objects: {:?}",
        t.elapsed()
    );
    println!("objects stored: {}", sim.object_count());
    println!(
        "RSS with the big sim and its client: {:.1} MiB (before: {:.1} MiB)",
        rss_mib(),
        rss0
    );
    sim.shutdown().await;
}
