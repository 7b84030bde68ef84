//! Renders of many clusters' components from git alone, each distinct render made once.
//!
//! - A render is keyed by the digest of its inputs (chart contents or reference, version,
//!   release, namespace, merged values) and of what it is rendered for (`--kube-version`,
//!   `--api-versions`): a thousand clusters sharing a chart, its values and a declared
//!   version render it once; every further request is a cache hit.
//! - Requests are gathered first (the chart is read from the tree then, once per key, into
//!   a private working directory), then rendered together, several `helm` processes at a
//!   time ([`RenderCache::run`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tidemark_schema::Tree;
use tidemark_schema::resolve::DesiredComponent;

use crate::component::helm::Helm;
use crate::component::inputs::{self, ChartSource, ComponentInputs, InputsError};
use crate::component::manifest::RenderedObject;
use crate::converge::render::{RenderCapabilities, render_in};
use crate::status::describe;

/// What one render gave: the rendered objects (hooks tidemark never runs left out), or why
/// it failed.
pub type Outcome = Arc<Result<Vec<RenderedObject>, String>>;

/// Errors of preparing a render.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The working directory could not be made.
    #[error("failed to prepare a working directory for helm")]
    Workdir(#[source] std::io::Error),
    /// The chart could not be read from the tree.
    #[error(transparent)]
    Inputs(#[from] InputsError),
}

struct Job {
    component: DesiredComponent,
    inputs: ComponentInputs,
    capabilities: RenderCapabilities,
    dir: PathBuf,
}

/// Renders by key, made at most once each.
pub struct RenderCache {
    helm: Helm,
    workdir: tempfile::TempDir,
    pending: Vec<(String, Job)>,
    done: HashMap<String, Outcome>,
    renders: u64,
    hits: u64,
}

impl RenderCache {
    /// An empty cache rendering with `helm`, working in a new private temporary directory.
    pub fn new(helm: Helm) -> Result<Self, CacheError> {
        let workdir = tempfile::Builder::new()
            .prefix("tidemark-renders-")
            .tempdir()
            .map_err(CacheError::Workdir)?;
        Ok(Self {
            helm,
            workdir,
            pending: Vec::new(),
            done: HashMap::new(),
            renders: 0,
            hits: 0,
        })
    }

    /// The key of a render of `inputs` for `capabilities`.
    pub fn key(inputs: &ComponentInputs, capabilities: &RenderCapabilities) -> String {
        let mut h = Sha256::new();
        h.update(inputs.digest.as_bytes());
        h.update(b"\nkube ");
        h.update(
            capabilities
                .kube_version
                .as_deref()
                .unwrap_or("")
                .as_bytes(),
        );
        for v in &capabilities.api_versions {
            h.update(b"\n");
            h.update(v.as_bytes());
        }
        format!("sha256:{:x}", h.finalize())
    }

    /// Asks for the render of `c` from `inputs` (read from `tree`) for `capabilities` and
    /// returns its key. A key asked for before is a cache hit: nothing is read or rendered
    /// again.
    pub fn request(
        &mut self,
        tree: &dyn Tree,
        c: &DesiredComponent,
        inputs: &ComponentInputs,
        capabilities: &RenderCapabilities,
    ) -> Result<String, CacheError> {
        let key = Self::key(inputs, capabilities);
        if self.done.contains_key(&key) || self.pending.iter().any(|(k, _)| *k == key) {
            self.hits += 1;
            return Ok(key);
        }
        let dir = self
            .workdir
            .path()
            .join(format!("r{}", self.pending.len() + self.done.len()));
        let chart_dir = dir.join("chart");
        std::fs::create_dir_all(&chart_dir).map_err(CacheError::Workdir)?;
        if let ChartSource::InRepo { path } = &inputs.chart {
            inputs::materialise(tree, path, &chart_dir)?;
        }
        self.pending.push((
            key.clone(),
            Job {
                component: c.clone(),
                inputs: inputs.clone(),
                capabilities: capabilities.clone(),
                dir,
            },
        ));
        Ok(key)
    }

    /// Renders every render asked for and not yet made, `concurrency` helm processes at a
    /// time.
    pub async fn run(&mut self, concurrency: usize) {
        let jobs = std::mem::take(&mut self.pending);
        self.renders += jobs.len() as u64;
        let helm = &self.helm;
        let renders: Vec<_> = jobs
            .iter()
            .map(|(key, job)| render_one(helm, key, job))
            .collect();
        let results: Vec<(String, Outcome)> = futures::stream::iter(renders)
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        for (_, job) in &jobs {
            // The chart and values are not needed any more; a failure to remove them only
            // leaves files in our own temporary directory (removed with it).
            let _ = std::fs::remove_dir_all(&job.dir);
        }
        self.done.extend(results);
    }

    /// The render of `key`, once [`Self::run`] made it.
    pub fn outcome(&self, key: &str) -> Option<Outcome> {
        self.done.get(key).cloned()
    }

    /// `(renders made, cache hits)` so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.renders, self.hits)
    }
}

async fn render_one(helm: &Helm, key: &str, job: &Job) -> (String, Outcome) {
    let rendered = render_in(
        helm,
        &job.dir,
        &job.capabilities,
        &job.component,
        &job.inputs,
    )
    .await
    .map(|r| r.objects)
    .map_err(|e| describe(&e));
    (key.to_string(), Arc::new(rendered))
}

/// How many helm processes to run at once: one per CPU, at least two.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2)
        .clamp(2, 16)
}
