"""Answers with the hex of os.environb[b"AMY_BYTES"]: env-file bytes must reach
the worker unchanged, UTF-8 or not."""
import os


def application(environ, start_response):
    value = os.environb.get(b"AMY_BYTES")
    body = b"unset" if value is None else value.hex().encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
