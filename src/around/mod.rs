//! What the master runs around the app: attached daemons (`daemons.rs`), cron
//! jobs (`cron.rs`), master-side hooks (`hooks.rs`), and how their processes are
//! started (`process.rs`).
//!
//! The two state machines decide without I/O, like `supervisor/state.rs`; this
//! module is their executor, owned by the master loop, which feeds it the exits
//! of its processes ([`AroundExit`], through the one inbox) and wakes it at
//! [`Around::deadline`]. Its processes write to the master's log pipe, run with
//! the serving generation's environment (env file, `env =`) in `chdir`, each in
//! its own session (so a signal reaches whatever they spawned).

pub mod cron;
pub mod daemons;
pub mod hooks;
pub mod process;

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::Config;
use crate::supervisor::inbox::{Inbox, Input};
use cron::{CronAction, Crons};
use daemons::{DaemonAction, Daemons};

/// `reload-mercy` unset: uWSGI gives a daemon 3 s to stop.
pub const DEFAULT_DAEMON_MERCY: Duration = Duration::from_secs(3);

/// A process of ours (daemon or cron run) ended.
#[derive(Debug)]
pub struct AroundExit {
    pub pid: i32,
    pub status: std::io::Result<std::process::ExitStatus>,
}

/// One attached daemon in `status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub command: String,
    pub pid: Option<i32>,
    pub state: String,
    /// How many times it was started (uWSGI's `respawns`).
    pub respawns: u64,
    /// Tracked by a pidfile; survives a master stop.
    pub smart: bool,
}

/// One cron job in `status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronStatus {
    pub command: String,
    pub unique: bool,
    pub running: Vec<i32>,
}

pub struct Around {
    daemons: Daemons,
    crons: Crons,
    config: Arc<Config>,
    base_env: Vec<(OsString, OsString)>,
    log: OwnedFd,
    inbox: Inbox,
    /// Cron runs by pid, for the log line at their end.
    cron_started_wall: HashMap<i32, SystemTime>,
    touch_mtimes: HashMap<PathBuf, Option<SystemTime>>,
    next_check: Option<Instant>,
    cron_wake: Option<Instant>,
    /// A control daemon died: the master should stop.
    stop_requested: bool,
}

fn mercy(config: &Config) -> Duration {
    config.around.daemon_mercy.unwrap_or(DEFAULT_DAEMON_MERCY)
}

impl Around {
    /// Nothing runs until [`Around::begin`].
    pub fn new(
        config: Arc<Config>,
        base_env: Vec<(OsString, OsString)>,
        log: OwnedFd,
        inbox: Inbox,
    ) -> Self {
        Around {
            daemons: Daemons::default(),
            crons: Crons::default(),
            config,
            base_env,
            log,
            inbox,
            cron_started_wall: HashMap::new(),
            touch_mtimes: HashMap::new(),
            next_check: None,
            cron_wake: None,
            stop_requested: false,
        }
    }

    /// Starts the daemons and the cron schedule of the first config.
    pub fn begin(&mut self) {
        let now = Instant::now();
        let (daemons, actions) =
            Daemons::start(&self.config.around.daemons, mercy(&self.config), now);
        self.daemons = daemons;
        self.crons = Crons::new(&self.config.around.crons);
        self.record_touch_mtimes();
        self.daemon_actions(actions, now);
        // uWSGI looks at the current minute at start: a job due now runs now.
        self.cron_tick(now, true);
        self.schedule_check(now);
    }

    pub fn is_idle(&self) -> bool {
        self.config.around.daemons.is_empty() && self.crons.is_empty()
    }

    /// Whether a control daemon asked for the instance to stop (taken once).
    pub fn take_stop_request(&mut self) -> bool {
        std::mem::take(&mut self.stop_requested)
    }

    pub fn owns(&self, pid: i32) -> bool {
        self.daemons.owns(pid).is_some() || self.crons.owns(pid)
    }

