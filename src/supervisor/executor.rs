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

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::events::*;
use super::generations::{plan_of, Generations};
use super::inbox::{ControlRequest, Inbox, Input};
use super::state::Supervisor;
use super::status::{self, MasterFacts, ReloadReport, Status};
use super::templates::Templates;
use super::workers::{
    rss_bytes, signal_group, watch_template, watch_worker, Pidfd, Process, Workers,
};
use crate::around::{hooks, Around};
use crate::config::around::HookPhase;
use crate::config::{Config, LoadOptions};
use crate::logs::LogSink;
use crate::pidfile::Pidfile;
use crate::router::{self, supervise::RouterHandle};
use crate::runtime::sleep_until;
use crate::scoreboard::monotonic_now;
use crate::socket::{self, Listener};
use crate::worker::spawn::{self, ListenerFd, Role, SharedFds};
use crate::{systemd, watch};

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

struct Master {
    sup: Supervisor,
    inbox: Inbox,
    local: VecDeque<Event>,
    ini: PathBuf,
    load_options: LoadOptions,
    base_env: Vec<(OsString, OsString)>,
    generations: Generations,
    workers: Workers,
    templates: Templates,
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
    metrics: Option<crate::metrics::server::MetricsServer>,
    watcher: Option<watch::Watcher>,
    next_request: RequestId,
    reload_replies: HashMap<RequestId, oneshot::Sender<ReloadReport>>,
    status_replies: HashMap<RequestId, oneshot::Sender<Status>>,
    started: SystemTime,
    last_reload_at: Option<SystemTime>,
    /// Daemons and cron jobs (`crate::around`), and the generation they follow.
    around: Around,
    around_generation: u64,
    /// The `http` router (`router::supervise`), matched to the serving generation.
    router: Option<RouterHandle>,
    router_stopping: Option<tokio::task::JoinHandle<()>>,
    /// The generation whose config a thread is reading; cleared at stop, so a
    /// read that finishes during the stop binds nothing.
    reading: Option<u64>,
    /// Stopping with an `http` router: until it has drained, the workers keep
    /// serving (the requests it accepted still need them). Their graceful stop
    /// signals and the closing of the sockets wait here.
    draining: Option<Vec<i32>>,
}

/// Runs the master until it stops; returns the process exit code.
pub async fn run(setup: MasterSetup) -> i32 {
    match Master::new(setup) {
        Ok((master, _, Some(_fatal))) => master.shutdown(1),
        Ok((master, rx, None)) => master.run(rx).await,
        Err(e) => {
            error!(error = %e, "could not start the master");
            1
        }
    }
}

