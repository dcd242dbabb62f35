"""Process-wide state of a worker: the app, counters, the scoreboard, the stop flag."""

import mmap
import os
import time

# Imported here, not when a Worker is made: in preload mode the template
# imports (compiles) them once before forking, instead of every forked worker
# after the fork (10-17 ms each on 2 cores, measured with -X importtime).
from . import applog
from .contract import (
    EXIT_LIMIT_AS,
    EXIT_MAX_REQUESTS,
    EXIT_OK,
    EXIT_RELOAD_ON_AS,
    EXIT_RELOAD_ON_RSS,
    FD_SCOREBOARD,
    SB_FEATURE_NATIVE,
    SB_FEATURES,
    SCOREBOARD_SIZE,
)
from .dispatch import extra_headers
from .limits import LIMIT_AS_RECYCLE, MAX_BLOCK, apply_limit_as
from .native import PARSE_VARS
from .reqlog import RequestLog
from .wsgi import _build_head


class Worker(object):
    """Process-wide state: the app, counters, the scoreboard, the stop flag."""

    def __init__(self, cfg, app):
        self.cfg = cfg
        self.app = app
        self.pid = os.getpid()
        self.threads = max(1, int(cfg.get("threads") or 1))
        self.processes = max(1, int(cfg.get("processes") or 1))
        bs = cfg.get("buffer_size")
        self.max_block = MAX_BLOCK if not bs else max(1, min(int(bs), MAX_BLOCK))
        self.logging = not cfg.get("disable_logging")
        self.max_requests = int(cfg.get("max_requests") or 0)
        if self.max_requests:
            # uWSGI (core/utils.c): worker wid's limit is max-requests + (wid-1)*delta,
            # so the workers do not all recycle at once.
            wid = max(1, int(cfg.get("id") or 1))
            self.max_requests += (wid - 1) * int(cfg.get("max_requests_delta") or 0)
        # max-requests and reload-on-* act only on a worker this old (uWSGI's
        # min-worker-lifetime; 0 here unless set).
        self.recycle_after = time.monotonic() + float(cfg.get("min_worker_lifetime") or 0)
        page = os.sysconf("SC_PAGE_SIZE")
        mb_pages = lambda mb: int(float(mb) * 1024 * 1024) // page  # noqa: E731
        self.rss_limit_pages = mb_pages(cfg.get("reload_on_rss_mb") or 0)
        self.as_limit_pages = mb_pages(cfg.get("reload_on_as_mb") or 0)
        # limit-as: recycle before the hard limit makes an allocation fail.
        self.limit_as_pages = int(mb_pages(cfg.get("limit_as_mb") or 0) * LIMIT_AS_RECYCLE)
        apply_limit_as(cfg)
        if self.rss_limit_pages or self.as_limit_pages or self.limit_as_pages:
            self.statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        self.requests = 0
        self.bytes_sent = 0
        self.busy_seconds = 0.0
        self.exceptions = 0
        self.stopping = False
        self.exit_code = EXIT_OK
        self.head_cache = {}
        added = extra_headers(cfg)
        self.extra_uwsgi = added
        self.extra_http = added + "Connection: close\r\n"
        self.ctime_cache = (0, "")
        self.scoreboard = mmap.mmap(FD_SCOREBOARD, SCOREBOARD_SIZE)
        # The metric counters: aligned 8-byte stores the master reads whole.
        self.cmv = memoryview(self.scoreboard).cast("Q")
        # So `status` can say whether the native parser is in use.
        self.cmv[SB_FEATURES] = SB_FEATURE_NATIVE if PARSE_VARS is not None else 0
        # `log-slow`: seconds, 0.0 off.
        self.log_slow = float(cfg.get("log_slow_ms") or 0) / 1000.0
        self.app_lock = None
        # Guards the counters and the scoreboard when several threads serve;
        # set by server.run, None with one serving thread.
        self.counters = None
        self.main_idle = False
        self.requests_objs = []
        # The request log (reqlog.py) and the date prefix of our own lines (applog.py).
        applog.configure(cfg.get("logging") or {})
        self.reqlog = RequestLog(self, cfg)
        # server.run's pipes: `wake_w` is written on stop (threads idle in poll()
        # wake up), `signal_r` is the signal wake-up fd; -1 until then.
        self.wake_r = self.wake_w = self.signal_r = -1

    def ctime(self, t):
        sec = int(t)
        cached = self.ctime_cache
        if cached[0] != sec:
            # time.ctime calls localtime(), which may stat /etc/localtime: once a second.
            cached = (sec, time.ctime(sec))
            self.ctime_cache = cached
        return cached[1]

    def stop(self, code):
        if not self.stopping:
            self.stopping = True
            self.exit_code = code
            if self.wake_w >= 0:
                try:
                    os.write(self.wake_w, b"s")
                except OSError:
                    pass

    def after_request(self):
        """Recycling checks; called with the request fully done."""
        size_pages = rss_pages = 0
        if self.limit_as_pages or self.as_limit_pages or self.rss_limit_pages:
            try:
                fields = os.pread(self.statm, 64, 0).split()
                size_pages, rss_pages = int(fields[0]), int(fields[1])
            except (OSError, IndexError, ValueError):
                pass
            # Not held back by min-worker-lifetime: past 90 % of limit-as the
            # next allocations fail, whatever the worker's age.
            if self.limit_as_pages and size_pages >= self.limit_as_pages:
                self.stop(EXIT_LIMIT_AS)
        if self.recycle_after and time.monotonic() < self.recycle_after:
            return
        self.recycle_after = 0
        if self.max_requests and self.requests >= self.max_requests:
            self.stop(EXIT_MAX_REQUESTS)
        if self.as_limit_pages and size_pages >= self.as_limit_pages:
            self.stop(EXIT_RELOAD_ON_AS)
        if self.rss_limit_pages and rss_pages >= self.rss_limit_pages:
            self.stop(EXIT_RELOAD_ON_RSS)

    def head(self, proto, status, headers, extra):
        """The response head bytes, memoised per (protocol, status, headers)."""
        try:
            key = (proto, status, tuple(headers), extra)
            cached = self.head_cache.get(key)
        except TypeError:
            key = None
            cached = None
        if cached is not None:
            return cached
        head = _build_head(proto, status, headers, extra)
        if key is not None:
            if len(self.head_cache) >= 1024:
                self.head_cache.clear()
            self.head_cache[key] = head
        return head
