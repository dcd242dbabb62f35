//! Raw option list → typed, validated [`Config`].
//!
//! Scalars: the last occurrence wins; `socket`, `env`, `pythonpath` and
//! `touch-reload` accumulate. Numbers are read as uWSGI reads them (`atoi`, so
//! `4 # four` is 4) but a negative value is an error, as it is fatal in uWSGI.
//! Paths resolve the way uWSGI resolves them: sockets, `wsgi-file`, `home`,
//! `touch-reload` and unix `stats` against `chdir` (uWSGI binds and loads after
//! changing directory); `pidfile`, `logto` and `daemonize` against the start-up cwd.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::around;
use super::classes::{self, KeyClass};
use super::envfile::{self, LineKind};
use super::expand::{Expander, Opt, Origin};
use super::keys;
use super::lifetimes;
use super::python_probe;
use super::serving;
use super::values::{self, NumberError};
use super::{
    site, ChownSpec, Config, ConfigError, EnvVar, ErrorKind, HttpRouterSpec, LoadOptions, Protocol,
    SocketAddress, SocketSpec, Warning,
};

/// The most workers one instance runs: past this a typo (`processes = 40000`)
/// would fork the host to death before anything is logged.
pub const MAX_PROCESSES: u64 = 1024;
/// Threads per worker.
pub const MAX_THREADS: u64 = 1024;
/// uWSGI's `buffer-size` is 16-bit: larger values are clamped (with a warning).
pub const MAX_BUFFER_SIZE: u64 = 65535;
/// Below this nginx's own uwsgi_params block (about 400 bytes) barely fits.
pub const MIN_BUFFER_SIZE: u64 = 512;
/// A timeout (harakiri, mercy) longer than a day is a typo.
pub const MAX_SECONDS: u64 = 86_400;
/// `sun_path` holds 108 bytes, the final NUL included.
pub const MAX_UNIX_PATH: usize = 107;

/// Keys whose repeats accumulate, as uWSGI's option handlers do
/// (`repeatable_keys.txt`, taken from uWSGI's option tables); every other key
/// is a scalar: last wins, and a repeat gets a warning naming both lines.
/// Every honoured repeatable key either keeps each value or refuses the
/// second one itself (`http`), so the warning is never wrong about what runs.
fn accumulates(canonical: &str) -> bool {
    static KEYS: std::sync::OnceLock<HashSet<&'static str>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        include_str!("repeatable_keys.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
    .contains(canonical)
}

fn number(opt: &Opt, min: u64, max: u64) -> Result<u64, ConfigError> {
    values::parse_u64(&opt.key, &opt.value, min, max).map_err(|e| {
        let kind = match e {
            NumberError::Range { .. } => ErrorKind::OutOfRange,
            _ => ErrorKind::InvalidValue,
        };
        opt.origin.error(kind, e.to_string())
    })
}

fn seconds(opt: &Opt) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(number(opt, 0, MAX_SECONDS)?))
}

