//! The emperor's executor: owns the directory watcher and the vassal processes,
//! turns signals, directory changes and child exits into [`Event`]s, and carries
//! out the [`Action`]s of [`Emperor`].

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::RecursiveMode;
use tokio::signal::unix::SignalKind;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::state::{Action, Emperor, Event, Exit, Sig};

/// What the sources send to the loop.
pub enum Input {
    Event(Event),
    /// Files in the directory were written, created, removed or renamed.
    DirChanged(Vec<PathBuf>),
}

type Inbox = mpsc::UnboundedSender<Input>;

pub struct Setup {
    /// Absolute.
    pub dir: PathBuf,
    /// This binary: each vassal runs `exe [vassal_args] start DIR/name`.
    pub exe: PathBuf,
    pub vassal_args: Vec<OsString>,
}

pub async fn run(setup: Setup) -> i32 {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Handlers first: a SIGTERM during start-up must stop us gracefully, not kill us.
    if let Err(e) = spawn_signal_sources(tx.clone()) {
        error!(error = %e, "cannot install signal handlers");
        return 1;
    }
    let _watcher = match watch_dir(&setup.dir, tx.clone()) {
        Ok(w) => w,
        Err(e) => {
            error!(dir = %setup.dir.display(), error = %e, "cannot watch the vassal directory");
            return 1;
        }
    };
    info!(dir = %setup.dir.display(), pid = std::process::id(), "emperor started");
    let mut emperor = Emperor::new();
    let mut local = VecDeque::new();
    // After the watch is set, so that no file created in between is missed.
    local.push_back(scan(&setup.dir, &[]));
    crate::systemd::notify("READY=1");
    loop {
        while let Some(event) = local.pop_front() {
            let mut outcomes = Vec::new();
            for action in emperor.handle(event, Instant::now()) {
                if let Action::Exit(code) = action {
                    info!("emperor stopped");
                    return code;
                }
                outcomes.extend(execute(&setup, &tx, action));
            }
            // Spawn outcomes go first, in order: the state machine expects them next.
            for outcome in outcomes.into_iter().rev() {
                local.push_front(outcome);
            }
        }
        let deadline = emperor.next_deadline();
        let input = tokio::select! {
            input = rx.recv() => input,
            () = sleep_until(deadline) => Some(Input::Event(Event::Tick)),
        };
        match input {
            Some(Input::Event(event)) => {
                if let Event::Signal(Sig::Term | Sig::Int) = event {
                    crate::systemd::notify("STOPPING=1");
                }
                local.push_back(event);
            }
            Some(Input::DirChanged(mut paths)) => {
                // One rescan for a burst of events (an editor's save is several).
                let mut others = Vec::new();
                while let Ok(next) = rx.try_recv() {
                    match next {
                        Input::DirChanged(more) => paths.extend(more),
                        Input::Event(e) => others.push(e),
                    }
                }
                local.push_back(scan(&setup.dir, &paths));
                local.extend(others);
            }
            // Every sender lives as long as this loop; unreachable in practice.
            None => return 1,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn execute(setup: &Setup, inbox: &Inbox, action: Action) -> Option<Event> {
    match action {
        Action::Spawn(name) => Some(match spawn_vassal(setup, inbox, &name) {
            Ok(pid) => Event::Spawned { name, pid },
            Err(e) => Event::SpawnFailed {
                name,
                error: e.to_string(),
            },
        }),
        Action::Signal { name, pid, signal } => {
            let sig = match signal {
                Sig::Hup => nix::sys::signal::Signal::SIGHUP,
                Sig::Term => nix::sys::signal::Signal::SIGTERM,
                Sig::Int => nix::sys::signal::Signal::SIGINT,
                Sig::Usr1 => nix::sys::signal::Signal::SIGUSR1,
            };
            // Our own child, not yet reaped (its exit is still to be reported), so
            // the pid cannot have been reused.
            if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
                warn!(vassal = %name, pid, error = %e, "cannot signal vassal");
            }
            None
        }
        Action::KillGroup { name, pid } => {
            if let Err(e) = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            ) {
                warn!(vassal = %name, pid, error = %e, "cannot kill vassal");
            }
            None
        }
        Action::Exit(_) => None,
    }
}

/// Starts `exe start DIR/name` and a task that reports its exit.
fn spawn_vassal(setup: &Setup, inbox: &Inbox, name: &str) -> std::io::Result<i32> {
    let mut cmd = tokio::process::Command::new(&setup.exe);
    cmd.args(&setup.vassal_args)
        .arg("start")
        .arg(setup.dir.join(name))
        // As uWSGI does: relative paths in a vassal's ini are relative to DIR.
        .current_dir(&setup.dir)
        .stdin(Stdio::null())
        // The emperor speaks to systemd; a vassal must not claim to be the service.
        .env_remove("NOTIFY_SOCKET")
        // Its own group: a Ctrl-C at the terminal reaches only the emperor, which
        // stops the vassals in order, and the group can be killed as one.
        .process_group(0)
        .kill_on_drop(false);
    // SAFETY: runs in the forked child before exec; prctl is async-signal-safe and
    // touches no memory. The spawning thread is the runtime's only thread, which
    // lives as long as the emperor, so the death signal means the emperor died.
    unsafe {
        cmd.pre_exec(|| {
            // If the emperor is killed outright, vassals stop gracefully rather than
            // linger unsupervised and hold their sockets and pidfiles against the
            // next emperor.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("the vassal exited before we saw its pid"))?
        as i32;
    let inbox = inbox.clone();
    let name = name.to_string();
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Code(-1),
            },
            Err(e) => {
                error!(vassal = %name, pid, error = %e, "cannot wait for vassal");
                Exit::Code(-1)
            }
        };
        let _ = inbox.send(Input::Event(Event::Exited { name, pid, status }));
    });
    Ok(pid)
}

