//! The status document: one typed value that the control socket (`status`,
//! `status --json`), the stats server (converted to uWSGI's layout in
//! `stats::uwsgi_json`) and SIGUSR1's log summary all read. Its JSON form is what
//! `amy-emperor status --json` prints; field names and meanings are kept stable
//! for scripts, and new fields are only ever added.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::events::ReloadOutcome;
use super::state::{Phase, Snapshot, WorkerState};
use crate::scoreboard::Reading;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Always true in a master's answer (`status` prints `false` documents itself).
    pub running: bool,
    pub pid: u32,
    pub ini: PathBuf,
    pub phase: PhaseName,
    pub uptime_s: f64,
    /// The generation that serves (or boots, before the first is ready).
    pub generation: u64,
    pub reloading: bool,
    /// Every generation that still has workers or is being started.
    #[serde(default)]
    pub generations: Vec<GenerationStatus>,
    pub workers: Vec<WorkerStatus>,
    /// The app template of each preloaded generation (none with `lazy-apps`);
    /// it serves no request, so it is not among the workers.
    #[serde(default)]
    pub templates: Vec<TemplateStatus>,
    pub sockets: Vec<SocketStatus>,
    pub master_rss_bytes: u64,
    pub last_reload: Option<ReloadReport>,
    pub last_reload_unix: Option<u64>,
    /// Attached daemons (`attach-daemon` …).
    #[serde(default)]
    pub daemons: Vec<crate::around::DaemonStatus>,
    /// Cron jobs (`cron`, `cron2`, `unique-cron`).
    #[serde(default)]
    pub crons: Vec<crate::around::CronStatus>,
    /// `cheaper`: the worker ids (1-based slots) that have no worker now.
    #[serde(default)]
    pub cheaped: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseName {
    Booting,
    Running,
    Stopping,
}

impl PhaseName {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Booting => "booting",
            PhaseName::Running => "running",
            PhaseName::Stopping => "stopping",
        }
    }
}

/// One generation: the workers started from one reading of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationStatus {
    pub generation: u64,
    pub role: GenerationRole,
    /// Its workers the master knows of (booting, serving or retiring).
    pub workers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerationRole {
    /// The current generation (serving, or booting at start).
    Current,
    /// Started by a reload, not yet ready.
    Booting,
    /// Replaced; its workers finish and leave.
    Retiring,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The slot, 1-based (uWSGI's worker id).
    pub id: usize,
    pub pid: i32,
    pub generation: u64,
    pub state: WorkerStateName,
    pub requests: u64,
    pub exceptions: u64,
    pub rss_bytes: u64,
    /// How long the request in progress has run; `None` when idle.
    pub request_age_s: Option<f64>,
    /// Bytes written to clients (uWSGI's `tx`).
    pub tx_bytes: u64,
    /// Seconds spent in requests (uWSGI's `running_time`).
    pub busy_s: f64,
    /// Workers this slot has had, this one included (uWSGI's `respawn_count`).
    pub respawn_count: u64,
    /// Requests of this slot cut by harakiri so far (uWSGI's `harakiri_count`).
    #[serde(default)]
    pub harakiri_count: u64,
    /// When it was spawned, in Unix seconds (uWSGI's `last_spawn`).
    pub spawned_unix: Option<u64>,
    /// It parses uwsgi vars with the native module (off: the stdlib parser,
    /// `AMY_EMPEROR_NO_NATIVE=1` or a Python that cannot load it).
    #[serde(default)]
    pub native: bool,
}

/// A preloaded generation's app template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateStatus {
    pub generation: u64,
    /// `None` while it is being spawned or waits for its back-off.
    pub pid: Option<i32>,
    /// spawning, importing, ready, waiting, retiring, killed.
    pub state: String,
    pub rss_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStateName {
    Booting,
    Idle,
    Busy,
    Retiring,
    Killed,
}

impl WorkerStateName {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStateName::Booting => "booting",
            WorkerStateName::Idle => "idle",
            WorkerStateName::Busy => "busy",
            WorkerStateName::Retiring => "retiring",
            WorkerStateName::Killed => "killed",
        }
    }

    /// Takes requests from the shared sockets (uWSGI's `accepting`).
    pub fn accepting(self) -> bool {
        matches!(self, WorkerStateName::Idle | WorkerStateName::Busy)
    }
}

/// A listening socket the master holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketStatus {
    /// The path, or `host:port` with the real port.
    pub name: String,
    /// `uwsgi` or `http`.
    pub proto: String,
}

