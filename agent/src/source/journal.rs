//! Objects tidemark writes into the fleet repo itself: small commits holding one file on a
//! ref of its own (each agent's status record on `refs/tidemark/status/<cluster>`, the
//! promotion log on `refs/tidemark/promotions`) and annotated wave tags. Written into the
//! cache, then pushed with [`GitCache::push`].

use git2::{ObjectType, Oid};
use jiff::Timestamp;

use super::{Error, GitCache, Result};

/// Who writes a commit or a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Name (`tidemark agent prod-eu-1`, `Alice`).
    pub name: String,
    /// E-mail address; may be empty.
    pub email: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.email.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{} <{}>", self.name, self.email)
        }
    }
}

impl Identity {
    /// `Name <email>` or a bare name.
    pub fn parse(text: &str) -> Self {
        match text
            .trim()
            .strip_suffix('>')
            .and_then(|t| t.rsplit_once('<'))
        {
            Some((name, email)) => Self {
                name: name.trim().to_string(),
                email: email.trim().to_string(),
            },
            None => Self {
                name: text.trim().to_string(),
                email: String::new(),
            },
        }
    }

    /// Who runs this: git's `user.name` and `user.email` as git would read them here (the
    /// repository around the working directory, then global and system config), else the
    /// login name.
    pub fn of_this_user() -> Self {
        let config = git2::Repository::open_from_env()
            .and_then(|r| r.config())
            .or_else(|_| git2::Config::open_default())
            .ok();
        let get = |key: &str| {
            config
                .as_ref()
                .and_then(|c| c.get_string(key).ok())
                .filter(|v| !v.trim().is_empty())
        };
        match get("user.name") {
            Some(name) => Self {
                name,
                email: get("user.email").unwrap_or_default(),
            },
            None => Self {
                name: std::env::var("USER")
                    .or_else(|_| std::env::var("LOGNAME"))
                    .unwrap_or_else(|_| "unknown".into()),
                email: String::new(),
            },
        }
    }
}

/// One commit of a tidemark ref and the file it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The ref it was found under.
    pub refname: String,
    /// The commit.
    pub commit: String,
    /// When it was committed (the writer's clock).
    pub time: Timestamp,
    /// The commit message.
    pub message: String,
    /// The file's content; empty when the commit does not hold it.
    pub content: Vec<u8>,
}

/// An annotated tag to write.
#[derive(Clone, Copy, Debug)]
pub struct TagRequest<'a> {
    /// The tag's name (`wave/early`), recorded in the object.
    pub tag: &'a str,
    /// The commit it points at.
    pub commit: &'a str,
    /// Who tags.
    pub tagger: &'a Identity,
    /// When.
    pub at: Timestamp,
    /// The message (the promotion's evidence).
    pub message: &'a str,
}

impl TagRequest<'_> {
    /// The tag object as git stores it, without a signature: what `git tag -s` signs.
    pub fn payload(&self) -> Vec<u8> {
        let mut message = self.message.to_string();
        if !message.ends_with('\n') {
            message.push('\n');
        }
        format!(
            "object {}\ntype commit\ntag {}\ntagger {} <{}> {} +0000\n\n{message}",
            self.commit,
            self.tag,
            self.tagger.name,
            self.tagger.email,
            self.at.as_second()
        )
        .into_bytes()
    }
}

impl GitCache {
    /// Writes a commit whose tree holds only `file` with `content`, on `parent` (or none),
    /// by `who` at `at`; moves no ref. Returns the commit id.
    pub fn write_file_commit(
        &self,
        file: &str,
        content: &[u8],
        message: &str,
        who: &Identity,
        at: Timestamp,
        parent: Option<&str>,
    ) -> Result<String> {
        let fail = |e: git2::Error| Error::Write {
            what: format!("a commit holding {file}"),
            message: e.message().to_string(),
        };
        let blob = self.repo.blob(content).map_err(fail)?;
        let mut builder = self.repo.treebuilder(None).map_err(fail)?;
        builder.insert(file, blob, 0o100644).map_err(fail)?;
        let tree = self
            .repo
            .find_tree(builder.write().map_err(fail)?)
            .map_err(fail)?;
        let time = git2::Time::new(at.as_second(), 0);
        // libgit2 wants an e-mail address; git itself would make one up from the host.
        let email = if who.email.is_empty() {
            "unknown@tidemark.invalid"
        } else {
            &who.email
        };
        let signature = git2::Signature::new(&who.name, email, &time).map_err(fail)?;
        let parent = match parent {
            None => None,
            Some(p) => Some(
                Oid::from_str(p)
                    .and_then(|oid| self.repo.find_commit(oid))
                    .map_err(fail)?,
            ),
        };
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let commit = self
            .repo
            .commit(None, &signature, &signature, message, &tree, &parents)
            .map_err(fail)?;
        Ok(commit.to_string())
    }

