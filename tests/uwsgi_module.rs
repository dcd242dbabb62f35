//! The `uwsgi` Python module and `uwsgidecorators` with the real binary and real
//! workers, next to real uWSGI 2.0.31 running the same ini and the same probe
//! app (`tests/apps/uwsgi_probe.py`): what the module reports in preload and
//! lazy-apps mode, `@postfork` once per forked worker (never with lazy-apps, as
//! uWSGI), `@timer` in one worker, `uwsgi.lock()` excluding every thread of
//! every worker, `uwsgi.reload()` reloading the instance,
//! secrets kept out of `uwsgi.opt`, and no `uwsgi` module in a hook, daemon,
//! cron command or subprocess of the app.

mod common;
#[path = "common/oracle.rs"]
mod oracle;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

const CANARY: &str = "canary-secret-7f3a9";

/// A site serving the probe with `extra`; events go to the site dir.
fn probe_site(name: &str, processes: u32, extra: &str, env_extra: &str) -> Site {
    let site = Site::new(name, "uwsgi_probe", processes, extra);
    // The canary last: uWSGI's `opt["env"]` shows the last `env` line.
    site.write_env(&format!(
        "PROBE_DIR={}\n{env_extra}AMY_CANARY={CANARY}\n",
        site.dir.display()
    ));
    site
}

fn info(port: u16) -> Value {
    let r = http_get(port, "/info").expect("GET /info");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_str(&r.text()).unwrap()
}

fn events(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("events"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `(kind, pid, wid)` of the events of `kind`.
fn events_of(dir: &Path, kind: &str) -> Vec<(i64, i64)> {
    events(dir)
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&kind)).then(|| (f[1].parse().unwrap(), f[2].parse().unwrap()))
        })
        .collect()
}

/// `opt` with the site's own directory and port replaced, so two sites compare.
fn normalized_opt(v: &Value, site: &Site) -> BTreeMap<String, Value> {
    let dir = site.dir.display().to_string();
    let port = site.http_port.to_string();
    v["opt"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let text = serde_json::to_string(v)
                .unwrap()
                .replace(&dir, "<dir>")
                .replace(&port, "<port>");
            (k.clone(), serde_json::from_str(&text).unwrap())
        })
        .collect()
}

fn pidfile_pid(site: &Site) -> i64 {
    wait_for("the pidfile", Duration::from_secs(30), || {
        std::fs::read_to_string(site.pidfile())
            .ok()
            .and_then(|t| t.trim().parse().ok())
    })
}

