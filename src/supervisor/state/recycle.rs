//! Recycling decided by the master, and `cheaper`:
//!
//! - `max-worker-lifetime`: when the oldest ready worker of the serving
//!   generation is past its lifetime (+ slot·delta, uWSGI's `(wid−1)·delta`),
//!   a replacement is started in its slot; only once that one is ready is the
//!   old worker retired gracefully (uWSGI sends SIGWINCH at once and respawns
//!   after the exit, so a slot is empty while the app boots). One recycle at a
//!   time: capacity never drops below `processes`, and is at most one above it.
//!   A replacement that fails to start is retried with the slot's back-off
//!   while the old worker serves on.
//! - `evil-reload-on-rss` / `evil-reload-on-as`: every [`MEMORY_PERIOD`] the
//!   executor reads each worker's /proc/PID/statm. A worker at or over a limit
//!   stops accepting at once (the graceful signal) and is killed if it is
//!   still there one period later; its replacement is started at once.
//!   uWSGI SIGKILLs it on the spot, failing the request in progress; a worker
//!   over its memory limit but about to finish its request is given the
//!   chance, a runaway one still goes within 3 s.
//! - `cheaper`: each [`super::CHEAPER_PERIOD`] (with the scoreboard read that
//!   harakiri uses) uWSGI's `spare` or `spare2` algorithm decides to add
//!   workers to empty ("cheaped") slots or to retire the oldest idle one.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Phase, Supervisor, Worker, WorkerState, MEMORY_PERIOD};
use crate::config::lifetimes::{Cheaper, CheaperAlgo};
use crate::supervisor::events::{Action, WorkerMemory, WorkerSignal};

/// A worker over an evil-reload limit gets this long to finish its request.
pub const EVIL_GRACE: Duration = MEMORY_PERIOD;

/// The `max-worker-lifetime` recycle in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recycle {
    pub old_pid: i32,
    pub slot: usize,
    /// The replacement died before it was ready: the next attempt (back-off).
    pub retry_at: Option<Instant>,
}

/// The cheaper algorithm's counters (uWSGI keeps them in statics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheaperCounts {
    overload: u64,
    idle: u64,
}

/// What the cheaper algorithm asks for this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start this many workers in empty slots.
    Grow(usize),
    /// Retire the oldest idle worker.
    Shrink,
    Hold,
}

/// uWSGI's `spare` (core/master_utils.c, `uwsgi_cheaper_algo_spare`), one
/// master cycle: `active` workers run, `busy` of them are in a request,
/// `cheaped` slots are empty.
pub fn spare(
    c: &Cheaper,
    counts: &mut CheaperCounts,
    active: usize,
    busy: usize,
    cheaped: usize,
) -> Decision {
    if active > busy {
        counts.overload = counts.overload.saturating_sub(1);
    } else {
        counts.overload += 1;
        counts.idle = 0;
    }
    if counts.overload >= c.overload {
        counts.overload = 0;
        let n = c.step.min(cheaped);
        return if n > 0 {
            Decision::Grow(n)
        } else {
            Decision::Hold
        };
    }
    if counts.overload == 0 {
        // "Stable": exactly one spare worker.
        if active > busy && active - busy == 1 {
            return Decision::Hold;
        }
        counts.idle += 1;
        if active > c.min && counts.idle % c.overload == 0 {
            return Decision::Shrink;
        }
    }
    Decision::Hold
}

/// uWSGI's `spare2` (`uwsgi_cheaper_algo_spare2`): keep `cheaper` idle workers.
pub fn spare2(c: &Cheaper, counts: &mut CheaperCounts, idle: usize, cheaped: usize) -> Decision {
    if idle < c.min {
        counts.idle = 0;
        let n = (c.min - idle).min(cheaped).min(c.step);
        return if n > 0 {
            Decision::Grow(n)
        } else {
            Decision::Hold
        };
    }
    if idle == c.min {
        counts.idle = 0;
        return Decision::Hold;
    }
    counts.idle += 1;
    if counts.idle < c.idle {
        return Decision::Hold;
    }
    counts.idle = 0;
    Decision::Shrink
}

