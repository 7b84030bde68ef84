//! `tidemark plan --offline`: from git alone, what every selected cluster would do if its
//! wave tag moved to a commit (`offline::route`).

use std::process::ExitCode;

use anyhow::{Context, bail};
use tidemark_schema::{LabelSelector, Tree};

use crate::cli::{OfflineArgs, OutputFormat, PlanArgs};
use crate::config::source_config;
use crate::desired::{self, short};
use crate::offline::render::{self, RenderCache};
use crate::offline::route::{self, ClusterRoute, Commit, Request};
use crate::select;
use crate::source::GitCache;

const BLOCKED: u8 = 1;

pub fn run(plan: PlanArgs, offline: OfflineArgs) -> anyhow::Result<ExitCode> {
    let PlanArgs {
        desired: source_args,
        kubeconfig: _,
        status_namespace: _,
        components,
    } = plan;
    let OfflineArgs {
        offline: _,
        all,
        wave,
        to,
        at,
        format,
    } = offline;
    let selector: Option<LabelSelector> = match (&source_args.selector, all, &wave) {
        (Some(s), false, None) => Some(s.parse().context("--selector")?),
        (None, false, None) => {
            bail!("plan --offline: choose the clusters with --all, --wave WAVE or --selector")
        }
        _ => None,
    };
    let now = match at {
        Some(t) => t.parse::<jiff::Timestamp>().context("--at")?,
        None => jiff::Timestamp::now(),
    };
    let (helm, _) = components.settings()?;
    let mut cache = GitCache::open(&source_config(
        &source_args.repo,
        source_args.branch.clone(),
        &source_args.git,
    )?)?;
    // What the agents published (`agent --report-ref`), when they do.
    cache.follow_prefix(crate::keys::refs::STATUS_PREFIX);
    let sync = cache.sync(source_args.branch.as_deref(), &[])?;
    let branch_tree = cache.tree_at(&sync.branch_commit)?;
    let fleet = select::fleet(&branch_tree)?;
    cache.sync(
        Some(&sync.branch),
        &[desired::tag_glob(&fleet.spec.tag_pattern)],
    )?;
    let target = match &to {
        None => sync.branch_commit.clone(),
        Some(rev) => resolve_rev(&cache, rev)?,
    };
    let target_tree = cache.tree_at(&target)?;
    let reported: std::collections::BTreeMap<String, crate::status::Record> =
        crate::fleet::reports::from_git(&cache)?
            .records
            .into_iter()
            .filter_map(|r| Some((r.record.cluster.clone()?, r.record)))
            .collect();

    // The clusters, as the default branch lists them.
    let (loaded, _) = tidemark_schema::load(&branch_tree as &dyn Tree);
    let mut chosen = Vec::new();
    for d in &loaded.clusters {
        let c = &d.value;
        let w = c.wave().map(str::to_string);
        let take = all
            || wave.as_ref().is_some_and(|x| w.as_ref() == Some(x))
            || selector
                .as_ref()
                .is_some_and(|s| s.matches(&c.metadata.labels));
        if take {
            chosen.push((c.metadata.name.clone(), w));
        }
    }
    if let Some(w) = &wave
        && fleet.wave(w).is_none()
    {
        bail!("--wave {w}: fleet.yaml declares no such wave");
    }
    // The commit each wave's tag points at now.
    let mut from_commits = std::collections::BTreeMap::new();
    for (_, w) in &chosen {
        let commit = match w {
            Some(w) => cache.tag_commit(&fleet.wave_tag(w))?,
            None => Some(sync.branch_commit.clone()),
        };
        from_commits.insert(w.clone(), commit);
    }
    let from_trees: std::collections::BTreeMap<String, _> = from_commits
        .values()
        .flatten()
        .map(|c| Ok((c.clone(), cache.tree_at(c)?)))
        .collect::<anyhow::Result<_>>()?;

    let mut renders = RenderCache::new(helm)?;
    let mut pending = Vec::new();
    for (name, w) in &chosen {
        let from = from_commits
            .get(w)
            .cloned()
            .flatten()
            .and_then(|c| from_trees.get(&c).map(|t| (c, t)));
        let req = Request {
            cluster: name.clone(),
            wave: w.clone(),
            tag: w.as_ref().map(|w| fleet.wave_tag(w)),
            from: from.map(|(id, tree)| Commit {
                tree: tree as &dyn Tree,
                id,
            }),
            to: Commit {
                tree: &target_tree,
                id: target.clone(),
            },
            reported: reported.get(name).cloned(),
        };
        pending.push(route::request(&req, &mut renders)?);
    }
    super::runtime()?.block_on(renders.run(render::default_concurrency()));
    let routes: Vec<ClusterRoute> = pending
        .into_iter()
        .map(|p| route::finish(p, &renders, now))
        .collect();
    let blocked = routes.iter().filter(|r| r.is_blocked()).count();
    match format {
        OutputFormat::Json => {
            let (rendered, cache_hits) = renders.stats();
            let doc = serde_json::json!({
                "to": target,
                "branch": sync.branch,
                "at": now.to_string(),
                "observed": "each cluster's status ref when it has one, else the declaration at its wave tag (see observedFrom)",
                "renders": {"rendered": rendered, "cacheHits": cache_hits},
                "blocked": blocked,
                "clusters": routes,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        OutputFormat::Text => print_text(&routes, &target, &sync.branch, blocked),
    }
    Ok(if blocked > 0 {
        ExitCode::from(BLOCKED)
    } else {
        ExitCode::SUCCESS
    })
}

/// A commit id, a branch of the cache, or a tag.
fn resolve_rev(cache: &GitCache, rev: &str) -> anyhow::Result<String> {
    if let Some(c) = cache.commit_of(&format!("refs/heads/{rev}"))? {
        return Ok(c);
    }
    if let Some(c) = cache.tag_commit(rev)? {
        return Ok(c);
    }
    if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        cache
            .tree_at(rev)
            .with_context(|| format!("--to {rev}: no such commit in the fleet repo"))?;
        return Ok(rev.to_string());
    }
    bail!("--to {rev}: not a branch, a tag or a full commit id of the fleet repo")
}

fn print_text(routes: &[ClusterRoute], target: &str, branch: &str, blocked: usize) {
    println!(
        "plan --offline: wave tags moved to {} ({branch}); what runs is taken from each cluster's status ref, or else from the declaration at its wave tag",
        short(target)
    );
    println!(
        "{:<16} {:<8} {:<12} {:<22} {:<5} {:<6} {:<11} {:<7} PRE-FLIGHT",
        "CLUSTER", "WAVE", "PHASE", "CONTROL PLANE", "HOPS", "GROUPS", "COMPONENTS", "WINDOW"
    );
    for r in routes {
        let cp = if r.control_plane.0 == r.control_plane.1 {
            r.control_plane.0.clone()
        } else {
            format!("{} -> {}", r.control_plane.0, r.control_plane.1)
        };
        println!(
            "{:<16} {:<8} {:<12} {:<22} {:<5} {:<6} {:<11} {:<7} {}",
            r.cluster,
            r.wave.as_deref().unwrap_or("-"),
            r.phase,
            cp,
            r.hops.len(),
            r.node_group_steps.len(),
            r.components.len(),
            if r.window.is_some() { "closed" } else { "open" },
            r.preflight.len()
        );
    }
    for r in routes {
        println!();
        println!(
            "cluster {} (wave {}): {} {} -> {}",
            r.cluster,
            r.wave.as_deref().unwrap_or("-"),
            r.tag.as_deref().unwrap_or("branch"),
            r.from.as_deref().map(short).unwrap_or("(none)"),
            short(&r.to)
        );
        let groups: Vec<String> = r
            .node_groups
            .iter()
            .map(|(g, (running, _))| format!("{g} {running}"))
            .collect();
        println!(
            "  observed: control plane {}; node groups: {} (from {})",
            r.control_plane.0,
            if groups.is_empty() {
                "none".to_string()
            } else {
                groups.join(", ")
            },
            r.observed_from
        );
        println!("  phase: {}: {}", r.phase, r.message);
        if r.route.is_empty() {
            println!("  route: nothing to do");
        } else {
            println!("  route:");
            for (i, s) in r.route.iter().enumerate() {
                println!("    {}. {s}", i + 1);
            }
        }
        for c in &r.components {
            match &c.error {
                Some(e) => println!(
                    "  component {} ({}): does not render: {e}",
                    c.name, c.action
                ),
                None => println!(
                    "  component {} ({}): {} to create, {} to change, {} to prune{}",
                    c.name,
                    c.action,
                    c.create.len(),
                    c.change.len(),
                    c.prune.len(),
                    describe_objects(c)
                ),
            }
        }
        if let Some(w) = &r.window {
            println!("  maintenance window: {w}");
        }
        for f in &r.preflight {
            println!("  pre-flight: {f}");
        }
        for n in &r.notes {
            println!("  note: {n}");
        }
    }
    println!();
    println!(
        "{} clusters; {blocked} would be Blocked or held by a pre-flight finding",
        routes.len()
    );
}

fn describe_objects(c: &route::ComponentChange) -> String {
    let mut parts = Vec::new();
    for (what, list) in [
        ("create", &c.create),
        ("change", &c.change),
        ("prune", &c.prune),
    ] {
        if !list.is_empty() {
            let shown: Vec<&str> = list.iter().take(4).map(String::as_str).collect();
            let more = if list.len() > 4 {
                format!(", and {} more", list.len() - 4)
            } else {
                String::new()
            };
            parts.push(format!("{what} {}{more}", shown.join(", ")));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}
