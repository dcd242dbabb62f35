"""Not a test: the worker's per-request cost in instructions. Runs the worker
(launched by the conftest harness, as the master does) under callgrind for a
few and for many uwsgi requests; the difference divided by the extra requests
is the hot path's cost, free of start-up.

    .venv-test/bin/python tests/python/hotpath.py [N] [threads]
"""

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import conftest  # noqa: E402


def run(n, threads, tmp):
    wrapper = os.path.join(tmp, "python-under-callgrind")
    out = os.path.join(tmp, "callgrind.%d.out" % n)
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s %s \"$@\"\n" % (out, conftest.VENV_PYTHON))
    os.chmod(wrapper, 0o755)
    w = conftest.Worker(tmp, app="hello", python=wrapper, threads=threads, disable_logging=True)
    try:
        w.wait_ready(timeout=120)
        for _ in range(n):
            r = conftest.uwsgi(w.addresses[0], uri="/x?y=1")
            assert r.status == 200, r.raw
        w.master_gone()
        w.wait_exit(timeout=120)
    finally:
        w.close()
    total = subprocess.run(["callgrind_annotate", out], capture_output=True, text=True).stdout
    for line in total.splitlines():
        if "PROGRAM TOTALS" in line:
            return int(line.split()[0].replace(",", ""))
    raise AssertionError(total[-2000:])


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with tempfile.TemporaryDirectory() as tmp:
        few = run(100, threads, tmp)
        many = run(100 + n, threads, tmp)
    print("instructions per request: %.0f (threads=%d, %d requests, %d vs %d total)" % ((many - few) / n, threads, n, many, few))


if __name__ == "__main__":
    main()
