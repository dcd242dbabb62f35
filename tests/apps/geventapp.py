"""A gevent test app: /sleep?s=1 sleeps (gevent-patched time.sleep when the
worker monkey-patched), /stream sends chunks with pauses, /patched says whether
time.sleep is gevent's, /pid the worker's pid, anything else hello."""

import os
import time
from urllib.parse import parse_qs

# Bound at import, as apps do: only patched when patching happened before the import.
from time import sleep


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    q = parse_qs(environ.get("QUERY_STRING", ""))
    head = [("Content-Type", "text/plain"), ("X-Worker-Pid", str(os.getpid()))]
    if path == "/sleep":
        s = float(q.get("s", ["1"])[0])
        if "mark" in q:
            # Tells the test this request is in flight.
            open(os.path.join(q["mark"][0], "%d-%d" % (os.getpid(), id(environ))), "w").close()
        t0 = time.monotonic()
        sleep(s)
        start_response("200 OK", head)
        return [b"slept %.3f\n" % (time.monotonic() - t0)]
    if path == "/stream":
        n = int(q.get("n", ["5"])[0])
        pause = float(q.get("pause", ["0.1"])[0])
        size = int(q.get("size", ["16"])[0])
        start_response("200 OK", head)

        def body():
            for i in range(n):
                yield (b"%d:" % i) + b"x" * size + b"\n"
                sleep(pause)

        return body()
    if path == "/patched":
        import gevent.monkey

        start_response("200 OK", head)
        return [b"time=%s socket=%s\n" % (str(gevent.monkey.is_module_patched("time")).encode(), str(gevent.monkey.is_module_patched("socket")).encode())]
    start_response("200 OK", head)
    return [b"hello from gevent\n"]
