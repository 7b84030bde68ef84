//! Pushing refs to the fleet repo, with the credentials of the fetch and a lease: a ref is
//! updated only if the remote still holds the value the caller saw.
//!
//! The lease is checked twice. Right before pushing, the remote's refs are listed again
//! (protocol v2 `ls-refs`, as a poll does); then, inside the push, libgit2's push
//! negotiation hands over the values the remote advertised to receive-pack, and the push
//! is abandoned unless they are the expected ones. receive-pack itself updates a ref only
//! if it still holds the old value the client sent, so a ref moved between the
//! advertisement and the update is refused by the server (`git push --force-with-lease`
//! relies on the same check).

use std::sync::{Arc, Mutex};

use git2::{Oid, PushOptions};

use super::auth::scrub;
use super::cache::{HostKeyRejection, is_transient};
use super::{Error, GitCache, Result};

/// What the remote must hold for an update to go ahead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lease {
    /// Anything: the update overwrites whatever is there.
    Any,
    /// Nothing: the ref must not exist yet.
    Absent,
    /// This object id.
    At(String),
}

impl Lease {
    /// The lease on a ref last seen pointing at `seen` (absent for `None`).
    pub fn seen(seen: Option<&str>) -> Self {
        match seen {
            Some(oid) => Lease::At(oid.to_string()),
            None => Lease::Absent,
        }
    }

    fn holds(&self, found: Option<&str>) -> bool {
        match self {
            Lease::Any => true,
            Lease::Absent => found.is_none(),
            Lease::At(oid) => found == Some(oid.as_str()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Lease::Any => "anything".into(),
            Lease::Absent => "no ref".into(),
            Lease::At(oid) => oid.clone(),
        }
    }
}

/// One ref to update on the remote.
#[derive(Clone, Debug)]
pub struct RefUpdate {
    /// The remote ref (`refs/tags/wave/early`).
    pub remote: String,
    /// The object it is to point at (it must be in the cache).
    pub target: String,
    /// What it must point at now.
    pub lease: Lease,
}

/// Why a push was refused by the lease or the server (as opposed to failing to reach it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The remote ref no longer holds what the lease expects.
    #[error("{refname} on the remote is now {} (expected {expected})", .found.as_deref().unwrap_or("deleted"))]
    Moved {
        /// The remote ref.
        refname: String,
        /// What the lease expected.
        expected: String,
        /// What the remote holds (`None`: the ref is gone).
        found: Option<String>,
    },
    /// The server refused the update (a concurrent update, a hook, permissions).
    #[error("the server refused to update {refname}: {reason}")]
    Server {
        /// The remote ref.
        refname: String,
        /// What the server said.
        reason: String,
    },
}

/// The prefix of the local refs a push is made from (libgit2 pushes refs, not objects).
const OUTGOING: &str = "refs/tidemark/outgoing/";

impl GitCache {
    /// Pushes `updates` to the remote, each only if its lease holds; `Ok(Err(..))` when the
    /// lease or the server refused (nothing of a refused update is applied; updates are
    /// not atomic with each other). Credentials and host-key policy are the fetch's.
    pub fn push(&self, updates: &[RefUpdate]) -> Result<std::result::Result<(), Refused>> {
        // 1. The lease against a fresh listing of exactly these refs.
        let leased: Vec<String> = updates
            .iter()
            .filter(|u| u.lease != Lease::Any)
            .map(|u| u.remote.clone())
            .collect();
        let listed = if leased.is_empty() {
            Default::default()
        } else {
            self.list(Some(&leased))?.refs.refs
        };
        for u in updates {
            let found = listed.get(&u.remote).map(String::as_str);
            if !u.lease.holds(found) {
                return Ok(Err(Refused::Moved {
                    refname: u.remote.clone(),
                    expected: u.lease.describe(),
                    found: found.map(str::to_string),
                }));
            }
        }
        // 2. A repository on this machine is updated in-process (libgit2 cannot push to
        //    one with a work tree): objects copied, each ref swapped only if it still
        //    holds what the lease expects.
        if let Some(path) = super::refs::local_path(&self.url) {
            return self.push_local(&path, updates);
        }
        // 3. Over the wire, from temporary local refs.
        let mut refspecs = Vec::new();
        for u in updates {
            let oid = Oid::from_str(&u.target).map_err(|e| self.read_err(&u.target, e))?;
            let local = format!("{OUTGOING}{}", u.remote.trim_start_matches("refs/"));
            self.repo
                .reference(&local, oid, true, "tidemark push")
                .map_err(|e| self.read_err(&local, e))?;
            refspecs.push(format!("+{local}:{}", u.remote));
        }
        let outcome = self.push_once(updates, &refspecs);
        for spec in &refspecs {
            let local = spec
                .trim_start_matches('+')
                .split(':')
                .next()
                .unwrap_or_default();
            if let Ok(mut r) = self.repo.find_reference(local) {
                let _ = r.delete();
            }
        }
        outcome
    }

