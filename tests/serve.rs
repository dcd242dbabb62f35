//! Serving: the real binary, real Python workers, real nginx and independent
//! clients (issue 3).

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::*;

#[test]
fn serves_over_the_uwsgi_socket_and_the_http_socket() {
    let site = Site::new("basic", "hello", 2, "");
    let inst = site.start();
    let r = uwsgi_get(&site.sock(), "/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello, World!\n");
    let r = http_get(site.http_port, "/").unwrap();
    assert_eq!(r.status, 200, "{}", inst.tail());
    assert_eq!(r.text(), "Hello, World!\n");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(site.sock()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o660, "chmod-socket applied");
    let pid: i32 = std::fs::read_to_string(site.pidfile())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, inst.pid());
}

#[test]
fn nginx_uwsgi_pass_gets_the_apps_bytes_headers_and_status() {
    let site = Site::new("nginx", "pep3333", 2, "");
    let _inst = site.start();
    let nginx = Nginx::start(&site.sock());
    let r = nginx.get("/pid").unwrap();
    assert_eq!(r.status, 200, "{}", nginx.error_log());
    assert!(r.text().parse::<i32>().is_ok());
    let r = nginx.get("/nope").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "not found");
    let r = nginx.get("/write").unwrap();
    assert_eq!(r.text(), "written by write() then returned");
    let r = nginx.get("/exc-info").unwrap();
    assert_eq!(r.status, 503);
    let body = http(
        nginx.port,
        "POST",
        "/echo?mode=chunks",
        &vec![b'x'; 300_000],
    )
    .unwrap();
    assert_eq!(body.body.len(), 300_000);
    let r = nginx.get("/file").unwrap();
    assert_eq!(
        r.body,
        std::fs::read(repo().join("tests/apps/pep3333.py")).unwrap()
    );
    // An app exception before headers: a 500 from us, not nginx's 502.
    let r = nginx.get("/raw/crash").unwrap();
    assert_eq!(r.status, 500);
    let r = nginx.get("/environ").unwrap();
    let environ: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(environ["wsgi.url_scheme"], "http");
    assert_eq!(environ["REQUEST_METHOD"], "GET");
}

#[test]
fn django_app_with_sqlite_through_nginx() {
    let site = Site::new("django", "djangoapp.wsgi", 2, "");
    let db = site.dir.join("db.sqlite3");
    let env = format!(
        "AMY_TEST_DB={}\nDJANGO_SETTINGS_MODULE=djangoapp.settings\n",
        db.display()
    );
    site.write_env(&env);
    std::fs::write(
        site.ini(),
        site.ini_text("djangoapp.wsgi", 2, "").replace(
            &format!("chdir = {}", repo().join("tests/apps").display()),
            &format!("chdir = {}", repo().join("tests/apps/djangoapp").display()),
        ),
    )
    .unwrap();
    let migrate = std::process::Command::new(venv().join("bin/python"))
        .args(["manage.py", "migrate", "--noinput"])
        .current_dir(repo().join("tests/apps/djangoapp"))
        .env("AMY_TEST_DB", &db)
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let inst = site.start();
    let nginx = Nginx::start(&site.sock());
    let r = nginx.get("/").unwrap();
    assert_eq!(r.status, 200, "{}\n{}", inst.tail(), nginx.error_log());
    assert!(r
        .header("Content-Type")
        .unwrap_or("")
        .starts_with("text/html"));
}

#[test]
fn uwsgi_curl_is_answered() {
    let site = Site::new("uwcurl", "hello", 1, "");
    let _inst = site.start();
    let out = std::process::Command::new(venv().join("bin/uwsgi_curl"))
        .arg(site.sock())
        .arg("/")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("200 OK"), "{text}");
    assert!(text.contains("Hello, World!"), "{text}");
}

