//! The master's state machine: every decision, no I/O.
//!
//! [`Supervisor::handle`] takes one [`Event`] and the current instant and returns
//! the [`Action`]s the executor must carry out; [`Supervisor::next_deadline`] tells
//! the loop when to wake up with [`Event::Tick`] if nothing else happens. Nothing
//! here sleeps, reads a file or sends a signal, so every rule below has a unit test
//! that feeds events with explicit instants.
//!
//! Theory of operation:
//! - A *generation* is the set of workers started from one reading of the config.
//!   Generation 1 is started at boot; each accepted reload starts the next one.
//! - A *slot* is a position 0..processes in the current generation; a dead worker
//!   is replaced in its slot, immediately the first time and with a doubling
//!   back-off while it keeps dying young.
//! - A reload loads the config, boots a whole new generation next to the serving
//!   one and retires the old one only when every new worker is ready. If any new
//!   worker dies or the boot times out, the new generation is killed and the old
//!   one never notices. Triggers during a reload queue exactly one more.
//! - Preload (no `lazy-apps`): each generation has an app template that imports
//!   the app and forks its workers; a spawn of that generation waits (`held`)
//!   until its template is ready. A template that dies is replaced with back-off
//!   while its workers serve on; one that fails before it is ready fails its
//!   generation as a worker would. See `state/template.rs`.
//! - Recycling by age (`max-worker-lifetime`), by the master's memory check
//!   (`evil-reload-on-*`) and `cheaper`'s adaptive worker count are in
//!   `state/recycle.rs`; an aged worker's replacement is ready before it is
//!   retired, one at a time, so capacity never drops below `processes`.
//! - Stopping signals every worker and exits once none is left.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::events::*;
use super::policy::Backoff;
use super::tally::Tally;
use crate::worker::contract::ExitReason;
use template::TemplateEnd;

/// How long a generation may take from spawn to every worker ready.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// File events closer together than this make one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest we wait for a writer that opened a watched file to close it.
pub const WRITE_SETTLE_MAX: Duration = Duration::from_secs(10);
/// Workers asked to stop at once get this long before SIGKILL.
pub const FAST_STOP_GRACE: Duration = Duration::from_secs(3);
/// How often harakiri looks at the scoreboards (only when harakiri is set).
pub const HARAKIRI_PERIOD: Duration = Duration::from_secs(1);
/// Cold start gives up after this many failed attempts at one slot.
pub const COLD_START_ATTEMPTS: u32 = 5;
/// How long a harakiri's stack dump has before `harakiri-graceful-signal` is
/// sent (at most half the grace): the worker writes the dump in a few ms.
pub const DUMP_HEAD_START: Duration = Duration::from_millis(200);
/// How often `cheaper` decides (uWSGI: once per master cycle, 1 s).
pub const CHEAPER_PERIOD: Duration = Duration::from_secs(1);
/// The scoreboard read serves both harakiri and cheaper.
const SCAN_PERIOD: Duration = if HARAKIRI_PERIOD.as_nanos() < CHEAPER_PERIOD.as_nanos() {
    HARAKIRI_PERIOD
} else {
    CHEAPER_PERIOD
};
/// How often the master reads the workers' memory for `evil-reload-on-*`
/// (uWSGI's mem_collector_freq default when they are set, 3 s).
pub const MEMORY_PERIOD: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The first generation is booting; give up at `deadline`.
    Booting {
        deadline: Instant,
    },
    Running,
    /// Stopping; exit once no worker is left. At `deadline` (cleared once it
    /// has passed) every worker still there is killed.
    Stopping {
        kind: StopKind,
        why: StopWhy,
        deadline: Option<Instant>,
    },
}

/// How workers are asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// Finish the request in progress, up to `worker-reload-mercy` (SIGTERM).
    Graceful,
    /// At once, SIGKILL after [`FAST_STOP_GRACE`] (SIGINT, SIGQUIT, giving up).
    Fast,
}

/// Why the master stops, which decides its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopWhy {
    /// A stop signal: exit 0.
    Asked,
    /// The site cannot run (app never boots, crash loop at start): exit 1.
    GaveUp,
}

