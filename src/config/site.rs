//! What the host must provide for `start` to run the app, checked at load so
//! that `check` tells the truth about `start`: the app's files, the venv's
//! Python, the users and groups named, the stats address, the permission rules
//! of a root master, and the size of the worker environment.

use std::ffi::OsString;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::envfile::MAX_TOTAL_ENV;
use super::expand::Origin;
use super::{Config, ConfigError, EnvVar, ErrorKind, LoadOptions, SocketAddress, Warning};

/// Where the keys checked here were written, for messages.
#[derive(Debug, Default)]
pub struct Origins {
    pub chdir: Option<Origin>,
    pub wsgi_file: Option<Origin>,
    pub home: Option<Origin>,
    pub uid: Option<Origin>,
    pub gid: Option<Origin>,
    pub chown: Option<Origin>,
    pub chmod: Option<Origin>,
    pub max_fd: Option<Origin>,
    /// Files the master opens for logging at start (`logto`, `daemonize`, a
    /// `logger`/`req-logger` `file:`), with its `key = value` and where it was written.
    pub log_files: Vec<(PathBuf, String, Origin)>,
}

fn at(origin: &Option<Origin>, ini: &Path, kind: ErrorKind, message: String) -> ConfigError {
    match origin {
        Some(o) => o.error(kind, message),
        None => ConfigError::new(kind, ini, None, message),
    }
}

/// `stats = ADDR`: the stats server has no authentication, so a TCP address
/// must be loopback (the runtime check in `stats.rs` agrees).
pub fn check_stats(addr: &str) -> Result<(), String> {
    if addr.starts_with('@') {
        return Err(format!(
            "stats = {addr}: abstract unix sockets have no file mode to restrict them; use a path"
        ));
    }
    if addr.starts_with('/') || !addr.contains(':') {
        return Ok(());
    }
    let (host, port) = addr.rsplit_once(':').expect("contains ':'");
    if port.parse::<u16>().is_err() {
        return Err(format!("stats = {addr}: not a port number"));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let loopback = bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!(
            "stats = {addr}: the stats server has no authentication, so it listens only on a unix socket or an explicit loopback address (127.0.0.1:PORT, localhost:PORT, [::1]:PORT)"
        ));
    }
    Ok(())
}

/// The whole worker environment, as exec will see it, within [`MAX_TOTAL_ENV`].
pub fn check_environment_size(
    ini: &Path,
    base: &[(OsString, OsString)],
    env: &[EnvVar],
) -> Result<(), ConfigError> {
    let mut merged: std::collections::HashMap<&std::ffi::OsStr, usize> = base
        .iter()
        .map(|(k, v)| (k.as_os_str(), k.len() + v.len() + 2))
        .collect();
    for var in env {
        merged.insert(
            std::ffi::OsStr::new(&var.name),
            var.name.len() + var.value.len() + 2,
        );
    }
    let total: usize = merged.values().sum();
    if total > MAX_TOTAL_ENV {
        return Err(ConfigError::new(
            ErrorKind::TooLarge,
            ini,
            None,
            format!(
                "the worker environment would be {total} bytes, more than the {MAX_TOTAL_ENV} allowed (exec would fail with E2BIG)"
            ),
        ));
    }
    Ok(())
}

fn executable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
        && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

fn is_root_user(name: &str) -> bool {
    name == "0" || name == "root"
}

/// A number, or a name this host knows (the lookup the privilege drop and
/// `chown-socket` make, `crate::users`).
fn user_exists(name: &str) -> bool {
    crate::users::uid(name).is_ok()
}

fn group_exists(name: &str) -> bool {
    crate::users::gid(name).is_ok()
}

