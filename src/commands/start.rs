//! `amy-emperor start [INI] [--daemonize] [--env-file PATH]`: validate, (detach),
//! take the pidfile, bind, drop privileges, then run the master loop.
//!
//! The order matters: config errors exit 2 before anything is touched; the
//! daemon forks before any thread exists; the pidfile lock is taken by the
//! process that will hold it for its life (so `/proc/locks` names the master);
//! sockets are bound before the privilege drop.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CommandError, Done};
use crate::cli::StartArgs;
use crate::config::around::HookPhase;
use crate::config::{self, Config, LoadOptions, Protocol, SocketAddress, SocketSpec};
use crate::logs::{LogSink, SinkWriter};
use crate::supervisor::executor::{self, MasterSetup};
use crate::{control, pidfile, privileges, socket};

/// Runs one master (`--emperor` is dispatched by `commands::run`).
pub fn run(args: &StartArgs, verbosity: i8) -> Result<Done, CommandError> {
    let ini = args
        .ini
        .clone()
        .unwrap_or_else(|| PathBuf::from("amy_uwsgi.ini"));
    // Titled before anything can take time (an `@(exec://…)` in the ini, the
    // socket binds): a vassal master must never show as `… start <ini>`.
    crate::proctitle::set_or_log(&crate::proctitle::master(&ini));
    let Ok(cwd) = std::env::current_dir() else {
        return Err(CommandError::Invalid(
            "amy-emperor: cannot read the current directory".into(),
        ));
    };
    let environment: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let load_options = LoadOptions {
        env_file: args.env_file.clone(),
        environment: environment.clone(),
        cwd,
        allow_unsupported: args.allow.unsupported.clone(),
        allow_root_workers: args.allow.root_workers,
        vassal: args.vassal_extras(),
        ..LoadOptions::default()
    };
    let loaded =
        config::load(&ini, &load_options).map_err(|e| CommandError::Invalid(e.to_string()))?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    // `config::load` refuses a config without a socket, so this holds.
    let config = loaded.config;
    // Workers, daemons and hooks must not talk to systemd on our behalf.
    let base_env: Vec<(OsString, OsString)> = environment
        .into_iter()
        .filter(|(k, _)| k != "NOTIFY_SOCKET")
        .collect();
    // `hook-asap`/`exec-asap`: first, as uWSGI runs them (core/uwsgi.c), so
    // they can create what the log and sockets need; output goes to our stderr.
    let hook_env = crate::around::process::environment(&base_env, &config);
    crate::around::hooks::run_master_phase(&config, HookPhase::Asap, &hook_env, None)
        .map_err(|e| CommandError::Failed(format!("amy-emperor: {e}")))?;

    // Detach first, while this process has no thread: the child carries on.
    let daemon_log = config
        .daemonize
        .clone()
        .or_else(|| args.daemonize.then(|| config.logto.clone()).flatten());
    let ready_pipe = if args.daemonize || config.daemonize.is_some() {
        match daemonize() {
            Ok(Some(pipe)) => Some(pipe),
            Ok(None) => unreachable!("the parent exits inside daemonize"),
            Err(e) => {
                return Err(CommandError::Failed(format!(
                    "amy-emperor: cannot daemonize: {e}"
                )))
            }
        }
    } else {
        None
    };

    let logto = config.logto.clone().or(daemon_log);
    let sink =
        LogSink::open_with(logto.as_deref(), config.log_maxsize, &config.logging).map_err(|e| {
            CommandError::Failed(format!(
                "{}: cannot open the log: {e}",
                logto.clone().unwrap_or_default().display()
            ))
        })?;
    // The master's own events go through the same sink as worker output.
    crate::logs::set_log_date(config.logging.date.as_ref());
    crate::logs::init_tracing(SinkWriter(sink.clone()), verbosity);

    match prepare(
        &ini,
        load_options,
        config,
        base_env,
        hook_env,
        sink,
        ready_pipe,
    ) {
        Ok(setup) => match crate::runtime::run_loop(executor::run(setup)) {
            0 => Ok(Done::Success),
            code => Err(CommandError::Exited(code)),
        },
        Err(message) => {
            tracing::error!(reason = %message, "cannot start");
            Err(CommandError::Failed(format!("amy-emperor: {message}")))
        }
    }
}

