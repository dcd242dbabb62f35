"""`gevent = N`: one worker serves up to N requests at once on greenlets.

What uWSGI's gevent loop (plugins/gevent/gevent.c) does, and how it is done here:

- Monkey-patching. uWSGI patches nothing unless asked: `gevent-monkey-patch`
  calls `gevent.monkey.patch_all()` when the loop starts (after the app is
  imported: in preload mode the app was imported by the master), and
  `gevent-early-monkey-patch` before the apps load. Here both keys patch
  before the app import (`patch_before_app`, called by `__main__` in a lazy
  worker and in the preload template), which is what gevent asks for: names the
  app binds at import (`from time import sleep`, a requests session) are then
  the patched ones. Without either key nothing is patched, as in uWSGI: the
  worker's own I/O is cooperative, the app's blocking calls block the worker.
- After a fork (preload) `gevent.reinit()` runs first (gevent's own `os.fork`
  does it too when `os` is patched; calling it again is harmless).
- Accepting. The listening sockets are shared with the other workers (and,
  across a reload, with a generation that may not use gevent), so they stay
  blocking: O_NONBLOCK would be set on the shared file description and turn the
  threaded workers' accept() into a busy loop. One real OS thread (not a
  greenlet; it makes no gevent call) blocks in accept() as the threaded server
  does, so the kernel still hands each connection to one waiting worker. It
  takes a slot token from a pipe holding N tokens before each accept, so a
  worker with N requests in flight stops taking connections and the kernel
  gives them to the others. Accepted connections reach the hub through a deque
  and a wake-up pipe; each is served by `server._serve_one` in its own greenlet.
- Idle. Nothing ticks: as the threaded server's idle threads do, the acceptor
  sleeps in poll() on the listeners and the stop pipe (Worker.stop writes it)
  once accept() has found nothing for ACCEPT_WAKEUP, and the hub sleeps in its
  loop until a connection, a signal, the master's EOF or the stop pipe.
- Closing. gevent >= 25.8.1's patched `os.close` always defers the close to a
  check watcher, which runs only after the hub's next poll returns: on an idle
  hub the client's EOF (which nginx waits for) waited for the next wake-up, so
  a lone request took as long as the hub slept (250 ms with a 0.25 s tick).
  Connections are closed as gevent closes its own sockets instead
  (`_prompt_close`): at once, unless a watcher on the fd still has to run.
  uWSGI's loop closes with close(2) too.
- Connections are non-blocking. The worker's I/O goes through `fdio`, `wsgi`,
  `protocol`, `http`: every read either follows a `_wait` (poll with a
  deadline) or treats EAGAIN as "wait with the deadline", so reads need only
  `select.poll` to be gevent's; writes and sendfile wait for the socket to be
  writable (up to SEND_TIMEOUT without progress, as SO_SNDTIMEO bounds them in
  the threaded server). `_cooperative_io` swaps the `os` and `select` those
  modules see for the two small shims below (and `server`'s `os`, for its
  close), in this process only.
- Stop. SIGTERM (gevent.signal_handler, as uWSGI maps it), the master's EOF,
  or a stop from harakiri's thread or after_request (the stop pipe): the
  acceptor leaves at once from poll(), within ACCEPT_WAKEUP from accept() (or
  once a slot frees), every connection it accepted is served, the greenlets in
  flight finish, then the worker exits; the master's mercy timer bounds it.
  SIGINT/SIGQUIT exit at once.
- Harakiri. The dump thread is a real OS thread waiting in sigwait, as in the
  threaded server; the stuck request's stack is its greenlet's frame.
- The scoreboard and counters are updated under a real lock (sections that
  never yield, so no greenlet waits on another): the page shows the oldest
  request in flight, as with threads, so harakiri measures the longest one.
"""

import collections
import os
import select as _select
import signal

from . import limits
from .applog import log
from .contract import EXIT_OK, FD_CONTROL, FD_MASTER_ALIVE, MSG_READY, SB_BY_LISTENER, SB_LISTENER_SLOTS, SIGNAL_HARAKIRI_DUMP
from .limits import ACCEPT_WAKEUP, READ_SLACK

# Connections the acceptor hands over per wake-up at most.
BATCH = 64


def settings(cfg):
    """(N, patch): N 0 when gevent is off."""
    s = cfg.get("serving") or {}
    n = int(s.get("gevent") or 0)
    return n, bool(n and (s.get("gevent_monkey_patch") or s.get("gevent_early_monkey_patch")))


def patch_before_app(cfg):
    """`gevent-monkey-patch`/`gevent-early-monkey-patch`: before the app import."""
    n, patch = settings(cfg)
    if patch:
        from gevent import monkey

        monkey.patch_all()


