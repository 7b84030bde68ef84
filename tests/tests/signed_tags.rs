//! Signed wave tags: `tidemark agent --allowed-signers FILE` follows a wave tag only when
//! it is an annotated tag signed with SSH (`git tag -s`, gpg.format=ssh) by a key the file
//! allows for namespace `git`. Real git (tags signed by git itself, served by `git
//! daemon`), the real binary, the sim; effects counted on the sim and read with kubectl.
//! For every tag, `ssh-keygen -Y verify` is asked too, and tidemark must agree with it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tidemark_e2e::{GitDaemon, Pass, Run, SimProcess, WorkRepo, fleet_yaml, tidemark_in};

/// The simulated cluster at 1.28.9, and a fleet repo declaring it at `version`.
fn manifest(version: &str) -> String {
    tidemark_e2e::sim_manifest(tidemark_e2e::CLUSTERAPI, version, &[("general", version)])
}

/// SSH keys made with ssh-keygen, and the allowed-signers file naming some of them.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    /// `release` may sign for git, `files` only for namespace `file`; `intruder` is not
    /// listed.
    fn new() -> Result<Self> {
        let keys = Self {
            dir: tempfile::tempdir()?,
        };
        for name in ["release", "files", "intruder"] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(keys.key(name))
                .stdin(Stdio::null())
                .status()?
                .success();
            if !ok {
                bail!("ssh-keygen failed for {name}");
            }
        }
        std::fs::write(
            keys.allowed_signers(),
            format!(
                "# who may move wave tags\nrelease@example.com namespaces=\"git\" {}\nfiles@example.com namespaces=\"file\" {}\n",
                keys.public("release")?,
                keys.public("files")?
            ),
        )?;
        Ok(keys)
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn public(&self, name: &str) -> Result<String> {
        Ok(
            std::fs::read_to_string(self.key(name).with_extension("pub"))?
                .trim()
                .to_string(),
        )
    }

    /// `SHA256:...` as `ssh-keygen -l` prints it.
    fn fingerprint(&self, name: &str) -> Result<String> {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.key(name).with_extension("pub"))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(1)
            .map(str::to_string)
            .context("ssh-keygen -l printed no fingerprint")
    }

    fn allowed_signers(&self) -> PathBuf {
        self.dir.path().join("allowed_signers")
    }
}

/// Creates or moves `tag` to `rev` as an annotated tag signed by `key`, as a person does.
fn sign_tag(repo: &WorkRepo, keys: &Keys, key: &str, tag: &str, rev: &str) -> Result<()> {
    let signing_key = keys.key(key).display().to_string();
    repo.git(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &format!("user.signingkey={signing_key}"),
        "tag",
        "-f",
        "-s",
        tag,
        "-m",
        &format!("promote {tag}"),
        rev,
    ])
    .map(drop)
}

