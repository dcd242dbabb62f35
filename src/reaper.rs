//! Reaping the orphans a child subreaper inherits.
//!
//! The master is a child subreaper (preload: the workers a template forks are
//! re-parented to it). So is the emperor as PID 1. The price: every process an
//! app daemonizes (double fork, `setsid`, a `nohup … &` in a hook) is
//! re-parented to us too when its parent exits, and a zombie nobody waits for
//! holds its pid and a process-table slot until we exit.
//!
//! Our own children have owners that need their exit status (tokio's `Child`,
//! a pidfd watcher). So every process we start or adopt is [`adopt`]ed here
//! with its start time, and on SIGCHLD [`reap_orphans`] waits only for zombie
//! children that are not adopted. A live orphan is left alone until it exits;
//! the start time keeps a reused pid from passing for the process we adopted.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Pid → start time (`/proc/PID/stat` field 22) of the processes we own.
static OWNED: Mutex<BTreeMap<i32, u64>> = Mutex::new(BTreeMap::new());

/// Marks `pid` as ours: its exit status belongs to whoever waits for it.
/// Call right after the spawn, before the loop polls again (the loop is the
/// only caller of [`reap_orphans`], so nothing can reap it in between).
pub fn adopt(pid: i32) {
    if pid <= 1 {
        return;
    }
    let start = start_time(pid).unwrap_or(0);
    if let Ok(mut owned) = OWNED.lock() {
        owned.insert(pid, start);
    }
}

/// Waits for every zombie child that nobody owns; returns how many. Entries
/// for processes that are gone are dropped on the way, so the table holds only
/// live children.
pub fn reap_orphans() -> usize {
    let children = children();
    let Ok(mut owned) = OWNED.lock() else {
        return 0;
    };
    owned.retain(|pid, start| start_time(*pid).is_some_and(|s| s == *start || *start == 0));
    let mut reaped = 0;
    for pid in children {
        let ours = owned
            .get(&pid)
            .is_some_and(|&start| start == 0 || start_time(pid) == Some(start));
        if ours || !is_zombie(pid) {
            continue;
        }
        let target = nix::unistd::Pid::from_raw(pid);
        if let Ok(status) =
            nix::sys::wait::waitpid(target, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
        {
            tracing::debug!(pid, ?status, "orphan reaped");
            reaped += 1;
        }
    }
    reaped
}

/// Our direct children, from `/proc/self/task/*/children` (a child belongs to
/// the thread that forked it, or to any thread once re-parented).
fn children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses, so it is skipped up to the last `)`).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

pub fn is_zombie(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().map(String::as_str) == Some("Z"))
}

/// Field 22, the start time in clock ticks since boot (field 3 is index 0 here).
fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces_and_parens() {
        // Our own stat: running (R) or sleeping (S), never a zombie, and a start time.
        let me = std::process::id() as i32;
        assert!(!is_zombie(me));
        assert!(start_time(me).is_some_and(|t| t > 0));
        assert!(start_time(i32::MAX).is_none());
    }
}
