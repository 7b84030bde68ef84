//! `tidemark demo`: see `crate::demo`.

use std::process::ExitCode;

use anyhow::Context;
use tidemark_schema::Duration;

use crate::cli::DemoArgs;
use crate::demo::{self, DemoConfig};

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let DemoArgs {
        fleet,
        speed,
        nodes_per_group,
        timeout,
    } = args;
    let timeout: Duration = timeout.parse().context("--timeout")?;
    if !fleet.join("fleet.yaml").is_file() {
        anyhow::bail!(
            "{} is not a fleet repo (no fleet.yaml); run from the repository root or pass --fleet",
            fleet.display()
        );
    }
    let binary = std::env::current_exe().context("cannot find the tidemark binary")?;
    let config = DemoConfig {
        fleet,
        speed,
        nodes_per_group,
        timeout: timeout.as_std(),
        binary,
    };
    super::runtime()?.block_on(demo::run(config))?;
    Ok(ExitCode::SUCCESS)
}
