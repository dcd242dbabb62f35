//! The stop order with `http =`: the router stops accepting first and keeps
//! forwarding what it has already accepted; the workers are told to stop only
//! once it has drained, so a request in flight through the router at stop
//! completes — one waiting for the only worker, and one whose body was still
//! arriving.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

fn router_site(name: &str) -> Site {
    let site = Site::new(name, "pep3333", 1, "");
    let text = format!(
        "[uwsgi]\nchdir = {apps}\nmodule = pep3333\nhome = {venv}\nmaster = true\nprocesses = 1\n\
         http = 127.0.0.1:{port}\npidfile = %damy.pid\nlogto = %damy.log\nworker-reload-mercy = 20\n",
        apps = repo().join("tests/apps").display(),
        venv = venv().display(),
        port = site.http_port,
    );
    std::fs::write(site.ini(), text).unwrap();
    site
}

fn busy(site: &Site) -> bool {
    site.status_json()["workers"]
        .as_array()
        .is_some_and(|ws| ws.iter().any(|w| w["request_age_s"].is_number()))
}

/// The `amy-emperor router` process of the master `inst`.
fn router_pid(inst: &Instance) -> i32 {
    wait_for("the router process", Duration::from_secs(10), || {
        child_pids(inst.pid())
            .into_iter()
            .find(|p| cmdline(*p).contains(" router"))
    })
}

fn read_all(mut s: TcpStream) -> std::io::Result<Response> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    parse_response(&out).ok_or_else(|| {
        std::io::Error::other(format!("bad response: {:?}", String::from_utf8_lossy(&out)))
    })
}

#[test]
fn requests_in_flight_through_the_router_at_stop_complete() {
    let site = router_site("rstop-order");
    let mut inst = site.start();
    let port = site.http_port;
    // A: in the only worker.
    let a = std::thread::spawn(move || http_get(port, "/sleep?s=3"));
    wait_for("A to reach the worker", Duration::from_secs(10), || {
        busy(&site).then_some(())
    });
    // B: accepted by the router, waiting for the worker behind A.
    let b = std::thread::spawn(move || http_get(port, "/sleep?s=0.1"));
    // C: a POST whose body is still arriving when the stop begins.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = b"0123456789".repeat(100);
    write!(
        c,
        "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.write_all(&body[..10]).unwrap();
    // The router has taken A, B and C out of its accept queue.
    wait_for(
        "the router to accept B and C",
        Duration::from_secs(10),
        || {
            let (established, accepted) = connections_to(port);
            (established >= 3 && accepted == established).then_some(())
        },
    );
    let router = router_pid(&inst);
    assert!(holds_listener(router, port), "{}", inst.tail());
    inst.signal(libc::SIGTERM);
    // The stop has begun: the router has closed its copy of the listener.
    wait_for(
        "the router to stop accepting",
        Duration::from_secs(10),
        || (!holds_listener(router, port)).then_some(()),
    );
    c.write_all(&body[10..]).unwrap();

    let ra = a.join().unwrap().expect("A is answered");
    assert_eq!(
        (ra.status, ra.text()),
        (200, "slept".into()),
        "{}",
        inst.tail()
    );
    let rb = b.join().unwrap().expect("B is answered");
    assert_eq!(
        (rb.status, rb.text()),
        (200, "slept".into()),
        "{}",
        inst.tail()
    );
    let rc = read_all(c).expect("C is answered");
    assert_eq!(rc.status, 200, "{}", inst.tail());
    assert_eq!(rc.body, body);
    assert_eq!(inst.wait_exit(Duration::from_secs(60)), 0);
    // Once stopping, nothing new is accepted.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}
