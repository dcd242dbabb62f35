"""amy-emperor's Python worker: serves one WSGI app on sockets the master bound.

Stdlib only, Python 3.8+. The master runs it through `BOOTSTRAP` (see
`src/worker/contract.rs`, the contract this file implements: fds, the
`AMY_EMPEROR_WORKER` JSON, the scoreboard layout, signals and exit codes).

Theory of operation
-------------------
Each serving thread blocks in `accept()` on an inherited listening socket (no
epoll: the kernel wakes one worker per connection), reads the request with
`os.readv` into a buffer it reuses, builds the environ, calls the app and writes
the head and the first body chunk with one `os.write`. The fast path (the whole
uwsgi packet arrives in the first read) costs accept, read, write, close and
nothing else; deadlines (`poll`) are only armed once a read comes back short.
Per-request Python work is kept small: one latin-1 decode of the vars block,
lengths read by byte indexing, a reusable `start_response`, memoised response
heads, one `struct.pack_into` into the scoreboard at each end, one `os.write`
for the request log line.

Slow clients: TCP connections inherit SO_RCVTIMEO/SO_SNDTIMEO from the
listener; a unix connection that sends nothing is cut after HEADER_TIMEOUT by
the watchdog thread (the same thread that watches the master-alive pipe), so
the fast path needs no syscall for it. Once a read comes back short, the rest
of the head has a total deadline (poll), and each body read a stall timeout.

Deliberate differences from uWSGI (documented in the README):
- An oversized uwsgi block gets `431` (uWSGI closes, nginx shows 502); when
  `buffer_size` is unset blocks up to 65535 bytes are accepted.
- An app exception before the response started gets a `500` response.
- `HTTP_CONTENT_TYPE`/`HTTP_CONTENT_LENGTH` duplicates nginx sends are dropped
  (PEP 3333 / CGI: only `CONTENT_TYPE`/`CONTENT_LENGTH`).
- `wsgi.url_scheme` never comes from client headers (X-Forwarded-Proto).
- The log line's `req: a/b` shows this worker process's request count twice
  (uWSGI: per-slot count surviving respawns / instance total).
- Malformed packets (P2-P7, P11 of reliability.md) get a 400, not a silent
  close. NUL bytes inside uwsgi var *values* are passed through (keys are
  checked): checking every value costs on every request, and nginx never
  sends them.
- http-socket: chunked request bodies get `411 Length Required`; the response
  carries `Connection: close`, and `Content-Length` is added only when the app
  returned a list and set none (a streamed body is delimited by the close).
"""

import errno
import itertools
import json
import os
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback

ENV_CONFIG = "AMY_EMPEROR_WORKER"
FD_CONTROL = 3
FD_MASTER_ALIVE = 4
FD_SCOREBOARD = 5
MSG_READY = b"ready\n"
MSG_FAILED = b"failed"
SCOREBOARD_SIZE = 256
SCOREBOARD_REQ_MAX = SCOREBOARD_SIZE - 42

EXIT_OK = 0
EXIT_APP_LOAD_FAILED = 3
EXIT_CONTRACT = 4
EXIT_MAX_REQUESTS = 5
EXIT_RELOAD_ON_RSS = 6

MAX_BLOCK = 65535
MAX_VARS = 1024
# Total time a request head (uwsgi vars or HTTP header) may take to arrive once
# its first read came back short.
HEADER_TIMEOUT = 10.0
# Longest wait for the next piece of a request body.
BODY_TIMEOUT = 10.0
# Longest a send to a client may make no progress.
SEND_TIMEOUT = 10.0
# How often a thread idle in accept() wakes to notice a stop.
ACCEPT_WAKEUP = 0.05
# After a response, unread body bytes are drained (so the peer never gets an RST
# instead of our response) up to this many bytes or seconds.
DRAIN_MAX = 16 << 20
DRAIN_TIMEOUT = 5.0
# Extra room after the vars block so a small body arrives in the first read.
READ_SLACK = 8192

_SB = struct.Struct("<dQQdQH%ds" % SCOREBOARD_REQ_MAX)

