//! The master's side of the router: start `amy-emperor router` with the public
//! listener inherited, restart it with back-off when it dies, replace it when a
//! reload changes its config, stop it with the instance.
//!
//! One task owns the router process (the executor holds a [`RouterHandle`]),
//! so the master loop's share is three calls: start, update, stop.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{Address, RouterConfig, ENV_CONFIG, FD_LISTENER, FD_MASTER_ALIVE};
use crate::config::{Config, Protocol, SocketAddress};
use crate::socket::Listener;

/// Request bodies up to this size stay in the router's memory; larger ones
/// go to a temporary file.
const BODY_MEMORY_LIMIT: u64 = 1 << 20;

/// What the router process is started with; kept by its task for restarts.
pub struct Launch {
    pub config: RouterConfig,
    /// The public listener, shared with the master (kept across reloads).
    pub listener: Arc<Listener>,
    /// Read end of the master-alive pipe (a duplicate the task owns).
    pub master_alive: OwnedFd,
    /// Write end of the log pipe (the router's stdout and stderr).
    pub log: OwnedFd,
    /// The master's start-up environment (the router adds only its config).
    pub base_env: Vec<(OsString, OsString)>,
}

enum Order {
    Replace(Box<Launch>),
    Stop {
        graceful: bool,
        done: oneshot::Sender<()>,
    },
}

/// The executor's handle on the router task.
pub struct RouterHandle {
    tx: mpsc::UnboundedSender<Order>,
    config: RouterConfig,
    listener: Arc<Listener>,
}

impl RouterHandle {
    /// Starts the router and the task that keeps it running.
    pub fn start(launch: Launch) -> RouterHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = RouterHandle {
            tx,
            config: launch.config.clone(),
            listener: launch.listener.clone(),
        };
        tokio::spawn(keep_running(launch, rx));
        handle
    }

    /// After a reload: a router whose config and listener are unchanged keeps
    /// running (its clients notice nothing); otherwise it is replaced gracefully.
    pub fn update(&mut self, launch: Launch) {
        if launch.config == self.config && Arc::ptr_eq(&launch.listener, &self.listener) {
            return;
        }
        self.config = launch.config.clone();
        self.listener = launch.listener.clone();
        let _ = self.tx.send(Order::Replace(Box::new(launch)));
    }

    /// Stops the router (SIGTERM: in-flight requests finish; else SIGINT) and
    /// waits for it to exit.
    pub async fn stop(self, graceful: bool) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Order::Stop { graceful, done }).is_ok() {
            let _ = wait.await;
        }
    }
}

/// Binds the public address of `config`'s router (`http = ADDR`) with the
/// instance's socket options; `None` config.http is a caller bug.
pub fn bind_public(config: &Config) -> Result<(Listener, Vec<String>), crate::socket::SocketError> {
    let http = config
        .http
        .as_ref()
        .expect("bind_public needs an http router");
    let spec = crate::config::SocketSpec {
        address: http.address.clone(),
        protocol: Protocol::Http,
        key: "http".into(),
        line: http.line,
    };
    let options = crate::socket::BindOptions {
        chmod: config.chmod_socket,
        chown: config.chown_socket.clone(),
        backlog: config.listen,
    };
    crate::socket::bind(&spec, &options)
}

/// What the router of `config` is started with: its settings, and the worker
/// socket it forwards to (`http-to`, else the generation's first uwsgi socket,
/// by the address actually bound: the private `127.0.0.1:0` has a real port).
pub fn launch_for(
    config: &Config,
    public: Arc<Listener>,
    worker_listeners: &[Arc<Listener>],
    log: &OwnedFd,
    master_alive: &OwnedFd,
    base_env: &[(OsString, OsString)],
) -> std::io::Result<Option<Launch>> {
    let Some(spec) = &config.http else {
        return Ok(None);
    };
    let backends: Vec<Address> = if spec.to.is_empty() {
        worker_listeners
            .iter()
            .find(|l| l.spec.protocol == Protocol::Uwsgi)
            .map(|l| match &l.spec.address {
                SocketAddress::Unix(p) => Address::Unix(p.clone()),
                SocketAddress::Tcp { .. } => Address::Tcp(l.local_address()),
            })
            .into_iter()
            .collect()
    } else {
        spec.to
            .iter()
            .map(|a| match a {
                SocketAddress::Unix(p) => Address::Unix(p.clone()),
                // `:port` binds every interface; to reach it, connect to loopback.
                SocketAddress::Tcp { host, port } if host.is_empty() => {
                    Address::Tcp(format!("127.0.0.1:{port}"))
                }
                SocketAddress::Tcp { host, port } => Address::Tcp(format!("{host}:{port}")),
            })
            .collect()
    };
    let server_port = match &spec.address {
        SocketAddress::Tcp { port: 0, .. } => public
            .local_address()
            .rsplit_once(':')
            .map_or(String::new(), |(_, p)| p.to_string()),
        SocketAddress::Tcp { port, .. } => port.to_string(),
        SocketAddress::Unix(_) => String::new(),
    };
    let router = RouterConfig {
        listen_unix: matches!(spec.address, SocketAddress::Unix(_)),
        server_port,
        backends,
        keepalive: spec.keepalive,
        timeout_secs: spec.timeout,
        headers_timeout_secs: spec.headers_timeout,
        connect_timeout_secs: spec.connect_timeout,
        modifier1: spec.modifier1,
        modifier2: spec.modifier2,
        vars: spec.vars.clone(),
        server_name_as_http_host: spec.server_name_as_http_host,
        body_memory_limit: BODY_MEMORY_LIMIT,
        max_head: 65535,
        mercy_secs: config.worker_reload_mercy.as_secs(),
    };
    Ok(Some(Launch {
        config: router,
        listener: public,
        master_alive: master_alive.try_clone()?,
        log: log.try_clone()?,
        base_env: base_env.to_vec(),
    }))
}

