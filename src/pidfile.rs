//! The pidfile: `"<pid>\n"`, written atomically and `flock`ed by the master for
//! its whole life.
//!
//! # Why a lock, and why `/proc/locks`
//! A pid alone proves nothing: after a crash the pid is reused by an unrelated
//! process, and uWSGI's `--stop` then signals it (or, for `abc`/`0`/`-1`, a whole
//! process group, and `-1` as root every process: `core/uwsgi.c` passes
//! `atoi(buf)` to `kill` with no range check). The master holds `LOCK_EX` on the
//! pidfile's inode, so:
//! - `acquire` refuses when the file is locked (a live master) and replaces it
//!   when it is not (stale);
//! - `inspect` hands out a pid only when `/proc/locks` shows *that pid* holding a
//!   flock on *that inode*. A reused pid holds no such lock.
//!
//! The new content is written to a temp file in the same directory, locked,
//! fsynced and renamed over the target, so the lock lives on the final inode and
//! readers never see an empty or partial file (a full disk fails before the
//! rename: row 28). Concurrent `acquire`s serialize on a lock on the directory.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The pidfile of a running master; the lock is released when this is dropped.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    file: Flock<File>,
    inode: (u64, u64),
}

#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    #[error("{path}: already running as pid {pid}", path = path.display())]
    AlreadyRunning { pid: i32, path: PathBuf },
    #[error("{path}: {op}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("{path}: invalid pidfile: {reason}", path = path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: names pid {pid}, but the file is locked by pid {holder}", path = path.display())]
    NotOurs {
        path: PathBuf,
        pid: i32,
        holder: i32,
    },
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> PidfileError {
    let path = path.to_owned();
    move |source| PidfileError::Io { path, op, source }
}

/// What a pidfile says about the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Running {
    /// The pid holds the flock on the pidfile: our live master.
    Master(i32),
    NotRunning,
    /// The file names this pid but nobody holds its lock: the master is gone
    /// (the pid may belong to an unrelated process now; never signal it).
    Stale(i32),
}

/// Takes the pidfile for this process: refuses when a live master holds it,
/// replaces a stale one. Same as [`reserve`] then [`Reserved::commit`].
pub fn acquire(path: &Path) -> Result<Pidfile, PidfileError> {
    reserve(path)?.commit()
}

/// A pidfile written and locked under a temporary name, not yet in place.
///
/// `start` reserves the pidfile, binds every socket, and only then commits: a
/// start refused half-way (a socket in use by another server, uWSGI for one,
/// whose pidfile carries no lock) leaves the file at `path` exactly as it found
/// it. Dropping a reservation removes the temporary file and nothing else.
/// Until the commit the directory stays locked, so a concurrent `start` waits
/// and then sees our lock.
#[derive(Debug)]
pub struct Reserved {
    path: PathBuf,
    tmp: PathBuf,
    /// `None` once committed (moved into the [`Pidfile`]).
    file: Option<(Flock<File>, (u64, u64))>,
    _dir_lock: Flock<File>,
}

/// Checks that no live master holds `path` and writes our pid, locked, beside it.
pub fn reserve(path: &Path) -> Result<Reserved, PidfileError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| PidfileError::Invalid {
        path: path.to_owned(),
        reason: "not a file name".to_owned(),
    })?;
    let dir_file = File::open(dir).map_err(io_err(path, "opening its directory"))?;
    // Two masters starting at once must not both replace the file.
    let dir_lock = Flock::lock(dir_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| io_err(path, "locking its directory")(e.into()))?;

    refuse_if_locked(path)?;

    let pid = std::process::id();
    let tmp = dir.join(format!(".{}.{pid}.tmp", name.to_string_lossy()));
    // A leftover from a crashed process with our pid; nobody else writes this name.
    let _ = std::fs::remove_file(&tmp);
    match write_locked(&tmp, pid) {
        Ok(file) => Ok(Reserved {
            path: path.to_owned(),
            tmp,
            file: Some(file),
            _dir_lock: dir_lock,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(io_err(path, "writing")(e))
        }
    }
}

