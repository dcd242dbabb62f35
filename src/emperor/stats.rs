//! `emperor-stats = ADDR`: uWSGI's emperor stats document (`version`, `pid`,
//! `emperor`, `vassals[]` with `id`, `pid`, `born`, `respawns` …, `blacklist`)
//! on a 0600 unix socket or a loopback TCP port, one JSON document per
//! connection, as uWSGI serves it. Each vassal's own `stats` socket still serves
//! its workers (DESIGN §8): this one only lists the vassals.

use std::os::fd::OwnedFd;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::executor::{Inbox, Input, Request};
use crate::config::{Protocol, SocketAddress, SocketSpec};
use crate::socket::{self, BindOptions, Listener};
use crate::stats::{parse_address, StatsAddress, StatsError};

pub struct Server {
    listener: Listener,
}

impl Server {
    pub fn local_address(&self) -> String {
        self.listener.local_address()
    }

    /// Removes the unix socket file if it is still the one we created.
    pub fn vacuum(&self) {
        socket::vacuum(&self.listener);
    }
}

/// Binds ADDR and serves it for the emperor's lifetime (inside its runtime).
pub fn spawn_server(addr: &str, inbox: Inbox) -> Result<Server, StatsError> {
    let address = match parse_address(addr)? {
        StatsAddress::Unix(path) => SocketAddress::Unix(path),
        StatsAddress::Loopback { host, port } => SocketAddress::Tcp { host, port },
    };
    let spec = SocketSpec {
        address,
        protocol: Protocol::Http,
        key: "emperor-stats".to_owned(),
        line: 0,
    };
    let opts = BindOptions {
        chmod: Some(0o600),
        chown: None,
        backlog: Some(64),
    };
    let (listener, _) = socket::bind(&spec, &opts).map_err(|source| StatsError::Bind {
        address: addr.to_owned(),
        source,
    })?;
    let io = |source| StatsError::Io {
        address: addr.to_owned(),
        source,
    };
    let fd: OwnedFd = listener.fd.try_clone().map_err(io)?;
    match &spec.address {
        SocketAddress::Unix(_) => {
            let std = std::os::unix::net::UnixListener::from(fd);
            std.set_nonblocking(true).map_err(io)?;
            let l = tokio::net::UnixListener::from_std(std).map_err(io)?;
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, _)) => {
                            tokio::spawn(answer(s, inbox.clone()));
                        }
                        Err(e) => backoff(e).await,
                    }
                }
            });
        }
        SocketAddress::Tcp { .. } => {
            let std = std::net::TcpListener::from(fd);
            // `localhost` is resolved by the system: check what was really bound.
            if !std.local_addr().map_err(io)?.ip().is_loopback() {
                return Err(StatsError::NotLoopback(addr.to_owned()));
            }
            std.set_nonblocking(true).map_err(io)?;
            let l = tokio::net::TcpListener::from_std(std).map_err(io)?;
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, _)) => {
                            tokio::spawn(answer(s, inbox.clone()));
                        }
                        Err(e) => backoff(e).await,
                    }
                }
            });
        }
    }
    let server = Server { listener };
    info!(address = %server.local_address(), "emperor stats server listening");
    Ok(server)
}

/// EMFILE and friends: back off instead of spinning.
async fn backoff(e: std::io::Error) {
    debug!(error = %e, "emperor stats accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn answer(mut stream: impl AsyncWrite + Unpin, inbox: Inbox) {
    let (reply, answer) = oneshot::channel::<Value>();
    if inbox
        .send(Input::Control {
            command: Request::Stats,
            reply,
        })
        .is_err()
    {
        return;
    }
    if let Ok(doc) = answer.await {
        let _ = stream.write_all(doc.to_string().as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}