    /// Writes a tag object (a payload from [`TagRequest::payload`], with a signature
    /// appended if signed). Returns its id.
    pub fn write_tag_object(&self, object: &[u8]) -> Result<String> {
        let odb = self.repo.odb().map_err(|e| Error::Write {
            what: "a tag object".into(),
            message: e.message().to_string(),
        })?;
        let oid = odb
            .write(ObjectType::Tag, object)
            .map_err(|e| Error::Write {
                what: "a tag object".into(),
                message: e.message().to_string(),
            })?;
        Ok(oid.to_string())
    }

    /// What a local ref points at (not peeled), if the cache has the ref.
    pub fn ref_target(&self, refname: &str) -> Option<String> {
        self.repo.refname_to_id(refname).ok().map(|o| o.to_string())
    }

    /// Resolves `rev` (a commit id, possibly abbreviated, or a ref the cache has) to a
    /// commit.
    pub fn resolve_commit(&self, rev: &str) -> Result<String> {
        let object = self
            .repo
            .revparse_single(rev)
            .map_err(|e| self.read_err(rev, e))?;
        let commit = object.peel_to_commit().map_err(|e| self.read_err(rev, e))?;
        Ok(commit.id().to_string())
    }

    /// The commit a local ref points at, if the cache has the ref.
    pub fn local_commit(&self, refname: &str) -> Option<String> {
        self.commit_of(refname).ok().flatten()
    }

    /// Every local ref under `prefix`, with the content of `file` in its commit.
    pub fn entries(&self, prefix: &str, file: &str) -> Result<Vec<Entry>> {
        let glob = format!("{prefix}*");
        let refs = self
            .repo
            .references_glob(&glob)
            .map_err(|e| self.read_err(prefix, e))?;
        let mut out = Vec::new();
        for r in refs {
            let r = r.map_err(|e| self.read_err(prefix, e))?;
            let Ok(name) = r.name().map(str::to_string) else {
                continue;
            };
            let commit = r.peel_to_commit().map_err(|e| self.read_err(&name, e))?;
            out.push(self.entry(&name, &commit, file)?);
        }
        Ok(out)
    }

    /// The commits of `refname`, newest first, at most `limit`, each with `file`.
    pub fn history(&self, refname: &str, file: &str, limit: usize) -> Result<Vec<Entry>> {
        let Ok(r) = self.repo.find_reference(refname) else {
            return Ok(Vec::new());
        };
        let mut next = Some(r.peel_to_commit().map_err(|e| self.read_err(refname, e))?);
        let mut out = Vec::new();
        while let Some(commit) = next.take() {
            if out.len() >= limit {
                break;
            }
            out.push(self.entry(refname, &commit, file)?);
            // Parents missing from the cache (a shallow history) end the walk.
            next = commit.parents().next();
        }
        Ok(out)
    }

    fn entry(&self, refname: &str, commit: &git2::Commit<'_>, file: &str) -> Result<Entry> {
        let content = commit
            .tree()
            .ok()
            .and_then(|t| t.get_name(file).map(|e| e.id()))
            .and_then(|id| self.repo.find_blob(id).ok())
            .map(|b| b.content().to_vec())
            .unwrap_or_default();
        Ok(Entry {
            refname: refname.to_string(),
            commit: commit.id().to_string(),
            time: Timestamp::from_second(commit.time().seconds()).map_err(|e| Error::Read {
                what: format!("the time of {refname}"),
                message: e.to_string(),
            })?,
            message: commit.message().unwrap_or_default().to_string(),
            content,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_payload_is_what_git_writes() {
        let who = Identity {
            name: "Alice".into(),
            email: "alice@example.com".into(),
        };
        let at: Timestamp = "2026-11-24T10:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let request = TagRequest {
            tag: "wave/early",
            commit: "0123456789012345678901234567890123456789",
            tagger: &who,
            at,
            message: "promote early",
        };
        assert_eq!(
            String::from_utf8_lossy(&request.payload()),
            "object 0123456789012345678901234567890123456789\ntype commit\ntag wave/early\ntagger Alice <alice@example.com> 1795514400 +0000\n\npromote early\n"
        );
    }
}
