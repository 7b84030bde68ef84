//! Fleet operations: `tidemark status` and `tidemark promote` over a fleet of simulated
//! clusters, each run by the real `tidemark agent` (with `--report-ref`), the fleet repo
//! served by `git daemon` (pushes allowed) or `git http-backend` with basic auth on
//! 127.0.0.1. Where the tags point is read with the `git` CLI; the clusters' records with
//! kubectl and the agent's own `status::Record`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tidemark_e2e::{
    GitDaemon, GitHttpServer, Pass, Run, SimProcess, WorkRepo, cluster_yaml, status_record,
    tidemark_bin, tidemark_in, wait_until,
};

/// Waves and clusters of the five-sim fleet.
const CLUSTERS: [(&str, &str); 5] = [
    ("c1", "canary"),
    ("c2", "canary"),
    ("e1", "early"),
    ("e2", "early"),
    ("m1", "main"),
];

fn fleet_yaml(canary_budget: Option<&str>) -> String {
    let budget = canary_budget
        .map(|b| format!(", maxUnhealthy: {b}"))
        .unwrap_or_default();
    format!(
        "apiVersion: tidemark.dev/v1alpha1
kind: Fleet
metadata: {{name: five}}
spec:
  waves:
    - {{name: canary, soak: 10s{budget}}}
    - {{name: early, soak: 2s}}
    - {{name: main}}
"
    )
}

/// Five simulated clusters, each with a long-running agent publishing its record to the
/// fleet repo, which `git daemon` serves with pushes allowed.
struct Fleet {
    repo: WorkRepo,
    daemon: GitDaemon,
    sims: BTreeMap<&'static str, SimProcess>,
    agents: BTreeMap<&'static str, Child>,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn start() -> Result<Self> {
        let repo = WorkRepo::new()?;
        repo.write("fleet.yaml", &fleet_yaml(None))?;
        for (name, wave) in CLUSTERS {
            repo.write(
                &format!("clusters/{name}.yaml"),
                &cluster_yaml(name, Some(wave), "1.28.9"),
            )?;
        }
        let first = repo.commit("five clusters at 1.28.9")?;
        for wave in ["canary", "early", "main"] {
            repo.tag_annotated(&format!("wave/{wave}"), &first)?;
        }
        let daemon = GitDaemon::start_writable(&repo.base_dir())?;
        let dir = tempfile::tempdir()?;
        let mut fleet = Self {
            repo,
            daemon,
            sims: BTreeMap::new(),
            agents: BTreeMap::new(),
            dir,
        };
        for (name, _) in CLUSTERS {
            let sim = SimProcess::start(&[
                "--cluster-name",
                name,
                "--node-groups",
                "general=2",
                "--speed",
                "10",
            ])?;
            // Named after the cluster, so a context that cannot be read names it.
            std::fs::copy(sim.kubeconfig(), fleet.kubeconfig(name))?;
            fleet.sims.insert(name, sim);
            fleet.start_agent(name)?;
        }
        Ok(fleet)
    }

    fn url(&self) -> String {
        self.daemon.url(&self.repo.name())
    }

    fn kubeconfig(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.kubeconfig"))
    }

    fn start_agent(&mut self, name: &'static str) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        let child = Command::new(tidemark_bin()?)
            .args(["--log", "info", "agent", "--report-ref", "--repo"])
            .arg(self.url())
            .args(["--selector", &format!("cluster={name}")])
            .args(["--interval", "500ms", "--lease-duration", "2s"])
            .args(["--identity", name, "--metrics-addr", "127.0.0.1:0"])
            .arg("--cache-dir")
            .arg(self.dir.path().join(format!("cache-{name}")))
            .arg("--kubeconfig")
            .arg(self.kubeconfig(name))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.agents.insert(name, child);
        Ok(())
    }

    fn stop_agent(&mut self, name: &str) {
        if let Some(mut child) = self.agents.remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn record(&self, name: &str) -> Result<tidemark::status::Record> {
        status_record(self.sims.get(name).context("no such sim")?)
    }

    /// Waits until every cluster in `names` is Converged at `commit`.
    fn wait_converged(&self, names: &[&str], commit: &str) -> Result<()> {
        wait_until(
            Duration::from_secs(120),
            &format!("{names:?} converged at {commit}"),
            || {
                names.iter().all(|n| {
                    self.record(n).is_ok_and(|r| {
                        r.phase == Some(tidemark::plan::Phase::Converged)
                            && r.applied_revision.as_deref() == Some(commit)
                    })
                })
            },
        )
    }

    /// `tidemark ARGS --repo URL --cache-dir DIR/cli` with every sim's kubeconfig (but
    /// for `--from-git`).
    fn tidemark(&self, args: &[&str]) -> Result<Run> {
        let url = self.url();
        let cache = self.dir.path().join("cli-cache").display().to_string();
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--repo".into(), url, "--cache-dir".into(), cache]);
        if !args.contains(&"--from-git") && !args.contains(&"--history") {
            for (name, _) in CLUSTERS {
                all.push("--kubeconfig".into());
                all.push(self.kubeconfig(name).display().to_string());
            }
        }
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        tidemark_in(&refs, None, &[])
    }

    /// The commit `tag` names in the served repository.
    fn tag_commit(&self, tag: &str) -> Result<String> {
        self.repo.git(&["rev-parse", &format!("{tag}^{{commit}}")])
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.agents) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn short(commit: &str) -> &str {
    &commit[..12]
}

/// The decision's line for `cluster` (`  c1  NOT READY: ...`).
fn line_of<'a>(stdout: &'a str, cluster: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{cluster} ")))
        .unwrap_or("")
}

