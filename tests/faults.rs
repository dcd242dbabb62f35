//! Faults (issue item 8) with a real master and real workers: a storm of
//! SIGHUPs, SIGTERM during one, and a master killed with SIGKILL.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;

fn settled(site: &Site) -> Option<u64> {
    let s = site.status_json();
    (s["reloading"] == false && s["phase"] == "running")
        .then(|| s["generation"].as_u64())
        .flatten()
}

/// Processes whose parent is `pid` (zombies included: that is what we count).
fn children(pid: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if rest.len() > 2 && rest[1].parse::<i32>().ok() == Some(pid) {
            out.push((p, rest[0].chars().next().unwrap_or('?')));
        }
    }
    out
}

#[test]
fn sighup_storm_gives_at_most_one_running_and_one_queued_reload() {
    let site = Site::new("hupstorm", "hello", 2, "");
    let inst = site.start();
    assert_eq!(generation(&site), 1);
    for _ in 0..200 {
        inst.signal(libc::SIGHUP);
    }
    let g = wait_for(
        "the storm's reloads to settle",
        Duration::from_secs(90),
        || settled(&site).filter(|g| *g > 1),
    );
    // Quiet for a while: nothing else was queued behind the one queued reload.
    std::thread::sleep(Duration::from_secs(3));
    let after = wait_for("settled", Duration::from_secs(60), || settled(&site));
    assert!(
        (2..=3).contains(&after) && after >= g,
        "200 SIGHUPs gave generation {after}: more than one running and one queued reload\n{}",
        inst.tail()
    );
    let r = uwsgi_get(&site.sock(), "/").unwrap();
    assert_eq!(r.status, 200);
    // No zombie left under the master after all those generations.
    let zombies: Vec<_> = children(inst.pid())
        .into_iter()
        .filter(|(_, s)| *s == 'Z')
        .collect();
    assert!(zombies.is_empty(), "zombies under the master: {zombies:?}");
}

#[test]
fn sigterm_during_a_sighup_storm_wins() {
    let site = Site::new("hupterm", "hello", 2, "");
    let mut inst = site.start();
    let master = inst.pid();
    let workers = inst.worker_pids();
    for _ in 0..50 {
        inst.signal(libc::SIGHUP);
    }
    inst.signal(libc::SIGTERM);
    for _ in 0..50 {
        inst.signal(libc::SIGHUP);
    }
    let t0 = Instant::now();
    let code = inst.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 0, "SIGTERM after a storm of SIGHUPs exits 0");
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "stop took {:?}",
        t0.elapsed()
    );
    for w in workers {
        assert!(!alive(w), "worker {w} of master {master} outlived it");
    }
    assert!(!site.pidfile().exists(), "pidfile left behind");
}

/// Sends a uwsgi request for `uri` and returns the stream (the answer is read later).
#[test]
fn sigkilled_master_workers_finish_in_flight_stop_accepting_and_a_new_start_serves() {
    let site = Site::new("sigkill", "pep3333", 2, "");
    let t_boot = Instant::now();
    let mut inst = site.start();
    let boot = t_boot.elapsed();
    let workers = inst.worker_pids();
    assert_eq!(workers.len(), 2);
    // One request in flight (3 s) when the master dies.
    let slow = request_in_flight(&site.sock(), 3.0);
    let master = inst.pid();
    assert!(kill(master, libc::SIGKILL));
    let _ = inst.wait_exit(Duration::from_secs(10));
    let killed_at = Instant::now();

    // Within 1 s no worker accepts: a new connection is never answered 200.
    std::thread::sleep(Duration::from_millis(1000));
    let late = UnixStream::connect(site.sock()).map(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&uwsgi_packet("GET", "/pid", &[], b""));
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    });
    if let Ok(answer) = &late {
        assert!(
            !answer.starts_with(b"HTTP/1.1 200"),
            "a worker of the killed master still accepted after 1 s"
        );
    }
    // The in-flight request finished.
    let r = slow
        .join()
        .unwrap()
        .expect("the in-flight request got an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for("the old workers to exit", Duration::from_secs(15), || {
        workers.iter().all(|w| !alive(*w)).then_some(())
    });

    // A new start serves within 1 s plus the app's boot.
    let t0 = Instant::now();
    let inst2 = site.spawn();
    let served = wait_for("the new master to serve", Duration::from_secs(60), || {
        uwsgi_get(&site.sock(), "/pid")
            .ok()
            .filter(|r| r.status == 200)
            .map(|_| t0.elapsed())
    });
    let budget = Duration::from_secs(1) + boot * 2 + Duration::from_secs(2);
    assert!(
        served <= budget,
        "new start served after {served:?} (boot was {boot:?}, killed {:?} ago)",
        killed_at.elapsed()
    );
    let new_workers = inst2.worker_pids();
    assert!(new_workers.iter().all(|w| !workers.contains(w)));
}

#[test]
fn stop_leaves_nothing_the_app_spawned_even_a_setsid_daemon_ignoring_sigterm() {
    let site = Site::new("leftovers", "spawner", 1, "");
    let mut inst = site.start();
    let mut pids = Vec::new();
    for what in ["child", "daemon"] {
        let file = site.dir.join(format!("{what}.pid"));
        let r = uwsgi_get(&site.sock(), &format!("/{what}?{}", file.display())).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let pid: i32 = r.text().trim().parse().unwrap();
        assert!(alive(pid), "{what} {pid} not running");
        pids.push((what, pid));
    }
    let out = site.cli(&["stop", site.ini().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(inst.wait_exit(Duration::from_secs(30)), 0);
    for (what, pid) in pids {
        wait_for(
            &format!("the app's {what} ({pid}) to be gone"),
            Duration::from_secs(10),
            || (!alive(pid)).then_some(()),
        );
    }
    assert!(
        site.log_text().contains("left behind"),
        "the stop says what it cleaned up"
    );
}
