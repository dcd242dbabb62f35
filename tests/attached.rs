//! Attached daemons with the real binary: a killed daemon is restarted, its
//! output and environment are the instance's, it is gone (its whole group) after
//! stop, one that ignores SIGTERM is SIGKILLed after `reload-mercy`, a reload
//! keeps an unchanged daemon and replaces a changed one, a smart daemon
//! survives a master restart, a control daemon's death stops the instance.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A daemon script: appends its pid to $1, its child's pid to $2, prints the
/// environment's AMY_GREETING, then waits on a long sleep.
fn write_daemon(dir: &Path) {
    std::fs::write(
        dir.join("daemon.sh"),
        "#!/bin/sh\necho $$ >> \"$1\"\necho \"daemon says $AMY_GREETING from $(pwd)\"\n\
         sleep 1000 &\necho $! >> \"$2\"\nwait\n",
    )
    .unwrap();
}

fn pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn wait_lines(path: &Path, n: usize) -> Vec<i32> {
    wait_for(
        &format!("{n} pids in {}", path.display()),
        Duration::from_secs(30),
        || {
            let p = pids(path);
            (p.len() >= n).then_some(p)
        },
    )
}

fn daemon_pids(site: &Site) -> Vec<Option<i64>> {
    site.status_json()["daemons"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["pid"].as_i64())
        .collect()
}

#[test]
fn a_killed_daemon_is_restarted_and_its_group_is_gone_after_stop() {
    let site = Site::new("daemon-restart", "hello", 1, "");
    write_daemon(&site.dir);
    let d = site.dir.display().to_string();
    site.write_ini(
        "hello",
        1,
        &format!("attach-daemon = sh {d}/daemon.sh {d}/d.pids {d}/c.pids\n"),
    );
    let mut inst = site.start();
    let first = wait_lines(&site.dir.join("d.pids"), 1)[0];
    let status = site.status_json();
    let leader = status["daemons"][0]["pid"].as_i64().unwrap() as i32;
    assert!(alive(leader));
    assert_eq!(status["daemons"][0]["state"], "running");
    let human = site.cli(&["status", site.ini().to_str().unwrap()]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.lines().any(|l| l.contains(&leader.to_string())
            && l.contains("running")
            && l.contains("daemon.sh")),
        "status lists the daemon:\n{human}"
    );

    // The script dies; its shell leader exits; the group's leftovers are killed
    // and the daemon is started again.
    assert!(kill(first, 9));
    let again = wait_lines(&site.dir.join("d.pids"), 2);
    assert_ne!(again[1], first, "a new process");
    let children = wait_lines(&site.dir.join("c.pids"), 2);
    wait_for(
        "the first daemon's child to be killed with its group",
        Duration::from_secs(10),
        || (!alive(children[0])).then_some(()),
    );
    let leader2 = wait_for(
        "status to show the new daemon",
        Duration::from_secs(10),
        || match daemon_pids(&site).as_slice() {
            [Some(p)] if *p as i32 != leader => Some(*p as i32),
            _ => None,
        },
    );
    let log = site.log_text();
    assert!(
        log.contains(&format!(
            "daemon says hello from {}",
            repo().join("tests/apps").display()
        )),
        "daemon output with the uwsgi_env environment in chdir reaches the log:\n{log}"
    );
    assert!(log.contains("daemon exited"), "{log}");

    inst.signal(15);
    assert_eq!(inst.wait_exit(Duration::from_secs(30)), 0);
    for pid in [leader2, again[1], children[1]] {
        wait_for(
            "the daemon group to be gone",
            Duration::from_secs(5),
            || (!alive(pid)).then_some(()),
        );
    }
}

#[test]
fn a_daemon_that_ignores_sigterm_is_killed_after_reload_mercy() {
    let site = Site::new("daemon-stubborn", "hello", 1, "");
    let d = site.dir.display().to_string();
    std::fs::write(
        site.dir.join("stubborn.sh"),
        "#!/bin/sh\ntrap '' TERM\necho $$ >> \"$1\"\nwhile :; do sleep 1; done\n",
    )
    .unwrap();
    site.write_ini(
        "hello",
        1,
        &format!("attach-daemon2 = cmd=sh {d}/stubborn.sh {d}/s.pids\nreload-mercy = 2\n"),
    );
    let mut inst = site.start();
    let pid = wait_lines(&site.dir.join("s.pids"), 1)[0];
    let t0 = Instant::now();
    inst.signal(15);
    assert_eq!(inst.wait_exit(Duration::from_secs(30)), 0);
    let took = t0.elapsed();
    wait_for(
        "the stubborn daemon to be killed with its group",
        Duration::from_secs(5),
        || (!alive(pid)).then_some(()),
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(15),
        "stop took {took:?}"
    );
}

