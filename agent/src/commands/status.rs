//! `tidemark status`: the fleet by wave, or the promotion log (`--history`).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use jiff::Timestamp;
use serde::Serialize;

use crate::cli::{StatusArgs, ViewFormat};
use crate::fleet::promote::LogEntry;
use crate::fleet::render::{self, Style};

/// Some cluster is Blocked or Failed (for CI).
const BLOCKED_OR_FAILED: u8 = 1;

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let StatusArgs {
        fleet,
        output,
        watch,
        interval,
        history,
        limit,
    } = args;
    let (repo, records) = super::fleet_source(&fleet, !history)?;
    let interval: tidemark_schema::Duration = interval.parse().context("--interval")?;
    let tty = std::io::stdout().is_terminal();
    let style = Style {
        color: super::colour(),
        message_width: if tty { 100 } else { 0 },
    };
    super::runtime()?.block_on(async move {
        if history {
            repo.layout().await?;
            let entries = repo.history(limit).await?;
            let text = match output {
                ViewFormat::Text => render::history(&entries),
                format => encode(&history_doc(&entries), format)?,
            };
            print!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
        loop {
            let observed = repo.observe(&records, Timestamp::now()).await;
            let (text, code) = match observed {
                Ok((_, view)) => {
                    let text = match output {
                        ViewFormat::Text => render::table(&view, style),
                        format => encode(&view, format)?,
                    };
                    let code = if view.has_blocked_or_failed() {
                        ExitCode::from(BLOCKED_OR_FAILED)
                    } else {
                        ExitCode::SUCCESS
                    };
                    (text, code)
                }
                // Watching, a failed read is shown and tried again at the next redraw.
                Err(e) if watch => (
                    format!("error: {:#}\n", anyhow::Error::new(e)),
                    ExitCode::from(2),
                ),
                Err(e) => return Err(e.into()),
            };
            let mut stdout = std::io::stdout().lock();
            if watch && tty {
                // Home and clear: the table is redrawn in place.
                write!(stdout, "\x1b[H\x1b[2J")?;
            }
            write!(stdout, "{text}")?;
            stdout.flush()?;
            drop(stdout);
            if !watch {
                return Ok(code);
            }
            tokio::time::sleep(interval.as_std()).await;
        }
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryItem<'a> {
    commit: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    promotion: Option<&'a LogEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unreadable: Option<&'a str>,
}

fn history_doc(entries: &[(String, Result<LogEntry, String>)]) -> Vec<HistoryItem<'_>> {
    entries
        .iter()
        .map(|(commit, e)| HistoryItem {
            commit,
            promotion: e.as_ref().ok(),
            unreadable: e.as_ref().err().map(String::as_str),
        })
        .collect()
}

/// `value` as JSON or YAML, ending with a newline.
pub(super) fn encode<T: Serialize>(value: &T, format: ViewFormat) -> anyhow::Result<String> {
    Ok(match format {
        ViewFormat::Yaml => serde_yaml::to_string(value)?,
        _ => {
            let mut text = serde_json::to_string_pretty(value)?;
            text.push('\n');
            text
        }
    })
}
