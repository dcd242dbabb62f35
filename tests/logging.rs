//! Logging as uWSGI does it: `logger` destinations, `req-logger`, `log-format`
//! with uWSGI's variables (checked against the real uWSGI 2.0.31 serving the
//! same format), conditional lines with `disable-logging`, `log-date`,
//! `log-x-forwarded-for`, syslog, and SIGUSR2 reopening every file.

mod common;
#[path = "common/oracle.rs"]
mod oracle;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use common::*;

/// Every variable of uWSGI's log-format, JSON-shaped (no value the test sends
/// holds a quote: uWSGI would not escape it).
const ALL_VARS: &str = r#"{"method":"%(method)","uri":"%(uri)","proto":"%(proto)","status":%(status),"msecs":%(msecs),"micros":%(micros),"size":%(size),"rsize":%(rsize),"hsize":%(hsize),"cl":%(cl),"addr":"%(addr)","user":"%(user)","host":"%(host)","referer":"%(referer)","uagent":"%(uagent)","ltime":"%(ltime)","ftime":"%(ftime)","tmsecs":%(tmsecs),"tmicros":%(tmicros),"epoch":%(epoch),"ctime":"%(ctime)","time":%(time),"pid":%(pid),"wid":%(wid),"core":%(core),"vars":%(vars),"headers":%(headers),"xvar":"%(var.HTTP_X_Y)","foo":"%(foo)","unk":"%(nonexistent)","secs":%(secs),"pktsize":%(pktsize)}"#;

