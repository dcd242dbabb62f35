"""Test app for preload and the reload check: an import that takes HEAVY_IMPORT_S
seconds (default 1) and allocates ~40 MiB of Python objects, each import counted
as a line in the file HEAVY_IMPORT_LOG. HEAVY_MODE picks the release: ok,
import_error (raises at import), http500 (imports, answers 500 everywhere), raise
(imports, the app raises on every request), hang
(imports, never answers). With HEAVY_CHECK_FAIL_FLAG set, the reload check's
request (its User-Agent) answers 500 while that file exists. The first request of a process takes HEAVY_FIRST_S
seconds (a cold Django worker). Answers name the release, the pid and the
process's first random number (to see that forks are reseeded)."""

import os
import random
import time

if os.environ.get("HEAVY_IMPORT_LOG"):
    with open(os.environ["HEAVY_IMPORT_LOG"], "a") as f:
        f.write("%d\n" % os.getpid())
time.sleep(float(os.environ.get("HEAVY_IMPORT_S", "1")))

# 40 MiB in 40960 distinct objects: shared copy-on-write by forked workers.
DATA = [bytes([i % 251]) * 1024 for i in range(40 * 1024)]

MODE = os.environ.get("HEAVY_MODE", "ok")
RELEASE = os.environ.get("HEAVY_RELEASE", "1")
if MODE == "import_error":
    raise ImportError("release %s is broken at import" % RELEASE)

_first = []


def application(environ, start_response):
    flag = os.environ.get("HEAVY_CHECK_FAIL_FLAG")
    checked = environ.get("HTTP_USER_AGENT") == "amy-emperor reload-check"
    if MODE == "http500" or (flag and checked and os.path.exists(flag)):
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"release is broken: settings error\n"]
    if MODE == "raise":
        raise RuntimeError("release %s raises in settings_for_request" % RELEASE)
    if MODE == "hang":
        time.sleep(3600)
    if not _first:
        time.sleep(float(os.environ.get("HEAVY_FIRST_S", "0")))
        _first.append(random.random())
    body = ("%s %d %r\n" % (RELEASE, os.getpid(), _first[0])).encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("X-Worker-Pid", str(os.getpid())),
            ("X-Release", RELEASE),
        ],
    )
    return [body]
