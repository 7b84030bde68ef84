//! `tidemark rbac`: the ClusterRole one cluster's agent needs, from what its components
//! render at every wave tag (with helm, no cluster needed) and its own needs
//! ([`crate::rbac`]).

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Context;
use tidemark_schema::fleet::WAVE_PLACEHOLDER;
use tidemark_schema::{DesiredState, DrainBy, Provider};

use crate::cli::RbacArgs;
use crate::component::inputs::{self, ComponentInputs};
use crate::config::fleet_cache;
use crate::converge::render::{RenderCapabilities, Renderer};
use crate::desired::{self, Source};
use crate::rbac::{self, ComponentRender, Own};
use crate::select::{self, AtRevision};

/// The cluster's desired state at one revision, with its components' inputs.
struct AtTag {
    /// `wave/canary`, or the branch.
    label: String,
    revision: String,
    state: DesiredState,
    inputs: Vec<ComponentInputs>,
}

pub fn run(args: RbacArgs) -> anyhow::Result<ExitCode> {
    let RbacArgs {
        desired: source_args,
        name,
        status_namespace,
        components,
    } = args;
    let (cache, selector, signers) = fleet_cache(&source_args)?;
    let (helm, _) = components.settings()?;
    let branch = source_args.branch.clone();
    let now = jiff::Timestamp::now();
    let resolved =
        match desired::resolve(&cache, branch.as_deref(), &selector, signers.as_ref(), now) {
            Ok(r) => r,
            Err(e @ (desired::Error::Select(_) | desired::Error::Untrusted { .. })) => {
                eprintln!("error: {:#}", anyhow::Error::from(e));
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e.into()),
        };
    let selection = resolved.selection;

    // Every wave's tag (the cluster's manifest moves through them as waves are promoted),
    // or the branch for a cluster without a wave.
    let mut revisions: Vec<(String, String)> = Vec::new();
    if selection.wave.is_none() {
        revisions.push((
            resolved.sync.branch.clone(),
            resolved.sync.branch_commit.clone(),
        ));
    } else {
        let branch_tree = cache.tree_at(&resolved.sync.branch_commit)?;
        let fleet = select::fleet(&branch_tree)?;
        for wave in &fleet.spec.waves {
            let tag = fleet.spec.tag_pattern.replace(WAVE_PLACEHOLDER, &wave.name);
            let commit = match &signers {
                None => cache.tag_commit(&tag)?,
                Some(signers) => {
                    desired::verify_wave_tag(&cache, &tag, signers, now)?.map(|v| v.commit)
                }
            };
            if let Some(commit) = commit {
                revisions.push((tag, commit));
            }
        }
    }
    let mut at_tags: Vec<AtTag> = Vec::new();
    let mut seen = BTreeSet::new();
    for (label, revision) in revisions {
        if !seen.insert(revision.clone()) {
            // Tags of one commit render alike.
            if let Some(at) = at_tags.iter_mut().find(|a| a.revision == revision) {
                at.label = format!("{}, {label}", at.label);
            }
            continue;
        }
        let tree = cache.tree_at(&revision)?;
        let AtRevision::Desired(state) = select::desired_at(&tree, &selection)? else {
            continue;
        };
        let inputs = state
            .components
            .iter()
            .map(|c| {
                inputs::gather(&tree, c).with_context(|| {
                    format!(
                        "failed to read the inputs of component {} at {label}",
                        c.name
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        at_tags.push(AtTag {
            label,
            revision,
            state: *state,
            inputs,
        });
    }
    if at_tags.is_empty() {
        eprintln!(
            "error: no wave tag holds cluster `{}` yet: nothing to render",
            selection.name
        );
        return Ok(ExitCode::from(1));
    }

    let source = Source::new(cache, branch, selector, signers);
    let renderer = Renderer::new(helm);
    let renders = super::runtime()?.block_on(async {
        let mut renders = Vec::new();
        for at in &at_tags {
            // Rendered for the version the cluster is declared at.
            let capabilities = RenderCapabilities {
                kube_version: Some(at.state.control_plane.to_string()),
                api_versions: Vec::new(),
            };
            for (c, i) in at.state.components.iter().zip(&at.inputs) {
                let rendered = renderer
                    .render(&source, &at.revision, &capabilities, c, i)
                    .await
                    .with_context(|| {
                        format!("failed to render component {} at {}", c.name, at.label)
                    })?;
                renders.push(ComponentRender {
                    prune_crds: c.prune_crds,
                    objects: rendered.objects,
                });
            }
        }
        anyhow::Ok(renders)
    })?;
    let capi = |a: &AtTag| match &a.state.provider {
        Provider::ClusterApi(p) => Some(p.clone()),
        Provider::Exec(_) => None,
    };
    let own = Own {
        status_namespace,
        // Self-managed at some tag: the Cluster API objects are in this cluster.
        clusterapi: at_tags
            .iter()
            .filter_map(capi)
            .any(|p| p.kubeconfig_secret.is_none() && p.kubeconfig_file.is_none()),
        // Every Secret a wave tag names (a rename is applied wave by wave).
        kubeconfig_secrets: at_tags
            .iter()
            .filter_map(capi)
            .filter_map(|p| p.kubeconfig_secret)
            .collect(),
        drain: at_tags.iter().any(|a| {
            a.state
                .node_groups
                .iter()
                .any(|g| g.drain == DrainBy::Tidemark)
        }),
    };
    let role = rbac::cluster_role(&name, &renders, &own);
    println!(
        "# The ClusterRole of the agent of cluster `{}` (tidemark rbac), from its components",
        selection.name
    );
    let at: Vec<String> = at_tags
        .iter()
        .map(|a| format!("{} ({})", a.label, desired::short(&a.revision)))
        .collect();
    println!("# at {}, and the agent's own needs.", at.join(", "));
    if !role.guessed.is_empty() {
        let guessed: Vec<&str> = role.guessed.iter().map(String::as_str).collect();
        println!(
            "# Resource names guessed (no CRD in the renders defines them; check them): {}",
            guessed.join(", ")
        );
    }
    print!("{}", serde_yaml::to_string(&role.cluster_role)?);
    if let Some(secret_role) = &role.kubeconfig_secret {
        println!("---");
        println!(
            "# Cluster API objects in a management cluster: the agent reads its kubeconfig from \
             this one Secret; the management cluster grants the Cluster API kinds \
             (deploy/clusterapi-management)."
        );
        print!("{}", serde_yaml::to_string(secret_role)?);
    }
    Ok(ExitCode::SUCCESS)
}
