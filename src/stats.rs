//! The stats server (`stats = ADDR`): uWSGI's stats JSON, so `uwsgitop` and the
//! Prometheus/Datadog uWSGI exporters work unchanged (uwsgi.md 6.2).
//!
//! On each connection the server asks the master for its `status` document (the
//! same one the control socket answers), converts it with [`uwsgi_json`], writes
//! it tab-indented like uWSGI, and closes. It never reads from the client: there
//! is no command to send, so there is nothing to authenticate.
//!
//! # What is deliberately not there
//! uWSGI dumps every in-flight request's uwsgi vars (cookies, `Authorization`)
//! into `cores[].vars` (`uwsgi core/stats.c:570`). Here `vars` is always empty,
//! `req_info` always `{}`, and the document is built from an allowlist of
//! counters, so nothing from a request or the environment can leak in even if the
//! status document grows: a secret from `uwsgi_env` must never appear in stats.
//!
//! # Where it listens
//! A unix socket is created 0600 (see [`crate::local_server`]). TCP is accepted only on an explicit loopback address
//! (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`): uWSGI's `:9191` or
//! `0.0.0.0:9191` would publish worker pids and traffic counters to the network
//! with no authentication, so those are refused with an error saying why.
//!
//! # Numbers that differ from uWSGI
//! - `avg_rt` is the mean over the worker's life (busy time / requests); uWSGI
//!   keeps a running average that halves the weight of history at each request.
//! - `rss` is always filled (uWSGI reports 0 without `memory-report`); `vsz` is 0.
//! - `listen_queue` and `sockets[].queue` are 0, as uWSGI reports for unix
//!   sockets on stock Linux.
//! - During a chain reload two workers can hold the same slot; the document shows
//!   one per `id` (the accepting one, else the newest), because exporters label
//!   metrics by worker id and reject duplicate label sets.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tracing::info;

use crate::config::{Protocol, SocketAddress};
use crate::local_server::{self, Client, Listen, LocalServer, LocalServerError};
use crate::socket::SocketError;
use crate::supervisor::inbox::{ask_status, Inbox};
use crate::supervisor::status::{Status, WorkerStatus};

/// What `version` says: tools print it next to "uwsgi".
pub const VERSION: &str = concat!("amy-emperor-", env!("CARGO_PKG_VERSION"));

/// How long a client may take to receive the document, and the master to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("stats = {0}: the stats server has no authentication, so it listens only on a unix socket or an explicit loopback address (127.0.0.1:PORT, localhost:PORT, [::1]:PORT)")]
    NotLoopback(String),
    #[error("stats = {0}: abstract unix sockets have no file mode to restrict them; use a path")]
    Abstract(String),
    #[error("stats = {0}: not a port number")]
    BadPort(String),
    #[error("stats = {address}: {source}")]
    Bind {
        address: String,
        source: SocketError,
    },
    #[error("stats = {address}: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
}

impl From<StatsError> for std::io::Error {
    fn from(e: StatsError) -> Self {
        let kind = match &e {
            StatsError::Io { source, .. } => source.kind(),
            StatsError::Bind { .. } => std::io::ErrorKind::AddrNotAvailable,
            _ => std::io::ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, e)
    }
}

/// Where `stats = ADDR` listens, after the loopback check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsAddress {
    Unix(PathBuf),
    Loopback { host: String, port: u16 },
}

/// Parses `stats = ADDR` (the config has already made a unix path absolute).
pub fn parse_address(addr: &str) -> Result<StatsAddress, StatsError> {
    if addr.starts_with('@') {
        return Err(StatsError::Abstract(addr.to_owned()));
    }
    if addr.starts_with('/') || !addr.contains(':') {
        return Ok(StatsAddress::Unix(PathBuf::from(addr)));
    }
    let (host, port) = addr.rsplit_once(':').expect("contains ':'");
    let port: u16 = port
        .parse()
        .map_err(|_| StatsError::BadPort(addr.to_owned()))?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let loopback = bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(StatsError::NotLoopback(addr.to_owned()));
    }
    Ok(StatsAddress::Loopback {
        host: host.to_owned(),
        port,
    })
}

/// The running server (see [`LocalServer`]).
pub type StatsServer = LocalServer;

