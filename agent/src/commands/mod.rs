//! One module per subcommand; each turns its arguments into values and calls the library.

mod desired;
mod schema;
mod validate;

use std::process::ExitCode;

use crate::cli::Command;

/// Runs a subcommand. `Err` means a usage or internal error (exit status 2).
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate(args) => validate::run(args),
        Command::Schema => schema::run(),
        Command::Desired(args) => desired::run(args),
    }
}
