//! The `Dockerfile`, built and run with buildah (no Docker engine and no registry here):
//! the base images and the helm archive are made locally (`scripts/setup-image.sh`) and
//! reach the Dockerfile only through its build arguments; the `tidemark` binary is the one
//! `scripts/test.sh` builds without the simulator (`TIDEMARK_PREBUILT`). The image then runs
//! `tidemark --version`, `validate` on a mounted fleet repo and `agent --once` against a sim
//! on 127.0.0.1 with a mounted kubeconfig, as user 65532, with the image's directories
//! mounted read-only.
//!
//! Nothing is skipped: without buildah, root or the local bases the test fails and names
//! the script that provides them (`scripts/setup-system.sh tests` installs buildah,
//! `scripts/setup-image.sh` makes the bases; `scripts/test.sh` runs both).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tidemark_e2e::{
    GitDaemon, HttpServer, SimProcess, WorkRepo, charts, fleet_yaml, status_record, workspace_root,
};

const BUILDER_IMAGE: &str = "localhost/tidemark-test/builder:bookworm";
const RUNTIME_IMAGE: &str = "localhost/tidemark-test/runtime:bookworm";
const HELM_ARCHIVE: &str = "helm-v4.1.4-linux-amd64.tar.gz";
/// Where `scripts/test.sh` puts the binary built with `--no-default-features`.
const PREBUILT: &str = "target/image/tidemark";

/// buildah with the store `scripts/setup-image.sh` made (vfs driver, chroot isolation).
struct Buildah {
    dir: PathBuf,
}

impl Buildah {
    fn cmd(&self) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs"]);
        cmd
    }

    fn output(&self, args: &[&str]) -> Result<Output> {
        Ok(self.cmd().args(args).output()?)
    }

    /// Runs buildah; its stdout, or an error with its stderr.
    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "buildah {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Fails, naming what installs it, when buildah is not installed.
fn require_buildah() -> Result<()> {
    let found = Command::new("buildah")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        bail!("buildah is not installed: scripts/setup-system.sh tests installs it");
    }
    Ok(())
}

/// A working container of an image, removed on drop, with read-only bind mounts over its
/// directories (undone on drop).
struct Container<'a> {
    buildah: &'a Buildah,
    name: String,
    root: PathBuf,
    read_only: Vec<PathBuf>,
}

impl<'a> Container<'a> {
    /// The image's `VOLUME`s are dropped from the working container: a pod's volumeMount is
    /// the volume (Kubernetes ignores `VOLUME`), and here the `--volume` of each run must be
    /// the only mount at its path. buildah 1.28 (Debian bookworm's) mounts an anonymous
    /// copy of the image's directory at a `VOLUME` too, and picks between the two mounts
    /// at the same destination by an unstable sort (made stable in buildah 1.29): about
    /// one run in three, the agent wrote its cache into buildah's copy instead of the
    /// mounted directory.
    fn new(buildah: &'a Buildah, image: &str) -> Result<Self> {
        let name = buildah.ok(&["from", "--pull=never", image])?;
        if let Err(e) = buildah.ok(&["config", "--volume=-", &name]) {
            let _ = buildah.output(&["rm", &name]);
            return Err(e);
        }
        let root = PathBuf::from(buildah.ok(&["mount", &name])?);
        Ok(Self {
            buildah,
            name,
            root,
            read_only: Vec::new(),
        })
    }

