//! The executor: owns the master's resources (configs, sockets, worker processes,
//! scoreboards, the log sink, the pidfile) and carries out what the state machine
//! decides. Sources (signals, the watcher, the control socket, one task per worker)
//! send [`Input`]s into one channel; this loop is their only reader.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::events::*;
use super::state::{Phase, Snapshot, Supervisor, WorkerState};
use crate::config::{self, Config, LoadOptions};
use crate::logs::LogSink;
use crate::pidfile::Pidfile;
use crate::router::{self, supervise::RouterHandle};
use crate::scoreboard::{monotonic_now, Scoreboard};
use crate::socket::{self, Listener};
use crate::worker::contract::{ExitReason, MSG_FAILED, MSG_READY};
use crate::worker::spawn::{self, ListenerFd, SharedFds};
use crate::{systemd, watch};

/// What the sources send to the master loop.
pub enum Input {
    Event(Event),
    /// A control-socket client waits for the answer on `reply`.
    Control {
        command: ControlCommand,
        reply: oneshot::Sender<Value>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlCommand {
    Status,
    Reload,
}

pub type Inbox = mpsc::UnboundedSender<Input>;

/// Everything `start` prepared before the loop runs.
pub struct MasterSetup {
    pub ini: PathBuf,
    pub load_options: LoadOptions,
    pub config: Config,
    pub listeners: Vec<Listener>,
    pub sink: Arc<LogSink>,
    pub pidfile: Option<Pidfile>,
    /// The environment workers start from (the master's, minus NOTIFY_SOCKET).
    pub base_env: Vec<(OsString, OsString)>,
    /// Written once when the first generation is ready (a daemonizing parent waits on it).
    pub ready_pipe: Option<OwnedFd>,
    /// The control socket, already bound.
    pub control: Option<(std::os::unix::net::UnixListener, PathBuf)>,
    /// `http = ADDR`: the router's public listener, already bound.
    pub http_listener: Option<Listener>,
}

/// One generation's config and the sockets its workers inherit.
struct Generation {
    config: Arc<Config>,
    listeners: Vec<Arc<Listener>>,
    /// The router's public listener (`http`), kept across reloads when unchanged.
    http_listener: Option<Arc<Listener>>,
}

struct WorkerHandle {
    scoreboard: Scoreboard,
    /// How many workers this slot has had, this one included (uWSGI's `respawn_count`).
    spawns: u64,
}

struct Master {
    sup: Supervisor,
    inbox: Inbox,
    local: VecDeque<Event>,
    ini: PathBuf,
    load_options: LoadOptions,
    base_env: Vec<(OsString, OsString)>,
    current: u64,
    generations: HashMap<u64, Generation>,
    /// Every socket the master holds, shared by the generations that use it.
    open: Vec<Arc<Listener>>,
    vacuum: bool,
    workers: HashMap<i32, WorkerHandle>,
    /// Workers started per slot over the master's life, for `respawn_count`.
    spawns_per_slot: HashMap<usize, u64>,
    log_write: OwnedFd,
    alive_read: OwnedFd,
    /// Held, never written: its closing (our death) tells workers to leave.
    _alive_write: OwnedFd,
    source: OwnedFd,
    sink: Arc<LogSink>,
    pidfile: Option<Pidfile>,
    ready_pipe: Option<OwnedFd>,
    control_path: Option<PathBuf>,
    /// Kept so its unix socket can be vacuumed at exit.
    stats: Option<crate::stats::StatsServer>,
    watcher: Option<watch::Watcher>,
    next_request: RequestId,
    reload_replies: HashMap<RequestId, oneshot::Sender<Value>>,
    status_replies: HashMap<RequestId, oneshot::Sender<Value>>,
    started: SystemTime,
    last_reload_at: Option<SystemTime>,
    /// The `http` router, started when a generation using it becomes active.
    router: Option<RouterHandle>,
    router_stopping: Option<tokio::task::JoinHandle<()>>,
}

/// Runs the master until it stops; returns the process exit code.
pub async fn run(setup: MasterSetup) -> i32 {
    match Master::new(setup) {
        Ok((master, rx)) => master.run(rx).await,
        Err(e) => {
            error!(error = %e, "could not start the master");
            1
        }
    }
}

impl Master {
    fn new(setup: MasterSetup) -> std::io::Result<(Master, mpsc::UnboundedReceiver<Input>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (log_read, log_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        crate::logs::spawn_pump(log_read, setup.sink.clone());
        let (alive_read, alive_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let source = spawn::source_memfd()?;
        crate::signals::spawn_sources(tx.clone())?;
        let control_path = setup.control.as_ref().map(|(_, p)| p.clone());
        if let Some((listener, _)) = setup.control {
            crate::control::spawn_server(listener, tx.clone())?;
        }
        let stats = match &setup.config.stats {
            Some(addr) => match crate::stats::spawn_server(addr, tx.clone()) {
                Ok(server) => Some(server),
                Err(e) => {
                    warn!(error = %e, "cannot start the stats server");
                    None
                }
            },
            None => None,
        };
        let open: Vec<Arc<Listener>> = setup.listeners.into_iter().map(Arc::new).collect();
        let config = Arc::new(setup.config);
        let plan = plan_of(&config);
        let watcher = match watch::Watcher::new(tx.clone(), &config.watch_paths) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch the config files; reload with SIGHUP or `amy-emperor reload`");
                None
            }
        };
        let mut generations = HashMap::new();
        generations.insert(
            1,
            Generation {
                config: config.clone(),
                listeners: open.clone(),
                http_listener: setup.http_listener.map(Arc::new),
            },
        );
        let (sup, actions) = Supervisor::start(plan, Instant::now());
        let mut master = Master {
            sup,
            inbox: tx,
            local: VecDeque::new(),
            ini: setup.ini,
            load_options: setup.load_options,
            base_env: setup.base_env,
            current: 1,
            generations,
            open,
            vacuum: config.vacuum,
            workers: HashMap::new(),
            spawns_per_slot: HashMap::new(),
            log_write,
            alive_read,
            _alive_write: alive_write,
            source,
            sink: setup.sink,
            pidfile: setup.pidfile,
            ready_pipe: setup.ready_pipe,
            control_path,
            stats,
            watcher,
            next_request: 1,
            reload_replies: HashMap::new(),
            status_replies: HashMap::new(),
            started: SystemTime::now(),
            last_reload_at: None,
            router: None,
            router_stopping: None,
        };
        info!(pid = std::process::id(), workers = config.processes, ini = %master.ini.display(), "master started");
        // As in uWSGI, the router runs from the start: a client connecting before
        // the workers are ready waits in the worker socket's backlog.
        master.sync_router(1);
        for action in actions {
            master.execute(action);
        }
        Ok((master, rx))
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) -> i32 {
        loop {
            while let Some(event) = self.local.pop_front() {
                let actions = self.sup.handle(event, Instant::now());
                for action in actions {
                    if let Action::Exit(code) = action {
                        self.stop_router().await;
                        return self.shutdown(code);
                    }
                    self.execute(action);
                }
            }
            let deadline = self.sup.next_deadline();
            tokio::select! {
                input = rx.recv() => match input {
                    Some(Input::Event(event)) => {
                        match &event {
                            Event::WorkerExited { pid, .. } => {
                                self.workers.remove(pid);
                            }
                            Event::FilesChanged { .. } => {
                                if let Some(w) = self.watcher.as_mut() {
                                    w.refresh();
                                }
                            }
                            _ => {}
                        }
                        self.local.push_back(event);
                    }
                    Some(Input::Control { command, reply }) => {
                        let id = self.next_request;
                        self.next_request += 1;
                        match command {
                            ControlCommand::Status => {
                                self.status_replies.insert(id, reply);
                                self.local.push_back(Event::StatusRequested(id));
                            }
                            ControlCommand::Reload => {
                                self.reload_replies.insert(id, reply);
                                self.local.push_back(Event::ReloadRequested(id));
                            }
                        }
                    }
                    None => return self.shutdown(1),
                },
                _ = sleep_until(deadline) => self.local.push_back(Event::Tick),
            }
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::LoadConfig { generation } => {
                let result = self.load_generation(generation);
                self.local
                    .push_back(Event::ConfigLoaded { generation, result });
            }
            Action::Spawn { slot, generation } => self.spawn(slot, generation),
            Action::Signal { pid, signal } => signal_group(pid, signal),
            Action::Activate { generation } => {
                self.current = generation;
                self.last_reload_at = Some(SystemTime::now());
                if let Some(g) = self.generations.get(&generation) {
                    let paths = g.config.watch_paths.clone();
                    self.vacuum = g.config.vacuum;
                    if g.config.log_reopen {
                        if let Err(e) = self.sink.reopen() {
                            warn!(error = %e, "cannot reopen the log");
                        }
                    }
                    if let Some(w) = self.watcher.as_mut() {
                        w.set_paths(&paths);
                    }
                }
                self.sync_router(generation);
            }
            Action::Release { generation } => self.release(generation),
            Action::CheckHarakiri => {
                let now = monotonic_now();
                let busy = self
                    .workers
                    .iter()
                    .filter_map(|(pid, w)| {
                        let r = w.scoreboard.read();
                        r.request_age(now).map(|age| BusyWorker {
                            pid: *pid,
                            age,
                            request: r.request,
                        })
                    })
                    .collect();
                self.local.push_back(Event::BusyWorkers(busy));
            }
            Action::ReplyReload { requests, outcome } => {
                if let ReloadOutcome::Rejected { .. } | ReloadOutcome::Failed { .. } = outcome {
                    self.last_reload_at = Some(SystemTime::now());
                }
                let value = outcome_json(&outcome);
                for id in requests {
                    if let Some(reply) = self.reload_replies.remove(&id) {
                        let _ = reply.send(value.clone());
                    }
                }
            }
            Action::ReplyStatus { request } => {
                let value = self.status_json();
                if let Some(reply) = self.status_replies.remove(&request) {
                    let _ = reply.send(value);
                }
            }
            Action::Notify(state) => self.notify(state),
            Action::CloseListeners => {
                // Stopping: the router finishes its requests while the workers do.
                if let Some(router) = self.router.take() {
                    self.router_stopping = Some(tokio::spawn(router.stop(true)));
                }
                for g in self.generations.values_mut() {
                    g.http_listener = None;
                    g.listeners.clear();
                }
                for l in self.open.drain(..) {
                    if self.vacuum {
                        socket::vacuum(&l);
                    }
                }
                self.watcher = None;
            }
            Action::LogStats => self.log_stats(),
            Action::ReopenLogs => match self.sink.reopen() {
                Ok(()) => info!("log reopened"),
                Err(e) => warn!(error = %e, "cannot reopen the log"),
            },
            Action::Exit(_) => unreachable!("handled by the loop"),
        }
    }

    /// Reads the config for a reload and prepares its sockets. Sockets whose
    /// address did not change are kept (same inode, nothing refused).
    fn load_generation(&mut self, generation: u64) -> Result<GenerationPlan, String> {
        let loaded = config::load(&self.ini, &self.load_options).map_err(|e| e.to_string())?;
        for w in &loaded.warnings {
            warn!(warning = %w, "config");
        }
        let config = loaded.config;
        if let Some(current) = self.generations.get(&self.current) {
            for (key, changed) in restart_only_changes(&current.config, &config) {
                if changed {
                    warn!(
                        key,
                        "changed in the config, but applies only after a restart"
                    );
                }
            }
        }
        let mut listeners = Vec::new();
        for spec in &config.sockets {
            let existing = self
                .open
                .iter()
                .find(|l| l.spec.address == spec.address && l.spec.protocol == spec.protocol);
            let listener = match existing {
                Some(l) => l.clone(),
                None => {
                    let options = socket::BindOptions {
                        chmod: config.chmod_socket,
                        chown: config.chown_socket.clone(),
                        backlog: config.listen,
                    };
                    let (l, warnings) = socket::bind(spec, &options).map_err(|e| {
                        format!("{}:{}: {}", config.ini_path.display(), spec.line, e)
                    })?;
                    for w in warnings {
                        warn!(warning = %w, "socket");
                    }
                    info!(address = %socket::describe(&spec.address), protocol = spec.protocol.as_str(), "socket bound for the new generation");
                    let l = Arc::new(l);
                    self.open.push(l.clone());
                    l
                }
            };
            listeners.push(listener);
        }
        let http_listener = self.http_listener_for(&config)?;
        let plan = plan_of(&config);
        self.generations.insert(
            generation,
            Generation {
                config: Arc::new(config),
                listeners,
                http_listener,
            },
        );
        Ok(plan)
    }

    /// The router's public listener for a new generation: the running one if
    /// its address is unchanged (clients notice nothing), else a new bind.
    fn http_listener_for(&self, config: &Config) -> Result<Option<Arc<Listener>>, String> {
        let Some(http) = &config.http else {
            return Ok(None);
        };
        let running = self
            .generations
            .values()
            .filter_map(|g| g.http_listener.as_ref())
            .find(|l| l.spec.address == http.address);
        if let Some(l) = running {
            return Ok(Some(l.clone()));
        }
        let (l, warnings) = bind_http(config)
            .map_err(|e| format!("{}:{}: {}", config.ini_path.display(), http.line, e))?;
        for w in warnings {
            warn!(warning = %w, "socket");
        }
        info!(address = %socket::describe(&http.address), "http router address bound for the new generation");
        Ok(Some(Arc::new(l)))
    }

    /// Starts, updates or stops the router to match the active generation.
    fn sync_router(&mut self, generation: u64) {
        let Some(g) = self.generations.get(&generation) else {
            return;
        };
        let launch = match &g.http_listener {
            Some(public) => router::supervise::launch_for(
                &g.config,
                public.clone(),
                &g.listeners,
                &self.log_write,
                &self.alive_read,
                &self.base_env,
            ),
            None => Ok(None),
        };
        match (launch, self.router.as_mut()) {
            (Ok(Some(launch)), Some(router)) => router.update(launch),
            (Ok(Some(launch)), None) => self.router = Some(RouterHandle::start(launch)),
            (Ok(None), _) => {
                if let Some(router) = self.router.take() {
                    info!("http router no longer configured; stopping it");
                    tokio::spawn(router.stop(true));
                }
            }
            (Err(e), _) => error!(error = %e, "cannot prepare the http router"),
        }
    }

    /// Waits for the router to stop (already asked at CloseListeners, or now).
    async fn stop_router(&mut self) {
        if let Some(router) = self.router.take() {
            router.stop(false).await;
        }
        if let Some(stopping) = self.router_stopping.take() {
            let _ = stopping.await;
        }
    }

    fn release(&mut self, generation: u64) {
        self.generations.remove(&generation);
        let in_use: Vec<Arc<Listener>> = self
            .generations
            .values()
            .flat_map(|g| g.listeners.iter().cloned())
            .collect();
        let vacuum = self.vacuum;
        self.open.retain(|l| {
            let used = in_use.iter().any(|u| Arc::ptr_eq(u, l));
            if !used {
                info!(address = %socket::describe(&l.spec.address), "socket no longer configured, closed");
                if vacuum {
                    socket::vacuum(l);
                }
            }
            used
        });
    }

    fn spawn(&mut self, slot: usize, generation: u64) {
        let Some(g) = self.generations.get(&generation) else {
            self.local.push_back(Event::SpawnFailed {
                slot,
                generation,
                reason: "generation released".into(),
            });
            return;
        };
        let shared = SharedFds {
            log: &self.log_write,
            master_alive: &self.alive_read,
            source: &self.source,
        };
        let listeners: Vec<ListenerFd<'_>> = g
            .listeners
            .iter()
            .map(|l| ListenerFd {
                fd: &l.fd,
                protocol: l.spec.protocol,
                name: socket::describe(&l.spec.address),
            })
            .collect();
        match spawn::spawn(
            &g.config,
            &self.base_env,
            slot + 1,
            generation,
            &shared,
            &listeners,
        ) {
            Ok(spawned) => {
                let pid = spawned.child.id().map(|p| p as i32).unwrap_or(0);
                info!(worker = slot + 1, pid, generation, "worker spawned");
                let spawns = self.spawns_per_slot.entry(slot).or_default();
                *spawns += 1;
                let spawns = *spawns;
                self.workers.insert(
                    pid,
                    WorkerHandle {
                        scoreboard: spawned.scoreboard,
                        spawns,
                    },
                );
                watch_worker(pid, spawned.child, spawned.control, self.inbox.clone());
                self.local.push_back(Event::Spawned {
                    slot,
                    generation,
                    pid,
                });
            }
            Err(e) => {
                let python = spawn::python_for(&g.config);
                let reason = format!("{}: {e}", python.display());
                error!(worker = slot + 1, generation, %reason, "cannot spawn worker");
                self.local.push_back(Event::SpawnFailed {
                    slot,
                    generation,
                    reason,
                });
            }
        }
    }

    fn notify(&mut self, state: Lifecycle) {
        match state {
            Lifecycle::Ready => {
                systemd::notify("READY=1\nSTATUS=serving");
                if let Some(fd) = self.ready_pipe.take() {
                    let _ = nix::unistd::write(&fd, b"1");
                }
            }
            Lifecycle::Reloading => {
                systemd::notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
            }
            Lifecycle::Stopping => systemd::notify("STOPPING=1"),
        }
    }

    fn status_json(&self) -> Value {
        let snap: Snapshot = self.sup.snapshot();
        let now = monotonic_now();
        let workers: Vec<Value> = snap
            .workers
            .iter()
            .map(|w| {
                let reading = self
                    .workers
                    .get(&w.pid)
                    .map(|h| h.scoreboard.read())
                    .unwrap_or_default();
                let age = reading.request_age(now);
                let state = match (&w.state, age) {
                    (WorkerState::Booting, _) => "booting",
                    (WorkerState::Ready, Some(_)) => "busy",
                    (WorkerState::Ready, None) => "idle",
                    (WorkerState::Retiring { .. }, _) => "retiring",
                    (WorkerState::Killed, _) => "killed",
                };
                json!({
                    "id": w.slot + 1,
                    "pid": w.pid,
                    "generation": w.generation,
                    "state": state,
                    "requests": reading.requests,
                    "exceptions": reading.exceptions,
                    "rss_bytes": rss_bytes(w.pid),
                    "request_age_s": age.map(|a| a.as_secs_f64()),
                    // For the stats server (src/stats.rs): uWSGI's tx, running_time, last_spawn.
                    "tx_bytes": reading.tx_bytes,
                    "busy_s": reading.busy_seconds,
                    "respawn_count": self.workers.get(&w.pid).map(|h| h.spawns).unwrap_or(1),
                    "spawned_unix": SystemTime::now().checked_sub(w.spawned_at.elapsed()).and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs()),
                })
            })
            .collect();
        let phase = match snap.phase {
            Phase::Booting => "booting",
            Phase::Running => "running",
            Phase::Stopping { .. } => "stopping",
        };
        json!({
            "running": true,
            "pid": std::process::id(),
            "ini": self.ini,
            "phase": phase,
            "uptime_s": self.started.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0),
            "generation": snap.generation,
            "reloading": snap.reloading,
            "workers": workers,
            // For the stats server (src/stats.rs): uWSGI's sockets[].
            "sockets": self.open.iter().map(|l| json!({"name": l.local_address(), "proto": l.spec.protocol.as_str()})).collect::<Vec<_>>(),
            "master_rss_bytes": rss_bytes(std::process::id() as i32),
            "last_reload": snap.last_reload.as_ref().map(outcome_json),
            "last_reload_unix": self.last_reload_at.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs()),
        })
    }

    fn log_stats(&self) {
        let status = self.status_json();
        info!(
            generation = status["generation"].as_u64(),
            workers = status["workers"].as_array().map(|w| w.len()),
            "stats"
        );
        for w in status["workers"].as_array().into_iter().flatten() {
            info!(
                worker = w["id"].as_u64(),
                pid = w["pid"].as_i64(),
                state = w["state"].as_str(),
                requests = w["requests"].as_u64(),
                rss_bytes = w["rss_bytes"].as_u64(),
                "worker stats"
            );
        }
    }

    fn shutdown(mut self, code: i32) -> i32 {
        for l in self.open.drain(..) {
            if self.vacuum {
                socket::vacuum(&l);
            }
        }
        if let Some(path) = &self.control_path {
            let _ = std::fs::remove_file(path);
        }
        if let Some(stats) = self.stats.take() {
            stats.vacuum();
        }
        if let Some(p) = self.pidfile.take() {
            p.remove_if_ours();
        }
        info!(code, "master exiting");
        code
    }
}

