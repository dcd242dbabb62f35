//! `http = ADDR`, uWSGI's HTTP router: the real binary, real Python workers and
//! real clients (curl, wrk, raw sockets).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A site whose only listener is `http = 127.0.0.1:<site.http_port>` (no
/// `socket`: the master binds a private uwsgi socket, as uWSGI does).
fn router_site(name: &str, module: &str, processes: u32, extra: &str) -> Site {
    let site = Site::new(name, module, processes, "");
    let text = format!(
        "[uwsgi]\nchdir = {apps}\nmodule = {module}\nhome = {venv}\nmaster = true\nprocesses = {processes}\n\
         http = 127.0.0.1:{port}\npidfile = %damy.pid\nlogto = %damy.log\nworker-reload-mercy = 10\n{extra}\n",
        apps = repo().join("tests/apps").display(),
        venv = venv().display(),
        port = site.http_port,
    );
    std::fs::write(site.ini(), text).unwrap();
    site
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads one response (Content-Length or chunked framing) off a kept connection.
fn read_response(s: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "connection closed mid-head: {raw:?}"
        );
        raw.push(byte[0]);
    }
    // Parsed without the chunked marker: the body is read below, off the socket.
    let text = String::from_utf8_lossy(&raw).replace("transfer-encoding:", "x-te:");
    let head = parse_response(text.as_bytes()).expect("a response head");
    let chunked = head.header("x-te") == Some("chunked");
    let mut body = Vec::new();
    if let Some(n) = head.header("content-length") {
        body.resize(n.parse().unwrap(), 0);
        s.read_exact(&mut body).unwrap();
    } else if chunked {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                s.read_exact(&mut byte).unwrap();
                line.push(byte[0]);
            }
            let size =
                usize::from_str_radix(std::str::from_utf8(&line[..line.len() - 2]).unwrap(), 16)
                    .unwrap();
            let mut chunk = vec![0u8; size + 2];
            s.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        s.read_to_end(&mut body).unwrap();
    }
    Response { body, ..head }
}

/// The router process of the master `master`: its child running `amy-emperor router`.
fn router_pid(master: i32) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            // `amy-emperor router` as the title, or as argv before the title is set.
            let words: Vec<&[u8]> = cmdline
                .split(|b| *b == 0 || *b == b' ')
                .filter(|w| !w.is_empty())
                .collect();
            ppid == Some(master) && words.get(1) == Some(&&b"router"[..])
        })
        .filter(|pid| alive(*pid))
}

