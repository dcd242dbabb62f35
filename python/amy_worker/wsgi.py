"""The WSGI side of a request: wsgi.input, the file wrapper, start_response,
the app call, the scoreboard; the request log line is reqlog.py's.

`run_app` is the one place every request goes through once its environ is
built (uwsgi or HTTP): static files and mounts dispatch from there."""

import errno
import os
from bisect import bisect_left
import re
import select
import sys
import traceback

import time

from .applog import log
from .contract import (
    _SB,
    HISTOGRAM_BOUNDS,
    SB_CLASS_OF,
    SB_HISTOGRAM,
    SB_IN_FLIGHT,
    SB_SLOW,
    SB_STATUS_OTHER,
    SCOREBOARD_REQ_MAX,
)
from .errors import _ERRORS, Abort, ClientGone, HeaderError
from .fdio import CLOSE, _wait, _write_all
from .limits import BODY_TIMEOUT
from .logvars import DONOTLOG
from .logvars import take as _take_logvars


_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z\-]+\Z")
_BAD_VALUE_RE = re.compile(r"[\r\n\x00]")
_STATUS_RE = re.compile(r"[0-9]{3}( [^\r\n\x00]*)?\Z")


class Input(object):
    """wsgi.input: the body bytes already read, then the socket, never past
    CONTENT_LENGTH. A peer EOF before CONTENT_LENGTH raises OSError (P8)."""

    __slots__ = ("fd", "buf", "pos", "left", "errors")

    def __init__(self, fd, buf, left):
        self.fd = fd
        self.buf = buf
        self.pos = 0
        # body bytes not yet handed to the app
        self.left = left
        # uWSGI's read_errors (core/reader.c): a peer EOF or a socket error
        # inside the body, not a timeout; read by `log-ioerror`.
        self.errors = 0

    def _recv(self, n):
        if not _wait(self.fd, select.POLLIN, BODY_TIMEOUT):
            raise OSError(errno.ETIMEDOUT, "timed out reading the request body")
        try:
            chunk = os.read(self.fd, n)
        except BlockingIOError:
            raise OSError(errno.ETIMEDOUT, "timed out reading the request body")
        except OSError:
            self.errors += 1
            raise
        if not chunk:
            self.errors += 1
            raise OSError(errno.ECONNRESET, "client closed before the end of the request body")
        return chunk

    def _fill(self):
        avail = len(self.buf) - self.pos
        want = self.left - avail
        chunk = self._recv(min(want, 65536))
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0

    def read(self, size=-1):
        left = self.left
        if size is None or size < 0 or size > left:
            size = left
        if size <= 0:
            return b""
        buf = self.buf
        pos = self.pos
        if len(buf) - pos >= size:
            self.pos = pos + size
            self.left = left - size
            return buf[pos : pos + size]
        parts = [buf[pos:]]
        got = len(buf) - pos
        self.buf = b""
        self.pos = 0
        while got < size:
            chunk = self._recv(min(size - got, 1 << 20))
            parts.append(chunk)
            got += len(chunk)
        self.left = left - size
        return b"".join(parts)

    def readline(self, size=-1):
        if size is None or size < 0:
            size = self.left
        size = min(size, self.left)
        while True:
            buf = self.buf
            end = buf.find(b"\n", self.pos, self.pos + size)
            avail = len(buf) - self.pos
            if end >= 0:
                return self.read(end + 1 - self.pos)
            if avail >= size or avail >= self.left:
                return self.read(size)
            self._fill()

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def unread(self):
        """Body bytes still in the socket (not read from it yet)."""
        return self.left - (len(self.buf) - self.pos)


