//! What the master's one loop reacts to ([`Event`]) and what it asks the executor
//! to do ([`Action`]). Both are plain data so the state machine can be tested by
//! feeding events with explicit instants and asserting actions.

use std::time::Duration;

use crate::worker::contract::ExitReason;

/// A signal delivered to the master; README.md "Signals to the master" lists
/// what each does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterSignal {
    /// Graceful reload.
    Hup,
    /// Graceful stop.
    Term,
    /// Fast stop (SIGINT and SIGQUIT).
    Int,
    /// Stats summary to the log.
    Usr1,
    /// Reopen log files.
    Usr2,
    /// A child changed state: an orphan we inherited may wait to be reaped.
    Chld,
}

/// Identifies a request from a client of the control socket, so the answer can be
/// routed back once the outcome is known.
pub type RequestId = u64;

/// The settings of one generation that the state machine decides with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationPlan {
    pub processes: usize,
    pub mercy: Duration,
    pub harakiri: Option<Duration>,
    /// Between the harakiri stack dump and SIGKILL: `harakiri-graceful-timeout`,
    /// else [`crate::worker::contract::HARAKIRI_DUMP_GRACE`].
    pub harakiri_grace: Duration,
    /// `harakiri-graceful-signal`, sent after the dump when
    /// `harakiri-graceful-timeout` is set.
    pub harakiri_graceful_signal: Option<i32>,
    /// Replace one slot at a time instead of starting a full new generation.
    pub one_by_one: bool,
    /// Preload (no `lazy-apps`): an app template imports the app and forks the workers.
    pub preload: bool,
    /// `max-worker-lifetime`: slot i's worker is recycled once older than
    /// this + i·`lifetime_delta` (uWSGI: wid−1 times the delta).
    pub lifetime: Option<Duration>,
    pub lifetime_delta: Duration,
    /// `evil-reload-on-rss` / `evil-reload-on-as` in bytes, 0 = off: the master
    /// recycles a worker above them, even mid-request.
    pub evil_rss: u64,
    pub evil_as: u64,
    /// `cheaper`: how many workers run, between `cheaper` and `processes`.
    pub cheaper: Option<crate::config::lifetimes::Cheaper>,
}

impl GenerationPlan {
    /// The workers a generation starts with (`cheaper-initial` in cheaper mode).
    pub fn initial_workers(&self) -> usize {
        match &self.cheaper {
            Some(c) => c.initial.clamp(1, self.processes),
            None => self.processes,
        }
    }
}

impl Default for GenerationPlan {
    fn default() -> Self {
        GenerationPlan {
            processes: 1,
            mercy: Duration::from_secs(60),
            harakiri: None,
            harakiri_grace: Duration::from_secs(3),
            harakiri_graceful_signal: None,
            one_by_one: false,
            preload: false,
            lifetime: None,
            lifetime_delta: Duration::ZERO,
            evil_rss: 0,
            evil_as: 0,
            cheaper: None,
        }
    }
}

/// A worker's memory, read from /proc/PID/statm for the evil-reload checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerMemory {
    pub pid: i32,
    pub rss_bytes: u64,
    /// Address space (VmSize).
    pub vsz_bytes: u64,
}