#[test]
fn reload_keeps_an_unchanged_daemon_and_replaces_a_changed_one() {
    let site = Site::new("daemon-reload", "hello", 1, "");
    write_daemon(&site.dir);
    let d = site.dir.display().to_string();
    let keep = format!("attach-daemon = sh {d}/daemon.sh {d}/a.pids {d}/ac.pids\n");
    let changing =
        |arg: &str| format!("attach-daemon = sh {d}/daemon.sh {d}/b.pids {d}/bc.pids {arg}\n");
    site.write_ini("hello", 1, &(keep.clone() + &changing("one")));
    let inst = site.start();
    let a = wait_lines(&site.dir.join("a.pids"), 1)[0];
    let b = wait_lines(&site.dir.join("b.pids"), 1)[0];
    let leaders = daemon_pids(&site);

    // The watcher sees the rewrite and reloads (SIGHUP would do the same).
    site.write_ini("hello", 1, &(keep + &changing("two")));
    let b2 = wait_lines(&site.dir.join("b.pids"), 2)[1];
    assert_ne!(b2, b);
    wait_for("the old B to stop", Duration::from_secs(10), || {
        (!alive(b)).then_some(())
    });
    assert!(alive(a), "the unchanged daemon kept running");
    assert_eq!(
        pids(&site.dir.join("a.pids")),
        vec![a],
        "and was not restarted"
    );
    wait_for(
        "status to list A and the new B",
        Duration::from_secs(10),
        || {
            let now = daemon_pids(&site);
            (now.len() == 2 && now[0] == leaders[0] && now[1].is_some() && now[1] != leaders[1])
                .then_some(())
        },
    );
    drop(inst);
}

#[test]
fn a_smart_daemon_survives_a_master_restart_and_is_adopted() {
    let site = Site::new("daemon-smart", "hello", 1, "");
    let d = site.dir.display().to_string();
    std::fs::write(
        site.dir.join("smart.sh"),
        "#!/bin/sh\necho $$ >> \"$1\"\nexec sleep 1000\n",
    )
    .unwrap();
    site.write_ini(
        "hello",
        1,
        &format!("smart-attach-daemon2 = {d}/smart.pid sh {d}/smart.sh {d}/m.pids\nstats = {d}/stats.sock\n"),
    );
    let mut inst = site.start();
    let script = wait_lines(&site.dir.join("m.pids"), 1)[0];
    let status = site.status_json();
    assert_eq!(status["daemons"][0]["smart"], true);
    let pid = status["daemons"][0]["pid"].as_i64().unwrap() as i32;
    assert_eq!(
        std::fs::read_to_string(site.dir.join("smart.pid"))
            .unwrap()
            .trim(),
        pid.to_string(),
        "the master writes the pidfile of a smart-attach-daemon2"
    );
    // uWSGI's stats list it too.
    let stats = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{}/bin/python -c \"import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);print(s.makefile().read())\" {d}/stats.sock",
            venv().display()
        ))
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(
        stats["daemons"][0]["pid"].as_i64(),
        Some(i64::from(pid)),
        "{stats}"
    );

    inst.signal(15);
    assert_eq!(inst.wait_exit(Duration::from_secs(30)), 0);
    assert!(
        alive(pid),
        "a smart daemon outlives the master, as in uWSGI"
    );

    let inst = site.start();
    wait_for(
        "the new master to adopt the daemon",
        Duration::from_secs(10),
        || (daemon_pids(&site) == vec![Some(i64::from(pid))]).then_some(()),
    );
    assert_eq!(
        pids(&site.dir.join("m.pids")),
        vec![script],
        "not started twice"
    );
    // Gone while this master runs: it is started again.
    assert!(kill(pid, 9));
    kill(script, 9);
    let again = wait_lines(&site.dir.join("m.pids"), 2)[1];
    drop(inst);
    kill(again, 9);
    if let Some(p) = daemon_pid_file(&site) {
        kill(p, 9);
    }
}

#[test]
fn a_control_daemon_that_exits_stops_the_instance() {
    let site = Site::new("daemon-control", "hello", 1, "");
    let d = site.dir.display().to_string();
    site.write_ini(
        "hello",
        1,
        &format!("attach-control-daemon = sh -c 'while [ ! -e {d}/go ]; do sleep 0.1; done'\n"),
    );
    let mut inst = site.start();
    std::fs::write(site.dir.join("go"), "").unwrap();
    assert_eq!(inst.wait_exit(Duration::from_secs(30)), 0);
    assert!(
        site.log_text().contains("control daemon died"),
        "{}",
        site.log_text()
    );
}

fn daemon_pid_file(site: &Site) -> Option<i32> {
    std::fs::read_to_string(site.dir.join("smart.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}
