//! Exact header deadlines (issue item 7) through a real master: a request head
//! that trickles in or stops half-way is cut at 10 s ± 1 s from accept, on the
//! unix uwsgi socket and on the TCP http-socket alike, and the only worker is
//! back in the pool by then (the next request is served at once).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;

trait Conn: Read + Write {
    fn timeout(&self, d: Duration);
}
impl Conn for UnixStream {
    fn timeout(&self, d: Duration) {
        self.set_read_timeout(Some(d)).unwrap();
    }
}
impl Conn for TcpStream {
    fn timeout(&self, d: Duration) {
        self.set_read_timeout(Some(d)).unwrap();
    }
}

/// Sends `head` one byte every 300 ms (or only its first half, then nothing)
/// and returns (what the server answered, seconds from connect to its close).
fn slow_client(mut c: Box<dyn Conn>, head: &[u8], trickle: bool) -> (Vec<u8>, f64) {
    let t0 = Instant::now();
    let mut answer = Vec::new();
    if trickle {
        c.timeout(Duration::from_millis(300));
        for b in head {
            if c.write_all(&[*b]).is_err() {
                break;
            }
            let mut buf = [0u8; 4096];
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
            if t0.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
    } else {
        c.write_all(&head[..head.len() / 2]).unwrap();
    }
    c.timeout(Duration::from_secs(20));
    let _ = c.read_to_end(&mut answer);
    (answer, t0.elapsed().as_secs_f64())
}

fn http_head(uri: &str) -> Vec<u8> {
    format!(
        "GET {uri} HTTP/1.1\r\nHost: a\r\nUser-Agent: slow\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(200)
    )
    .into_bytes()
}

fn check(site: &Site, how: &str, over_tcp: bool, trickle: bool) {
    let conn: Box<dyn Conn> = if over_tcp {
        Box::new(TcpStream::connect(("127.0.0.1", site.http_port)).unwrap())
    } else {
        Box::new(UnixStream::connect(site.sock()).unwrap())
    };
    let head = if over_tcp {
        http_head("/pid")
    } else {
        uwsgi_packet("GET", "/pid", &[("HTTP_X_PAD", &"p".repeat(200))], b"")
    };
    let (answer, seconds) = slow_client(conn, &head, trickle);
    assert!(
        (9.0..=11.0).contains(&seconds),
        "{how}: cut after {seconds:.2}s, not 10 s ± 1 s"
    );
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408 "),
        "{how}: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(80)])
    );
    let t1 = Instant::now();
    let r = if over_tcp {
        http_get(site.http_port, "/pid").unwrap()
    } else {
        uwsgi_get(&site.sock(), "/pid").unwrap()
    };
    assert_eq!(r.status, 200, "{how}: the next request");
    assert!(
        t1.elapsed() < Duration::from_secs(1),
        "{how}: the worker was not back in the pool ({:?})",
        t1.elapsed()
    );
}

#[test]
fn trickling_head_is_cut_at_the_deadline_on_unix_and_tcp() {
    let site = Site::new("deadline-trickle", "pep3333", 1, "");
    let _inst = site.start();
    check(&site, "uwsgi over unix, trickle", false, true);
    check(&site, "http over tcp, trickle", true, true);
}

#[test]
fn half_sent_head_is_cut_at_the_deadline_on_unix_and_tcp() {
    let site = Site::new("deadline-half", "pep3333", 1, "");
    let _inst = site.start();
    check(&site, "uwsgi over unix, half", false, false);
    check(&site, "http over tcp, half", true, false);
}
