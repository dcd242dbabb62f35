//! The master↔worker contract. The Python side is the package
//! `python/amy_worker/` (its `contract.py` mirrors the constants here); both
//! sides must change together. `tests/python/test_worker.py` runs the real
//! worker standalone against this contract, and `tests/serve.rs` runs it under
//! the real master.
//!
//! # Start
//! The master runs `<python> -c BOOTSTRAP amy-emperor-worker <id> <generation>`
//! where `<python>` is `<home>/bin/python` (or `python3`), with an explicit
//! environment: the master's start-up environment, then the env file, then `env =`
//! lines, plus [`ENV_CONFIG`]. BOOTSTRAP reads the worker package from
//! [`FD_SOURCE`] (a sealed memfd holding [`WORKER_PACKAGE`] as one JSON object
//! `{"amy_worker/server.py": "<source>", ...}`, so the site installs one binary and
//! no file is written), installs an importer for it and runs `amy_worker`.
//!
//! # File descriptors
//! | fd | what | direction |
//! |----|------|-----------|
//! | 0 | `/dev/null` | |
//! | 1, 2 | the shared log pipe (the master copies it to `logto`/stderr); request lines are written here with one `write` each | worker → master |
//! | [`FD_CONTROL`] | this worker's control pipe, newline-terminated messages: [`MSG_READY`] once the app is imported; on an import failure, [`MSG_FAILED`] followed by the traceback as one JSON string, before exit 3 (so `reload` and `status` can show why) | worker → master |
//! | [`FD_MASTER_ALIVE`] | read end of a pipe whose write end only the master holds: EOF means the master is gone → finish the current request and exit | master → worker |
//! | [`FD_SCOREBOARD`] | this worker's scoreboard page (memfd, [`SCOREBOARD_SIZE`] bytes), see below | shared memory |
//! | [`FD_SOURCE`] | the worker source (sealed memfd, the same for every worker of every generation); kept open close-on-exec after reading: `uwsgi.lock()` takes POSIX record locks on it, which exclude across processes | |
//! | [`FD_FIRST_LISTENER`].. | the listening sockets, in the order of `ENV_CONFIG.listeners` | |
//!
//! # Preload: the app template
//! Unless `lazy-apps` is set, each generation first runs one *template*: the same
//! start, with `"template": true` in [`ENV_CONFIG`], no [`FD_SCOREBOARD`], and at
//! [`FD_CONTROL`] a `SOCK_SEQPACKET` socketpair instead of a pipe (one message per
//! datagram, no newline needed). It imports the app, sends [`MSG_READY`] (or
//! [`MSG_FAILED`] and exits 3, as a worker would), then serves
//! `fork <id>` requests that carry, by SCM_RIGHTS, the new worker's control pipe
//! write end and scoreboard memfd; it answers `forked <id> <pid>` once the worker
//! (a double fork, in its own process group) is the master's child, or
//! `forkfailed <id> <json reason>`. The forked worker puts those fds at
//! [`FD_CONTROL`] and [`FD_SCOREBOARD`] and goes on as a worker whose app is loaded
//! (the reload check, then `ready`). See `python/amy_worker/template.py`.
//!
//! # Reload check
//! With `reload_check` paths in the config, a worker serves `GET PATH` privately
//! (`python/amy_worker/check.py`) before it sends [`MSG_READY`]; a status other
//! than 2xx/3xx, an exception or a timeout is `failed <json reason>` and exit
//! [`exit_code::CHECK_FAILED`].
//!
//! # Config
//! [`ENV_CONFIG`] holds JSON: `{"id", "generation", "module", "wsgi_file", "callable",
//! "chdir", "pythonpath": [...], "threads", "processes", "buffer_size",
//! "disable_logging", "wsgi_disable_file_wrapper", "max_requests", "max_requests_delta", "min_worker_lifetime",
//! "reload_on_rss_mb", "reload_on_as_mb", "limit_as_mb", "harakiri", "log_slow_ms", "template",
//! "reload_check": [paths], "reload_check_host", "reload_check_timeout",
//! "listeners": [{"fd", "proto": "uwsgi"|"http", "name"}], "serving": {...}}`.
//! `serving` is [`crate::config::serving::Serving`] serialized as is (static
//! maps, mounts, routes, post-buffering, add-header, socket-timeout; field names
//! are the struct's), read by `python/amy_worker/dispatch.py`. `uwsgi` is what the
//! app's `import uwsgi` reports (`python/amy_worker/uwsgi_api.py`): `{"master_pid",
//! "started_on" (Unix seconds), "pidfile", "opt": [[key, value], ...]}`, `opt` being
//! the resolved options with secrets redacted (`config::show::redacted`). The
//! worker removes the variable from `os.environ` before importing the app.
//!
//! # Scoreboard (little-endian, written only by the worker, read by the master)
//! | offset | type | field |
//! |---|---|---|
//! | 0 | f64 | start of the current request, `time.monotonic()` seconds (CLOCK_MONOTONIC, the master's clock too, immune to wall-clock jumps); 0.0 when idle |
//! | 8 | u64 | requests completed |
//! | 16 | u64 | bytes sent (response bodies) |
//! | 24 | f64 | total seconds spent in requests |
//! | 32 | u64 | exceptions raised by the app |
//! | 40 | u16 | length of the current request's "METHOD PATH" (no query string) |
//! | 42 | bytes | that text, at most [`SCOREBOARD_REQ_MAX`] bytes |
//!
//! | 256 | u64 × 6 | requests completed by status class: 1xx, 2xx, 3xx, 4xx, 5xx, other (no valid status) |
//! | 304 | u64 | requests in flight now, written only when several threads serve (with one, the request start at 0 says it: the master takes the larger) |
//! | 312 | u64 | requests slower than `log-slow` |
//! | 320 | u64 × 16 | request-duration histogram: requests per bucket (not cumulative), bucket *i* holds durations ≤ [`HISTOGRAM_BOUNDS`]\[i\] and above the bound before it; the slot after the last bound is +Inf |
//! | 448 | u64 × 8 | requests completed per listener, by its index in `listeners` (the last slot also counts every listener past it) |
//! | 512 | u64 | what the worker runs with, written once before it serves: bit 0 = the native uwsgi-vars parser ([`SB_FEATURE_NATIVE`]) |
//!
//! The counters from offset 256 are written with single aligned 8-byte stores
//! (a `memoryview` cast to `Q`), so the master never sees half a number. They
//! only grow over the worker's life; the master keeps the last reading of a
//! worker that is gone, so the instance's totals never go backwards.
//!
//! Readers tolerate torn reads (a field read mid-update is off by one request at
//! most); nothing here is used for correctness, only for harakiri, `status` and
//! the metrics.
//!
//! # Signals to a worker
//! - [`SIGNAL_HARAKIRI_DUMP`] (SIGUSR2, to the worker's pid only): harakiri is
//!   about to kill it. A dedicated thread (the signal is blocked in every other
//!   thread and taken with `sigwait`, so a stuck main thread does not matter) logs
//!   the oldest request's method, path (no query string), age, worker id, pid and
//!   the Python stack of the thread serving it, answers 504 on that connection if
//!   no response head was sent, counts it, and stops accepting. The master sends
//!   SIGKILL after [`HARAKIRI_DUMP_GRACE`] or `harakiri-graceful-timeout`.
//! - SIGTERM: graceful: stop accepting, finish the current request(s), exit 0.
//! - SIGINT, SIGQUIT: exit at once.
//! - SIGKILL: harakiri and mercy.
//!
//! # Exit codes
//! See [`ExitReason::from_code`].

