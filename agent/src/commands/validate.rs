//! `tidemark validate [REPO]`: CI lint for a fleet repo.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Serialize;
use tidemark_schema::{Diagnostic, Diagnostics, FsTree, Tree};

use crate::cli::{OutputFormat, ValidateArgs};
use crate::config::{read_allowed_signers, source_config};
use crate::desired;
use crate::select;
use crate::source::GitCache;
use crate::trust::AllowedSigners;

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
    #[serde(skip_serializing_if = "Option::is_none")]
    signed_tags: Option<&'a Vec<SignedTag>>,
    diagnostics: &'a Diagnostics,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let ValidateArgs {
        repo,
        format,
        branch,
        allowed_signers,
        git,
    } = args;
    let signers = match &allowed_signers {
        None => None,
        Some(path) => Some(read_allowed_signers(path).context("--allowed-signers")?),
    };
    let now = jiff::Timestamp::now();
    let mut tags = Vec::new();
    let (mut diags, counts, revision) = if is_git_remote(&repo) {
        let config = source_config(&repo, branch.clone(), &git)?;
        let cache = GitCache::open(&config)?;
        let sync = cache.sync(branch.as_deref(), &[])?;
        let tree = cache.tree_at(&sync.branch_commit)?;
        let (mut d, c) = check(&tree);
        if let Some(Ok(signers)) = &signers {
            d.extend(check_wave_tags(
                &cache,
                &sync.branch,
                &tree,
                signers,
                now,
                &mut tags,
            )?);
        }
        (d, c, Some(sync.branch_commit))
    } else {
        let tree = FsTree::new(&repo).with_context(|| format!("cannot read fleet repo {repo}"))?;
        let (mut d, c) = check(&tree);
        if let Some(Ok(signers)) = &signers {
            // The files are the work tree's; the tags are its repository's.
            let dir = Path::new(&repo);
            if !dir.join(".git").exists() {
                bail!(
                    "--allowed-signers: {repo} is not a git work tree, so it has no wave tags to check"
                );
            }
            let config = source_config(&repo, branch.clone(), &git)?;
            let cache = GitCache::open(&config)?;
            let sync = cache.sync(branch.as_deref(), &[])?;
            d.extend(check_wave_tags(
                &cache,
                &sync.branch,
                &tree,
                signers,
                now,
                &mut tags,
            )?);
        }
        (d, c, None)
    };
    if let Some(Err(invalid)) = signers {
        diags.extend(invalid.0);
    }
    diags.sort();
    let report = Report {
        repo: &repo,
        revision,
        valid: diags.is_empty(),
        clusters: counts.0,
        component_sets: counts.1,
        signed_tags: allowed_signers.is_some().then_some(&tags),
        diagnostics: &diags,
    };
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => {
            print!("{diags}");
            for t in &tags {
                eprintln!(
                    "{}: signed by {} ({}), commit {}",
                    t.tag,
                    t.fingerprint,
                    t.principals,
                    crate::desired::short(&t.commit)
                );
            }
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

/// A wave tag whose signature was accepted.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignedTag {
    tag: String,
    commit: String,
    fingerprint: String,
    principals: String,
}

/// Checks the tag of every wave declared in `tree`'s fleet.yaml as the agent would with
/// `--allowed-signers`: each refusal is a diagnostic on `refs/tags/<tag>`; a wave without
/// a tag yet is fine. Accepted tags are added to `accepted`.
fn check_wave_tags(
    cache: &GitCache,
    branch: &str,
    tree: &dyn Tree,
    signers: &AllowedSigners,
    now: jiff::Timestamp,
    accepted: &mut Vec<SignedTag>,
) -> anyhow::Result<Vec<Diagnostic>> {
    // An invalid fleet.yaml is already reported; there are no waves to check then.
    let Ok(fleet) = select::fleet(tree) else {
        return Ok(Vec::new());
    };
    cache.sync(Some(branch), &[desired::tag_glob(&fleet.spec.tag_pattern)])?;
    let mut out = Vec::new();
    for wave in &fleet.spec.waves {
        let tag = fleet.wave_tag(&wave.name);
        match desired::verify_wave_tag(cache, &tag, signers, now) {
            Ok(None) => {}
            Ok(Some(v)) => accepted.push(SignedTag {
                tag,
                commit: v.commit,
                fingerprint: v.signer.fingerprint,
                principals: v.signer.principals,
            }),
            Err(desired::Error::Untrusted { tag, refusal }) => out.push(Diagnostic::file(
                format!("refs/tags/{tag}"),
                format!("{:#}", anyhow::Error::new(*refusal)),
            )),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

fn check(tree: &dyn Tree) -> (Diagnostics, (usize, usize)) {
    let (repo, mut diags) = tidemark_schema::load(tree);
    diags.extend(tidemark_schema::validate(&repo, tree).0);
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