impl From<StatsAddress> for SocketAddress {
    fn from(a: StatsAddress) -> Self {
        match a {
            StatsAddress::Unix(path) => SocketAddress::Unix(path),
            StatsAddress::Loopback { host, port } => SocketAddress::Tcp { host, port },
        }
    }
}

impl StatsError {
    /// The error of binding or serving `stats = ADDR` (also `emperor-stats`).
    pub fn serving(addr: &str, e: LocalServerError) -> Self {
        let address = addr.to_owned();
        match e {
            LocalServerError::Bind(source) => StatsError::Bind { address, source },
            LocalServerError::Io(source) => StatsError::Io { address, source },
            LocalServerError::NotLoopback => StatsError::NotLoopback(address),
        }
    }
}

/// Binds `stats = ADDR` and serves it for the master's lifetime. Call inside the
/// master's tokio runtime.
pub fn spawn_server(addr: &str, inbox: Inbox) -> Result<StatsServer, StatsError> {
    let listen = Listen {
        key: "stats",
        address: parse_address(addr)?.into(),
        loopback_only: true,
    };
    let server =
        local_server::spawn(listen, inbox, answer).map_err(|e| StatsError::serving(addr, e))?;
    info!(address = %server.local_address(), "stats server listening");
    Ok(server)
}

async fn answer(mut stream: Client, inbox: Inbox) {
    let Ok(Some(status)) = tokio::time::timeout(TIMEOUT, ask_status(&inbox)).await else {
        return;
    };
    let document = render(&uwsgi_json(&status));
    let _ = tokio::time::timeout(TIMEOUT, async {
        stream.write_all(&document).await?;
        stream.shutdown().await
    })
    .await;
}

/// uWSGI's layout: tab-indented, one key per line, a final newline.
pub fn render(document: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    document
        .serialize(&mut serializer)
        .expect("a JSON value always serializes");
    out.push(b'\n');
    out
}

/// Converts the master's status document into uWSGI's stats document, with
/// uWSGI's key order and integer types (the Go exporters decode into `int`).
/// Only counters are copied, field by field: nothing from a request or the
/// environment can reach it.
pub fn uwsgi_json(status: &Status) -> Value {
    let sockets: Vec<Value> = status
        .sockets
        .iter()
        .map(|s| {
            let proto = match s.proto.as_str() {
                "http" => Protocol::Http.as_str(),
                _ => Protocol::Uwsgi.as_str(),
            };
            json!({
                "name": s.name,
                "proto": proto,
                "queue": 0,
                "max_queue": 0,
                "shared": 0,
                "can_offload": 0,
            })
        })
        .collect();
    let mut workers: Vec<Value> = one_per_slot(status).into_iter().map(worker_json).collect();
    cheaped_slots(status, &mut workers);
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut doc = json!({
        "version": VERSION,
        "listen_queue": 0,
        "listen_queue_errors": 0,
        "signal_queue": 0,
        "load": 0,
        "pid": status.pid,
        "uid": nix::unistd::getuid().as_raw(),
        "gid": nix::unistd::getgid().as_raw(),
        "cwd": cwd,
    });
    if let Some(map) = doc.as_object_mut() {
        // uWSGI writes "daemons" only when there are some, before "locks".
        if !status.daemons.is_empty() {
            let daemons: Vec<Value> = status
                .daemons
                .iter()
                .map(|d| json!({"cmd": d.command, "pid": d.pid.unwrap_or(0), "respawns": d.respawns}))
                .collect();
            map.insert("daemons".into(), Value::Array(daemons));
        }
        map.insert("locks".into(), json!([]));
        map.insert("sockets".into(), Value::Array(sockets));
        map.insert("workers".into(), Value::Array(workers));
    }
    // Not in uWSGI's document (its preload master is the template): an extra
    // key, after uWSGI's, that uwsgitop and the exporters ignore.
    if !status.templates.is_empty() {
        let templates: Vec<Value> = status
            .templates
            .iter()
            .map(|t| {
                json!({
                    "generation": t.generation,
                    "pid": t.pid.unwrap_or(0),
                    "state": t.state,
                    "rss": t.rss_bytes,
                })
            })
            .collect();
        doc["templates"] = Value::Array(templates);
    }
    doc
}

