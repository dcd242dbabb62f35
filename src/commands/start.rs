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
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::StartArgs;
use crate::config::{self, Config, LoadOptions, Protocol, SocketAddress, SocketSpec};
use crate::logs::{LogSink, SinkWriter};
use crate::supervisor::executor::{self, MasterSetup};
use crate::{control, pidfile, privileges, socket};

pub fn run(args: &StartArgs, verbosity: i8) -> ExitCode {
    if args.emperor.is_some() {
        return super::emperor::start(None, args, verbosity);
    }
    let ini = args
        .ini
        .clone()
        .unwrap_or_else(|| PathBuf::from("amy_uwsgi.ini"));
    // An emperor ini has no socket: tell it apart before the instance validation.
    if super::emperor::is_emperor_ini(&ini) {
        return super::emperor::start(Some(&ini), args, verbosity);
    }
    let Ok(cwd) = std::env::current_dir() else {
        eprintln!("amy-emperor: cannot read the current directory");
        return ExitCode::from(2);
    };
    let environment: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let load_options = LoadOptions {
        env_file: args.env_file.clone(),
        environment: environment.clone(),
        cwd,
        vassal: args.vassal_extras(),
    };
    let loaded = match config::load(&ini, &load_options) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    for w in &loaded.warnings {
        eprintln!("{w}: warning");
    }
    let config = loaded.config;
    if config.sockets.is_empty() {
        eprintln!(
            "{}: no socket configured (socket, uwsgi-socket or http-socket)",
            ini.display()
        );
        return ExitCode::from(2);
    }

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
                eprintln!("amy-emperor: cannot daemonize: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };

    let logto = config.logto.clone().or(daemon_log);
    let sink = match LogSink::open(logto.as_deref(), config.log_maxsize) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "{}: cannot open the log: {e}",
                logto.unwrap_or_default().display()
            );
            return ExitCode::from(1);
        }
    };
    // The master's own events go through the same sink as worker output.
    crate::logs::init_tracing(SinkWriter(sink.clone()), verbosity);

    match prepare(&ini, load_options, config, environment, sink, ready_pipe) {
        Ok(setup) => super::run_loop(executor::run(setup)),
        Err(message) => {
            tracing::error!(reason = %message, "cannot start");
            eprintln!("amy-emperor: {message}");
            ExitCode::from(1)
        }
    }
}

/// Takes the pidfile, binds every socket and the control socket, drops privileges.
fn prepare(
    ini: &Path,
    load_options: LoadOptions,
    config: Config,
    environment: Vec<(OsString, OsString)>,
    sink: Arc<LogSink>,
    ready_pipe: Option<OwnedFd>,
) -> Result<MasterSetup, String> {
    let pidfile = match &config.pidfile {
        Some(path) => Some(pidfile::acquire(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let control = match &config.pidfile {
        Some(path) => {
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
            let std_listener = std::os::unix::net::UnixListener::from(listener.fd);
            Some((std_listener, ctl))
        }
        None => None,
    };
    let bind_options = socket::BindOptions {
        chmod: config.chmod_socket,
        chown: config.chown_socket.clone(),
        backlog: config.listen,
    };
    let mut listeners = Vec::new();
    for spec in &config.sockets {
        match socket::bind(spec, &bind_options) {
            Ok((listener, warnings)) => {
                for w in warnings {
                    tracing::warn!(warning = %w, "socket");
                }
                tracing::info!(address = %socket::describe(&spec.address), protocol = spec.protocol.as_str(), "socket bound");
                listeners.push(listener);
            }
            Err(e) => {
                for l in &listeners {
                    socket::vacuum(l);
                }
                if let Some((_, ctl)) = &control {
                    let _ = std::fs::remove_file(ctl);
                }
                if let Some(p) = pidfile {
                    p.remove_if_ours();
                }
                return Err(format!("{}:{}: {e}", ini.display(), spec.line));
            }
        }
    }
    privileges::drop_to(config.uid.as_deref(), config.gid.as_deref()).map_err(|e| e.to_string())?;
    // Workers must not talk to systemd on our behalf.
    let base_env = environment
        .into_iter()
        .filter(|(k, _)| k != "NOTIFY_SOCKET")
        .collect();
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
    })
}

/// Forks; the parent waits until the child's first generation is ready (a byte
/// on the pipe) or the child gives up (EOF), and exits accordingly. The child
/// gets `Some(write end)` and continues in a new session.
fn daemonize() -> std::io::Result<Option<OwnedFd>> {
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
