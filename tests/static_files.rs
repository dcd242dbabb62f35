//! Static files (`static-map` and friends): real binary, real workers, real
//! nginx, curl, and real uWSGI side by side as the oracle. Issue 8 item 3.

mod common;
#[path = "common/oracle.rs"]
mod oracle;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;
use oracle::{raw_http, Uwsgi};

const SECRET: &str = "TOP-SECRET-c0ffee";

/// `dir/static` with files, an index, a .gz twin, symlinks in and out; a secret
/// beside it (outside the map) that must never be served.
fn make_tree(dir: &Path) {
    let st = dir.join("static");
    std::fs::create_dir_all(st.join("sub")).unwrap();
    std::fs::write(st.join("a.css"), "body { color: red }\n").unwrap();
    std::fs::write(st.join("sub/index.html"), "<h1>index</h1>\n").unwrap();
    let nums: String = (0..2000).map(|i| format!("{i}\n")).collect();
    std::fs::write(st.join("nums.txt"), &nums).unwrap();
    let gz = Command::new("gzip")
        .arg("-k")
        .arg(st.join("nums.txt"))
        .status()
        .unwrap();
    assert!(gz.success());
    std::fs::write(st.join("skip.py"), "print('source')\n").unwrap();
    std::fs::create_dir_all(dir.join("outside")).unwrap();
    std::fs::write(dir.join("outside/secret.txt"), SECRET).unwrap();
    std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
    std::os::unix::fs::symlink(dir.join("outside/secret.txt"), st.join("link-out")).unwrap();
    std::os::unix::fs::symlink(dir.join("outside"), st.join("dir-out")).unwrap();
    std::os::unix::fs::symlink(st.join("a.css"), st.join("link-in.css")).unwrap();
}

fn static_site(name: &str, extra: &str) -> Site {
    let site = Site::new(name, "echoenv", 1, "");
    make_tree(&site.dir);
    let st = site.dir.join("static");
    site.write_ini(
        "echoenv",
        1,
        &format!(
            "static-map = /static={}\nstatic-index = index.html\nstatic-skip-ext = .py\n{extra}",
            st.display()
        ),
    );
    site
}