/// Phase of each cluster in `tidemark status -o json`.
fn phases(run: &Run) -> Result<BTreeMap<String, String>> {
    let view: Value =
        serde_json::from_str(&run.stdout).with_context(|| format!("status -o json: {run:?}"))?;
    let mut out = BTreeMap::new();
    for wave in view["waves"].as_array().into_iter().flatten() {
        for c in wave["clusters"].as_array().into_iter().flatten() {
            out.insert(
                c["name"].as_str().unwrap_or_default().to_string(),
                c["phase"].as_str().unwrap_or_default().to_string(),
            );
        }
    }
    Ok(out)
}

/// Three waves over five simulated clusters, one promotion after another: `promote early`
/// refuses while a canary cluster is Progressing, while the soak has not passed, and while
/// a canary cluster has applied another commit (each cluster and reason listed), passes
/// after; a stopped canary cluster is within a failure budget of 1 but not of 0; two
/// promotions racing for the same wave move the tag once; `status` shows the fleet through
/// kubeconfig contexts and from git alike, and the promotion log.
#[test]
fn promotions_wait_for_the_previous_wave_and_status_shows_the_fleet() -> Result<()> {
    let mut fleet = Fleet::start()?;
    let c0 = fleet.repo.git(&["rev-parse", "HEAD"])?;
    let all: Vec<&str> = CLUSTERS.iter().map(|(n, _)| *n).collect();
    fleet.wait_converged(&all, &c0)?;

    // Status through kubeconfig contexts: a table and JSON, every cluster at its tag.
    let table = fleet.tidemark(&["status"])?;
    assert_eq!(table.code, Some(0), "{table:?}");
    for (name, _) in CLUSTERS {
        let row = line_of(&table.stdout, name);
        assert!(
            row.contains("Converged") && row.contains("1.28.9") && row.contains(" yes "),
            "{name}: {}",
            table.stdout
        );
    }
    assert!(
        table.stdout.contains("WAVE canary  wave/canary -> "),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("5 cluster(s): 5 Converged"),
        "{}",
        table.stdout
    );
    let json = fleet.tidemark(&["status", "-o", "json"])?;
    let by_kubeconfig = phases(&json)?;
    assert_eq!(by_kubeconfig.len(), 5, "{json:?}");
    assert!(
        by_kubeconfig.values().all(|p| p == "Converged"),
        "{by_kubeconfig:?}"
    );
    // The same phases from git alone (every agent published its record).
    wait_until(Duration::from_secs(30), "status refs of all five", || {
        fleet
            .repo
            .git(&[
                "for-each-ref",
                "--format=%(refname)",
                "refs/tidemark/status/",
            ])
            .is_ok_and(|refs| refs.lines().count() == 5)
    })?;
    let from_git = fleet.tidemark(&["status", "--from-git", "-o", "json"])?;
    assert_eq!(phases(&from_git)?, by_kubeconfig, "{from_git:?}");
    let view: Value = serde_json::from_str(&from_git.stdout)?;
    assert_eq!(view["origin"], "git");

    // The upgrade, merged; canary (the first wave) moves to the head of main.
    for (name, wave) in CLUSTERS {
        fleet.repo.write(
            &format!("clusters/{name}.yaml"),
            &cluster_yaml(name, Some(wave), "1.29.8"),
        )?;
    }
    let c1 = fleet.repo.commit("upgrade to 1.29.8")?;
    let run = fleet.tidemark(&["promote", "canary"])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "promote canary: wave/canary {} -> {} (the head of main)",
            short(&c0),
            short(&c1)
        )),
        "{run:?}"
    );
    assert_eq!(fleet.tag_commit("wave/canary")?, c1);

    // 1. While a canary cluster is Progressing.
    wait_until(
        Duration::from_secs(30),
        "a canary cluster progressing",
        || {
            ["c1", "c2"].iter().any(|n| {
                fleet
                    .record(n)
                    .is_ok_and(|r| r.phase == Some(tidemark::plan::Phase::Progressing))
            })
        },
    )?;
    let run = fleet.tidemark(&["promote", "early", "--clock-skew", "0s"])?;
    assert_eq!(run.code, Some(1), "{run:?}");
    for name in ["c1", "c2"] {
        assert!(
            line_of(&run.stdout, name).contains("NOT READY: "),
            "{name}: {}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("NOT READY: Progressing: "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("applied {}, not {}", short(&c0), short(&c1))),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "2 cluster(s) of wave canary have not applied {} and stayed Converged for its soak of 10s",
            short(&c1)
        )),
        "{}",
        run.stdout
    );
    assert_eq!(fleet.tag_commit("wave/early")?, c0, "nothing moved");

    // 2. Converged, but the soak (10s) has not passed.
    fleet.wait_converged(&["c1", "c2"], &c1)?;
    let run = fleet.tidemark(&["promote", "early", "--clock-skew", "0s"])?;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stdout.contains("of its soak of 10s"), "{}", run.stdout);
    assert_eq!(fleet.tag_commit("wave/early")?, c0, "nothing moved");

    // 3. A canary cluster applied another commit: its agent stopped before canary moved on.
    fleet.stop_agent("c2");
    fleet.repo.write("README.md", "five clusters\n")?;
    let c2 = fleet.repo.commit("a readme")?;
    let run = fleet.tidemark(&["promote", "canary"])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    fleet.wait_converged(&["c1"], &c2)?;
    std::thread::sleep(Duration::from_secs(11));
    let run = fleet.tidemark(&["promote", "early", "--clock-skew", "0s"])?;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        line_of(&run.stdout, "c1").contains(&format!("ready: Converged at {}", short(&c2))),
        "{}",
        run.stdout
    );
    assert!(
        line_of(&run.stdout, "c2").contains(&format!(
            "NOT READY: applied {}, not {}",
            short(&c1),
            short(&c2)
        )),
        "{}",
        run.stdout
    );

    // 4. A stopped canary cluster is unreachable: beyond a budget of 0 (the default)...
    fleet.sims.remove("c2");
    let started = Instant::now();
    let run = fleet.tidemark(&["promote", "early", "--clock-skew", "0s", "--timeout", "3s"])?;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        line_of(&run.stdout, "c2").contains("UNHEALTHY: unreachable: context sim"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("its failure budget (maxUnhealthy 0) allows 0"),
        "{}",
        run.stdout
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // ... and `status` shows it unreachable, within the timeout, in the table and in JSON.
    let started = Instant::now();
    let table = fleet.tidemark(&["status", "--timeout", "3s"])?;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "status took {took:?}");
    let row = line_of(&table.stdout, "c2");
    assert!(
        row.contains("Unreachable") && row.contains("context sim"),
        "{}",
        table.stdout
    );
    let json = fleet.tidemark(&["status", "--timeout", "3s", "-o", "json"])?;
    assert_eq!(
        phases(&json)?.get("c2").map(String::as_str),
        Some("Unreachable")
    );
    // ... within a budget of 1, named in the output.
    fleet.repo.write("fleet.yaml", &fleet_yaml(Some("1")))?;
    fleet.repo.commit("canary may lose one cluster")?;
    let run = fleet.tidemark(&["promote", "early", "--clock-skew", "0s", "--timeout", "3s"])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        line_of(&run.stdout, "c2").contains("tolerated (failure budget): unreachable: "),
        "{}",
        run.stdout
    );
    assert_eq!(fleet.tag_commit("wave/early")?, c2);
    let message = fleet
        .repo
        .git(&["tag", "-l", "--format=%(contents)", "wave/early"])?;
    assert!(
        message.contains("previous wave canary: 2 cluster(s), soak 10s, maxUnhealthy 1")
            && message.contains(&format!("ready: Converged at {}", short(&c2))),
        "the tag records its evidence: {message}"
    );

    // 5. Two promotions racing for main: exactly one moves the tag. The server holds each
    // push for a while, so both check the tag before either has moved it.
    fleet.wait_converged(&["e1", "e2"], &c2)?;
    std::thread::sleep(Duration::from_secs(3));
    let hook = fleet.repo.path().join(".git/hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\ncat >/dev/null\nsleep 3\n")?;
    Command::new("chmod").arg("+x").arg(&hook).status()?;
    let racers: Vec<std::thread::JoinHandle<Result<Run>>> = (0..2)
        .map(|_| {
            let url = fleet.url();
            let cache = tempfile::tempdir();
            let kubeconfigs: Vec<String> = ["e1", "e2"]
                .iter()
                .map(|n| fleet.kubeconfig(n).display().to_string())
                .collect();
            std::thread::spawn(move || {
                let cache = cache?;
                let cache = cache.path().display().to_string();
                let mut args = vec![
                    "promote",
                    "main",
                    "--repo",
                    &url,
                    "--cache-dir",
                    &cache,
                    "--clock-skew",
                    "0s",
                ];
                for k in &kubeconfigs {
                    args.extend(["--kubeconfig", k]);
                }
                tidemark_in(&args, None, &[])
            })
        })
        .collect();
    let runs: Vec<Run> = racers
        .into_iter()
        .map(|h| h.join().map_err(|_| anyhow::anyhow!("racer panicked"))?)
        .collect::<Result<_>>()?;
    std::fs::remove_file(&hook)?;
    let winners: Vec<&Run> = runs.iter().filter(|r| r.code == Some(0)).collect();
    let losers: Vec<&Run> = runs.iter().filter(|r| r.code == Some(1)).collect();
    assert_eq!((winners.len(), losers.len()), (1, 1), "{runs:?}");
    assert!(
        winners[0].stdout.contains("promoted: wave/main -> "),
        "{runs:?}"
    );
    assert!(
        losers[0]
            .stdout
            .contains("refusing to promote: the tag moved since the check"),
        "{runs:?}"
    );
    assert_eq!(fleet.tag_commit("wave/main")?, c2);

    // The promotion log: every promotion, newest first, the racer's once.
    let history = fleet.tidemark(&["status", "--history", "-o", "json"])?;
    let entries: Vec<Value> = serde_json::from_str(&history.stdout)?;
    let waves: Vec<&str> = entries
        .iter()
        .map(|e| {
            e["promotion"]["decision"]["wave"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(waves, ["main", "early", "canary", "canary"], "{history:?}");
    let text = fleet.tidemark(&["status", "--history"])?;
    assert!(
        text.stdout.contains("within its failure budget: c2"),
        "{}",
        text.stdout
    );
    assert!(
        !fleet.log("c1").contains("failed to publish"),
        "{}",
        fleet.log("c1")
    );
    Ok(())
}

/// A freeze in fleet.yaml: `promote` refuses and says when it ends; `--override-freeze
/// --reason` promotes and the log records why. Over HTTP with basic auth: the push uses
/// the credentials of the fetch.
#[test]
fn a_freeze_refuses_promotions_until_overridden_with_a_reason() -> Result<()> {
    let day = |offset: &str| -> Result<String> {
        let out = Command::new("date")
            .args(["-u", "-d", offset, "+%F"])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let (yesterday, tomorrow) = (day("-1 day")?, day("+1 day")?);
    let repo = WorkRepo::new()?;
    repo.write(
        "fleet.yaml",
        &format!(
            "apiVersion: tidemark.dev/v1alpha1
kind: Fleet
metadata: {{name: frozen}}
spec:
  waves: [{{name: canary}}, {{name: main}}]
  freezes:
    - {{name: holidays, from: \"{yesterday}\", until: \"{tomorrow}\", reason: end of year}}
"
        ),
    )?;
    repo.write(
        "clusters/a.yaml",
        &cluster_yaml("a", Some("canary"), "1.28.9"),
    )?;
    let head = repo.commit("a frozen fleet")?;
    let server = GitHttpServer::start(&repo.base_dir(), "ci", "s3cret")?;
    let cache = tempfile::tempdir()?;
    let url = server.url(&repo.name());
    let cache_dir = cache.path().display().to_string();
    let promote = |extra: &[&str]| -> Result<Run> {
        let mut args = vec![
            "promote",
            "canary",
            "--from-git",
            "--repo",
            &url,
            "--cache-dir",
            &cache_dir,
            "--by",
            "Release Bot <release@example.com>",
        ];
        args.extend(extra);
        tidemark_in(
            &args,
            None,
            &[
                ("TIDEMARK_GIT_USERNAME", "ci"),
                ("TIDEMARK_GIT_PASSWORD", "s3cret"),
            ],
        )
    };

    let run = promote(&[])?;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "promotions are frozen (holidays) until {tomorrow}T00:00:00Z"
        )),
        "{run:?}"
    );
    assert!(
        repo.git(&["tag", "-l", "wave/canary"])?.is_empty(),
        "nothing moved"
    );

    let run = promote(&["--override-freeze"])?;
    assert_eq!(run.code, Some(2), "a reason is required: {run:?}");

    let run = promote(&["--override-freeze", "--reason", "hotfix for CVE-2026-0001"])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(repo.git(&["rev-parse", "wave/canary^{commit}"])?, head);
    let log = repo.git(&["log", "--format=%an <%ae>: %s", "refs/tidemark/promotions"])?;
    assert_eq!(
        log,
        format!(
            "Release Bot <release@example.com>: promote canary: (none) -> {} (freeze overridden: hotfix for CVE-2026-0001)",
            short(&head)
        )
    );
    let history = tidemark_in(
        &[
            "status",
            "--history",
            "--repo",
            &url,
            "--cache-dir",
            &cache_dir,
        ],
        None,
        &[
            ("TIDEMARK_GIT_USERNAME", "ci"),
            ("TIDEMARK_GIT_PASSWORD", "s3cret"),
        ],
    )?;
    assert!(
        history
            .stdout
            .contains("freeze holidays overridden: hotfix for CVE-2026-0001"),
        "{history:?}"
    );
    // The wrong password is refused, and says so without the password.
    let run = tidemark_in(
        &[
            "promote",
            "main",
            "--from-git",
            "--repo",
            &url,
            "--cache-dir",
            &cache_dir,
        ],
        None,
        &[
            ("TIDEMARK_GIT_USERNAME", "ci"),
            ("TIDEMARK_GIT_PASSWORD", "wrong"),
        ],
    )?;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(!run.stderr.contains("wrong"), "{run:?}");
    Ok(())
}

/// `spec.paused: true` in fleet.yaml on the default branch: an agent starts no step, even
/// with its wave tag on an upgrade; the sim counts no write to the control plane.
#[test]
fn a_paused_fleet_starts_no_step() -> Result<()> {
    let sim = SimProcess::start(&["--node-groups", "general=1", "--speed", "20"])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &tidemark_e2e::fleet_yaml(&["canary"]))?;
    let manifest =
        |v: &str| tidemark_e2e::sim_manifest(tidemark_e2e::CLUSTERAPI, v, &[("general", v)]);
    repo.write("clusters/sim.yaml", &manifest("1.28.9"))?;
    repo.commit("sim at 1.28.9")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    let cache = tempfile::tempdir()?;
    let once = || -> Result<Pass> {
        let run = tidemark_in(
            &[
                "agent",
                "--once",
                "--repo",
                &repo.path().display().to_string(),
                "--selector",
                "cluster=sim",
                "--cache-dir",
                &cache.path().display().to_string(),
                "--kubeconfig",
                &sim.kubeconfig().display().to_string(),
            ],
            None,
            &[],
        )?;
        if run.code != Some(0) {
            bail!("agent --once failed: {run:?}");
        }
        Ok(Pass::parse(&run.stdout))
    };
    assert_eq!(once()?.phase, "Converged");

    repo.write("clusters/sim.yaml", &manifest("1.29.8"))?;
    repo.commit("upgrade")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    repo.write(
        "fleet.yaml",
        &tidemark_e2e::fleet_yaml(&["canary"]).replace("spec:\n", "spec:\n  paused: true\n"),
    )?;
    repo.commit("stop every agent")?;
    let before = control_plane_writes(&sim)?;
    for _ in 0..3 {
        let pass = once()?;
        assert_eq!(
            (pass.phase.as_str(), pass.message.as_str()),
            (
                "Paused",
                "the whole fleet is paused in git (fleet.yaml spec.paused: true)"
            )
        );
        assert!(pass.executed.is_empty(), "{pass:?}");
    }
    assert_eq!(
        control_plane_writes(&sim)?,
        before,
        "no write to the control plane"
    );
    let version = sim.kubectl(&[
        "get",
        "kubeadmcontrolplane",
        "-A",
        "-o",
        "jsonpath={.items[0].spec.version}",
    ])?;
    assert_eq!(version.trim_start_matches('v'), "1.28.9");

    // One commit lifts it.
    repo.write("fleet.yaml", &tidemark_e2e::fleet_yaml(&["canary"]))?;
    repo.commit("resume")?;
    let pass = once()?;
    assert_eq!(pass.phase, "Progressing", "{pass:?}");
    assert!(control_plane_writes(&sim)? > before);
    Ok(())
}

/// Writes the sim counted to KubeadmControlPlanes.
fn control_plane_writes(sim: &SimProcess) -> Result<u64> {
    let run = tidemark_in(
        &["sim", "ctl", "state"],
        None,
        &[("KUBECONFIG", &sim.kubeconfig().display().to_string())],
    )?;
    let state: Value = serde_json::from_str(&run.stdout)?;
    Ok(state["requestsByResource"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| {
            let (verb, resource) = key.split_once(' ').unwrap_or((key, ""));
            resource == "kubeadmcontrolplanes" && matches!(verb, "create" | "update" | "patch")
        })
        .map(|(_, n)| n.as_u64().unwrap_or(0))
        .sum())
}

/// `promote --sign-key`: the tag is signed as `git tag -s` (gpg.format=ssh) signs it; `git
/// verify-tag` accepts it, and so does `tidemark agent --allowed-signers`, which refuses
/// the same promotion unsigned.
#[test]
fn a_tag_promote_signs_is_followed_by_agents_that_require_signatures() -> Result<()> {
    let keys = tempfile::tempdir()?;
    let key = keys.path().join("release");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "release", "-f"])
        .arg(&key)
        .stdin(Stdio::null())
        .status()?
        .success();
    if !ok {
        bail!("ssh-keygen failed");
    }
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    let allowed = keys.path().join("allowed_signers");
    std::fs::write(
        &allowed,
        format!("release@example.com namespaces=\"git\" {}", public.trim()),
    )?;

    let sim = SimProcess::start(&["--node-groups", "general=1", "--speed", "20"])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &tidemark_e2e::fleet_yaml(&["canary"]))?;
    repo.write(
        "clusters/sim.yaml",
        &tidemark_e2e::sim_manifest(tidemark_e2e::CLUSTERAPI, "1.29.8", &[("general", "1.28.9")]),
    )?;
    let head = repo.commit("upgrade sim")?;
    let daemon = GitDaemon::start_writable(&repo.base_dir())?;
    let url = daemon.url(&repo.name());
    let work = tempfile::tempdir()?;
    let cache = |name: &str| work.path().join(name).display().to_string();
    let promote = |extra: &[&str]| -> Result<Run> {
        let mut args = vec![
            "promote",
            "canary",
            "--from-git",
            "--repo",
            &url,
            "--cache-dir",
        ];
        let dir = cache("cli");
        args.push(&dir);
        args.extend(extra);
        tidemark_in(&args, None, &[])
    };
    let agent = || -> Result<Pass> {
        let run = tidemark_in(
            &[
                "agent",
                "--once",
                "--repo",
                &url,
                "--selector",
                "cluster=sim",
                "--cache-dir",
                &cache("agent"),
                "--kubeconfig",
                &sim.kubeconfig().display().to_string(),
                "--allowed-signers",
                &allowed.display().to_string(),
            ],
            None,
            &[],
        )?;
        if run.code != Some(0) {
            bail!("agent --once failed: {run:?}");
        }
        Ok(Pass::parse(&run.stdout))
    };

    // Unsigned: the agent refuses it.
    let run = promote(&[])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let pass = agent()?;
    assert_eq!(pass.phase, "Blocked", "{pass:?}");
    assert!(pass.message.contains("the tag is not signed"), "{pass:?}");

    // Signed: moved again (to the same commit, by a new tag object), and followed.
    repo.write("README.md", "signed\n")?;
    let signed_head = repo.commit("a readme")?;
    let key_path = key.display().to_string();
    let run = promote(&["--sign-key", &key_path])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains(", signed by SHA256:"), "{run:?}");
    assert_eq!(
        repo.git(&["rev-parse", "wave/canary^{commit}"])?,
        signed_head
    );
    assert_ne!(signed_head, head);
    let verify = Command::new("git")
        .args([
            "-c",
            &format!("gpg.ssh.allowedSignersFile={}", allowed.display()),
            "verify-tag",
            "wave/canary",
        ])
        .current_dir(repo.path())
        .output()?;
    assert!(
        verify.status.success(),
        "git verify-tag: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        String::from_utf8_lossy(&verify.stderr)
            .contains("Good \"git\" signature for release@example.com"),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let pass = agent()?;
    assert_eq!(pass.phase, "Progressing", "{pass:?}");
    assert_eq!(pass.executed, ["upgrade control plane 1.28.9 -> 1.29.8"]);
    Ok(())
}

