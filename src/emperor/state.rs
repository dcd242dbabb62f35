//! The emperor's decisions, without I/O: which vassal to start, signal or forget,
//! and when. The executor feeds [`Event`]s with the current instant and carries
//! out the [`Action`]s; [`Emperor::next_deadline`] tells it when to send
//! [`Event::Tick`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::supervisor::policy::Backoff;

/// How long a new or changed file must stay quiet before its vassal starts: a
/// deploy tool writing the file in several steps would otherwise start a vassal
/// on half a config.
pub const SETTLE: Duration = Duration::from_millis(200);
/// How long vassals get to finish in-flight requests when the emperor stops,
/// before their process groups are killed.
pub const STOP_MERCY: Duration = Duration::from_secs(90);
/// The exit status of `start` for a config or usage error (as `check` and a
/// vassal's `start`: 2, so an init system tells "fix the file" from "crashed").
pub const EXIT_CONFIG: i32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// Forwarded: every vassal reloads gracefully.
    Hup,
    /// Graceful stop of everything.
    Term,
    /// Fast stop of everything (SIGINT, SIGQUIT).
    Int,
    /// One log line per vassal.
    Usr1,
    /// Forwarded: every vassal reopens its log (logrotate).
    Usr2,
}

/// How a vassal process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The vassal files now in the directory (`*.ini` names), and those among
    /// them written since the previous scan.
    Scanned {
        present: BTreeSet<String>,
        changed: BTreeSet<String>,
    },
    Spawned {
        name: String,
        pid: i32,
    },
    SpawnFailed {
        name: String,
        error: String,
    },
    /// Not started on purpose (tyrant mode: a root-owned file); like a config
    /// error, only a change to the file can help.
    Refused {
        name: String,
        reason: String,
    },
    /// The vassal's master said READY=1 on the notify socket the emperor gave it.
    Ready {
        name: String,
        pid: i32,
    },
    Exited {
        name: String,
        pid: i32,
        status: Exit,
    },
    Signal(Sig),
    /// The deadline from [`Emperor::next_deadline`] passed.
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start `start DIR/name` as a child; report [`Event::Spawned`] or
    /// [`Event::SpawnFailed`] before anything else.
    Spawn(String),
    /// Send `signal` to the vassal's master (pid), which handles its own workers.
    Signal {
        name: String,
        pid: i32,
        signal: Sig,
    },
    /// SIGKILL the vassal's process group (it leads its own).
    KillGroup {
        name: String,
        pid: i32,
    },
    /// Every vassal of the first scan served or failed: tell systemd (and a
    /// daemonizing parent) that the emperor is up. Sent once.
    Ready,
    Exit(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    /// Exit 2: retrying cannot help until someone edits the file.
    ConfigError,
    /// Exit 0 that we did not ask for: somebody ran `amy-emperor stop` on it.
    /// uWSGI respawns these, which makes a deliberate stop impossible.
    StoppedByItself,
    /// See [`Event::Refused`].
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A Spawn action is out; the executor reports its outcome next.
    Starting,
    Running {
        pid: i32,
        since: Instant,
        /// We sent it SIGTERM/SIGINT and wait for it to exit.
        stopping: bool,
    },
    /// To be started at this instant (settling, or backing off).
    Due(Instant),
    Halted(Halt),
}

#[derive(Debug)]
struct Vassal {
    state: State,
    backoff: Backoff,
    /// The file was in the directory at the last scan.
    in_dir: bool,
    changed_at: Option<Instant>,
    /// Processes started for this file so far.
    spawns: u64,
    last_exit: Option<Exit>,
    /// Why it is not running, when it is halted or backing off.
    reason: Option<String>,
    /// Its master said READY=1 (first generation serving) since it was started.
    ready: bool,
}

impl Vassal {
    fn new(now: Instant) -> Vassal {
        Vassal {
            state: State::Due(now + SETTLE),
            backoff: Backoff::default(),
            in_dir: true,
            changed_at: Some(now),
            spawns: 0,
            last_exit: None,
            reason: None,
            ready: false,
        }
    }
}

