//! Hooks and imports with the real binary: master hooks run once at start
//! (as-user, master-start), worker hooks in order around the app import
//! (pre-app, `import =`, post-app, accepting) in every worker; a failing pre-app
//! hook fails the first generation (start exits 1) and, on reload, leaves the old
//! generation serving; `hook-master-start = unix_signal:15 gracefully_kill_them_all`
//! is accepted as what SIGTERM already does; an action we cannot run is refused
//! by `check` with path:line.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn hooks_run_in_order_at_their_points() {
    let site = Site::new("hooks-order", "hello", 2, "");
    let order = site.dir.join("order");
    let o = order.display().to_string();
    site.write_env(&format!("HOOK_ORDER={o}\nAMY_GREETING=hello\n"));
    site.write_ini(
        "hello",
        2,
        &format!(
            "lazy-apps = true\n\
             hook-master-start = unix_signal:15 gracefully_kill_them_all\n\
             hook-as-user = exec:echo as-user >> {o}\n\
             hook-master-start = exec:echo \"master-start $AMY_GREETING\" >> {o}\n\
             hook-pre-app = exec:echo pre-app >> {o}\n\
             exec-pre-app = echo exec-pre-app >> {o}\n\
             import = hook_marker\n\
             hook-post-app = exec:echo post-app >> {o}\n\
             hook-accepting = exec:echo accepting >> {o}\n"
        ),
    );
    let mut inst = site.start();
    assert_eq!(uwsgi_get(&site.sock(), "/").unwrap().status, 200);
    let text = std::fs::read_to_string(&order).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..2], ["as-user", "master-start hello"], "{text}");
    let worker: Vec<String> = lines[2..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    // Two workers, each running the whole sequence (lazy-apps: each imports the
    // app, so uWSGI runs pre/post-app in each too).
    assert_eq!(worker.len(), 10, "{text}");
    let per_worker = ["pre-app", "exec-pre-app", "import", "post-app", "accepting"];
    for step in per_worker {
        assert_eq!(
            worker.iter().filter(|w| *w == step).count(),
            2,
            "{step} in {text}"
        );
    }
    let first_import = worker.iter().position(|w| w == "import").unwrap();
    let first_post = worker.iter().position(|w| w == "post-app").unwrap();
    assert!(worker.iter().position(|w| w == "pre-app").unwrap() < first_import);
    assert!(first_import < first_post);
    assert!(
        site.log_text().contains("running \"exec:echo pre-app"),
        "{}",
        site.log_text()
    );
    // SIGTERM stays a graceful stop.
    inst.signal(15);
    assert_eq!(inst.wait_exit(Duration::from_secs(30)), 0);
}

#[test]
fn a_failing_pre_app_hook_fails_the_first_generation() {
    let site = Site::new(
        "hooks-fail",
        "hello",
        1,
        "hook-pre-app = exec:sh -c 'echo migrating; exit 4'\n",
    );
    let mut inst = site.spawn();
    assert_eq!(inst.wait_exit(Duration::from_secs(60)), 1);
    let log = site.log_text();
    assert!(log.contains("migrating"), "{log}");
    assert!(log.contains("exited with non-zero code: 4"), "{log}");
}

#[test]
fn a_failing_pre_app_hook_on_reload_keeps_the_old_generation() {
    let site = Site::new("hooks-reload", "hello", 1, "");
    let inst = site.start();
    let before = inst.worker_pids();
    // `reload` below, not the watcher: write the file, then ask.
    site.write_ini("hello", 1, "hook-pre-app = exec:false\n");
    let out = site.cli(&["reload", site.ini().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("exited with non-zero code"), "{said}");
    assert_eq!(uwsgi_get(&site.sock(), "/").unwrap().status, 200);
    // The watcher saw the write too and may try once more: it fails the same way.
    wait_for("the old generation alone", Duration::from_secs(30), || {
        (site.status_json()["reloading"] == false && inst.worker_pids() == before).then_some(())
    });
    assert_eq!(uwsgi_get(&site.sock(), "/").unwrap().status, 200);
}

#[test]
fn a_hook_action_we_cannot_run_is_refused_with_its_line() {
    let site = Site::new(
        "hooks-refused",
        "hello",
        1,
        "hook-post-app = call:my_c_symbol\n",
    );
    let out = site.cli(&["check", site.ini().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = site
        .ini_text("hello", 1, "hook-post-app = call:my_c_symbol\n")
        .lines()
        .position(|l| l.starts_with("hook-post-app"))
        .unwrap()
        + 1;
    assert!(err.contains(&format!("amy_uwsgi.ini:{line}:")), "{err}");
    assert!(err.contains("not supported"), "{err}");
}

#[test]
fn a_failing_master_start_hook_destroys_the_instance() {
    let site = Site::new(
        "hooks-master",
        "hello",
        1,
        "hook-master-start = exec:exit 7\n",
    );
    let mut inst = site.spawn();
    assert_eq!(inst.wait_exit(Duration::from_secs(30)), 1);
    assert!(
        site.log_text()
            .contains("exited with non-zero code: exit 7"),
        "{}",
        site.log_text()
    );
    assert!(!site.pidfile().exists());
}

#[test]
fn exec_asap_runs_before_the_log_is_opened() {
    // A real ini's use: create the log directory that logto then opens.
    let site = Site::new(
        "asap",
        "pep3333",
        1,
        "exec-asap = mkdir -p %dlogs\nlogto = %dlogs/app.log\n",
    );
    let _inst = site.start();
    assert_eq!(uwsgi_get(&site.sock(), "/pid").unwrap().status, 200);
    let log = site.dir.join("logs/app.log");
    wait_for(
        "the request line in logs/app.log",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("GET /pid"))
        },
    );
    // A failing asap command stops the start before anything is bound.
    let failing = Site::new("asap-fail", "pep3333", 1, "exec-asap = exit 3\n");
    let out = failing.cli(&["start", failing.ini().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("exit 3"), "{err}");
    assert!(!failing.sock().exists() && !failing.log().exists());
}
