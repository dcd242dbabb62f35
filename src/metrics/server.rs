//! The metrics endpoint: `GET /metrics` over HTTP/1.x, one response per
//! connection. Each connection asks the master loop for a rendered scrape
//! (through the channel, like the stats server); the loop computes it from the
//! scoreboards in shared memory, so it answers while every worker is busy.
//!
//! Where it listens: like `stats`, a unix socket (created 0600) or an explicit
//! loopback address; any other address needs `prometheus-public = true`, since
//! the endpoint has no authentication (request counts and worker pids are still
//! information about the site).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing::info;

use crate::config::SocketAddress;
use crate::local_server::{self, Client, Listen, LocalServer, LocalServerError};
use crate::socket::SocketError;
use crate::stats::{StatsAddress, StatsError};
use crate::supervisor::inbox::{ControlRequest, Inbox, Input};

const TIMEOUT: Duration = Duration::from_secs(5);
/// The request head we read at most.
const MAX_HEAD: usize = 8192;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("prometheus = {0}: the metrics endpoint has no authentication, so it listens only on a unix socket or a loopback address (127.0.0.1:PORT, localhost:PORT, [::1]:PORT) unless prometheus-public = true")]
    NotLoopback(String),
    #[error(
        "prometheus = {0}: abstract unix sockets have no file mode to restrict them; use a path"
    )]
    Abstract(String),
    #[error("prometheus = {0}: not a port number")]
    BadPort(String),
    #[error("prometheus = {address}: {source}")]
    Bind {
        address: String,
        source: SocketError,
    },
    #[error("prometheus = {address}: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
}

/// Parses `prometheus = ADDR`; `public` allows a non-loopback TCP address.
pub fn parse_address(addr: &str, public: bool) -> Result<SocketAddress, MetricsError> {
    match crate::stats::parse_address(addr) {
        Ok(StatsAddress::Unix(path)) => Ok(SocketAddress::Unix(path)),
        Ok(StatsAddress::Loopback { host, port }) => Ok(SocketAddress::Tcp { host, port }),
        Err(StatsError::NotLoopback(_)) if public => {
            let (host, port) = addr.rsplit_once(':').expect("a TCP address has ':'");
            let port = port
                .parse()
                .map_err(|_| MetricsError::BadPort(addr.to_owned()))?;
            Ok(SocketAddress::Tcp {
                host: host.to_owned(),
                port,
            })
        }
        Err(StatsError::NotLoopback(_)) => Err(MetricsError::NotLoopback(addr.to_owned())),
        Err(StatsError::Abstract(_)) => Err(MetricsError::Abstract(addr.to_owned())),
        Err(_) => Err(MetricsError::BadPort(addr.to_owned())),
    }
}

/// The running endpoint (see [`LocalServer`]); `vacuum` removes a unix socket at exit.
pub type MetricsServer = LocalServer;

/// Binds `prometheus = ADDR` and serves it for the master's life.
pub fn spawn_server(addr: &str, public: bool, inbox: Inbox) -> Result<MetricsServer, MetricsError> {
    let listen = Listen {
        key: "prometheus",
        address: parse_address(addr, public)?,
        loopback_only: !public,
    };
    let address = addr.to_owned();
    let server = local_server::spawn(listen, inbox, |client, inbox| async move {
        let _ = tokio::time::timeout(TIMEOUT, answer(client, &inbox)).await;
    })
    .map_err(|e| match e {
        LocalServerError::Bind(source) => MetricsError::Bind { address, source },
        LocalServerError::Io(source) => MetricsError::Io { address, source },
        LocalServerError::NotLoopback => MetricsError::NotLoopback(address),
    })?;
    info!(address = %server.local_address(), "metrics endpoint listening");
    Ok(server)
}

async fn answer(mut stream: Client, inbox: &Inbox) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD {
            break;
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let response = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let (reply, rx) = oneshot::channel();
            if inbox.send(Input::Control(ControlRequest::Metrics(reply))).is_err() {
                return;
            }
            let Ok(body) = rx.await else { return };
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            if method == "GET" {
                r.extend_from_slice(body.as_bytes());
            }
            r
        }
        _ => b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 23\r\nConnection: close\r\n\r\nonly GET /metrics here\n".to_vec(),
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}