/// Env var holding the worker's JSON config.
pub const ENV_CONFIG: &str = "AMY_EMPEROR_WORKER";

pub const FD_CONTROL: i32 = 3;
pub const FD_MASTER_ALIVE: i32 = 4;
pub const FD_SCOREBOARD: i32 = 5;
pub const FD_SOURCE: i32 = 6;
pub const FD_FIRST_LISTENER: i32 = 7;

/// Sent once on [`FD_CONTROL`] when the app is imported and the worker accepts.
pub const MSG_READY: &str = "ready";

/// `failed <json string>`: why the app could not be loaded (traceback).
pub const MSG_FAILED: &str = "failed";

pub const SCOREBOARD_SIZE: usize = 1024;
/// The request text ends where the counters begin.
pub const SCOREBOARD_REQ_MAX: usize = 256 - 42;
/// Offsets of the counters (see the table above).
pub const SB_BY_STATUS: usize = 256;
pub const SB_STATUS_CLASSES: usize = 6;
pub const SB_IN_FLIGHT: usize = 304;
pub const SB_SLOW: usize = 312;
pub const SB_HISTOGRAM: usize = 320;
pub const SB_HISTOGRAM_SLOTS: usize = 16;
pub const SB_BY_LISTENER: usize = 448;
pub const SB_LISTENER_SLOTS: usize = 8;
pub const SB_FEATURES: usize = 512;
/// Bit of [`SB_FEATURES`]: the worker parses uwsgi vars with the native module.
pub const SB_FEATURE_NATIVE: u64 = 1;

