//! `tidemark agent`: passes on an interval (or one with `--once`) while this replica holds
//! the leader-election Lease, backoff with jitter after failures, and a clean stop on
//! SIGTERM or Ctrl-C (the current step is abandoned, the Lease released).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration as StdDuration, Instant};

use anyhow::Context;
use tidemark_schema::Duration;
use tokio::sync::watch;

use crate::cli::{AgentArgs, PlanArgs};
use crate::config::fleet_source;
use crate::lease::{self, Holder, LeaseConfig};
use crate::pass::{self, Ctx};
use crate::plan::Phase;
use crate::server::{self, Health, Metrics};

/// Longest wait after repeated failures.
const MAX_BACKOFF: StdDuration = StdDuration::from_secs(300);
/// Name of the leader-election Lease.
const LEASE_NAME: &str = "tidemark";

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let AgentArgs {
        plan:
            PlanArgs {
                desired: source,
                kubeconfig,
                status_namespace,
                components,
            },
        interval,
        once,
        identity,
        lease_duration,
        metrics_addr,
    } = args;
    let (cache, selector, allowed_signers) = fleet_source(&source)?;
    let branch = source.branch;
    let repo = source.repo;
    let interval: Duration = interval.parse().context("--interval")?;
    let lease_duration: Duration = lease_duration.parse().context("--lease-duration")?;
    let components = crate::component::Runner::new(components.settings()?);
    super::runtime()?.block_on(async move {
        let client = crate::k8s::client(kubeconfig.as_deref()).await?;
        let lease_cfg = LeaseConfig {
            namespace: status_namespace.clone(),
            name: LEASE_NAME.into(),
            identity: identity.unwrap_or_else(lease::default_identity),
            duration: lease_duration.as_std(),
        };
        let ctx = Ctx {
            cache,
            branch,
            selector,
            allowed_signers,
            client: client.clone(),
            status_namespace,
            kubeconfig,
            components,
        };
        if once {
            return run_once(&ctx, &lease_cfg).await;
        }
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let health = Arc::new(Health {
            registry,
            ready: AtomicBool::new(false),
        });
        let bound = server::serve(metrics_addr, health.clone())
            .await
            .with_context(|| format!("failed to serve health and metrics on {metrics_addr}"))?;
        tracing::info!(addr = %bound, "serving /healthz, /readyz and /metrics");
        // A fleet repo on this machine triggers a pass as soon as its refs change.
        let trigger = Arc::new(tokio::sync::Notify::new());
        let _watcher = watch_local_repo(&repo, trigger.clone());
        run_loop(
            &ctx,
            &lease_cfg,
            interval.as_std(),
            &metrics,
            &health,
            &trigger,
        )
        .await
    })
}

async fn run_once(ctx: &Ctx, lease_cfg: &LeaseConfig) -> anyhow::Result<ExitCode> {
    let holder = lease::acquire(&ctx.client, lease_cfg)
        .await
        .context("failed to acquire the leader-election Lease")?;
    if let Holder::Other(other) = holder {
        println!(
            "phase: Waiting\nmessage: another replica ({other}) holds the Lease {}/{LEASE_NAME}",
            lease_cfg.namespace
        );
        return Ok(ExitCode::SUCCESS);
    }
    let report = pass::run(ctx, jiff::Timestamp::now()).await;
    if let Err(e) = lease::release(&ctx.client, lease_cfg).await {
        tracing::warn!(error = %e, "failed to release the Lease");
    }
    println!("phase: {}\nmessage: {}", report.phase, report.message);
    for step in &report.executed {
        println!("executed: {step}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_loop(
    ctx: &Ctx,
    lease_cfg: &LeaseConfig,
    interval: StdDuration,
    metrics: &Metrics,
    health: &Health,
    trigger: &tokio::sync::Notify,
) -> anyhow::Result<ExitCode> {
    let (stop_tx, mut stop) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to listen for SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = stop_tx.send(true);
    });
    let renew_every = (lease_cfg.duration / 3).max(StdDuration::from_millis(200));
    let mut failures: u32 = 0;
    let mut leading = false;
    while !*stop.borrow() {
        let holder = match lease::acquire(&ctx.client, lease_cfg).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "failed to acquire or renew the Lease");
                Holder::Other("(unknown: the API server did not answer)".into())
            }
        };
        let next_pass = match holder {
            Holder::Other(other) => {
                if leading {
                    tracing::warn!(%other, "lost the Lease");
                }
                leading = false;
                tracing::debug!(%other, "standing by: another replica holds the Lease");
                renew_every
            }
            Holder::Us => {
                if !leading {
                    tracing::info!(identity = %lease_cfg.identity, "acquired the Lease: this replica is active");
                }
                leading = true;
                // The pass runs while the Lease is renewed beside it; losing the Lease or a
                // stop signal abandons the pass (an exec command in flight is killed).
                let renew = async {
                    loop {
                        tokio::time::sleep(renew_every).await;
                        if !matches!(lease::acquire(&ctx.client, lease_cfg).await, Ok(Holder::Us)) {
                            return;
                        }
                    }
                };
                let mut stop_now = stop.clone();
                let started = Instant::now();
                tokio::select! {
                    report = pass::run(ctx, jiff::Timestamp::now()) => {
                        metrics.record_pass(report.phase, started.elapsed().as_secs_f64(), report.executed.len());
                        failures = if report.phase == Phase::Failed { failures.saturating_add(1) } else { 0 };
                        next_wait(interval, failures)
                    }
                    _ = renew => {
                        tracing::warn!("lost the Lease during a pass; the pass was abandoned");
                        leading = false;
                        renew_every
                    }
                    _ = stop_now.changed() => break,
                }
            }
        };
        metrics.leader.set(i64::from(leading));
        health.ready.store(true, Ordering::SeqCst);
        // Wait for the next pass, renewing the Lease meanwhile if we hold it.
        let deadline = Instant::now() + next_pass;
        while Instant::now() < deadline {
            let nap = deadline
                .saturating_duration_since(Instant::now())
                .min(renew_every);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = stop.changed() => break,
                _ = trigger.notified() => {
                    tracing::debug!("the local fleet repo changed: pass now");
                    break;
                }
            }
            if leading
                && Instant::now() < deadline
                && !matches!(lease::acquire(&ctx.client, lease_cfg).await, Ok(Holder::Us))
            {
                leading = false;
                break;
            }
        }
    }
    tracing::info!("stopping");
    if let Err(e) = lease::release(&ctx.client, lease_cfg).await {
        tracing::warn!(error = %e, "failed to release the Lease");
    }
    Ok(ExitCode::SUCCESS)
}

