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
        # SO_RCVTIMEO bounds accept(), so an idle thread sees `stopping` within
        # ACCEPT_WAKEUP without a signal handler raising into it (raising there
        # can lose a connection accept() has just returned). TCP connections
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
    flags = worker if threading.current_thread() is threading.main_thread() else _IdleFlag()
    try:
        while not worker.stopping:
            try:
                flags.main_idle = True
                pending.extend(itertools.islice(acceptor, 1))
                flags.main_idle = False
            except BlockingIOError:
                # The ACCEPT_WAKEUP timeout. Cleared first: a SIGTERM handled
                # at the `continue` below must not raise `_Stop` there (3.11 lets
                # it escape this try).
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


def run(worker, listeners):
    if (worker.cfg.get("serving") or {}).get("gevent"):
        from .gevent_loop import run as run_gevent

        return run_gevent(worker, listeners)
    main_ident = threading.main_thread().ident

    def on_term(signum, frame):
        # Busy threads see the flag after their request; other threads within
        # ACCEPT_WAKEUP; the main thread, if idle in accept(), at once.
        worker.stop(EXIT_OK)
        if worker.main_idle:
            raise _Stop()

    def on_quit(signum, frame):
        _exit(EXIT_OK)

    signal.signal(signal.SIGTERM, on_term)
    # Before any thread starts, so every one inherits the blocked signal.
    start_dump_thread(worker)
    signal.signal(signal.SIGINT, on_quit)
    signal.signal(signal.SIGQUIT, on_quit)

    def watch_master():
        """Wait for the master's EOF; every WATCHDOG_TICK, cut connections that sent
        nothing for HEADER_TIMEOUT (a unix socket's accepted connection does not
        inherit the listener's SO_RCVTIMEO, and a timeout per connection would
        cost a syscall per request)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT))
        poller = select.poll()
        poller.register(FD_MASTER_ALIVE, select.POLLIN)
        try:
            while True:
                if poller.poll(WATCHDOG_TICK * 1000):
                    if not os.read(FD_MASTER_ALIVE, 64):
                        break
                    continue
                now = time.monotonic()
                for req in worker.requests_objs:
                    if 0.0 < req.first_read_deadline < now:
                        _cut_silent(req)
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
    # Every serving thread leaves its loop after its current request, or within
    # ACCEPT_WAKEUP when idle; a request it accepted is never dropped.
    for t in others:
        t.join()
    _exit(worker.exit_code)