    /// Makes every directory of the image read-only (a read-only bind mount over it), but
    /// `/run` and `/var/cache`: buildah 1.28 writes `/run/.containerenv` and, after each
    /// run, removes the mount points of volumes it created outside `/etc` (here the cache
    /// volume's, `/var/cache/tidemark`), and fails when it cannot. `mountpoints` (under
    /// `/etc`, which buildah leaves alone; a trailing `/` for a directory) are created
    /// first, with the files buildah mounts over (`/etc/hosts`, `/etc/resolv.conf`,
    /// `/etc/hostname`), as a container runtime's mount points.
    fn make_read_only(&mut self, mountpoints: &[&str]) -> Result<()> {
        let runtime = ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"];
        for m in mountpoints.iter().chain(&runtime) {
            let path = self.root.join(m.trim_start_matches('/'));
            if path.exists() {
                continue;
            }
            if m.ends_with('/') {
                std::fs::create_dir_all(&path)?;
            } else {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, "")?;
            }
        }
        let mut dirs = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type()?.is_dir() || ["run", "proc", "sys", "dev"].contains(&&*name) {
                continue;
            }
            if name == "var" {
                for sub in std::fs::read_dir(entry.path())? {
                    let sub = sub?;
                    if sub.file_type()?.is_dir() && sub.file_name() != "cache" {
                        dirs.push(sub.path());
                    }
                }
                continue;
            }
            dirs.push(entry.path());
        }
        for dir in dirs {
            run_ok(Command::new("mount").arg("--bind").arg(&dir).arg(&dir))?;
            self.read_only.push(dir.clone());
            run_ok(
                Command::new("mount")
                    .args(["-o", "remount,bind,ro"])
                    .arg(&dir),
            )?;
        }
        Ok(())
    }

    /// `buildah run` of a command that changes nothing, repeated (three runs at most) until
    /// `done` holds for what it printed: buildah 1.28's chroot isolation relays the
    /// container's stdout and stderr through pipes and exits as soon as the command has
    /// exited, without waiting for the relay (`chroot/run_common.go`), so the output of a
    /// short command is sometimes lost (here one run in a few dozen). A command that never
    /// prints what is expected still fails.
    fn run_until(
        &self,
        volumes: &[String],
        env: &[&str],
        argv: &[&str],
        done: impl Fn(&Output) -> bool,
    ) -> Result<Output> {
        let mut out = self.run(volumes, env, argv)?;
        for _ in 1..3 {
            if done(&out) {
                break;
            }
            eprintln!("buildah lost the output of {argv:?}? running it again");
            out = self.run(volumes, env, argv)?;
        }
        Ok(out)
    }

    /// `buildah run` with volumes (`host:container[:ro]`) and environment.
    fn run(&self, volumes: &[String], env: &[&str], argv: &[&str]) -> Result<Output> {
        let mut cmd = self.buildah.cmd();
        cmd.args(["run", "--isolation", "chroot"]);
        for v in volumes {
            cmd.arg("--volume").arg(v);
        }
        for e in env {
            cmd.arg("--env").arg(e);
        }
        cmd.arg(&self.name).arg("--").args(argv);
        Ok(cmd.output()?)
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        for dir in self.read_only.iter().rev() {
            let _ = Command::new("umount").arg(dir).output();
        }
        let _ = self.buildah.output(&["rm", &self.name]);
    }
}

fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The build arguments that replace the Dockerfile's public defaults by the local bases.
fn local_build_args(helm_url: &str, helm_sha256: &str) -> Vec<String> {
    [
        format!("RUST_IMAGE={BUILDER_IMAGE}"),
        format!("RUNTIME_IMAGE={RUNTIME_IMAGE}"),
        format!("HELM_URL={helm_url}"),
        format!("HELM_SHA256_AMD64={helm_sha256}"),
        format!("TIDEMARK_PREBUILT={PREBUILT}"),
        "REVISION=e2e".to_string(),
    ]
    .into_iter()
    .flat_map(|a| ["--build-arg".to_string(), a])
    .collect()
}

