//! Zero-downtime reload (issue 4): touching the ini under load through real
//! nginx, broken deploys, broken configs, coalescing, rename/symlink/checkout
//! replacements, and a fresh environment per generation.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::*;

/// The pids of generation `g`'s workers (retiring workers of older generations
/// stay listed until they have finished their requests).
fn pids_of_generation(site: &Site, g: u64) -> Vec<i32> {
    site.status_json()["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["generation"].as_u64() == Some(g))
        .filter_map(|w| w["pid"].as_i64())
        .map(|p| p as i32)
        .collect()
}

fn touch(path: &std::path::Path) {
    let f = std::fs::File::options().append(true).open(path).unwrap();
    f.set_modified(SystemTime::now()).unwrap();
}

fn reloads_in_log(site: &Site) -> usize {
    site.log_text().matches("reload requested").count()
}

#[test]
fn touching_the_ini_under_load_through_nginx_fails_no_request() {
    let site = Site::new("touch", "hello", 2, "");
    let inst = site.start();
    let old = inst.worker_pids();
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(site.sock()).unwrap());
    let nginx = Nginx::start(&site.sock());
    let port = nginx.port;
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(4, Duration::from_secs(30), stop.clone(), move || {
        http_get(port, "/")
    });
    wait_for("load to flow", Duration::from_secs(5), || {
        (site.status_json()["workers"]
            .as_array()?
            .iter()
            .map(|w| w["requests"].as_u64().unwrap_or(0))
            .sum::<u64>()
            > 50)
            .then_some(())
    });
    touch(&site.ini());
    wait_generation(&site, 2);
    let new = pids_of_generation(&site, 2);
    assert!(
        new.iter().all(|p| !old.contains(p)),
        "old {old:?} new {new:?}"
    );
    let switched = Instant::now();
    wait_for(
        "answers from the new workers",
        Duration::from_secs(5),
        || {
            http_get(port, "/")
                .ok()
                .and_then(|r| r.header("X-Worker-Pid")?.parse::<i32>().ok())
                .filter(|p| new.contains(p))
        },
    );
    let _ = switched;
    stop.store(true, Ordering::SeqCst);
    let report = load.join().unwrap();
    assert!(
        report.failed.is_empty(),
        "{} failed: {:?}\n{}",
        report.failed.len(),
        &report.failed[..report.failed.len().min(5)],
        nginx.error_log()
    );
    assert!(report.ok > 100);
    assert!(
        report.pids.iter().any(|(_, p)| old.contains(p))
            && report.pids.iter().any(|(_, p)| new.contains(p))
    );
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(site.sock()).unwrap()),
        inode,
        "the socket is kept"
    );
    for p in old {
        wait_for("old workers to exit", Duration::from_secs(15), || {
            (!alive(p)).then_some(())
        });
    }
}

