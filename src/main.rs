//! Thin entry point: parse the command line, set up logging, run, exit.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // First thing: a stop signal during start-up must wait for its handler
    // (`commands::run` releases it at once for commands that install none).
    amy_emperor::signals::hold();
    let cli = amy_emperor::cli::Cli::parse();
    amy_emperor::commands::run(cli)
}