/// What `ssh-keygen -Y verify -n git -f allowed_signers -I principal` says of the current
/// `wave/canary`: `None` when there is no SSH signature to give it (lightweight or unsigned
/// tag), else whether it verified. The payload is the tag object up to its signature
/// block, as git hands it to ssh-keygen.
fn ssh_keygen_verifies(repo: &WorkRepo, keys: &Keys, principal: &str) -> Result<Option<bool>> {
    if repo.git(&["cat-file", "-t", "wave/canary"])? != "tag" {
        return Ok(None);
    }
    let object = Command::new("git")
        .args(["cat-file", "tag", "wave/canary"])
        .current_dir(repo.path())
        .output()?
        .stdout;
    let marker = b"-----BEGIN SSH SIGNATURE-----";
    let Some(at) = (0..object.len())
        .rev()
        .find(|&i| object[i..].starts_with(marker) && (i == 0 || object[i - 1] == b'\n'))
    else {
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    let (payload, sig) = (dir.path().join("payload"), dir.path().join("payload.sig"));
    std::fs::write(&payload, &object[..at])?;
    std::fs::write(&sig, &object[at..])?;
    let status = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", "git", "-f"])
        .arg(keys.allowed_signers())
        .args(["-I", principal, "-s"])
        .arg(&sig)
        .stdin(std::fs::File::open(&payload)?)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok(Some(status.success()))
}

fn once(url: &str, sim: &SimProcess, cache: &Path, keys: &Keys) -> Result<Pass> {
    let run: Run = tidemark_in(
        &[
            "agent",
            "--once",
            "--repo",
            url,
            "--selector",
            "cluster=sim",
            "--cache-dir",
            &cache.display().to_string(),
        ],
        None,
        &[
            ("KUBECONFIG", &sim.kubeconfig().display().to_string()),
            (
                "TIDEMARK_ALLOWED_SIGNERS",
                &keys.allowed_signers().display().to_string(),
            ),
        ],
    )?;
    if run.code != Some(0) {
        bail!("agent --once failed: {run:?}");
    }
    Ok(Pass::parse(&run.stdout))
}

/// `tidemark validate URL --allowed-signers FILE --format json`.
fn validate(url: &str, keys: &Keys, cache: &Path) -> Result<(Option<i32>, Value)> {
    let run = tidemark_in(
        &[
            "validate",
            url,
            "--allowed-signers",
            &keys.allowed_signers().display().to_string(),
            "--cache-dir",
            &cache.display().to_string(),
            "--format",
            "json",
        ],
        None,
        &[],
    )?;
    let report = serde_json::from_str(&run.stdout).with_context(|| format!("{run:?}"))?;
    Ok((run.code, report))
}

/// The sim's view: the control plane's target version, and the writes it served to
/// anything but the agent's Lease, Events and its status Namespace.
fn sim_effects(sim: &SimProcess) -> Result<(String, u64)> {
    let run = tidemark_in(
        &[
            "sim",
            "ctl",
            "--kubeconfig",
            &sim.kubeconfig().display().to_string(),
            "state",
        ],
        None,
        &[],
    )?;
    let state: Value =
        serde_json::from_str(&run.stdout).with_context(|| format!("sim state: {}", run.stdout))?;
    let target = state["controlPlane"]["targetVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let by_resource = state["requestsByResource"]
        .as_object()
        .context("sim state has no requestsByResource")?;
    let mut writes = 0;
    for (key, count) in by_resource {
        let (verb, resource) = key.split_once(' ').unwrap_or((key, ""));
        if matches!(verb, "create" | "update" | "patch" | "delete")
            && !matches!(resource, "leases" | "events" | "namespaces")
        {
            writes += count.as_u64().unwrap_or(0);
        }
    }
    Ok((target, writes))
}

struct Fixture {
    sim: SimProcess,
    repo: WorkRepo,
    _daemon: GitDaemon,
    url: String,
    keys: Keys,
    cache: tempfile::TempDir,
    /// Declares the running versions; signed by `release` and converged.
    first: String,
    /// Declares an upgrade of the control plane to 1.29.8.
    upgrade: String,
}

/// A cluster converged at a signed first commit, and a second commit that upgrades it,
/// not yet tagged.
fn fixture() -> Result<Fixture> {
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=1",
        "--speed",
        "50",
    ])?;
    let keys = Keys::new()?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    repo.write("clusters/sim.yaml", &manifest("1.28.9"))?;
    let first = repo.commit("fleet at 1.28.9")?;
    sign_tag(&repo, &keys, "release", "wave/canary", &first)?;
    let daemon = GitDaemon::start(&repo.base_dir())?;
    let url = daemon.url(&repo.name());
    let cache = tempfile::tempdir()?;
    let pass = once(&url, &sim, cache.path(), &keys)?;
    assert_eq!(
        (pass.phase.as_str(), pass.message.as_str()),
        ("Converged", "converged: control plane 1.28.9")
    );
    repo.write(
        "clusters/sim.yaml",
        &tidemark_e2e::sim_manifest(tidemark_e2e::CLUSTERAPI, "1.29.8", &[("general", "1.28.9")]),
    )?;
    let upgrade = repo.commit("upgrade the control plane to 1.29.8")?;
    Ok(Fixture {
        sim,
        repo,
        _daemon: daemon,
        url,
        keys,
        cache,
        first,
        upgrade,
    })
}

