//! The fleet as a whole, as `tidemark status` and `tidemark promote` see it: what git
//! declares, what every cluster reports, and moving a wave's tag when the wave before it
//! has converged and soaked.
//!
//! ```text
//! layout (git: waves, tags, clusters) ─┐
//!                                      ├─> view::assess (pure) ─> render (table, JSON, YAML)
//! reports (kube contexts or git refs) ─┘        │
//!                                               └─> promotion::decide (pure) ─> promote::execute
//!                                                   (tag, signature, push with a lease, log)
//! ```
//!
//! - [`layout`]: the default branch's `fleet.yaml` and cluster manifests, the wave tags.
//! - [`reports`]: status records through kubeconfig contexts (concurrently, each within a
//!   timeout) or from `refs/tidemark/status/*` (`tidemark agent --report-ref`).
//! - [`view`] (pure): the fleet by wave; silent clusters are `Unreachable`, with why.
//! - [`promotion`] (pure): may the wave's tag move? Every reason, per cluster.
//! - [`promote`]: writing and pushing the tag, and the promotion log.
//! - [`render`] (pure): the table people read, colour only when asked.
//!
//! Owns no clock: `now` is a parameter everywhere.

pub mod layout;
pub mod promote;
pub mod promotion;
pub mod render;
pub mod reports;
pub mod view;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use crate::keys::refs;
use crate::source::{self, GitCache, Identity, Refused, SourceConfig};
use crate::trust::{SignError, SigningKey};
use layout::Layout;
use promotion::{Decision, Previous, Request};
use reports::Reports;
use view::{FleetView, Origin};

