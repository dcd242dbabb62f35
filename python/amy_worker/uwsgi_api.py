"""uWSGI's Python API, `import uwsgi`, as apps use it.

The bootstrap serves this file under the top-level name `uwsgi` (see BOOTSTRAP
in src/worker/contract.rs), and `__main__` imports it before anything of the
app, so, as under uWSGI, `"uwsgi" in sys.modules` is true in every worker and
app template. Nothing is installed on disk: a process that is not one of ours
(a hook, daemon or cron command, a subprocess of the app) cannot import it.

What it reports (checked against uWSGI 2.0.31 by tests/uwsgi_module.rs):
- `worker_id()`: the 1-based slot; 0 in the app template, where the app is
  imported in preload mode (uWSGI imports it in the master: 0 too).
- `masterpid()`, `numproc`, `started_on` (the master's start, int), `hostname`
  and `version` (bytes, as uWSGI on Python 3; `version` is the uWSGI API level
  emulated, b"2.0.31"), `opt`: the resolved options, keys `str`, values
  `bytes` (b"" for a bare key); a repeated key shows its last value, as uWSGI
  2.0.31 on Python 3 does (its list-building code never matches a key). `env`
  values show as `NAME=***`: apps and APM agents log `uwsgi.opt` whole.
  `master` and `enable-threads` are b"true" when the ini does not set them
  (both always hold here; agents read them to decide whether threads work).
- `reload()` sends SIGHUP to the master (a graceful reload, as uWSGI does),
  `stop()` SIGQUIT (a fast stop).
- `set_logvar`/`get_logvar`: per request and thread (`logvars.py`), read by
  `log-format`'s `%(var.NAME)`; `get_logvar` returns bytes, as uWSGI.
- `log(line)`: one line to the instance log, as written (one `write`).
- `total_requests()`, `request_id()`: the requests this worker process has
  completed (uWSGI: `total_requests` is the instance's; a worker here does
  not know the other workers' counts).
- `lock()`, `unlock()`, `is_locked()`: uWSGI's user lock 0, held by one
  thread of one process of the instance at a time (every generation: during a
  reload old and new workers exclude each other too).
- `register_signal` + `add_timer` (what `@timer` uses): the handler runs every
  N seconds, called with the signal number, in a thread of its own of one
  worker (target "" or "worker": worker 1, as uWSGI delivers each tick to one
  worker), of every worker ("workers", "active-workers") or of worker N
  ("workerN"). uWSGI runs it between requests; here it may run beside one.
- `post_fork_hook` (set by `uwsgidecorators.postfork`) runs in every worker
  the app template forks, before it accepts; a lazy-apps worker never runs it,
  as under uWSGI (its post-fork point comes before the app is imported).
Every other function uWSGI 2.0.31 defines exists and raises
NotImplementedError naming itself when called; its other attributes
(`magic_table`, `start_response`, ...) raise an error that is both
NotImplementedError and AttributeError, so `hasattr` stays False.
"""

import os as _os
import signal as _signal
import socket as _socket
import sys as _sys
import threading as _threading
import time as _time

from amy_worker import logvars as _logvars

SPOOL_OK = -2
SPOOL_RETRY = -1
SPOOL_IGNORE = 0

version = b"2.0.31"
version_info = (2, 0, 31, 0, b"amy-emperor")
unbit = None
loop = None
applications = None
has_threads = 1

# Set by _configure before the app is imported; these are the values a
# standalone import (not through our worker) would see.
numproc = 1
cores = 1
buffer_size = 65535
started_on = 0
is_a_reload = False
opt = {}
sockets = []
try:
    hostname = _socket.gethostname().encode("utf-8", "replace")
except OSError:
    hostname = b""

_cfg = {}
_worker = None
_handlers = {}
_timers = []


def _configure(cfg):
    """The worker config (contract.rs `uwsgi` field and the rest); again in a
    forked worker, whose `id` is its own."""
    global _cfg, numproc, cores, buffer_size, started_on, is_a_reload, opt, sockets, pidfile
    _cfg = cfg
    info = cfg.get("uwsgi") or {}
    numproc = int(cfg.get("processes") or 1)
    cores = int(cfg.get("threads") or 1)
    buffer_size = int(cfg.get("buffer_size") or 65535)
    started_on = int(info.get("started_on") or 0)
    is_a_reload = int(cfg.get("generation") or 1) > 1
    values = {}
    for key, value in info.get("opt") or ():
        values[key] = value.encode("utf-8", "surrogateescape")
    opt = values
    sockets = [int(spec["fd"]) for spec in cfg.get("listeners") or ()]
    if info.get("pidfile"):
        pidfile = str(info["pidfile"]).encode("utf-8", "surrogateescape")
    else:
        globals().pop("pidfile", None)


