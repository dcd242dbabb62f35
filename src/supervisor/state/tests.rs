//! The state machine's rules, one test each: events with explicit instants in,
//! actions out.

use std::time::{Duration, Instant};

use super::fixtures::{load_generation, plan, running, signals, spawns};
use super::*;

#[test]
fn cold_start_is_ready_only_when_every_worker_is() {
    let t0 = Instant::now();
    let (mut sup, _) = Supervisor::start(plan(2), t0);
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: 1,
            pid: 10,
        },
        t0,
    );
    sup.handle(
        Event::Spawned {
            slot: 1,
            generation: 1,
            pid: 11,
        },
        t0,
    );
    let a = sup.handle(Event::WorkerReady { pid: 10 }, t0);
    assert!(!a.contains(&Action::Notify(Lifecycle::Ready)));
    let a = sup.handle(Event::WorkerReady { pid: 11 }, t0);
    assert!(a.contains(&Action::Notify(Lifecycle::Ready)));
    assert_eq!(sup.phase(), Phase::Running);
}

#[test]
fn app_import_failure_at_cold_start_halts_with_exit_1() {
    let t0 = Instant::now();
    let (mut sup, _) = Supervisor::start(plan(2), t0);
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: 1,
            pid: 10,
        },
        t0,
    );
    sup.handle(
        Event::Spawned {
            slot: 1,
            generation: 1,
            pid: 11,
        },
        t0,
    );
    let a = sup.handle(
        Event::WorkerExited {
            pid: 10,
            reason: ExitReason::AppLoadFailed,
            detail: Some("Traceback".into()),
        },
        t0,
    );
    assert!(
        spawns(&a).is_empty(),
        "no respawn after an import error: {a:?}"
    );
    assert_eq!(signals(&a), vec![(11, WorkerSignal::Kill)]);
    let a = sup.handle(
        Event::WorkerExited {
            pid: 11,
            reason: ExitReason::Crashed(1),
            detail: None,
        },
        t0,
    );
    assert!(a.contains(&Action::Exit(1)), "{a:?}");
}

#[test]
fn cold_start_that_never_becomes_ready_halts_at_the_boot_timeout() {
    let t0 = Instant::now();
    let (mut sup, _) = Supervisor::start(plan(1), t0);
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: 1,
            pid: 10,
        },
        t0,
    );
    assert_eq!(sup.next_deadline(), Some(t0 + BOOT_TIMEOUT));
    let a = sup.handle(Event::Tick, t0 + BOOT_TIMEOUT);
    assert_eq!(signals(&a), vec![(10, WorkerSignal::Kill)]);
    let a = sup.handle(
        Event::WorkerExited {
            pid: 10,
            reason: ExitReason::Signaled(2),
            detail: None,
        },
        t0 + BOOT_TIMEOUT,
    );
    assert!(a.contains(&Action::Exit(1)));
}

#[test]
fn a_dead_worker_is_replaced_at_once_then_with_back_off() {
    let t0 = Instant::now();
    let mut sup = running(2, t0);
    let a = sup.handle(
        Event::WorkerExited {
            pid: 101,
            reason: ExitReason::Signaled(9),
            detail: None,
        },
        t0,
    );
    assert_eq!(spawns(&a), vec![(0, 1)]);
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: 1,
            pid: 200,
        },
        t0,
    );
    let a = sup.handle(
        Event::WorkerExited {
            pid: 200,
            reason: ExitReason::Crashed(1),
            detail: None,
        },
        t0,
    );
    assert!(spawns(&a).is_empty(), "second quick death waits: {a:?}");
    let due = sup.next_deadline().expect("a respawn deadline");
    assert!(due > t0 + Duration::from_millis(800));
    let a = sup.handle(Event::Tick, due);
    assert_eq!(spawns(&a), vec![(0, 1)]);
}

