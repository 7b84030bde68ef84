//! kill -9 at every point of a pass, deterministically (issue 14, item 3): the real binary
//! runs pass after pass with `TIDEMARK_CRASH_AT=POINT@N` (see `agent/src/crash.rs`), so it
//! aborts, as `kill -9` stops it, after helm answered, between the applies of one
//! component's objects, between deletions of a prune, during drift corrections, after a
//! Cluster API version patch and around the status write, across a rollout of five fleet
//! commits (two control-plane hops with their node groups, values changes, a component
//! removed and added back, objects edited by hand). Then it must converge, and the sim's
//! request counters (never log lines) show that no provider request was issued twice and
//! that nothing was deleted but the removed component's objects; and no pass ever reported
//! the changed component Healthy while its old render was still applied.
//!
//! `drain: tidemark` has its own kill -9 test (five points, tests/tests/drain.rs); the exec
//! provider's commands are killed mid-run in tests/tests/chaos.rs.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use tidemark_e2e::{
    CLUSTERAPI, Run, SimProcess, WorkRepo, copy_dir, fleet_yaml, helm_bin, sim_manifest,
    status_record, tidemark_in, workspace_root,
};

/// The crash points of a release, in the order its rollout reaches them (`POINT@N`: the
/// N-th time in one process). Each is tried pass after pass until the agent aborts there
/// (or the release converged without reaching it: the test then fails, as a point that is
/// never reached tests nothing). A hop asks the provider twice, in two passes (the control
/// plane, then the node group); metrics-lite renders 5 objects, the `limits` component 1;
/// each `drift-corrected` follows a hand edit.
const HOP: &[&str] = &["provider-requested@1"];
const REMOVED: &[&str] = &[
    "rendered@1",
    "object-applied@1",
    "object-applied@2",
    "object-applied@3",
    "object-applied@4",
    "object-applied@5",
];
const ADDED: &[&str] = &[
    "rendered@1",
    "rendered@2",
    "object-applied@1",
    "object-applied@2",
    "object-applied@3",
    "object-applied@4",
    "object-applied@5",
    "object-applied@6",
];
const SETTLED: &[&str] = &[
    "status-write@1",
    "status-written@1",
    "drift-corrected@1",
    "drift-corrected@1",
];

