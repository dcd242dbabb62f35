//! Emperor mode (README.md "Emperor mode"): the real binary supervising real vassals, each its
//! own `amy-emperor start` with Python workers serving tests/apps/hello.py.
//! Observed through the vassals' sockets, pidfiles and /proc, never through the
//! emperor's internals.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

mod common;
#[path = "common/vassals.rs"]
mod vassals;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{alive, kill, load, request_in_flight, uwsgi_get, wait_for, Nginx};
use vassals::{dirs, Dirs, Emperor, READY};

fn touch(path: &Path) {
    let mut f = std::fs::File::options().append(true).open(path).unwrap();
    // A real edit, as a deploy makes: the vassal's master reloads on writes.
    f.write_all(b"# touched\n").unwrap();
    f.set_modified(SystemTime::now()).unwrap();
}

#[test]
fn vassals_come_and_go_with_their_files_and_stop_with_the_emperor() {
    let d = dirs("life");
    d.write_vassal("v1");
    d.write_vassal("v2");
    let mut emperor = Emperor::start(&d);
    let mut workers = vec![d.wait_serving("v1"), d.wait_serving("v2")];
    let mut masters = vec![d.master_pid("v1").unwrap(), d.master_pid("v2").unwrap()];
    assert_ne!(masters[0], masters[1]);

    // A new file starts a vassal, whether written in place or renamed into place
    // the way deploy tools do.
    d.write_vassal("v3");
    workers.push(d.wait_serving("v3"));
    masters.push(d.master_pid("v3").unwrap());
    let staged = d.vassals.join(".v4.ini.tmp");
    std::fs::write(&staged, d.ini_text("v4", "")).unwrap();
    std::fs::rename(&staged, d.ini("v4")).unwrap();
    let v4_worker = d.wait_serving("v4");
    let v4_master = d.master_pid("v4").unwrap();

    // Renamed away (disabled) is as good as removed.
    std::fs::rename(d.ini("v4"), d.vassals.join("v4.ini.disabled")).unwrap();
    wait_for("v4 to stop", Duration::from_secs(30), || {
        (!alive(v4_master) && !alive(v4_worker) && !d.sock("v4").exists()).then_some(())
    });

    // A removed file stops its vassal gracefully: vacuum removes its socket and
    // pidfile, its processes end; the others keep serving.
    std::fs::remove_file(d.ini("v2")).unwrap();
    wait_for("v2 to stop", Duration::from_secs(30), || {
        (!alive(masters[1])
            && !alive(workers[1])
            && !d.sock("v2").exists()
            && !d.pidfile("v2").exists())
        .then_some(())
    });
    assert!(d.serving_pid("v1").is_some());
    assert!(d.serving_pid("v3").is_some());
    // Seen by inotify: the polling fallback (2 s, only where inotify is
    // unavailable) says so when it is used.
    assert!(
        !emperor.stderr().contains("polling"),
        "{}",
        emperor.stderr()
    );

    // SIGTERM stops everything gracefully and exits 0.
    kill(emperor.pid(), libc::SIGTERM);
    assert_eq!(emperor.wait_exit(Duration::from_secs(60)), Some(0));
    for pid in masters.iter().chain(&workers) {
        assert!(!alive(*pid), "pid {pid} outlived the emperor");
    }
    for name in ["v1", "v3"] {
        assert!(!d.sock(name).exists(), "{name}'s socket was not vacuumed");
        assert!(!d.pidfile(name).exists(), "{name}'s pidfile was left");
    }
}

