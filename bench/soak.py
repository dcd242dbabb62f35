#!/usr/bin/env python3
"""Soak scenario (issue item 11): a scenario, not a test. Bounded in time.

    .venv-test/bin/python bench/soak.py --minutes 10 [--binary target/release/amy-emperor]

A real amy-emperor master with 4 workers serves a steady closed-loop load on
its unix socket (uwsgi protocol, as nginx sends) while the script reloads it
(touching the ini, alternating with SIGHUP) and SIGKILLs a random worker at
fixed intervals. It samples the master's RSS, its open fds and zombie children,
and reports:

- failed requests, next to the bound they must stay under: each SIGKILLed
  worker (1 thread) can take at most one in-flight request with it;
- master RSS growth (goal < 5 MiB) and fd count at start and end;
- zombies under the master (goal 0): a child still a zombie 1 s after it was
  seen (one that just exited is a zombie until the master's wait, counted apart).

Exit status 0 when every goal holds, 1 otherwise. Everything it starts is
stopped by PID at the end."""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pack_uwsgi(pairs):
    block = b"".join(
        struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
        for k, v in ((k.encode(), v.encode()) for k, v in pairs)
    )
    return struct.pack("<BHB", 0, len(block), 0) + block


PACKET = pack_uwsgi(
    [
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/pid"),
        ("PATH_INFO", "/pid"),
        ("QUERY_STRING", ""),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "soak"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_HOST", "soak"),
    ]
)


def request(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(path)
        s.sendall(PACKET)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.startswith(b"HTTP/1.1 200 ")
    except OSError:
        return False
    finally:
        s.close()


def proc_status(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def children(pid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(rest[1]) == pid:
            out.append((int(name), rest[0]))
    return out


def status(binary, ini):
    out = subprocess.run([binary, "status", "--json", ini], capture_output=True, timeout=30)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return {}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--binary", default=None)
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--reload-every", type=float, default=30.0)
    p.add_argument("--kill-every", type=float, default=10.0)
    p.add_argument("--python", default=os.path.join(ROOT, ".venv-test", "bin", "python"))
    a = p.parse_args()
    binary = a.binary or next(
        (b for b in (os.path.join(ROOT, "target", d, "amy-emperor") for d in ("release", "debug")) if os.path.exists(b)),
        None,
    )
    if binary is None:
        sys.exit("build amy-emperor first (cargo build --release)")
    venv = os.path.dirname(os.path.dirname(a.python))
    d = tempfile.mkdtemp(prefix="amy-soak-", dir="/tmp")
    ini = os.path.join(d, "amy_uwsgi.ini")
    sock = os.path.join(d, "amy.sock")
    with open(os.path.join(d, "uwsgi_env"), "w") as f:
        f.write("SOAK=1\n")
    os.chmod(os.path.join(d, "uwsgi_env"), 0o600)
    with open(ini, "w") as f:
        f.write(
            "[uwsgi]\nchdir = %s\nmodule = pep3333\nhome = %s\nprocesses = %d\nsocket = %%damy.sock\n"
            "pidfile = %%damy.pid\nlogto = %%damy.log\nvacuum = true\nfor-readline = %%duwsgi_env\n  env = %%(_)\nendfor =\n"
            "worker-reload-mercy = 10\ndisable-logging = true\n" % (os.path.join(ROOT, "tests", "apps"), venv, a.processes)
        )
    master = subprocess.Popen([binary, "start", ini], cwd=d, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "stderr.txt"), "w"))
    deadline = time.monotonic() + 120
    while not (os.path.exists(sock) and request(sock)):
        if master.poll() is not None or time.monotonic() > deadline:
            sys.exit("master did not start; see %s" % d)
        time.sleep(0.1)

    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    failures_at = []

    def client():
        while not stop.is_set():
            ok = request(sock)
            with lock:
                counts["ok" if ok else "failed"] += 1
                if not ok:
                    failures_at.append(time.monotonic())

    threads = [threading.Thread(target=client, daemon=True) for _ in range(a.clients)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    end = t0 + a.minutes * 60
    rss0, fd0 = proc_status(master.pid, "VmRSS"), fd_count(master.pid)
    rss_max, fd_max, zombies_max = rss0, fd0, 0
    kills = reloads = transient = 0
    next_kill, next_reload, next_sample = t0 + a.kill_every, t0 + a.reload_every, t0
    rng = random.Random(1)
    samples = []
    while time.monotonic() < end and master.poll() is None:
        now = time.monotonic()
        if now >= next_kill:
            next_kill += a.kill_every
            workers = [w["pid"] for w in status(binary, ini).get("workers", []) if w.get("pid")]
            if workers:
                try:
                    os.kill(rng.choice(workers), signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
        if now >= next_reload:
            next_reload += a.reload_every
            if reloads % 2:
                master.send_signal(signal.SIGHUP)
            else:
                os.utime(ini)
            reloads += 1
        if now >= next_sample:
            next_sample += 5
            rss, fds = proc_status(master.pid, "VmRSS"), fd_count(master.pid)
            # A worker that just exited is a zombie until the master's wait: only
            # one still a zombie a second later counts as left unreaped.
            dead = {pid for pid, s in children(master.pid) if s == "Z"}
            if dead:
                time.sleep(1.0)
                transient += len(dead)
                dead &= {pid for pid, s in children(master.pid) if s == "Z"}
            zombies = len(dead)
            rss_max, fd_max = max(rss_max, rss or 0), max(fd_max, fds or 0)
            zombies_max = max(zombies_max, zombies)
            samples.append((round(now - t0), rss, fds, zombies))
        time.sleep(0.2)
    # Settle: let the last reload finish before the final sample.
    time.sleep(min(15, a.reload_every))
    rss1, fd1 = proc_status(master.pid, "VmRSS"), fd_count(master.pid)
    zombies_end = sum(1 for _, s in children(master.pid) if s == "Z")
    stop.set()
    for t in threads:
        t.join(35)
    alive = master.poll() is None
    master.send_signal(signal.SIGTERM)
    try:
        code = master.wait(60)
    except subprocess.TimeoutExpired:
        master.kill()
        code = master.wait()
    growth_kib = (rss1 or 0) - (rss0 or 0)
    report = {
        "minutes": round((time.monotonic() - t0) / 60, 1),
        "requests_ok": counts["ok"],
        "requests_failed": counts["failed"],
        "workers_killed": kills,
        "reloads": reloads,
        "master_rss_kib": {"start": rss0, "end": rss1, "max": rss_max, "growth": growth_kib},
        "master_fds": {"start": fd0, "end": fd1, "max": fd_max},
        "zombies": {"unreaped_after_1s_max": zombies_max, "at_end": zombies_end, "seen_exiting": transient},
        "master_alive_until_stop": alive,
        "stop_exit_code": code,
        "samples_t_rss_fds_zombies": " ".join("%d:%s/%s/%s" % s for s in samples[:: max(1, len(samples) // 20)]),
    }
    goals = {
        "failed <= killed in-flight": counts["failed"] <= kills,
        "master rss growth < 5 MiB": growth_kib < 5 * 1024,
        "fds back to start": fd1 is not None and fd0 is not None and fd1 <= fd0 + 2,
        "no zombies": zombies_max == 0 and zombies_end == 0,
        "master alive, stop exits 0": alive and code == 0,
    }
    report["goals"] = goals
    print(json.dumps(report, indent=1))
    if all(goals.values()):
        shutil.rmtree(d, ignore_errors=True)
    else:
        print("kept %s for inspection" % d, file=sys.stderr)
    sys.exit(0 if all(goals.values()) else 1)


if __name__ == "__main__":
    main()
