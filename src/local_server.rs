//! The small local servers the master and the emperor run (`stats`,
//! `prometheus`, `emperor-stats`): bind a unix socket or a TCP address, then
//! answer each connection once and close it.
//!
//! What they share lives here: the socket is created 0600 through
//! [`socket::bind`] (never wider, not even for a moment); a TCP address that
//! must be loopback is checked again on the address really bound (`localhost`
//! is resolved by the system); at most [`MAX_CLIENTS`] connections are answered
//! at once, the rest wait in the listen backlog, so a local flood cannot make
//! the owner build documents without bound; and accepting stops once the
//! owner's inbox is closed. Which addresses are allowed, what is read and
//! written, and how long a client may take stay with each owner.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::config::{Protocol, SocketAddress, SocketSpec};
use crate::socket::{self, BindOptions, Listener, SocketError};

/// Connections answered at once; more wait in the listen backlog.
pub const MAX_CLIENTS: usize = 8;

/// The listen backlog of every local server.
const BACKLOG: u32 = 64;

/// How long to wait after a failed accept (EMFILE and friends) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum LocalServerError {
    #[error(transparent)]
    Bind(#[from] SocketError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A loopback-only server whose address resolved to a non-loopback one.
    #[error("the address bound is not a loopback address")]
    NotLoopback,
}

/// One accepted connection, unix or TCP.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for T {}

pub type Client = Box<dyn ClientStream>;

/// A running server. Dropping it leaves the server running (it lives as long
/// as its owner); [`LocalServer::vacuum`] removes a unix socket file at exit.
#[derive(Debug)]
pub struct LocalServer {
    listener: Listener,
}

impl LocalServer {
    /// The path, or `host:port` with the real port.
    pub fn local_address(&self) -> String {
        self.listener.local_address()
    }

    /// Removes the unix socket file if it is still the one we created.
    pub fn vacuum(&self) {
        socket::vacuum(&self.listener);
    }

    /// What one client reads from the server, until EOF (the servers' tests).
    #[cfg(test)]
    pub async fn read_answer(&self) -> String {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        match &self.listener.spec.address {
            SocketAddress::Unix(path) => tokio::net::UnixStream::connect(path)
                .await
                .unwrap()
                .read_to_string(&mut text)
                .await
                .unwrap(),
            SocketAddress::Tcp { .. } => tokio::net::TcpStream::connect(self.local_address())
                .await
                .unwrap()
                .read_to_string(&mut text)
                .await
                .unwrap(),
        };
        text
    }
}

/// What to listen on: `key` names the server in socket errors and logs;
/// `loopback_only` refuses a TCP address that is not loopback once bound.
pub struct Listen {
    pub key: &'static str,
    pub address: SocketAddress,
    pub loopback_only: bool,
}

/// Binds `listen` and answers each connection with `answer(client, inbox)`
/// until `inbox` closes. Call inside the owner's tokio runtime.
pub fn spawn<T, F, Fut>(
    listen: Listen,
    inbox: UnboundedSender<T>,
    answer: F,
) -> Result<LocalServer, LocalServerError>
where
    T: Send + 'static,
    F: Fn(Client, UnboundedSender<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let spec = SocketSpec {
        address: listen.address,
        protocol: Protocol::Http,
        key: listen.key.to_owned(),
        line: 0,
    };
    let opts = BindOptions {
        chmod: Some(0o600),
        chown: None,
        backlog: Some(BACKLOG),
    };
    let (listener, _warnings) = socket::bind(&spec, &opts)?;
    let fd: OwnedFd = listener.fd.try_clone()?;
    let accepting = match &spec.address {
        SocketAddress::Unix(_) => {
            let std = std::os::unix::net::UnixListener::from(fd);
            std.set_nonblocking(true)?;
            Accepting::Unix(tokio::net::UnixListener::from_std(std)?)
        }
        SocketAddress::Tcp { .. } => {
            let std = std::net::TcpListener::from(fd);
            // `localhost` is resolved by the system: check what was really bound.
            if listen.loopback_only && !std.local_addr()?.ip().is_loopback() {
                return Err(LocalServerError::NotLoopback);
            }
            std.set_nonblocking(true)?;
            Accepting::Tcp(tokio::net::TcpListener::from_std(std)?)
        }
    };
    tokio::spawn(serve(listen.key, accepting, inbox, answer));
    Ok(LocalServer { listener })
}

enum Accepting {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

impl Accepting {
    async fn accept(&self) -> std::io::Result<Client> {
        Ok(match self {
            Accepting::Unix(l) => Box::new(l.accept().await?.0),
            Accepting::Tcp(l) => Box::new(l.accept().await?.0),
        })
    }
}

async fn serve<T, F, Fut>(
    key: &'static str,
    listener: Accepting,
    inbox: UnboundedSender<T>,
    answer: F,
) where
    T: Send + 'static,
    F: Fn(Client, UnboundedSender<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let client = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                debug!(server = key, error = %e, "local server accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if inbox.is_closed() {
            return;
        }
        let answering = answer(client, inbox.clone());
        tokio::spawn(async move {
            let _permit = permit;
            answering.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;

    fn unix(dir: &TempDir) -> Listen {
        Listen {
            key: "test",
            address: SocketAddress::Unix(dir.0.join("s.sock")),
            loopback_only: true,
        }
    }

    async fn say_answer(mut client: Client, _inbox: UnboundedSender<()>) {
        let _ = client.write_all(b"answer").await;
    }

    #[tokio::test]
    async fn more_clients_than_the_limit_wait_their_turn_and_each_gets_one_answer() {
        let dir = TempDir::new("local-server");
        let (inbox, _keep) = tokio::sync::mpsc::unbounded_channel::<()>();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (r, m) = (running.clone(), most.clone());
        let server = spawn(unix(&dir), inbox, move |mut client, _inbox| {
            let (running, most) = (r.clone(), m.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                let _ = client.write_all(b"answer").await;
                let _ = client.shutdown().await;
            }
        })
        .unwrap();
        let path = dir.0.join("s.sock");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let server = Arc::new(server);
        let clients: Vec<_> = (0..3 * MAX_CLIENTS)
            .map(|_| {
                let server = server.clone();
                tokio::spawn(async move { server.read_answer().await })
            })
            .collect();
        for c in clients {
            assert_eq!(c.await.unwrap(), "answer");
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=MAX_CLIENTS).contains(&most), "{most} at once");
        server.vacuum();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn once_the_owner_is_gone_a_client_gets_no_answer() {
        let dir = TempDir::new("local-server");
        let (inbox, owner) = tokio::sync::mpsc::unbounded_channel::<()>();
        let server = spawn(unix(&dir), inbox, say_answer).unwrap();
        assert_eq!(server.read_answer().await, "answer");
        drop(owner);
        assert_eq!(server.read_answer().await, "");
    }

    #[tokio::test]
    async fn a_loopback_tcp_client_gets_its_answer() {
        // Only loopback here: the tests bind nothing the network can reach.
        let (inbox, _keep) = tokio::sync::mpsc::unbounded_channel::<()>();
        let listen = Listen {
            key: "test",
            address: SocketAddress::Tcp {
                host: "127.0.0.1".to_owned(),
                port: 0,
            },
            loopback_only: true,
        };
        let server = spawn(listen, inbox, say_answer).unwrap();
        assert_eq!(server.read_answer().await, "answer");
    }
}
