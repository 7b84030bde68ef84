//! Manifest: the objects `helm template` printed, parsed into [`RenderedObject`]s and prepared
//! for server-side apply.
//!
//! - [`parse`] reads the multi-document YAML and checks that every object has an identity.
//! - [`prepare`] fills in namespaces, stamps the [`COMPONENT_LABEL`] that prune selects by,
//!   refuses duplicates and sorts the objects into apply order.
//!
//! Pure: whether a kind is namespaced comes from the caller (API discovery), as a function.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::kube_yaml::{self, DuplicateKeys};
use super::values::json_kind;

use crate::keys::labels::COMPONENT as COMPONENT_LABEL;

const CRD_GROUP: &str = "apiextensions.k8s.io";
const CRD_KIND: &str = "CustomResourceDefinition";

/// One object of a render.
///
/// Invariants after [`parse`]: `api_version`, `kind` and `name` are non-empty and equal the
/// corresponding fields of `body`; `namespace` is `body.metadata.namespace` (`None` when absent
/// or empty). [`prepare`] keeps these in step when it changes the namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedObject {
    /// `apiVersion`, e.g. `apps/v1` or `v1`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` as written in the render (`None` if absent).
    pub namespace: Option<String>,
    /// The `# Source: chart/templates/x.yaml` of its document, if any.
    pub source: Option<String>,
    /// The whole object.
    pub body: Value,
}

impl RenderedObject {
    /// The API group: `""` for the core group (`v1`), `apps` for `apps/v1`.
    pub fn group(&self) -> &str {
        match self.api_version.split_once('/') {
            Some((group, _)) => group,
            None => "",
        }
    }

    /// The API version without the group: `v1` for both `v1` and `apps/v1`.
    pub fn version(&self) -> &str {
        match self.api_version.split_once('/') {
            Some((_, version)) => version,
            None => &self.api_version,
        }
    }

    /// The identity of the live object this renders to.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            group: self.group().to_owned(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Where the object came from, for error messages.
    fn origin(&self) -> String {
        match &self.source {
            Some(source) => source.clone(),
            None => "a document without a `# Source:` line".to_owned(),
        }
    }
}

/// Identity of a live object: group, kind, namespace and name.
///
/// The version is deliberately left out: `apps/v1` and `apps/v1beta2` of the same Deployment are
/// one object in the cluster.
///
/// Display: `Kind/ns/name`, `Kind/name` (cluster-scoped), `Kind.group/ns/name` (non-core group).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// API group, `""` for core.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "/{ns}")?;
        }
        write!(f, "/{}", self.name)
    }
}

/// Why a render cannot be applied.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ManifestError {
    /// A document is not valid YAML.
    #[error("{document}: invalid YAML at line {line} column {column} of the render: {message}")]
    Syntax {
        /// The document's `# Source:` or `document N`.
        document: String,
        /// 1-based line in the whole render.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the YAML parser said.
        message: String,
    },
    /// A field of an object is missing or malformed.
    #[error("{document}: {field}: {problem}")]
    Invalid {
        /// The document's `# Source:` or `document N`.
        document: String,
        /// Path of the field (`metadata.name`, `items[2].kind`).
        field: String,
        /// What is wrong: `missing`, `must be a string, found a number`, ...
        problem: String,
    },
    /// A document holds something other than a mapping (a list, a bare string).
    #[error("{document}: the document must be a mapping, found {found}")]
    NotMapping {
        /// The document's `# Source:` or `document N`.
        document: String,
        /// What was found instead, with its article: "a sequence".
        found: &'static str,
    },
    /// Neither discovery nor a CRD in the render knows whether the kind is namespaced.
    #[error(
        "{origin}: {key}: unknown kind {api_version} {kind}: the cluster does not serve it and \
         no CustomResourceDefinition in the render defines it",
        kind = key.kind
    )]
    UnknownKind {
        /// Where the object came from.
        origin: String,
        /// Its `apiVersion`.
        api_version: String,
        /// The object (boxed to keep the error small).
        key: Box<ObjectKey>,
    },
    /// Two objects of the render are the same live object.
    #[error("{key} is rendered twice: by {first} and by {second}")]
    Duplicate {
        /// The object (boxed to keep the error small).
        key: Box<ObjectKey>,
        /// Where the first copy came from.
        first: String,
        /// Where the second copy came from.
        second: String,
    },
}

