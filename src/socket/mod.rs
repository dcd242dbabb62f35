//! Listening sockets: the master binds every `socket`/`http-socket` once and the
//! workers inherit the fds.
//!
//! # Unix sockets: never wider than `chmod-socket`, never a stolen path
//! `bind()` creates the socket file with `0777 & ~umask`, and uWSGI then `chmod`s it
//! by path: for a moment any local user can connect (and forge `REMOTE_ADDR` or
//! `HTTPS` past nginx). We bind inside a fresh private directory (0700) created
//! next to the target, set mode and owner there where nobody else can reach the
//! file, `listen()`, and only then `rename()` it onto the target: the path appears
//! with its final mode, owner and a live listener: at no instant is its mode wider
//! than configured.
//!
//! Before that the target is `lstat`ed: nothing there is fine; a socket that
//! accepts a connection belongs to a running server and is refused; a socket that
//! refuses is stale and the rename replaces it; anything else (file, symlink,
//! directory) is refused and left untouched: a typo in `socket =` must never delete
//! or follow something that is not ours.
//!
//! # Fds
//! Sockets are blocking (workers block in `accept`) and `CLOEXEC`: the spawner
//! `dup2`s them into the worker's fd slots, which clears the flag there only.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;

use crate::config::{ChownSpec, SocketAddress, SocketSpec};
use crate::users::LookupError;

mod tcp;
mod unix;

use tcp::bind_tcp;
use unix::bind_unix;

/// `listen` backlog when the ini sets none: enough to ride out a reload under load
/// (a new generation can take seconds to boot while requests keep arriving);
/// uWSGI's 100 overflows into nginx 502s.
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
    #[error(transparent)]
    Lookup(#[from] LookupError),
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

#[cfg(test)]
mod tests {
    use super::tcp::resolve_tcp;
    use super::*;
    use crate::config::Protocol;
    use nix::sys::socket as sock;
    use std::io::{Read, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::Path;

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
        // chown to another uid needs root, as the suite runs (CI does): without
        // it this fails rather than passing unexercised.
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (chown to another uid)"
        );
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
