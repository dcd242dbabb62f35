//! Watching the config files (the ini, its includes, the env file, `touch-reload`
//! files, `fs-reload` paths and the entries of `fs-reload` directories) for the
//! reload trigger: inotify through the notify crate, a polling
//! fallback where inotify is unavailable (`AMY_EMPEROR_WATCH=poll` forces it).
//!
//! We watch each file's *parent directory*, never the file itself: editors and
//! deploy tools replace files by rename, which would orphan a watch on the old
//! inode. For a symlinked path (capistrano's `current -> releases/N`), the
//! directory holding each symlink is watched too, so a flip is seen. The watch set
//! is recomputed after every change, so it survives any number of replacements.
//!
//! Only writes count: our own reads of the files (open, close-nowrite, access)
//! are ignored, or every reload would trigger the next.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::RecursiveMode;

use crate::supervisor::events::Event;
use crate::supervisor::inbox::{Inbox, Input};

pub struct Watcher {
    inner: Box<dyn notify::Watcher + Send>,
    state: Arc<Mutex<WatchSet>>,
    paths: Vec<PathBuf>,
    /// Directories any of whose entries is a trigger (the emperor's vassal dirs).
    entry_dirs: Vec<PathBuf>,
}

/// What the notify callback matches events against.
#[derive(Default)]
struct WatchSet {
    /// Exact paths whose change is a trigger.
    names: HashSet<PathBuf>,
    /// Directories currently watched.
    dirs: HashSet<PathBuf>,
    /// A change to any entry directly in one of these is a trigger.
    entry_dirs: HashSet<PathBuf>,
}

impl Watcher {
    /// Watches `paths` for the master: each change is an
    /// [`Event::FilesChanged`] in its inbox.
    pub fn new(inbox: Inbox, paths: &[PathBuf]) -> notify::Result<Watcher> {
        Watcher::with_sink(paths, move |writing| {
            let _ = inbox.send(Input::Event(Event::FilesChanged { writing }));
        })
    }

    /// Watches `paths`, calling `sink(writing)` on each change that counts (from
    /// notify's thread): what the change means is the caller's business.
    pub fn with_sink(
        paths: &[PathBuf],
        sink: impl Fn(bool) + Clone + Send + 'static,
    ) -> notify::Result<Watcher> {
        let mut watcher = Watcher::build(move |writing, _| sink(writing))?;
        watcher.set_paths(paths);
        Ok(watcher)
    }

    /// Watches every entry directly in `dirs` (the emperor's vassal
    /// directories, not recursively), calling `sink(paths)` with the paths an
    /// event names: which files they are is the caller's business. A directory
    /// watch survives the rename-into-place deploy tools do.
    pub fn entries_of(
        dirs: &[PathBuf],
        sink: impl Fn(Vec<PathBuf>) + Clone + Send + 'static,
    ) -> notify::Result<Watcher> {
        let mut watcher = Watcher::build(move |_, paths| sink(paths))?;
        watcher.entry_dirs = dirs.to_vec();
        for dir in dirs {
            // Unlike a file's parent, a vassal directory must exist from the start.
            watcher.inner.watch(dir, RecursiveMode::NonRecursive)?;
        }
        watcher.refresh();
        Ok(watcher)
    }

    fn build(
        sink: impl Fn(bool, Vec<PathBuf>) + Clone + Send + 'static,
    ) -> notify::Result<Watcher> {
        let state = Arc::new(Mutex::new(WatchSet::default()));
        let filter = state.clone();
        let handler = move |result: notify::Result<notify::Event>| {
            let Ok(event) = result else {
                return;
            };
            let Some(writing) = classify(&event.kind) else {
                return;
            };
            let relevant = {
                let set = filter.lock().unwrap_or_else(|p| p.into_inner());
                event.paths.iter().any(|p| {
                    set.names.contains(p) || p.parent().is_some_and(|d| set.entry_dirs.contains(d))
                })
            };
            if relevant {
                sink(writing, event.paths);
            }
        };
        let poll = std::env::var("AMY_EMPEROR_WATCH").is_ok_and(|v| v == "poll");
        let inner: Box<dyn notify::Watcher + Send> = if poll {
            Box::new(poll_watcher(handler)?)
        } else {
            match notify::recommended_watcher(handler.clone()) {
                Ok(w) => Box::new(w),
                Err(e) => {
                    tracing::warn!(error = %e, "inotify unavailable, polling the config files every 2 s");
                    Box::new(poll_watcher(handler)?)
                }
            }
        };
        Ok(Watcher {
            inner,
            state,
            paths: Vec::new(),
            entry_dirs: Vec::new(),
        })
    }

    /// Watches the entries of exactly `dirs` from now on (the emperor's
    /// vassal directories, as a glob's directory wildcards match them; a
    /// master's `fs-reload` directories).
    pub fn set_entry_dirs(&mut self, dirs: &[PathBuf]) {
        self.entry_dirs = dirs.to_vec();
        self.refresh();
    }

