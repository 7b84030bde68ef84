//! A component's inputs, read from the fleet repo at the desired commit: the chart (a
//! directory of the repo, or a chart repository reference), its version, and the values
//! layers merged in the documented order (component set, then the cluster's values files,
//! then inline values). Their sha256 decides whether the component must be rendered again.

use std::path::Path;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tidemark_schema::resolve::{DesiredComponent, ValuesLayer};
use tidemark_schema::tree::{EntryKind, MAX_VALUES_BYTES, Tree, TreeError, join, normalize};

use super::values;

/// Largest chart file tidemark reads from the repo.
const MAX_CHART_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Most files a chart directory may hold.
const MAX_CHART_FILES: usize = 10_000;

/// Where a chart comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChartSource {
    /// A directory of the fleet repo, read at the desired commit.
    InRepo {
        /// Repo-relative path (normalized).
        path: String,
    },
    /// A classic chart repository (`https://...`).
    Repository {
        /// Repository URL.
        url: String,
        /// Chart name.
        name: String,
    },
    /// An OCI registry (`oci://...`).
    Oci {
        /// `oci://registry/path/name`.
        reference: String,
    },
}

/// Everything a render of one component needs, and its digest.
#[derive(Clone, Debug)]
pub struct ComponentInputs {
    /// sha256 of chart contents or reference, version, release, namespace and merged values.
    pub digest: String,
    /// The chart.
    pub chart: ChartSource,
    /// The version to ask for (repository charts).
    pub version: Option<String>,
    /// The chart as people read it: `metrics-lite 0.2.0`.
    pub display: String,
    /// The merged values.
    pub values: Map<String, Value>,
}

/// Why the inputs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    /// A file could not be read from the repo.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A values file is not a YAML mapping.
    #[error(transparent)]
    Values(#[from] values::ValuesError),
    /// The chart reference is incomplete (validation reports it too).
    #[error("chart of component {0}: give either path, or repository with name and version")]
    Chart(String),
    /// The chart directory is too large.
    #[error("{0}: chart has more than {MAX_CHART_FILES} files")]
    TooManyFiles(String),
    /// Writing the chart out for helm failed.
    #[error("failed to write chart file {path}: {message}")]
    Write {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
}

/// Reads the inputs of `c` from `tree`.
pub fn gather(tree: &dyn Tree, c: &DesiredComponent) -> Result<ComponentInputs, InputsError> {
    let mut layers = Vec::new();
    for layer in &c.values {
        match layer {
            ValuesLayer::File(path) => {
                let path = normalize(path)?;
                let bytes = tree.read(&path, MAX_VALUES_BYTES)?;
                let text = String::from_utf8_lossy(&bytes);
                layers.push(values::parse_values_file(&path, &text)?);
            }
            ValuesLayer::Inline(map) => layers.push(map.clone()),
        }
    }
    let merged = values::merge(layers);

    let chart = &c.chart;
    let (source, identity, display) = match (&chart.path, &chart.repository, &chart.name) {
        (Some(path), None, _) => {
            let path = normalize(path)?;
            let tree_digest = tree_digest(tree, &path)?;
            let display = chart_display(tree, &path).unwrap_or_else(|| path.clone());
            (
                ChartSource::InRepo { path: path.clone() },
                json!({"path": path, "tree": tree_digest}),
                display,
            )
        }
        (None, Some(url), Some(name)) => {
            let version = chart.version.clone().unwrap_or_default();
            let display = format!("{name} {version}");
            let source = if url.starts_with("oci://") {
                ChartSource::Oci {
                    reference: format!("{}/{name}", url.trim_end_matches('/')),
                }
            } else {
                ChartSource::Repository {
                    url: url.clone(),
                    name: name.clone(),
                }
            };
            (source, json!({"repository": url, "name": name}), display)
        }
        _ => return Err(InputsError::Chart(c.name.clone())),
    };
    let version = match source {
        ChartSource::InRepo { .. } => None,
        _ => chart.version.clone(),
    };
    let identity = json!({
        "chart": identity,
        "version": version,
        "release": c.release,
        "namespace": c.namespace,
        "values": Value::Object(merged.clone()),
    });
    let digest = format!(
        "sha256:{:x}",
        Sha256::digest(values::canonical_json(&identity).as_bytes())
    );
    Ok(ComponentInputs {
        digest,
        chart: source,
        version,
        display,
        values: merged,
    })
}

/// `name version` from a chart's `Chart.yaml`, if it reads.
fn chart_display(tree: &dyn Tree, dir: &str) -> Option<String> {
    let bytes = tree.read(&join(dir, "Chart.yaml"), MAX_VALUES_BYTES).ok()?;
    let doc: serde_yaml::Value = serde_yaml::from_slice(&bytes).ok()?;
    let name = doc.get("name")?.as_str()?;
    let version = match doc.get("version")? {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other).ok()?.trim().to_string(),
    };
    Some(format!("{name} {version}"))
}

/// The files of directory `dir`, recursively, as (repo-relative path, relative path).
fn chart_files(tree: &dyn Tree, dir: &str) -> Result<Vec<(String, String)>, InputsError> {
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let here = if rel.is_empty() {
            dir.to_string()
        } else {
            join(dir, &rel)
        };
        for entry in tree.list(&here)? {
            let child = if rel.is_empty() {
                entry.name.clone()
            } else {
                format!("{rel}/{}", entry.name)
            };
            match entry.kind {
                EntryKind::Dir => todo.push(child),
                EntryKind::File => out.push((join(dir, &child), child)),
            }
            if out.len() > MAX_CHART_FILES {
                return Err(InputsError::TooManyFiles(dir.to_string()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// sha256 over every file of the chart directory (paths and contents).
fn tree_digest(tree: &dyn Tree, dir: &str) -> Result<String, InputsError> {
    let mut h = Sha256::new();
    for (path, rel) in chart_files(tree, dir)? {
        let bytes = tree.read(&path, MAX_CHART_FILE_BYTES)?;
        h.update(rel.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(format!("sha256:{:x}", h.finalize()))
}

/// Writes the chart directory `dir` of `tree` into `dest` (which must exist).
pub fn materialise(tree: &dyn Tree, dir: &str, dest: &Path) -> Result<(), InputsError> {
    for (path, rel) in chart_files(tree, dir)? {
        let bytes = tree.read(&path, MAX_CHART_FILE_BYTES)?;
        let target = dest.join(&rel);
        let write_err = |e: std::io::Error| InputsError::Write {
            path: path.clone(),
            message: e.to_string(),
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        std::fs::write(&target, &bytes).map_err(write_err)?;
    }
    Ok(())
}