/// One worker per `id`: the accepting one, else the newest generation.
fn one_per_slot(status: &Status) -> Vec<&WorkerStatus> {
    let mut slots: BTreeMap<usize, &WorkerStatus> = BTreeMap::new();
    let rank = |w: &WorkerStatus| (w.state.accepting(), w.generation);
    for w in &status.workers {
        match slots.get(&w.id) {
            Some(kept) if rank(kept) >= rank(w) => {}
            _ => {
                slots.insert(w.id, w);
            }
        }
    }
    slots.into_values().collect()
}

/// `cheaper`: an empty slot is listed as uWSGI lists it (pid 0, status
/// "cheap", accepting 0), unless a worker still finishes there. uWSGI gives a
/// slot that never had a worker id 0; here it keeps its own id, so exporters
/// that label by id see no duplicates.
fn cheaped_slots(status: &Status, workers: &mut Vec<Value>) {
    for id in &status.cheaped {
        if workers.iter().any(|w| w["id"] == *id) {
            continue;
        }
        let mut w = worker_json(&WorkerStatus {
            id: *id,
            pid: 0,
            generation: status.generation,
            state: crate::supervisor::status::WorkerStateName::Killed,
            requests: 0,
            exceptions: 0,
            rss_bytes: 0,
            request_age_s: None,
            tx_bytes: 0,
            busy_s: 0.0,
            respawn_count: 0,
            harakiri_count: 0,
            spawned_unix: None,
            native: false,
        });
        w["status"] = "cheap".into();
        workers.push(w);
    }
    workers.sort_by_key(|w| w["id"].as_u64().unwrap_or(0));
}

