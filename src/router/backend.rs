//! The worker side of the router: connect to a uwsgi socket, read the response
//! head the worker writes (`HTTP/1.x NNN reason`, headers, blank line), and
//! stream the rest of the connection back as the response body (a worker closes
//! the connection after each response, so EOF ends the body).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{Instant, Sleep};

/// Where a worker listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Address {
    Unix(PathBuf),
    /// `host:port` as `TcpStream::connect` takes it.
    Tcp(String),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Tcp(a) => f.write_str(a),
        }
    }
}

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("no connection to {0} within the connect timeout")]
    ConnectTimeout(String),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("the worker closed the connection before a response")]
    Closed,
    #[error("the worker's response head is malformed")]
    BadHead,
    #[error("talking to the worker: {0}")]
    Io(#[from] io::Error),
}

impl BackendError {
    /// 504 when the worker was too slow, 502 for everything else, as a proxy does.
    pub fn status(&self) -> hyper::StatusCode {
        match self {
            BackendError::ConnectTimeout(_) | BackendError::Timeout(_) => {
                hyper::StatusCode::GATEWAY_TIMEOUT
            }
            _ => hyper::StatusCode::BAD_GATEWAY,
        }
    }
}

pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Connects within `timeout`. A unix socket whose backlog is full refuses at
/// once with EAGAIN (TCP would retry the SYN): wait and retry until the timeout,
/// as the request would have waited in the backlog.
pub async fn connect(address: &Address, timeout: Duration) -> Result<Stream, BackendError> {
    let deadline = Instant::now() + timeout;
    let attempt = async {
        let mut pause = Duration::from_millis(1);
        loop {
            let result = match address {
                Address::Unix(p) => UnixStream::connect(p).await.map(Stream::Unix),
                Address::Tcp(a) => TcpStream::connect(a.as_str()).await.map(|s| {
                    let _ = s.set_nodelay(true);
                    Stream::Tcp(s)
                }),
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    };
    match tokio::time::timeout_at(deadline, attempt).await {
        Err(_) => Err(BackendError::ConnectTimeout(address.to_string())),
        Ok(Err(source)) => Err(BackendError::Connect {
            address: address.to_string(),
            source,
        }),
        Ok(Ok(s)) => Ok(s),
    }
}

/// The largest response head accepted from a worker (uWSGI's router: 64 KiB).
const MAX_HEAD: usize = 65536;
const MAX_HEADERS: usize = 256;

/// A response head as the worker wrote it.
pub struct Head {
    pub status: u16,
    pub reason: Option<Bytes>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Reads the response head; returns it and the body bytes read past it.
pub async fn read_head(
    stream: &mut Stream,
    timeout: Duration,
) -> Result<(Head, Bytes), BackendError> {
    let mut buf = Vec::with_capacity(8192);
    let read = async {
        loop {
            if buf.len() >= MAX_HEAD {
                return Err(BackendError::BadHead);
            }
            buf.reserve(8192);
            let n = stream.read_buf(&mut buf).await?;
            if n == 0 {
                return Err(BackendError::Closed);
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&buf) {
                Ok(httparse::Status::Partial) => continue,
                Err(_) => return Err(BackendError::BadHead),
                Ok(httparse::Status::Complete(len)) => {
                    let head = convert(&response)?;
                    let rest = Bytes::copy_from_slice(&buf[len..]);
                    return Ok((head, rest));
                }
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(BackendError::Timeout(timeout)),
        Ok(r) => r,
    }
}

fn convert(r: &httparse::Response<'_, '_>) -> Result<Head, BackendError> {
    let status = r.code.ok_or(BackendError::BadHead)?;
    let canonical = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    let reason = r
        .reason
        .filter(|r| Some(*r) != canonical && !r.is_empty())
        .map(|r| Bytes::copy_from_slice(r.as_bytes()));
    let mut headers = Vec::with_capacity(r.headers.len());
    for h in r.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| BackendError::BadHead)?;
        // Hop-by-hop headers describe the worker's connection, not the client's
        // (PEP 3333 forbids apps to send them); hyper frames the response itself.
        if is_hop_by_hop(&name) {
            continue;
        }
        let value = HeaderValue::from_bytes(h.value).map_err(|_| BackendError::BadHead)?;
        headers.push((name, value));
    }
    Ok(Head {
        status,
        reason,
        headers,
    })
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    use hyper::header::{CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == TE
        || name == TRAILER
        || name == UPGRADE
        || name.as_str() == "keep-alive"
}

/// The rest of the worker's connection as a response body. Each read must make
/// progress within `idle` (`http-timeout`), or the response is cut.
pub struct UpstreamBody {
    stream: Stream,
    first: Option<Bytes>,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    scratch: Box<[u8]>,
    done: bool,
}

impl UpstreamBody {
    pub fn new(stream: Stream, first: Bytes, idle: Duration) -> Self {
        UpstreamBody {
            stream,
            first: (!first.is_empty()).then_some(first),
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            scratch: vec![0u8; 65536].into_boxed_slice(),
            done: false,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let mut buf = ReadBuf::new(&mut this.scratch);
        match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                if n == 0 {
                    this.done = true;
                    return Poll::Ready(None);
                }
                let deadline = Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(buf.filled())))))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                ready!(this.timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the worker sent nothing within http-timeout",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