fn spawn_signal_sources(inbox: Inbox) -> std::io::Result<()> {
    let table = [
        (SignalKind::hangup(), Sig::Hup),
        (SignalKind::terminate(), Sig::Term),
        (SignalKind::interrupt(), Sig::Int),
        (SignalKind::quit(), Sig::Int),
        (SignalKind::user_defined1(), Sig::Usr1),
    ];
    crate::signals::forward(&table, move |meaning| {
        inbox.send(Input::Event(Event::Signal(meaning))).is_ok()
    })
}

/// Watches DIR itself (not recursively): every vassal file is directly in it, and
/// a directory watch survives the rename-into-place that deploy tools do.
fn watch_dir(dir: &Path, inbox: Inbox) -> notify::Result<Box<dyn notify::Watcher + Send>> {
    let handler = move |result: notify::Result<notify::Event>| {
        let Ok(event) = result else {
            return;
        };
        // Vassal masters reading their ini must not look like changes.
        if let EventKind::Access(kind) = event.kind {
            if kind != AccessKind::Close(AccessMode::Write) {
                return;
            }
        }
        let _ = inbox.send(Input::DirChanged(event.paths));
    };
    let mut watcher: Box<dyn notify::Watcher + Send> =
        match notify::recommended_watcher(handler.clone()) {
            Ok(w) => Box::new(w),
            Err(e) => {
                warn!(error = %e, "inotify unavailable, polling the vassal directory every 2 s");
                let config = notify::Config::default()
                    .with_poll_interval(Duration::from_secs(2))
                    .with_compare_contents(false);
                Box::new(notify::PollWatcher::new(handler, config)?)
            }
        };
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// The vassal files now in `dir`, and which of them `paths` name.
fn scan(dir: &Path, paths: &[PathBuf]) -> Event {
    let mut present = BTreeSet::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                // metadata() follows symlinks: a symlinked vassal is a vassal.
                if is_vassal_name(&name) && entry.path().metadata().is_ok_and(|m| m.is_file()) {
                    present.insert(name);
                }
            }
        }
        Err(e) => warn!(dir = %dir.display(), error = %e, "cannot read the vassal directory"),
    }
    let changed = paths
        .iter()
        .filter(|p| p.parent() == Some(dir))
        .filter_map(|p| p.file_name()?.to_str())
        .filter(|n| present.contains(*n))
        .map(str::to_owned)
        .collect();
    Event::Scanned { present, changed }
}

/// `x.ini`, not hidden (editors' `.x.ini.swp`, a deploy tool's `.x.ini.tmp`), not
/// a backup (`x.ini~`, `x.ini.bak`).
pub fn is_vassal_name(name: &str) -> bool {
    !name.starts_with('.') && name.len() > ".ini".len() && name.ends_with(".ini")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_ini_files_are_vassals() {
        assert!(is_vassal_name("amy.ini"));
        assert!(is_vassal_name("amy.prod.ini"));
        for not in [
            ".amy.ini",
            "amy.ini~",
            "amy.ini.swp",
            "amy.yaml",
            ".ini",
            "ini",
        ] {
            assert!(!is_vassal_name(not), "{not}");
        }
    }

    #[test]
    fn scan_lists_files_and_the_changed_ones() {
        let dir = std::env::temp_dir().join(format!("amy-emperor-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub.ini")).unwrap();
        std::fs::write(dir.join("a.ini"), "").unwrap();
        std::fs::write(dir.join("b.ini"), "").unwrap();
        std::fs::write(dir.join("notes.txt"), "").unwrap();
        let event = scan(
            &dir,
            &[
                dir.join("b.ini"),
                dir.join("notes.txt"),
                dir.join("gone.ini"),
            ],
        );
        assert_eq!(
            event,
            Event::Scanned {
                present: ["a.ini", "b.ini"].iter().map(|s| s.to_string()).collect(),
                changed: ["b.ini"].iter().map(|s| s.to_string()).collect(),
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