class _CooperativeOS(object):
    """`os` for the serving modules: write and sendfile wait for the
    non-blocking socket to drain instead of failing with EAGAIN; close is
    `close` (`_prompt_close`), not gevent's always-deferred one."""

    def __init__(self, wait_write, close=os.close):
        self._wait_write = wait_write
        self.close = close

    def __getattr__(self, name):
        return getattr(os, name)

    def _writable(self, fd):
        try:
            self._wait_write(fd, limits.SEND_TIMEOUT, _Timeout)
        except _Timeout:
            return False
        return True

    def write(self, fd, data):
        while True:
            try:
                return os.write(fd, data)
            except BlockingIOError:
                if not self._writable(fd):
                    raise

    def sendfile(self, out_fd, in_fd, offset, count):
        while True:
            try:
                return os.sendfile(out_fd, in_fd, offset, count)
            except BlockingIOError:
                if not self._writable(out_fd):
                    raise


class _Timeout(Exception):
    pass


class _CooperativeSelect(object):
    """`select` for the serving modules: gevent's poll."""

    def __init__(self, poll):
        self.poll = poll

    def __getattr__(self, name):
        return getattr(_select, name)


def _prompt_close(loop, real_close, deferred_close):
    """close(fd) as gevent's socket.close does it: tell the loop, and close at
    once unless that queued a watcher still on the fd (then `deferred_close`,
    gevent's os.close, which closes after that watcher has run).

    gevent's patched os.close defers every close to a check watcher, which
    runs only after the loop's next poll returns: on an idle hub nothing else
    wakes it, so the peer's EOF waited for the next event (see the module
    docstring). A connection's waits all end before its greenlet closes it, so
    the deferred branch is a safety net, not the path taken."""

    def close(fd):
        if loop.closing_fd(fd):
            deferred_close(fd)
        else:
            real_close(fd)

    return close


def _cooperative_io(loop):
    import gevent.os
    import gevent.select
    import gevent.socket
    from gevent import monkey

    from . import fdio, http, protocol, server, wsgi

    real_close = monkey.get_original("os", "close")
    close = _prompt_close(loop, real_close, getattr(gevent.os, "close", real_close))
    cos = _CooperativeOS(gevent.socket.wait_write, close)
    csel = _CooperativeSelect(gevent.select.poll)
    for module in (fdio, wsgi, protocol, http):
        if hasattr(module, "os"):
            module.os = cos
        if hasattr(module, "select"):
            module.select = csel
    # server._serve_one closes the connection with `os.close` (its other uses
    # of `os` are the threaded server's, never run in a gevent worker).
    server.os = cos