#[test]
fn preload_reports_what_real_uwsgi_reports() {
    let ours = probe_site("uwsgimod-pre", 2, "", "");
    let theirs = probe_site("uwsgimod-pre-u", 2, "", "");
    let inst = ours.start();
    let uwsgi = oracle::Uwsgi::start(&theirs.ini(), theirs.http_port);
    let a = info(ours.http_port);
    let b = info(theirs.http_port);

    // The app is imported once, outside any worker: worker id 0 there.
    for (v, site) in [(&a, &ours), (&b, &theirs)] {
        assert_eq!(v["at_import"]["wid"], 0, "{v}");
        assert_eq!(v["at_import"]["in_sys_modules"], true, "{v}");
        assert_eq!(v["at_import"]["masterpid"], pidfile_pid(site), "{v}");
        assert_eq!(v["masterpid"], pidfile_pid(site), "{v}");
        let wid = v["wid"].as_i64().unwrap();
        assert!((1..=2).contains(&wid), "{v}");
        assert_eq!(v["numproc"], 2);
        assert_eq!(v["mule_id"], 0);
        assert_eq!(
            v["child_import"], 1,
            "a subprocess of the app imported uwsgi: {v}"
        );
        let started = v["started_on"].as_u64().expect("started_on is an int");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(started <= now && now - started < 120, "{v}");
    }
    // uWSGI's template context is its master; ours is the app template.
    assert_eq!(
        a["at_import"]["pid"].as_i64().unwrap(),
        ours.status_json()["templates"][0]["pid"].as_i64().unwrap(),
        "{a}"
    );
    for key in ["version", "hostname", "logvar", "spool", "has_cache_get"] {
        assert_eq!(a[key], b[key], "{key}: ours {a} uWSGI {b}");
    }
    assert_eq!(a["version"], serde_json::json!({"b": "2.0.31"}));
    assert_eq!(a["logvar"], serde_json::json!([null, {"b": "v1"}, null]));
    assert_eq!(a["log"], true);
    assert!(
        a["unsupported"]
            .as_str()
            .unwrap()
            .starts_with("NotImplementedError: uwsgi.cache_get() is not supported"),
        "{a}"
    );
    assert_eq!(a["has_magic_table"], false);
    assert_eq!(
        a["decorators_ours"], true,
        "the venv's uwsgidecorators was imported"
    );

    // `opt`: the same keys and values (bytes) as uWSGI, but no secret, and
    // `enable-threads` (always so here) even where the ini does not set it.
    let (mut oa, ob) = (normalized_opt(&a, &ours), normalized_opt(&b, &theirs));
    assert!(!ob.contains_key("enable-threads"));
    assert_eq!(
        oa.remove("enable-threads"),
        Some(serde_json::json!({"b": "true"}))
    );
    assert_eq!(
        oa.keys().collect::<Vec<_>>(),
        ob.keys().collect::<Vec<_>>(),
        "ours {oa:?}\nuWSGI {ob:?}"
    );
    for (k, v) in &oa {
        if k == "env" {
            assert_eq!(v, &serde_json::json!({"b": "AMY_CANARY=***"}));
            assert_eq!(
                ob[k],
                serde_json::json!({"b": format!("AMY_CANARY={CANARY}")})
            );
        } else {
            assert_eq!(v, &ob[k], "opt[{k:?}]");
        }
    }
    assert_eq!(oa["processes"], serde_json::json!({"b": "2"}));
    assert_eq!(oa["vacuum"], serde_json::json!({"b": "true"}));
    assert!(!a.to_string().contains(CANARY), "{a}");

    // @postfork: once in every worker the template forked; @postfork(2) in worker 2.
    let workers: Vec<i64> = inst.worker_pids().iter().map(|&p| p as i64).collect();
    for (site, n) in [(&ours, 2usize), (&theirs, 2)] {
        let all = wait_for("postfork in every worker", Duration::from_secs(20), || {
            let e = events_of(&site.dir, "postfork");
            (e.len() >= n).then_some(e)
        });
        let mut wids: Vec<i64> = all.iter().map(|e| e.1).collect();
        wids.sort();
        assert_eq!(wids, vec![1, 2], "{:?}", events(&site.dir));
        let two = wait_for("postfork(2)", Duration::from_secs(20), || {
            let e = events_of(&site.dir, "postfork2");
            (!e.is_empty()).then_some(e)
        });
        assert_eq!(two.len(), 1, "{:?}", events(&site.dir));
        assert_eq!(two[0].1, 2);
    }
    let mut forked: Vec<i64> = events_of(&ours.dir, "postfork")
        .iter()
        .map(|e| e.0)
        .collect();
    forked.sort();
    let mut expect = workers.clone();
    expect.sort();
    assert_eq!(forked, expect, "postfork ran in exactly the workers");

    // uwsgi.log() writes the line to the instance log.
    wait_for("uwsgi.log line", Duration::from_secs(10), || {
        ours.log_text()
            .lines()
            .any(|l| l.starts_with("probe log line from worker "))
            .then_some(())
    });
    // setprocname() renames the worker.
    let r = http_get(ours.http_port, "/procname").unwrap();
    let pid = serde_json::from_str::<Value>(&r.text()).unwrap()["pid"]
        .as_i64()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        cmdline.starts_with(b"probe-renamed-"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    // A replacement worker is a new fork: its postfork runs too.
    let victim = workers[0] as i32;
    kill(victim, 9);
    wait_for("a replacement's postfork", Duration::from_secs(20), || {
        (events_of(&ours.dir, "postfork").len() == 3).then_some(())
    });
    drop(uwsgi);
}

#[test]
fn lazy_apps_never_run_postfork_as_uwsgi() {
    let ours = probe_site("uwsgimod-lazy", 2, "lazy-apps = true\n", "");
    let theirs = probe_site("uwsgimod-lazy-u", 2, "lazy-apps = true\n", "");
    let _inst = ours.start();
    let _uwsgi = oracle::Uwsgi::start(&theirs.ini(), theirs.http_port);
    for site in [&ours, &theirs] {
        let v = info(site.http_port);
        // Each worker imports the app itself, as itself.
        assert_eq!(v["at_import"]["wid"], v["wid"], "{v}");
        assert_eq!(v["at_import"]["pid"], v["pid"], "{v}");
        assert_eq!(v["at_import"]["masterpid"], pidfile_pid(site), "{v}");
        assert_eq!(v["opt"]["lazy-apps"], serde_json::json!({"b": "true"}));
    }
    // Both workers of ours have imported the app (status: running); uWSGI's
    // second one may still be importing: wait until it logged its spawn.
    wait_for("uWSGI's workers", Duration::from_secs(20), || {
        let log = theirs.log_text();
        (log.matches("WSGI app 0 (mountpoint='') ready").count() >= 2).then_some(())
    });
    for _ in 0..4 {
        info(ours.http_port);
        info(theirs.http_port);
    }
    for site in [&ours, &theirs] {
        assert!(
            events_of(&site.dir, "postfork").is_empty()
                && events_of(&site.dir, "postfork2").is_empty(),
            "{}: {:?}",
            site.dir.display(),
            events(&site.dir)
        );
    }
}

#[test]
fn timer_runs_in_one_worker_every_second() {
    let site = probe_site("uwsgimod-timer", 2, "", "PROBE_TIMER=1\n");
    let _inst = site.start();
    let ticks = wait_for("three timer ticks", Duration::from_secs(30), || {
        let e = events_of(&site.dir, "timer");
        (e.len() >= 3).then_some(e)
    });
    assert!(
        ticks.iter().all(|t| t.1 == 1 && t.0 == ticks[0].0),
        "every tick in worker 1: {:?}",
        events(&site.dir)
    );
    // Signal number 0: the first free one, passed to the handler.
    assert!(events(&site.dir)
        .iter()
        .filter(|l| l.starts_with("timer "))
        .all(|l| l.ends_with(" 0")));
    // The app still serves beside it.
    assert_eq!(info(site.http_port)["numproc"], 2);
}

#[test]
fn lock_excludes_every_thread_of_every_worker() {
    let site = probe_site("uwsgimod-lock", 2, "threads = 2\n", "");
    let _inst = site.start();
    let port = site.http_port;
    let clients: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || http_get(port, "/locked").map(|r| r.status)))
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap().unwrap(), 200);
    }
    let lines: Vec<String> = events(&site.dir)
        .into_iter()
        .filter(|l| l.starts_with("enter ") || l.starts_with("exit "))
        .collect();
    assert_eq!(lines.len(), 16, "{lines:?}");
    // Strictly enter, exit of the same holder, enter, …: never two inside.
    for pair in lines.chunks(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.starts_with("enter ") && b.starts_with("exit "),
            "{lines:?}"
        );
        assert_eq!(a["enter ".len()..], b["exit ".len()..], "{lines:?}");
    }
    let pids: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert!(pids.len() >= 2, "both workers took the lock: {lines:?}");
}

