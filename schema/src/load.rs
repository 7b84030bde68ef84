//! Reading a fleet repo's documents through a [`Tree`]: each file is checked for size,
//! encoding, shape (one YAML document), header (`apiVersion`, `kind`) and then parsed
//! strictly into its type. Problems become [`Diagnostic`]s; loading never stops at the
//! first one.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;

use crate::cluster::Cluster;
use crate::component::ComponentSet;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::fleet::Fleet;
use crate::meta::API_VERSION;
use crate::source::SourceText;
use crate::tree::{EntryKind, MAX_MANIFEST_BYTES, Tree, TreeError, join};

/// Path of the fleet file.
pub const FLEET_FILE: &str = "fleet.yaml";
/// Directory of cluster manifests (searched recursively).
pub const CLUSTERS_DIR: &str = "clusters";
/// Directory of component sets (searched recursively).
pub const COMPONENTS_DIR: &str = "components";

/// A parsed document and the text it came from.
#[derive(Debug)]
pub struct Document<T> {
    /// Where it came from, for locating diagnostics.
    pub source: SourceText,
    /// The typed value.
    pub value: T,
}

impl<T> Document<T> {
    /// Repo-relative path of the file.
    pub fn file(&self) -> &str {
        &self.source.file
    }

    /// A located diagnostic for `field` of this document.
    pub fn diagnostic(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::field(self.file(), field, message).at(self.source.locate(field))
    }
}

/// Every document of a fleet repo that parsed.
#[derive(Debug, Default)]
pub struct FleetRepo {
    /// `fleet.yaml`, if it parsed.
    pub fleet: Option<Document<Fleet>>,
    /// Cluster manifests that parsed, sorted by file.
    pub clusters: Vec<Document<Cluster>>,
    /// Component sets that parsed, sorted by file.
    pub component_sets: Vec<Document<ComponentSet>>,
    /// Names of component sets whose files did not parse (already reported), so that
    /// references to them are not reported a second time as missing.
    pub broken_sets: BTreeSet<String>,
}

/// The kinds of document, with the directory each lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `fleet.yaml`
    Fleet,
    /// `clusters/**.yaml`
    Cluster,
    /// `components/**.yaml`
    ComponentSet,
}

impl Kind {
    /// The `kind:` value.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Fleet => "Fleet",
            Kind::Cluster => "Cluster",
            Kind::ComponentSet => "ComponentSet",
        }
    }

    fn place(self) -> &'static str {
        match self {
            Kind::Fleet => "fleet.yaml",
            Kind::Cluster => "files under clusters/",
            Kind::ComponentSet => "files under components/",
        }
    }
}

