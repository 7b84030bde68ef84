//! One module per subcommand; each turns its arguments into values and calls the library.

mod agent;
#[cfg(feature = "sim")]
mod demo;
mod desired;
mod plan;
mod rbac;
mod schema;
#[cfg(feature = "sim")]
mod sim;
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
        Command::Rbac(args) => rbac::run(args),
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
