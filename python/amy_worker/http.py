"""HTTP/1.1 on an `http-socket`: the request head, the environ."""

import os
import re
import time

from .errors import BadRequest, ClientGone
from .fdio import CLOSE, _read_more, _reject, _write_all
from .limits import HEADER_TIMEOUT
from .protocol import _content_length
from .wsgi import _TOKEN_RE, Input, run_app


_HTTP_VALUE_RE = re.compile(rb"[^\t\x20-\x7e\x80-\xff]")
_REQUEST_LINE_RE = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z\-]+) ([\x21-\x7e\x80-\xff]+) (HTTP/1\.[01])\Z"
)


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
