//! Preload (uWSGI's default, no `lazy-apps`): one app template per generation
//! imports the app and forks the workers. Against the real binary with an app
//! whose import takes 1 s and allocates ~40 MiB (tests/apps/heavy.py), compared
//! with `lazy-apps = true` on the same app.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

fn heavy_site(name: &str, processes: u32, extra: &str) -> Site {
    let site = Site::new(name, "heavy", processes, "");
    let log = site.dir.join("imports.log");
    site.write_ini(
        "heavy",
        processes,
        &format!("env = HEAVY_IMPORT_LOG={}\n{extra}", log.display()),
    );
    site
}

fn imports(site: &Site) -> usize {
    std::fs::read_to_string(site.dir.join("imports.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn pss_kib(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn template_pids(status: &serde_json::Value) -> Vec<i32> {
    status["templates"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["pid"].as_i64().map(|p| p as i32))
                .collect()
        })
        .unwrap_or_default()
}

/// Master, templates and workers: the whole instance's proportional memory.
fn instance_pss_kib(inst: &Instance<'_>) -> u64 {
    let status = inst.site.status_json();
    let mut pids = vec![inst.pid()];
    pids.extend(template_pids(&status));
    pids.extend(inst.worker_pids());
    pids.iter().map(|p| pss_kib(*p)).sum()
}

fn ppid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = &stat[stat.rfind(')').map(|i| i + 2).unwrap_or(0)..];
    after
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn pids_of(site: &Site, generation: u64) -> Vec<i32> {
    site.status_json()["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["generation"] == generation)
        .filter_map(|w| w["pid"].as_i64().map(|p| p as i32))
        .collect()
}

fn ready_template(site: &Site, generation: u64) -> Option<i32> {
    let status = site.status_json();
    status["templates"].as_array()?.iter().find_map(|t| {
        (t["generation"] == generation && t["state"] == "ready")
            .then(|| t["pid"].as_i64().map(|p| p as i32))
            .flatten()
    })
}

#[test]
fn preload_imports_once_forks_children_of_the_master_and_uses_under_0_6_of_lazy_pss() {
    let pre = heavy_site("pre-pss", 4, "");
    let inst = pre.start();
    assert_eq!(imports(&pre), 1, "one import per generation preloaded");
    let status = pre.status_json();
    let templates = status["templates"].as_array().expect("templates listed");
    assert_eq!(templates.len(), 1, "{status}");
    assert_eq!(templates[0]["state"], "ready");
    assert!(
        templates[0]["rss_bytes"].as_u64().unwrap() > 30 << 20,
        "{status}"
    );
    let template = templates[0]["pid"].as_i64().unwrap() as i32;
    assert_eq!(cmdline(template), "amy-emperor template gen 1");
    let workers = inst.worker_pids();
    assert_eq!(workers.len(), 4);
    let mut seeds = Vec::new();
    for w in &workers {
        // The master supervises every worker directly, whoever forked it.
        assert_eq!(ppid(*w), inst.pid(), "worker {w} is the master's child");
        assert!(
            cmdline(*w).starts_with("amy-emperor worker "),
            "{}",
            cmdline(*w)
        );
        assert!(!template_pids(&status).contains(w));
    }
    // Every worker answers, each with its own random stream (at-fork reseed).
    wait_for("every worker to answer", Duration::from_secs(20), || {
        let r = uwsgi_get(&pre.sock(), "/").ok()?;
        let text = r.text();
        let seed = text.split_whitespace().nth(2)?.to_string();
        let pid: i32 = text.split_whitespace().nth(1)?.parse().ok()?;
        if !seeds.iter().any(|(p, _)| *p == pid) {
            seeds.push((pid, seed));
        }
        (seeds.len() == 4).then_some(())
    });
    let mut distinct: Vec<&String> = seeds.iter().map(|(_, s)| s).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        4,
        "random is reseeded after fork: {seeds:?}"
    );
    let preload_pss = instance_pss_kib(&inst);
    drop(inst);

    let lazy = heavy_site("lazy-pss", 4, "lazy-apps = true\n");
    let inst = lazy.start();
    assert_eq!(imports(&lazy), 4, "lazy-apps: every worker imports");
    assert!(
        lazy.status_json()["templates"]
            .as_array()
            .is_none_or(|t| t.is_empty()),
        "no template with lazy-apps"
    );
    let lazy_pss = instance_pss_kib(&inst);
    eprintln!("total PSS: preload {preload_pss} KiB, lazy {lazy_pss} KiB");
    assert!(
        (preload_pss as f64) <= 0.6 * lazy_pss as f64,
        "preload {preload_pss} KiB vs lazy {lazy_pss} KiB"
    );
}

/// The master's log time of `what` for `pid` (`... what ... pid=N ...`).
fn logged_at(log: &str, what: &str, pid: i32) -> Option<stamp::Stamp> {
    log.lines()
        .find(|l| l.contains(what) && l.contains(&format!(" pid={pid} ")))
        .and_then(stamp::parse)
}

/// RFC 3339 UTC stamps as the log writes them, compared within one day.
mod stamp {
    pub type Stamp = f64;
    pub fn parse(line: &str) -> Option<Stamp> {
        let t = line.get(11..26)?; // HH:MM:SS.ffffff
        let h: f64 = t.get(0..2)?.parse().ok()?;
        let m: f64 = t.get(3..5)?.parse().ok()?;
        let s: f64 = t.get(6..15)?.parse().ok()?;
        Some(h * 3600.0 + m * 60.0 + s)
    }
}

