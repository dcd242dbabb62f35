//! Closed-loop load client for the benchmark (std only).
//!
//! Each of `--conns` threads sends one request, waits for the whole answer, records
//! it (start offset, latency, status, `X-Worker-Pid`) and sends the next, until
//! `--duration` is over. Modes:
//!
//! - `uwsgi`: a unix socket speaking the uwsgi protocol with the vars nginx sends
//!   (`conf/uwsgi_params`), one request per connection as nginx does.
//! - `http-unix`: HTTP/1.1 on a unix socket, one request per connection
//!   (`Connection: close`), for servers that only speak HTTP (gunicorn).
//! - `http`: HTTP/1.1 to `HOST:PORT` with keep-alive (how browsers reach nginx).
//! - `http-close`: HTTP/1.1 to `HOST:PORT`, one request per connection (nginx's
//!   `proxy_pass` without upstream keep-alive, for servers bound to TCP).
//!
//! `--trigger-at S` with `--touch FILE` or `--trigger-cmd CMD` fires a reload at
//! S seconds into the run; the summary then describes the reload window: failed
//! requests, max/p99 latency, the first answer from a worker pid never seen before
//! the trigger, the last answer from an old pid and the longest stretch without
//! any answer. `--timeline-ms MS` adds per-bucket answers, failures and max
//! latency (the reload plot). The summary is one JSON object on stdout.
//!
//! Every wait is bounded: socket timeouts per request, and the main thread stops
//! waiting for stuck threads at `duration + req-timeout + 2 s`.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Uwsgi,
    HttpUnix,
    Http,
    HttpClose,
}

struct Opts {
    mode: Mode,
    target: String,
    conns: usize,
    duration: Duration,
    path: String,
    req_timeout: Duration,
    trigger_at: Option<Duration>,
    touch: Option<String>,
    trigger_cmd: Option<String>,
    /// Bucket width of the `timeline` (0: none).
    timeline: Duration,
}

/// One finished request. `status` 0 means a socket error (connect, reset, timeout,
/// unparsable answer).
#[derive(Clone, Copy)]
struct Rec {
    start_us: u64,
    lat_us: u64,
    status: u16,
    pid: u32,
}

fn usage() -> ! {
    eprintln!(
        "usage: loadgen --mode uwsgi|http-unix|http|http-close --target PATH|HOST:PORT [--conns 32] \
         [--duration 10] [--path /] [--req-timeout 10] \
         [--trigger-at S (--touch FILE | --trigger-cmd CMD)] [--timeline-ms MS]"
    );
    std::process::exit(2)
}

fn parse_secs(s: &str) -> Duration {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Duration::from_secs_f64(v),
        _ => usage(),
    }
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        mode: Mode::Http,
        target: String::new(),
        conns: 32,
        duration: Duration::from_secs(10),
        path: "/".into(),
        req_timeout: Duration::from_secs(10),
        trigger_at: None,
        touch: None,
        trigger_cmd: None,
        timeline: Duration::ZERO,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--mode" => {
                o.mode = match val().as_str() {
                    "uwsgi" => Mode::Uwsgi,
                    "http-unix" => Mode::HttpUnix,
                    "http" => Mode::Http,
                    "http-close" => Mode::HttpClose,
                    _ => usage(),
                }
            }
            "--target" => o.target = val(),
            "--conns" => o.conns = val().parse().unwrap_or_else(|_| usage()),
            "--duration" => o.duration = parse_secs(&val()),
            "--path" => o.path = val(),
            "--req-timeout" => o.req_timeout = parse_secs(&val()),
            "--trigger-at" => o.trigger_at = Some(parse_secs(&val())),
            "--touch" => o.touch = Some(val()),
            "--trigger-cmd" => o.trigger_cmd = Some(val()),
            "--timeline-ms" => o.timeline = parse_secs(&val()) / 1000,
            _ => usage(),
        }
    }
    if o.target.is_empty() || o.conns == 0 || o.conns > 4096 {
        usage();
    }
    if o.trigger_at.is_some() && o.touch.is_none() && o.trigger_cmd.is_none() {
        usage();
    }
    o
}

