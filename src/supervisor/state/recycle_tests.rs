//! Lifetime recycling, evil reload and cheaper: events with explicit instants
//! in, actions out.

use std::time::{Duration, Instant};

use super::fixtures::{plan, running_with, signals, spawn_ready, spawns};
use super::recycle::{spare, spare2, CheaperCounts, Decision};
use super::*;
use crate::config::lifetimes::{Cheaper, CheaperAlgo};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn cheaper(min: usize, initial: usize, step: usize, overload: u64) -> Cheaper {
    Cheaper {
        min,
        initial,
        step,
        overload,
        idle: 10,
        algo: CheaperAlgo::Spare,
    }
}

fn busy(pids: &[i32]) -> Event {
    Event::BusyWorkers(
        pids.iter()
            .map(|pid| BusyWorker {
                pid: *pid,
                age: Duration::from_millis(10),
                request: "GET /".into(),
            })
            .collect(),
    )
}

// ---- max-worker-lifetime -------------------------------------------------------

#[test]
fn an_aged_worker_leaves_only_once_its_replacement_is_ready() {
    let t0 = Instant::now();
    let p = GenerationPlan {
        lifetime: Some(secs(60)),
        ..plan(2)
    };
    let (mut sup, _) = running_with(p, t0);
    assert_eq!(sup.next_deadline(), Some(t0 + secs(60)));
    let due = t0 + secs(60);
    let a = sup.handle(Event::Tick, due);
    assert_eq!(spawns(&a), vec![(0, 1)], "replacement for slot 1 first");
    assert!(signals(&a).is_empty(), "the aged worker serves on: {a:?}");
    // One at a time: slot 2 (also due) waits while slot 1 is replaced.
    assert_eq!(sup.next_deadline(), None);
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: 1,
            pid: 201,
        },
        due,
    );
    let a = sup.handle(Event::WorkerReady { pid: 201 }, due);
    assert_eq!(signals(&a), vec![(101, WorkerSignal::Graceful)]);
    // Then slot 2 is due at once.
    assert_eq!(sup.next_deadline(), Some(t0 + secs(60)));
    let a = sup.handle(Event::Tick, due + secs(1));
    assert_eq!(spawns(&a), vec![(1, 1)]);
    let a = sup.handle(
        Event::WorkerExited {
            pid: 101,
            reason: ExitReason::Graceful,
            detail: None,
        },
        due + secs(1),
    );
    assert!(
        spawns(&a).is_empty(),
        "the retired worker is not replaced twice"
    );
    assert_eq!(sup.snapshot().tally.exits["max-worker-lifetime"], 1);
}

#[test]
fn lifetime_delta_staggers_the_slots_as_uwsgi_does() {
    let t0 = Instant::now();
    let p = GenerationPlan {
        lifetime: Some(secs(60)),
        lifetime_delta: secs(10),
        ..plan(3)
    };
    let (mut sup, _) = running_with(p, t0);
    // Slot 3 (wid 3): 60 + 2·10.
    let a = sup.handle(Event::Tick, t0 + secs(60));
    assert_eq!(spawns(&a), vec![(0, 1)]);
    spawn_ready(&mut sup, 0, 201, t0 + secs(60));
    assert_eq!(sup.next_deadline(), Some(t0 + secs(70)));
    let a = sup.handle(Event::Tick, t0 + secs(70));
    assert_eq!(spawns(&a), vec![(1, 1)]);
    spawn_ready(&mut sup, 1, 202, t0 + secs(70));
    assert_eq!(sup.next_deadline(), Some(t0 + secs(80)));
}

#[test]
fn a_replacement_that_dies_is_retried_with_back_off_while_the_aged_worker_serves() {
    let t0 = Instant::now();
    let p = GenerationPlan {
        lifetime: Some(secs(60)),
        ..plan(1)
    };
    let (mut sup, _) = running_with(p, t0);
    let t = t0 + secs(60);
    sup.handle(Event::Tick, t);
    for (attempt, pid) in (200..203).enumerate() {
        sup.handle(
            Event::Spawned {
                slot: 0,
                generation: 1,
                pid,
            },
            t,
        );
        let a = sup.handle(
            Event::WorkerExited {
                pid,
                reason: ExitReason::AppLoadFailed,
                detail: Some("boom".into()),
            },
            t,
        );
        assert!(signals(&a).is_empty(), "attempt {attempt}: {a:?}");
        let due = sup.next_deadline().expect("a retry");
        let a = sup.handle(Event::Tick, due);
        assert_eq!(spawns(&a), vec![(0, 1)], "attempt {attempt}");
        if attempt > 0 {
            assert!(due > t, "backs off");
        }
    }
    assert_eq!(
        sup.worker(101).map(|w| w.state.clone()),
        Some(WorkerState::Ready)
    );
}

