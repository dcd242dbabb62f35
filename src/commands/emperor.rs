//! `amy-emperor start --emperor DIR`: one supervised instance per `*.ini` in DIR.
//! The work is in [`crate::emperor`].

use std::path::Path;
use std::process::ExitCode;

use crate::cli::StartArgs;

pub fn run(dir: &Path, args: &StartArgs, verbosity: i8) -> ExitCode {
    crate::emperor::run(dir, args, verbosity)
}
