//! `amy-emperor stop [INI|--pidfile P] [--timeout S] [--now]`.
//!
//! Signals only a pid proven to be our master (it holds the pidfile's lock),
//! never a pid ≤ 1, then waits until it is gone.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{CommandError, Done};
use crate::cli::StopArgs;
use crate::pidfile::{self, Running};

pub fn run(args: &StopArgs) -> Result<Done, CommandError> {
    let path = super::locate_pidfile(&args.target)
        .map_err(|e| CommandError::Unknown(format!("amy-emperor: {e}")))?;
    let pid = match pidfile::inspect(&path) {
        Ok(Running::Master(pid)) => pid,
        Ok(Running::NotRunning) => {
            println!("not running");
            return Ok(Done::Success);
        }
        Ok(Running::Stale(pid)) => {
            println!("not running ({} names pid {pid}, which is not an amy-emperor master; nothing signalled)", path.display());
            return Ok(Done::Success);
        }
        Err(e) => {
            return Err(CommandError::Unknown(format!(
                "amy-emperor: {e}; nothing signalled"
            )))
        }
    };
    let signal = if args.now {
        Signal::SIGINT
    } else {
        Signal::SIGTERM
    };
    kill(Pid::from_raw(pid), signal)
        .map_err(|e| CommandError::Failed(format!("amy-emperor: cannot signal pid {pid}: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.max(0.0));
    // The lock is released when the master's last descriptor closes, i.e. when
    // it is really gone; checking it (not the pid) is immune to pid reuse.
    loop {
        // The master drops its lock (and removes the pidfile) just before it
        // exits: wait for the process too, so "stopped" means gone. The pid was
        // proven ours a moment ago and is never signalled again here, so a reuse
        // in between can only make us wait, never hit someone else.
        let locked = matches!(pidfile::inspect(&path), Ok(Running::Master(_)));
        if !locked && exited(pid) {
            println!("stopped (pid {pid})");
            return Ok(Done::Success);
        }
        if Instant::now() >= deadline {
            return Err(CommandError::Failed(format!(
                "amy-emperor: pid {pid} still running after {} s",
                args.timeout
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gone, or a zombie waiting for its parent: nothing runs any more.
fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}