/// Upper bounds (seconds) of the request-duration histogram buckets, then +Inf.
/// Fixed, so counters of every worker and generation add up.
pub const HISTOGRAM_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Sent to a worker's pid (not its group) before a harakiri kill.
pub const SIGNAL_HARAKIRI_DUMP: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGUSR2;
/// How long a worker has between [`SIGNAL_HARAKIRI_DUMP`] and SIGKILL when
/// `harakiri-graceful-timeout` is not set: time to log the stack and answer 504,
/// and for the worker's other threads to finish their requests.
pub const HARAKIRI_DUMP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// The worker package, shipped inside the binary: (path under `python/`, source).
/// A unit test checks this lists exactly the files of `python/amy_worker/`.
macro_rules! package {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../python/", $path)))),*]
    };
}
pub const WORKER_PACKAGE: &[(&str, &str)] = package![
    "amy_worker/__init__.py",
    "amy_worker/__main__.py",
    "amy_worker/app.py",
    "amy_worker/applog.py",
    "amy_worker/buffering.py",
    "amy_worker/check.py",
    "amy_worker/contract.py",
    "amy_worker/dispatch.py",
    "amy_worker/errors.py",
    "amy_worker/harakiri.py",
    "amy_worker/fdio.py",
    "amy_worker/gevent_loop.py",
    "amy_worker/hooks.py",
    "amy_worker/http.py",
    "amy_worker/limits.py",
    "amy_worker/native.py",
    "amy_worker/logvars.py",
    "amy_worker/mounts.py",
    "amy_worker/proctitle.py",
    "amy_worker/protocol.py",
    "amy_worker/reqlog.py",
    "amy_worker/routes.py",
    "amy_worker/server.py",
    "amy_worker/state.py",
    "amy_worker/static.py",
    "amy_worker/template.py",
    "amy_worker/uwsgi_api.py",
    "amy_worker/uwsgidecorators.py",
    "amy_worker/wsgi.py",
];

/// The worker's optional native fast path (`src/worker/native/amy_native.c`, a
/// CPython stable-ABI extension built by build.rs; empty when the build had no C
/// compiler). It travels in the package bundle under [`NATIVE_KEY`], its bytes as
/// a latin-1 string; `python/amy_worker/native.py` loads it from a memfd.
pub const NATIVE_MODULE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/amy_native.so"));
pub const NATIVE_KEY: &str = "amy_worker/_native.abi3.so";

/// Executed with `python -c`: reads the package from [`FD_SOURCE`] (`pread` from
/// offset 0 because every worker shares the memfd's file offset), marks it
/// close-on-exec (it stays open: `uwsgi.lock()` locks a byte of it), and
/// installs a meta-path finder that serves `amy_worker.*` from memory, and the
/// top-level names of [`TOP_LEVEL_MODULES`] from their files in the package
/// (first on `sys.meta_path`, so a `uwsgidecorators.py` a pip-installed uWSGI
/// left in the venv is not the one imported). Sources are put in `linecache` so
/// tracebacks name `amy_worker/x.py` with their lines; `get_data(path)` hands
/// out other entries of the bundle (the native module). Python 3.8+, stdlib only;
/// nothing is written to disk, so only our worker processes can import them:
/// a hook, daemon or cron command, or anything the app spawns, cannot.
pub const BOOTSTRAP: &str = r#"import os,sys,json,linecache
from importlib.machinery import ModuleSpec
B=json.loads(os.pread(6,os.fstat(6).st_size,0))
os.set_inheritable(6,False)
T={'uwsgi':'amy_worker/uwsgi_api.py','uwsgidecorators':'amy_worker/uwsgidecorators.py'}
class AmyWorkerImporter:
    def find_spec(self,name,path=None,target=None):
        if name in T:
            spec=ModuleSpec(name,self,origin=T[name])
            spec.has_location=True
            return spec
        if name!='amy_worker' and not name.startswith('amy_worker.'):
            return None
        base=name.replace('.','/')
        for key,pkg in ((base+'/__init__.py',True),(base+'.py',False)):
            if key in B:
                spec=ModuleSpec(name,self,origin=key,is_package=pkg)
                spec.has_location=True
                return spec
        return None
    def create_module(self,spec):
        return None
    def exec_module(self,module):
        key=module.__spec__.origin
        src=B[key]
        linecache.cache[key]=(len(src),None,src.splitlines(True),key)
        exec(compile(src,key,'exec',dont_inherit=True),module.__dict__)
    def get_source(self,name):
        spec=self.find_spec(name)
        return B[spec.origin] if spec else None
    def get_filename(self,name):
        spec=self.find_spec(name)
        return spec.origin if spec else None
    def get_data(self,path):
        return B[path]
