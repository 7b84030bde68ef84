//! Entry points of the fuzz targets (`fuzz/`, run with `cargo fuzz`) and of the smoke test
//! that replays their seed corpora on every test run. Each takes arbitrary bytes and must
//! never panic, whatever they hold. Not an API: hidden from the docs.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::tree::{Entry, EntryKind, Tree, TreeError, normalize};
use crate::window::MaintenanceWindow;
use crate::{Duration, LabelSelector, Labels, load, validate::validate};

/// A fleet repo tree held in memory, read from one byte string: files introduced by a line
/// `@@ PATH` and holding the bytes up to the next such line. A file that is a prefix of
/// another's directory is refused as a directory would be.
#[derive(Debug, Default)]
pub struct MemTree {
    files: BTreeMap<String, Vec<u8>>,
}

impl MemTree {
    /// Reads the `@@ PATH` format (paths that do not normalise are dropped).
    pub fn parse(data: &[u8]) -> Self {
        let mut files = BTreeMap::new();
        let mut current: Option<(String, Vec<u8>)> = None;
        for line in data.split_inclusive(|b| *b == b'\n') {
            if let Some(path) = line.strip_prefix(b"@@ ") {
                if let Some((p, body)) = current.take() {
                    files.insert(p, body);
                }
                let path = String::from_utf8_lossy(path).trim().to_string();
                current = normalize(&path).ok().map(|p| (p, Vec::new()));
            } else if let Some((_, body)) = current.as_mut() {
                body.extend_from_slice(line);
            }
        }
        if let Some((p, body)) = current {
            files.insert(p, body);
        }
        Self { files }
    }

    fn is_dir(&self, dir: &str) -> bool {
        dir.is_empty() || {
            let prefix = format!("{dir}/");
            self.files.keys().any(|f| f.starts_with(&prefix))
        }
    }
}

impl Tree for MemTree {
    fn list(&self, dir: &str) -> Result<Vec<Entry>, TreeError> {
        let dir = normalize(dir)?;
        if !self.is_dir(&dir) {
            return Err(TreeError::NotFound(dir));
        }
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut out: BTreeMap<String, EntryKind> = BTreeMap::new();
        for f in self.files.keys() {
            if let Some(rest) = f.strip_prefix(&prefix) {
                match rest.split_once('/') {
                    Some((d, _)) => {
                        out.insert(d.to_string(), EntryKind::Dir);
                    }
                    None => {
                        out.entry(rest.to_string()).or_insert(EntryKind::File);
                    }
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|(name, kind)| Entry { name, kind })
            .collect())
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, TreeError> {
        let path = normalize(path)?;
        let body = self
            .files
            .get(&path)
            .ok_or_else(|| TreeError::NotFound(path.clone()))?;
        let size = body.len() as u64;
        if size > limit {
            return Err(TreeError::TooLarge { path, size, limit });
        }
        Ok(body.clone())
    }

    fn kind(&self, path: &str) -> Result<Option<EntryKind>, TreeError> {
        let path = normalize(path)?;
        Ok(if self.files.contains_key(&path) {
            Some(EntryKind::File)
        } else if self.is_dir(&path) {
            Some(EntryKind::Dir)
        } else {
            None
        })
    }
}

/// Loads and validates a fleet repo tree (the `@@ PATH` format of [`MemTree`]).
pub fn fleet_repo(data: &[u8]) {
    let tree = MemTree::parse(data);
    let (repo, _) = load(&tree);
    let _ = validate(&repo, &tree);
}

/// Parses a label selector and matches it against labels read from the same input.
pub fn selector(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (expr, labels) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(selector) = LabelSelector::from_str(expr) {
        let _ = selector.check();
        let labels: Labels = labels
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let _ = selector.matches(&labels);
    }
}

/// Parses a duration, and a maintenance window (YAML) from the same input.
pub fn duration_and_window(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = Duration::from_str(&text);
    if let Ok(window) = serde_yaml::from_str::<MaintenanceWindow>(&text)
        && window.check().is_ok()
    {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let _ = window.is_open(now);
        let _ = window.next_open(now);
    }
}
