//! Thin entry point: parse the command line, set up logging, run, exit.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = amy_emperor::cli::Cli::parse();
    amy_emperor::commands::run(cli)
}
