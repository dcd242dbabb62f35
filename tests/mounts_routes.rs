//! Mounts, manage-script-name, routes, post-buffering and add-header with the
//! real binary, real workers, nginx and real uWSGI as the oracle for mounts.
//! Issue 8 items 4 and 5.

mod common;
#[path = "common/oracle.rs"]
mod oracle;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use oracle::{raw_http, Uwsgi};

/// `KEY=value` lines of an echoenv answer.
fn vars(r: &Response) -> std::collections::BTreeMap<String, String> {
    r.text()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get(port: u16, path: &str) -> Response {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let raw = raw_http(port, req.as_bytes()).unwrap();
    parse_response(&raw)
        .unwrap_or_else(|| panic!("{path}: no response: {}", String::from_utf8_lossy(&raw)))
}

const MOUNTS: &str =
    "mount = /a=echoenv:app_a\nmount = /deep/b=echoenv:app_b\nmount = /h=hello.py\n";

#[test]
fn two_mounts_get_script_name_and_path_info_exactly_as_uwsgi_sets_them() {
    let extra = format!("{MOUNTS}manage-script-name = true\n");
    let site = Site::new("mounts", "echoenv", 1, &extra);
    let port = free_port();
    let ini = site.dir.join("uwsgi.ini");
    std::fs::write(
        &ini,
        format!(
            "[uwsgi]\nchdir = {}\nmodule = echoenv\nhttp-socket = 127.0.0.1:{port}\nmaster = true\nprocesses = 1\n{extra}",
            repo().join("tests/apps").display()
        ),
    )
    .unwrap();
    let uwsgi = Uwsgi::start(&ini, port);
    let inst = site.start();
    let mut seen = std::collections::BTreeSet::new();
    for path in [
        "/",
        "/a",
        "/a/",
        "/a/x/y?q=1",
        "/ab",
        "/ab/x",
        "/deep",
        "/deep/b",
        "/deep/b/c",
        "/deep/bc",
        "/other/a",
        "/h",
        "/h/x",
    ] {
        let theirs = get(port, path);
        let ours = get(site.http_port, path);
        assert_eq!(ours.status, theirs.status, "{path}\n{}", uwsgi.log_text());
        // uWSGI's http-socket leaves SCRIPT_NAME out when no mount matched; the
        // worker always sets it (empty), as CGI/PEP 3333 expect.
        let theirs_text = theirs
            .text()
            .replace("SCRIPT_NAME=<unset>\n", "SCRIPT_NAME=\n");
        assert_eq!(ours.text(), theirs_text, "{path}\n{}", inst.tail());
        seen.insert(
            vars(&ours)
                .get("APP")
                .cloned()
                .unwrap_or_else(|| ours.text()),
        );
    }
    assert!(
        seen.len() >= 4,
        "main, a, b and the hello file all served: {seen:?}"
    );
    let r = get(site.http_port, "/deep/b/c");
    let v = vars(&r);
    assert_eq!(v["APP"], "b");
    assert_eq!(v["SCRIPT_NAME"], "/deep/b");
    assert_eq!(v["PATH_INFO"], "/c");
}

/// A uwsgi packet with extra vars (what nginx sends with `uwsgi_param`).
fn packet_with(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut vars: Vec<(String, String)> = vec![
        ("REQUEST_METHOD".into(), "GET".into()),
        ("REQUEST_URI".into(), path.into()),
        ("PATH_INFO".into(), path.into()),
        ("QUERY_STRING".into(), String::new()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
        ("SERVER_NAME".into(), "localhost".into()),
        ("SERVER_PORT".into(), "80".into()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut block = Vec::new();
    for (k, v) in &vars {
        block.extend_from_slice(&(k.len() as u16).to_le_bytes());
        block.extend_from_slice(k.as_bytes());
        block.extend_from_slice(&(v.len() as u16).to_le_bytes());
        block.extend_from_slice(v.as_bytes());
    }
    let mut p = vec![0u8];
    p.extend_from_slice(&(block.len() as u16).to_le_bytes());
    p.push(0);
    p.extend_from_slice(&block);
    p
}

#[test]
fn without_manage_script_name_nginxs_script_name_picks_the_mount() {
    let site = Site::new("mounts-sn", "echoenv", 1, MOUNTS);
    let inst = site.start();
    let r = parse_response(
        &raw_unix(
            &site.sock(),
            &packet_with("/a/x", &[("SCRIPT_NAME", "/deep/b")]),
        )
        .unwrap(),
    )
    .unwrap();
    let v = vars(&r);
    assert_eq!(v["APP"], "b", "{}", inst.tail());
    assert_eq!(v["SCRIPT_NAME"], "/deep/b");
    assert_eq!(v["PATH_INFO"], "/a/x", "PATH_INFO is left as nginx sent it");
    // No SCRIPT_NAME and no manage-script-name: the default (first) app.
    let r = uwsgi_get(&site.sock(), "/a/x").unwrap();
    assert_eq!(vars(&r)["APP"], "main");
}

#[test]
fn basicauth_behind_nginx_401_without_credentials_200_with() {
    let site = Site::new("basicauth", "echoenv", 1, "");
    let htpasswd = site.dir.join("htpasswd");
    // {SHA} of "s3cret" (htpasswd -s)
    std::fs::write(&htpasswd, "carol:{SHA}/vNB+F2HQ559kaLUZbmHHvZrXpg=\n").unwrap();
    site.write_ini(
        "echoenv",
        1,
        &format!(
            "route = ^/private basicauth:Staff only,bob:hunter2\nroute = ^/files basicauth:Files,{}\n",
            htpasswd.display()
        ),
    );
    let inst = site.start();
    let nginx = Nginx::start(&site.sock());
    let url = |p: &str| format!("http://127.0.0.1:{}{p}", nginx.port);
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-i", "--max-time", "20"])
            .args(args)
            .output()
            .unwrap();
        parse_response(&out.stdout).expect("curl got a response")
    };
    let r = curl(&[&url("/private/x")]);
    assert_eq!(r.status, 401, "{}\n{}", nginx.error_log(), inst.tail());
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some("Basic realm=\"Staff only\"")
    );
    assert!(!r.text().contains("APP="), "the app never ran");
    let r = curl(&["-u", "bob:wrong", &url("/private/x")]);
    assert_eq!(r.status, 401);
    let r = curl(&["-u", "bob:hunter2", &url("/private/x")]);
    assert_eq!(r.status, 200);
    assert_eq!(vars(&r)["REMOTE_USER"], "bob");
    let r = curl(&[&url("/public")]);
    assert_eq!(r.status, 200, "other paths are not protected");
    let r = curl(&["-u", "carol:s3cret", &url("/files/1")]);
    assert_eq!(r.status, 200, "htpasswd {{SHA}} entry");
    assert_eq!(vars(&r)["REMOTE_USER"], "carol");
    let r = curl(&["-u", "carol:nope", &url("/files/1")]);
    assert_eq!(r.status, 401);
}

#[test]
fn redirect_rewrite_return_addheader_break_last_and_route_if() {
    let routes = "\
route = ^/old/(.*)$ redirect-permanent:/new/$1
route = ^/tmp/(.*)$ redirect:https://example.org/$1?from=${HTTP_HOST}
route = ^/gone return:410
route = ^/deny break:403 Forbidden
route = ^/drop break:
route-if = equal:${QUERY_STRING};debug=1 addheader:X-Debug: on
route = ^/stop last:
route = ^/stop return:500
route = ^/rw/(.*)$ rewrite:/inner/$1?rw=1
route-if-not = startswith:${PATH_INFO};/inner addheader:X-Outer: yes
add-header = X-Frame-Options: DENY
";
    let site = Site::new("routes", "echoenv", 1, routes);
    let inst = site.start();
    let p = site.http_port;
    let r = get(p, "/old/page");
    assert_eq!(r.status, 301, "{}", inst.tail());
    assert_eq!(r.header("Location"), Some("/new/page"));
    let r = get(p, "/tmp/x");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("Location"), Some("https://example.org/x?from=x"));
    assert_eq!(
        r.header("X-Frame-Options"),
        Some("DENY"),
        "add-header on route answers"
    );
    let r = get(p, "/gone");
    assert_eq!(r.status, 410);
    assert_eq!(r.text(), "Gone");
    let r = get(p, "/deny");
    assert_eq!(r.status, 403);
    let raw = raw_http(p, b"GET /drop HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(
        raw.is_empty(),
        "break without status sends nothing, as uWSGI"
    );
    let r = get(p, "/stop");
    assert_eq!(r.status, 200, "last: stops routing, the app answers");
    let r = get(p, "/x?debug=1");
    assert_eq!(r.header("X-Debug"), Some("on"));
    assert_eq!(r.header("X-Outer"), Some("yes"));
    assert_eq!(r.header("X-Frame-Options"), Some("DENY"));
    let r = get(p, "/rw/deep/er?a=b");
    let v = vars(&r);
    assert_eq!(v["PATH_INFO"], "/inner/deep/er");
    assert_eq!(v["QUERY_STRING"], "rw=1&a=b");
    assert_eq!(
        r.header("X-Outer"),
        None,
        "the rewritten path is seen by later rules"
    );
    // Over the uwsgi socket too (nginx's path).
    let r = uwsgi_get(&site.sock(), "/old/y").unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(r.header("Location"), Some("/new/y"));
}

#[test]
fn unsupported_route_actions_and_conditions_fail_closed() {
    for (line, needle) in [
        (
            "route = ^/x uwsgi:127.0.0.1:3031,0,0",
            "action \"uwsgi\" is not supported",
        ),
        (
            "route = ^/x cache:key=${REQUEST_URI}",
            "action \"cache\" is not supported",
        ),
        (
            "route-if = ipv4in:${REMOTE_ADDR};10.0.0.0/8 break:403",
            "condition \"ipv4in\" is not supported",
        ),
        ("route = ^/x", "invalid route syntax"),
        ("route = ^/x addheader:${cookie[a]}", "not supported"),
        ("mount = /x=module_without_callable", "module:callable"),
        ("post-buffering = lots", "not a whole number"),
        ("add-header = NoColon", "Name: value"),
    ] {
        let site = Site::new("failclosed", "hello", 1, line);
        let out = site.cli(&["check", site.ini().to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {err}");
        assert!(err.contains(needle), "{line}: {err}");
        assert!(err.contains("amy_uwsgi.ini:"), "path:line in {err}");
    }
}

/// Route regexps are compiled by the worker's Python `re` at load, so a pattern
/// PCRE takes and `re` refuses fails `check` with its line, not the workers.
#[test]
fn check_compiles_route_regexps_with_the_workers_re_and_names_the_line() {
    for (line, needle) in [
        (
            r"route = ^/a\h+b$ break:403",
            r#"route regexp "^/a\\h+b$" does not compile"#,
        ),
        (
            r"route = ^/(x$ break:403",
            "missing ), unterminated subpattern",
        ),
        (
            r"route-if = regexp:${PATH_INFO};^/[z-a]$ break:403",
            "bad character range z-a",
        ),
        (
            "mount = /m=no_such_file.py",
            "no_such_file.py: no such file",
        ),
        ("mount = /m=no_such_dir/app.wsgi", "app.wsgi: no such file"),
    ] {
        let site = Site::new("re-check", "hello", 1, line);
        let out = site.cli(&["check", site.ini().to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {err}");
        assert!(err.contains(needle), "{line}: {err}");
        let text = std::fs::read_to_string(site.ini()).unwrap();
        let n = text.lines().position(|l| l == line).unwrap() + 1;
        let at = format!("{}:{n}: ", site.ini().display());
        assert!(err.starts_with(&at), "{at} in {err}");
    }
}

/// PCRE's `(?<name>…)` is translated to `re`'s `(?P<name>…)`; `$1` still works.
#[test]
fn pcre_named_groups_in_routes_work() {
    let extra = "route = ^/(?<year>\\d{4})/old$ redirect:/new/$1\nroute-if = regexp:${PATH_INFO};^/(?'w'q)$ return:204\n";
    let site = Site::new("re-named", "hello", 1, extra);
    let out = site.cli(&["check", site.ini().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inst = site.start();
    let r = get(site.http_port, "/2024/old");
    assert_eq!(r.status, 302, "{}", inst.tail());
    assert_eq!(r.header("Location"), Some("/new/2024"));
    assert_eq!(get(site.http_port, "/q").status, 204);
    assert_eq!(get(site.http_port, "/x").status, 200);
}

/// Sends a POST over TCP in pieces with pauses; returns the response and the
/// instant the last byte was written.
fn slow_post(
    port: u16,
    path: &str,
    body: &[u8],
    pieces: usize,
    pause: Duration,
) -> (Response, SystemTime) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let step = body.len().div_ceil(pieces);
    for chunk in body.chunks(step) {
        std::thread::sleep(pause);
        s.write_all(chunk).unwrap();
    }
    let sent = SystemTime::now();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    (parse_response(&out).expect("a response"), sent)
}

#[test]
fn post_buffering_reads_a_slow_body_before_the_app_is_called() {
    let site = Site::new("postbuf", "echoenv:timed", 1, "post-buffering = 8192\n");
    let inst = site.start();
    let t0 = Instant::now();
    for (size, file) in [(4000usize, false), (200_000, true)] {
        let body = vec![b'x'; size];
        let (r, sent) = slow_post(site.http_port, "/up", &body, 4, Duration::from_millis(300));
        assert_eq!(r.status, 200, "{}", inst.tail());
        let v = vars(&r);
        assert_eq!(v["BODY_LEN"], size.to_string());
        assert_eq!(v["INPUT"], "Buffered", "{v:?}");
        assert_eq!(
            v["FILE"] == "BytesIO",
            !file,
            "memory below the limit, a file above: {v:?}"
        );
        let called: f64 = v["CALLED"].parse().unwrap();
        let sent = sent
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            called >= sent - 0.05,
            "the app ran only after the last byte ({called} < {sent})"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(30));
    // Without post-buffering the app is called at once and reads from the socket.
    let plain = Site::new("postbuf-off", "echoenv:timed", 1, "");
    let _inst = plain.start();
    let (r, sent) = slow_post(
        plain.http_port,
        "/up",
        &[b'y'; 4000],
        4,
        Duration::from_millis(300),
    );
    let v = vars(&r);
    assert_eq!(v["INPUT"], "Input");
    let called: f64 = v["CALLED"].parse().unwrap();
    let sent = sent
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        called < sent - 0.5,
        "the control case: called before the body was sent"
    );
}

#[test]
fn post_buffering_behind_nginx_and_a_client_that_stops_sending() {
    let site = Site::new(
        "postbuf-ng",
        "echoenv:timed",
        1,
        "post-buffering = 1024\nsocket-timeout = 2\n",
    );
    let inst = site.start();
    let nginx = Nginx::start(&site.sock());
    let r = http(nginx.port, "POST", "/up", &vec![b'z'; 50_000]).unwrap();
    assert_eq!(r.status, 200, "{}\n{}", nginx.error_log(), inst.tail());
    assert_eq!(vars(&r)["BODY_LEN"], "50000");
    // A client that announces more than it sends is cut after socket-timeout,
    // and the app is never called.
    let mut s = TcpStream::connect(("127.0.0.1", site.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nabc")
        .unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}\n{}", inst.tail());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "cut after ~2 s, took {:?}",
        t.elapsed()
    );
    assert!(!text.contains("CALLED="));
}

#[test]
fn a_reload_with_an_unsupported_route_action_is_rejected_and_the_old_routes_serve() {
    let site = Site::new("route-reload", "echoenv", 1, "route = ^/gone return:410\n");
    let inst = site.start();
    assert_eq!(get(site.http_port, "/gone").status, 410);
    site.write_ini(
        "echoenv",
        1,
        "route = ^/gone return:410\nroute = ^/x uwsgi:127.0.0.1:3031,0,0\n",
    );
    let out = site.cli(&["reload", site.ini().to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{said}\n{}", inst.tail());
    assert!(said.contains("action \"uwsgi\" is not supported"), "{said}");
    assert!(said.contains("amy_uwsgi.ini:"), "path:line: {said}");
    assert_eq!(
        get(site.http_port, "/gone").status,
        410,
        "old generation serves on"
    );
}

#[test]
fn static_route_action_serves_one_file() {
    let site = Site::new(
        "route-static",
        "echoenv",
        1,
        "route = ^/robots.txt static:%drobots.txt\nroute = ^/missing static:%dnope.txt\n",
    );
    std::fs::write(site.dir.join("robots.txt"), "User-agent: *\nDisallow: /\n").unwrap();
    let inst = site.start();
    let r = get(site.http_port, "/robots.txt");
    assert_eq!(r.status, 200, "{}", inst.tail());
    assert_eq!(r.text(), "User-agent: *\nDisallow: /\n");
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    let nginx = Nginx::start(&site.sock());
    assert_eq!(
        nginx.get("/robots.txt").unwrap().text(),
        "User-agent: *\nDisallow: /\n"
    );
    // As uWSGI: a static route whose file is missing answers nothing.
    let raw = raw_http(site.http_port, b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(raw.is_empty(), "{}", String::from_utf8_lossy(&raw));
}
