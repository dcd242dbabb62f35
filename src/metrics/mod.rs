//! Prometheus metrics (`prometheus = ADDR`, our key): `GET /metrics` in the text
//! exposition format 0.0.4, computed by the master from the workers' scoreboards
//! and its own state machine, without asking any worker.
//!
//! Theory of operation: each worker counts its requests in its scoreboard page
//! (by status class, by listener, a duration histogram, bytes, slow requests;
//! `worker::contract`), a few aligned stores per request. At scrape time the
//! master adds up the live pages and [`RequestTotals`] of the workers that are
//! gone (read once more when a worker exits: its page stays mapped until the
//! master drops it), so every counter is the instance's and never goes back
//! across a respawn, a harakiri or a reload. Spawns, exits by reason, harakiri
//! and reloads are counted where they are decided (`supervisor::tally`).
//!
//! Nothing from a request (headers, path, query, body) or from the environment
//! is ever a label: labels are status classes, listener addresses from the
//! config, worker states and exit reasons, all from fixed sets.
//!
//! Emperor mode: each vassal serves its own endpoint (its own `prometheus` key);
//! the emperor has none.

pub mod queue;
pub mod server;
pub mod text;

use std::collections::BTreeMap;

use crate::around::{CronStatus, DaemonStatus};
use crate::scoreboard::Reading;
use crate::supervisor::state::{Snapshot, WorkerState};
use crate::worker::contract::{HISTOGRAM_BOUNDS, SB_HISTOGRAM_SLOTS, SB_LISTENER_SLOTS};
use text::Exposition;

/// Request counters summed over workers (live or gone).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestTotals {
    pub requests: u64,
    pub tx_bytes: u64,
    pub busy_seconds: f64,
    pub exceptions: u64,
    /// 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub by_status: [u64; 6],
    pub slow: u64,
    pub histogram: [u64; SB_HISTOGRAM_SLOTS],
    pub by_listener: BTreeMap<String, u64>,
}

impl RequestTotals {
    /// Adds one worker's page; `listeners` are its generation's listener names
    /// in the order the worker was given them.
    pub fn add(&mut self, r: &Reading, listeners: &[String]) {
        self.requests += r.requests;
        self.tx_bytes += r.tx_bytes;
        self.busy_seconds += r.busy_seconds;
        self.exceptions += r.exceptions;
        self.slow += r.counters.slow;
        for (t, v) in self.by_status.iter_mut().zip(r.counters.by_status) {
            *t += v;
        }
        for (t, v) in self.histogram.iter_mut().zip(r.counters.histogram) {
            *t += v;
        }
        for (i, v) in r.counters.by_listener.iter().enumerate() {
            if *v == 0 && i >= listeners.len() {
                continue;
            }
            // The last slot also holds every listener past it.
            let name = if i + 1 == SB_LISTENER_SLOTS && listeners.len() > SB_LISTENER_SLOTS {
                "other"
            } else {
                listeners.get(i).map_or("other", String::as_str)
            };
            *self.by_listener.entry(name.to_owned()).or_default() += v;
        }
    }
}

/// A listening socket as the metrics show it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub name: String,
    pub proto: &'static str,
    /// (connections waiting to be accepted, backlog) where the kernel says.
    pub queue: Option<(u64, u64)>,
}

/// Everything one scrape reports.
pub struct Scrape<'a> {
    pub snapshot: &'a Snapshot,
    pub totals: RequestTotals,
    pub in_flight: u64,
    /// Ready workers with a request in flight.
    pub busy_workers: usize,
    pub listeners: Vec<ListenerInfo>,
    pub master_rss_bytes: u64,
    pub uptime_seconds: f64,
    pub log_slow_seconds: Option<f64>,
    pub harakiri_seconds: Option<f64>,
    /// Attached daemons, in the order `status --json` lists them.
    pub daemons: Vec<DaemonStatus>,
    pub crons: Vec<CronStatus>,
}

