//! `tidemark validate [REPO]`: CI lint for a fleet repo.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Serialize;
use tidemark_schema::{Diagnostic, Diagnostics, FsTree, Tree};

use crate::cli::{GitArgs, OutputFormat, ValidateArgs};
use crate::component::helm::Helm;
use crate::config::{read_allowed_signers, source_config};
use crate::desired;
use crate::offline::check::{self, Snapshot};
use crate::offline::render::{self, RenderCache};
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
    #[serde(skip_serializing_if = "Option::is_none")]
    renders: Option<RenderStats>,
    diagnostics: &'a Diagnostics,
}

/// What `--render` did.
#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct RenderStats {
    /// `helm template` processes run.
    rendered: u64,
    /// Renders asked for again and taken from the cache.
    cache_hits: u64,
    /// Wall time, seconds.
    seconds: f64,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let ValidateArgs {
        repo,
        format,
        branch,
        allowed_signers,
        render,
        helm_bin,
        render_concurrency,
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
    let mut renders = None;
    if render {
        let helm = Helm {
            bin: helm_bin,
            timeout: std::time::Duration::from_secs(120),
            credentials: Default::default(),
        };
        let concurrency = render_concurrency.unwrap_or_else(render::default_concurrency);
        let (found, stats) = render_check(&repo, branch.as_deref(), &git, helm, concurrency)?;
        diags.extend(found);
        renders = Some(stats);
    }
    diags.sort();
    let report = Report {
        repo: &repo,
        revision,
        valid: diags.is_empty(),
        clusters: counts.0,
        component_sets: counts.1,
        signed_tags: allowed_signers.is_some().then_some(&tags),
        renders,
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
            if let Some(r) = renders {
                eprintln!(
                    "rendered {} charts ({} cache hits) in {:.1}s",
                    r.rendered, r.cache_hits, r.seconds
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

/// `--render`: every cluster's components rendered at the default branch and, when `repo`
/// is a git repository, at its wave tag.
fn render_check(
    repo: &str,
    branch: Option<&str>,
    git: &GitArgs,
    helm: Helm,
    concurrency: usize,
) -> anyhow::Result<(Vec<Diagnostic>, RenderStats)> {
    let started = std::time::Instant::now();
    let mut renders = RenderCache::new(helm).context("--render")?;
    let remote = is_git_remote(repo);
    let cache = if remote || Path::new(repo).join(".git").exists() {
        Some(GitCache::open(&source_config(
            repo,
            branch.map(str::to_string),
            git,
        )?)?)
    } else {
        None
    };
    let sync = match &cache {
        Some(c) => Some(c.sync(branch, &[])?),
        None => None,
    };
    let fs_tree;
    let git_tree;
    let branch_tree: &dyn Tree = match (&cache, &sync) {
        (Some(c), Some(s)) if remote => {
            git_tree = c.tree_at(&s.branch_commit)?;
            &git_tree
        }
        _ => {
            fs_tree =
                FsTree::new(repo).with_context(|| format!("cannot read fleet repo {repo}"))?;
            &fs_tree
        }
    };
    let (loaded, _) = tidemark_schema::load(branch_tree);
    let waves = loaded
        .clusters
        .iter()
        .map(|d| {
            (
                d.value.metadata.name.clone(),
                d.value.wave().map(str::to_string),
            )
        })
        .collect();
    let mut clusters = check::request(
        &Snapshot {
            tree: branch_tree,
            label: None,
            wave: None,
        },
        &waves,
        &mut renders,
    )?;
    if let (Some(cache), Some(sync), Ok(fleet)) = (&cache, &sync, select::fleet(branch_tree)) {
        cache.sync(
            Some(&sync.branch),
            &[desired::tag_glob(&fleet.spec.tag_pattern)],
        )?;
        for wave in &fleet.spec.waves {
            let tag = fleet.wave_tag(&wave.name);
            let Some(commit) = cache.tag_commit(&tag)? else {
                continue;
            };
            let tree = cache.tree_at(&commit)?;
            clusters.extend(check::request(
                &Snapshot {
                    tree: &tree,
                    label: Some(format!("{tag} ({})", desired::short(&commit))),
                    wave: Some(wave.name.clone()),
                },
                &waves,
                &mut renders,
            )?);
        }
    }
    super::runtime()?.block_on(renders.run(concurrency));
    let found = check::diagnose(&clusters, &renders);
    let (rendered, cache_hits) = renders.stats();
    Ok((
        found,
        RenderStats {
            rendered,
            cache_hits,
            seconds: started.elapsed().as_secs_f64(),
        },
    ))
}
