//! The emperor's executor: owns the directory watcher, the vassal processes, the
//! pidfile, the control and stats sockets, and turns signals, directory changes,
//! child exits and control requests into [`Event`]s for [`Emperor`], carrying
//! out its [`Action`]s.
//!
//! Nothing here waits on a vassal: `status` and `reload` fan out to the vassals'
//! own control sockets from spawned tasks, so a slow or failed reload of one
//! vassal delays neither the loop nor any other vassal.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::signal::unix::SignalKind;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::config::{EmperorConfig, Monitor};
use super::state::{Action, Emperor, Event, Exit, Sig, VassalView};
use crate::config::{self, LoadOptions};
use crate::control;
use crate::logs::LogSink;
use crate::pidfile::Pidfile;
use crate::supervisor::inbox::ControlCommand;

/// What the sources send to the loop.
pub enum Input {
    Event(Event),
    /// Files in a monitored directory were written, created, removed or renamed.
    DirChanged(Vec<PathBuf>),
    /// SIGCHLD while the emperor reaps orphans (PID 1 or `emperor-subreaper`).
    ChildExited,
    /// A control-socket (or stats) client waits for the answer on `reply`.
    Control {
        command: Request,
        reply: oneshot::Sender<Value>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Status,
    Reload,
    /// uWSGI's emperor stats document.
    Stats,
}

pub type Inbox = mpsc::UnboundedSender<Input>;

/// Everything `start` prepared before the loop runs.
pub struct Setup {
    pub config: EmperorConfig,
    /// This binary: each vassal runs `exe [vassal_args] start FILE`.
    pub exe: PathBuf,
    pub vassal_args: Vec<OsString>,
    /// The environment vassals start with (the emperor's, minus NOTIFY_SOCKET).
    pub environment: Vec<(OsString, OsString)>,
    pub pidfile: Option<Pidfile>,
    pub control: Option<(std::os::unix::net::UnixListener, PathBuf)>,
    /// `logto`/`daemonize`: the emperor's log; vassals' output is pumped into it.
    pub sink: Option<Arc<LogSink>>,
    /// Written once after the first scan (a daemonizing parent waits on it).
    pub ready_pipe: Option<OwnedFd>,
}

/// What the executor knows of a vassal beyond the state machine.
struct Spawned {
    /// The vassal master's control socket, from its ini's `pidfile`.
    ctl: Option<PathBuf>,
    uid: u32,
    gid: u32,
    /// Reads the vassal's READY=1 from the notify socket we gave it.
    notify_task: tokio::task::JoinHandle<()>,
}

struct Loop {
    setup: Setup,
    emperor: Emperor,
    inbox: Inbox,
    local: VecDeque<Event>,
    vassals: HashMap<String, Spawned>,
    /// The write end of the pipe the vassals' stdout/stderr go to, when the
    /// emperor has a log file.
    log_write: Option<OwnedFd>,
    started: SystemTime,
    stats: Option<super::stats::Server>,
    control_path: Option<PathBuf>,
    /// Vassal masters not yet reported exited: the orphan reaper leaves them to
    /// their own wait task.
    reaper: bool,
    notify_counter: u64,
    /// Files in another config format that uWSGI would run as vassals, already
    /// warned about (forgotten when they go, so one that comes back is named again).
    other_formats: BTreeSet<PathBuf>,
    /// The vassal directories (and, for a glob with directory wildcards, the
    /// directories leading to them), re-set as directories come and go.
    watcher: crate::watch::Watcher,
    watched: Vec<PathBuf>,
}

pub async fn run(mut setup: Setup) -> i32 {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Handlers first: a SIGTERM during start-up must stop us gracefully, not kill us.
    if let Err(e) = spawn_signal_sources(tx.clone()) {
        error!(error = %e, "cannot install signal handlers");
        return 1;
    }
    let watcher = match watch_dirs(&setup.config.monitors, tx.clone()) {
        Ok(w) => w,
        Err(e) => {
            error!(error = %e, "cannot watch the vassal directories");
            return 1;
        }
    };
    let log_write = match &setup.sink {
        Some(sink) => match crate::logs::log_pipe() {
            Ok(pipe) => {
                crate::logs::spawn_pump(pipe.read, sink.clone());
                Some(pipe.write)
            }
            Err(e) => {
                error!(error = %e, "cannot create the vassal log pipe");
                return 1;
            }
        },
        None => None,
    };
    let control_path = setup.control.as_ref().map(|(_, p)| p.clone());
    if let Some((listener, path)) = setup.control.take() {
        let inbox = tx.clone();
        let forward = move |command: ControlCommand, reply| {
            let command = match command {
                ControlCommand::Status => Request::Status,
                ControlCommand::Reload => Request::Reload,
            };
            inbox.send(Input::Control { command, reply }).is_ok()
        };
        if let Err(e) = control::serve(listener, forward) {
            error!(path = %path.display(), error = %e, "cannot serve the control socket");
            return 1;
        }
    }
    let stats = match &setup.config.stats {
        Some(addr) => match super::stats::spawn_server(addr, tx.clone()) {
            Ok(s) => Some(s),
            Err(e) => {
                error!(address = %addr, error = %e, "cannot start the emperor stats server");
                return 1;
            }
        },
        None => None,
    };
    // As PID 1 (a container) every orphan of the vassals' apps is re-parented
    // to us, and a zombie nobody waits for holds its pid forever.
    let reaper = std::process::id() == 1 || setup.config.subreaper;
    if setup.config.subreaper {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
            error!(error = %std::io::Error::last_os_error(), "cannot become a subreaper");
            return 1;
        }
    }
    if reaper {
        if let Err(e) = spawn_child_source(tx.clone()) {
            error!(error = %e, "cannot watch SIGCHLD");
            return 1;
        }
    }
    let monitors: Vec<String> = setup
        .config
        .monitors
        .iter()
        .map(Monitor::describe)
        .collect();
    info!(monitors = ?monitors, tyrant = setup.config.tyrant, pid = std::process::id(), "emperor started");
    let mut lp = Loop {
        setup,
        emperor: Emperor::new(),
        inbox: tx,
        local: VecDeque::new(),
        vassals: HashMap::new(),
        log_write,
        started: SystemTime::now(),
        stats,
        control_path,
        reaper,
        notify_counter: 0,
        other_formats: BTreeSet::new(),
        watcher,
        watched: Vec::new(),
    };
    // After the watch is set, so that no file created in between is missed.
    lp.rescan(&[]);
    let code = lp.run(&mut rx).await;
    lp.finish();
    info!("emperor stopped");
    code
}