/// Back-off between restarts of a router that keeps dying: at once, then 1 s
/// doubling to 30 s; a router that ran for 10 s starts the sequence over.
fn next_delay(previous: Option<Duration>, ran_for: Duration) -> Duration {
    if ran_for >= Duration::from_secs(10) {
        return Duration::ZERO;
    }
    match previous {
        None => Duration::ZERO,
        Some(d) if d.is_zero() => Duration::from_secs(1),
        Some(d) => (d * 2).min(Duration::from_secs(30)),
    }
}

async fn keep_running(mut launch: Launch, mut rx: mpsc::UnboundedReceiver<Order>) {
    let mut delay: Option<Duration> = None;
    loop {
        let started = Instant::now();
        let mut child = match spawn(&launch) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot start the router");
                delay = Some(next_delay(delay, Duration::ZERO).max(Duration::from_secs(1)));
                match wait_or_command(&mut rx, delay.unwrap_or_default()).await {
                    Some(Order::Replace(l)) => launch = *l,
                    Some(Order::Stop { done, .. }) => {
                        let _ = done.send(());
                        return;
                    }
                    None => {}
                }
                continue;
            }
        };
        let pid = child.id().unwrap_or(0) as i32;
        info!(pid, "router started");
        tokio::select! {
            status = child.wait() => {
                let ran_for = started.elapsed();
                warn!(pid, status = ?status.ok(), ran_secs = ran_for.as_secs(), "router exited; restarting");
                let d = next_delay(delay, ran_for);
                delay = Some(d);
                match wait_or_command(&mut rx, d).await {
                    Some(Order::Replace(l)) => launch = *l,
                    Some(Order::Stop { done, .. }) => {
                        let _ = done.send(());
                        return;
                    }
                    None => {}
                }
            }
            command = rx.recv() => match command {
                Some(Order::Replace(l)) => {
                    info!(pid, "router config changed; replacing the router");
                    stop_child(&mut child, true, launch.config.mercy()).await;
                    launch = *l;
                    delay = None;
                }
                Some(Order::Stop { graceful, done }) => {
                    stop_child(&mut child, graceful, launch.config.mercy()).await;
                    info!(pid, "router stopped");
                    let _ = done.send(());
                    return;
                }
                None => {
                    stop_child(&mut child, false, launch.config.mercy()).await;
                    return;
                }
            }
        }
    }
}

/// Sleeps `delay` unless a command arrives first.
async fn wait_or_command(
    rx: &mut mpsc::UnboundedReceiver<Order>,
    delay: Duration,
) -> Option<Order> {
    tokio::select! {
        _ = tokio::time::sleep(delay) => None,
        c = rx.recv() => c,
    }
}

/// Signals the router and waits; SIGKILL once `mercy` (plus a second) is over.
async fn stop_child(child: &mut Child, graceful: bool, mercy: Duration) {
    if let Some(pid) = child.id() {
        let signal = if graceful {
            Signal::SIGTERM
        } else {
            Signal::SIGINT
        };
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
    let grace = if graceful {
        mercy + Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        warn!("router did not stop in time; killing it");
        let _ = child.kill().await;
    }
}

fn spawn(launch: &Launch) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let json = serde_json::to_string(&launch.config).map_err(std::io::Error::other)?;
    let moves: Vec<(RawFd, RawFd)> = vec![
        (launch.listener.fd.as_raw_fd(), FD_LISTENER),
        (launch.master_alive.as_raw_fd(), FD_MASTER_ALIVE),
    ];
    let mut cmd = Command::new(exe);
    cmd.arg("router")
        .env_clear()
        .envs(
            launch
                .base_env
                .iter()
                .filter(|(k, _)| k != ENV_CONFIG && k != "NOTIFY_SOCKET")
                .cloned(),
        )
        .env(ENV_CONFIG, json)
        .stdin(Stdio::null())
        .stdout(Stdio::from(launch.log.try_clone()?))
        .stderr(Stdio::from(launch.log.try_clone()?))
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe syscalls on integers prepared above (see place_fds).
    unsafe {
        cmd.pre_exec(move || crate::worker::spawn::place_fds(&moves));
    }
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_30s_and_resets_after_a_long_run() {
        let short = Duration::from_secs(1);
        let mut d = None;
        let mut seen = Vec::new();
        for _ in 0..8 {
            let next = next_delay(d, short);
            seen.push(next.as_secs());
            d = Some(next);
        }
        assert_eq!(seen, vec![0, 1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(next_delay(d, Duration::from_secs(11)), Duration::ZERO);
    }
}