#[test]
fn reload_from_the_app_reloads_the_instance() {
    let site = probe_site("uwsgimod-reload", 1, "", "");
    let inst = site.start();
    let before = info(site.http_port);
    assert_eq!(site.status_json()["generation"], 1);
    let r = http_get(site.http_port, "/reload").unwrap();
    assert_eq!(r.text(), r#"{"reload": true}"#);
    wait_for("generation 2 serving", Duration::from_secs(60), || {
        let s = site.status_json();
        (s["generation"] == 2 && s["phase"] == "running" && s["reloading"] == false).then_some(())
    });
    // The old worker may take a request or two until it has been told to stop.
    let after = wait_for("a worker of generation 2", Duration::from_secs(30), || {
        let v = info(site.http_port);
        (v["pid"] != before["pid"]).then_some(v)
    });
    assert_ne!(after["at_import"]["pid"], before["at_import"]["pid"]);
    assert_eq!(after["masterpid"], inst.pid() as i64);
}

#[test]
fn not_importable_in_hooks_daemons_cron_or_app_children() {
    let site = Site::new("uwsgimod-outside", "uwsgi_probe", 1, "");
    let py = venv().join("bin/python");
    let probe = repo().join("tests/apps/import_probe.py");
    let d = site.dir.display();
    let run = |name: &str| format!("{} {} {d}/{name}.txt", py.display(), probe.display());
    site.write_env(&format!("PROBE_DIR={d}\n"));
    site.write_ini(
        "uwsgi_probe",
        1,
        &format!(
            "hook-master-start = exec:{}\n\
             hook-pre-app = exec:{}\n\
             hook-accepting = exec:{}\n\
             attach-daemon = {} && exec sleep 600\n\
             cron2 = minute=-1 {}\n",
            run("master-start"),
            run("pre-app"),
            run("accepting"),
            run("daemon"),
            run("cron"),
        ),
    );
    let _inst = site.start();
    assert_eq!(info(site.http_port)["child_import"], 1);
    for name in ["master-start", "pre-app", "accepting", "daemon", "cron"] {
        let path = site.dir.join(format!("{name}.txt"));
        let text = wait_for(name, Duration::from_secs(30), || {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|t| t.ends_with('\n'))
        });
        assert_eq!(
            text.lines().next().unwrap(),
            "uwsgi=ModuleNotFoundError uwsgidecorators=ModuleNotFoundError",
            "{name}"
        );
    }
}