/// Asks `w` to finish and exit on its own account (`why` labels its exit).
fn retire(w: &mut Worker, why: &'static str, kill_at: Instant, actions: &mut Vec<Action>) {
    w.state = WorkerState::Retiring { kill_at };
    w.retire_why = Some(why);
    actions.push(Action::Signal {
        pid: w.pid,
        signal: WorkerSignal::Graceful,
    });
}

impl Supervisor {
    /// Whether `slot` of `generation` has a live worker (booting or ready) or
    /// one on its way (asked, or held for the template).
    pub(super) fn slot_taken(&self, generation: u64, slot: usize) -> bool {
        self.pending.contains(&(generation, slot))
            || self.held.contains(&(generation, slot))
            || self.workers.iter().any(|w| {
                w.generation == generation
                    && w.slot == slot
                    && matches!(w.state, WorkerState::Booting | WorkerState::Ready)
            })
    }

    // ---- max-worker-lifetime ---------------------------------------------------

    /// The ready worker due first for its lifetime recycle and when, if a
    /// recycle may start now (serving, no reload, none in progress).
    fn next_aged(&self) -> Option<(usize, Instant)> {
        if self.phase != Phase::Running || !self.reload.is_idle() || self.recycling.is_some() {
            return None;
        }
        let plan = self.plans.get(&self.current)?;
        let lifetime = plan.lifetime?;
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                w.generation == self.current
                    && w.state == WorkerState::Ready
                    && !self.cheaped.contains(&w.slot)
            })
            .map(|(i, w)| {
                let delta = plan.lifetime_delta.saturating_mul(w.slot as u32);
                (i, w.spawned_at + lifetime + delta)
            })
            .min_by_key(|(_, at)| *at)
    }

    /// When the loop must wake for a lifetime recycle (its start or a retry).
    pub(super) fn lifetime_due(&self) -> Option<Instant> {
        match self.recycling {
            Some(r) => r.retry_at,
            None => self.next_aged().map(|(_, at)| at),
        }
    }

    pub(super) fn lifetime_tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if let Some(r) = &mut self.recycling {
            if r.retry_at.is_some_and(|t| now >= t) && self.phase == Phase::Running {
                r.retry_at = None;
                let (current, slot) = (self.current, r.slot);
                self.spawn(current, slot, actions);
            }
            return;
        }
        let Some((i, at)) = self.next_aged() else {
            return;
        };
        if now < at {
            return;
        }
        let w = &self.workers[i];
        info!(
            worker = w.slot + 1,
            pid = w.pid,
            lived_s = now.saturating_duration_since(w.spawned_at).as_secs(),
            "worker lifetime reached, starting its replacement"
        );
        self.recycling = Some(Recycle {
            old_pid: w.pid,
            slot: w.slot,
            retry_at: None,
        });
        let (generation, slot) = (w.generation, w.slot);
        self.spawn(generation, slot, actions);
    }

    /// A worker of the serving generation is ready outside a reload: if it is
    /// a lifetime replacement, the worker it replaces now leaves.
    pub(super) fn replacement_ready(
        &mut self,
        pid: i32,
        slot: usize,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(r) = self.recycling else {
            return;
        };
        if r.slot != slot || r.old_pid == pid {
            return;
        }
        self.recycling = None;
        let mercy = self.plans[&self.current].mercy;
        if let Some(old) = self.workers.iter_mut().find(|w| w.pid == r.old_pid) {
            if old.state == WorkerState::Ready {
                info!(
                    worker = slot + 1,
                    pid = old.pid,
                    replacement = pid,
                    "replacement ready, retiring the aged worker"
                );
                retire(old, "max-worker-lifetime", now + mercy, actions);
            }
        }
    }

    /// A worker died before it was ready; if it was a lifetime replacement,
    /// schedule the next attempt with the slot's back-off and return true
    /// (the aged worker serves on meanwhile).
    pub(super) fn replacement_failed(&mut self, w: &Worker, now: Instant) -> bool {
        let Some(r) = &mut self.recycling else {
            return false;
        };
        if w.generation != self.current || r.slot != w.slot || r.old_pid == w.pid {
            return false;
        }
        let lived = now.saturating_duration_since(w.spawned_at);
        let delay = self
            .slots
            .get_mut(w.slot)
            .map(|b| b.record_failure(lived))
            .unwrap_or_default();
        warn!(
            worker = w.slot + 1,
            pid = w.pid,
            delay_ms = delay.as_millis() as u64,
            "the lifetime replacement died before it was ready, the aged worker serves on"
        );
        r.retry_at = Some(now + delay);
        true
    }

    // ---- evil-reload-on-rss / -as ----------------------------------------------

    pub(super) fn evil_reload(
        &mut self,
        readings: Vec<WorkerMemory>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        for m in readings {
            let Some(i) = self.workers.iter().position(|w| w.pid == m.pid) else {
                continue;
            };
            let w = &self.workers[i];
            if w.state != WorkerState::Ready {
                continue;
            }
            let Some(plan) = self.plans.get(&w.generation) else {
                continue;
            };
            let why = if plan.evil_as > 0 && m.vsz_bytes >= plan.evil_as {
                "evil-reload-on-as"
            } else if plan.evil_rss > 0 && m.rss_bytes >= plan.evil_rss {
                "evil-reload-on-rss"
            } else {
                continue;
            };
            warn!(
                worker = w.slot + 1,
                pid = w.pid,
                rss_mb = m.rss_bytes >> 20,
                vsz_mb = m.vsz_bytes >> 20,
                why,
                "worker over its memory limit, recycling it even mid-request"
            );
            let (generation, slot) = (w.generation, w.slot);
            if self.recycling.is_some_and(|r| r.old_pid == m.pid) {
                // Its lifetime replacement, if under way, fills the slot.
                self.recycling = None;
            }
            retire(&mut self.workers[i], why, now + EVIL_GRACE, actions);
            if generation == self.current
                && !self.cheaped.contains(&slot)
                && !self.slot_taken(generation, slot)
            {
                self.spawn(generation, slot, actions);
            }
        }
    }

    // ---- cheaper ---------------------------------------------------------------

    /// One cheaper cycle over the scoreboard reading (`busy`: pids in a request).
    pub(super) fn cheaper(
        &mut self,
        busy: &BTreeSet<i32>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if self.phase != Phase::Running || !self.reload.is_idle() {
            return;
        }
        let Some(plan) = self.plans.get(&self.current) else {
            return;
        };
        let Some(c) = plan.cheaper.clone() else {
            return;
        };
        let mercy = plan.mercy;
        let current = self.current;
        let live = || {
            self.workers.iter().filter(|w| {
                w.generation == current
                    && matches!(w.state, WorkerState::Booting | WorkerState::Ready)
            })
        };
        let active: BTreeSet<usize> = live().map(|w| w.slot).collect();
        let in_request: BTreeSet<usize> = live()
            .filter(|w| busy.contains(&w.pid))
            .map(|w| w.slot)
            .collect();
        let (active, in_request) = (active.len(), in_request.len());
        let cheaped = self.cheaped.len();
        let decision = match c.algo {
            CheaperAlgo::Spare => spare(&c, &mut self.cheaper_counts, active, in_request, cheaped),
            CheaperAlgo::Spare2 => spare2(
                &c,
                &mut self.cheaper_counts,
                active.saturating_sub(in_request),
                cheaped,
            ),
        };
        match decision {
            Decision::Hold => {}
            Decision::Grow(n) => {
                let slots: Vec<usize> = self.cheaped.iter().take(n).copied().collect();
                info!(
                    active,
                    busy = in_request,
                    adding = slots.len(),
                    "cheaper: workers busy, adding workers"
                );
                for slot in slots {
                    self.cheaped.remove(&slot);
                    if let Some(b) = self.slots.get_mut(slot) {
                        b.respawn_at = None;
                    }
                    if !self.slot_taken(current, slot) {
                        self.spawn(current, slot, actions);
                    }
                }
            }
            Decision::Shrink => {
                let recycling = self.recycling.map(|r| r.old_pid);
                let oldest = self
                    .workers
                    .iter_mut()
                    .filter(|w| {
                        w.generation == current
                            && w.state == WorkerState::Ready
                            && !busy.contains(&w.pid)
                            && Some(w.pid) != recycling
                    })
                    .min_by_key(|w| w.spawned_at);
                if let Some(w) = oldest {
                    info!(
                        worker = w.slot + 1,
                        pid = w.pid,
                        active,
                        "cheaper: idle, retiring a worker"
                    );
                    let slot = w.slot;
                    retire(w, "cheaper", now + mercy, actions);
                    self.cheaped.insert(slot);
                }
            }
        }
    }
}