fn manifest(cp: &str, rev: u32, with_limits: bool) -> String {
    let mut m = sim_manifest(CLUSTERAPI, cp, &[("general", cp)]);
    m.push_str(&format!(
        "  components:
    - name: metrics-lite
      chart: {{path: charts/metrics-lite}}
      namespace: monitoring
      values: {{config: {{externalLabels: {{rev: \"{rev}\"}}}}}}
"
    ));
    if with_limits {
        m.push_str(
            "    - name: limits
      chart: {path: charts/limits}
      namespace: monitoring
",
        );
    }
    m
}

const LIMITS_CHART: &str = "apiVersion: v1
kind: LimitRange
metadata:
  name: {{ .Release.Name }}
spec:
  limits: [{type: Container, default: {cpu: 500m}}]
";

struct Rollout {
    repo: WorkRepo,
    sim: SimProcess,
    cache: tempfile::TempDir,
}

impl Rollout {
    fn pass(&self, crash_at: Option<&str>) -> Result<Run> {
        let helm = helm_bin()?.display().to_string();
        let cache = self.cache.path().display().to_string();
        let kubeconfig = self.sim.kubeconfig().display().to_string();
        let repo = self.repo.path().display().to_string();
        let mut env = vec![("KUBECONFIG", kubeconfig.as_str())];
        if let Some(point) = crash_at {
            env.push(("TIDEMARK_CRASH_AT", point));
        }
        tidemark_in(
            &[
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
                // The same replica restarted, as a container in its pod is: it takes its
                // Lease back at once.
                "--identity",
                "crash-test",
                "--drift-interval",
                "0s",
                "--component-wait",
                "3s",
            ],
            None,
            &env,
        )
    }

    fn release(&self, cp: &str, rev: u32, with_limits: bool) -> Result<()> {
        self.repo
            .write("clusters/sim.yaml", &manifest(cp, rev, with_limits))?;
        let commit = self.repo.commit(&format!("{cp}, rev {rev}"))?;
        self.repo.git(&["tag", "-f", "wave/canary", &commit])?;
        Ok(())
    }

    /// Edits a field tidemark applied, by hand: drift for the next pass (when the object
    /// is there yet).
    fn tamper(&self) {
        let _ = self.sim.kubectl(&[
            "patch",
            "configmap",
            "metrics-lite",
            "-n",
            "monitoring",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"metrics-lite.yaml":"tampered: true\n"}}"#,
        ]);
    }

    fn config(&self) -> String {
        self.sim
            .kubectl(&[
                "get",
                "configmap",
                "metrics-lite",
                "-n",
                "monitoring",
                "-o",
                "jsonpath={.data.metrics-lite\\.yaml}",
            ])
            .unwrap_or_default()
    }

    fn converge(&self, what: &str) -> Result<()> {
        for _ in 0..120 {
            let run = self.pass(None)?;
            if run.stdout.starts_with("phase: Converged") {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        bail!("{what}: never converged: {}", self.pass(None)?.stdout)
    }
}

#[test]
fn kill_9_at_every_point_of_five_releases_converges_without_repeats_or_wrong_prunes() -> Result<()>
{
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=2",
        "--speed",
        "40",
    ])?;
    let repo = WorkRepo::new()?;
    copy_dir(
        &workspace_root().join("fleet-repo-example/charts/metrics-lite"),
        &repo.path().join("charts/metrics-lite"),
    )?;
    repo.write(
        "charts/limits/Chart.yaml",
        "apiVersion: v2\nname: limits\nversion: 1.0.0\n",
    )?;
    repo.write("charts/limits/templates/limitrange.yaml", LIMITS_CHART)?;
    repo.write(
        "fleet.yaml",
        &format!(
            "{}  kubernetesVersions: [\"1.29.8\"]\n",
            fleet_yaml(&["canary"])
        ),
    )?;
    let rollout = Rollout {
        repo,
        sim,
        cache: tempfile::tempdir()?,
    };
    rollout.release("1.28.9", 1, true)?;
    rollout.converge("the starting point")?;
    let start = rollout.sim.requests_by_resource()?;

    // Five releases: a hop with new values and the component removed; a hop with new
    // values and the component back; then new values with it removed, back, removed.
    let releases = [
        ("1.29.8", 2, false),
        ("1.30.4", 3, true),
        ("1.30.4", 4, false),
        ("1.30.4", 5, true),
        ("1.30.4", 6, false),
    ];
    let mut crashed = std::collections::BTreeSet::new();
    let mut runs = 0;
    for (cp, rev, with_limits) in releases {
        let before = status_record(&rollout.sim)?;
        let old_inputs = before
            .components
            .get("metrics-lite")
            .and_then(|c| c.inputs.clone());
        rollout.release(cp, rev, with_limits)?;
        // A removed component is pruned in the first pass, before the hop's requests.
        let prune: &[&str] = if with_limits {
            &[]
        } else {
            &["object-pruned@1"]
        };
        let hop = if rev <= 3 { HOP } else { &[][..] };
        let points: Vec<&str> = prune
            .iter()
            .chain(hop)
            .chain(if with_limits { ADDED } else { REMOVED })
            .chain(SETTLED)
            .copied()
            .collect();
        for (i, point) in points.iter().enumerate() {
            for _try in 0..30 {
                if point.starts_with("drift-corrected") {
                    rollout.tamper();
                }
                let run = rollout.pass(Some(point))?;
                runs += 1;
                assert!(!run.stderr.contains("panicked"), "{run:?}");
                let aborted = run.code.is_none();
                if aborted {
                    assert!(
                        run.stderr.contains(&format!("crash point {point} reached")),
                        "{run:?}"
                    );
                    crashed.insert(format!("{cp} rev {rev} #{i:02} {point}"));
                }
                // Healthy is never claimed for new inputs while the old render is live.
                // (A hand edit since the last drift check is drift, not the old render:
                // only an earlier release's values count.)
                let record = status_record(&rollout.sim)?;
                if let Some(c) = record.components.get("metrics-lite")
                    && c.inputs != old_inputs
                    && c.health == tidemark::status::ComponentHealth::Healthy
                {
                    let config = rollout.config();
                    assert!(
                        (1..rev).all(|old| !config.contains(&format!("rev: \"{old}\""))),
                        "metrics-lite reported Healthy for rev {rev}, live config: {config}"
                    );
                }
                if aborted {
                    break;
                }
                let converged = run.stdout.starts_with("phase: Converged");
                let late = point.starts_with("status") || point.starts_with("drift");
                // The node group's request may come in the control plane's pass.
                if converged && point.starts_with("provider") {
                    break;
                }
                assert!(
                    late || !converged,
                    "{cp} rev {rev}: converged without reaching {point} (#{i}): {}",
                    run.stdout
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        rollout.converge(&format!("{cp} rev {rev}"))?;
        assert!(rollout.config().contains(&format!("rev: \"{rev}\"")));
    }
    println!(
        "{runs} runs, aborted at {} distinct points: {crashed:?}",
        crashed.len()
    );
    assert!(
        crashed.len() >= 50,
        "aborted at {} distinct points: {crashed:?}",
        crashed.len()
    );

    // From the sim's counters: every provider request once, deletions only of what left.
    let end = rollout.sim.requests_by_resource()?;
    let delta =
        |key: &str| end.get(key).copied().unwrap_or(0) - start.get(key).copied().unwrap_or(0);
    assert_eq!(
        delta("patch kubeadmcontrolplanes"),
        2,
        "one patch per control-plane hop (1.29.8, 1.30.4)"
    );
    assert_eq!(
        delta("patch machinedeployments"),
        2,
        "one patch per node-group hop"
    );
    let deleted: BTreeMap<&String, u64> = end
        .iter()
        .filter(|(k, _)| k.starts_with("delete ") || k.starts_with("deletecollection "))
        .map(|(k, v)| (k, v - start.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    assert!(
        deleted.keys().all(|k| *k == "delete limitranges"),
        "only the removed component's objects were deleted: {deleted:?}"
    );
    assert!(
        delta("delete limitranges") == 3,
        "the LimitRange pruned once per removal: {deleted:?}"
    );
    let nodes = rollout.sim.kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].status.nodeInfo.kubeletVersion}",
    ])?;
    assert!(nodes.split_whitespace().all(|v| v == "v1.30.4"), "{nodes}");
    Ok(())
}
