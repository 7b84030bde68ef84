//! `tidemark plan`: what the agent would do next for one cluster, and why.

use std::process::ExitCode;

use crate::cli::PlanArgs;
use crate::config::fleet_source;
use crate::desired::{self, Outcome};
use crate::{k8s, observe, plan};

pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let PlanArgs {
        desired: source,
        kubeconfig,
        status_namespace,
    } = args;
    let (cache, selector) = fleet_source(&source)?;
    let branch = source.branch;
    let resolved = match desired::resolve(&cache, branch.as_deref(), &selector) {
        Ok(r) => r,
        Err(desired::Error::Select(e)) => {
            println!("phase: Blocked\nmessage: {e}");
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
    let observed = super::runtime()?.block_on(async {
        let client = k8s::client(kubeconfig.as_deref()).await?;
        anyhow::Ok(observe::observe(&client, &state, &status_namespace).await?)
    })?;
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

    let p = plan::plan(&state, &observed, jiff::Timestamp::now());
    println!("phase: {}\nmessage: {}", p.phase, p.message);
    for note in &p.notes {
        println!("note: {note}");
    }
    if p.steps.is_empty() {
        println!("next: nothing now");
    } else {
        println!("next:");
        for step in &p.steps {
            println!("  - {step}");
        }
    }
    if !p.remaining.is_empty() {
        println!("route to the desired state:");
        for (i, step) in p.remaining.iter().enumerate() {
            println!("  {}. {step}", i + 1);
        }
    }
    Ok(ExitCode::SUCCESS)
}