/// `sha256:<hex>` of the raw text (the render as `helm template` printed it).
pub fn digest(text: &str) -> String {
    let hash = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether the object is a CustomResourceDefinition (applied first: later objects may be its
/// custom resources).
pub fn is_crd(obj: &RenderedObject) -> bool {
    obj.group() == CRD_GROUP && obj.kind == CRD_KIND
}

fn is_namespace(obj: &RenderedObject) -> bool {
    obj.group().is_empty() && obj.kind == "Namespace"
}

/// One `---`-separated document of the render.
struct Document<'a> {
    /// `# Source:` path or `document N`.
    name: String,
    source: Option<String>,
    /// 1-based line of the document's first line in the whole render.
    first_line: usize,
    text: &'a str,
}

/// Parses the output of `helm template`: multi-document YAML with `# Source:` comments.
///
/// - Each document is read as kubectl reads it ([`kube_yaml`]: YAML 1.1 scalars, so
///   `defaultMode: 0755` is 493; a key written twice keeps the last value).
/// - Documents that are empty or hold only comments are skipped.
/// - A `*List` kind with an `items` array is expanded into its items.
/// - Every object must be a mapping with non-empty string `apiVersion`, `kind` and
///   `metadata.name`; errors name the document by its `# Source:` (else `document N`).
/// - Duplicates are *not* checked here: the same object may be written with and without its
///   namespace, which only [`prepare`] can resolve.
pub fn parse(text: &str) -> Result<Vec<RenderedObject>, ManifestError> {
    let mut objects = Vec::new();
    for doc in split_documents(text) {
        let body =
            kube_yaml::first_document(doc.text, DuplicateKeys::LastWins).map_err(|e| match e {
                kube_yaml::Error::Syntax {
                    line,
                    column,
                    message,
                } => ManifestError::Syntax {
                    document: doc.name.clone(),
                    line: line + doc.first_line - 1,
                    column,
                    message,
                },
                kube_yaml::Error::Value { path, problem } => ManifestError::Invalid {
                    document: doc.name.clone(),
                    field: path,
                    problem,
                },
            })?;
        if body.is_null() {
            continue;
        }
        let is_list = body
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|kind| kind.ends_with("List"))
            && body.get("items").is_some_and(Value::is_array);
        if is_list {
            let Value::Object(mut list) = body else {
                // `is_list` looked up keys, so `body` is an object.
                continue;
            };
            let Some(Value::Array(items)) = list.remove("items") else {
                continue;
            };
            for (i, item) in items.into_iter().enumerate() {
                objects.push(to_object(item, &doc, &format!("items[{i}]"))?);
            }
        } else {
            objects.push(to_object(body, &doc, "")?);
        }
    }
    Ok(objects)
}