/// `agent --report-ref` over HTTP with basic auth: the record lands on
/// `refs/tidemark/status/<cluster>` of the server's repository as `status.json`, and
/// `status --from-git` reads it with git access alone.
#[test]
fn the_status_record_is_published_to_git_with_the_fetch_credentials() -> Result<()> {
    let sim = SimProcess::start(&["--node-groups", "general=1"])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &tidemark_e2e::fleet_yaml(&["canary"]))?;
    repo.write(
        "clusters/sim.yaml",
        &tidemark_e2e::sim_manifest(tidemark_e2e::CLUSTERAPI, "1.28.9", &[("general", "1.28.9")]),
    )?;
    let head = repo.commit("sim")?;
    repo.tag_annotated("wave/canary", &head)?;
    let server = GitHttpServer::start(&repo.base_dir(), "agent", "pa55")?;
    let url = server.url(&repo.name());
    let work = tempfile::tempdir()?;
    let kubeconfig = sim.kubeconfig().display().to_string();
    let agent_cache = work.path().join("agent").display().to_string();
    let run = tidemark_in(
        &[
            "agent",
            "--once",
            "--report-ref",
            "--repo",
            &url,
            "--selector",
            "cluster=sim",
            "--cache-dir",
            &agent_cache,
            "--kubeconfig",
            &kubeconfig,
        ],
        None,
        &[
            ("TIDEMARK_GIT_USERNAME", "agent"),
            ("TIDEMARK_GIT_PASSWORD", "pa55"),
        ],
    )?;
    assert_eq!(Pass::parse(&run.stdout).phase, "Converged", "{run:?}");
    let content = repo.git(&["show", "refs/tidemark/status/sim:status.json"])?;
    let record = tidemark::status::publish::from_file(content.as_bytes())
        .context("status.json is not a record")?;
    assert_eq!(
        record,
        status_record(&sim)?,
        "the record in git is the one in the cluster"
    );
    let author = repo.git(&["log", "-1", "--format=%an: %s", "refs/tidemark/status/sim"])?;
    assert_eq!(
        author,
        format!(
            "tidemark agent sim: status of sim: Converged at {}",
            short(&head)
        )
    );

    // Reading it from git writes nothing.
    let before = repo.git(&["rev-parse", "refs/tidemark/status/sim"])?;
    let status = tidemark_in(
        &[
            "status",
            "--from-git",
            "--repo",
            &url,
            "--cache-dir",
            &work.path().join("cli").display().to_string(),
            "-o",
            "json",
        ],
        None,
        &[
            ("TIDEMARK_GIT_USERNAME", "agent"),
            ("TIDEMARK_GIT_PASSWORD", "pa55"),
        ],
    )?;
    assert_eq!(status.code, Some(0), "{status:?}");
    let view: Value = serde_json::from_str(&status.stdout)?;
    let cluster = &view["waves"][0]["clusters"][0];
    assert_eq!(cluster["name"], "sim");
    assert_eq!(cluster["phase"], "Converged");
    assert_eq!(cluster["atWaveTag"], true);
    assert_eq!(cluster["via"], "refs/tidemark/status/sim");
    assert_eq!(
        repo.git(&["rev-parse", "refs/tidemark/status/sim"])?,
        before
    );

    // --watch redraws until interrupted; not on a terminal, without escape codes.
    let mut watch = Command::new(tidemark_bin()?)
        .args([
            "status",
            "--from-git",
            "--watch",
            "--interval",
            "300ms",
            "--repo",
            &url,
        ])
        .arg("--cache-dir")
        .arg(work.path().join("watch"))
        .env("TIDEMARK_GIT_USERNAME", "agent")
        .env("TIDEMARK_GIT_PASSWORD", "pa55")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(3));
    let _ = watch.kill();
    let out = watch.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let draws = text.matches("fleet test on main at ").count();
    assert!(draws >= 2, "{draws} draws: {text}");
    assert!(!text.contains('\x1b'), "{text}");
    Ok(())
}