#[test]
fn a_recycled_worker_is_replaced_at_once_every_time() {
    let t0 = Instant::now();
    let mut sup = running(1, t0);
    let mut pid = 101;
    for i in 0..5 {
        let a = sup.handle(
            Event::WorkerExited {
                pid,
                reason: ExitReason::Recycled("max-requests"),
                detail: None,
            },
            t0,
        );
        assert_eq!(spawns(&a), vec![(0, 1)], "recycle {i}");
        pid = 300 + i;
        sup.handle(
            Event::Spawned {
                slot: 0,
                generation: 1,
                pid,
            },
            t0,
        );
    }
}

#[test]
fn reload_starts_a_new_generation_and_retires_the_old_one_only_when_all_are_ready() {
    let t0 = Instant::now();
    let mut sup = running(2, t0);
    let a = sup.handle(Event::Signal(MasterSignal::Hup), t0);
    let g = load_generation(&a);
    assert!(a.contains(&Action::Notify(Lifecycle::Reloading)));
    let a = sup.handle(
        Event::ConfigLoaded {
            generation: g,
            result: Ok(plan(2)),
        },
        t0,
    );
    assert_eq!(spawns(&a), vec![(0, g), (1, g)]);
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: g,
            pid: 201,
        },
        t0,
    );
    sup.handle(
        Event::Spawned {
            slot: 1,
            generation: g,
            pid: 202,
        },
        t0,
    );
    let a = sup.handle(Event::WorkerReady { pid: 201 }, t0);
    assert!(
        signals(&a).is_empty(),
        "old workers keep serving until every new one is ready"
    );
    let a = sup.handle(Event::WorkerReady { pid: 202 }, t0);
    assert_eq!(
        signals(&a),
        vec![(101, WorkerSignal::Graceful), (102, WorkerSignal::Graceful)]
    );
    assert!(a.contains(&Action::Activate { generation: g }));
    assert!(a.contains(&Action::Release { generation: 1 }));
    assert!(a.contains(&Action::ReplyReload {
        requests: vec![],
        outcome: ReloadOutcome::Serving { generation: g }
    }));
    // Retired workers exiting is expected: no respawn.
    let a = sup.handle(
        Event::WorkerExited {
            pid: 101,
            reason: ExitReason::Graceful,
            detail: None,
        },
        t0,
    );
    assert!(spawns(&a).is_empty());
    assert_eq!(sup.snapshot().generation, g);
}

#[test]
fn a_broken_release_never_replaces_the_working_one() {
    let t0 = Instant::now();
    let mut sup = running(2, t0);
    let a = sup.handle(Event::ReloadRequested(7), t0);
    let g = load_generation(&a);
    sup.handle(
        Event::ConfigLoaded {
            generation: g,
            result: Ok(plan(2)),
        },
        t0,
    );
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: g,
            pid: 201,
        },
        t0,
    );
    sup.handle(
        Event::Spawned {
            slot: 1,
            generation: g,
            pid: 202,
        },
        t0,
    );
    let a = sup.handle(
        Event::WorkerExited {
            pid: 201,
            reason: ExitReason::AppLoadFailed,
            detail: Some("ImportError: x".into()),
        },
        t0,
    );
    assert_eq!(
        signals(&a),
        vec![(202, WorkerSignal::Kill)],
        "only the new generation is touched"
    );
    let reply = a.iter().find_map(|a| match a {
        Action::ReplyReload { requests, outcome } => Some((requests.clone(), outcome.clone())),
        _ => None,
    });
    let (requests, outcome) = reply.expect("the reload is answered");
    assert_eq!(requests, vec![7]);
    assert!(
        matches!(outcome, ReloadOutcome::Failed { ref reason, .. } if reason.contains("ImportError: x"))
    );
    assert_eq!(sup.snapshot().generation, 1);
    assert!(spawns(&sup.handle(
        Event::WorkerExited {
            pid: 202,
            reason: ExitReason::Signaled(9),
            detail: None
        },
        t0
    ))
    .is_empty());
}

