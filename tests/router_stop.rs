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
    // Let the router take B and C (its accept loop is quick; no readiness to poll).
    std::thread::sleep(Duration::from_millis(300));
    inst.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
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