#[test]
fn request_lines_reach_logto_in_uwsgis_format_and_secrets_never_do() {
    let site = Site::new("logs", "pep3333", 1, "");
    let inst = site.start();
    uwsgi_get(&site.sock(), "/pid").unwrap();
    let r = uwsgi_get(&site.sock(), "/env?name=AMY_CANARY").unwrap();
    assert_eq!(
        r.text(),
        "canary-secret-7f3a9",
        "the env file reached the app"
    );
    let log = wait_for("the request line", Duration::from_secs(5), || {
        let log = site.log_text();
        log.contains("GET /pid").then_some(log)
    });
    let line = log.lines().find(|l| l.contains("GET /pid")).unwrap();
    assert!(line.starts_with("[pid: "), "{line}");
    assert!(line.contains("=> generated"), "{line}");
    assert!(
        !log.contains("canary-secret-7f3a9"),
        "a secret reached the log"
    );
    let status = site.cli(&["status", "--json", site.ini().to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&status.stdout).contains("canary-secret-7f3a9"));
    let check = site.cli(&["check", "--show-config", site.ini().to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&check.stdout).contains("canary-secret-7f3a9"));
    drop(inst);
}

#[test]
fn sigusr2_reopens_the_log_without_losing_lines() {
    let site = Site::new("reopen", "hello", 1, "");
    let inst = site.start();
    let rotated = site.dir.join("amy.log.1");
    std::fs::rename(site.log(), &rotated).unwrap();
    inst.signal(12);
    wait_for("a new log file", Duration::from_secs(5), || {
        site.log().exists().then_some(())
    });
    uwsgi_get(&site.sock(), "/after").unwrap();
    wait_for(
        "the request line in the new file",
        Duration::from_secs(5),
        || site.log_text().contains("GET /after").then_some(()),
    );
    assert!(
        common::alive(inst.pid()),
        "SIGUSR2 must not kill the master"
    );
}

#[test]
fn status_reports_workers_and_uses_lsb_exit_codes() {
    let site = Site::new("status", "hello", 2, "");
    let out = site.cli(&["status", site.ini().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "not running");
    let inst = site.start();
    let s = site.status_json();
    assert_eq!(s["running"], true);
    assert_eq!(s["pid"], inst.pid());
    let workers = s["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for w in workers {
        assert!(w["pid"].as_i64().unwrap() > 1);
        assert!(w["rss_bytes"].as_u64().unwrap() > 0);
        assert_eq!(w["state"], "idle");
    }
    // One generation, the current one, holding both workers.
    assert_eq!(
        s["generations"],
        serde_json::json!([{"generation": 1, "role": "current", "workers": 2}])
    );
    uwsgi_get(&site.sock(), "/").unwrap();
    let total: u64 = site.status_json()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1);
    let out = site.cli(&["status", "--pidfile", site.pidfile().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("running"), "{text}");
    // The table: a header, then one row per worker with its pid and state.
    for w in s["workers"].as_array().unwrap() {
        let pid = w["pid"].to_string();
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(&pid) && l.contains("idle")),
            "{text}"
        );
    }
}

#[test]
fn stop_completes_in_flight_requests_and_cleans_up() {
    let site = Site::new("stop", "pep3333", 2, "");
    let mut inst = site.start();
    let sock = site.sock();
    let slow = std::thread::spawn(move || uwsgi_get(&sock, "/sleep?s=1.5"));
    wait_for("the slow request to start", Duration::from_secs(5), || {
        site.status_json()["workers"]
            .as_array()?
            .iter()
            .any(|w| w["state"] == "busy")
            .then_some(())
    });
    let workers = inst.worker_pids();
    let out = site.cli(&["stop", site.ini().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = slow
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(r.text(), "slept");
    assert_eq!(inst.wait_exit(Duration::from_secs(10)), 0);
    assert!(!site.sock().exists(), "vacuum removed the socket");
    assert!(!site.pidfile().exists(), "the pidfile is removed");
    for pid in workers {
        assert!(!alive(pid), "worker {pid} left behind");
    }
}

#[test]
fn stop_refuses_pidfiles_that_do_not_name_our_master() {
    let site = Site::new("badpid", "hello", 1, "");
    let mut decoy = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let decoy_pid = decoy.id().to_string();
    for content in ["abc", "0", "-1", "1", "", decoy_pid.as_str()] {
        std::fs::write(site.pidfile(), format!("{content}\n")).unwrap();
        let out = site.cli(&[
            "stop",
            "--pidfile",
            site.pidfile().to_str().unwrap(),
            "--timeout",
            "1",
        ]);
        assert_ne!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "stopped",
            "content {content:?}"
        );
        assert!(
            alive(decoy.id() as i32),
            "the decoy was signalled for {content:?}"
        );
        assert!(std::fs::read_to_string(site.pidfile()).is_ok());
    }
    let _ = decoy.kill();
    let _ = decoy.wait();
}

#[test]
fn a_second_start_refuses_and_leaves_the_running_instance_alone() {
    let site = Site::new("twice", "hello", 1, "");
    let inst = site.start();
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(site.sock()).unwrap());
    let out = std::process::Command::new(BIN)
        .arg("start")
        .arg(site.ini())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(site.sock()).unwrap()),
        inode
    );
    assert_eq!(uwsgi_get(&site.sock(), "/").unwrap().status, 200);
    drop(inst);
}

