//! `tidemark validate [REPO]`: CI lint for a fleet repo.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use tidemark_schema::{Diagnostics, FsTree, Tree};

use crate::cli::{OutputFormat, ValidateArgs};
use crate::config::source_config;
use crate::source::GitCache;

const INVALID: u8 = 1;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    repo: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    valid: bool,
    clusters: usize,
    component_sets: usize,
    diagnostics: &'a Diagnostics,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let ValidateArgs {
        repo,
        format,
        branch,
        git,
    } = args;
    let (diags, counts, revision) = if is_git_remote(&repo) {
        let config = source_config(&repo, branch.clone(), &git)?;
        let cache = GitCache::open(&config)?;
        let sync = cache.sync(branch.as_deref(), &[])?;
        let tree = cache.tree_at(&sync.branch_commit)?;
        let (d, c) = check(&tree);
        (d, c, Some(sync.branch_commit))
    } else {
        let tree = FsTree::new(&repo).with_context(|| format!("cannot read fleet repo {repo}"))?;
        let (d, c) = check(&tree);
        (d, c, None)
    };
    let report = Report {
        repo: &repo,
        revision,
        valid: diags.is_empty(),
        clusters: counts.0,
        component_sets: counts.1,
        diagnostics: &diags,
    };
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => {
            print!("{diags}");
            let verdict = if diags.is_empty() {
                "valid".to_string()
            } else {
                format!("{} problem(s)", diags.len())
            };
            eprintln!(
                "{repo}: {} clusters, {} component sets: {verdict}",
                report.clusters, report.component_sets
            );
        }
    }
    Ok(if diags.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(INVALID)
    })
}

fn check(tree: &dyn Tree) -> (Diagnostics, (usize, usize)) {
    let (repo, mut diags) = tidemark_schema::load(tree);
    diags.extend(tidemark_schema::validate(&repo, tree).0);
    diags.sort();
    (diags, (repo.clusters.len(), repo.component_sets.len()))
}

/// A URL, an scp-like address, or a directory that is a git repository but not a fleet
/// work tree (no `fleet.yaml` at its root).
fn is_git_remote(repo: &str) -> bool {
    if repo.contains("://") {
        return true;
    }
    let path = Path::new(repo);
    if !path.exists() {
        return repo.contains('@') && repo.contains(':');
    }
    let is_git =
        path.join("HEAD").is_file() && path.join("objects").is_dir() || path.join(".git").exists();
    is_git && !path.join("fleet.yaml").exists()
}
