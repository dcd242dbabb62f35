"""Total PSS of a preloaded Django instance (4 workers) after it served a load,
with the template's gc.freeze() (the default) and without it
(AMY_PRELOAD_GC_FREEZE=0), interleaved rounds, medians.

    .venv-test/bin/python bench/gc_freeze.py [--rounds 3] [--requests 3000]

Without freeze, a worker's first full collection writes the GC header of every
object the import made, so those pages stop being shared copy-on-write."""

import argparse
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(REPO, "tests", "apps", "djangoapp")
BIN = os.environ.get("AMY_BIN", os.path.join(REPO, "target", "release", "amy-emperor"))


def request(sock_path, path="/"):
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "REQUEST_URI": path, "QUERY_STRING": "",
           "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
           "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost"}
    body = b"".join(struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode()
                    for k, v in env.items())
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    try:
        s.connect(sock_path)
        s.sendall(struct.pack("<BHB", 0, len(body), 0) + body)
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                return out
            out += d
    finally:
        s.close()


def tree(master):
    kids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/stat" % p) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                        kids.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return [master] + kids


def pss_kib(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def one(work, freeze, requests):
    sock = os.path.join(work, "app.sock")
    env = dict(os.environ, AMY_PRELOAD_GC_FREEZE=freeze)
    p = subprocess.Popen([BIN, "start", os.path.join(work, "app.ini")], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if request(sock).startswith(b"HTTP/1.1 200"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the instance did not answer in 30 s")
            time.sleep(0.01)
        per = requests // 4

        def client():
            for _ in range(per):
                request(sock)
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        return sum(pss_kib(pid) for pid in tree(p.pid))
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=3000)
    a = ap.parse_args()
    python = sys.executable
    work = tempfile.mkdtemp(prefix="amy-gcfreeze-")
    try:
        db = os.path.join(work, "db.sqlite3")
        subprocess.run([python, "manage.py", "migrate", "--noinput"], cwd=APP, check=True,
                       env=dict(os.environ, AMY_TEST_DB=db), stdout=subprocess.DEVNULL)
        with open(os.path.join(work, "uwsgi_env"), "w") as f:
            f.write("AMY_TEST_DB=%s\nDJANGO_SETTINGS_MODULE=djangoapp.settings\n" % db)
        with open(os.path.join(work, "app.ini"), "w") as f:
            f.write("[uwsgi]\nchdir = %s\nmodule = djangoapp.wsgi\nhome = %s\nmaster = true\n"
                    "processes = 4\nsocket = %s/app.sock\nvacuum = true\ndisable-logging = true\n"
                    "for-readline = %s/uwsgi_env\n  env = %%(_)\nendfor =\nlogto = %s/app.log\n"
                    % (APP, sys.prefix, work, work, work))
        got = {"1": [], "0": []}
        for r in range(a.rounds):
            for freeze in (("1", "0") if r % 2 == 0 else ("0", "1")):
                kib = one(work, freeze, a.requests)
                got[freeze].append(kib)
                print("round %d freeze=%s total PSS %d KiB" % (r + 1, freeze, kib), flush=True)
        on, off = statistics.median(got["1"]), statistics.median(got["0"])
        print("median total PSS after %d requests: gc.freeze %d KiB, without %d KiB (%.2fx)"
              % (a.requests, on, off, on / off))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
