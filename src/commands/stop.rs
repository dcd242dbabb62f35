//! `amy-emperor stop [INI|--pidfile P] [--timeout S] [--now]`.
//!
//! Signals only a pid proven to be our master (it holds the pidfile's lock),
//! never a pid ≤ 1, then waits until it is gone.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cli::StopArgs;
use crate::pidfile::{self, Running};

pub fn run(args: &StopArgs) -> ExitCode {
    let path = match super::locate_pidfile(&args.target) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("amy-emperor: {e}");
            return ExitCode::from(4);
        }
    };
    let pid = match pidfile::inspect(&path) {
        Ok(Running::Master(pid)) => pid,
        Ok(Running::NotRunning) => {
            println!("not running");
            return ExitCode::SUCCESS;
        }
        Ok(Running::Stale(pid)) => {
            println!("not running ({} names pid {pid}, which is not an amy-emperor master; nothing signalled)", path.display());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("amy-emperor: {e}; nothing signalled");
            return ExitCode::from(4);
        }
    };
    let signal = if args.now {
        Signal::SIGINT
    } else {
        Signal::SIGTERM
    };
    if let Err(e) = kill(Pid::from_raw(pid), signal) {
        eprintln!("amy-emperor: cannot signal pid {pid}: {e}");
        return ExitCode::from(1);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.max(0.0));
    // The lock is released when the master's last descriptor closes, i.e. when
    // it is really gone; checking it (not the pid) is immune to pid reuse.
    loop {
        match pidfile::inspect(&path) {
            Ok(Running::Master(_)) => {}
            _ => {
                println!("stopped (pid {pid})");
                return ExitCode::SUCCESS;
            }
        }
        if Instant::now() >= deadline {
            eprintln!(
                "amy-emperor: pid {pid} still running after {} s",
                args.timeout
            );
            return ExitCode::from(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
