//! `tidemark promote WAVE`: decide, print the decision, and move the tag if it says so.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use jiff::Timestamp;
use serde::Serialize;

use crate::cli::{PromoteArgs, ViewFormat};
use crate::fleet::promote::Promoted;
use crate::fleet::promotion::{Decision, Verdict};
use crate::fleet::{self, Ask};
use crate::source::Identity;
use crate::trust::SigningKey;

/// The promotion was refused (by the checks, or by a concurrent promotion).
const REFUSED: u8 = 1;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    decision: &'a Decision,
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    promoted: Option<PromotedDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PromotedDoc {
    tag_object: String,
    log_commit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    signed_by: Option<String>,
}

pub fn run(args: PromoteArgs) -> anyhow::Result<ExitCode> {
    let PromoteArgs {
        wave,
        fleet,
        to,
        dry_run,
        sign_key,
        override_freeze,
        reason,
        clock_skew,
        by,
        output,
    } = args;
    let (repo, records) = super::fleet_source(&fleet, true)?;
    let clock_skew: tidemark_schema::Duration = clock_skew.parse().context("--clock-skew")?;
    let override_reason = match (override_freeze, reason) {
        (true, Some(r)) if !r.trim().is_empty() => Some(r),
        (true, _) => bail!("--override-freeze needs a --reason that says why"),
        (false, _) => None,
    };
    let key = match &sign_key {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read --sign-key {}", path.display()))?;
            Some(Arc::new(
                SigningKey::from_openssh(&text)
                    .with_context(|| format!("--sign-key {}", path.display()))?,
            ))
        }
    };
    let by = by
        .as_deref()
        .map(Identity::parse)
        .unwrap_or_else(Identity::of_this_user);
    let ask = Ask {
        wave,
        to,
        clock_skew: clock_skew.as_std(),
        override_reason,
    };
    super::runtime()?.block_on(async move {
        let check = repo.check(&records, &ask, Timestamp::now()).await?;
        let decision = &check.decision;
        let mut report = Report {
            decision,
            dry_run,
            promoted: None,
            refused: None,
        };
        let mut code = ExitCode::SUCCESS;
        let mut after = None;
        match &decision.verdict {
            Verdict::AlreadyThere => {}
            Verdict::Refused { .. } => code = ExitCode::from(REFUSED),
            Verdict::Promote if dry_run => after = Some("dry run: nothing was moved".to_string()),
            Verdict::Promote => {
                let signed_by = key.as_ref().map(|k| k.fingerprint().to_string());
                match repo.promote(&check, by, key, Timestamp::now()).await {
                    Ok(Promoted {
                        tag_object,
                        log_commit,
                    }) => {
                        after = Some(format!(
                            "promoted: {} -> {} (tag object {}{}), recorded in {} as {}",
                            decision.tag,
                            crate::desired::short(&decision.to),
                            crate::desired::short(&tag_object),
                            signed_by
                                .as_deref()
                                .map(|k| format!(", signed by {k}"))
                                .unwrap_or_default(),
                            crate::keys::refs::PROMOTIONS,
                            crate::desired::short(&log_commit)
                        ));
                        report.promoted = Some(PromotedDoc {
                            tag_object,
                            log_commit,
                            signed_by,
                        });
                    }
                    Err(e @ fleet::Error::Raced(_)) => {
                        let text = format!("{:#}", anyhow::Error::new(e));
                        after = Some(text.clone());
                        report.refused = Some(text);
                        code = ExitCode::from(REFUSED);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        match output {
            ViewFormat::Text => {
                print!("{}", decision.describe());
                if let Some(line) = after {
                    println!("{line}");
                }
            }
            format => print!("{}", super::status::encode(&report, format)?),
        }
        Ok(code)
    })
}
