"""Accept loops, serving threads, signals, the master-alive watch."""

import itertools
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback

from .applog import log
from .contract import (
    EXIT_CONTRACT,
    EXIT_OK,
    FD_CONTROL,
    FD_MASTER_ALIVE,
    MSG_READY,
    SB_BY_LISTENER,
    SB_LISTENER_SLOTS,
)
from .harakiri import start_dump_thread
from .fdio import DRAIN_ALL, DRAIN_REJECTED, _drain_and_close
from .http import handle_http
from .limits import ACCEPT_WAKEUP, HEADER_TIMEOUT, READ_SLACK, REJECT_DRAIN_TIMEOUT, SEND_TIMEOUT, WATCHDOG_TICK
from .protocol import handle_uwsgi
from .wsgi import Request, _base_environ


class Listener(object):
    def __init__(self, spec, index=0):
        # Position in the config's listeners: its counter in the scoreboard.
        self.index = index
        self.fd = int(spec["fd"])
        self.proto = spec.get("proto", "uwsgi")
        if self.proto not in ("uwsgi", "http"):
            raise ValueError("unknown listener proto %r" % self.proto)
        self.name = spec.get("name") or str(self.fd)
        self.sock = socket.socket(fileno=self.fd)
        # SO_RCVTIMEO bounds accept(): a thread that poll() woke for a
        # connection another worker took is back in poll() (and sees a stop)
        # within ACCEPT_WAKEUP; an idle thread sleeps in poll(). TCP connections
        # inherit both options: a stalled send fails after SEND_TIMEOUT, and a
        # first read that times out moves to the slow path with its deadline.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, int(ACCEPT_WAKEUP * 1e6)))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(SEND_TIMEOUT), 0))
        self.server_name = "localhost"
        self.server_port = "80"
        try:
            local = self.sock.getsockname()
            if type(local) is tuple:
                self.server_name = socket.gethostname()
                self.server_port = str(local[1])
        except OSError:
            pass


class _Stop(BaseException):
    """Raised by the SIGTERM handler into the main thread while it waits in accept()."""


def serve(worker, listener, core):
    """One serving thread: accept, handle, repeat until told to stop.

    On SIGTERM the main thread must leave accept() at once (so a reloaded
    generation stops taking requests), yet never lose a connection accept() has
    just returned. The handler raises `_Stop` only while `main_idle` is set, and
    accept() runs inside `pending.extend(islice(...))`: the C loop stores the
    accepted connection before the interpreter can run the handler, so after a
    `_Stop` any connection accepted is in `pending` and is served before exit."""
    req = Request(worker, core)
    req.thread_id = threading.get_ident()
    req.listener_slot = SB_BY_LISTENER + min(listener.index, SB_LISTENER_SLOTS - 1)
    buf = bytearray(4 + worker.max_block + READ_SLACK)
    mv = memoryview(buf)
    acceptor = itertools.starmap(listener.sock._accept, itertools.repeat(()))
    pending = []
    handle = handle_uwsgi if listener.proto == "uwsgi" else handle_http
    base = _base_environ(worker, listener)
    # Only the main thread runs Python signal handlers, so only it flags itself.
    main = threading.current_thread() is threading.main_thread()
    flags = worker if main else _IdleFlag()
    idle = _idle_poller(worker, listener, main)
    try:
        while not worker.stopping:
            try:
                flags.main_idle = True
                pending.extend(itertools.islice(acceptor, 1))
                flags.main_idle = False
            except BlockingIOError:
                # No connection for ACCEPT_WAKEUP: sleep in poll() until one
                # arrives or a stop wakes us (a `_Stop` raised in there holds no
                # connection). Under load accept() never times out, so this
                # costs no syscall per request.
                try:
                    if not worker.stopping:
                        _sleep_until_work(worker, idle, main)
                finally:
                    flags.main_idle = False
                continue
            _serve_one(worker, req, pending.pop(), buf, mv, base, listener, handle)
    except _Stop:
        pass
    finally:
        flags.main_idle = False
    if pending:
        _serve_one(worker, req, pending.pop(), buf, mv, base, listener, handle)


class _IdleFlag(object):
    main_idle = False


def _idle_poller(worker, listener, main):
    """poll() on the listener and the stop pipe (and, for the main thread, the
    signal wake-up pipe): what an idle thread sleeps in, with no timeout."""
    p = select.poll()
    p.register(listener.fd, select.POLLIN)
    if worker.wake_r >= 0:
        p.register(worker.wake_r, select.POLLIN)
    if main and worker.signal_r >= 0:
        p.register(worker.signal_r, select.POLLIN)
    return p


def _sleep_until_work(worker, idle, main):
    """One idle sleep. A signal that lands just before poll() would otherwise
    wait for the next connection: its C handler writes to `signal_r`
    (signal.set_wakeup_fd), so poll() returns and the Python handler runs. Only
    the main thread drains that pipe (a signal that stops nothing, e.g. an
    app's own handler, must not leave poll() returning at once); the stop pipe
    is never drained: once stopping, every thread must see it."""
    ready = idle.poll()
    if main and worker.signal_r >= 0:
        for fd, _ in ready:
            if fd == worker.signal_r:
                try:
                    os.read(worker.signal_r, 512)
                except OSError:
                    pass