fn resolve(base: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// `chmod-socket`: `1` means 666, otherwise exactly three octal digits.
pub fn parse_chmod(value: &str) -> Option<u32> {
    if value == "1" {
        return Some(0o666);
    }
    let b = value.as_bytes();
    if b.len() != 3 || !b.iter().all(|c| (b'0'..=b'7').contains(c)) {
        return None;
    }
    Some(b.iter().fold(0, |acc, c| (acc << 3) + u32::from(c - b'0')))
}

/// What looks like an inline comment: uWSGI has none, so it is part of the value.
fn comment_tail(v: &str) -> Option<usize> {
    [" #", " ;", "\t#", "\t;"]
        .iter()
        .filter_map(|m| v.find(m))
        .min()
}

/// The colon before the port: the first one, or for `[v6addr]:port` the one
/// after the closing bracket (uWSGI binds those as TCP6).
fn port_colon(v: &str) -> Option<usize> {
    if v.starts_with('[') {
        v.find("]:").map(|i| i + 1)
    } else {
        v.find(':')
    }
}

fn parse_socket(
    opt: &Opt,
    protocol: Protocol,
    base: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<SocketSpec, ConfigError> {
    let v = opt.value.as_str();
    let invalid = |m: String| opt.origin.error(ErrorKind::InvalidValue, m);
    if v.is_empty() {
        return Err(invalid(format!("{}: empty socket address", opt.key)));
    }
    if v.contains('\0') {
        return Err(invalid(format!("{}: the value holds a NUL byte", opt.key)));
    }
    let address = if v.starts_with('@') {
        return Err(opt.origin.error(
            ErrorKind::Unsupported,
            format!("{} = {v}: abstract unix sockets are not supported", opt.key),
        ));
    } else if let (false, Some(colon)) = (v.starts_with('/') || v.starts_with('.'), port_colon(v)) {
        // uWSGI: the host is what precedes the first ':' (after `]` for an IPv6
        // address in brackets), the port is atoi() of the rest, so
        // `127.0.0.1:8080 # web` binds port 8080.
        let port_text = &v[colon + 1..];
        let digits = port_text.bytes().take_while(u8::is_ascii_digit).count();
        let tail = &port_text[digits..];
        let port: u16 = if digits > 0 && (tail.is_empty() || comment_tail(tail) == Some(0)) {
            port_text[..digits]
                .parse()
                .map_err(|_| invalid(format!("{} = {v}: invalid port", opt.key)))?
        } else {
            return Err(invalid(format!("{} = {v}: invalid port", opt.key)));
        };
        if !tail.is_empty() {
            warnings.push(opt.origin.warning(format!(
                "{} = {v}: uWSGI has no inline comments; it binds port {port} and ignores \"{}\", and so does amy-emperor: remove the comment",
                opt.key,
                tail.trim()
            )));
        }
        SocketAddress::Tcp {
            host: v[..colon].to_string(),
            port,
        }
    } else {
        if let Some(i) = comment_tail(v) {
            warnings.push(opt.origin.warning(format!(
                "{} = {v}: uWSGI has no inline comments; the socket file is named \"{v}\", \"{}\" included, as uWSGI names it: remove the comment",
                opt.key,
                v[i..].trim()
            )));
        }
        let path = resolve(base, v);
        if path.as_os_str().len() > MAX_UNIX_PATH {
            return Err(invalid(format!(
                "{} = {v}: the socket path is {} bytes, longer than the {MAX_UNIX_PATH} a unix socket address holds",
                opt.key,
                path.as_os_str().len()
            )));
        }
        SocketAddress::Unix(path)
    };
    Ok(SocketSpec {
        address,
        protocol,
        key: opt.key.clone(),
        line: opt.origin.line.unwrap_or(0),
    })
}

/// Accepts a key the table says is not ours to act on, or refuses it.
struct Classifier<'o> {
    allowed: &'o [String],
    reported: HashSet<String>,
    unsupported: Vec<ConfigError>,
}

impl Classifier<'_> {
    /// Returns whether the typed layer should read the key.
    fn check(&mut self, opt: &Opt, warnings: &mut Vec<Warning>) -> bool {
        let key = opt.key.as_str();
        let Some(entry) = classes::classify(key, &opt.value) else {
            if self.reported.insert(opt.key.clone()) {
                warnings.push(opt.origin.warning(format!(
                    "unknown key \"{key}\" ignored (uWSGI keeps it as a placeholder)"
                )));
            }
            return false;
        };
        match entry.class {
            KeyClass::Honoured => true,
            KeyClass::Equivalent => false,
            KeyClass::Tuning => {
                if self.reported.insert(opt.key.clone()) {
                    warnings.push(
                        opt.origin
                            .warning(format!("\"{key}\" ignored (tuning): {}", entry.reason)),
                    );
                }
                false
            }
            KeyClass::Unsupported => {
                if self.allowed.iter().any(|a| a == key) {
                    if self.reported.insert(opt.key.clone()) {
                        warnings.push(opt.origin.warning(format!(
                            "\"{key}\" is not supported: {} (allowed by --allow-unsupported {key})",
                            entry.reason
                        )));
                    }
                } else {
                    self.unsupported.push(opt.origin.error(
                        ErrorKind::Unsupported,
                        format!("\"{key}\" is not supported: {}", entry.reason),
                    ));
                }
                false
            }
        }
    }

    /// The first refusal, naming how many more there are.
    fn finish(self) -> Result<(), ConfigError> {
        let mut errors = self.unsupported.into_iter();
        let Some(mut first) = errors.next() else {
            return Ok(());
        };
        let rest: Vec<ConfigError> = errors.collect();
        if !rest.is_empty() {
            let lines: Vec<String> = rest
                .iter()
                .map(|e| e.line.map_or_else(|| "?".to_string(), |l| l.to_string()))
                .collect();
            first.message.push_str(&format!(
                " (and {} more unsupported key{} at line{} {}; --allow-unsupported KEY accepts one)",
                rest.len(),
                if rest.len() == 1 { "" } else { "s" },
                if rest.len() == 1 { "" } else { "s" },
                lines.join(", ")
            ));
        } else {
            first
                .message
                .push_str(" (--allow-unsupported KEY accepts it)");
        }
        Err(first)
    }
}