    fn push_local(
        &self,
        path: &std::path::Path,
        updates: &[RefUpdate],
    ) -> Result<std::result::Result<(), Refused>> {
        let fail = |e: git2::Error| Error::Push {
            url: self.display_url(),
            message: e.message().to_string(),
            transient: is_transient(&e),
        };
        let target = git2::Repository::open(path).map_err(fail)?;
        let odb = target.odb().map_err(fail)?;
        for u in updates {
            let oid = Oid::from_str(&u.target).map_err(fail)?;
            if !odb.exists(oid) {
                let mut pack = self.repo.packbuilder().map_err(fail)?;
                pack.insert_recursive(oid, None).map_err(fail)?;
                let mut buf = git2::Buf::new();
                pack.write_buf(&mut buf).map_err(fail)?;
                let mut writer = odb.packwriter().map_err(fail)?;
                std::io::Write::write_all(&mut writer, &buf)
                    .map_err(|e| fail(git2::Error::from_str(&e.to_string())))?;
                writer.commit().map_err(fail)?;
            }
            let moved = |found: Option<String>| Refused::Moved {
                refname: u.remote.clone(),
                expected: u.lease.describe(),
                found,
            };
            let current = target.refname_to_id(&u.remote).ok().map(|o| o.to_string());
            let swapped = match &u.lease {
                Lease::Any => target.reference(&u.remote, oid, true, "tidemark push"),
                Lease::Absent => target.reference(&u.remote, oid, false, "tidemark push"),
                Lease::At(expected) => {
                    let expected = Oid::from_str(expected).map_err(fail)?;
                    target.reference_matching(&u.remote, oid, true, expected, "tidemark push")
                }
            };
            if let Err(e) = swapped {
                return match e.code() {
                    // The compare-and-swap lost: someone else moved or created the ref.
                    git2::ErrorCode::Modified | git2::ErrorCode::Exists => {
                        let found = target.refname_to_id(&u.remote).ok().map(|o| o.to_string());
                        Ok(Err(moved(found.or(current))))
                    }
                    _ => Err(fail(e)),
                };
            }
        }
        Ok(Ok(()))
    }

