//! Starting one worker process: fork+exec of the app's Python with the bundled
//! worker, its descriptors laid out as `contract` says, in a process group of its
//! own (so `stop` also reaches whatever the app spawned).

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::json;
use tokio::process::{Child, Command};

use super::contract::{
    self, BOOTSTRAP, ENV_CONFIG, FD_CONTROL, FD_FIRST_LISTENER, FD_MASTER_ALIVE, FD_SCOREBOARD,
    FD_SOURCE,
};
use crate::config::{Config, Protocol};
use crate::scoreboard::Scoreboard;

/// Descriptors shared by every worker of this master.
pub struct SharedFds<'a> {
    /// Write end of the log pipe: the worker's stdout and stderr.
    pub log: &'a OwnedFd,
    /// Read end of the master-alive pipe.
    pub master_alive: &'a OwnedFd,
    /// The sealed memfd holding the worker source.
    pub source: &'a OwnedFd,
}

/// A listening socket as the worker sees it.
pub struct ListenerFd<'a> {
    pub fd: &'a OwnedFd,
    pub protocol: Protocol,
    pub name: String,
}

/// What a started process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A worker (1-based id) that imports the app itself (`lazy-apps`).
    Worker { id: usize },
    /// The generation's app template (preload): imports the app and forks workers.
    Template,
}

/// A started process: the child, the master's end of its control channel (a
/// pipe for a worker, the seqpacket socket for a template), its scoreboard
/// (none for a template).
pub struct Spawned {
    pub child: Child,
    pub control: OwnedFd,
    pub scoreboard: Option<Scoreboard>,
}

/// What the master prepares for a worker the template forks: its control pipe
/// and scoreboard (the master's ends), and the fds to pass to the template.
pub struct ForkRequest {
    pub control: OwnedFd,
    pub scoreboard: Scoreboard,
    /// Sent by SCM_RIGHTS in this order: control pipe write end, scoreboard
    /// memfd; dropped once sent (the template has its copies).
    pub pass: Vec<OwnedFd>,
}

