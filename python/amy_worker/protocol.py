"""The uwsgi protocol: the packet header, the vars block, the environ."""

import os
import re
import time

from .errors import BadRequest
from .fdio import CLOSE, _read_more, _reject
from .limits import HEADER_TIMEOUT, MAX_VARS
from .native import PARSE_VARS
from .wsgi import Input, run_app


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


# ------------------------------------------------------------------ serving


def handle_uwsgi(worker, req, fd, addr, buf, mv, base, listener):
    # A connection that sends nothing is cut by the watchdog (watch_master); one
    # that trickles is cut by the same deadline, counted from accept().
    req.conn = fd
    deadline = time.monotonic() + HEADER_TIMEOUT
    req.first_read_deadline = deadline
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
            n = _read_more_uwsgi(worker, fd, buf, mv, max(n, 0), deadline)
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
        # The native parser answers None for anything but a clean block: the
        # stdlib parser then refuses it with the reason, or joins repeated headers.
        parsed = PARSE_VARS(buf, end, MAX_VARS, base) if PARSE_VARS is not None else None
        if parsed is None:
            env, pairs = _parse_vars(buf, str(mv[:end], "latin-1"), end)
            env.update(base)
        else:
            env, pairs = parsed  # already updated with base
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


def _read_more_uwsgi(worker, fd, buf, mv, n, deadline):
    n = _read_more(fd, mv, n, 4, deadline, "uwsgi header")
    if buf[0] != 0 or (buf[1] | (buf[2] << 8)) > worker.max_block:
        return n  # rejected by the caller without waiting for the rest
    return _read_more(fd, mv, n, 4 + (buf[1] | (buf[2] << 8)), deadline, "uwsgi vars block")
