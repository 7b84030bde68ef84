//! What the clusters report: each agent's status record, read through kubeconfig contexts
//! (concurrently, each within a timeout) or from the status refs the agents publish to
//! the fleet repo (`--report-ref`). Records are typed by [`status::Record`]; nothing here
//! parses an annotation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;

use super::Result;
use crate::keys::refs;
use crate::source::GitCache;
use crate::status::{self, Record};

/// Contexts read at once: enough for a large fleet on one connection pool each, bounded
/// so hundreds of contexts do not open hundreds of TLS sessions at the same instant.
const CONCURRENCY: usize = 64;

/// One record a cluster reported.
#[derive(Clone, Debug, PartialEq)]
pub struct Reported {
    /// The record (its `cluster` names the manifest).
    pub record: Record,
    /// When the agent was last known alive: its last pass, or when it published the
    /// record to git, whichever is later.
    pub seen: Option<Timestamp>,
    /// Where it was read (`context prod-eu-1`, `refs/tidemark/status/prod-eu-1`).
    pub via: String,
}

/// A place that should have reported and did not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Where (`context prod-eu-1`).
    pub via: String,
    /// Names that may be the cluster's (the context, its kubeconfig cluster, the file's
    /// stem): a manifest with one of these names is shown unreachable with this reason.
    pub names: Vec<String>,
    /// What went wrong.
    pub reason: String,
}

/// Everything read from the clusters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reports {
    /// Records read.
    pub records: Vec<Reported>,
    /// Contexts that could not be read.
    pub failures: Vec<Failure>,
}

/// One kubeconfig context to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// How it is named in the output: the context, or `context (file)` when several
    /// files have a context of that name.
    pub label: String,
    /// The kubeconfig file.
    pub kubeconfig: PathBuf,
    /// The context.
    pub context: String,
    /// The context's cluster entry.
    pub cluster: String,
}

/// The contexts to read: every context of every file, or those named in `contexts`.
pub fn targets(kubeconfigs: &[PathBuf], contexts: &[String]) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    for path in kubeconfigs {
        let kc =
            kube::config::Kubeconfig::read_from(path).map_err(|e| super::Error::Kubeconfig {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        for named in &kc.contexts {
            if !contexts.is_empty() && !contexts.contains(&named.name) {
                continue;
            }
            out.push(Target {
                label: named.name.clone(),
                kubeconfig: path.clone(),
                context: named.name.clone(),
                cluster: named
                    .context
                    .as_ref()
                    .map(|c| c.cluster.clone())
                    .unwrap_or_default(),
            });
        }
    }
    for name in contexts {
        if !out.iter().any(|t| &t.context == name) {
            return Err(super::Error::NoContext(name.clone()));
        }
    }
    let labels: Vec<String> = out.iter().map(|t| t.label.clone()).collect();
    for t in &mut out {
        if labels.iter().filter(|l| **l == t.label).count() > 1 {
            t.label = format!("{} ({})", t.context, t.kubeconfig.display());
        }
    }
    Ok(out)
}

/// Reads the status record of every target concurrently, each within `timeout` (a
/// cluster that does not answer in time is a failure, not a wait).
pub async fn from_contexts(targets: Vec<Target>, namespace: &str, timeout: Duration) -> Reports {
    let reads = futures::stream::iter(targets)
        .map(|t| async move {
            let read = tokio::time::timeout(timeout, read_context(&t, namespace)).await;
            let outcome = match read {
                Ok(Ok(record)) if record.cluster.is_some() => Ok(record),
                Ok(Ok(_)) => Err(format!(
                    "no tidemark status record on namespace {namespace} (is an agent running there?)"
                )),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!(
                    "no answer within {}",
                    tidemark_schema::Duration(timeout)
                )),
            };
            (t, outcome)
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut reports = Reports::default();
    for (t, outcome) in reads {
        let via = format!("context {}", t.label);
        match outcome {
            Ok(record) => reports.records.push(Reported {
                seen: record.last_pass,
                record,
                via,
            }),
            Err(reason) => reports.failures.push(Failure {
                names: candidate_names(&t),
                via,
                reason,
            }),
        }
    }
    reports.records.sort_by(|a, b| a.via.cmp(&b.via));
    reports.failures.sort_by(|a, b| a.via.cmp(&b.via));
    reports
}

fn candidate_names(t: &Target) -> Vec<String> {
    let stem = t
        .kubeconfig
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned());
    let mut names: Vec<String> = [Some(t.context.clone()), Some(t.cluster.clone()), stem]
        .into_iter()
        .flatten()
        .filter(|n| !n.is_empty())
        .collect();
    names.dedup();
    names
}

async fn read_context(t: &Target, namespace: &str) -> std::result::Result<Record, String> {
    let client = crate::k8s::client_for_context(&t.kubeconfig, &t.context)
        .await
        .map_err(|e| status::describe(&e))?;
    status::read(&client, namespace)
        .await
        .map_err(|e| status::describe(&e))
}

/// The records the agents published to the fleet repo, as the cache holds them (sync it
/// with `refs/tidemark/status/` followed first).
pub fn from_git(cache: &GitCache) -> Result<Reports> {
    let mut reports = Reports::default();
    for entry in cache.entries(refs::STATUS_PREFIX, refs::STATUS_FILE)? {
        let name = entry
            .refname
            .strip_prefix(refs::STATUS_PREFIX)
            .unwrap_or(&entry.refname)
            .to_string();
        match status::publish::from_file(&entry.content) {
            Some(mut record) => {
                record.cluster.get_or_insert(name);
                let seen = record.last_pass.max(Some(entry.time));
                reports.records.push(Reported {
                    record,
                    seen,
                    via: entry.refname,
                });
            }
            None => reports.failures.push(Failure {
                via: entry.refname.clone(),
                names: vec![name],
                reason: format!(
                    "{} of commit {} is not a status record",
                    refs::STATUS_FILE,
                    crate::desired::short(&entry.commit)
                ),
            }),
        }
    }
    Ok(reports)
}

/// The kubeconfig files to read by default: `KUBECONFIG` (a list, as kubectl reads it),
/// else `~/.kube/config`.
pub fn default_kubeconfigs() -> Vec<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        return std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".kube").join("config"))
        .into_iter()
        .collect()
}
