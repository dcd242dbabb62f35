//! Request bodies are read whole before a worker is asked for anything, so a
//! slow upload occupies the router (a task and a buffer), never a Python worker.
//! Up to a limit in memory, beyond it in an anonymous temporary file; either way
//! the worker receives the body with a CONTENT_LENGTH, whether the client sent
//! `Content-Length` or `Transfer-Encoding: chunked`.

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use thiserror::Error;
use tokio::io::{AsyncWrite, AsyncWriteExt};

#[derive(Debug, Error)]
pub enum BodyError {
    #[error("client sent no body data for {0:?}")]
    Timeout(Duration),
    #[error("reading the request body: {0}")]
    Client(#[from] hyper::Error),
    #[error("buffering the request body to a temporary file: {0}")]
    Spool(std::io::Error),
}

/// A body read to its end.
pub enum Buffered {
    Memory(Vec<Bytes>, u64),
    /// An unlinked temporary file, and its length.
    File(std::fs::File, u64),
}

impl Buffered {
    pub fn len(&self) -> u64 {
        match self {
            Buffered::Memory(_, n) | Buffered::File(_, n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the body to the worker's connection.
    pub async fn send<W: AsyncWrite + Unpin>(self, to: &mut W) -> std::io::Result<()> {
        match self {
            Buffered::Memory(chunks, _) => {
                for c in chunks {
                    to.write_all(&c).await?;
                }
            }
            Buffered::File(file, _) => {
                let mut file = tokio::fs::File::from_std(file);
                tokio::io::copy(&mut file, to).await?;
            }
        }
        Ok(())
    }
}

/// Reads the whole body; `idle` bounds the wait for each piece of it.
pub async fn read_all(
    mut body: Incoming,
    memory_limit: u64,
    idle: Duration,
) -> Result<Buffered, BodyError> {
    let mut chunks = Vec::new();
    let mut total = 0u64;
    let mut file: Option<std::fs::File> = None;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout(idle)),
            Ok(None) => break,
            Ok(Some(frame)) => frame?,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: nothing to forward over uwsgi
        };
        total += data.len() as u64;
        if let Some(f) = file.as_mut() {
            write_blocking(f, data).await?;
            continue;
        }
        chunks.push(data);
        if total > memory_limit {
            let mut f = spool_file().map_err(BodyError::Spool)?;
            for c in chunks.drain(..) {
                write_blocking(&mut f, c).await?;
            }
            file = Some(f);
        }
    }
    match file {
        Some(mut f) => {
            f.seek(SeekFrom::Start(0)).map_err(BodyError::Spool)?;
            Ok(Buffered::File(f, total))
        }
        None => Ok(Buffered::Memory(chunks, total)),
    }
}

/// Writes one chunk to the spool file off the event loop (a disk can stall).
async fn write_blocking(f: &mut std::fs::File, data: Bytes) -> Result<(), BodyError> {
    let mut owned = f.try_clone().map_err(BodyError::Spool)?;
    tokio::task::spawn_blocking(move || owned.write_all(&data))
        .await
        .map_err(|e| BodyError::Spool(std::io::Error::other(e)))?
        .map_err(BodyError::Spool)
}

/// An anonymous file in `$TMPDIR` (or /tmp): O_TMPFILE, so it has no name and
/// vanishes with its descriptor whatever happens to the router.
fn spool_file() -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::var_os("TMPDIR").unwrap_or_else(|| "/tmp".into());
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
}