#[test]
fn a_killed_vassal_is_restarted_and_a_changed_one_reloads() {
    let d = dirs("restart");
    d.write_vassal("v1");
    let emperor = Emperor::start(&d);
    let first_worker = d.wait_serving("v1");
    let first_master = d.master_pid("v1").unwrap();

    kill(first_master, libc::SIGKILL);
    let master = wait_for("a new v1 master", READY, || {
        d.master_pid("v1")
            .filter(|p| *p != first_master && alive(*p))
    });
    let worker = wait_for("v1 to serve from a new worker", READY, || {
        d.serving_pid("v1").filter(|p| *p != first_worker)
    });
    assert!(emperor.stderr().contains("vassal died, restarting"));

    // An edit is the vassal master's own business: a graceful reload in place.
    touch(&d.ini("v1"));
    let reloaded = wait_for("v1 to reload after the edit", READY, || {
        d.serving_pid("v1").filter(|p| *p != worker)
    });
    assert_eq!(
        d.master_pid("v1"),
        Some(master),
        "a reload keeps the master"
    );

    // SIGHUP to the emperor reloads every vassal.
    kill(emperor.pid(), libc::SIGHUP);
    wait_for("v1 to reload after SIGHUP", READY, || {
        d.serving_pid("v1").filter(|p| *p != reloaded)
    });
    assert_eq!(d.master_pid("v1"), Some(master));
}

#[test]
fn an_invalid_ini_is_reported_once_and_waits_for_a_fix() {
    let d = dirs("invalid");
    // No socket: what happens when a non-vassal ini lands in the directory.
    std::fs::write(d.ini("bad"), "[uwsgi]\nprocesses = 1\n").unwrap();
    // Not vassals: hidden files and editor backups.
    std::fs::write(d.vassals.join(".hidden.ini"), d.ini_text("hidden", "")).unwrap();
    std::fs::write(d.vassals.join("backup.ini~"), d.ini_text("backup", "")).unwrap();
    let emperor = Emperor::start(&d);
    wait_for("the config error", Duration::from_secs(30), || {
        emperor
            .stderr()
            .contains("vassal config is invalid")
            .then_some(())
    });
    // Absence over time is the point here: a respawn loop (immediate, then 1 s,
    // then 2 s) would have printed the error three times by now.
    std::thread::sleep(Duration::from_secs(4));
    let err = emperor.stderr();
    assert_eq!(err.matches("no socket configured").count(), 1, "{err}");
    assert_eq!(err.matches("vassal config is invalid").count(), 1, "{err}");
    assert!(err.contains("bad.ini"), "{err}");
    assert!(!d.sock("hidden").exists() && !d.sock("backup").exists());

    // Fixing the file starts the vassal.
    std::fs::write(d.ini("bad"), d.ini_text("bad", "")).unwrap();
    d.wait_serving("bad");
}

#[test]
fn vassals_stop_when_the_emperor_is_killed() {
    let d = dirs("orphan");
    d.write_vassal("v1");
    let mut emperor = Emperor::start(&d);
    let worker = d.wait_serving("v1");
    let master = d.master_pid("v1").unwrap();
    kill(emperor.pid(), libc::SIGKILL);
    assert_eq!(emperor.wait_exit(Duration::from_secs(10)), None);
    wait_for(
        "the orphaned vassal to stop",
        Duration::from_secs(30),
        || (!alive(master) && !alive(worker) && !d.sock("v1").exists()).then_some(()),
    );
}