impl ForkRequest {
    pub fn new() -> io::Result<Self> {
        let (control_read, control_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (scoreboard, scoreboard_fd) = Scoreboard::create()?;
        Ok(ForkRequest {
            control: control_read,
            scoreboard,
            pass: vec![control_write, scoreboard_fd],
        })
    }
}

/// Sends `fork <id>` with the request's fds on the template's socket.
pub fn send_fork(template: &OwnedFd, id: usize, request: &ForkRequest) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds: Vec<RawFd> = request.pass.iter().map(|fd| fd.as_raw_fd()).collect();
    let msg = format!("fork {id}");
    let iov = [io::IoSlice::new(msg.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    // A datagram on a socketpair whose reader is the template: it does not
    // block unless the template stopped reading hundreds of requests ago.
    sendmsg::<()>(
        template.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// The interpreter to run: the virtualenv's, else `python3` from PATH.
pub fn python_for(config: &Config) -> PathBuf {
    match &config.home {
        Some(home) => home.join("bin").join("python"),
        None => PathBuf::from("python3"),
    }
}

/// The worker's environment, built afresh for every spawn: the master's start-up
/// environment, then the config's (env file, then `env =` lines), then the contract.
pub fn environment(
    base: &[(OsString, OsString)],
    config: &Config,
    worker_json: String,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = base.to_vec();
    let mut set = |name: OsString, value: OsString| {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    };
    for var in &config.env {
        set(var.name.clone().into(), var.value.clone());
    }
    if let Some(home) = &config.home {
        // What `source venv/bin/activate` would do; the app's subprocesses find the venv.
        set("VIRTUAL_ENV".into(), home.clone().into());
    }
    // Inherited by whatever the app spawns: how stop finds it (crate::leftovers).
    set(
        crate::leftovers::MARKER.into(),
        crate::leftovers::marker().into(),
    );
    set(ENV_CONFIG.into(), worker_json.into());
    env
}

/// The JSON the worker reads from [`ENV_CONFIG`].
pub fn worker_json(
    config: &Config,
    role: Role,
    generation: u64,
    listeners: &[ListenerFd<'_>],
) -> String {
    let (id, template) = match role {
        Role::Worker { id } => (id, false),
        Role::Template => (0, true),
    };
    let listeners: Vec<_> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| json!({"fd": FD_FIRST_LISTENER + i as i32, "proto": l.protocol.as_str(), "name": l.name}))
        .collect();
    json!({
        "id": id,
        "generation": generation,
        "module": config.module,
        "wsgi_file": config.wsgi_file,
        "callable": config.callable,
        "chdir": config.chdir,
        "pythonpath": config.pythonpath,
        "threads": config.threads,
        "processes": config.processes,
        "buffer_size": config.buffer_size,
        "disable_logging": config.disable_logging,
        "wsgi_disable_file_wrapper": config.wsgi_disable_file_wrapper,
        "max_requests": config.max_requests,
        "reload_on_rss_mb": config.reload_on_rss_mb,
        "max_requests_delta": config.lifetimes.max_requests_delta,
        "min_worker_lifetime": config.lifetimes.min_worker_lifetime,
        "reload_on_as_mb": config.lifetimes.reload_on_as_mb,
        "limit_as_mb": config.lifetimes.limit_as_mb,
        "harakiri": config.harakiri.map(|d| d.as_secs_f64()),
        "log_slow_ms": config.log_slow_ms,
        "logging": config.logging.request,
        "listeners": listeners,
        "hooks": crate::around::hooks::worker_json(config),
        "imports": config.around.imports,
        "serving": config.serving,
        "template": template,
        "reload_check": config.reload_check,
        "reload_check_host": config.reload_check_host,
        "reload_check_timeout": config.reload_check_timeout.as_secs_f64(),
        "uwsgi": uwsgi_module_json(config),
    })
    .to_string()
}

/// What the worker's `uwsgi` module reports about the instance
/// (`python/amy_worker/uwsgi_api.py`): the master's pid (for `masterpid()`
/// and `reload()`), when it started, the pidfile, and `opt`, the resolved
/// options with secrets already redacted, as `[key, value]` pairs in order.
fn uwsgi_module_json(config: &Config) -> serde_json::Value {
    json!({
        "master_pid": std::process::id(),
        "started_on": master_started_on(),
        "pidfile": config.pidfile,
        "opt": module_opt(&config.uwsgi_opt),
    })
}

/// `uwsgi.opt`: the resolved options, plus `master` and `enable-threads` when
/// the ini does not set them. Both are always so here, and APM agents (Sentry,
/// Datadog, Instana, New Relic) read exactly these keys to decide whether
/// their background threads and post-fork hooks can work.
fn module_opt(resolved: &[(String, String)]) -> Vec<(String, String)> {
    let mut opt = resolved.to_vec();
    for key in ["master", "enable-threads"] {
        if !opt.iter().any(|(k, _)| k == key) {
            opt.push((key.to_string(), "true".to_string()));
        }
    }
    opt
}

/// The master's start as a Unix time in seconds (uWSGI's `uwsgi.started_on`):
/// from the kernel's record of this process's start, so it is the same for
/// every worker of every generation.
pub fn master_started_on() -> u64 {
    static STARTED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *STARTED.get_or_init(|| {
        process_start_epoch().unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
    })
}

fn process_start_epoch() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 22 (start time in clock ticks after boot); fields after the
    // parenthesised command name start at field 3.
    let ticks: u64 = stat
        .rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf reads a constant of the system; no memory is involved.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| boot + ticks / hz as u64)
}

/// Forks and execs a worker or the template of `generation`.
pub fn spawn(
    config: &Config,
    base_env: &[(OsString, OsString)],
    role: Role,
    generation: u64,
    shared: &SharedFds<'_>,
    listeners: &[ListenerFd<'_>],
) -> io::Result<Spawned> {
    let (control_read, control_write, scoreboard) = match role {
        Role::Worker { .. } => {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let (scoreboard, fd) = Scoreboard::create()?;
            (read, write, Some((scoreboard, fd)))
        }
        Role::Template => {
            use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
            let (ours, theirs) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )?;
            (ours, theirs, None)
        }
    };
    let (id, arg0) = match role {
        Role::Worker { id } => (id, "amy-emperor-worker"),
        Role::Template => (0, "amy-emperor-template"),
    };
    let json = worker_json(config, role, generation, listeners);

    // Descriptor moves done in the child, listed here so the child only does
    // syscalls: (source fd in the parent, the fd number the worker expects).
    let mut moves: Vec<(RawFd, RawFd)> = vec![
        (control_write.as_raw_fd(), FD_CONTROL),
        (shared.master_alive.as_raw_fd(), FD_MASTER_ALIVE),
        (shared.source.as_raw_fd(), FD_SOURCE),
    ];
    if let Some((_, fd)) = &scoreboard {
        moves.push((fd.as_raw_fd(), FD_SCOREBOARD));
    }
    for (i, l) in listeners.iter().enumerate() {
        moves.push((l.fd.as_raw_fd(), FD_FIRST_LISTENER + i as i32));
    }

    let mut cmd = Command::new(python_for(config));
    cmd.arg("-c")
        .arg(BOOTSTRAP)
        .arg(arg0)
        .arg(id.to_string())
        .arg(generation.to_string())
        .env_clear()
        .envs(environment(base_env, config, json))
        .stdin(Stdio::null())
        .stdout(Stdio::from(shared.log.try_clone()?))
        .stderr(Stdio::from(shared.log.try_clone()?))
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe syscalls (fcntl, dup2, setpgid) on integers prepared above;
    // it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || place_fds(&moves));
    }
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        crate::reaper::adopt(pid as i32);
    }
    drop(control_write);
    Ok(Spawned {
        child,
        control: control_read,
        scoreboard: scoreboard.map(|(s, _fd)| s),
    })
}