/// Loads every document of the repo. Files that fail to parse are left out of the result
/// and reported; the caller runs [`crate::validate`] on the rest.
pub fn load(tree: &dyn Tree) -> (FleetRepo, Diagnostics) {
    let mut diags = Diagnostics::default();
    let mut repo = FleetRepo::default();
    match read_document::<Fleet>(tree, FLEET_FILE, Kind::Fleet) {
        Ok(doc) => repo.fleet = Some(doc),
        Err(d) => diags.extend(d),
    }
    for (dir, kind) in [
        (CLUSTERS_DIR, Kind::Cluster),
        (COMPONENTS_DIR, Kind::ComponentSet),
    ] {
        let files = match manifest_files(tree, dir) {
            Ok(files) => files,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        for file in files {
            match kind {
                Kind::Cluster => match read_document(tree, &file, kind) {
                    Ok(doc) => repo.clusters.push(doc),
                    Err(d) => diags.extend(d),
                },
                _ => match read_document(tree, &file, kind) {
                    Ok(doc) => repo.component_sets.push(doc),
                    Err(d) => {
                        diags.extend(d);
                        if let Some(name) = declared_name(tree, &file) {
                            repo.broken_sets.insert(name);
                        }
                    }
                },
            }
        }
    }
    (repo, diags)
}

/// The `metadata.name` a file declares, read leniently (for files that failed to parse).
pub fn declared_name(tree: &dyn Tree, file: &str) -> Option<String> {
    let bytes = tree.read(file, MAX_MANIFEST_BYTES).ok()?;
    let value: serde_yaml::Value = serde_yaml::from_slice(&bytes).ok()?;
    value
        .get("metadata")?
        .get("name")?
        .as_str()
        .map(str::to_string)
}

/// Every `*.yaml`/`*.yml` file under `dir`, recursively, sorted. A missing directory
/// holds no files.
pub fn manifest_files(tree: &dyn Tree, dir: &str) -> Result<Vec<String>, Diagnostic> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_string()];
    while let Some(d) = pending.pop() {
        let entries = match tree.list(&d) {
            Ok(entries) => entries,
            Err(TreeError::NotFound(_)) if d == dir => return Ok(out),
            Err(e) => return Err(tree_diagnostic(&d, e)),
        };
        for e in entries {
            let path = join(&d, &e.name);
            match e.kind {
                EntryKind::Dir => pending.push(path),
                EntryKind::File if e.name.ends_with(".yaml") || e.name.ends_with(".yml") => {
                    out.push(path)
                }
                EntryKind::File => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A diagnostic for a file that could not be read.
pub fn tree_diagnostic(path: &str, e: TreeError) -> Diagnostic {
    let message = match e {
        TreeError::NotFound(_) if path == FLEET_FILE => "file not found: a fleet repo needs fleet.yaml at its root (waves, tag pattern); wave labels are not checked without it".to_string(),
        TreeError::NotFound(_) => "file not found".to_string(),
        TreeError::TooLarge { size, limit, .. } => {
            format!(
                "file is {size} bytes, larger than the limit of {limit} bytes for this kind of file"
            )
        }
        TreeError::OutsideRepo { target, .. } => {
            format!("symlink points outside the repository (to {target})")
        }
        TreeError::BadPath(_) => {
            "path must be relative to the repository root and stay inside it".into()
        }
        TreeError::Io { message, .. } => format!("could not be read: {message}"),
    };
    Diagnostic::file(path, message)
}

/// Reads and parses one document of `kind` at `path`.
pub fn read_document<T: DeserializeOwned>(
    tree: &dyn Tree,
    path: &str,
    kind: Kind,
) -> Result<Document<T>, Vec<Diagnostic>> {
    let bytes = tree
        .read(path, MAX_MANIFEST_BYTES)
        .map_err(|e| vec![tree_diagnostic(path, e)])?;
    parse_document(path, bytes, kind)
}

/// Parses one document of `kind` from `bytes`.
pub fn parse_document<T: DeserializeOwned>(
    file: &str,
    bytes: Vec<u8>,
    kind: Kind,
) -> Result<Document<T>, Vec<Diagnostic>> {
    let text = String::from_utf8(bytes).map_err(|e| {
        vec![Diagnostic::file(
            file,
            format!(
                "file is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )]
    })?;
    let source = SourceText::new(file, text);
    let value = single_document(&source)?;
    check_header(&source, &value, kind)?;
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(value) => Ok(Document { source, value }),
        Err(e) => {
            let mut field = path_string(e.path());
            let message = e.inner().to_string();
            // serde reports a missing field at its parent, and an unknown field inside an
            // internally tagged enum (`provider`) at the enum: name the field itself.
            let named =
                backticked(&message, "missing field `").or(backticked(&message, "unknown field `"));
            if let Some(name) = named
                && field != name
                && !field.ends_with(&format!(".{name}"))
            {
                field = if field.is_empty() {
                    name.to_string()
                } else {
                    format!("{field}.{name}")
                };
            }
            let at = if backticked(&message, "unknown field `").is_some() {
                source.locate_key(&field)
            } else {
                source.locate(&field)
            };
            Err(vec![Diagnostic::field(file, field, message).at(at)])
        }
    }
}

fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

fn single_document(source: &SourceText) -> Result<serde_yaml::Value, Vec<Diagnostic>> {
    use serde::Deserialize;
    let file = &source.file;
    let mut docs = serde_yaml::Deserializer::from_str(&source.text);
    let first = match docs.next() {
        Some(doc) => serde_yaml::Value::deserialize(doc).map_err(|e| vec![yaml_error(file, &e)])?,
        None => {
            return Err(vec![Diagnostic::file(
                file.as_str(),
                "file is empty: expected one YAML document",
            )]);
        }
    };
    if let Some(second) = docs.next() {
        // A syntax error in a later document is the more useful report.
        serde_yaml::Value::deserialize(second).map_err(|e| vec![yaml_error(file, &e)])?;
        return Err(vec![Diagnostic::file(
            file.as_str(),
            "file holds more than one YAML document: put each manifest in its own file",
        )]);
    }
    if first.is_null() {
        return Err(vec![Diagnostic::file(
            file.as_str(),
            "file is empty: expected one YAML document",
        )]);
    }
    if !first.is_mapping() {
        return Err(vec![
            Diagnostic::file(
                file.as_str(),
                "expected a mapping with apiVersion, kind, metadata and spec",
            )
            .at(Some((1, 1))),
        ]);
    }
    Ok(first)
}

fn yaml_error(file: &str, e: &serde_yaml::Error) -> Diagnostic {
    // The position goes in front (`file:line:col:`); drop serde_yaml's own copy of it.
    let mut message = format!("invalid YAML: {e}");
    if let Some(l) = e.location() {
        message = message.replacen(
            &format!(" at line {} column {}", l.line(), l.column()),
            "",
            1,
        );
    }
    Diagnostic::file(file, message).at(e.location().map(|l| (l.line(), l.column())))
}

fn check_header(
    source: &SourceText,
    value: &serde_yaml::Value,
    kind: Kind,
) -> Result<(), Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let here = |field: &str, message: String| {
        Diagnostic::field(&source.file, field, message).at(source.locate(field))
    };
    match value.get("apiVersion").map(|v| v.as_str()) {
        None => diags.push(here(
            "apiVersion",
            format!("missing field `apiVersion` (expected {API_VERSION})"),
        )),
        Some(Some(API_VERSION)) => {}
        Some(other) => diags.push(here(
            "apiVersion",
            format!(
                "unsupported apiVersion {}, expected {API_VERSION}",
                shown(other)
            ),
        )),
    }
    match value.get("kind").map(|v| v.as_str()) {
        None => diags.push(here(
            "kind",
            format!("missing field `kind` (expected {})", kind.name()),
        )),
        Some(Some(k)) if k == kind.name() => {}
        Some(other) => diags.push(here(
            "kind",
            format!(
                "wrong kind {}: {} must be kind {}",
                shown(other),
                kind.place(),
                kind.name()
            ),
        )),
    }
    if diags.is_empty() { Ok(()) } else { Err(diags) }
}

fn shown(v: Option<&str>) -> String {
    v.map(|s| format!("`{s}`"))
        .unwrap_or_else(|| "(not a string)".into())
}

fn path_string(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_cluster(text: &str) -> Result<Document<Cluster>, Vec<String>> {
        parse_document::<Cluster>("clusters/a.yaml", text.as_bytes().to_vec(), Kind::Cluster)
            .map_err(|d| d.iter().map(ToString::to_string).collect())
    }

    const GOOD: &str = "apiVersion: tidemark.dev/v1alpha1
kind: Cluster
metadata:
  name: a
spec:
  provider: {kind: clusterapi, namespace: capi-a}
  controlPlane: {version: \"1.30.4\"}
  nodeGroups:
    - {name: general, version: \"1.30.4\"}
";

    #[test]
    fn parses_a_good_manifest() {
        let doc = parse_cluster(GOOD);
        assert!(doc.is_ok(), "{doc:?}");
    }

    #[test]
    fn unknown_field_names_file_field_and_position() {
        let text = GOOD.replace(
            "{name: general, version: \"1.30.4\"}",
            "{name: general, versoin: \"1.30.4\"}",
        );
        let err = parse_cluster(&text).err().unwrap_or_default();
        assert_eq!(err.len(), 1);
        assert!(
            err[0].starts_with(
                "clusters/a.yaml:9:23: spec.nodeGroups[0].versoin: unknown field `versoin`"
            ),
            "{err:?}"
        );
    }

    #[test]
    fn bad_version_is_located() {
        let text = GOOD.replace(
            "controlPlane: {version: \"1.30.4\"}",
            "controlPlane: {version: \"1.x\"}",
        );
        let err = parse_cluster(&text).err().unwrap_or_default();
        assert_eq!(
            err,
            [
                "clusters/a.yaml:7:27: spec.controlPlane.version: `1.x` is not a Kubernetes version (expected MAJOR.MINOR or MAJOR.MINOR.PATCH, e.g. 1.30.4)"
            ]
        );
    }

    #[test]
    fn wrong_kind_and_api_version() {
        let text = GOOD
            .replace("kind: Cluster", "kind: ComponentSet")
            .replace("v1alpha1", "v9");
        let err = parse_cluster(&text).err().unwrap_or_default();
        assert_eq!(
            err,
            [
                "clusters/a.yaml:1:13: apiVersion: unsupported apiVersion `tidemark.dev/v9`, expected tidemark.dev/v1alpha1",
                "clusters/a.yaml:2:7: kind: wrong kind `ComponentSet`: files under clusters/ must be kind Cluster",
            ]
        );
    }

    #[test]
    fn malformed_yaml_empty_multi_and_binary() {
        let err = parse_cluster("apiVersion: [unclosed\nkind: Cluster\n")
            .err()
            .unwrap_or_default();
        assert!(err[0].starts_with("clusters/a.yaml:"), "{err:?}");
        assert!(err[0].contains("invalid YAML"), "{err:?}");
        assert_eq!(
            parse_cluster("").err().unwrap_or_default(),
            ["clusters/a.yaml: file is empty: expected one YAML document"]
        );
        let two = format!("{GOOD}---\n{GOOD}");
        assert!(
            parse_cluster(&two).err().unwrap_or_default()[0]
                .contains("more than one YAML document")
        );
        let err =
            parse_document::<Cluster>("clusters/a.yaml", vec![0x61, 0xff, 0xfe], Kind::Cluster)
                .err()
                .unwrap_or_default();
        assert_eq!(
            err[0].to_string(),
            "clusters/a.yaml: file is not UTF-8 (invalid byte at offset 1)"
        );
    }

    #[test]
    fn missing_field_points_at_parent() {
        let text = GOOD.replace("  controlPlane: {version: \"1.30.4\"}\n", "");
        let err = parse_cluster(&text).err().unwrap_or_default();
        assert_eq!(
            err,
            ["clusters/a.yaml:5:1: spec.controlPlane: missing field `controlPlane`"]
        );
    }
}
