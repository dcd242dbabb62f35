#!/usr/bin/env python3
"""Lone requests and idle wake-ups of one real `gevent = N` worker.

    .venv-test/bin/python bench/gevent_idle.py [--requests 20] [--pause 0.05] [--seconds 5] [--no-patch] [--source DIR]

Starts one worker as the master does (tests/python/conftest.py's harness, app
tests/apps/geventapp.py, gevent 10, gevent-monkey-patch unless --no-patch),
sends REQUESTS lone uwsgi requests PAUSE seconds apart (each to EOF, as nginx
reads it) and prints their median/min/max, then counts the worker's context
switches (every thread, /proc/PID/task/*/status) over SECONDS of idle.
--source measures another python/amy_worker directory (e.g. an older checkout's).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
import conftest  # noqa: E402


def switches(pid):
    total = 0
    for name in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, name)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--pause", type=float, default=0.05)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--no-patch", action="store_true")
    ap.add_argument("--source", help="another python/amy_worker directory to measure")
    args = ap.parse_args()
    if args.source:
        conftest.PACKAGE_DIR = os.path.abspath(args.source)
    serving = {"gevent": 10}
    if not args.no_patch:
        serving["gevent_monkey_patch"] = True
    with tempfile.TemporaryDirectory() as tmp:
        w = conftest.Worker(tmp, app="geventapp", disable_logging=True, serving=serving)
        try:
            w.wait_ready(timeout=60)
            for _ in range(3):
                assert conftest.uwsgi(w.addresses[0]).status == 200
            lat = []
            for _ in range(args.requests):
                time.sleep(args.pause)
                t0 = time.perf_counter()
                r = conftest.uwsgi(w.addresses[0])
                lat.append((time.perf_counter() - t0) * 1000)
                assert r.status == 200, r.raw
            time.sleep(0.5)
            before = switches(w.pid)
            time.sleep(args.seconds)
            woke = switches(w.pid) - before
        finally:
            w.close()
    print(
        "lone request ms: median %.2f min %.2f max %.2f (%d, %.0f ms apart, %s); idle: %.1f context switches/s"
        % (statistics.median(lat), min(lat), max(lat), len(lat), args.pause * 1000, "unpatched" if args.no_patch else "patched", woke / args.seconds)
    )


if __name__ == "__main__":
    main()