/// In the child: move every descriptor to its contract number. Sources are first
/// copied above the target range so that no move overwrites a later source.
pub(crate) fn place_fds(moves: &[(RawFd, RawFd)]) -> io::Result<()> {
    const SCRATCH: RawFd = 512;
    let mut scratch = [0 as RawFd; 64];
    if moves.len() > scratch.len() {
        return Err(io::Error::from_raw_os_error(libc::EMFILE));
    }
    for (i, (src, _)) in moves.iter().enumerate() {
        // SAFETY: plain fcntl on an fd inherited from the parent.
        let fd = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, SCRATCH) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        scratch[i] = fd;
    }
    for (i, (_, target)) in moves.iter().enumerate() {
        // SAFETY: dup2 onto a fixed number; dup2 clears CLOEXEC on the target,
        // which is what lets it survive exec. The scratch copy stays CLOEXEC.
        if unsafe { libc::dup2(scratch[i], *target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // Nothing else crosses into the worker: the master may have inherited
    // descriptors it does not know about (a parent's jobserver pipe, say).
    let first_free = moves.iter().map(|(_, t)| *t).max().unwrap_or(2) + 1;
    // Marked close-on-exec rather than closed, so std's own exec-error pipe
    // still reports a missing interpreter. CLOSE_RANGE_CLOEXEC = 4 (Linux 5.11).
    // SAFETY: close_range on descriptors above the contract's; no memory involved.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first_free as libc::c_uint,
            libc::c_uint::MAX,
            4 as libc::c_uint,
        )
    };
    // A process group of its own: signals for the worker reach its children too,
    // and a Ctrl-C at the terminal reaches only the master, which decides.
    // SAFETY: setpgid on ourselves.
    if unsafe { libc::setpgid(0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The worker package as BOOTSTRAP reads it: one JSON object, path → source.
pub fn package_json() -> String {
    let mut files: serde_json::Map<String, serde_json::Value> = contract::WORKER_PACKAGE
        .iter()
        .map(|(path, source)| (path.to_string(), serde_json::Value::from(*source)))
        .collect();
    if !contract::NATIVE_MODULE.is_empty() {
        // Latin-1: one char per byte, which JSON carries losslessly.
        let latin1: String = contract::NATIVE_MODULE.iter().map(|&b| b as char).collect();
        files.insert(contract::NATIVE_KEY.to_string(), latin1.into());
    }
    serde_json::Value::Object(files).to_string()
}

/// A sealed memfd holding the worker package, shared read-only by every worker.
pub fn source_memfd() -> io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let fd = memfd_create(
        c"amy-worker-package",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    io::Write::write_all(&mut file, package_json().as_bytes())?;
    let fd = OwnedFd::from(file);
    // SAFETY: fcntl on an fd we own; the seals make the source immutable, so a
    // worker cannot change what the next worker runs.
    let sealed = unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL,
        )
    };
    if sealed < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_opt_says_master_and_threads_are_on_unless_the_ini_says() {
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            module_opt(&[kv("module", "app"), kv("enable-threads", "1")]),
            vec![
                kv("module", "app"),
                kv("enable-threads", "1"),
                kv("master", "true")
            ]
        );
    }

    #[test]
    fn master_started_on_is_this_process_start() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let started = master_started_on();
        assert!(started <= now && now - started < 3600, "{started} vs {now}");
        assert_eq!(process_start_epoch(), Some(started));
    }

    /// Every file under `python/amy_worker/` is embedded, and nothing else: a
    /// module added without listing it in `WORKER_PACKAGE` fails here, not in production.
    #[test]
    fn embedded_package_is_exactly_the_python_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/python/amy_worker");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| format!("amy_worker/{}", e.file_name().to_string_lossy()))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = contract::WORKER_PACKAGE
            .iter()
            .map(|(p, _)| p.to_string())
            .collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
        for (path, source) in contract::WORKER_PACKAGE {
            let disk = std::fs::read_to_string(format!("{dir}/../{path}")).unwrap();
            assert_eq!(*source, disk, "{path}");
        }
        let bundle: serde_json::Value = serde_json::from_str(&package_json()).unwrap();
        let bundle = bundle.as_object().unwrap();
        // Plus the native module, when the build had a C compiler.
        let native = usize::from(!contract::NATIVE_MODULE.is_empty());
        assert_eq!(bundle.len(), on_disk.len() + native);
    }

    /// The native module travels as latin-1 (one char per byte) and comes back
    /// byte for byte, as `python/amy_worker/native.py` reads it; it is an ELF
    /// shared object exporting the module's init function.
    #[test]
    fn bundle_carries_the_native_module_byte_for_byte() {
        let bundle: serde_json::Value = serde_json::from_str(&package_json()).unwrap();
        let Some(text) = bundle.get(contract::NATIVE_KEY) else {
            assert!(contract::NATIVE_MODULE.is_empty());
            return;
        };
        let bytes: Vec<u8> = text.as_str().unwrap().chars().map(|c| c as u8).collect();
        assert_eq!(bytes, contract::NATIVE_MODULE);
        assert_eq!(&bytes[..4], b"\x7fELF");
        let init = b"PyInit__native";
        assert!(bytes.windows(init.len()).any(|w| w == init));
    }
}