/// Watches the git directory of a fleet repo given as a local path (a commit or a moved
/// tag changes its refs) and wakes the loop. Remote URLs are polled only. The watcher
/// stops when the returned value is dropped.
fn watch_local_repo(
    repo: &str,
    trigger: Arc<tokio::sync::Notify>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let path = std::path::Path::new(repo.strip_prefix("file://").unwrap_or(repo));
    if !path.is_dir() {
        return None;
    }
    let git_dir = if path.join(".git").is_dir() {
        path.join(".git")
    } else {
        path.to_path_buf()
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Object writes alone do not change what the agent follows; ref updates do. Reads
        // are events too (inotify reports opens): every pass reads the refs of this very
        // repository, so only a change may trigger, or each pass would trigger the next.
        let relevant = event.is_ok_and(|e| {
            matches!(
                e.kind,
                notify::EventKind::Create(_)
                    | notify::EventKind::Modify(_)
                    | notify::EventKind::Remove(_)
            ) && e.paths.iter().any(|p| {
                let p = p.to_string_lossy();
                p.contains("/refs/") || p.ends_with("packed-refs") || p.ends_with("HEAD")
            })
        });
        if relevant {
            trigger.notify_one();
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the local fleet repo; polling only"))
    .ok()?;
    if let Err(e) = watcher.watch(&git_dir, notify::RecursiveMode::Recursive) {
        tracing::warn!(error = %e, path = %git_dir.display(), "cannot watch the local fleet repo; polling only");
        return None;
    }
    tracing::info!(path = %git_dir.display(), "watching the local fleet repo for changes");
    Some(watcher)
}

/// The interval, or after `failures` failed passes in a row an exponential backoff from
/// one second with ±20% jitter, capped at five minutes (and never above the interval
/// plus the cap).
fn next_wait(interval: StdDuration, failures: u32) -> StdDuration {
    if failures == 0 {
        return interval;
    }
    let base = StdDuration::from_secs(1u64 << failures.min(9)).min(MAX_BACKOFF);
    // Jitter from the clock's nanoseconds: enough to spread a fleet restarting together.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.8 + f64::from(nanos % 400) / 1000.0;
    base.mul_f64(factor)
        .min(interval.max(StdDuration::from_secs(1)) + MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let i = StdDuration::from_secs(30);
        assert_eq!(next_wait(i, 0), i);
        let w1 = next_wait(i, 1);
        assert!(
            w1 >= StdDuration::from_millis(1600) && w1 <= StdDuration::from_millis(2400),
            "{w1:?}"
        );
        let w20 = next_wait(i, 20);
        assert!(w20 <= MAX_BACKOFF + i, "{w20:?}");
        assert!(w20 >= MAX_BACKOFF.mul_f64(0.8), "{w20:?}");
    }
}