/// Binds the `http` router's public address with the socket options of `config`.
pub fn bind_http(config: &Config) -> Result<(Listener, Vec<String>), socket::SocketError> {
    let http = config
        .http
        .as_ref()
        .expect("bind_http needs an http router");
    let spec = config::SocketSpec {
        address: http.address.clone(),
        protocol: config::Protocol::Http,
        key: "http".into(),
        line: http.line,
    };
    let options = socket::BindOptions {
        chmod: config.chmod_socket,
        chown: config.chown_socket.clone(),
        backlog: config.listen,
    };
    socket::bind(&spec, &options)
}

/// The settings the state machine decides with.
fn plan_of(config: &Config) -> GenerationPlan {
    GenerationPlan {
        processes: config.processes.max(1) as usize,
        mercy: config.worker_reload_mercy,
        harakiri: config.harakiri,
        one_by_one: config.reload_one_by_one,
    }
}

/// Keys a reload cannot apply: they were used before the privilege drop or
/// shape the master process itself.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<(&'static str, bool)> {
    vec![
        ("uid", old.uid != new.uid),
        ("gid", old.gid != new.gid),
        ("pidfile", old.pidfile != new.pidfile),
        ("daemonize", old.daemonize != new.daemonize),
        ("logto", old.logto != new.logto),
        ("log-maxsize", old.log_maxsize != new.log_maxsize),
        (
            "chmod-socket (for sockets kept open)",
            old.chmod_socket != new.chmod_socket,
        ),
        (
            "chown-socket (for sockets kept open)",
            old.chown_socket != new.chown_socket,
        ),
        ("listen (for sockets kept open)", old.listen != new.listen),
    ]
}