/// Takes the pidfile, binds every socket and the control socket, drops privileges.
///
/// A start refused half-way leaves every file as it found it: the pidfile is
/// only reserved (written under a temporary name) until every socket is bound,
/// and what this process bound is removed again. With uWSGI still running on
/// the same ini, its `amy.pid` and `amy.sock` stay untouched.
fn prepare(
    ini: &Path,
    load_options: LoadOptions,
    config: Config,
    base_env: Vec<(OsString, OsString)>,
    hook_env: Vec<(OsString, OsString)>,
    sink: Arc<LogSink>,
    ready_pipe: Option<OwnedFd>,
) -> Result<MasterSetup, String> {
    let reserved = match &config.pidfile {
        Some(path) => Some(pidfile::reserve(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut bound = Bound::default();
    if let Some(path) = &config.pidfile {
        let ctl = control::path_for(path);
        let spec = SocketSpec {
            address: SocketAddress::Unix(ctl.clone()),
            protocol: Protocol::Http,
            key: "control".into(),
            line: 0,
        };
        let options = socket::BindOptions {
            chmod: Some(0o600),
            chown: None,
            backlog: Some(16),
        };
        let (listener, _) =
            socket::bind(&spec, &options).map_err(|e| format!("control socket: {e}"))?;
        bound.control = Some(listener);
    }
    let bind_options = socket::BindOptions {
        chmod: config.chmod_socket,
        chown: config.chown_socket.clone(),
        backlog: config.listen,
    };
    for spec in &config.sockets {
        let (listener, warnings) = socket::bind(spec, &bind_options)
            .map_err(|e| format!("{}:{}: {e}", ini.display(), spec.line))?;
        for w in warnings {
            tracing::warn!(warning = %w, "socket");
        }
        tracing::info!(address = %socket::describe(&spec.address), protocol = spec.protocol.as_str(), "socket bound");
        bound.listeners.push(listener);
    }
    if let Some(http) = &config.http {
        let (listener, warnings) = crate::router::supervise::bind_public(&config)
            .map_err(|e| format!("{}:{}: {e}", ini.display(), http.line))?;
        for w in warnings {
            tracing::warn!(warning = %w, "socket");
        }
        tracing::info!(address = %socket::describe(&http.address), "http router address bound");
        bound.http = Some(listener);
    }
    let pidfile = match reserved {
        Some(r) => Some(r.commit().map_err(|e| e.to_string())?),
        None => None,
    };
    // `hook-as-root`/`exec-as-root`: before the privilege drop, as in uWSGI.
    let dropped = set_max_fd(config.max_fd)
        .and_then(|()| {
            crate::around::hooks::run_master_phase(&config, HookPhase::AsRoot, &hook_env, None)
        })
        .and_then(|()| {
            privileges::drop_to(config.uid.as_deref(), config.gid.as_deref())
                .map_err(|e| e.to_string())
        });
    // `logto2`: opened as the user just dropped to, as uWSGI does after setuid.
    let dropped = dropped.and_then(|()| match &config.logto2 {
        Some(path) => sink
            .replace_stdio(path, config.log_maxsize, &config.logging)
            .map_err(|e| format!("logto2 = {}: cannot open the log: {e}", path.display())),
        None => Ok(()),
    });
    if let Err(e) = dropped {
        if let Some(p) = pidfile {
            p.remove_if_ours();
        }
        return Err(e);
    }
    let (listeners, control, http_listener) = bound.keep();
    let control = control.map(|l| {
        let path = match &l.spec.address {
            SocketAddress::Unix(p) => p.clone(),
            SocketAddress::Tcp { .. } => unreachable!("the control socket is a unix socket"),
        };
        (std::os::unix::net::UnixListener::from(l.fd), path)
    });
    Ok(MasterSetup {
        ini: ini.to_path_buf(),
        load_options,
        config,
        listeners,
        sink,
        pidfile,
        base_env,
        ready_pipe,
        control,
        http_listener,
    })
}

/// Forks; the parent waits until the child's first generation is ready (a byte
/// on the pipe) or the child gives up (EOF), and exits accordingly. The child
/// gets `Some(write end)` and continues in a new session.
pub(super) fn daemonize() -> std::io::Result<Option<OwnedFd>> {
    use nix::unistd::{fork, setsid, ForkResult};
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: called before any thread or runtime exists, so the child is a
    // complete copy of a single-threaded process.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => {
            drop(write);
            let mut byte = [0u8; 1];
            let ok = matches!(
                nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&read), &mut byte),
                Ok(1)
            );
            if ok {
                std::process::exit(0);
            }
            eprintln!("amy-emperor: the instance failed to start; see its log");
            std::process::exit(1);
        }
        ForkResult::Child => {
            drop(read);
            setsid()?;
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?;
            for fd in 0..=2 {
                nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd)?;
            }
            Ok(Some(write))
        }
    }
}

/// The sockets `prepare` bound so far: removed again (only if the path still
/// holds the socket we made) unless `keep` hands them on.
#[derive(Default)]
struct Bound {
    listeners: Vec<socket::Listener>,
    control: Option<socket::Listener>,
    /// The `http` router's public listener.
    http: Option<socket::Listener>,
}

type Kept = (
    Vec<socket::Listener>,
    Option<socket::Listener>,
    Option<socket::Listener>,
);

impl Bound {
    fn keep(mut self) -> Kept {
        (
            std::mem::take(&mut self.listeners),
            self.control.take(),
            self.http.take(),
        )
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let all = self.listeners.iter().chain(&self.control).chain(&self.http);
        for l in all {
            socket::vacuum(l);
        }
    }
}

/// `max-fd`: soft and hard RLIMIT_NOFILE on the master, as uWSGI sets them,
/// before the privilege drop (raising the hard limit needs root); every
/// worker, template, daemon and hook inherits it. `check` already refused a
/// value this process cannot set, so a failure here is a real error.
fn set_max_fd(max_fd: Option<u64>) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource};
    let Some(n) = max_fd else { return Ok(()) };
    setrlimit(Resource::RLIMIT_NOFILE, n, n)
        .map_err(|e| format!("max-fd = {n}: setrlimit: {e}"))?;
    tracing::info!(max_fd = n, "open-file limit set");
    Ok(())
}