/// A worker busy on one request, read from its scoreboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyWorker {
    pub pid: i32,
    pub age: Duration,
    /// "METHOD PATH", no query string.
    pub request: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Signal(MasterSignal),
    /// A watched file changed. `writing` is true while a writer still holds it open
    /// (a modify without its close), so a half-written file is not applied.
    FilesChanged {
        writing: bool,
    },
    /// `amy-emperor reload` over the control socket.
    ReloadRequested(RequestId),
    StatusRequested(RequestId),
    /// The answer to [`Action::LoadConfig`]: the new generation's plan, or why the
    /// config was rejected (`path:line: reason`).
    ConfigLoaded {
        generation: u64,
        result: Result<GenerationPlan, String>,
    },
    Spawned {
        slot: usize,
        generation: u64,
        pid: i32,
    },
    SpawnFailed {
        slot: usize,
        generation: u64,
        reason: String,
    },
    WorkerReady {
        pid: i32,
    },
    /// The answer to [`Action::SpawnTemplate`]: its process runs.
    TemplateSpawned {
        generation: u64,
        pid: i32,
    },
    /// The template of `generation` has imported the app and takes fork requests.
    TemplateReady {
        generation: u64,
        pid: i32,
    },
    /// The template of `generation` is gone (`pid` 0: it could not be spawned;
    /// `detail` is the import traceback or why the spawn failed).
    TemplateExited {
        generation: u64,
        pid: i32,
        reason: ExitReason,
        detail: Option<String>,
    },
    /// `detail` is what the worker said before exiting (an import traceback).
    WorkerExited {
        pid: i32,
        reason: ExitReason,
        detail: Option<String>,
    },
    /// The answer to [`Action::CheckHarakiri`]: the workers in a request now
    /// (harakiri and cheaper decide on it).
    BusyWorkers(Vec<BusyWorker>),
    /// The answer to [`Action::CheckMemory`].
    WorkerMemory(Vec<WorkerMemory>),
    /// A deadline from [`super::state::Supervisor::next_deadline`] has passed.
    Tick,
}

/// How a reload ended, as `reload` and `status` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new generation serves.
    Serving { generation: u64 },
    /// The config was invalid; nothing changed.
    Rejected { reason: String },
    /// The new generation failed to boot; the old one keeps serving.
    Failed { generation: u64, reason: String },
    /// The master is stopping.
    Aborted,
}

/// Notifications for systemd (`NOTIFY_SOCKET`) and a daemonizing parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Ready,
    Reloading,
    Stopping,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Re-read and validate the config for `generation`; answer with
    /// [`Event::ConfigLoaded`]. A rejected config leaves nothing behind.
    LoadConfig {
        generation: u64,
    },
    /// Start a worker: a fork+exec (lazy) or a fork request to the generation's
    /// template (preload; the state machine asks only once the template is ready).
    Spawn {
        slot: usize,
        generation: u64,
    },
    /// Start the app template of a preloaded generation; answered with
    /// [`Event::TemplateSpawned`] or [`Event::TemplateExited`].
    SpawnTemplate {
        generation: u64,
    },
    /// Signal the worker's process group (the worker and anything it spawned).
    Signal {
        pid: i32,
        signal: WorkerSignal,
    },
    /// The generation now serves: it becomes the config `status` and respawns use.
    Activate {
        generation: u64,
    },
    /// No worker of this generation will be spawned again: its resources
    /// (config, sockets it alone used) may be released once its workers are gone.
    Release {
        generation: u64,
    },
    /// Read the scoreboards for the workers in a request (harakiri, cheaper);
    /// answered with [`Event::BusyWorkers`].
    CheckHarakiri,
    /// Read every worker's /proc/PID/statm; answered with [`Event::WorkerMemory`].
    CheckMemory,
    ReplyReload {
        requests: Vec<RequestId>,
        outcome: ReloadOutcome,
    },
    ReplyStatus {
        request: RequestId,
    },
    Notify(Lifecycle),
    /// Stop listening: close the master's socket copies and vacuum them.
    CloseListeners,
    LogStats,
    ReopenLogs,
    /// Wait for the zombie children nobody owns (see `crate::reaper`).
    ReapOrphans,
    Exit(i32),
}

/// What the master sends a worker, in the contract's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerSignal {
    /// Finish the current request, then exit.
    Graceful,
    /// Exit at once.
    Now,
    /// SIGKILL.
    Kill,
    /// To the worker's pid only: log the stuck request's stack, answer 504
    /// ([`crate::worker::contract::SIGNAL_HARAKIRI_DUMP`]).
    HarakiriDump,
    /// `harakiri-graceful-signal`, to the worker's pid only.
    HarakiriGraceful(i32),
}