/// Everything `start` would refuse or could not run, on this host.
pub fn check(
    c: &Config,
    o: &Origins,
    ini: &Path,
    options: &LoadOptions,
    root: bool,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    check_log_dirs(c, o, warnings)?;
    warn_self_reloading(c, o, ini, warnings);
    if let Some(dir) = &c.chdir {
        if !dir.is_dir() {
            return Err(at(
                &o.chdir,
                ini,
                ErrorKind::Missing,
                format!("chdir = {}: no such directory", dir.display()),
            ));
        }
    }
    if let Some(file) = &c.wsgi_file {
        if !file.is_file() {
            return Err(at(
                &o.wsgi_file,
                ini,
                ErrorKind::Missing,
                format!("wsgi-file = {}: no such file", file.display()),
            ));
        }
    }
    if let Some(home) = &c.home {
        let python = home.join("bin").join("python");
        if !executable(&python) {
            return Err(at(
                &o.home,
                ini,
                ErrorKind::Missing,
                format!(
                    "home = {}: {} is missing or not executable: the workers could not start",
                    home.display(),
                    python.display()
                ),
            ));
        }
    }
    if let Some(uid) = &c.uid {
        if !user_exists(uid) {
            return Err(at(
                &o.uid,
                ini,
                ErrorKind::UnknownUser,
                format!("uid = {uid}: no such user on this host"),
            ));
        }
    }
    if let Some(gid) = &c.gid {
        if !group_exists(gid) {
            return Err(at(
                &o.gid,
                ini,
                ErrorKind::UnknownUser,
                format!("gid = {gid}: no such group on this host"),
            ));
        }
    }
    if let Some(chown) = &c.chown_socket {
        if !user_exists(&chown.user) {
            return Err(at(
                &o.chown,
                ini,
                ErrorKind::UnknownUser,
                format!("chown-socket: no such user {:?} on this host", chown.user),
            ));
        }
        if let Some(g) = chown.group.as_deref().filter(|g| !group_exists(g)) {
            return Err(at(
                &o.chown,
                ini,
                ErrorKind::UnknownUser,
                format!("chown-socket: no such group {g:?} on this host"),
            ));
        }
    }
    if let Some(n) = c.max_fd {
        check_max_fd(n, root).map_err(|m| at(&o.max_fd, ini, ErrorKind::InvalidValue, m))?;
    }
    if root {
        check_worker_access(c, o, ini)?;
        check_root_workers(c, o, ini, options, warnings)?;
        for spec in &c.sockets {
            if let SocketAddress::Unix(path) = &spec.address {
                check_socket_dir(path, spec, ini, warnings)?;
            }
        }
    }
    Ok(())
}