#[test]
fn a_reload_supersedes_a_lifetime_recycle() {
    let t0 = Instant::now();
    let p = GenerationPlan {
        lifetime: Some(secs(60)),
        ..plan(1)
    };
    let (mut sup, _) = running_with(p.clone(), t0);
    let a = sup.handle(Event::Signal(MasterSignal::Hup), t0 + secs(59));
    assert!(a.contains(&Action::LoadConfig { generation: 2 }));
    assert_eq!(
        sup.next_deadline(),
        None,
        "no lifetime recycle while reloading"
    );
    sup.handle(
        Event::ConfigLoaded {
            generation: 2,
            result: Ok(p),
        },
        t0 + secs(59),
    );
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: 2,
            pid: 301,
        },
        t0 + secs(59),
    );
    sup.handle(Event::WorkerReady { pid: 301 }, t0 + secs(61));
    // Counted from its spawn, like uWSGI's last_spawn.
    assert_eq!(sup.next_deadline(), Some(t0 + secs(119)));
}

// ---- evil reload -----------------------------------------------------------------

#[test]
fn evil_reload_recycles_a_worker_over_its_rss_and_replaces_it_at_once() {
    let t0 = Instant::now();
    let p = GenerationPlan {
        evil_rss: 100 << 20,
        ..plan(2)
    };
    let (mut sup, _) = running_with(p, t0);
    assert_eq!(sup.next_deadline(), Some(t0 + MEMORY_PERIOD));
    let a = sup.handle(Event::Tick, t0 + MEMORY_PERIOD);
    assert!(a.contains(&Action::CheckMemory));
    let t = t0 + MEMORY_PERIOD;
    let a = sup.handle(
        Event::WorkerMemory(vec![
            WorkerMemory {
                pid: 101,
                rss_bytes: 150 << 20,
                vsz_bytes: 400 << 20,
            },
            WorkerMemory {
                pid: 102,
                rss_bytes: 50 << 20,
                vsz_bytes: 400 << 20,
            },
        ]),
        t,
    );
    assert_eq!(signals(&a), vec![(101, WorkerSignal::Graceful)]);
    assert_eq!(spawns(&a), vec![(0, 1)]);
    // Still there one period later (a runaway request): killed.
    let a = sup.handle(Event::Tick, t + MEMORY_PERIOD);
    assert!(signals(&a).contains(&(101, WorkerSignal::Kill)), "{a:?}");
    sup.handle(
        Event::WorkerExited {
            pid: 101,
            reason: ExitReason::Signaled(9),
            detail: None,
        },
        t + MEMORY_PERIOD,
    );
    assert_eq!(sup.snapshot().tally.exits["evil-reload-on-rss"], 1);
}

#[test]
fn evil_reload_on_as_reads_the_address_space() {
    let t0 = Instant::now();
    let p = GenerationPlan {
        evil_as: 300 << 20,
        ..plan(1)
    };
    let (mut sup, _) = running_with(p, t0);
    let a = sup.handle(
        Event::WorkerMemory(vec![WorkerMemory {
            pid: 101,
            rss_bytes: 10 << 20,
            vsz_bytes: 300 << 20,
        }]),
        t0,
    );
    assert_eq!(signals(&a), vec![(101, WorkerSignal::Graceful)]);
}

#[test]
fn no_periodic_check_without_the_keys() {
    let t0 = Instant::now();
    let (sup, _) = running_with(plan(2), t0);
    assert_eq!(sup.next_deadline(), None, "the master stays idle");
}

// ---- cheaper ---------------------------------------------------------------------

#[test]
fn cheaper_starts_the_initial_workers_and_is_serving_with_them() {
    let t0 = Instant::now();
    let p = GenerationPlan {
        cheaper: Some(cheaper(2, 3, 1, 3)),
        ..plan(8)
    };
    let (sup, last) = running_with(p, t0);
    assert!(last.contains(&Action::Notify(Lifecycle::Ready)), "{last:?}");
    assert_eq!(sup.phase(), Phase::Running);
    assert_eq!(sup.snapshot().workers.len(), 3);
    assert_eq!(sup.snapshot().cheaped, vec![3, 4, 5, 6, 7]);
    assert_eq!(sup.next_deadline(), Some(t0 + CHEAPER_PERIOD));
}

