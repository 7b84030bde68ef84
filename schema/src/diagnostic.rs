//! Diagnostics: one problem in one file of a fleet repo, located as precisely as the YAML
//! allows, so `tidemark validate` can print every problem of a repo in one run.

use std::fmt;

use serde::Serialize;

/// One problem found in a fleet repo.
///
/// Displayed as `file:line:col: field: message`; the parts that are unknown are left out.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// Path of the file, relative to the repository root.
    pub file: String,
    /// 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Field path inside the document, e.g. `spec.nodeGroups[1].version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// A problem with a whole file.
    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
            field: None,
            message: message.into(),
        }
    }

    /// A problem with one field of a file, located later by [`crate::SourceText::locate`].
    pub fn field(
        file: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// The same diagnostic at `line:col`.
    pub fn at(mut self, position: Option<(usize, usize)>) -> Self {
        if let Some((line, col)) = position {
            self.line = Some(line);
            self.column = Some(col);
        }
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem of a repo, sorted by file and position.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds one problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Sorts by file, line and column and drops exact duplicates.
    pub fn sort(&mut self) {
        self.0.sort();
        self.0.dedup();
    }

    /// The problems.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
}

impl Extend<Diagnostic> for Diagnostics {
    fn extend<I: IntoIterator<Item = Diagnostic>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_located_and_unlocated() {
        let d = Diagnostic::field("clusters/a.yaml", "spec.nodeGroups[1].version", "bad")
            .at(Some((12, 16)));
        assert_eq!(
            d.to_string(),
            "clusters/a.yaml:12:16: spec.nodeGroups[1].version: bad"
        );
        assert_eq!(
            Diagnostic::file("fleet.yaml", "missing").to_string(),
            "fleet.yaml: missing"
        );
    }
}
