//! Listening sockets: the master binds every `socket`/`http-socket` once and the
//! workers inherit the fds.
//!
//! # Unix sockets: never wider than `chmod-socket`, never a stolen path
//! `bind()` creates the socket file with `0777 & ~umask`, and uWSGI then `chmod`s it
//! by path: for a moment any local user can connect (and forge `REMOTE_ADDR` or
//! `HTTPS` past nginx). We bind inside a fresh private directory (0700) created
//! next to the target, set mode and owner there where nobody else can reach the
//! file, `listen()`, and only then `rename()` it onto the target: the path appears
//! with its final mode, owner and a live listener (reliability.md S1, row 31).
//!
//! Before that the target is `lstat`ed: nothing there is fine; a socket that
//! accepts a connection belongs to a running server and is refused; a socket that
//! refuses is stale and the rename replaces it; anything else (file, symlink,
//! directory) is refused and left untouched (S2, rows 23–25).
//!
//! # Fds
//! Sockets are blocking (workers block in `accept`) and `CLOEXEC`: the spawner
//! `dup2`s them into the worker's fd slots, which clears the flag there only.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags};
use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag};
use nix::unistd::{Gid, Group, Uid, UnlinkatFlags, User};

use crate::config::{ChownSpec, SocketAddress, SocketSpec};

/// `listen` backlog when the ini sets none: enough to ride out a reload under load
/// (reliability row 26); uWSGI's 100 overflows into nginx 502s.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// `sun_path` is 108 bytes including the terminating NUL.
pub const MAX_UNIX_PATH: usize = 107;

/// A bound, listening socket owned by the master.
#[derive(Debug)]
pub struct Listener {
    pub spec: SocketSpec,
    pub fd: OwnedFd,
    /// `(st_dev, st_ino)` of the unix socket file we created, so that `vacuum`
    /// never removes a file that someone else has put at that path since.
    pub inode: Option<(u64, u64)>,
}

impl Listener {
    /// The address actually bound, for logs and the worker's listener name:
    /// the path for unix sockets, `host:port` with the real port for TCP (useful
    /// when the ini asked for port 0).
    pub fn local_address(&self) -> String {
        match &self.spec.address {
            SocketAddress::Unix(path) => path.display().to_string(),
            SocketAddress::Tcp { .. } => self
                .fd
                .try_clone()
                .and_then(|fd| TcpListener::from(fd).local_addr())
                .map(|a| a.to_string())
                .unwrap_or_else(|_| describe(&self.spec.address)),
        }
    }
}

/// How to bind: `chmod-socket`, `chown-socket`, `listen`.
#[derive(Debug, Clone, Default)]
pub struct BindOptions {
    pub chmod: Option<u32>,
    pub chown: Option<ChownSpec>,
    pub backlog: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{address}: address in use by a running server")]
    InUse { address: String },
    #[error("{path}: exists and is {kind}, not a socket; refusing to replace it", path = path.display())]
    NotASocket { path: PathBuf, kind: &'static str },
    #[error("{path}: path is {len} bytes, longer than the {MAX_UNIX_PATH} a unix socket allows", path = path.display())]
    PathTooLong { path: PathBuf, len: usize },
    #[error("{address}: cannot resolve: {reason}")]
    Resolve { address: String, reason: String },
    #[error("unable to find user {0}")]
    UnknownUser(String),
    #[error("unable to find group {0}")]
    UnknownGroup(String),
    #[error("{address}: {op}: {source}")]
    Io {
        address: String,
        op: &'static str,
        source: io::Error,
    },
}

impl SocketError {
    fn io(address: &str, op: &'static str, source: impl Into<io::Error>) -> Self {
        SocketError::Io {
            address: address.to_owned(),
            op,
            source: source.into(),
        }
    }
}

/// How an address is written in messages.
pub fn describe(address: &SocketAddress) -> String {
    match address {
        SocketAddress::Unix(path) => path.display().to_string(),
        SocketAddress::Tcp { host, port } => format!("{host}:{port}"),
    }
}

/// Binds and listens. Returns the listener and warnings for the caller to log.
pub fn bind(spec: &SocketSpec, opts: &BindOptions) -> Result<(Listener, Vec<String>), SocketError> {
    let mut warnings = Vec::new();
    let address = describe(&spec.address);
    let backlog = effective_backlog(opts.backlog, somaxconn(), &address, &mut warnings);
    let (fd, inode) = match &spec.address {
        SocketAddress::Unix(path) => {
            let (fd, inode) = bind_unix(path, opts, backlog, &mut warnings)?;
            (fd, Some(inode))
        }
        SocketAddress::Tcp { host, port } => (bind_tcp(host, *port, backlog, &address)?, None),
    };
    let listener = Listener {
        spec: spec.clone(),
        fd,
        inode,
    };
    Ok((listener, warnings))
}

/// What [`vacuum_checked`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Vacuum {
    Removed,
    /// TCP, or nothing at the path any more.
    NothingToDo,
    /// The path now holds another file (a newer instance's socket, or something a
    /// person put there): left alone.
    NotOurs,
    Failed(String),
}

