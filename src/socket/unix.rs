//! Unix sockets: bound in a private staging directory, given their mode and
//! owner there, then renamed onto the target (see the module above for why);
//! what is already at the target decides whether we may replace it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags};
use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use super::{listen, BindOptions, SocketError, MAX_UNIX_PATH};
use crate::config::ChownSpec;
use crate::users;

/// What is at a unix socket's target path before we bind.
#[derive(Debug, PartialEq, Eq)]
enum Existing {
    Nothing,
    StaleSocket,
}

fn inspect_target(path: &Path, address: &str) -> Result<Existing, SocketError> {
    let st = match nix::sys::stat::lstat(path) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(Existing::Nothing),
        Err(e) => return Err(SocketError::io(address, "lstat", e)),
    };
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let kind = match kind {
        SFlag::S_IFSOCK => return probe_socket(path, address),
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a fifo",
        _ => "a special file",
    };
    Err(SocketError::NotASocket {
        path: path.to_owned(),
        kind,
    })
}

/// A socket file is live if something accepts on it. Non-blocking, so a live
/// server with a full backlog (EAGAIN) cannot hang us and still counts as live.
fn probe_socket(path: &Path, address: &str) -> Result<Existing, SocketError> {
    let fd = sock::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| SocketError::io(address, "socket", e))?;
    let addr = UnixAddr::new(path).map_err(|e| SocketError::io(address, "socket address", e))?;
    match sock::connect(fd.as_raw_fd(), &addr) {
        Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => Err(SocketError::InUse {
            address: address.to_owned(),
        }),
        Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => Ok(Existing::StaleSocket),
        Err(e) => Err(SocketError::io(
            address,
            "checking whether a server is running on it",
            e,
        )),
    }
}

/// The private directory a unix socket is prepared in; removed (with the socket
/// if it is still inside) when dropped.
struct Staging {
    dir_path: PathBuf,
    dir: OwnedFd,
}

const STAGED_NAME: &str = "s";

impl Staging {
    fn create(target: &Path, address: &str) -> Result<Self, SocketError> {
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let pid = std::process::id();
        for attempt in 0..100u32 {
            let dir_path = parent.join(format!(".amy-emperor-{pid}-{attempt}"));
            match nix::unistd::mkdir(&dir_path, Mode::S_IRWXU) {
                Ok(()) => {}
                // A leftover from a crashed master that had our pid: try another name.
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(SocketError::io(address, "creating a private directory", e)),
            }
            let dir = nix::fcntl::open(
                &dir_path,
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
                Mode::empty(),
            );
            let dir = match dir {
                // SAFETY: `open` just returned this fd and nothing else owns it.
                Ok(raw) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) },
                Err(e) => {
                    let _ = std::fs::remove_dir(&dir_path);
                    return Err(SocketError::io(address, "opening the private directory", e));
                }
            };
            return Ok(Staging { dir_path, dir });
        }
        Err(SocketError::io(
            address,
            "creating a private directory",
            io::Error::new(io::ErrorKind::AlreadyExists, "too many leftovers"),
        ))
    }

    /// A path to bind to: the real path if it fits in `sun_path`, else through
    /// `/proc/self/fd`, which resolves to the same directory.
    fn bind_path(&self) -> PathBuf {
        let direct = self.dir_path.join(STAGED_NAME);
        if direct.as_os_str().len() <= MAX_UNIX_PATH {
            direct
        } else {
            PathBuf::from(format!(
                "/proc/self/fd/{}/{STAGED_NAME}",
                self.dir.as_raw_fd()
            ))
        }
    }

    fn dirfd(&self) -> Option<i32> {
        Some(self.dir.as_raw_fd())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = nix::unistd::unlinkat(self.dirfd(), STAGED_NAME, UnlinkatFlags::NoRemoveDir);
        let _ = std::fs::remove_dir(&self.dir_path);
    }
}

