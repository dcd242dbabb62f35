"""A tiny app for tests/metrics.rs: known statuses, a slow page, and a request
stuck in a function with a recognisable name (the harakiri dump must show it)."""

import os
import signal
import sys
import time

if os.environ.get("METRICSAPP_GRACEFUL"):
    # harakiri-graceful-signal = 10 arrives here (tests/metrics.rs).
    def _graceful(signum, frame):
        sys.stderr.write("metricsapp: graceful signal %d\n" % signum)
        sys.stderr.flush()

    signal.signal(signal.SIGUSR1, _graceful)


def _reply(start_response, status, body):
    body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _seconds(environ, default):
    for part in environ.get("QUERY_STRING", "").split("&"):
        if part.startswith("s="):
            return float(part[2:])
    return default


def wait_for_the_lock_that_never_comes(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


def handle_stuck_report(seconds):
    wait_for_the_lock_that_never_comes(seconds)


def _stuck_after(first, seconds):
    yield first
    handle_stuck_report(seconds)
    yield b"never"


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/ok":
        return _reply(start_response, "200 OK", "ok")
    if path == "/missing":
        return _reply(start_response, "404 Not Found", "missing")
    if path == "/boom":
        raise RuntimeError("boom on purpose")
    if path == "/sleep":
        time.sleep(_seconds(environ, 1.0))
        return _reply(start_response, "200 OK", "slept")
    if path == "/stuck":
        handle_stuck_report(_seconds(environ, 30.0))
        return _reply(start_response, "200 OK", "unstuck")
    if path == "/stuck-streaming":
        # The head and a first chunk go out, then the app is stuck: harakiri
        # can no longer answer 504.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return _stuck_after(b"start", _seconds(environ, 30.0))
    if path == "/pid":
        return _reply(start_response, "200 OK", str(os.getpid()))
    return _reply(start_response, "404 Not Found", "no such page")
