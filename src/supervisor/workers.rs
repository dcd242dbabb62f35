//! The executor's side of each worker process: its scoreboard, how many workers
//! its slot has had, the task that turns its control pipe and exit into events,
//! and signalling its process group.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::warn;

use super::events::{BusyWorker, Event, WorkerMemory, WorkerSignal};
use super::inbox::{Inbox, Input};
use super::status::WorkerFacts;
use crate::metrics::RequestTotals;
use crate::scoreboard::Scoreboard;
use crate::worker::contract::{ExitReason, MSG_FAILED, MSG_READY};

struct WorkerHandle {
    scoreboard: Scoreboard,
    /// Its generation's listener names, in the order the worker counts them.
    listeners: Vec<String>,
    /// How many workers this slot has had, this one included (uWSGI's `respawn_count`).
    spawns: u64,
    slot: usize,
}

/// The worker processes alive now, by pid.
#[derive(Default)]
pub struct Workers {
    by_pid: HashMap<i32, WorkerHandle>,
    /// Workers started per slot over the master's life, for `respawn_count`.
    spawns_per_slot: HashMap<usize, u64>,
    /// Harakiris per slot over the master's life (uWSGI's `harakiri_count`,
    /// which its slot keeps across respawns).
    harakiris_per_slot: HashMap<usize, u64>,
    /// The last reading of every worker that is gone, so the instance's
    /// counters never go back when a worker is replaced.
    retired: RequestTotals,
}

impl Workers {
    pub fn insert(
        &mut self,
        pid: i32,
        slot: usize,
        scoreboard: Scoreboard,
        listeners: Vec<String>,
    ) {
        let spawns = self.spawns_per_slot.entry(slot).or_default();
        *spawns += 1;
        let spawns = *spawns;
        self.by_pid.insert(
            pid,
            WorkerHandle {
                scoreboard,
                listeners,
                spawns,
                slot,
            },
        );
    }

    pub fn contains(&self, pid: i32) -> bool {
        self.by_pid.contains_key(&pid)
    }

    /// The state machine ruled a harakiri on `pid` (its one stack-dump signal).
    pub fn count_harakiri(&mut self, pid: i32) {
        if let Some(h) = self.by_pid.get(&pid) {
            *self.harakiris_per_slot.entry(h.slot).or_default() += 1;
        }
    }

    /// The worker has exited: its page is final, read it one last time.
    pub fn remove(&mut self, pid: i32) {
        if let Some(h) = self.by_pid.remove(&pid) {
            self.retired.add(&h.scoreboard.read(), &h.listeners);
        }
    }

    /// The instance's request counters (gone workers plus live ones), the
    /// requests in flight, and how many workers have one.
    pub fn totals(&self) -> (RequestTotals, u64, Vec<i32>) {
        let mut totals = self.retired.clone();
        let mut in_flight = 0;
        let mut busy = Vec::new();
        for (pid, h) in &self.by_pid {
            let r = h.scoreboard.read();
            // One serving thread does not count: its request start says it.
            in_flight += r.counters.in_flight.max(u64::from(r.busy_since.is_some()));
            if r.busy_since.is_some() {
                busy.push(*pid);
            }
            totals.add(&r, &h.listeners);
        }
        (totals, in_flight, busy)
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

    /// Every worker's memory from /proc/PID/statm (evil-reload); a worker
    /// whose file cannot be read (just gone) is left out.
    pub fn memory(&self) -> Vec<WorkerMemory> {
        self.by_pid
            .keys()
            .filter_map(|pid| {
                let (vsz_bytes, rss_bytes) = statm_bytes(*pid)?;
                Some(WorkerMemory {
                    pid: *pid,
                    rss_bytes,
                    vsz_bytes,
                })
            })
            .collect()
    }

    /// What the status document says of `pid` beyond the state machine.
    pub fn facts(&self, pid: i32) -> Option<WorkerFacts> {
        self.by_pid.get(&pid).map(|h| WorkerFacts {
            reading: h.scoreboard.read(),
            spawns: h.spawns,
            harakiris: self.harakiris_per_slot.get(&h.slot).copied().unwrap_or(0),
            rss_bytes: rss_bytes(pid),
        })
    }
}

/// Sends `signal` to the worker's process group (the worker is its leader).
pub fn signal_group(pid: i32, signal: WorkerSignal) {
    use nix::sys::signal::{kill, killpg, Signal};
    if pid <= 1 {
        return;
    }
    let sig = match signal {
        WorkerSignal::Graceful => Signal::SIGTERM,
        WorkerSignal::Now => Signal::SIGINT,
        WorkerSignal::Kill => Signal::SIGKILL,
        // The worker's pid only: a child the app spawned would die of SIGUSR2.
        WorkerSignal::HarakiriDump | WorkerSignal::HarakiriGraceful(_) => {
            let sig = match signal {
                WorkerSignal::HarakiriGraceful(n) => Signal::try_from(n).unwrap_or(Signal::SIGTERM),
                _ => crate::worker::contract::SIGNAL_HARAKIRI_DUMP,
            };
            if let Err(e) = kill(nix::unistd::Pid::from_raw(pid), sig) {
                if e != nix::errno::Errno::ESRCH {
                    warn!(pid, signal = ?sig, error = %e, "cannot signal worker");
                }
            }
            return;
        }
    };
    if let Err(e) = killpg(nix::unistd::Pid::from_raw(pid), sig) {
        if e != nix::errno::Errno::ESRCH {
            warn!(pid, signal = ?sig, error = %e, "cannot signal worker");
        }
    }
}

/// A worker process as the master waits for it: spawned by tokio (lazy), or
/// forked by a template and re-parented to us (we are a child subreaper), waited
/// for through a pidfd.
pub enum Process {
    Spawned(tokio::process::Child),
    Forked(Pidfd),
}

impl Process {
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Process::Spawned(child) => child.wait().await,
            Process::Forked(pidfd) => pidfd.wait().await,
        }
    }
}