impl Loop {
    /// One warning per vassal file uWSGI would run and we do not (its xml,
    /// yaml and json formats): a site moved over with one must not lose that
    /// vassal silently. Not repeated at every scan.
    fn warn_other_formats(&mut self) {
        let now = other_formats(&self.setup.config.monitors);
        for (path, format) in &now {
            if !self.other_formats.contains(path) {
                warn!(
                    file = %path.display(),
                    format = %format,
                    "vassal file not run: only .ini vassals are read (uWSGI would run this one as a vassal); convert it to an ini"
                );
            }
        }
        self.other_formats = now.into_keys().collect();
    }

    /// Scans the monitors and hands the state machine what is there; first
    /// watches any directory the monitors lead to now, and scans again if there
    /// was one, so that a file created in a new directory before its watch
    /// was set is not missed (bounded: directories may keep coming).
    fn rescan(&mut self, paths: &[PathBuf]) {
        let mut found = scan(&self.setup.config.monitors, paths);
        for _ in 0..4 {
            if found.1 == self.watched {
                break;
            }
            self.watcher.set_entry_dirs(&found.1);
            self.watched = found.1;
            found = scan(&self.setup.config.monitors, paths);
        }
        self.local.push_back(found.0);
        self.warn_other_formats();
    }

    async fn run(&mut self, rx: &mut mpsc::UnboundedReceiver<Input>) -> i32 {
        loop {
            if let Some(code) = self.drain() {
                return code;
            }
            let deadline = self.emperor.next_deadline();
            let input = tokio::select! {
                input = rx.recv() => input,
                () = crate::runtime::sleep_until(deadline) => Some(Input::Event(Event::Tick)),
            };
            match input {
                Some(Input::Event(event)) => {
                    match event {
                        Event::Signal(Sig::Term | Sig::Int) => crate::systemd::notify("STOPPING=1"),
                        Event::Signal(Sig::Usr2) => self.reopen_log(),
                        _ => {}
                    }
                    self.local.push_back(event);
                }
                Some(Input::DirChanged(mut paths)) => {
                    // One rescan for a burst of events (an editor's save is several).
                    let mut others = Vec::new();
                    while let Ok(next) = rx.try_recv() {
                        match next {
                            Input::DirChanged(more) => paths.extend(more),
                            other => others.push(other),
                        }
                    }
                    self.rescan(&paths);
                    for other in others {
                        match other {
                            Input::Event(e) => self.local.push_back(e),
                            Input::Control { command, reply } => self.control(command, reply),
                            Input::ChildExited => {
                                crate::reaper::reap_orphans();
                            }
                            Input::DirChanged(_) => {}
                        }
                    }
                }
                Some(Input::Control { command, reply }) => self.control(command, reply),
                Some(Input::ChildExited) => {
                    crate::reaper::reap_orphans();
                }
                // Every sender lives as long as this loop; unreachable in practice.
                None => return 1,
            }
        }
    }

