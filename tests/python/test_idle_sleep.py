"""An idle worker sleeps in poll() until a connection or a stop arrives (no
50 ms accept() timeout loop), yet stops, serves and recycles as before. Each
test first idles past ACCEPT_WAKEUP so every serving thread is in poll()."""

import os
import signal
import time

import pytest

from conftest import PAST_ACCEPT_WAKEUP, idle_wakeups, uwsgi


def test_idle_worker_does_not_wake_up(spawn):
    w = spawn(threads=2)
    assert uwsgi(w.addresses[0], uri="/pid").status == 200
    woke = idle_wakeups(w.pid, 2.0)
    # A 50 ms accept() timeout would be ~80 wake-ups for two serving threads;
    # the watchdog sleeps HEADER_TIMEOUT (10 s) when no header is awaited.
    assert woke <= 3, "%d wake-ups in 2 s of idle" % woke


def test_serves_after_sleeping_in_poll(spawn):
    w = spawn(threads=2)
    for _ in range(3):
        time.sleep(PAST_ACCEPT_WAKEUP)
        assert uwsgi(w.addresses[0], uri="/pid").status == 200


@pytest.mark.parametrize("threads", [1, 3])
def test_sigterm_after_idle_exits_at_once(spawn, threads):
    w = spawn(threads=threads)
    time.sleep(PAST_ACCEPT_WAKEUP)
    t0 = time.monotonic()
    os.kill(w.pid, signal.SIGTERM)
    assert w.wait_exit(timeout=3) == 0
    # With threads, the non-main ones block SIGTERM: only the stop pipe wakes them.
    assert time.monotonic() - t0 < 1.0


def test_master_gone_after_idle_exits(spawn):
    w = spawn(threads=2)
    time.sleep(PAST_ACCEPT_WAKEUP)
    w.master_gone()
    assert w.wait_exit(timeout=3) == 0


def test_max_requests_with_idle_threads_exits_at_once(spawn):
    # The request that reaches max-requests is served by one thread; the
    # others sleep in poll() and must leave it through the stop pipe.
    w = spawn(max_requests=2, threads=3)
    for _ in range(2):
        time.sleep(PAST_ACCEPT_WAKEUP)
        assert uwsgi(w.addresses[0], uri="/pid").status == 200
    t0 = time.monotonic()
    assert w.wait_exit(timeout=3) == 5
    assert time.monotonic() - t0 < 1.0