fn worker_json(w: &WorkerStatus) -> Value {
    let requests = w.requests;
    // A retiring worker finishing its last request is busy too.
    let in_request = w.request_age_s.is_some();
    let running_time = (w.busy_s.max(0.0) * 1e6) as u64;
    let avg_rt = running_time.checked_div(requests).unwrap_or(0);
    json!({
        "id": w.id,
        "pid": w.pid.max(0),
        "accepting": u8::from(w.state.accepting()),
        "requests": requests,
        "delta_requests": 0,
        "exceptions": w.exceptions,
        "harakiri_count": w.harakiri_count,
        "signals": 0,
        "signal_queue": 0,
        "status": if in_request { "busy" } else { "idle" },
        "rss": w.rss_bytes,
        "vsz": 0,
        "running_time": running_time,
        "last_spawn": w.spawned_unix.unwrap_or(0),
        "respawn_count": w.respawn_count,
        "tx": w.tx_bytes,
        "avg_rt": avg_rt,
        "apps": [],
        "cores": [{
            "id": 0,
            "requests": requests,
            "static_requests": 0,
            "routed_requests": 0,
            "offloaded_requests": 0,
            "write_errors": 0,
            "read_errors": 0,
            "in_request": u8::from(in_request),
            "vars": [],
            "req_info": {},
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const TOP_KEYS: [&str; 12] = [
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
    ];
    const WORKER_KEYS: [&str; 19] = [
        "id",
        "pid",
        "accepting",
        "requests",
        "delta_requests",
        "exceptions",
        "harakiri_count",
        "signals",
        "signal_queue",
        "status",
        "rss",
        "vsz",
        "running_time",
        "last_spawn",
        "respawn_count",
        "tx",
        "avg_rt",
        "apps",
        "cores",
    ];
    const CORE_KEYS: [&str; 10] = [
        "id",
        "requests",
        "static_requests",
        "routed_requests",
        "offloaded_requests",
        "write_errors",
        "read_errors",
        "in_request",
        "vars",
        "req_info",
    ];

    use crate::supervisor::status::WorkerStateName as S;
    use crate::supervisor::status::{PhaseName, ReloadReport, ReloadResult, SocketStatus};

    fn worker(id: usize, pid: i32, generation: u64, state: S, age: Option<f64>) -> WorkerStatus {
        WorkerStatus {
            id,
            pid,
            generation,
            state,
            requests: 4,
            exceptions: 1,
            rss_bytes: 30_000_000,
            request_age_s: age,
            tx_bytes: 1234,
            busy_s: 0.5,
            respawn_count: 1,
            harakiri_count: 3,
            spawned_unix: Some(1_700_000_000),
            native: true,
        }
    }

    fn status(workers: Vec<WorkerStatus>) -> Status {
        let socket = |name: &str, proto: &str| SocketStatus {
            name: name.into(),
            proto: proto.into(),
        };
        Status {
            running: true,
            pid: 4242,
            ini: "/srv/amy_uwsgi.ini".into(),
            phase: PhaseName::Running,
            uptime_s: 1.0,
            generation: 1,
            reloading: false,
            generations: Vec::new(),
            workers,
            templates: Vec::new(),
            sockets: vec![
                socket("/srv/amy.sock", "uwsgi"),
                socket("127.0.0.1:8000", "http"),
            ],
            master_rss_bytes: 0,
            last_reload: None,
            last_reload_unix: None,
            daemons: Vec::new(),
            crons: Vec::new(),
            cheaped: Vec::new(),
        }
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn keys_come_in_uwsgis_order() {
        let s = status(vec![worker(1, 100, 1, S::Idle, None)]);
        let doc = uwsgi_json(&s);
        assert_eq!(keys(&doc), TOP_KEYS);
        assert_eq!(keys(&doc["workers"][0]), WORKER_KEYS);
        assert_eq!(keys(&doc["workers"][0]["cores"][0]), CORE_KEYS);
        assert_eq!(
            keys(&doc["sockets"][0]),
            [
                "name",
                "proto",
                "queue",
                "max_queue",
                "shared",
                "can_offload"
            ]
        );
        // The rendered text keeps the order too (preserve_order), tab-indented.
        let text = String::from_utf8(render(&doc)).unwrap();
        let positions: Vec<usize> = TOP_KEYS
            .iter()
            .map(|k| text.find(&format!("\n\t\"{k}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|p| p[0] < p[1]), "{text}");
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn numbers_are_integers_and_strings_are_strings() {
        let s = status(vec![worker(1, 100, 1, S::Busy, Some(0.25))]);
        let doc = uwsgi_json(&s);
        for key in ["version", "cwd"] {
            assert!(doc[key].is_string(), "{key}");
        }
        for key in TOP_KEYS
            .iter()
            .filter(|k| !matches!(**k, "version" | "cwd" | "locks" | "sockets" | "workers"))
        {
            assert!(doc[key].is_u64(), "{key} = {}", doc[key]);
        }
        let w = &doc["workers"][0];
        for key in WORKER_KEYS
            .iter()
            .filter(|k| !matches!(**k, "status" | "apps" | "cores"))
        {
            assert!(w[key].is_u64(), "{key} = {}", w[key]);
        }
        assert_eq!(doc["pid"], 4242);
        assert_eq!(w["tx"], 1234);
        assert_eq!(w["rss"], 30_000_000u64);
        assert_eq!(w["running_time"], 500_000);
        assert_eq!(w["avg_rt"], 125_000);
        assert_eq!(w["last_spawn"], 1_700_000_000u64);
        assert_eq!(w["respawn_count"], 1);
        assert_eq!(w["harakiri_count"], 3);
        assert_eq!(doc["sockets"][1]["proto"], "http");
    }

    #[test]
    fn idle_busy_and_not_accepting_states_map_to_uwsgi_status() {
        let s = status(vec![
            worker(1, 101, 1, S::Idle, None),
            worker(2, 102, 1, S::Busy, Some(1.0)),
            worker(3, 103, 1, S::Booting, None),
            worker(4, 104, 1, S::Retiring, Some(2.0)),
        ]);
        let doc = uwsgi_json(&s);
        let got: Vec<(u64, &str, u64, u64)> = doc["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["id"].as_u64().unwrap(),
                    w["status"].as_str().unwrap(),
                    w["accepting"].as_u64().unwrap(),
                    w["cores"][0]["in_request"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, "idle", 1, 0),
                (2, "busy", 1, 1),
                (3, "idle", 0, 0),
                (4, "busy", 0, 1)
            ]
        );
    }

    #[test]
    fn a_slot_shared_during_a_chain_reload_is_listed_once() {
        let s = status(vec![
            worker(1, 201, 2, S::Booting, None),
            worker(1, 101, 1, S::Busy, Some(1.0)),
            worker(2, 102, 1, S::Retiring, None),
            worker(2, 202, 2, S::Idle, None),
        ]);
        let doc = uwsgi_json(&s);
        let pids: Vec<u64> = doc["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["pid"].as_u64().unwrap())
            .collect();
        assert_eq!(pids, [101, 202]);
    }

    #[test]
    fn no_request_data_or_environment_reaches_the_document() {
        // The status document names the ini and says why a reload failed (which
        // may quote the config); the stats document copies neither.
        let mut s = status(vec![worker(1, 100, 1, S::Busy, Some(0.1))]);
        s.ini = "/srv/canary-secret-7f3a9/amy_uwsgi.ini".into();
        s.last_reload = Some(ReloadReport {
            result: ReloadResult::Rejected,
            generation: None,
            reason: Some("x.ini:3: AMY_CANARY=canary-secret-7f3a9".into()),
        });
        let doc = uwsgi_json(&s);
        let text = String::from_utf8(render(&doc)).unwrap();
        assert!(!text.contains("canary"), "{text}");
        let core = &doc["workers"][0]["cores"][0];
        assert_eq!(core["vars"], json!([]));
        assert_eq!(core["req_info"], json!({}));
    }

    #[test]
    fn tcp_is_accepted_only_on_an_explicit_loopback_address() {
        for ok in [
            "127.0.0.1:9191",
            "localhost:9191",
            "[::1]:9191",
            "127.0.0.2:1",
        ] {
            assert!(
                matches!(parse_address(ok), Ok(StatsAddress::Loopback { .. })),
                "{ok}"
            );
        }
        for refused in [
            ":9191",
            "0.0.0.0:9191",
            "*:9191",
            "10.1.2.3:9191",
            "[::]:9191",
            "example.com:9191",
        ] {
            let e = parse_address(refused).unwrap_err();
            assert!(matches!(e, StatsError::NotLoopback(_)), "{refused}");
            assert!(e.to_string().contains("loopback"), "{e}");
        }
        assert!(matches!(
            parse_address("@stats"),
            Err(StatsError::Abstract(_))
        ));
        assert!(matches!(
            parse_address("127.0.0.1:x"),
            Err(StatsError::BadPort(_))
        ));
        assert_eq!(
            parse_address("/run/amy/stats.sock").unwrap(),
            StatsAddress::Unix("/run/amy/stats.sock".into())
        );
    }

    /// A stand-in master that answers every status request with `status`.
    use crate::supervisor::inbox::{ControlRequest, Input};

    fn fake_master(status: Status) -> Inbox {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Input>();
        tokio::spawn(async move {
            while let Some(input) = rx.recv().await {
                if let Input::Control(ControlRequest::Status(reply)) = input {
                    let _ = reply.send(status.clone());
                }
            }
        });
        tx
    }

    #[tokio::test]
    async fn a_unix_client_reads_the_document_until_eof_from_a_0600_socket() {
        let dir = std::env::temp_dir().join(format!("amy-stats-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stats.sock");
        let inbox = fake_master(status(vec![worker(1, 100, 1, S::Idle, None)]));
        let server = spawn_server(path.to_str().unwrap(), inbox).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        for _ in 0..2 {
            let doc: Value = serde_json::from_str(&server.read_answer().await).unwrap();
            assert_eq!(doc["workers"][0]["status"], "idle");
            assert_eq!(doc["sockets"][0]["name"], "/srv/amy.sock");
        }
        server.vacuum();
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_loopback_tcp_client_gets_the_document_and_a_wildcard_is_refused() {
        let inbox = fake_master(status(vec![]));
        assert!(matches!(
            spawn_server("0.0.0.0:0", inbox.clone()),
            Err(StatsError::NotLoopback(_))
        ));
        let server = spawn_server("127.0.0.1:0", inbox).unwrap();
        let doc: Value = serde_json::from_str(&server.read_answer().await).unwrap();
        assert_eq!(doc["pid"], 4242);
        assert_eq!(doc["workers"], json!([]));
    }
}
