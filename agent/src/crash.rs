//! Crash points for tests: `TIDEMARK_CRASH_AT=POINT` (or `POINT@N`, the N-th time it is
//! reached, counting from 1) makes the process abort right there, as `kill -9` would stop
//! it: no destructor runs, nothing is flushed or released. The kill -9 tests
//! (`tests/tests/crash.rs`) run the real binary through every point of a rollout.
//!
//! Only builds with the `sim` feature (tests, the demo) read the variable; the agent built
//! for clusters (`--no-default-features`) compiles every point to nothing.
//!
//! Points: `rendered` (helm answered, nothing applied), `object-applied` (after each
//! object of a component), `object-pruned` (after each deletion), `drift-corrected` (after
//! each corrected object), `provider-requested` (a control-plane or node-group request
//! made, not yet recorded), `status-write` (the pass done, its status not yet written),
//! `status-written` (written, its Events not yet published).

/// Aborts the process if `TIDEMARK_CRASH_AT` names this point (and this occurrence).
#[cfg(feature = "sim")]
pub fn point(name: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static WANTED: OnceLock<Option<(String, u32)>> = OnceLock::new();
    static SEEN: AtomicU32 = AtomicU32::new(0);
    let wanted = WANTED.get_or_init(|| {
        let spec = std::env::var("TIDEMARK_CRASH_AT").ok()?;
        Some(match spec.split_once('@') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (spec, 1),
        })
    });
    if let Some((point, nth)) = wanted
        && point == name
        && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *nth
    {
        eprintln!("crash point {name}@{nth} reached: aborting");
        std::process::abort();
    }
}

/// Crash points are compiled out of the agent built for clusters.
#[cfg(not(feature = "sim"))]
#[inline(always)]
pub fn point(_name: &str) {}