    /// Watches exactly `paths` from now on.
    pub fn set_paths(&mut self, paths: &[PathBuf]) {
        self.paths = paths.to_vec();
        self.refresh();
    }

    /// Recomputes the watched directories (symlinks may point elsewhere now,
    /// directories may have been re-created).
    pub fn refresh(&mut self) {
        let mut names = HashSet::new();
        let mut dirs: HashSet<PathBuf> = self.entry_dirs.iter().cloned().collect();
        for path in &self.paths {
            for candidate in trigger_paths(path) {
                if let Some(parent) = candidate.parent() {
                    dirs.insert(parent.to_path_buf());
                }
                names.insert(candidate);
            }
        }
        // Never hold the filter's lock while calling into notify: its watch()
        // waits for notify's event thread, which may be inside our handler
        // waiting for that same lock.
        let previous =
            std::mem::take(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()).dirs);
        for gone in previous.difference(&dirs) {
            let _ = self.inner.unwatch(gone);
        }
        let mut watched = HashSet::new();
        for dir in &dirs {
            // Re-adding an existing inotify watch is cheap and re-arms a directory
            // that was deleted and created again.
            match self.inner.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir.clone());
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory")
                }
            }
        }
        let mut set = self.state.lock().unwrap_or_else(|p| p.into_inner());
        set.names = names;
        set.dirs = watched;
        set.entry_dirs = self.entry_dirs.iter().cloned().collect();
    }
}

fn poll_watcher<F: notify::EventHandler>(handler: F) -> notify::Result<notify::PollWatcher> {
    let config = notify::Config::default()
        .with_poll_interval(Duration::from_secs(2))
        .with_compare_contents(false);
    notify::PollWatcher::new(handler, config)
}

/// `Some(writing)` for a change that counts; `writing` is true while a writer may
/// still be filling the file (a data modification not yet followed by its close).
fn classify(kind: &EventKind) -> Option<bool> {
    match kind {
        EventKind::Modify(ModifyKind::Data(_)) => Some(true),
        EventKind::Modify(_) | EventKind::Create(_) | EventKind::Remove(_) => Some(false),
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(false),
        EventKind::Any | EventKind::Other => Some(false),
        EventKind::Access(_) => None,
    }
}

/// The path itself, every ancestor that is a symlink, and — when the path is a
/// symlink — the same for what it points to: a change to any of them changes
/// what the path refers to.
fn trigger_paths(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut next = Some(path.to_path_buf());
    // A bounded walk: a symlink loop must not hang the master.
    for _ in 0..8 {
        let Some(p) = next.take() else { break };
        let mut ancestor = p.parent();
        while let Some(a) = ancestor {
            if a.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
                && !out.contains(&a.to_path_buf())
            {
                out.push(a.to_path_buf());
            }
            ancestor = a.parent();
        }
        if let Ok(target) = std::fs::read_link(&p) {
            let base = p.parent().unwrap_or(Path::new("/"));
            next = Some(base.join(target));
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RenameMode};

    #[test]
    fn reads_do_not_trigger_and_writes_do() {
        assert_eq!(
            classify(&EventKind::Access(AccessKind::Open(AccessMode::Any))),
            None
        );
        assert_eq!(
            classify(&EventKind::Access(AccessKind::Close(AccessMode::Read))),
            None
        );
        assert_eq!(
            classify(&EventKind::Access(AccessKind::Close(AccessMode::Write))),
            Some(false)
        );
        assert_eq!(
            classify(&EventKind::Modify(ModifyKind::Data(DataChange::Any))),
            Some(true)
        );
        assert_eq!(
            classify(&EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any))),
            Some(false)
        );
        assert_eq!(
            classify(&EventKind::Modify(ModifyKind::Name(RenameMode::To))),
            Some(false)
        );
        assert_eq!(classify(&EventKind::Create(CreateKind::File)), Some(false));
    }

    #[test]
    fn a_symlinked_ancestor_is_a_trigger_too() {
        let dir = std::env::temp_dir().join(format!("amy-watch-{}", std::process::id()));
        let release = dir.join("releases/1");
        std::fs::create_dir_all(&release).unwrap();
        let current = dir.join("current");
        let _ = std::fs::remove_file(&current);
        std::os::unix::fs::symlink(&release, &current).unwrap();
        let ini = current.join("amy_uwsgi.ini");
        assert_eq!(trigger_paths(&ini), vec![current.clone(), ini.clone()]);
        // A symlinked ini whose target lies under the symlinked `current`.
        let link = dir.join("amy_uwsgi.ini");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&ini, &link).unwrap();
        assert_eq!(
            trigger_paths(&link),
            vec![link.clone(), current.clone(), ini.clone()]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
