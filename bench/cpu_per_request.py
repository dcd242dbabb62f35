#!/usr/bin/env python3
"""CPU per request of the server's whole process tree, hello directly on the unix
socket, amy-emperor (with and without its native parser) against uWSGI, in
interleaved rounds: what bench/run.sh's direct figure costs, split in user and
kernel time (/proc utime/stime of the master and every descendant over the load).

    bench/cpu_per_request.py ROUNDS SECONDS amy,amy-pure,uwsgi [CONNS]

Needs bench/run.sh's setup (the release binary, bench/.work's loadgen and venv).
A quick A/B, not the report: 4 processes, loadgen CONNS (32) connections x 1 request."""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AMY = os.environ.get("AMY_BIN", ROOT + "/target/release/amy-emperor")
VENV = os.environ.get("BENCH_VENV", ROOT + "/bench/.work/venv-bench")
UWSGI = VENV + "/bin/uwsgi"
LOADGEN = ROOT + "/bench/.work/target-loadgen/release/loadgen"
TICK = os.sysconf("SC_CLK_TCK")


def write_ini(d):
    path = os.path.join(d, "app.ini")
    with open(path, "w") as f:
        f.write(
            f"[uwsgi]\nmaster = true\nprocesses = 4\nsocket = {d}/app.sock\n"
            f"chdir = {ROOT}/bench/apps\nmodule = hello:application\nhome = {VENV}\n"
            f"disable-logging = true\nvacuum = true\ndie-on-term = true\nneed-app = true\n"
            f"pidfile = {d}/app.pid\n"
        )
    return path


def answers(sock):
    """One uwsgi GET on `sock` gets a 200."""
    pairs = [(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/"), (b"SERVER_PROTOCOL", b"HTTP/1.1")]
    body = b"".join(len(k).to_bytes(2, "little") + k + len(v).to_bytes(2, "little") + v for k, v in pairs)
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    try:
        s.connect(sock)
        s.sendall(b"\0" + len(body).to_bytes(2, "little") + b"\0" + body)
        return s.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
    finally:
        s.close()


def tree_cpu(root):
    """(user, system) CPU seconds of `root` and every descendant."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append((int(name), int(fields[11]), int(fields[12])))
    user = system = 0
    todo = [root]
    while todo:
        for pid, u, s in children.get(todo.pop(), []):
            user += u
            system += s
            todo.append(pid)
    return user / TICK, system / TICK


def measure(server, seconds, conns):
    """(req/s, user µs per request, system µs per request) of one run."""
    d = tempfile.mkdtemp(prefix="cpu-per-request-")
    ini = write_ini(d)
    env = dict(os.environ)
    env.pop("AMY_EMPEROR_NO_NATIVE", None)
    if server == "amy-pure":
        env["AMY_EMPEROR_NO_NATIVE"] = "1"
    cmd = [UWSGI, "--ini", ini] if server == "uwsgi" else [AMY, "start", ini]
    with open(d + "/log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not answers(d + "/app.sock"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("%s did not answer:\n%s" % (server, open(d + "/log").read()))
            time.sleep(0.05)
        for _ in range(40):  # warm every worker a little
            answers(d + "/app.sock")
        before = tree_cpu(proc.pid)
        out = subprocess.run([LOADGEN, "--mode", "uwsgi", "--target", d + "/app.sock", "--conns", str(conns),
                              "--duration", str(seconds), "--req-timeout", "10", "--path", "/"],
                             capture_output=True, text=True, check=True).stdout
        after = tree_cpu(proc.pid)
        result = json.loads(out.strip().splitlines()[-1])
        n = max(result["ok"], 1)
        return result["rps"], (after[0] - before[0]) * 1e6 / n, (after[1] - before[1]) * 1e6 / n
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(d, ignore_errors=True)


def main():
    rounds, seconds, servers = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split(",")
    conns = int(sys.argv[4]) if len(sys.argv) > 4 else 32
    rps = {s: [] for s in servers}
    for r in range(rounds):
        for server in servers[r % len(servers):] + servers[: r % len(servers)]:
            x, user, system = measure(server, seconds, conns)
            rps[server].append(x)
            print(f"round {r + 1} {server}: {x:.0f} req/s, server tree CPU per request: "
                  f"user {user:.1f} µs, system {system:.1f} µs", flush=True)
    base = statistics.median(rps["uwsgi"]) if rps.get("uwsgi") else None
    for server, values in rps.items():
        m = statistics.median(values)
        ratio = f"  {m / base:.2f}x uWSGI" if base else ""
        print(f"{server}: median {m:.0f} req/s [{min(values):.0f}..{max(values):.0f}]{ratio}")


if __name__ == "__main__":
    main()
