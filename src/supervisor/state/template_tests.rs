//! The template rules (preload), one test each, with explicit instants.

use std::time::{Duration, Instant};

use super::fixtures::{preload, signals, spawns, template_spawns};
use super::*;

/// Generation 1 preloaded and serving: template pid 900, workers 101.. .
fn running(n: usize, t0: Instant) -> Supervisor {
    let (mut sup, actions) = Supervisor::start(preload(n), t0);
    assert_eq!(template_spawns(&actions), vec![1]);
    assert!(spawns(&actions).is_empty(), "workers wait for the template");
    sup.handle(
        Event::TemplateSpawned {
            generation: 1,
            pid: 900,
        },
        t0,
    );
    let actions = sup.handle(
        Event::TemplateReady {
            generation: 1,
            pid: 900,
        },
        t0,
    );
    assert_eq!(spawns(&actions).len(), n);
    for slot in 0..n {
        sup.handle(
            Event::Spawned {
                slot,
                generation: 1,
                pid: 101 + slot as i32,
            },
            t0,
        );
        sup.handle(
            Event::WorkerReady {
                pid: 101 + slot as i32,
            },
            t0,
        );
    }
    assert_eq!(sup.phase(), Phase::Running);
    sup
}

#[test]
fn workers_are_forked_only_once_the_template_is_ready() {
    let t0 = Instant::now();
    let (mut sup, _) = Supervisor::start(preload(2), t0);
    let a = sup.handle(
        Event::TemplateSpawned {
            generation: 1,
            pid: 900,
        },
        t0,
    );
    assert!(spawns(&a).is_empty());
    let a = sup.handle(
        Event::TemplateReady {
            generation: 1,
            pid: 900,
        },
        t0,
    );
    assert_eq!(spawns(&a), vec![(0, 1), (1, 1)]);
}

#[test]
fn a_dead_worker_is_forked_at_once_from_the_ready_template() {
    let t0 = Instant::now();
    let mut sup = running(2, t0);
    let a = sup.handle(
        Event::WorkerExited {
            pid: 101,
            reason: ExitReason::Signaled(9),
            detail: None,
        },
        t0 + Duration::from_secs(5),
    );
    assert_eq!(spawns(&a), vec![(0, 1)]);
    assert!(template_spawns(&a).is_empty());
}

#[test]
fn a_dead_template_is_replaced_and_respawns_wait_for_the_new_one() {
    let t0 = Instant::now();
    let mut sup = running(2, t0);
    let t1 = t0 + Duration::from_secs(120);
    let a = sup.handle(
        Event::TemplateExited {
            generation: 1,
            pid: 900,
            reason: ExitReason::Signaled(9),
            detail: None,
        },
        t1,
    );
    // The workers are not touched; a new template starts at once (first death).
    assert!(signals(&a).is_empty());
    assert_eq!(template_spawns(&a), vec![1]);
    let a = sup.handle(
        Event::WorkerExited {
            pid: 102,
            reason: ExitReason::Signaled(9),
            detail: None,
        },
        t1,
    );
    assert!(
        spawns(&a).is_empty(),
        "held until the new template is ready"
    );
    sup.handle(
        Event::TemplateSpawned {
            generation: 1,
            pid: 901,
        },
        t1,
    );
    let a = sup.handle(
        Event::TemplateReady {
            generation: 1,
            pid: 901,
        },
        t1,
    );
    assert_eq!(spawns(&a), vec![(1, 1)]);
}

#[test]
fn a_template_that_keeps_dying_is_restarted_with_back_off() {
    let t0 = Instant::now();
    let mut sup = running(1, t0);
    let mut now = t0 + Duration::from_secs(1);
    let mut pid = 900;
    // First death: at once. Second (it lived no time): after a delay.
    for round in 0..2 {
        let a = sup.handle(
            Event::TemplateExited {
                generation: 1,
                pid,
                reason: ExitReason::Crashed(1),
                detail: None,
            },
            now,
        );
        if round == 0 {
            assert_eq!(template_spawns(&a), vec![1]);
            pid = 901;
            sup.handle(Event::TemplateSpawned { generation: 1, pid }, now);
        } else {
            assert!(template_spawns(&a).is_empty());
            let due = sup.next_deadline().expect("a restart is scheduled");
            assert!(due > now);
            now = due;
            let a = sup.handle(Event::Tick, now);
            assert_eq!(template_spawns(&a), vec![1]);
        }
    }
}

#[test]
fn an_import_error_in_the_template_at_start_gives_up() {
    let t0 = Instant::now();
    let (mut sup, _) = Supervisor::start(preload(2), t0);
    sup.handle(
        Event::TemplateSpawned {
            generation: 1,
            pid: 900,
        },
        t0,
    );
    let a = sup.handle(
        Event::TemplateExited {
            generation: 1,
            pid: 900,
            reason: ExitReason::AppLoadFailed,
            detail: Some("Traceback".into()),
        },
        t0,
    );
    assert!(a.contains(&Action::Exit(1)), "{a:?}");
}

