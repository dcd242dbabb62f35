//! `amy-emperor start --emperor DIR`: one supervised instance per `*.ini` in DIR.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::StartArgs;

pub fn run(dir: &Path, _args: &StartArgs, _verbosity: i8) -> ExitCode {
    eprintln!(
        "amy-emperor: emperor mode ({}) is not implemented yet",
        dir.display()
    );
    ExitCode::from(2)
}