#[test]
fn an_invalid_config_is_rejected_and_changes_nothing() {
    let t0 = Instant::now();
    let mut sup = running(1, t0);
    let a = sup.handle(Event::ReloadRequested(3), t0);
    let g = load_generation(&a);
    let a = sup.handle(
        Event::ConfigLoaded {
            generation: g,
            result: Err("amy.ini:4: bad".into()),
        },
        t0,
    );
    assert!(a.contains(&Action::ReplyReload {
        requests: vec![3],
        outcome: ReloadOutcome::Rejected {
            reason: "amy.ini:4: bad".into()
        }
    }));
    assert!(spawns(&a).is_empty() && signals(&a).is_empty());
}

#[test]
fn a_new_generation_that_never_gets_ready_is_abandoned_at_the_boot_timeout() {
    let t0 = Instant::now();
    let mut sup = running(1, t0);
    let g = load_generation(&sup.handle(Event::Signal(MasterSignal::Hup), t0));
    sup.handle(
        Event::ConfigLoaded {
            generation: g,
            result: Ok(plan(1)),
        },
        t0,
    );
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: g,
            pid: 201,
        },
        t0,
    );
    let a = sup.handle(Event::Tick, t0 + BOOT_TIMEOUT);
    assert_eq!(signals(&a), vec![(201, WorkerSignal::Kill)]);
    assert_eq!(sup.snapshot().generation, 1);
}

#[test]
fn triggers_during_a_reload_queue_exactly_one_more() {
    let t0 = Instant::now();
    let mut sup = running(1, t0);
    let g = load_generation(&sup.handle(Event::Signal(MasterSignal::Hup), t0));
    for _ in 0..10 {
        let a = sup.handle(Event::Signal(MasterSignal::Hup), t0);
        assert!(a.is_empty(), "queued, not started: {a:?}");
    }
    let a = sup.handle(
        Event::ConfigLoaded {
            generation: g,
            result: Err("x".into()),
        },
        t0,
    );
    let next: Vec<_> = a
        .iter()
        .filter(|a| matches!(a, Action::LoadConfig { .. }))
        .collect();
    assert_eq!(next.len(), 1, "{a:?}");
    let g2 = load_generation(&a);
    let a = sup.handle(
        Event::ConfigLoaded {
            generation: g2,
            result: Err("x".into()),
        },
        t0,
    );
    assert!(
        !a.iter().any(|a| matches!(a, Action::LoadConfig { .. })),
        "the queue held one reload only"
    );
}

#[test]
fn file_changes_coalesce_and_wait_for_the_writer_to_finish() {
    let t0 = Instant::now();
    let mut sup = running(1, t0);
    for i in 0..20 {
        let a = sup.handle(
            Event::FilesChanged { writing: false },
            t0 + Duration::from_millis(i * 40),
        );
        assert!(a.is_empty());
    }
    let last = t0 + Duration::from_millis(19 * 40);
    assert_eq!(sup.next_deadline(), Some(last + DEBOUNCE));
    assert!(sup
        .handle(Event::Tick, last + DEBOUNCE - Duration::from_millis(1))
        .is_empty());
    let a = sup.handle(Event::Tick, last + DEBOUNCE);
    assert_eq!(
        a.iter()
            .filter(|a| matches!(a, Action::LoadConfig { .. }))
            .count(),
        1
    );

    // A writer still holding the file: no reload at the debounce deadline.
    let mut sup = running(1, t0);
    sup.handle(Event::FilesChanged { writing: true }, t0);
    assert!(sup
        .handle(Event::Tick, t0 + Duration::from_millis(500))
        .is_empty());
    sup.handle(
        Event::FilesChanged { writing: false },
        t0 + Duration::from_millis(600),
    );
    let a = sup.handle(Event::Tick, t0 + Duration::from_millis(600) + DEBOUNCE);
    assert_eq!(
        a.iter()
            .filter(|a| matches!(a, Action::LoadConfig { .. }))
            .count(),
        1
    );
}