    fn push_once(
        &self,
        updates: &[RefUpdate],
        refspecs: &[String],
    ) -> Result<std::result::Result<(), Refused>> {
        let refused: Arc<Mutex<Option<Refused>>> = Arc::default();
        let rejection = HostKeyRejection::default();
        let mut callbacks = self.callbacks(&rejection);
        let leases: Vec<(String, Lease)> = updates
            .iter()
            .map(|u| (u.remote.clone(), u.lease.clone()))
            .collect();
        let slot = refused.clone();
        callbacks.push_negotiation(move |proposed| {
            for p in proposed {
                let Ok(refname) = p.dst_refname() else {
                    continue;
                };
                let Some((_, lease)) = leases.iter().find(|(r, _)| r == refname) else {
                    continue;
                };
                let found = (!p.src().is_zero()).then(|| p.src().to_string());
                if !lease.holds(found.as_deref()) {
                    if let Ok(mut s) = slot.lock() {
                        *s = Some(Refused::Moved {
                            refname: refname.to_string(),
                            expected: lease.describe(),
                            found,
                        });
                    }
                    return Err(git2::Error::from_str("the lease on a ref no longer holds"));
                }
            }
            Ok(())
        });
        let slot = refused.clone();
        callbacks.push_update_reference(move |refname, status| {
            if let Some(reason) = status
                && let Ok(mut s) = slot.lock()
            {
                s.get_or_insert(Refused::Server {
                    refname: refname.to_string(),
                    reason: reason.to_string(),
                });
            }
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(callbacks);
        let pushed = self
            .repo
            .remote_anonymous(&self.url)
            .and_then(|mut remote| remote.push(refspecs, Some(&mut options)));
        let refusal = refused.lock().ok().and_then(|mut s| s.take());
        if let Some(refusal) = refusal {
            return Ok(Err(refusal));
        }
        pushed.map_err(|e| Error::Push {
            url: self.display_url(),
            message: rejection
                .reason()
                .unwrap_or_else(|| scrub(e.message(), &self.url, &self.auth)),
            transient: is_transient(&e),
        })?;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Auth, SourceConfig};

    fn remote() -> Result<(tempfile::TempDir, git2::Repository, Oid, Oid), git2::Error> {
        let dir = tempfile::tempdir().map_err(|e| git2::Error::from_str(&e.to_string()))?;
        let repo = git2::Repository::init_bare(dir.path())?;
        let (a, b) = {
            let sig = git2::Signature::now("t", "t@example.com")?;
            let tree = repo.find_tree(repo.treebuilder(None)?.write()?)?;
            let a = repo.commit(Some("refs/heads/main"), &sig, &sig, "a", &tree, &[])?;
            let parent = repo.find_commit(a)?;
            let b = repo.commit(Some("refs/heads/main"), &sig, &sig, "b", &tree, &[&parent])?;
            (a, b)
        };
        repo.set_head("refs/heads/main")?;
        repo.reference("refs/tags/wave/x", a, false, "")?;
        Ok((dir, repo, a, b))
    }

    #[test]
    fn a_push_goes_ahead_only_while_the_lease_holds()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let (dir, remote, a, b) = remote()?;
        let cache_dir = tempfile::tempdir()?;
        let cache = GitCache::open(&SourceConfig {
            url: dir.path().display().to_string(),
            branch: None,
            cache_dir: cache_dir.path().to_path_buf(),
            auth: Auth::None,
        })?;
        cache.sync(None, &["wave/*".to_string()])?;
        let update = |lease| RefUpdate {
            remote: "refs/tags/wave/x".into(),
            target: b.to_string(),
            lease,
        };
        // Someone else moved it: refused, nothing changed.
        let stale = cache.push(&[update(Lease::At(b.to_string()))])?;
        assert!(
            matches!(&stale, Err(Refused::Moved { found: Some(f), .. }) if *f == a.to_string()),
            "{stale:?}"
        );
        assert_eq!(remote.refname_to_id("refs/tags/wave/x")?, a);
        // Where it was seen: moved.
        cache.push(&[update(Lease::At(a.to_string()))])??;
        assert_eq!(remote.refname_to_id("refs/tags/wave/x")?, b);
        // A new ref with an "absent" lease, then again: the second is refused.
        let new = RefUpdate {
            remote: "refs/tidemark/status/a".into(),
            target: a.to_string(),
            lease: Lease::Absent,
        };
        cache.push(std::slice::from_ref(&new))??;
        assert!(cache.push(&[new])?.is_err());
        assert!(
            cache
                .repo
                .references_glob(&format!("{OUTGOING}*"))?
                .next()
                .is_none(),
            "no temporary ref is left behind"
        );
        Ok(())
    }
}