/// A daemon's states as `crate::around::daemons` names them.
const DAEMON_STATES: [&str; 5] = ["down", "spawning", "running", "detaching", "stopping"];

/// The exposition text (format 0.0.4).
pub fn render(s: &Scrape<'_>) -> String {
    let mut e = Exposition::default();
    let t = &s.totals;

    e.family(
        "amy_requests_total",
        "counter",
        "Requests completed, by status class.",
    );
    for (class, v) in ["1xx", "2xx", "3xx", "4xx", "5xx", "other"]
        .iter()
        .zip(t.by_status)
    {
        e.sample("amy_requests_total", &[("status", class)], v as f64);
    }
    e.family(
        "amy_listener_requests_total",
        "counter",
        "Requests completed, by listening socket.",
    );
    let mut names: Vec<&str> = s.listeners.iter().map(|l| l.name.as_str()).collect();
    names.extend(t.by_listener.keys().map(String::as_str));
    names.sort_unstable();
    names.dedup();
    for name in names {
        let v = t.by_listener.get(name).copied().unwrap_or(0);
        e.sample(
            "amy_listener_requests_total",
            &[("listener", name)],
            v as f64,
        );
    }
    e.family(
        "amy_request_duration_seconds",
        "histogram",
        "Time from the parsed request to the end of the response.",
    );
    let mut cumulative = 0u64;
    for (i, bound) in HISTOGRAM_BOUNDS.iter().enumerate() {
        cumulative += t.histogram[i];
        e.sample(
            "amy_request_duration_seconds_bucket",
            &[("le", &text::float(*bound))],
            cumulative as f64,
        );
    }
    let count: u64 = t.histogram.iter().sum();
    e.sample(
        "amy_request_duration_seconds_bucket",
        &[("le", "+Inf")],
        count as f64,
    );
    e.sample("amy_request_duration_seconds_sum", &[], t.busy_seconds);
    e.sample("amy_request_duration_seconds_count", &[], count as f64);

    e.family(
        "amy_response_bytes_total",
        "counter",
        "Response body bytes sent.",
    );
    e.sample("amy_response_bytes_total", &[], t.tx_bytes as f64);
    e.family(
        "amy_app_exceptions_total",
        "counter",
        "Exceptions raised by the app.",
    );
    e.sample("amy_app_exceptions_total", &[], t.exceptions as f64);
    e.family(
        "amy_slow_requests_total",
        "counter",
        "Requests at least log-slow long.",
    );
    e.sample("amy_slow_requests_total", &[], t.slow as f64);
    if let Some(v) = s.log_slow_seconds {
        e.family("amy_log_slow_seconds", "gauge", "The log-slow threshold.");
        e.sample("amy_log_slow_seconds", &[], v);
    }
    if let Some(v) = s.harakiri_seconds {
        e.family("amy_harakiri_seconds", "gauge", "The harakiri time limit.");
        e.sample("amy_harakiri_seconds", &[], v);
    }
    e.family(
        "amy_requests_in_flight",
        "gauge",
        "Requests being served now.",
    );
    e.sample("amy_requests_in_flight", &[], s.in_flight as f64);

    e.family("amy_workers", "gauge", "Worker processes, by state.");
    let mut states: BTreeMap<&str, usize> = [
        "booting", "idle", "busy", "retiring", "harakiri", "killed", "cheap",
    ]
    .iter()
    .map(|k| (*k, 0))
    .collect();
    for w in &s.snapshot.workers {
        let k = match w.state {
            WorkerState::Booting => "booting",
            WorkerState::Ready => "idle",
            WorkerState::Retiring { .. } => "retiring",
            WorkerState::Harakiri { .. } => "harakiri",
            WorkerState::Killed => "killed",
        };
        *states.entry(k).or_default() += 1;
    }
    // `cheaper`'s empty slots, so active + cheap = processes.
    *states.get_mut("cheap").expect("seeded") = s.snapshot.cheaped.len();
    let busy = s.busy_workers.min(states["idle"]);
    *states.get_mut("idle").expect("seeded") -= busy;
    *states.get_mut("busy").expect("seeded") += busy;
    for (k, v) in states {
        e.sample("amy_workers", &[("state", k)], v as f64);
    }
    let tally = &s.snapshot.tally;
    e.family(
        "amy_worker_spawns_total",
        "counter",
        "Worker processes started.",
    );
    e.sample("amy_worker_spawns_total", &[], tally.spawns as f64);
    e.family(
        "amy_worker_exits_total",
        "counter",
        "Worker processes ended, by reason.",
    );
    for (reason, v) in &tally.exits {
        e.sample("amy_worker_exits_total", &[("reason", reason)], *v as f64);
    }
    e.family("amy_harakiri_total", "counter", "Requests cut by harakiri.");
    e.sample("amy_harakiri_total", &[], tally.harakiri as f64);
    e.family("amy_reloads_total", "counter", "Reloads, by outcome.");
    for (outcome, v) in [
        ("ok", tally.reloads_ok),
        ("rejected", tally.reloads_rejected),
        ("failed", tally.reloads_failed),
    ] {
        e.sample("amy_reloads_total", &[("outcome", outcome)], v as f64);
    }
    e.family("amy_generation", "gauge", "The generation in service.");
    e.sample("amy_generation", &[], s.snapshot.generation as f64);

    if s.listeners.iter().any(|l| l.queue.is_some()) {
        e.family(
            "amy_listen_queue",
            "gauge",
            "Connections waiting in the kernel to be accepted.",
        );
        for l in &s.listeners {
            if let Some((q, _)) = l.queue {
                e.sample(
                    "amy_listen_queue",
                    &[("listener", &l.name), ("proto", l.proto)],
                    q as f64,
                );
            }
        }
        e.family("amy_listen_queue_max", "gauge", "The listen backlog.");
        for l in &s.listeners {
            if let Some((_, max)) = l.queue {
                e.sample(
                    "amy_listen_queue_max",
                    &[("listener", &l.name), ("proto", l.proto)],
                    max as f64,
                );
            }
        }
    }
    render_around(&mut e, s);
    e.family(
        "amy_master_rss_bytes",
        "gauge",
        "Resident memory of the master.",
    );
    e.sample("amy_master_rss_bytes", &[], s.master_rss_bytes as f64);
    e.family(
        "amy_uptime_seconds",
        "gauge",
        "Seconds since the master started.",
    );
    e.sample("amy_uptime_seconds", &[], s.uptime_seconds);
    e.finish()
}

