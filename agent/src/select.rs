//! Which manifest is this cluster's, and which version of it applies: DESIGN.md "How an
//! agent finds its desired state". Pure: reads only through `schema::Tree`.
//!
//! 1. On the default branch, exactly one `Cluster` matches the identity selector.
//! 2. Its `tidemark.dev/wave` label names its wave; `fleet.yaml` (default branch) maps the
//!    wave to a tag. No label: the default branch is the desired state.
//! 3. At the tag, the manifest with the same `metadata.name` is the desired state, with
//!    component sets and fleet defaults read from that same commit.

use std::collections::BTreeMap;

use serde::Deserialize;
use tidemark_schema::load::{
    CLUSTERS_DIR, COMPONENTS_DIR, FLEET_FILE, Kind, manifest_files, read_document, tree_diagnostic,
};
use tidemark_schema::tree::MAX_MANIFEST_BYTES;
use tidemark_schema::validate::{check_cluster, check_component_set, check_fleet};
use tidemark_schema::{
    Cluster, ComponentSet, DesiredState, Diagnostic, Diagnostics, Fleet, LabelSelector, Tree,
    resolve,
};

/// The cluster chosen on the default branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// `metadata.name` of the manifest.
    pub name: String,
    /// Its file on the default branch.
    pub file: String,
    /// Its wave, if labelled.
    pub wave: Option<String>,
    /// The tag that holds its desired state, if it has a wave.
    pub tag: Option<String>,
}