impl Master {
    /// The master, its inbox, and a fatal start-up error (a master hook, the
    /// master fifo) after which it only cleans up.
    #[allow(clippy::type_complexity)]
    fn new(
        setup: MasterSetup,
    ) -> std::io::Result<(Master, mpsc::UnboundedReceiver<Input>, Option<String>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        // Workers a template forks are re-parented to us when the template's
        // intermediate child exits, so we reap them and get their exit status.
        // SAFETY: prctl on our own process, no pointers.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let crate::logs::LogPipe {
            read: log_read,
            write: log_write,
        } = crate::logs::log_pipe()?;
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
        let metrics = match &setup.config.prometheus {
            Some(addr) => match crate::metrics::server::spawn_server(
                addr,
                setup.config.prometheus_public,
                tx.clone(),
            ) {
                Ok(server) => Some(server),
                Err(e) => {
                    error!(error = %e, "cannot start the metrics endpoint");
                    None
                }
            },
            None => None,
        };
        let config = Arc::new(setup.config);
        let plan = plan_of(&config);
        let watcher = match watch::Watcher::new(tx.clone(), &config.watch_paths) {
            Ok(mut w) => {
                w.set_entry_dirs(&config.watch_dirs);
                Some(w)
            }
            Err(e) => {
                warn!(error = %e, "cannot watch the config files; reload with SIGHUP or `amy-emperor reload`");
                None
            }
        };
        let around = Around::new(
            config.clone(),
            setup.base_env.clone(),
            log_write.try_clone()?,
            tx.clone(),
        );
        let generations = Generations::first(config.clone(), setup.listeners, setup.http_listener);
        let starting = plan.initial_workers();
        let (sup, actions) = Supervisor::start(plan, Instant::now());
        let mut master = Master {
            sup,
            inbox: tx,
            local: VecDeque::new(),
            ini: setup.ini,
            load_options: setup.load_options,
            base_env: setup.base_env,
            generations,
            workers: Workers::default(),
            templates: Templates::default(),
            log_write,
            alive_read,
            _alive_write: alive_write,
            source,
            sink: setup.sink,
            pidfile: setup.pidfile,
            ready_pipe: setup.ready_pipe,
            control_path,
            stats,
            metrics,
            watcher,
            next_request: 1,
            reload_replies: HashMap::new(),
            status_replies: HashMap::new(),
            started: SystemTime::now(),
            last_reload_at: None,
            around,
            around_generation: 1,
            router: None,
            router_stopping: None,
            reading: None,
            draining: None,
        };
        // With `cheaper`, `workers` is how many start (of `processes`).
        info!(pid = std::process::id(), workers = starting, processes = config.processes, ini = %master.ini.display(), "master started");
        if let Err(why) = master.begin_around(&config) {
            error!(reason = %why, "fatal: destroying the instance");
            return Ok((master, rx, Some(why)));
        }
        // As in uWSGI, the router runs from the start: a client connecting before
        // the workers are ready waits in the worker socket's backlog.
        master.sync_router(1);
        for action in actions {
            master.execute(action);
        }
        Ok((master, rx, None))
    }

    /// Master hooks, the master fifo, daemons and cron: after the privilege drop,
    /// before the first worker (uWSGI runs `hook-master-start` as its loop begins).
    fn begin_around(&mut self, config: &Config) -> Result<(), String> {
        let hook_env = crate::around::process::environment(&self.base_env, config);
        for phase in [HookPhase::AsUser, HookPhase::MasterStart] {
            hooks::run_master_phase(config, phase, &hook_env, Some(&self.log_write))?;
        }
        for (i, path) in config.around.master_fifo.iter().enumerate() {
            // uWSGI reads only the first (slot 0) until `1`..`9` switch slots.
            if i > 0 {
                warn!(path = %path.display(), "only the first master-fifo is read");
                continue;
            }
            let fd = crate::fifo::create(path).map_err(|e| e.to_string())?;
            crate::fifo::spawn_source(fd, path.clone(), self.inbox.clone())
                .map_err(|e| format!("master-fifo {}: {e}", path.display()))?;
        }
        self.around.begin();
        Ok(())
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) -> i32 {
        loop {
            while let Some(event) = self.local.pop_front() {
                let actions = self.sup.handle(event, Instant::now());
                for action in actions {
                    if let Action::Exit(code) = action {
                        self.finish_around(&mut rx).await;
                        self.stop_router().await;
                        return self.shutdown(code);
                    }
                    self.execute(action);
                }
            }
            let sup_deadline = self.sup.next_deadline();
            let deadline = [sup_deadline, self.around.deadline()]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                input = rx.recv() => match input {
                    Some(Input::Event(event)) => {
                        match &event {
                            Event::WorkerExited { pid, .. } => self.workers.remove(*pid),
                            Event::TemplateExited { generation, pid, .. } => {
                                for id in self.templates.remove(*generation, *pid) {
                                    self.local.push_back(Event::SpawnFailed {
                                        slot: id - 1,
                                        generation: *generation,
                                        reason: "the app template died before forking it".into(),
                                    });
                                }
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
                    Some(Input::Forked { generation, id, result }) => {
                        self.forked(generation, id, result)
                    }
                    Some(Input::RouterStopped) => self.router_drained(),
                    Some(Input::ConfigRead { generation, result }) => {
                        if self.reading == Some(generation) {
                            self.reading = None;
                            let result = result
                                .and_then(|loaded| self.generations.prepare(generation, *loaded));
                            self.local
                                .push_back(Event::ConfigLoaded { generation, result });
                        }
                    }
                    Some(Input::Control(request)) => {
                        let id = self.next_request;
                        self.next_request += 1;
                        match request {
                            ControlRequest::Status(reply) => {
                                self.status_replies.insert(id, reply);
                                self.local.push_back(Event::StatusRequested(id));
                            }
                            ControlRequest::Reload(reply) => {
                                self.reload_replies.insert(id, reply);
                                self.local.push_back(Event::ReloadRequested(id));
                            }
                            // A read of shared memory and the state machine's
                            // counters: no decision, so answered here at once.
                            ControlRequest::Metrics(reply) => {
                                let _ = reply.send(self.metrics_text());
                            }
                        }
                    }
                    Some(Input::Around(exit)) => {
                        self.around.exited(exit);
                        if self.around.take_stop_request() {
                            self.local.push_back(Event::Signal(MasterSignal::Term));
                        }
                    }
                    None => return self.shutdown(1),
                },
                _ = sleep_until(deadline) => {
                    let now = Instant::now();
                    self.around.tick(now);
                    if sup_deadline.is_some_and(|t| now >= t) {
                        self.local.push_back(Event::Tick);
                    }
                }
            }
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::LoadConfig { generation } => {
                // Off the loop: the master keeps answering signals, status and
                // worker exits while the ini is read; the result comes back
                // as [`Input::ConfigRead`]. (A stop meanwhile drops it.)
                self.reading = Some(generation);
                let ini = self.ini.clone();
                let options = self.load_options.clone();
                let inbox = self.inbox.clone();
                let spawned = std::thread::Builder::new()
                    .name("config-load".into())
                    .spawn(move || {
                        let result = Generations::read(&ini, &options).map(Box::new);
                        let _ = inbox.send(Input::ConfigRead { generation, result });
                    });
                if let Err(e) = spawned {
                    let result = Err(format!("cannot start reading the config: {e}"));
                    self.local
                        .push_back(Event::ConfigLoaded { generation, result });
                }
            }
            Action::Spawn { slot, generation } => self.spawn(slot, generation),
            Action::SpawnTemplate { generation } => self.spawn_template(generation),
            Action::Signal { pid, signal } => {
                // Sent once per harakiri the state machine rules.
                if signal == WorkerSignal::HarakiriDump {
                    self.workers.count_harakiri(pid);
                }
                match (&mut self.draining, signal) {
                    (Some(held), WorkerSignal::Graceful) => held.push(pid),
                    // A fast stop (or its escalation, or the mercy's end) waits
                    // for nothing. (A template's kill is not a worker's.)
                    (Some(_), WorkerSignal::Now | WorkerSignal::Kill)
                        if self.workers.contains(pid) =>
                    {
                        self.router_drained();
                        signal_group(pid, signal)
                    }
                    _ => signal_group(pid, signal),
                }
            }
            Action::Activate { generation } => {
                self.last_reload_at = Some(SystemTime::now());
                if let Some(config) = self.generations.activate(generation) {
                    if generation != self.around_generation {
                        self.around_generation = generation;
                        self.around.reconfigure(config.clone());
                    }
                    let paths = config.watch_paths.clone();
                    if config.log_reopen {
                        if let Err(e) = self.sink.reopen() {
                            warn!(error = %e, "cannot reopen the log");
                        }
                    }
                    if let Some(w) = self.watcher.as_mut() {
                        w.set_paths(&paths);
                        w.set_entry_dirs(&config.watch_dirs);
                    }
                }
                self.sync_router(generation);
            }
            Action::Release { generation } => self.generations.release(generation),
            Action::CheckHarakiri => {
                let busy = self.workers.busy(monotonic_now());
                self.local.push_back(Event::BusyWorkers(busy));
            }
            Action::CheckMemory => {
                let readings = self.workers.memory();
                self.local.push_back(Event::WorkerMemory(readings));
            }
            Action::ReplyReload { requests, outcome } => {
                if let ReloadOutcome::Rejected { .. } | ReloadOutcome::Failed { .. } = outcome {
                    self.last_reload_at = Some(SystemTime::now());
                }
                let report = ReloadReport::from(&outcome);
                for id in requests {
                    if let Some(reply) = self.reload_replies.remove(&id) {
                        let _ = reply.send(report.clone());
                    }
                }
            }
            Action::ReplyStatus { request } => {
                let status = self.status();
                if let Some(reply) = self.status_replies.remove(&request) {
                    let _ = reply.send(status);
                }
            }
            Action::Notify(state) => {
                if state == Lifecycle::Stopping {
                    self.around.stop();
                }
                self.notify(state)
            }
            Action::CloseListeners => {
                // Stopping: the router stops accepting first and forwards what
                // it has accepted; the workers (and their sockets, which it
                // connects to) stay until it has drained.
                self.watcher = None;
                self.reading = None;
                match self.router.take() {
                    Some(router) => {
                        let inbox = self.inbox.clone();
                        self.router_stopping = Some(tokio::spawn(async move {
                            router.stop(true).await;
                            let _ = inbox.send(Input::RouterStopped);
                        }));
                        self.draining = Some(Vec::new());
                    }
                    None => self.generations.close_listeners(),
                }
            }
            Action::LogStats => self.log_stats(),
            Action::ReapOrphans => {
                crate::reaper::reap_orphans();
            }
            Action::ReopenLogs => match self.sink.reopen() {
                Ok(()) => info!("log reopened"),
                Err(e) => warn!(error = %e, "cannot reopen the log"),
            },
            Action::Exit(_) => unreachable!("handled by the loop"),
        }
    }

    /// Starts, updates or stops the router to match the serving generation.
    fn sync_router(&mut self, generation: u64) {
        let Some(g) = self.generations.get(generation) else {
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

    /// The router has drained (or a fast stop will not wait for it): the
    /// workers get the stop signals held for them, the sockets close.
    fn router_drained(&mut self) {
        if let Some(held) = self.draining.take() {
            info!(
                workers = held.len(),
                "http router drained; stopping the workers"
            );
            for pid in held {
                signal_group(pid, WorkerSignal::Graceful);
            }
            self.generations.close_listeners();
        }
    }

    /// Waits for the router to exit (asked at CloseListeners, or now at once).
    async fn stop_router(&mut self) {
        if let Some(router) = self.router.take() {
            router.stop(false).await;
        }
        if let Some(stopping) = self.router_stopping.take() {
            let _ = stopping.await;
        }
    }

    fn spawn(&mut self, slot: usize, generation: u64) {
        let Some(g) = self.generations.get(generation) else {
            self.local.push_back(Event::SpawnFailed {
                slot,
                generation,
                reason: "generation released".into(),
            });
            return;
        };
        if !g.config.lazy_apps {
            // Preload: the template forks it; the answer comes as Input::Forked.
            if let Err(reason) = self.templates.request_fork(generation, slot + 1) {
                error!(worker = slot + 1, generation, %reason, "cannot fork worker");
                self.local.push_back(Event::SpawnFailed {
                    slot,
                    generation,
                    reason,
                });
            }
            return;
        }
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
            Role::Worker { id: slot + 1 },
            generation,
            &shared,
            &listeners,
        ) {
            Ok(spawned) => {
                let pid = spawned.child.id().map(|p| p as i32).unwrap_or(0);
                info!(worker = slot + 1, pid, generation, "worker spawned");
                if let Some(scoreboard) = spawned.scoreboard {
                    let names = g.listeners.iter().map(|l| l.local_address()).collect();
                    self.workers.insert(pid, slot, scoreboard, names);
                }
                watch_worker(
                    pid,
                    Process::Spawned(spawned.child),
                    spawned.control,
                    self.inbox.clone(),
                );
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

    /// A template answered a fork request: register the worker (we are its
    /// parent now) and tell the state machine.
    fn forked(&mut self, generation: u64, id: usize, result: Result<i32, String>) {
        let slot = id.saturating_sub(1);
        let Some(request) = self.templates.answered(generation, id) else {
            if let Ok(pid) = result {
                // Not asked for (or its template was replaced): not ours to keep.
                warn!(
                    pid,
                    generation, "unexpected worker from the app template, killing it"
                );
                signal_group(pid, WorkerSignal::Kill);
            }
            return;
        };
        let pid = match result {
            Ok(pid) if pid > 1 => pid,
            Ok(pid) => {
                self.fork_failed(
                    slot,
                    generation,
                    format!("the app template answered pid {pid}"),
                );
                return;
            }
            Err(reason) => {
                self.fork_failed(slot, generation, reason);
                return;
            }
        };
        // Re-parented to us already: ours to wait for, not an orphan to reap.
        crate::reaper::adopt(pid);
        let pidfd = match Pidfd::open(pid) {
            Ok(p) => p,
            Err(e) => {
                signal_group(pid, WorkerSignal::Kill);
                self.fork_failed(slot, generation, format!("pidfd_open({pid}): {e}"));
                return;
            }
        };
        info!(worker = id, pid, generation, "worker forked");
        let names = self
            .generations
            .get(generation)
            .map(|g| g.listeners.iter().map(|l| l.local_address()).collect())
            .unwrap_or_default();
        self.workers.insert(pid, slot, request.scoreboard, names);
        watch_worker(
            pid,
            Process::Forked(pidfd),
            request.control,
            self.inbox.clone(),
        );
        self.local.push_back(Event::Spawned {
            slot,
            generation,
            pid,
        });
    }

    fn fork_failed(&mut self, slot: usize, generation: u64, reason: String) {
        error!(worker = slot + 1, generation, %reason, "the app template could not fork a worker");
        self.local.push_back(Event::SpawnFailed {
            slot,
            generation,
            reason,
        });
    }

    fn spawn_template(&mut self, generation: u64) {
        let Some(g) = self.generations.get(generation) else {
            self.local.push_back(Event::TemplateExited {
                generation,
                pid: 0,
                reason: crate::worker::contract::ExitReason::Crashed(-1),
                detail: Some("generation released".into()),
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
        let spawned = spawn::spawn(
            &g.config,
            &self.base_env,
            Role::Template,
            generation,
            &shared,
            &listeners,
        )
        .and_then(|s| {
            let reader = s.control.try_clone()?;
            Ok((s, reader))
        });
        match spawned {
            Ok((spawned, reader)) => {
                let pid = spawned.child.id().map(|p| p as i32).unwrap_or(0);
                self.templates.insert(generation, pid, spawned.control);
                watch_template(generation, pid, spawned.child, reader, self.inbox.clone());
                self.local
                    .push_back(Event::TemplateSpawned { generation, pid });
            }
            Err(e) => {
                let python = spawn::python_for(&g.config);
                let reason = format!("{}: {e}", python.display());
                error!(generation, %reason, "cannot spawn the app template");
                self.local.push_back(Event::TemplateExited {
                    generation,
                    pid: 0,
                    reason: crate::worker::contract::ExitReason::Crashed(-1),
                    detail: Some(reason),
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

    fn status(&self) -> Status {
        let snap = self.sup.snapshot();
        let master = MasterFacts {
            ini: self.ini.clone(),
            pid: std::process::id(),
            uptime: self.started.elapsed().unwrap_or_default(),
            sockets: self.generations.sockets(),
            master_rss_bytes: rss_bytes(std::process::id() as i32),
            last_reload_at: self.last_reload_at,
            template_rss: snap
                .templates
                .iter()
                .filter_map(|t| t.pid)
                .map(|pid| (pid, rss_bytes(pid)))
                .collect(),
        };
        let mut status = status::build(
            &snap,
            master,
            |pid| self.workers.facts(pid),
            monotonic_now(),
            Instant::now(),
            SystemTime::now(),
        );
        status.daemons = self.around.daemon_status();
        status.crons = self.around.cron_status();
        status
    }

    /// Before the master exits: its daemons get their stop signal (if the stop
    /// did not already send it), then SIGKILL after `reload-mercy`; cron jobs
    /// still running are killed.
    async fn finish_around(&mut self, rx: &mut mpsc::UnboundedReceiver<Input>) {
        self.around.stop();
        while !self.around.stopped() {
            let deadline = self.around.deadline();
            tokio::select! {
                input = rx.recv() => match input {
                    Some(Input::Around(exit)) => self.around.exited(exit),
                    Some(_) => {}
                    None => break,
                },
                _ = sleep_until(deadline) => self.around.tick(Instant::now()),
            }
        }
        self.around.kill_rest();
    }

    fn metrics_text(&self) -> String {
        let snapshot = self.sup.snapshot();
        let (totals, in_flight, busy) = self.workers.totals();
        let busy_workers = snapshot
            .workers
            .iter()
            .filter(|w| w.state == super::state::WorkerState::Ready && busy.contains(&w.pid))
            .count();
        let config = self.generations.current_config();
        let scrape = crate::metrics::Scrape {
            snapshot: &snapshot,
            totals,
            in_flight,
            busy_workers,
            listeners: self.generations.listener_infos(),
            master_rss_bytes: rss_bytes(std::process::id() as i32),
            uptime_seconds: self.started.elapsed().unwrap_or_default().as_secs_f64(),
            log_slow_seconds: config
                .and_then(|c| (c.log_slow_ms > 0).then(|| c.log_slow_ms as f64 / 1000.0)),
            harakiri_seconds: config.and_then(|c| c.harakiri.map(|h| h.as_secs_f64())),
            daemons: self.around.daemon_status(),
            crons: self.around.cron_status(),
        };
        crate::metrics::render(&scrape)
    }

    /// SIGUSR1: the status document, one line per worker.
    fn log_stats(&self) {
        let status = self.status();
        info!(
            generation = status.generation,
            workers = status.workers.len(),
            "stats"
        );
        for w in &status.workers {
            info!(
                worker = w.id,
                pid = w.pid,
                state = w.state.as_str(),
                requests = w.requests,
                rss_bytes = w.rss_bytes,
                "worker stats"
            );
        }
    }

    fn shutdown(mut self, code: i32) -> i32 {
        self.generations.close_listeners();
        // The workers are gone; what they spawned and left running goes too.
        crate::leftovers::stop_all(std::time::Duration::from_secs(2));
        if let Some(path) = &self.control_path {
            let _ = std::fs::remove_file(path);
        }
        if let Some(stats) = self.stats.take() {
            stats.vacuum();
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.vacuum();
        }
        if let Some(p) = self.pidfile.take() {
            p.remove_if_ours();
        }
        info!(code, "master exiting");
        code
    }
}

fn monotonic_usec() -> u64 {
    (monotonic_now() * 1e6) as u64
}