impl StopWhy {
    pub fn exit_code(self) -> i32 {
        match self {
            StopWhy::Asked => 0,
            StopWhy::GaveUp => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    Booting,
    Ready,
    /// Asked to finish and exit; SIGKILL at the deadline.
    Retiring {
        kill_at: Instant,
    },
    /// Past `harakiri`: told to dump its stack; the graceful signal (if set)
    /// at `graceful`'s instant, `None` once sent; SIGKILL at `kill_at`, `None`
    /// once sent.
    Harakiri {
        kill_at: Option<Instant>,
        graceful: Option<(Instant, i32)>,
    },
    /// Killed (failed generation, stop deadline, after a harakiri): waiting for its exit.
    Killed,
}

/// Where a generation's app template is (preload only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateState {
    /// [`Action::SpawnTemplate`] asked, no pid yet.
    Spawning,
    /// Running, importing the app.
    Importing,
    /// Imported; takes fork requests.
    Ready,
    /// Died; a new one starts at `respawn_at` (back-off).
    Waiting { respawn_at: Instant },
    /// Asked to exit with its generation.
    Retiring,
    /// Killed (failed generation, stop): waiting for its exit.
    Killed,
}

impl TemplateState {
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateState::Spawning => "spawning",
            TemplateState::Importing => "importing",
            TemplateState::Ready => "ready",
            TemplateState::Waiting { .. } => "waiting",
            TemplateState::Retiring => "retiring",
            TemplateState::Killed => "killed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub generation: u64,
    pub pid: Option<i32>,
    pub state: TemplateState,
    pub spawned_at: Instant,
    /// Consecutive early deaths of this generation's template.
    pub backoff: Backoff,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub pid: i32,
    pub slot: usize,
    pub generation: u64,
    pub state: WorkerState,
    pub spawned_at: Instant,
    /// Why it was retired on its own (not with its generation): the exit's
    /// metrics label (`max-worker-lifetime`, `evil-reload-on-rss`, `cheaper` …).
    pub retire_why: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ReloadState {
    Idle,
    /// Waiting for [`Event::ConfigLoaded`]; `waiters` want the outcome.
    Loading {
        generation: u64,
        waiters: Vec<RequestId>,
    },
    /// The new generation is booting; it fails at `deadline`.
    Booting {
        generation: u64,
        deadline: Instant,
        waiters: Vec<RequestId>,
    },
}

impl ReloadState {
    fn is_idle(&self) -> bool {
        matches!(self, ReloadState::Idle)
    }

    /// The generation a reload is booting, if any.
    fn booting(&self) -> Option<u64> {
        match self {
            ReloadState::Booting { generation, .. } => Some(*generation),
            _ => None,
        }
    }

    /// Ends the reload; returns who waited for it.
    fn take_waiters(&mut self) -> Vec<RequestId> {
        match std::mem::replace(self, ReloadState::Idle) {
            ReloadState::Idle => Vec::new(),
            ReloadState::Loading { waiters, .. } | ReloadState::Booting { waiters, .. } => waiters,
        }
    }
}

/// File changes waiting to become one reload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Debounce {
    #[default]
    Idle,
    /// Reload at `until` unless another change arrives first.
    Quiet { until: Instant },
    /// A writer holds a watched file open (a modify without its close): wait
    /// for it, but no longer than [`WRITE_SETTLE_MAX`] after `since`.
    Writing { since: Instant },
}

impl Debounce {
    fn due_at(self) -> Option<Instant> {
        match self {
            Debounce::Idle => None,
            Debounce::Quiet { until } => Some(until),
            Debounce::Writing { since } => Some(since + WRITE_SETTLE_MAX),
        }
    }
}

/// The one owner of the master's state.
#[derive(Debug)]
pub struct Supervisor {
    phase: Phase,
    current: u64,
    plans: BTreeMap<u64, GenerationPlan>,
    workers: Vec<Worker>,
    /// Spawns asked for and not yet answered: (generation, slot).
    pending: Vec<(u64, usize)>,
    /// Spawns of a preloaded generation waiting for its template: (generation, slot).
    held: Vec<(u64, usize)>,
    /// The app template of each preloaded generation that has one.
    templates: BTreeMap<u64, Template>,
    /// Back-off per slot of the current generation.
    slots: Vec<Backoff>,
    reload: ReloadState,
    /// A reload asked for while one runs: its waiters.
    queued: Option<Vec<RequestId>>,
    last_reload: Option<ReloadOutcome>,
    debounce: Debounce,
    harakiri_at: Option<Instant>,
    next_generation: u64,
    /// The last import traceback logged for a respawn, so a crash loop logs it once.
    last_traceback: Option<String>,
    tally: Tally,
    /// Slots of the current generation that `cheaper` keeps empty.
    cheaped: BTreeSet<usize>,
    cheaper_counts: recycle::CheaperCounts,
    /// When the master next reads the workers' memory (evil-reload only).
    memory_at: Option<Instant>,
    /// The one `max-worker-lifetime` recycle in progress.
    recycling: Option<recycle::Recycle>,
}

/// A read-only view for `status`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub phase: Phase,
    pub generation: u64,
    pub reloading: bool,
    /// The generation a reload is booting.
    pub booting: Option<u64>,
    pub workers: Vec<Worker>,
    pub templates: Vec<Template>,
    pub last_reload: Option<ReloadOutcome>,
    pub tally: Tally,
    /// Slots (0-based) `cheaper` keeps without a worker.
    pub cheaped: Vec<usize>,
}

