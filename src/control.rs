//! The control socket: how `status` and `reload` talk to a running master.
//!
//! A unix socket beside the pidfile (`<pidfile>.ctl`, mode 0600). A client sends
//! one line (`status` or `reload`) and reads one JSON document until EOF. `reload`
//! answers only when the outcome is known, which is what lets a deploy script
//! wait for it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

use crate::supervisor::inbox::{ControlCommand, ControlRequest, Inbox, Input};

/// The control socket of the instance whose pidfile is `pidfile`.
pub fn path_for(pidfile: &Path) -> PathBuf {
    let mut name = pidfile.as_os_str().to_owned();
    name.push(".ctl");
    PathBuf::from(name)
}

/// Accepts clients for the master's lifetime; the master answers in its loop.
pub fn spawn_server(
    listener: std::os::unix::net::UnixListener,
    inbox: Inbox,
) -> std::io::Result<()> {
    serve(listener, move |command, reply| match command {
        ControlCommand::Status => forward(&inbox, ControlRequest::Status, reply),
        ControlCommand::Reload => forward(&inbox, ControlRequest::Reload, reply),
    })
}

/// Sends a typed request to the master and relays its answer, as JSON, to
/// `reply`. False once the master's loop is gone.
fn forward<T: serde::Serialize + Send + 'static>(
    inbox: &Inbox,
    request: fn(oneshot::Sender<T>) -> ControlRequest,
    reply: oneshot::Sender<Value>,
) -> bool {
    let (typed, answer) = oneshot::channel();
    if inbox.send(Input::Control(request(typed))).is_err() {
        return false;
    }
    tokio::spawn(async move {
        if let Ok(Ok(value)) = answer.await.map(serde_json::to_value) {
            let _ = reply.send(value);
        }
    });
    true
}

/// Accepts clients for the process's lifetime (a master's or an emperor's);
/// each command is handed to `forward` with the sender its answer goes to
/// (`forward` returns false once the loop is gone). The answer is written as
/// one JSON line, then the connection closes.
pub fn serve<F>(listener: std::os::unix::net::UnixListener, forward: F) -> std::io::Result<()>
where
    F: Fn(ControlCommand, oneshot::Sender<Value>) -> bool + Clone + Send + 'static,
{
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let forward = forward.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(read);
                let read =
                    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
                let command = match read {
                    Ok(Ok(_)) => ControlCommand::parse(line.trim()),
                    _ => None,
                };
                let Some(command) = command else {
                    let _ = write.write_all(b"{\"error\":\"unknown command\"}\n").await;
                    return;
                };
                let (reply, answer) = oneshot::channel();
                if !forward(command, reply) {
                    return;
                }
                if let Ok(value) = answer.await {
                    let mut text = value.to_string();
                    text.push('\n');
                    let _ = write.write_all(text.as_bytes()).await;
                }
            });
        }
    });
    Ok(())
}

/// Binds `<pidfile>.ctl` (mode 0600), for an emperor (a master binds its
/// own in `start`, between its pidfile reservation and its sockets).
pub fn bind(pidfile: &Path) -> Result<(std::os::unix::net::UnixListener, PathBuf), String> {
    let ctl = path_for(pidfile);
    let spec = crate::config::SocketSpec {
        address: crate::config::SocketAddress::Unix(ctl.clone()),
        protocol: crate::config::Protocol::Http,
        key: "control".into(),
        line: 0,
    };
    let options = crate::socket::BindOptions {
        chmod: Some(0o600),
        chown: None,
        backlog: Some(16),
    };
    let (listener, _) =
        crate::socket::bind(&spec, &options).map_err(|e| format!("control socket: {e}"))?;
    Ok((std::os::unix::net::UnixListener::from(listener.fd), ctl))
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no master answers on {0}")]
    NotRunning(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: the master closed the connection without an answer")]
    NoAnswer(PathBuf),
    #[error("{path}: unexpected answer: {text}")]
    Unexpected { path: PathBuf, text: String },
}

/// Sends `command` and waits up to `timeout` for the answer.
pub fn request<T: DeserializeOwned>(
    path: &Path,
    command: &str,
    timeout: Duration,
) -> Result<T, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream =
        UnixStream::connect(path).map_err(|_| ControlError::NotRunning(path.to_owned()))?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(io)?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(io)?;
    let value: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|_| ControlError::NoAnswer(path.to_owned()))?;
    serde_json::from_value(value).map_err(|_| ControlError::Unexpected {
        path: path.to_owned(),
        text: text.trim().to_owned(),
    })
}