#[test]
fn a_stale_socket_is_replaced_and_a_regular_file_is_refused_untouched() {
    let site = Site::new("stale", "hello", 1, "");
    // A stale socket: bound once, nobody listening any more.
    drop(std::os::unix::net::UnixListener::bind(site.sock()).unwrap());
    let inst = site.start();
    assert_eq!(uwsgi_get(&site.sock(), "/").unwrap().status, 200);
    drop(inst);

    let site = Site::new("notsock", "hello", 1, "");
    std::fs::write(site.sock(), "precious").unwrap();
    let mut inst = site.spawn();
    assert_eq!(inst.wait_exit(Duration::from_secs(10)), 1);
    assert_eq!(std::fs::read_to_string(site.sock()).unwrap(), "precious");
}

#[test]
fn an_app_that_fails_to_import_at_start_exits_1_with_the_traceback_logged_once() {
    let site = Site::new("broken", "broken_import", 2, "");
    let mut inst = site.spawn();
    assert_eq!(
        inst.wait_exit(Duration::from_secs(30)),
        1,
        "{}",
        inst.tail()
    );
    let log = site.log_text();
    assert_eq!(log.matches("Traceback").count(), 1, "{log}");
    assert!(!site.sock().exists() && !site.pidfile().exists());
}

#[test]
fn env_file_permissions_world_writable_refused_world_readable_warned() {
    let site = Site::new("envperm", "hello", 1, "");
    let env = site.dir.join("uwsgi_env");
    std::fs::set_permissions(&env, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("start")
        .arg(site.ini())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("writable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&env, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = site.cli(&["check", site.ini().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("readable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_killed_worker_under_load_loses_only_its_own_requests_and_is_replaced() {
    let site = Site::new("sigkill", "hello", 2, "");
    let inst = site.start();
    let before = inst.worker_pids();
    let stop = Arc::new(AtomicBool::new(false));
    let sock = site.sock();
    let load = load(4, Duration::from_secs(20), stop.clone(), move || {
        uwsgi_get(&sock, "/")
    });
    wait_for("load to flow", Duration::from_secs(10), || {
        let served: u64 = site.status_json()["workers"]
            .as_array()?
            .iter()
            .filter_map(|w| w["requests"].as_u64())
            .sum();
        (served >= 50).then_some(())
    });
    assert!(kill(before[0], 9));
    let after = wait_for("the slot to be refilled", Duration::from_secs(10), || {
        let pids = inst.worker_pids();
        (pids.len() == 2
            && !pids.contains(&before[0])
            && site.status_json()["workers"]
                .as_array()?
                .iter()
                .all(|w| w["state"] != "booting"))
        .then_some(pids)
    });
    assert!(after.contains(&before[1]));
    let mut counts: Vec<u64> = site.status_json()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["respawn_count"].as_u64().unwrap())
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        vec![1, 2],
        "the refilled slot counts its second worker"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = load.join().unwrap();
    // One sync worker has at most one request in flight when killed.
    assert!(report.failed.len() <= 1, "{:?}", report.failed);
    assert!(report.ok > 0);
}

#[test]
fn workers_leave_after_their_request_when_the_master_is_killed() {
    let site = Site::new("orphans", "pep3333", 2, "");
    let mut inst = site.start();
    let workers = inst.worker_pids();
    let sock = site.sock();
    let slow = std::thread::spawn(move || uwsgi_get(&sock, "/sleep?s=1"));
    wait_for("the slow request to start", Duration::from_secs(5), || {
        site.status_json()["workers"]
            .as_array()?
            .iter()
            .any(|w| w["state"] == "busy")
            .then_some(())
    });
    inst.signal(9);
    inst.wait_exit(Duration::from_secs(5));
    assert_eq!(
        slow.join()
            .unwrap()
            .expect("finished despite the master's death")
            .text(),
        "slept"
    );
    wait_for("every worker to exit", Duration::from_secs(10), || {
        workers.iter().all(|p| !alive(*p)).then_some(())
    });
    // An immediate start succeeds: the stale socket and pidfile are handled.
    let inst = site.start();
    assert_eq!(uwsgi_get(&site.sock(), "/pid").unwrap().status, 200);
    drop(inst);
}

#[test]
fn harakiri_kills_a_stuck_worker_and_its_slot_is_refilled() {
    let site = Site::new("harakiri", "pep3333", 1, "harakiri = 1");
    let inst = site.start();
    let before = inst.worker_pids();
    let sock = site.sock();
    let started = std::time::Instant::now();
    let _ = uwsgi_get(&sock, "/sleep?s=30");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "harakiri fired within its limit + 1 s (+ slack)"
    );
    let after = wait_for("a replacement worker", Duration::from_secs(10), || {
        let p = inst.worker_pids();
        (p.len() == 1 && p != before).then_some(p)
    });
    assert!(!alive(before[0]));
    assert_eq!(
        uwsgi_get(&site.sock(), "/pid").unwrap().text(),
        after[0].to_string()
    );
    assert!(site.log_text().contains("harakiri"));
}

#[test]
fn max_requests_recycles_a_worker_without_failing_a_request() {
    let site = Site::new("maxreq", "pep3333", 1, "max-requests = 3");
    let _inst = site.start();
    let mut pids = Vec::new();
    for _ in 0..7 {
        let r = uwsgi_get(&site.sock(), "/pid").unwrap();
        assert_eq!(r.status, 200);
        pids.push(r.text());
    }
    assert_eq!(pids[0], pids[2]);
    assert_ne!(pids[2], pids[3], "recycled after 3 requests: {pids:?}");
}

#[test]
fn grandchildren_are_gone_after_stop() {
    let site = Site::new("grandkids", "spawner", 1, "");
    std::fs::write(
        site.dir.join("spawner.py"),
        "import os, subprocess\nCHILD = subprocess.Popen(['sleep', '300'])\n\
         def application(environ, start_response):\n    start_response('200 OK', [])\n    return [str(CHILD.pid).encode()]\n",
    )
    .unwrap();
    std::fs::write(
        site.ini(),
        site.ini_text("spawner", 1, "").replace(
            &format!("chdir = {}", repo().join("tests/apps").display()),
            &format!("chdir = {}", site.dir.display()),
        ),
    )
    .unwrap();
    let mut inst = site.start();
    let grandchild: i32 = uwsgi_get(&site.sock(), "/")
        .unwrap()
        .text()
        .parse()
        .unwrap();
    assert!(alive(grandchild));
    let out = site.cli(&["stop", site.ini().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    inst.wait_exit(Duration::from_secs(10));
    wait_for("the grandchild to be gone", Duration::from_secs(5), || {
        (!alive(grandchild)).then_some(())
    });
}

#[test]
fn workers_run_as_the_configured_user_with_no_way_back_to_root() {
    // Runs as root (CI does); nobody/nogroup exist on Debian.
    if !nix_is_root() {
        panic!("this test needs root: it checks the privilege drop");
    }
    // The test venv's interpreter lives under /root (pyenv), which `nobody`
    // cannot enter; a deployment's venv is readable by its user, so build one
    // from Debian's python3 as a deployment would.
    let system_python = std::path::Path::new("/usr/bin/python3");
    assert!(system_python.exists(), "this test needs Debian's python3");
    let site = Site::new("privdrop", "pep3333", 1, "uid = nobody\ngid = nogroup");
    let venv = site.dir.join("venv");
    let made = std::process::Command::new(system_python)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success());
    let text = site
        .ini_text("pep3333", 1, "uid = nobody\ngid = nogroup")
        .replace(
            &format!("home = {}", common::venv().display()),
            &format!("home = {}", venv.display()),
        );
    std::fs::write(site.ini(), text).unwrap();
    // The unprivileged master must still be able to read its ini on reload.
    for entry in std::fs::read_dir(&site.dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
        }
    }
    // The unprivileged master writes its pidfile and log here: the directory is
    // nobody's, not world-writable (a root master refuses a socket directory
    // anyone can write).
    std::os::unix::fs::chown(&site.dir, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(
        &site.dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let inst = site.start();
    let worker = inst.worker_pids()[0];
    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let nobody = "65534";
    assert!(
        field("Uid:").split(' ').all(|u| u == nobody),
        "Uid: {}",
        field("Uid:")
    );
    assert!(
        field("Gid:").split(' ').all(|g| g != "0"),
        "Gid: {}",
        field("Gid:")
    );
    assert!(
        !field("Groups:").split(' ').any(|g| g == "0"),
        "Groups: {}",
        field("Groups:")
    );
    assert_eq!(field("CapEff:"), "0000000000000000");
    let master = std::fs::read_to_string(format!("/proc/{}/status", inst.pid())).unwrap();
    assert!(
        master
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().skip(1).all(|u| u == nobody)),
        "the master drops too"
    );
    assert_eq!(uwsgi_get(&site.sock(), "/pid").unwrap().status, 200);
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

#[test]
fn max_fd_sets_the_open_file_limit_of_the_master_and_its_workers() {
    let site = Site::new("maxfd", "pep3333", 2, "max-fd = 1000\n");
    let inst = site.start();
    let limit = |pid: i32| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        text.lines()
            .find(|l| l.starts_with("Max open files"))
            .map(|l| {
                l.split_whitespace()
                    .skip(3)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap()
    };
    assert_eq!(limit(inst.pid()), "1000 1000");
    for w in inst.worker_pids() {
        assert_eq!(limit(w), "1000 1000", "worker {w}");
    }
    // A value the kernel cannot give is refused by check, with its line.
    site.write_ini("pep3333", 1, "max-fd = 4294967295\n");
    let out = site.cli(&["check", site.ini().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max-fd = 4294967295: above the kernel's limit"),
        "{err}"
    );
}

#[test]
fn wsgi_disable_file_wrapper_leaves_it_out_of_the_environ() {
    for (extra, expected) in [
        ("", "True"),
        ("wsgi-disable-file-wrapper = true\n", "False"),
    ] {
        let site = Site::new("nofw", "pep3333", 1, extra);
        let _inst = site.start();
        let r = uwsgi_get(&site.sock(), "/has-file-wrapper").unwrap();
        assert_eq!(
            (r.status, r.text()),
            (200, expected.to_string()),
            "{extra:?}"
        );
    }
}

#[test]
fn protocol_http_makes_a_plain_socket_speak_http() {
    // uWSGI's `protocol` is the default protocol of `socket` entries: real inis
    // put `protocol = http` beside `socket = :8080` for a proxy_pass upstream.
    let site = Site::new("proto-http", "pep3333", 1, "protocol = http\n");
    let _inst = site.start();
    let raw = raw_unix(
        &site.sock(),
        b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let r = parse_response(&raw).expect("an HTTP answer on amy.sock");
    assert_eq!(r.status, 200, "{}", r.text());
    // Any other protocol fails closed with its line.
    site.write_ini("pep3333", 1, "protocol = fastcgi\n");
    let out = site.cli(&["check", site.ini().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":17: protocol = fastcgi is not supported"),
        "{err}"
    );
}

#[test]
fn status_says_whether_the_workers_run_the_native_parser() {
    for (name, env, native) in [
        ("native-on", vec![], true),
        ("native-off", vec![("AMY_EMPEROR_NO_NATIVE", "1")], false),
    ] {
        let site = Site::new(name, "hello", 2, "");
        let inst = site.spawn_with_env(&[], &env);
        inst.wait_ready();
        let s = site.status_json();
        let workers = s["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 2, "{s}");
        assert!(workers.iter().all(|w| w["native"] == native), "{s}");
        let out = std::process::Command::new(BIN)
            .arg("status")
            .arg(site.ini())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = if native {
            "uwsgi parser: native in 2 of 2 workers\n"
        } else {
            "uwsgi parser: native in 0 of 2 workers (the stdlib parser serves)\n"
        };
        assert!(text.contains(line), "{text}");
        // Both serve.
        assert_eq!(uwsgi_get(&site.sock(), "/").unwrap().status, 200);
    }
}