pub fn build(
    ini: &Path,
    ex: &Expander<'_>,
    options: &LoadOptions,
    root: bool,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    let cwd = options.cwd.as_path();
    let mut warnings = Vec::new();
    // uWSGI changes directory before it binds and loads: find the final chdir first.
    let chdir_opt = ex.settings().filter(|o| o.key == "chdir").last();
    if let Some(o) = chdir_opt {
        if o.value.is_empty() || o.value.contains('\0') {
            return Err(o
                .origin
                .error(ErrorKind::InvalidValue, "chdir: empty value or NUL byte"));
        }
    }
    let chdir = chdir_opt.map(|o| resolve(cwd, &o.value));
    let app_base = chdir.clone().unwrap_or_else(|| cwd.to_path_buf());

    let mut c = Config {
        ini_path: std::path::absolute(cwd.join(ini)).unwrap_or_else(|_| cwd.join(ini)),
        watch_paths: Vec::new(),
        watch_dirs: Vec::new(),
        sockets: Vec::new(),
        http: None,
        chmod_socket: None,
        chown_socket: None,
        listen: None,
        chdir: chdir.clone(),
        module: None,
        wsgi_file: None,
        callable: "application".into(),
        home: None,
        pythonpath: Vec::new(),
        processes: 1,
        threads: 1,
        pidfile: None,
        vacuum: false,
        uid: None,
        gid: None,
        max_fd: None,
        env: Vec::new(),
        harakiri: None,
        harakiri_graceful_timeout: None,
        harakiri_graceful_signal: 15,
        log_slow_ms: 0,
        max_requests: 0,
        reload_on_rss_mb: 0,
        lifetimes: Default::default(),
        worker_reload_mercy: Duration::from_secs(60),
        buffer_size: None,
        logto: None,
        logto2: None,
        log_maxsize: 0,
        log_reopen: false,
        disable_logging: false,
        wsgi_disable_file_wrapper: false,
        logging: Default::default(),
        daemonize: None,
        touch_reload: Vec::new(),
        fs_reload: Vec::new(),
        stats: None,
        prometheus: None,
        prometheus_public: false,
        strict: ex.strict(),
        die_on_term: false,
        lazy_apps: false,
        need_app: false,
        reload_one_by_one: false,
        around: Default::default(),
        serving: Default::default(),
        reload_check: Vec::new(),
        reload_check_host: "localhost".into(),
        reload_check_timeout: Duration::from_secs(10),
        uwsgi_opt: Vec::new(),
    };
    let mut origins = site::Origins::default();
    let mut ini_env: Vec<(EnvVar, Origin)> = Vec::new();
    let mut classifier = Classifier {
        allowed: &options.allow_unsupported,
        reported: HashSet::new(),
        unsupported: Vec::new(),
    };
    let mut scalars: HashMap<&str, Origin> = HashMap::new();
    let mut prometheus_origin: Option<Origin> = None;
    let mut env_duplicates = envfile::Duplicates::default();
    let mut http = HttpKeys::default();
    let mut http_to: Vec<SocketAddress> = Vec::new();
    // `protocol`: the protocol of plain `socket` entries (uWSGI's default
    // protocol, core/socket.c: `uwsgi-socket` and `http-socket` name theirs).
    let mut default_protocol: Option<Protocol> = None;
    let mut plain_sockets: Vec<usize> = Vec::new();
    for opt in ex.settings() {
        if opt.key.is_empty() || keys::is_logic_end(&opt.key) {
            continue;
        }
        // Equivalent keys the typed config still records.
        match opt.key.as_str() {
            "die-on-term" => c.die_on_term = keys::flag_value(&opt.value),
            "need-app" => c.need_app = keys::flag_value(&opt.value),
            _ => {}
        }
        // Our own keys are not uWSGI options.
        let ours = keys::is_own_key(&opt.key);
        if !ours && !classifier.check(opt, &mut warnings) {
            continue;
        }
        if keys::is_immediate(&opt.key) && opt.key != "listen" {
            // ini, include, set, strict, logic: done by the expander.
            continue;
        }
        let key = keys::canonical(&opt.key);
        if !accumulates(key) {
            if let Some(first) = scalars.get(key) {
                if first.line != opt.origin.line || first.path != opt.origin.path {
                    let at = match (first.path == opt.origin.path, first.line) {
                        (true, Some(l)) => format!("line {l}"),
                        (_, l) => format!(
                            "{}{}",
                            first.path.display(),
                            l.map(|l| format!(":{l}")).unwrap_or_default()
                        ),
                    };
                    warnings.push(opt.origin.warning(format!(
                        "\"{}\" is given again (first at {at}); the last value wins, as in uWSGI",
                        opt.key
                    )));
                }
            }
            scalars.insert(key, opt.origin.clone());
        }
        let v = opt.value.as_str();
        if v.contains('\0') {
            return Err(opt.origin.error(
                ErrorKind::InvalidValue,
                format!("\"{}\": the value holds a NUL byte", opt.key),
            ));
        }
        let flag = keys::flag_value(v);
        match key {
            "socket" => {
                if opt.key == "socket" {
                    plain_sockets.push(c.sockets.len());
                }
                c.sockets.push(parse_socket(
                    opt,
                    Protocol::Uwsgi,
                    &app_base,
                    &mut warnings,
                )?)
            }
            "protocol" => {
                default_protocol = Some(match v {
                    "uwsgi" => Protocol::Uwsgi,
                    "http" => Protocol::Http,
                    _ => {
                        return Err(opt.origin.error(
                            ErrorKind::Unsupported,
                            format!(
                                "protocol = {v} is not supported: clients of that protocol could not talk to the socket (uwsgi and http are)"
                            ),
                        ))
                    }
                })
            }
            "http-socket" => {
                c.sockets
                    .push(parse_socket(opt, Protocol::Http, &app_base, &mut warnings)?)
            }
            "http"
            | "http-to"
            | "http-keepalive"
            | "http-timeout"
            | "http-headers-timeout"
            | "http-connect-timeout"
            | "http-modifier1"
            | "http-modifier2"
            | "http-var"
            | "http-server-name-as-http-host" => {
                http_key(opt, key, &app_base, &mut http, &mut http_to, &mut warnings)?
            }
            "chmod-socket" => {
                let mode = parse_chmod(v).ok_or_else(|| {
                    opt.origin
                        .error(ErrorKind::InvalidValue, format!("invalid chmod value: {v}"))
                })?;
                if mode & 0o006 == 0o006 {
                    warnings.push(opt.origin.warning(format!(
                        "chmod-socket = {v}: EVERY local user can connect to the app's socket (mode {mode:03o}); use 660 and chown-socket to nginx's group"
                    )));
                }
                origins.chmod = Some(opt.origin.clone());
                c.chmod_socket = Some(mode);
            }
            "chown-socket" => {
                origins.chown = Some(opt.origin.clone());
                c.chown_socket = Some(match v.split_once(':') {
                    Some((u, g)) => ChownSpec {
                        user: u.into(),
                        group: Some(g.into()),
                    },
                    None => ChownSpec {
                        user: v.into(),
                        group: None,
                    },
                })
            }
            "listen" => c.listen = Some(number(opt, 1, 65535)? as u32),
            "chdir" => origins.chdir = Some(opt.origin.clone()),
            "module" => c.module = Some(v.into()),
            "wsgi-file" => {
                origins.wsgi_file = Some(opt.origin.clone());
                c.wsgi_file = Some(resolve(&app_base, v))
            }
            "callable" => c.callable = v.into(),
            "home" => {
                origins.home = Some(opt.origin.clone());
                c.home = Some(resolve(&app_base, v))
            }
            "pythonpath" => c.pythonpath.push(v.into()),
            "processes" => c.processes = number(opt, 1, MAX_PROCESSES)? as u32,
            "threads" => c.threads = number(opt, 1, MAX_THREADS)? as u32,
            "pidfile" => c.pidfile = Some(resolve(cwd, v)),
            "vacuum" => c.vacuum = flag,
            "uid" => {
                origins.uid = Some(opt.origin.clone());
                c.uid = Some(v.into())
            }
            "gid" => {
                origins.gid = Some(opt.origin.clone());
                c.gid = Some(v.into())
            }
            // Linux caps RLIMIT_NOFILE at fs.nr_open (1048576 by default).
            "max-fd" => {
                origins.max_fd = Some(opt.origin.clone());
                c.max_fd = Some(number(opt, 1, u64::from(u32::MAX))?);
            }
            "env" => {
                if let Some(var) = env_var(opt, &mut warnings, &mut env_duplicates)? {
                    ini_env.push((var, opt.origin.clone()));
                }
            }
            "harakiri" => {
                let d = seconds(opt)?;
                c.harakiri = (!d.is_zero()).then_some(d);
            }
            "harakiri-graceful-timeout" => {
                let d = seconds(opt)?;
                c.harakiri_graceful_timeout = (!d.is_zero()).then_some(d);
            }
            "harakiri-graceful-signal" => {
                let n = number(opt, 1, 64)?;
                if n == 9 || n == 19 {
                    return Err(opt.origin.error(
                        ErrorKind::OutOfRange,
                        format!("harakiri-graceful-signal = {v}: SIGKILL and SIGSTOP cannot be caught; the worker could not shut down gracefully"),
                    ));
                }
                c.harakiri_graceful_signal = n as i32;
            }
            "log-slow" => c.log_slow_ms = number(opt, 0, MAX_SECONDS * 1000)?,
            "max-requests" => c.max_requests = number(opt, 0, u64::MAX)?,
            "reload-on-rss" => c.reload_on_rss_mb = number(opt, 0, u64::MAX >> 20)?,
            "worker-reload-mercy" => c.worker_reload_mercy = seconds(opt)?,
            "buffer-size" => {
                let n = number(opt, 1, u64::MAX)?;
                if n > MAX_BUFFER_SIZE {
                    warnings.push(opt.origin.warning(format!(
                        "buffer-size = {v}: clamped to {MAX_BUFFER_SIZE} (uWSGI stores it in 16 bits)"
                    )));
                } else if n < MIN_BUFFER_SIZE {
                    warnings.push(opt.origin.warning(format!(
                        "buffer-size = {v}: below {MIN_BUFFER_SIZE} bytes most requests from nginx do not fit and get a 431"
                    )));
                }
                c.buffer_size = Some(n.min(MAX_BUFFER_SIZE) as u32)
            }
            "logto" | "logto2" => {
                if v.contains(':') {
                    warnings.push(opt.origin.warning(format!(
                        "{key} = {v}: uWSGI reads a value with ':' as a UDP address; amy-emperor treats it as a file"
                    )));
                }
                let path = resolve(cwd, v);
                origins
                    .log_files
                    .push((path.clone(), format!("{key} = {v}"), opt.origin.clone()));
                *(if key == "logto" { &mut c.logto } else { &mut c.logto2 }) = Some(path);
            }
            "log-maxsize" => c.log_maxsize = number(opt, 0, u64::MAX)?,
            "log-reopen" => c.log_reopen = flag,
            "disable-logging" => c.disable_logging = flag,
            "wsgi-disable-file-wrapper" => c.wsgi_disable_file_wrapper = flag,
            "daemonize" => {
                c.daemonize = Some(resolve(cwd, v));
                origins
                    .log_files
                    .push((resolve(cwd, v), format!("daemonize = {v}"), opt.origin.clone()));
            }
            "touch-reload" => c.touch_reload.push(resolve(&app_base, v)),
            "fs-reload" => c.fs_reload.push(resolve(&app_base, v)),
            "stats" | "stats-server" => {
                let stats = if v.contains(':') && !v.starts_with('/') {
                    v.to_string()
                } else {
                    resolve(&app_base, v).display().to_string()
                };
                site::check_stats(&stats)
                    .map_err(|m| opt.origin.error(ErrorKind::InvalidValue, m))?;
                c.stats = Some(stats)
            }
            "prometheus" => {
                prometheus_origin = Some(opt.origin.clone());
                c.prometheus = Some(if v.contains(':') && !v.starts_with('/') {
                    v.to_string()
                } else {
                    resolve(&app_base, v).display().to_string()
                })
            }
            "prometheus-public" => c.prometheus_public = flag,
            "lazy-apps" => c.lazy_apps = flag,
            "reload-one-by-one" => c.reload_one_by_one = flag,
            "reload-check" => {
                if !v.starts_with('/') || v.chars().any(|ch| ch.is_whitespace() || ch.is_control())
                {
                    return Err(opt.origin.error(
                        ErrorKind::InvalidValue,
                        format!("reload-check = {v}: must be a path starting with / (no spaces)"),
                    ));
                }
                c.reload_check.push(v.to_string())
            }
            "reload-check-host" => {
                if v.is_empty() || v.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
                    return Err(opt.origin.error(
                        ErrorKind::InvalidValue,
                        format!("reload-check-host = {v}: must be a host name (no spaces)"),
                    ));
                }
                c.reload_check_host = v.to_string()
            }
            "reload-check-timeout" => {
                c.reload_check_timeout = Duration::from_secs(number(opt, 1, 3600)?)
            }
            k if serving::handles(k) => {
                serving::apply(&mut c.serving, k, opt, &app_base, &mut warnings)?
            }
            "strict" => {}
            k if around::is_around_key(k) => around::apply(&mut c.around, k, opt, &app_base)?,
            k if super::logging::is_logging_key(k) => {
                super::logging::apply(&mut c.logging, k, opt, cwd, &mut warnings)?;
                let added = match k {
                    "logger" => c.logging.loggers.last(),
                    "req-logger" | "logger-req" => c.logging.req_loggers.last(),
                    _ => None,
                };
                if let Some(super::logging::LoggerSpec {
                    kind: super::logging::LoggerKind::File { path, .. },
                    ..
                }) = added
                {
                    origins
                        .log_files
                        .push((path.clone(), format!("{} = {v}", opt.key), opt.origin.clone()));
                }
            }
            k if lifetimes::is_lifetime_key(k) => lifetimes::apply(&mut c.lifetimes, k, opt)?,
            other => {
                // A key the table calls honoured that this match does not read
                // is a bug in the table: fail closed rather than ignore it.
                return Err(opt.origin.error(
                    ErrorKind::Unsupported,
                    format!("\"{other}\" is not supported: amy-emperor does not read it yet"),
                ));
            }
        }
    }
    classifier.finish()?;
    if let (Some(addr), Some(origin)) = (&c.prometheus, &prometheus_origin) {
        // Checked here so `check` and a reload refuse it, not only `start`.
        crate::metrics::server::parse_address(addr, c.prometheus_public)
            .map_err(|e| origin.error(ErrorKind::InvalidValue, e.to_string()))?;
    }
    around::finish(&mut c.around);
    super::logging::finish(&mut c.logging);
    lifetimes::finish(&mut c.lifetimes, c.processes, &mut warnings)?;
    for key in &options.allow_unsupported {
        let unsupported = classes::entry(key).is_some_and(|e| e.class == KeyClass::Unsupported);
        if !unsupported {
            warnings.push(Warning {
                path: ini.to_path_buf(),
                line: None,
                message: format!(
                    "--allow-unsupported {key}: not an unsupported uWSGI option, nothing to allow"
                ),
            });
        }
    }
    if let Some(protocol) = default_protocol {
        for i in plain_sockets {
            c.sockets[i].protocol = protocol;
        }
    }
    c.http = http_router(http, http_to, &mut c.sockets, ini, &mut warnings);
    if c.sockets.is_empty() {
        return Err(ConfigError::new(
            ErrorKind::NoSocket,
            ini,
            None,
            "no socket configured (socket, uwsgi-socket or http-socket): nothing could reach the app",
        ));
    }

    // The workers' environment: the master's, then `--env-file` (or a
    // `uwsgi_env` beside an ini that loads none), then the `env =` lines in
    // order, a for-readline loop's among them: a later one wins. Built on
    // every load, so a variable removed from the file is gone after a reload.
    let mut env_files: Vec<PathBuf> = ex.env_files_read.clone();
    let explicit = options
        .env_file
        .as_ref()
        .map(|p| resolve(cwd, &p.to_string_lossy()));
    let implicit = if explicit.is_none() && ex.env_files_read.is_empty() {
        let beside = c.ini_path.parent().map(|d| d.join("uwsgi_env"));
        beside.filter(|p| p.is_file())
    } else {
        None
    };
    if let Some(path) = explicit.or(implicit) {
        let (vars, w) = envfile::read(&path, root)?;
        warnings.extend(w);
        c.env.extend(vars.into_iter().map(|(v, _)| v));
        env_files.push(path);
    }
    c.env.extend(ini_env.into_iter().map(|(v, _)| v));
    site::check_environment_size(ini, &options.environment, &c.env)?;

    site::check(&c, &origins, ini, options, root, &mut warnings)?;
    serving::check_on_host(&c.serving)?;
    python_probe::check(&c, &options.environment)?;

    c.watch_paths.extend(ex.inis_read.iter().cloned());
    c.watch_paths.extend(env_files);
    c.watch_paths.extend(c.touch_reload.iter().cloned());
    // The path itself (its own change, deletion, rename, seen from its parent
    // directory), and for a directory its entries too. Whether it is a
    // directory is decided now, as uWSGI's inotify_add_watch does at start.
    c.watch_paths.extend(c.fs_reload.iter().cloned());
    c.watch_dirs = c.fs_reload.iter().filter(|p| p.is_dir()).cloned().collect();
    let mut seen = HashSet::new();
    c.watch_paths.retain(|p| seen.insert(p.clone()));
    Ok((c, warnings))
}