impl Reserved {
    /// Renames the reserved file over `path`: from now on it is our pidfile.
    pub fn commit(mut self) -> Result<Pidfile, PidfileError> {
        if let Err(e) = std::fs::rename(&self.tmp, &self.path) {
            return Err(io_err(&self.path, "renaming into place")(e));
        }
        let (file, inode) = self.file.take().expect("a reservation commits once");
        Ok(Pidfile {
            path: self.path.clone(),
            file,
            inode,
        })
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn write_locked(tmp: &Path, pid: u32) -> io::Result<(Flock<File>, (u64, u64))> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)?;
    // Readable by the `status` of other users whatever the umask.
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    let mut file =
        Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| io::Error::from(e))?;
    file.write_all(format!("{pid}\n").as_bytes())?;
    file.sync_all()?;
    let meta = file.metadata()?;
    Ok((file, (meta.dev(), meta.ino())))
}

fn refuse_if_locked(path: &Path) -> Result<(), PidfileError> {
    let existing = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let existing = match existing {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        // A symlink: not something we wrote; the rename replaces the link itself.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(()),
        Err(e) => return Err(io_err(path, "opening")(e)),
    };
    let meta = existing.metadata().map_err(io_err(path, "stat"))?;
    match Flock::lock(existing, FlockArg::LockExclusiveNonblock) {
        // Stale: released again when dropped, just before our rename replaces it.
        Ok(_stale) => Ok(()),
        Err((mut f, Errno::EWOULDBLOCK)) => {
            let holder = flock_holders(meta.dev(), meta.ino()).into_iter().next();
            let pid = holder
                .or_else(|| read_content(&mut f).ok().and_then(|c| parse_pid(&c).ok()))
                .unwrap_or(0);
            Err(PidfileError::AlreadyRunning {
                pid,
                path: path.to_owned(),
            })
        }
        Err((_, e)) => Err(io_err(path, "locking")(e.into())),
    }
}

impl Pidfile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if the path still holds the inode we wrote (another
    /// instance may have replaced it), then releases the lock.
    pub fn remove_if_ours(self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.inode {
                let _ = std::fs::remove_file(&self.path);
            }
        }
        drop(self.file);
    }

    /// The lock's fd, for callers that must keep it out of children.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Reads a pidfile for `stop`/`status`/`reload`: a pid comes back only as