    /// Feeds queued events to the state machine; `Some(code)` when it says exit.
    fn drain(&mut self) -> Option<i32> {
        while let Some(event) = self.local.pop_front() {
            if let Event::Exited { name, .. } = &event {
                if let Some(s) = self.vassals.get(name) {
                    s.notify_task.abort();
                }
            }
            let mut outcomes = Vec::new();
            for action in self.emperor.handle(event, Instant::now()) {
                if let Action::Exit(code) = action {
                    return Some(code);
                }
                outcomes.extend(self.execute(action));
            }
            // Spawn outcomes go first, in order: the state machine expects them next.
            for outcome in outcomes.into_iter().rev() {
                self.local.push_front(outcome);
            }
        }
        None
    }

    fn finish(&mut self) {
        if let Some(stats) = &self.stats {
            stats.vacuum();
        }
        if let Some(ctl) = &self.control_path {
            let _ = std::fs::remove_file(ctl);
        }
        if let Some(pidfile) = self.setup.pidfile.take() {
            pidfile.remove_if_ours();
        }
    }

    fn reopen_log(&self) {
        if let Some(sink) = &self.setup.sink {
            if let Err(e) = sink.reopen() {
                warn!(error = %e, "cannot reopen the emperor log");
            }
        }
    }

    fn execute(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Spawn(name) => Some(match self.spawn_vassal(&name) {
                Ok(Ok(pid)) => Event::Spawned { name, pid },
                Ok(Err(reason)) => Event::Refused { name, reason },
                Err(e) => Event::SpawnFailed {
                    name,
                    error: e.to_string(),
                },
            }),
            Action::Signal { name, pid, signal } => {
                let sig = match signal {
                    Sig::Hup => nix::sys::signal::Signal::SIGHUP,
                    Sig::Term => nix::sys::signal::Signal::SIGTERM,
                    Sig::Int => nix::sys::signal::Signal::SIGINT,
                    Sig::Usr1 => nix::sys::signal::Signal::SIGUSR1,
                    Sig::Usr2 => nix::sys::signal::Signal::SIGUSR2,
                };
                // Our own child, not yet reaped (its exit is still to be reported), so
                // the pid cannot have been reused.
                if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
                    warn!(vassal = %name, pid, error = %e, "cannot signal vassal");
                }
                None
            }
            Action::KillGroup { name, pid } => {
                if let Err(e) = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                ) {
                    warn!(vassal = %name, pid, error = %e, "cannot kill vassal");
                }
                None
            }
            Action::Ready => {
                info!("emperor ready: every vassal of the first scan serves or has failed");
                if let Some(pipe) = self.setup.ready_pipe.take() {
                    let _ = nix::unistd::write(&pipe, b"1");
                }
                crate::systemd::notify("READY=1");
                None
            }
            Action::Exit(_) => None,
        }
    }

    /// Starts `exe start FILE` and a task that reports its exit. `Ok(Err(reason))`
    /// when tyrant mode refuses the file.
    fn spawn_vassal(&mut self, name: &str) -> std::io::Result<Result<i32, String>> {
        let file = PathBuf::from(name);
        let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        let cfg = &self.setup.config;
        let meta = if cfg.tyrant_nofollow {
            file.symlink_metadata()?
        } else {
            file.metadata()?
        };
        let (uid, gid) = (meta.uid(), meta.gid());
        if cfg.tyrant && (uid == 0 || gid == 0) {
            // uWSGI's tyrant refuses these too: a file anyone with write access to
            // the directory can drop in must not run as root.
            return Ok(Err(format!(
                "[emperor-tyrant] invalid permissions: {name} is owned by uid {uid} gid {gid}; a vassal file must not belong to root"
            )));
        }
        let mut cmd = tokio::process::Command::new(&self.setup.exe);
        cmd.args(&self.setup.vassal_args).arg("start");
        for kv in &cfg.vassal.set {
            cmd.arg("--vassal-set").arg(kv);
        }
        for t in &cfg.vassal.include {
            cmd.arg("--vassal-include").arg(t);
        }
        // As uWSGI does (checked against 2.0.31): relative paths in a vassal's
        // ini are relative to its directory for a directory monitor, and to
        // the emperor's own directory for a glob monitor (which chdir()s back
        // there before each glob(3)).
        let globbed = cfg
            .monitors
            .iter()
            .find(|m| m.covers(&file))
            .is_some_and(|m| m.pattern.is_some());
        if !globbed {
            cmd.current_dir(&dir);
        }
        cmd.arg(&file)
            .env_clear()
            .envs(self.setup.environment.iter().cloned())
            .stdin(Stdio::null())
            // Its own group: a Ctrl-C at the terminal reaches only the emperor, which
            // stops the vassals in order, and the group can be killed as one.
            .process_group(0)
            .kill_on_drop(false);
        if let Some(w) = &self.log_write {
            cmd.stdout(Stdio::from(w.try_clone()?));
            cmd.stderr(Stdio::from(w.try_clone()?));
        }
        if cfg.tyrant {
            // std drops the supplementary groups (setgroups(0)) when root sets a uid.
            cmd.uid(uid).gid(gid);
        }
        // SAFETY: runs in the forked child before exec, after the uid change (which
        // would clear it); prctl is async-signal-safe and touches no memory. The
        // spawning thread is the runtime's only thread, which lives as long as the
        // emperor, so the death signal means the emperor died.
        unsafe {
            cmd.pre_exec(|| {
                // If the emperor is killed outright, vassals stop gracefully rather than
                // linger unsupervised and hold their sockets and pidfiles against the
                // next emperor.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let ctl = self.control_path_of(&file, &dir);
        // The vassal's master tells us it serves the way it would tell systemd.
        self.notify_counter += 1;
        let notify_name = format!("amy-emperor/{}/{}", std::process::id(), self.notify_counter);
        let notify = bind_abstract_datagram(&notify_name)?;
        cmd.env("NOTIFY_SOCKET", format!("@{notify_name}"));
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the vassal exited before we saw its pid"))?
            as i32;
        let notify_task = spawn_notify_reader(notify, self.inbox.clone(), name.to_string(), pid);
        if let Some(old) = self.vassals.insert(
            name.to_string(),
            Spawned {
                ctl,
                uid,
                gid,
                notify_task,
            },
        ) {
            old.notify_task.abort();
        }
        if self.reaper {
            crate::reaper::adopt(pid);
        }
        let inbox = self.inbox.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => match (s.code(), s.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(sig)) => Exit::Signal(sig),
                    (None, None) => Exit::Code(-1),
                },
                Err(e) => {
                    error!(vassal = %name, pid, error = %e, "cannot wait for vassal");
                    Exit::Code(-1)
                }
            };
            let _ = inbox.send(Input::Event(Event::Exited { name, pid, status }));
        });
        Ok(Ok(pid))
    }

    /// Where the vassal's master will answer `status` and `reload`: read the way
    /// the vassal reads its ini (same cwd, environment and emperor extras).
    fn control_path_of(&self, file: &Path, dir: &Path) -> Option<PathBuf> {
        let options = LoadOptions {
            environment: self.setup.environment.clone(),
            cwd: dir.to_path_buf(),
            vassal: self.setup.config.vassal.clone(),
            ..LoadOptions::default()
        };
        let pidfile = config::pidfile_of(file, &options).ok().flatten()?;
        Some(control::path_for(&pidfile))
    }

    fn control(&mut self, command: Request, reply: oneshot::Sender<Value>) {
        let views = self.emperor.view();
        let now = Instant::now();
        match command {
            Request::Stats => {
                let _ = reply.send(self.stats_document(&views));
            }
            Request::Status => {
                let head = self.status_head();
                let targets = self.targets(&views, now);
                tokio::spawn(async move {
                    let vassals = fan_out(targets, "status", Duration::from_secs(5)).await;
                    let mut doc = head;
                    doc["vassals"] = Value::Array(vassals);
                    let _ = reply.send(doc);
                });
            }
            Request::Reload => {
                info!(vassals = views.len(), "reload requested for every vassal");
                // A vassal without a control socket (no pidfile) can only be told.
                for v in &views {
                    if let (Some(pid), "running") = (v.pid, v.state) {
                        if self.vassals.get(&v.name).is_some_and(|s| s.ctl.is_none()) {
                            self.execute(Action::Signal {
                                name: v.name.clone(),
                                pid,
                                signal: Sig::Hup,
                            });
                        }
                    }
                }
                let head = self.status_head();
                let targets = self.targets(&views, now);
                tokio::spawn(async move {
                    let vassals = fan_out(targets, "reload", Duration::from_secs(300)).await;
                    let all_serving = vassals.iter().all(|v| v["result"] == "serving");
                    let mut doc = head;
                    doc["result"] = json!(if all_serving { "serving" } else { "failed" });
                    doc["vassals"] = Value::Array(vassals);
                    let _ = reply.send(doc);
                });
            }
        }
    }

    fn status_head(&self) -> Value {
        let uptime = self.started.elapsed().unwrap_or_default().as_secs_f64();
        json!({
            "role": "emperor",
            "running": true,
            "pid": std::process::id(),
            "uptime_s": uptime,
            "phase": if self.emperor.stopping() { "stopping" } else { "running" },
            "monitors": self.setup.config.monitors.iter().map(Monitor::describe).collect::<Vec<_>>(),
            "tyrant": self.setup.config.tyrant,
        })
    }

    fn targets(&self, views: &[VassalView], now: Instant) -> Vec<Target> {
        views
            .iter()
            .map(|v| {
                let spawned = self.vassals.get(&v.name);
                let mut base = json!({
                    "file": v.name,
                    "state": v.state,
                    "pid": v.pid,
                    "uptime_s": v.running_since.map(|s| now.saturating_duration_since(s).as_secs_f64()),
                    "restarts": v.restarts,
                    "last_exit": v.last_exit.map(describe_exit),
                    "reason": v.reason,
                });
                if let (true, Some(s)) = (self.setup.config.tyrant, spawned) {
                    base["uid"] = json!(s.uid);
                    base["gid"] = json!(s.gid);
                }
                let ctl = match v.state {
                    "running" | "booting" => spawned.and_then(|s| s.ctl.clone()),
                    _ => None,
                };
                Target { base, ctl }
            })
            .collect()
    }

    fn stats_document(&self, views: &[VassalView]) -> Value {
        let cwd = std::env::current_dir().unwrap_or_default();
        let born = |v: &VassalView| {
            v.running_since
                .map(|s| {
                    let age = Instant::now().saturating_duration_since(s);
                    SystemTime::now()
                        .checked_sub(age)
                        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                })
                .unwrap_or(0)
        };
        let vassals: Vec<Value> = views
            .iter()
            .map(|v| {
                let path = Path::new(&v.name);
                let last_mod = std::fs::metadata(path).map(|m| m.mtime()).unwrap_or(0);
                let spawned = self.vassals.get(&v.name);
                let found = self.setup.config.monitors.iter().find(|m| m.covers(path));
                // uWSGI names a glob monitor's vassal by its path (as glob(3)
                // returned it: `a/uwsgi.ini` and `b/uwsgi.ini` are two), a
                // directory monitor's by its file name.
                let id = match found {
                    Some(m) if m.pattern.is_some() => Some(v.name.clone()),
                    _ => path.file_name().map(|n| n.to_string_lossy().into_owned()),
                };
                let monitor = found.map(Monitor::describe);
                json!({
                    "id": id,
                    "pid": v.pid.unwrap_or(0),
                    "born": born(v),
                    "last_mod": last_mod,
                    "last_heartbeat": 0,
                    "loyal": u8::from(v.state == "running"),
                    "ready": u8::from(v.state == "running"),
                    "accepting": u8::from(v.state == "running"),
                    "last_loyal": 0,
                    "last_ready": 0,
                    "last_accepting": 0,
                    "first_run": 0,
                    "last_run": 0,
                    "cursed": 0,
                    "zerg": 0,
                    "on_demand": "",
                    "uid": spawned.map(|s| s.uid).unwrap_or(0),
                    "gid": spawned.map(|s| s.gid).unwrap_or(0),
                    "monitor": monitor,
                    "respawns": v.restarts,
                })
            })
            .collect();
        json!({
            "version": concat!("amy-emperor ", env!("CARGO_PKG_VERSION")),
            "pid": std::process::id(),
            "uid": nix::unistd::getuid().as_raw(),
            "gid": nix::unistd::getgid().as_raw(),
            "cwd": cwd,
            "emperor": self.setup.config.monitors.iter().map(Monitor::describe).collect::<Vec<_>>(),
            "emperor_tyrant": u8::from(self.setup.config.tyrant),
            "throttle_level": 0,
            "vassals": vassals,
            "blacklist": [],
        })
    }
}