/// What `status` shows of one vassal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VassalView {
    pub name: String,
    /// `starting`, `booting` (its master runs, its app is not ready yet),
    /// `running`, `stopping`, `waiting` (settling or backing off),
    /// `config-error`, `stopped` (exited 0 by itself), `refused`.
    pub state: &'static str,
    pub pid: Option<i32>,
    pub running_since: Option<Instant>,
    pub due_at: Option<Instant>,
    /// Starts after the first.
    pub restarts: u64,
    pub last_exit: Option<Exit>,
    pub reason: Option<String>,
}

#[derive(Debug, Default)]
pub struct Emperor {
    vassals: BTreeMap<String, Vassal>,
    /// Set once a stop began: when the vassals' mercy runs out.
    stop_deadline: Option<Instant>,
    killed: bool,
    /// The files of the first scan that have not yet served, failed or gone:
    /// the emperor is ready (systemd READY=1) once it is empty.
    awaiting: Option<BTreeSet<String>>,
    ready_sent: bool,
}

impl Emperor {
    pub fn new() -> Emperor {
        Emperor::default()
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Scanned { present, changed } => {
                self.scanned(&present, &changed, now, &mut actions)
            }
            Event::Spawned { name, pid } => {
                if let Some(v) = self.vassals.get_mut(&name) {
                    info!(vassal = %name, pid, "vassal started");
                    v.spawns += 1;
                    v.reason = None;
                    v.ready = false;
                    v.state = State::Running {
                        pid,
                        since: now,
                        stopping: false,
                    };
                }
            }
            Event::SpawnFailed { name, error } => {
                if let Some(v) = self.vassals.get_mut(&name) {
                    let delay = v.backoff.record_failure(Duration::ZERO);
                    error!(vassal = %name, error = %error, retry_in = ?delay, "cannot start vassal");
                    v.state = State::Due(now + delay);
                    v.reason = Some(error);
                }
            }
            Event::Refused { name, reason } => {
                if let Some(v) = self.vassals.get_mut(&name) {
                    error!(vassal = %name, reason = %reason, "vassal refused; not started until its file changes");
                    v.state = State::Halted(Halt::Refused);
                    v.reason = Some(reason);
                }
            }
            Event::Ready { name, pid } => {
                if let Some(v) = self.vassals.get_mut(&name) {
                    if matches!(v.state, State::Running { pid: p, .. } if p == pid) && !v.ready {
                        info!(vassal = %name, pid, "vassal ready");
                        v.ready = true;
                    }
                }
            }
            Event::Exited { name, pid, status } => self.exited(&name, pid, status, now),
            Event::Signal(sig) => self.signal(sig, now, &mut actions),
            Event::Tick => self.tick(now, &mut actions),
        }
        self.check_ready(&mut actions);
        if self.stop_deadline.is_some() && self.vassals.is_empty() {
            info!("all vassals stopped");
            actions.push(Action::Exit(0));
        }
        actions
    }

    /// When the executor should send [`Event::Tick`].
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Some(deadline) = self.stop_deadline {
            return (!self.killed).then_some(deadline);
        }
        self.vassals
            .values()
            .filter_map(|v| match v.state {
                State::Due(at) => Some(at),
                _ => None,
            })
            .min()
    }

    /// Every vassal the emperor knows, in name order.
    pub fn view(&self) -> Vec<VassalView> {
        self.vassals
            .iter()
            .map(|(name, v)| {
                let (state, pid, running_since, due_at) = match v.state {
                    State::Starting => ("starting", None, None, None),
                    State::Running {
                        pid,
                        since,
                        stopping,
                    } => (
                        match (stopping, v.ready) {
                            (true, _) => "stopping",
                            (false, true) => "running",
                            (false, false) => "booting",
                        },
                        Some(pid),
                        Some(since),
                        None,
                    ),
                    State::Due(at) => ("waiting", None, None, Some(at)),
                    State::Halted(Halt::ConfigError) => ("config-error", None, None, None),
                    State::Halted(Halt::StoppedByItself) => ("stopped", None, None, None),
                    State::Halted(Halt::Refused) => ("refused", None, None, None),
                };
                VassalView {
                    name: name.clone(),
                    state,
                    pid,
                    running_since,
                    due_at,
                    restarts: v.spawns.saturating_sub(1),
                    last_exit: v.last_exit,
                    reason: v.reason.clone(),
                }
            })
            .collect()
    }

    /// Emits [`Action::Ready`] once every vassal of the first scan has served,
    /// failed, or gone: a vassal that cannot start must not hold up the others.
    fn check_ready(&mut self, actions: &mut Vec<Action>) {
        if self.ready_sent {
            return;
        }
        let Some(awaiting) = &mut self.awaiting else {
            return;
        };
        awaiting.retain(|name| match self.vassals.get(name) {
            None => false,
            Some(v) => match v.state {
                State::Running { .. } => !v.ready,
                State::Starting => true,
                State::Due(_) => v.spawns == 0 && v.backoff.failures == 0,
                State::Halted(_) => false,
            },
        });
        if awaiting.is_empty() {
            self.ready_sent = true;
            actions.push(Action::Ready);
        }
    }

    /// Whether a stop is under way.
    pub fn stopping(&self) -> bool {
        self.stop_deadline.is_some()
    }

    /// Pids of the vassal masters now running (for tests and diagnostics).
    pub fn running(&self) -> Vec<(String, i32)> {
        self.vassals
            .iter()
            .filter_map(|(name, v)| match v.state {
                State::Running { pid, .. } => Some((name.clone(), pid)),
                _ => None,
            })
            .collect()
    }

    fn scanned(
        &mut self,
        present: &BTreeSet<String>,
        changed: &BTreeSet<String>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if self.stop_deadline.is_some() {
            return;
        }
        if self.awaiting.is_none() {
            self.awaiting = Some(present.clone());
        }
        for name in present {
            if !self.vassals.contains_key(name) {
                info!(vassal = %name, "new vassal file");
                self.vassals.insert(name.clone(), Vassal::new(now));
            }
        }
        let mut forget = Vec::new();
        for (name, v) in &mut self.vassals {
            v.in_dir = present.contains(name);
            if !v.in_dir {
                match &mut v.state {
                    State::Running { pid, stopping, .. } => {
                        if !*stopping {
                            info!(vassal = %name, pid = *pid, "vassal file removed, stopping it");
                            *stopping = true;
                            actions.push(Action::Signal {
                                name: name.clone(),
                                pid: *pid,
                                signal: Sig::Term,
                            });
                        }
                    }
                    // The executor reports Spawned before any scan; keep it until then.
                    State::Starting => {}
                    State::Due(_) | State::Halted(_) => forget.push(name.clone()),
                }
                continue;
            }
            if !changed.contains(name) {
                continue;
            }
            v.changed_at = Some(now);
            match v.state {
                // The vassal's own master watches its ini and reloads gracefully
                // on a change; a second trigger from here would reload it twice.
                State::Running { .. } | State::Starting => {
                    debug!(vassal = %name, "vassal file changed; the vassal reloads itself")
                }
                // Settling or backing off: a fresh file deserves a prompt try.
                State::Due(_) => v.state = State::Due(now + SETTLE),
                State::Halted(_) => {
                    info!(vassal = %name, "vassal file changed, starting it");
                    v.state = State::Due(now + SETTLE);
                }
            }
        }
        for name in forget {
            info!(vassal = %name, "vassal file removed");
            self.vassals.remove(&name);
        }
    }

    fn exited(&mut self, name: &str, pid: i32, status: Exit, now: Instant) {
        let Some(v) = self.vassals.get_mut(name) else {
            return;
        };
        let State::Running {
            pid: running,
            since,
            stopping,
        } = v.state
        else {
            return;
        };
        if running != pid {
            return;
        }
        let lived = now.saturating_duration_since(since);
        v.last_exit = Some(status);
        if self.stop_deadline.is_some() {
            info!(vassal = %name, pid, ?status, "vassal stopped");
            self.vassals.remove(name);
            return;
        }
        if stopping {
            if v.in_dir {
                info!(vassal = %name, pid, "vassal stopped; its file is back, starting it again");
                v.state = State::Due(now);
            } else {
                info!(vassal = %name, pid, ?status, "vassal stopped");
                self.vassals.remove(name);
            }
            return;
        }
        let changed_while_running = v.changed_at.is_some_and(|at| at >= since);
        v.state = match status {
            Exit::Code(EXIT_CONFIG) if changed_while_running => {
                // It may have read the file half-written; the finished file gets a try.
                warn!(vassal = %name, pid, "vassal rejected its config, which changed meanwhile; retrying");
                State::Due(now + SETTLE)
            }
            Exit::Code(EXIT_CONFIG) => {
                error!(vassal = %name, pid, "vassal config is invalid; not restarted until its file changes");
                v.reason = Some("config error (exit 2); see the log".into());
                State::Halted(Halt::ConfigError)
            }
            Exit::Code(0) => {
                warn!(vassal = %name, pid, "vassal stopped by itself; not restarted until its file changes or SIGHUP");
                v.reason = Some("stopped by itself (exit 0)".into());
                State::Halted(Halt::StoppedByItself)
            }
            status => {
                let delay = v.backoff.record_failure(lived);
                warn!(vassal = %name, pid, ?status, lived = ?lived, restart_in = ?delay, "vassal died, restarting");
                v.reason = Some(format!("died ({status:?}); restarting with back-off"));
                State::Due(now + delay)
            }
        };
    }

    fn signal(&mut self, sig: Sig, now: Instant, actions: &mut Vec<Action>) {
        match sig {
            Sig::Term | Sig::Int => {
                if self.stop_deadline.is_none() {
                    info!(signal = ?sig, vassals = self.vassals.len(), "stopping all vassals");
                    self.stop_deadline = Some(now + STOP_MERCY);
                    self.vassals
                        .retain(|_, v| matches!(v.state, State::Running { .. } | State::Starting));
                }
                // A second signal is forwarded too: each vassal escalates on its own
                // (a second SIGTERM makes its graceful stop a fast one).
                for (name, v) in &mut self.vassals {
                    if let State::Running { pid, stopping, .. } = &mut v.state {
                        *stopping = true;
                        actions.push(Action::Signal {
                            name: name.clone(),
                            pid: *pid,
                            signal: sig,
                        });
                    }
                }
            }
            Sig::Hup => {
                if self.stop_deadline.is_some() {
                    return;
                }
                info!("reloading all vassals");
                for (name, v) in &mut self.vassals {
                    match v.state {
                        State::Running {
                            pid,
                            stopping: false,
                            ..
                        } => actions.push(Action::Signal {
                            name: name.clone(),
                            pid,
                            signal: Sig::Hup,
                        }),
                        State::Due(_) | State::Halted(_) => v.state = State::Due(now),
                        State::Running { .. } | State::Starting => {}
                    }
                }
            }
            Sig::Usr1 => {
                for (name, v) in &self.vassals {
                    info!(vassal = %name, state = ?v.state, failures = v.backoff.failures, "vassal");
                }
            }
            Sig::Usr2 => {
                for (name, v) in &self.vassals {
                    if let State::Running { pid, .. } = v.state {
                        actions.push(Action::Signal {
                            name: name.clone(),
                            pid,
                            signal: Sig::Usr2,
                        });
                    }
                }
            }
        }
    }

    fn tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if let Some(deadline) = self.stop_deadline {
            if now >= deadline && !self.killed {
                self.killed = true;
                for (name, v) in &self.vassals {
                    if let State::Running { pid, .. } = v.state {
                        warn!(vassal = %name, pid, "vassal did not stop in time, killing it");
                        actions.push(Action::KillGroup {
                            name: name.clone(),
                            pid,
                        });
                    }
                }
            }
            return;
        }
        for (name, v) in &mut self.vassals {
            if matches!(v.state, State::Due(at) if at <= now) {
                v.state = State::Starting;
                actions.push(Action::Spawn(name.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn scan(present: &[&str], changed: &[&str]) -> Event {
        Event::Scanned {
            present: names(present),
            changed: names(changed),
        }
    }

    /// Scans `name` in, lets it settle, and reports it spawned as `pid` and ready.
    fn started(e: &mut Emperor, name: &str, pid: i32, t: Instant) -> Instant {
        e.handle(scan(&[name], &[name]), t);
        let t = t + SETTLE;
        assert_eq!(e.handle(Event::Tick, t), vec![Action::Spawn(name.into())]);
        e.handle(
            Event::Spawned {
                name: name.into(),
                pid,
            },
            t,
        );
        e.handle(
            Event::Ready {
                name: name.into(),
                pid,
            },
            t,
        );
        t
    }

    fn exited(name: &str, pid: i32, status: Exit) -> Event {
        Event::Exited {
            name: name.into(),
            pid,
            status,
        }
    }

    #[test]
    fn a_new_file_starts_after_it_settles() {
        let mut e = Emperor::new();
        let t0 = Instant::now();
        assert!(e.handle(scan(&["a.ini"], &[]), t0).is_empty());
        assert_eq!(e.next_deadline(), Some(t0 + SETTLE));
        assert!(e.handle(Event::Tick, t0 + SETTLE / 2).is_empty());
        // A second write pushes the start back.
        e.handle(scan(&["a.ini"], &["a.ini"]), t0 + SETTLE / 2);
        assert!(e.handle(Event::Tick, t0 + SETTLE).is_empty());
        assert_eq!(
            e.handle(Event::Tick, t0 + SETTLE * 2),
            vec![Action::Spawn("a.ini".into())]
        );
    }

    #[test]
    fn a_removed_file_stops_its_vassal_and_forgets_it() {
        let mut e = Emperor::new();
        let t = started(&mut e, "a.ini", 100, Instant::now());
        let actions = e.handle(scan(&[], &[]), t);
        assert_eq!(
            actions,
            vec![Action::Signal {
                name: "a.ini".into(),
                pid: 100,
                signal: Sig::Term
            }]
        );
        assert!(e.handle(exited("a.ini", 100, Exit::Code(0)), t).is_empty());
        assert!(e.running().is_empty());
        assert_eq!(e.next_deadline(), None);
    }

    #[test]
    fn a_file_back_before_its_vassal_stopped_starts_it_again() {
        let mut e = Emperor::new();
        let t = started(&mut e, "a.ini", 100, Instant::now());
        e.handle(scan(&[], &[]), t);
        e.handle(scan(&["a.ini"], &["a.ini"]), t);
        e.handle(exited("a.ini", 100, Exit::Code(0)), t);
        assert_eq!(
            e.handle(Event::Tick, t),
            vec![Action::Spawn("a.ini".into())]
        );
    }

    #[test]
    fn a_change_to_a_running_vassal_is_left_to_its_own_master() {
        let mut e = Emperor::new();
        let t = started(&mut e, "a.ini", 100, Instant::now());
        assert!(e.handle(scan(&["a.ini"], &["a.ini"]), t).is_empty());
        assert_eq!(e.next_deadline(), None);
    }

    #[test]
    fn a_crashing_vassal_restarts_at_once_then_backs_off() {
        let mut e = Emperor::new();
        let t = started(&mut e, "a.ini", 100, Instant::now());
        e.handle(exited("a.ini", 100, Exit::Signal(9)), t);
        assert_eq!(
            e.handle(Event::Tick, t),
            vec![Action::Spawn("a.ini".into())]
        );
        e.handle(
            Event::Spawned {
                name: "a.ini".into(),
                pid: 101,
            },
            t,
        );
        e.handle(exited("a.ini", 101, Exit::Code(1)), t);
        let due = e.next_deadline().expect("a restart is due");
        assert!(due >= t + Duration::from_millis(900), "{:?}", due - t);
        assert!(e.handle(Event::Tick, t).is_empty());
        assert_eq!(
            e.handle(Event::Tick, due),
            vec![Action::Spawn("a.ini".into())]
        );
    }

    #[test]
    fn a_config_error_waits_for_the_file_to_change() {
        let mut e = Emperor::new();
        let t = started(&mut e, "a.ini", 100, Instant::now());
        let later = t + Duration::from_secs(1);
        e.handle(exited("a.ini", 100, Exit::Code(EXIT_CONFIG)), later);
        assert_eq!(e.next_deadline(), None);
        assert!(e.handle(Event::Tick, later + STOP_MERCY).is_empty());
        e.handle(scan(&["a.ini"], &["a.ini"]), later);
        assert_eq!(
            e.handle(Event::Tick, later + SETTLE),
            vec![Action::Spawn("a.ini".into())]
        );
    }

    #[test]
    fn a_config_error_from_a_file_changed_meanwhile_is_retried() {
        let mut e = Emperor::new();
        let t = started(&mut e, "a.ini", 100, Instant::now());
        e.handle(scan(&["a.ini"], &["a.ini"]), t + Duration::from_millis(5));
        e.handle(
            exited("a.ini", 100, Exit::Code(EXIT_CONFIG)),
            t + Duration::from_millis(10),
        );
        assert!(e.next_deadline().is_some());
    }

    #[test]
    fn a_clean_exit_we_did_not_ask_for_is_not_restarted() {
        let mut e = Emperor::new();
        let t = started(&mut e, "a.ini", 100, Instant::now());
        e.handle(exited("a.ini", 100, Exit::Code(0)), t);
        assert_eq!(e.next_deadline(), None);
        // SIGHUP retries it.
        e.handle(Event::Signal(Sig::Hup), t);
        assert_eq!(
            e.handle(Event::Tick, t),
            vec![Action::Spawn("a.ini".into())]
        );
    }

    #[test]
    fn sighup_is_forwarded_to_running_vassals() {
        let mut e = Emperor::new();
        let t = started(&mut e, "a.ini", 100, Instant::now());
        assert_eq!(
            e.handle(Event::Signal(Sig::Hup), t),
            vec![Action::Signal {
                name: "a.ini".into(),
                pid: 100,
                signal: Sig::Hup
            }]
        );
    }

    #[test]
    fn stop_signals_every_vassal_waits_then_kills_then_exits() {
        let mut e = Emperor::new();
        let t = started(&mut e, "a.ini", 100, Instant::now());
        e.handle(scan(&["a.ini", "b.ini"], &["b.ini"]), t);
        let t = t + SETTLE;
        e.handle(Event::Tick, t);
        e.handle(
            Event::Spawned {
                name: "b.ini".into(),
                pid: 200,
            },
            t,
        );
        e.handle(scan(&["a.ini", "b.ini", "c.ini"], &["c.ini"]), t);
        let actions = e.handle(Event::Signal(Sig::Term), t);
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(actions.iter().all(|a| matches!(
            a,
            Action::Signal {
                signal: Sig::Term,
                ..
            }
        )));
        // The not-yet-started c.ini is dropped, new files are ignored.
        assert!(e.handle(scan(&["d.ini"], &["d.ini"]), t).is_empty());
        assert!(e.handle(exited("a.ini", 100, Exit::Code(0)), t).is_empty());
        assert_eq!(e.next_deadline(), Some(t + STOP_MERCY));
        assert_eq!(
            e.handle(Event::Tick, t + STOP_MERCY),
            vec![Action::KillGroup {
                name: "b.ini".into(),
                pid: 200
            }]
        );
        assert_eq!(e.next_deadline(), None);
        assert_eq!(
            e.handle(exited("b.ini", 200, Exit::Signal(9)), t + STOP_MERCY),
            vec![Action::Exit(0)]
        );
    }

    #[test]
    fn a_refused_file_waits_for_a_change_and_status_counts_restarts() {
        let mut e = Emperor::new();
        let t = Instant::now();
        e.handle(scan(&["a.ini"], &["a.ini"]), t);
        assert_eq!(
            e.handle(Event::Tick, t + SETTLE),
            vec![Action::Spawn("a.ini".into())]
        );
        e.handle(
            Event::Refused {
                name: "a.ini".into(),
                reason: "root-owned".into(),
            },
            t + SETTLE,
        );
        assert_eq!(e.next_deadline(), None);
        assert_eq!(e.view()[0].state, "refused");
        assert_eq!(e.view()[0].reason.as_deref(), Some("root-owned"));
        e.handle(scan(&["a.ini"], &["a.ini"]), t + SETTLE);
        let t = t + SETTLE * 2;
        assert_eq!(
            e.handle(Event::Tick, t),
            vec![Action::Spawn("a.ini".into())]
        );
        e.handle(
            Event::Spawned {
                name: "a.ini".into(),
                pid: 7,
            },
            t,
        );
        e.handle(exited("a.ini", 7, Exit::Signal(9)), t);
        e.handle(Event::Tick, t);
        e.handle(
            Event::Spawned {
                name: "a.ini".into(),
                pid: 8,
            },
            t,
        );
        e.handle(
            Event::Ready {
                name: "a.ini".into(),
                pid: 8,
            },
            t,
        );
        let v = &e.view()[0];
        assert_eq!((v.state, v.pid, v.restarts), ("running", Some(8), 1));
        assert_eq!(v.last_exit, Some(Exit::Signal(9)));
    }

    #[test]
    fn the_emperor_is_ready_once_every_first_vassal_served_or_failed() {
        let mut e = Emperor::new();
        let t = Instant::now();
        e.handle(scan(&["a.ini", "b.ini"], &[]), t);
        let t = t + SETTLE;
        assert_eq!(
            e.handle(Event::Tick, t),
            vec![Action::Spawn("a.ini".into()), Action::Spawn("b.ini".into())]
        );
        e.handle(
            Event::Spawned {
                name: "a.ini".into(),
                pid: 1,
            },
            t,
        );
        e.handle(
            Event::Spawned {
                name: "b.ini".into(),
                pid: 2,
            },
            t,
        );
        assert_eq!(e.view()[0].state, "booting");
        // A later file does not hold readiness back.
        e.handle(scan(&["a.ini", "b.ini", "c.ini"], &["c.ini"]), t);
        assert!(e
            .handle(
                Event::Ready {
                    name: "a.ini".into(),
                    pid: 1
                },
                t
            )
            .is_empty());
        // b fails: config error.
        assert_eq!(
            e.handle(exited("b.ini", 2, Exit::Code(EXIT_CONFIG)), t),
            vec![Action::Ready]
        );
        assert_eq!(e.view()[0].state, "running");
        // Only once.
        assert!(e
            .handle(
                Event::Ready {
                    name: "a.ini".into(),
                    pid: 1
                },
                t
            )
            .is_empty());
    }

    #[test]
    fn sigusr2_reaches_every_running_vassal() {
        let mut e = Emperor::new();
        let t = started(&mut e, "a.ini", 100, Instant::now());
        assert_eq!(
            e.handle(Event::Signal(Sig::Usr2), t),
            vec![Action::Signal {
                name: "a.ini".into(),
                pid: 100,
                signal: Sig::Usr2
            }]
        );
    }

    #[test]
    fn stop_with_no_vassal_exits_at_once() {
        let mut e = Emperor::new();
        assert_eq!(
            e.handle(Event::Signal(Sig::Int), Instant::now()),
            vec![Action::Exit(0)]
        );
    }
}
