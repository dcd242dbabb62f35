//! `gevent = N` with the real binary, real workers in a venv that has gevent,
//! real nginx: concurrency inside one worker, streaming, slow readers, graceful
//! stop with greenlets in flight, max-requests, harakiri, and the refusal when
//! the venv has no gevent. Issue 8 item 6. The app is tests/apps/geventapp.py.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;

const PATCHED: &str = "gevent = 50\ngevent-monkey-patch = true\n";

/// `n` concurrent requests; (status, X-Worker-Pid, body) of each, in order.
fn concurrently(
    n: usize,
    request: impl Fn() -> std::io::Result<Response> + Send + Sync + 'static,
) -> Vec<(u16, String, String)> {
    let request = Arc::new(request);
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (request, barrier) = (request.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = request().expect("request");
                let pid = r.header("X-Worker-Pid").unwrap_or("").to_string();
                (r.status, pid, r.text())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn ten_slow_requests_are_served_at_once_by_one_worker_behind_nginx() {
    let site = Site::new("gevent-nginx", "geventapp", 1, PATCHED);
    let inst = site.start();
    let nginx = Arc::new(Nginx::start(&site.sock()));
    let t0 = Instant::now();
    let n2 = nginx.clone();
    let answers = concurrently(10, move || n2.get("/sleep?s=1"));
    let took = t0.elapsed();
    for (status, _, body) in &answers {
        assert_eq!(*status, 200, "{body}\n{}", inst.tail());
        let slept: f64 = body.trim().trim_start_matches("slept ").parse().unwrap();
        assert!(slept >= 0.99, "{body}");
    }
    let pids: std::collections::BTreeSet<_> = answers.iter().map(|a| a.1.clone()).collect();
    assert_eq!(pids.len(), 1, "one worker served them all: {pids:?}");
    // One at a time would take 10 s.
    assert!(
        took < Duration::from_secs(4),
        "10 x 1 s took {took:?}\n{}",
        inst.tail()
    );
    assert!(nginx.error_log().lines().all(|l| !l.contains("[error]")));
    // The request log has a line per request, each on its own core.
    let log = site.log_text();
    let cores: std::collections::BTreeSet<_> = log
        .lines()
        .filter(|l| l.contains("GET /sleep?s=1 => generated"))
        .filter_map(|l| l.rsplit("core ").next().map(str::to_string))
        .collect();
    assert!(cores.len() >= 5, "cores used: {cores:?}");
}

#[test]
fn lazy_apps_with_early_monkey_patch_patch_before_the_app_binds_sleep() {
    let extra = "gevent = 20\ngevent-early-monkey-patch = true\nlazy-apps = true\n";
    let site = Site::new("gevent-lazy", "geventapp", 1, extra);
    let inst = site.start();
    let r = http_get(site.http_port, "/patched").unwrap();
    assert_eq!(r.text(), "time=True socket=True\n", "{}", inst.tail());
    let port = site.http_port;
    let t0 = Instant::now();
    let answers = concurrently(8, move || http_get(port, "/sleep?s=1"));
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
}

/// uWSGI patches nothing unless asked: the worker's own I/O is cooperative,
/// the app's blocking sleep is not.
#[test]
fn without_monkey_patching_the_apps_blocking_calls_block_the_worker_as_in_uwsgi() {
    let site = Site::new("gevent-nopatch", "geventapp", 1, "gevent = 20\n");
    let inst = site.start();
    let r = http_get(site.http_port, "/patched").unwrap();
    assert_eq!(r.text(), "time=False socket=False\n", "{}", inst.tail());
    let port = site.http_port;
    let t0 = Instant::now();
    let answers = concurrently(3, move || http_get(port, "/sleep?s=0.5"));
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn a_streaming_response_arrives_chunk_by_chunk_while_other_requests_are_served() {
    let site = Site::new("gevent-stream", "geventapp", 1, PATCHED);
    let inst = site.start();
    let mut s = TcpStream::connect(("127.0.0.1", site.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let t0 = Instant::now();
    s.write_all(b"GET /stream?n=5&pause=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut first = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if first.is_none() && got.windows(2).any(|w| w == b"0:") {
            first = Some(t0.elapsed());
            // Meanwhile the same worker answers another request at once.
            let t1 = Instant::now();
            let r = http_get(site.http_port, "/").unwrap();
            assert_eq!(r.text(), "hello from gevent\n");
            assert!(
                t1.elapsed() < Duration::from_millis(500),
                "{:?}",
                t1.elapsed()
            );
        }
    }
    let total = t0.elapsed();
    let r = parse_response(&got).unwrap();
    assert_eq!(r.status, 200, "{}", inst.tail());
    let lines: Vec<_> = r.text().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines[4].starts_with("4:"));
    let first = first.expect("first chunk");
    assert!(
        first < Duration::from_millis(600) && total >= Duration::from_millis(1200),
        "first chunk after {first:?}, whole body after {total:?}"
    );
}

/// A client that does not read holds only its greenlet: the worker's writes
/// wait for the socket cooperatively, and the whole body arrives in the end.
#[test]
fn a_slow_reader_of_a_large_body_does_not_stall_the_worker() {
    let site = Site::new("gevent-slowreader", "geventapp", 1, PATCHED);
    let inst = site.start();
    let mut s = TcpStream::connect(("127.0.0.1", site.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // 256 chunks of 64 KiB: 16 MiB, more than the socket buffers hold.
    s.write_all(b"GET /stream?n=256&size=65536&pause=0 HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).unwrap();
    for _ in 0..5 {
        let t = Instant::now();
        let r = http_get(site.http_port, "/").unwrap();
        assert_eq!(r.status, 200, "{}", inst.tail());
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let mut got = one.to_vec();
    got.extend(rest);
    let r = parse_response(&got).unwrap();
    let each = 65536 + 2 + 1; // "i:" + data + "\n" for i < 10, one more digit above
    let expected = 10 * each + 90 * (each + 1) + 156 * (each + 2);
    assert_eq!(r.body.len(), expected, "{}", inst.tail());
}

#[test]
fn graceful_stop_lets_the_greenlets_in_flight_finish() {
    let site = Site::new("gevent-stop", "geventapp", 1, PATCHED);
    let mut inst = site.start();
    let marks = site.dir.join("marks");
    std::fs::create_dir(&marks).unwrap();
    let uri = format!("/sleep?s=2&mark={}", marks.display());
    let port = site.http_port;
    let clients = std::thread::spawn(move || concurrently(5, move || http_get(port, &uri)));
    wait_for("5 requests in flight", Duration::from_secs(20), || {
        (std::fs::read_dir(&marks).unwrap().count() == 5).then_some(())
    });
    let t0 = Instant::now();
    inst.signal(15);
    let answers = clients.join().unwrap();
    for (status, _, body) in &answers {
        assert_eq!(*status, 200, "{body}\n{}", inst.tail());
        // The whole sleep, however loaded the machine is (2.0xx or more).
        let slept: f64 = body.trim().trim_start_matches("slept ").parse().unwrap();
        assert!(slept >= 1.99, "{body}");
    }
    assert_eq!(
        inst.wait_exit(Duration::from_secs(30)),
        0,
        "{}",
        inst.tail()
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // Stopped accepting: nothing listens any more.
    assert!(TcpStream::connect(("127.0.0.1", site.http_port)).is_err());
}

#[test]
fn max_requests_recycles_a_gevent_worker_without_failing_a_request() {
    let site = Site::new(
        "gevent-maxreq",
        "geventapp",
        1,
        &format!("{PATCHED}max-requests = 5\n"),
    );
    let inst = site.start();
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..16 {
        let r = wait_for("an answer", Duration::from_secs(20), || {
            http_get(site.http_port, "/").ok()
        });
        assert_eq!(r.status, 200, "request {i}\n{}", inst.tail());
        pids.insert(r.header("X-Worker-Pid").unwrap().to_string());
    }
    assert!(pids.len() >= 3, "recycled: {pids:?}\n{}", inst.tail());
}

#[test]
fn harakiri_cuts_a_stuck_greenlet_with_a_504_and_replaces_the_worker() {
    let site = Site::new(
        "gevent-harakiri",
        "geventapp",
        1,
        &format!("{PATCHED}harakiri = 2\n"),
    );
    let inst = site.start();
    let before = inst.worker_pids();
    let t0 = Instant::now();
    let r = http_get(site.http_port, "/sleep?s=60").unwrap();
    assert_eq!(r.status, 504, "{}", inst.tail());
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    wait_for("a new worker", Duration::from_secs(30), || {
        let now = inst.worker_pids();
        (!now.is_empty() && now != before).then_some(())
    });
    let r = wait_for("the new worker to answer", Duration::from_secs(20), || {
        http_get(site.http_port, "/").ok()
    });
    assert_eq!(r.status, 200);
    let log = site.log_text();
    assert!(log.contains("HARAKIRI"), "{log}");
    // The dump shows the stuck greenlet's own stack, not the hub's.
    assert!(log.contains("in application"), "{log}");
}

/// A venv without gevent: check and start refuse with the line of `gevent`.
#[test]
fn a_venv_without_gevent_is_refused_by_check_and_start_with_path_line() {
    let dir = temp_dir("gevent-nogevent");
    let venv = dir.join("venv");
    let out = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ini = dir.join("uwsgi.ini");
    std::fs::write(
        &ini,
        format!(
            "[uwsgi]\nchdir = {}\nmodule = geventapp\nhome = {}\nsocket = {}\nprocesses = 2\ngevent = 100\n",
            repo().join("tests/apps").display(),
            venv.display(),
            dir.join("a.sock").display()
        ),
    )
    .unwrap();
    for cmd in ["check", "start"] {
        let out = std::process::Command::new(BIN)
            .arg(cmd)
            .arg(&ini)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        let want = format!("{}:7: gevent = 100: ", ini.display());
        assert!(
            err.contains(&want) && err.contains("cannot import gevent"),
            "{cmd}: {err}"
        );
    }
    assert!(!Path::new(&dir.join("a.sock")).exists());
}

#[test]
fn gevent_with_threads_is_refused() {
    let site = Site::new(
        "gevent-threads",
        "geventapp",
        1,
        "gevent = 10\nthreads = 4\n",
    );
    let out = site.cli(&["check", site.ini().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("with threads = 4 is not supported"));
}

/// `loop = gevent` + `async = N` is uWSGI's long form of `gevent = N`.
#[test]
fn loop_gevent_with_async_cores_serves_like_gevent() {
    let extra = "async = 20\nloop = gevent\ngevent-monkey-patch = true\n";
    let site = Site::new("gevent-loop", "geventapp", 1, extra);
    let inst = site.start();
    let port = site.http_port;
    let t0 = Instant::now();
    let answers = concurrently(6, move || http_get(port, "/sleep?s=1"));
    assert!(
        answers.iter().all(|a| a.0 == 200),
        "{answers:?}\n{}",
        inst.tail()
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[test]
fn async_without_the_gevent_loop_and_other_loops_fail_closed() {
    for (extra, needle) in [
        (
            "async = 10\n",
            "\"async\" = 10 is not supported without loop = gevent",
        ),
        (
            "loop = ugreen\nasync = 10\n",
            "\"loop\" = ugreen is not supported",
        ),
        ("ugreen = true\n", "\"ugreen\" is not supported"),
        ("loop = gevent\n", "loop = gevent needs async = N"),
        ("gevent = 0\n", "must be 1..="),
    ] {
        let site = Site::new("gevent-async", "geventapp", 1, extra);
        let out = site.cli(&["check", site.ini().to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert!(err.contains(needle), "{extra}: {err}");
        assert!(err.contains(&format!("{}:", site.ini().display())), "{err}");
    }
}