/// Errors of reading the fleet and promoting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Git failed.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// `fleet.yaml` on the branch is invalid or missing.
    #[error(transparent)]
    Select(#[from] crate::select::Error),
    /// A kubeconfig could not be read.
    #[error("failed to read kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// A context asked for is in no kubeconfig.
    #[error("context `{0}` is not in any kubeconfig given")]
    NoContext(String),
    /// The wave is not declared.
    #[error("wave `{wave}` is not declared in fleet.yaml (waves: {waves})")]
    UnknownWave {
        /// The wave asked for.
        wave: String,
        /// The declared ones.
        waves: String,
    },
    /// The previous wave has no tag yet, so there is nothing to promote to.
    #[error("wave `{previous}` (before `{wave}`) has no tag {tag} yet: promote `{previous}` first")]
    NoPreviousTag {
        /// The wave asked for.
        wave: String,
        /// The one before it.
        previous: String,
        /// Its tag.
        tag: String,
    },
    /// `--to` was given for a wave that follows another.
    #[error(
        "--to applies to the first wave only: wave `{wave}` always moves to the commit of wave `{previous}`'s tag"
    )]
    ToOnLaterWave {
        /// The wave asked for.
        wave: String,
        /// The one before it.
        previous: String,
    },
    /// Someone else moved the tag between the check and the push.
    #[error("refusing to promote: the tag moved since the check (another promotion?)")]
    Raced(#[source] Refused),
    /// The tag moved, but the log could not be appended.
    #[error(
        "the tag was moved, but failed to append the promotion to {log} after several attempts: {0}",
        log = refs::PROMOTIONS
    )]
    Log(String),
    /// Only a decision to promote can be carried out.
    #[error("the decision is not to promote")]
    NotDecided,
    /// The tag could not be signed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The log entry could not be encoded.
    #[error("failed to encode the promotion log entry")]
    Encode(#[source] serde_json::Error),
    /// The git work was cancelled or panicked on the blocking pool.
    #[error("the git worker stopped before it finished")]
    Worker(#[source] tokio::task::JoinError),
    /// Another thread panicked while it held the git cache.
    #[error("the git cache is unusable: a previous git operation panicked")]
    Poisoned,
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The fleet repo as `status` and `promote` read and write it: a git cache following the
/// status refs and the promotion log besides the branch and the wave tags. Every git
/// operation runs on the blocking pool, one at a time.
#[derive(Clone)]
pub struct FleetRepo {
    cache: Arc<Mutex<GitCache>>,
    branch: Option<String>,
}

/// Where the clusters' records are read.
#[derive(Clone, Debug)]
pub enum Records {
    /// Through kubeconfig contexts, each within `timeout`.
    Contexts {
        /// The kubeconfig files.
        kubeconfigs: Vec<std::path::PathBuf>,
        /// The contexts to read (empty: every context of the files).
        contexts: Vec<String>,
        /// The namespace holding the record.
        namespace: String,
        /// How long one cluster may take to answer.
        timeout: Duration,
    },
    /// From the status refs in the fleet repo.
    Git,
}

impl FleetRepo {
    /// Opens the cache of `config` (its branch followed, or the remote's HEAD).
    pub fn open(config: &SourceConfig) -> Result<Self> {
        let mut cache = GitCache::open(config)?;
        cache.follow_prefix(refs::STATUS_PREFIX);
        cache.follow_prefix(refs::PROMOTIONS);
        Ok(Self {
            cache: Arc::new(Mutex::new(cache)),
            branch: config.branch.clone(),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&GitCache, Option<&str>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let cache = self.cache.clone();
        let branch = self.branch.clone();
        tokio::task::spawn_blocking(move || {
            let cache = cache.lock().map_err(|_| Error::Poisoned)?;
            work(&cache, branch.as_deref())
        })
        .await
        .map_err(Error::Worker)?
    }

    /// Syncs and reads what git declares.
    pub async fn layout(&self) -> Result<Layout> {
        self.blocking(layout::read).await
    }

    /// The records in the status refs, as of the last [`Self::layout`].
    pub async fn git_reports(&self) -> Result<Reports> {
        self.blocking(|cache, _| reports::from_git(cache)).await
    }

    /// The promotion log, newest first, as of the last [`Self::layout`].
    pub async fn history(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, Result<promote::LogEntry, String>)>> {
        self.blocking(move |cache, _| promote::history(cache, limit))
            .await
    }

    /// The fleet view at `now`: the layout, and the records read from `records`.
    pub async fn observe(&self, records: &Records, now: Timestamp) -> Result<(Layout, FleetView)> {
        let layout = self.layout().await?;
        let (reports, origin) = self.reports(records).await?;
        let view = view::assess(&layout, &reports, origin, now);
        Ok((layout, view))
    }

    /// The clusters' records (from git: as of the last [`Self::layout`]).
    pub async fn reports(&self, records: &Records) -> Result<(Reports, Origin)> {
        Ok(match records {
            Records::Contexts {
                kubeconfigs,
                contexts,
                namespace,
                timeout,
            } => {
                let targets = reports::targets(kubeconfigs, contexts)?;
                (
                    reports::from_contexts(targets, namespace, *timeout).await,
                    Origin::Kubeconfig,
                )
            }
            Records::Git => (self.git_reports().await?, Origin::Git),
        })
    }

    /// Decides whether `wave`'s tag may move (to `to` for the first wave, else to the
    /// previous wave's commit), from the fleet as `records` report it at `now`.
    /// The first wave needs no record: nothing is read from the clusters for it.
    pub async fn check(&self, records: &Records, ask: &Ask, now: Timestamp) -> Result<Check> {
        let layout = self.layout().await?;
        let (reports, origin) = match layout.previous(&ask.wave) {
            Some(_) => self.reports(records).await?,
            None => (Reports::default(), Origin::Git),
        };
        let view = view::assess(&layout, &reports, origin, now);
        self.decide(&layout, view, ask, now).await
    }

    /// Decides `ask` on a fleet already observed (see [`Self::check`]).
    pub async fn decide(
        &self,
        layout: &Layout,
        view: FleetView,
        ask: &Ask,
        now: Timestamp,
    ) -> Result<Check> {
        let Some(wave) = layout.wave(&ask.wave) else {
            return Err(Error::UnknownWave {
                wave: ask.wave.clone(),
                waves: layout
                    .waves
                    .iter()
                    .map(|w| w.wave.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let previous = layout.previous(&ask.wave);
        let (to, to_source) = match (previous, &ask.to) {
            (Some(p), Some(_)) => {
                return Err(Error::ToOnLaterWave {
                    wave: ask.wave.clone(),
                    previous: p.wave.name.clone(),
                });
            }
            (Some(p), None) => match &p.commit {
                Some(c) => (c.clone(), format!("the commit of {}", p.tag)),
                None => {
                    return Err(Error::NoPreviousTag {
                        wave: ask.wave.clone(),
                        previous: p.wave.name.clone(),
                        tag: p.tag.clone(),
                    });
                }
            },
            (None, Some(rev)) => {
                let rev_owned = rev.clone();
                let commit = self
                    .blocking(move |cache, _| Ok(cache.resolve_commit(&rev_owned)?))
                    .await?;
                (commit, format!("--to {rev}"))
            }
            (None, None) => (
                layout.branch_commit.clone(),
                format!("the head of {}", layout.branch),
            ),
        };
        let empty = Vec::new();
        let previous_clusters = previous
            .and_then(|p| view.wave(&p.wave.name))
            .map(|w| &w.clusters)
            .unwrap_or(&empty);
        let decision = promotion::decide(&Request {
            wave: &ask.wave,
            tag: &wave.tag,
            from: wave.commit.as_deref(),
            to: &to,
            to_source,
            previous: previous.map(|p| Previous {
                name: &p.wave.name,
                soak: p.soak(),
                budget: p.budget(),
                clusters: previous_clusters,
            }),
            frozen: view.frozen.as_ref().map(|f| (f.freezes.clone(), f.until)),
            override_reason: ask.override_reason.as_deref(),
            clock_skew: ask.clock_skew,
            now,
        });
        Ok(Check {
            seen: wave.tag_ref.clone(),
            decision,
            view,
        })
    }

    /// Carries out a decision to promote, by `by` at `now`, signed with `key` if given.
    pub async fn promote(
        &self,
        check: &Check,
        by: Identity,
        key: Option<Arc<SigningKey>>,
        now: Timestamp,
    ) -> Result<promote::Promoted> {
        let decision = check.decision.clone();
        let seen = check.seen.clone();
        self.blocking(move |cache, branch| {
            promote::execute(
                cache,
                branch,
                &decision,
                seen.as_deref(),
                &by,
                key.as_deref(),
                now,
            )
        })
        .await
    }
}

/// A promotion asked for.
#[derive(Clone, Debug)]
pub struct Ask {
    /// The wave to promote.
    pub wave: String,
    /// For the first wave: the commit (or ref) to move to; default the branch's head.
    pub to: Option<String>,
    /// Tolerated difference between the agents' clocks and this machine's.
    pub clock_skew: Duration,
    /// Why a freeze is overridden.
    pub override_reason: Option<String>,
}

/// A promotion decided.
#[derive(Clone, Debug)]
pub struct Check {
    /// What the wave's tag ref pointed at when the check ran: the push's lease.
    pub seen: Option<String>,
    /// The decision.
    pub decision: Decision,
    /// The fleet as it was seen.
    pub view: FleetView,
}