/// The uwsgi packet nginx builds for `GET path` with the stock `uwsgi_params`.
fn uwsgi_packet(path: &str) -> Vec<u8> {
    let (uri_path, query) = match path.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path, ""),
    };
    let vars: [(&str, &str); 18] = [
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", "GET"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("REQUEST_URI", path),
        ("PATH_INFO", uri_path),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "51234"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "localhost"),
        ("HTTP_HOST", "localhost"),
        ("HTTP_USER_AGENT", "loadgen/0.1"),
        ("HTTP_ACCEPT", "*/*"),
        ("HTTP_ACCEPT_ENCODING", "gzip, deflate"),
        ("HTTP_CONNECTION", "close"),
    ];
    let mut body = Vec::new();
    for (k, v) in vars {
        body.extend_from_slice(&(k.len() as u16).to_le_bytes());
        body.extend_from_slice(k.as_bytes());
        body.extend_from_slice(&(v.len() as u16).to_le_bytes());
        body.extend_from_slice(v.as_bytes());
    }
    let mut pkt = vec![0u8];
    pkt.extend_from_slice(&(body.len() as u16).to_le_bytes());
    pkt.push(0);
    pkt.extend_from_slice(&body);
    pkt
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Head {
    status: u16,
    pid: u32,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
    body_start: usize,
}

/// Parses a response head (`HTTP/1.x NNN ...` or CGI-style `Status: NNN`).
fn parse_head(buf: &[u8]) -> Option<Head> {
    let end = find(buf, b"\r\n\r\n")?;
    let text = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let first = lines.next()?;
    let mut status = if first.starts_with("HTTP/") {
        first.split(' ').nth(1)?.parse().ok()?
    } else {
        0
    };
    let mut h = Head {
        status,
        pid: 0,
        content_length: None,
        chunked: false,
        close: first.starts_with("HTTP/1.0"),
        body_start: end + 4,
    };
    for line in std::iter::once(first).chain(lines) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "status" if status == 0 => {
                status = value.split(' ').next()?.parse().ok()?;
                h.status = status;
            }
            "content-length" => h.content_length = value.parse().ok(),
            "transfer-encoding" => h.chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => h.close = value.eq_ignore_ascii_case("close"),
            "x-worker-pid" => h.pid = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    if h.status == 0 {
        return None;
    }
    Some(h)
}