/// How a reload ended: what `reload` waits for and `status` shows as `last_reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub result: ReloadResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadResult {
    Serving,
    Rejected,
    Failed,
    Aborted,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Serving => "serving",
            ReloadResult::Rejected => "rejected",
            ReloadResult::Failed => "failed",
            ReloadResult::Aborted => "aborted",
        }
    }
}

impl From<&ReloadOutcome> for ReloadReport {
    fn from(outcome: &ReloadOutcome) -> Self {
        let (result, generation, reason) = match outcome {
            ReloadOutcome::Serving { generation } => {
                (ReloadResult::Serving, Some(*generation), None)
            }
            ReloadOutcome::Rejected { reason } => {
                (ReloadResult::Rejected, None, Some(reason.clone()))
            }
            ReloadOutcome::Failed { generation, reason } => (
                ReloadResult::Failed,
                Some(*generation),
                Some(reason.clone()),
            ),
            ReloadOutcome::Aborted => (
                ReloadResult::Aborted,
                None,
                Some("the master is stopping".to_owned()),
            ),
        };
        ReloadReport {
            result,
            generation,
            reason,
        }
    }
}

/// What the executor knows of one worker process beyond the state machine.
#[derive(Debug, Clone, Default)]
pub struct WorkerFacts {
    pub reading: Reading,
    pub spawns: u64,
    /// Harakiris of its slot so far.
    pub harakiris: u64,
    pub rss_bytes: u64,
}

/// The master-level facts the state machine does not hold.
pub struct MasterFacts {
    pub ini: PathBuf,
    pub pid: u32,
    pub uptime: Duration,
    pub sockets: Vec<SocketStatus>,
    pub master_rss_bytes: u64,
    pub last_reload_at: Option<SystemTime>,
    /// RSS of the template processes, by pid.
    pub template_rss: Vec<(i32, u64)>,
}

/// Builds the document from the state machine's snapshot and the executor's
/// facts. `now` is the scoreboard clock ([`crate::scoreboard::monotonic_now`]);
/// `instant_now` and `wall_now` place `spawned_at` on the Unix clock.
pub fn build(
    snap: &Snapshot,
    master: MasterFacts,
    worker: impl Fn(i32) -> Option<WorkerFacts>,
    now: f64,
    instant_now: Instant,
    wall_now: SystemTime,
) -> Status {
    let workers: Vec<WorkerStatus> = snap
        .workers
        .iter()
        .map(|w| {
            let facts = worker(w.pid).unwrap_or_default();
            let age = facts.reading.request_age(now);
            let state = match (&w.state, age) {
                (WorkerState::Booting, _) => WorkerStateName::Booting,
                (WorkerState::Ready, Some(_)) => WorkerStateName::Busy,
                (WorkerState::Ready, None) => WorkerStateName::Idle,
                (WorkerState::Retiring { .. }, _) => WorkerStateName::Retiring,
                (WorkerState::Killed | WorkerState::Harakiri { .. }, _) => WorkerStateName::Killed,
            };
            let lived = instant_now.saturating_duration_since(w.spawned_at);
            WorkerStatus {
                id: w.slot + 1,
                pid: w.pid,
                generation: w.generation,
                state,
                requests: facts.reading.requests,
                exceptions: facts.reading.exceptions,
                rss_bytes: facts.rss_bytes,
                request_age_s: age.map(|a| a.as_secs_f64()),
                tx_bytes: facts.reading.tx_bytes,
                busy_s: facts.reading.busy_seconds,
                respawn_count: if facts.spawns == 0 { 1 } else { facts.spawns },
                harakiri_count: facts.harakiris,
                spawned_unix: unix_secs(wall_now.checked_sub(lived)),
                native: facts.reading.native,
            }
        })
        .collect();
    let phase = match snap.phase {
        Phase::Booting { .. } => PhaseName::Booting,
        Phase::Running => PhaseName::Running,
        Phase::Stopping { .. } => PhaseName::Stopping,
    };
    Status {
        running: true,
        pid: master.pid,
        ini: master.ini,
        phase,
        uptime_s: master.uptime.as_secs_f64(),
        generation: snap.generation,
        reloading: snap.reloading,
        generations: generations_of(snap),
        workers,
        cheaped: snap.cheaped.iter().map(|s| s + 1).collect(),
        templates: snap
            .templates
            .iter()
            .map(|t| TemplateStatus {
                generation: t.generation,
                pid: t.pid,
                state: t.state.as_str().to_string(),
                rss_bytes: t
                    .pid
                    .and_then(|pid| master.template_rss.iter().find(|(p, _)| *p == pid))
                    .map(|(_, rss)| *rss)
                    .unwrap_or(0),
            })
            .collect(),
        sockets: master.sockets,
        master_rss_bytes: master.master_rss_bytes,
        last_reload: snap.last_reload.as_ref().map(ReloadReport::from),
        last_reload_unix: unix_secs(master.last_reload_at),
        daemons: Vec::new(),
        crons: Vec::new(),
    }
}