#[test]
fn a_tag_signed_by_an_allowed_key_is_followed() -> Result<()> {
    let f = fixture()?;
    assert_eq!(
        tidemark_e2e::status_annotation(&f.sim, "applied-revision"),
        f.first
    );
    sign_tag(&f.repo, &f.keys, "release", "wave/canary", &f.upgrade)?;
    assert_eq!(
        ssh_keygen_verifies(&f.repo, &f.keys, "release@example.com")?,
        Some(true)
    );

    let (_, writes_before) = sim_effects(&f.sim)?;
    let pass = once(&f.url, &f.sim, f.cache.path(), &f.keys)?;
    assert_eq!(pass.phase, "Progressing", "{pass:?}");
    assert_eq!(pass.executed, ["upgrade control plane 1.28.9 -> 1.29.8"]);
    let (target, writes) = sim_effects(&f.sim)?;
    assert_eq!(target, "1.29.8");
    assert!(writes > writes_before, "the upgrade wrote nothing");
    assert_eq!(
        tidemark_e2e::status_annotation(&f.sim, "desired-revision"),
        f.upgrade
    );

    // `desired` names the signer; `validate` accepts the tag.
    let run = tidemark_in(
        &[
            "desired",
            "--repo",
            &f.url,
            "--selector",
            "cluster=sim",
            "--cache-dir",
            &f.cache.path().display().to_string(),
            "--allowed-signers",
            &f.keys.allowed_signers().display().to_string(),
        ],
        None,
        &[],
    )?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let out: Value = serde_yaml::from_str(&run.stdout)?;
    assert_eq!(out["revision"], f.upgrade.as_str());
    assert_eq!(
        out["signedBy"]["fingerprint"],
        f.keys.fingerprint("release")?.as_str()
    );
    assert_eq!(out["signedBy"]["principals"], "release@example.com");
    let (code, report) = validate(&f.url, &f.keys, f.cache.path())?;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["signedTags"][0]["tag"], "wave/canary");
    assert_eq!(report["signedTags"][0]["commit"], f.upgrade.as_str());
    // A work tree: its files, its repository's tags.
    let (code, report) = validate(
        &f.repo.path().display().to_string(),
        &f.keys,
        f.cache.path(),
    )?;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["signedTags"][0]["commit"], f.upgrade.as_str());
    Ok(())
}

/// How the bad tag of one case is made.
enum Bad {
    Unsigned,
    Lightweight,
    WrongKey,
    /// A tag signed for the first commit, its `object` line rewritten to the upgrade.
    Tampered,
    OtherNamespace,
}

