"""The benchmark's hello app: a ~50-byte body and the worker's pid.

Kept inside bench/ so the benchmark measures the same app whatever the tests'
apps become. `X-Worker-Pid` lets the reload scenario tell generations apart.
"""

import os

BODY = b"Hello from a WSGI worker! This body is ~50 bytes.\n"


def application(environ, start_response):
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(BODY))),
            # Per request: uWSGI imports the app in its master before forking.
            ("X-Worker-Pid", str(os.getpid())),
        ],
    )
    return [BODY]
