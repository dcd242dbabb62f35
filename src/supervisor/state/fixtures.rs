//! What the state machine's tests (`tests`, `template_tests`,
//! `recycle_tests`) build and read: plans, a running supervisor, and the
//! actions of one kind picked out of a step's answer.

use std::time::Instant;

use super::*;

/// `processes` workers, every other setting as the ini's defaults.
pub fn plan(processes: usize) -> GenerationPlan {
    GenerationPlan {
        processes,
        ..GenerationPlan::default()
    }
}

/// `plan` with `preload`: workers are forked from a template.
pub fn preload(processes: usize) -> GenerationPlan {
    GenerationPlan {
        preload: true,
        ..plan(processes)
    }
}

/// Starts `p` and makes every asked worker (pids 101.. by slot) ready at
/// `t0`; returns the actions of the last readiness.
pub fn running_with(p: GenerationPlan, t0: Instant) -> (Supervisor, Vec<Action>) {
    let (mut sup, actions) = Supervisor::start(p, t0);
    let asked = spawns(&actions);
    let mut last = Vec::new();
    for (slot, g) in &asked {
        sup.handle(
            Event::Spawned {
                slot: *slot,
                generation: *g,
                pid: 101 + *slot as i32,
            },
            t0,
        );
    }
    for (slot, _) in &asked {
        last = sup.handle(
            Event::WorkerReady {
                pid: 101 + *slot as i32,
            },
            t0,
        );
    }
    (sup, last)
}

/// A running supervisor with `n` ready workers of generation 1 (pids 101..).
pub fn running(n: usize, t0: Instant) -> Supervisor {
    let (sup, _) = running_with(plan(n), t0);
    assert_eq!(sup.phase(), Phase::Running);
    sup
}

/// A worker of generation 1 in `slot` spawned and ready at `at`.
pub fn spawn_ready(sup: &mut Supervisor, slot: usize, pid: i32, at: Instant) -> Vec<Action> {
    sup.handle(
        Event::Spawned {
            slot,
            generation: 1,
            pid,
        },
        at,
    );
    sup.handle(Event::WorkerReady { pid }, at)
}

/// `(slot, generation)` of each worker spawn asked for.
pub fn spawns(actions: &[Action]) -> Vec<(usize, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { slot, generation } => Some((*slot, *generation)),
            _ => None,
        })
        .collect()
}

/// The generation of each template spawn asked for.
pub fn template_spawns(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SpawnTemplate { generation } => Some(*generation),
            _ => None,
        })
        .collect()
}

pub fn signals(actions: &[Action]) -> Vec<(i32, WorkerSignal)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { pid, signal } => Some((*pid, *signal)),
            _ => None,
        })
        .collect()
}

/// The generation of the one config load asked for.
pub fn load_generation(actions: &[Action]) -> u64 {
    actions
        .iter()
        .find_map(|a| match a {
            Action::LoadConfig { generation } => Some(*generation),
            _ => None,
        })
        .expect("a LoadConfig action")
}