/// Splits the render at document markers.
///
/// A line starting with `---` or `...` followed by a blank or the line end always ends a
/// document in YAML (it may not occur inside any scalar), so a textual split is exact and lets
/// each document keep its own `# Source:` and line offset.
fn split_documents(text: &str) -> Vec<Document<'_>> {
    // (start byte, end byte, first line) of each raw chunk. The `---` line stays in its chunk
    // so that `--- {inline: doc}` still parses.
    let mut chunks: Vec<(usize, usize, usize)> = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        if is_marker(line, "---") {
            chunks.push((start, offset, start_line));
            start = offset;
            start_line = line_no;
        } else if is_marker(line, "...") {
            // The end marker belongs to no document; the next one starts after it.
            chunks.push((start, offset, start_line));
            start = offset + line.len();
            start_line = line_no + 1;
        }
        offset += line.len();
    }
    chunks.push((start, text.len(), start_line));

    let mut docs = Vec::new();
    let mut number = 0;
    for (start, end, first_line) in chunks {
        let chunk = &text[start..end];
        let explicit = is_marker(chunk, "---");
        // Only real documents get a number: YAML itself sees no document in a blank preamble.
        if !explicit && !has_content(chunk) {
            continue;
        }
        number += 1;
        let source = source_of(chunk);
        let name = source
            .clone()
            .unwrap_or_else(|| format!("document {number}"));
        if has_content(chunk) {
            docs.push(Document {
                name,
                source,
                first_line,
                text: chunk,
            });
        }
    }
    docs
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// Whether a chunk holds anything but markers, comments and blank lines.
fn has_content(chunk: &str) -> bool {
    chunk.lines().any(|line| {
        let line = line.strip_prefix("---").unwrap_or(line).trim();
        !line.is_empty() && !line.starts_with('#')
    })
}

/// The `# Source:` comment before the document's content, as Helm prints it.
fn source_of(chunk: &str) -> Option<String> {
    for line in chunk.lines() {
        let line = line.strip_prefix("---").unwrap_or(line).trim();
        if let Some(source) = line.strip_prefix("# Source:") {
            let source = source.trim();
            return (!source.is_empty()).then(|| source.to_owned());
        }
        if !line.is_empty() && !line.starts_with('#') {
            return None;
        }
    }
    None
}

/// Checks one object's identity fields and wraps it. `item` is `items[N]` for the items of a
/// `*List`, empty for a document's own object.
fn to_object(body: Value, doc: &Document<'_>, item: &str) -> Result<RenderedObject, ManifestError> {
    let invalid = |field: &str, problem: String| ManifestError::Invalid {
        document: doc.name.clone(),
        field: if item.is_empty() {
            field.to_owned()
        } else if field.is_empty() {
            item.to_owned()
        } else {
            format!("{item}.{field}")
        },
        problem,
    };
    if !body.is_object() {
        if item.is_empty() {
            return Err(ManifestError::NotMapping {
                document: doc.name.clone(),
                found: json_kind(&body),
            });
        }
        return Err(invalid(
            "",
            format!("must be a mapping, found {}", json_kind(&body)),
        ));
    }
    let api_version =
        required_string(&body, &["apiVersion"]).map_err(|p| invalid("apiVersion", p))?;
    let kind = required_string(&body, &["kind"]).map_err(|p| invalid("kind", p))?;
    match body.get("metadata") {
        None | Some(Value::Null) => return Err(invalid("metadata", "missing".to_owned())),
        Some(Value::Object(_)) => {}
        Some(other) => {
            return Err(invalid(
                "metadata",
                format!("must be a mapping, found {}", json_kind(other)),
            ));
        }
    }
    let name =
        required_string(&body, &["metadata", "name"]).map_err(|p| invalid("metadata.name", p))?;
    let namespace = match body.pointer("/metadata/namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(ns)) if ns.is_empty() => None,
        Some(Value::String(ns)) => Some(ns.clone()),
        Some(other) => {
            return Err(invalid(
                "metadata.namespace",
                format!("must be a string, found {}", json_kind(other)),
            ));
        }
    };
    Ok(RenderedObject {
        api_version,
        kind,
        name,
        namespace,
        source: doc.source.clone(),
        body,
    })
}

/// A non-empty string at `path`, or what is wrong with it.
fn required_string(body: &Value, path: &[&str]) -> Result<String, String> {
    let mut at = body;
    for key in path {
        at = match at.get(key) {
            Some(v) => v,
            None => return Err("missing".to_owned()),
        };
    }
    match at {
        Value::String(s) if s.is_empty() => Err("must not be empty".to_owned()),
        Value::String(s) => Ok(s.clone()),
        Value::Null => Err("missing".to_owned()),
        other => Err(format!("must be a string, found {}", json_kind(other))),
    }
}

