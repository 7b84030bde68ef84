//! `tidemark plan`: what the agent would do next for one cluster, and why.

use std::collections::BTreeMap;
use std::process::ExitCode;

use crate::cli::PlanArgs;
use crate::component::{PassScratch, Runner, Target};
use crate::config::fleet_source;
use crate::desired::{self, Outcome};
use crate::plan::Step;
use crate::{k8s, observe, plan};

pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let PlanArgs {
        desired: source,
        kubeconfig,
        status_namespace,
        components,
    } = args;
    let (cache, selector, signers) = fleet_source(&source)?;
    let branch = source.branch;
    let now = jiff::Timestamp::now();
    let resolved =
        match desired::resolve(&cache, branch.as_deref(), &selector, signers.as_ref(), now) {
            Ok(r) => r,
            Err(desired::Error::Select(e)) => {
                println!("phase: Blocked\nmessage: {e}");
                return Ok(ExitCode::from(1));
            }
            Err(e @ desired::Error::Untrusted { .. }) => {
                println!("phase: Blocked\nmessage: {:#}", anyhow::Error::from(e));
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e.into()),
        };
    let s = &resolved.selection;
    println!(
        "cluster: {} ({}, wave {})",
        s.name,
        s.file,
        s.wave.as_deref().unwrap_or("none: follows the branch")
    );
    let (state, revision) = match resolved.outcome {
        Outcome::NothingYet { reason } => {
            println!("phase: Waiting\nmessage: nothing to do yet: {reason}");
            return Ok(ExitCode::SUCCESS);
        }
        Outcome::Desired { state, revision } => (state, revision),
    };
    println!(
        "desired: {} @ {} (control plane {})",
        s.tag.as_deref().unwrap_or(&resolved.sync.branch),
        desired::short(&revision),
        state.control_plane
    );
    let runtime = super::runtime()?;
    let (client, observed) = runtime.block_on(async {
        let client = k8s::client(kubeconfig.as_deref()).await?;
        let observed = observe::observe(&client, &state, &status_namespace).await?;
        anyhow::Ok((client, observed))
    })?;
    let runner = Runner::new(components.settings()?);
    let inputs = runner.inputs(&cache, &revision, &state)?;
    let mut groups: Vec<String> = observed
        .node_groups
        .iter()
        .map(|(name, g)| {
            let v = match (g.min_kubelet, g.max_kubelet) {
                (Some(a), Some(b)) if a != b => format!("{a}..{b}"),
                (Some(a), _) => a.to_string(),
                _ => "no nodes".into(),
            };
            format!("{name} {v} ({}/{} ready)", g.ready, g.nodes)
        })
        .collect();
    groups.sort();
    println!(
        "observed: control plane {}; node groups: {}",
        observed.control_plane,
        groups.join(", ")
    );

    let now = jiff::Timestamp::now();
    let mut observed = observed;
    observed.drift_due = false;
    let plan_inputs = crate::pass::plan_inputs(&inputs);
    let p = plan::plan_pass(&state, &plan_inputs, &observed, now);
    println!("phase: {}\nmessage: {}", p.phase, p.message);
    // What each component action would do: rendered with helm, compared with the cluster.
    let mut scratch = PassScratch::new(state.components.iter().map(|c| c.name.clone()));
    let mut previews: BTreeMap<String, String> = BTreeMap::new();
    for step in p.remaining.iter().chain(&p.steps) {
        let detail = match step {
            Step::ApplyComponent { name, .. } if !previews.contains_key(name) => {
                let Some(c) = state.components.iter().find(|c| &c.name == name) else {
                    continue;
                };
                match inputs.get(name) {
                    Some(Ok(i)) => match runtime.block_on(runner.preview(
                        Target {
                            client: &client,
                            cache: &cache,
                            revision: &revision,
                        },
                        c,
                        i,
                        &mut scratch,
                    )) {
                        Ok(v) => {
                            let from = observed
                                .components
                                .get(name)
                                .map(|r| r.chart.clone())
                                .filter(|c| !c.is_empty() && *c != v.chart)
                                .map(|c| format!("{c} -> "))
                                .unwrap_or_default();
                            format!(
                                "{from}{}: render {} objects: {} to create, {} to change, {} unchanged; prune {}{}",
                                v.chart,
                                v.rendered,
                                v.create,
                                v.change,
                                v.unchanged,
                                v.prune.len(),
                                if v.prune.is_empty() {
                                    String::new()
                                } else {
                                    format!(" ({})", v.prune.join(", "))
                                }
                            )
                        }
                        Err(e) => format!("would fail: {e}"),
                    },
                    Some(Err(e)) => format!("would fail: {e}"),
                    None => continue,
                }
            }
            Step::PruneComponent { name } if !previews.contains_key(name) => {
                match runtime.block_on(runner.prunable(&client, &mut scratch, name, None)) {
                    Ok(objects) => format!("delete {} objects", objects.len()),
                    Err(e) => format!("cannot list its objects: {e}"),
                }
            }
            _ => continue,
        };
        let name = match step {
            Step::ApplyComponent { name, .. } | Step::PruneComponent { name } => name.clone(),
            _ => continue,
        };
        previews.insert(name, detail);
    }
    let show = |step: &Step| -> String {
        match step {
            Step::ApplyComponent { name, .. } | Step::PruneComponent { name } => {
                match previews.get(name) {
                    Some(d) => format!("{step}: {d}"),
                    None => step.to_string(),
                }
            }
            _ => step.to_string(),
        }
    };
    for note in &p.notes {
        println!("note: {note}");
    }
    if p.steps.is_empty() {
        println!("next: nothing now");
    } else {
        println!("next:");
        for step in &p.steps {
            println!("  - {}", show(step));
        }
    }
    if !p.remaining.is_empty() {
        println!("route to the desired state:");
        for (i, step) in p.remaining.iter().enumerate() {
            println!("  {}. {}", i + 1, show(step));
        }
    }
    Ok(ExitCode::SUCCESS)
}
