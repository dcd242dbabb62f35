#!/usr/bin/env python3
"""Idle wake-ups of one real worker: syscalls per second while nobody connects.

    .venv-test/bin/python bench/idle_wakeups.py [--seconds 10] [--threads T] [--source DIR]

Starts one worker as the master does (tests/python/conftest.py's harness), serves one
request so it is warm, then attaches `strace -c -f` for SECONDS with no traffic and
prints the syscalls per second of the whole process (every thread: the serving loop,
the master-alive watchdog, the harakiri dump thread). An idle worker that sleeps until a
connection or a stop arrives shows ~0; a 50 ms accept timeout shows ~20 per thread.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
import conftest  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--source", help="another python/amy_worker directory to measure")
    args = ap.parse_args()
    if args.source:
        conftest.PACKAGE_DIR = os.path.abspath(args.source)
    with tempfile.TemporaryDirectory() as tmp:
        w = conftest.Worker(tmp, app="hello", threads=args.threads, disable_logging=True)
        try:
            w.wait_ready(timeout=60)
            r = conftest.uwsgi(w.addresses[0], uri="/")
            assert r.status == 200, r.raw
            time.sleep(0.5)
            out = os.path.join(tmp, "strace.txt")
            st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(w.pid)], stderr=subprocess.DEVNULL)
            time.sleep(args.seconds)
            st.send_signal(signal.SIGINT)
            st.wait(timeout=30)
            text = open(out).read()
        finally:
            w.close()
    total = 0
    rows = []
    for line in text.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) != "total":
            total += int(m.group(1))
            rows.append("%s %d" % (m.group(2), int(m.group(1))))
    print("%.1f syscalls per second idle (threads %d, %.0f s; %s)" % (total / args.seconds, args.threads, args.seconds, ", ".join(rows) or "none"))


if __name__ == "__main__":
    main()
