"""The emperor tests' app: the serving worker's pid on every answer, and
`/sleep?s=N` for an in-flight request that must complete across a stop."""
import os
import time


def application(environ, start_response):
    body = b"Hello, World!\n"
    if environ.get("PATH_INFO") == "/sleep":
        query = environ.get("QUERY_STRING", "")
        seconds = float(query[2:]) if query.startswith("s=") else 1.0
        time.sleep(seconds)
        body = b"slept\n"
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("X-Worker-Pid", str(os.getpid()))],
    )
    return [body]
