//! One active agent per cluster: a `coordination.k8s.io/v1` Lease in the status namespace.
//! Passes run only while this replica holds it; the holder renews it, a replica takes it
//! over once it has expired, and a replica that stops releases it.
//!
//! Renewal runs in its own task ([`Keeper`]), never beside a pass on the same task: a pass
//! that waits (git, helm, a slow API server) must not let the Lease expire while this
//! replica keeps acting. A replica that cannot renew within its renew deadline (two thirds
//! of the Lease duration, as client-go's leader election) stops acting before another can
//! take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

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
    let create = PostParams {
        field_manager: Some(crate::keys::FIELD_MANAGER.into()),
        ..PostParams::default()
    };
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
        return match api.create(&create, &lease).await {
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
    match api.replace(&cfg.name, &create, &lease).await {
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
    let params = PostParams {
        field_manager: Some(crate::keys::FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.replace(&cfg.name, &params, &lease).await {
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

/// Who holds the Lease when this replica could not renew it in time.
const SLOW: &str = "(unknown: the API server did not answer in time)";

/// Sleeps until `at`, or forever.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether this replica may act, as the keeper last established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Not known yet (the first attempt has not answered).
    Unknown,
    /// This replica holds the Lease.
    Leading,
    /// Another replica holds it (its identity), or it could not be renewed in time.
    Standby(String),
}

/// Keeps the Lease in a task of its own: acquires it, renews it every third of its
/// duration, publishes this replica's [`Standing`], and releases it when stopped.
///
/// The renew deadline (two thirds of the duration) counts from the start of the last
/// successful renewal, the `renewTime` it wrote and other replicas count from, never from
/// its answer; an attempt is given up after the renew deadline, and the standing turns to
/// standby the moment the deadline passes, even while an attempt is still waiting.
pub struct Keeper {
    standing: watch::Receiver<Standing>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Keeper {
    /// Starts keeping the Lease of `cfg`.
    pub fn spawn(client: kube::Client, cfg: LeaseConfig) -> Self {
        let (tx, standing) = watch::channel(Standing::Unknown);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let renew_every = (cfg.duration / 3).max(Duration::from_millis(200));
            let renew_deadline = cfg.duration.mul_f64(2.0 / 3.0);
            // When the last successful attempt began: the renewTime it wrote, from which
            // another replica counts the Lease's duration.
            let mut last_renewal: Option<tokio::time::Instant> = None;
            loop {
                let began = tokio::time::Instant::now();
                // An attempt that does not answer within the renew deadline is given up (a
                // slow or silent API server must not keep it, and the standing, pending).
                let attempt = tokio::time::timeout(renew_deadline, acquire(&client, &cfg));
                tokio::pin!(attempt);
                // Still ours while the last renewal is within its renew deadline; past it,
                // another replica may take over soon: stop acting, even mid-attempt.
                let expiry = last_renewal.map(|at| at + renew_deadline);
                let outcome = loop {
                    tokio::select! {
                        outcome = &mut attempt => break outcome,
                        _ = sleep_until_opt(expiry), if *tx.borrow() == Standing::Leading => {
                            tracing::warn!(
                                deadline = ?renew_deadline,
                                "failed to renew the Lease within its renew deadline: standing by until the API server answers"
                            );
                            tx.send_replace(Standing::Standby(SLOW.into()));
                        }
                    }
                };
                let next = match outcome {
                    Ok(Ok(Holder::Us)) => {
                        last_renewal = Some(began);
                        Standing::Leading
                    }
                    Ok(Ok(Holder::Other(other))) => {
                        last_renewal = None;
                        Standing::Standby(other)
                    }
                    failed => {
                        match failed {
                            Ok(Err(e)) => {
                                tracing::warn!(error = %crate::status::describe(&e), "failed to acquire or renew the Lease")
                            }
                            _ => tracing::warn!(
                                timeout = ?renew_deadline,
                                "failed to acquire or renew the Lease: the API server did not answer in time"
                            ),
                        }
                        // Still ours until the renew deadline passes; then another replica
                        // may take it over, so this one must stop acting.
                        match last_renewal {
                            Some(at) if at.elapsed() < renew_deadline => Standing::Leading,
                            _ => Standing::Standby(SLOW.into()),
                        }
                    }
                };
                let before = tx.borrow().clone();
                if before != next {
                    match &next {
                        Standing::Leading => {
                            tracing::info!(identity = %cfg.identity, "acquired the Lease: this replica is active")
                        }
                        Standing::Standby(other) if before == Standing::Leading => {
                            tracing::warn!(%other, "lost the Lease")
                        }
                        Standing::Standby(other) => {
                            tracing::debug!(%other, "standing by: another replica holds the Lease")
                        }
                        Standing::Unknown => {}
                    }
                }
                tx.send_replace(next);
                // Every third of the duration from the start of the last attempt: a slow
                // answer does not push the next renewal later.
                tokio::select! {
                    _ = tokio::time::sleep_until(began + renew_every) => {}
                    _ = stopped.changed() => break,
                }
            }
            tx.send_replace(Standing::Standby("(stopped)".into()));
            if let Err(e) = release(&client, &cfg).await {
                tracing::warn!(error = %crate::status::describe(&e), "failed to release the Lease");
            }
        });
        Self {
            standing,
            stop,
            task,
        }
    }

    /// Waits until the first attempt has answered, and returns the standing.
    pub async fn settled(&mut self) -> Standing {
        match self.standing.wait_for(|s| *s != Standing::Unknown).await {
            Ok(s) => s.clone(),
            Err(_) => Standing::Standby("(the Lease keeper stopped)".into()),
        }
    }

    /// Waits until this replica leads.
    pub async fn leading(&mut self) {
        let _ = self.standing.wait_for(|s| *s == Standing::Leading).await;
    }

    /// Resolves when this replica stops leading (or the keeper stops).
    pub async fn lost(&mut self) {
        let _ = self.standing.wait_for(|s| *s != Standing::Leading).await;
    }

    /// Stops renewing and releases the Lease (if held).
    pub async fn release(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use http_body_util::BodyExt;
    use kube::client::Body;

    /// An API server that grants the Lease (a GET answered 404, the create answered), then
    /// never answers again, as a hung or very slow one: the keeper must stand by once the
    /// renew deadline of its last renewal has passed, not whenever an answer comes.
    #[tokio::test]
    async fn a_renewal_that_gets_no_answer_stands_by_at_the_renew_deadline() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            let mut held = Vec::new();
            let mut n = 0;
            while let Some((request, respond)) = handle.next_request().await {
                n += 1;
                let bytes = request
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let (code, answer) = match n {
                    1 => (
                        404,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "reason": "NotFound", "code": 404}),
                    ),
                    2 => (
                        201,
                        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                    ),
                    _ => {
                        held.push(respond);
                        continue;
                    }
                };
                let response = Response::builder()
                    .status(code)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(answer.to_string().into_bytes()));
                if let Ok(r) = response {
                    respond.send_response(r);
                }
            }
        });
        let client = kube::Client::new(service, "default");
        let cfg = LeaseConfig {
            namespace: "tidemark-system".into(),
            name: "tidemark".into(),
            identity: "me".into(),
            duration: Duration::from_millis(900),
        };
        let mut keeper = Keeper::spawn(client, cfg);
        assert_eq!(keeper.settled().await, Standing::Leading);
        let led = tokio::time::Instant::now();
        // Renewals start every 300 ms and get no answer; the renew deadline is 600 ms
        // after the renewal that was answered began.
        let lost = tokio::time::timeout(Duration::from_secs(5), keeper.lost()).await;
        assert!(lost.is_ok(), "still leading with no answer for 5 s");
        let after = led.elapsed();
        assert!(
            after <= Duration::from_millis(700),
            "stood by {after:?} after leading, past the 600 ms renew deadline"
        );
        let standing = keeper.standing.borrow().clone();
        assert_eq!(standing, Standing::Standby(SLOW.into()));
        drop(keeper);
    }
}
