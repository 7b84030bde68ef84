//! `tidemark plan`: what the agent would do next for one cluster, and why. It observes the
//! cluster with the very function the agent's pass uses, so both see the same world.

use std::collections::BTreeMap;
use std::process::ExitCode;

use crate::cli::{OfflineArgs, PlanArgs, PlanCommand};
use crate::config::fleet_source;
use crate::converge::preview::{self, Preview};
use crate::converge::{Scratch, Target, inventory_of, prune, render::Renderer};
use crate::desired::{self, Resolution};
use crate::plan::Step;
use crate::provider::AnyProvider;
use crate::{k8s, observe, pass, plan, status};

pub fn run(args: PlanCommand) -> anyhow::Result<ExitCode> {
    let PlanCommand { plan, offline } = args;
    if offline.offline {
        return super::plan_offline::run(plan, offline);
    }
    let OfflineArgs {
        offline: _,
        all: _,
        wave: _,
        to: _,
        at: _,
        format: _,
    } = offline;
    let args = plan;
    let PlanArgs {
        desired: source_args,
        kubeconfig,
        status_namespace,
        components,
    } = args;
    let source = fleet_source(&source_args)?;
    let (helm, settings) = components.settings()?;
    super::runtime()?.block_on(async move {
        let client = k8s::client(kubeconfig.as_deref()).await?;
        let record = status::read(&client, &status_namespace).await?;
        let now = jiff::Timestamp::now();
        let desired = match source.resolve(record.applied_revision.clone(), now).await {
            Ok(Resolution::Desired(d)) => *d,
            Ok(Resolution::NothingYet { selection, reason }) => {
                print_selection(&selection);
                println!("phase: Waiting\nmessage: nothing to do yet: {reason}");
                return Ok(ExitCode::SUCCESS);
            }
            Err(desired::Error::Select(e)) => {
                println!("phase: Blocked\nmessage: {e}");
                return Ok(ExitCode::from(1));
            }
            Err(e @ desired::Error::Untrusted { .. }) => {
                println!("phase: Blocked\nmessage: {}", status::describe(&e));
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e.into()),
        };
        print_selection(&desired.selection);
        let state = &desired.state;
        println!(
            "desired: {} @ {} (control plane {})",
            desired.selection.tag.as_deref().unwrap_or(&desired.branch),
            desired::short(&desired.revision),
            state.control_plane
        );
        let provider =
            AnyProvider::for_cluster(&client, &status_namespace, state, kubeconfig.as_deref())
                .await?;
        let mut observed =
            observe::cluster(&client, &provider, &record, settings.drift_interval, now).await?;
        // A drift check is the agent's routine, not a change to show.
        observed.drift_due = false;
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

        let digests = pass::input_digests(&desired);
        let mut p = plan::plan(state, &digests, &observed, now);
        // What each component action would do: rendered with helm, compared with the cluster.
        let renderer = Renderer::new(helm);
        let capabilities = observed.capabilities.clone();
        let target = Target {
            client: &client,
            source: &source,
            revision: &desired.revision,
            renderer: &renderer,
            settings: &settings,
            capabilities: &capabilities,
        };
        // The pre-flight checks of the next disruptive step, as the agent runs them.
        if let Some(next) = p.steps.iter().find(|s| s.is_disruptive()).cloned() {
            let preflight = crate::preflight::Preflight::default();
            observed.preflight = preflight.gather(&target, &desired, &observed, &next).await;
            p = plan::plan(state, &digests, &observed, now);
        }
        println!("phase: {}\nmessage: {}", p.phase, p.message);
        let mut scratch = Scratch::new(
            state.components.iter().map(|c| c.name.clone()),
            &record.components,
            settings.prune_scan,
        );
        let mut previews: BTreeMap<String, String> = BTreeMap::new();
        for step in p.remaining.iter().chain(&p.steps) {
            let (name, detail) = match step {
                Step::ApplyComponent { name, .. } if !previews.contains_key(name) => {
                    let Some(c) = state.components.iter().find(|c| &c.name == name) else {
                        continue;
                    };
                    let detail = match desired.inputs.get(name) {
                        Some(Ok(i)) => match preview::preview(
                            &target,
                            &mut scratch,
                            c,
                            i,
                            inventory_of(record.components.get(name)).as_ref(),
                        )
                        .await
                        {
                            Ok(v) => describe_preview(
                                &v,
                                record.components.get(name).map(|r| r.chart.as_str()),
                            ),
                            Err(e) => format!("would fail: {}", status::describe(&e)),
                        },
                        Some(Err(e)) => format!("would fail: {}", status::describe(e.as_ref())),
                        None => continue,
                    };
                    (name, detail)
                }
                Step::PruneComponent { name } if !previews.contains_key(name) => {
                    let inventory = inventory_of(record.components.get(name));
                    let found = prune::prunable(
                        &client,
                        &mut scratch,
                        name,
                        inventory.as_ref(),
                        None,
                        false,
                    )
                    .await;
                    let detail = match found {
                        Ok(found) => format!("delete {} objects", found.doomed.len()),
                        Err(e) => format!("cannot read its objects: {}", status::describe(&e)),
                    };
                    (name, detail)
                }
                _ => continue,
            };
            previews.insert(name.clone(), detail);
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
    })
}

fn print_selection(s: &crate::select::Selection) {
    println!(
        "cluster: {} ({}, wave {})",
        s.name,
        s.file,
        s.wave.as_deref().unwrap_or("none: follows the branch")
    );
}

/// `[old chart -> ]chart: render N objects: a to create, b to change, c unchanged; prune d`.
fn describe_preview(v: &Preview, recorded_chart: Option<&str>) -> String {
    let from = recorded_chart
        .filter(|c| !c.is_empty() && *c != v.chart)
        .map(|c| format!("{c} -> "))
        .unwrap_or_default();
    let pruned = if v.prune.is_empty() {
        String::new()
    } else {
        format!(" ({})", v.prune.join(", "))
    };
    format!(
        "{from}{}: render {} objects: {} to create, {} to change, {} unchanged; prune {}{pruned}",
        v.chart,
        v.rendered,
        v.create,
        v.change,
        v.unchanged,
        v.prune.len(),
    )
}
