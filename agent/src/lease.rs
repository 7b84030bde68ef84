//! One active agent per cluster: a `coordination.k8s.io/v1` Lease in the status namespace.
//! Passes run only while this replica holds it; the holder renews it, a replica takes it
//! over once it has expired, and a replica that stops releases it.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// Who we are and which Lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// This replica's identity (pod name, or host and pid).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub duration: std::time::Duration,
}

/// Who holds the Lease after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// This replica.
    Us,
    /// Another replica (its identity), whose Lease has not expired.
    Other(String),
}

/// Takes the Lease if it is free or expired, renews it if it is ours.
/// A conflicting write (another replica was faster) reports the Lease as held by it.
pub async fn acquire(client: &kube::Client, cfg: &LeaseConfig) -> Result<Holder, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let now = Timestamp::now();
    let seconds = i32::try_from(cfg.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Holder::Us),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Holder::Other("(just taken)".into())),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let expired = spec.renew_time.as_ref().is_none_or(|t| {
        let valid = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
        now.as_second() - t.0.as_second() > valid
    });
    match holder {
        Some(h) if h == cfg.identity => {}
        Some(h) if !expired => return Ok(Holder::Other(h)),
        _ => {
            spec.holder_identity = Some(cfg.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(seconds);
    // `replace` carries the resourceVersion we read: a concurrent writer makes it a 409.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(Holder::Us),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Holder::Other("(just taken)".into())),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if we hold it, so another replica can take over at once.
pub async fn release(client: &kube::Client, cfg: &LeaseConfig) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// This replica's default identity: `POD_NAME`, else `HOSTNAME`, plus the process id.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "tidemark".into());
    format!("{host}-{}", std::process::id())
}
