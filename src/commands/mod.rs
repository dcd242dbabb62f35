//! One module per subcommand. Each returns the process exit code (DESIGN §2).

pub mod check;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the parsed command line and returns the exit status.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check(args) => check::run(&args),
        _ => {
            eprintln!("amy-emperor: not implemented yet");
            ExitCode::from(2)
        }
    }
}