/// The `http*` keys as read, before `http` itself is known to be set.
#[derive(Default)]
struct HttpKeys {
    /// `http`: the address and its line.
    address: Option<(SocketAddress, usize)>,
    keepalive: bool,
    timeout: Option<u64>,
    headers_timeout: Option<u64>,
    connect_timeout: Option<u64>,
    modifier1: u8,
    modifier2: u8,
    vars: Vec<(String, String)>,
    server_name_as_http_host: bool,
    /// The first `http*` key other than `http`, for the warning when `http` is missing.
    first_other: Option<(String, usize)>,
}

fn http_key(
    opt: &Opt,
    key: &str,
    app_base: &Path,
    h: &mut HttpKeys,
    to: &mut Vec<SocketAddress>,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let v = opt.value.as_str();
    let line = opt.origin.line.unwrap_or(0);
    if key != "http" && h.first_other.is_none() {
        h.first_other = Some((opt.key.clone(), line));
    }
    match key {
        "http" => {
            if h.address.is_some() {
                return Err(opt.origin.error(
                    ErrorKind::Unsupported,
                    "a second `http` address is not supported (one router address per instance)",
                ));
            }
            let spec = parse_socket(opt, Protocol::Http, app_base, warnings)?;
            h.address = Some((spec.address, line));
        }
        "http-to" => to.push(parse_socket(opt, Protocol::Uwsgi, app_base, warnings)?.address),
        // `optional_argument` + `uwsgi_opt_set_int`: bare means 1, 0 means off;
        // a larger value is uWSGI's keep-alive idle timeout, which
        // `http-headers-timeout` (default `http-timeout`) bounds here.
        "http-keepalive" => h.keepalive = v.is_empty() || number(opt, 0, MAX_SECONDS)? > 0,
        "http-timeout" => h.timeout = Some(number(opt, 0, MAX_SECONDS)?),
        "http-headers-timeout" => h.headers_timeout = Some(number(opt, 0, MAX_SECONDS)?),
        "http-connect-timeout" => h.connect_timeout = Some(number(opt, 0, MAX_SECONDS)?),
        "http-modifier1" => h.modifier1 = number(opt, 0, 255)? as u8,
        "http-modifier2" => h.modifier2 = number(opt, 0, 255)? as u8,
        "http-var" => match v.split_once('=') {
            Some((k, val)) if !k.is_empty() => h.vars.push((k.to_string(), val.to_string())),
            _ => {
                return Err(opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("http-var = {v}: expected KEY=VALUE"),
                ))
            }
        },
        "http-server-name-as-http-host" => h.server_name_as_http_host = keys::flag_value(v),
        _ => unreachable!("http_key called for {key}"),
    }
    Ok(())
}

