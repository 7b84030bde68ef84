use std::process::ExitCode;

use clap::Parser;
use tidemark::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tidemark::telemetry::init(cli.log_format, &cli.log);
    match tidemark::commands::run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
