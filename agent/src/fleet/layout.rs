//! What git declares about the fleet: its waves in order, where each wave's tag points,
//! and every cluster on the default branch with its wave and the control-plane version
//! declared at that wave's tag. Read from a [`GitCache`] with `schema::load` over git
//! trees, as `tidemark validate` reads a remote; blocking (libgit2).

use std::collections::BTreeMap;

use tidemark_schema::fleet::{FailureBudget, Wave};
use tidemark_schema::{Fleet, KubeVersion};

use super::Result;
use crate::desired::tag_glob;
use crate::select;
use crate::source::GitCache;

/// The fleet as git declares it.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The default branch (or the one asked for).
    pub branch: String,
    /// Its commit.
    pub branch_commit: String,
    /// `fleet.yaml` on that branch.
    pub fleet: Fleet,
    /// Each wave in rollout order.
    pub waves: Vec<WaveLayout>,
    /// Every cluster manifest on the branch, by name.
    pub clusters: BTreeMap<String, ClusterLayout>,
}

/// One wave and its tag.
#[derive(Clone, Debug)]
pub struct WaveLayout {
    /// The wave as declared.
    pub wave: Wave,
    /// Its tag (`wave/canary`).
    pub tag: String,
    /// What the tag ref points at (a tag object, or a commit for a lightweight tag):
    /// the value a promotion's push must still find.
    pub tag_ref: Option<String>,
    /// The commit the tag names.
    pub commit: Option<String>,
}

impl WaveLayout {
    /// The wave's soak (0 when none is declared).
    pub fn soak(&self) -> std::time::Duration {
        self.wave.soak.map(|d| d.as_std()).unwrap_or_default()
    }

    /// The wave's failure budget (0 when none is declared).
    pub fn budget(&self) -> FailureBudget {
        self.wave.max_unhealthy.unwrap_or(FailureBudget::Count(0))
    }
}

/// One cluster as git declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterLayout {
    /// `metadata.name`.
    pub name: String,
    /// Its wave (its `tidemark.dev/wave` label on the branch); `None` follows the branch.
    pub wave: Option<String>,
    /// The control-plane version declared where it reads its desired state (its wave's
    /// tag, or the branch); `None` when the tag does not hold it yet.
    pub declared: Option<KubeVersion>,
}

impl Layout {
    /// The wave called `name`.
    pub fn wave(&self, name: &str) -> Option<&WaveLayout> {
        self.waves.iter().find(|w| w.wave.name == name)
    }

    /// The wave before `name` in rollout order.
    pub fn previous(&self, name: &str) -> Option<&WaveLayout> {
        let i = self.waves.iter().position(|w| w.wave.name == name)?;
        i.checked_sub(1).and_then(|j| self.waves.get(j))
    }

    /// The clusters of wave `name`.
    pub fn clusters_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ClusterLayout> {
        self.clusters
            .values()
            .filter(move |c| c.wave.as_deref() == Some(name))
    }
}

/// Syncs `cache` (the branch, the wave tags, and whatever prefixes it follows) and reads
/// the layout.
pub fn read(cache: &GitCache, branch: Option<&str>) -> Result<Layout> {
    let sync = cache.sync(branch, &[])?;
    let fleet = select::fleet(&cache.tree_at(&sync.branch_commit)?)?;
    let sync = cache.sync(Some(&sync.branch), &[tag_glob(&fleet.spec.tag_pattern)])?;
    let branch_tree = cache.tree_at(&sync.branch_commit)?;
    // The waves and the tag pattern come from the branch's fleet.yaml, read again: the
    // second sync may have moved the branch.
    let fleet = select::fleet(&branch_tree)?;
    let (repo, _) = tidemark_schema::load(&branch_tree);
    let mut waves = Vec::new();
    for wave in &fleet.spec.waves {
        let tag = fleet.wave_tag(&wave.name);
        let refname = format!("refs/tags/{tag}");
        waves.push(WaveLayout {
            wave: wave.clone(),
            tag_ref: cache.ref_target(&refname),
            commit: cache.tag_commit(&tag)?,
            tag,
        });
    }
    // The declared control plane of each cluster where its agent reads it: one load per
    // distinct commit.
    let mut declared_at: BTreeMap<String, BTreeMap<String, KubeVersion>> = BTreeMap::new();
    let mut versions_at = |commit: &str| -> Result<BTreeMap<String, KubeVersion>> {
        if let Some(v) = declared_at.get(commit) {
            return Ok(v.clone());
        }
        let tree = cache.tree_at(commit)?;
        let (at, _) = tidemark_schema::load(&tree);
        let v: BTreeMap<String, KubeVersion> = at
            .clusters
            .iter()
            .map(|d| {
                (
                    d.value.metadata.name.clone(),
                    d.value.spec.control_plane.version,
                )
            })
            .collect();
        declared_at.insert(commit.to_string(), v.clone());
        Ok(v)
    };
    let mut clusters = BTreeMap::new();
    for doc in &repo.clusters {
        let name = doc.value.metadata.name.clone();
        let wave = doc.value.wave().map(str::to_string);
        let commit = match &wave {
            None => Some(sync.branch_commit.clone()),
            Some(w) => waves
                .iter()
                .find(|l| &l.wave.name == w)
                .and_then(|l| l.commit.clone()),
        };
        let declared = match commit {
            Some(c) => versions_at(&c)?.get(&name).copied(),
            None => None,
        };
        clusters.insert(
            name.clone(),
            ClusterLayout {
                name,
                wave,
                declared,
            },
        );
    }
    Ok(Layout {
        branch: sync.branch,
        branch_commit: sync.branch_commit,
        fleet,
        waves,
        clusters,
    })
}