/// One vassal's part of a `status` or `reload` answer: what the emperor knows,
/// and the vassal master's control socket to ask for the rest.
struct Target {
    base: Value,
    ctl: Option<PathBuf>,
}

/// Asks every vassal at once (each on a blocking thread with its own timeout)
/// and merges the answers into the emperor's view, in order.
async fn fan_out(targets: Vec<Target>, command: &'static str, timeout: Duration) -> Vec<Value> {
    let handles: Vec<_> = targets
        .into_iter()
        .map(|t| {
            tokio::task::spawn_blocking(move || {
                let mut v = t.base;
                let Some(ctl) = t.ctl else {
                    if command == "reload" {
                        let state = v["state"].as_str().unwrap_or("?").to_string();
                        let (result, reason) = if state == "running" {
                            (
                                "signalled",
                                "no pidfile, so no control socket: sent SIGHUP, outcome unknown"
                                    .to_string(),
                            )
                        } else {
                            ("not running", format!("vassal is {state}"))
                        };
                        v["result"] = json!(result);
                        v["reason"] =
                            json!(v["reason"].as_str().map(str::to_owned).unwrap_or(reason));
                    }
                    return v;
                };
                match control::request(&ctl, command, timeout) {
                    Ok(answer) => merge(&mut v, &answer, command),
                    Err(e) => {
                        v["error"] = json!(e.to_string());
                        if command == "reload" {
                            v["result"] = json!("failed");
                            v["reason"] = json!(e.to_string());
                        }
                    }
                }
                v
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap_or_else(|e| json!({"error": e.to_string()})));
    }
    out
}

/// Copies the vassal master's own figures into its entry.
fn merge(v: &mut Value, answer: &Value, command: &str) {
    if command == "reload" {
        v["result"] = answer["result"].clone();
        v["reason"] = answer["reason"].clone();
        v["generation"] = answer["generation"].clone();
        return;
    }
    for key in ["phase", "generation", "last_reload"] {
        v[key] = answer[key].clone();
    }
    v["workers"] = Value::Array(
        answer["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| {
                json!({
                    "id": w["id"],
                    "pid": w["pid"],
                    "generation": w["generation"],
                    "state": w["state"],
                    "requests": w["requests"],
                })
            })
            .collect(),
    );
}

fn describe_exit(exit: Exit) -> String {
    match exit {
        Exit::Code(c) => format!("exit {c}"),
        Exit::Signal(s) => format!("signal {s}"),
    }
}

fn spawn_signal_sources(inbox: Inbox) -> std::io::Result<()> {
    let table = [
        (SignalKind::hangup(), Sig::Hup),
        (SignalKind::terminate(), Sig::Term),
        (SignalKind::interrupt(), Sig::Int),
        (SignalKind::quit(), Sig::Int),
        (SignalKind::user_defined1(), Sig::Usr1),
        (SignalKind::user_defined2(), Sig::Usr2),
    ];
    crate::signals::forward(&table, move |meaning| {
        inbox.send(Input::Event(Event::Signal(meaning))).is_ok()
    })
}

/// A datagram socket in the abstract namespace (nothing on disk to clean up).
fn bind_abstract_datagram(name: &str) -> std::io::Result<tokio::net::UnixDatagram> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    sock.set_nonblocking(true)?;
    tokio::net::UnixDatagram::from_std(sock)
}