/// Removes the unix socket file at exit, only if the path still holds the inode
/// we created. Logs when it leaves the path alone.
pub fn vacuum(listener: &Listener) {
    match vacuum_checked(listener) {
        Vacuum::Removed | Vacuum::NothingToDo => {}
        Vacuum::NotOurs => tracing::warn!(
            socket = %describe(&listener.spec.address),
            "socket path holds another file, not removed"
        ),
        Vacuum::Failed(reason) => tracing::warn!(
            socket = %describe(&listener.spec.address),
            reason,
            "cannot remove socket"
        ),
    }
}

pub fn vacuum_checked(listener: &Listener) -> Vacuum {
    let (SocketAddress::Unix(path), Some(ours)) = (&listener.spec.address, listener.inode) else {
        return Vacuum::NothingToDo;
    };
    match nix::sys::stat::lstat(path) {
        Err(Errno::ENOENT) => Vacuum::NothingToDo,
        Err(e) => Vacuum::Failed(e.desc().to_owned()),
        Ok(st) if (st.st_dev, st.st_ino) != ours => Vacuum::NotOurs,
        Ok(_) => match std::fs::remove_file(path) {
            Ok(()) => Vacuum::Removed,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vacuum::NothingToDo,
            Err(e) => Vacuum::Failed(e.to_string()),
        },
    }
}

/// `net.core.somaxconn`, the kernel's cap on any listen backlog.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn effective_backlog(
    configured: Option<u32>,
    max: Option<u32>,
    address: &str,
    warnings: &mut Vec<String>,
) -> u32 {
    let wanted = configured.unwrap_or(DEFAULT_BACKLOG);
    match max {
        Some(max) if wanted > max => {
            let what = if configured.is_some() {
                "listen"
            } else {
                "default listen backlog"
            };
            warnings.push(format!(
                "{address}: {what} {wanted} is larger than net.core.somaxconn ({max}): using {max}"
            ));
            max
        }
        _ => wanted,
    }
}