class FileWrapper(object):
    """wsgi.file_wrapper; served with os.sendfile when the file has a fileno."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


# ------------------------------------------------------------------ worker


def _build_head(proto, status, headers, extra):
    if type(status) is not str or not _STATUS_RE.match(status):
        raise HeaderError("invalid status %r" % (status,))
    if type(headers) is not list:
        raise HeaderError("headers must be a list, not %s" % type(headers).__name__)
    lines = [proto, " ", status, "\r\n"]
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise HeaderError("header %r is not a (name, value) tuple" % (item,))
        name, value = item
        if type(name) is not str or not _TOKEN_RE.match(name):
            raise HeaderError("invalid header name %r" % (name,))
        if type(value) is not str or _BAD_VALUE_RE.search(value):
            raise HeaderError("invalid value for header %s: %r" % (name, value))
        lines.extend((name, ": ", value, "\r\n"))
    lines.append(extra)
    lines.append("\r\n")
    try:
        data = "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise HeaderError("a status or header is not latin-1")
    return (data, len(headers) + extra.count("\r\n"))


class Request(object):
    """Per-thread, reused for every request: start_response, write() and the
    response bookkeeping, so no closure or object is made per request."""

    def __init__(self, worker, core):
        self.worker = worker
        self.core = core
        self.fd = -1
        self.proto = "HTTP/1.0"
        self.status = None
        self.headers = None
        self.head_sent = False
        self.head_len = 0
        # uWSGI's read_errors/write_errors of the request being logged, for
        # log-format's %(rerr), %(werr), %(ioerr); set just before the line.
        self.rerr = 0
        self.werr = 0
        self.head_count = 0
        self.body_bytes = 0
        self.extra = ""
        self.http = False
        self.head_only = False
        self.extra_http = worker.extra_http
        self.extra_uwsgi = worker.extra_uwsgi
        self.start_response = self._start_response
        self.write = self._write
        # Set while the thread waits for a connection's first bytes.
        self.conn = -1
        self.first_read_deadline = 0.0
        # Start of this thread's request in flight (0.0: none); read under
        # worker.counters to find the oldest one, and by the harakiri dump.
        self.started = 0.0
        # "METHOD PATH" of the request in flight, and the thread serving it,
        # for the harakiri dump.
        self.what = ""
        self.thread_id = 0
        # Set by the harakiri dump once it has answered (504) and counted this
        # request, so its end does not count it twice.
        self.cut = False
        # This thread's listener counter in the scoreboard (set by serve()).
        self.listener_slot = 0
        worker.requests_objs.append(self)

    def reset(self, fd, proto, http):
        self.fd = fd
        self.proto = proto
        self.status = None
        self.headers = None
        self.head_sent = False
        self.head_len = 0
        self.head_count = 0
        self.body_bytes = 0
        self.http = http
        # `add-header` lines are in both (Worker.extra_http/extra_uwsgi).
        self.extra = self.extra_http if http else self.extra_uwsgi
        self.head_only = False

    def _start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        self.status = status
        self.headers = headers
        return self.write

    def build_head(self, content_length=None):
        if self.status is None:
            raise AssertionError("the app did not call start_response")
        extra = self.extra
        if content_length is not None and self.http:
            for name, _ in self.headers:
                if name.lower() == "content-length":
                    break
            else:
                extra = "Content-Length: %d\r\n%s" % (content_length, extra)
        head, count = self.worker.head(self.proto, self.status, self.headers, extra)
        self.head_len = len(head)
        self.head_count = count
        return head

    def send(self, data, content_length=None):
        """Send body bytes, preceded by the head the first time."""
        if self.head_only:
            data = b""
        if self.head_sent:
            if data:
                _write_all(self.fd, data)
                self.body_bytes += len(data)
            return
        head = self.build_head(content_length)
        self.head_sent = True
        _write_all(self.fd, head + data if data else head)
        self.body_bytes += len(data)

    def _write(self, data):
        if self.status is None:
            raise AssertionError("write() before start_response")
        if type(data) is not bytes:
            data = bytes(data)
        self.send(data)


# ------------------------------------------------------------ uwsgi parsing


def _base_environ(worker, listener):
    env = {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": worker.threads > 1,
        "wsgi.multiprocess": worker.processes > 1,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }
    if worker.cfg.get("wsgi_disable_file_wrapper"):
        # uWSGI's wsgi-disable-file-wrapper: apps (Django's FileResponse) then iterate.
        del env["wsgi.file_wrapper"]
    return env


def run_app(worker, req, env, wsgi_input, pairs, block_size):
    """Call the app and send its response, account and log it. Returns how
    many unread body bytes serve() must drain before closing."""
    env["wsgi.input"] = wsgi_input
    fd = req.fd
    # The scoreboard speaks CLOCK_MONOTONIC, the master's clock; the log line wall time.
    start = time.monotonic()
    method = env["REQUEST_METHOD"]
    sb = worker.scoreboard
    # With several serving threads the counters are shared: every update and
    # scoreboard write happens under `counters` (a lost `+=` would leave the
    # page "busy" and let harakiri kill an idle worker). One thread: no lock.
    counters = worker.counters
    cmv = worker.cmv
    what = method + " " + env["PATH_INFO"]
    req.what = what
    if counters is not None:
        counters.acquire()
        req.started = start
        board_start = _oldest_start(worker)
    else:
        req.started = start
        board_start = start
    _SB.pack_into(
        sb,
        0,
        board_start,
        worker.requests,
        worker.bytes_sent,
        worker.busy_seconds,
        worker.exceptions,
        min(len(what), SCOREBOARD_REQ_MAX),
        what.encode("latin-1", "replace"),
    )
    if counters is not None:
        # One serving thread: the master reads "in flight" from the request start.
        cmv[SB_IN_FLIGHT] += 1
        counters.release()
    via = " "
    # uWSGI's write_errors, for `log-ioerror`: the response could not be sent.
    write_errors = 0
    result = None
    lock = worker.app_lock
    if lock is not None:
        lock.acquire()
    try:
        try:
            result = worker.app(env, req.start_response)
            if type(result) is list:
                body = b"".join(result)
                req.send(body, len(body))
            elif type(result) is FileWrapper and _sendfile(req, result):
                via = " via sendfile() "
            else:
                for chunk in result:
                    if chunk:
                        req.send(chunk)
                if not req.head_sent:
                    req.send(b"", 0)
        finally:
            if hasattr(result, "close"):
                result.close()
    except ClientGone as e:
        write_errors += 1
        log("client gone while sending %s %s: %s" % (method, env.get("REQUEST_URI", ""), e))
    except Abort:
        # a `break` route without a status: uWSGI closes without a response
        req.status = None
    except Exception as e:
        if counters is not None:
            with counters:
                worker.exceptions += 1
        else:
            worker.exceptions += 1
        if isinstance(e, HeaderError):
            log("refused response header from the app: %s" % e)
        else:
            try:
                sys.stderr.flush()
            except Exception:
                pass
            log("exception in the app during %s %s:\n%s" % (method, env.get("REQUEST_URI", ""), traceback.format_exc()))
        if not req.head_sent:
            req.status = "500 Internal Server Error"
            req.head_len = _ERRORS[500].index(b"\r\n\r\n") + 4
            req.head_count = 3
            req.body_bytes = 0
            try:
                _write_all(fd, _ERRORS[500])
            except ClientGone:
                write_errors += 1
    finally:
        if lock is not None:
            lock.release()
    end = time.monotonic()
    took = end - start
    status = req.status
    if counters is not None:
        counters.acquire()
        req.started = 0.0
        board_start = _oldest_start(worker)
        cmv[SB_IN_FLIGHT] -= 1
    else:
        req.started = 0.0
        board_start = 0.0
    if req.cut:
        req.cut = False
    else:
        cmv[SB_CLASS_OF.get(status[:1], SB_STATUS_OTHER) if type(status) is str else SB_STATUS_OTHER] += 1
        cmv[SB_HISTOGRAM + bisect_left(HISTOGRAM_BOUNDS, took)] += 1
        cmv[req.listener_slot] += 1
    slow = worker.log_slow and took >= worker.log_slow
    if slow:
        cmv[SB_SLOW] += 1
    worker.requests += 1
    count = worker.requests
    worker.bytes_sent += req.body_bytes
    worker.busy_seconds += took
    _SB.pack_into(
        sb,
        0,
        board_start,
        count,
        worker.bytes_sent,
        worker.busy_seconds,
        worker.exceptions,
        0,
        b"",
    )
    if counters is not None:
        counters.release()
    # Always taken: it also clears this request's `uwsgi.set_logvar` variables.
    lvars = _take_logvars()
    rl = worker.reqlog
    # `log-slow`, `log-4xx`… log a line even with `disable-logging`, as uWSGI does.
    if lvars and DONOTLOG in lvars:
        pass  # the route action `donotlog`
    elif worker.logging or slow or rl.conditional:
        code = status[:3] if type(status) is str and status[:3].isdigit() else "0"
        if worker.logging or slow or rl.wanted(code, req.body_bytes, via, wsgi_input.errors, write_errors):
            req.rerr = wsgi_input.errors
            req.werr = write_errors
            rl.write(worker, env, req, count, pairs, block_size, end, end - start, via, code, lvars)
    unread = wsgi_input.unread()
    return unread if unread > 0 else CLOSE


def _oldest_start(worker):
    """The scoreboard's request start with several threads: the oldest request
    in flight (harakiri measures the longest one), 0.0 when none is."""
    oldest = 0.0
    for r in worker.requests_objs:
        if r.started and (not oldest or r.started < oldest):
            oldest = r.started
    return oldest


def _sendfile(req, wrapper):
    """Send a FileWrapper's regular file with os.sendfile; False to iterate instead."""
    f = wrapper.filelike
    try:
        in_fd = f.fileno()
        st = os.fstat(in_fd)
        offset = f.tell() if hasattr(f, "tell") else 0
    except (AttributeError, OSError, ValueError):
        return False
    import stat

    if not stat.S_ISREG(st.st_mode):
        return False
    req.send(b"")
    left = st.st_size - offset
    length = getattr(wrapper, "length", None)
    if length is not None and length < left:
        left = length  # a Range served by static.py
    while left > 0 and not req.head_only:
        try:
            sent = os.sendfile(req.fd, in_fd, offset, min(left, 1 << 30))
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ClientGone(e.strerror)
        except BlockingIOError:
            raise ClientGone("send timed out")
        if sent == 0:
            break
        offset += sent
        left -= sent
        req.body_bytes += sent
    return True


# --------------------------------------------------------------- bootstrap