    pub fn deadline(&self) -> Option<Instant> {
        [
            self.daemons.next_deadline(),
            self.crons.harakiri_deadline(),
            self.next_check,
            self.cron_wake,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn tick(&mut self, now: Instant) {
        if self.next_check.is_some_and(|t| now >= t) {
            self.next_check = None;
            self.check(now);
            self.schedule_check(now);
        }
        let actions = self.daemons.tick(now, &process::group_alive);
        self.daemon_actions(actions, now);
        self.cron_tick(now, false);
    }

    fn schedule_check(&mut self, now: Instant) {
        if self.daemons.needs_check() && self.next_check.is_none() {
            self.next_check = Some(now + daemons::CHECK_EVERY);
        }
    }

    pub fn exited(&mut self, exit: AroundExit) {
        let now = Instant::now();
        let status = describe(&exit.status);
        if let Some(index) = self.daemons.owns(exit.pid) {
            let command = self
                .daemons
                .spec(index)
                .map(|s| s.command.clone())
                .unwrap_or_default();
            let group_left = process::group_alive(exit.pid);
            let (actions, lived) = self.daemons.exited(exit.pid, now, group_left);
            let lived = lived.map(|(_, d)| d.as_secs_f64()).unwrap_or(0.0);
            info!(pid = exit.pid, command = %command, status = %status, lived_s = lived, "daemon exited");
            self.daemon_actions(actions, now);
        } else if let Some(done) = self.crons.exited(exit.pid, now) {
            self.cron_started_wall.remove(&exit.pid);
            info!(
                pid = exit.pid,
                command = %done.command,
                status = %status,
                duration_s = done.duration.as_secs_f64(),
                harakiri = done.killed_by_harakiri,
                "cron job finished"
            );
        }
    }

    /// A reload activated `config`.
    pub fn reconfigure(&mut self, config: Arc<Config>) {
        let now = Instant::now();
        self.config = config;
        let actions =
            self.daemons
                .reconfigure(&self.config.around.daemons, mercy(&self.config), now);
        self.daemon_actions(actions, now);
        self.crons.reconfigure(&self.config.around.crons);
        self.cron_wake = None;
        self.record_touch_mtimes();
        self.cron_tick(now, true);
        self.schedule_check(now);
    }

    /// The instance stops: dumb daemons get their stop signal and running cron
    /// jobs SIGTERM (their group); smart daemons are left for the next master.
    pub fn stop(&mut self) {
        let now = Instant::now();
        let actions = self.daemons.stop(now);
        self.daemon_actions(actions, now);
        for pid in self.crons.running() {
            process::signal_group(pid, libc::SIGTERM);
        }
        self.cron_wake = None;
        self.next_check = None;
    }

    /// Every dumb daemon is gone.
    pub fn stopped(&self) -> bool {
        self.daemons.stopped()
    }

    /// Kills what is left (the master is exiting).
    pub fn kill_rest(&self) {
        for v in self.daemons.views() {
            if let (Some(pid), false) = (v.pid, v.smart) {
                process::signal_group(pid, libc::SIGKILL);
            }
        }
        for pid in self.crons.running() {
            process::signal_group(pid, libc::SIGKILL);
        }
    }

    pub fn daemon_status(&self) -> Vec<DaemonStatus> {
        self.daemons
            .views()
            .into_iter()
            .map(|v| DaemonStatus {
                command: v.command,
                pid: v.pid,
                state: v.state.to_string(),
                respawns: v.respawns,
                smart: v.smart,
            })
            .collect()
    }

    pub fn cron_status(&self) -> Vec<CronStatus> {
        (0..)
            .map_while(|i| self.crons.spec(i).map(|s| (i, s)))
            .map(|(i, s)| CronStatus {
                command: s.command.clone(),
                unique: s.unique,
                running: self.crons.runs_of(i),
            })
            .collect()
    }

    fn daemon_actions(&mut self, actions: Vec<DaemonAction>, now: Instant) {
        for a in actions {
            match a {
                DaemonAction::Spawn { index } => self.spawn_daemon(index, now),
                DaemonAction::Signal { pid, signal } => process::signal_group(pid, signal),
                DaemonAction::Check => {
                    self.check(now);
                    self.schedule_check(now);
                }
                DaemonAction::StopInstance => {
                    warn!("control daemon died: stopping the instance");
                    self.stop_requested = true;
                }
            }
        }
    }

    fn spawn_daemon(&mut self, index: usize, now: Instant) {
        let Some(spec) = self.daemons.spec(index).cloned() else {
            return;
        };
        let opts = process::Options {
            cwd: spec.chdir.clone().or_else(|| self.config.chdir.clone()),
            stdin: spec.stdin,
            // A dumb daemon dies with the master, as in uWSGI; a smart one outlives it.
            die_with_master: spec.pidfile.is_none(),
            uid: spec.uid.clone(),
            gid: spec.gid.clone(),
        };
        let env = process::environment(&self.base_env, &self.config);
        match process::spawn_shell(&spec.command, &env, &self.log, &opts) {
            Ok(child) => {
                let pid = child.id().map(|p| p as i32).unwrap_or(0);
                info!(pid, command = %spec.command, "daemon spawned");
                if let (true, Some(pidfile)) = (spec.daemonize, &spec.pidfile) {
                    if let Err(e) = std::fs::write(pidfile, format!("{pid}\n")) {
                        warn!(path = %pidfile.display(), error = %e, "cannot write the daemon's pidfile");
                    }
                }
                self.daemons.spawned(index, pid, now);
                process::watch(pid, child, self.inbox.clone());
            }
            Err(e) => {
                warn!(command = %spec.command, error = %e, "cannot spawn daemon");
                self.daemons.spawn_failed(index, now);
            }
        }
    }

    /// Reads pidfiles (smart daemons) and `touch=` mtimes.
    fn check(&mut self, now: Instant) {
        let mut pids = Vec::new();
        let mut touched = Vec::new();
        for (index, spec) in (0..).map_while(|i| self.daemons.spec(i).map(|s| (i, s.clone()))) {
            if let Some(pidfile) = &spec.pidfile {
                pids.push((index, process::live_pid_in(pidfile)));
            }
            for path in &spec.touch {
                let m = mtime(path);
                let old = self.touch_mtimes.insert(path.clone(), m);
                if old.is_some_and(|old| old != m) && m.is_some() {
                    info!(path = %path.display(), command = %spec.command, "daemon touch file changed");
                    touched.push(index);
                }
            }
        }
        let actions = self.daemons.checked(&pids, &touched, now);
        self.daemon_actions(actions, now);
    }

    fn record_touch_mtimes(&mut self) {
        for spec in &self.config.around.daemons {
            for path in &spec.touch {
                self.touch_mtimes
                    .entry(path.clone())
                    .or_insert_with(|| mtime(path));
            }
        }
    }

    fn cron_tick(&mut self, now: Instant, force: bool) {
        if self.crons.is_empty() {
            self.cron_wake = None;
            return;
        }
        let due = force
            || self.cron_wake.is_some_and(|t| now >= t)
            || self.crons.harakiri_deadline().is_some_and(|t| now >= t);
        if !due {
            return;
        }
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let minute = (wall.as_secs() / 60) as i64;
        let tm = cron::local_tm(minute);
        for a in self.crons.tick(minute, &tm, now) {
            match a {
                CronAction::Run { index } => self.run_cron(index, now),
                CronAction::Kill { pid } => {
                    warn!(pid, "cron job harakiri: killing it");
                    process::signal_group(pid, libc::SIGKILL);
                }
                CronAction::Skipped { index, running } => {
                    let command = self
                        .crons
                        .spec(index)
                        .map(|s| s.command.clone())
                        .unwrap_or_default();
                    info!(command = %command, running_pid = running, "unique cron job still running: skipped");
                }
            }
        }
        if let Some(next) = self.crons.next_wake(minute, cron::local_tm) {
            // From the wall clock to the monotonic one; a few ms late so the wake
            // lands inside the minute, not just before it.
            let until = Duration::from_secs((next * 60) as u64).saturating_sub(wall)
                + Duration::from_millis(20);
            self.cron_wake = Some(now + until);
        }
    }

    fn run_cron(&mut self, index: usize, now: Instant) {
        let Some(spec) = self.crons.spec(index).cloned() else {
            return;
        };
        let opts = process::Options {
            cwd: self.config.chdir.clone(),
            stdin: false,
            die_with_master: true,
            uid: None,
            gid: None,
        };
        let env = process::environment(&self.base_env, &self.config);
        match process::spawn_shell(&spec.command, &env, &self.log, &opts) {
            Ok(child) => {
                let pid = child.id().map(|p| p as i32).unwrap_or(0);
                info!(pid, command = %spec.command, "cron job started");
                self.crons.started(index, pid, now);
                self.cron_started_wall.insert(pid, SystemTime::now());
                process::watch(pid, child, self.inbox.clone());
            }
            Err(e) => warn!(command = %spec.command, error = %e, "cannot start cron job"),
        }
    }
}

fn mtime(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `exit 0`, `exit 3`, `signal 9`.
pub fn describe(status: &std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "unknown".into(),
        },
        Err(e) => format!("unknown ({e})"),
    }
}

/// Sends an exit to the master loop.
pub(crate) fn send_exit(
    inbox: &Inbox,
    pid: i32,
    status: std::io::Result<std::process::ExitStatus>,
) {
    let _ = inbox.send(Input::Around(AroundExit { pid, status }));
}
