//! `cheaper` with the real binary and real workers: an instance with
//! `processes = 6` and `cheaper = 1` starts `cheaper-initial` workers, grows
//! by `cheaper-step` while all are busy, shrinks back to `cheaper` when idle,
//! with 0 failed requests; status, the stats socket (uWSGI's "cheap" slots)
//! and the metrics show it; a reload starts `cheaper-initial` workers; the
//! other algorithms fail closed.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Workers of the serving generation that take requests or are about to.
fn active(status: &Value) -> usize {
    serving_workers_in(status, &["idle", "busy", "booting"])
}

/// `amy_workers{state="STATE"}` from the metrics endpoint.
fn workers_metric(port: u16, state: &str) -> f64 {
    let text = http_get(port, "/metrics").unwrap().text();
    let prefix = format!("amy_workers{{state=\"{state}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

const CHEAPER: &str = "cheaper = 1\ncheaper-initial = 2\ncheaper-step = 2\ncheaper-overload = 1\n\
                       stats = %dstats.sock";

#[test]
fn cheaper_starts_few_workers_grows_under_load_and_shrinks_after() {
    let metrics = free_port();
    let site = Site::new(
        "cheaper",
        "memapp",
        6,
        &format!("{CHEAPER}\nprometheus = 127.0.0.1:{metrics}"),
    );
    let inst = site.start();
    let s = site.status_json();
    assert_eq!(active(&s), 2, "cheaper-initial workers: {s}");
    assert_eq!(s["cheaped"], serde_json::json!([3, 4, 5, 6]));
    // uWSGI's stats list every slot; the empty ones as "cheap", pid 0.
    let stats = read_stats(&site.dir.join("stats.sock"));
    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 6, "{stats}");
    let cheap: Vec<u64> = workers
        .iter()
        .filter(|w| w["status"] == "cheap")
        .map(|w| {
            assert_eq!(w["pid"], 0);
            w["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(cheap, vec![3, 4, 5, 6]);
    assert_eq!(workers_metric(metrics, "cheap"), 4.0);
    let text = site.cli(&["status", site.ini().to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("cheaper: no worker in slots 3, 4, 5, 6"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );

    // All busy: 8 clients on requests of 0.3 s for at most 25 s.
    let stop = Arc::new(AtomicBool::new(false));
    let sock = site.sock();
    let load = load(8, Duration::from_secs(25), stop.clone(), move || {
        uwsgi_get(&sock, "/?sleep=0.3")
    });
    // 8 clients keep 6 workers busy: 2 -> 4 -> 6 by cheaper-step.
    let grown = wait_for(
        "cheaper to grow to processes",
        Duration::from_secs(20),
        || {
            let n = active(&site.status_json());
            (n >= 6).then_some(n)
        },
    );
    stop.store(true, Ordering::SeqCst);
    let report = load.join().unwrap();
    eprintln!(
        "cheaper under load: grew 2 -> 4 -> {grown}, {} ok, {} failed",
        report.ok,
        report.failed.len()
    );
    assert_eq!(grown, 6);
    assert!(report.ok > 10, "{}", report.ok);
    assert!(
        report.failed.is_empty(),
        "failed while growing: {:?}",
        report.failed
    );
    let log = site.log_text();
    assert!(
        log.contains("cheaper: workers busy, adding workers"),
        "{}",
        inst.tail()
    );

    // Idle: back down to cheaper = 1, one worker a cheaper-overload cycle.
    wait_for("cheaper to shrink to 1", Duration::from_secs(30), || {
        let s = site.status_json();
        (active(&s) == 1 && s["workers"].as_array()?.len() == 1).then_some(())
    });
    assert!(site.log_text().contains("cheaper: idle, retiring a worker"));
    assert_eq!(workers_metric(metrics, "cheap"), 5.0);
    let stats = read_stats(&site.dir.join("stats.sock"));
    let cheap = stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["status"] == "cheap")
        .count();
    assert_eq!(cheap, 5, "{stats}");
    // Still serving.
    assert_eq!(uwsgi_get(&site.sock(), "/").unwrap().status, 200);
}

#[test]
fn a_reload_with_cheaper_starts_cheaper_initial_workers() {
    let site = Site::new("cheaper-reload", "memapp", 6, CHEAPER);
    let _inst = site.start();
    let stop = Arc::new(AtomicBool::new(false));
    let sock = site.sock();
    let load = load(8, Duration::from_secs(25), stop.clone(), move || {
        uwsgi_get(&sock, "/?sleep=0.3")
    });
    wait_for("cheaper to grow", Duration::from_secs(20), || {
        (active(&site.status_json()) >= 4).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let report = load.join().unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let out = site.cli(&["reload", site.ini().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let s = wait_for("only the new generation", Duration::from_secs(30), || {
        let s = site.status_json();
        let g = s["generation"].as_u64()?;
        s["workers"]
            .as_array()?
            .iter()
            .all(|w| w["generation"].as_u64() == Some(g))
            .then_some(s)
    });
    assert_eq!(s["generation"], 2);
    assert!(
        active(&s) <= 2,
        "the new generation starts cheaper-initial = 2 (the idle check may already have cheaped one): {s}"
    );
}

#[test]
fn cheaper_keys_are_checked_and_other_algorithms_fail_closed() {
    for (extra, needle) in [
        ("cheaper = 6", "must be lower than processes"),
        (
            "cheaper = 2\ncheaper-algo = busyness",
            "cheaper-algo = busyness",
        ),
        ("cheaper = 2\ncheaper-algo = backlog", "not supported"),
        (
            "cheaper = 2\ncheaper-busyness-max = 50",
            "cheaper-busyness-max",
        ),
    ] {
        assert_check_refuses(&Site::new("cheaper-check", "memapp", 6, extra), needle);
    }
    let site = Site::new(
        "cheaper-ok",
        "memapp",
        6,
        "cheaper = 2\ncheaper-initial = 1\ncheaper-algo = spare2\ncheaper-idle = 5",
    );
    let (code, text) = check_site(&site);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("cheaper-initial = 1: below cheaper"),
        "uWSGI's warning: {text}"
    );
}