/// What the image test needs besides buildah, or what to run to get it.
fn provisioned(root: &Path) -> Result<(Buildah, String)> {
    if !nix_is_root() {
        bail!("the image test needs root (buildah's vfs store, bind mounts); CI runs as root");
    }
    let dir = root.join(".tools/image");
    let buildah = Buildah { dir: dir.clone() };
    for image in [BUILDER_IMAGE, RUNTIME_IMAGE] {
        if !buildah
            .output(&["inspect", "--type", "image", image])?
            .status
            .success()
        {
            bail!("{image} is missing: run scripts/setup-image.sh (scripts/test.sh does)");
        }
    }
    let sha = std::fs::read_to_string(dir.join(format!("{HELM_ARCHIVE}.sha256")))
        .context("the local helm archive is missing: run scripts/setup-image.sh")?;
    if !root.join(PREBUILT).is_file() {
        bail!(
            "{PREBUILT} is missing: scripts/test.sh builds it \
             (cargo build -p tidemark --no-default-features --bin tidemark, copied there)"
        );
    }
    Ok((buildah, sha.trim().to_string()))
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn the_image_builds_from_the_dockerfile_and_runs_the_agent_read_only_as_nonroot() -> Result<()> {
    require_buildah()?;
    let root = workspace_root();
    let (buildah, helm_sha256) = provisioned(&root)?;
    let archives = HttpServer::start(&buildah.dir)?;
    let helm_url = format!("{}/{HELM_ARCHIVE}", archives.url());
    let tag = format!("localhost/tidemark:e2e-{}", std::process::id());
    let context = root.display().to_string();
    let dockerfile = root.join("Dockerfile").display().to_string();

    // A wrong checksum stops the build at the helm stage.
    let mut args = vec![
        "build",
        "--isolation",
        "chroot",
        "--pull=never",
        "--layers=false",
    ];
    args.extend(["-f", &dockerfile, "--target", "helm"]);
    let wrong = local_build_args(&helm_url, &"0".repeat(64));
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    let out = buildah.output(&[&args[..], &wrong[..], &[&context]].concat())?;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("FAILED"), "{}", text(&out));

    // The image, from the same Dockerfile.
    let started = Instant::now();
    let good = local_build_args(&helm_url, &helm_sha256);
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    args.truncate(5);
    args.extend(["-f", &dockerfile, "-t", &tag]);
    buildah.ok(&[&args[..], &good[..], &[&context]].concat())?;
    let build_time = started.elapsed();
    let _image = scopeguard(&buildah, &tag);

    let inspect: serde_json::Value =
        serde_json::from_str(&buildah.ok(&["inspect", "--type", "image", &tag])?)?;
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["tidemark"]));
    assert_eq!(config["Cmd"], serde_json::json!(["agent"]));
    assert!(
        config["Volumes"]["/var/cache/tidemark"].is_object(),
        "{config}"
    );
    let env: Vec<&str> = config["Env"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    for want in [
        "TIDEMARK_CACHE_DIR=/var/cache/tidemark/git",
        "HOME=/var/cache/tidemark",
        "TMPDIR=/var/cache/tidemark",
    ] {
        assert!(env.contains(&want), "{want} not in {env:?}");
    }
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "tidemark");
    assert_eq!(labels["org.opencontainers.image.revision"], "e2e");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    let size = buildah.ok(&["images", "--format", "{{.Size}}", &tag])?;
    eprintln!("image {tag}: {size} (built in {build_time:.1?}, with the stripped debug binary)");

    // --version, the helm inside, and no simulator.
    let ctr = Container::new(&buildah, &tag)?;
    let out = ctr.run_until(&[], &[], &["tidemark", "--version"], |o| {
        !text(o).trim().is_empty()
    })?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).trim(), "tidemark 0.1.0");
    let out = ctr.run_until(&[], &[], &["helm", "version", "--short"], |o| {
        !text(o).trim().is_empty()
    })?;
    assert!(text(&out).starts_with("v4.1.4"), "{}", text(&out));
    let out = ctr.run_until(&[], &[], &["tidemark", "sim"], |o| {
        !text(o).trim().is_empty()
    })?;
    assert!(
        !out.status.success() && text(&out).contains("unrecognized subcommand 'sim'"),
        "{}",
        text(&out)
    );
    drop(ctr);

    // A fleet served by git daemon, a sim on 127.0.0.1, a chart rendered by the image's helm.
    let sim = SimProcess::start(&["--version", "1.29.8", "--node-groups", "general=1"])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    let mut manifest =
        tidemark_e2e::sim_manifest(tidemark_e2e::CLUSTERAPI, "1.29.8", &[("general", "1.29.8")]);
    manifest.push_str(
        "  components:\n    - name: one\n      chart: {path: charts/one}\n      namespace: apps\n",
    );
    repo.write("clusters/sim.yaml", &manifest)?;
    charts::ONE.write_to(&repo.path().join("charts/one"))?;
    let commit = repo.commit("fleet")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let daemon = GitDaemon::start(&repo.base_dir())?;

    let cache = tempfile::tempdir()?;
    std::fs::set_permissions(
        cache.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )?;
    let volumes = vec![
        format!("{}:/var/cache/tidemark", cache.path().display()),
        format!(
            "{}:/etc/tidemark/example:ro",
            root.join("fleet-repo-example").display()
        ),
        format!("{}:/etc/tidemark/kubeconfig:ro", sim.kubeconfig().display()),
    ];
    let mut ctr = Container::new(&buildah, &tag)?;
    ctr.make_read_only(&["/etc/tidemark/example/", "/etc/tidemark/kubeconfig"])?;

    let valid = "7 clusters, 2 component sets: valid";
    let out = ctr.run_until(
        &volumes,
        &[],
        &["tidemark", "validate", "/etc/tidemark/example"],
        |o| text(o).contains(valid),
    )?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(valid), "{}", text(&out));

    // The image's own directories are read-only, even one that belongs to its user.
    let read_only = "Read-only file system";
    let out = ctr.run_until(
        &volumes,
        &[],
        &[
            "tidemark",
            "desired",
            "--repo",
            &daemon.url(&repo.name()),
            "--selector",
            "cluster=sim",
            "--cache-dir",
            "/home/nonroot/cache",
        ],
        |o| text(o).contains(read_only),
    )?;
    assert!(
        !out.status.success() && text(&out).contains(read_only),
        "{}",
        text(&out)
    );

    // One pass of the agent, run once (a pass is not a command that changes nothing): its
    // effects are read from the sim, its output (which buildah may lose) only explains.
    let out = ctr.run(
        &volumes,
        &["KUBECONFIG=/etc/tidemark/kubeconfig"],
        &[
            "tidemark",
            "agent",
            "--once",
            "--repo",
            &daemon.url(&repo.name()),
            "--selector",
            "cluster=sim",
        ],
    )?;
    assert!(out.status.success(), "{}", text(&out));
    let record = status_record(&sim)?;
    assert_eq!(
        record.phase.map(|p| p.to_string()).as_deref(),
        Some("Converged"),
        "{record:?}\n{}",
        text(&out)
    );
    assert_eq!(record.desired_revision.as_deref(), Some(commit.as_str()));
    assert_eq!(
        record.components.get("one").map(|c| c.health.to_string()),
        Some("Healthy".to_string()),
        "{record:?}"
    );
    assert!(
        sim.kubectl(&["get", "configmap", "-n", "apps", "shared"])
            .is_ok()
    );

    // Everything it wrote is in the volume, owned by the non-root user.
    let git_cache = cache.path().join("git");
    let meta = std::fs::metadata(&git_cache).with_context(|| {
        format!(
            "no git cache in the mounted volume; the agent said:\n{}",
            text(&out)
        )
    })?;
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65532);
    Ok(())
}