/// Reads until `buf` holds a complete head; returns it.
fn read_head<S: Read>(s: &mut S, buf: &mut Vec<u8>) -> std::io::Result<Head> {
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(h) = parse_head(buf) {
            return Ok(h);
        }
        if find(buf, b"\r\n\r\n").is_some() || buf.len() > 1 << 20 {
            return Err(std::io::Error::other("bad response head"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("eof before response head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn read_more<S: Read>(s: &mut S, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 16384];
    let n = s.read(&mut chunk)?;
    if n == 0 {
        return Err(std::io::Error::other("eof in body"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Consumes the body after `h` and returns the bytes of any following response.
fn read_body<S: Read>(s: &mut S, buf: &mut Vec<u8>, h: &Head) -> std::io::Result<Vec<u8>> {
    let mut pos = h.body_start;
    if let Some(len) = h.content_length {
        while buf.len() < pos + len {
            read_more(s, buf)?;
        }
        return Ok(buf[pos + len..].to_vec());
    }
    if h.chunked {
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf[pos..], b"\r\n") {
                    break pos + i;
                }
                read_more(s, buf)?;
            };
            let size_text = std::str::from_utf8(&buf[pos..line_end])
                .map_err(std::io::Error::other)?
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let size = usize::from_str_radix(&size_text, 16).map_err(std::io::Error::other)?;
            pos = line_end + 2;
            if size == 0 {
                // Trailers are not used by nginx; expect the final CRLF.
                while buf.len() < pos + 2 {
                    read_more(s, buf)?;
                }
                return Ok(buf[pos + 2..].to_vec());
            }
            while buf.len() < pos + size + 2 {
                read_more(s, buf)?;
            }
            pos += size + 2;
        }
    }
    // No framing: the body runs to EOF.
    let mut chunk = [0u8; 16384];
    while s.read(&mut chunk)? > 0 {}
    Ok(Vec::new())
}

/// One request on a fresh connection, answer read to EOF.
fn one_shot<S: Read + Write>(mut s: S, req: &[u8]) -> std::io::Result<(u16, u32)> {
    s.write_all(req)?;
    let mut buf = Vec::with_capacity(8192);
    let h = read_head(&mut s, &mut buf)?;
    let mut chunk = [0u8; 16384];
    while s.read(&mut chunk)? > 0 {}
    Ok((h.status, h.pid))
}

fn unix_conn(path: &str, timeout: Duration) -> std::io::Result<UnixStream> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

fn tcp_conn(addr: &SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn run_thread(o: Arc<Opts>, addr: Option<SocketAddr>, t0: Instant, end: Instant) -> Vec<Rec> {
    let mut recs = Vec::with_capacity(1 << 14);
    let uwsgi_req = uwsgi_packet(&o.path);
    let close_req = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        o.path
    );
    let ka_req = format!("GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n", o.path);
    let mut conn: Option<TcpStream> = None;
    let mut pending: Vec<u8> = Vec::new();
    while Instant::now() < end {
        let start = Instant::now();
        let result = match o.mode {
            Mode::Uwsgi => {
                unix_conn(&o.target, o.req_timeout).and_then(|s| one_shot(s, &uwsgi_req))
            }
            Mode::HttpUnix => {
                unix_conn(&o.target, o.req_timeout).and_then(|s| one_shot(s, close_req.as_bytes()))
            }
            Mode::HttpClose => tcp_conn(addr.as_ref().unwrap(), o.req_timeout)
                .and_then(|s| one_shot(s, close_req.as_bytes())),
            Mode::Http => (|| {
                if conn.is_none() {
                    conn = Some(tcp_conn(addr.as_ref().unwrap(), o.req_timeout)?);
                    pending.clear();
                }
                let s = conn.as_mut().unwrap();
                s.write_all(ka_req.as_bytes())?;
                let mut buf = std::mem::take(&mut pending);
                let h = read_head(s, &mut buf)?;
                pending = read_body(s, &mut buf, &h)?;
                if h.close {
                    conn = None;
                }
                Ok((h.status, h.pid))
            })(),
        };
        let lat = start.elapsed();
        let (status, pid) = match result {
            Ok(v) => v,
            Err(_) => {
                conn = None;
                (0, 0)
            }
        };
        recs.push(Rec {
            start_us: start.duration_since(t0).as_micros() as u64,
            lat_us: lat.as_micros() as u64,
            status,
            pid,
        });
        if status == 0 {
            // A refused or reset connection fails in microseconds; without a pause
            // the loop would measure how fast errors can be produced.
            thread::sleep(Duration::from_millis(1));
        }
    }
    recs
}

fn touch(path: &str) -> std::io::Result<()> {
    let f = OpenOptions::new().append(true).open(path)?;
    f.set_modified(SystemTime::now())
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(x) => format!("{x:.3}"),
        None => "null".into(),
    }
}

fn main() {
    let o = Arc::new(parse_opts());
    let addr = if o.mode == Mode::Http || o.mode == Mode::HttpClose {
        match o.target.to_socket_addrs().ok().and_then(|mut a| a.next()) {
            Some(a) => Some(a),
            None => {
                eprintln!("loadgen: cannot resolve {}", o.target);
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    let t0 = Instant::now();
    let end = t0 + o.duration;
    let (tx, rx) = mpsc::channel();
    for _ in 0..o.conns {
        let (o, tx) = (Arc::clone(&o), tx.clone());
        thread::spawn(move || {
            let _ = tx.send(run_thread(o, addr, t0, end));
        });
    }
    drop(tx);

    let (ttx, trx) = mpsc::channel();
    if let Some(at) = o.trigger_at {
        let o = Arc::clone(&o);
        thread::spawn(move || {
            thread::sleep((t0 + at).saturating_duration_since(Instant::now()));
            let fired = t0.elapsed();
            let res = if let Some(p) = &o.touch {
                touch(p).map_err(|e| e.to_string())
            } else {
                let cmd = o.trigger_cmd.as_deref().unwrap_or("true");
                match Command::new("/bin/sh").arg("-c").arg(cmd).status() {
                    Ok(st) if st.success() => Ok(()),
                    Ok(st) => Err(format!("trigger command exited {st}")),
                    Err(e) => Err(e.to_string()),
                }
            };
            let _ = ttx.send((fired, res));
        });
    }

    let hard_deadline = end + o.req_timeout + Duration::from_secs(2);
    let mut recs: Vec<Rec> = Vec::new();
    let mut finished = 0;
    while finished < o.conns {
        let left = hard_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => {
                recs.extend(v);
                finished += 1;
            }
            Err(_) => break,
        }
    }
    let stuck = o.conns - finished;
    let elapsed = t0.elapsed().min(o.duration.max(Duration::from_millis(1)));
    let trigger = if o.trigger_at.is_some() {
        trx.recv_timeout(Duration::from_secs(2)).ok()
    } else {
        None
    };

    recs.sort_by_key(|r| r.start_us + r.lat_us);
    let ok = recs.iter().filter(|r| r.status == 200).count();
    let status_errors = recs
        .iter()
        .filter(|r| r.status != 200 && r.status != 0)
        .count();
    let socket_errors = recs.iter().filter(|r| r.status == 0).count();
    let mut statuses: Vec<(u16, usize)> = Vec::new();
    for r in recs.iter().filter(|r| r.status != 200) {
        match statuses.iter_mut().find(|(s, _)| *s == r.status) {
            Some((_, n)) => *n += 1,
            None => statuses.push((r.status, 1)),
        }
    }
    statuses.sort_unstable();
    // "0" counts socket errors.
    let failed_statuses = statuses
        .iter()
        .map(|(s, n)| format!("\"{s}\":{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut lats: Vec<u64> = recs.iter().map(|r| r.lat_us).collect();
    lats.sort_unstable();
    let mut out = format!(
        "{{\"mode\":\"{}\",\"conns\":{},\"duration_s\":{:.3},\"requests\":{},\"ok\":{},\
         \"errors\":{},\"status_errors\":{},\"socket_errors\":{},\"stuck_threads\":{},\
         \"failed_statuses\":{{{}}},\"rps\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"pids\":{}",
        match o.mode {
            Mode::Uwsgi => "uwsgi",
            Mode::HttpUnix => "http-unix",
            Mode::Http => "http",
            Mode::HttpClose => "http-close",
        },
        o.conns,
        elapsed.as_secs_f64(),
        recs.len(),
        ok,
        status_errors + socket_errors,
        status_errors,
        socket_errors,
        stuck,
        failed_statuses,
        ok as f64 / elapsed.as_secs_f64(),
        pct(&lats, 0.5),
        pct(&lats, 0.99),
        pct(&lats, 1.0),
        recs.iter()
            .map(|r| r.pid)
            .filter(|p| *p != 0)
            .collect::<HashSet<_>>()
            .len(),
    );

    let trigger_us = trigger.as_ref().map_or(0, |(f, _)| f.as_micros() as u64);
    if let Some((fired, res)) = trigger {
        let tr = fired.as_micros() as u64;
        let done = |r: &Rec| r.start_us + r.lat_us;
        let old: HashSet<u32> = recs
            .iter()
            .filter(|r| done(r) <= tr && r.pid != 0)
            .map(|r| r.pid)
            .collect();
        let first_new = recs
            .iter()
            .filter(|r| r.status == 200 && r.pid != 0 && !old.contains(&r.pid) && done(r) > tr)
            .map(done)
            .min();
        let last_old = recs
            .iter()
            .filter(|r| r.status == 200 && old.contains(&r.pid) && done(r) > tr)
            .map(done)
            .max();
        let last_err = recs
            .iter()
            .filter(|r| r.status != 200 && done(r) > tr)
            .map(done)
            .max();
        let run_end = recs.iter().map(done).max().unwrap_or(tr);
        // The window closes once the new generation answers, the old one is gone and
        // errors have stopped; with no new pid at all it runs to the end.
        let wend = match first_new {
            Some(f) => f.max(last_old.unwrap_or(0)).max(last_err.unwrap_or(0)),
            None => run_end,
        };
        let in_win: Vec<&Rec> = recs
            .iter()
            .filter(|r| done(r) > tr && r.start_us < wend)
            .collect();
        let mut wl: Vec<u64> = in_win.iter().map(|r| r.lat_us).collect();
        wl.sort_unstable();
        let win_err = in_win.iter().filter(|r| r.status != 200).count();
        let err_after = recs
            .iter()
            .filter(|r| r.status != 200 && done(r) > tr)
            .count();
        // Longest stretch with no successful answer, from 1 s before the trigger on.
        let mut gap = 0u64;
        let from = tr.saturating_sub(1_000_000);
        let mut prev = from;
        // `recs` is sorted by completion time, so `prev` only grows.
        for r in recs.iter().filter(|r| r.status == 200 && done(r) > from) {
            gap = gap.max(done(r) - prev);
            prev = done(r);
        }
        gap = gap.max(run_end.saturating_sub(prev));
        let before = Duration::from_secs(3).as_micros() as u64;
        let steady = recs
            .iter()
            .filter(|r| r.status == 200 && done(r) <= tr && done(r) + before > tr)
            .count() as f64
            / (before.min(tr).max(1) as f64 / 1e6);
        let new_pids: HashSet<u32> = recs
            .iter()
            .filter(|r| r.pid != 0 && done(r) > tr && !old.contains(&r.pid))
            .map(|r| r.pid)
            .collect();
        out += &format!(
            ",\"trigger_ms\":{:.3},\"trigger_error\":{},\"old_pids\":{},\"new_pids\":{},\
             \"first_new_pid_ms\":{},\"last_old_pid_ms\":{},\"window_ms\":{:.3},\
             \"window_requests\":{},\"window_errors\":{},\"errors_after_trigger\":{},\
             \"window_p99_ms\":{:.3},\"window_max_ms\":{:.3},\"longest_gap_ms\":{:.3},\
             \"steady_rps_before\":{:.1}",
            ms(tr),
            match res {
                Ok(()) => "null".to_string(),
                Err(e) => format!("\"{}\"", e.replace(['"', '\\'], "'")),
            },
            old.len(),
            new_pids.len(),
            num(first_new.map(|f| ms(f - tr))),
            num(last_old.map(|f| ms(f - tr))),
            ms(wend.saturating_sub(tr)),
            in_win.len(),
            win_err,
            err_after,
            pct(&wl, 0.99),
            pct(&wl, 1.0),
            ms(gap),
            steady,
        );
    }
    if !o.timeline.is_zero() {
        // Buckets by completion time, relative to the trigger (or the start):
        // [t_ms, answers, failed, max latency ms]. A stall shows as one late
        // bucket whose max latency is the length of the stall.
        let zero = trigger_us;
        let w = o.timeline.as_micros().max(1) as u64;
        let mut buckets: Vec<(u64, u64, u64)> = Vec::new();
        for r in &recs {
            let i = ((r.start_us + r.lat_us) / w) as usize;
            if buckets.len() <= i {
                buckets.resize(i + 1, (0, 0, 0));
            }
            let b = &mut buckets[i];
            if r.status == 200 {
                b.0 += 1;
            } else {
                b.1 += 1;
            }
            b.2 = b.2.max(r.lat_us);
        }
        let cells: Vec<String> = buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let t = (i as u64 * w) as f64 - zero as f64;
                format!("[{:.0},{},{},{:.3}]", t / 1e3, b.0, b.1, ms(b.2))
            })
            .collect();
        out += &format!(
            ",\"timeline_ms\":{},\"timeline\":[{}]",
            ms(w),
            cells.join(",")
        );
    }
    out.push('}');
    println!("{out}");
    // Threads stuck past their socket timeout must not hold the process open.
    std::process::exit(0);
}