# Framing and routing vars: a duplicate with a different value is a 400 (an
# ambiguous request is refused rather than guessed).
_FRAMING = frozenset(
    (
        "CONTENT_LENGTH",
        "REQUEST_METHOD",
        "PATH_INFO",
        "SCRIPT_NAME",
        "HTTPS",
        "wsgi.url_scheme",
        "REMOTE_ADDR",
        "SERVER_NAME",
        "SERVER_PORT",
        "REQUEST_URI",
        "QUERY_STRING",
        "CONTENT_TYPE",
    )
)
_KEY_RE = re.compile(r"[A-Za-z0-9_.\-]+\Z")
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z\-]+\Z")
_BAD_VALUE_RE = re.compile(r"[\r\n\x00]")
_STATUS_RE = re.compile(r"[0-9]{3}( [^\r\n\x00]*)?\Z")
_HTTP_VALUE_RE = re.compile(rb"[^\t\x20-\x7e\x80-\xff]")
_REQUEST_LINE_RE = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z\-]+) ([\x21-\x7e\x80-\xff]+) (HTTP/1\.[01])\Z"
)


def _reason(code):
    return {
        400: "Bad Request",
        408: "Request Timeout",
        411: "Length Required",
        413: "Content Too Large",
        431: "Request Header Fields Too Large",
        500: "Internal Server Error",
        501: "Not Implemented",
    }.get(code, "Error")


def _error_response(code):
    reason = _reason(code)
    body = ("%d %s\n" % (code, reason)).encode("ascii")
    return (
        "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
        "Connection: close\r\n\r\n" % (code, reason, len(body))
    ).encode("ascii") + body


_ERRORS = {code: _error_response(code) for code in (400, 408, 411, 413, 431, 500, 501)}


def log(msg):
    """One line to the log pipe, in a single write so lines never interleave."""
    try:
        os.write(2, ("amy-worker[%d]: %s\n" % (os.getpid(), msg)).encode("utf-8", "replace"))
    except OSError:
        pass


class ClientGone(Exception):
    """The peer went away while we wrote the response."""


class BadRequest(Exception):
    def __init__(self, code, why):
        Exception.__init__(self, why)
        self.code = code


class HeaderError(Exception):
    """The app gave a status or header we refuse to emit."""


# ---------------------------------------------------------------- raw fd I/O


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


def _drain_and_close(fd, unread):
    """Half-close, then read what the peer still sends (bounded), then close.

    Closing a socket with unread input makes the kernel reset the connection,
    and nginx then answers 502 instead of the response we sent (P14)."""
    try:
        _shutdown_wr(fd)
        deadline = time.monotonic() + DRAIN_TIMEOUT
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


def _reject(fd, code, why):
    log(why)
    try:
        os.write(fd, _ERRORS[code])
    except OSError:
        pass
    return DRAIN_ALL


# -------------------------------------------------------------- wsgi.input


