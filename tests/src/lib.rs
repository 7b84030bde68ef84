//! Harness of the end-to-end tests: real git repositories made with the `git` CLI, served
//! by `git daemon` on 127.0.0.1, and the real `tidemark` binary run as a process.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod charts;

/// Path of the `tidemark` binary: `TIDEMARK_BIN`, else `target/<profile>/tidemark` next to
/// this test executable (`target/<profile>/deps/e2e-...`).
pub fn tidemark_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TIDEMARK_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no parent")?;
    let bin = profile_dir.join("tidemark");
    if !bin.is_file() {
        bail!(
            "{} not found: build it first (`cargo build --bin tidemark`) or set TIDEMARK_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Root of the workspace (for `fleet-repo-example/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The result of running the binary.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `tidemark ARGS` with a timeout of 60 s.
pub fn tidemark(args: &[&str]) -> Result<Run> {
    tidemark_in(args, None, &[])
}

/// Runs `tidemark ARGS` in `dir` with extra environment.
pub fn tidemark_in(args: &[&str], dir: Option<&Path>, env: &[(&str, &str)]) -> Result<Run> {
    let mut cmd = Command::new(tidemark_bin()?);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.env_remove("TIDEMARK_LOG").env("NO_COLOR", "1");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = wait_with_timeout(cmd.spawn()?, Duration::from_secs(60))?;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> Result<Output> {
    let start = Instant::now();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    // Drain pipes on threads so a chatty child cannot block on a full pipe.
    let out_t = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err_t = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    loop {
        if let Some(status) = child.try_wait()? {
            let stdout = out_t.join().unwrap_or_default();
            let stderr = err_t.join().unwrap_or_default();
            return Ok(Output {
                status,
                stdout,
                stderr,
            });
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            bail!("process did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tidemark sim` running as a process, with its kubeconfig.
pub struct SimProcess {
    child: Child,
    dir: tempfile::TempDir,
}

impl SimProcess {
    /// Starts `tidemark sim --kubeconfig DIR/kubeconfig ARGS` and waits for its ready line.
    pub fn start(args: &[&str]) -> Result<Self> {
        Self::start_with(args, false)
    }

    /// Starts `tidemark sim` with a management sim holding the cluster's Cluster API objects
    /// (`--management-kubeconfig DIR/management.kubeconfig`): [`SimProcess::kubectl`] talks
    /// to the workload cluster, [`SimProcess::kubectl_management`] to the management one.
    pub fn start_managed(args: &[&str]) -> Result<Self> {
        Self::start_with(args, true)
    }

    fn start_with(args: &[&str], managed: bool) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let mut cmd = Command::new(tidemark_bin()?);
        cmd.arg("sim").arg("--kubeconfig").arg(&kubeconfig);
        if managed {
            cmd.arg("--management-kubeconfig")
                .arg(dir.path().join("management.kubeconfig"));
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdout = child.stdout.take().context("no stdout")?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte)? == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&line).to_string();
        if !text.starts_with("sim ready: https://127.0.0.1:") {
            let _ = child.kill();
            bail!("tidemark sim did not start: {text:?}");
        }
        Ok(Self { child, dir })
    }

    /// Path of the management sim's kubeconfig ([`SimProcess::start_managed`]).
    pub fn management_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("management.kubeconfig")
    }

    /// Runs the real `kubectl` against the management sim.
    pub fn kubectl_management(&self, args: &[&str]) -> Result<String> {
        kubectl_with(&self.management_kubeconfig(), args)
    }

    /// The sim's request counters so far, `"VERB RESOURCE"` -> count (`requestsByResource`
    /// of `tidemark sim ctl state`; a key never seen is absent).
    pub fn requests_by_resource(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let state = self.ctl_state(&self.kubeconfig())?;
        Ok(state["requestsByResource"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
            .collect())
    }

    /// `tidemark sim ctl state` through `kubeconfig` (the workload's or the management's),
    /// parsed.
    pub fn ctl_state(&self, kubeconfig: &Path) -> Result<serde_json::Value> {
        let out = Command::new(tidemark_bin()?)
            .args(["sim", "ctl", "--kubeconfig"])
            .arg(kubeconfig)
            .arg("state")
            .output()?;
        if !out.status.success() {
            bail!(
                "tidemark sim ctl state failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Path of its kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Writes a file next to the kubeconfig (for `kubectl apply -f`).
    pub fn dir_file(&self, name: &str, content: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content)?;
        Ok(path)
    }

    /// Runs the real `kubectl` against the sim; returns stdout (fails on a non-zero exit).
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        kubectl_with(&self.kubeconfig(), args)
    }
}

/// Runs the real `kubectl` with `kubeconfig`; returns stdout (fails on a non-zero exit).
pub fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A git work repository in a temp dir, changed with the real `git` CLI.
pub struct WorkRepo {
    dir: tempfile::TempDir,
}

impl WorkRepo {
    /// An empty repository on branch `main`.
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("fleet-").tempdir()?;
        let repo = Self { dir };
        repo.git(&["init", "-q", "-b", "main"])?;
        repo.git(&["config", "user.email", "ci@tidemark.test"])?;
        repo.git(&["config", "user.name", "tidemark ci"])?;
        repo.git(&["config", "tag.gpgSign", "false"])?;
        repo.git(&["config", "commit.gpgSign", "false"])?;
        Ok(repo)
    }

    /// A repository holding a copy of `src` (a directory) in its first commit.
    pub fn from_dir(src: &Path) -> Result<Self> {
        let repo = Self::new()?;
        copy_dir(src, repo.path())?;
        repo.commit("initial fleet")?;
        Ok(repo)
    }

    /// A repository with `fleet.yaml` (wave `canary`) and one cluster `a` in that wave at
    /// `version`, not yet committed.
    pub fn one_cluster(version: &str) -> Result<Self> {
        let repo = Self::new()?;
        repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
        repo.write(
            "clusters/a.yaml",
            &cluster_yaml("a", Some("canary"), version),
        )?;
        Ok(repo)
    }

    /// The work tree.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory a git server exports to serve this repository.
    pub fn base_dir(&self) -> PathBuf {
        self.path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The repository's name under [`Self::base_dir`] (the last part of its URL).
    pub fn name(&self) -> String {
        self.path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Runs `git ARGS` in the repository; returns trimmed stdout.
    pub fn git(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .output()?;
        if !out.status.success() {
            bail!(
                "git {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Writes a file (creating directories).
    pub fn write(&self, path: &str, content: &str) -> Result<()> {
        let p = self.path().join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, content)?;
        Ok(())
    }

    /// Reads a file of the work tree.
    pub fn read(&self, path: &str) -> Result<String> {
        Ok(std::fs::read_to_string(self.path().join(path))?)
    }

    /// Deletes a file.
    pub fn remove(&self, path: &str) -> Result<()> {
        std::fs::remove_file(self.path().join(path))?;
        Ok(())
    }

    /// Commits everything; returns the commit id.
    pub fn commit(&self, message: &str) -> Result<String> {
        self.git(&["add", "-A"])?;
        self.git(&["commit", "-q", "--allow-empty", "-m", message])?;
        self.git(&["rev-parse", "HEAD"])
    }

    /// Creates or force-moves an annotated tag to `rev`.
    pub fn tag_annotated(&self, tag: &str, rev: &str) -> Result<()> {
        self.git(&["tag", "-f", "-a", tag, "-m", tag, rev])
            .map(drop)
    }

    /// Creates or force-moves a lightweight tag to `rev`.
    pub fn tag_light(&self, tag: &str, rev: &str) -> Result<()> {
        self.git(&["tag", "-f", tag, rev]).map(drop)
    }

    /// Deletes a tag.
    pub fn delete_tag(&self, tag: &str) -> Result<()> {
        self.git(&["tag", "-d", tag]).map(drop)
    }

    /// Creates `count` lightweight tags `PREFIX0`, `PREFIX1`, ... at HEAD in one
    /// transaction and packs all refs, as a server holding many release tags or
    /// pull-request refs does.
    pub fn add_tags(&self, prefix: &str, count: usize) -> Result<()> {
        use std::io::Write;
        let head = self.git(&["rev-parse", "HEAD"])?;
        let mut child = Command::new("git")
            .args(["update-ref", "--stdin"])
            .current_dir(self.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        {
            let mut stdin = child.stdin.take().context("no stdin")?;
            for i in 0..count {
                writeln!(stdin, "create refs/tags/{prefix}{i} {head}")?;
            }
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "git update-ref failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.git(&["pack-refs", "--all"]).map(drop)
    }
}

/// Copies a directory tree (files and directories only).
pub fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// `git daemon` serving a directory of repositories on 127.0.0.1, logging every request.
pub struct GitDaemon {
    child: Child,
    port: u16,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl GitDaemon {
    /// Serves the repositories under `base` (`git://127.0.0.1:PORT/<dir name>`).
    pub fn start(base: &Path) -> Result<Self> {
        Self::start_with(base, false, false, None)
    }

    /// Like [`Self::start`], on `port` (a server that comes back where it was, after an
    /// outage: clients keep their URL).
    pub fn start_on(base: &Path, port: u16) -> Result<Self> {
        Self::start_with(base, false, false, Some(port))
    }

    /// Like [`Self::start`], and it accepts pushes (`git receive-pack`), as a hosted git
    /// server does for those allowed to write: promotions and agents' status refs.
    pub fn start_writable(base: &Path) -> Result<Self> {
        Self::start_with(base, false, true, None)
    }

    /// Like [`Self::start`], but its upload-pack speaks protocol v0 only, as a git server
    /// from before 2018 (or one that forbids v2) does: `git daemon` finds `git` on `PATH`,
    /// and a wrapper there drops the `GIT_PROTOCOL` the client asked for.
    pub fn start_v0(base: &Path) -> Result<Self> {
        Self::start_with(base, true, false, None)
    }

    fn start_with(
        base: &Path,
        v0_only: bool,
        writable: bool,
        fixed_port: Option<u16>,
    ) -> Result<Self> {
        let log_dir = tempfile::tempdir()?;
        let log = log_dir.path().join("daemon.log");
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        if v0_only {
            let git = run_ok(Command::new("sh").args(["-c", "command -v git"]))?;
            let wrapper_dir = log_dir.path().join("bin");
            std::fs::create_dir_all(&wrapper_dir)?;
            let wrapper = wrapper_dir.join("git");
            std::fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\nunset GIT_PROTOCOL\nexec {} \"$@\"\n",
                    git.trim()
                ),
            )?;
            run_ok(Command::new("chmod").arg("+x").arg(&wrapper))?;
            let mut joined = wrapper_dir.into_os_string();
            joined.push(":");
            joined.push(&path);
            path = joined;
        }
        // A fixed port may still be held for a moment by the previous daemon: try longer.
        let attempts = if fixed_port.is_some() { 50 } else { 5 };
        for _ in 0..attempts {
            let port = match fixed_port {
                Some(p) => p,
                None => free_port()?,
            };
            // Run git-daemon itself, not the `git` wrapper: killing the wrapper would
            // leave the daemon running.
            let child = Command::new(git_daemon_path()?)
                .env("PATH", &path)
                .args([
                    "--reuseaddr",
                    "--export-all",
                    "--verbose",
                    "--informative-errors",
                    if writable {
                        "--enable=receive-pack"
                    } else {
                        "--forbid-override=receive-pack"
                    },
                    "--listen=127.0.0.1",
                    &format!("--port={port}"),
                    &format!("--base-path={}", base.display()),
                    &base.display().to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()?;
            let mut daemon = Self {
                child,
                port,
                log: log.clone(),
                _log_dir: tempfile::tempdir()?,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    // Keep the log dir alive for the daemon's lifetime.
                    daemon._log_dir = log_dir;
                    return Ok(daemon);
                }
                if daemon.child.try_wait()?.is_some() {
                    break; // port taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
            if fixed_port.is_some() {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        bail!("git daemon did not start")
    }

    /// `git://127.0.0.1:PORT/NAME`
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The daemon's process id (its CPU time, children's included, is in `/proc/PID/stat`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many upload-pack requests (ref listings and fetches) the daemon has served.
    pub fn upload_pack_requests(&self) -> Result<usize> {
        Ok(std::fs::read_to_string(&self.log)?
            .matches("Request upload-pack")
            .count())
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy on 127.0.0.1 that counts the bytes crossing it in each direction: what a
/// git client really downloads, whatever the protocol.
pub struct CountingProxy {
    port: u16,
    counts: std::sync::Arc<ProxyCounts>,
}

#[derive(Default)]
struct ProxyCounts {
    down: std::sync::atomic::AtomicU64,
    up: std::sync::atomic::AtomicU64,
    open: std::sync::atomic::AtomicUsize,
    accepted: std::sync::atomic::AtomicUsize,
    stop: std::sync::atomic::AtomicBool,
}

impl CountingProxy {
    /// Forwards connections on a fresh port to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let counts = std::sync::Arc::new(ProxyCounts::default());
        let shared = counts.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                shared.open.fetch_add(2, Ordering::SeqCst);
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                for (from, to, down) in [(&client, &server, false), (&server, &client, true)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        shared.open.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    };
                    let counts = shared.clone();
                    std::thread::spawn(move || {
                        pump(from, to, if down { &counts.down } else { &counts.up });
                        counts.open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        });
        Ok(Self { port, counts })
    }

    /// The port to connect to instead of the upstream's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections it has accepted so far.
    pub fn connections(&self) -> usize {
        self.counts
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The bytes sent by the server to clients (down) and by clients to the server (up) so
    /// far, without waiting for open connections.
    pub fn totals(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.counts.down.load(Ordering::SeqCst),
            self.counts.up.load(Ordering::SeqCst),
        )
    }

    /// Waits until every connection has closed, then returns the bytes sent by the server
    /// to clients (down) and by clients to the server (up) since the last call.
    pub fn take(&self) -> Result<(u64, u64)> {
        use std::sync::atomic::Ordering;
        wait_until(
            Duration::from_secs(30),
            "proxied connections to close",
            || self.counts.open.load(Ordering::SeqCst) == 0,
        )?;
        Ok((
            self.counts.down.swap(0, Ordering::SeqCst),
            self.counts.up.swap(0, Ordering::SeqCst),
        ))
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.counts
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, count: &std::sync::atomic::AtomicU64) {
    use std::io::Write;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// `$(git --exec-path)/git-daemon`
pub fn git_daemon_path() -> Result<PathBuf> {
    let out = Command::new("git").arg("--exec-path").output()?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = Path::new(&dir).join("git-daemon");
    if !path.is_file() {
        bail!("{} not found: install git's daemon", path.display());
    }
    Ok(path)
}

/// A smart-HTTP git server with basic auth (`tests/support/git_http_server.py` over
/// `git http-backend`) on 127.0.0.1.
pub struct GitHttpServer {
    child: Child,
    port: u16,
    /// With TLS: the directory holding its self-signed certificate.
    tls: Option<tempfile::TempDir>,
}

impl GitHttpServer {
    /// Serves the repositories under `base`, accepting only `user`/`password` (a password
    /// `@FILE` is read from FILE on every request, so a test can rotate it).
    pub fn start(base: &Path, user: &str, password: &str) -> Result<Self> {
        Self::start_with(base, user, password, false, None)
    }

    /// Like [`Self::start`], over HTTPS with a fresh self-signed certificate for
    /// 127.0.0.1 (see [`Self::ca_file`]).
    pub fn start_tls(base: &Path, user: &str, password: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        run_ok(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args([
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                .arg("-keyout")
                .arg(dir.path().join("key.pem"))
                .arg("-out")
                .arg(dir.path().join("cert.pem"))
                .stdin(Stdio::null()),
        )?;
        Self::start_with(base, user, password, false, Some(dir))
    }

    /// Like [`Self::start`], but the server ignores the client's `Git-Protocol` header,
    /// so `git http-backend` answers with protocol v0.
    pub fn start_v0(base: &Path, user: &str, password: &str) -> Result<Self> {
        Self::start_with(base, user, password, true, None)
    }

    fn start_with(
        base: &Path,
        user: &str,
        password: &str,
        v0_only: bool,
        tls: Option<tempfile::TempDir>,
    ) -> Result<Self> {
        let script = workspace_root().join("tests/support/git_http_server.py");
        let mut options = Vec::new();
        if v0_only {
            options.push("v0".to_string());
        }
        if let Some(dir) = &tls {
            options.push(format!(
                "tls={},{}",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display()
            ));
        }
        let mut child = Command::new("python3")
            .arg(script)
            .arg(base)
            .args([user, password])
            .args(&options)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdout = child.stdout.take().context("no stdout")?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte)? == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&line).to_string();
        let port = text
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            bail!("git http server did not start: {text:?}");
        };
        Ok(Self { child, port, tls })
    }

    /// `http://127.0.0.1:PORT/NAME` (`https://` when started with TLS)
    pub fn url(&self, name: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{name}", self.port)
    }

    /// The certificate a client must trust to reach a server started with TLS (as
    /// `SSL_CERT_FILE`, which openssl reads for every client in the process).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|d| d.path().join("cert.pem"))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OpenSSH server on 127.0.0.1 accepting one client key, for git over `ssh://`.
pub struct SshServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SshServer {
    /// Starts `sshd` with a fresh host key; `client_key` (a private key file path) is
    /// created and authorised. It accepts `GIT_PROTOCOL` from clients (as GitHub's and
    /// GitLab's do), so git over it can speak protocol v2.
    pub fn start() -> Result<Self> {
        Self::start_with(true)
    }

    /// Like [`Self::start`], but with a stock sshd's environment policy: `GIT_PROTOCOL` is
    /// refused, so git over it speaks protocol v0.
    pub fn start_v0() -> Result<Self> {
        Self::start_with(false)
    }

    fn start_with(accept_git_protocol: bool) -> Result<Self> {
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).is_file());
        let Some(sshd) = sshd else {
            bail!("sshd not found: install openssh-server (scripts/setup-system.sh does)");
        };
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        keygen(&d.join("host_key"), "ed25519")?;
        keygen(&d.join("client_key"), "ed25519")?;
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))?;
        std::fs::create_dir_all("/run/sshd").ok();
        for _ in 0..5 {
            let port = free_port()?;
            std::fs::write(
                d.join("sshd_config"),
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
                     PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n\
                     LogLevel ERROR\n{accept}",
                    hk = d.join("host_key").display(),
                    ak = d.join("authorized_keys").display(),
                    accept = if accept_git_protocol {
                        "AcceptEnv GIT_PROTOCOL\n"
                    } else {
                        ""
                    },
                ),
            )?;
            let mut child = Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(Self { child, port, dir });
                }
                if child.try_wait()?.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        bail!("sshd did not start")
    }

    /// `ssh://USER@127.0.0.1:PORT/ABSOLUTE/PATH`
    pub fn url(&self, user: &str, path: &Path) -> String {
        format!("ssh://{user}@127.0.0.1:{}{}", self.port, path.display())
    }

    /// The port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The client's private key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// Writes a known_hosts file naming this server's host key (hashed with `ssh-keygen -H`
    /// when `hashed`) and returns its path.
    pub fn known_hosts(&self, hashed: bool) -> Result<PathBuf> {
        let pubkey = std::fs::read_to_string(self.dir.path().join("host_key.pub"))?;
        let mut fields = pubkey.split_whitespace();
        let (Some(kind), Some(key)) = (fields.next(), fields.next()) else {
            bail!("bad host key")
        };
        let path = self.dir.path().join(if hashed {
            "known_hosts_hashed"
        } else {
            "known_hosts"
        });
        std::fs::write(&path, format!("[127.0.0.1]:{} {kind} {key}\n", self.port))?;
        if hashed {
            let ok = Command::new("ssh-keygen")
                .arg("-H")
                .arg("-f")
                .arg(&path)
                .output()?
                .status
                .success();
            if !ok {
                bail!("ssh-keygen -H failed");
            }
        }
        Ok(path)
    }

    /// A known_hosts file that lists this server's key for its address and also marks
    /// that key `@revoked` (for any host).
    pub fn revoked_known_hosts(&self) -> Result<PathBuf> {
        let pubkey = std::fs::read_to_string(self.dir.path().join("host_key.pub"))?;
        let key = pubkey
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let path = self.dir.path().join("known_hosts_revoked");
        std::fs::write(
            &path,
            format!(
                "[127.0.0.1]:{} {key}
@revoked * {key}
",
                self.port
            ),
        )?;
        Ok(path)
    }

    /// A known_hosts file that trusts a certificate authority for this server's address
    /// (`@cert-authority`) and does not list the server's own key.
    pub fn cert_authority_known_hosts(&self) -> Result<PathBuf> {
        let ca = self.dir.path().join("host_ca");
        keygen(&ca, "ed25519")?;
        let pubkey = std::fs::read_to_string(ca.with_extension("pub"))?;
        let path = self.dir.path().join("known_hosts_ca");
        std::fs::write(
            &path,
            format!("@cert-authority [127.0.0.1]:{} {pubkey}", self.port),
        )?;
        Ok(path)
    }

    /// A known_hosts file that names a different key for this server.
    pub fn wrong_known_hosts(&self) -> Result<PathBuf> {
        let other = self.dir.path().join("other_key");
        keygen(&other, "ed25519")?;
        let pubkey = std::fs::read_to_string(other.with_extension("pub"))?;
        let path = self.dir.path().join("known_hosts_wrong");
        std::fs::write(&path, format!("[127.0.0.1]:{} {pubkey}", self.port))?;
        Ok(path)
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path, kind: &str) -> Result<()> {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()?
        .status
        .success();
    if !ok {
        bail!("ssh-keygen failed for {}", path.display());
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// A minimal `fleet.yaml` with the given waves.
pub fn fleet_yaml(waves: &[&str]) -> String {
    let waves: Vec<String> = waves.iter().map(|w| format!("{{name: {w}}}")).collect();
    format!(
        "apiVersion: tidemark.dev/v1alpha1\nkind: Fleet\nmetadata: {{name: test}}\nspec:\n  waves: [{}]\n",
        waves.join(", ")
    )
}

/// The Cluster API provider as the simulated clusters expect it.
pub const CLUSTERAPI: &str = "{kind: clusterapi, namespace: capi-system}";

/// The manifest of the cluster a `tidemark sim` serves (named `sim`, wave `canary`):
/// `provider` as a YAML flow mapping, the control plane and node groups at their versions.
pub fn sim_manifest(provider: &str, control_plane: &str, groups: &[(&str, &str)]) -> String {
    let mut text = format!(
        "apiVersion: tidemark.dev/v1alpha1
kind: Cluster
metadata:
  name: sim
  labels: {{cluster: sim, tidemark.dev/wave: canary}}
spec:
  provider: {provider}
  controlPlane: {{version: \"{control_plane}\"}}
  nodeGroups:
"
    );
    for (name, version) in groups {
        text.push_str(&format!("    - {{name: {name}, version: \"{version}\"}}\n"));
    }
    text
}

/// A `Cluster` manifest with one node group at the control plane's version.
pub fn cluster_yaml(name: &str, wave: Option<&str>, version: &str) -> String {
    let wave = wave
        .map(|w| format!(", tidemark.dev/wave: {w}"))
        .unwrap_or_default();
    format!(
        "apiVersion: tidemark.dev/v1alpha1
kind: Cluster
metadata:
  name: {name}
  labels: {{cluster: {name}{wave}}}
spec:
  provider: {{kind: clusterapi, namespace: capi-system}}
  controlPlane: {{version: \"{version}\"}}
  nodeGroups:
    - {{name: general, version: \"{version}\"}}
"
    )
}

/// Starts `tidemark agent` (the long-running loop, 300 ms interval, 2 s Lease) against a
/// sim, logging at info to `DIR/IDENTITY.log`.
pub fn spawn_agent(repo: &Path, sim: &SimProcess, identity: &str, dir: &Path) -> Result<Child> {
    spawn_agent_with(repo, sim, identity, dir, &[])
}

/// [`spawn_agent`] with extra arguments (e.g. `--interval 5m` instead of 300ms).
pub fn spawn_agent_with(
    repo: &Path,
    sim: &SimProcess,
    identity: &str,
    dir: &Path,
    extra: &[&str],
) -> Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{identity}.log")))?;
    Ok(Command::new(tidemark_bin()?)
        .args(["--log", "info", "agent", "--repo"])
        .arg(repo)
        .args([
            "--selector",
            "cluster=sim",
            "--lease-duration",
            "2s",
            "--identity",
            identity,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(if extra.contains(&"--interval") {
            &[][..]
        } else {
            &["--interval", "300ms"][..]
        })
        .args(extra)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--kubeconfig")
        .arg(sim.kubeconfig())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

/// Runs one pass, `tidemark agent --once`, for cluster `sim` of the fleet repo at `repo`
/// against `sim`, rendering with `helm` and caching in `dir`; `extra` arguments are added.
/// Returns the run (exit code, stdout, stderr) whatever its outcome.
pub fn agent_once(
    repo: &Path,
    sim: &SimProcess,
    helm: &Path,
    dir: &Path,
    extra: &[&str],
) -> Result<Run> {
    let (repo, kubeconfig, helm) = (
        repo.display().to_string(),
        sim.kubeconfig().display().to_string(),
        helm.display().to_string(),
    );
    let cache = dir.join("cache").display().to_string();
    let mut args = vec![
        "agent",
        "--once",
        "--repo",
        &repo,
        "--selector",
        "cluster=sim",
        "--cache-dir",
        &cache,
        "--helm-bin",
        &helm,
        "--component-wait",
        "20s",
    ];
    args.extend_from_slice(extra);
    tidemark_in(&args, None, &[("KUBECONFIG", &kubeconfig)])
}

/// The log an agent started by [`spawn_agent`] wrote.
pub fn agent_log(dir: &Path, identity: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{identity}.log"))).unwrap_or_default()
}

/// The agent's status record, read with kubectl and parsed by the agent's own type.
pub fn status_record(sim: &SimProcess) -> Result<tidemark::status::Record> {
    let json = sim.kubectl(&["get", "namespace", "tidemark-system", "-o", "json"])?;
    let ns: serde_json::Value = serde_json::from_str(&json)?;
    let annotations: std::collections::BTreeMap<String, String> = ns["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(tidemark::status::Record::from_annotations(&annotations))
}

/// A `tidemark.dev/KEY` status annotation read with kubectl ("" if unreadable).
pub fn status_annotation(sim: &SimProcess, key: &str) -> String {
    sim.kubectl(&[
        "get",
        "namespace",
        "tidemark-system",
        "-o",
        &format!("jsonpath={{.metadata.annotations.tidemark\\.dev/{key}}}"),
    ])
    .unwrap_or_default()
}

/// What `tidemark agent --once` printed: its phase, message and executed steps.
#[derive(Debug)]
pub struct Pass {
    /// `phase: ...`
    pub phase: String,
    /// `message: ...` (its first line)
    pub message: String,
    /// Every `executed: ...` line, in order.
    pub executed: Vec<String>,
}

impl Pass {
    /// Runs one `tidemark agent --once` pass for the manifest labelled `cluster=sim` in the
    /// local `repo` against `sim`, with its git cache in `cache`; a non-zero exit is an error.
    pub fn run(repo: &WorkRepo, sim: &SimProcess, cache: &Path) -> Result<Self> {
        let kubeconfig = sim.kubeconfig().display().to_string();
        let run = tidemark_in(
            &[
                "agent",
                "--once",
                "--repo",
                &repo.path().display().to_string(),
                "--selector",
                "cluster=sim",
                "--cache-dir",
                &cache.display().to_string(),
            ],
            None,
            &[("KUBECONFIG", &kubeconfig)],
        )?;
        if run.code != Some(0) {
            bail!("agent --once failed: {run:?}");
        }
        Ok(Self::parse(&run.stdout))
    }

    /// Reads the report from the standard output of `tidemark agent --once`.
    pub fn parse(stdout: &str) -> Self {
        let field = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
                .unwrap_or_default()
        };
        Self {
            phase: field("phase"),
            message: field("message"),
            executed: stdout
                .lines()
                .filter_map(|l| l.strip_prefix("executed: ").map(str::to_string))
                .collect(),
        }
    }
}

/// Polls `ok` every 200 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The address an agent started by [`spawn_agent`] serves /metrics on (from its log).
pub fn agent_metrics_addr(dir: &Path, identity: &str) -> Option<String> {
    let log = agent_log(dir, identity);
    let line = log
        .lines()
        .find(|l| l.contains("serving /healthz, /readyz and /metrics"))?;
    Some(
        line.split("addr=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .to_string(),
    )
}

/// `GET path` over plain HTTP/1.1; returns (status code, body).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use std::io::Write;
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

// ---- helm ---------------------------------------------------------------------------

/// Helm 4, the version the tests, benches and the demo use.
pub const HELM4_VERSION: &str = "v4.1.4";
/// Helm 3, rendered with too by the compatibility test.
pub const HELM3_VERSION: &str = "v3.17.2";

/// The official helm binary of `version`: the path in `env_var` when set, else
/// `.tools/helm/<version>/helm` as `scripts/setup-helm.sh` provisions it. Errors (naming both
/// ways to get one) when neither exists.
fn provisioned_helm(env_var: &str, version: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{env_var}={} does not exist", path.display());
        }
        return Ok(path);
    }
    let path = workspace_root().join(format!(".tools/helm/{version}/helm"));
    if !path.is_file() {
        bail!(
            "helm {version} not found at {}: run scripts/setup-helm.sh (scripts/test.sh does), \
             or set {env_var} to a helm {version} binary",
            path.display()
        );
    }
    Ok(path)
}

/// The helm the tests use (Helm 4): `TIDEMARK_TEST_HELM`, else the provisioned
/// `.tools/helm/v4.1.4/helm`.
pub fn helm_bin() -> Result<PathBuf> {
    provisioned_helm("TIDEMARK_TEST_HELM", HELM4_VERSION)
}

/// Helm 3 for the compatibility test: `TIDEMARK_TEST_HELM3`, else the provisioned
/// `.tools/helm/v3.17.2/helm`.
pub fn helm3_bin() -> Result<PathBuf> {
    provisioned_helm("TIDEMARK_TEST_HELM3", HELM3_VERSION)
}

/// Writes `helm.log` and an executable `helm` into `dir`: a wrapper that logs every
/// invocation (one line of arguments) and runs the test's helm ([`helm_bin`]) with its
/// cache, config and data directories inside `dir` (nothing shared between tests, nothing
/// written to the user's home). Returns the wrapper's path.
pub fn helm_wrapper(dir: &Path) -> Result<PathBuf> {
    let helm = helm_bin()?;
    let wrapper = dir.join("helm");
    let home = dir.join("helm-home");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{log}'\n\
             HELM_CACHE_HOME='{home}/cache' HELM_CONFIG_HOME='{home}/config' \
             HELM_DATA_HOME='{home}/data' exec '{helm}' \"$@\"\n",
            log = dir.join("helm.log").display(),
            home = home.display(),
            helm = helm.display(),
        ),
    )?;
    let mut perms = std::fs::metadata(&wrapper)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms)?;
    Ok(wrapper)
}

/// Runs `HELM ARGS` in `dir` with a timeout of 60 s, no `HELM_*` variables inherited and
/// helm's cache, config and data directories in a fresh temporary directory.
pub fn helm_run(helm: &Path, args: &[&str], dir: &Path) -> Result<Run> {
    let home = tempfile::tempdir()?;
    let mut cmd = Command::new(helm);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HELM_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"));
    let out = wait_with_timeout(cmd.spawn()?, Duration::from_secs(60))?;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `helm ARGS` with the tests' helm ([`helm_bin`]) in `dir` (see [`helm_run`]).
pub fn helm_in(args: &[&str], dir: &Path) -> Result<Run> {
    helm_run(&helm_bin()?, args, dir)
}

// ---- chart repositories -------------------------------------------------------------

/// `python3 -m http.server` serving a directory on 127.0.0.1: a classic chart repository.
pub struct HttpServer {
    child: Child,
    addr: String,
}

impl HttpServer {
    pub fn start(dir: &Path) -> Result<Self> {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
                .local_addr()?
                .port();
            let mut server = Self {
                child: Command::new("python3")
                    .args(["-m", "http.server", "--bind", "127.0.0.1"])
                    .arg(port.to_string())
                    .arg("--directory")
                    .arg(dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
                addr: format!("127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(&server.addr).is_ok() && http_get(&server.addr, "/").is_ok() {
                    return Ok(server);
                }
                if server.child.try_wait()?.is_some() {
                    break; // port taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        bail!("python3 -m http.server did not start")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command that must succeed; returns stdout.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Packages metrics-lite as `VERSION` into `repo/charts/metrics-lite-VERSION.tgz` with the
/// `tar` command (as `helm package` lays it out: one top directory named after the chart);
/// returns the archive's sha256.
pub fn package_metrics_lite(work: &Path, version: &str) -> Result<String> {
    let src = work.join(format!("src-{version}"));
    copy_dir(
        &workspace_root().join("fleet-repo-example/charts/metrics-lite"),
        &src.join("metrics-lite"),
    )?;
    let chart_yaml = src.join("metrics-lite/Chart.yaml");
    let text = std::fs::read_to_string(&chart_yaml)?
        .replace("\nversion: 0.3.0\n", &format!("\nversion: {version}\n"));
    std::fs::write(&chart_yaml, text)?;
    let archive = work.join(format!("repo/charts/metrics-lite-{version}.tgz"));
    std::fs::create_dir_all(archive.parent().context("no parent")?)?;
    run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg("metrics-lite"),
    )?;
    let sum = run_ok(Command::new("sha256sum").arg(&archive))?;
    Ok(sum
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// An index.yaml listing metrics-lite 0.3.0 and 0.4.0 (relative URLs, with digests) and a
/// 0.5.0-rc.1 prerelease whose archive does not exist (never picked without --version).
pub fn index_yaml(digest_030: &str, digest_040: &str) -> String {
    format!(
        "apiVersion: v1
entries:
  metrics-lite:
    - {{apiVersion: v2, name: metrics-lite, version: 0.5.0-rc.1, urls: [charts/missing.tgz]}}
    - {{apiVersion: v2, name: metrics-lite, version: 0.3.0, digest: {digest_030}, urls: [charts/metrics-lite-0.3.0.tgz]}}
    - {{apiVersion: v2, name: metrics-lite, version: 0.4.0, digest: {digest_040}, urls: [charts/metrics-lite-0.4.0.tgz]}}
generated: \"2025-01-01T00:00:00Z\"
"
    )
}

/// A TCP proxy on 127.0.0.1 in front of `127.0.0.1:upstream` that counts every connection
/// a client opens (also while the upstream is down: the client is then dropped at once, as
/// a refused connection would be) and can cut responses short: the first `cuts`
/// connections whose server response grows beyond `cut_after` bytes are closed, both ways,
/// after exactly `cut_after` bytes have reached the client (a fetch cut in the middle of
/// its pack).
pub struct CuttingProxy {
    port: u16,
    state: std::sync::Arc<CutState>,
}

#[derive(Default)]
struct CutState {
    attempts: std::sync::atomic::AtomicUsize,
    cuts_left: std::sync::atomic::AtomicUsize,
    cut_after: std::sync::atomic::AtomicU64,
    /// Bytes the server had sent before each cut connection was closed.
    cut: std::sync::Mutex<Vec<u64>>,
    /// Bytes the server sent on each connection that was not cut, in order of closing.
    whole: std::sync::Mutex<Vec<u64>>,
    stop: std::sync::atomic::AtomicBool,
}

impl CuttingProxy {
    /// Forwards connections on a fresh port to `127.0.0.1:upstream`, cutting nothing yet.
    pub fn start(upstream: u16) -> Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let state = std::sync::Arc::new(CutState::default());
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                shared.attempts.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                };
                let state = shared.clone();
                std::thread::spawn(move || relay_cutting(client, server, &state));
            }
        });
        Ok(Self { port, state })
    }

    /// Cuts the next `cuts` responses that grow beyond `bytes` bytes.
    pub fn cut(&self, cuts: usize, bytes: u64) {
        use std::sync::atomic::Ordering;
        self.state.cut_after.store(bytes, Ordering::SeqCst);
        self.state.cuts_left.store(cuts, Ordering::SeqCst);
    }

    /// The port to connect to instead of the upstream's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections clients opened so far, whether or not the upstream answered.
    pub fn attempts(&self) -> usize {
        self.state
            .attempts
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// For each connection cut so far: the bytes the client got before the cut.
    pub fn cut_at(&self) -> Vec<u64> {
        self.state.cut.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// For each connection that ended without a cut: the bytes the server sent.
    pub fn whole_responses(&self) -> Vec<u64> {
        self.state
            .whole
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn relay_cutting(client: TcpStream, server: TcpStream, state: &CutState) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    let (Ok(mut c_in), Ok(mut s_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_in, &mut s_out);
        let _ = s_out.shutdown(std::net::Shutdown::Write);
    });
    let (mut server, mut client) = (server, client);
    let limit = state.cut_after.load(Ordering::SeqCst);
    let mut sent = 0u64;
    let mut cut = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let after = sent + n as u64;
        let may_cut = limit > 0 && after > limit && state.cuts_left.load(Ordering::SeqCst) > 0;
        if may_cut
            && state
                .cuts_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
                .is_ok()
        {
            let keep = usize::try_from(limit - sent).unwrap_or(n).min(n);
            let _ = client.write_all(&buf[..keep]);
            sent += keep as u64;
            cut = true;
            break;
        }
        if client.write_all(&buf[..n]).is_err() {
            sent = after;
            break;
        }
        sent = after;
    }
    if cut {
        // Closed mid-response: no orderly end the client could take for a complete answer.
        let _ = client.shutdown(std::net::Shutdown::Both);
        let _ = server.shutdown(std::net::Shutdown::Both);
        if let Ok(mut v) = state.cut.lock() {
            v.push(sent);
        }
    } else {
        let _ = client.shutdown(std::net::Shutdown::Write);
        if let Ok(mut v) = state.whole.lock() {
            v.push(sent);
        }
    }
    let _ = up.join();
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` that can hold new connections: while
/// stalled, a connection is accepted but nothing is forwarded until the stall ends (a slow
/// or hung git server, as the client sees it).
pub struct StallingProxy {
    port: u16,
    stall_until: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
}

impl StallingProxy {
    /// Proxies 127.0.0.1:PORT to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stall_until: std::sync::Arc<std::sync::Mutex<Option<Instant>>> = Default::default();
        let stall = stall_until.clone();
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let stall = stall.clone();
                let upstream = upstream.clone();
                std::thread::spawn(move || {
                    loop {
                        let until = stall.lock().ok().and_then(|s| *s);
                        match until {
                            Some(t) if Instant::now() < t => {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            _ => break,
                        }
                    }
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        return;
                    };
                    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                        return;
                    };
                    let up = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c2, &mut s2);
                        let _ = s2.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut client, mut server) = (client, server);
                    let _ = std::io::copy(&mut server, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Write);
                    let _ = up.join();
                });
            }
        });
        Ok(Self { port, stall_until })
    }

    /// Holds every connection opened from now on for `how_long` (from now).
    pub fn stall_for(&self, how_long: Duration) {
        if let Ok(mut s) = self.stall_until.lock() {
            *s = Some(Instant::now() + how_long);
        }
    }

    /// `host:port` of the proxy.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl GitDaemon {
    /// `host:port` the daemon listens on.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

// ---- private charts: TLS, an authenticated chart repository, an OCI registry -------------

/// A CA and a server certificate for `127.0.0.1` signed by it, made with the openssl CLI in
/// `dir`.
pub struct TestTls {
    /// The CA bundle clients verify with.
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's key.
    pub key: PathBuf,
}

impl TestTls {
    /// Makes the CA and the server certificate (valid for a day) in `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = |name: &str| dir.join(name);
        let openssl = |args: &[&str]| -> Result<()> {
            run_ok(Command::new("openssl").args(args).current_dir(dir)).map(drop)
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=tidemark test CA",
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ])?;
        std::fs::write(path("san.cnf"), "subjectAltName=IP:127.0.0.1\n")?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "san.cnf",
        ])?;
        Ok(Self {
            ca: path("ca.crt"),
            cert: path("server.crt"),
            key: path("server.key"),
        })
    }
}

/// A classic chart repository (`tests/support/chart_repo_server.py`) serving a directory on
/// 127.0.0.1, over HTTPS with `tls`, behind basic auth with `auth` (a user and the file
/// holding the password, read at every request). Every request is logged.
pub struct ChartRepoServer {
    child: Child,
    port: u16,
    scheme: &'static str,
    log: PathBuf,
}

impl ChartRepoServer {
    /// Serves `root`, logging requests to `log`.
    pub fn start(
        root: &Path,
        auth: Option<(&str, &Path)>,
        tls: Option<&TestTls>,
        log: &Path,
    ) -> Result<Self> {
        let mut cmd = Command::new("python3");
        cmd.arg(workspace_root().join("tests/support/chart_repo_server.py"))
            .arg(root)
            .env("CHART_REPO_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some((user, password_file)) = auth {
            cmd.env("CHART_REPO_USER", user)
                .env("CHART_REPO_PASSWORD_FILE", password_file);
        }
        if let Some(tls) = tls {
            cmd.env("CHART_REPO_CERT", &tls.cert)
                .env("CHART_REPO_KEY", &tls.key);
        }
        let mut child = cmd.spawn()?;
        let mut stdout = child.stdout.take().context("no stdout")?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte)? == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&line).to_string();
        let Some(port) = text
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
        else {
            let _ = child.kill();
            bail!("chart repository server did not start: {text:?}");
        };
        Ok(Self {
            child,
            port,
            scheme: if tls.is_some() { "https" } else { "http" },
            log: log.to_path_buf(),
        })
    }

    /// `https://127.0.0.1:PORT` (or `http://`).
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// The requests so far: `STATUS PATH AUTH` (AUTH `none`, `ok` or `bad`).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for ChartRepoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real OCI registry on 127.0.0.1: Debian's `docker-registry` (the CNCF distribution
/// registry, which serves the OCI distribution API), with TLS and htpasswd (bcrypt) auth.
pub struct OciRegistry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl OciRegistry {
    /// Starts a registry accepting only `user`/`password`, serving `tls`.
    pub fn start(user: &str, password: &str, tls: &TestTls) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let htpasswd = dir.path().join("htpasswd");
        // The password goes to htpasswd on stdin, not on its command line.
        let mut child = Command::new("htpasswd")
            .arg("-Bic")
            .arg(&htpasswd)
            .arg(user)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context(
                "htpasswd (Debian package apache2-utils) is missing: scripts/setup-system.sh",
            )?;
        std::io::Write::write_all(
            &mut child.stdin.take().context("no stdin")?,
            password.as_bytes(),
        )?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1
log:
  level: info
  accesslog: {{disabled: true}}
storage:
  filesystem: {{rootdirectory: {data}}}
http:
  addr: 127.0.0.1:0
  secret: tidemark-test
  tls: {{certificate: {cert}, key: {key}}}
auth:
  htpasswd: {{realm: tidemark-test, path: {htpasswd}}}
",
                data = dir.path().join("data").display(),
                cert = tls.cert.display(),
                key = tls.key.display(),
                htpasswd = htpasswd.display(),
            ),
        )?;
        let log = dir.path().join("registry.log");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("docker-registry (Debian package) is missing: scripts/setup-system.sh")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let port = text
                .split("listening on 127.0.0.1:")
                .nth(1)
                .and_then(|rest| {
                    rest.split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|p| p.parse().ok())
                });
            if let Some(port) = port {
                return Ok(Self {
                    child,
                    port,
                    _dir: dir,
                });
            }
            if child.try_wait()?.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("docker-registry did not start: {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`, as registry references and configs name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// helm's registry config (a docker `config.json`) logging in to `host` as `user`.
pub fn registry_config(host: &str, user: &str, password: &str) -> String {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("{{\"auths\": {{\"{host}\": {{\"auth\": \"{auth}\"}}}}}}")
}
