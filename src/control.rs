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
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

use crate::supervisor::inbox::{ControlCommand, ControlRequest, Inbox, Input};

/// The control socket of the instance whose pidfile is `pidfile`.
pub fn path_for(pidfile: &Path) -> PathBuf {
    let mut name = pidfile.as_os_str().to_owned();
    name.push(".ctl");
    PathBuf::from(name)
}

/// Accepts clients for the master's lifetime.
pub fn spawn_server(
    listener: std::os::unix::net::UnixListener,
    inbox: Inbox,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let inbox = inbox.clone();
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
                let answer = match command {
                    ControlCommand::Status => {
                        let (reply, answer) = oneshot::channel();
                        if inbox
                            .send(Input::Control(ControlRequest::Status(reply)))
                            .is_err()
                        {
                            return;
                        }
                        answer
                            .await
                            .ok()
                            .and_then(|s| serde_json::to_string(&s).ok())
                    }
                    ControlCommand::Reload => {
                        let (reply, answer) = oneshot::channel();
                        if inbox
                            .send(Input::Control(ControlRequest::Reload(reply)))
                            .is_err()
                        {
                            return;
                        }
                        answer
                            .await
                            .ok()
                            .and_then(|r| serde_json::to_string(&r).ok())
                    }
                };
                if let Some(mut text) = answer {
                    text.push('\n');
                    let _ = write.write_all(text.as_bytes()).await;
                }
            });
        }
    });
    Ok(())
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
