//! Preview: what applying a component would do, for `tidemark plan`: its render compared
//! with the cluster, without changing anything.

use tidemark_schema::resolve::DesiredComponent;

use super::apply::{self, ApplyError};
use super::prune::{self, PruneError};
use super::render::RenderError;
use super::{Lookup, Scratch, Target};
use crate::component::diff;
use crate::component::inputs::ComponentInputs;
use crate::status::record::Inventory;

/// What applying a component would do.
#[derive(Clone, Debug, Default)]
pub struct Preview {
    /// The chart (`metrics-lite 0.2.0`).
    pub chart: String,
    /// Objects rendered.
    pub rendered: usize,
    /// Objects that do not exist yet.
    pub create: usize,
    /// Objects whose live state differs from the render.
    pub change: usize,
    /// Objects already as rendered.
    pub unchanged: usize,
    /// Objects of the component that the render no longer holds (deleted by prune).
    pub prune: Vec<String>,
}

/// Errors of a preview: those the apply would meet.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// The render failed.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The render cannot be applied.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The cluster could not be read.
    #[error("failed to read the cluster")]
    Live(#[source] super::live::LiveError),
    /// The component's objects could not be listed.
    #[error(transparent)]
    Prune(#[from] PruneError),
}

/// Renders `c` and compares it with the cluster; what it no longer renders is found from
/// its `inventory` (as prune would, see [`prune::prunable`]).
pub async fn preview(
    target: &Target<'_>,
    scratch: &mut Scratch,
    c: &DesiredComponent,
    inputs: &ComponentInputs,
    inventory: Option<&Inventory>,
) -> Result<Preview, PreviewError> {
    let client = target.client;
    let capabilities = scratch
        .render_capabilities(client, target.capabilities)
        .await?;
    let rendered = target
        .renderer
        .render(target.source, target.revision, &capabilities, c, inputs)
        .await?;
    let objects = apply::prepare(client, scratch, c, rendered.objects).await?;
    let mut preview = Preview {
        chart: inputs.display.clone(),
        rendered: objects.len(),
        ..Preview::default()
    };
    for o in &objects {
        match scratch
            .lookup(client, &c.name, o)
            .await
            .map_err(PreviewError::Live)?
        {
            // Absent, or a kind a CRD of this render will define.
            Lookup::Absent | Lookup::NotServed => preview.create += 1,
            Lookup::Found(live) if diff::first_difference(&o.body, &live).is_some() => {
                preview.change += 1;
            }
            Lookup::Found(_) => preview.unchanged += 1,
        }
    }
    preview.prune = prune::prunable(
        client,
        scratch,
        &c.name,
        inventory,
        Some(&objects),
        c.prune_crds,
    )
    .await?
    .doomed
    .iter()
    .map(|o| o.key.to_string())
    .collect();
    Ok(preview)
}
