//! `master-fifo`: uWSGI's one-character command pipe for ops scripts
//! (`echo r > /run/app.fifo`). A source like the control socket: each command
//! becomes an event on the master's one channel.
//!
//! The fifo is created 0600 (as uWSGI's `mkfifo(path, S_IRUSR|S_IWUSR)`); a stale
//! fifo is reused, any other file at the path is refused and left alone. It is
//! opened read-write so the read end never sees EOF between writers.
//!
//! Commands (uWSGI `core/fifo.c`) and what they do here:
//! `r` graceful reload; `R`, `w`, `W`, `c` the same graceful reload (a reload here
//! always starts a new generation before the old one stops, so there is nothing
//! more brutal to offer); `q` graceful stop; `Q` fast stop; `l`, `L` reopen the
//! log; `s` stats to the log. Others (`f`, `p`, `P`, `E`, `B`, `S`, `+`, `-`,
//! `C`, `0`–`9`) are logged as not supported and ignored; newlines are ignored.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

use crate::supervisor::events::{Event, MasterSignal};
use crate::supervisor::inbox::{Inbox, Input};

#[derive(Debug, thiserror::Error)]
pub enum FifoError {
    #[error("{}: exists and is not a fifo; refusing to replace it", .0.display())]
    NotAFifo(PathBuf),
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, io::Error),
}

/// What one command byte means, if anything.
pub fn command(byte: u8) -> Option<Event> {
    Some(Event::Signal(match byte {
        b'r' | b'R' | b'w' | b'W' | b'c' => MasterSignal::Hup,
        b'q' => MasterSignal::Term,
        b'Q' => MasterSignal::Int,
        b'l' | b'L' => MasterSignal::Usr2,
        b's' => MasterSignal::Usr1,
        _ => return None,
    }))
}

/// Creates (or reuses) the fifo at `path`, mode 0600.
pub fn create(path: &Path) -> Result<OwnedFd, FifoError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(_) => return Err(FifoError::NotAFifo(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR)
                .map_err(|e| FifoError::Io(path.to_path_buf(), e.into()))?;
        }
        Err(e) => return Err(FifoError::Io(path.to_path_buf(), e)),
    }
    // A reused fifo keeps its mode: make it 0600 like a new one.
    nix::sys::stat::fchmodat(
        None,
        path,
        Mode::S_IRUSR | Mode::S_IWUSR,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| FifoError::Io(path.to_path_buf(), e.into()))?;
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| FifoError::Io(path.to_path_buf(), e.into()))?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Reads commands from the fifo and sends them to the master loop.
pub fn spawn_source(fd: OwnedFd, path: PathBuf, inbox: Inbox) -> io::Result<()> {
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        loop {
            let n = match rx.read(&mut buf).await {
                Ok(0) => continue,
                Ok(n) => n,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "master fifo read failed; closing it");
                    return;
                }
            };
            for &b in &buf[..n] {
                if b.is_ascii_whitespace() {
                    continue;
                }
                match command(b) {
                    Some(event) => {
                        info!(command = %(b as char), "master fifo command");
                        if inbox.send(Input::Event(event)).is_err() {
                            return;
                        }
                    }
                    None => {
                        warn!(command = %(b as char).escape_default(), "master fifo command not supported; ignored")
                    }
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_map_to_the_signals_that_do_the_same() {
        assert_eq!(command(b'r'), Some(Event::Signal(MasterSignal::Hup)));
        assert_eq!(command(b'q'), Some(Event::Signal(MasterSignal::Term)));
        assert_eq!(command(b'Q'), Some(Event::Signal(MasterSignal::Int)));
        assert_eq!(command(b'l'), Some(Event::Signal(MasterSignal::Usr2)));
        assert_eq!(command(b'f'), None);
        assert_eq!(command(b'5'), None);
    }

    #[test]
    fn create_refuses_a_regular_file_and_reuses_a_fifo() {
        let dir = std::env::temp_dir().join(format!("amy-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(create(&file), Err(FifoError::NotAFifo(_))));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x", "left alone");
        let fifo = dir.join("fifo");
        drop(create(&fifo).unwrap());
        drop(create(&fifo).unwrap());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&fifo).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