sys.meta_path.insert(0,AmyWorkerImporter())
import amy_worker.__main__
"#;

/// Top-level modules the bootstrap serves from the package, as `BOOTSTRAP`'s
/// `T` maps them: uWSGI's Python API (`import uwsgi`) and its decorators.
/// A unit test checks the two agree.
pub const TOP_LEVEL_MODULES: &[(&str, &str)] = &[
    ("uwsgi", "amy_worker/uwsgi_api.py"),
    ("uwsgidecorators", "amy_worker/uwsgidecorators.py"),
];

/// Exit codes the worker uses on purpose.
pub mod exit_code {
    /// Graceful exit (SIGTERM, master gone).
    pub const OK: i32 = 0;
    /// The app failed to import (traceback already logged). Not worth an
    /// immediate respawn: at cold start it halts the master, at reload it
    /// rejects the new generation.
    pub const APP_LOAD_FAILED: i32 = 3;
    /// The contract was violated (bad config JSON, missing fd): a bug, not the app's.
    pub const CONTRACT: i32 = 4;
    /// Recycled after `max-requests`: respawn at once, no back-off.
    pub const MAX_REQUESTS: i32 = 5;
    /// Recycled after `reload-on-rss`: respawn at once, no back-off.
    pub const RELOAD_ON_RSS: i32 = 6;
    /// The reload check failed (reason already sent as `failed`): the worker
    /// never took public traffic.
    pub const CHECK_FAILED: i32 = 7;
    /// Recycled after `reload-on-as`: respawn at once, no back-off.
    pub const RELOAD_ON_AS: i32 = 8;
    /// Recycled near its `limit-as` (above 90 % of it after a request).
    pub const LIMIT_AS: i32 = 9;
}

/// Why a worker ended, as the master classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    Graceful,
    AppLoadFailed,
    ContractViolation,
    Recycled(&'static str),
    /// The reload check answered something other than 2xx/3xx, raised or timed out.
    CheckFailed,
    /// Any other exit status.
    Crashed(i32),
    Signaled(i32),
}

impl ExitReason {
    pub fn from_code(code: i32) -> Self {
        match code {
            exit_code::OK => ExitReason::Graceful,
            exit_code::APP_LOAD_FAILED => ExitReason::AppLoadFailed,
            exit_code::CONTRACT => ExitReason::ContractViolation,
            exit_code::MAX_REQUESTS => ExitReason::Recycled("max-requests"),
            exit_code::RELOAD_ON_RSS => ExitReason::Recycled("reload-on-rss"),
            exit_code::CHECK_FAILED => ExitReason::CheckFailed,
            exit_code::RELOAD_ON_AS => ExitReason::Recycled("reload-on-as"),
            exit_code::LIMIT_AS => ExitReason::Recycled("limit-as"),
            other => ExitReason::Crashed(other),
        }
    }

    /// Classifies a child's exit as `wait` reported it (a failed wait counts as a crash).
    pub fn from_status(status: std::io::Result<std::process::ExitStatus>) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => ExitReason::from_code(code),
                (None, Some(sig)) => ExitReason::Signaled(sig),
                _ => ExitReason::Crashed(-1),
            },
            Err(_) => ExitReason::Crashed(-1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BOOTSTRAP's `T` table is `TOP_LEVEL_MODULES`, and each maps to a file
    /// that is in the package.
    #[test]
    fn bootstrap_serves_the_top_level_modules_from_the_package() {
        let entries: Vec<String> = TOP_LEVEL_MODULES
            .iter()
            .map(|(name, path)| format!("'{name}':'{path}'"))
            .collect();
        let table = format!("T={{{}}}\n", entries.join(","));
        assert!(BOOTSTRAP.contains(&table), "{table}");
        for (_, path) in TOP_LEVEL_MODULES {
            assert!(WORKER_PACKAGE.iter().any(|(p, _)| p == path), "{path}");
        }
    }
}
