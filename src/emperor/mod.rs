//! Emperor mode (uWSGI's `--emperor`): `start --emperor DIR|GLOB`, or `start emperor.ini`
//! whose ini has `emperor =`. One vassal per matching `*.ini`, each a child
//! `amy-emperor start FILE` with its own master, sockets and pidfile, in its own
//! process group.
//!
//! Same shape as the master: sources (signals, the directory watcher, the
//! control and stats sockets, one task per vassal waiting for its exit) send
//! [`executor::Input`]s into one channel; one loop owns the [`state::Emperor`]
//! state machine and carries out its actions. [`config`] reads and classes the
//! emperor's own keys.
//!
//! What differs from uWSGI's emperor (reference/uwsgi.md §3): the directories are
//! watched with inotify, not polled by mtime every 3 s; a file edit is left to the
//! vassal's own master, which watches its ini and reloads gracefully; an ini that
//! is not a valid vassal (exit 2) is reported once and waits for the file to
//! change instead of being respawned forever; a vassal stopped on purpose (exit 0)
//! stays stopped until its file changes or the emperor gets SIGHUP; a removed
//! file and stopping the emperor stop vassals gracefully (in-flight requests
//! complete); the emperor pidfile is removed at exit.
//!
//! Control: the emperor's pidfile is locked like a master's, and `<pidfile>.ctl`
//! answers `status` (every vassal, with its master's workers and last reload,
//! asked from the vassal's own control socket) and `reload` (every vassal at
//! once, each outcome reported). Metrics stay per vassal: each vassal's `stats`
//! socket serves its workers; `emperor-stats` lists the vassals only.

pub mod config;
pub mod executor;
pub mod state;
pub mod stats;