/// `Master` when it provably is our master.
pub fn inspect(path: &Path) -> Result<Running, PidfileError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Running::NotRunning),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(invalid(path, "is a symlink"));
        }
        Err(e) => return Err(io_err(path, "opening")(e)),
    };
    let meta = file.metadata().map_err(io_err(path, "stat"))?;
    if !meta.is_file() {
        return Err(invalid(path, "not a regular file"));
    }
    let content = read_content(&mut file).map_err(io_err(path, "reading"))?;
    let pid = parse_pid(&content).map_err(|reason| invalid(path, reason))?;
    let holders = flock_holders(meta.dev(), meta.ino());
    if holders.contains(&pid) {
        Ok(Running::Master(pid))
    } else if let Some(&holder) = holders.first() {
        Err(PidfileError::NotOurs {
            path: path.to_owned(),
            pid,
            holder,
        })
    } else {
        Ok(Running::Stale(pid))
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> PidfileError {
    PidfileError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Anything longer than this is not a pidfile we wrote.
const MAX_CONTENT: u64 = 32;

fn read_content(file: &mut File) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    file.take(MAX_CONTENT + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Exactly `"<digits>\n"`, no sign, no leading zero, 2..=i32::MAX. The content is
/// echoed in errors only when it is short and printable.
fn parse_pid(content: &[u8]) -> Result<i32, String> {
    let shown = || {
        if content.len() <= MAX_CONTENT as usize
            && content.iter().all(|b| b.is_ascii_graphic() || *b == b'\n')
        {
            format!("{:?}", String::from_utf8_lossy(content))
        } else {
            format!("{} bytes of unexpected content", content.len())
        }
    };
    let Some(digits) = content.strip_suffix(b"\n") else {
        return Err(format!("{} is not \"<pid>\\n\"", shown()));
    };
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits[0] == b'0' && digits.len() > 1)
    {
        return Err(format!("{} is not \"<pid>\\n\"", shown()));
    }
    let pid: i32 = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{} is out of range", shown()))?;
    if pid <= 1 {
        return Err(format!("pid {pid} can never be a master"));
    }
    Ok(pid)
}

/// Pids holding a flock on (dev, ino), from `/proc/locks`.
fn flock_holders(dev: u64, ino: u64) -> Vec<i32> {
    let Some(locks) = read_proc_locks() else {
        return Vec::new();
    };
    parse_proc_locks(&locks, libc::major(dev), libc::minor(dev), ino)
}

/// `/proc/locks` in one `read()`: it is a seq_file, and read in several calls
/// (as `read_to_string` does, starting small) it can skip entries when another
/// process takes or drops a lock between the calls — our master's lock among
/// them, which would make a live master look stale.
fn read_proc_locks() -> Option<String> {
    use std::io::Read;
    let mut size = 256 * 1024;
    loop {
        let mut file = File::open("/proc/locks").ok()?;
        let mut buf = vec![0u8; size];
        let n = file.read(&mut buf).ok()?;
        if n < size {
            buf.truncate(n);
            return String::from_utf8(buf).ok();
        }
        // Filled the buffer: there may be more; read it whole with a larger one.
        size *= 4;
        if size > 64 * 1024 * 1024 {
            return None;
        }
    }
}

/// Lines look like `3: FLOCK  ADVISORY  WRITE 2139 fd:01:1234 0 EOF` (major and
/// minor in hex, inode in decimal); waiters have `->` after the index.
fn parse_proc_locks(text: &str, major: u32, minor: u32, ino: u64) -> Vec<i32> {
    let mut holders = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace().skip(1);
        let Some(kind) = fields.next() else { continue };
        if kind != "FLOCK" {
            continue; // includes "->" (blocked waiters) and POSIX/OFDLCK locks
        }
        let (Some(_advisory), Some(_mode), Some(pid), Some(id)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mut parts = id.split(':');
        let (Some(maj), Some(min), Some(i), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let same = u32::from_str_radix(maj, 16) == Ok(major)
            && u32::from_str_radix(min, 16) == Ok(minor)
            && i.parse::<u64>() == Ok(ino);
        if let (true, Ok(pid)) = (same, pid.parse::<i32>()) {
            if pid > 1 && !holders.contains(&pid) {
                holders.push(pid);
            }
        }
    }
    holders
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use crate::testutil::TempDir;

    /// Kills the child by pid when the test ends, pass or fail.
    struct Reaped(Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn parse_accepts_only_pid_newline() {
        assert_eq!(parse_pid(b"1234\n"), Ok(1234));
        assert_eq!(parse_pid(b"2\n"), Ok(2));
        for bad in [
            &b""[..],
            b"\n",
            b"abc\n",
            b"abc",
            b"0\n",
            b"1\n",
            b"-1\n",
            b"+5\n",
            b"1234",
            b"12 34\n",
            b" 1234\n",
            b"1234\n\n",
            b"01234\n",
            b"99999999999999999999\n",
            b"2147483648\n",
        ] {
            assert!(parse_pid(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn proc_locks_lines_are_matched_on_device_and_inode() {
        let text = "1: POSIX  ADVISORY  WRITE 100 fd:01:555 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 200 fd:01:555 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 300 fd:01:555 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 400 fd:02:555 0 EOF\n\
                    4: FLOCK  ADVISORY  WRITE 500 fd:01:5555 0 EOF\n";
        assert_eq!(parse_proc_locks(text, 0xfd, 1, 555), vec![200]);
        assert!(parse_proc_locks(text, 0xfd, 1, 1).is_empty());
    }

    #[test]
    fn bad_contents_are_invalid() {
        let dir = TempDir::new("pid");
        let path = dir.0.join("amy.pid");
        for bad in [
            "abc",
            "",
            "0\n",
            "-1\n",
            "1\n",
            "99999999999999\n",
            "abc\n",
            "12",
        ] {
            std::fs::write(&path, bad).unwrap();
            let r = inspect(&path);
            assert!(
                matches!(r, Err(PidfileError::Invalid { .. })),
                "{bad:?} gave {r:?}"
            );
        }
    }

    #[test]
    fn missing_file_is_not_running() {
        let dir = TempDir::new("pid");
        assert_eq!(
            inspect(&dir.0.join("nope.pid")).unwrap(),
            Running::NotRunning
        );
    }

    #[test]
    fn symlink_and_directory_are_invalid() {
        let dir = TempDir::new("pid");
        let real = dir.0.join("real.pid");
        std::fs::write(&real, format!("{}\n", std::process::id())).unwrap();
        let link = dir.0.join("link.pid");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(inspect(&link), Err(PidfileError::Invalid { .. })));
        assert!(matches!(inspect(&dir.0), Err(PidfileError::Invalid { .. })));
    }

    #[test]
    fn foreign_live_pid_is_stale_not_master() {
        let dir = TempDir::new("pid");
        let path = dir.0.join("amy.pid");
        let decoy = Reaped(Command::new("sleep").arg("30").spawn().unwrap());
        let pid = decoy.0.id() as i32;
        std::fs::write(&path, format!("{pid}\n")).unwrap();
        assert_eq!(inspect(&path).unwrap(), Running::Stale(pid));
        // And a new master takes over the stale file.
        let ours = acquire(&path).unwrap();
        assert_eq!(
            inspect(&path).unwrap(),
            Running::Master(std::process::id() as i32)
        );
        ours.remove_if_ours();
    }

    #[test]
    fn acquire_writes_pid_and_holds_the_lock() {
        let dir = TempDir::new("pid");
        let path = dir.0.join("amy.pid");
        let me = std::process::id() as i32;
        let pf = acquire(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{me}\n"));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(inspect(&path).unwrap(), Running::Master(me));
        // No temp file left beside it.
        let names: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
        assert_eq!(names.len(), 1);

        match acquire(&path) {
            Err(PidfileError::AlreadyRunning { pid, .. }) => assert_eq!(pid, me),
            other => panic!("second acquire: {other:?}"),
        }
        // The refused attempt left the file and the lock alone.
        assert_eq!(inspect(&path).unwrap(), Running::Master(me));

        pf.remove_if_ours();
        assert!(!path.exists());
        assert_eq!(inspect(&path).unwrap(), Running::NotRunning);
    }

    #[test]
    fn dropping_the_pidfile_makes_it_stale() {
        let dir = TempDir::new("pid");
        let path = dir.0.join("amy.pid");
        let pf = acquire(&path).unwrap();
        drop(pf);
        let me = std::process::id() as i32;
        assert_eq!(inspect(&path).unwrap(), Running::Stale(me));
    }

    #[test]
    fn a_dropped_reservation_leaves_a_foreign_pidfile_as_it_was() {
        // uWSGI's pidfile: a live pid, no lock. A start refused after reserving
        // (its socket is in use) must not replace or remove it.
        let dir = TempDir::new("pid");
        let path = dir.0.join("amy.pid");
        std::fs::write(&path, "4242\n").unwrap();
        let reserved = reserve(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
        drop(reserved);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
        let names: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("amy.pid")],
            "no temp file left"
        );
    }

    #[test]
    fn a_committed_reservation_is_the_locked_pidfile() {
        let dir = TempDir::new("pid");
        let path = dir.0.join("amy.pid");
        let pf = reserve(&path).unwrap().commit().unwrap();
        let me = std::process::id() as i32;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{me}\n"));
        assert_eq!(inspect(&path).unwrap(), Running::Master(me));
        pf.remove_if_ours();
        assert!(!path.exists());
    }

    #[test]
    fn remove_if_ours_leaves_a_replaced_file() {
        let dir = TempDir::new("pid");
        let path = dir.0.join("amy.pid");
        let pf = acquire(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "4242\n").unwrap();
        pf.remove_if_ours();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
    }

    #[test]
    fn lock_held_by_another_process_is_its_master() {
        // Runs everywhere the suite runs: a missing flock(1) is a failure, not a pass.
        Command::new("flock")
            .arg("--version")
            .output()
            .expect("flock(1) from util-linux is needed by this test");
        let dir = TempDir::new("pid");
        let path = dir.0.join("amy.pid");
        std::fs::write(&path, "").unwrap();
        let holder = Reaped(
            Command::new("flock")
                .args(["-x", "-n"])
                .arg(&path)
                .args(["sleep", "30"])
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pid = holder.0.id() as i32;
        // flock(1) opens without truncating, so writing in place keeps its inode.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(format!("{pid}\n").as_bytes())
            .unwrap();
        poll("the flock holder", || {
            (inspect(&path).unwrap() == Running::Master(pid)).then_some(())
        });
        match acquire(&path) {
            Err(PidfileError::AlreadyRunning { pid: p, .. }) => assert_eq!(p, pid),
            other => panic!("acquire over a live master: {other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{pid}\n"));

        // A locked file naming some other pid is not proof of anything.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap()
            .write_all(format!("{}\n", std::process::id()).as_bytes())
            .unwrap();
        assert!(matches!(
            inspect(&path),
            Err(PidfileError::NotOurs { holder: h, .. }) if h == pid
        ));
    }

    #[test]
    fn concurrent_acquires_leave_exactly_one_winner() {
        let dir = TempDir::new("pid");
        let path = dir.0.join("amy.pid");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    acquire(&path)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
        assert_eq!(winners.len(), 1);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.dev(), meta.ino()), winners[0].inode);
    }

    /// A tiny tmpfs, unmounted when dropped. Mounting needs root, as the suite
    /// runs (CI does); without it the test fails rather than passing unexercised.
    struct TinyFs(TempDir);
    impl TinyFs {
        fn mount() -> Self {
            let dir = TempDir::new("pid");
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
                .arg(&dir.0)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "cannot mount a 16 KiB tmpfs on {}: this test needs root",
                dir.0.display()
            );
            TinyFs(dir)
        }
    }
    impl Drop for TinyFs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0 .0).status();
        }
    }

    #[test]
    fn full_disk_fails_without_leaving_an_empty_pidfile() {
        let fs = TinyFs::mount();
        let mut filler = File::create(fs.0 .0.join("filler")).unwrap();
        while filler.write_all(&[0u8; 4096]).is_ok() {}
        drop(filler);
        let path = fs.0 .0.join("amy.pid");
        let err = acquire(&path).unwrap_err();
        assert!(matches!(err, PidfileError::Io { .. }), "{err}");
        let left: Vec<_> = std::fs::read_dir(&fs.0 .0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("filler")]);
    }

    #[test]
    fn unwritable_directory_fails_without_leaving_a_file() {
        let dir = TempDir::new("pid");
        let path = dir.0.join("missing-dir").join("amy.pid");
        let err = acquire(&path).unwrap_err();
        assert!(matches!(err, PidfileError::Io { .. }), "{err}");
        assert!(err.to_string().contains("amy.pid"), "{err}");
    }
}