#[test]
fn graceful_stop_waits_for_workers_then_kills_at_the_mercy_deadline() {
    let t0 = Instant::now();
    let mut sup = running(2, t0);
    let a = sup.handle(Event::Signal(MasterSignal::Term), t0);
    assert!(a.contains(&Action::CloseListeners));
    assert_eq!(
        signals(&a),
        vec![(101, WorkerSignal::Graceful), (102, WorkerSignal::Graceful)]
    );
    let a = sup.handle(
        Event::WorkerExited {
            pid: 101,
            reason: ExitReason::Graceful,
            detail: None,
        },
        t0,
    );
    assert!(spawns(&a).is_empty() && !a.iter().any(|a| matches!(a, Action::Exit(_))));
    let a = sup.handle(Event::Tick, t0 + Duration::from_secs(60));
    assert_eq!(signals(&a), vec![(102, WorkerSignal::Kill)]);
    let a = sup.handle(
        Event::WorkerExited {
            pid: 102,
            reason: ExitReason::Signaled(9),
            detail: None,
        },
        t0,
    );
    assert!(a.contains(&Action::Exit(0)));
}

#[test]
fn a_second_term_escalates_to_a_fast_stop() {
    let t0 = Instant::now();
    let mut sup = running(1, t0);
    sup.handle(Event::Signal(MasterSignal::Term), t0);
    let a = sup.handle(Event::Signal(MasterSignal::Term), t0);
    assert_eq!(signals(&a), vec![(101, WorkerSignal::Now)]);
}

#[test]
fn stop_during_a_reload_answers_the_waiters_and_kills_the_new_generation_too() {
    let t0 = Instant::now();
    let mut sup = running(1, t0);
    let g = load_generation(&sup.handle(Event::ReloadRequested(5), t0));
    sup.handle(
        Event::ConfigLoaded {
            generation: g,
            result: Ok(plan(1)),
        },
        t0,
    );
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: g,
            pid: 201,
        },
        t0,
    );
    let a = sup.handle(Event::Signal(MasterSignal::Int), t0);
    assert!(a.contains(&Action::ReplyReload {
        requests: vec![5],
        outcome: ReloadOutcome::Aborted
    }));
    let mut sig = signals(&a);
    sig.sort_by_key(|(pid, _)| *pid);
    assert_eq!(
        sig,
        vec![(101, WorkerSignal::Now), (201, WorkerSignal::Kill)]
    );
}

#[test]
fn harakiri_kills_only_the_worker_past_its_limit_and_replaces_it() {
    let t0 = Instant::now();
    let p = GenerationPlan {
        harakiri: Some(Duration::from_secs(3)),
        ..plan(2)
    };
    let (mut sup, _) = Supervisor::start(p, t0);
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: 1,
            pid: 10,
        },
        t0,
    );
    sup.handle(
        Event::Spawned {
            slot: 1,
            generation: 1,
            pid: 11,
        },
        t0,
    );
    sup.handle(Event::WorkerReady { pid: 10 }, t0);
    sup.handle(Event::WorkerReady { pid: 11 }, t0);
    assert_eq!(sup.next_deadline(), Some(t0 + HARAKIRI_PERIOD));
    let a = sup.handle(Event::Tick, t0 + HARAKIRI_PERIOD);
    assert!(a.contains(&Action::CheckHarakiri));
    let busy = vec![
        BusyWorker {
            pid: 10,
            age: Duration::from_millis(3100),
            request: "GET /sleep".into(),
        },
        BusyWorker {
            pid: 11,
            age: Duration::from_millis(100),
            request: "GET /".into(),
        },
    ];
    let t1 = t0 + HARAKIRI_PERIOD;
    let a = sup.handle(Event::BusyWorkers(busy), t1);
    assert_eq!(
        signals(&a),
        vec![(10, WorkerSignal::HarakiriDump)],
        "the stack dump comes before the kill"
    );
    assert_eq!(spawns(&a), vec![(0, 1)]);
    assert_eq!(sup.snapshot().tally.harakiri, 1);
    assert!(sup.next_deadline() <= Some(t1 + Duration::from_secs(3)));
    let a = sup.handle(Event::Tick, t1 + Duration::from_secs(2));
    assert!(
        !signals(&a).contains(&(10, WorkerSignal::Kill)),
        "still within the dump grace"
    );
    let a = sup.handle(Event::Tick, t1 + Duration::from_secs(3));
    assert_eq!(signals(&a), vec![(10, WorkerSignal::Kill)]);
    let a = sup.handle(
        Event::WorkerExited {
            pid: 10,
            reason: ExitReason::Signaled(9),
            detail: None,
        },
        t1 + Duration::from_secs(3),
    );
    assert!(spawns(&a).is_empty(), "already replaced");
    let tally = sup.snapshot().tally;
    assert_eq!(tally.exits["harakiri"], 1);
    assert_eq!(tally.exits["crash"], 0);
}