impl Supervisor {
    /// Starts generation 1 with `plan`: asks for its workers.
    pub fn start(plan: GenerationPlan, now: Instant) -> (Self, Vec<Action>) {
        let mut sup = Supervisor {
            phase: Phase::Booting {
                deadline: now + BOOT_TIMEOUT,
            },
            current: 1,
            plans: BTreeMap::new(),
            workers: Vec::new(),
            pending: Vec::new(),
            held: Vec::new(),
            templates: BTreeMap::new(),
            slots: vec![Backoff::default(); plan.processes],
            reload: ReloadState::Idle,
            queued: None,
            last_reload: None,
            debounce: Debounce::default(),
            harakiri_at: None,
            next_generation: 2,
            last_traceback: None,
            tally: Tally::default(),
            cheaped: BTreeSet::new(),
            cheaper_counts: Default::default(),
            memory_at: None,
            recycling: None,
        };
        let (processes, initial) = (plan.processes, plan.initial_workers());
        let preload = plan.preload;
        sup.plans.insert(1, plan);
        sup.cheaped = (initial..processes).collect();
        let mut actions = Vec::new();
        if preload {
            sup.start_template(1, Backoff::default(), now, &mut actions);
        }
        for slot in 0..initial {
            sup.spawn(1, slot, &mut actions);
        }
        sup.arm_harakiri(now);
        (sup, actions)
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            phase: self.phase,
            generation: self.current,
            reloading: !self.reload.is_idle(),
            booting: self.reload.booting(),
            workers: self.workers.clone(),
            templates: self.templates.values().cloned().collect(),
            last_reload: self.last_reload.clone(),
            tally: self.tally.clone(),
            cheaped: self.cheaped.iter().copied().collect(),
        }
    }

    /// The worker record for `pid`, if it is one of ours.
    pub fn worker(&self, pid: i32) -> Option<&Worker> {
        self.workers.iter().find(|w| w.pid == pid)
    }

    /// When the loop must wake up with [`Event::Tick`] if nothing happens first.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut deadlines = Vec::new();
        match self.phase {
            Phase::Booting { deadline } => deadlines.push(deadline),
            Phase::Stopping {
                deadline: Some(deadline),
                ..
            } => deadlines.push(deadline),
            _ => {}
        }
        deadlines.extend(self.debounce.due_at());
        if let ReloadState::Booting { deadline, .. } = self.reload {
            deadlines.push(deadline);
        }
        deadlines.extend(self.slots.iter().filter_map(|s| s.respawn_at));
        deadlines.extend(self.templates.values().filter_map(|t| match t.state {
            TemplateState::Waiting { respawn_at } => Some(respawn_at),
            _ => None,
        }));
        deadlines.extend(self.workers.iter().filter_map(|w| {
            match w.state {
                WorkerState::Retiring { kill_at } => Some(kill_at),
                WorkerState::Harakiri { kill_at, graceful } => {
                    [kill_at, graceful.map(|(at, _)| at)]
                        .into_iter()
                        .flatten()
                        .min()
                }
                _ => None,
            }
        }));
        deadlines.extend(self.harakiri_at);
        deadlines.extend(self.memory_at);
        deadlines.extend(self.lifetime_due());
        deadlines.into_iter().min()
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Signal(MasterSignal::Hup) => self.request_reload(Vec::new(), &mut actions),
            Event::ReloadRequested(id) => self.request_reload(vec![id], &mut actions),
            Event::Signal(MasterSignal::Term) => {
                // A second SIGTERM during a graceful stop escalates to a fast one.
                let kind = match self.phase {
                    Phase::Stopping { .. } => StopKind::Fast,
                    _ => StopKind::Graceful,
                };
                self.begin_stop(kind, StopWhy::Asked, now, &mut actions)
            }
            Event::Signal(MasterSignal::Int) => {
                self.begin_stop(StopKind::Fast, StopWhy::Asked, now, &mut actions)
            }
            Event::Signal(MasterSignal::Usr1) => actions.push(Action::LogStats),
            Event::Signal(MasterSignal::Usr2) => actions.push(Action::ReopenLogs),
            Event::Signal(MasterSignal::Chld) => actions.push(Action::ReapOrphans),
            Event::StatusRequested(id) => actions.push(Action::ReplyStatus { request: id }),
            Event::FilesChanged { writing } => self.files_changed(writing, now),
            Event::ConfigLoaded { generation, result } => {
                self.config_loaded(generation, result, now, &mut actions)
            }
            Event::Spawned {
                slot,
                generation,
                pid,
            } => self.spawned(slot, generation, pid, now, &mut actions),
            Event::SpawnFailed {
                slot,
                generation,
                reason,
            } => {
                self.pending.retain(|p| *p != (generation, slot));
                let reason = format!("spawning worker {} failed: {reason}", slot + 1);
                self.slot_failed(
                    generation,
                    slot,
                    reason,
                    Some(Duration::ZERO),
                    now,
                    &mut actions,
                );
            }
            Event::WorkerReady { pid } => self.worker_ready(pid, now, &mut actions),
            Event::TemplateSpawned { generation, pid } => {
                self.template_spawned(generation, pid, &mut actions)
            }
            Event::TemplateReady { generation, pid } => {
                self.template_ready(generation, pid, &mut actions)
            }
            Event::TemplateExited {
                generation,
                pid,
                reason,
                detail,
            } => self.template_exited(generation, pid, reason, detail, now, &mut actions),
            Event::WorkerExited {
                pid,
                reason,
                detail,
            } => self.worker_exited(pid, reason, detail, now, &mut actions),
            Event::BusyWorkers(busy) => {
                let busy_pids: BTreeSet<i32> = busy.iter().map(|b| b.pid).collect();
                self.harakiri(busy, now, &mut actions);
                self.cheaper(&busy_pids, now, &mut actions);
            }
            Event::WorkerMemory(readings) => self.evil_reload(readings, now, &mut actions),
            Event::Tick => self.tick(now, &mut actions),
        }
        self.maybe_exit(&mut actions);
        actions
    }

    // ---- reload ----------------------------------------------------------------

    fn files_changed(&mut self, writing: bool, now: Instant) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        self.debounce = match (writing, self.debounce) {
            (true, Debounce::Writing { since }) => Debounce::Writing { since },
            (true, _) => Debounce::Writing { since: now },
            (false, _) => Debounce::Quiet {
                until: now + DEBOUNCE,
            },
        };
    }

    fn request_reload(&mut self, waiters: Vec<RequestId>, actions: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            if !waiters.is_empty() {
                actions.push(Action::ReplyReload {
                    requests: waiters,
                    outcome: ReloadOutcome::Aborted,
                });
            }
            return;
        }
        if matches!(self.phase, Phase::Booting { .. }) || !self.reload.is_idle() {
            debug!("reload queued behind the one in progress");
            self.queued.get_or_insert_with(Vec::new).extend(waiters);
            return;
        }
        info!(generation = self.current, "reload requested");
        let generation = self.next_generation;
        self.next_generation += 1;
        self.reload = ReloadState::Loading {
            generation,
            waiters,
        };
        actions.push(Action::Notify(Lifecycle::Reloading));
        actions.push(Action::LoadConfig { generation });
    }

    fn config_loaded(
        &mut self,
        generation: u64,
        result: Result<GenerationPlan, String>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let ReloadState::Loading {
            generation: loading,
            waiters,
        } = &mut self.reload
        else {
            return;
        };
        if *loading != generation {
            return;
        }
        let waiters = std::mem::take(waiters);
        match result {
            Err(reason) => {
                error!(%reason, generation = self.current, "reload rejected, the running generation keeps serving");
                self.reload = ReloadState::Idle;
                self.finish_reload(waiters, ReloadOutcome::Rejected { reason }, actions);
            }
            Ok(plan) => {
                info!(
                    generation,
                    processes = plan.processes,
                    "starting new generation"
                );
                let first_slots = if plan.one_by_one {
                    1.min(plan.initial_workers())
                } else {
                    plan.initial_workers()
                };
                let preload = plan.preload;
                self.plans.insert(generation, plan);
                self.reload = ReloadState::Booting {
                    generation,
                    deadline: now + BOOT_TIMEOUT,
                    waiters,
                };
                if preload {
                    self.start_template(generation, Backoff::default(), now, actions);
                }
                for slot in 0..first_slots {
                    self.spawn(generation, slot, actions);
                }
            }
        }
    }

    /// Answers `waiters` (the reload state is already idle) and starts the
    /// reload queued behind this one, if any.
    fn finish_reload(
        &mut self,
        waiters: Vec<RequestId>,
        outcome: ReloadOutcome,
        actions: &mut Vec<Action>,
    ) {
        match outcome {
            ReloadOutcome::Serving { .. } => self.tally.reloads_ok += 1,
            ReloadOutcome::Rejected { .. } => self.tally.reloads_rejected += 1,
            ReloadOutcome::Failed { .. } => self.tally.reloads_failed += 1,
            ReloadOutcome::Aborted => {}
        }
        actions.push(Action::ReplyReload {
            requests: waiters,
            outcome: outcome.clone(),
        });
        self.last_reload = Some(outcome);
        actions.push(Action::Notify(Lifecycle::Ready));
        if let Some(waiters) = self.queued.take() {
            self.request_reload(waiters, actions);
        }
    }

    fn fail_reload(&mut self, reason: String, actions: &mut Vec<Action>) {
        let Some(generation) = self.reload.booting() else {
            return;
        };
        let waiters = self.reload.take_waiters();
        error!(generation, %reason, "new generation failed to boot, the running generation keeps serving");
        for w in self
            .workers
            .iter_mut()
            .filter(|w| w.generation == generation)
        {
            if w.state != WorkerState::Killed {
                kill(w, actions);
            }
        }
        self.end_templates(|g| g == generation, TemplateEnd::Kill, actions);
        self.plans.remove(&generation);
        actions.push(Action::Release { generation });
        self.finish_reload(
            waiters,
            ReloadOutcome::Failed { generation, reason },
            actions,
        );
    }

    /// Every worker of the booting generation is ready (or, one by one, another
    /// slot is): retire what it replaces.
    fn new_worker_ready(
        &mut self,
        generation: u64,
        slot: usize,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let plan = self.plans[&generation].clone();
        if plan.one_by_one {
            let (current, old_mercy) = (self.current, self.plans[&self.current].mercy);
            self.retire_where(
                |w| w.generation == current && w.slot == slot,
                now + old_mercy,
                actions,
            );
            if slot + 1 < plan.initial_workers() {
                self.spawn(generation, slot + 1, actions);
                return;
            }
        }
        let ready = self
            .workers
            .iter()
            .filter(|w| w.generation == generation && w.state == WorkerState::Ready)
            .count();
        if ready < plan.initial_workers() {
            return;
        }
        let old = self.current;
        let old_mercy = self.plans[&old].mercy;
        self.retire_where(|w| w.generation != generation, now + old_mercy, actions);
        self.end_templates(|g| g != generation, TemplateEnd::Retire, actions);
        self.current = generation;
        self.slots = vec![Backoff::default(); plan.processes];
        self.cheaped = (plan.initial_workers()..plan.processes).collect();
        self.cheaper_counts = Default::default();
        self.recycling = None;
        self.plans.remove(&old);
        actions.push(Action::Activate { generation });
        actions.push(Action::Release { generation: old });
        info!(generation, previous = old, "new generation serving");
        self.arm_harakiri(now);
        let waiters = self.reload.take_waiters();
        self.finish_reload(waiters, ReloadOutcome::Serving { generation }, actions);
    }

    fn retire_where(
        &mut self,
        pred: impl Fn(&Worker) -> bool,
        kill_at: Instant,
        actions: &mut Vec<Action>,
    ) {
        for w in self.workers.iter_mut() {
            if pred(w) && matches!(w.state, WorkerState::Booting | WorkerState::Ready) {
                w.state = WorkerState::Retiring { kill_at };
                actions.push(Action::Signal {
                    pid: w.pid,
                    signal: WorkerSignal::Graceful,
                });
            }
        }
    }

    // ---- workers ---------------------------------------------------------------

    fn spawn(&mut self, generation: u64, slot: usize, actions: &mut Vec<Action>) {
        let preload = self.plans.get(&generation).is_some_and(|p| p.preload);
        let template_ready = self
            .templates
            .get(&generation)
            .is_some_and(|t| t.state == TemplateState::Ready);
        if preload && !template_ready {
            // Forked once the template has imported the app (or replaced).
            if !self.held.contains(&(generation, slot)) {
                self.held.push((generation, slot));
            }
            return;
        }
        self.pending.push((generation, slot));
        actions.push(Action::Spawn { slot, generation });
    }

    fn spawned(
        &mut self,
        slot: usize,
        generation: u64,
        pid: i32,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        self.pending.retain(|p| *p != (generation, slot));
        self.tally.spawns += 1;
        let mut state = WorkerState::Booting;
        // A spawn answered after its generation was abandoned or the master began
        // to stop: the process exists, so stop it rather than lose track of it.
        if !self.plans.contains_key(&generation) || matches!(self.phase, Phase::Stopping { .. }) {
            state = WorkerState::Killed;
            actions.push(Action::Signal {
                pid,
                signal: WorkerSignal::Kill,
            });
        }
        debug!(worker = slot + 1, pid, generation, "worker spawned");
        self.workers.push(Worker {
            pid,
            slot,
            generation,
            state,
            spawned_at: now,
            retire_why: None,
        });
    }

    fn worker_ready(&mut self, pid: i32, now: Instant, actions: &mut Vec<Action>) {
        let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        if w.state != WorkerState::Booting {
            return;
        }
        w.state = WorkerState::Ready;
        let (generation, slot) = (w.generation, w.slot);
        info!(worker = slot + 1, pid, generation, "worker ready");
        if matches!(self.phase, Phase::Booting { .. }) && generation == self.current {
            let ready = self
                .workers
                .iter()
                .filter(|w| w.state == WorkerState::Ready)
                .count();
            if ready == self.plans[&self.current].processes - self.cheaped.len() {
                self.phase = Phase::Running;
                info!(generation, workers = ready, "serving");
                actions.push(Action::Notify(Lifecycle::Ready));
                if let Some(waiters) = self.queued.take() {
                    self.request_reload(waiters, actions);
                }
            }
        } else if self.reload.booting() == Some(generation) {
            self.new_worker_ready(generation, slot, now, actions);
        } else if generation == self.current {
            self.replacement_ready(pid, slot, now, actions);
        }
    }

    fn worker_exited(
        &mut self,
        pid: i32,
        reason: ExitReason,
        detail: Option<String>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
            return;
        };
        let w = self.workers.remove(index);
        let stopping = matches!(self.phase, Phase::Stopping { .. });
        if self.recycling.as_ref().is_some_and(|r| r.old_pid == pid) {
            // The aged worker left before its replacement was ready: the
            // replacement (pending or booting) now simply fills the slot.
            self.recycling = None;
        }
        self.tally.exited(match (&w.state, reason) {
            (WorkerState::Harakiri { .. }, _) => "harakiri",
            _ if w.retire_why.is_some() => w.retire_why.unwrap_or("reload"),
            (_, ExitReason::Recycled(why)) => why,
            _ if stopping => "stop",
            (WorkerState::Retiring { .. }, _) => "reload",
            (WorkerState::Killed, _) => "killed",
            (_, ExitReason::AppLoadFailed) => "boot-failed",
            _ => "crash",
        });
        let expected = matches!(
            w.state,
            WorkerState::Retiring { .. } | WorkerState::Harakiri { .. } | WorkerState::Killed
        ) || stopping;
        if expected {
            info!(
                worker = w.slot + 1,
                pid,
                generation = w.generation,
                ?reason,
                "worker exited"
            );
            return;
        }
        let describe = || match (&reason, &detail) {
            (ExitReason::AppLoadFailed, Some(d)) => format!("the app failed to load:\n{d}"),
            (ExitReason::CheckFailed, Some(d)) => format!("the reload check failed: {d}"),
            (ExitReason::AppLoadFailed, None) => "the app failed to load".to_string(),
            (r, _) => format!(
                "worker {} (pid {pid}) died before it was ready: {r:?}",
                w.slot + 1
            ),
        };
        if self.reload.booting() == Some(w.generation) {
            self.fail_reload(describe(), actions);
            return;
        }
        if w.generation != self.current {
            // An old generation's worker during a one-by-one reload: its slot is
            // taken over by the new generation, so it is not replaced.
            warn!(
                worker = w.slot + 1,
                pid,
                generation = w.generation,
                ?reason,
                "worker of a previous generation died"
            );
            return;
        }
        if matches!(self.phase, Phase::Booting { .. })
            && matches!(reason, ExitReason::AppLoadFailed | ExitReason::CheckFailed)
        {
            error!(
                traceback = %detail.as_deref().unwrap_or("(none)"),
                "the app failed to load or its check failed at start, giving up"
            );
            self.begin_stop(StopKind::Fast, StopWhy::GaveUp, now, actions);
            return;
        }
        match reason {
            ExitReason::Recycled(why) => info!(worker = w.slot + 1, pid, why, "worker recycled"),
            ExitReason::AppLoadFailed | ExitReason::CheckFailed
                if detail != self.last_traceback =>
            {
                // Code changed on disk under a running generation: say why once,
                // not at every back-off retry.
                warn!(
                    worker = w.slot + 1,
                    pid,
                    traceback = %detail.as_deref().unwrap_or("(none)"),
                    "a respawned worker failed to load the app"
                );
                self.last_traceback = detail.clone();
            }
            _ => warn!(
                worker = w.slot + 1,
                pid,
                generation = w.generation,
                ?reason,
                "worker died"
            ),
        }
        if self.replacement_failed(&w, now) {
            return;
        }
        // A recycled worker is replaced at once; a dead one goes through back-off.
        let lived = match reason {
            ExitReason::Recycled(_) => None,
            _ => Some(now.saturating_duration_since(w.spawned_at)),
        };
        self.slot_failed(w.generation, w.slot, describe(), lived, now, actions);
    }

    /// A worker of `generation` in `slot` is gone (or never started): replace it
    /// as the back-off policy says, or give up on what it belonged to. `lived` is
    /// how long the dead worker ran; `None` for a planned recycle.
    fn slot_failed(
        &mut self,
        generation: u64,
        slot: usize,
        reason: String,
        lived: Option<Duration>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if self.reload.booting() == Some(generation) {
            self.fail_reload(reason, actions);
            return;
        }
        if generation != self.current || matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        // During a one-by-one reload a slot already handed to the new generation
        // stays with it.
        if let Some(g) = self.reload.booting() {
            if self
                .workers
                .iter()
                .any(|w| w.generation == g && w.slot == slot)
            {
                return;
            }
        }
        // `cheaper` keeps this slot empty; or another worker already holds or
        // is about to hold it (a lifetime replacement, the aged worker it
        // replaces, a harakiri's replacement).
        if self.cheaped.contains(&slot) || self.slot_taken(generation, slot) {
            return;
        }
        let Some(backoff) = self.slots.get_mut(slot) else {
            return;
        };
        let delay = match lived {
            None => Duration::ZERO,
            Some(lived) => backoff.record_failure(lived),
        };
        if matches!(self.phase, Phase::Booting { .. }) && backoff.failures > COLD_START_ATTEMPTS {
            error!(worker = slot + 1, attempts = backoff.failures, %reason, "workers keep dying at start, giving up");
            self.begin_stop(StopKind::Fast, StopWhy::GaveUp, now, actions);
            return;
        }
        if delay.is_zero() {
            self.spawn(generation, slot, actions);
        } else {
            warn!(
                worker = slot + 1,
                delay_ms = delay.as_millis() as u64,
                "worker keeps dying, delaying its respawn"
            );
            backoff.respawn_at = Some(now + delay);
        }
    }

    /// A request past `harakiri`: the worker is told to dump the stuck
    /// request's stack and answer 504 (and gets the graceful signal when
    /// `harakiri-graceful-timeout` is set), then SIGKILL after the grace. Its
    /// slot is refilled at once, so capacity does not wait for the kill.
    fn harakiri(&mut self, busy: Vec<BusyWorker>, now: Instant, actions: &mut Vec<Action>) {
        for b in busy {
            let Some(w) = self.workers.iter_mut().find(|w| w.pid == b.pid) else {
                continue;
            };
            let Some(plan) = self.plans.get(&w.generation) else {
                continue;
            };
            let Some(limit) = plan.harakiri else {
                continue;
            };
            if b.age >= limit
                && matches!(w.state, WorkerState::Ready | WorkerState::Retiring { .. })
            {
                error!(
                    worker = w.slot + 1,
                    pid = w.pid,
                    request = %b.request,
                    age_ms = b.age.as_millis() as u64,
                    grace_ms = plan.harakiri_grace.as_millis() as u64,
                    "harakiri: request exceeded its time limit, dumping its stack, then killing the worker"
                );
                self.tally.harakiri += 1;
                // The graceful signal waits for the dump: an app handler that
                // raises into the stuck thread would otherwise unwind it before
                // its stack is read.
                let graceful = plan
                    .harakiri_graceful_signal
                    .map(|sig| (now + DUMP_HEAD_START.min(plan.harakiri_grace / 2), sig));
                w.state = WorkerState::Harakiri {
                    kill_at: Some(now + plan.harakiri_grace),
                    graceful,
                };
                actions.push(Action::Signal {
                    pid: w.pid,
                    signal: WorkerSignal::HarakiriDump,
                });
                // Killed on purpose: replace it at once, not as a crash.
                if w.generation == self.current && !matches!(self.phase, Phase::Stopping { .. }) {
                    let (generation, slot) = (w.generation, w.slot);
                    // Unless a lifetime replacement is already on its way there.
                    if !self.slot_taken(generation, slot) {
                        self.spawn(generation, slot, actions);
                    }
                }
            }
        }
    }

    // ---- stop ------------------------------------------------------------------

    fn begin_stop(
        &mut self,
        kind: StopKind,
        why: StopWhy,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if let Phase::Stopping {
            kind: StopKind::Fast,
            ..
        } = self.phase
        {
            return;
        }
        let why = match self.phase {
            Phase::Stopping { why: old, .. } => old.max(why),
            _ => why,
        };
        let fast = kind == StopKind::Fast;
        info!(fast, "stopping");
        // Only the first stop closes the listeners; an escalation finds them closed.
        if !matches!(self.phase, Phase::Stopping { .. }) {
            actions.push(Action::Notify(Lifecycle::Stopping));
            actions.push(Action::CloseListeners);
        }
        if !self.reload.is_idle() || self.queued.is_some() {
            let mut waiters = self.reload.take_waiters();
            waiters.extend(self.queued.take().unwrap_or_default());
            actions.push(Action::ReplyReload {
                requests: waiters,
                outcome: ReloadOutcome::Aborted,
            });
        }
        self.debounce = Debounce::default();
        for s in self.slots.iter_mut() {
            s.respawn_at = None;
        }
        self.held.clear();
        // A template has nothing to finish: its workers serve on without it.
        self.end_templates(|_| true, TemplateEnd::Kill, actions);
        self.harakiri_at = None;
        self.memory_at = None;
        let mercy = self
            .plans
            .get(&self.current)
            .map(|p| p.mercy)
            .unwrap_or(FAST_STOP_GRACE);
        let (signal, grace) = match kind {
            StopKind::Fast => (WorkerSignal::Now, FAST_STOP_GRACE),
            StopKind::Graceful => (WorkerSignal::Graceful, mercy),
        };
        self.phase = Phase::Stopping {
            kind,
            why,
            deadline: Some(now + grace),
        };
        for w in self.workers.iter_mut() {
            match w.state {
                WorkerState::Killed => {}
                // Nothing to finish while importing the app: do not make it print
                // a KeyboardInterrupt traceback over the reason we are stopping.
                WorkerState::Booting => {
                    kill(w, actions);
                }
                _ => actions.push(Action::Signal { pid: w.pid, signal }),
            }
        }
    }

    fn maybe_exit(&mut self, actions: &mut Vec<Action>) {
        if let Phase::Stopping { why, .. } = self.phase {
            if self.workers.is_empty()
                && self.pending.is_empty()
                && self.templates.is_empty()
                && !actions.iter().any(|a| matches!(a, Action::Exit(_)))
            {
                actions.push(Action::Exit(why.exit_code()));
            }
        }
    }

    // ---- timers ----------------------------------------------------------------

    /// The periodic checks, only while a plan needs them (the master stays
    /// idle otherwise): the scoreboard read for harakiri and cheaper, the
    /// memory read for evil-reload.
    fn arm_harakiri(&mut self, now: Instant) {
        if self
            .plans
            .values()
            .any(|p| p.harakiri.is_some() || p.cheaper.is_some())
        {
            self.harakiri_at.get_or_insert(now + SCAN_PERIOD);
        }
        if self.plans.values().any(|p| p.evil_rss > 0 || p.evil_as > 0) {
            self.memory_at.get_or_insert(now + MEMORY_PERIOD);
        }
    }

    fn tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.debounce.due_at().is_some_and(|t| now >= t) {
            self.debounce = Debounce::Idle;
            self.request_reload(Vec::new(), actions);
        }
        if matches!(self.phase, Phase::Booting { deadline } if now >= deadline) {
            error!(
                timeout_s = BOOT_TIMEOUT.as_secs(),
                "the first generation did not become ready in time, giving up"
            );
            self.begin_stop(StopKind::Fast, StopWhy::GaveUp, now, actions);
        }
        if let ReloadState::Booting { deadline, .. } = &self.reload {
            if now >= *deadline {
                self.fail_reload(
                    format!(
                        "the new workers were not ready within {} s",
                        BOOT_TIMEOUT.as_secs()
                    ),
                    actions,
                );
            }
        }
        let current = self.current;
        let due: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.respawn_at.is_some_and(|t| now >= t))
            .map(|(i, _)| i)
            .collect();
        for slot in due {
            self.slots[slot].respawn_at = None;
            self.spawn(current, slot, actions);
        }
        self.templates_due(now, actions);
        for w in self.workers.iter_mut() {
            match w.state {
                WorkerState::Retiring { kill_at } if now >= kill_at => {
                    warn!(
                        worker = w.slot + 1,
                        pid = w.pid,
                        "worker took too long to finish, killing it"
                    );
                    kill(w, actions);
                }
                WorkerState::Harakiri {
                    ref mut kill_at,
                    ref mut graceful,
                } => {
                    if let Some((at, sig)) = *graceful {
                        if now >= at {
                            *graceful = None;
                            actions.push(Action::Signal {
                                pid: w.pid,
                                signal: WorkerSignal::HarakiriGraceful(sig),
                            });
                        }
                    }
                    if kill_at.is_some_and(|at| now >= at) {
                        warn!(
                            worker = w.slot + 1,
                            pid = w.pid,
                            "harakiri: killing the worker"
                        );
                        // Stays a harakiri, so its exit is counted as one.
                        *kill_at = None;
                        actions.push(Action::Signal {
                            pid: w.pid,
                            signal: WorkerSignal::Kill,
                        });
                    }
                }
                _ => {}
            }
        }
        let stop_due = matches!(self.phase, Phase::Stopping { deadline: Some(t), .. } if now >= t);
        if stop_due {
            if let Phase::Stopping { deadline, .. } = &mut self.phase {
                *deadline = None;
            }
            for w in self
                .workers
                .iter_mut()
                .filter(|w| w.state != WorkerState::Killed)
            {
                warn!(
                    worker = w.slot + 1,
                    pid = w.pid,
                    "worker still running at the stop deadline, killing it"
                );
                kill(w, actions);
            }
            self.end_templates(|_| true, TemplateEnd::Kill, actions);
        }
        if self.harakiri_at.is_some_and(|t| now >= t) {
            self.harakiri_at = Some(now + SCAN_PERIOD);
            if self.workers.iter().any(|w| w.state == WorkerState::Ready) {
                actions.push(Action::CheckHarakiri);
            }
        }
        if self.memory_at.is_some_and(|t| now >= t) {
            self.memory_at = Some(now + MEMORY_PERIOD);
            if self.workers.iter().any(|w| w.state == WorkerState::Ready) {
                actions.push(Action::CheckMemory);
            }
        }
        self.lifetime_tick(now, actions);
    }
}

/// Marks `w` killed and sends it SIGKILL; its exit then counts as expected.
fn kill(w: &mut Worker, actions: &mut Vec<Action>) {
    w.state = WorkerState::Killed;
    actions.push(Action::Signal {
        pid: w.pid,
        signal: WorkerSignal::Kill,
    });
}

#[cfg(test)]
mod fixtures;
mod recycle;
#[cfg(test)]
mod recycle_tests;
mod template;
#[cfg(test)]
mod template_tests;
#[cfg(test)]
mod tests;