class Input(object):
    """wsgi.input: the body bytes already read, then the socket, never past
    CONTENT_LENGTH. A peer EOF before CONTENT_LENGTH raises OSError (P8)."""

    __slots__ = ("fd", "buf", "pos", "left")

    def __init__(self, fd, buf, left):
        self.fd = fd
        self.buf = buf
        self.pos = 0
        # body bytes not yet handed to the app
        self.left = left

    def _recv(self, n):
        if not _wait(self.fd, select.POLLIN, BODY_TIMEOUT):
            raise OSError(errno.ETIMEDOUT, "timed out reading the request body")
        try:
            chunk = os.read(self.fd, n)
        except BlockingIOError:
            raise OSError(errno.ETIMEDOUT, "timed out reading the request body")
        if not chunk:
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
        rss = cfg.get("reload_on_rss_mb")
        self.rss_limit_pages = 0
        if rss:
            self.rss_limit_pages = int(float(rss) * 1024 * 1024) // os.sysconf("SC_PAGE_SIZE")
            self.statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        self.requests = 0
        self.bytes_sent = 0
        self.busy_seconds = 0.0
        self.exceptions = 0
        self.inflight = 0
        self.stopping = False
        self.exit_code = EXIT_OK
        self.head_cache = {}
        self.ctime_cache = (0, "")
        import mmap

        self.scoreboard = mmap.mmap(FD_SCOREBOARD, SCOREBOARD_SIZE)
        self.app_lock = None
        self.main_idle = False
        self.requests_objs = []

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

    def after_request(self):
        """Recycling checks; called with the request fully done."""
        if self.max_requests and self.requests >= self.max_requests:
            self.stop(EXIT_MAX_REQUESTS)
        if self.rss_limit_pages:
            try:
                rss_pages = int(os.pread(self.statm, 64, 0).split()[1])
            except (OSError, IndexError, ValueError):
                rss_pages = 0
            if rss_pages >= self.rss_limit_pages:
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
        self.head_count = 0
        self.body_bytes = 0
        self.extra = ""
        self.http = False
        self.head_only = False
        self.start_response = self._start_response
        self.write = self._write
        # Set while the thread waits for a connection's first bytes.
        self.conn = -1
        self.first_read_deadline = 0.0
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
        self.extra = "Connection: close\r\n" if http else ""
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


def _parse_vars(buf, s, end):
    """Vars of a uwsgi block into a dict. `buf` is the raw packet, `s` the same
    bytes as latin-1 str; both start with the 4-byte header; the block ends at `end`.

    The loop is the hottest code of the worker (~0.4 µs per var), so bounds are
    checked once at the end: a length running past the block leaves `i != end`
    (slices of `s` past `end` come back short and the request is refused), and an
    empty or odd key fails the key check."""
    env = {}
    i = 4
    pairs = 0
    good_keys = _GOOD_KEYS
    try:
        while i < end:
            j = i + 2 + (buf[i] | (buf[i + 1] << 8))
            key = s[i + 2 : j]
            i = j + 2 + (buf[j] | (buf[j + 1] << 8))
            env[key] = s[j + 2 : i]
            if key not in good_keys:
                _check_key(key)
            pairs += 1
    except IndexError:
        i = -1
    if i != end:
        raise BadRequest(400, "uwsgi var lengths do not match the vars block size")
    if pairs > MAX_VARS:
        raise BadRequest(400, "more than %d uwsgi vars" % MAX_VARS)
    if len(env) != pairs:
        env = _parse_vars_with_duplicates(buf, s, end)
    return env, pairs


_GOOD_KEYS = set()


def _check_key(key):
    if not _KEY_RE.match(key):
        raise BadRequest(400, "invalid or empty uwsgi var name %r" % key[:64])
    if len(_GOOD_KEYS) < 4096:
        _GOOD_KEYS.add(key)


def _parse_vars_with_duplicates(buf, s, end):
    """Slow path (P6): join repeated HTTP_* vars, refuse conflicting framing vars."""
    env = {}
    i = 4
    while i < end:
        kl = buf[i] | (buf[i + 1] << 8)
        key = s[i + 2 : i + 2 + kl]
        i += 2 + kl
        vl = buf[i] | (buf[i + 1] << 8)
        value = s[i + 2 : i + 2 + vl]
        i += 2 + vl
        old = env.get(key)
        if old is None:
            env[key] = value
        elif old == value and not key.startswith("HTTP_"):
            pass
        elif key in _FRAMING:
            raise BadRequest(400, "conflicting duplicate uwsgi var %s" % key)
        elif key == "HTTP_COOKIE":
            env[key] = old + "; " + value
        elif key.startswith("HTTP_"):
            env[key] = old + ", " + value
        else:
            env[key] = value
    return env


def _content_length(value):
    """CONTENT_LENGTH grammar ^[0-9]{1,19}$ (P7): int() alone would take ' +1_0 '."""
    if not value:
        return 0
    if len(value) <= 19 and value.isdigit() and value.isascii():
        return int(value)
    raise BadRequest(400, "invalid CONTENT_LENGTH %r" % value[:32])