pub(super) fn bind_unix(
    path: &Path,
    opts: &BindOptions,
    backlog: u32,
    warnings: &mut Vec<String>,
) -> Result<(OwnedFd, (u64, u64)), SocketError> {
    let address = path.display().to_string();
    let len = path.as_os_str().len();
    if len > MAX_UNIX_PATH {
        return Err(SocketError::PathTooLong {
            path: path.to_owned(),
            len,
        });
    }
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(SocketError::io(
            &address,
            "socket path",
            io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"),
        ));
    }
    let owner = opts.chown.as_ref().map(resolve_chown).transpose()?;
    if let Some(mode) = opts.chmod {
        if mode & 0o007 != 0 {
            warnings.push(format!(
                "{address}: chmod-socket {mode:o} lets any local user connect and send \
                 forged REMOTE_ADDR/HTTPS variables past nginx; 660 with chown-socket is safer"
            ));
        }
    }
    warn_about_parent(path, warnings);

    // Refuse early, before creating anything, when the path is taken.
    let mut existing = inspect_target(path, &address)?;

    let staging = Staging::create(path, &address)?;
    let fd = sock::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| SocketError::io(&address, "socket", e))?;
    let bind_path = staging.bind_path();
    let addr = UnixAddr::new(&bind_path).map_err(|e| SocketError::io(&address, "bind", e))?;
    sock::bind(fd.as_raw_fd(), &addr).map_err(|e| SocketError::io(&address, "bind", e))?;
    // Without chmod-socket the mode is what bind() gave under the umask, as in uWSGI.
    if let Some(mode) = opts.chmod {
        nix::sys::stat::fchmodat(
            staging.dirfd(),
            STAGED_NAME,
            Mode::from_bits_truncate(mode & 0o7777),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| SocketError::io(&address, "chmod-socket", e))?;
    }
    if let Some((uid, gid)) = owner {
        nix::unistd::fchownat(
            staging.dirfd(),
            STAGED_NAME,
            uid,
            gid,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| SocketError::io(&address, "chown-socket", e))?;
    }
    let st = nix::sys::stat::fstatat(
        staging.dirfd(),
        STAGED_NAME,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| SocketError::io(&address, "stat", e))?;
    // Listen before the path appears, so nginx never sees ECONNREFUSED on it.
    listen(&fd, backlog, &address)?;

    // The target may change between the check and the rename; re-check on a clash.
    for _ in 0..3 {
        let flags = match existing {
            Existing::Nothing => RenameFlags::RENAME_NOREPLACE,
            Existing::StaleSocket => RenameFlags::empty(),
        };
        match rename_into_place(&staging, path, flags) {
            Ok(()) => return Ok((fd, (st.st_dev, st.st_ino))),
            Err(Errno::EEXIST) => existing = inspect_target(path, &address)?,
            Err(e) => return Err(SocketError::io(&address, "rename into place", e)),
        }
    }
    Err(SocketError::io(
        &address,
        "rename into place",
        io::Error::new(io::ErrorKind::AlreadyExists, "path keeps changing"),
    ))
}

fn rename_into_place(staging: &Staging, target: &Path, flags: RenameFlags) -> nix::Result<()> {
    match nix::fcntl::renameat2(staging.dirfd(), STAGED_NAME, None, target, flags) {
        // A filesystem without RENAME_NOREPLACE: the window is the check-to-rename gap.
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) if !flags.is_empty() => {
            nix::fcntl::renameat(staging.dirfd(), STAGED_NAME, None, target)
        }
        other => other,
    }
}

/// Anyone who can write the directory can swap our socket for theirs.
fn warn_about_parent(path: &Path, warnings: &mut Vec<String>) {
    let Some(parent) = path.parent() else { return };
    let Ok(st) = nix::sys::stat::stat(parent) else {
        return;
    };
    let world_writable = st.st_mode & 0o002 != 0;
    let sticky = st.st_mode & 0o1000 != 0;
    if world_writable && !sticky {
        warnings.push(format!(
            "{}: directory {} is writable by every user: anyone can replace the socket",
            path.display(),
            parent.display()
        ));
    } else if world_writable {
        warnings.push(format!(
            "{}: socket in a world-writable directory ({}); a private directory is safer",
            path.display(),
            parent.display()
        ));
    }
}

/// `user[:group]`, names or numbers; without a group the group is unchanged.
fn resolve_chown(spec: &ChownSpec) -> Result<(Option<Uid>, Option<Gid>), SocketError> {
    let uid = users::uid(&spec.user)?;
    let gid = spec.group.as_deref().map(users::gid).transpose()?;
    Ok((Some(uid), gid))
}
