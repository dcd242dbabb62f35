//! amy-emperor: a process supervisor for Python WSGI apps that reads uWSGI's ini.
//!
//! Layout: `cli` (arguments), `commands/` (one file per subcommand), `config/`
//! (the uWSGI ini dialect and `uwsgi_env`), `supervisor/` (the master's state
//! machine and its executor), `worker/` (spawning workers and the master↔worker
//! contract), and the resources the master owns: `socket`, `pidfile`, `logs`,
//! `signals`, `watch`, `control`, `scoreboard`, `stats`, `metrics`, `privileges`,
//! `systemd`; `local_server` is the accept loop `stats`, `metrics` and
//! `emperor-stats` share; `router` is the `http =` HTTP router process and its
//! supervision.
//! See ARCHITECTURE.md.

pub mod around;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod emperor;
pub mod fifo;
pub mod leftovers;
pub mod local_server;
pub mod logs;
pub mod metrics;
pub mod pidfile;
pub mod privileges;
pub mod proctitle;
pub mod reaper;
pub mod reqcount;
pub mod router;
pub mod runtime;
pub mod scoreboard;
pub mod signals;
pub mod socket;
pub mod stats;
pub mod supervisor;
pub mod systemd;
#[cfg(test)]
mod testutil;
pub mod users;
pub mod watch;
pub mod worker;