#[test]
fn a_deploy_that_breaks_the_import_keeps_the_old_workers_serving() {
    let site = Site::new("brokendeploy", "hello", 2, "");
    let inst = site.start();
    let old = inst.worker_pids();
    let nginx = Nginx::start(&site.sock());
    let port = nginx.port;
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(4, Duration::from_secs(30), stop.clone(), move || {
        http_get(port, "/")
    });
    site.write_ini("broken_import", 2, "");
    let out = site.cli(&["reload", site.ini().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken_import: this app fails to import on purpose"),
        "{err}"
    );
    // The watcher saw the same write; whatever it did, the old workers serve.
    wait_for("no reload in progress", Duration::from_secs(30), || {
        (site.status_json()["reloading"] == false).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let report = load.join().unwrap();
    assert!(
        report.failed.is_empty(),
        "{:?}",
        &report.failed[..report.failed.len().min(5)]
    );
    assert_eq!(pids_of_generation(&site, 1), old);
    assert!(report.pids.iter().all(|(_, p)| old.contains(p)));
    let status = site.status_json();
    assert_eq!(status["last_reload"]["result"], "failed");
    assert!(status["last_reload"]["reason"]
        .as_str()
        .unwrap()
        .contains("broken_import"));
}

#[test]
fn an_ini_overwritten_with_an_error_is_rejected_with_its_line_and_nothing_fails() {
    let site = Site::new("badini", "hello", 2, "");
    let inst = site.start();
    let old = inst.worker_pids();
    let sock = site.sock();
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(4, Duration::from_secs(30), stop.clone(), move || {
        uwsgi_get(&sock, "/")
    });
    let mut text = site.ini_text("hello", 2, "");
    text.push_str("chmod-socket =\n");
    let bad_line = text.lines().count();
    std::fs::write(site.ini(), text).unwrap();
    let out = site.cli(&["reload", "--pidfile", site.pidfile().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("amy_uwsgi.ini:{bad_line}:")), "{err}");
    wait_for(
        "the watcher's attempt to settle",
        Duration::from_secs(10),
        || {
            let s = site.status_json();
            (s["reloading"] == false && site.log_text().matches("reload rejected").count() >= 1)
                .then_some(())
        },
    );
    stop.store(true, Ordering::SeqCst);
    let report = load.join().unwrap();
    assert!(
        report.failed.is_empty(),
        "{:?}",
        &report.failed[..report.failed.len().min(5)]
    );
    assert_eq!(pids_of_generation(&site, 1), old);
    assert_eq!(generation(&site), 1);
    // The next valid write reloads.
    site.write_ini("hello", 2, "");
    wait_for("a reload after the fix", Duration::from_secs(30), || {
        let s = site.status_json();
        (s["generation"].as_u64() > Some(1) && s["reloading"] == false).then_some(())
    });
}

#[test]
fn twenty_touches_within_a_second_make_exactly_one_reload() {
    // The scenario needs every gap between two touches shorter than the 100 ms
    // debounce; on a loaded machine a stall can stretch one. Such a run did not
    // produce the scenario (two reloads would then be right), so it is played
    // again, at most three times, and never counted as a pass.
    for attempt in 1..=3 {
        let site = Site::new(&format!("coalesce{attempt}"), "hello", 1, "");
        let _inst = site.start();
        let mut longest_gap = Duration::ZERO;
        let mut last = Instant::now();
        for _ in 0..20 {
            touch(&site.ini());
            let now = Instant::now();
            longest_gap = longest_gap.max(now - last);
            last = now;
            std::thread::sleep(Duration::from_millis(30)); // the touches' spacing, part of the scenario
        }
        if longest_gap >= Duration::from_millis(90) {
            eprintln!("attempt {attempt}: a gap of {longest_gap:?} between touches; playing the scenario again");
            continue;
        }
        wait_generation(&site, 2);
        // Observe a quiet window longer than the debounce: no second reload follows.
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(reloads_in_log(&site), 1, "{}", site.log_text());
        assert_eq!(generation(&site), 2);
        return;
    }
    panic!("the machine never kept the touches 30 ms apart; the scenario could not be played");
}

#[test]
fn a_hundred_rename_replacements_make_a_hundred_reloads_and_the_watch_survives() {
    let site = Site::new("renames", "hello", 1, "");
    let _inst = site.start();
    let text = site.ini_text("hello", 1, "");
    for i in 1..=100u64 {
        let tmp = site.dir.join(format!(".amy_uwsgi.ini.tmp{i}"));
        std::fs::write(&tmp, format!("{text}\n# deploy {i}\n")).unwrap();
        std::fs::rename(&tmp, site.ini()).unwrap();
        wait_generation(&site, 1 + i);
    }
    touch(&site.ini());
    wait_generation(&site, 102);
    assert_eq!(reloads_in_log(&site), 101);
}

#[test]
fn a_symlink_flip_and_a_checkout_style_replace_each_reload_once() {
    let site = Site::new("symlink", "hello", 1, "");
    // capistrano layout: current -> releases/1, the ini is read through `current`.
    let r1 = site.dir.join("releases/1");
    let r2 = site.dir.join("releases/2");
    std::fs::create_dir_all(&r1).unwrap();
    std::fs::create_dir_all(&r2).unwrap();
    let text = site
        .ini_text("hello", 1, "")
        .replace("%d", &format!("{}/", site.dir.display()));
    std::fs::write(r1.join("amy_uwsgi.ini"), &text).unwrap();
    std::fs::write(r2.join("amy_uwsgi.ini"), format!("{text}\n# release 2\n")).unwrap();
    let current = site.dir.join("current");
    std::os::unix::fs::symlink(&r1, &current).unwrap();
    std::fs::remove_file(site.ini()).unwrap();
    std::os::unix::fs::symlink(current.join("amy_uwsgi.ini"), site.ini()).unwrap();
    let _inst = site.start();
    let tmp = site.dir.join("current.tmp");
    std::os::unix::fs::symlink(&r2, &tmp).unwrap();
    std::fs::rename(&tmp, &current).unwrap();
    wait_generation(&site, 2);
    // git checkout: the file disappears, then comes back.
    let target = r2.join("amy_uwsgi.ini");
    let content = std::fs::read(&target).unwrap();
    std::fs::remove_file(&target).unwrap();
    std::fs::write(&target, content).unwrap();
    wait_generation(&site, 3);
    std::thread::sleep(Duration::from_millis(800)); // quiet window: nothing more follows
    assert_eq!(reloads_in_log(&site), 2, "{}", site.log_text());
}

#[test]
fn a_variable_removed_from_uwsgi_env_is_gone_after_reload() {
    let site = Site::new("envgone", "pep3333", 1, "");
    site.write_env("AMY_KEEP=1\nAMY_GONE=soon\n");
    let _inst = site.start();
    assert_eq!(
        uwsgi_get(&site.sock(), "/env?name=AMY_GONE")
            .unwrap()
            .text(),
        "soon"
    );
    site.write_env("AMY_KEEP=2\n");
    wait_generation(&site, 2);
    assert_eq!(
        uwsgi_get(&site.sock(), "/env?name=AMY_GONE")
            .unwrap()
            .text(),
        ""
    );
    assert_eq!(
        uwsgi_get(&site.sock(), "/env?name=AMY_KEEP")
            .unwrap()
            .text(),
        "2"
    );
    let pid: i32 = uwsgi_get(&site.sock(), "/pid")
        .unwrap()
        .text()
        .parse()
        .unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(!environ.windows(8).any(|w| w == b"AMY_GONE"));
}

#[test]
fn reload_command_waits_for_the_new_generation_and_sighup_reloads_too() {
    let site = Site::new("reloadcmd", "hello", 2, "");
    let out = site.cli(&["reload", site.ini().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "not running");
    let inst = site.start();
    let old = inst.worker_pids();
    let out = site.cli(&["reload", site.ini().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // On return the new generation already serves.
    let s = site.status_json();
    assert_eq!(s["generation"], 2);
    let pid: i32 = uwsgi_get(&site.sock(), "/")
        .unwrap()
        .header("X-Worker-Pid")
        .unwrap()
        .parse()
        .unwrap();
    assert!(!old.contains(&pid));
    inst.signal(1);
    wait_generation(&site, 3);
}

#[test]
fn one_by_one_reload_under_load_fails_no_request_and_never_doubles_the_pool() {
    let site = Site::new("onebyone", "hello", 3, "reload-one-by-one = true");
    let inst = site.start();
    let old = inst.worker_pids();
    let sock = site.sock();
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(4, Duration::from_secs(30), stop.clone(), move || {
        uwsgi_get(&sock, "/")
    });
    let reload = std::thread::spawn({
        let ini = site.ini();
        move || Command::new(BIN).arg("reload").arg(ini).output().unwrap()
    });
    // Sample the pool while the reload runs: never more than processes + 1 workers.
    let mut most = 0;
    while !reload.is_finished() {
        let s = site.status_json();
        let alive_workers = s["workers"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter(|w| w["state"] != "retiring" && w["state"] != "killed")
                    .count()
            })
            .unwrap_or(0);
        most = most.max(alive_workers);
    }
    let out = reload.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, Ordering::SeqCst);
    let report = load.join().unwrap();
    assert!(
        report.failed.is_empty(),
        "{:?}",
        &report.failed[..report.failed.len().min(5)]
    );
    assert!(most <= 4, "{most} workers at once");
    let new = pids_of_generation(&site, 2);
    assert_eq!(new.len(), 3);
    assert!(new.iter().all(|p| !old.contains(p)));
}

#[test]
fn a_half_written_ini_is_never_applied() {
    let site = Site::new("slowwriter", "hello", 1, "");
    let _inst = site.start();
    let text = site.ini_text("hello", 1, "");
    // The first half alone has no module: applying it would be rejected.
    let cut = text.find("module").unwrap();
    let mut file = std::fs::File::create(site.ini()).unwrap();
    std::io::Write::write_all(&mut file, &text.as_bytes()[..cut]).unwrap();
    std::io::Write::flush(&mut file).unwrap();
    std::thread::sleep(Duration::from_millis(400)); // the writer's pause, part of the scenario
    std::io::Write::write_all(&mut file, &text.as_bytes()[cut..]).unwrap();
    drop(file);
    wait_generation(&site, 2);
    std::thread::sleep(Duration::from_millis(500)); // quiet window: nothing more follows
    let log = site.log_text();
    assert_eq!(reloads_in_log(&site), 1, "{log}");
    assert!(
        !log.contains("reload rejected"),
        "the partial file was applied:\n{log}"
    );
}

#[test]
fn the_polling_fallback_sees_a_touch() {
    let site = Site::new("poll", "hello", 1, "");
    let mut child = Command::new(BIN)
        .arg("start")
        .arg(site.ini())
        .env("AMY_EMPEROR_WATCH", "poll")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_generation(&site, 1);
    // Polling compares whole-second mtimes on some filesystems: move it clearly.
    let f = std::fs::File::options()
        .append(true)
        .open(site.ini())
        .unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    wait_generation(&site, 2);
    assert!(kill(child.id() as i32, 15));
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