def run(worker, listeners):
    import gevent
    import gevent.event
    import gevent.pool
    import gevent.socket
    from gevent import monkey

    from .harakiri import _wait as harakiri_wait
    from .server import _exit, _serve_one
    from .http import handle_http
    from .protocol import handle_uwsgi
    from .wsgi import Request, _base_environ

    gevent.reinit()
    _cooperative_io(gevent.get_hub().loop)

    start_thread = monkey.get_original("_thread", "start_new_thread")
    real_lock = monkey.get_original("_thread", "allocate_lock")
    real_poll = monkey.get_original("select", "poll")
    n, _ = settings(worker.cfg)

    worker.counters = real_lock()
    worker.app_lock = None
    bases = [_base_environ(worker, lst) for lst in listeners]
    handlers = [handle_uwsgi if lst.proto == "uwsgi" else handle_http for lst in listeners]
    free = []
    stop_ev = gevent.event.Event()
    acceptor_done = gevent.event.Event()
    group = gevent.pool.Group()
    accepted = collections.deque()
    slot_r, slot_w = os.pipe()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    # The stop pipe: Worker.stop writes it (never drained: once stopping,
    # every poll on it returns), so the idle acceptor and hub need no tick.
    worker.wake_r, worker.wake_w = os.pipe()
    # N tokens: a pipe holds far more than any sane N (64 KiB).
    os.write(slot_w, b"s" * n)

    def new_request():
        req = Request(worker, len(worker.requests_objs))
        req.buf = bytearray(4 + worker.max_block + READ_SLACK)
        req.mv = memoryview(req.buf)
        return req

    def handle(fd, addr, listener):
        req = free.pop() if free else new_request()
        try:
            req.greenlet = gevent.getcurrent()
            req.listener_slot = SB_BY_LISTENER + min(listener.index, SB_LISTENER_SLOTS - 1)
            try:
                os.set_blocking(fd, False)
            except OSError:
                pass
            _serve_one(worker, req, (fd, addr), req.buf, req.mv, bases[listener.index], listener, handlers[listener.index])
        finally:
            req.greenlet = None
            free.append(req)
            os.write(slot_w, b"s")
            if worker.stopping:
                stop_ev.set()

    def accept_loop():
        """The acceptor thread: no gevent call, only blocking syscalls."""
        # What the thread sleeps in when no connection is pending: the
        # listeners and the stop pipe, no timeout.
        idle = real_poll()
        for lst in listeners:
            idle.register(lst.fd, _select.POLLIN)
        idle.register(worker.wake_r, _select.POLLIN)
        by_fd = dict((lst.fd, lst) for lst in listeners)
        # After one blocking accept, whatever else is already pending is taken
        # in the same turn (as many as there are free slots), so the thread
        # needs the GIL once per batch, not once per connection: under load the
        # hub holds it and a handoff costs up to the switch interval.
        pending = real_poll()
        pending.register(slot_r, _select.POLLIN)
        ready = real_poll()
        for lst in listeners:
            ready.register(lst.fd, _select.POLLIN)
        try:
            while not worker.stopping:
                os.read(slot_r, 1)
                got = None
                while got is None and not worker.stopping:
                    got = _accept_one(listeners, idle, by_fd)
                if got is None:
                    break
                accepted.append(got)
                for _ in range(BATCH - 1):
                    if worker.stopping or not ready.poll(0) or not pending.poll(0):
                        break
                    os.read(slot_r, 1)
                    # No sleep here: this batch's connections wait for the
                    # hand-off below.
                    more = _accept_one(listeners, idle, by_fd, wait=False)
                    if more is None:
                        os.write(slot_w, b"s")
                        break
                    accepted.append(more)
                os.write(wake_w, b"c")
        except BaseException as e:
            log("gevent acceptor stopped: %r" % (e,))
            worker.stop(EXIT_OK)
        finally:
            accepted.append(None)
            os.write(wake_w, b"d")

    def dispatch():
        while True:
            gevent.socket.wait_read(wake_r)
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                continue
            while accepted:
                item = accepted.popleft()
                if item is None:
                    acceptor_done.set()
                    return
                group.spawn(handle, *item)

    def watch_master():
        try:
            while True:
                gevent.socket.wait_read(FD_MASTER_ALIVE)
                if not os.read(FD_MASTER_ALIVE, 64):
                    break
        except OSError:
            pass
        # The master is gone: behave as on SIGTERM (finish the requests, exit).
        on_term()

    def watch_stop():
        gevent.socket.wait_read(worker.wake_r)
        stop_ev.set()

    def on_term():
        worker.stop(EXIT_OK)
        stop_ev.set()

    gevent.signal_handler(signal.SIGTERM, on_term)
    gevent.signal_handler(signal.SIGINT, lambda: _exit(EXIT_OK))
    gevent.signal_handler(signal.SIGQUIT, lambda: _exit(EXIT_OK))
    # The helper threads start with these blocked, so every signal reaches the
    # main thread's loop, and SIGNAL_HARAKIRI_DUMP only the sigwait thread.
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
    signal.pthread_sigmask(signal.SIG_BLOCK, (SIGNAL_HARAKIRI_DUMP,) + stops)
    try:
        start_thread(harakiri_wait, (worker,))
        start_thread(accept_loop, ())
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
    gevent.spawn(dispatch)
    gevent.spawn(watch_master)
    gevent.spawn(watch_stop)
    os.write(FD_CONTROL, MSG_READY)
    # A stop before the pipe existed set only the flag; any later one writes it.
    if not worker.stopping:
        stop_ev.wait()
    # Every accepted connection is served: the acceptor leaves within
    # ACCEPT_WAKEUP (or when a slot frees), then the greenlets finish.
    acceptor_done.wait()
    group.join()
    _exit(worker.exit_code)


def _accept_one(listeners, idle, by_fd, wait=True):
    """One connection as (fd, addr, listener), or None: none came, and (with
    `wait`) the thread slept in `idle` until one is pending or the worker stops.

    accept() on the blocking listeners returns EAGAIN after ACCEPT_WAKEUP
    (SO_RCVTIMEO, server.Listener), so a connection another worker took first
    costs at most that; under load accept() never times out and the idle poll
    costs no syscall per request (one listener) or one per batch (several)."""
    try:
        if len(listeners) == 1:
            lst = listeners[0]
            try:
                fd, addr = lst.sock._accept()
                return (fd, addr, lst)
            except BlockingIOError:
                if wait:
                    idle.poll()
                return None
        for fd, _ in idle.poll(None if wait else 0):
            lst = by_fd.get(fd)
            if lst is None:
                continue  # the stop pipe
            try:
                conn, addr = lst.sock._accept()
            except BlockingIOError:
                continue  # another worker took it
            return (conn, addr, lst)
    except InterruptedError:
        pass
    except OSError as e:
        # EMFILE and friends: wait a little instead of spinning.
        log("accept failed: %s" % e)
        real_sleep = __import__("gevent.monkey", fromlist=["get_original"]).get_original("time", "sleep")
        real_sleep(ACCEPT_WAKEUP)
    return None