def _serve_one(worker, req, conn, buf, mv, base, listener, handle):
    fd, addr = conn
    drain = DRAIN_ALL
    try:
        drain = handle(worker, req, fd, addr, buf, mv, base, listener)
    except Exception:
        # A bug here must not kill the worker.
        log("internal error:\n" + traceback.format_exc())
    finally:
        if drain == DRAIN_REJECTED:
            _drain_and_close(fd, None, REJECT_DRAIN_TIMEOUT)
        elif drain:
            _drain_and_close(fd, None if drain < 0 else drain)
        else:
            os.close(fd)
    worker.after_request()


def _cut_silent(req):
    fd = req.conn
    try:
        s = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        # Re-checked after the probing syscalls above: the fd must still be the
        # silent connection, not a newer one that reused its number.
        if req.conn == fd and req.first_read_deadline:
            # Logged first, so whoever sees the cut can already read why.
            log("closed a connection that sent nothing in %ds" % HEADER_TIMEOUT)
            s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        s.detach()


def _contract_error(msg):
    try:
        os.write(2, ("amy-worker: contract violation: %s\n" % msg).encode())
    finally:
        os._exit(EXIT_CONTRACT)


def _exit(code):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def _open_wake_pipes(worker):
    """The stop pipe (Worker.stop writes it, so threads idle in poll() leave it)
    and the signal wake-up pipe (written by the C signal handler)."""
    worker.wake_r, worker.wake_w = os.pipe()
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    try:
        # Keeps an earlier wake-up fd (none today) from being replaced silently.
        if signal.set_wakeup_fd(w, warn_on_full_buffer=False) != -1:
            raise ValueError("a signal wake-up fd is already set")
        worker.signal_r = r
    except ValueError:
        os.close(r)
        os.close(w)


def run(worker, listeners):
    if (worker.cfg.get("serving") or {}).get("gevent"):
        from .gevent_loop import run as run_gevent

        return run_gevent(worker, listeners)
    main_ident = threading.main_thread().ident

    def on_term(signum, frame):
        # Busy threads see the flag after their request; idle threads at once
        # (the stop pipe, or the ACCEPT_WAKEUP bound of accept()); the main
        # thread, if idle in accept() or poll(), at once by `_Stop`.
        worker.stop(EXIT_OK)
        if worker.main_idle:
            raise _Stop()

    def on_quit(signum, frame):
        _exit(EXIT_OK)

    signal.signal(signal.SIGTERM, on_term)
    _open_wake_pipes(worker)
    # Before any thread starts, so every one inherits the blocked signal.
    start_dump_thread(worker)
    signal.signal(signal.SIGINT, on_quit)
    signal.signal(signal.SIGQUIT, on_quit)

    def watch_master():
        """Wait for the master's EOF; cut connections that sent nothing for
        HEADER_TIMEOUT (a unix socket's accepted connection does not inherit the
        listener's SO_RCVTIMEO, and a timeout per connection would cost a
        syscall per request).

        It sleeps until the earliest pending deadline (ticking by WATCHDOG_TICK
        once past it), or HEADER_TIMEOUT when none is pending: a deadline set
        while it sleeps is at least HEADER_TIMEOUT away, so it is never
        overslept, and an idle worker wakes once per HEADER_TIMEOUT."""
        signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT))
        poller = select.poll()
        poller.register(FD_MASTER_ALIVE, select.POLLIN)
        try:
            wait = WATCHDOG_TICK
            while True:
                if poller.poll(wait * 1000):
                    if not os.read(FD_MASTER_ALIVE, 64):
                        break
                    continue
                now = time.monotonic()
                wait = HEADER_TIMEOUT
                for req in worker.requests_objs:
                    deadline = req.first_read_deadline
                    if 0.0 < deadline < now:
                        _cut_silent(req)
                    elif deadline > 0.0:
                        wait = min(wait, deadline - now + WATCHDOG_TICK)
                wait = max(wait, WATCHDOG_TICK)
        except OSError:
            pass
        # The master is gone: behave as on SIGTERM (finish the request, exit).
        signal.pthread_kill(main_ident, signal.SIGTERM)

    def thread_main(listener, core):
        signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT))
        serve(worker, listener, core)

    slots = [(lst, t) for t in range(worker.threads) for lst in listeners]
    if len(slots) > 1:
        worker.counters = threading.Lock()
    if worker.threads == 1 and len(listeners) > 1:
        # One thread per listener, but the app is promised wsgi.multithread False.
        worker.app_lock = threading.Lock()
    others = [
        threading.Thread(target=thread_main, args=(lst, core), daemon=True, name="amy-core-%d" % core)
        for core, (lst, _) in enumerate(slots[1:], 1)
    ]
    for t in others:
        t.start()
    threading.Thread(target=watch_master, daemon=True, name="amy-master-watch").start()
    os.write(FD_CONTROL, MSG_READY)
    serve(worker, slots[0][0], 0)
    # Every serving thread leaves its loop after its current request, or at
    # once when idle (the stop pipe); a request it accepted is never dropped.
    for t in others:
        t.join()
    _exit(worker.exit_code)
