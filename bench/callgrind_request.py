#!/usr/bin/env python3
"""Instructions per request of one real worker, from callgrind: repeatable on a busy machine.

    .venv-test/bin/python bench/callgrind_request.py [--requests N] [--app hello] [--threads T]
                                                     [--source DIR] [--annotate]

Starts one worker exactly as the master does (tests/python/conftest.py's harness: the
package memfd, the contract's fds, `python -c BOOTSTRAP`), its interpreter under
`valgrind --tool=callgrind`, and sends it N requests one connection each, then 2N in a
second worker. Each request is the packet nginx's stock `uwsgi_params` sends for a browser
GET (15 vars + 5 headers, ~420 bytes). The worker's whole process is counted (start-up,
accept loop, watchdog thread, exit), so the difference of the two totals divided by N is
the per-request cost without start-up: parse, environ, app, head, write, close,
scoreboard, and the accept loop around them.

`--source DIR` runs another copy of the package (e.g. a `git worktree` of an older
commit's python/amy_worker) for a before/after in one go. `--annotate` prints the top
functions of the 2N run (inclusive), to see where the instructions go.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
import conftest  # noqa: E402

HEADERS = [
    ("HTTP_ACCEPT", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5"),
    ("HTTP_ACCEPT_ENCODING", "gzip, deflate, br"),
    ("HTTP_COOKIE", "sessionid=0123456789abcdef0123456789abcdef; csrftoken=abcdefABCDEF0123456789"),
    ("HTTP_CONNECTION", "close"),
]


def packet():
    pairs = conftest.nginx_vars("GET", "/events/?page=2", headers=HEADERS)
    pairs = [(k, "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0") if k == "HTTP_USER_AGENT" else (k, v) for k, v in pairs]
    return conftest.pack_uwsgi(pairs)


def one_request(addr, pkt):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    try:
        s.connect(addr)
        s.sendall(pkt)
        parts = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            parts.append(chunk)
    finally:
        s.close()
    reply = b"".join(parts)
    if not reply.startswith(b"HTTP/1.1 200"):
        raise SystemExit("bad reply: %r" % reply[:200])


def run(n, args, tmp):
    out = os.path.join(tmp, "callgrind.%d.out" % n)
    wrapper = os.path.join(tmp, "python-under-callgrind")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nexec valgrind -q --tool=callgrind --callgrind-out-file=%s %s "$@"\n' % (out, args.python))
    os.chmod(wrapper, 0o755)
    w = conftest.Worker(tmp, app=args.app, python=wrapper, threads=args.threads, disable_logging=True)
    pkt = packet()
    try:
        w.wait_ready(timeout=300)
        t0 = time.monotonic()
        for _ in range(n):
            one_request(w.addresses[0], pkt)
        took = time.monotonic() - t0
        w.master_gone()
        w.wait_exit(timeout=300)
    finally:
        w.close()
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", out], capture_output=True, text=True).stdout
    for line in ann.splitlines():
        if "PROGRAM TOTALS" in line:
            return int(line.split()[0].replace(",", "")), took, ann
    raise SystemExit(ann[-2000:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="N: the runs serve N and 2N requests")
    ap.add_argument("--app", default="hello", help="a module of tests/apps (default hello)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--python", default=conftest.VENV_PYTHON)
    ap.add_argument("--source", help="another python/amy_worker directory to measure")
    ap.add_argument("--annotate", action="store_true")
    args = ap.parse_args()
    if args.source:
        conftest.PACKAGE_DIR = os.path.abspath(args.source)
    # The worker inherits it: dict and set probe counts depend on the hash seed,
    # which moves the count by a few percent from run to run otherwise.
    os.environ.setdefault("PYTHONHASHSEED", "0")
    n = args.requests
    with tempfile.TemporaryDirectory() as tmp:
        few, t_few, _ = run(n, args, tmp)
        many, t_many, ann = run(2 * n, args, tmp)
    per = (many - few) / n
    print(
        "%.0f instructions per request (worker %s, app %s, threads %d, packet %d bytes; totals %d for %d and %d for %d requests; %.1f / %.1f s under callgrind)"
        % (per, conftest.PACKAGE_DIR, args.app, args.threads, len(packet()), few, n, many, 2 * n, t_few, t_many)
    )
    if args.annotate:
        print("\n".join(ann.splitlines()[:80]))


if __name__ == "__main__":
    main()
