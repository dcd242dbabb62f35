//! The executor's side of each worker process: its scoreboard, how many workers
//! its slot has had, the task that turns its control pipe and exit into events,
//! and signalling its process group.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::warn;

use super::events::{BusyWorker, Event, WorkerSignal};
use super::inbox::{Inbox, Input};
use super::status::WorkerFacts;
use crate::scoreboard::Scoreboard;
use crate::worker::contract::{ExitReason, MSG_FAILED, MSG_READY};

struct WorkerHandle {
    scoreboard: Scoreboard,
    /// How many workers this slot has had, this one included (uWSGI's `respawn_count`).
    spawns: u64,
}

/// The worker processes alive now, by pid.
#[derive(Default)]
pub struct Workers {
    by_pid: HashMap<i32, WorkerHandle>,
    /// Workers started per slot over the master's life, for `respawn_count`.
    spawns_per_slot: HashMap<usize, u64>,
}

impl Workers {
    pub fn insert(&mut self, pid: i32, slot: usize, scoreboard: Scoreboard) {
        let spawns = self.spawns_per_slot.entry(slot).or_default();
        *spawns += 1;
        let spawns = *spawns;
        self.by_pid.insert(pid, WorkerHandle { scoreboard, spawns });
    }

    pub fn remove(&mut self, pid: i32) {
        self.by_pid.remove(&pid);
    }

    /// The workers in a request now (`now` on the scoreboard clock), for harakiri.
    pub fn busy(&self, now: f64) -> Vec<BusyWorker> {
        self.by_pid
            .iter()
            .filter_map(|(pid, w)| {
                let r = w.scoreboard.read();
                r.request_age(now).map(|age| BusyWorker {
                    pid: *pid,
                    age,
                    request: r.request,
                })
            })
            .collect()
    }

    /// What the status document says of `pid` beyond the state machine.
    pub fn facts(&self, pid: i32) -> Option<WorkerFacts> {
        self.by_pid.get(&pid).map(|h| WorkerFacts {
            reading: h.scoreboard.read(),
            spawns: h.spawns,
            rss_bytes: rss_bytes(pid),
        })
    }
}

/// Sends `signal` to the worker's process group (the worker is its leader).
pub fn signal_group(pid: i32, signal: WorkerSignal) {
    use nix::sys::signal::{killpg, Signal};
    if pid <= 1 {
        return;
    }
    let sig = match signal {
        WorkerSignal::Graceful => Signal::SIGTERM,
        WorkerSignal::Now => Signal::SIGINT,
        WorkerSignal::Kill => Signal::SIGKILL,
    };
    if let Err(e) = killpg(nix::unistd::Pid::from_raw(pid), sig) {
        if e != nix::errno::Errno::ESRCH {
            warn!(pid, signal = ?sig, error = %e, "cannot signal worker");
        }
    }
}

/// One task per worker: forwards its readiness, then its exit with what it said.
pub fn watch_worker(pid: i32, mut child: tokio::process::Child, control: OwnedFd, inbox: Inbox) {
    tokio::spawn(async move {
        let mut detail: Option<String> = None;
        let reader = match tokio::net::unix::pipe::Receiver::from_owned_fd(control) {
            Ok(r) => Some(BufReader::new(r).lines()),
            Err(e) => {
                warn!(pid, error = %e, "cannot read the worker's control pipe");
                None
            }
        };
        let status = match reader {
            Some(mut lines) => loop {
                tokio::select! {
                    line = lines.next_line() => match line {
                        Ok(Some(line)) => handle_line(pid, &line, &mut detail, &inbox),
                        // Closed: the worker is exiting; wait for its status.
                        _ => break child.wait().await,
                    },
                    status = child.wait() => {
                        // Lines written just before exit are still in the pipe.
                        while let Ok(Ok(Some(line))) =
                            tokio::time::timeout(std::time::Duration::from_millis(20), lines.next_line()).await
                        {
                            handle_line(pid, &line, &mut detail, &inbox);
                        }
                        break status;
                    }
                }
            },
            None => child.wait().await,
        };
        let _ = inbox.send(Input::Event(Event::WorkerExited {
            pid,
            reason: ExitReason::from_status(status),
            detail,
        }));
    });
}

fn handle_line(pid: i32, line: &str, detail: &mut Option<String>, inbox: &Inbox) {
    if line == MSG_READY {
        let _ = inbox.send(Input::Event(Event::WorkerReady { pid }));
    } else if let Some(rest) = line.strip_prefix(MSG_FAILED) {
        *detail = Some(
            serde_json::from_str::<String>(rest.trim()).unwrap_or_else(|_| rest.trim().to_string()),
        );
    }
}

/// Resident set size of `pid` from /proc, 0 when unknown.
pub fn rss_bytes(pid: i32) -> u64 {
    let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64
}