#[test]
fn cheaper_grows_by_step_after_overload_and_shrinks_by_one_when_idle() {
    let t0 = Instant::now();
    let p = GenerationPlan {
        cheaper: Some(cheaper(2, 2, 2, 3)),
        ..plan(6)
    };
    let (mut sup, _) = running_with(p, t0);
    let mut t = t0;
    for cycle in 1..=2 {
        t += secs(1);
        let a = sup.handle(busy(&[101, 102]), t);
        assert!(spawns(&a).is_empty(), "cycle {cycle}");
    }
    t += secs(1);
    let a = sup.handle(busy(&[101, 102]), t);
    assert_eq!(spawns(&a), vec![(2, 1), (3, 1)], "grows by cheaper-step");
    spawn_ready(&mut sup, 2, 103, t);
    spawn_ready(&mut sup, 3, 104, t);
    assert_eq!(sup.snapshot().cheaped, vec![4, 5]);
    // Idle: one worker retired every cheaper-overload cycles, down to cheaper.
    let mut retired = Vec::new();
    for _ in 0..12 {
        t += secs(1);
        let a = sup.handle(busy(&[]), t);
        for (pid, sig) in signals(&a) {
            assert_eq!(sig, WorkerSignal::Graceful);
            retired.push(pid);
        }
    }
    assert_eq!(retired.len(), 2, "down to cheaper = 2: {retired:?}");
    // The oldest go first (101, 102 started at t0).
    assert_eq!(retired, vec![101, 102]);
    let a = sup.handle(
        Event::WorkerExited {
            pid: 101,
            reason: ExitReason::Graceful,
            detail: None,
        },
        t,
    );
    assert!(spawns(&a).is_empty(), "a cheaped slot is not refilled");
    assert_eq!(sup.snapshot().tally.exits["cheaper"], 1);
    assert_eq!(sup.snapshot().cheaped, vec![0, 1, 4, 5]);
}

#[test]
fn a_crashed_worker_of_an_active_slot_is_replaced_in_cheaper_mode() {
    let t0 = Instant::now();
    let p = GenerationPlan {
        cheaper: Some(cheaper(1, 2, 1, 3)),
        ..plan(4)
    };
    let (mut sup, _) = running_with(p, t0);
    let a = sup.handle(
        Event::WorkerExited {
            pid: 102,
            reason: ExitReason::Crashed(1),
            detail: None,
        },
        t0 + secs(100),
    );
    assert_eq!(spawns(&a), vec![(1, 1)]);
}

#[test]
fn a_reload_in_cheaper_mode_starts_cheaper_initial_workers() {
    let t0 = Instant::now();
    let p = GenerationPlan {
        cheaper: Some(cheaper(2, 2, 1, 1)),
        ..plan(6)
    };
    let (mut sup, _) = running_with(p.clone(), t0);
    // Grown to 3 under load.
    let a = sup.handle(busy(&[101, 102]), t0 + secs(1));
    assert_eq!(spawns(&a), vec![(2, 1)]);
    spawn_ready(&mut sup, 2, 103, t0 + secs(1));
    sup.handle(Event::Signal(MasterSignal::Hup), t0 + secs(2));
    let a = sup.handle(
        Event::ConfigLoaded {
            generation: 2,
            result: Ok(p),
        },
        t0 + secs(2),
    );
    assert_eq!(spawns(&a), vec![(0, 2), (1, 2)]);
    for (slot, pid) in [(0, 201), (1, 202)] {
        sup.handle(
            Event::Spawned {
                slot,
                generation: 2,
                pid,
            },
            t0 + secs(2),
        );
    }
    sup.handle(Event::WorkerReady { pid: 201 }, t0 + secs(3));
    let a = sup.handle(Event::WorkerReady { pid: 202 }, t0 + secs(3));
    assert!(a.contains(&Action::Activate { generation: 2 }), "{a:?}");
    let mut retired: Vec<i32> = signals(&a).into_iter().map(|(p, _)| p).collect();
    retired.sort();
    assert_eq!(retired, vec![101, 102, 103]);
    assert_eq!(sup.snapshot().cheaped, vec![2, 3, 4, 5]);
}

#[test]
fn spare_holds_with_exactly_one_spare_worker() {
    let c = cheaper(1, 1, 1, 3);
    let mut n = CheaperCounts::default();
    for _ in 0..10 {
        assert_eq!(spare(&c, &mut n, 3, 2, 1), Decision::Hold);
    }
}

#[test]
fn spare2_keeps_cheaper_idle_workers() {
    let c = Cheaper {
        idle: 2,
        algo: CheaperAlgo::Spare2,
        ..cheaper(2, 2, 4, 3)
    };
    let mut n = CheaperCounts::default();
    // 1 idle of 3: add min(2 − 1, cheaped, step) = 1.
    assert_eq!(spare2(&c, &mut n, 1, 5), Decision::Grow(1));
    assert_eq!(spare2(&c, &mut n, 0, 5), Decision::Grow(2));
    assert_eq!(spare2(&c, &mut n, 0, 1), Decision::Grow(1));
    assert_eq!(spare2(&c, &mut n, 2, 5), Decision::Hold);
    assert_eq!(spare2(&c, &mut n, 4, 5), Decision::Hold);
    assert_eq!(spare2(&c, &mut n, 4, 5), Decision::Shrink);
}