/// Scope of a kind as declared by a CRD of the render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Namespaced,
    Cluster,
}

/// Prepares parsed objects for server-side apply.
///
/// `namespaced(obj)` is API discovery: `Some(true)` for namespaced kinds, `Some(false)` for
/// cluster-scoped ones, `None` when the cluster does not serve the kind (yet).
///
/// - Unknown kinds are resolved by a CRD in the same render (its `spec.scope`), else by the
///   namespace the render wrote; otherwise the result is [`ManifestError::UnknownKind`]. A CRD
///   of the render is trusted over a written namespace: it is what the server will enforce.
/// - Namespaced objects without a namespace get `default_namespace` (field and body).
/// - Cluster-scoped objects lose a namespace the chart wrote (the API server ignores it, and
///   keeping it would make the object's key differ from the live object's).
/// - Every object gets `metadata.labels[COMPONENT_LABEL] = component`.
/// - Two objects with the same [`ObjectKey`] are an error naming both sources.
/// - The result is in apply order: CRDs, then Namespaces, then the rest, each in render order.
pub fn prepare(
    objects: Vec<RenderedObject>,
    component: &str,
    default_namespace: &str,
    namespaced: impl Fn(&RenderedObject) -> Option<bool>,
) -> Result<Vec<RenderedObject>, ManifestError> {
    let crd_scopes = crd_scopes(&objects);
    let mut seen: HashMap<ObjectKey, String> = HashMap::new();
    let mut prepared = Vec::with_capacity(objects.len());
    for mut obj in objects {
        let is_namespaced = match namespaced(&obj) {
            Some(known) => known,
            None => match crd_scopes.get(&(obj.group().to_owned(), obj.kind.clone())) {
                Some(Scope::Namespaced) => true,
                Some(Scope::Cluster) => false,
                None if obj.namespace.is_some() => true,
                None => {
                    return Err(ManifestError::UnknownKind {
                        origin: obj.origin(),
                        api_version: obj.api_version.clone(),
                        key: Box::new(obj.key()),
                    });
                }
            },
        };
        if is_namespaced {
            if obj.namespace.is_none() {
                obj.namespace = Some(default_namespace.to_owned());
            }
        } else {
            obj.namespace = None;
        }
        write_metadata(&mut obj, component);

        let origin = obj.origin();
        if let Some(first) = seen.insert(obj.key(), origin.clone()) {
            return Err(ManifestError::Duplicate {
                key: Box::new(obj.key()),
                first,
                second: origin,
            });
        }
        prepared.push(obj);
    }
    // `sort_by_key` is stable: render order survives within each class.
    prepared.sort_by_key(|obj| {
        if is_crd(obj) {
            0
        } else if is_namespace(obj) {
            1
        } else {
            2
        }
    });
    Ok(prepared)
}

/// Writes the namespace decision and the component label into the body.
fn write_metadata(obj: &mut RenderedObject, component: &str) {
    if !obj.body.is_object() {
        // `parse` yields only mappings; a hand-built object with another body gets a fresh one.
        obj.body = Value::Object(Map::new());
    }
    let Some(body) = obj.body.as_object_mut() else {
        return;
    };
    let metadata = body
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    match &obj.namespace {
        Some(ns) => {
            metadata.insert("namespace".to_owned(), Value::String(ns.clone()));
        }
        None => {
            metadata.remove("namespace");
        }
    }
    let labels = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    // A null or malformed `labels` would be rejected by the API server anyway; tidemark's label
    // is required for prune, so it replaces whatever was there.
    if !labels.is_object() {
        *labels = Value::Object(Map::new());
    }
    if let Some(labels) = labels.as_object_mut() {
        labels.insert(
            COMPONENT_LABEL.to_owned(),
            Value::String(component.to_owned()),
        );
    }
}