#[test]
fn unsigned_lightweight_wrong_key_tampered_and_foreign_namespace_tags_are_refused() -> Result<()> {
    let f = fixture()?;
    let (release, intruder, files) = (
        f.keys.fingerprint("release")?,
        f.keys.fingerprint("intruder")?,
        f.keys.fingerprint("files")?,
    );
    let allowed = f.keys.allowed_signers().display().to_string();
    let cases = [
        (
            Bad::Unsigned,
            "release@example.com",
            "the tag is not signed".to_string(),
        ),
        (
            Bad::Lightweight,
            "release@example.com",
            "it is a lightweight tag (it points at a commit directly)".to_string(),
        ),
        (
            Bad::WrongKey,
            "release@example.com",
            format!("key {intruder} is not in the allowed signers file {allowed}"),
        ),
        (
            Bad::Tampered,
            "release@example.com",
            format!("the signature by key {release} does not match the tag object"),
        ),
        (
            Bad::OtherNamespace,
            "files@example.com",
            format!(
                "key {files} (files@example.com) is allowed only for namespaces \"file\" ({allowed}:3), not `git`"
            ),
        ),
    ];
    let (target_before, writes_before) = sim_effects(&f.sim)?;
    assert_eq!(target_before, "1.28.9");
    for (bad, principal, why) in cases {
        match bad {
            Bad::Unsigned => f.repo.tag_annotated("wave/canary", &f.upgrade)?,
            Bad::Lightweight => f.repo.tag_light("wave/canary", &f.upgrade)?,
            Bad::WrongKey => sign_tag(&f.repo, &f.keys, "intruder", "wave/canary", &f.upgrade)?,
            Bad::OtherNamespace => sign_tag(&f.repo, &f.keys, "files", "wave/canary", &f.upgrade)?,
            Bad::Tampered => {
                sign_tag(&f.repo, &f.keys, "release", "wave/canary", &f.first)?;
                let object = f.repo.git(&["cat-file", "tag", "wave/canary"])?;
                let forged = object.replacen(
                    &format!("object {}", f.first),
                    &format!("object {}", f.upgrade),
                    1,
                );
                assert_ne!(forged, object);
                let path = f.repo.path().join("../forged-tag");
                std::fs::write(&path, format!("{forged}\n"))?;
                let id = f.repo.git(&[
                    "hash-object",
                    "-t",
                    "tag",
                    "-w",
                    &path.display().to_string(),
                ])?;
                f.repo.git(&["update-ref", "refs/tags/wave/canary", &id])?;
                // git itself now names the upgrade as the tag's commit.
                assert_eq!(
                    f.repo.git(&["rev-parse", "wave/canary^{commit}"])?,
                    f.upgrade
                );
            }
        }
        // ssh-keygen refuses too (or has no signature to look at).
        let keygen = ssh_keygen_verifies(&f.repo, &f.keys, principal)?;
        assert_ne!(keygen, Some(true), "ssh-keygen accepted the {why:?} case");
        assert_eq!(
            keygen.is_none(),
            matches!(bad, Bad::Unsigned | Bad::Lightweight),
            "{why}"
        );

        let pass = once(&f.url, &f.sim, f.cache.path(), &f.keys)?;
        assert_eq!(pass.phase, "Blocked", "{why}: {pass:?}");
        assert!(
            pass.message
                .starts_with(&format!("refusing to follow wave tag wave/canary: {why}")),
            "{why}: {pass:?}"
        );
        assert!(pass.executed.is_empty(), "{why}: {pass:?}");
        // Nothing of the upgrade was applied; the status says why.
        assert_eq!(
            sim_effects(&f.sim)?,
            (target_before.clone(), writes_before),
            "{why}"
        );
        assert_eq!(tidemark_e2e::status_annotation(&f.sim, "phase"), "Blocked");
        assert!(
            tidemark_e2e::status_annotation(&f.sim, "message").contains(&why),
            "{why}"
        );
        assert_eq!(
            tidemark_e2e::status_annotation(&f.sim, "applied-revision"),
            f.first
        );

        // validate reports the same refusal as a diagnostic on the tag.
        let (code, report) = validate(&f.url, &f.keys, f.cache.path())?;
        assert_eq!(code, Some(1), "{why}: {report}");
        let diags = report["diagnostics"].as_array().context("no diagnostics")?;
        assert_eq!(diags.len(), 1, "{report}");
        assert_eq!(diags[0]["file"], "refs/tags/wave/canary");
        let message = diags[0]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&why),
            "{message:?} does not start with {why:?}"
        );
    }
    // `plan` refuses the last tag (the foreign-namespace one) the same way.
    let run = tidemark_in(
        &[
            "plan",
            "--repo",
            &f.url,
            "--selector",
            "cluster=sim",
            "--cache-dir",
            &f.cache.path().display().to_string(),
            "--allowed-signers",
            &allowed,
        ],
        None,
        &[("KUBECONFIG", &f.sim.kubeconfig().display().to_string())],
    )?;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout.starts_with(&format!(
            "phase: Blocked\nmessage: refusing to follow wave tag wave/canary: key {files} (files@example.com) is allowed only for namespaces"
        )),
        "{run:?}"
    );
    let version = f.sim.kubectl(&["version", "-o", "json"])?;
    let v: Value = serde_json::from_str(&version)?;
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.28.9");
    Ok(())
}

#[test]
fn a_bad_allowed_signers_file_is_reported_with_line_and_column() -> Result<()> {
    let keys = Keys::new()?;
    let file = keys.allowed_signers();
    std::fs::write(
        &file,
        format!(
            "# ok\nrelease@example.com {}\nci namespaces=git {}\n",
            keys.public("release")?,
            keys.public("files")?
        ),
    )?;
    let path = file.display().to_string();
    let run = tidemark_in(
        &[
            "agent",
            "--once",
            "--repo",
            "/nonexistent",
            "--selector",
            "cluster=sim",
            "--allowed-signers",
            &path,
        ],
        None,
        &[],
    )?;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "{path}:3:15: option value must be in double quotes"
        )),
        "{}",
        run.stderr
    );
    // validate lists it as a diagnostic of the file.
    let repo = WorkRepo::one_cluster("1.30.2")?;
    repo.commit("fleet")?;
    let run = tidemark_in(
        &[
            "validate",
            &repo.path().display().to_string(),
            "--allowed-signers",
            &path,
        ],
        None,
        &[],
    )?;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stdout,
        format!("{path}:3:15: option value must be in double quotes\n")
    );
    Ok(())
}