/// Turns the vassal master's `READY=1` into [`Event::Ready`]. Anyone on the host
/// could send to an abstract socket; the worst a forged message does is mark a
/// vassal ready early, so the sender is not checked.
fn spawn_notify_reader(
    sock: tokio::net::UnixDatagram,
    inbox: Inbox,
    name: String,
    pid: i32,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf).await {
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.lines().any(|l| l == "READY=1") {
                let event = Event::Ready {
                    name: name.clone(),
                    pid,
                };
                if inbox.send(Input::Event(event)).is_err() {
                    return;
                }
            }
        }
    })
}

fn spawn_child_source(inbox: Inbox) -> std::io::Result<()> {
    let mut stream = tokio::signal::unix::signal(SignalKind::child())?;
    tokio::spawn(async move {
        while stream.recv().await.is_some() {
            if inbox.send(Input::ChildExited).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// Watches the monitored directories through [`crate::watch`] (inotify, or
/// its polling fallback), one rescan request per event that names a path the
/// monitors may lead to (not, say, every line of a log written beside a vassal
/// file in a globbed directory).
fn watch_dirs(monitors: &[Monitor], inbox: Inbox) -> notify::Result<crate::watch::Watcher> {
    let dirs: Vec<PathBuf> = monitors
        .iter()
        .map(|m| m.dir.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let monitors = monitors.to_vec();
    crate::watch::Watcher::entries_of(&dirs, move |paths| {
        if paths
            .iter()
            .any(|p| monitors.iter().any(|m| m.may_lead_to(p)))
        {
            let _ = inbox.send(Input::DirChanged(paths));
        }
    })
}

/// The vassal files now matched by the monitors (absolute paths), which of
/// them `paths` name, and the directories to watch.
fn scan(monitors: &[Monitor], paths: &[PathBuf]) -> (Event, Vec<PathBuf>) {
    let mut present = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for m in monitors {
        if !m.dir.is_dir() {
            warn!(dir = %m.dir.display(), "cannot read the vassal directory");
        }
        let found = m.expand();
        dirs.extend(found.dirs);
        for file in found.files {
            let is_vassal = file
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_vassal_name);
            if is_vassal {
                present.insert(file.to_string_lossy().into_owned());
            }
        }
    }
    let changed = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|n| present.contains(n))
        .collect();
    (
        Event::Scanned { present, changed },
        dirs.into_iter().collect(),
    )
}

/// The files of `monitors` that uWSGI's emperor would run as vassals in one
/// of its other config formats (`uwsgi_emperor_is_valid`: .xml, .yml, .yaml,
/// .js, .json), with that format. Hidden files are left out as for .ini.
fn other_formats(monitors: &[Monitor]) -> BTreeMap<PathBuf, &'static str> {
    let mut found = BTreeMap::new();
    for m in monitors {
        for file in m.expand().files {
            let format = file
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(other_format);
            if let Some(format) = format {
                found.insert(file, format);
            }
        }
    }
    found
}

/// The uWSGI config format a vassal file name says, other than ini.
fn other_format(name: &str) -> Option<&'static str> {
    if name.starts_with('.') {
        return None;
    }
    [
        (".xml", "xml"),
        (".yml", "yaml"),
        (".yaml", "yaml"),
        (".json", "json"),
        (".js", "json"),
    ]
    .into_iter()
    .find(|(ext, _)| name.len() > ext.len() && name.ends_with(ext))
    .map(|(_, format)| format)
}

/// `x.ini`, not hidden (editors' `.x.ini.swp`, a deploy tool's `.x.ini.tmp`), not
/// a backup (`x.ini~`, `x.ini.bak`).
pub fn is_vassal_name(name: &str) -> bool {
    !name.starts_with('.') && name.len() > ".ini".len() && name.ends_with(".ini")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_ini_files_are_vassals() {
        assert!(is_vassal_name("amy.ini"));
        assert!(is_vassal_name("amy.prod.ini"));
        for not in [
            ".amy.ini",
            "amy.ini~",
            "amy.ini.swp",
            "amy.yaml",
            ".ini",
            "ini",
        ] {
            assert!(!is_vassal_name(not), "{not}");
        }
    }

    #[test]
    fn other_uwsgi_formats_are_found_for_a_warning_ini_and_others_are_not() {
        let tmp = crate::testutil::TempDir::new("emperor-formats");
        let dir = tmp.0.clone();
        for name in [
            "a.ini",
            "b.yml",
            "c.yaml",
            "d.xml",
            "e.json",
            "f.js",
            "notes.txt",
            ".g.yml",
        ] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        std::fs::create_dir_all(dir.join("sub.xml")).unwrap();
        let all = Monitor {
            dir: dir.clone(),
            pattern: None,
        };
        let found = other_formats(std::slice::from_ref(&all));
        let expect: BTreeMap<PathBuf, &str> = [
            ("b.yml", "yaml"),
            ("c.yaml", "yaml"),
            ("d.xml", "xml"),
            ("e.json", "json"),
            ("f.js", "json"),
        ]
        .into_iter()
        .map(|(n, f)| (dir.join(n), f))
        .collect();
        assert_eq!(found, expect);
        let glob = Monitor {
            dir: dir.clone(),
            pattern: Some("b.*".into()),
        };
        assert_eq!(other_formats(&[glob]).len(), 1);
    }

    #[test]
    fn scan_lists_files_and_the_changed_ones() {
        let tmp = crate::testutil::TempDir::new("emperor-scan");
        let dir = tmp.0.clone();
        std::fs::create_dir_all(dir.join("sub.ini")).unwrap();
        std::fs::write(dir.join("a.ini"), "").unwrap();
        std::fs::write(dir.join("b.ini"), "").unwrap();
        std::fs::write(dir.join("amy_c.ini"), "").unwrap();
        std::fs::write(dir.join("notes.txt"), "").unwrap();
        let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
        let all = Monitor {
            dir: dir.clone(),
            pattern: None,
        };
        let (event, dirs) = scan(
            std::slice::from_ref(&all),
            &[
                dir.join("b.ini"),
                dir.join("notes.txt"),
                dir.join("gone.ini"),
            ],
        );
        assert_eq!(dirs, std::slice::from_ref(&dir));
        assert_eq!(
            event,
            Event::Scanned {
                present: [p("a.ini"), p("amy_c.ini"), p("b.ini")]
                    .into_iter()
                    .collect(),
                changed: [p("b.ini")].into_iter().collect(),
            }
        );
        let glob = Monitor {
            dir: dir.clone(),
            pattern: Some("amy_*.ini".into()),
        };
        assert_eq!(
            scan(&[glob], &[]).0,
            Event::Scanned {
                present: [p("amy_c.ini")].into_iter().collect(),
                changed: BTreeSet::new(),
            }
        );
    }
}
