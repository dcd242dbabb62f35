"""A WSGI app exercising PEP 3333, served under wsgiref.validate.

Paths under /raw/ skip the validator: they return what a validator would refuse
(header injection, a crash before start_response), to test the server's own checks.
"""
import json
import os
import sys
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

# Per worker process; tests that read it run one worker.
CLOSES = {"count": 0}


def _qs(environ, name, default=""):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def _text(start_response, body, status="200 OK", headers=()):
    if isinstance(body, str):
        body = body.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))] + list(headers))
    return [body]


class Counted:
    """An iterable whose close() is counted: the server must call it exactly once."""

    def __init__(self, chunks, delay=0.0, fail_at=None):
        self.chunks = chunks
        self.delay = delay
        self.fail_at = fail_at

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i and self.delay:
                time.sleep(self.delay)
            if i == self.fail_at:
                raise RuntimeError("failing mid-stream on purpose")
            yield chunk

    def close(self):
        CLOSES["count"] += 1


def _environ_json(environ):
    out = {}
    for key, value in environ.items():
        if isinstance(value, str):
            out[key] = value
        elif key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once"):
            out[key] = value
        elif key == "wsgi.version":
            out[key] = list(value)
    return out


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path.startswith("/environ"):
        return _text(start_response, json.dumps(_environ_json(environ), sort_keys=True))
    if path == "/env":
        return _text(start_response, os.environ.get(_qs(environ, "name"), ""))
    if path == "/loaded":
        return _text(start_response, str(_qs(environ, "name") in sys.modules))
    if path == "/pid":
        return _text(start_response, str(os.getpid()))
    if path == "/echo":
        mode = _qs(environ, "mode", "read")
        stream = environ["wsgi.input"]
        if mode == "read":
            body = stream.read(int(environ.get("CONTENT_LENGTH") or 0))
        elif mode == "readall":
            body = stream.read()
        elif mode == "chunks":
            parts = []
            while True:
                part = stream.read(1000)
                if not part:
                    break
                parts.append(part)
            body = b"".join(parts)
        elif mode == "readline":
            parts = []
            while True:
                line = stream.readline()
                if not line:
                    break
                parts.append(line)
            body = b"".join(parts)
        elif mode == "readlines":
            body = b"".join(stream.readlines())
        else:
            body = b"".join(iter(stream))
        return _text(start_response, body)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"by write() ")
        return [b"then returned"]
    if path == "/has-file-wrapper":
        return _text(start_response, str("wsgi.file_wrapper" in environ))
    if path == "/file":
        start_response("200 OK", [("Content-Type", "text/x-python")])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"), 4096)
    if path == "/stream":
        n = int(_qs(environ, "n", "3"))
        delay = float(_qs(environ, "delay", "0"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Counted([b"chunk %d\n" % i for i in range(n)], delay)
    if path == "/stream-fail":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Counted([b"first\n", b"second\n"], fail_at=1)
    if path == "/closes":
        return _text(start_response, str(CLOSES["count"]))
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("replaced by an error page")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page"]
    if path == "/sleep":
        # `mark=PATH`: created once the request has reached the app, so a test
        # can wait for "in flight" instead of sleeping and hoping.
        mark = _qs(environ, "mark", "")
        if mark:
            open(mark, "w").close()
        time.sleep(float(_qs(environ, "s", "1")))
        return _text(start_response, "slept")
    if path == "/reject":
        # Refuses without reading the body: the server, not the app, has to
        # deal with the unread upload (the client still gets this answer).
        return _text(start_response, "forbidden", status="403 Forbidden")
    if path == "/bigheader":
        return _text(start_response, "big", headers=[("X-Big", "b" * 16000)])
    if path == "/crash":
        raise RuntimeError("crash before start_response on purpose")
    if path == "/exit":
        os._exit(1)
    return _text(start_response, "not found", status="404 Not Found")


validated = validator(app)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/raw/inject":
        start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: pwned=1")])
        return [b"should never be sent"]
    if path == "/raw/bad-status":
        start_response("200 OK\r\nX-Evil: 1", [])
        return [b"should never be sent"]
    if path.startswith("/raw/"):
        return app(dict(environ, PATH_INFO=path[4:]), start_response)
    return validated(environ, start_response)