/// Scopes declared by the CRDs of the render, by (group, kind).
fn crd_scopes(objects: &[RenderedObject]) -> HashMap<(String, String), Scope> {
    let mut scopes = HashMap::new();
    for crd in objects.iter().filter(|obj| is_crd(obj)) {
        let spec = crd.body.get("spec");
        let field = |name: &str| spec.and_then(|s| s.get(name)).and_then(Value::as_str);
        let kind = spec
            .and_then(|s| s.pointer("/names/kind"))
            .and_then(Value::as_str);
        let scope = match field("scope") {
            Some("Namespaced") => Scope::Namespaced,
            Some("Cluster") => Scope::Cluster,
            _ => continue,
        };
        if let (Some(group), Some(kind)) = (field("group"), kind) {
            scopes.insert((group.to_owned(), kind.to_owned()), scope);
        }
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(text: &str) -> Vec<RenderedObject> {
        parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(objects) => panic!("expected an error, parsed {} objects", objects.len()),
            Err(e) => e.to_string(),
        }
    }

    /// Discovery of a small cluster: core and apps kinds, nothing custom.
    fn discovery(obj: &RenderedObject) -> Option<bool> {
        match (obj.group(), obj.kind.as_str()) {
            ("", "Namespace" | "Node" | "PersistentVolume") => Some(false),
            ("", _) | ("apps", _) | ("batch", _) => Some(true),
            ("rbac.authorization.k8s.io", "ClusterRole" | "ClusterRoleBinding") => Some(false),
            ("rbac.authorization.k8s.io", _) => Some(true),
            ("apiextensions.k8s.io", _) => Some(false),
            _ => None,
        }
    }

    fn prepared(text: &str) -> Vec<RenderedObject> {
        prepare(parsed(text), "metrics", "monitoring", discovery).unwrap_or_else(|e| panic!("{e}"))
    }

    fn prepare_error(text: &str) -> String {
        match prepare(parsed(text), "metrics", "monitoring", discovery) {
            Ok(objects) => panic!("expected an error, prepared {} objects", objects.len()),
            Err(e) => e.to_string(),
        }
    }

    const RENDER: &str = "\
---
# Source: metrics/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: metrics
---
# Source: metrics/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: metrics
  namespace: monitoring
  labels:
    app: metrics
spec:
  replicas: 2
---
# Source: metrics/templates/empty.yaml
# nothing rendered: the template's `if` was false
---
# Source: metrics/templates/clusterrole.yaml
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: metrics
rules: []
";

    #[test]
    fn parses_a_helm_render() {
        let objects = parsed(RENDER);
        let summary: Vec<_> = objects
            .iter()
            .map(|o| {
                (
                    o.api_version.as_str(),
                    o.kind.as_str(),
                    o.name.as_str(),
                    o.namespace.as_deref(),
                    o.source.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "v1",
                    "ServiceAccount",
                    "metrics",
                    None,
                    Some("metrics/templates/serviceaccount.yaml")
                ),
                (
                    "apps/v1",
                    "Deployment",
                    "metrics",
                    Some("monitoring"),
                    Some("metrics/templates/deployment.yaml")
                ),
                (
                    "rbac.authorization.k8s.io/v1",
                    "ClusterRole",
                    "metrics",
                    None,
                    Some("metrics/templates/clusterrole.yaml")
                ),
            ]
        );
        assert_eq!(objects[1].body.pointer("/spec/replicas"), Some(&json!(2)));
    }

    #[test]
    fn group_version_and_key() {
        let objects = parsed(RENDER);
        assert_eq!((objects[0].group(), objects[0].version()), ("", "v1"));
        assert_eq!((objects[1].group(), objects[1].version()), ("apps", "v1"));
        assert_eq!(
            objects[1].key(),
            ObjectKey {
                group: "apps".into(),
                kind: "Deployment".into(),
                namespace: Some("monitoring".into()),
                name: "metrics".into(),
            }
        );
    }

    #[test]
    fn object_key_display() {
        let key = |group: &str, ns: Option<&str>| ObjectKey {
            group: group.into(),
            kind: "Kind".into(),
            namespace: ns.map(Into::into),
            name: "n".into(),
        };
        assert_eq!(key("", Some("ns")).to_string(), "Kind/ns/n");
        assert_eq!(key("", None).to_string(), "Kind/n");
        assert_eq!(key("apps", Some("ns")).to_string(), "Kind.apps/ns/n");
        assert_eq!(
            key("rbac.authorization.k8s.io", None).to_string(),
            "Kind.rbac.authorization.k8s.io/n"
        );
    }

    #[test]
    fn empty_renders_and_comment_only_documents_are_nothing() {
        for text in [
            "",
            "\n",
            "---\n",
            "---\n# Source: c/templates/x.yaml\n---\n",
            "# hi\n",
        ] {
            assert!(parsed(text).is_empty(), "{text:?}");
        }
    }

    #[test]
    fn documents_without_a_leading_marker_and_inline_documents() {
        let objects = parsed(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n\
             --- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n\
             ...\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        );
        let names: Vec<_> = objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(objects.iter().all(|o| o.source.is_none()));
    }

    #[test]
    fn markers_inside_block_scalars_are_not_markers_when_indented() {
        let objects = parsed(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  x: |\n    ---\n    y\n",
        );
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].body.pointer("/data/x"), Some(&json!("---\ny\n")));
    }

    #[test]
    fn crlf_renders_parse() {
        let objects = parsed(
            "---\r\n# Source: c/t.yaml\r\napiVersion: v1\r\nkind: ConfigMap\r\nmetadata:\r\n  name: a\r\n",
        );
        assert_eq!(objects[0].source.as_deref(), Some("c/t.yaml"));
        assert_eq!(objects[0].name, "a");
    }

    #[test]
    fn lists_are_expanded() {
        let objects = parsed(
            "---\n# Source: c/templates/list.yaml\napiVersion: v1\nkind: List\nitems:\n\
             - apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n\
             - apiVersion: v1\n  kind: Secret\n  metadata: {name: b, namespace: x}\n",
        );
        let keys: Vec<_> = objects.iter().map(|o| o.key().to_string()).collect();
        assert_eq!(keys, ["ConfigMap/a", "Secret/x/b"]);
        assert!(
            objects
                .iter()
                .all(|o| o.source.as_deref() == Some("c/templates/list.yaml"))
        );
    }

    #[test]
    fn a_list_item_error_names_the_item() {
        let e = error(
            "---\n# Source: c/templates/list.yaml\napiVersion: v1\nkind: ConfigMapList\nitems:\n\
             - apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n\
             - apiVersion: v1\n  metadata: {name: b}\n",
        );
        assert_eq!(e, "c/templates/list.yaml: items[1].kind: missing");
    }

    #[test]
    fn a_list_item_that_is_not_a_mapping_is_an_error() {
        let e = error("apiVersion: v1\nkind: List\nitems:\n- just text\n");
        assert_eq!(e, "document 1: items[0]: must be a mapping, found a string");
    }

    #[test]
    fn a_kind_ending_in_list_without_items_is_one_object() {
        let objects =
            parsed("apiVersion: x.io/v1\nkind: AllowList\nmetadata: {name: a}\nspec: {}\n");
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].kind, "AllowList");
    }

    #[test]
    fn identity_errors_name_document_field_and_problem() {
        let cases = [
            (
                "---\n# Source: chart/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
                "chart/templates/cm.yaml: metadata.name: missing",
            ),
            (
                "---\n# Source: chart/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ''\n",
                "chart/templates/cm.yaml: metadata.name: must not be empty",
            ),
            (
                "---\n# Source: chart/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: 5\n",
                "chart/templates/cm.yaml: metadata.name: must be a string, found a number",
            ),
            (
                "---\n# Source: chart/templates/cm.yaml\nkind: ConfigMap\nmetadata: {name: a}\n",
                "chart/templates/cm.yaml: apiVersion: missing",
            ),
            (
                "---\n# Source: chart/templates/cm.yaml\napiVersion: v1\nkind: [x]\nmetadata: {name: a}\n",
                "chart/templates/cm.yaml: kind: must be a string, found a sequence",
            ),
            (
                "---\n# Source: chart/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\n",
                "chart/templates/cm.yaml: metadata: missing",
            ),
            (
                "---\n# Source: chart/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: x\n",
                "chart/templates/cm.yaml: metadata: must be a mapping, found a string",
            ),
            (
                "---\n# Source: chart/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: [x]}\n",
                "chart/templates/cm.yaml: metadata.namespace: must be a string, found a sequence",
            ),
            (
                "---\n# Source: chart/templates/cm.yaml\n- a\n- b\n",
                "chart/templates/cm.yaml: the document must be a mapping, found a sequence",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(error(text), want, "{text}");
        }
    }

    #[test]
    fn documents_without_source_are_named_by_index() {
        let e = error(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# a comment\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
        );
        assert_eq!(e, "document 4: metadata.name: missing");
    }

    #[test]
    fn an_empty_namespace_is_no_namespace() {
        let objects =
            parsed("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: ''}\n");
        assert_eq!(objects[0].namespace, None);
    }

    #[test]
    fn syntax_errors_name_the_document_and_the_line_of_the_render() {
        let text = "---\n# Source: c/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n\
                    ---\n# Source: c/templates/b.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n labels: x\n";
        match parse(text) {
            Err(ManifestError::Syntax {
                document,
                line,
                column,
                message,
            }) => {
                assert_eq!(document, "c/templates/b.yaml");
                assert_eq!((line, column), (12, 8), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        let shown = error(text);
        assert!(
            shown.starts_with(
                "c/templates/b.yaml: invalid YAML at line 12 column 8 of the render: "
            ),
            "{shown}"
        );
    }

    #[test]
    fn digest_is_sha256_of_the_text() {
        assert_eq!(
            digest(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            digest("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn prepare_sets_namespaces_and_labels() {
        let objects = prepared(RENDER);
        let keys: Vec<_> = objects.iter().map(|o| o.key().to_string()).collect();
        assert_eq!(
            keys,
            [
                "ServiceAccount/monitoring/metrics",
                "Deployment.apps/monitoring/metrics",
                "ClusterRole.rbac.authorization.k8s.io/metrics",
            ]
        );
        for obj in &objects {
            assert_eq!(
                obj.body.pointer("/metadata/labels/tidemark.dev~1component"),
                Some(&json!("metrics")),
                "{}",
                obj.key()
            );
            assert_eq!(
                obj.body
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str),
                obj.namespace.as_deref()
            );
        }
        // Existing labels are kept.
        assert_eq!(
            objects[1].body.pointer("/metadata/labels/app"),
            Some(&json!("metrics"))
        );
    }

    #[test]
    fn prepare_overwrites_a_different_component_label_and_replaces_null_labels() {
        let objects = prepared(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels:\n    tidemark.dev/component: other\n\
             ---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  labels: null\n",
        );
        for obj in objects {
            assert_eq!(
                obj.body.pointer("/metadata/labels"),
                Some(&json!({"tidemark.dev/component": "metrics"}))
            );
        }
    }

    #[test]
    fn prepare_drops_the_namespace_of_cluster_scoped_objects() {
        let objects = prepared(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: a, namespace: monitoring}\n",
        );
        assert_eq!(objects[0].namespace, None);
        assert_eq!(objects[0].body.pointer("/metadata/namespace"), None);
        assert_eq!(
            objects[0].key().to_string(),
            "ClusterRole.rbac.authorization.k8s.io/a"
        );
    }

    #[test]
    fn prepare_keeps_a_namespace_the_render_wrote() {
        let objects = prepared(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: kube-system}\n",
        );
        assert_eq!(objects[0].namespace.as_deref(), Some("kube-system"));
    }

    #[test]
    fn prepare_orders_crds_then_namespaces_then_the_rest() {
        let objects = prepared(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n\
             ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n1}\n\
             ---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata: {name: widgets.example.com}\nspec: {group: example.com, scope: Namespaced, names: {kind: Widget}}\n\
             ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n\
             ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n2}\n\
             ---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n\
             ---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata: {name: gadgets.example.com}\nspec: {group: example.com, scope: Cluster, names: {kind: Gadget}}\n",
        );
        let keys: Vec<_> = objects.iter().map(|o| o.key().to_string()).collect();
        assert_eq!(
            keys,
            [
                "CustomResourceDefinition.apiextensions.k8s.io/widgets.example.com",
                "CustomResourceDefinition.apiextensions.k8s.io/gadgets.example.com",
                "Namespace/n1",
                "Namespace/n2",
                "ConfigMap/monitoring/a",
                "ConfigMap/monitoring/b",
                "Widget.example.com/monitoring/w",
            ]
        );
        assert!(is_crd(&objects[0]));
        assert!(!is_crd(&objects[2]));
    }

    #[test]
    fn custom_resources_take_their_scope_from_a_crd_in_the_render() {
        let crds = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata: {name: widgets.example.com}\nspec: {group: example.com, scope: Namespaced, names: {kind: Widget}}\n\
             ---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata: {name: gadgets.example.com}\nspec: {group: example.com, scope: Cluster, names: {kind: Gadget}}\n";
        let objects = prepared(&format!(
            "{crds}---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w}}\n\
             ---\napiVersion: example.com/v1\nkind: Gadget\nmetadata: {{name: g, namespace: x}}\n"
        ));
        let keys: Vec<_> = objects
            .iter()
            .skip(2)
            .map(|o| o.key().to_string())
            .collect();
        assert_eq!(
            keys,
            ["Widget.example.com/monitoring/w", "Gadget.example.com/g"]
        );
    }

    #[test]
    fn discovery_wins_over_the_render() {
        // The cluster already serves Widget as cluster-scoped; discovery is the truth.
        let objects = prepare(
            parsed("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: x}\n"),
            "c",
            "d",
            |_| Some(false),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(objects[0].namespace, None);
    }

    #[test]
    fn an_unknown_kind_with_a_namespace_is_namespaced() {
        let objects = prepared(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: x}\n",
        );
        assert_eq!(objects[0].key().to_string(), "Widget.example.com/x/w");
    }

    #[test]
    fn an_unknown_kind_without_namespace_or_crd_is_an_error() {
        let e = prepare_error(
            "---\n# Source: c/templates/w.yaml\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
        );
        assert_eq!(
            e,
            "c/templates/w.yaml: Widget.example.com/w: unknown kind example.com/v1 Widget: the cluster \
             does not serve it and no CustomResourceDefinition in the render defines it"
        );
    }

    #[test]
    fn duplicates_are_found_after_namespacing() {
        // One written with the default namespace, one without: the same live object.
        let e = prepare_error(
            "---\n# Source: c/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n\
             ---\n# Source: c/templates/b.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: monitoring}\n",
        );
        assert_eq!(
            e,
            "ConfigMap/monitoring/x is rendered twice: by c/templates/a.yaml and by c/templates/b.yaml"
        );
    }

    #[test]
    fn duplicates_differ_only_in_version_and_are_still_duplicates() {
        let e = prepare_error(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n\
             ---\napiVersion: apps/v1beta2\nkind: Deployment\nmetadata: {name: x}\n",
        );
        assert!(
            e.starts_with("Deployment.apps/monitoring/x is rendered twice"),
            "{e}"
        );
    }

    #[test]
    fn same_name_in_different_namespaces_or_kinds_is_fine() {
        let objects = prepared(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n\
             ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: other}\n\
             ---\napiVersion: v1\nkind: Secret\nmetadata: {name: x}\n",
        );
        assert_eq!(objects.len(), 3);
    }
}