fn curl(args: &[&str]) -> Response {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl");
    parse_response(&out.stdout).unwrap_or_else(|| {
        panic!(
            "curl {args:?}: no response: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn http_date(t: SystemTime) -> String {
    // RFC 1123 from the seconds since the epoch (what Last-Modified carries).
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    // civil-from-days (Howard Hinnant)
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let mn = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{wd}, {d:02} {mn} {y} {h:02}:{m:02}:{s:02} GMT")
}

#[test]
fn static_map_serves_type_length_and_last_modified_on_every_listener() {
    let site = static_site("st-listeners", "add-header = X-Served-By: amy\n");
    let inst = site.start();
    let nginx = Nginx::start(&site.sock());
    let file = site.dir.join("static/a.css");
    let body = std::fs::read(&file).unwrap();
    let modified = http_date(std::fs::metadata(&file).unwrap().modified().unwrap());
    let answers = [
        (
            "uwsgi socket",
            uwsgi_get(&site.sock(), "/static/a.css").unwrap(),
        ),
        (
            "http-socket",
            http_get(site.http_port, "/static/a.css").unwrap(),
        ),
        ("nginx uwsgi_pass", nginx.get("/static/a.css").unwrap()),
    ];
    for (via, r) in answers {
        assert_eq!(r.status, 200, "{via}: {r:?}\n{}", inst.tail());
        assert_eq!(r.body, body, "{via}");
        assert_eq!(r.header("Content-Type"), Some("text/css"), "{via}");
        assert_eq!(r.header("Content-Length"), Some("20"), "{via}");
        assert_eq!(r.header("Last-Modified"), Some(modified.as_str()), "{via}");
        assert_eq!(r.header("X-Served-By"), Some("amy"), "{via}: add-header");
    }
    // Served by sendfile, never through the app (the log line says so).
    wait_for("the sendfile log line", Duration::from_secs(10), || {
        site.log_text()
            .contains("GET /static/a.css => generated 20 bytes in")
            .then_some(())
    });
    assert!(
        site.log_text().contains("via sendfile()"),
        "{}",
        inst.tail()
    );
    // A symlink that stays inside the folder is fine; the index of a directory too.
    let r = http_get(site.http_port, "/static/link-in.css").unwrap();
    assert_eq!(r.body, body);
    let r = nginx.get("/static/sub/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<h1>index</h1>\n");
    assert_eq!(r.header("Content-Type"), Some("text/html"));
}

#[test]
fn curl_gets_304_head_206_and_416() {
    let site = static_site("st-curl", "");
    let inst = site.start();
    let nginx = Nginx::start(&site.sock());
    for base in [
        format!("http://127.0.0.1:{}", site.http_port),
        format!("http://127.0.0.1:{}", nginx.port),
    ] {
        let url = format!("{base}/static/nums.txt");
        let full = curl(&[&url]);
        assert_eq!(full.status, 200, "{}", inst.tail());
        let size = full.body.len();
        let lm = full.header("Last-Modified").unwrap().to_string();
        let r = curl(&["-H", &format!("If-Modified-Since: {lm}"), &url]);
        assert_eq!(r.status, 304, "{url}");
        assert!(r.body.is_empty());
        let r = curl(&[
            "-H",
            "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT",
            &url,
        ]);
        assert_eq!(r.status, 200, "an older date gets the file");
        let r = curl(&["-I", &url]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Length"), Some(size.to_string().as_str()));
        assert!(r.body.is_empty(), "HEAD has no body");
        let r = curl(&["-r", "10-19", &url]);
        assert_eq!(r.status, 206, "{url}");
        assert_eq!(r.body, &full.body[10..20]);
        assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes 10-19/{size}").as_str())
        );
        let r = curl(&["-r", "-5", &url]);
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &full.body[size - 5..]);
        let r = curl(&["-r", &format!("{}-", size + 10), &url]);
        assert_eq!(r.status, 416, "{url}");
        assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes */{size}").as_str())
        );
    }
}

#[test]
fn traversal_corpus_never_serves_a_file_outside_the_map() {
    let site = static_site("st-traversal", "");
    let inst = site.start();
    let targets = [
        "/static/../secret.txt",
        "/static/../outside/secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E/secret.txt",
        "/static/.%2e/secret.txt",
        "/static/%2e%2e%2fsecret.txt",
        "/static/..%2fsecret.txt",
        "/static/%252e%252e/secret.txt",
        "/static/%252e%252e%252fsecret.txt",
        "/static/....//secret.txt",
        "/static//../secret.txt",
        "/static/./../secret.txt",
        "/static/sub/../../secret.txt",
        "/static/sub/%2e%2e/%2e%2e/secret.txt",
        "/static/link-out",
        "/static/dir-out/secret.txt",
        "/static/dir-out/../secret.txt",
        "/static/%00/../secret.txt",
        "/static/a.css%00/../../secret.txt",
        "/static/..\\secret.txt",
        "/static/%5c..%5csecret.txt",
        "/staticx/../secret.txt",
        "/static",
    ];
    for t in targets {
        // Raw bytes, so no client normalises the path first.
        let raw = raw_http(
            site.http_port,
            format!("GET {t} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains(SECRET), "http-socket {t} leaked:\n{text}");
        // The same path decoded, as a uwsgi client could send it in PATH_INFO.
        let decoded = t
            .replace("%2e", ".")
            .replace("%2E", ".")
            .replace("%2f", "/");
        let raw = raw_unix(
            &site.sock(),
            &uwsgi_packet("GET", &decoded.replace("%00", "\0"), &[], b""),
        )
        .unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains(SECRET), "uwsgi {decoded:?} leaked:\n{text}");
    }
    // A refused path falls through to the app, as in uWSGI.
    let r = http_get(site.http_port, "/static/link-out").unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.text().starts_with("APP=main"),
        "{}\n{}",
        r.text(),
        inst.tail()
    );
}

#[test]
fn static_safe_allows_a_symlinked_folder_and_only_that_one() {
    let outside = "outside";
    let site = Site::new("st-safe", "echoenv", 1, "");
    make_tree(&site.dir);
    site.write_ini(
        "echoenv",
        1,
        &format!(
            "static-map = /static={}\nstatic-safe = {}\n",
            site.dir.join("static").display(),
            site.dir.join(outside).display()
        ),
    );
    let inst = site.start();
    let r = http_get(site.http_port, "/static/link-out").unwrap();
    assert_eq!(r.text(), SECRET, "{}", inst.tail());
    let r = http_get(site.http_port, "/static/dir-out/secret.txt").unwrap();
    assert_eq!(r.text(), SECRET);
    // The folder beside it is still out of bounds.
    let raw = raw_http(
        site.http_port,
        b"GET /static/../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&raw).contains("APP=main"));
}

#[test]
fn gzip_twin_is_served_when_accepted() {
    let site = static_site("st-gzip", "static-gzip-all = true\n");
    let inst = site.start();
    let gz = std::fs::read(site.dir.join("static/nums.txt.gz")).unwrap();
    let plain = std::fs::read(site.dir.join("static/nums.txt")).unwrap();
    let url = format!("http://127.0.0.1:{}/static/nums.txt", site.http_port);
    let r = curl(&["-H", "Accept-Encoding: gzip, deflate", &url]);
    assert_eq!(r.status, 200, "{}", inst.tail());
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.body, gz);
    let r = curl(&[&url]);
    assert_eq!(r.header("Content-Encoding"), None);
    assert_eq!(r.body, plain);
    let r = curl(&["--compressed", &url]);
    assert_eq!(r.body, plain, "curl decodes what we sent");
}

#[test]
fn missing_files_other_methods_and_skipped_extensions_reach_the_app() {
    let site = static_site("st-fallthrough", "static-expires-type = text/css=3600\n");
    let inst = site.start();
    for (method, path) in [
        ("GET", "/static/nope.css"),
        ("POST", "/static/a.css"),
        ("GET", "/static/skip.py"),
        ("GET", "/static/sub/missing/"),
        ("GET", "/other"),
    ] {
        let r = http(site.http_port, method, path, b"").unwrap();
        assert_eq!(r.status, 200, "{method} {path}: {}", inst.tail());
        assert!(
            r.text().starts_with("APP=main"),
            "{method} {path}: {}",
            r.text()
        );
    }
    let r = http_get(site.http_port, "/static/a.css").unwrap();
    let expires = r.header("Expires").expect("static-expires-type");
    assert!(expires.ends_with(" GMT"), "{expires}");
    assert_ne!(Some(expires), r.header("Last-Modified"));
}

#[test]
fn static_answers_match_real_uwsgi() {
    let site = static_site("st-oracle", "");
    make_tree(&site.dir.join("u"));
    let port = free_port();
    let ini = site.dir.join("uwsgi.ini");
    std::fs::write(
        &ini,
        format!(
            "[uwsgi]\nchdir = {apps}\nmodule = echoenv\nhttp-socket = 127.0.0.1:{port}\nmaster = true\n\
             processes = 1\nstatic-map = /static={st}\nstatic-index = index.html\nstatic-skip-ext = .py\n",
            apps = repo().join("tests/apps").display(),
            st = site.dir.join("static").display(),
        ),
    )
    .unwrap();
    let uwsgi = Uwsgi::start(&ini, port);
    let inst = site.start();
    for path in [
        "/static/a.css",
        "/static/sub/",
        "/static/sub/index.html",
        "/static/nums.txt",
        "/static/link-in.css",
        "/static/link-out",
        "/static/nope",
        "/static/skip.py",
        "/static/%2e%2e/secret.txt",
        "/static/dir-out/secret.txt",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let theirs = parse_response(&raw_http(port, req.as_bytes()).unwrap())
            .unwrap_or_else(|| panic!("uwsgi {path}: {}", uwsgi.log_text()));
        let ours = parse_response(&raw_http(site.http_port, req.as_bytes()).unwrap())
            .unwrap_or_else(|| panic!("ours {path}: {}", inst.tail()));
        assert_eq!(ours.status, theirs.status, "{path}");
        assert_eq!(ours.body, theirs.body, "{path}: body");
        for h in ["Content-Type", "Content-Length", "Last-Modified"] {
            assert_eq!(ours.header(h), theirs.header(h), "{path}: {h}");
        }
    }
}

#[test]
fn static_files_and_routes_serve_behind_the_http_router() {
    let port = free_port();
    let site = static_site(
        "st-router",
        &format!("http = 127.0.0.1:{port}\nroute = ^/old redirect:/new\n"),
    );
    let inst = site.start();
    wait_for("the router to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let url = format!("http://127.0.0.1:{port}/static/nums.txt");
    let full = curl(&[&url]);
    assert_eq!(full.status, 200, "{}", inst.tail());
    assert_eq!(
        full.body,
        std::fs::read(site.dir.join("static/nums.txt")).unwrap()
    );
    let r = curl(&["-r", "0-4", &url]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full.body[..5]);
    let r = curl(&[&format!("http://127.0.0.1:{port}/old")]);
    assert_eq!(r.status, 302);
    let raw = raw_http(
        port,
        b"GET /static/%2e%2e/secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains(SECRET));
}