/// A process that is our child but not tokio's: readable when it has exited.
pub struct Pidfd {
    pid: i32,
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
    status: Option<std::process::ExitStatus>,
}

impl Pidfd {
    /// `pid` must be our child, not yet reaped (so the number cannot be reused
    /// before we have waited for it).
    pub fn open(pid: i32) -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the OwnedFd is moved into the AsyncFd, which alone closes it.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)?
        };
        Ok(Pidfd {
            pid,
            fd,
            status: None,
        })
    }

    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(status) = self.status {
            return Ok(status);
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let mut raw: libc::c_int = 0;
            // SAFETY: waitpid on our own child with a valid out pointer; WNOHANG
            // because readiness can be spurious.
            let r = unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) };
            if r == self.pid {
                let status = std::process::ExitStatus::from_raw(raw);
                self.status = Some(status);
                return Ok(status);
            }
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            guard.clear_ready();
        }
    }
}

/// One task per worker: forwards its readiness, then its exit with what it said.
pub fn watch_worker(pid: i32, mut child: Process, control: OwnedFd, inbox: Inbox) {
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

/// One task per app template: reads its datagrams (ready, failed, fork answers)
/// and reports its exit. `control` is the master's end of the seqpacket
/// socketpair (a clone: the executor keeps one to send fork requests).
pub fn watch_template(
    generation: u64,
    pid: i32,
    mut child: tokio::process::Child,
    control: OwnedFd,
    inbox: Inbox,
) {
    tokio::spawn(async move {
        let mut detail: Option<String> = None;
        // SAFETY: the OwnedFd is moved into the AsyncFd, which alone closes it;
        // every read on it is MSG_DONTWAIT.
        let socket = match unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(control, tokio::io::Interest::READABLE)
        } {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(generation, pid, error = %e, "cannot read the app template's socket");
                None
            }
        };
        let mut buf = vec![0u8; 64 * 1024];
        let status = match socket {
            Some(socket) => loop {
                tokio::select! {
                    datagram = recv_datagram(&socket, &mut buf) => match datagram {
                        Ok(n) if n > 0 => template_message(generation, pid, &buf[..n], &mut detail, &inbox),
                        _ => break child.wait().await,
                    },
                    status = child.wait() => {
                        while let Ok(Ok(n)) = tokio::time::timeout(
                            std::time::Duration::from_millis(20),
                            recv_datagram(&socket, &mut buf),
                        )
                        .await
                        {
                            if n == 0 {
                                break;
                            }
                            template_message(generation, pid, &buf[..n], &mut detail, &inbox);
                        }
                        break status;
                    }
                }
            },
            None => child.wait().await,
        };
        let _ = inbox.send(Input::Event(Event::TemplateExited {
            generation,
            pid,
            reason: ExitReason::from_status(status),
            detail,
        }));
    });
}

async fn recv_datagram(
    socket: &tokio::io::unix::AsyncFd<OwnedFd>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    loop {
        let mut guard = socket.readable().await?;
        match guard.try_io(|fd| {
            // SAFETY: recv into a buffer we own, of its length.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

fn template_message(
    generation: u64,
    pid: i32,
    datagram: &[u8],
    detail: &mut Option<String>,
    inbox: &Inbox,
) {
    let text = String::from_utf8_lossy(datagram);
    let text = text.trim_end();
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    match word {
        "ready" => {
            let _ = inbox.send(Input::Event(Event::TemplateReady { generation, pid }));
        }
        "failed" => {
            *detail = Some(
                serde_json::from_str::<String>(rest.trim())
                    .unwrap_or_else(|_| rest.trim().to_string()),
            );
        }
        "forked" | "forkfailed" => {
            let (id, answer) = rest.split_once(' ').unwrap_or((rest, ""));
            let Ok(id) = id.parse::<usize>() else {
                warn!(generation, pid, message = %text, "unreadable answer from the app template");
                return;
            };
            let result = if word == "forked" {
                answer
                    .trim()
                    .parse::<i32>()
                    .map_err(|_| format!("bad pid {answer:?} from the app template"))
            } else {
                Err(serde_json::from_str::<String>(answer.trim())
                    .unwrap_or_else(|_| answer.trim().to_string()))
            };
            let _ = inbox.send(Input::Forked {
                generation,
                id,
                result,
            });
        }
        _ => warn!(generation, pid, message = %text, "unknown message from the app template"),
    }
}

/// Resident set size of `pid` from /proc, 0 when unknown.
pub fn rss_bytes(pid: i32) -> u64 {
    statm_bytes(pid).map(|(_, rss)| rss).unwrap_or(0)
}

/// (address space, resident set) of `pid` in bytes, from /proc/PID/statm.
fn statm_bytes(pid: i32) -> Option<(u64, u64)> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let mut fields = statm.split_whitespace().map(|s| s.parse::<u64>().ok());
    let size = fields.next()??;
    let resident = fields.next()??;
    let page = page_size();
    Some((size * page, resident * page))
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64
}