fn listen(fd: &OwnedFd, backlog: u32, address: &str) -> Result<(), SocketError> {
    // nix's `Backlog` rejects values above libc::SOMAXCONN although the sysctl
    // may allow more; the kernel clamps anyway.
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    // SAFETY: plain syscall on an fd we own; no memory is passed.
    let rc = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
    if rc != 0 {
        return Err(SocketError::io(
            address,
            "listen",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn bind_tcp(host: &str, port: u16, backlog: u32, address: &str) -> Result<OwnedFd, SocketError> {
    let addr = resolve_tcp(host, port, address)?;
    // std sets SO_REUSEADDR (a restarted master must rebind while old
    // connections sit in TIME_WAIT) and CLOEXEC, and listens with 128; the
    // second listen() raises the backlog.
    let listener = TcpListener::bind(addr).map_err(|e| SocketError::io(address, "bind", e))?;
    let fd = OwnedFd::from(listener);
    listen(&fd, backlog, address)?;
    Ok(fd)
}

/// uWSGI's forms: `:port` is every IPv4 interface, `host:port`, and IPv6 in brackets.
fn resolve_tcp(host: &str, port: u16, address: &str) -> Result<SocketAddr, SocketError> {
    if host.is_empty() || host == "0.0.0.0" || host == "*" {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let resolved: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|e| SocketError::Resolve {
            address: address.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    // uWSGI resolves hostnames to IPv4 (`localhost` must not become `::1` only).
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| SocketError::Resolve {
            address: address.to_owned(),
            reason: "no address found".to_owned(),
        })
}

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

fn bind_unix(
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
    let uid = resolve_user(&spec.user)?;
    let gid = spec.group.as_deref().map(resolve_group).transpose()?;
    Ok((Some(uid), gid))
}

pub(crate) fn resolve_user(name: &str) -> Result<Uid, SocketError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Uid::from_raw(n));
    }
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid),
        _ => Err(SocketError::UnknownUser(name.to_owned())),
    }
}