/// Why no desired state could be chosen. Each needs a person to fix the repo or the
/// agent's selector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `fleet.yaml` or a manifest is invalid.
    #[error("the fleet repo is invalid:\n{0}")]
    Invalid(Diagnostics),
    /// No `Cluster` matches the selector.
    #[error("no cluster manifest matches selector `{selector}`")]
    NoMatch {
        /// The identity selector.
        selector: String,
    },
    /// More than one `Cluster` matches.
    #[error("selector `{selector}` matches {} cluster manifests ({}); it must match exactly one", .files.len(), .files.join(", "))]
    Ambiguous {
        /// The identity selector.
        selector: String,
        /// The files that match.
        files: Vec<String>,
    },
    /// The cluster's wave is not declared in `fleet.yaml`.
    #[error("{file}: wave `{wave}` is not declared in fleet.yaml")]
    UnknownWave {
        /// The manifest.
        file: String,
        /// The wave.
        wave: String,
    },
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Just enough of a manifest to select it; everything else is ignored (and validated only
/// for the one manifest selected).
#[derive(Deserialize)]
struct Header {
    kind: Option<String>,
    metadata: Option<HeaderMeta>,
}

#[derive(Deserialize)]
struct HeaderMeta {
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Reads `fleet.yaml` and checks it.
pub fn fleet(tree: &dyn Tree) -> Result<Fleet> {
    let doc = read_document::<Fleet>(tree, FLEET_FILE, Kind::Fleet)
        .map_err(|d| Error::Invalid(Diagnostics(d)))?;
    let problems = check_fleet(&doc);
    if !problems.is_empty() {
        return Err(Error::Invalid(Diagnostics(problems)));
    }
    Ok(doc.value)
}

/// Step 1 and 2: finds the one manifest matching `selector` on the default branch.
pub fn select(branch: &dyn Tree, fleet: &Fleet, selector: &LabelSelector) -> Result<Selection> {
    let invalid = |d: Diagnostic| Error::Invalid(Diagnostics(vec![d]));
    let needles = needles(selector);
    let mut matches = Vec::new();
    for file in manifest_files(branch, CLUSTERS_DIR).map_err(invalid)? {
        let Some(header) = header_if_candidate(branch, &file, &needles).map_err(invalid)? else {
            continue;
        };
        let Some(meta) = header.metadata else {
            continue;
        };
        if header.kind.as_deref() == Some("Cluster") && selector.matches(&meta.labels) {
            matches.push((file, meta));
        }
    }
    let (file, meta) = match matches.len() {
        0 => {
            return Err(Error::NoMatch {
                selector: selector.to_string(),
            });
        }
        1 => matches.remove(0),
        _ => {
            return Err(Error::Ambiguous {
                selector: selector.to_string(),
                files: matches.into_iter().map(|(f, _)| f).collect(),
            });
        }
    };
    let name = meta.name.ok_or_else(|| {
        invalid(Diagnostic::field(
            &file,
            "metadata.name",
            "missing field `name`",
        ))
    })?;
    let wave = meta.labels.get(tidemark_schema::meta::WAVE_LABEL).cloned();
    let tag = match &wave {
        None => None,
        Some(w) if fleet.wave(w).is_some() => Some(fleet.wave_tag(w)),
        Some(w) => {
            return Err(Error::UnknownWave {
                file,
                wave: w.clone(),
            });
        }
    };
    Ok(Selection {
        name,
        file,
        wave,
        tag,
    })
}

/// Literal strings that must occur in a manifest for `selector` to match it: the values of
/// its `matchLabels`. A file without them (and without escapes that could spell them
/// differently) is skipped without parsing, which keeps selection fast in large fleets.
fn needles(selector: &LabelSelector) -> Vec<String> {
    selector
        .match_labels
        .values()
        .filter(|v| !v.is_empty())
        .cloned()
        .collect()
}

fn header_if_candidate(
    tree: &dyn Tree,
    file: &str,
    needles: &[String],
) -> Result<Option<Header>, Diagnostic> {
    let bytes = tree
        .read(file, MAX_MANIFEST_BYTES)
        .map_err(|e| tree_diagnostic(file, e))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| Diagnostic::file(file, "file is not UTF-8"))?;
    // A YAML escape (`\x41`) could spell a needle without containing it: parse such files.
    if !text.contains('\\') && !needles.iter().all(|n| text.contains(n.as_str())) {
        return Ok(None);
    }
    // Files that do not even parse as a header cannot be selected; `validate` reports them.
    Ok(serde_yaml::from_str::<Header>(text).ok())
}

/// What the chosen tree says the cluster should be.
#[derive(Debug)]
pub enum AtRevision {
    /// The manifest was found and is valid.
    Desired(Box<DesiredState>),
    /// The tree does not contain a manifest with that name (a tag cut before the cluster
    /// was added): nothing to do yet.
    NotInRevision,
}

/// Step 3: the desired state of cluster `selection.name` in `tree` (the wave tag's commit,
/// or the default branch for clusters without a wave).
pub fn desired_at(tree: &dyn Tree, selection: &Selection) -> Result<AtRevision> {
    let invalid = |d: Vec<Diagnostic>| Error::Invalid(Diagnostics(d));
    let Some(file) = find_named(
        tree,
        CLUSTERS_DIR,
        &selection.file,
        &selection.name,
        "Cluster",
    )
    .map_err(|d| invalid(vec![d]))?
    else {
        return Ok(AtRevision::NotInRevision);
    };
    let doc = read_document::<Cluster>(tree, &file, Kind::Cluster).map_err(invalid)?;
    let fleet_doc = read_document::<Fleet>(tree, FLEET_FILE, Kind::Fleet).map_err(invalid)?;

    let mut set_docs = Vec::new();
    let mut broken_sets = std::collections::BTreeSet::new();
    let mut problems = check_fleet(&fleet_doc);
    for name in &doc.value.spec.component_sets {
        match find_named(
            tree,
            COMPONENTS_DIR,
            &format!("{COMPONENTS_DIR}/{name}.yaml"),
            name,
            "ComponentSet",
        ) {
            Ok(Some(f)) => match read_document::<ComponentSet>(tree, &f, Kind::ComponentSet) {
                Ok(d) => set_docs.push(d),
                Err(d) => {
                    problems.extend(d);
                    broken_sets.insert(name.clone());
                }
            },
            Ok(None) => {} // reported by check_cluster as a missing set
            Err(d) => problems.push(d),
        }
    }
    for d in &set_docs {
        problems.extend(check_component_set(d, tree));
    }
    let sets: BTreeMap<String, &ComponentSet> = set_docs
        .iter()
        .map(|d| (d.value.metadata.name.clone(), &d.value))
        .collect();
    problems.extend(check_cluster(
        &doc,
        Some(&fleet_doc.value),
        &sets,
        &broken_sets,
        tree,
    ));
    if !problems.is_empty() {
        let mut d = Diagnostics(problems);
        d.sort();
        return Err(Error::Invalid(d));
    }
    let state = resolve::resolve(
        Some(&fleet_doc.value),
        &doc.value,
        selection.wave.clone(),
        &sets,
    );
    Ok(AtRevision::Desired(Box::new(state)))
}

/// The file under `dir` whose document has `kind` and `metadata.name == name`: `hint` first
/// (the usual case), then every file that mentions the name.
fn find_named(
    tree: &dyn Tree,
    dir: &str,
    hint: &str,
    name: &str,
    kind: &str,
) -> Result<Option<String>, Diagnostic> {
    let is_it = |file: &str| -> Result<bool, Diagnostic> {
        let header = header_if_candidate(tree, file, &[name.to_string()])?;
        Ok(header.is_some_and(|h| {
            h.kind.as_deref() == Some(kind)
                && h.metadata.and_then(|m| m.name).as_deref() == Some(name)
        }))
    };
    if matches!(
        tree.kind(hint),
        Ok(Some(tidemark_schema::tree::EntryKind::File))
    ) && is_it(hint)?
    {
        return Ok(Some(hint.to_string()));
    }
    for file in manifest_files(tree, dir)? {
        if file != hint && is_it(&file)? {
            return Ok(Some(file));
        }
    }
    Ok(None)
}
