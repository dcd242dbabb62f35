//! `http = ADDR`: uWSGI's HTTP router, as its own process.
//!
//! # Theory of operation
//! As in uWSGI, the router is a gateway process beside the workers: it speaks
//! HTTP/1.1 to clients (keep-alive, `Content-Length` and chunked bodies) and the
//! uwsgi protocol to the workers, one worker connection per request. The master
//! binds the public address (before the privilege drop) and, when the ini names no
//! uwsgi socket and no `http-to`, a private `127.0.0.1:0` uwsgi socket for the
//! workers, exactly as uWSGI does (`plugins/http/http.c`, `http_init`). It then
//! runs `amy-emperor router` (a hidden subcommand) with the listener inherited and
//! supervises it like a worker (`supervise.rs`).
//!
//! A request is read whole — head, then body (memory up to a limit, then an
//! anonymous temporary file) — before a worker is connected to, so slow clients
//! (slowloris, slow uploads) cost the router a task, never a Python worker.
//! The worker's response is streamed back; without a length, an HTTP/1.1 client
//! gets it chunked and keeps its connection.
//!
//! # Contract (master → router)
//! | what | where |
//! |---|---|
//! | the public listening socket | fd [`FD_LISTENER`] |
//! | read end of the master-alive pipe: EOF means the master is gone → exit | fd [`FD_MASTER_ALIVE`] |
//! | [`RouterConfig`] as JSON | env [`ENV_CONFIG`] |
//! | stdout/stderr | the master's log pipe |
//!
//! Signals: SIGTERM stops accepting, finishes in-flight requests (up to the
//! mercy) and exits 0; SIGINT/SIGQUIT exit at once.

pub mod backend;
pub mod body;
pub mod packet;
pub mod server;
pub mod supervise;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use backend::Address;

pub const FD_LISTENER: i32 = 3;
pub const FD_MASTER_ALIVE: i32 = 4;
pub const ENV_CONFIG: &str = "AMY_EMPEROR_ROUTER";

/// Everything the router process needs, sent by the master as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterConfig {
    /// The inherited listener is a unix socket (REMOTE_ADDR is then empty).
    pub listen_unix: bool,
    /// SERVER_PORT: the public address's port as written.
    pub server_port: String,
    /// Worker sockets (round-robin): `http-to`, else the instance's uwsgi socket.
    pub backends: Vec<Address>,
    /// `http-keepalive`: HTTP/1.1 keep-alive towards clients.
    pub keepalive: bool,
    /// `http-timeout`, seconds (uWSGI's default 60): each read or write of a
    /// client or worker must progress within it.
    pub timeout_secs: u64,
    /// `http-headers-timeout` (default: `http-timeout`): the whole request head
    /// must arrive within it (slowloris).
    pub headers_timeout_secs: Option<u64>,
    /// `http-connect-timeout` (default: `http-timeout`).
    pub connect_timeout_secs: Option<u64>,
    /// `http-modifier1` / `http-modifier2` in the uwsgi packet header.
    pub modifier1: u8,
    pub modifier2: u8,
    /// `http-var = KEY=VALUE` lines.
    pub vars: Vec<(String, String)>,
    /// `http-server-name-as-http-host`.
    pub server_name_as_http_host: bool,
    /// Request bodies beyond this many bytes go to a temporary file.
    pub body_memory_limit: u64,
    /// The largest request head accepted (bytes).
    pub max_head: usize,
    /// How long a graceful stop waits for in-flight requests (`worker-reload-mercy`).
    pub mercy_secs: u64,
}

impl RouterConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
    pub fn headers_timeout(&self) -> Duration {
        Duration::from_secs(
            self.headers_timeout_secs
                .unwrap_or(self.timeout_secs)
                .max(1),
        )
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(
            self.connect_timeout_secs
                .unwrap_or(self.timeout_secs)
                .max(1),
        )
    }
    pub fn mercy(&self) -> Duration {
        Duration::from_secs(self.mercy_secs)
    }
}

/// `amy-emperor router`: the process the master starts. Returns the exit code.
pub fn run_process() -> std::process::ExitCode {
    let config: RouterConfig = match std::env::var(ENV_CONFIG)
        .map_err(|e| e.to_string())
        .and_then(|j| serde_json::from_str(&j).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("amy-emperor router: no valid {ENV_CONFIG}: {e} (this command is started by the master)");
            return std::process::ExitCode::from(2);
        }
    };
    crate::proctitle::set_or_log("amy-emperor router");
    watch_master();
    let listener = server::inherited_listener();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("amy-emperor router: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, server::serve(config, listener));
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "router failed");
            std::process::ExitCode::from(1)
        }
    }
}

/// Exits when the master is gone (EOF on the alive pipe): a router must never
/// outlive its instance and keep a port bound.
fn watch_master() {
    use std::os::fd::FromRawFd;
    // SAFETY: the master places the alive pipe's read end at this fd (contract).
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(FD_MASTER_ALIVE) };
    std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        while let Err(nix::errno::Errno::EINTR) =
            nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut byte)
        {}
        std::process::exit(0);
    });
}
