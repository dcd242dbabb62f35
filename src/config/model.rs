//! The typed, validated configuration: what the rest of the program consumes.
//!
//! Built from the raw ini entries (see `ini.rs` and `expand.rs`) by `build.rs`.
//! Every path here is already absolute, resolved the way uWSGI resolves it
//! (sockets after `chdir`, pidfile/logto against the start-up cwd).
//! The same validation runs at `start`, at reload and in `check`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// The protocol a listening socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The uwsgi binary protocol (nginx `uwsgi_pass`): `socket`, `uwsgi-socket`.
    Uwsgi,
    /// HTTP/1.1, one request per connection: `http-socket`.
    Http,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Uwsgi => "uwsgi",
            Protocol::Http => "http",
        }
    }
}

/// Where a socket listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SocketAddress {
    /// A filesystem unix socket, absolute path.
    Unix(PathBuf),
    /// A TCP address: host (empty for all interfaces, as uWSGI's `:port`) and port.
    Tcp { host: String, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub address: SocketAddress,
    pub protocol: Protocol,
    /// The key as written (`socket`, `uwsgi-socket`, `http-socket`), for messages.
    pub key: String,
    /// Line of the ini where it was declared, for messages.
    pub line: usize,
}

/// `chown-socket = user[:group]`, names or numbers as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChownSpec {
    pub user: String,
    pub group: Option<String>,
}

/// One `NAME=value` pair destined for the workers' environment.
/// The value may be a secret: it must never be logged, printed or put in an error.
/// It is bytes, as the env file holds them: a non-UTF-8 value reaches the
/// worker's `os.environb` unchanged.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: OsString,
}

impl std::fmt::Debug for EnvVar {
    // Redacted on purpose: a stray `{:?}` must not leak a secret into a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}=***", self.name)
    }
}

/// `http = ADDR` and the `http-*` keys: uWSGI's HTTP router (`src/router/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRouterSpec {
    /// The public address clients connect to (key `http`, bound by the master).
    pub address: SocketAddress,
    /// Line of the ini where `http` was declared, for messages.
    pub line: usize,
    /// `http-to` nodes in order (round-robin). Empty: the instance's first uwsgi
    /// socket, or a private `127.0.0.1:0` one bound for the purpose (as uWSGI).
    pub to: Vec<SocketAddress>,
    /// `http-keepalive`: off unless set, as in uWSGI.
    pub keepalive: bool,
    /// `http-timeout` in seconds, default 60 (uWSGI's).
    pub timeout: u64,
    /// `http-headers-timeout`, `http-connect-timeout` (default: `http-timeout`).
    pub headers_timeout: Option<u64>,
    pub connect_timeout: Option<u64>,
    pub modifier1: u8,
    pub modifier2: u8,
    /// `http-var = KEY=VALUE`.
    pub vars: Vec<(String, String)>,
    pub server_name_as_http_host: bool,
}

