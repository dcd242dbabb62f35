//! Worker lifetimes and memory limits with the real binary and real workers:
//! `max-worker-lifetime` (replacement ready before the aged worker leaves,
//! 0 failed requests under load, capacity never below `processes`),
//! `limit-as`, `reload-on-as`, `evil-reload-on-rss`, `max-requests-delta`,
//! `min-worker-lifetime`, and the config checks of these keys.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Workers of the serving generation that take requests (idle or busy).
fn accepting(status: &serde_json::Value) -> usize {
    serving_workers_in(status, &["idle", "busy"])
}

fn pid_of(r: &Response) -> i32 {
    r.header("X-Worker-Pid").unwrap().parse().unwrap()
}

/// (VmSize MiB, RSS MiB) of whichever worker answers.
fn worker_mem(site: &Site) -> (u64, u64) {
    let text = uwsgi_get(&site.sock(), "/mem").unwrap().text();
    let mut it = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// Rewrites the ini with `extra` (the watcher reloads it); returns once the
/// new generation alone serves.
fn reload_with(site: &Site, processes: u32, extra: &str) {
    let before = site.status_json()["generation"].as_u64().unwrap();
    site.write_ini("memapp", processes, extra);
    wait_for("the new generation alone", Duration::from_secs(60), || {
        let s = site.status_json();
        let generation = s["generation"].as_u64()?;
        let workers = s["workers"].as_array()?;
        (generation > before
            && s["reloading"] == false
            && workers.len() == processes as usize
            && workers
                .iter()
                .all(|w| w["generation"].as_u64() == Some(generation) && w["state"] == "idle"))
        .then_some(())
    });
}

#[test]
fn max_worker_lifetime_recycles_every_worker_with_0_failed_requests() {
    let site = Site::new(
        "lifetime",
        "memapp",
        2,
        "max-worker-lifetime = 2\nworker-reload-mercy = 10",
    );
    let inst = site.start();
    let first = inst.worker_pids();
    assert_eq!(first.len(), 2);
    let stop = Arc::new(AtomicBool::new(false));
    let sock = site.sock();
    let load = load(4, Duration::from_secs(30), stop.clone(), move || {
        uwsgi_get(&sock, "/?sleep=0.02")
    });
    // Watch the capacity while both original workers are replaced.
    let mut min_accepting = usize::MAX;
    let t0 = Instant::now();
    let mut replaced = false;
    while t0.elapsed() < Duration::from_secs(25) {
        let s = site.status_json();
        if s["phase"] == "running" {
            min_accepting = min_accepting.min(accepting(&s));
        }
        let pids = inst.worker_pids();
        if first.iter().all(|p| !alive(*p)) && !pids.iter().any(|p| first.contains(p)) {
            replaced = true;
            // One more cycle's worth of samples.
            if t0.elapsed() > Duration::from_secs(6) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    let report = load.join().unwrap();
    eprintln!(
        "max-worker-lifetime under load: {} ok, {} failed, lowest accepting {min_accepting} of 2, {} distinct pids",
        report.ok,
        report.failed.len(),
        report
            .pids
            .iter()
            .map(|(_, p)| *p)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
    assert!(replaced, "both workers recycled by age\n{}", inst.tail());
    assert!(report.ok > 50, "load ran: {}", report.ok);
    assert!(
        report.failed.is_empty(),
        "failed requests during lifetime recycling: {:?}",
        &report.failed[..report.failed.len().min(5)]
    );
    assert!(
        min_accepting >= 2,
        "capacity fell to {min_accepting} of 2 while a worker was replaced"
    );
    let log = site.log_text();
    assert!(log.contains("worker lifetime reached"), "{}", inst.tail());
    assert!(log.contains("replacement ready, retiring the aged worker"));
}

#[test]
fn limit_as_sets_rlimit_as_and_the_worker_recycles_before_allocations_fail() {
    let site = Site::new("limitas", "memapp", 1, "");
    let inst = site.start();
    assert_eq!(
        uwsgi_get(&site.sock(), "/rlimit").unwrap().text(),
        "-1",
        "no limit without the key"
    );
    let (vsz, _) = worker_mem(&site);
    let limit = vsz + 200;
    reload_with(&site, 1, &format!("limit-as = {limit}"));
    assert_eq!(
        uwsgi_get(&site.sock(), "/rlimit").unwrap().text(),
        (limit << 20).to_string(),
        "RLIMIT_AS in the worker"
    );
    // The limit is real: a large allocation is refused, the worker lives on.
    let pid = pid_of(&uwsgi_get(&site.sock(), "/").unwrap());
    assert_eq!(
        uwsgi_get(&site.sock(), &format!("/alloc?mb={}", limit + 100))
            .unwrap()
            .text(),
        "refused"
    );
    // A leaking app: the worker recycles itself past 90 % of the limit, so
    // no allocation ever fails and no request is lost.
    let mut pids = vec![pid];
    for i in 0..40 {
        let r = uwsgi_get(&site.sock(), "/leak?mb=16").unwrap();
        assert_eq!(r.status, 200, "leak request {i}");
        let p = pid_of(&r);
        if pids.last() != Some(&p) {
            pids.push(p);
        }
    }
    assert!(
        pids.len() >= 2,
        "recycled near limit-as: {pids:?}\n{}",
        inst.tail()
    );
    assert!(
        site.log_text().contains("limit-as"),
        "the recycle is logged with its reason\n{}",
        inst.tail()
    );
}

#[test]
fn reload_on_as_recycles_the_worker_after_the_request_that_crossed_it() {
    let site = Site::new("reloadonas", "memapp", 1, "lazy-apps = true");
    let inst = site.start();
    let (vsz, _) = worker_mem(&site);
    reload_with(
        &site,
        1,
        &format!("lazy-apps = true\nreload-on-as = {}", vsz + 100),
    );
    let before = pid_of(&uwsgi_get(&site.sock(), "/").unwrap());
    let r = uwsgi_get(&site.sock(), "/leak?mb=150").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(pid_of(&r), before, "the request that crossed it completes");
    let after = wait_for("a new worker", Duration::from_secs(20), || {
        let p = pid_of(&uwsgi_get(&site.sock(), "/").ok()?);
        (p != before).then_some(p)
    });
    assert_ne!(after, before);
    assert!(site.log_text().contains("reload-on-as"), "{}", inst.tail());
}

#[test]
fn evil_reload_on_rss_recycles_a_worker_mid_request_and_the_others_serve_on() {
    let site = Site::new("evilrss", "memapp", 2, "");
    let inst = site.start();
    let (_, rss) = worker_mem(&site);
    let limit = rss + 100;
    reload_with(&site, 2, &format!("evil-reload-on-rss = {limit}"));
    let pids = inst.worker_pids();
    // One request grows past the limit and then holds for 60 s.
    let sock = site.sock();
    let hold = std::thread::spawn(move || uwsgi_get(&sock, "/hold?mb=200&sleep=60"));
    let stop = Arc::new(AtomicBool::new(false));
    let sock = site.sock();
    let t0 = Instant::now();
    let load = load(2, Duration::from_secs(30), stop.clone(), move || {
        uwsgi_get(&sock, "/?sleep=0.01")
    });
    let _gone = wait_for("the fat worker to go", Duration::from_secs(20), || {
        pids.iter().copied().find(|p| !alive(*p))
    });
    let took = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    let report = load.join().unwrap();
    assert!(
        took < Duration::from_secs(15),
        "recycled mid-request (its request would take 60 s): {took:?}"
    );
    // The held request was cut: its worker is gone.
    assert!(hold
        .join()
        .unwrap()
        .map(|r| r.status != 200)
        .unwrap_or(true));
    assert!(
        report.failed.is_empty(),
        "other requests failed: {:?}",
        report.failed
    );
    wait_for("two workers again", Duration::from_secs(20), || {
        (accepting(&site.status_json()) == 2).then_some(())
    });
    let log = site.log_text();
    assert!(
        log.contains("worker over its memory limit"),
        "{}",
        inst.tail()
    );
}

#[test]
fn max_requests_delta_gives_each_worker_its_own_limit() {
    // Worker 1 recycles every 3 requests, worker 2 only after 3 + 100.
    let site = Site::new(
        "maxreqdelta",
        "memapp",
        2,
        "max-requests = 3\nmax-requests-delta = 100",
    );
    let inst = site.start();
    let id_pid = |id: u64| -> i64 {
        let s = site.status_json();
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"].as_u64() == Some(id) && w["state"] != "retiring")
            .and_then(|w| w["pid"].as_i64())
            .unwrap_or(0)
    };
    let second = id_pid(2);
    let mut seen = std::collections::BTreeSet::new();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let sock = site.sock();
            std::thread::spawn(move || {
                (0..30)
                    .map(|_| pid_of(&uwsgi_get(&sock, "/?sleep=0.005").unwrap()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        seen.extend(h.join().unwrap());
    }
    assert!(
        seen.len() >= 3,
        "worker 1 recycled: {seen:?}\n{}",
        inst.tail()
    );
    assert_eq!(id_pid(2), second, "worker 2's limit is 103: never reached");
}

#[test]
fn min_worker_lifetime_holds_max_requests_until_the_worker_is_old_enough() {
    let site = Site::new(
        "minlifetime",
        "memapp",
        1,
        "max-requests = 1\nmin-worker-lifetime = 3",
    );
    let _inst = site.start();
    let t0 = Instant::now();
    let first = pid_of(&uwsgi_get(&site.sock(), "/").unwrap());
    let mut pid = first;
    // An observation window: for 2 s every request lands on the first worker.
    while t0.elapsed() < Duration::from_secs(2) {
        pid = pid_of(&uwsgi_get(&site.sock(), "/").unwrap());
        assert_eq!(pid, first, "recycled before min-worker-lifetime");
        std::thread::sleep(Duration::from_millis(100));
    }
    let next = wait_for(
        "the recycle once old enough",
        Duration::from_secs(20),
        || {
            let p = pid_of(&uwsgi_get(&site.sock(), "/").ok()?);
            (p != pid).then_some(p)
        },
    );
    assert_ne!(next, first);
}

#[test]
fn lifetime_and_memory_keys_are_checked_with_path_and_line() {
    let cases = [
        (
            "max-worker-lifetime = 10\nmin-worker-lifetime = 10",
            "must be lower than max-worker-lifetime",
        ),
        ("limit-as = lots", "limit-as"),
        ("evil-reload-on-rss = -5", "evil-reload-on-rss"),
    ];
    for (extra, needle) in cases {
        assert_check_refuses(&Site::new("lifetimecheck", "memapp", 2, extra), needle);
    }
    let site = Site::new(
        "lifetimeok",
        "memapp",
        2,
        "max-worker-lifetime = 3600\nmax-worker-lifetime-delta = 30\nlimit-as = 1024\n\
         reload-on-as = 900\nevil-reload-on-rss = 600\nevil-reload-on-as = 2048\n\
         max-requests = 1000\nmax-requests-delta = 50\nmin-worker-lifetime = 60",
    );
    let (code, text) = check_site(&site);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn max_worker_lifetime_under_wrk_through_nginx_gets_only_2xx() {
    let site = Site::new("lifetime-wrk", "memapp", 2, "max-worker-lifetime = 2");
    let inst = site.start();
    let nginx = Nginx::start(&site.sock());
    let out = std::process::Command::new("wrk")
        .args(["-t2", "-c16", "-d8s", "--timeout", "5s"])
        .arg(format!("http://127.0.0.1:{}/", nginx.port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("wrk through nginx with max-worker-lifetime = 2:\n{text}");
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}\n{}", inst.tail());
    assert!(!text.contains("Socket errors"), "{text}");
    let recycles = site
        .log_text()
        .matches("replacement ready, retiring the aged worker")
        .count();
    assert!(
        recycles >= 4,
        "{recycles} lifetime recycles in 8 s\n{}",
        inst.tail()
    );
}

#[test]
fn uwsgi_environment_variables_set_options_as_uwsgi_reads_them() {
    // UWSGI_MAX_REQUESTS=2 in the master's environment is `max-requests = 2`
    // (uWSGI's parse_sys_envs): the worker recycles after its second request.
    let site = Site::new("env-options", "heavy", 1, "env = HEAVY_IMPORT_S=0\n");
    let inst = site.spawn_with_env(&[], &[("UWSGI_MAX_REQUESTS", "2")]);
    inst.wait_ready();
    let first = pid_of(&uwsgi_get(&site.sock(), "/").unwrap());
    assert_eq!(pid_of(&uwsgi_get(&site.sock(), "/").unwrap()), first);
    let next = wait_for("a recycled worker", Duration::from_secs(20), || {
        let pid = pid_of(&uwsgi_get(&site.sock(), "/").ok()?);
        (pid != first).then_some(pid)
    });
    assert!(site.log_text().contains("worker recycled"), "{next}");

    // A key that would be lost fails closed, named by the variable.
    let out = std::process::Command::new(BIN)
        .arg("check")
        .arg(site.ini())
        .env("UWSGI_SPOOLER", "/tmp/never-used")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("environment variable UWSGI_SPOOLER: \"spooler\" is not supported"),
        "{said}"
    );
}
