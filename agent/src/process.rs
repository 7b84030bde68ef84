//! Child processes: `helm template` and the `exec` provider's commands go through here.
//!
//! - the argv is built explicitly; no shell ever parses it;
//! - stdout is kept whole, stderr's tail is kept for the error;
//! - every run has a timeout, after which the child is killed (never left behind);
//! - a run that exits non-zero is an error carrying the command, the exit status and the
//!   tail of stderr (cargo's `ProcessError`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::bounded;

/// Longest stderr tail kept in an error: enough for a tool's message, not a flood.
pub const STDERR_TAIL: usize = 4096;

/// One run of a program.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// The executable (a path, or a name looked up on `PATH`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Environment variables added to the agent's own.
    pub env: Vec<(OsString, OsString)>,
    /// Longest the run may take.
    pub timeout: Duration,
}

impl Invocation {
    /// `program` with no arguments, no extra environment and `timeout`.
    pub fn new(program: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            timeout,
        }
    }

    /// Adds arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds environment variables.
    #[must_use]
    pub fn envs<I, K, V>(mut self, env: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env
            .extend(env.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The command as people read it in messages: program and arguments.
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What a finished run printed.
#[derive(Clone, Debug)]
pub struct Output {
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: Vec<u8>,
    /// Everything it printed on stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// The tail of stderr as text (lossy), trimmed, cut to [`STDERR_TAIL`] bytes.
    pub fn stderr_tail(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let tail = bounded::tail(text.trim(), STDERR_TAIL);
        if tail.is_empty() {
            "(nothing on stderr)".into()
        } else {
            tail
        }
    }
}

/// Errors of running a child process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The executable could not be started (missing, not executable).
    #[error("failed to start `{command}`")]
    Spawn {
        /// The command.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It ran longer than its timeout and was killed.
    #[error("`{command}` did not finish within {} and was stopped", tidemark_schema::Duration(*timeout))]
    Timeout {
        /// The command.
        command: String,
        /// The timeout.
        timeout: Duration,
    },
    /// Reading its output or waiting for it failed.
    #[error("failed to read the output of `{command}`")]
    Io {
        /// The command.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It exited non-zero.
    #[error("`{command}` exited with {status}: {stderr}")]
    Exit {
        /// The command.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// The tail of what it printed on stderr.
        stderr: String,
    },
}

/// Runs `invocation` to completion and returns its output, whatever its exit status.
pub async fn run(invocation: &Invocation) -> Result<Output, Error> {
    let command = invocation.display();
    let mut child = tokio::process::Command::new(&invocation.program)
        .args(&invocation.args)
        .envs(invocation.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    let io_err = |source| Error::Io {
        command: command.clone(),
        source,
    };
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(io_err(std::io::Error::other(
            "no pipes to the child process",
        )));
    };
    let finish = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (a, b, status) = tokio::join!(
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        a.and(b).map_err(io_err)?;
        let status = status.map_err(io_err)?;
        Ok(Output {
            status,
            stdout: out,
            stderr: err,
        })
    };
    match tokio::time::timeout(invocation.timeout, finish).await {
        Ok(result) => result,
        // Dropping `finish` drops the child: kill_on_drop stops it.
        Err(_) => Err(Error::Timeout {
            command,
            timeout: invocation.timeout,
        }),
    }
}

/// Runs `invocation`; a non-zero exit is [`Error::Exit`].
pub async fn run_checked(invocation: &Invocation) -> Result<Output, Error> {
    let output = run(invocation).await?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Exit {
            command: invocation.display(),
            status: output.status,
            stderr: output.stderr_tail(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> Invocation {
        Invocation::new("sh", timeout).args(["-c", script])
    }

    #[tokio::test]
    async fn output_exit_status_and_stderr_tail() {
        let ok = run_checked(&sh("echo out; echo err >&2", Duration::from_secs(5))).await;
        let ok = ok.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.stdout, b"out\n");
        assert_eq!(ok.stderr_tail(), "err");

        let failed = run_checked(&sh("echo boom >&2; exit 3", Duration::from_secs(5))).await;
        let message = failed.err().map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some("`sh -c echo boom >&2; exit 3` exited with exit status: 3: boom")
        );

        let quiet = run_checked(&Invocation::new("false", Duration::from_secs(5))).await;
        assert_eq!(
            quiet.err().map(|e| e.to_string()).as_deref(),
            Some("`false` exited with exit status: 1: (nothing on stderr)")
        );
    }

    #[tokio::test]
    async fn environment_reaches_the_child() {
        let out = run_checked(
            &sh("printf %s \"$TIDEMARK_X\"", Duration::from_secs(5)).envs([("TIDEMARK_X", "42")]),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.stdout, b"42");
    }

    #[tokio::test]
    async fn a_missing_program_and_a_timeout_say_what_happened() {
        let missing = run(&Invocation::new(
            "/nonexistent/helm",
            Duration::from_secs(5),
        ))
        .await;
        let e = missing.err();
        assert!(matches!(e, Some(Error::Spawn { .. })), "{e:?}");
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("failed to start `/nonexistent/helm`")
        );

        let started = std::time::Instant::now();
        let slow = run(&sh("sleep 10", Duration::from_millis(300))).await;
        assert!(matches!(slow, Err(Error::Timeout { .. })), "{slow:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stopped, not waited for"
        );
    }

    #[tokio::test]
    async fn a_long_stderr_keeps_its_tail() {
        let out = run(&sh(
            "i=0; while [ $i -lt 2000 ]; do printf 'é0123'; i=$((i+1)); done; echo END >&2",
            Duration::from_secs(5),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.stderr_tail(), "END");
        let noisy = run(&sh(
            "i=0; while [ $i -lt 2000 ]; do printf 'é0123' >&2; i=$((i+1)); done; echo END >&2",
            Duration::from_secs(5),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let tail = noisy.stderr_tail();
        assert!(
            tail.starts_with("[...] ") && tail.ends_with("END"),
            "{tail}"
        );
        assert!(tail.len() <= STDERR_TAIL + 6);
    }
}