/// `max-fd` is set with setrlimit() at start (soft = hard = N, as uWSGI
/// does); say now if that would fail rather than start with another limit
/// (uWSGI logs the error and runs on with the inherited one).
fn check_max_fd(n: u64, root: bool) -> Result<(), String> {
    use nix::sys::resource::{getrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("max-fd = {n}: {e}"))?;
    if !root && n > hard {
        return Err(format!(
            "max-fd = {n}: above this process's hard limit of {hard} open files; only a master started as root can raise it"
        ));
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    if let Some(max) = nr_open.filter(|max| n > *max) {
        return Err(format!(
            "max-fd = {n}: above the kernel's limit of {max} open files per process (fs.nr_open)"
        ));
    }
    Ok(())
}

/// The uid and gid the workers run as after the drop (`privileges.rs`: the
/// configured gid, else the user's primary group; no supplementary groups).
fn worker_ids(c: &Config) -> Option<(u32, u32)> {
    let spec = c.uid.as_deref()?;
    let user = crate::users::user(spec).ok();
    let uid = user
        .as_ref()
        .map_or_else(|| spec.parse().ok(), |u| Some(u.uid.as_raw()))?;
    let gid = match c.gid.as_deref() {
        Some(g) => crate::users::gid(g).ok()?.as_raw(),
        None => user?.gid.as_raw(),
    };
    Some((uid, gid))
}

/// Whether `uid`/`gid` may use `path`: every directory above it searchable,
/// and the path itself allows `want` (a mask of r=4, w=2, x=1), symlinks resolved.
fn usable_by(path: &Path, uid: u32, gid: u32, want: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    if uid == 0 {
        return true;
    }
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    let allows = |p: &Path, bits: u32| {
        std::fs::metadata(p).is_ok_and(|m| {
            let mode = m.mode();
            let granted = if m.uid() == uid {
                mode >> 6
            } else if m.gid() == gid {
                mode >> 3
            } else {
                mode
            };
            granted & bits == bits
        })
    };
    // Both the path as written (a private directory holding a symlink hides
    // it) and the file it resolves to must be reachable.
    path.ancestors()
        .skip(1)
        .all(|dir| dir.as_os_str().is_empty() || allows(dir, 1))
        && real.ancestors().skip(1).all(|dir| allows(dir, 1))
        && allows(&real, want)
}

/// A root master drops to `uid` before the workers start: what they must
/// reach (the venv's python, chdir, wsgi-file) must be reachable as that user,
/// or every worker dies at spawn.
fn check_worker_access(c: &Config, o: &Origins, ini: &Path) -> Result<(), ConfigError> {
    let Some((uid, gid)) = worker_ids(c) else {
        return Ok(());
    };
    let user = c.uid.as_deref().unwrap_or_default();
    let denied = |origin: &Option<Origin>, what: String| {
        at(
            origin,
            ini,
            ErrorKind::Permission,
            format!("{what} cannot be used by uid {user} (a directory on its path or the file itself denies it): the workers could not start"),
        )
    };
    if let Some(home) = &c.home {
        let python = home.join("bin").join("python");
        if !usable_by(&python, uid, gid, 1) {
            return Err(denied(
                &o.home,
                format!("home = {}: {}", home.display(), python.display()),
            ));
        }
    }
    if let Some(dir) = &c.chdir {
        if !usable_by(dir, uid, gid, 1) {
            return Err(denied(&o.chdir, format!("chdir = {}", dir.display())));
        }
    }
    if let Some(file) = &c.wsgi_file {
        if !usable_by(file, uid, gid, 4) {
            return Err(denied(
                &o.wsgi_file,
                format!("wsgi-file = {}", file.display()),
            ));
        }
    }
    Ok(())
}

/// Workers as root: an explicit `uid`/`gid` of root needs the operator's
/// `--allow-root-workers`; no `uid` at all under a root master gets uWSGI's
/// loud warning.
fn check_root_workers(
    c: &Config,
    o: &Origins,
    ini: &Path,
    options: &LoadOptions,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    for (key, value, origin) in [("uid", &c.uid, &o.uid), ("gid", &c.gid, &o.gid)] {
        if let Some(v) = value.as_deref().filter(|v| is_root_user(v)) {
            if !options.allow_root_workers {
                return Err(at(
                    origin,
                    ini,
                    ErrorKind::RootWorkers,
                    format!(
                        "{key} = {v}: the workers would run the app as root; refusing (--allow-root-workers accepts it)"
                    ),
                ));
            }
            warnings.push(match origin {
                Some(o) => o.warning(format!(
                    "{key} = {v}: the workers run the app as root (allowed by --allow-root-workers)"
                )),
                None => Warning {
                    path: ini.to_path_buf(),
                    line: None,
                    message: format!("{key} = {v}: the workers run the app as root"),
                },
            });
        }
    }
    if c.uid.is_none() {
        warnings.push(Warning {
            path: ini.to_path_buf(),
            line: None,
            message: "*** WARNING: you are running the app as root: no uid is set and the master runs as root, so every worker runs as root !!! (use uid and gid) ***".into(),
        });
    }
    Ok(())
}

/// `start` opens every log file before anything else and exits 1 if one cannot
/// be opened; a log in a directory that does not exist is refused here, so
/// `check` and a reload say so first. An `exec-asap`/`hook-asap` runs before
/// the logs are opened and may create the directory (`mkdir -p`): then it is
/// only a warning.
fn check_log_dirs(c: &Config, o: &Origins, warnings: &mut Vec<Warning>) -> Result<(), ConfigError> {
    let asap = c
        .around
        .hooks
        .phase(super::around::HookPhase::Asap)
        .next()
        .is_some();
    for (path, line, origin) in &o.log_files {
        let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
            continue;
        };
        if dir.is_dir() {
            continue;
        }
        let message = format!(
            "{line}: no such directory {} (start could not open the log)",
            dir.display()
        );
        if asap {
            warnings.push(origin.warning(format!("{message}, unless an asap hook creates it")));
        } else {
            return Err(origin.error(ErrorKind::Missing, message));
        }
    }
    Ok(())
}

