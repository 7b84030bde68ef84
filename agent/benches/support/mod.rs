//! What the bench binaries share: committing a generated fleet repo with git, and reading
//! a process's memory and CPU from `/proc`. Errors are `io::Error`, which each bench's own
//! error type takes with `?`.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

/// Makes `repo` (a directory holding a generated fleet) a git repository on `main` with
/// one commit of everything, and an annotated tag `wave/<w>` on it for each of `waves`.
pub fn commit_fleet(repo: &Path, waves: &[&str]) -> io::Result<()> {
    let git = |args: &[&str]| -> io::Result<()> {
        let ok = Command::new("git")
            .args([
                "-c",
                "user.email=b@b",
                "-c",
                "user.name=bench",
                "-c",
                "tag.gpgSign=false",
                "-c",
                "commit.gpgSign=false",
            ])
            .args(args)
            .current_dir(repo)
            .stdout(Stdio::null())
            .status()?
            .success();
        if ok {
            Ok(())
        } else {
            Err(io::Error::other(format!("git {args:?} failed")))
        }
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "fleet"])?;
    for w in waves {
        git(&["tag", "-a", &format!("wave/{w}"), "-m", w])?;
    }
    Ok(())
}

/// A `kB` line of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in KiB.
#[allow(dead_code)] // not every bench reads memory
pub fn status_kib(pid: u32, key: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .ok_or_else(|| io::Error::other(format!("no {key} in /proc/{pid}/status")))?;
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad line {line:?}")))
}

/// Field `n` of `/proc/PID/stat`, counted as in proc(5) from 1 (`pid`): 14 `utime`,
/// 15 `stime`, 16 `cutime`, 17 `cstime` (clock ticks of 100 Hz, Linux's USER_HZ).
#[allow(dead_code)] // not every bench reads CPU
pub fn stat_field(pid: u32, n: usize) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from the `)` that ends it.
    let after = text
        .rsplit_once(')')
        .ok_or_else(|| io::Error::other("bad /proc stat"))?
        .1;
    after
        .split_whitespace()
        .nth(n.saturating_sub(3))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no field {n} in /proc/{pid}/stat")))
}
