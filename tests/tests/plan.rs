//! `tidemark plan` and `tidemark sim`: the real binary reads a fleet repo and a simulated
//! cluster (a `tidemark sim` process), and `kubectl` acts on the cluster independently.

use anyhow::Result;
use tidemark_e2e::{SimProcess, WorkRepo, fleet_yaml, tidemark};

/// A fleet with one cluster `sim` (the simulated cluster's name) at `cp`, one group.
fn fleet(cp: &str, general: &str, gpu: &str) -> Result<WorkRepo> {
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    let groups = [("general", general), ("gpu", gpu)];
    repo.write(
        "clusters/sim.yaml",
        &tidemark_e2e::sim_manifest(tidemark_e2e::CLUSTERAPI, cp, &groups),
    )?;
    repo.commit("fleet")?;
    repo.tag_annotated("wave/canary", "HEAD")?;
    Ok(repo)
}

fn plan(repo: &WorkRepo, sim: &SimProcess) -> Result<tidemark_e2e::Run> {
    let cache = tempfile::tempdir()?;
    tidemark(&[
        "plan",
        "--repo",
        &repo.path().display().to_string(),
        "--selector",
        "cluster=sim",
        "--cache-dir",
        &cache.path().display().to_string(),
        "--kubeconfig",
        &sim.kubeconfig().display().to_string(),
    ])
}

#[test]
fn plan_shows_the_route_from_the_simulated_cluster_to_git() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=2,gpu=1",
        "--node-versions",
        "gpu=1.26.15",
    ])?;
    // kubectl, an independent client, sees the nodes the plan is about.
    let nodes = sim.kubectl(&["get", "nodes", "-o", "name"])?;
    assert_eq!(nodes.lines().count(), 3, "{nodes}");

    let repo = fleet("1.30.4", "1.30.4", "1.29.8")?;
    let run = plan(&repo, &sim)?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let expected_tail = "observed: control plane 1.28.9; node groups: general 1.28.9 (2/2 ready), gpu 1.26.15 (1/1 ready)
phase: Progressing
message: upgrade control plane 1.28.9 -> 1.29.8
next:
  - upgrade control plane 1.28.9 -> 1.29.8
route to the desired state:
  1. upgrade control plane 1.28.9 -> 1.29.8
  2. upgrade node group gpu 1.26.15 -> 1.29.8 (to stay within kubelet skew of the next control-plane minor)
  3. upgrade control plane 1.29.8 -> 1.30.4
  4. upgrade node group general 1.28.9 -> 1.30.4 (to its declared version)
";
    assert!(run.stdout.ends_with(expected_tail), "{}", run.stdout);
    assert!(
        run.stdout
            .starts_with("cluster: sim (clusters/sim.yaml, wave canary)\n"),
        "{}",
        run.stdout
    );
    Ok(())
}

#[test]
fn plan_honours_the_paused_annotation_set_with_kubectl_and_refuses_downgrades() -> Result<()> {
    let sim = SimProcess::start(&["--version", "1.29.8", "--node-groups", "general=1,gpu=1"])?;
    let repo = fleet("1.30.4", "1.30.4", "1.29.8")?;
    sim.kubectl(&[
        "annotate",
        "namespace",
        "tidemark-system",
        "tidemark.dev/paused=true",
    ])?;
    let run = plan(&repo, &sim)?;
    assert!(
        run.stdout.contains(
            "phase: Paused\nmessage: paused by the annotation tidemark.dev/paused=\"true\" on the status object\nnext: nothing now\n"
        ),
        "{}",
        run.stdout
    );
    sim.kubectl(&[
        "annotate",
        "namespace",
        "tidemark-system",
        "tidemark.dev/paused-",
    ])?;
    assert!(
        plan(&repo, &sim)?
            .stdout
            .contains("phase: Progressing\nmessage: upgrade control plane 1.29.8 -> 1.30.4\n")
    );

    let older = fleet("1.28.9", "1.28.9", "1.28.9")?;
    let run = plan(&older, &sim)?;
    assert!(
        run.stdout.contains(
            "phase: Blocked\nmessage: control plane runs 1.29.8, newer than the declared 1.28.9: tidemark never downgrades; declare 1.29.8 or later; \
             node group general runs 1.29.8, newer than the declared 1.28.9: tidemark never downgrades; \
             node group gpu runs 1.29.8, newer than the declared 1.28.9: tidemark never downgrades\n"
        ),
        "{}",
        run.stdout
    );
    Ok(())
}