/// The validated configuration of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The ini this was read from (absolute, as given: not symlink-resolved).
    pub ini_path: PathBuf,
    /// Every file whose change should trigger a reload: the ini and anything it
    /// included, the env file(s) read, `touch-reload` files and `fs-reload` paths.
    pub watch_paths: Vec<PathBuf>,
    /// `fs-reload` paths that are directories: a change to any entry directly
    /// in one (created, modified, deleted, renamed) triggers a reload, as
    /// uWSGI's inotify watch on the directory does (not recursively).
    pub watch_dirs: Vec<PathBuf>,
    pub sockets: Vec<SocketSpec>,
    /// `http = ADDR`: the HTTP router, if any. Its private worker socket, when
    /// one is needed, is already in `sockets`.
    pub http: Option<HttpRouterSpec>,
    /// `chmod-socket` as a mode (`1` means 0o666).
    pub chmod_socket: Option<u32>,
    pub chown_socket: Option<ChownSpec>,
    /// `listen` backlog as written; `None` means our default (1024, clamped to somaxconn).
    pub listen: Option<u32>,
    pub chdir: Option<PathBuf>,
    pub module: Option<String>,
    pub wsgi_file: Option<PathBuf>,
    /// `callable`, default `application`.
    pub callable: String,
    /// `home`/`virtualenv`/`venv`/`pyhome`.
    pub home: Option<PathBuf>,
    /// `pythonpath` entries in order, as written (globs allowed; expanded by the worker).
    pub pythonpath: Vec<String>,
    /// `processes`/`workers`, default 1, 1 to `build::MAX_PROCESSES`.
    pub processes: u32,
    /// `threads`, default 1, at least 1.
    pub threads: u32,
    pub pidfile: Option<PathBuf>,
    pub vacuum: bool,
    pub uid: Option<String>,
    pub gid: Option<String>,
    /// `max-fd`: RLIMIT_NOFILE (soft and hard) the master sets on itself
    /// before the privilege drop, so every process it starts inherits it.
    pub max_fd: Option<u64>,
    /// Worker environment additions in order: the env file first, then `env =` lines.
    pub env: Vec<EnvVar>,
    pub harakiri: Option<Duration>,
    /// `harakiri-graceful-timeout` (uWSGI 2.0.22+): after the stack dump, send
    /// `harakiri_graceful_signal` and wait this long before SIGKILL.
    pub harakiri_graceful_timeout: Option<Duration>,
    /// `harakiri-graceful-signal`, a signal number; default SIGTERM (15).
    pub harakiri_graceful_signal: i32,
    /// `log-slow` in milliseconds, 0 = off: a request at least this slow is
    /// logged even with `disable-logging`, and counted in the metrics.
    pub log_slow_ms: u64,
    /// 0 = off.
    pub max_requests: u64,
    /// Megabytes, 0 = off.
    pub reload_on_rss_mb: u64,
    /// Worker lifetimes, memory limits, `cheaper` (`lifetimes.rs`).
    pub lifetimes: super::lifetimes::Lifetimes,
    /// Default 60 s.
    pub worker_reload_mercy: Duration,
    /// `buffer-size` when set (clamped to 65535 as uWSGI does); `None` accepts 65535.
    pub buffer_size: Option<u32>,
    pub logto: Option<PathBuf>,
    /// `logto2`: opened after the privilege drop (so created as `uid`), it
    /// then replaces `logto` (or stderr) as uWSGI's logto() does with fd 1/2.
    pub logto2: Option<PathBuf>,
    /// Bytes, 0 = off.
    pub log_maxsize: u64,
    pub log_reopen: bool,
    pub disable_logging: bool,
    /// `wsgi-disable-file-wrapper`: no `wsgi.file_wrapper` in the environ.
    pub wsgi_disable_file_wrapper: bool,
    /// `logger`, `req-logger`, `log-format`, `log-date`, `log-4xx`… (`logging.rs`).
    pub logging: super::logging::Logging,
    pub daemonize: Option<PathBuf>,
    pub touch_reload: Vec<PathBuf>,
    /// `fs-reload` (repeatable): graceful reload when the file or directory changes.
    pub fs_reload: Vec<PathBuf>,
    /// `stats`: a unix path (absolute) or `host:port`, as written.
    pub stats: Option<String>,
    /// `prometheus` (our key): where `GET /metrics` is served, same forms as `stats`.
    pub prometheus: Option<String>,
    /// `prometheus-public = true` lets `prometheus` listen on a non-loopback address.
    pub prometheus_public: bool,
    pub strict: bool,
    pub die_on_term: bool,
    /// `lazy-apps` (or `lazy`): every worker imports the app itself. False (uWSGI's
    /// default) is preload: one app template per generation imports it and forks
    /// the workers.
    pub lazy_apps: bool,
    pub need_app: bool,
    /// Replace workers one slot at a time on reload instead of a full generation
    /// (memory-tight hosts). Key: `reload-one-by-one`.
    pub reload_one_by_one: bool,
    /// Attached daemons, cron jobs, hooks, imports, the master fifo (`around.rs`).
    pub around: super::around::Around,
    /// Static files, mounts, routes, post-buffering, add-header, socket-timeout
    /// (`serving.rs`); the worker carries them out.
    pub serving: super::serving::Serving,
    /// amy-emperor's own `reload-check = PATH` (repeatable): before a new worker
    /// accepts public traffic it serves `GET PATH` privately; anything but 2xx/3xx
    /// fails it. Empty: no check.
    pub reload_check: Vec<String>,
    /// `reload-check-host`: the Host header (and SERVER_NAME) of the check request.
    pub reload_check_host: String,
    /// `reload-check-timeout` (seconds, default 10): longer fails the check.
    pub reload_check_timeout: Duration,
    /// The resolved options in `--show-config` order with secrets redacted
    /// (`show::redacted`): the worker's `uwsgi.opt`. Filled by `load`.
    pub uwsgi_opt: Vec<(String, String)>,
}
