//! One module per subcommand; each turns its arguments into values and calls the library.

mod agent;
#[cfg(feature = "sim")]
mod demo;
mod desired;
mod plan;
mod promote;
mod schema;
#[cfg(feature = "sim")]
mod sim;
mod status;
mod validate;

use std::process::ExitCode;

use crate::cli::Command;

/// Runs a subcommand. `Err` means a usage or internal error (exit status 2).
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate(args) => validate::run(args),
        Command::Schema => schema::run(),
        Command::Desired(args) => desired::run(args),
        Command::Agent(args) => agent::run(args),
        #[cfg(feature = "sim")]
        Command::Demo(args) => demo::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Status(args) => status::run(args),
        Command::Promote(args) => promote::run(args),
        #[cfg(feature = "sim")]
        Command::Sim(args) => sim::run(args),
    }
}

/// A runtime for the commands that talk to a cluster.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

/// The fleet repo and where its records are read, from the flags `status` and `promote`
/// share.
/// With `read_records` false (the promotion log only) no kubeconfig is read.
fn fleet_source(
    args: &crate::cli::FleetArgs,
    read_records: bool,
) -> anyhow::Result<(crate::fleet::FleetRepo, crate::fleet::Records)> {
    use anyhow::Context;
    let crate::cli::FleetArgs {
        repo,
        branch,
        kubeconfigs,
        contexts,
        from_git,
        timeout,
        status_namespace,
        git,
    } = args;
    let config = crate::config::source_config(repo, branch.clone(), git)?;
    let fleet = crate::fleet::FleetRepo::open(&config)?;
    let timeout: tidemark_schema::Duration = timeout.parse().context("--timeout")?;
    let records = if *from_git || !read_records {
        crate::fleet::Records::Git
    } else {
        crate::fleet::Records::Contexts {
            kubeconfigs: if kubeconfigs.is_empty() {
                crate::fleet::reports::default_kubeconfigs()
            } else {
                kubeconfigs.clone()
            },
            contexts: contexts.clone(),
            namespace: status_namespace.clone(),
            timeout: timeout.as_std(),
        }
    };
    Ok((fleet, records))
}

/// Whether standard output is a terminal that takes colours (`NO_COLOR` unset).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
