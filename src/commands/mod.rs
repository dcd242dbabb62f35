//! One module per subcommand. Each returns `Result<Done, CommandError>`; this
//! module turns that into the process's exit status, in one place
//! ([`CommandError::exit_code`]), as README.md's table of exit codes says.

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

/// How a command that did its job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Success,
    /// `status`: its LSB code (0 running, 1 dead with a pidfile, 3 not running,
    /// 4 unknown), with the document already printed.
    Status(status::Lsb),
}

/// Why a command failed. The message is the whole line printed on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The config is invalid (`path:line: reason`): nothing was touched. Exit 2.
    #[error("{0}")]
    Invalid(String),
    /// The command could not do what it was asked (start halted, reload
    /// rejected, stop timed out). Exit 1.
    #[error("{0}")]
    Failed(String),
    /// No master runs to talk to. Exit 3.
    #[error("{0}")]
    NotRunning(String),
    /// The pidfile cannot be trusted; nothing was signalled. Exit 4.
    #[error("{0}")]
    Unknown(String),
    /// The master's loop ended with this code; it logged why.
    #[error("the master exited with status {0}")]
    Exited(i32),
    /// Stdout was closed before the output was written (`man | head`): exit 1,
    /// with nothing to say (the reader has gone).
    #[error("stdout is closed")]
    StdoutClosed,
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Invalid(_) => 2,
            CommandError::Failed(_) => 1,
            CommandError::NotRunning(_) => 3,
            CommandError::Unknown(_) => 4,
            CommandError::Exited(code) => (*code).clamp(0, 255) as u8,
            CommandError::StdoutClosed => 1,
        }
    }

    /// Whether the message still has to be printed (the master's own exit was
    /// already logged where its log goes; a closed stdout has no reader).
    fn print(&self) -> bool {
        !matches!(self, CommandError::Exited(_) | CommandError::StdoutClosed)
    }
}

/// The exit status of a finished command.
pub fn exit_code(result: Result<Done, CommandError>) -> ExitCode {
    match result {
        Ok(Done::Success) => ExitCode::SUCCESS,
        Ok(Done::Status(lsb)) => ExitCode::from(lsb.code()),
        Err(e) => {
            if e.print() {
                eprintln!("{e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs the parsed command line and returns the exit status.
pub fn run(cli: Cli) -> ExitCode {
    let verbosity = cli.verbose as i8 - cli.quiet as i8;
    // `main` holds the stop signals until their handlers exist; only `start`
    // installs any, so everything else gets the default behaviour back (Ctrl-C).
    if !matches!(cli.command, Command::Start(_)) {
        crate::signals::release();
    }
    let result = match cli.command {
        Command::Start(args) => {
            if args.emperor.is_some() {
                return emperor::start(None, &args, verbosity);
            }
            // An emperor ini has no socket: tell it apart before the instance
            // validation refuses it.
            let ini = args.ini.clone().unwrap_or_else(|| "amy_uwsgi.ini".into());
            if emperor::is_emperor_ini(&ini) {
                return emperor::start(Some(&ini), &args, verbosity);
            }
            start::run(&args, verbosity)
        }
        Command::Stop(args) => stop::run(&args),
        Command::Reload(args) => reload::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Check(args) => {
            let ini = args.ini.clone().unwrap_or_else(|| "amy_uwsgi.ini".into());
            if emperor::is_emperor_ini(&ini) {
                return emperor::check(&ini);
            }
            check::run(&args)
        }
        Command::Completions(args) => completions::completions(&args),
        Command::Man => completions::man(),
        Command::Router => {
            crate::logs::init_tracing(std::io::stderr, verbosity);
            return crate::router::run_process();
        }
        Command::WorkerBundle => {
            use std::io::Write;
            let bundle = crate::worker::spawn::package_json();
            std::io::stdout()
                .lock()
                .write_all(bundle.as_bytes())
                .map(|()| Done::Success)
                .map_err(|_| CommandError::StdoutClosed)
        }
    };
    exit_code(result)
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
        environment: std::env::vars_os().collect(),
        cwd,
        ..LoadOptions::default()
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