fn environ(port: u16, uri: &str, extra_headers: &str) -> serde_json::Value {
    let mut s = connect(port);
    write!(
        s,
        "GET {uri} HTTP/1.1\r\nHost: site.example\r\n{extra_headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn router_without_socket_binds_a_private_uwsgi_socket_and_sends_uwsgis_vars() {
    let site = router_site("rvars", "pep3333", 1, "");
    let inst = site.start();
    let env = environ(
        site.http_port,
        "/environ/a%20b?x=1&y=%41",
        "X-Foo: bar\r\nX_Foo: forged\r\nCookie: a=1\r\nCookie: b=2\r\n",
    );
    assert_eq!(env["REQUEST_METHOD"], "GET");
    assert_eq!(env["REQUEST_URI"], "/environ/a%20b?x=1&y=%41");
    assert_eq!(env["PATH_INFO"], "/environ/a b");
    assert_eq!(env["QUERY_STRING"], "x=1&y=%41");
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(env["SCRIPT_NAME"], "");
    assert_eq!(env["SERVER_PORT"], site.http_port.to_string());
    assert_eq!(env["UWSGI_ROUTER"], "http");
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert!(env["REMOTE_PORT"].as_str().unwrap().parse::<u16>().is_ok());
    assert_eq!(env["HTTP_HOST"], "site.example");
    assert_eq!(
        env["HTTP_X_FOO"], "bar",
        "the underscore form must not override"
    );
    assert_eq!(env["HTTP_COOKIE"], "a=1; b=2");
    assert_eq!(env["wsgi.url_scheme"], "http");
    assert!(env.get("HTTPS").is_none());
    assert!(env.get("CONTENT_LENGTH").is_none());
    // The private socket is loopback TCP on a port the kernel chose.
    let log = site.log_text();
    assert!(log.contains("address=127.0.0.1:0"), "{}", inst.tail());
    assert!(router_pid(inst.pid()).is_some(), "{}", inst.tail());
}

#[test]
fn keepalive_serves_several_requests_on_one_connection_and_is_off_by_default() {
    let site = router_site("rka", "pep3333", 2, "http-keepalive = 1");
    let inst = site.start();
    let mut s = connect(site.http_port);
    let mut pids = Vec::new();
    for i in 0..5 {
        write!(s, "GET /pid?{i} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let r = read_response(&mut s);
        assert_eq!(r.status, 200, "request {i}: {}", inst.tail());
        pids.push(r.text());
    }
    // A streamed response without a length is chunked, and the connection survives it.
    write!(s, "GET /stream?n=4 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.header("x-te"), Some("chunked"));
    assert_eq!(r.text(), "chunk 0\nchunk 1\nchunk 2\nchunk 3\n");
    write!(s, "GET /pid HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).status, 200);

    // curl reuses the connection too.
    let url = format!("http://127.0.0.1:{}/pid", site.http_port);
    let out = Command::new("curl")
        .args(["-sv", "-o", "/dev/null", &url, "-o", "/dev/null", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Re-using existing connection"), "{err}");
    drop(inst);

    // Without `http-keepalive` the router closes after each response, as uWSGI's.
    let site = router_site("rnoka", "pep3333", 1, "");
    let _inst = site.start();
    let mut s = connect(site.http_port);
    write!(s, "GET /pid HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.header("connection"), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap(),
        0,
        "closed after one response"
    );
}

#[test]
fn chunked_upload_reaches_the_app_dechunked_with_a_content_length() {
    let site = router_site("rchunk", "pep3333", 1, "http-keepalive = 1");
    let inst = site.start();
    let mut s = connect(site.http_port);
    let parts: [&[u8]; 3] = [b"hello ", b"chunked ", b"world"];
    let mut req =
        b"POST /echo?mode=chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for p in parts {
        req.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        req.extend_from_slice(p);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&req).unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 200, "{}", inst.tail());
    assert_eq!(r.text(), "hello chunked world");
    // The same connection goes on: a chunked body does not end keep-alive here.
    write!(
        s,
        "POST /environ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    .unwrap();
    let env: serde_json::Value = serde_json::from_slice(&read_response(&mut s).body).unwrap();
    assert_eq!(env["CONTENT_LENGTH"], "3");
    assert!(env.get("HTTP_TRANSFER_ENCODING").is_none());
}

#[test]
fn a_20mb_body_arrives_whole_through_curl() {
    let site = router_site("rbig", "pep3333", 1, "");
    let inst = site.start();
    let body: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let file = site.dir.join("big.bin");
    std::fs::write(&file, &body).unwrap();
    let url = format!("http://127.0.0.1:{}/echo?mode=chunks", site.http_port);
    for framing in [
        "Content-Type: application/octet-stream",
        "Transfer-Encoding: chunked",
    ] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "60", "-H", framing, "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{framing}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            inst.tail()
        );
        assert_eq!(out.stdout.len(), body.len(), "{framing}");
        assert!(out.stdout == body, "{framing}: the echoed bytes differ");
    }
}

#[test]
fn slow_clients_do_not_occupy_the_only_worker() {
    // One worker, one thread: anything that held it would stall every request.
    let site = router_site("rslow", "pep3333", 1, "http-timeout = 30");
    let inst = site.start();
    let port = site.http_port;
    // 60 slowloris connections trickle header lines; 5 more send half a body.
    let stop = Arc::new(AtomicBool::new(false));
    let mut slow = Vec::new();
    for _ in 0..60 {
        let mut s = connect(port);
        s.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\n").unwrap();
        slow.push(s);
    }
    for _ in 0..5 {
        let mut s = connect(port);
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
            .unwrap();
        slow.push(s);
    }
    let trickle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                for s in slow.iter_mut().take(60) {
                    let _ = s.write_all(b"X-Slow: 1\r\n");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            slow
        })
    };
    let start = Instant::now();
    for i in 0..20 {
        let t = Instant::now();
        let r = http_get(port, "/pid").unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", inst.tail());
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "request {i} waited {:?} behind slow clients",
            t.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let slow = trickle.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(20));
    drop(slow);
}

#[test]
fn the_router_is_restarted_when_killed() {
    let site = router_site("rkill", "hello", 1, "");
    let inst = site.start();
    let first = wait_for("the router", Duration::from_secs(10), || {
        router_pid(inst.pid())
    });
    assert_eq!(http_get(site.http_port, "/").unwrap().status, 200);
    assert!(kill(first, 9));
    let second = wait_for("a new router", Duration::from_secs(15), || {
        router_pid(inst.pid()).filter(|p| *p != first)
    });
    assert_ne!(first, second);
    // The listener was the master's all along: the new router serves at once.
    let r = wait_for("a response", Duration::from_secs(10), || {
        http_get(site.http_port, "/").ok()
    });
    assert_eq!(r.status, 200, "{}", inst.tail());
    assert!(site.log_text().contains("router exited; restarting"));
}

#[test]
fn reload_under_load_through_the_router_fails_no_request() {
    let site = router_site("rreload", "hello", 2, "");
    let inst = site.start();
    let router = router_pid(inst.pid()).expect("router running");
    let port = site.http_port;
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(4, Duration::from_secs(60), stop.clone(), move || {
        http_get(port, "/")
    });
    wait_for("some load", Duration::from_secs(10), || {
        (site.log_text().matches("GET / =>").count() > 20).then_some(())
    });
    let before: Vec<i32> = inst.worker_pids();
    let out = site.cli(&["reload", site.ini().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let after = wait_for(
        "load on the new generation",
        Duration::from_secs(20),
        || {
            let pids = inst.worker_pids();
            (!pids.is_empty() && pids.iter().all(|p| !before.contains(p))).then_some(pids)
        },
    );
    std::thread::sleep(Duration::from_millis(300)); // keep loading the new generation a little
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = load.join().unwrap();
    assert!(
        report.failed.is_empty(),
        "{:?}\n{}",
        report.failed,
        inst.tail()
    );
    assert!(report.ok > 50, "only {} requests", report.ok);
    assert!(
        report.pids.iter().any(|(_, p)| after.contains(p)),
        "no request reached the new generation"
    );
    assert_eq!(
        router_pid(inst.pid()),
        Some(router),
        "unchanged router kept"
    );
}

#[test]
fn wrk_with_keepalive_gets_only_2xx() {
    let site = router_site("rwrk", "hello", 2, "http-keepalive = 1");
    let inst = site.start();
    let out = Command::new("wrk")
        .args(["-t1", "-c8", "-d2s", "--timeout", "5s"])
        .arg(format!("http://127.0.0.1:{}/", site.http_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}\n{}", inst.tail());
    assert!(!text.contains("Socket errors"), "{text}");
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(requests > 100, "{text}");
}

#[test]
fn worker_down_is_502_and_worker_too_slow_is_504() {
    // http-to names a socket nobody listens on.
    let site = router_site("r502", "pep3333", 1, "");
    let text = std::fs::read_to_string(site.ini()).unwrap()
        + &format!(
            "socket = %damy.sock\nhttp-to = {}\n",
            site.dir.join("nobody.sock").display()
        );
    std::fs::write(site.ini(), text).unwrap();
    let inst = site.start();
    let r = http_get(site.http_port, "/pid").unwrap();
    assert_eq!(r.status, 502, "{}", inst.tail());
    drop(inst);

    let site = router_site("r504", "pep3333", 1, "http-timeout = 1");
    let inst = site.start();
    let t = Instant::now();
    let r = http_get(site.http_port, "/sleep?s=4").unwrap();
    assert_eq!(r.status, 504, "{}", inst.tail());
    assert!(t.elapsed() < Duration::from_secs(4));
    // A malformed request is the client's error.
    let mut s = connect(site.http_port);
    s.write_all(b"NOT A REQUEST\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn http_to_forwards_to_the_named_socket() {
    let site = router_site("rto", "pep3333", 1, "");
    let text = std::fs::read_to_string(site.ini()).unwrap()
        + "socket = %damy.sock\nhttp-to = %damy.sock\nhttp-var = UWSGI_SCHEME=https\n";
    std::fs::write(site.ini(), text).unwrap();
    let inst = site.start();
    let env = environ(site.http_port, "/environ", "");
    assert_eq!(env["wsgi.url_scheme"], "https", "{}", inst.tail());
    assert_eq!(env["UWSGI_SCHEME"], "https");
    // Only the named socket was bound: no private one.
    assert!(!site.log_text().contains("127.0.0.1:0"));
}

#[test]
fn check_reports_router_keys_without_a_router_and_refuses_a_second_address() {
    let site = router_site("rcheck", "hello", 1, "");
    let ini = std::fs::read_to_string(site.ini()).unwrap();
    let port = free_port();
    std::fs::write(site.ini(), format!("{ini}http = 127.0.0.1:{port}\n")).unwrap();
    let out = site.cli(&["check", site.ini().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a second `http` address"));

    let no_router = ini.replace(
        &format!("http = 127.0.0.1:{}", site.http_port),
        "socket = %damy.sock",
    ) + "http-timeout = 10\n";
    std::fs::write(site.ini(), no_router).unwrap();
    let out = site.cli(&["check", site.ini().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"http-timeout\" has no effect"), "{err}");
}

#[test]
fn graceful_stop_finishes_a_request_in_flight_through_the_router() {
    let site = router_site("rstop", "pep3333", 1, "");
    let mut inst = site.start();
    let router = router_pid(inst.pid()).expect("router running");
    let port = site.http_port;
    let slow = std::thread::spawn(move || http_get(port, "/sleep?s=2"));
    wait_for(
        "the request to reach the worker",
        Duration::from_secs(10),
        || {
            let s = site.status_json();
            s["workers"]
                .as_array()?
                .iter()
                .any(|w| w["request_age_s"].is_number())
                .then_some(())
        },
    );
    inst.signal(15);
    let r = slow
        .join()
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slept");
    assert_eq!(inst.wait_exit(Duration::from_secs(30)), 0);
    assert!(!alive(router), "the router stops with the instance");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_reload_that_changes_the_router_replaces_it_and_a_new_address_is_bound() {
    let site = router_site("rchange", "hello", 1, "");
    let inst = site.start();
    let first = router_pid(inst.pid()).expect("router running");
    let ini = std::fs::read_to_string(site.ini()).unwrap();
    let new_port = free_port();
    std::fs::write(
        site.ini(),
        ini.replace(
            &format!("http = 127.0.0.1:{}", site.http_port),
            &format!("http = 127.0.0.1:{new_port}\nhttp-keepalive = 1"),
        ),
    )
    .unwrap();
    let out = site.cli(&["reload", site.ini().to_str().unwrap()]);
    assert!(out.status.success(), "{}", inst.tail());
    let second = wait_for("a new router", Duration::from_secs(20), || {
        router_pid(inst.pid()).filter(|p| *p != first)
    });
    assert!(!alive(first));
    let mut s = connect(new_port);
    for _ in 0..3 {
        write!(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s).status, 200, "{}", inst.tail());
    }
    // The old address is closed once the old generation is released.
    wait_for("the old address to close", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", site.http_port))
            .is_err()
            .then_some(())
    });
    assert_eq!(router_pid(inst.pid()), Some(second));
}