/// Attached daemons and cron jobs. A daemon is labelled by its position (from
/// 1, as `status --json` lists them), never by its command line, which may
/// carry a secret (`env TOKEN=... cmd`).
fn render_around(e: &mut Exposition, s: &Scrape<'_>) {
    e.family("amy_daemons", "gauge", "Attached daemons, by state.");
    let mut states: BTreeMap<&str, usize> = DAEMON_STATES.iter().map(|k| (*k, 0)).collect();
    for d in &s.daemons {
        *states.entry(d.state.as_str()).or_default() += 1;
    }
    for (k, v) in states {
        e.sample("amy_daemons", &[("state", k)], v as f64);
    }
    e.family(
        "amy_daemon_starts_total",
        "counter",
        "Times each attached daemon was started.",
    );
    for (i, d) in s.daemons.iter().enumerate() {
        let n = (i + 1).to_string();
        e.sample(
            "amy_daemon_starts_total",
            &[("daemon", &n)],
            d.respawns as f64,
        );
    }
    e.family("amy_cron_jobs", "gauge", "Cron jobs configured.");
    e.sample("amy_cron_jobs", &[], s.crons.len() as f64);
    e.family("amy_cron_running", "gauge", "Cron job runs in progress.");
    let running: usize = s.crons.iter().map(|c| c.running.len()).sum();
    e.sample("amy_cron_running", &[], running as f64);
}