/// The router spec, and the private uwsgi socket its workers need: uWSGI's
/// `http_init` binds `127.0.0.1:0` when there is no socket and no `http-to`
/// (and then routes to socket 0; we route to the first *uwsgi* socket, since a
/// router speaking uwsgi to an `http-socket` cannot work).
fn http_router(
    h: HttpKeys,
    to: Vec<SocketAddress>,
    sockets: &mut Vec<SocketSpec>,
    ini: &Path,
    warnings: &mut Vec<Warning>,
) -> Option<HttpRouterSpec> {
    let Some((address, line)) = h.address else {
        // As in uWSGI, router settings without a router change nothing.
        if let Some((key, line)) = h.first_other {
            warnings.push(Warning {
                path: ini.to_path_buf(),
                line: Some(line),
                message: format!("\"{key}\" has no effect: there is no `http = ADDR` router"),
            });
        }
        return None;
    };
    if to.is_empty() && !sockets.iter().any(|s| s.protocol == Protocol::Uwsgi) {
        sockets.push(SocketSpec {
            address: SocketAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 0,
            },
            protocol: Protocol::Uwsgi,
            key: "http (private uwsgi socket)".into(),
            line,
        });
    }
    Some(HttpRouterSpec {
        address,
        line,
        to,
        keepalive: h.keepalive,
        timeout: h.timeout.unwrap_or(60),
        headers_timeout: h.headers_timeout,
        connect_timeout: h.connect_timeout,
        modifier1: h.modifier1,
        modifier2: h.modifier2,
        vars: h.vars,
        server_name_as_http_host: h.server_name_as_http_host,
    })
}