fn outcome_json(outcome: &ReloadOutcome) -> Value {
    match outcome {
        ReloadOutcome::Serving { generation } => {
            json!({"result": "serving", "generation": generation})
        }
        ReloadOutcome::Rejected { reason } => json!({"result": "rejected", "reason": reason}),
        ReloadOutcome::Failed { generation, reason } => {
            json!({"result": "failed", "generation": generation, "reason": reason})
        }
        ReloadOutcome::Aborted => json!({"result": "aborted", "reason": "the master is stopping"}),
    }
}

/// Sends `signal` to the worker's process group (the worker is its leader).
fn signal_group(pid: i32, signal: WorkerSignal) {
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
fn watch_worker(pid: i32, mut child: tokio::process::Child, control: OwnedFd, inbox: Inbox) {
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
        let reason = match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                match (s.code(), s.signal()) {
                    (Some(code), _) => ExitReason::from_code(code),
                    (None, Some(sig)) => ExitReason::Signaled(sig),
                    _ => ExitReason::Crashed(-1),
                }
            }
            Err(_) => ExitReason::Crashed(-1),
        };
        let _ = inbox.send(Input::Event(Event::WorkerExited {
            pid,
            reason,
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
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

fn monotonic_usec() -> u64 {
    (monotonic_now() * 1e6) as u64
}
