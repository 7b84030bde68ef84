//! [`GitTree`]: a commit's tree read straight from git objects, as a `schema::Tree`.

use std::cell::RefCell;
use std::collections::HashMap;

use git2::{ObjectType, Repository, TreeEntry};
use tidemark_schema::tree::{Entry, EntryKind, Tree, TreeError, join, normalize};

const SYMLINK_MODE: i32 = 0o120000;
const MAX_SYMLINK_HOPS: usize = 8;

/// The tree of one commit. Symlinks are followed while they stay inside the tree.
pub struct GitTree<'repo> {
    repo: &'repo Repository,
    root: git2::Tree<'repo>,
    /// Parsed directory trees by path. Looking a file up by full path makes libgit2 parse
    /// every tree on the way, and `clusters/` of a large fleet has thousands of entries:
    /// without this cache, reading all manifests is quadratic.
    dirs: RefCell<HashMap<String, git2::Tree<'repo>>>,
}

impl<'repo> GitTree<'repo> {
    pub(super) fn new(repo: &'repo Repository, root: git2::Tree<'repo>) -> Self {
        Self {
            repo,
            root,
            dirs: RefCell::default(),
        }
    }

    /// The parsed tree of directory `dir` (normalized; `""` is the root), if it exists.
    fn dir_tree(&self, dir: &str) -> Result<Option<git2::Tree<'repo>>, TreeError> {
        if dir.is_empty() {
            return Ok(Some(self.root.clone()));
        }
        if let Some(t) = self.dirs.borrow().get(dir) {
            return Ok(Some(t.clone()));
        }
        let (parent, name) = dir.rsplit_once('/').unwrap_or(("", dir));
        let Some(parent_tree) = self.dir_tree(parent)? else {
            return Ok(None);
        };
        let Some(entry) = parent_tree.get_name(name) else {
            return Ok(None);
        };
        if entry.kind() != Some(ObjectType::Tree) {
            return Ok(None);
        }
        let tree = self.repo.find_tree(entry.id()).map_err(|e| io(dir, &e))?;
        self.dirs.borrow_mut().insert(dir.to_string(), tree.clone());
        Ok(Some(tree))
    }

    /// The entry at normalized `path`, without following symlinks.
    fn lookup(&self, path: &str) -> Result<Option<TreeEntry<'static>>, TreeError> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        match self.dir_tree(dir) {
            Ok(Some(tree)) => Ok(tree.get_name(name).map(|e| e.to_owned())),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Resolves `path` to its entry, following symlinks inside the tree.
    fn entry(&self, path: &str) -> Result<Option<(String, TreeEntry<'static>)>, TreeError> {
        let mut current = normalize(path)?;
        for _ in 0..MAX_SYMLINK_HOPS {
            if current.is_empty() {
                return Ok(None); // the root itself
            }
            let Some(entry) = self.lookup(&current)? else {
                return Ok(None);
            };
            if entry.filemode() != SYMLINK_MODE {
                return Ok(Some((current, entry)));
            }
            let blob = self
                .repo
                .find_blob(entry.id())
                .map_err(|e| io(&current, &e))?;
            let target = String::from_utf8_lossy(blob.content()).to_string();
            let dir = current.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            let joined = if target.starts_with('/') {
                target.clone()
            } else {
                join(dir, &target)
            };
            current = normalize(&joined).map_err(|_| TreeError::OutsideRepo {
                path: path.to_string(),
                target: target.clone(),
            })?;
        }
        Err(TreeError::Io {
            path: path.to_string(),
            message: "too many levels of symbolic links".into(),
        })
    }
}

fn io(path: &str, e: &git2::Error) -> TreeError {
    TreeError::Io {
        path: path.to_string(),
        message: e.message().to_string(),
    }
}

impl Tree for GitTree<'_> {
    fn list(&self, dir: &str) -> Result<Vec<Entry>, TreeError> {
        let tree = match self.entry(dir)? {
            None if normalize(dir)?.is_empty() => self.root.clone(),
            None => return Err(TreeError::NotFound(dir.to_string())),
            Some((p, e)) if e.kind() == Some(ObjectType::Tree) => match self.dir_tree(&p)? {
                Some(t) => t,
                None => self.repo.find_tree(e.id()).map_err(|err| io(&p, &err))?,
            },
            Some(_) => {
                return Err(TreeError::Io {
                    path: dir.to_string(),
                    message: "not a directory".into(),
                });
            }
        };
        let mut out = Vec::new();
        for e in tree.iter() {
            let Ok(name) = e.name() else {
                return Err(TreeError::Io {
                    path: dir.to_string(),
                    message: "entry name is not UTF-8".into(),
                });
            };
            let kind = match e.kind() {
                Some(ObjectType::Tree) => EntryKind::Dir,
                // A symlink to a directory lists as a directory if it resolves to one.
                _ if e.filemode() == SYMLINK_MODE => match self.kind(&join(dir, name)) {
                    Ok(Some(k)) => k,
                    _ => EntryKind::File,
                },
                _ => EntryKind::File,
            };
            out.push(Entry {
                name: name.to_string(),
                kind,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, TreeError> {
        let (resolved, entry) = self
            .entry(path)?
            .ok_or_else(|| TreeError::NotFound(path.to_string()))?;
        if entry.kind() != Some(ObjectType::Blob) {
            return Err(TreeError::Io {
                path: path.to_string(),
                message: "is a directory".into(),
            });
        }
        // Read the size from the object header before inflating the whole blob.
        let odb = self.repo.odb().map_err(|e| io(&resolved, &e))?;
        let (size, _) = odb.read_header(entry.id()).map_err(|e| io(&resolved, &e))?;
        let size = size as u64;
        if size > limit {
            return Err(TreeError::TooLarge {
                path: path.to_string(),
                size,
                limit,
            });
        }
        let blob = self
            .repo
            .find_blob(entry.id())
            .map_err(|e| io(&resolved, &e))?;
        Ok(blob.content().to_vec())
    }

    fn kind(&self, path: &str) -> Result<Option<EntryKind>, TreeError> {
        if normalize(path)?.is_empty() {
            return Ok(Some(EntryKind::Dir));
        }
        Ok(self.entry(path)?.map(|(_, e)| match e.kind() {
            Some(ObjectType::Tree) => EntryKind::Dir,
            _ => EntryKind::File,
        }))
    }
}
