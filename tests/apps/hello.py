"""The benchmark and smoke-test app: a short text and the serving worker's pid."""
import os


def application(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("X-Worker-Pid", str(os.getpid()))],
    )
    return [b"Hello, World!\n"]