def _bind_worker(worker):
    """The serving worker's state (its request counter)."""
    global _worker
    _worker = worker


def worker_id():
    # The template's config says id 0: the app is imported outside any worker.
    return int(_cfg.get("id") or 0)


def mule_id():
    return 0


def masterpid():
    return int((_cfg.get("uwsgi") or {}).get("master_pid") or 0)


def total_requests():
    return _worker.requests if _worker is not None else 0


def request_id():
    return _worker.requests if _worker is not None else 0


def i_am_the_spooler():
    return None


def micros():
    return int(_time.time() * 1000000)


def mem():
    """(rss, vsz) in bytes, as uWSGI's get_memusage."""
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
        page = _os.sysconf("SC_PAGE_SIZE")
        return (int(fields[1]) * page, int(fields[0]) * page)
    except (OSError, ValueError, IndexError):
        return (0, 0)


def _text(value, what):
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    raise TypeError("%s must be str, not %s" % (what, type(value).__name__))


def log(message):
    line = _text(message, "log()") + "\n"
    try:
        _os.write(2, line.encode("utf-8", "replace"))
    except OSError:
        pass
    return True


def set_logvar(key, value):
    _logvars.set_var(_text(key, "set_logvar() key"), _text(value, "set_logvar() value"))


def get_logvar(key):
    value = _logvars.get_var(_text(key, "get_logvar() key"))
    return None if value is None else value.encode("utf-8", "replace")


def _signal_master(signum, what):
    pid = masterpid()
    if pid <= 1:
        log("uwsgi.%s(): no master to signal" % what)
        return None
    try:
        _os.kill(pid, signum)
    except OSError as e:
        log("uwsgi.%s(): kill(%d): %s" % (what, pid, e.strerror))
        return None
    return True


def reload():
    """A graceful reload of the instance (SIGHUP to the master, as uWSGI does)."""
    return _signal_master(_signal.SIGHUP, "reload")


def stop():
    """A fast stop of the instance (SIGQUIT to the master, as uWSGI does)."""
    return _signal_master(_signal.SIGQUIT, "stop")


def setprocname(name):
    from amy_worker.proctitle import set_title

    name = _text(name, "setprocname()")
    set_title(name, name)


# uWSGI's user lock 0 (`locks` is refused, so there is only that one): a POSIX
# record lock on the first byte of the worker source memfd, which every worker
# of the instance holds (contract.rs FD_SOURCE) — record locks exclude other
# processes — plus a thread lock, since they do not exclude threads of one.
_LOCK_FD = 6
_thread_lock = _threading.Lock()


def _lock_number(num):
    num = int(num)
    if num != 0:
        raise ValueError("Invalid lock number")
    return num


def lock(num=0):
    import fcntl

    _lock_number(num)
    _thread_lock.acquire()
    try:
        fcntl.lockf(_LOCK_FD, fcntl.LOCK_EX, 1, 0)
    except BaseException:
        _thread_lock.release()
        raise


def unlock(num=0):
    import fcntl

    _lock_number(num)
    if not _thread_lock.locked():
        return
    try:
        fcntl.lockf(_LOCK_FD, fcntl.LOCK_UN, 1, 0)
    finally:
        _thread_lock.release()


def is_locked(num=0):
    import fcntl

    _lock_number(num)
    if _thread_lock.locked():
        return True
    try:
        fcntl.lockf(_LOCK_FD, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError:
        return True
    fcntl.lockf(_LOCK_FD, fcntl.LOCK_UN, 1, 0)
    return False


def register_signal(signum, target, handler):
    """Registers `handler(signum)` for a uWSGI signal; only timers raise them here."""
    signum = int(signum)
    if not 0 <= signum <= 255:
        raise ValueError("uwsgi signal number must be 0-255, not %d" % signum)
    if not callable(handler):
        raise TypeError("uwsgi signal handler must be callable")
    _handlers[signum] = (_target(_text(target, "register_signal() target")), handler)


def _target(target):
    """Which workers run a handler: "one", "all", or a worker id."""
    if target in ("", "worker"):
        return "one"
    if target in ("workers", "active-workers"):
        return "all"
    if target.startswith("worker") and target[6:].isdigit():
        return int(target[6:])
    raise NotImplementedError(
        "uwsgi.register_signal(): target %r is not supported by amy-emperor "
        "(no spooler, mules or farms; use \"\", \"worker\", \"workers\" or \"workerN\")" % target
    )


def signal_registered(signum):
    return True if int(signum) in _handlers else None


def add_timer(signum, seconds):
    """Raises `signum` every `seconds` seconds (from when the worker starts serving)."""
    seconds = int(seconds)
    if seconds <= 0:
        raise ValueError("uwsgi.add_timer(): seconds must be positive")
    _timers.append((int(signum), float(seconds)))


def _start_timers():
    """In a worker about to serve: one thread per timer whose handler targets it."""
    me = worker_id()
    for signum, period in _timers:
        entry = _handlers.get(signum)
        if entry is None:
            log("uwsgi timer: no handler registered for signal %d" % signum)
            continue
        target, handler = entry
        if target == "all" or (target == "one" and me == 1) or target == me:
            _spawn_blocked(_timer_loop, (signum, period, handler), "amy-uwsgi-timer-%d" % signum)


def _spawn_blocked(fn, args, name):
    # Started with the process signals blocked, so the thread inherits the mask
    # (the harakiri dump thread must be the one that takes SIGUSR2, and only the
    # main thread handles SIGTERM/SIGINT).
    blocked = {_signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT, _signal.SIGUSR2}
    old = _signal.pthread_sigmask(_signal.SIG_BLOCK, blocked)
    try:
        _threading.Thread(target=fn, args=args, daemon=True, name=name).start()
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, old)


