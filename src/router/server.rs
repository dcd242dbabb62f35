//! The router process: accept HTTP/1.1 clients on the inherited listener, read
//! each request whole (head and body), then hand it to a worker over the uwsgi
//! protocol and stream the worker's response back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::backend::{self, Address, BackendError, UpstreamBody};
use super::body;
use super::packet::{self, PacketConfig, RequestLine};
use super::RouterConfig;

type RespBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

struct Shared {
    config: RouterConfig,
    server_name: String,
    next_backend: AtomicUsize,
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Runs the router on the listener `fd` until SIGTERM (graceful: in-flight
/// requests finish, idle connections close) or SIGINT/SIGQUIT (at once).
pub async fn serve(config: RouterConfig, fd: OwnedFd) -> std::io::Result<()> {
    let listener = if config.listen_unix {
        let std = std::os::unix::net::UnixListener::from(fd);
        std.set_nonblocking(true)?;
        Listener::Unix(UnixListener::from_std(std)?)
    } else {
        let std = std::net::TcpListener::from(fd);
        std.set_nonblocking(true)?;
        Listener::Tcp(TcpListener::from_std(std)?)
    };
    let server_name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let shared = Arc::new(Shared {
        config,
        server_name,
        next_backend: AtomicUsize::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let active = Arc::new(AtomicUsize::new(0));
    let drained = Arc::new(tokio::sync::Notify::new());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut quit = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::quit())?;
    info!(
        backends = shared.config.backends.len(),
        keepalive = shared.config.keepalive,
        "router ready"
    );
    loop {
        let accepted = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => return Ok(()),
            _ = quit.recv() => return Ok(()),
            a = accept(&listener) => a,
        };
        let (io, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        active.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let mut stop = stop_rx.clone();
        let active = active.clone();
        let drained = drained.clone();
        tokio::task::spawn_local(async move {
            let svc_shared = shared.clone();
            let peer = Arc::new(peer);
            let service = service_fn(move |req| {
                let shared = svc_shared.clone();
                let peer = peer.clone();
                async move { Ok::<_, Infallible>(handle(&shared, &peer, req).await) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .keep_alive(shared.config.keepalive)
                .header_read_timeout(shared.config.headers_timeout())
                .max_buf_size(shared.config.max_head.max(8192) + 4096);
            let conn = match io {
                Conn::Tcp(s) => builder
                    .serve_connection(TokioIo::new(s), service)
                    .into_dyn(),
                Conn::Unix(s) => builder
                    .serve_connection(TokioIo::new(s), service)
                    .into_dyn(),
            };
            run_connection(conn, &mut stop).await;
            if active.fetch_sub(1, Ordering::Relaxed) == 1 {
                drained.notify_waiters();
            }
        });
    }
    // Graceful: stop accepting (the listener closes with this scope's end, the
    // master keeps its own copy), let in-flight requests finish.
    drop(listener);
    let _ = stop_tx.send(true);
    let mercy = shared.config.mercy();
    let wait = async {
        while active.load(Ordering::Relaxed) > 0 {
            let notified = drained.notified();
            if active.load(Ordering::Relaxed) == 0 {
                break;
            }
            notified.await;
        }
    };
    tokio::select! {
        _ = wait => info!("router drained"),
        _ = tokio::time::sleep(mercy) => warn!(connections = active.load(Ordering::Relaxed), "router stop: mercy expired"),
        _ = int.recv() => {}
    }
    Ok(())
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// The peer as CGI wants it: (REMOTE_ADDR, REMOTE_PORT).
type Peer = (String, String);

async fn accept(listener: &Listener) -> std::io::Result<(Conn, Peer)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, addr): (_, SocketAddr) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((
                Conn::Tcp(s),
                (
                    addr.ip().to_canonical().to_string(),
                    addr.port().to_string(),
                ),
            ))
        }
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            Ok((Conn::Unix(s), (String::new(), String::new())))
        }
    }
}

/// A hyper connection behind one trait object, so TCP and unix clients share code.
trait GracefulConn: std::future::Future<Output = hyper::Result<()>> {
    fn shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConn for http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = RespBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

trait IntoDyn {
    fn into_dyn(self) -> std::pin::Pin<Box<dyn GracefulConn>>;
}

impl<T: GracefulConn + 'static> IntoDyn for T {
    fn into_dyn(self) -> std::pin::Pin<Box<dyn GracefulConn>> {
        Box::pin(self)
    }
}

async fn run_connection(
    mut conn: std::pin::Pin<Box<dyn GracefulConn>>,
    stop: &mut watch::Receiver<bool>,
) {
    tokio::select! {
        r = conn.as_mut() => { log_conn_end(r); return; }
        _ = stop.wait_for(|s| *s) => {}
    }
    // Finish the request in flight (if any), then close.
    conn.as_mut().shutdown();
    log_conn_end(conn.await);
}

fn log_conn_end(r: hyper::Result<()>) {
    if let Err(e) = r {
        debug!(error = %e, "client connection ended with an error");
    }
}

fn plain(status: StatusCode, text: &str) -> Response<RespBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{} {}\n", status.as_u16(), text)))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

async fn handle(shared: &Shared, peer: &Peer, req: Request<Incoming>) -> Response<RespBody> {
    let config = &shared.config;
    let (parts, incoming) = req.into_parts();
    let has_body = parts.headers.contains_key(hyper::header::CONTENT_LENGTH)
        || parts.headers.contains_key(hyper::header::TRANSFER_ENCODING);
    let buffered = match body::read_all(incoming, config.body_memory_limit, config.timeout()).await
    {
        Ok(b) => b,
        Err(e) => {
            debug!(error = %e, "request body not read");
            return plain(StatusCode::REQUEST_TIMEOUT, "Request Timeout");
        }
    };
    let uri = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let protocol = match parts.version {
        hyper::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let line = RequestLine {
        method: parts.method.as_str(),
        uri: &uri,
        protocol,
        remote_addr: &peer.0,
        remote_port: &peer.1,
    };
    let pconfig = PacketConfig {
        modifier1: config.modifier1,
        modifier2: config.modifier2,
        server_name: &shared.server_name,
        server_name_as_http_host: config.server_name_as_http_host,
        server_port: &config.server_port,
        extra_vars: &config.vars,
    };
    let length = (has_body || !buffered.is_empty()).then(|| buffered.len());
    let head = match packet::build(&line, &parts.headers, length, &pconfig) {
        Ok(h) => h,
        Err(e) => {
            debug!(error = %e, "request refused");
            return plain(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request Header Fields Too Large",
            );
        }
    };
    match forward(shared, head, buffered).await {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, uri = %parts.uri.path(), "worker unavailable");
            let status = e.status();
            plain(status, status.canonical_reason().unwrap_or(""))
        }
    }
}

/// Picks a worker socket (round-robin over `http-to` nodes; the next one on a
/// refused connection), sends the request and returns the streaming response.
async fn forward(
    shared: &Shared,
    head: Vec<u8>,
    body: body::Buffered,
) -> Result<Response<RespBody>, BackendError> {
    let config = &shared.config;
    let n = config.backends.len();
    let first = shared.next_backend.fetch_add(1, Ordering::Relaxed);
    let mut last_error = None;
    let mut stream = None;
    for i in 0..n {
        let address: &Address = &config.backends[(first + i) % n];
        match backend::connect(address, config.connect_timeout()).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        return Err(last_error.unwrap_or(BackendError::Closed));
    };
    let timeout = config.timeout();
    let send = async {
        stream.write_all(&head).await?;
        body.send(&mut stream).await?;
        stream.flush().await
    };
    match tokio::time::timeout(timeout, send).await {
        Err(_) => return Err(BackendError::Timeout(timeout)),
        Ok(r) => r?,
    }
    let (head, rest) = backend::read_head(&mut stream, timeout).await?;
    let mut response = Response::new(UpstreamBody::new(stream, rest, timeout).boxed_unsync());
    *response.status_mut() =
        StatusCode::from_u16(head.status).map_err(|_| BackendError::BadHead)?;
    if let Some(reason) = head.reason {
        if let Ok(r) = hyper::ext::ReasonPhrase::try_from(reason) {
            response.extensions_mut().insert(r);
        }
    }
    let headers = response.headers_mut();
    for (k, v) in head.headers {
        headers.append(k, v);
    }
    Ok(response)
}

/// The listener handed over by the master, as an owned descriptor.
pub fn inherited_listener() -> OwnedFd {
    // SAFETY: the master places the listening socket at this fd before exec
    // (the router contract); nothing else in this process owns it.
    unsafe { OwnedFd::from_raw_fd(super::FD_LISTENER) }
}