pub(crate) fn resolve_group(name: &str) -> Result<Gid, SocketError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid),
        _ => Err(SocketError::UnknownGroup(name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use std::io::{Read, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::net::{UnixListener, UnixStream};

    use crate::testutil::TempDir;

    fn unix_spec(path: &Path) -> SocketSpec {
        SocketSpec {
            address: SocketAddress::Unix(path.to_owned()),
            protocol: Protocol::Uwsgi,
            key: "socket".into(),
            line: 1,
        }
    }

    fn tcp_spec(host: &str, port: u16) -> SocketSpec {
        SocketSpec {
            address: SocketAddress::Tcp {
                host: host.into(),
                port,
            },
            protocol: Protocol::Http,
            key: "http-socket".into(),
            line: 2,
        }
    }

    fn accept_one(listener: &Listener) -> UnixStream {
        let fd = sock::accept(listener.fd.as_raw_fd()).unwrap();
        // SAFETY: accept returned a fresh fd that nothing else owns.
        unsafe { <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    }

    fn no_staging_left(dir: &Path) -> bool {
        std::fs::read_dir(dir).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".amy-")
        })
    }

    #[test]
    fn unix_socket_gets_the_configured_mode_and_accepts() {
        let dir = TempDir::new("sock");
        let path = dir.0.join("amy.sock");
        let opts = BindOptions {
            chmod: Some(0o660),
            ..Default::default()
        };
        let (listener, _warnings) = bind(&unix_spec(&path), &opts).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
        assert_eq!(listener.inode, Some((meta.dev(), meta.ino())));
        assert!(no_staging_left(&dir.0));

        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"ping").unwrap();
        let mut server = accept_one(&listener);
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");

        // CLOEXEC, blocking.
        let fdflags = nix::fcntl::fcntl(listener.fd.as_raw_fd(), nix::fcntl::F_GETFD).unwrap();
        assert_ne!(fdflags & libc::FD_CLOEXEC, 0);
        let flflags = nix::fcntl::fcntl(listener.fd.as_raw_fd(), nix::fcntl::F_GETFL).unwrap();
        assert_eq!(flflags & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn world_accessible_chmod_is_warned_about() {
        let dir = TempDir::new("sock");
        let path = dir.0.join("amy.sock");
        let opts = BindOptions {
            chmod: Some(0o666),
            ..Default::default()
        };
        let (_l, warnings) = bind(&unix_spec(&path), &opts).unwrap();
        assert!(
            warnings.iter().any(|w| w.contains("any local user")),
            "{warnings:?}"
        );
    }

    #[test]
    fn without_chmod_the_mode_comes_from_the_umask() {
        let dir = TempDir::new("sock");
        let path = dir.0.join("amy.sock");
        let (_l, _) = bind(&unix_spec(&path), &BindOptions::default()).unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .unwrap();
        let umask = u32::from_str_radix(umask.trim(), 8).unwrap();
        let mode = std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o777 & !umask);
    }

    #[test]
    fn mode_is_never_wider_than_chmod_while_the_path_exists() {
        // Watch the target from another thread while binding repeatedly: every
        // stat that sees the socket must see the final mode.
        let dir = TempDir::new("sock");
        let path = dir.0.join("race.sock");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(m) = std::fs::symlink_metadata(&path) {
                        assert_eq!(m.permissions().mode() & 0o777, 0o600, "mode seen wider");
                        seen += 1;
                    }
                }
                seen
            })
        };
        let opts = BindOptions {
            chmod: Some(0o600),
            ..Default::default()
        };
        for _ in 0..200 {
            let (l, _) = bind(&unix_spec(&path), &opts).unwrap();
            vacuum(&l);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = watcher.join().unwrap();
        assert!(seen > 0, "the watcher never saw the socket");
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = TempDir::new("sock");
        let path = dir.0.join("amy.sock");
        let old = UnixListener::bind(&path).unwrap();
        drop(old); // the file stays, nobody accepts: stale
        let old_ino = std::fs::symlink_metadata(&path).unwrap().ino();
        let (listener, _) = bind(&unix_spec(&path), &BindOptions::default()).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_ne!(meta.ino(), old_ino);
        assert_eq!(listener.inode.unwrap().1, meta.ino());
        UnixStream::connect(&path).unwrap();
    }

    #[test]
    fn live_socket_is_refused_and_untouched() {
        let dir = TempDir::new("sock");
        let path = dir.0.join("amy.sock");
        let live = UnixListener::bind(&path).unwrap();
        let ino = std::fs::symlink_metadata(&path).unwrap().ino();
        let err = bind(&unix_spec(&path), &BindOptions::default()).unwrap_err();
        assert!(matches!(err, SocketError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("running server"), "{err}");
        assert_eq!(std::fs::symlink_metadata(&path).unwrap().ino(), ino);
        assert!(no_staging_left(&dir.0));
        // Still served by the original listener.
        let _c = UnixStream::connect(&path).unwrap();
        live.accept().unwrap();
    }

    #[test]
    fn regular_file_symlink_and_directory_are_refused_and_untouched() {
        let dir = TempDir::new("sock");
        let file = dir.0.join("file.sock");
        std::fs::write(&file, b"precious").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.0.join("link.sock");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let sub = dir.0.join("dir.sock");
        std::fs::create_dir(&sub).unwrap();

        for (p, kind) in [
            (&file, "regular file"),
            (&link, "symlink"),
            (&sub, "directory"),
        ] {
            let err = bind(&unix_spec(p), &BindOptions::default()).unwrap_err();
            assert!(matches!(err, SocketError::NotASocket { .. }), "{err}");
            assert!(err.to_string().contains(kind), "{err}");
        }
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(sub.is_dir());
        assert!(no_staging_left(&dir.0));
    }

    #[test]
    fn too_long_path_is_a_clear_error() {
        let long = PathBuf::from(format!("/tmp/{}.sock", "x".repeat(110)));
        let err = bind(&unix_spec(&long), &BindOptions::default()).unwrap_err();
        assert!(matches!(err, SocketError::PathTooLong { .. }), "{err}");
        assert!(err.to_string().contains("107"), "{err}");
    }

    #[test]
    fn target_near_the_length_limit_binds_through_proc() {
        // The staging path is longer than the target; it must still fit.
        let dir = TempDir::new("sock");
        let room = MAX_UNIX_PATH - dir.0.as_os_str().len() - 1;
        let path = dir.0.join("s".repeat(room));
        assert_eq!(path.as_os_str().len(), MAX_UNIX_PATH);
        let (_l, _) = bind(&unix_spec(&path), &BindOptions::default()).unwrap();
        UnixStream::connect(&path).unwrap();
        assert!(no_staging_left(&dir.0));
    }

    #[test]
    fn unknown_chown_user_is_an_error() {
        let dir = TempDir::new("sock");
        let path = dir.0.join("amy.sock");
        let opts = BindOptions {
            chown: Some(ChownSpec {
                user: "no-such-user-amy".into(),
                group: None,
            }),
            ..Default::default()
        };
        let err = bind(&unix_spec(&path), &opts).unwrap_err();
        assert_eq!(err.to_string(), "unable to find user no-such-user-amy");
        assert!(!path.exists());
    }

    #[test]
    fn chown_by_number_sets_owner_and_group() {
        if !nix::unistd::geteuid().is_root() {
            return; // chown to another uid needs root
        }
        let dir = TempDir::new("sock");
        let path = dir.0.join("amy.sock");
        let opts = BindOptions {
            chmod: Some(0o660),
            chown: Some(ChownSpec {
                user: "65534".into(),
                group: Some("65533".into()),
            }),
            ..Default::default()
        };
        let (_l, _) = bind(&unix_spec(&path), &opts).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65533));
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    }

    #[test]
    fn vacuum_removes_only_our_inode() {
        let dir = TempDir::new("sock");
        let path = dir.0.join("amy.sock");
        let (l, _) = bind(&unix_spec(&path), &BindOptions::default()).unwrap();
        assert_eq!(vacuum_checked(&l), Vacuum::Removed);
        assert!(!path.exists());
        assert_eq!(vacuum_checked(&l), Vacuum::NothingToDo);

        let (l, _) = bind(&unix_spec(&path), &BindOptions::default()).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        assert_eq!(vacuum_checked(&l), Vacuum::NotOurs);
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    }

    #[test]
    fn tcp_binds_loopback_with_reuseaddr() {
        let (l, _) = bind(&tcp_spec("127.0.0.1", 0), &BindOptions::default()).unwrap();
        let addr = l.local_address();
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        assert!(!addr.ends_with(":0"));
        let reuse = sock::getsockopt(&l.fd, sock::sockopt::ReuseAddr).unwrap();
        assert!(reuse);
        std::net::TcpStream::connect(&addr).unwrap();
        assert_eq!(l.inode, None);
        assert_eq!(vacuum_checked(&l), Vacuum::NothingToDo);
    }

    #[test]
    fn tcp_forms_resolve_like_uwsgi() {
        let any = resolve_tcp("", 8000, ":8000").unwrap();
        assert_eq!(any, "0.0.0.0:8000".parse().unwrap());
        let local = resolve_tcp("localhost", 8000, "localhost:8000").unwrap();
        assert_eq!(local, "127.0.0.1:8000".parse().unwrap());
        let v6 = resolve_tcp("[::1]", 8000, "[::1]:8000").unwrap();
        assert_eq!(v6, "[::1]:8000".parse().unwrap());
    }

    #[test]
    fn ipv6_loopback_binds_when_available() {
        match bind(&tcp_spec("[::1]", 0), &BindOptions::default()) {
            Ok((l, _)) => {
                let addr = l.local_address();
                assert!(addr.starts_with("[::1]:"), "{addr}");
                std::net::TcpStream::connect(&addr).unwrap();
            }
            // Hosts without IPv6 on loopback.
            Err(SocketError::Io { op: "bind", .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn tcp_port_in_use_names_the_address() {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let err = bind(&tcp_spec("127.0.0.1", port), &BindOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("bind"),
            "{msg}"
        );
    }

    #[test]
    fn backlog_is_clamped_to_somaxconn_with_a_warning() {
        let mut w = Vec::new();
        assert_eq!(effective_backlog(Some(5000), Some(4096), "a", &mut w), 4096);
        assert!(w[0].contains("5000") && w[0].contains("4096"), "{w:?}");
        let mut w = Vec::new();
        assert_eq!(effective_backlog(None, Some(128), "a", &mut w), 128);
        assert!(w[0].contains("default"), "{w:?}");
        let mut w = Vec::new();
        assert_eq!(effective_backlog(None, Some(4096), "a", &mut w), 1024);
        assert_eq!(effective_backlog(Some(64), None, "a", &mut w), 64);
        assert!(w.is_empty());
    }

    #[test]
    fn somaxconn_is_read_on_linux() {
        assert!(somaxconn().is_some_and(|n| n > 0));
    }
}