#[test]
fn a_killed_worker_is_replaced_by_a_fork_without_an_import() {
    // An import of 3 s: a replacement ready sooner was forked, not imported.
    let site = heavy_site("pre-kill", 2, "env = HEAVY_IMPORT_S=3\n");
    let inst = site.start();
    let before = inst.worker_pids();
    let victim = before[0];
    assert!(kill(victim, libc::SIGKILL));
    let replacement = ready_replacement(&site, &before, Duration::from_secs(20));
    // Serving: it answers (the other worker may take some requests too).
    wait_answered_by(&site, replacement);
    let log = site.log_text();
    let died = logged_at(&log, "worker died", victim).expect("death logged");
    let ready = logged_at(&log, "worker ready", replacement).expect("ready logged");
    let took = ready - died;
    eprintln!(
        "SIGKILL -> replacement ready (master's log): {:.0} ms",
        took * 1000.0
    );
    assert_eq!(imports(&site), 1, "a respawn is a fork, not an import");
    assert_eq!(ppid(replacement), inst.pid());
    // The 50 ms target holds on an idle machine; on a shared one, the figure
    // is printed and must stay under the import time.
    assert!(took < 3.0, "took {took} s");
}

#[test]
fn a_killed_template_leaves_the_workers_serving_and_is_replaced() {
    let site = heavy_site("pre-tkill", 2, "");
    let inst = site.start();
    let workers = inst.worker_pids();
    let template = ready_template(&site, 1).expect("a ready template");
    assert!(kill(template, libc::SIGKILL));
    // The workers do not notice: each request is answered by one of them.
    for _ in 0..20 {
        let r = uwsgi_get(&site.sock(), "/").expect("served while the template is down");
        assert_eq!(r.status, 200);
        let pid: i32 = r.header("X-Worker-Pid").unwrap().parse().unwrap();
        assert!(workers.contains(&pid));
    }
    let new_template = wait_for("a new template", Duration::from_secs(20), || {
        ready_template(&site, 1).filter(|p| *p != template)
    });
    assert_eq!(imports(&site), 2);
    assert_eq!(inst.worker_pids(), workers, "the workers were not touched");
    assert!(site.log_text().contains("the app template died"));
    // A replacement is forked from the new template.
    assert!(kill(workers[0], libc::SIGKILL));
    wait_for("a replacement worker", Duration::from_secs(20), || {
        let pids = inst.worker_pids();
        (pids.len() == 2 && !pids.contains(&workers[0])).then_some(())
    });
    assert_eq!(imports(&site), 2);
    assert!(common::alive(new_template));
}

#[test]
fn reload_under_load_through_nginx_imports_once_and_fails_nothing_and_a_broken_release_keeps_the_old(
) {
    let site = heavy_site("pre-reload", 2, "");
    let inst = site.start();
    let old = inst.worker_pids();
    let old_template = ready_template(&site, 1).unwrap();
    let nginx = Nginx::start(&site.sock());
    let port = nginx.port;
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(3, Duration::from_secs(60), stop.clone(), move || {
        http_get(port, "/")
    });
    let out = Command::new(BIN)
        .arg("reload")
        .arg(site.ini())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(imports(&site), 2, "one import per reload");
    let new = pids_of(&site, 2);
    assert!(
        new.iter().all(|p| !old.contains(p)),
        "old {old:?} new {new:?}"
    );
    wait_for("the old template to exit", Duration::from_secs(20), || {
        (!common::alive(old_template)).then_some(())
    });
    let new_template = ready_template(&site, 2).expect("generation 2 has a template");

    // A release that fails at import: the old generation serves on.
    let log = site.dir.join("imports.log");
    site.write_ini(
        "heavy",
        2,
        &format!(
            "env = HEAVY_IMPORT_LOG={}\nenv = HEAVY_MODE=import_error\nenv = HEAVY_RELEASE=2\n",
            log.display()
        ),
    );
    let out = Command::new(BIN)
        .arg("reload")
        .arg(site.ini())
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("release 2 is broken at import"), "{said}");
    // Writing the ini reloads too: once per failed generation, not per worker.
    let log_text = site.log_text();
    assert_eq!(
        log_text.matches("release 2 is broken at import").count(),
        log_text.matches("new generation failed to boot").count(),
        "the traceback is logged once per failed generation"
    );
    stop.store(true, Ordering::SeqCst);
    let report = load.join().unwrap();
    assert!(
        report.failed.is_empty(),
        "{} failed: {:?}\n{}",
        report.failed.len(),
        &report.failed[..report.failed.len().min(5)],
        nginx.error_log()
    );
    assert!(report.ok > 20, "{}", report.ok);
    assert_eq!(
        pids_of(&site, 2),
        new,
        "the serving generation is untouched"
    );
    assert_eq!(ready_template(&site, 2), Some(new_template));
    let r = http_get(port, "/").unwrap();
    assert_eq!((r.status, r.header("X-Release")), (200, Some("1")));
}

#[test]
fn an_import_error_in_the_template_at_start_is_a_failed_start() {
    let site = heavy_site("pre-broken", 2, "env = HEAVY_MODE=import_error\n");
    let mut inst = site.spawn();
    let code = inst.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 1, "{}", inst.tail());
    assert!(
        site.log_text().contains("is broken at import"),
        "{}",
        inst.tail()
    );
    assert_eq!(imports(&site), 1, "no retry loop of the import");
}
