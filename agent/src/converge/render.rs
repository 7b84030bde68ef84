//! Render: `helm template` of one component at the desired commit, and the renders this
//! process keeps.
//!
//! - An in-repo chart is written out from git (never a checkout) into a temporary
//!   directory (mode 0700); the merged values go to helm as one file, and so does helm's
//!   private configuration for a chart that needs credentials (`component::helm::Access`).
//! - Several components of one rank render together ([`RENDER_CONCURRENCY`] processes).
//! - The last prepared render of each component is kept, keyed by its inputs digest, so a
//!   drift check needs no `helm` process. It is only a shortcut: after a restart the
//!   render is made again, and a render that differs from the recorded one is applied.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tidemark_schema::resolve::DesiredComponent;

use crate::component::helm::{Helm, HelmError, RenderRequest};
use crate::component::hooks;
use crate::component::inputs::{ChartSource, ComponentInputs};
use crate::component::manifest::{self, ManifestError, RenderedObject};
use crate::desired::{self, Source};

/// How many `helm template` processes run at once when a pass renders several components.
pub const RENDER_CONCURRENCY: usize = 4;

/// Errors of rendering one component.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The working directory for helm could not be made or written.
    #[error("failed to prepare a working directory for helm")]
    Workdir(#[source] std::io::Error),
    /// The chart could not be written out from git.
    #[error("failed to write out the chart {path} at the desired commit")]
    Chart {
        /// The chart's path in the fleet repo.
        path: String,
        /// The cause.
        #[source]
        source: desired::Error,
    },
    /// The merged values could not be serialised.
    #[error("failed to write the merged values for helm")]
    Values(#[source] serde_json::Error),
    /// helm failed.
    #[error(transparent)]
    Helm(#[from] HelmError),
    /// helm's output is not a set of Kubernetes objects.
    #[error("failed to read the render")]
    Manifest(#[source] ManifestError),
    /// The APIs the cluster serves could not be discovered (the render must be for them).
    #[error("failed to discover the APIs the cluster serves")]
    Discovery(#[source] std::sync::Arc<super::live::ApiError>),
}

/// What a chart is rendered for: the cluster's Kubernetes version and served APIs.
#[derive(Clone, Debug, Default)]
pub struct RenderCapabilities {
    /// `--kube-version`.
    pub kube_version: Option<String>,
    /// `--api-versions`: served `group/version` and `group/version/Kind`.
    pub api_versions: Vec<String>,
}

/// What helm printed, parsed, before it is prepared for the cluster.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// sha256 of the output.
    pub digest: String,
    /// The objects, hooks that never run under tidemark left out.
    pub objects: Vec<RenderedObject>,
}

/// A render prepared for apply (namespaces set, labelled, in apply order), as kept between
/// passes.
#[derive(Clone, Debug)]
pub struct Render {
    /// Digest of the inputs it was rendered from.
    pub inputs: String,
    /// Digest of helm's output.
    pub rendered: String,
    /// The prepared objects.
    pub objects: Vec<RenderedObject>,
}

/// Renders components with helm and keeps their last prepared render.
pub struct Renderer {
    helm: Helm,
    kept: Mutex<HashMap<String, Render>>,
    processes: Counter,
}

impl Renderer {
    /// A renderer running `helm`, keeping nothing yet.
    pub fn new(helm: Helm) -> Self {
        Self {
            helm,
            kept: Mutex::new(HashMap::new()),
            processes: Counter::default(),
        }
    }

    /// Registers `tidemark_helm_renders` (helm processes started) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "helm_renders",
            "helm template processes started (unchanged components start none)",
            self.processes.clone(),
        );
    }

    /// helm processes started by this renderer.
    pub fn processes(&self) -> u64 {
        self.processes.get()
    }

    /// Renders `c` from `inputs` at `revision`.
    pub async fn render(
        &self,
        source: &Source,
        revision: &str,
        capabilities: &RenderCapabilities,
        c: &DesiredComponent,
        inputs: &ComponentInputs,
    ) -> Result<Rendered, RenderError> {
        let dir = tempfile::Builder::new()
            .prefix("tidemark-render-")
            .tempdir()
            .map_err(RenderError::Workdir)?;
        let chart_dir = dir.path().join("chart");
        if let ChartSource::InRepo { path } = &inputs.chart {
            tokio::fs::create_dir_all(&chart_dir)
                .await
                .map_err(RenderError::Workdir)?;
            source
                .write_chart(revision, path, &chart_dir)
                .await
                .map_err(|source| RenderError::Chart {
                    path: path.clone(),
                    source,
                })?;
        }
        let values_file = dir.path().join("values.yaml");
        // JSON is YAML: the merged values go to helm as one file.
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(inputs.values.clone()))
            .map_err(RenderError::Values)?;
        tokio::fs::write(&values_file, text)
            .await
            .map_err(RenderError::Workdir)?;
        // Credentials read now, helm's private configuration written into this render's
        // directory (removed with it).
        let access = self.helm.access(&inputs.chart, dir.path()).await?;
        let req = RenderRequest {
            release: &c.release,
            namespace: &c.namespace,
            chart: &inputs.chart,
            chart_dir: &chart_dir,
            version: inputs.version.as_deref(),
            values_file: &values_file,
            kube_version: capabilities.kube_version.as_deref(),
            api_versions: &capabilities.api_versions,
            access: &access,
        };
        self.processes.inc();
        let out = self.helm.render(&req).await?;
        crate::crash::point("rendered");
        let mut objects = manifest::parse(&out).map_err(RenderError::Manifest)?;
        // Test, delete and rollback hooks never run under tidemark.
        objects.retain(|o| !hooks::is_never_applied(&o.body));
        Ok(Rendered {
            digest: manifest::digest(&out),
            objects,
        })
    }

    /// Renders `jobs` together, [`RENDER_CONCURRENCY`] helm processes at a time. Components
    /// whose render is kept for their inputs are skipped (the step does not need helm).
    pub async fn render_all(
        &self,
        source: &Source,
        revision: &str,
        capabilities: &RenderCapabilities,
        jobs: &[(&DesiredComponent, &ComponentInputs)],
    ) -> HashMap<String, Result<Rendered, RenderError>> {
        // Futures built by a named function, not a closure: rustc cannot prove a
        // closure-made future `Send` for every lifetime (rust-lang/rust#64552).
        let renders: Vec<_> = jobs
            .iter()
            .filter(|(c, i)| self.kept(&c.name, &i.digest).is_none())
            .map(|(c, i)| self.render_named(source, revision, capabilities, c, i))
            .collect();
        futures::stream::iter(renders)
            .buffer_unordered(RENDER_CONCURRENCY)
            .collect()
            .await
    }

    async fn render_named(
        &self,
        source: &Source,
        revision: &str,
        capabilities: &RenderCapabilities,
        c: &DesiredComponent,
        inputs: &ComponentInputs,
    ) -> (String, Result<Rendered, RenderError>) {
        let rendered = self.render(source, revision, capabilities, c, inputs).await;
        (c.name.clone(), rendered)
    }

    /// The kept render of `name`, if it was made from inputs `digest`.
    pub fn kept(&self, name: &str, digest: &str) -> Option<Render> {
        self.kept
            .lock()
            .ok()?
            .get(name)
            .filter(|r| r.inputs == digest)
            .cloned()
    }

    /// Keeps `render` as the last one of `name`.
    pub fn keep(&self, name: &str, render: Render) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.insert(name.to_string(), render);
        }
    }

    /// Forgets the render of `name` (a removed component).
    pub fn forget(&self, name: &str) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.remove(name);
        }
    }
}
