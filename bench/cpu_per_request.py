#!/usr/bin/env python3
"""CPU per request of the server's whole process tree, hello directly on the unix
socket, amy-emperor (with and without its native parser) against uWSGI, in
interleaved rounds: what bench/run.sh's direct figure costs, split in user and
kernel time (/proc utime/stime of the master and every descendant over the load).

    bench/cpu_per_request.py ROUNDS SECONDS amy,amy-pure,uwsgi [CONNS]

Needs bench/run.sh's setup (the release binary, bench/.work's loadgen and venv).
A quick A/B, not the report: 4 processes, loadgen 32 connections x 1 request."""
import json, os, signal, socket, subprocess, sys, tempfile, time
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AMY = os.environ.get("AMY_BIN", ROOT + "/target/release/amy-emperor")
VENV = os.environ.get("BENCH_VENV", ROOT + "/bench/.work/venv-bench")
UWSGI = VENV + "/bin/uwsgi"
LOADGEN = ROOT + "/bench/.work/target-loadgen/release/loadgen"
rounds, secs = int(sys.argv[1]), sys.argv[2]
servers = sys.argv[3].split(",")
conns = sys.argv[4] if len(sys.argv) > 4 else "32"

def ini(d):
    p = os.path.join(d, "app.ini")
    open(p, "w").write(f"""[uwsgi]
master = true
processes = 4
socket = {d}/app.sock
chdir = {ROOT}/bench/apps
module = hello:application
home = {VENV}
disable-logging = true
vacuum = true
die-on-term = true
need-app = true
pidfile = {d}/app.pid
""")
    return p

def probe(sock):
    pairs = [(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/"), (b"SERVER_PROTOCOL", b"HTTP/1.1")]
    body = b"".join(len(k).to_bytes(2, "little") + k + len(v).to_bytes(2, "little") + v for k, v in pairs)
    s = socket.socket(socket.AF_UNIX); s.settimeout(2)
    try:
        s.connect(sock); s.sendall(b"\0" + len(body).to_bytes(2, "little") + b"\0" + body)
        return s.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
    finally:
        s.close()

res = {s: [] for s in servers}
cpu = {}
for r in range(rounds):
    order = servers[r % len(servers):] + servers[:r % len(servers)]
    for srv in order:
        d = tempfile.mkdtemp(prefix="ab-")
        p = ini(d)
        env = dict(os.environ)
        if srv == "amy-pure":
            env["AMY_EMPEROR_NO_NATIVE"] = "1"
        cmd = [UWSGI, "--ini", p] if srv == "uwsgi" else [AMY, "start", p]
        proc = subprocess.Popen(cmd, env=env, stdout=open(d + "/log", "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while not probe(d + "/app.sock"):
            assert time.time() < deadline, open(d + "/log").read()
            time.sleep(0.05)
        for _ in range(40):
            probe(d + "/app.sock")
        time.sleep(0.5)
        def tree_cpu(root):
            # utime, stime (ticks) of root and every descendant
            kids = {}
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        f = open("/proc/%s/stat" % d).read().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    kids.setdefault(int(f[1]), []).append((int(d), int(f[11]), int(f[12])))
            u = st = 0
            todo = [root]
            while todo:
                p = todo.pop()
                for pid, a, b in kids.get(p, []):
                    u += a; st += b; todo.append(pid)
            return u, st
        c0 = tree_cpu(proc.pid)
        out = subprocess.run([LOADGEN, "--mode", "uwsgi", "--target", d + "/app.sock", "--conns", conns, "--duration", secs, "--req-timeout", "10", "--path", "/"], capture_output=True, text=True).stdout
        j = json.loads(out.strip().splitlines()[-1])
        rps = j.get("rps") or j.get("req_per_s")
        c1 = tree_cpu(proc.pid)
        n = rps * float(secs)
        us_user = (c1[0] - c0[0]) * 1e4 / n
        us_sys = (c1[1] - c0[1]) * 1e4 / n
        res[srv].append(rps)
        cpu.setdefault(srv, []).append((us_user, us_sys))
        print(f"round {r+1} {srv}: {rps} req/s errors={j.get('errors')} server tree CPU per request: user {us_user:.1f} us sys {us_sys:.1f} us", flush=True)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
import statistics
base = statistics.median(res["uwsgi"]) if "uwsgi" in res else None
for s, v in res.items():
    m = statistics.median(v)
    print(f"{s}: median {m:.0f} [{min(v):.0f}..{max(v):.0f}]" + (f"  {m/base:.2f}x uwsgi" if base else ""))
