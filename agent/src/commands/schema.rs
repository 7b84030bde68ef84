//! `tidemark schema`: the JSON Schema of fleet-repo documents on stdout.

use std::process::ExitCode;

use anyhow::Context;

pub fn run() -> anyhow::Result<ExitCode> {
    let schema = tidemark_schema::json_schema::fleet_repo_schema();
    let text = serde_json::to_string_pretty(&schema).context("failed to serialize the schema")?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}
