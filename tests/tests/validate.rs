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
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    repo.write(
        "clusters/a.yaml",
        &cluster_yaml("a", Some("canary"), "1.28.9"),
    )?;
    repo.commit("ok")?;
    let base = repo
        .path()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let daemon = GitDaemon::start(&base)?;
    let name = repo
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
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
