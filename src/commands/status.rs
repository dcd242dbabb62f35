//! `amy-emperor status [INI|--pidfile P] [--json]`, with LSB exit codes:
//! 0 running, 1 dead but pidfile exists, 3 not running, 4 unknown.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::{CommandError, Done};
use crate::cli::StatusArgs;
use crate::control;
use crate::pidfile::{self, Running};
use crate::supervisor::status::Status;

/// The LSB `status` exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lsb {
    Running,
    DeadWithPidfile,
    NotRunning,
    Unknown,
}

impl Lsb {
    pub fn code(self) -> u8 {
        match self {
            Lsb::Running => 0,
            Lsb::DeadWithPidfile => 1,
            Lsb::NotRunning => 3,
            Lsb::Unknown => 4,
        }
    }
}

/// What `status --json` prints: the master's document, or what is known
/// without one.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Report {
    Master(Box<Status>),
    /// An answer that is not a master's status (an emperor's): shown as it came.
    Other(serde_json::Value),
    /// A master holds the pidfile but did not answer.
    Unreachable {
        running: bool,
        pid: i32,
        error: String,
    },
    Down {
        running: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        stale_pid: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pidfile: Option<PathBuf>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl Report {
    fn down(stale_pid: Option<i32>, pidfile: Option<PathBuf>, error: Option<String>) -> Self {
        Report::Down {
            running: false,
            stale_pid,
            pidfile,
            error,
        }
    }
}

pub fn run(args: &StatusArgs) -> Result<Done, CommandError> {
    let (report, lsb) = match super::locate_pidfile(&args.target) {
        Err(e) => (Report::down(None, None, Some(e)), Lsb::Unknown),
        Ok(path) => match pidfile::inspect(&path) {
            Ok(Running::NotRunning) => (Report::down(None, None, None), Lsb::NotRunning),
            // A live pid that holds no lock is someone else's (uWSGI on the
            // same ini, or a reused pid): not "dead", and never ours to judge.
            Ok(Running::Stale(pid)) if std::path::Path::new(&format!("/proc/{pid}")).exists() => (
                Report::down(
                    Some(pid),
                    Some(path),
                    Some(format!("pid {pid} is alive but is not an amy-emperor master (another server, uWSGI for one, or a reused pid)")),
                ),
                Lsb::Unknown,
            ),
            Ok(Running::Stale(pid)) => (
                Report::down(Some(pid), Some(path), None),
                Lsb::DeadWithPidfile,
            ),
            Err(e) => (Report::down(None, None, Some(e.to_string())), Lsb::Unknown),
            Ok(Running::Master(pid)) => {
                let ctl = control::path_for(&path);
                match control::request::<serde_json::Value>(&ctl, "status", Duration::from_secs(5))
                {
                    Ok(value) => match serde_json::from_value::<Status>(value.clone()) {
                        Ok(status) => (Report::Master(Box::new(status)), Lsb::Running),
                        Err(_) => (Report::Other(value), Lsb::Running),
                    },
                    Err(e) => (
                        Report::Unreachable {
                            running: true,
                            pid,
                            error: e.to_string(),
                        },
                        Lsb::Running,
                    ),
                }
            }
        },
    };
    if args.json {
        let text = serde_json::to_string(&report).expect("the report always serializes");
        println!("{text}");
    } else {
        print!("{}", human(&report));
    }
    Ok(Done::Status(lsb))
}

fn human(report: &Report) -> String {
    let status = match report {
        Report::Master(status) => status,
        Report::Other(value) if super::emperor::is_emperor_answer(value) => {
            return super::emperor::human_status(value);
        }
        Report::Other(value) => {
            return serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
        }
        Report::Unreachable { pid, error, .. } => {
            return format!("running: master pid {pid}, {error}\n");
        }
        Report::Down {
            stale_pid, error, ..
        } => {
            let mut s = String::from("not running");
            if let Some(pid) = stale_pid {
                s += &format!(" (stale pidfile names pid {pid})");
            }
            if let Some(e) = error {
                s += &format!(": {e}");
            }
            return s + "\n";
        }
    };
    let mut s = format!(
        "running: master pid {}, {}, generation {}, up {:.0} s\n",
        status.pid,
        status.phase.as_str(),
        status.generation,
        status.uptime_s
    );
    if let Some(last) = &status.last_reload {
        s += &format!("last reload: {}", last.result.as_str());
        if let Some(reason) = &last.reason {
            s += &format!(": {reason}");
        }
        s += "\n";
    }
    for t in &status.templates {
        s += &format!(
            "template gen {}: pid {}, {}, rss {:.1} MiB\n",
            t.generation,
            t.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            t.state,
            t.rss_bytes as f64 / 1048576.0
        );
    }
    s += "worker  pid      gen  state     requests  rss MiB  request age\n";
    for w in &status.workers {
        let age = w
            .request_age_s
            .map(|a| format!("{a:.1} s"))
            .unwrap_or_else(|| "-".into());
        s += &format!(
            "{:<7} {:<8} {:<4} {:<9} {:<9} {:<8.1} {}\n",
            w.id,
            w.pid,
            w.generation,
            w.state.as_str(),
            w.requests,
            w.rss_bytes as f64 / 1048576.0,
            age
        );
    }
    if !status.workers.is_empty() {
        // Whether the request path runs the native uwsgi-vars parser (README
        // "Speed"): a Python that cannot load it, or AMY_EMPEROR_NO_NATIVE=1,
        // serves with the stdlib one, correctly but slower.
        let native = status.workers.iter().filter(|w| w.native).count();
        s += &format!(
            "uwsgi parser: native in {native} of {} workers{}\n",
            status.workers.len(),
            if native == 0 {
                " (the stdlib parser serves)"
            } else {
                ""
            }
        );
    }
    if !status.cheaped.is_empty() {
        let ids: Vec<String> = status.cheaped.iter().map(|i| i.to_string()).collect();
        s += &format!("cheaper: no worker in slots {}\n", ids.join(", "));
    }
    if !status.daemons.is_empty() {
        s += "daemon  pid      state     respawns  command\n";
        for d in &status.daemons {
            let pid = d.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
            let smart = if d.smart { " (smart)" } else { "" };
            s += &format!(
                "{:<7} {:<8} {:<9} {:<9} {}{smart}\n",
                "", pid, d.state, d.respawns, d.command
            );
        }
    }
    for c in &status.crons {
        let running = if c.running.is_empty() {
            "idle".to_string()
        } else {
            format!("running pid {:?}", c.running)
        };
        let unique = if c.unique { " (unique)" } else { "" };
        s += &format!("cron: {}{unique}: {running}\n", c.command);
    }
    s
}
