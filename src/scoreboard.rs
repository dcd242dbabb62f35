//! Each worker's scoreboard: one shared page the worker writes with a single
//! `struct.pack_into` at the start and end of a request (plus a few aligned
//! counter stores), and the master reads for harakiri, `status` and the metrics.
//! No syscall per request, no message to the master (worker-speed.md lesson 5).
//! Layout: `worker::contract`.

use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::time::Duration;

use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::worker::contract::{
    SB_BY_LISTENER, SB_BY_STATUS, SB_FEATURES, SB_FEATURE_NATIVE, SB_HISTOGRAM, SB_HISTOGRAM_SLOTS,
    SB_IN_FLIGHT, SB_LISTENER_SLOTS, SB_SLOW, SB_STATUS_CLASSES, SCOREBOARD_REQ_MAX,
    SCOREBOARD_SIZE,
};

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
    pub counters: Counters,
    /// The worker parses uwsgi vars with the native module.
    pub native: bool,
}

/// The metric counters of one page (`contract`, offsets 256..).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub by_status: [u64; SB_STATUS_CLASSES],
    /// A gauge: not carried over when the worker is gone.
    pub in_flight: u64,
    pub slow: u64,
    /// Requests per bucket (not cumulative); the last used slot is +Inf.
    pub histogram: [u64; SB_HISTOGRAM_SLOTS],
    pub by_listener: [u64; SB_LISTENER_SLOTS],
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

    /// One aligned 8-byte read at `offset` (a multiple of 8 inside the page).
    fn u64_at(&self, offset: usize) -> u64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= SCOREBOARD_SIZE);
        // SAFETY: offset is 8-aligned and inside the page-aligned mapping;
        // volatile because the worker writes concurrently, and one aligned load
        // so a counter is never seen half-written.
        let v = unsafe { self.page.as_ptr().add(offset).cast::<u64>().read_volatile() };
        u64::from_le(v)
    }

    fn f64_at(&self, offset: usize) -> f64 {
        f64::from_bits(self.u64_at(offset))
    }

    pub fn read(&self) -> Reading {
        let mut text = [0u8; 256];
        for (i, byte) in text.iter_mut().enumerate().skip(40) {
            // SAFETY: i < 256 < SCOREBOARD_SIZE, inside the mapping; volatile
            // because the worker writes concurrently (a torn text is tolerated).
            *byte = unsafe { self.page.as_ptr().add(i).read_volatile() };
        }
        let len = (u16::from_le_bytes([text[40], text[41]]) as usize).min(SCOREBOARD_REQ_MAX);
        let start = self.f64_at(0);
        Reading {
            busy_since: (start > 0.0).then_some(start),
            requests: self.u64_at(8),
            tx_bytes: self.u64_at(16),
            busy_seconds: self.f64_at(24),
            exceptions: self.u64_at(32),
            request: String::from_utf8_lossy(&text[42..42 + len]).into_owned(),
            counters: self.counters(),
            native: self.u64_at(SB_FEATURES) & SB_FEATURE_NATIVE != 0,
        }
    }

    pub fn counters(&self) -> Counters {
        let mut c = Counters {
            in_flight: self.u64_at(SB_IN_FLIGHT),
            slow: self.u64_at(SB_SLOW),
            ..Counters::default()
        };
        for (i, v) in c.by_status.iter_mut().enumerate() {
            *v = self.u64_at(SB_BY_STATUS + 8 * i);
        }
        for (i, v) in c.histogram.iter_mut().enumerate() {
            *v = self.u64_at(SB_HISTOGRAM + 8 * i);
        }
        for (i, v) in c.by_listener.iter_mut().enumerate() {
            *v = self.u64_at(SB_BY_LISTENER + 8 * i);
        }
        c
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
        page[SB_BY_STATUS + 8..SB_BY_STATUS + 16].copy_from_slice(&6u64.to_le_bytes());
        page[SB_IN_FLIGHT..SB_IN_FLIGHT + 8].copy_from_slice(&1u64.to_le_bytes());
        page[SB_HISTOGRAM + 15 * 8..SB_HISTOGRAM + 16 * 8].copy_from_slice(&2u64.to_le_bytes());
        page[SB_BY_LISTENER + 56..SB_BY_LISTENER + 64].copy_from_slice(&3u64.to_le_bytes());
        nix::sys::uio::pwrite(&fd, &page, 0).unwrap();
        let r = board.read();
        assert_eq!(r.busy_since, Some(12.5));
        assert_eq!(r.requests, 7);
        assert_eq!(r.request, "GET /");
        assert_eq!(r.request_age(14.0), Some(Duration::from_millis(1500)));
        assert_eq!(r.counters.by_status, [0, 6, 0, 0, 0, 0]);
        assert_eq!(r.counters.in_flight, 1);
        assert_eq!(r.counters.histogram[15], 2);
        assert_eq!(r.counters.by_listener[7], 3);
        assert!(fd.as_raw_fd() > 2);
    }
}