#[test]
fn a_crashing_vassal_is_restarted_with_back_off() {
    let d = dirs("crash");
    std::fs::write(
        d.ini("v1"),
        d.ini_text("v1", "")
            .replace("module = hello", "module = broken_import"),
    )
    .unwrap();
    let emperor = Emperor::start(&d);
    let deaths = |err: &str| {
        err.lines()
            .filter(|l| l.contains("vassal died, restarting"))
            .map(|l| l.split("restart_in=").nth(1).unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let delays = wait_for("three deaths of v1", Duration::from_secs(60), || {
        let d = deaths(&emperor.stderr());
        (d.len() >= 3).then_some(d)
    });
    let secs: Vec<f64> = delays.iter().map(|d| debug_duration_secs(d)).collect();
    assert_eq!(secs[0], 0.0, "the first restart is immediate: {delays:?}");
    assert!((0.8..1.2).contains(&secs[1]), "then about 1 s: {delays:?}");
    assert!((1.6..2.4).contains(&secs[2]), "then about 2 s: {delays:?}");
}

/// Parses a `Duration`'s Debug form as tracing logs it (`0ns`, `970ms`, `2.148s`).
fn debug_duration_secs(text: &str) -> f64 {
    let text = text.split_whitespace().next().unwrap_or("");
    for (unit, scale) in [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)] {
        if let Some(n) = text.strip_suffix(unit) {
            return n.parse::<f64>().unwrap_or(f64::NAN) * scale;
        }
    }
    f64::NAN
}

/// A vassal of the load test: the pid-reporting app, two workers.
fn app_ini(d: &Dirs, name: &str, module: &str) -> String {
    d.ini_text(name, "")
        .replace("module = hello", &format!("module = {module}"))
        .replace("processes = 1", "processes = 2")
}

/// Both ends of the acceptance scenario (issue 12): an emperor ini, two vassals
/// behind nginx under load, and a third vassal added, touched, broken, fixed and
/// removed with a request in flight, next to a fourth that crash-loops. The
/// untouched vassal sees no failure and keeps its master and workers; the
/// reloaded one sees no failure; the removed one finishes its request first.
#[test]
fn two_vassals_behind_nginx_serve_through_add_touch_break_fix_and_remove() {
    let d = dirs("load");
    std::fs::write(d.ini("a"), app_ini(&d, "a", "vassal_app")).unwrap();
    std::fs::write(d.ini("b"), app_ini(&d, "b", "vassal_app")).unwrap();
    let ini = d.write_emperor_ini("");
    let mut emperor = Emperor::spawn(&d, &["start", ini.to_str().unwrap()]);
    d.wait_serving("a");
    d.wait_serving("b");
    let status = wait_for("status to list both vassals", READY, || {
        let s = d.status();
        let n = s["vassals"].as_array().map(Vec::len);
        (n == Some(2) && d.worker_pids("a").len() == 2 && d.worker_pids("b").len() == 2)
            .then_some(s)
    });
    assert_eq!(status["role"], "emperor", "{status}");
    let a_master = d.master_pid("a").unwrap();
    let b_master = d.master_pid("b").unwrap();
    let a_workers = d.worker_pids("a");
    let b_first_workers = d.worker_pids("b");

    let nginx_a = Nginx::start(&d.sock("a"));
    let nginx_b = Nginx::start(&d.sock("b"));
    let stop = Arc::new(AtomicBool::new(false));
    let (pa, pb) = (nginx_a.port, nginx_b.port);
    // The untouched vassal's slowest answer: what a neighbour's trouble could delay.
    let slowest_a = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let slowest = slowest_a.clone();
    let load_a = load(2, Duration::from_secs(120), stop.clone(), move || {
        let t = std::time::Instant::now();
        let r = common::http_get(pa, "/");
        let mut max = slowest.lock().unwrap();
        *max = (*max).max(t.elapsed());
        r
    });
    let load_b = load(2, Duration::from_secs(120), stop.clone(), move || {
        common::http_get(pb, "/")
    });

    // A crash-looping vassal next to them all along.
    std::fs::write(d.ini("crashy"), app_ini(&d, "crashy", "broken_import")).unwrap();
    // Added.
    std::fs::write(d.ini("c"), app_ini(&d, "c", "vassal_app")).unwrap();
    d.wait_serving("c");
    let c_master = d.master_pid("c").unwrap();

    // b touched: a graceful reload by its own master, which stays.
    touch(&d.ini("b"));
    wait_for("b's new generation", READY, || {
        let now = d.worker_pids("b");
        (now.len() == 2 && now.iter().all(|p| !b_first_workers.contains(p))).then_some(())
    });
    assert_eq!(d.master_pid("b"), Some(b_master));

    // b broken: the new generation fails, the old one keeps serving.
    let b_workers = d.worker_pids("b");
    std::fs::write(d.ini("b"), app_ini(&d, "b", "broken_import")).unwrap();
    wait_for("b's failed reload in status", READY, || {
        let v = d.vassal_status("b");
        (v["last_reload"]["result"] != "serving" && !v["last_reload"].is_null()).then_some(())
    });
    // The old generation serves on (the failed new worker is listed until reaped).
    wait_for(
        "b's workers to be the old generation's",
        Duration::from_secs(15),
        || (d.worker_pids("b") == b_workers).then_some(()),
    );
    // ... and fixed.
    std::fs::write(d.ini("b"), app_ini(&d, "b", "vassal_app")).unwrap();
    wait_for("b's fixed reload", READY, || {
        (d.vassal_status("b")["last_reload"]["result"] == "serving"
            && d.worker_pids("b").iter().all(|p| !b_workers.contains(p)))
        .then_some(())
    });

    // c removed with a request in flight: the request completes, then c goes.
    let c_sock = d.sock("c");
    let in_flight = std::thread::spawn(move || uwsgi_get(&c_sock, "/sleep?s=2"));
    wait_for(
        "c's request to be in flight",
        Duration::from_secs(10),
        || {
            let v = d.vassal_status("c");
            v["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|w| w["state"] == "busy")
                .then_some(())
        },
    );
    std::fs::remove_file(d.ini("c")).unwrap();
    let answer = in_flight.join().unwrap().expect("c's in-flight request");
    assert_eq!((answer.status, answer.text()), (200, "slept\n".to_string()));
    wait_for("c to stop", Duration::from_secs(30), || {
        (!alive(c_master) && !d.sock("c").exists()).then_some(())
    });

    stop.store(true, Ordering::SeqCst);
    let (ra, rb) = (load_a.join().unwrap(), load_b.join().unwrap());
    // The figures the issue asks for (visible with --nocapture).
    println!(
        "untouched a: {} ok, {} failed, slowest {:?}, master {a_master}, workers {a_workers:?}; \
         reloaded b: {} ok, {} failed",
        ra.ok,
        ra.failed.len(),
        slowest_a.lock().unwrap(),
        rb.ok,
        rb.failed.len()
    );
    // A generous bound on a busy 2-core machine; a request stuck behind a
    // neighbour's reload or crash loop would take far longer.
    assert!(*slowest_a.lock().unwrap() < Duration::from_secs(5));
    assert!(ra.ok > 50 && rb.ok > 50, "a {} ok, b {} ok", ra.ok, rb.ok);
    assert!(
        ra.failed.is_empty(),
        "a failed: {:?}",
        &ra.failed[..ra.failed.len().min(5)]
    );
    assert!(
        rb.failed.is_empty(),
        "b failed: {:?}",
        &rb.failed[..rb.failed.len().min(5)]
    );
    // The untouched vassal: the same master and the same workers throughout.
    assert_eq!(d.master_pid("a"), Some(a_master));
    assert_eq!(d.worker_pids("a"), a_workers);
    let served_a: BTreeSet<i64> = ra.pids.iter().map(|(_, p)| i64::from(*p)).collect();
    assert!(
        served_a.iter().all(|p| a_workers.contains(p)),
        "{served_a:?} vs {a_workers:?}"
    );
    assert!(nginx_a.error_log().is_empty() || !nginx_a.error_log().contains("[error]"));

    // status lists the two that remain (and the crash-looper, restarting).
    let s = d.status();
    let files: Vec<&str> = s["vassals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["file"].as_str())
        .collect();
    assert!(files.contains(&d.ini("a").to_str().unwrap()), "{s}");
    assert!(files.contains(&d.ini("b").to_str().unwrap()), "{s}");
    assert!(!files.contains(&d.ini("c").to_str().unwrap()), "{s}");
    let crashy = d.vassal_status("crashy");
    assert!(
        crashy["restarts"].as_u64().unwrap_or(0) >= 1 || crashy["last_exit"].is_string(),
        "{crashy}"
    );
    let human = d.cli(&["status", ini.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("a.ini: running") && text.contains("b.ini: running"),
        "{text}"
    );

    // stop --pidfile: everything stops, exit 0.
    let pidfile = d.emperor_pidfile();
    let out = d.cli(&["stop", "--pidfile", pidfile.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(emperor.wait_exit(Duration::from_secs(10)), Some(0));
    for pid in [a_master, b_master] {
        assert!(!alive(pid), "vassal master {pid} outlived the emperor");
    }
    assert!(!pidfile.exists() && !d.sock("a").exists() && !d.sock("b").exists());
    let out = d.cli(&["status", "--pidfile", pidfile.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn reload_through_the_emperor_reports_every_vassal() {
    let d = dirs("reload");
    d.write_vassal("v1");
    std::fs::write(d.ini("v2"), app_ini(&d, "v2", "vassal_app")).unwrap();
    let pidfile = d.emperor_pidfile();
    let dir = d.vassals.to_str().unwrap().to_owned();
    let _emperor = Emperor::spawn(
        &d,
        &[
            "start",
            "--emperor",
            &dir,
            "--pidfile",
            pidfile.to_str().unwrap(),
        ],
    );
    let w1 = d.wait_serving("v1");
    d.wait_serving("v2");
    let out = d.cli(&["reload", "--pidfile", pidfile.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("v1.ini: reloaded") && stdout.contains("v2.ini: reloaded"),
        "{stdout}"
    );
    assert_ne!(
        d.serving_pid("v1"),
        Some(w1),
        "v1 serves from its new generation"
    );

    // A vassal whose new release cannot boot: reported, exit 1; the other is fine.
    std::fs::write(d.ini("v2"), app_ini(&d, "v2", "vassal_app") + "# comment\n").unwrap();
    wait_for("v2's reload after the edit", READY, || {
        (d.vassal_status("v2")["last_reload"]["result"] == "serving").then_some(())
    });
    std::fs::write(d.ini("v2"), app_ini(&d, "v2", "broken_import")).unwrap();
    wait_for("v2's failed reload", READY, || {
        (d.vassal_status("v2")["last_reload"]["result"] == "failed").then_some(())
    });
    let out = d.cli(&["reload", "--pidfile", pidfile.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("v2.ini: reload failed"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("v1.ini: reloaded"));
    assert!(
        d.serving_pid("v2").is_some(),
        "v2's old generation serves on"
    );
}

/// `emperor = DIR/amy_*.ini`: only the files the glob matches are vassals.
#[test]
fn an_emperor_ini_with_a_glob_runs_only_matching_files() {
    let d = dirs("glob");
    std::fs::write(d.ini("amy_one"), d.ini_text("amy_one", "")).unwrap();
    std::fs::write(d.ini("other"), d.ini_text("other", "")).unwrap();
    let path = d.base.join("emperor.ini");
    std::fs::write(
        &path,
        format!(
            "[uwsgi]\nemperor = {}/amy_*.ini\nemperor-pidfile = {}/emperor.pid\n",
            d.vassals.display(),
            d.run.display()
        ),
    )
    .unwrap();
    let out = d.cli(&["check", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _emperor = Emperor::spawn(&d, &["start", path.to_str().unwrap()]);
    d.wait_serving("amy_one");
    wait_for("status", READY, || {
        (d.status()["vassals"].as_array().map(Vec::len) == Some(1)).then_some(())
    });
    assert!(!d.sock("other").exists());
}

/// `emperor = ./vassals/*/*.ini`, relative to where the emperor starts: uWSGI's
/// glob monitor runs glob(3) over the whole pattern (core/emperor.c,
/// uwsgi_imperial_monitor_glob), so directories are globbed too. A site
/// directory made while the emperor runs, its ini written at once, is run; a
/// removed one is stopped; a file outside the pattern is not a vassal.
#[test]
fn an_emperor_glob_with_a_directory_wildcard_follows_new_and_removed_directories() {
    let d = dirs("globdirs");
    let site = |name: &str| d.vassals.join(name);
    std::fs::create_dir_all(site("one")).unwrap();
    // The slow-request app: `one` has a request in flight when it is stopped.
    std::fs::write(
        site("one").join("one.ini"),
        app_ini(&d, "one", "vassal_app"),
    )
    .unwrap();
    std::fs::write(d.ini("top"), d.ini_text("top", "")).unwrap();
    let path = d.base.join("emperor.ini");
    std::fs::write(
        &path,
        format!(
            "[uwsgi]\nemperor = ./vassals/*/*.ini\nemperor-pidfile = {run}/emperor.pid\n\
             emperor-stats = {run}/estats.sock\n",
            run = d.run.display()
        ),
    )
    .unwrap();
    let out = d.cli(&["check", "emperor.ini"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("vassals/*/*.ini"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut emperor = Emperor::spawn(&d, &["start", "emperor.ini"]);
    d.wait_serving("one");
    // mkdir, then the ini straight away: the new directory's watch must not
    // miss a file written before it was set.
    // Its socket and pidfile relative: to the emperor's directory, as uWSGI's
    // glob monitor runs a vassal (a directory monitor runs it in its own).
    std::fs::create_dir_all(site("two")).unwrap();
    // (No chdir: it would move them.)
    let apps = common::repo().join("tests/apps");
    let relative = d
        .ini_text("two", "")
        .replace(
            &format!("chdir = {}", apps.display()),
            &format!("pythonpath = {}", apps.display()),
        )
        .replace(&format!("{}/two.", d.run.display()), "run/two.");
    assert!(
        relative.contains("socket = run/two.sock") && !relative.contains("chdir"),
        "{relative}"
    );
    std::fs::write(site("two").join("two.ini"), relative).unwrap();
    d.wait_serving("two");
    let files = wait_for("status to list both", READY, || {
        let mut f: Vec<String> = d.status()["vassals"]
            .as_array()?
            .iter()
            .filter_map(|v| v["file"].as_str().map(str::to_owned))
            .collect();
        f.sort();
        (f.len() == 2).then_some(f)
    });
    let want = |p: &Path| p.to_string_lossy().into_owned();
    assert_eq!(
        files,
        [
            want(&site("one").join("one.ini")),
            want(&site("two").join("two.ini"))
        ]
    );
    assert!(!d.sock("top").exists(), "vassals/top.ini is not */*.ini");
    // emperor-stats names a glob's vassals by path, as uWSGI does.
    let mut text = String::new();
    use std::io::Read;
    std::os::unix::net::UnixStream::connect(d.run.join("estats.sock"))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut ids: Vec<String> = doc["vassals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    assert_eq!(ids, files, "{doc}");
    let master = d.master_pid("two").unwrap();
    std::fs::remove_dir_all(site("two")).unwrap();
    wait_for(
        "two to stop with its directory",
        Duration::from_secs(30),
        || (!alive(master) && !d.sock("two").exists()).then_some(()),
    );
    assert!(d.serving_pid("one").is_some());

    // `stop emperor.ini` (the ini, not --pidfile) waits: a request in flight
    // completes, and when it returns the vassal's master is gone.
    let one = d.master_pid("one").unwrap();
    let slow = request_in_flight(&d.sock("one"), 2.0);
    let out = d.cli(&["stop", "emperor.ini"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !alive(one),
        "stop returned before the vassal's master exited"
    );
    let answer = slow.join().unwrap().expect("the in-flight request");
    assert_eq!(answer.status, 200);
    assert_eq!(emperor.wait_exit(Duration::from_secs(10)), Some(0));
}

/// `vassal-set` and `vassals-include` as uWSGI's emperor passes them (core/
/// emperor.c: `--set` before the vassal's config, `--include` after it): a
/// template read after the vassal's own `processes = 1` wins, and the
/// placeholder it uses comes from `vassal-set`.
#[test]
fn vassal_set_comes_before_the_vassal_file_and_vassals_include_after_it() {
    let d = dirs("extras");
    d.write_vassal("v1");
    let template = d.base.join("template.ini");
    std::fs::write(&template, "[uwsgi]\nprocesses = %(wcount)\n").unwrap();
    let ini = d.write_emperor_ini(&format!(
        "vassal-set = wcount=3\nvassals-include = {}",
        template.display()
    ));
    let _emperor = Emperor::spawn(&d, &["start", ini.to_str().unwrap()]);
    d.wait_serving("v1");
    let workers = wait_for("v1's workers in status", READY, || {
        let w = d.worker_pids("v1");
        (w.len() >= 3).then_some(w)
    });
    assert_eq!(workers.len(), 3, "{workers:?}");
}

/// Unsupported emperor keys fail closed with path:line and what would be lost;
/// an emperor ini that also runs an app is refused.
#[test]
fn unsupported_emperor_keys_fail_closed_with_path_and_line() {
    let d = dirs("keys");
    for (extra, needle) in [
        ("emperor-broodlord = 2", "emperor-broodlord"),
        ("emperor-on-demand-dir = /tmp", "on their first request"),
        ("socket = /tmp/x.sock", "make that app a vassal"),
        (
            "emperor = zmq://tcp://127.0.0.1:5250",
            "zmq:// monitor is not supported",
        ),
    ] {
        let ini = d.write_emperor_ini(extra);
        for cmd in ["check", "start"] {
            let out = d.cli(&[cmd, ini.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {extra}: {err}");
            assert!(err.contains(needle), "{cmd} {extra}: {err}");
            assert!(err.contains("emperor.ini:8:"), "{cmd} {extra}: {err}");
        }
    }
    assert!(!d.emperor_pidfile().exists());
}

/// emperor-tyrant as root: each vassal runs as its file's owner; a root-owned
/// file is refused and waits for a change.
#[test]
fn tyrant_mode_runs_each_vassal_as_the_owner_of_its_file() {
    if !nix_is_root() {
        panic!("this test needs root (CI runs as root)");
    }
    let d = dirs("tyrant");
    // nobody must be able to write its sockets, pidfile and log.
    chown(&d.run, 65534, 65534);
    // The test venv's interpreter lives under /root (pyenv), which nobody cannot
    // enter; a deployment's venv is readable by its user, so make one as a
    // deployment would.
    let venv = d.base.join("venv");
    let made = Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success(), "this test needs Debian's python3");
    let text = |name: &str| {
        d.ini_text(name, "").replace(
            &format!("home = {}", common::venv().display()),
            &format!("home = {}", venv.display()),
        )
    };
    std::fs::write(d.ini("mine"), text("mine")).unwrap();
    chown(&d.ini("mine"), 65534, 65534);
    std::fs::write(d.ini("rooted"), text("rooted")).unwrap();
    let ini = d.write_emperor_ini("emperor-tyrant = true");
    let _emperor = Emperor::spawn(&d, &["start", ini.to_str().unwrap()]);
    let worker = d.wait_serving("mine");
    let master = d.master_pid("mine").unwrap();
    for pid in [master, worker] {
        assert_eq!(uid_of(pid), (65534, 65534), "pid {pid}");
    }
    wait_for(
        "the refusal of the root-owned file",
        Duration::from_secs(30),
        || {
            d.emperor_log()
                .contains("invalid permissions")
                .then_some(())
        },
    );
    assert!(!d.sock("rooted").exists());
    assert_eq!(d.vassal_status("rooted")["state"], "refused");
    // Given to nobody, it starts.
    chown(&d.ini("rooted"), 65534, 65534);
    touch(&d.ini("rooted"));
    let w = d.wait_serving("rooted");
    assert_eq!(uid_of(w), (65534, 65534));
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

/// (real uid, real gid) of a process.
fn uid_of(pid: i32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u32 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("Uid:"), field("Gid:"))
}

/// `daemonize = FILE` in an emperor ini: `start` returns 0 only once the vassals
/// of the first scan serve; the detached emperor is then stopped by its pidfile.
#[test]
fn a_daemonized_emperor_returns_once_its_vassals_serve() {
    let d = dirs("daemon");
    std::fs::write(d.ini("v1"), app_ini(&d, "v1", "vassal_app")).unwrap();
    let ini = d.write_emperor_ini("").to_string_lossy().into_owned();
    let text = std::fs::read_to_string(&ini)
        .unwrap()
        .replace("logto =", "daemonize =");
    std::fs::write(&ini, text).unwrap();
    let out = d.cli(&["start", &ini]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Ready means serving, at once.
    assert!(
        d.serving_pid("v1").is_some(),
        "start returned before v1 served"
    );
    let pidfile = d.emperor_pidfile();
    let st = d.cli(&["status", "--pidfile", pidfile.to_str().unwrap()]);
    assert!(st.status.success());
    assert!(d.emperor_log().contains("emperor ready"));
    let out = d.cli(&["stop", "--pidfile", pidfile.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!d.sock("v1").exists() && !pidfile.exists());
}
