//! `tidemark agent`: passes on an interval (or one with `--once`), backoff with jitter
//! after failures, clean exit on SIGTERM or Ctrl-C between passes.

use std::process::ExitCode;
use std::time::Duration as StdDuration;

use anyhow::Context;
use tidemark_schema::{Duration, LabelSelector};

use crate::cli::{AgentArgs, DesiredArgs, PlanArgs};
use crate::config::source_config;
use crate::pass::{self, Ctx};
use crate::plan::Phase;
use crate::source::GitCache;

/// Longest wait after repeated failures.
const MAX_BACKOFF: StdDuration = StdDuration::from_secs(300);

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let AgentArgs {
        plan:
            PlanArgs {
                desired:
                    DesiredArgs {
                        repo,
                        selector,
                        branch,
                        git,
                    },
                kubeconfig,
                status_namespace,
            },
        interval,
        once,
    } = args;
    let selector: LabelSelector = selector.parse().context("--selector")?;
    let interval: Duration = interval.parse().context("--interval")?;
    let config = source_config(&repo, branch.clone(), &git)?;
    let cache = GitCache::open(&config)?;
    super::runtime()?.block_on(async move {
        let client = crate::k8s::client(kubeconfig.as_deref()).await?;
        let ctx = Ctx {
            cache,
            branch,
            selector,
            client,
            status_namespace,
            kubeconfig,
        };
        if once {
            let report = pass::run(&ctx, jiff::Timestamp::now()).await;
            println!("phase: {}\nmessage: {}", report.phase, report.message);
            for step in &report.executed {
                println!("executed: {step}");
            }
            return anyhow::Ok(ExitCode::SUCCESS);
        }
        let mut failures: u32 = 0;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("failed to listen for SIGTERM")?;
        loop {
            let report = pass::run(&ctx, jiff::Timestamp::now()).await;
            failures = if report.phase == Phase::Failed {
                failures.saturating_add(1)
            } else {
                0
            };
            let wait = next_wait(interval.as_std(), failures);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            }
        }
        tracing::info!("stopping");
        anyhow::Ok(ExitCode::SUCCESS)
    })
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