/// A request over raw HTTP with the headers the format reads.
fn request(port: u16, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {uri} HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    lines_of(path)
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn wait_lines(what: &str, path: &Path, n: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
    wait_for(what, Duration::from_secs(30), || {
        let l: Vec<String> = lines_of(path).into_iter().filter(|l| pred(l)).collect();
        (l.len() >= n).then_some(l)
    })
}

/// The first `n` request lines of the site's log, and the URI each names.
fn logged_uris(site: &Site, n: usize) -> (Vec<String>, Vec<String>) {
    let lines = wait_lines("the request lines", &site.log(), n, |l| {
        l.starts_with("[pid: ")
    });
    let uris = lines
        .iter()
        .map(|l| {
            l.split(" => ")
                .next()
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    (lines, uris)
}

fn send_both_requests(port: u16) {
    let h = [
        ("X-Y", "yy"),
        ("Referer", "http://r.test/"),
        ("User-Agent", "ua-test/1"),
    ];
    assert_eq!(request(port, "GET", "/p?q=1&lv=bar", &h, b""), 200);
    assert_eq!(request(port, "POST", "/nf", &[], b"abc"), 404);
}

#[test]
fn log_format_variables_match_real_uwsgi() {
    let extra = format!(
        "log-format = {ALL_VARS}\nlog-date = %%Y-%%m-%%d %%H:%%M:%%S\nlogformat-strftime = true\nreq-logger = file:%dreq.log\n"
    );
    let site = Site::new("lf-vars", "logapp", 1, &extra);
    let inst = site.start();
    send_both_requests(site.http_port);
    let req_log = site.dir.join("req.log");
    wait_lines("two request lines", &req_log, 2, |l| l.starts_with('{'));
    let ours = json_lines(&req_log);
    let master = inst.pid();

    // The same format under uWSGI.
    let port = free_port();
    let uini = site.dir.join("oracle.ini");
    std::fs::write(
        &uini,
        format!(
            "[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {apps}\nwsgi-file = logapp.py\nmaster = true\nprocesses = 1\n\
             log-format = {ALL_VARS}\nlog-date = %%Y-%%m-%%d %%H:%%M:%%S\nlogformat-strftime = true\nreq-logger = file:{dir}/oracle-req.log\n",
            apps = repo().join("tests/apps").display(),
            dir = site.dir.display()
        ),
    )
    .unwrap();
    let u = oracle::Uwsgi::start(&uini, port);
    send_both_requests(port);
    let oracle_log = site.dir.join("oracle-req.log");
    wait_for("uWSGI's two lines", Duration::from_secs(30), || {
        (json_lines(&oracle_log).len() >= 2).then_some(())
    });
    let theirs = json_lines(&oracle_log);
    drop(u);

    for (o, t) in ours.iter().zip(&theirs) {
        // Same value for what does not depend on the server.
        for key in [
            "method", "uri", "proto", "status", "rsize", "cl", "addr", "user", "referer", "uagent",
            "wid", "xvar", "foo", "unk",
        ] {
            assert_eq!(o[key], t[key], "{key}: ours {o}\n theirs {t}");
        }
        // Same type and shape for the rest (`core` counts our serving threads
        // over all sockets: the http-socket's is 1 here).
        for (key, value) in t.as_object().unwrap() {
            let mine = &o[key];
            assert_eq!(
                std::mem::discriminant(mine),
                std::mem::discriminant(value),
                "{key}: ours {mine} theirs {value}"
            );
        }
        let shape = |s: &str| {
            s.chars()
                .map(|c| if c.is_ascii_digit() { '9' } else { c })
                .collect::<String>()
        };
        for key in ["ltime", "ftime"] {
            assert_eq!(
                shape(o[key].as_str().unwrap()).len(),
                shape(t[key].as_str().unwrap()).len(),
                "{key}: {o} {t}"
            );
        }
        assert_eq!(o["ctime"].as_str().unwrap().len(), 24);
        assert_eq!(o["host"], "example.test");
        let pid = o["pid"].as_i64().unwrap() as i32;
        assert!(pid != master && alive(pid), "pid is the worker's: {o}");
        let t0 = o["time"].as_i64().unwrap();
        assert_eq!(o["tmsecs"].as_i64().unwrap() / 1000, t0);
        assert_eq!(o["tmicros"].as_i64().unwrap() / 1_000_000, t0);
        assert!((o["epoch"].as_i64().unwrap() - t0).abs() <= 2);
        assert_eq!(
            o["size"].as_i64().unwrap(),
            o["rsize"].as_i64().unwrap() + o["hsize"].as_i64().unwrap()
        );
        assert!(o["headers"].as_i64().unwrap() >= 2 && o["vars"].as_i64().unwrap() > 10);
        assert!(o["micros"].as_i64().unwrap() / 1000 == o["msecs"].as_i64().unwrap());
        assert!(o["pktsize"].as_i64().unwrap() > 0);
    }
    assert_eq!(ours[0]["foo"], "bar");
    assert_eq!(ours[1]["cl"], 3);
    assert_eq!(ours[1]["xvar"], "-");
}

#[test]
fn json_format_values_are_escaped_and_lines_never_split() {
    let extra = "log-format = {\"uri\":\"%(uri)\",\"ua\":\"%(uagent)\",\"foo\":\"%(foo)\",\"status\":%(status)}\n";
    let site = Site::new("lf-json", "logapp", 1, extra);
    let _inst = site.start();
    // A quote and a backslash in the URI, a quote in the agent, a newline
    // and a quote in a log variable.
    assert_eq!(
        request(
            site.http_port,
            "GET",
            "/q?a=%22&b=\\&lv=x%22y%0Az",
            &[("User-Agent", "say \"hi\"")],
            b""
        ),
        200
    );
    // A value longer than one atomic write.
    let long = "a".repeat(6000);
    assert_eq!(
        request(site.http_port, "GET", &format!("/long?lv={long}"), &[], b""),
        200
    );
    let lines = wait_lines("two request lines", &site.log(), 2, |l| {
        l.starts_with("{\"uri\"")
    });
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["uri"], "/q?a=%22&b=\\&lv=x%22y%0Az");
    assert_eq!(v["ua"], "say \"hi\"");
    assert_eq!(v["foo"], "x\"y\nz");
    assert_eq!(v["status"], 200);
    assert!(lines[1].len() <= 4096, "one atomic write");
    let v: serde_json::Value = serde_json::from_str(&lines[1]).expect("a cut line stays JSON");
    assert!(v["foo"].as_str().unwrap().ends_with("..."));
}

#[test]
fn disable_logging_still_logs_4xx_5xx_and_big_responses() {
    let extra =
        "disable-logging = true\nlog-4xx = true\nlog-5xx = true\nlog-big = 4000\nlog-zero = true\n";
    let site = Site::new("lf-cond", "logapp", 1, extra);
    let _inst = site.start();
    for (uri, code) in [
        ("/ok", 200),
        ("/nf", 404),
        ("/err", 500),
        ("/big", 200),
        ("/empty", 204),
        ("/ok2", 200),
    ] {
        assert_eq!(request(site.http_port, "GET", uri, &[], b""), code, "{uri}");
    }
    // One worker writes its lines in order: once the last 404 is logged, a
    // wrongly logged /ok2 would be there too.
    assert_eq!(request(site.http_port, "GET", "/nf-last", &[], b""), 404);
    let lines = wait_lines("five request lines", &site.log(), 5, |l| {
        l.starts_with("[pid: ")
    });
    let uris: Vec<&str> = lines
        .iter()
        .map(|l| l.split(" => ").next().unwrap().rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        uris,
        ["/nf", "/err", "/big", "/empty", "/nf-last"],
        "{lines:#?}"
    );
}

#[test]
fn route_donotlog_drops_the_line_whatever_the_conditions_say() {
    // uWSGI's `donotlog` (core/routing.c do_not_log) wins over log-4xx too.
    let extra = "log-4xx = true\nroute = ^/(health|nf-quiet) donotlog:\n";
    let site = Site::new("lf-donotlog", "logapp", 1, extra);
    let _inst = site.start();
    for (uri, code) in [
        ("/health", 200),
        ("/nf-quiet", 404),
        ("/ok", 200),
        ("/nf", 404),
    ] {
        assert_eq!(request(site.http_port, "GET", uri, &[], b""), code, "{uri}");
    }
    // One worker writes its lines in order: once /nf is there, a /health line would be too.
    let lines = wait_lines("the /nf line", &site.log(), 2, |l| l.starts_with("[pid: "));
    let uris: Vec<&str> = lines
        .iter()
        .map(|l| l.split(" => ").next().unwrap().rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(uris, ["/ok", "/nf"], "{lines:#?}");
}

#[test]
fn log_sendfile_logs_file_responses_with_logging_disabled() {
    let extra = "disable-logging = true\nlog-sendfile = true\nlog-4xx = true\n";
    let site = Site::new("lf-sendfile", "pep3333", 1, extra);
    let _inst = site.start();
    // /raw/ skips wsgiref.validate, whose wrapper would hide the file wrapper.
    for (uri, code) in [("/raw/file", 200), ("/pid", 200), ("/nope", 404)] {
        assert_eq!(uwsgi_get(&site.sock(), uri).unwrap().status, code, "{uri}");
    }
    let (lines, uris) = logged_uris(&site, 2);
    assert_eq!(uris, ["/raw/file", "/nope"], "{lines:#?}");
}

#[test]
fn req_logger_takes_request_lines_off_the_main_log() {
    let extra = "logger = file:%dmain.log\nreq-logger = file:%dreq.log\n";
    let site = Site::new("lf-req", "logapp", 2, extra);
    let _inst = site.start();
    for _ in 0..20 {
        assert_eq!(request(site.http_port, "GET", "/print", &[], b""), 200);
    }
    let req = wait_lines("20 request lines", &site.dir.join("req.log"), 20, |l| {
        l.starts_with("[pid: ")
    });
    assert!(
        req.iter()
            .all(|l| l.starts_with("[pid: ") && l.contains("GET /print")),
        "{req:#?}"
    );
    let main = wait_lines("the app's output", &site.dir.join("main.log"), 20, |l| {
        l == "app says hello"
    });
    assert_eq!(main.len(), 20);
    let main_text = std::fs::read_to_string(site.dir.join("main.log")).unwrap();
    assert!(
        main_text.contains("worker ready"),
        "master lines in the main log:\n{main_text}"
    );
    assert!(
        !main_text.contains("[pid: "),
        "no request line in the main log:\n{main_text}"
    );
    // The unnamed logger replaces logto, as in uWSGI.
    let logto = site.log_text();
    assert!(
        !logto.contains("[pid: ") && !logto.contains("worker ready"),
        "{logto}"
    );
    // `req: a/b` still counts the instance's requests.
    assert!(
        req.last().unwrap().contains("/20]"),
        "{}",
        req.last().unwrap()
    );
}

#[test]
fn several_loggers_each_get_every_line_and_syslog_is_tagged() {
    let dir = temp_dir("lf-syslog-sock");
    let sock = dir.join("log.sock");
    let server = UnixDatagram::bind(&sock).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Only this test's instance has a syslog logger.
    std::env::set_var("AMY_EMPEROR_SYSLOG_SOCKET", &sock);
    let extra =
        "logger = file:%done.log\nlogger = file:%dtwo.log\nlogger = syslog:amytest,local0\n";
    let site = Site::new("lf-syslog", "logapp", 1, extra);
    let _inst = site.start();
    assert_eq!(request(site.http_port, "GET", "/tagged", &[], b""), 200);
    let one = wait_lines("the request line", &site.dir.join("one.log"), 1, |l| {
        l.contains("GET /tagged")
    });
    let two = wait_lines("the request line", &site.dir.join("two.log"), 1, |l| {
        l.contains("GET /tagged")
    });
    assert_eq!(one, two);
    let mut buf = vec![0u8; 65536];
    let mut seen = Vec::new();
    let got = loop {
        let n = server.recv(&mut buf).expect("a syslog datagram");
        let d = String::from_utf8_lossy(&buf[..n]).into_owned();
        if d.contains("GET /tagged") {
            break d;
        }
        seen.push(d);
    };
    // local0 (16) * 8 + info (6).
    assert!(got.starts_with("<134>"), "{got}");
    assert!(got.contains(" amytest: [pid: "), "{got}");
    assert!(!got.ends_with('\n'));
    assert!(
        seen.iter().any(|d| d.contains("amytest: ")),
        "master lines too: {seen:?}"
    );
}

#[test]
fn sigusr2_reopens_every_file_target() {
    let extra = "logger = file:%dmain.log\nlogger = stdio\nreq-logger = file:%dreq.log\n";
    let site = Site::new("lf-reopen", "logapp", 1, extra);
    let inst = site.start();
    assert_eq!(request(site.http_port, "GET", "/before", &[], b""), 200);
    let req = site.dir.join("req.log");
    wait_lines("the first line", &req, 1, |l| l.contains("GET /before"));
    for name in ["main.log", "req.log", "amy.log"] {
        std::fs::rename(site.dir.join(name), site.dir.join(format!("{name}.1"))).unwrap();
    }
    inst.signal(12);
    wait_lines("the reopen notice", &site.dir.join("main.log"), 1, |l| {
        l.contains("log reopened")
    });
    wait_lines("the reopen notice in logto", &site.log(), 1, |l| {
        l.contains("log reopened")
    });
    assert_eq!(request(site.http_port, "GET", "/after", &[], b""), 200);
    wait_lines("the line after", &req, 1, |l| l.contains("GET /after"));
    let old = std::fs::read_to_string(site.dir.join("req.log.1")).unwrap();
    assert!(
        old.contains("GET /before") && !old.contains("GET /after"),
        "{old}"
    );
}

#[test]
fn log_date_prefixes_our_lines_not_request_lines_or_app_output() {
    let extra = "log-date = [%%Y-%%m-%%d]\n";
    let site = Site::new("lf-date", "logapp", 1, extra);
    let _inst = site.start();
    assert_eq!(request(site.http_port, "GET", "/print", &[], b""), 200);
    wait_lines("the request line", &site.log(), 1, |l| {
        l.starts_with("[pid: ")
    });
    let text = site.log_text();
    let ready = text.lines().find(|l| l.contains("worker ready")).unwrap();
    assert!(
        ready.starts_with("[20") && ready.find("] - ") == Some(11),
        "uWSGI's strftime prefix and ' - ': {ready}"
    );
    let request = text.lines().find(|l| l.contains("GET /print")).unwrap();
    assert!(request.starts_with("[pid: "), "{request}");
    assert!(text.lines().any(|l| l == "app says hello"), "{text}");
}

#[test]
fn log_x_forwarded_for_and_log_micros_in_the_default_line() {
    let extra = "log-x-forwarded-for = true\nlog-micros = true\n";
    let site = Site::new("lf-xff", "logapp", 1, extra);
    let _inst = site.start();
    let xff = [("X-Forwarded-For", "203.0.113.7, 10.0.0.1")];
    assert_eq!(request(site.http_port, "GET", "/x", &xff, b""), 200);
    assert_eq!(request(site.http_port, "GET", "/y", &[], b""), 200);
    let lines = wait_lines("two request lines", &site.log(), 2, |l| {
        l.starts_with("[pid: ")
    });
    assert!(
        lines[0].contains("] 203.0.113.7, 10.0.0.1 () {"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("] 127.0.0.1 () {"), "{}", lines[1]);
    assert!(lines[0].contains(" micros "), "{}", lines[0]);
}

#[test]
fn unsupported_logging_keys_fail_closed_with_the_line() {
    for (key, value) in [
        ("logger", "redislog:127.0.0.1:6379"),
        ("log-route", "errs ERROR"),
        ("log-encoder", "gzip"),
        ("log-format", "%(metric.worker.0.requests)"),
    ] {
        let site = Site::new("lf-bad", "logapp", 1, &format!("{key} = {value}\n"));
        let out = site.cli(&["check", site.ini().to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(err.contains("amy_uwsgi.ini:"), "{key}: path:line in {err}");
    }
}

#[test]
fn log_maxsize_rotates_logto_into_log_backupname() {
    let site = Site::new(
        "lf-backup",
        "logapp",
        1,
        "log-maxsize = 4000\nlog-backupname = %damy.log.old\n",
    );
    let _inst = site.start();
    let backup = site.dir.join("amy.log.old");
    for _ in 0..60 {
        assert_eq!(request(site.http_port, "GET", "/ok", &[], b""), 200);
    }
    let old = wait_lines("request lines in the backup", &backup, 1, |l| {
        l.starts_with("[pid: ")
    });
    assert!(old.iter().all(|l| l.contains("GET /ok")), "{old:#?}");
    // The backup name is fixed: no timestamped file besides it.
    let names: Vec<String> = std::fs::read_dir(&site.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("amy.log"))
        .collect();
    assert!(
        names.iter().all(|n| n == "amy.log" || n == "amy.log.old"),
        "{names:?}"
    );
}

#[test]
fn log_truncate_empties_logto_at_start_and_not_at_reload() {
    let site = Site::new("lf-truncate", "pep3333", 1, "log-truncate = true\n");
    std::fs::write(site.log(), "a line from the last run\n").unwrap();
    let inst = site.start();
    assert_eq!(uwsgi_get(&site.sock(), "/pid").unwrap().status, 200);
    wait_lines("the request line", &site.log(), 1, |l| {
        l.contains("GET /pid")
    });
    assert!(!site.log_text().contains("from the last run"));
    inst.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(30), || {
        (site.status_json()["generation"] == 2).then_some(())
    });
    assert!(site.log_text().contains("GET /pid"), "{}", site.log_text());
}

/// An app that marks `<uri>.reading` in its folder when it runs, then for
/// `/both` reads the body (the client resets inside it: a read error) and for
/// `/wonly` waits for `wonly.gone` (the client has reset) without reading;
/// then either answers a body the worker cannot send (a write error).
const IOERR_APP: &str = r#"
import os, time
HERE = os.path.dirname(os.path.abspath(__file__))

def application(env, start_response):
    name = env["PATH_INFO"].strip("/")
    open(os.path.join(HERE, name + ".reading"), "w").close()
    if name == "both":
        try:
            env["wsgi.input"].read()
        except OSError:
            pass
    elif name == "wonly":
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(HERE, "wonly.gone")) and time.monotonic() < deadline:
            time.sleep(0.01)
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"nf"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"x" * 65536]
"#;

/// Sends a request head (and `body_part` of a longer body), waits until the
/// app runs, then resets the connection (SO_LINGER 0: an RST, not a FIN).
fn reset_inside(site: &Site, uri: &str, content_length: usize, body_part: &[u8]) {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", site.http_port)).unwrap();
    let mut head = format!("POST {uri} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    if content_length > 0 {
        head.push_str(&format!("Content-Length: {content_length}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body_part).unwrap();
    let marker = site.dir.join(format!("{}.reading", uri.trim_matches('/')));
    wait_for("the app to run", Duration::from_secs(30), || {
        marker.exists().then_some(())
    });
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid fd and a linger struct of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(s);
}

/// A one-worker site running IOERR_APP (written into its directory) with `extra`.
fn ioerr_site(name: &str, extra: &str) -> Site {
    let site = Site::new(name, "ioerrapp", 1, extra);
    std::fs::write(site.dir.join("ioerrapp.py"), IOERR_APP).unwrap();
    let ini = std::fs::read_to_string(site.ini()).unwrap();
    std::fs::write(
        site.ini(),
        format!("{ini}pythonpath = {}\n", site.dir.display()),
    )
    .unwrap();
    site
}

#[test]
fn log_ioerror_logs_requests_with_read_and_write_errors_under_disable_logging() {
    let site = ioerr_site(
        "lf-ioerror",
        "disable-logging = true\nlog-ioerror = true\nlog-4xx = true\n",
    );
    let _inst = site.start();
    // Only a write error (the whole request was read): uWSGI logs neither
    // kind alone, so no line.
    reset_inside(&site, "/wonly", 0, b"");
    std::fs::write(site.dir.join("wonly.gone"), "").unwrap();
    wait_lines("the write error of /wonly", &site.log(), 1, |l| {
        l.contains("client gone while sending POST /wonly")
    });
    // A body cut by the reset, then a response that cannot be sent.
    reset_inside(&site, "/both", 100_000, b"abc");
    wait_lines("the write error of /both", &site.log(), 1, |l| {
        l.contains("client gone while sending POST /both")
    });
    // One worker writes its lines in order: once /nf-last is there, a
    // wrongly logged /wonly would be too.
    assert_eq!(request(site.http_port, "GET", "/nf-last", &[], b""), 404);
    let (lines, uris) = logged_uris(&site, 2);
    assert_eq!(uris, ["/both", "/nf-last"], "{lines:#?}");
}

#[test]
fn log_format_rerr_werr_ioerr_count_the_requests_io_errors() {
    // uWSGI's %(rerr), %(werr) and %(ioerr) (their sum), per request.
    let site = ioerr_site(
        "lf-ioerr-vars",
        "log-format = IO %(uri) rerr=%(rerr) werr=%(werr) ioerr=%(ioerr)\n",
    );
    let _inst = site.start();
    reset_inside(&site, "/both", 100_000, b"abc");
    assert_eq!(request(site.http_port, "GET", "/nf-last", &[], b""), 404);
    let lines = wait_lines("two IO lines", &site.log(), 2, |l| l.starts_with("IO "));
    let counts = |line: &str| -> (u64, u64, u64) {
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(2)
            .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
            .collect();
        (v[0], v[1], v[2])
    };
    let (r, w, io) = counts(&lines[0]);
    assert!(lines[0].starts_with("IO /both "), "{lines:#?}");
    assert!(r >= 1 && w >= 1 && io == r + w, "{lines:#?}");
    assert_eq!(counts(&lines[1]), (0, 0, 0), "{lines:#?}");
}

/// `logto2` (core/uwsgi.c: logto() again after setuid): the file is created
/// by the user dropped to and takes every line from then on; `logto` keeps
/// only what came before the drop.
#[test]
fn logto2_is_opened_after_the_privilege_drop_as_the_target_user() {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(root, "this test needs root (CI runs as root)");
    let site = Site::new("lf-logto2", "logapp", 1, "");
    // nobody creates logto2 here; its sockets and pidfile are made as root.
    std::os::unix::fs::chown(&site.dir, Some(65534), Some(65534)).unwrap();
    // The test venv lives under /root, which nobody cannot enter: a venv
    // nobody can read, as a deployment has.
    let venv = site.dir.join("venv");
    let made = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success(), "this test needs Debian's python3");
    let ini = site.ini_text(
        "logapp",
        1,
        "uid = nobody\ngid = nogroup\nlogto2 = %damy2.log\n",
    );
    std::fs::write(
        site.ini(),
        ini.replace(
            &format!("home = {}", common::venv().display()),
            &format!("home = {}", venv.display()),
        ),
    )
    .unwrap();
    let _inst = site.start();
    assert_eq!(request(site.http_port, "GET", "/ok", &[], b""), 200);
    let log2 = site.dir.join("amy2.log");
    wait_lines("the request line in logto2", &log2, 1, |l| {
        l.contains("GET /ok")
    });
    let meta = std::fs::metadata(&log2).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    let first = site.log_text();
    assert!(!first.contains("GET /ok"), "{first}");
    assert!(
        first.contains("socket bound"),
        "lines before the drop: {first}"
    );
}

#[test]
fn log_encoders_turn_every_line_into_json_and_req_encoders_mark_request_lines() {
    // uWSGI's documented pair: a json template without the newline, then nl.
    let site = Site::new(
        "lf-encoders",
        "pep3333",
        1,
        "log-encoder = json {\"at\":${unix},\"msg\":\"${msg}\"}\nlog-encoder = nl\n",
    );
    let _inst = site.start();
    assert_eq!(request(site.http_port, "GET", "/quote\"d", &[], b""), 404);
    let lines = wait_lines("the request line, encoded", &site.log(), 1, |l| {
        l.contains("/quote")
    });
    let every: Vec<String> = lines_of(&site.log());
    // Every line of the log, the master's own included, is one JSON object.
    for l in &every {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{every:#?}"));
        assert!(v["at"].as_u64().unwrap() > 1_700_000_000, "{l}");
    }
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("[pid: ") && msg.contains("GET /quote\"d =>"),
        "{msg}"
    );
    assert!(every.iter().any(|l| l.contains("serving")), "{every:#?}");

    // log-req-encoder applies to the lines a req-logger takes, not to the main log.
    let site = Site::new(
        "lf-req-encoders",
        "pep3333",
        1,
        // (The ini trims a value's trailing space, in uWSGI too.)
        "req-logger = file:%dreq.log\nlog-req-encoder = prefix REQ:\nlog-encoder = prefix MAIN:\n",
    );
    let _inst = site.start();
    assert_eq!(request(site.http_port, "GET", "/r", &[], b""), 404);
    let req = wait_lines("the request line", &site.dir.join("req.log"), 1, |l| {
        l.contains("GET /r =>")
    });
    assert!(req[0].starts_with("REQ:[pid: "), "{req:?}");
    let main = lines_of(&site.log());
    assert!(
        !main.is_empty() && main.iter().all(|l| l.starts_with("MAIN:")),
        "{main:#?}"
    );
    assert!(main.iter().all(|l| !l.contains("GET /r =>")), "{main:#?}");
}
