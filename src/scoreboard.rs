//! Each worker's scoreboard: one shared page the worker writes with a single
//! `struct.pack_into` at the start and end of a request, and the master reads
//! for harakiri and `status`. No syscall per request, no message to the master
//! (worker-speed.md lesson 5). Layout: `worker::contract`.

use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::time::Duration;

use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::worker::contract::{SCOREBOARD_REQ_MAX, SCOREBOARD_SIZE};

/// The master's read-only view of one worker's page.
pub struct Scoreboard {
    page: NonNull<u8>,
}

// SAFETY: the mapping is owned by this value and only read through volatile
// reads; sending it to another thread moves that ownership.
unsafe impl Send for Scoreboard {}

/// What the worker last wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// CLOCK_MONOTONIC seconds when the current request began; `None` when idle.
    pub busy_since: Option<f64>,
    pub requests: u64,
    pub tx_bytes: u64,
    pub busy_seconds: f64,
    pub exceptions: u64,
    /// "METHOD PATH" of the current request.
    pub request: String,
}

impl Reading {
    /// How long the current request has run, against `now` (CLOCK_MONOTONIC seconds).
    pub fn request_age(&self, now: f64) -> Option<Duration> {
        self.busy_since
            .map(|t| Duration::from_secs_f64((now - t).max(0.0)))
    }
}

impl Scoreboard {
    /// Creates a zeroed page; the returned fd is handed to the worker.
    pub fn create() -> std::io::Result<(Scoreboard, OwnedFd)> {
        let fd = memfd_create(c"amy-scoreboard", MemFdCreateFlag::MFD_CLOEXEC)?;
        nix::unistd::ftruncate(&fd, SCOREBOARD_SIZE as i64)?;
        // SAFETY: a fresh shared mapping of a memfd we own, sized above; nothing
        // else in this process aliases it.
        let page = unsafe {
            mmap(
                None,
                std::num::NonZeroUsize::new(SCOREBOARD_SIZE).expect("non-zero size"),
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                fd.as_fd(),
                0,
            )?
        };
        Ok((Scoreboard { page: page.cast() }, fd))
    }

    pub fn read(&self) -> Reading {
        let mut raw = [0u8; SCOREBOARD_SIZE];
        for (i, byte) in raw.iter_mut().enumerate() {
            // SAFETY: i < SCOREBOARD_SIZE, inside the mapping; volatile because the
            // worker writes concurrently (a torn read is tolerated, see contract).
            *byte = unsafe { self.page.as_ptr().add(i).read_volatile() };
        }
        let f64_at = |o: usize| f64::from_le_bytes(raw[o..o + 8].try_into().expect("8 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(raw[o..o + 8].try_into().expect("8 bytes"));
        let start = f64_at(0);
        let len = (u16::from_le_bytes([raw[40], raw[41]]) as usize).min(SCOREBOARD_REQ_MAX);
        Reading {
            busy_since: (start > 0.0).then_some(start),
            requests: u64_at(8),
            tx_bytes: u64_at(16),
            busy_seconds: f64_at(24),
            exceptions: u64_at(32),
            request: String::from_utf8_lossy(&raw[42..42 + len]).into_owned(),
        }
    }
}

impl Drop for Scoreboard {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `create` with this size and is not
        // used after drop.
        let _ = unsafe { munmap(self.page.cast(), SCOREBOARD_SIZE) };
    }
}

/// CLOCK_MONOTONIC now, in seconds: the clock the worker's `time.monotonic()` uses.
pub fn monotonic_now() -> f64 {
    let ts =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn reads_what_a_writer_of_the_same_memfd_wrote() {
        let (board, fd) = Scoreboard::create().unwrap();
        assert_eq!(board.read(), Reading::default());
        let mut page = vec![0u8; SCOREBOARD_SIZE];
        page[0..8].copy_from_slice(&12.5f64.to_le_bytes());
        page[8..16].copy_from_slice(&7u64.to_le_bytes());
        page[40..42].copy_from_slice(&5u16.to_le_bytes());
        page[42..47].copy_from_slice(b"GET /");
        nix::sys::uio::pwrite(&fd, &page, 0).unwrap();
        let r = board.read();
        assert_eq!(r.busy_since, Some(12.5));
        assert_eq!(r.requests, 7);
        assert_eq!(r.request, "GET /");
        assert_eq!(r.request_age(14.0), Some(Duration::from_millis(1500)));
        assert!(fd.as_raw_fd() > 2);
    }
}