/// One `env =` option as a variable. Lines a `for-readline` loop brought in obey
/// the env-file rules, checked on the raw line, but take the value uWSGI would
/// (after `$()`, `@()` and `%()` expansion); when nothing was expanded, the
/// value is the line's bytes, unchanged.
fn env_var(
    opt: &Opt,
    warnings: &mut Vec<Warning>,
    duplicates: &mut envfile::Duplicates,
) -> Result<Option<EnvVar>, ConfigError> {
    let value = opt.value.as_str();
    if let Some(src) = &opt.origin.env_line {
        let kind = envfile::parse_line(&src.raw, &src.path, src.line, warnings)?;
        let LineKind::Var {
            name,
            value: raw_value,
            export_prefix,
        } = kind
        else {
            return Ok(None);
        };
        duplicates.note(&name, &src.path, src.line, warnings);
        let expands = [b"$(", b"%(", b"@("]
            .iter()
            .any(|m| src.raw.windows(2).any(|w| w == *m));
        if !expands {
            return Ok(Some(EnvVar {
                name,
                value: OsString::from_vec(raw_value),
            }));
        }
        warnings.push(Warning {
            path: src.path.clone(),
            line: Some(src.line),
            message: format!("value of {name} contains $(, %( or @(: expanded as uWSGI does"),
        });
        let body = if export_prefix {
            value
                .trim_start()
                .strip_prefix("export ")
                .map_or(value, str::trim_start)
        } else {
            value
        };
        let v = body.split_once('=').map_or("", |(_, v)| v);
        envfile::check_var(&name, v.as_bytes(), &src.path, Some(src.line), warnings)?;
        return Ok(Some(EnvVar {
            name,
            value: OsString::from(v),
        }));
    }
    match value.split_once('=') {
        Some((name, v)) if !name.is_empty() => {
            if name.contains('\0') {
                return Err(opt
                    .origin
                    .error(ErrorKind::InvalidValue, "env: the name holds a NUL byte"));
            }
            let path = opt.origin.path.clone();
            envfile::check_var(name, v.as_bytes(), &path, opt.origin.line, warnings)?;
            Ok(Some(EnvVar {
                name: name.into(),
                value: OsString::from(v),
            }))
        }
        _ => {
            let name: String = value.chars().take(40).collect();
            warnings.push(opt.origin.warning(format!(
                "env = {name}: no '=' (uWSGI would unset the variable); ignored"
            )));
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_accepts_1_and_three_octal_digits_only() {
        assert_eq!(parse_chmod("1"), Some(0o666));
        assert_eq!(parse_chmod("660"), Some(0o660));
        assert_eq!(parse_chmod("007"), Some(0o007));
        for bad in ["", "66", "0660", "888", "abc", "rw"] {
            assert_eq!(parse_chmod(bad), None, "{bad:?}");
        }
    }
}
