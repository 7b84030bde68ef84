//! The runner owns time: when passes run, and whether this replica may run them.
//!
//! - Triggers: the poll interval (with jitter, so a fleet started together does not poll
//!   in lockstep), a change of a fleet repo given as a local path (`notify`), and backoff
//!   with jitter after failed passes (`backon`).
//! - The Lease: passes run only while this replica leads; renewal runs in its own task
//!   ([`lease::Keeper`]) and a pass is abandoned the moment the claim is lost.
//! - Stopping: SIGTERM or Ctrl-C abandons the current step and releases the Lease.
//! - The clock: passes see `now` plus an offset (zero, except in the demo, which moves a
//!   cluster's clock into its maintenance window).
//!
//! `pass::run` owns none of this, so a pass can be tested on its own.

pub mod admin;
pub mod lease;
pub mod metrics;
mod triggers;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use crate::pass::{self, Ctx, PassReport};
use crate::plan::Phase;
use admin::AdminState;
use lease::{Keeper, LeaseConfig, Standing};
use metrics::Metrics;

pub use triggers::{jittered, watch_local_repo};

/// How the runner runs passes.
#[derive(Clone, Debug)]
pub struct Config {
    /// Time between passes (before jitter).
    pub interval: Duration,
    /// The Lease that elects the active replica.
    pub lease: LeaseConfig,
    /// Added to the wall clock for every pass (the demo's maintenance-window fast-forward).
    pub clock_offset: SignedDuration,
}

impl Config {
    /// The time a pass sees.
    pub fn now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.clock_offset)
            .unwrap_or_else(|_| Timestamp::now())
    }
}

/// Longest wait after repeated failures (before jitter).
const MAX_BACKOFF: Duration = Duration::from_secs(150);

/// The backoff after failed passes: from one second, doubling, at most [`MAX_BACKOFF`],
/// each with up to as much again of jitter.
fn backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(MAX_BACKOFF)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// A watch channel that turns true on SIGTERM or Ctrl-C.
pub fn stop_on_signal() -> std::io::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// What the long-running loop reports to its admin server, if it has one.
pub struct Observers<'a> {
    /// Pass and Lease metrics.
    pub metrics: Option<&'a Metrics>,
    /// Readiness.
    pub admin: Option<&'a AdminState>,
    /// Called after every pass (the demo's board).
    pub on_pass: Option<&'a (dyn Fn(&PassReport) + Send + Sync)>,
}

/// Runs passes while this replica leads, until `stop` turns true; then releases the Lease.
/// `trigger` (a changed local fleet repo) runs the next pass at once.
pub async fn run(
    ctx: &Ctx,
    config: &Config,
    observers: Observers<'_>,
    trigger: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut keeper = Keeper::spawn(ctx.client.clone(), config.lease.clone());
    let mut failures = backoff();
    let mark_ready = || {
        if let Some(admin) = observers.admin {
            admin.ready.store(true, Ordering::SeqCst);
        }
    };
    'run: while !*stop.borrow() {
        // Stand by until this replica leads.
        let standing = keeper.settled().await;
        if let Some(m) = observers.metrics {
            m.set_leading(standing == Standing::Leading);
        }
        mark_ready();
        if standing != Standing::Leading {
            tokio::select! {
                _ = keeper.leading() => continue 'run,
                _ = stop.changed() => break 'run,
            }
        }
        let started = Instant::now();
        let report = tokio::select! {
            report = pass::run(ctx, config.now()) => report,
            _ = keeper.lost() => {
                tracing::warn!("lost the Lease during a pass; the pass was abandoned");
                continue 'run;
            }
            _ = stop.changed() => break 'run,
        };
        if let Some(m) = observers.metrics {
            m.record_pass(&report, started.elapsed().as_secs_f64());
        }
        if let Some(on_pass) = observers.on_pass {
            on_pass(&report);
        }
        let wait = if report.phase == Phase::Failed {
            failures.next().unwrap_or(MAX_BACKOFF)
        } else {
            failures = backoff();
            jittered(config.interval, fastrand::f64())
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = trigger.notified() => tracing::debug!("the local fleet repo changed: pass now"),
            _ = keeper.lost() => {}
            _ = stop.changed() => break 'run,
        }
    }
    keeper.release().await;
}

/// Runs one pass if this replica can take the Lease (renewed while the pass runs), then
/// releases it. `None` when another replica holds it (its identity).
pub async fn run_once(ctx: &Ctx, config: &Config) -> Result<PassReport, String> {
    let mut keeper = Keeper::spawn(ctx.client.clone(), config.lease.clone());
    let outcome = match keeper.settled().await {
        Standing::Leading => {
            tokio::select! {
                report = pass::run(ctx, config.now()) => Ok(report),
                _ = keeper.lost() => Err("lost the Lease during the pass; the pass was abandoned".to_string()),
            }
        }
        Standing::Standby(other) => Err(format!(
            "another replica ({other}) holds the Lease {}/{}",
            config.lease.namespace, config.lease.name
        )),
        Standing::Unknown => Err("the Lease keeper stopped".to_string()),
    };
    keeper.release().await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The futures the runner spawns or races must be `Send` (checked at compile time: a
    /// closure-made future inside them would not be, see rust-lang/rust#64552).
    #[allow(dead_code)]
    fn futures_are_send(ctx: &'static Ctx, config: &'static Config) {
        fn is_send<T: Send>(_: T) {}
        is_send(pass::run(ctx, config.now()));
        is_send(run_once(ctx, config));
        let (_, stop) = watch::channel(false);
        let observers = Observers {
            metrics: None,
            admin: None,
            on_pass: None,
        };
        is_send(run(ctx, config, observers, Arc::default(), stop));
    }
}
