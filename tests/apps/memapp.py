"""Test app for worker lifetimes and memory limits: every answer carries the
serving worker's pid. `/?sleep=S` sleeps; `/leak?mb=N` keeps N MiB more
(touched, so it is resident); `/hold?mb=N&sleep=S` allocates N MiB and holds
the request S seconds; `/mem` is "VmSize_MiB RSS_MiB"; `/rlimit` is the soft
RLIMIT_AS in bytes (-1 unlimited); `/alloc?mb=N` tries to allocate N MiB and
says "ok" or "refused" (MemoryError)."""

import os
import resource
import time
from urllib.parse import parse_qs

_kept = []
_page = os.sysconf("SC_PAGE_SIZE")


def _mem():
    with open("/proc/self/statm") as f:
        size, rss = f.read().split()[:2]
    return int(size) * _page >> 20, int(rss) * _page >> 20


def _block(mb):
    # bytes(n) is zero-filled by calloc: often not resident. Touch every page.
    b = bytearray(mb << 20)
    for i in range(0, len(b), _page):
        b[i] = 1
    return b


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    body = b"ok"
    if path == "/leak":
        _kept.append(_block(int(q.get("mb", "16"))))
    elif path == "/hold":
        held = _block(int(q.get("mb", "16")))
        time.sleep(float(q.get("sleep", "1")))
        del held
    elif path == "/mem":
        body = ("%d %d" % _mem()).encode()
    elif path == "/rlimit":
        body = str(resource.getrlimit(resource.RLIMIT_AS)[0]).encode()
    elif path == "/alloc":
        try:
            x = bytearray(int(q.get("mb", "1")) << 20)
            del x
        except MemoryError:
            body = b"refused"
    if "sleep" in q and path != "/hold":
        time.sleep(float(q["sleep"]))
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("X-Worker-Pid", str(os.getpid()))],
    )
    return [body]