#[test]
fn harakiri_graceful_timeout_sends_the_graceful_signal_after_the_dump() {
    let t0 = Instant::now();
    let p = GenerationPlan {
        harakiri: Some(Duration::from_secs(3)),
        harakiri_grace: Duration::from_secs(7),
        harakiri_graceful_signal: Some(10),
        ..plan(1)
    };
    let (mut sup, _) = Supervisor::start(p, t0);
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: 1,
            pid: 10,
        },
        t0,
    );
    sup.handle(Event::WorkerReady { pid: 10 }, t0);
    let busy = vec![BusyWorker {
        pid: 10,
        age: Duration::from_secs(4),
        request: "GET /sleep".into(),
    }];
    let a = sup.handle(Event::BusyWorkers(busy), t0);
    assert_eq!(signals(&a), vec![(10, WorkerSignal::HarakiriDump)]);
    // The dump has its head start before the graceful signal can unwind the
    // stuck thread.
    assert_eq!(sup.next_deadline(), Some(t0 + DUMP_HEAD_START));
    let a = sup.handle(Event::Tick, t0 + DUMP_HEAD_START);
    assert_eq!(signals(&a), vec![(10, WorkerSignal::HarakiriGraceful(10))]);
    let a = sup.handle(Event::Tick, t0 + Duration::from_secs(6));
    assert!(signals(&a).is_empty(), "still within the graceful timeout");
    let a = sup.handle(Event::Tick, t0 + Duration::from_secs(7));
    assert_eq!(signals(&a), vec![(10, WorkerSignal::Kill)]);
}

#[test]
fn no_timer_runs_when_nothing_is_pending() {
    let t0 = Instant::now();
    let sup = running(4, t0);
    assert_eq!(
        sup.next_deadline(),
        None,
        "an idle master sleeps until an event arrives"
    );
}

#[test]
fn one_by_one_reload_replaces_a_slot_at_a_time() {
    let t0 = Instant::now();
    let mut sup = running(2, t0);
    let g = load_generation(&sup.handle(Event::Signal(MasterSignal::Hup), t0));
    let a = sup.handle(
        Event::ConfigLoaded {
            generation: g,
            result: Ok(GenerationPlan {
                one_by_one: true,
                ..plan(2)
            }),
        },
        t0,
    );
    assert_eq!(spawns(&a), vec![(0, g)]);
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: g,
            pid: 201,
        },
        t0,
    );
    let a = sup.handle(Event::WorkerReady { pid: 201 }, t0);
    assert_eq!(signals(&a), vec![(101, WorkerSignal::Graceful)]);
    assert_eq!(spawns(&a), vec![(1, g)]);
    sup.handle(
        Event::Spawned {
            slot: 1,
            generation: g,
            pid: 202,
        },
        t0,
    );
    let a = sup.handle(Event::WorkerReady { pid: 202 }, t0);
    assert_eq!(signals(&a), vec![(102, WorkerSignal::Graceful)]);
    assert!(a.contains(&Action::Activate { generation: g }));
}
