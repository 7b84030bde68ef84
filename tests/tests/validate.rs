//! `tidemark validate` and `tidemark schema` through the real binary.

use anyhow::Result;
use tidemark_e2e::{GitDaemon, WorkRepo, cluster_yaml, fleet_yaml, tidemark};

#[test]
fn valid_repo_exits_zero_and_broken_one_lists_every_problem() -> Result<()> {
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary", "main"]))?;
    repo.write(
        "clusters/a.yaml",
        &cluster_yaml("a", Some("canary"), "1.28.9"),
    )?;
    let path = repo.path().display().to_string();
    let run = tidemark(&["validate", &path])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("1 clusters, 0 component sets: valid"),
        "{}",
        run.stderr
    );

    repo.write(
        "clusters/b.yaml",
        &cluster_yaml("a", Some("nightly"), "1.28.9"),
    )?;
    repo.write(
        "clusters/c.yaml",
        "apiVersion: tidemark.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec: {bogus: 1}\n",
    )?;
    let run = tidemark(&["validate", &path])?;
    assert_eq!(run.code, Some(1), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "clusters/b.yaml:4:9: metadata.name: duplicate cluster name `a`: also declared in clusters/a.yaml",
            "clusters/b.yaml:5:43: metadata.labels.tidemark.dev/wave: wave `nightly` is not declared in fleet.yaml (waves: canary, main)",
            "clusters/c.yaml:4:8: spec.bogus: unknown field `bogus`, expected one of `provider`, `controlPlane`, `nodeGroups`, `componentSets`, `components`, `componentValues`, `maintenanceWindow`, `paused`",
        ]
    );

    let run = tidemark(&["validate", &path, "--format", "json"])?;
    assert_eq!(run.code, Some(1));
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(json["valid"], false);
    assert_eq!(json["diagnostics"].as_array().map(Vec::len), Some(3));
    assert_eq!(json["diagnostics"][2]["field"], "spec.bogus");
    assert_eq!(json["diagnostics"][2]["line"], 4);
    Ok(())
}

#[test]
fn validates_a_git_remote_default_branch() -> Result<()> {
    let repo = WorkRepo::one_cluster("1.28.9")?;
    repo.commit("ok")?;
    let base = repo.base_dir();
    let daemon = GitDaemon::start(&base)?;
    let name = repo.name();
    let cache = tempfile::tempdir()?;
    let cache_dir = cache.path().display().to_string();
    let url = daemon.url(&name);
    let run = tidemark(&["validate", &url, "--cache-dir", &cache_dir])?;
    assert_eq!(run.code, Some(0), "{run:?}");

    // An uncommitted break in the work tree does not matter: git's branch is checked.
    repo.write("clusters/a.yaml", "not: [valid")?;
    assert_eq!(
        tidemark(&["validate", &url, "--cache-dir", &cache_dir])?.code,
        Some(0)
    );
    repo.commit("break")?;
    let run = tidemark(&["validate", &url, "--cache-dir", &cache_dir])?;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout
            .starts_with("clusters/a.yaml:2:1: invalid YAML: did not find expected"),
        "{}",
        run.stdout
    );
    Ok(())
}

#[test]
fn unreadable_repo_exits_two() -> Result<()> {
    let run = tidemark(&["validate", "/nonexistent/fleet"])?;
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .contains("cannot read fleet repo /nonexistent/fleet"),
        "{}",
        run.stderr
    );
    Ok(())
}

#[test]
fn schema_is_json_with_the_three_kinds() -> Result<()> {
    let run = tidemark(&["schema"])?;
    assert_eq!(run.code, Some(0));
    let schema: serde_json::Value = serde_json::from_str(&run.stdout)?;
    for kind in ["Fleet", "Cluster", "ComponentSet"] {
        assert!(schema["$defs"][kind].is_object(), "missing {kind}");
    }
    Ok(())
}

#[test]
fn fleet_repo_example_is_valid_and_a_broken_copy_is_not() -> Result<()> {
    let example = tidemark_e2e::workspace_root().join("fleet-repo-example");
    let run = tidemark(&["validate", &example.display().to_string()])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr.contains("7 clusters, 2 component sets: valid"),
        "{}",
        run.stderr
    );

    let copy = tempfile::tempdir()?;
    tidemark_e2e::copy_dir(&example, copy.path())?;
    let cluster = copy.path().join("clusters/prod-eu-1.yaml");
    let text =
        std::fs::read_to_string(&cluster)?.replace("version: \"1.27.13\"", "version: \"1.29.0\"");
    std::fs::write(&cluster, text)?;
    std::fs::remove_file(copy.path().join("values/metrics-lite/prod.yaml"))?;
    let run = tidemark(&["validate", &copy.path().display().to_string()])?;
    assert_eq!(run.code, Some(1), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "clusters/prod-eu-1.yaml:27:16: spec.nodeGroups[1].version: node group `gpu` is declared at 1.29.0, above the control plane (1.28.9): a kubelet must never be newer than the API server",
            "clusters/prod-eu-1.yaml:35:11: spec.componentValues.metrics-lite.valuesFiles[0]: values file `values/metrics-lite/prod.yaml` not found in the repository",
            "clusters/prod-eu-2.yaml:34:11: spec.componentValues.metrics-lite.valuesFiles[0]: values file `values/metrics-lite/prod.yaml` not found in the repository",
            "clusters/prod-us-1.yaml:44:11: spec.componentValues.metrics-lite.valuesFiles[0]: values file `values/metrics-lite/prod.yaml` not found in the repository",
        ]
    );
    Ok(())
}

#[test]
fn symlink_in_git_pointing_outside_the_repo_is_refused() -> Result<()> {
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    let cluster = cluster_yaml("a", Some("canary"), "1.28.9")
        + "  components:\n    - name: app\n      chart: {path: charts/app}\n      namespace: apps\n      valuesFiles: [values/app.yaml]\n";
    repo.write("clusters/a.yaml", &cluster)?;
    repo.write(
        "charts/app/Chart.yaml",
        "apiVersion: v2\nname: app\nversion: 0.1.0\n",
    )?;
    std::fs::create_dir_all(repo.path().join("values"))?;
    std::os::unix::fs::symlink(
        "../../../../../etc/passwd",
        repo.path().join("values/app.yaml"),
    )?;
    repo.commit("sneaky symlink")?;
    let base = repo.base_dir();
    let daemon = GitDaemon::start(&base)?;
    let name = repo.name();
    let cache = tempfile::tempdir()?;
    let run = tidemark(&[
        "validate",
        &daemon.url(&name),
        "--cache-dir",
        &cache.path().display().to_string(),
    ])?;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        "clusters/a.yaml:15:21: spec.components[0].valuesFiles[0]: `values/app.yaml`: symlink points outside the repository (to ../../../../../etc/passwd)"
    );
    Ok(())
}