/// An `fs-reload` directory that holds a file the instance itself writes (a
/// log, the pidfile) reloads it at every write of that file: a loop, in uWSGI
/// too. Warned, since a site may mean it for a file written rarely.
fn warn_self_reloading(c: &Config, o: &Origins, ini: &Path, warnings: &mut Vec<Warning>) {
    let own = o
        .log_files
        .iter()
        .map(|(path, what, _)| (path.clone(), what.clone()))
        .chain(
            c.pidfile
                .iter()
                .map(|p| (p.clone(), format!("pidfile = {}", p.display()))),
        );
    for (path, what) in own {
        let Some(dir) = path.parent() else { continue };
        if c.fs_reload.iter().any(|w| w.as_path() == dir && w.is_dir()) {
            warnings.push(Warning {
                path: ini.to_path_buf(),
                line: None,
                message: format!(
                    "fs-reload = {}: {what} is written inside it, so every write reloads the instance",
                    dir.display()
                ),
            });
        }
    }
}

/// A socket in a directory others can write could be swapped for their own
/// between bind and use: refused, unless the sticky bit protects it (warning).
fn check_socket_dir(
    path: &Path,
    spec: &super::SocketSpec,
    ini: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    let mode = meta.permissions().mode();
    if mode & 0o002 == 0 {
        return Ok(());
    }
    let line = (spec.line > 0).then_some(spec.line);
    if mode & 0o1000 == 0 {
        return Err(ConfigError::new(
            ErrorKind::Permission,
            ini,
            line,
            format!(
                "{} = {}: its directory {} is writable by every user without the sticky bit (mode {:04o}); anyone could replace the socket: refusing",
                spec.key,
                path.display(),
                dir.display(),
                mode & 0o7777
            ),
        ));
    }
    warnings.push(Warning {
        path: ini.to_path_buf(),
        line,
        message: format!(
            "{} = {}: its directory {} is writable by every user (sticky bit set); a private directory is safer",
            spec.key,
            path.display(),
            dir.display()
        ),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_must_be_loopback_or_unix() {
        assert!(check_stats("/run/amy/stats.sock").is_ok());
        assert!(check_stats("127.0.0.1:9191").is_ok());
        assert!(check_stats("localhost:9191").is_ok());
        assert!(check_stats("[::1]:9191").is_ok());
        assert_eq!(
            check_stats("0.0.0.0:9191").unwrap_err(),
            "stats = 0.0.0.0:9191: the stats server has no authentication, so it listens only on a unix socket or an explicit loopback address (127.0.0.1:PORT, localhost:PORT, [::1]:PORT)"
        );
        assert!(check_stats(":9191").is_err());
        assert_eq!(
            check_stats("127.0.0.1:x").unwrap_err(),
            "stats = 127.0.0.1:x: not a port number"
        );
        assert!(check_stats("@abstract").is_err());
    }

    #[test]
    fn access_is_judged_as_the_worker_user() {
        let d = std::env::temp_dir().join(format!("amy-site-access-{}", std::process::id()));
        let inner = d.join("inner");
        std::fs::create_dir_all(&inner).unwrap();
        let f = inner.join("python");
        std::fs::write(&f, "").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let nobody = 65534;
        assert!(usable_by(&f, 0, 0, 1));
        // Someone else's directory without search permission for others hides the file.
        if me == 0 {
            assert!(usable_by(&f, nobody, nobody, 1));
            std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o750)).unwrap();
            assert!(!usable_by(&f, nobody, nobody, 1));
            std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o744)).unwrap();
            assert!(!usable_by(&f, nobody, nobody, 1));
            assert!(usable_by(&f, nobody, nobody, 4));
        }
        assert!(!usable_by(&d.join("missing"), nobody, nobody, 1));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn environment_size_is_bounded() {
        let big = EnvVar {
            name: "A".into(),
            value: "x".repeat(MAX_TOTAL_ENV).into(),
        };
        let e = check_environment_size(Path::new("/a.ini"), &[], &[big]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooLarge);
        assert!(e.message.contains("E2BIG"), "{e}");
        assert!(check_environment_size(Path::new("/a.ini"), &[], &[]).is_ok());
    }
}
