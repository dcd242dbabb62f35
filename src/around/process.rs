//! Starting a daemon or cron command the way uWSGI does (`/bin/sh -c`), in a
//! session of its own, stdout and stderr on the master's log pipe, stdin from
//! /dev/null; and the task that reports its exit to the master loop.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::send_exit;
use crate::config::Config;
use crate::supervisor::inbox::Inbox;

pub struct Options {
    pub cwd: Option<PathBuf>,
    /// Keep the master's stdin (`stdin=1`); otherwise /dev/null.
    pub stdin: bool,
    /// PR_SET_PDEATHSIG: killed if the master dies.
    pub die_with_master: bool,
    pub uid: Option<String>,
    pub gid: Option<String>,
}

/// The environment of the serving generation, as workers get it (minus the
/// worker contract): the master's start-up environment, the env file, `env =`.
pub fn environment(base: &[(OsString, OsString)], config: &Config) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = base.to_vec();
    let mut set = |name: OsString, value: OsString| {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    };
    for var in &config.env {
        set(var.name.clone().into(), var.value.clone());
    }
    if let Some(home) = &config.home {
        set("VIRTUAL_ENV".into(), home.clone().into());
    }
    env
}

pub fn spawn_shell(
    command: &str,
    env: &[(OsString, OsString)],
    log: &OwnedFd,
    opts: &Options,
) -> io::Result<Child> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log.try_clone()?))
        .stdin(if opts.stdin {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    if let Some(dir) = &opts.cwd {
        cmd.current_dir(dir);
    }
    if let Some(g) = &opts.gid {
        let gid = crate::users::gid(g).map_err(|e| io::Error::other(e.to_string()))?;
        cmd.gid(gid.as_raw());
    }
    if let Some(u) = &opts.uid {
        let uid = crate::users::uid(u).map_err(|e| io::Error::other(e.to_string()))?;
        cmd.uid(uid.as_raw());
    }
    let die = opts.die_with_master;
    // SAFETY: the closure runs between fork and exec and makes only raw
    // syscalls (setsid, prctl, getppid): no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if die {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                // The master may have died between fork and prctl.
                if libc::getppid() == 1 {
                    libc::_exit(1);
                }
            }
            Ok(())
        });
    }
    cmd.kill_on_drop(false);
    let child = cmd.spawn()?;
    // Its exit status is its supervisor's, not an orphan for the reaper.
    if let Some(pid) = child.id() {
        crate::reaper::adopt(pid as i32);
    }
    Ok(child)
}

/// One task per process: its exit goes to the master loop.
pub fn watch(pid: i32, mut child: Child, inbox: Inbox) {
    tokio::spawn(async move {
        let status = child.wait().await;
        send_exit(&inbox, pid, status);
    });
}

/// Signals the process group led by `pid` (never pid <= 1).
pub fn signal_group(pid: i32, signal: i32) {
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid (the group) and a signal number; no memory involved.
    let r = unsafe { libc::kill(-pid, signal) };
    if r != 0 {
        // A group that is gone, or a pid that is not a group leader (an adopted
        // smart daemon that did not setsid): try the process itself.
        // SAFETY: as above, for the single process.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Whether the process group `pgid` still has a member.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: kill with signal 0 on a group only checks existence.
    pgid > 1 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// The pid a pidfile names if that process is alive (uWSGI's `uwsgi_check_pidfile`).
pub fn live_pid_in(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    if pid <= 1 {
        return None;
    }
    // SAFETY: kill with signal 0 only checks existence and permission.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // A zombie child of ours would count as alive; /proc tells.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    (alive && !zombie).then_some(pid)
}
