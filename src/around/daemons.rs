//! Attached daemons, decided without I/O: when to spawn, respawn (with the
//! workers' back-off), signal, check a pidfile, stop.
//!
//! Kinds, as in uWSGI's `core/daemons.c`:
//! - dumb (`attach-daemon`): our child; its exit is an event; respawned.
//! - smart (`smart-attach-daemon`, `pidfile=`): it daemonizes itself and writes a
//!   pidfile; the master checks that pid every second and respawns when it is
//!   gone. It survives a master stop and is adopted by the next master.
//! - smart2 (`smart-attach-daemon2`, `daemonize=1`): our child, the master writes
//!   its pidfile; survives a master stop like smart.
//!
//! Reload: uWSGI re-execs itself and so stops and restarts every dumb daemon on
//! every reload (with `reloadsignal` when set). Here a daemon whose definition is
//! unchanged keeps running (it gets `reloadsignal` if one is set); a changed or
//! removed one is stopped, a new one started.

use std::time::{Duration, Instant};

use crate::config::around::DaemonSpec;
use crate::supervisor::policy::Backoff;

/// How often pidfiles (smart daemons) and `touch=` files are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a SIGKILLed group is waited for before it is forgotten.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How often a stopping daemon's group is looked at once its leader is gone.
const DRAIN_RECHECK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAction {
    Spawn {
        index: usize,
    },
    /// Signal the daemon's process group (it is a session leader).
    Signal {
        pid: i32,
        signal: i32,
    },
    /// Read the pidfiles and `touch=` mtimes; answer with [`Daemons::checked`].
    Check,
    /// A control daemon died: stop the instance.
    StopInstance,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Run {
    /// Not running; spawn at `at` (`None`: not scheduled, e.g. while stopping).
    Down {
        at: Option<Instant>,
    },
    Spawning,
    /// `ours`: our child (its exit arrives as an event); else adopted from a pidfile.
    Up {
        pid: i32,
        since: Instant,
        ours: bool,
    },
    /// A smart daemon's launcher exited; waiting for its pidfile (`checks` so far).
    Detaching {
        checks: u32,
    },
    Stopping {
        pid: i32,
        deadline: Instant,
        killed: bool,
        then: Then,
    },
    /// The leader exited during a stop but its group still has members (a child
    /// that ignores the stop signal): SIGKILLed at `deadline`.
    Draining {
        pgid: i32,
        deadline: Instant,
        recheck: Instant,
        then: Then,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Respawn,
    Remove,
    Rest,
}

#[derive(Debug, Clone)]
struct Entry {
    spec: DaemonSpec,
    run: Run,
    backoff: Backoff,
    spawns: u64,
    removed: bool,
}

/// One daemon as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonView {
    pub command: String,
    pub pid: Option<i32>,
    pub state: &'static str,
    pub respawns: u64,
    pub smart: bool,
}

#[derive(Debug, Default)]
pub struct Daemons {
    entries: Vec<Entry>,
    mercy: Duration,
    stopping: bool,
}

impl Daemons {
    /// The daemons of the first config; they are started at once.
    pub fn start(specs: &[DaemonSpec], mercy: Duration, now: Instant) -> (Self, Vec<DaemonAction>) {
        let mut d = Daemons {
            entries: Vec::new(),
            mercy,
            stopping: false,
        };
        let mut actions = Vec::new();
        for spec in specs {
            d.add(spec.clone(), now, &mut actions);
        }
        (d, actions)
    }

    pub fn spec(&self, index: usize) -> Option<&DaemonSpec> {
        self.entries.get(index).map(|e| &e.spec)
    }

    fn add(&mut self, spec: DaemonSpec, now: Instant, actions: &mut Vec<DaemonAction>) {
        let smart = spec.pidfile.is_some();
        self.entries.push(Entry {
            spec,
            run: Run::Down { at: Some(now) },
            backoff: Backoff::default(),
            spawns: 0,
            removed: false,
        });
        // A smart daemon may still run from the previous master: look first.
        if smart {
            actions.push(DaemonAction::Check);
        } else {
            actions.extend(self.due(now));
        }
    }

    /// Spawns whatever is due at `now`.
    fn due(&mut self, now: Instant) -> Vec<DaemonAction> {
        if self.stopping {
            return Vec::new();
        }
        let mut actions = Vec::new();
        for (index, e) in self.entries.iter_mut().enumerate() {
            if let Run::Down { at: Some(t) } = e.run {
                if t <= now && (e.spec.pidfile.is_none() || e.spawns > 0) {
                    e.run = Run::Spawning;
                    actions.push(DaemonAction::Spawn { index });
                }
            }
        }
        actions
    }

    pub fn spawned(&mut self, index: usize, pid: i32, now: Instant) {
        if let Some(e) = self.entries.get_mut(index) {
            e.spawns += 1;
            e.run = Run::Up {
                pid,
                since: now,
                ours: true,
            };
        }
    }

    pub fn spawn_failed(&mut self, index: usize, now: Instant) {
        if let Some(e) = self.entries.get_mut(index) {
            e.spawns += 1;
            let delay = e
                .backoff
                .record_failure(Duration::ZERO)
                .max(Duration::from_secs(1));
            e.run = Run::Down {
                at: Some(now + delay),
            };
        }
    }

    /// Whether `pid` is one of ours (a daemon or its launcher).
    pub fn owns(&self, pid: i32) -> Option<usize> {
        self.entries.iter().position(|e| match e.run {
            Run::Up {
                pid: p, ours: true, ..
            }
            | Run::Stopping { pid: p, .. } => p == pid,
            _ => false,
        })
    }

    /// Our child `pid` exited; `group_left` says whether its process group still
    /// has members. Returns what to do and, for the log, the index and how long
    /// it ran.
    pub fn exited(
        &mut self,
        pid: i32,
        now: Instant,
        group_left: bool,
    ) -> (Vec<DaemonAction>, Option<(usize, Duration)>) {
        let Some(index) = self.owns(pid) else {
            return (Vec::new(), None);
        };
        let e = &mut self.entries[index];
        let mut actions = Vec::new();
        let lived = match e.run {
            Run::Up { since, .. } => now.saturating_duration_since(since),
            _ => Duration::ZERO,
        };
        match e.run.clone() {
            Run::Stopping {
                then,
                deadline,
                killed: false,
                ..
            } if group_left => {
                e.run = Run::Draining {
                    pgid: pid,
                    deadline,
                    recheck: now + DRAIN_RECHECK,
                    then,
                }
            }
            Run::Stopping { then, .. } => finish_stop(e, then, now, self.stopping),
            Run::Up { .. } if self.stopping => e.run = Run::Down { at: None },
            Run::Up { .. } if e.spec.control => {
                e.run = Run::Down { at: None };
                actions.push(DaemonAction::StopInstance);
            }
            // A smart daemon's launcher exits once the daemon forked: expected.
            Run::Up { .. } if e.spec.pidfile.is_some() && !e.spec.daemonize => {
                e.run = Run::Detaching { checks: 0 };
            }
            Run::Up { .. } => {
                // What the dead leader left in its group would run twice next to
                // its replacement.
                if group_left && e.spec.pidfile.is_none() {
                    actions.push(DaemonAction::Signal {
                        pid,
                        signal: libc::SIGKILL,
                    });
                }
                let mut delay = e.backoff.record_failure(lived);
                if let Some(cap) = e.spec.max_throttle {
                    delay = delay.min(Duration::from_secs(u64::from(cap)));
                }
                e.run = Run::Down {
                    at: Some(now + delay),
                };
            }
            _ => {}
        }
        self.entries.retain(|e| !e.removed);
        actions.extend(self.due(now));
        (actions, Some((index, lived)))
    }

    /// The answer to [`DaemonAction::Check`]: for each daemon, the live pid its
    /// pidfile names (if any), and whether a `touch=` file changed since last time.
    pub fn checked(
        &mut self,
        pidfile_pids: &[(usize, Option<i32>)],
        touched: &[usize],
        now: Instant,
    ) -> Vec<DaemonAction> {
        let mut actions = Vec::new();
        for &(index, live) in pidfile_pids {
            let Some(e) = self.entries.get_mut(index) else {
                continue;
            };
            match (&e.run, live) {
                (Run::Down { .. } | Run::Detaching { .. }, Some(pid)) => {
                    e.run = Run::Up {
                        pid,
                        since: now,
                        ours: false,
                    };
                }
                (
                    Run::Up {
                        pid: old,
                        ours: false,
                        ..
                    },
                    Some(pid),
                ) if *old != pid => {
                    e.run = Run::Up {
                        pid,
                        since: now,
                        ours: false,
                    };
                }
                (Run::Up { ours: false, .. }, None) => {
                    let delay = e.backoff.record_failure(Duration::ZERO);
                    e.run = Run::Down {
                        at: Some(now + delay),
                    };
                    e.spawns = e.spawns.max(1);
                }
                (Run::Down { at: Some(_) }, None) if e.spawns == 0 => {
                    // First look at start-up: nothing to adopt; spawn now.
                    e.spawns = 0;
                    if !self.stopping {
                        e.run = Run::Spawning;
                        actions.push(DaemonAction::Spawn { index });
                    }
                }
                (Run::Detaching { checks }, None) => {
                    let checks = checks + 1;
                    e.run = if checks >= e.spec.freq {
                        // uWSGI: "did not daemonize"; it respawns.
                        Run::Down { at: Some(now) }
                    } else {
                        Run::Detaching { checks }
                    };
                }
                _ => {}
            }
        }
        for &index in touched {
            if let Some(e) = self.entries.get_mut(index) {
                if let Run::Up { pid, .. } = e.run {
                    actions.push(DaemonAction::Signal {
                        pid,
                        signal: e.spec.stop_signal,
                    });
                    e.run = Run::Stopping {
                        pid,
                        deadline: now + self.mercy,
                        killed: false,
                        then: Then::Respawn,
                    };
                }
            }
        }
        actions.extend(self.due(now));
        actions
    }

    /// A reload with these definitions.
    pub fn reconfigure(
        &mut self,
        specs: &[DaemonSpec],
        mercy: Duration,
        now: Instant,
    ) -> Vec<DaemonAction> {
        self.mercy = mercy;
        let mut actions = Vec::new();
        let mut unmatched: Vec<&DaemonSpec> = specs.iter().collect();
        for e in &mut self.entries {
            if let Some(pos) = unmatched.iter().position(|s| s.same_process(&e.spec)) {
                let s = unmatched.remove(pos);
                e.spec = s.clone();
                if let (Some(sig), Run::Up { pid, .. }) = (e.spec.reload_signal, &e.run) {
                    actions.push(DaemonAction::Signal {
                        pid: *pid,
                        signal: sig,
                    });
                }
                continue;
            }
            match e.run {
                Run::Up { pid, ours, .. } if ours || e.spec.pidfile.is_some() => {
                    actions.push(DaemonAction::Signal {
                        pid,
                        signal: e.spec.stop_signal,
                    });
                    e.run = Run::Stopping {
                        pid,
                        deadline: now + mercy,
                        killed: false,
                        then: Then::Remove,
                    };
                }
                Run::Stopping { ref mut then, .. } => *then = Then::Remove,
                _ => e.removed = true,
            }
        }
        self.entries.retain(|e| !e.removed);
        for s in unmatched {
            self.add(s.clone(), now, &mut actions);
        }
        actions
    }

    /// The instance stops: dumb daemons get their stop signal; smart ones are left
    /// running for the next master, as in uWSGI.
    pub fn stop(&mut self, now: Instant) -> Vec<DaemonAction> {
        self.stopping = true;
        let mut actions = Vec::new();
        for e in &mut self.entries {
            match e.run {
                Run::Up {
                    pid, ours: true, ..
                } if e.spec.pidfile.is_none() => {
                    actions.push(DaemonAction::Signal {
                        pid,
                        signal: e.spec.stop_signal,
                    });
                    e.run = Run::Stopping {
                        pid,
                        deadline: now + self.mercy,
                        killed: false,
                        then: Then::Rest,
                    };
                }
                Run::Stopping { ref mut then, .. } => *then = Then::Rest,
                Run::Down { .. } | Run::Detaching { .. } => e.run = Run::Down { at: None },
                _ => {}
            }
        }
        actions
    }

    /// Whether every dumb daemon is gone (the master may exit).
    pub fn stopped(&self) -> bool {
        !self.entries.iter().any(|e| {
            matches!(
                e.run,
                Run::Stopping { .. } | Run::Draining { .. } | Run::Spawning
            ) || matches!(e.run, Run::Up { ours: true, .. }) && e.spec.pidfile.is_none()
        })
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut add = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for e in &self.entries {
            match e.run {
                Run::Down { at: Some(t) } if !self.stopping => add(t),
                Run::Stopping { deadline, .. } => add(deadline),
                Run::Draining {
                    deadline, recheck, ..
                } => add(deadline.min(recheck)),
                _ => {}
            }
        }
        next
    }

    /// Whether the periodic check is needed (smart daemons or `touch=` files).
    pub fn needs_check(&self) -> bool {
        !self.stopping
            && self
                .entries
                .iter()
                .any(|e| e.spec.pidfile.is_some() || !e.spec.touch.is_empty())
    }

    /// Deadlines at `now`; `group_alive` says whether a process group has members.
    pub fn tick(&mut self, now: Instant, group_alive: &dyn Fn(i32) -> bool) -> Vec<DaemonAction> {
        let mut actions = Vec::new();
        let stopping = self.stopping;
        for e in &mut self.entries {
            if let Run::Draining {
                pgid,
                deadline,
                then,
                ..
            } = e.run
            {
                if !group_alive(pgid) {
                    finish_stop(e, then, now, stopping);
                } else if now >= deadline {
                    actions.push(DaemonAction::Signal {
                        pid: pgid,
                        signal: libc::SIGKILL,
                    });
                    finish_stop(e, then, now, stopping);
                } else {
                    e.run = Run::Draining {
                        pgid,
                        deadline,
                        recheck: now + DRAIN_RECHECK,
                        then,
                    };
                }
                continue;
            }
            if let Run::Stopping {
                pid,
                deadline,
                killed,
                then,
            } = e.run
            {
                if now >= deadline && !killed {
                    actions.push(DaemonAction::Signal {
                        pid,
                        signal: libc::SIGKILL,
                    });
                    e.run = Run::Stopping {
                        pid,
                        deadline: now + KILL_WAIT,
                        killed: true,
                        then,
                    };
                } else if now >= deadline {
                    // Killed and still not reaped: forget it rather than hang the master.
                    e.run = Run::Down {
                        at: (then == Then::Respawn && !self.stopping).then_some(now),
                    };
                    e.removed = then == Then::Remove;
                }
            }
        }
        self.entries.retain(|e| !e.removed);
        actions.extend(self.due(now));
        actions
    }

    pub fn views(&self) -> Vec<DaemonView> {
        self.entries
            .iter()
            .map(|e| {
                let (pid, state) = match e.run {
                    Run::Down { .. } => (None, "down"),
                    Run::Spawning => (None, "spawning"),
                    Run::Up { pid, .. } => (Some(pid), "running"),
                    Run::Detaching { .. } => (None, "detaching"),
                    Run::Stopping { pid, .. } => (Some(pid), "stopping"),
                    Run::Draining { pgid, .. } => (Some(pgid), "stopping"),
                };
                DaemonView {
                    command: e.spec.command.clone(),
                    pid,
                    state,
                    respawns: e.spawns,
                    smart: e.spec.pidfile.is_some(),
                }
            })
            .collect()
    }
}

/// A stop is over: respawn, forget or rest as planned.
fn finish_stop(e: &mut Entry, then: Then, now: Instant, stopping: bool) {
    match then {
        Then::Respawn if !stopping => e.run = Run::Down { at: Some(now) },
        Then::Remove => {
            e.removed = true;
            e.run = Run::Down { at: None };
        }
        _ => e.run = Run::Down { at: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cmd: &str) -> DaemonSpec {
        DaemonSpec {
            command: cmd.into(),
            pidfile: None,
            daemonize: false,
            freq: 10,
            control: false,
            touch: Vec::new(),
            stop_signal: libc::SIGTERM,
            reload_signal: None,
            uid: None,
            gid: None,
            chdir: None,
            stdin: false,
            max_throttle: None,
            key: "attach-daemon".into(),
            line: 1,
        }
    }

    const MERCY: Duration = Duration::from_secs(3);

    #[test]
    fn a_dumb_daemon_starts_and_is_respawned_with_back_off() {
        let t0 = Instant::now();
        let (mut d, a) = Daemons::start(&[spec("sleep 100")], MERCY, t0);
        assert_eq!(a, vec![DaemonAction::Spawn { index: 0 }]);
        d.spawned(0, 10, t0);
        let (a, _) = d.exited(10, t0 + Duration::from_millis(10), false);
        assert_eq!(
            a,
            vec![DaemonAction::Spawn { index: 0 }],
            "first death: at once"
        );
        d.spawned(0, 11, t0);
        let (a, _) = d.exited(11, t0 + Duration::from_millis(20), false);
        assert!(a.is_empty(), "second quick death waits");
        let due = d.next_deadline().unwrap();
        assert!(due >= t0 + Duration::from_millis(900));
        assert_eq!(
            d.tick(due, &|_| false),
            vec![DaemonAction::Spawn { index: 0 }]
        );
    }

    #[test]
    fn stop_signals_dumb_daemons_then_kills_after_mercy() {
        let t0 = Instant::now();
        let mut smart = spec("memcached -d");
        smart.pidfile = Some("/run/m.pid".into());
        let (mut d, _) = Daemons::start(&[spec("a"), smart], MERCY, t0);
        d.spawned(0, 10, t0);
        d.checked(&[(1, Some(77))], &[], t0);
        let a = d.stop(t0);
        assert_eq!(
            a,
            vec![DaemonAction::Signal {
                pid: 10,
                signal: libc::SIGTERM
            }],
            "smart daemons survive"
        );
        assert!(!d.stopped());
        assert_eq!(
            d.tick(t0 + MERCY, &|_| false),
            vec![DaemonAction::Signal {
                pid: 10,
                signal: libc::SIGKILL
            }]
        );
        let (a, _) = d.exited(10, t0 + MERCY, false);
        assert!(a.is_empty(), "no respawn while stopping");
        assert!(d.stopped());
    }

    #[test]
    fn reload_keeps_an_unchanged_daemon_and_replaces_a_changed_one() {
        let t0 = Instant::now();
        let (mut d, _) = Daemons::start(&[spec("a"), spec("b")], MERCY, t0);
        d.spawned(0, 10, t0);
        d.spawned(1, 11, t0);
        let mut moved = spec("a");
        moved.line = 9;
        let a = d.reconfigure(&[moved, spec("c")], MERCY, t0);
        assert_eq!(
            a,
            vec![
                DaemonAction::Signal {
                    pid: 11,
                    signal: libc::SIGTERM
                },
                DaemonAction::Spawn { index: 2 }
            ]
        );
        let (a, _) = d.exited(11, t0, false);
        assert!(a.is_empty());
        let views = d.views();
        assert_eq!(
            views.iter().map(|v| v.command.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert_eq!(views[0].pid, Some(10));
    }

    #[test]
    fn reload_signal_goes_to_a_kept_daemon() {
        let t0 = Instant::now();
        let mut s = spec("a");
        s.reload_signal = Some(libc::SIGHUP);
        let (mut d, _) = Daemons::start(std::slice::from_ref(&s), MERCY, t0);
        d.spawned(0, 10, t0);
        assert_eq!(
            d.reconfigure(&[s], MERCY, t0),
            vec![DaemonAction::Signal {
                pid: 10,
                signal: libc::SIGHUP
            }]
        );
    }

    #[test]
    fn a_control_daemon_that_dies_stops_the_instance() {
        let t0 = Instant::now();
        let mut s = spec("a");
        s.control = true;
        let (mut d, _) = Daemons::start(&[s], MERCY, t0);
        d.spawned(0, 10, t0);
        assert_eq!(d.exited(10, t0, false).0, vec![DaemonAction::StopInstance]);
    }

    #[test]
    fn a_smart_daemon_is_adopted_from_its_pidfile_and_respawned_when_gone() {
        let t0 = Instant::now();
        let mut s = spec("memcached -d -P /run/m.pid");
        s.pidfile = Some("/run/m.pid".into());
        s.freq = 2;
        let (mut d, a) = Daemons::start(&[s], MERCY, t0);
        assert_eq!(a, vec![DaemonAction::Check]);
        assert!(d.checked(&[(0, Some(50))], &[], t0).is_empty(), "adopted");
        assert_eq!(d.views()[0].pid, Some(50));
        assert_eq!(
            d.checked(&[(0, None)], &[], t0),
            vec![DaemonAction::Spawn { index: 0 }],
            "gone: respawned (first failure: at once)"
        );
        d.spawned(0, 60, t0);
        // The launcher exits after forking the daemon: expected, not a crash.
        assert!(d.exited(60, t0, false).0.is_empty());
        assert!(d.checked(&[(0, None)], &[], t0).is_empty());
        assert_eq!(
            d.checked(&[(0, None)], &[], t0),
            vec![DaemonAction::Spawn { index: 0 }],
            "no pidfile after freq checks: did not daemonize, respawned"
        );
    }

    #[test]
    fn touch_restarts_a_daemon() {
        let t0 = Instant::now();
        let mut s = spec("a");
        s.touch = vec!["/t".into()];
        let (mut d, _) = Daemons::start(&[s], MERCY, t0);
        d.spawned(0, 10, t0);
        assert_eq!(
            d.checked(&[], &[0], t0),
            vec![DaemonAction::Signal {
                pid: 10,
                signal: libc::SIGTERM
            }]
        );
        assert_eq!(
            d.exited(10, t0, false).0,
            vec![DaemonAction::Spawn { index: 0 }]
        );
    }

    #[test]
    fn a_stop_waits_for_the_group_then_kills_it() {
        let t0 = Instant::now();
        let (mut d, _) = Daemons::start(&[spec("a")], MERCY, t0);
        d.spawned(0, 10, t0);
        d.stop(t0);
        // The shell leader died, a child that ignores SIGTERM is left.
        assert!(d.exited(10, t0, true).0.is_empty());
        assert!(!d.stopped(), "the group still has a member");
        assert!(d
            .tick(t0 + Duration::from_millis(500), &|_| true)
            .is_empty());
        assert_eq!(
            d.tick(t0 + MERCY, &|_| true),
            vec![DaemonAction::Signal {
                pid: 10,
                signal: libc::SIGKILL
            }]
        );
        assert!(d.stopped());
    }

    #[test]
    fn a_crashed_leader_takes_its_group_with_it() {
        let t0 = Instant::now();
        let (mut d, _) = Daemons::start(&[spec("a")], MERCY, t0);
        d.spawned(0, 10, t0);
        let (a, _) = d.exited(10, t0, true);
        assert_eq!(
            a,
            vec![
                DaemonAction::Signal {
                    pid: 10,
                    signal: libc::SIGKILL
                },
                DaemonAction::Spawn { index: 0 }
            ]
        );
    }
}