fn generations_of(snap: &Snapshot) -> Vec<GenerationStatus> {
    let mut ids: Vec<u64> = snap.workers.iter().map(|w| w.generation).collect();
    ids.push(snap.generation);
    ids.extend(snap.booting);
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|generation| GenerationStatus {
            generation,
            role: if generation == snap.generation {
                GenerationRole::Current
            } else if Some(generation) == snap.booting {
                GenerationRole::Booting
            } else {
                GenerationRole::Retiring
            },
            workers: snap
                .workers
                .iter()
                .filter(|w| w.generation == generation)
                .count(),
        })
        .collect()
}

fn unix_secs(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::state::Worker;

    fn snapshot() -> Snapshot {
        let now = Instant::now();
        let worker = |pid, slot, generation, state| Worker {
            pid,
            slot,
            generation,
            state,
            spawned_at: now,
            retire_why: None,
        };
        Snapshot {
            phase: Phase::Running,
            generation: 2,
            reloading: false,
            booting: None,
            workers: vec![
                worker(101, 0, 1, WorkerState::Retiring { kill_at: now }),
                worker(201, 0, 2, WorkerState::Ready),
                worker(202, 1, 2, WorkerState::Ready),
            ],
            templates: Vec::new(),
            last_reload: Some(ReloadOutcome::Serving { generation: 2 }),
            tally: Default::default(),
            cheaped: Vec::new(),
        }
    }

    fn facts() -> MasterFacts {
        MasterFacts {
            ini: "/srv/amy_uwsgi.ini".into(),
            pid: 4242,
            uptime: Duration::from_secs(3),
            sockets: vec![SocketStatus {
                name: "/srv/amy.sock".into(),
                proto: "uwsgi".into(),
            }],
            master_rss_bytes: 1,
            template_rss: Vec::new(),
            last_reload_at: None,
        }
    }

    #[test]
    fn the_json_keeps_the_field_names_scripts_read() {
        let busy = Reading {
            busy_since: Some(10.0),
            requests: 7,
            ..Reading::default()
        };
        let status = build(
            &snapshot(),
            facts(),
            |pid| {
                (pid == 202).then(|| WorkerFacts {
                    reading: busy.clone(),
                    spawns: 2,
                    harakiris: 1,
                    rss_bytes: 5,
                })
            },
            12.5,
            Instant::now(),
            SystemTime::now(),
        );
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["phase"], "running");
        assert_eq!(
            v["last_reload"],
            serde_json::json!({"result": "serving", "generation": 2})
        );
        let states: Vec<&str> = v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["retiring", "idle", "busy"]);
        let w = &v["workers"][2];
        assert_eq!(w["id"], 2);
        assert_eq!(w["request_age_s"], 2.5);
        assert_eq!(w["respawn_count"], 2);
        assert_eq!(w["harakiri_count"], 1);
        assert_eq!(w["rss_bytes"], 5);
        assert!(v["workers"][0]["request_age_s"].is_null());
        assert_eq!(v["workers"][0]["respawn_count"], 1);
        let roles: Vec<(u64, &str, u64)> = v["generations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["generation"].as_u64().unwrap(),
                    g["role"].as_str().unwrap(),
                    g["workers"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(roles, [(1, "retiring", 1), (2, "current", 2)]);
        // What the master sends is what `status` reads back.
        let back: Status = serde_json::from_value(v).unwrap();
        assert_eq!(back, status);
    }

    #[test]
    fn every_reload_outcome_has_its_report() {
        let report = |o: ReloadOutcome| serde_json::to_value(ReloadReport::from(&o)).unwrap();
        assert_eq!(
            report(ReloadOutcome::Rejected {
                reason: "x.ini:3: bad".into()
            }),
            serde_json::json!({"result": "rejected", "reason": "x.ini:3: bad"})
        );
        assert_eq!(
            report(ReloadOutcome::Failed {
                generation: 3,
                reason: "boom".into()
            }),
            serde_json::json!({"result": "failed", "generation": 3, "reason": "boom"})
        );
        assert_eq!(
            report(ReloadOutcome::Aborted),
            serde_json::json!({"result": "aborted", "reason": "the master is stopping"})
        );
    }
}