/// Removes the image when the test ends.
struct ImageGuard<'a>(&'a Buildah, String);

impl Drop for ImageGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.output(&["rmi", "-f", &self.1]);
    }
}

fn scopeguard<'a>(buildah: &'a Buildah, tag: &str) -> ImageGuard<'a> {
    ImageGuard(buildah, tag.to_string())
}

/// The Dockerfile's dependency layer stands in an empty file for every target of every
/// workspace member (cargo reads them all before it builds anything): the list must follow
/// the workspace, or the image's build fails where CI does not look (the full build).
#[test]
fn the_dockerfile_skeleton_lists_every_target_of_the_workspace() -> Result<()> {
    let root = workspace_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile"))?;
    let skeleton = dockerfile
        .split("# skeleton-begin")
        .nth(1)
        .and_then(|s| s.split("# skeleton-end").next())
        .context("the Dockerfile has no skeleton-begin/end block")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(&root)
        .output()?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut missing = Vec::new();
    for package in meta["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            let kinds: Vec<&str> = target["kind"]
                .as_array()
                .map(|k| k.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            // Examples and auto-discovered tests need not exist; declared ones must.
            if kinds.contains(&"example") {
                continue;
            }
            let src = target["src_path"].as_str().unwrap_or_default();
            let rel = Path::new(src)
                .strip_prefix(&root)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let declared = kinds.iter().any(|k| ["lib", "bin", "bench"].contains(k))
                || (kinds.contains(&"test") && is_declared_test(&root, &rel));
            if declared && !skeleton.contains(&rel) {
                missing.push(rel);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "add these targets to the Dockerfile's skeleton list: {missing:?}"
    );
    Ok(())
}

/// Whether the crate's Cargo.toml declares this test target (`[[test]]` with its path).
fn is_declared_test(root: &Path, rel: &str) -> bool {
    let Some(krate) = rel.split('/').next() else {
        return false;
    };
    let inner = rel.strip_prefix(&format!("{krate}/")).unwrap_or(rel);
    std::fs::read_to_string(root.join(krate).join("Cargo.toml"))
        .is_ok_and(|toml| toml.contains("[[test]]") && toml.contains(inner))
}
