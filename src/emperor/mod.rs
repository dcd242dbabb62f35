//! Emperor mode (`start --emperor DIR`, DESIGN §7): one vassal per `*.ini` in DIR,
//! each a child `amy-emperor start DIR/x.ini` with its own master, sockets and
//! pidfile, in its own process group.
//!
//! Same shape as the master: sources (signals, the directory watcher, one task per
//! vassal waiting for its exit) send [`executor::Input`]s into one channel; one
//! loop owns the [`state::Emperor`] state machine and carries out its actions.
//!
//! What differs from uWSGI's emperor (reference/uwsgi.md §3): the directory is
//! watched with inotify, not polled by mtime every 3 s; a file edit is left to the
//! vassal's own master, which watches its ini and reloads gracefully; an ini that
//! is not a valid vassal (exit 2) is reported once and waits for the file to
//! change instead of being respawned forever; a vassal stopped on purpose (exit 0)
//! stays stopped until its file changes or the emperor gets SIGHUP; and stopping
//! the emperor stops the vassals gracefully.

pub mod executor;
pub mod state;

use std::path::Path;
use std::process::ExitCode;

use crate::cli::StartArgs;

pub fn run(dir: &Path, args: &StartArgs, verbosity: i8) -> ExitCode {
    crate::logs::init_tracing(std::io::stderr, verbosity);
    if args.daemonize {
        eprintln!("amy-emperor: --daemonize is not supported with --emperor; run the emperor under an init system");
        return ExitCode::from(2);
    }
    let dir = match std::path::absolute(dir) {
        Ok(d) if d.is_dir() => d,
        _ => {
            eprintln!("amy-emperor: {}: not a directory", dir.display());
            return ExitCode::from(2);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("amy-emperor: cannot find my own executable: {e}");
            return ExitCode::from(1);
        }
    };
    let mut vassal_args = Vec::new();
    for _ in 0..verbosity.max(0) {
        vassal_args.push("-v".into());
    }
    for _ in 0..verbosity.min(0).unsigned_abs() {
        vassal_args.push("-q".into());
    }
    if let Some(env_file) = &args.env_file {
        vassal_args.push("--env-file".into());
        vassal_args.push(env_file.clone().into_os_string());
    }
    let setup = executor::Setup {
        dir,
        exe,
        vassal_args,
    };
    crate::commands::run_loop(executor::run(setup))
}
