"""The reload check (amy-emperor's own `reload-check = PATH`): before a new
worker sends `ready` and accepts on the public sockets, it serves `GET PATH`
privately, through the same request handling as a request from nginx, over a
socketpair only this process holds. 2xx/3xx passes; any other status, an
exception or `reload_check_timeout` fails the worker: the master gets
`failed <reason>` and exit EXIT_CHECK_FAILED, so the generation never takes
public traffic. The check also warms the worker (URL maps, templates, pools)."""

import os
import signal
import socket
import struct
import threading
import traceback

from .protocol import handle_uwsgi
from .server import _serve_one
from .wsgi import Request, _base_environ

# What the reason keeps of a failed answer's body.
BODY_LINES = 8
BODY_MAX = 64 * 1024


class CheckTimeout(BaseException):
    """Raised by SIGALRM into the check (BaseException: run_app must not turn it into a 500)."""


class CheckFailed(Exception):
    pass


def _packet(path, host):
    uri = path
    path_info, _, query = uri.partition("?")
    # What nginx's uwsgi_params send for `GET PATH` with that Host.
    pairs = [
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", "GET"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("REQUEST_URI", uri),
        ("PATH_INFO", path_info),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "0"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", host.partition(":")[0]),
        ("HTTP_HOST", host),
        ("HTTP_USER_AGENT", "amy-emperor reload-check"),
    ]
    body = b"".join(
        struct.pack("<H", len(k)) + k.encode("latin-1") + struct.pack("<H", len(v.encode("latin-1"))) + v.encode("latin-1")
        for k, v in pairs
    )
    return struct.pack("<BHB", 0, len(body), 0) + body


def _read_all(sock, out):
    total = 0
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            if total < BODY_MAX:
                out.append(data)
            total += len(data)
    except OSError:
        pass


def check_one(worker, listener, path, host, timeout):
    """Serve `GET path` through the app; raises CheckFailed with the reason."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    chunks = []
    reader = threading.Thread(target=_read_all, args=(ours, chunks), daemon=True, name="amy-reload-check")
    errors = []
    app = worker.app

    def watched(environ, start_response):
        try:
            return app(environ, start_response)
        except BaseException:
            errors.append(traceback.format_exc())
            raise

    def on_alarm(signum, frame):
        raise CheckTimeout()

    req = Request(worker, 0)
    buf = bytearray(4 + worker.max_block + 1024)
    old_alarm = signal.signal(signal.SIGALRM, on_alarm)
    worker.app = watched
    try:
        ours.sendall(_packet(path, host))
        reader.start()
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            _serve_one(worker, req, (theirs.detach(), ""), buf, memoryview(buf), _base_environ(worker, listener), listener, handle_uwsgi)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except CheckTimeout:
        raise CheckFailed("reload-check GET %s (Host: %s): no answer within %g s" % (path, host, timeout))
    finally:
        worker.app = app
        signal.signal(signal.SIGALRM, old_alarm)
        worker.requests_objs.remove(req)
    reader.join(timeout)
    ours.close()
    answer = b"".join(chunks)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = status_line.split(None, 2)
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if 200 <= code < 400:
        return
    why = "reload-check GET %s (Host: %s) answered %s" % (path, host, " ".join(parts[1:]) or "nothing")
    if errors:
        why += "\n" + errors[-1]
    elif body:
        lines = body.decode("utf-8", "replace").splitlines()[:BODY_LINES]
        why += "\n" + "\n".join(lines)
    raise CheckFailed(why)


def run_checks(worker, listeners, cfg):
    """Every configured path in order; raises CheckFailed on the first that fails."""
    paths = cfg.get("reload_check") or []
    host = cfg.get("reload_check_host") or "localhost"
    timeout = float(cfg.get("reload_check_timeout") or 10)
    for path in paths:
        check_one(worker, listeners[0], path, host, timeout)
