//! What starts a pass besides the runner's own clock: a fleet repo on this machine whose
//! refs change, and the jitter that keeps a fleet's polls apart.

use std::sync::Arc;
use std::time::Duration;

/// How far a poll interval is spread: ±10%.
const JITTER: f64 = 0.1;

/// `interval` spread by ±10% according to `sample` (uniform in `[0, 1)`), so a fleet of
/// agents started together does not poll the git server in lockstep.
pub fn jittered(interval: Duration, sample: f64) -> Duration {
    let factor = 1.0 - JITTER + 2.0 * JITTER * sample.clamp(0.0, 1.0);
    interval.mul_f64(factor)
}

/// Watches the git directory of a fleet repo given as a local path (a commit or a moved
/// tag changes its refs) and wakes `trigger`. Remote URLs are polled only. The watcher
/// stops when the returned value is dropped.
pub fn watch_local_repo(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_spread_by_a_tenth_either_way() {
        let i = Duration::from_secs(30);
        assert_eq!(jittered(i, 0.0), Duration::from_secs(27));
        assert_eq!(jittered(i, 0.5), Duration::from_secs(30));
        assert!(jittered(i, 0.999_999) <= Duration::from_secs(33));
        assert!(jittered(i, 0.999_999) > Duration::from_millis(32_999));
        // Out-of-range samples are clamped, never negative or beyond the spread.
        assert_eq!(jittered(i, -3.0), Duration::from_secs(27));
        assert_eq!(jittered(i, 7.0), Duration::from_secs(33));
    }

    #[test]
    fn failures_back_off_exponentially_with_jitter_and_a_cap() {
        let mut b = super::super::backoff();
        let first = b.next().unwrap_or_default();
        assert!(
            first >= Duration::from_secs(1) && first < Duration::from_secs(2),
            "{first:?}"
        );
        let second = b.next().unwrap_or_default();
        assert!(
            second >= Duration::from_secs(2) && second < Duration::from_secs(4),
            "{second:?}"
        );
        let late = (0..30).filter_map(|_| b.next()).last().unwrap_or_default();
        assert!(
            late >= super::super::MAX_BACKOFF && late < 2 * super::super::MAX_BACKOFF,
            "{late:?}"
        );
    }
}