def _timer_loop(signum, period, handler):
    import traceback

    due = _time.monotonic() + period
    while True:
        delay = due - _time.monotonic()
        if delay > 0:
            _time.sleep(delay)
        try:
            handler(signum)
        except Exception:
            log("uwsgi signal %d handler failed:\n%s" % (signum, traceback.format_exc().rstrip("\n")))
        # A handler slower than the period skips the ticks it overran, as a
        # signal raised while one is pending is merged.
        now = _time.monotonic()
        due += period
        if due <= now:
            due = now + period - ((now - due) % period)


def _after_fork():
    """In a worker the app template just forked: uWSGI's post-fork point
    (`uwsgi.post_fork_hook`, set by `uwsgidecorators.postfork`). An exception
    is logged and the worker serves on, as under uWSGI."""
    hook = globals().get("post_fork_hook")
    if hook is None:
        return
    try:
        hook()
    except Exception:
        import traceback

        log("uwsgi post_fork_hook failed:\n%s" % traceback.format_exc().rstrip("\n"))


class _Unsupported(NotImplementedError, AttributeError):
    pass


# Functions uWSGI 2.0.31 always defines (its "advanced", cache and metrics
# tables) that amy-emperor does not carry out: present, so feature tests by
# `hasattr` see uWSGI, but a call says plainly it is not supported.
_UNSUPPORTED_CALLS = frozenset(
    """workers log_this_request alarm disconnect cl accepting
    listen_queue signal signal_wait signal_received add_file_monitor add_rb_timer
    add_cron register_rpc rpc rpc_list call sendfile offload set_warning_message
    logsize i_am_the_lord lord_scroll scrolls async_sleep async_connect
    green_schedule suspend wait_fd_read wait_fd_write connect connection_fd
    is_connected send recv close parsefile embedded_data extract mule_msg farm_msg
    mule_get_msg farm_get_msg in_farm ready set_user_harakiri websocket_recv
    websocket_recv_nb websocket_send websocket_send_binary websocket_handshake
    chunked_read chunked_read_nb ready_fd add_var cache_get cache_set cache_update
    cache_del cache_exists cache_clear cache_inc cache_dec cache_mul cache_div
    cache_num cache_keys metric_inc metric_dec metric_mul metric_div metric_get
    metric_set metric_set_max metric_set_min""".split()
)
# Values uWSGI's module holds that this one does not provide.
_UNSUPPORTED_VALUES = frozenset(["magic_table", "start_response", "SymbolsImporter", "SymbolsZipImporter", "ZipImporter"])

_stubs = {}


def _stub(name):
    def unsupported(*args, **kwargs):
        raise NotImplementedError("uwsgi.%s() is not supported by amy-emperor" % name)

    unsupported.__name__ = unsupported.__qualname__ = name
    return unsupported


def __getattr__(name):
    if name in _UNSUPPORTED_CALLS:
        fn = _stubs.get(name)
        if fn is None:
            fn = _stubs[name] = _stub(name)
        return fn
    if name in _UNSUPPORTED_VALUES:
        raise _Unsupported("uwsgi.%s is not supported by amy-emperor" % name)
    raise AttributeError("module 'uwsgi' has no attribute %r" % name)


def __dir__():
    public = [n for n in globals() if not n.startswith("_") or n.startswith("__")]
    return sorted(set(public) | _UNSUPPORTED_CALLS)
