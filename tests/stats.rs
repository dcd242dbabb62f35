//! The `stats` server against the real binary: uWSGI's stats JSON on a 0600 unix
//! socket, read the way `uwsgitop` reads it, and the refusal of non-loopback TCP.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn statuses(doc: &Value) -> Vec<String> {
    doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["status"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn stats_socket_serves_uwsgis_json_without_request_data() {
    let site = Site::new("stats", "pep3333", 2, "stats = %dstats.sock");
    let inst = site.start();
    let path = site.dir.join("stats.sock");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "stats socket mode {mode:o}");

    let doc = read_stats(&path);
    assert_eq!(
        keys(&doc),
        [
            "version",
            "listen_queue",
            "listen_queue_errors",
            "signal_queue",
            "load",
            "pid",
            "uid",
            "gid",
            "cwd",
            "locks",
            "sockets",
            "workers",
            // ours, after uWSGI's keys: the preloaded generation's app template
            "templates"
        ]
    );
    assert_eq!(doc["templates"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["templates"][0]["state"], "ready");
    assert_eq!(doc["pid"], inst.pid());
    let socket_names: Vec<&str> = doc["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        socket_names.contains(&site.sock().to_str().unwrap()),
        "{socket_names:?}"
    );
    let mut pids: Vec<i64> = doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_i64().unwrap())
        .collect();
    pids.sort();
    let mut expected = inst
        .worker_pids()
        .into_iter()
        .map(i64::from)
        .collect::<Vec<_>>();
    expected.sort();
    assert_eq!(pids, expected);
    for w in doc["workers"].as_array().unwrap() {
        assert_eq!(w["status"], "idle");
        assert_eq!(w["accepting"], 1);
        assert!(w["respawn_count"].as_u64().unwrap() >= 1);
        assert!(w["rss"].as_u64().unwrap() > 0);
        let spawned = w["last_spawn"].as_u64().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            spawned <= now && spawned + 120 > now,
            "last_spawn {spawned}"
        );
    }

    // Requests carrying a secret in the query string, then one in flight.
    for _ in 0..4 {
        let r = http_get(site.http_port, &format!("/pid?token={CANARY}")).unwrap();
        assert_eq!(r.status, 200);
    }
    let port = site.http_port;
    let slow = std::thread::spawn(move || http_get(port, &format!("/sleep?s=2&token={CANARY}")));
    let busy = wait_for("a busy worker in stats", Duration::from_secs(10), || {
        let doc = read_stats(&path);
        statuses(&doc).iter().any(|s| s == "busy").then_some(doc)
    });
    let busy_worker = busy["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["status"] == "busy")
        .unwrap();
    assert_eq!(busy_worker["cores"][0]["in_request"], 1);
    assert_eq!(busy_worker["cores"][0]["vars"], serde_json::json!([]));
    assert_eq!(slow.join().unwrap().unwrap().status, 200);

    let idle = wait_for("every worker idle again", Duration::from_secs(10), || {
        let doc = read_stats(&path);
        statuses(&doc).iter().all(|s| s == "idle").then_some(doc)
    });
    let workers = idle["workers"].as_array().unwrap();
    let requests: u64 = workers
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum();
    let tx: u64 = workers.iter().map(|w| w["tx"].as_u64().unwrap()).sum();
    let running: u64 = workers
        .iter()
        .map(|w| w["running_time"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 5);
    assert!(tx > 0, "tx");
    // The 2 s request alone is 2e6 µs of running time.
    assert!(running >= 1_900_000, "running_time {running}");
    assert!(workers.iter().any(|w| w["avg_rt"].as_u64().unwrap() > 0));

    uwsgitop_shows_the_workers(&path, &pids);
}

/// `uwsgitop` is a curses tool: run it on a pty, wait until its table lists
/// every worker pid (a field it cannot read makes it crash or drop the row),
/// then quit with `q` as a person would.
fn uwsgitop_shows_the_workers(path: &Path, pids: &[i64]) {
    let uwsgitop = venv().join("bin/uwsgitop");
    let script = r#"
import os, pty, select, signal, sys, time
uwsgitop, address, pids = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
pid, fd = pty.fork()
if pid == 0:
    os.environ.update(TERM="xterm", LINES="40", COLUMNS="200")
    os.execv(uwsgitop, [uwsgitop, "--frequency", "1", address])
out, quit_sent, deadline = b"", False, time.time() + 20
while time.time() < deadline:
    if select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    if not quit_sent and b"WID" in out and all(p.encode() in out for p in pids):
        os.write(fd, b"q")
        quit_sent = True
done, status = os.waitpid(pid, os.WNOHANG)
if not done:
    os.kill(pid, signal.SIGKILL)
    done, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf8", "replace"))
sys.exit(0 if quit_sent and os.waitstatus_to_exitcode(status) == 0 else 1)
"#;
    let pids: Vec<String> = pids.iter().map(i64::to_string).collect();
    let out = Command::new(venv().join("bin/python"))
        .arg("-c")
        .arg(script)
        .arg(&uwsgitop)
        .arg(path)
        .arg(pids.join(","))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "uwsgitop did not show every worker and quit cleanly:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn stats_on_loopback_tcp_works_and_a_wildcard_address_is_a_config_error() {
    let port = free_port();
    let site = Site::new("statstcp", "hello", 1, &format!("stats = 127.0.0.1:{port}"));
    {
        let inst = site.start();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["pid"], inst.pid());
        assert_eq!(doc["workers"][0]["status"], "idle");
    }

    // A wildcard address is a config error, found by `check` as by `start`.
    let wild = Site::new("statswild", "hello", 1, &format!("stats = 0.0.0.0:{port}"));
    let check = wild.cli(&["check", wild.ini().to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(2));
    let start = wild.cli(&["start", wild.ini().to_str().unwrap()]);
    assert_eq!(start.status.code(), Some(2));
    for out in [check, start] {
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            said.contains(&format!(
                "amy_uwsgi.ini:17: stats = 0.0.0.0:{port}: the stats server has no authentication"
            )) && said.contains("loopback"),
            "{said}"
        );
    }
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}
