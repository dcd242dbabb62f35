"""The harakiri dump: what was stuck, said before the master's SIGKILL.

The master sends SIGNAL_HARAKIRI_DUMP to the worker's pid when a request has
run past `harakiri`. Every serving thread blocks that signal (the mask is set
before they start), and one thread waits for it with `sigwait`, so the dump
runs even when the stuck thread is the main one, or sits in a C call that
restarts on EINTR. The dump logs the oldest request in flight (the one harakiri
measured): method, path (no query string), age, worker id, pid, and the Python
stack of the thread serving it (`sys._current_frames()`; `faulthandler` prints
every thread when that thread's frame is not found). If no response head went
out, the client gets a 504 and the connection is shut down. Either way the
request is counted here (5xx if it got the 504, else the status its head gave;
histogram by its age), since the kill keeps it from its own end.
Then the worker stops accepting; its other threads finish their requests until
the master's SIGKILL.

A thread holding the GIL forever (a C extension spinning without releasing
it) stops this thread too: the master still kills the worker, and its own log
line names the request from the scoreboard."""

import faulthandler
import os
import signal
import socket
import sys
import threading
import time
import traceback
from bisect import bisect_left

from .applog import log
from .contract import EXIT_OK, HISTOGRAM_BOUNDS, SB_CLASS_OF, SB_HISTOGRAM, SB_STATUS_OTHER, SIGNAL_HARAKIRI_DUMP
from .errors import _ERRORS


def start_dump_thread(worker):
    """Call from the main thread before any serving thread starts."""
    # A thread started before this (by the app at import) does not block the
    # signal; a handler keeps it from killing the process and dumps from the
    # main thread instead.
    signal.signal(SIGNAL_HARAKIRI_DUMP, lambda signum, frame: _dump_safely(worker))
    # The thread is started with the stop signals blocked too, so they keep
    # reaching the main thread only (its accept() must see them at once); the
    # main thread then takes them back. One arriving meanwhile stays pending.
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
    signal.pthread_sigmask(signal.SIG_BLOCK, (SIGNAL_HARAKIRI_DUMP,) + stops)
    try:
        threading.Thread(target=_wait, args=(worker,), daemon=True, name="amy-harakiri").start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


def _wait(worker):
    while True:
        signal.sigwait((SIGNAL_HARAKIRI_DUMP,))
        _dump_safely(worker)


def _dump_safely(worker):
    try:
        dump(worker)
    except Exception:
        log("harakiri: the stack dump failed:\n" + traceback.format_exc())


def dump(worker):
    now = time.monotonic()
    stuck = None
    for r in list(worker.requests_objs):
        if r.started and (stuck is None or r.started < stuck.started):
            stuck = r
    if stuck is None:
        log("HARAKIRI: worker %s (pid %d): no request in flight any more" % (worker.cfg.get("id", "?"), worker.pid))
        worker.stop(EXIT_OK)
        return
    started, what, tid, fd, head_sent = stuck.started, stuck.what, stuck.thread_id, stuck.fd, stuck.head_sent
    # A gevent request: its greenlet's frame (None while it runs: then the thread's).
    glet = getattr(stuck, "greenlet", None)
    frame = getattr(glet, "gr_frame", None) or sys._current_frames().get(tid)
    stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
    log(
        "HARAKIRI: worker %s (pid %d) request %s stuck for %.1f s, Python stack of its thread:\n%s"
        % (worker.cfg.get("id", "?"), worker.pid, what, now - started, stack or "(thread not found)")
    )
    if frame is None:
        try:
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        except Exception:
            pass
    # The request must still be the one measured: its fd is not closed before
    # its end resets `started`. It is counted here, since the kill will keep
    # it from its own end: as 5xx when it gets the 504, else under the status
    # its head already gave.
    if _count_cut(worker, stuck, started, now, None if head_sent else "504"):
        if not head_sent:
            try:
                os.write(fd, _ERRORS[504])
            except OSError:
                pass
            try:
                s = socket.socket(fileno=fd)
                try:
                    s.shutdown(socket.SHUT_RDWR)
                finally:
                    s.detach()
            except OSError:
                pass
    worker.stop(EXIT_OK)


def _count_cut(worker, stuck, started, now, status):
    """Counts the stuck request once (`cut` tells its end, should it come before
    the kill, not to count it again); False if it ended meanwhile. Under the
    counters lock with threads, as the ends of requests are: the dump may run
    from the main thread's signal handler while that thread holds it, hence
    the bounded wait."""
    lock = worker.counters
    locked = lock is not None and lock.acquire(timeout=1.0)
    try:
        if stuck.started != started:
            return False
        stuck.cut = True
        status = status or stuck.status
        cmv = worker.cmv
        cmv[SB_CLASS_OF.get(status[:1], SB_STATUS_OTHER) if type(status) is str else SB_STATUS_OTHER] += 1
        cmv[SB_HISTOGRAM + bisect_left(HISTOGRAM_BOUNDS, now - started)] += 1
        cmv[stuck.listener_slot] += 1
        return True
    finally:
        if locked:
            lock.release()
