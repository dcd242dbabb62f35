//! One module per subcommand. Each returns the process exit code (DESIGN §2).

pub mod check;
pub mod completions;
pub mod emperor;
pub mod reload;
pub mod start;
pub mod status;
pub mod stop;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::{Cli, Command, Target};
use crate::config::{self, LoadOptions};

/// Runs the parsed command line and returns the exit status.
pub fn run(cli: Cli) -> ExitCode {
    let verbosity = cli.verbose as i8 - cli.quiet as i8;
    // `main` holds the stop signals until their handlers exist; only `start`
    // installs any, so everything else gets the default behaviour back (Ctrl-C).
    if !matches!(cli.command, Command::Start(_)) {
        crate::signals::release();
    }
    match cli.command {
        Command::Start(args) => start::run(&args, verbosity),
        Command::Stop(args) => stop::run(&args),
        Command::Reload(args) => reload::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Completions(args) => completions::completions(&args),
        Command::Man => completions::man(),
    }
}

/// The pidfile of the instance a command targets: `--pidfile`, or the ini's
/// `pidfile`, read leniently so that a half-deployed, invalid config still lets
/// people stop, reload and inspect the running site.
pub fn locate_pidfile(target: &Target) -> Result<PathBuf, String> {
    if let Some(p) = &target.pidfile {
        return Ok(p.clone());
    }
    let ini = target.ini_or_default();
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let options = LoadOptions {
        env_file: None,
        environment: std::env::vars_os().collect(),
        cwd,
        vassal: Default::default(),
    };
    config::pidfile_of(&ini, &options)
        .map_err(|e| format!("{e} (use --pidfile to name the pidfile directly)"))?
        .ok_or_else(|| {
            format!(
                "{}: no pidfile configured; add `pidfile =` or use --pidfile",
                ini.display()
            )
        })
}

/// Runs a loop (the master's or the emperor's) on a current-thread runtime and
/// turns its exit code into the process's.
pub fn run_loop(main: impl std::future::Future<Output = i32>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(main);
    // Forwarding tasks may still be parked on signals; do not wait for them.
    runtime.shutdown_background();
    ExitCode::from(code.clamp(0, 255) as u8)
}
