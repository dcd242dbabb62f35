//! What the instance has done so far, counted where it is decided (the state
//! machine): worker spawns, worker exits by reason, harakiri kills, reloads by
//! outcome. These are the instance's counters, not a process's: they survive
//! every respawn and reload, and the metrics endpoint reports them.

use std::collections::BTreeMap;

/// Why a worker left, as the metrics label it.
pub const EXIT_REASONS: [&str; 14] = [
    "crash",
    "harakiri",
    "max-requests",
    "reload-on-rss",
    "reload-on-as",
    "limit-as",
    "max-worker-lifetime",
    "evil-reload-on-rss",
    "evil-reload-on-as",
    "cheaper",
    "reload",
    "stop",
    "killed",
    "boot-failed",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub spawns: u64,
    /// By a label of [`EXIT_REASONS`]; every label present (0 until it happens).
    pub exits: BTreeMap<&'static str, u64>,
    pub harakiri: u64,
    pub reloads_ok: u64,
    pub reloads_rejected: u64,
    pub reloads_failed: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            spawns: 0,
            exits: EXIT_REASONS.iter().map(|r| (*r, 0)).collect(),
            harakiri: 0,
            reloads_ok: 0,
            reloads_rejected: 0,
            reloads_failed: 0,
        }
    }
}

impl Tally {
    pub fn exited(&mut self, reason: &'static str) {
        *self.exits.entry(reason).or_default() += 1;
    }
}
