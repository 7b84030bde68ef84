//! The text of one YAML file and where each field of it starts, so a diagnostic found on
//! a typed value can point at `line:col`. The index is built only when a diagnostic needs
//! it: valid files are parsed once.

use std::collections::HashMap;
use std::sync::OnceLock;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A file's path and text.
#[derive(Debug)]
pub struct SourceText {
    /// Repo-relative path.
    pub file: String,
    /// The whole text.
    pub text: String,
    positions: OnceLock<Positions>,
}

#[derive(Debug, Default)]
struct Positions {
    /// Where each value starts (for a block container: where its key is).
    values: HashMap<String, (usize, usize)>,
    /// Where each mapping key is.
    keys: HashMap<String, (usize, usize)>,
}

impl SourceText {
    /// Wraps a file's text.
    pub fn new(file: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            text: text.into(),
            positions: OnceLock::new(),
        }
    }

    /// `(line, column)` of the key of `field`, or of its closest parent, like [`Self::locate`].
    pub fn locate_key(&self, field: &str) -> Option<(usize, usize)> {
        let index = &self
            .positions
            .get_or_init(|| index_positions(&self.text))
            .keys;
        index.get(field).copied().or_else(|| self.locate(field))
    }

    /// `(line, column)`, both 1-based, where the value of `field` starts
    /// (`spec.nodeGroups[1].version`). Falls back to the nearest enclosing field
    /// that exists, so a missing field points at its parent.
    pub fn locate(&self, field: &str) -> Option<(usize, usize)> {
        let index = &self
            .positions
            .get_or_init(|| index_positions(&self.text))
            .values;
        let mut path = field;
        loop {
            if let Some(p) = index.get(path) {
                return Some(*p);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

struct Indexer {
    stack: Vec<Frame>,
    positions: Positions,
    documents: usize,
}

fn index_positions(text: &str) -> Positions {
    let mut indexer = Indexer {
        stack: Vec::new(),
        positions: Positions::default(),
        documents: 0,
    };
    // A parse error leaves the index partial; positions found so far are still right.
    let _ = Parser::new_from_str(text).load(&mut indexer, false);
    indexer.positions
}

impl Indexer {
    /// Path of the node that starts now, or `None` when the node is a mapping key.
    fn node_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map { path, key: Some(k) }) => Some(if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            }),
            Some(Frame::Seq { path, index }) => Some(format!("{path}[{index}]")),
        }
    }

    /// A value node has ended: the parent moves to its next key or index.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }

    fn record(&mut self, path: &str, mark: Marker) {
        self.positions
            .values
            .entry(path.to_string())
            .or_insert((mark.line(), mark.col() + 1));
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.documents > 1 {
            return;
        }
        match ev {
            Event::DocumentStart => self.documents += 1,
            Event::Scalar(value, ..) => match self.node_path() {
                None => {
                    if let Some(Frame::Map { key, path }) = self.stack.last_mut() {
                        let full = if path.is_empty() {
                            value.clone()
                        } else {
                            format!("{path}.{value}")
                        };
                        *key = Some(value);
                        // The key's own position, used when the value is missing or is a
                        // container starting on the next line.
                        self.record(&full, mark);
                        self.positions
                            .keys
                            .insert(full, (mark.line(), mark.col() + 1));
                    }
                }
                Some(path) => {
                    self.positions
                        .values
                        .insert(path, (mark.line(), mark.col() + 1));
                    self.value_done();
                }
            },
            Event::Alias(_) if self.node_path().is_some() => self.value_done(),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.node_path().unwrap_or_default();
                if !path.is_empty() {
                    self.record(&path, mark);
                }
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "apiVersion: tidemark.dev/v1alpha1
kind: Cluster
metadata:
  name: a
spec:
  nodeGroups:
    - name: general
      version: \"1.30.4\"
    - {name: gpu, version: \"1.31\"}
";

    #[test]
    fn locates_fields() {
        let src = SourceText::new("clusters/a.yaml", DOC);
        assert_eq!(src.locate("kind"), Some((2, 7)));
        assert_eq!(src.locate("metadata.name"), Some((4, 9)));
        assert_eq!(src.locate("spec.nodeGroups[0].version"), Some((8, 16)));
        assert_eq!(src.locate("spec.nodeGroups[1].version"), Some((9, 28)));
        assert_eq!(src.locate_key("spec.nodeGroups[1].version"), Some((9, 19)));
        // A field that is absent points at its closest parent.
        assert_eq!(src.locate("spec.nodeGroups[1].drainTimeout"), Some((9, 7)));
        assert_eq!(src.locate("spec.controlPlane"), src.locate("spec"));
    }
}
