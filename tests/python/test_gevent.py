"""Unit tests of gevent_loop's cooperative I/O shims, imported straight from
python/amy_worker/ (nothing is monkey-patched: the shims use gevent directly);
tests/gevent.rs runs the whole loop inside the real worker."""

import os
import socket
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

# In the test deps (scripts/setup-test-deps.sh): missing is a failure, not a skip.
import gevent  # noqa: E402
import gevent.socket  # noqa: E402

from amy_worker import gevent_loop, limits  # noqa: E402


def _pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def test_a_write_larger_than_the_socket_buffer_waits_cooperatively():
    cos = gevent_loop._CooperativeOS(gevent.socket.wait_write)
    a, b = _pair()
    data = os.urandom(4 << 20)
    ticks = []

    def writer():
        view = memoryview(data)
        while view:
            n = cos.write(a.fileno(), view)
            view = view[n:]

    def reader():
        got = bytearray()
        while len(got) < len(data):
            gevent.socket.wait_read(b.fileno(), 10)
            try:
                got += os.read(b.fileno(), 65536)
            except BlockingIOError:
                pass
        return bytes(got)

    def ticker():
        for _ in range(5):
            ticks.append(time.monotonic())
            gevent.sleep(0.001)

    w = gevent.spawn(writer)
    t = gevent.spawn(ticker)
    gevent.sleep(0.05)  # the writer fills the buffer and waits; the ticker runs
    assert len(ticks) == 5 and not w.dead
    r = gevent.spawn(reader)
    gevent.joinall([w, r, t], timeout=30, raise_error=True)
    assert r.value == data


def test_a_write_nobody_reads_fails_after_the_send_timeout(monkeypatch):
    monkeypatch.setattr(limits, "SEND_TIMEOUT", 0.2)
    cos = gevent_loop._CooperativeOS(gevent.socket.wait_write)
    a, b = _pair()
    t0 = time.monotonic()
    with pytest.raises(BlockingIOError):
        while True:
            cos.write(a.fileno(), b"x" * 65536)
    assert 0.15 < time.monotonic() - t0 < 5


def test_the_select_shim_polls_through_gevent_and_keeps_the_constants():
    import select

    import gevent.select

    sel = gevent_loop._CooperativeSelect(gevent.select.poll)
    assert sel.POLLIN == select.POLLIN and sel.POLLOUT == select.POLLOUT
    a, b = _pair()
    p = sel.poll()
    p.register(b.fileno(), sel.POLLIN)
    assert p.poll(10) == []
    a.send(b"x")
    assert p.poll(1000) == [(b.fileno(), select.POLLIN)]


@pytest.mark.parametrize(
    "serving,expected",
    [
        ({}, (0, False)),
        ({"gevent": 10}, (10, False)),
        ({"gevent": 10, "gevent_monkey_patch": True}, (10, True)),
        ({"gevent": 10, "gevent_early_monkey_patch": True}, (10, True)),
        ({"gevent": 0, "gevent_monkey_patch": True}, (0, False)),
    ],
)
def test_settings(serving, expected):
    assert gevent_loop.settings({"serving": serving}) == expected
