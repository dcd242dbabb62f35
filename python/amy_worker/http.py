"""HTTP/1.1 on an `http-socket`: the request head, the environ.

Strict where ambiguity is dangerous (reliability.md, h11 and waitress): CRLF
line endings only, HTTP/1.0 and 1.1 only, exactly one Host in HTTP/1.1, a
bounded request line, field line and field count. A head that arrives in
pieces is checked line by line as it arrives (`_scan_head`), so a bare-LF or
HTTP/0.9 client is answered at once instead of waiting for a blank line that
never comes, and an oversized line is refused before the buffer fills."""

import os
import re
import time

from .errors import BadRequest, ClientGone
from .fdio import CLOSE, _read_more, _reject, _write_all
from .limits import HEADER_TIMEOUT, MAX_FIELD_LINE, MAX_FIELDS, MAX_REQUEST_LINE
from .protocol import _content_length
from .wsgi import _TOKEN_RE, Input, run_app


_HTTP_VALUE_RE = re.compile(rb"[^\t\x20-\x7e\x80-\xff]")
_REQUEST_LINE_RE = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z\-]+) ([\x21-\x7e\x80-\xff]+) (HTTP/1\.[01])\Z"
)
# A well-formed request line with a version we do not speak: 505, not 400.
_OTHER_VERSION_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z\-]+ [\x21-\x7e\x80-\xff]+ HTTP/[0-9]+(\.[0-9]+)?\Z")


def _check_request_line(line):
    """The request line (bytes, no CRLF): its match, or the refusal."""
    if len(line) > MAX_REQUEST_LINE:
        raise BadRequest(414, "HTTP request line longer than %d bytes" % MAX_REQUEST_LINE)
    m = _REQUEST_LINE_RE.match(line)
    if m is not None:
        return m
    if _OTHER_VERSION_RE.match(line):
        raise BadRequest(505, "unsupported HTTP version %r" % line.rsplit(b" ", 1)[1][:16].decode("latin-1"))
    if line.count(b" ") == 1 and not line.endswith(b" "):
        raise BadRequest(400, "HTTP/0.9 request (no version) refused")
    raise BadRequest(400, "malformed HTTP request line")


def _scan_head(buf, pos, n, fields):
    """Check the lines of a head that is still arriving, as each one completes.

    `pos` is where the first unchecked line starts, `fields` the number of header
    fields seen so far (-1 before the request line). Returns `(pos, fields, end)`
    with `end` the offset of the `\r\n\r\n` once the blank line is in, else -1.
    Each byte is looked at once, however the head is split into reads."""
    while True:
        nl = buf.find(b"\n", pos, n)
        if nl < 0:
            left = n - pos
            if fields < 0:
                if left > MAX_REQUEST_LINE + 1:
                    raise BadRequest(414, "HTTP request line longer than %d bytes" % MAX_REQUEST_LINE)
            elif left > MAX_FIELD_LINE + 1:
                raise BadRequest(431, "HTTP header field longer than %d bytes" % MAX_FIELD_LINE)
            return pos, fields, -1
        if nl == pos or buf[nl - 1] != 0x0D:
            raise BadRequest(400, "bare LF line ending in the HTTP header")
        if nl - 1 == pos:
            if fields < 0:
                raise BadRequest(400, "empty line before the HTTP request line")
            return nl + 1, fields, pos - 2
        if fields < 0:
            _check_request_line(bytes(buf[pos : nl - 1]))
        elif nl - 1 - pos > MAX_FIELD_LINE:
            raise BadRequest(431, "HTTP header field longer than %d bytes" % MAX_FIELD_LINE)
        fields += 1
        if fields > MAX_FIELDS:
            raise BadRequest(431, "more than %d HTTP header fields" % MAX_FIELDS)
        pos = nl + 1


def _parse_http(head, listener, addr):
    """The request line and header fields (bytes, without the blank line) into
    an environ. Strict: anything ambiguous is a 400."""
    lines = head.split(b"\r\n")
    m = _check_request_line(lines[0])
    if len(lines) - 1 > MAX_FIELDS:
        raise BadRequest(431, "more than %d HTTP header fields" % MAX_FIELDS)
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
    hosts = 0
    for line in lines[1:]:
        if not line:
            raise BadRequest(400, "empty line inside the HTTP header")
        if len(line) > MAX_FIELD_LINE:
            raise BadRequest(431, "HTTP header field longer than %d bytes" % MAX_FIELD_LINE)
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
        if name == "HOST":
            hosts += 1
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
    # RFC 9112 3.2: a 1.1 request without Host, or any with two, is a 400 (two
    # Hosts let a proxy and the app disagree on the virtual host).
    if hosts > 1:
        raise BadRequest(400, "repeated Host header")
    if hosts == 0 and version == "HTTP/1.1":
        raise BadRequest(400, "HTTP/1.1 request without a Host header")
    if chunked:
        if content_length is not None:
            raise BadRequest(400, "both Transfer-Encoding and Content-Length")
        raise BadRequest(411, "chunked request body (not supported; send Content-Length)")
    return env


# ------------------------------------------------------------------ serving


def handle_http(worker, req, fd, addr, buf, mv, base, listener):
    limit = 4 + worker.max_block
    req.conn = fd
    # One deadline for the whole head, from accept(): however it trickles in.
    deadline = time.monotonic() + HEADER_TIMEOUT
    req.first_read_deadline = deadline
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
            pos, fields, end = _scan_head(buf, 0, n, -1)
            while end < 0:
                if n >= limit:
                    raise BadRequest(431, "HTTP request header larger than %d bytes" % worker.max_block)
                n = _read_more(fd, mv[:limit], n, n + 1, deadline, "HTTP request header")
                pos, fields, end = _scan_head(buf, pos, n, fields)
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