#[test]
fn an_import_error_in_a_reloads_template_fails_the_reload_and_the_old_one_serves() {
    let t0 = Instant::now();
    let mut sup = running(2, t0);
    sup.handle(Event::ReloadRequested(7), t0);
    let a = sup.handle(
        Event::ConfigLoaded {
            generation: 2,
            result: Ok(preload(2)),
        },
        t0,
    );
    assert_eq!(template_spawns(&a), vec![2]);
    assert!(spawns(&a).is_empty());
    sup.handle(
        Event::TemplateSpawned {
            generation: 2,
            pid: 950,
        },
        t0,
    );
    let a = sup.handle(
        Event::TemplateExited {
            generation: 2,
            pid: 950,
            reason: ExitReason::AppLoadFailed,
            detail: Some("ImportError: broken".into()),
        },
        t0,
    );
    let reply = a.iter().find_map(|a| match a {
        Action::ReplyReload { requests, outcome } => Some((requests.clone(), outcome.clone())),
        _ => None,
    });
    match reply {
        Some((requests, ReloadOutcome::Failed { generation, reason })) => {
            assert_eq!((requests, generation), (vec![7], 2));
            assert!(reason.contains("ImportError: broken"));
        }
        other => panic!("{other:?}"),
    }
    assert!(signals(&a).is_empty(), "the old generation is not touched");
    assert_eq!(sup.snapshot().generation, 1);
}

#[test]
fn the_old_template_retires_with_its_generation() {
    let t0 = Instant::now();
    let mut sup = running(1, t0);
    sup.handle(Event::ReloadRequested(1), t0);
    sup.handle(
        Event::ConfigLoaded {
            generation: 2,
            result: Ok(preload(1)),
        },
        t0,
    );
    sup.handle(
        Event::TemplateSpawned {
            generation: 2,
            pid: 950,
        },
        t0,
    );
    sup.handle(
        Event::TemplateReady {
            generation: 2,
            pid: 950,
        },
        t0,
    );
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: 2,
            pid: 201,
        },
        t0,
    );
    let a = sup.handle(Event::WorkerReady { pid: 201 }, t0);
    let s = signals(&a);
    assert!(s.contains(&(101, WorkerSignal::Graceful)), "{s:?}");
    assert!(s.contains(&(900, WorkerSignal::Graceful)), "{s:?}");
    assert!(!s.iter().any(|(p, _)| *p == 950));
    let a = sup.handle(
        Event::TemplateExited {
            generation: 1,
            pid: 900,
            reason: ExitReason::Signaled(15),
            detail: None,
        },
        t0,
    );
    assert!(
        template_spawns(&a).is_empty(),
        "a retired template is not replaced"
    );
}

#[test]
fn stop_waits_for_the_template_too() {
    let t0 = Instant::now();
    let mut sup = running(1, t0);
    let a = sup.handle(Event::Signal(MasterSignal::Term), t0);
    assert!(signals(&a).contains(&(900, WorkerSignal::Kill)));
    let a = sup.handle(
        Event::WorkerExited {
            pid: 101,
            reason: ExitReason::Graceful,
            detail: None,
        },
        t0,
    );
    assert!(!a.contains(&Action::Exit(0)), "the template is still there");
    let a = sup.handle(
        Event::TemplateExited {
            generation: 1,
            pid: 900,
            reason: ExitReason::Signaled(9),
            detail: None,
        },
        t0,
    );
    assert!(a.contains(&Action::Exit(0)));
}

#[test]
fn a_failed_check_during_a_reload_fails_it_with_the_reason() {
    let t0 = Instant::now();
    let mut sup = running(1, t0);
    sup.handle(Event::ReloadRequested(3), t0);
    sup.handle(
        Event::ConfigLoaded {
            generation: 2,
            result: Ok(preload(1)),
        },
        t0,
    );
    sup.handle(
        Event::TemplateSpawned {
            generation: 2,
            pid: 950,
        },
        t0,
    );
    sup.handle(
        Event::TemplateReady {
            generation: 2,
            pid: 950,
        },
        t0,
    );
    sup.handle(
        Event::Spawned {
            slot: 0,
            generation: 2,
            pid: 201,
        },
        t0,
    );
    let a = sup.handle(
        Event::WorkerExited {
            pid: 201,
            reason: ExitReason::CheckFailed,
            detail: Some("reload-check GET / answered 500".into()),
        },
        t0,
    );
    let outcome = a.iter().find_map(|a| match a {
        Action::ReplyReload { outcome, .. } => Some(outcome.clone()),
        _ => None,
    });
    assert!(
        matches!(&outcome, Some(ReloadOutcome::Failed { reason, .. }) if reason.contains("answered 500")),
        "{outcome:?}"
    );
    assert!(signals(&a).contains(&(950, WorkerSignal::Kill)));
}
