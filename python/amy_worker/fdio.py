"""Raw fd I/O on client connections."""

import os
import select
import socket
import time

from .applog import log
from .errors import _ERRORS, BadRequest, ClientGone
from .limits import DRAIN_MAX, DRAIN_TIMEOUT


def _wait(fd, events, timeout):
    """poll() one fd; False on timeout. Only used once a read came back short."""
    p = select.poll()
    p.register(fd, events)
    return bool(p.poll(max(0.0, timeout) * 1000.0))


def _write_all(fd, data):
    try:
        n = os.write(fd, data)
        while n < len(data):
            data = memoryview(data)[n:]
            n = os.write(fd, data)
    except (BrokenPipeError, ConnectionResetError) as e:
        raise ClientGone(e.strerror)
    except BlockingIOError:
        raise ClientGone("send timed out")


def _shutdown_wr(fd):
    s = socket.socket(fileno=fd)
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        s.detach()


def _drain_and_close(fd, unread, timeout=DRAIN_TIMEOUT):
    """Half-close, then read what the peer still sends (bounded), then close.

    Closing a socket with unread input makes the kernel reset the connection,
    and nginx then answers 502 instead of the response we sent (P14)."""
    try:
        _shutdown_wr(fd)
        deadline = time.monotonic() + timeout
        left = DRAIN_MAX if unread is None else min(unread, DRAIN_MAX)
        while left > 0:
            if not _wait(fd, select.POLLIN, deadline - time.monotonic()):
                break
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            left -= len(chunk)
    except OSError:
        pass
    finally:
        os.close(fd)


# What a handler returns to serve(), which owns the connection's close.
CLOSE = 0
DRAIN_ALL = -1
# A refused request head: drain only briefly (REJECT_DRAIN_TIMEOUT), so a client
# that keeps trickling bytes cannot hold the worker past the header deadline.
DRAIN_REJECTED = -2


def _reject(fd, code, why):
    log(why)
    try:
        os.write(fd, _ERRORS[code])
    except OSError:
        pass
    return DRAIN_REJECTED


# -------------------------------------------------------------- wsgi.input


def _read_more(fd, mv, n, need, deadline, what):
    """Slow path: read until `need` bytes are in the buffer or the deadline."""
    while n < need:
        if not _wait(fd, select.POLLIN, deadline - time.monotonic()):
            raise BadRequest(408, "timed out reading the %s" % what)
        try:
            got = os.readv(fd, [mv[n:]])
        except BlockingIOError:
            raise BadRequest(408, "timed out reading the %s" % what)
        if got == 0:
            raise BadRequest(400, "client closed inside the %s" % what)
        n += got
    return n
