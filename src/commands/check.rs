//! `amy-emperor check [INI] [--show-config] [--show-secrets] [--env-file PATH]`.

use std::process::ExitCode;

use crate::cli::CheckArgs;

pub fn run(args: &CheckArgs) -> ExitCode {
    let _ = args;
    ExitCode::from(2)
}