#[test]
fn sim_ctl_upgrades_through_the_simulated_cloud() -> Result<()> {
    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=1",
        "--speed",
        "50",
    ])?;
    let kubeconfig = sim.kubeconfig().display().to_string();
    let out = tidemark(&[
        "sim",
        "ctl",
        "--kubeconfig",
        &kubeconfig,
        "upgrade-control-plane",
        "1.29.4",
        "--wait",
    ])?;
    assert_eq!(out.code, Some(0), "{out:?}");
    let version = sim.kubectl(&["version", "-o", "json"])?;
    let json: serde_json::Value = serde_json::from_str(&version)?;
    assert_eq!(json["serverVersion"]["gitVersion"], "v1.29.4");
    Ok(())
}

/// Issue 9: `plan` used to skip the requests in flight that the agent's pass follows, so it
/// could show a step the agent would not take. Both observe through the same function now.
#[test]
fn plan_and_the_agent_see_the_same_request_in_flight() -> Result<()> {
    let sim = SimProcess::start(&["--version", "1.29.8", "--node-groups", "general=1,gpu=1"])?;
    let dir = tempfile::tempdir()?;
    // A provider command that takes the request and returns; the cluster moves later (here:
    // never), as a cloud API does.
    let requests = dir.path().join("requests.log");
    let script = dir.path().join("upgrade");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$TIDEMARK_TARGET_VERSION\" >> {}\n",
            requests.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let exec = format!(
        "{{kind: exec, upgradeControlPlane: [\"{s}\"], upgradeNodeGroup: [\"{s}\"], timeout: 10m}}",
        s = script.display()
    );
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    repo.write(
        "clusters/sim.yaml",
        &tidemark_e2e::sim_manifest(&exec, "1.30.4", &[("general", "1.29.8"), ("gpu", "1.29.8")]),
    )?;
    repo.commit("exec fleet")?;
    repo.tag_annotated("wave/canary", "HEAD")?;

    let kubeconfig = sim.kubeconfig().display().to_string();
    let cache = tempfile::tempdir()?;
    let agent = || {
        tidemark_e2e::tidemark_in(
            &[
                "agent",
                "--once",
                "--repo",
                &repo.path().display().to_string(),
                "--selector",
                "cluster=sim",
                "--cache-dir",
                &cache.path().display().to_string(),
            ],
            None,
            &[("KUBECONFIG", &kubeconfig)],
        )
    };
    let first = tidemark_e2e::Pass::parse(&agent()?.stdout);
    assert_eq!(first.executed, ["upgrade control plane 1.29.8 -> 1.30.4"]);
    assert_eq!(std::fs::read_to_string(&requests)?, "1.30.4\n");

    // The request is in flight: plan and the agent agree there is nothing to do now.
    let run = plan(&repo, &sim)?;
    assert!(
        run.stdout
            .contains("phase: Progressing\nmessage: control plane upgrading 1.29.8 -> 1.30.4\n")
            && run.stdout.contains("next: nothing now\n"),
        "{}",
        run.stdout
    );
    let second = tidemark_e2e::Pass::parse(&agent()?.stdout);
    assert_eq!(second.phase, "Progressing");
    assert_eq!(second.message, "control plane upgrading 1.29.8 -> 1.30.4");
    assert!(second.executed.is_empty());
    assert_eq!(
        std::fs::read_to_string(&requests)?,
        "1.30.4\n",
        "the request was not issued twice"
    );
    Ok(())
}