# ------------------------------------------------------------- HTTP parsing


def _parse_http(head, listener, addr):
    """The request line and header fields (bytes, without the blank line) into
    an environ. Strict: anything ambiguous is a 400."""
    lines = head.split(b"\r\n")
    m = _REQUEST_LINE_RE.match(lines[0])
    if m is None:
        raise BadRequest(400, "malformed HTTP request line")
    method, target, version = (g.decode("latin-1") for g in m.groups())
    env = {
        "REQUEST_METHOD": method,
        "REQUEST_URI": target,
        "SERVER_PROTOCOL": version,
        "SCRIPT_NAME": "",
        "SERVER_NAME": listener.server_name,
        "SERVER_PORT": listener.server_port,
        "REMOTE_ADDR": "",
        "REMOTE_PORT": "",
    }
    if type(addr) is tuple and addr:
        env["REMOTE_ADDR"] = str(addr[0])
        env["REMOTE_PORT"] = str(addr[1])
    if target.startswith("/"):
        path, _, query = target.partition("?")
    elif target == "*" and method == "OPTIONS":
        path, query = "*", ""
    elif target.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        path, _, query = ("/" if slash < 0 else rest[slash:]).partition("?")
    else:
        raise BadRequest(400, "unsupported HTTP request target")
    from urllib.parse import unquote_to_bytes

    env["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
    env["QUERY_STRING"] = query
    content_length = None
    chunked = False
    for line in lines[1:]:
        if not line:
            raise BadRequest(400, "empty line inside the HTTP header")
        if line[0] in (0x20, 0x09):
            raise BadRequest(400, "obsolete line folding in the HTTP header")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN_RE.match(name.decode("latin-1")):
            raise BadRequest(400, "malformed HTTP header field")
        value = value.strip(b" \t")
        if _HTTP_VALUE_RE.search(value):
            raise BadRequest(400, "control byte in an HTTP header value")
        name = name.decode("latin-1").upper()
        value = value.decode("latin-1")
        if name == "CONTENT-LENGTH":
            if content_length is not None:
                raise BadRequest(400, "repeated Content-Length")
            if not (value.isdigit() and value.isascii() and len(value) <= 19):
                raise BadRequest(400, "invalid Content-Length")
            content_length = value
            env["CONTENT_LENGTH"] = value
            continue
        if name == "TRANSFER-ENCODING":
            chunked = True
            continue
        if name == "CONTENT-TYPE":
            if "CONTENT_TYPE" in env:
                raise BadRequest(400, "repeated Content-Type")
            env["CONTENT_TYPE"] = value
            continue
        key = "HTTP_" + name.replace("-", "_")
        if "_" in name:
            # Would alias a dash header after the replace: the spoofing
            # vector nginx also drops by default.
            continue
        old = env.get(key)
        if old is None:
            env[key] = value
        elif key == "HTTP_COOKIE":
            env[key] = old + "; " + value
        else:
            env[key] = old + ", " + value
    if chunked:
        if content_length is not None:
            raise BadRequest(400, "both Transfer-Encoding and Content-Length")
        raise BadRequest(411, "chunked request body (not supported; send Content-Length)")
    return env


# ------------------------------------------------------------------ serving


class Listener(object):
    def __init__(self, spec):
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
                continue  # the ACCEPT_WAKEUP timeout
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
    worker.inflight += 1
    drain = DRAIN_ALL
    try:
        drain = handle(worker, req, fd, addr, buf, mv, base, listener)
    except Exception:
        # A bug here must not kill the worker.
        log("internal error:\n" + traceback.format_exc())
    finally:
        if drain:
            _drain_and_close(fd, None if drain < 0 else drain)
        else:
            os.close(fd)
        worker.inflight -= 1
    worker.after_request()


def _base_environ(worker, listener):
    return {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": worker.threads > 1,
        "wsgi.multiprocess": worker.processes > 1,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }


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


def handle_uwsgi(worker, req, fd, addr, buf, mv, base, listener):
    # A connection that sends nothing is cut by the watchdog (watch_master).
    req.conn = fd
    req.first_read_deadline = time.monotonic() + HEADER_TIMEOUT
    try:
        n = os.readv(fd, [mv])
    except BlockingIOError:
        n = -1  # a TCP connection's inherited SO_RCVTIMEO: wait with the deadline
    except OSError:
        return CLOSE
    finally:
        req.first_read_deadline = 0.0
    if n < 4 or n < 4 + (buf[1] | (buf[2] << 8)):
        if n == 0:
            return CLOSE
        try:
            n = _read_more_uwsgi(worker, fd, buf, mv, max(n, 0))
        except BadRequest as e:
            return _reject(fd, e.code, str(e))
    if buf[0] != 0:
        if buf[:3].isalpha():
            why = "HTTP request sent to uwsgi socket %s" % listener.name
        else:
            why = "unsupported uwsgi modifier1 %d" % buf[0]
        return _reject(fd, 400, why)
    size = buf[1] | (buf[2] << 8)
    if size > worker.max_block:
        return _reject(fd, 431, "invalid request block size: %d (max %d), answered 431" % (size, worker.max_block))
    if size == 0:
        return _reject(fd, 400, "empty uwsgi request")
    end = 4 + size
    try:
        env, pairs = _parse_vars(buf, str(mv[:end], "latin-1"), end)
        length = _content_length(env.get("CONTENT_LENGTH"))
        if "REQUEST_METHOD" not in env or ("PATH_INFO" not in env and "REQUEST_URI" not in env):
            raise BadRequest(400, "uwsgi request without REQUEST_METHOD or PATH_INFO")
    except BadRequest as e:
        return _reject(fd, e.code, str(e))
    if "HTTP_CONTENT_LENGTH" in env:
        del env["HTTP_CONTENT_LENGTH"]
    if "HTTP_CONTENT_TYPE" in env:
        del env["HTTP_CONTENT_TYPE"]
    if "PATH_INFO" not in env:
        env["PATH_INFO"] = env["REQUEST_URI"].partition("?")[0]
    # Extra bytes past the body (a second request) are discarded (P9).
    body = bytes(mv[end : min(n, end + length)]) if length else b""
    env.update(base)
    if "SERVER_NAME" not in env:
        env["SERVER_NAME"] = "localhost"
    if "SERVER_PORT" not in env:
        env["SERVER_PORT"] = "80"
    if "SCRIPT_NAME" not in env:
        env["SCRIPT_NAME"] = ""
    if "HTTPS" in env and env["HTTPS"] in ("on", "1", "ON", "On"):
        env["wsgi.url_scheme"] = "https"
    elif "UWSGI_SCHEME" in env and env["UWSGI_SCHEME"] in ("http", "https"):
        env["wsgi.url_scheme"] = env["UWSGI_SCHEME"]
    req.reset(fd, env.get("SERVER_PROTOCOL") or "HTTP/1.0", False)
    return run_app(worker, req, env, Input(fd, body, length), pairs, size)


def _read_more_uwsgi(worker, fd, buf, mv, n):
    deadline = time.monotonic() + HEADER_TIMEOUT
    n = _read_more(fd, mv, n, 4, deadline, "uwsgi header")
    if buf[0] != 0 or (buf[1] | (buf[2] << 8)) > worker.max_block:
        return n  # rejected by the caller without waiting for the rest
    return _read_more(fd, mv, n, 4 + (buf[1] | (buf[2] << 8)), deadline, "uwsgi vars block")


def handle_http(worker, req, fd, addr, buf, mv, base, listener):
    limit = 4 + worker.max_block
    req.conn = fd
    req.first_read_deadline = time.monotonic() + HEADER_TIMEOUT
    try:
        try:
            n = os.readv(fd, [mv[:limit]])
        except BlockingIOError:
            n = -1  # a TCP connection's inherited SO_RCVTIMEO: wait with the deadline
        finally:
            req.first_read_deadline = 0.0
        if n == 0:
            return CLOSE
        n = max(n, 0)
        end = buf.find(b"\r\n\r\n", 0, n)
        if end < 0:
            deadline = time.monotonic() + HEADER_TIMEOUT
            while end < 0:
                if n >= limit:
                    raise BadRequest(431, "HTTP request header larger than %d bytes" % worker.max_block)
                start = max(0, n - 3)
                n = _read_more(fd, mv[:limit], n, n + 1, deadline, "HTTP request header")
                end = buf.find(b"\r\n\r\n", start, n)
        env = _parse_http(bytes(mv[:end]), listener, addr)
        length = _content_length(env.get("CONTENT_LENGTH"))
    except BadRequest as e:
        return _reject(fd, e.code, str(e))
    except OSError:
        return CLOSE
    body_start = end + 4
    body = bytes(mv[body_start : min(n, body_start + length)]) if length else b""
    if length > len(body) and env.get("HTTP_EXPECT", "").lower() == "100-continue":
        try:
            _write_all(fd, b"HTTP/1.1 100 Continue\r\n\r\n")
        except ClientGone:
            return CLOSE
    env.update(base)
    req.reset(fd, env["SERVER_PROTOCOL"], True)
    req.head_only = env["REQUEST_METHOD"] == "HEAD"
    pairs = sum(1 for k in env if "." not in k)
    return run_app(worker, req, env, Input(fd, body, length), pairs, end + 4)


def run_app(worker, req, env, wsgi_input, pairs, block_size):
    """Call the app and send its response, account and log it. Returns how
    many unread body bytes serve() must drain before closing."""
    env["wsgi.input"] = wsgi_input
    fd = req.fd
    # The scoreboard speaks CLOCK_MONOTONIC, the master's clock; the log line wall time.
    start = time.monotonic()
    method = env["REQUEST_METHOD"]
    sb = worker.scoreboard
    _SB.pack_into(
        sb,
        0,
        start,
        worker.requests,
        worker.bytes_sent,
        worker.busy_seconds,
        worker.exceptions,
        min(len(method) + 1 + len(env["PATH_INFO"]), SCOREBOARD_REQ_MAX),
        (method + " " + env["PATH_INFO"]).encode("latin-1", "replace"),
    )
    via = " "
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
        log("client gone while sending %s %s: %s" % (method, env.get("REQUEST_URI", ""), e))
    except Exception as e:
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
                pass
    finally:
        if lock is not None:
            lock.release()
    end = time.monotonic()
    worker.requests += 1
    worker.bytes_sent += req.body_bytes
    worker.busy_seconds += end - start
    _SB.pack_into(
        sb,
        0,
        0.0 if worker.inflight <= 1 else start,
        worker.requests,
        worker.bytes_sent,
        worker.busy_seconds,
        worker.exceptions,
        0,
        b"",
    )
    if worker.logging:
        status = req.status
        code = status[:3] if type(status) is str and status[:3].isdigit() else "0"
        line = "[pid: %d|app: 0|req: %d/%d] %s (%s) {%d vars in %d bytes} [%s] %s %s => generated %d bytes in %d msecs%s(%s %s) %d headers in %d bytes (1 switches on core %d)\n" % (
            worker.pid,
            worker.requests,
            worker.requests,
            env.get("REMOTE_ADDR", ""),
            env.get("REMOTE_USER", ""),
            pairs * 2,
            block_size,
            worker.ctime(time.time() - (end - start)),
            method,
            env.get("REQUEST_URI", ""),
            req.body_bytes,
            int((end - start) * 1000),
            via,
            req.proto,
            code,
            req.head_count,
            req.head_len,
            req.core,
        )
        if len(line) > 4096:
            line = line[:4000] + "...\n"
        try:
            os.write(2, line.encode("latin-1", "replace"))
        except OSError:
            pass
    unread = wsgi_input.unread()
    return unread if unread > 0 else CLOSE


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


def load_app(cfg):
    """Import the app like uWSGI: module `pkg.mod`, `pkg.mod:name`,
    `pkg.mod:factory()`, or exec `wsgi_file`; `callable` defaults to application."""
    import importlib

    name = cfg.get("callable") or "application"
    module = cfg.get("module")
    wsgi_file = cfg.get("wsgi_file")
    if module:
        modname, colon, attr = module.partition(":")
        mod = importlib.import_module(modname)
        if colon and attr:
            name = attr
    elif wsgi_file:
        import importlib.machinery
        import importlib.util

        path = os.path.abspath(wsgi_file)
        modname = "uwsgi_file_" + re.sub(r"[^A-Za-z0-9_]", "_", path)
        # An explicit loader: wsgi files are often named *.wsgi, not *.py.
        loader = importlib.machinery.SourceFileLoader(modname, path)
        spec = importlib.util.spec_from_file_location(modname, path, loader=loader)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
    else:
        raise ImportError("neither module nor wsgi_file is configured")
    call = name.endswith("()")
    if call:
        name = name[:-2]
    app = getattr(mod, name, None)
    if app is None:
        raise ImportError("%s has no callable %r" % (mod.__name__, name))
    if call:
        app = app()
    if not callable(app):
        raise ImportError("%s.%s is not callable" % (mod.__name__, name))
    return app


def _set_sys_path(cfg):
    import glob

    entries = []
    for entry in cfg.get("pythonpath") or []:
        matches = sorted(glob.glob(entry))
        entries.extend(matches if matches else [entry])
    cwd = os.getcwd()
    # `python -c` put "" (the cwd at exec time) first; the app sees the chdir instead.
    rest = [p for p in sys.path if p not in ("", cwd) and p not in entries]
    sys.path[:] = entries + [cwd] + rest


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


def main():
    raw = os.environ.pop(ENV_CONFIG, None)
    if raw is None:
        _contract_error("%s is not set" % ENV_CONFIG)
    try:
        cfg = json.loads(raw)
        listeners_spec = cfg["listeners"]
        if not listeners_spec:
            raise ValueError("no listeners")
    except (ValueError, KeyError, TypeError) as e:
        _contract_error("bad %s: %s" % (ENV_CONFIG, e))
    for fd in (FD_CONTROL, FD_MASTER_ALIVE, FD_SCOREBOARD):
        try:
            os.fstat(fd)
        except OSError:
            _contract_error("fd %d is not open" % fd)
    try:
        listeners = [Listener(spec) for spec in listeners_spec]
    except (OSError, ValueError, KeyError, TypeError) as e:
        _contract_error("bad listener: %s" % e)
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except Exception:
        pass
    if cfg.get("chdir"):
        try:
            os.chdir(cfg["chdir"])
        except OSError as e:
            os.write(2, ("amy-worker: chdir %s: %s\n" % (cfg["chdir"], e.strerror)).encode())
            os._exit(EXIT_APP_LOAD_FAILED)
    _set_sys_path(cfg)
    try:
        app = load_app(cfg)
    except BaseException:
        # The master logs the traceback, once per generation however many
        # workers fail the same way; stderr only if the master cannot be told.
        tb = traceback.format_exc()
        try:
            os.write(FD_CONTROL, MSG_FAILED + b" " + json.dumps(tb).encode("ascii") + b"\n")
        except OSError:
            os.write(2, ("amy-worker[%d]: failed to load the app:\n%s" % (os.getpid(), tb)).encode("utf-8", "replace"))
        _exit(EXIT_APP_LOAD_FAILED)
    worker = Worker(cfg, app)
    run(worker, listeners)


def run(worker, listeners):
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
    signal.signal(signal.SIGINT, on_quit)
    signal.signal(signal.SIGQUIT, on_quit)

    def watch_master():
        """Wait for the master's EOF; once a second, cut connections that sent
        nothing for HEADER_TIMEOUT (a unix socket's accepted connection does not
        inherit the listener's SO_RCVTIMEO, and a timeout per connection would
        cost a syscall per request)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT))
        poller = select.poll()
        poller.register(FD_MASTER_ALIVE, select.POLLIN)
        try:
            while True:
                if poller.poll(1000):
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


if __name__ == "__main__":
    main()
