"""What a /metrics scrape costs the amy-emperor master.

Usage: .venv-test/bin/python bench/scrape_cost.py target/release/amy-emperor . N [busy] [--list]
Starts BINARY with 4 workers (tests/apps/metricsapp.py, preload, prometheus =),
sends some requests, optionally makes every worker busy (/sleep?s=120), then
does N sequential scrapes over loopback and reads the master's utime+stime
(all its threads) from /proc/PID/stat before and after. Prints CPU per scrape,
latency percentiles, payload size, and the metric list (name, type, labels) as
prometheus_client's parser sees it."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN, REPO, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
BUSY = len(sys.argv) > 4 and sys.argv[4] == "busy"
VENV = os.path.join(REPO, ".venv-test")
HZ = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(port, path, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
    s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def cpu_ticks(pid):
    """(utime, stime) of the whole process, every thread, in clock ticks."""
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]), int(f[12])


def sleeper(port):
    try:
        get(port, "/sleep?s=120", 200)
    except (OSError, IndexError):
        pass  # cut when the master stops


d = tempfile.mkdtemp(prefix="scrape-cost-")
mport, hport = free_port(), free_port()
ini = os.path.join(d, "amy.ini")
open(ini, "w").write(
    "[uwsgi]\nchdir = %s\nmodule = metricsapp\nhome = %s\nmaster = true\nprocesses = 4\n"
    "socket = %s/amy.sock\nhttp-socket = 127.0.0.1:%d\nprometheus = 127.0.0.1:%d\n"
    "harakiri = 300\nlog-slow = 1000\ndisable-logging = true\nlogto = %s/amy.log\n"
    % (os.path.join(REPO, "tests/apps"), VENV, d, hport, mport, d)
)
master = subprocess.Popen([BIN, "start", ini], cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    deadline = time.monotonic() + 60
    while True:
        try:
            if get(hport, "/ok")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("not serving")
        time.sleep(0.05)
    for path, n in (("/ok", 200), ("/missing", 30), ("/boom", 10)):
        for _ in range(n):
            get(hport, path)
    sleepers = []
    if BUSY:
        sleepers = [threading.Thread(target=sleeper, args=(hport,), daemon=True) for _ in range(4)]
        for t in sleepers:
            t.start()
        deadline = time.monotonic() + 30
        while b"amy_requests_in_flight 4\n" not in get(mport, "/metrics")[1]:
            if time.monotonic() > deadline:
                raise SystemExit("workers not busy")
            time.sleep(0.05)
    for _ in range(50):  # warm-up
        get(mport, "/metrics")
    lat = []
    before = cpu_ticks(master.pid)
    t0 = time.monotonic()
    for _ in range(N):
        t = time.perf_counter()
        status, body = get(mport, "/metrics")
        lat.append(time.perf_counter() - t)
        assert status == 200
    wall = time.monotonic() - t0
    after = cpu_ticks(master.pid)
    user, system = after[0] - before[0], after[1] - before[1]
    ticks = user + system
    if BUSY:
        assert b"amy_requests_in_flight 4\n" in body, "workers no longer busy"
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3
    print("binary %s, %d workers%s, %d scrapes in %.2f s" % (BIN, 4, " all busy" if BUSY else "", N, wall))
    print(
        "master CPU: %d ticks (1/%d s; user %d, system %d) = %.0f us per scrape"
        % (ticks, HZ, user, system, ticks / HZ / N * 1e6)
    )
    print("latency ms: p50 %.3f p90 %.3f p99 %.3f max %.3f" % (pct(0.5), pct(0.9), pct(0.99), lat[-1] * 1e3))
    print("payload: %d bytes, %d lines" % (len(body), body.count(b"\n")))
    if "--list" in sys.argv:
        sys.path.insert(0, "")
        from prometheus_client.parser import text_string_to_metric_families

        # Names as on the wire (the parser drops a counter's _total).
        wire = [l.split()[2:4] for l in body.decode().splitlines() if l.startswith("# TYPE ")]
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        for name, kind in wire:
            fam = fams[name[: -len("_total")] if kind == "counter" else name]
            labels = sorted({k for s in fam.samples for k in s.labels})
            print("  %-32s %-9s %s" % (name, kind, ",".join(labels)))
finally:
    master.send_signal(signal.SIGINT)
    try:
        master.wait(20)
    except subprocess.TimeoutExpired:
        master.kill()
        master.wait()
    shutil.rmtree(d, ignore_errors=True)
