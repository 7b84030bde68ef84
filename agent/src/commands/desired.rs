//! `tidemark desired`: the resolved desired state of one cluster and its commit.

use std::process::ExitCode;

use serde::Serialize;
use tidemark_schema::DesiredState;

use crate::cli::DesiredArgs;
use crate::config::fleet_cache;
use crate::desired::{self, Outcome};

/// What the git sync did, so scripts (and tests) can see that an idle poll fetched nothing.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Sync {
    fetched: bool,
    received_objects: usize,
    received_bytes: usize,
    pruned_tags: Vec<String>,
    /// How the remote's refs were listed: `v2` (`ls-refs`), `v0` (the whole
    /// advertisement) or `local`.
    protocol: &'static str,
}

/// Who signed the wave tag, with `--allowed-signers`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignedBy<'a> {
    fingerprint: &'a str,
    principals: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output<'a> {
    cluster: &'a str,
    file: &'a str,
    wave: Option<&'a str>,
    tag: Option<&'a str>,
    branch: &'a str,
    branch_revision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signed_by: Option<SignedBy<'a>>,
    sync: Sync,
    #[serde(skip_serializing_if = "Option::is_none")]
    nothing_to_do: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    desired: Option<&'a DesiredState>,
}

pub fn run(args: DesiredArgs) -> anyhow::Result<ExitCode> {
    let (cache, selector, signers) = fleet_cache(&args)?;
    let branch = args.branch;
    let now = jiff::Timestamp::now();
    let resolved =
        match desired::resolve(&cache, branch.as_deref(), &selector, signers.as_ref(), now) {
            Ok(r) => r,
            Err(desired::Error::Select(e)) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(1));
            }
            Err(e @ desired::Error::Untrusted { .. }) => {
                eprintln!("error: {:#}", anyhow::Error::from(e));
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e.into()),
        };
    let s = &resolved.selection;
    let (revision, nothing, state) = match &resolved.outcome {
        Outcome::Desired { state, revision } => {
            (Some(revision.as_str()), None, Some(state.as_ref()))
        }
        Outcome::NothingYet { reason } => (None, Some(reason.as_str()), None),
    };
    let out = Output {
        cluster: &s.name,
        file: &s.file,
        wave: s.wave.as_deref(),
        tag: s.tag.as_deref(),
        branch: &resolved.sync.branch,
        branch_revision: &resolved.sync.branch_commit,
        revision,
        signed_by: resolved.signer.as_ref().map(|s| SignedBy {
            fingerprint: &s.fingerprint,
            principals: &s.principals,
        }),
        sync: Sync {
            fetched: resolved.sync.fetched,
            received_objects: resolved.sync.stats.received_objects,
            received_bytes: resolved.sync.stats.received_bytes,
            pruned_tags: resolved.sync.pruned.clone(),
            protocol: resolved.sync.protocol.as_str(),
        },
        nothing_to_do: nothing,
        desired: state,
    };
    print!("{}", serde_yaml::to_string(&out)?);
    if let Some(reason) = nothing {
        eprintln!("nothing to do yet: {reason}");
    }
    Ok(ExitCode::SUCCESS)
}
