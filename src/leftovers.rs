//! Processes the app left behind when the master stops.
//!
//! Every worker's environment carries [`MARKER`] with a value unique to this
//! master (its pid and start time, so a reused pid never matches). Whatever the
//! app spawns inherits it, including a daemon that made its own session and was
//! re-parented away from the worker, which the worker's process-group signal no
//! longer reaches. At stop the master looks for the marker in `/proc/*/environ`
//! and stops those processes: SIGTERM, then SIGKILL after a grace period.
//! (A cgroup per instance would also catch a process that cleared its
//! environment; this host's cgroups are v1 and not ours to write.)

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// The environment variable that marks an instance's processes.
pub const MARKER: &str = "AMY_EMPEROR_INSTANCE";

/// This master's marker value: `<pid>-<start time in clock ticks>`.
pub fn marker() -> &'static str {
    static VALUE: OnceLock<String> = OnceLock::new();
    VALUE.get_or_init(|| {
        let pid = std::process::id();
        format!("{pid}-{}", start_time(pid as i32).unwrap_or(0))
    })
}

fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the fields after the command name's closing parenthesis start at 3.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether `environ` (NUL-separated `NAME=value` entries) holds `MARKER=value`.
fn marked(environ: &[u8], value: &str) -> bool {
    let want = format!("{MARKER}={value}");
    environ.split(|b| *b == 0).any(|e| e == want.as_bytes())
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Live processes (not zombies) whose environment carries this master's marker.
pub fn find(value: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid > 1 && pid != me)
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| marked(&env, value))
                .unwrap_or(false)
        })
        .filter(|&pid| !zombie(pid))
        .collect()
}

/// Stops every process left with this master's marker: SIGTERM, then SIGKILL
/// for those still alive after `grace`. Returns how many were found.
pub fn stop_all(grace: Duration) -> usize {
    let value = marker();
    let found = find(value);
    if found.is_empty() {
        return 0;
    }
    info!(count = found.len(), pids = ?found, "stopping processes the app left behind");
    for &pid in &found {
        // SAFETY: kill(2) on a pid just proven (by its marker) to descend from our workers.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !find(value).is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = find(value);
    if !left.is_empty() {
        warn!(pids = ?left, "killing processes the app left behind that ignored SIGTERM");
        for &pid in &left {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    found.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_matches_whole_entries_only() {
        assert!(marked(b"A=1\0AMY_EMPEROR_INSTANCE=12-34\0B=2\0", "12-34"));
        assert!(!marked(b"AMY_EMPEROR_INSTANCE=12-345\0", "12-34"));
        assert!(!marked(b"XAMY_EMPEROR_INSTANCE=12-34\0", "12-34"));
        assert!(!marked(b"", "12-34"));
    }

    #[test]
    fn marker_is_pid_and_start_time() {
        let m = marker();
        let (pid, start) = m.split_once('-').unwrap();
        assert_eq!(pid, std::process::id().to_string());
        assert!(start.parse::<u64>().unwrap() > 0);
    }
}
