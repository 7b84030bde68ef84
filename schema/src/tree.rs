//! Read access to one version of a fleet repo: a directory on disk ([`FsTree`]) for
//! `tidemark validate`, or a git commit's tree for the agent (in `agent/src/source`).
//!
//! Paths are relative to the repository root, separated by `/`. Symlinks are followed
//! only while they stay inside the repository.

use std::path::{Component as PathComponent, Path, PathBuf};

/// Largest manifest (`fleet.yaml`, cluster, component set) tidemark reads.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Largest values file tidemark reads.
pub const MAX_VALUES_BYTES: u64 = 4 * 1024 * 1024;

/// What an entry of a tree is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (or a symlink to one inside the repo).
    File,
    /// A directory.
    Dir,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// File name (no directory part).
    pub name: String,
    /// File or directory.
    pub kind: EntryKind,
}

/// Why a path could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// Nothing at this path.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// The file is larger than tidemark reads.
    #[error("{path}: file is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The path.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A symlink points outside the repository.
    #[error("{path}: symlink points outside the repository (to {target})")]
    OutsideRepo {
        /// The symlink.
        path: String,
        /// Where it points.
        target: String,
    },
    /// The path is absolute or climbs above the root with `..`.
    #[error("{0}: path must be relative to the repository root and stay inside it")]
    BadPath(String),
    /// Any other read failure.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// What failed.
        message: String,
    },
}

/// One version of a fleet repo, readable by path.
pub trait Tree {
    /// Entries of directory `dir` (`""` is the root), sorted by name.
    fn list(&self, dir: &str) -> Result<Vec<Entry>, TreeError>;
    /// Contents of file `path`; [`TreeError::TooLarge`] above `limit` bytes.
    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, TreeError>;
    /// What is at `path`, if anything.
    fn kind(&self, path: &str) -> Result<Option<EntryKind>, TreeError>;
}

/// Normalises a repo-relative path: removes `.` and resolves `..`, refusing absolute
/// paths and paths that leave the root.
pub fn normalize(path: &str) -> Result<String, TreeError> {
    let bad = || TreeError::BadPath(path.to_string());
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err(bad());
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or_else(bad)?;
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Joins a repo-relative directory and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// A fleet repo checked out in a directory.
#[derive(Clone, Debug)]
pub struct FsTree {
    root: PathBuf,
}

impl FsTree {
    /// A tree rooted at `root`, which must be a directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, TreeError> {
        let root: PathBuf = root.into();
        let root = root.canonicalize().map_err(|e| TreeError::Io {
            path: root.display().to_string(),
            message: e.to_string(),
        })?;
        if !root.is_dir() {
            return Err(TreeError::Io {
                path: root.display().to_string(),
                message: "not a directory".into(),
            });
        }
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `path` to a real path inside the root, following symlinks.
    fn resolve(&self, path: &str) -> Result<Option<PathBuf>, TreeError> {
        let rel = normalize(path)?;
        let joined = self.root.join(&rel);
        let real = match joined.canonicalize() {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A dangling symlink is "not found" only if it would point inside the repo.
                if let Ok(target) = std::fs::read_link(&joined) {
                    return Err(self.outside(&rel, &joined, &target));
                }
                return Ok(None);
            }
            Err(e) => {
                return Err(TreeError::Io {
                    path: rel,
                    message: e.to_string(),
                });
            }
        };
        if !real.starts_with(&self.root) {
            let target = std::fs::read_link(&joined).unwrap_or(real);
            return Err(TreeError::OutsideRepo {
                path: rel,
                target: target.display().to_string(),
            });
        }
        Ok(Some(real))
    }

    fn outside(&self, rel: &str, joined: &Path, target: &Path) -> TreeError {
        let abs = joined
            .parent()
            .map(|p| p.join(target))
            .unwrap_or_else(|| target.to_path_buf());
        let inside = abs
            .components()
            .all(|c| !matches!(c, PathComponent::ParentDir))
            && abs.starts_with(&self.root);
        if inside {
            TreeError::NotFound(rel.to_string())
        } else {
            TreeError::OutsideRepo {
                path: rel.to_string(),
                target: target.display().to_string(),
            }
        }
    }
}

impl Tree for FsTree {
    fn list(&self, dir: &str) -> Result<Vec<Entry>, TreeError> {
        let real = self
            .resolve(dir)?
            .ok_or_else(|| TreeError::NotFound(dir.to_string()))?;
        let io = |e: std::io::Error| TreeError::Io {
            path: dir.to_string(),
            message: e.to_string(),
        };
        let mut entries = Vec::new();
        for item in std::fs::read_dir(&real).map_err(io)? {
            let item = item.map_err(io)?;
            let Ok(name) = item.file_name().into_string() else {
                return Err(TreeError::Io {
                    path: join(dir, &item.file_name().to_string_lossy()),
                    message: "file name is not UTF-8".into(),
                });
            };
            if name == ".git" {
                continue;
            }
            // Kind of the symlink's target; symlinks that leave the repo are reported when read.
            let kind = match std::fs::metadata(item.path()) {
                Ok(m) if m.is_dir() => EntryKind::Dir,
                _ => EntryKind::File,
            };
            entries.push(Entry { name, kind });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, TreeError> {
        let real = self
            .resolve(path)?
            .ok_or_else(|| TreeError::NotFound(path.to_string()))?;
        let io = |e: std::io::Error| TreeError::Io {
            path: path.to_string(),
            message: e.to_string(),
        };
        let size = std::fs::metadata(&real).map_err(io)?.len();
        if size > limit {
            return Err(TreeError::TooLarge {
                path: path.to_string(),
                size,
                limit,
            });
        }
        std::fs::read(&real).map_err(io)
    }

    fn kind(&self, path: &str) -> Result<Option<EntryKind>, TreeError> {
        Ok(self.resolve(path)?.map(|p| {
            if p.is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::File
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("values/./a.yaml"), Ok("values/a.yaml".into()));
        assert_eq!(normalize("charts/x/../y"), Ok("charts/y".into()));
        assert!(normalize("/etc/passwd").is_err());
        assert!(normalize("../outside").is_err());
        assert!(normalize("a/../../b").is_err());
    }

    #[test]
    fn fs_tree_refuses_symlinks_leaving_the_repo() -> Result<(), Box<dyn std::error::Error>> {
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("secret.yaml"), "x: 1")?;
        let repo = tempfile::tempdir()?;
        std::fs::create_dir(repo.path().join("values"))?;
        std::fs::write(repo.path().join("values/a.yaml"), "a: 1")?;
        std::os::unix::fs::symlink(
            outside.path().join("secret.yaml"),
            repo.path().join("values/evil.yaml"),
        )?;
        std::os::unix::fs::symlink("a.yaml", repo.path().join("values/alias.yaml"))?;
        let tree = FsTree::new(repo.path())?;
        assert!(matches!(
            tree.read("values/evil.yaml", 100),
            Err(TreeError::OutsideRepo { .. })
        ));
        assert_eq!(tree.read("values/alias.yaml", 100)?, b"a: 1");
        assert_eq!(
            tree.read("values/missing.yaml", 100),
            Err(TreeError::NotFound("values/missing.yaml".into()))
        );
        assert!(matches!(
            tree.read("values/a.yaml", 2),
            Err(TreeError::TooLarge { size: 4, .. })
        ));
        let names: Vec<String> = tree.list("values")?.into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a.yaml", "alias.yaml", "evil.yaml"]);
        Ok(())
    }
}
