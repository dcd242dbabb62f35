#!/usr/bin/env python3
"""amy-emperor benchmark: amy-emperor, uWSGI and gunicorn side by side behind nginx.

Run through `bench/run.sh` (it picks the venv's Python and puts a `timeout` on the
whole run). For each round, for each server, for each app (interleaved, so slow
drifts of a shared machine hit every server alike) it renders a run folder under
`bench/.work/runs/`, starts nginx and the server there, and measures in this order:

  ready      launch -> first 200 through nginx (10 ms polls)
  throughput wrk -t2 -c32 through nginx after an unreported warm-up
  memory     VmRSS of the launched pid (the master); RSS and PSS of the workers
             (the leaf processes of its tree)
  direct     loadgen straight at the socket (uwsgi protocol; HTTP for gunicorn),
             one request per connection as nginx does
  reload     loadgen through nginx (keep-alive), the ini touched (gunicorn: SIGHUP)
             at --reload-at seconds; failed requests, max/p99 latency in the reload
             window, touch -> first answer from a new worker pid
  shutdown   SIGTERM to the launched pid -> every process of its tree gone

One JSON line per (server, app, round, scenario) goes to
`bench/.work/results-<timestamp>.jsonl`; a markdown table of medians with
amy/uwsgi ratios is printed at the end (`bench.py summarize FILE...` reprints it).

Only processes this script started are signalled, by pid, plus the descendants of
the server it launched (its workers), each checked against its /proc start time.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / ".work"
VENV = ROOT / ".venv-test"
LOADGEN_TARGET = WORK / "target-loadgen"
LOADGEN = LOADGEN_TARGET / "release" / "loadgen"
UWSGI_PARAMS = "/etc/nginx/uwsgi_params"
SERVERS = ("amy", "uwsgi", "gunicorn")
APPS = ("hello", "django")
# What each app is called in the ini, and where its code comes from.
APP_MODULE = {"hello": "hello:application", "django": "amyish.wsgi:application"}


class RunTimeout(Exception):
    pass


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


def proc_start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def all_ppids():
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                out[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return out


def descendants(pid):
    ppids = all_ppids()
    children = {}
    for p, pp in ppids.items():
        children.setdefault(pp, []).append(p)
    out, stack = [], [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out, children


def workers_of(pid):
    """The leaf processes under `pid`: the ones serving requests."""
    desc, children = descendants(pid)
    return sorted(p for p in desc if not children.get(p))


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def where(pid):
    """What a process that failed to stop is doing: for the server's developers."""

    def read(path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return "?"

    threads = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            stat = read(f"/proc/{pid}/task/{tid}/stat")
            state = stat.rsplit(")", 1)[1].split()[0] if ")" in stat else "?"
            threads[tid] = f"{state} {read(f'/proc/{pid}/task/{tid}/wchan')}"
    except OSError:
        pass
    return {"pid": pid, "cmd": read(f"/proc/{pid}/cmdline").replace("\0", " ")[:200], "threads": threads}


class Tracked:
    """A process we started (or a descendant of one), identified by pid + start time."""

    def __init__(self, pid, popen=None):
        self.pid = pid
        self.popen = popen
        self.start = proc_start_time(pid)

    def alive(self):
        if self.popen is not None and self.popen.poll() is not None:
            return False
        st = proc_start_time(self.pid)
        return st is not None and st == self.start

    def signal(self, sig):
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


class Reaper:
    """Every process this run started; all of them are gone when `stop_all` returns."""

    def __init__(self):
        self.procs = []

    def spawn(self, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        # A session of its own: Ctrl-C in the terminal reaches only this script,
        # which then stops everything in order.
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        t = Tracked(p.pid, p)
        self.procs.append(t)
        return t

    def adopt_tree(self, t):
        for pid in descendants(t.pid)[0]:
            if all(x.pid != pid for x in self.procs):
                self.procs.append(Tracked(pid))

    def stop(self, t, sig=signal.SIGTERM, grace=10.0):
        self.adopt_tree(t)
        t.signal(sig)
        deadline = time.monotonic() + grace
        while t.alive() and time.monotonic() < deadline:
            if t.popen is not None:
                try:
                    t.popen.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.05)
        t.signal(signal.SIGKILL)
        if t.popen is not None:
            try:
                t.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def stop_all(self):
        for t in reversed(self.procs):
            if t.alive():
                self.stop(t, signal.SIGTERM, grace=5.0)
        # Workers orphaned by a killed master.
        for t in self.procs:
            t.signal(signal.SIGKILL)
        self.procs = [t for t in self.procs if t.alive()]


# ---------------------------------------------------------------- CPU accounting

CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]) - idle, sum(v[:8])


def tree_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # utime stime cutime cstime: reaped children (old workers) count too.
            total += sum(int(x) for x in fields[11:15])
        except (OSError, IndexError, ValueError):
            continue
    return total


class CpuMeter:
    """Busy CPU of the whole machine and the share not used by this benchmark, so a
    run disturbed by other work on a shared machine can be spotted."""

    def __init__(self, pids):
        self.pids = pids
        self.busy0, self.all0 = machine_busy_ticks()
        self.ours0 = tree_ticks(pids) + self._children()

    @staticmethod
    def _children():
        t = os.times()
        return round((t.children_user + t.children_system) * CLK_TCK)

    def done(self):
        busy, allt = machine_busy_ticks()
        ours = tree_ticks(self.pids) + self._children() - self.ours0
        span = max(allt - self.all0, 1)
        return {"cpu_busy_pct": round(100 * (busy - self.busy0) / span, 1),
                "cpu_foreign_pct": round(max(0.0, 100 * (busy - self.busy0 - ours) / span), 1)}


# ---------------------------------------------------------------- helpers


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port, path="/", timeout=2.0):
    """Status of one GET through nginx, with the X-Worker-Pid, or (None, None)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        pid = None
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "x-worker-pid":
                pid = int(v.strip())
        return status, pid
    except (OSError, ValueError, IndexError):
        return None, None


def wait_until(pred, timeout, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return None


def run_json(argv, timeout, log_path):
    with open(log_path, "ab") as errf:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=errf, timeout=timeout, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {r.returncode} (see {log_path})")
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * UNIT[m.group(2)] if m else None


def parse_wrk(out):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    r["requests"] = int(m.group(1)) if m else None
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        r[f"p{pct}_ms"] = wrk_ms(m.group(1)) if m else None
    m = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
    r["max_ms"] = wrk_ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return r


# ---------------------------------------------------------------- rendering


def ini_text(server, app, d, processes):
    lines = [
        "[uwsgi]",
        "master = true",
        f"processes = {processes}",
        f"socket = {d}/app.sock",
        "chmod-socket = 660",
        "vacuum = true",
        f"pidfile = {d}/app.pid",
        "die-on-term = true",
        "need-app = true",
        f"home = {VENV}",
        f"chdir = {d}/app",
        f"module = {APP_MODULE[app]}",
        f"for-readline = {d}/uwsgi_env",
        "env = %(_)",
        "endfor =",
        "disable-logging = true",
    ]
    if server == "uwsgi":
        # uWSGI reloads on a touch only when told to watch the file.
        lines.append(f"touch-reload = {d}/amy_uwsgi.ini")
    if server == "amy" and os.environ.get("BENCH_AMY_INI"):
        # Extra amy-emperor lines, '|'-separated: "lazy-apps = true" or
        # "reload-check = /" to compare variants of the same run.
        lines += [l.strip() for l in os.environ["BENCH_AMY_INI"].split("|") if l.strip()]
    return "\n".join(lines) + "\n"


def env_text(app, d):
    lines = ["# benchmark environment (AMY keeps its secrets here)", "BENCH_SECRET=never-in-a-log"]
    if app == "django":
        lines += ["DJANGO_SETTINGS_MODULE=amyish.settings", f"AMYISH_DB={d}/app/db.sqlite3"]
    return "\n".join(lines) + "\n"


def nginx_conf(d, port, sock, proto):
    if proto == "uwsgi":
        upstream = f"uwsgi_pass unix:{sock};\n            include {UWSGI_PARAMS};"
    else:
        upstream = (
            f"proxy_pass http://unix:{sock}:;\n"
            "            proxy_set_header Host $host;\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";'
        )
    user = "user root;\n" if os.geteuid() == 0 else ""
    t = f"{d}/nginx-tmp"
    return f"""# rendered by bench/bench.py
{user}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            {upstream}
        }}
    }}
}}
"""


def prepare_django_db(py):
    """One seeded SQLite database per bench invocation, copied into each run."""
    src = WORK / "django-seed"
    db = src / "db.sqlite3"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(BENCH / "apps" / "amyish", src, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="amyish.settings", AMYISH_DB=str(db))
    for cmd in (["migrate", "-v0"], ["seed", "--rows", "400"]):
        subprocess.run([py, "manage.py", *cmd], cwd=src, env=env, check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
    return db


def render_app(app, d, seed_db):
    appdir = d / "app"
    if app == "hello":
        appdir.mkdir(parents=True)
        shutil.copy(BENCH / "apps" / "hello.py", appdir / "hello.py")
    else:
        shutil.copytree(BENCH / "apps" / "amyish", appdir, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
        shutil.copy(seed_db, appdir / "db.sqlite3")


def parse_env_file(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


# ---------------------------------------------------------------- one run


class Run:
    def __init__(self, args, server, app, rnd, seed_db, results, stamp):
        self.a, self.server, self.app, self.round = args, server, app, rnd
        self.results = results
        self.d = WORK / "runs" / f"{stamp}-{server}-{app}-r{rnd}"
        self.sock = self.d / "app.sock"
        self.ini = self.d / "amy_uwsgi.ini"
        self.seed_db = seed_db
        self.reaper = Reaper()
        self.server_proc = None
        self.nginx = None
        self.port = None

    def emit(self, scenario, **fields):
        rec = {"server": self.server, "app": self.app, "round": self.round, "scenario": scenario,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields, "run_dir": str(self.d)}
        with open(self.results, "a") as f:
            f.write(json.dumps(rec) + "\n")
        shown = {k: v for k, v in fields.items() if not isinstance(v, (dict, list))}
        log(f"{self.server}/{self.app} r{self.round} {scenario}: {shown}")

    @property
    def proto(self):
        return "http" if self.server == "gunicorn" else "uwsgi"

    def render(self):
        self.d.mkdir(parents=True)
        (self.d / "nginx-tmp").mkdir()
        render_app(self.app, self.d, self.seed_db)
        self.ini.write_text(ini_text(self.server, self.app, self.d, self.a.processes))
        (self.d / "uwsgi_env").write_text(env_text(self.app, self.d))
        # As a site keeps it: the env file holds secrets.
        (self.d / "uwsgi_env").chmod(0o600)
        self.port = free_port()
        (self.d / "nginx.conf").write_text(nginx_conf(self.d, self.port, self.sock, self.proto))

    def server_argv(self):
        if self.server == "amy":
            return [str(self.a.amy_bin), "start", str(self.ini)]
        if self.server == "uwsgi":
            return [str(VENV / "bin" / "uwsgi"), "--ini", str(self.ini)]
        return [str(VENV / "bin" / "gunicorn"), "--workers", str(self.a.processes), "--worker-class", "sync",
                "--bind", f"unix:{self.sock}", "--pid", str(self.d / "app.pid"), "--chdir", str(self.d / "app"),
                APP_MODULE[self.app]]

    def server_env(self):
        env = dict(os.environ)
        if self.server == "gunicorn":
            # gunicorn has no for-readline: export the env file as a site would.
            env.update(parse_env_file(self.d / "uwsgi_env"))
        return env

    def start_nginx(self):
        with open(self.d / "nginx.out", "wb") as out:
            self.nginx = self.reaper.spawn(
                ["nginx", "-p", str(self.d), "-c", str(self.d / "nginx.conf"), "-g", "daemon off;"],
                stdout=out, stderr=subprocess.STDOUT)
        if not wait_until(lambda: http_status(self.port, timeout=0.5)[0] is not None, 10):
            raise RuntimeError(f"nginx did not answer on port {self.port} (see {self.d}/nginx-error.log)")

    def scenario_ready(self):
        (self.d / "command.txt").write_text(" ".join(self.server_argv()) + "\n")
        t0 = time.monotonic()
        with open(self.d / "server.log", "wb") as out:
            self.server_proc = self.reaper.spawn(self.server_argv(), cwd=self.d, env=self.server_env(),
                                                 stdout=out, stderr=subprocess.STDOUT)

        def ok():
            if not self.server_proc.alive():
                raise RuntimeError(f"{self.server} exited early (see {self.d}/server.log)")
            return http_status(self.port, timeout=2)[0] == 200

        if not wait_until(ok, self.a.ready_timeout):
            raise RuntimeError(f"{self.server} not ready in {self.a.ready_timeout}s (see {self.d}/server.log)")
        ready_ms = (time.monotonic() - t0) * 1e3
        n = self.a.processes
        all_up = wait_until(lambda: len(workers_of(self.server_proc.pid)) >= n, 30)
        self.emit("ready", ready_ms=round(ready_ms, 1), workers=len(workers_of(self.server_proc.pid)),
                  all_workers_up=bool(all_up), pid=self.server_proc.pid)

    def wrk(self, seconds):
        argv = ["wrk", "-t2", f"-c{self.a.conns}", f"-d{seconds}s", "--timeout", "10s", "--latency",
                f"http://127.0.0.1:{self.port}/"]
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=seconds + 30,
                           check=False)
        out = r.stdout.decode(errors="replace")
        with open(self.d / "wrk.log", "a") as f:
            f.write(out)
        return parse_wrk(out)

    def scenario_throughput(self):
        self.wrk(self.a.warmup)
        cpu = CpuMeter(self.our_pids())
        r = self.wrk(self.a.duration)
        r["errors"] = r.pop("non2xx") + r.pop("socket_errors")
        self.emit("throughput", **r, **cpu.done())

    def our_pids(self):
        pids = [self.nginx.pid, self.server_proc.pid]
        return pids + descendants(self.nginx.pid)[0] + descendants(self.server_proc.pid)[0]

    def scenario_memory(self):
        master = self.server_proc.pid
        workers = workers_of(master)
        rss = [status_kib(p, "VmRSS") or 0 for p in workers]
        pss = [pss_kib(p) or 0 for p in workers]
        desc = descendants(master)[0]
        self.emit("memory", master_rss_kib=status_kib(master, "VmRSS"), master_pss_kib=pss_kib(master),
                  workers=len(workers), workers_rss_kib=sum(rss), workers_pss_kib=sum(pss),
                  total_pss_kib=sum(pss_kib(p) or 0 for p in [master, *desc]), processes_in_tree=1 + len(desc))

    def scenario_direct(self):
        mode = "uwsgi" if self.proto == "uwsgi" else "http-unix"
        cpu = CpuMeter(self.our_pids())
        r = run_json([str(LOADGEN), "--mode", mode, "--target", str(self.sock), "--conns", str(self.a.conns),
                      "--duration", str(self.a.direct_duration), "--req-timeout", "10"],
                     timeout=self.a.direct_duration + 20, log_path=self.d / "loadgen.log")
        self.emit("direct", **r, **cpu.done())

    def settle(self, cap):
        """Waits until the worker set has been the same for 2 s; returns ms waited."""
        t0 = time.monotonic()
        last, since = None, time.monotonic()
        while time.monotonic() - t0 < cap:
            cur = workers_of(self.server_proc.pid)
            if cur != last:
                last, since = cur, time.monotonic()
            elif time.monotonic() - since >= 2.0 and len(cur) >= self.a.processes:
                return (time.monotonic() - t0) * 1e3, True
            time.sleep(0.05)
        return (time.monotonic() - t0) * 1e3, False

    def scenario_reload(self):
        argv = [str(LOADGEN), "--mode", "http", "--target", f"127.0.0.1:{self.port}", "--conns",
                str(self.a.conns), "--duration", str(self.a.reload_duration), "--req-timeout", "10",
                "--trigger-at", str(self.a.reload_at)]
        if self.server == "gunicorn":
            # gunicorn has no file watch: SIGHUP is its reload.
            argv += ["--trigger-cmd", f"kill -HUP {self.server_proc.pid}"]
            trigger = "SIGHUP"
        else:
            argv += ["--touch", str(self.ini)]
            trigger = "touch ini"
        before = workers_of(self.server_proc.pid)
        r = run_json(argv, timeout=self.a.reload_duration + 20, log_path=self.d / "loadgen.log")
        settle_ms, settled = self.settle(self.a.settle_cap)
        after = workers_of(self.server_proc.pid)
        self.emit("reload", trigger=trigger, workers_replaced=not (set(before) & set(after)),
                  settle_ms=round(settle_ms), settled=settled, **r)

    def scenario_shutdown(self):
        tree = [self.server_proc] + [Tracked(p) for p in descendants(self.server_proc.pid)[0]]
        self.reaper.adopt_tree(self.server_proc)
        t0 = time.monotonic()
        self.server_proc.signal(signal.SIGTERM)
        gone = wait_until(lambda: not any(t.alive() for t in tree), self.a.stop_timeout, 0.005)
        stop_ms = (time.monotonic() - t0) * 1e3
        code = self.server_proc.popen.poll()
        extra = {} if gone else {"still_running": [where(t.pid) for t in tree if t.alive()]}
        self.emit("shutdown", signal="SIGTERM", stop_ms=round(stop_ms, 1), all_gone=bool(gone), exit_code=code,
                  socket_left=self.sock.exists(), pidfile_left=(self.d / "app.pid").exists(), **extra)

    def execute(self):
        self.render()
        self.start_nginx()
        self.scenario_ready()
        self.scenario_throughput()
        self.scenario_memory()
        self.scenario_direct()
        self.scenario_reload()
        self.scenario_shutdown()

    def cleanup(self):
        self.reaper.stop_all()
        # Leave no socket behind, whoever forgot it (the figure was recorded above).
        if self.sock.is_socket():
            self.sock.unlink()
        shutil.rmtree(self.d / "nginx-tmp", ignore_errors=True)


# ---------------------------------------------------------------- summary

COLUMNS = [
    ("throughput", "rps", "req/s nginx"),
    ("throughput", "p99_ms", "p99 ms"),
    ("throughput", "errors", "errors"),
    ("throughput", "cpu_foreign_pct", "foreign CPU %"),
    ("direct", "rps", "direct req/s"),
    ("ready", "ready_ms", "ready ms"),
    ("memory", "master_rss_kib", "master RSS KiB"),
    ("memory", "workers_rss_kib", "workers RSS KiB"),
    ("memory", "workers_pss_kib", "workers PSS KiB"),
    ("reload", "errors", "reload failed"),
    ("reload", "window_max_ms", "reload max ms"),
    ("reload", "window_p99_ms", "reload p99 ms"),
    ("reload", "first_new_pid_ms", "touch→new pid ms"),
    ("reload", "longest_gap_ms", "longest gap ms"),
    ("shutdown", "stop_ms", "stop ms"),
]
RATIOS = [("throughput", "rps", "req/s nginx"), ("direct", "rps", "direct req/s"),
          ("memory", "master_rss_kib", "master RSS"), ("memory", "workers_pss_kib", "workers PSS"),
          ("reload", "window_max_ms", "reload max latency")]


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def summarize(paths):
    recs = []
    for p in paths:
        with open(p) as f:
            recs += [json.loads(line) for line in f if line.strip()]
    med = {}
    rounds = {}
    for r in recs:
        key = (r["server"], r["app"])
        if r["scenario"] == "error":
            rounds.setdefault(key, set())
            continue
        rounds.setdefault(key, set()).add(r["round"])
        for scen, field, _ in COLUMNS:
            if r["scenario"] == scen and r.get(field) is not None:
                med.setdefault((key, scen, field), []).append(r[field])
    medians = {k: statistics.median(v) for k, v in med.items()}
    errors = [r for r in recs if r["scenario"] == "error"]
    out = ["| server | app | rounds | " + " | ".join(c[2] for c in COLUMNS) + " |",
           "|---|---|---" + "|---" * len(COLUMNS) + "|"]
    order = {s: i for i, s in enumerate(SERVERS)}
    for key in sorted(rounds, key=lambda k: (k[1], order.get(k[0], 9), k[0])):
        cells = [fmt(medians.get((key, s, f))) for s, f, _ in COLUMNS]
        out.append(f"| {key[0]} | {key[1]} | {len(rounds[key])} | " + " | ".join(cells) + " |")
    apps = sorted({k[1] for k in rounds})
    ratio_lines = []
    for app in apps:
        parts = []
        for scen, field, label in RATIOS:
            a = medians.get((("amy", app), scen, field))
            u = medians.get((("uwsgi", app), scen, field))
            if a is not None and u:
                parts.append(f"{label} {a / u:.2f}×")
        if parts:
            ratio_lines.append(f"- amy/uwsgi, {app}: " + ", ".join(parts))
    if ratio_lines:
        out += ["", "Ratios of medians:"] + ratio_lines
    if errors:
        out += ["", "Failed runs:"] + [f"- {e['server']}/{e['app']} round {e['round']}: {e.get('error')}"
                                       for e in errors]
    return "\n".join(out)


# ---------------------------------------------------------------- main


def find_amy_bin(explicit):
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "release" / "amy-emperor"


def build(argv, what, timeout, env=None):
    log(f"building {what}: {' '.join(argv)}")
    r = subprocess.run(argv, cwd=ROOT, env=env, timeout=timeout, check=False)
    return r.returncode == 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "summarize":
        print(summarize(sys.argv[2:]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round, short durations")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--apps", default=",".join(APPS))
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--duration", type=float, help="wrk seconds (default 12, quick 5)")
    ap.add_argument("--amy-bin", help="amy-emperor binary (default: $CARGO_TARGET_DIR or target/ release build)")
    ap.add_argument("--no-build", action="store_true", help="never run cargo build for amy-emperor")
    ap.add_argument("--run-timeout", type=float, default=300, help="cap on one server x app x round, seconds")
    a = ap.parse_args()
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.warmup = 2 if a.quick else 3
    a.duration = int(a.duration or (5 if a.quick else 12))
    a.direct_duration = 5 if a.quick else 10
    # Long enough for a server that boots the new generation under load before it
    # switches (the window must close inside the run).
    a.reload_duration = 10 if a.quick else 15
    a.reload_at = 3
    a.settle_cap = 30 if a.quick else 70
    a.ready_timeout = 60
    a.stop_timeout = 30
    servers = [s for s in a.servers.split(",") if s]
    apps = [x for x in a.apps.split(",") if x]
    for s in servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s!r} (known: {', '.join(SERVERS)})")
    for x in apps:
        if x not in APPS:
            ap.error(f"unknown app {x!r} (known: {', '.join(APPS)})")
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            ap.error(f"{tool} not found (scripts/setup-test-deps.sh installs it)")

    WORK.mkdir(parents=True, exist_ok=True)
    if not LOADGEN.exists() or any(p.stat().st_mtime > LOADGEN.stat().st_mtime
                                   for p in (BENCH / "loadgen" / "src").iterdir()):
        env = dict(os.environ, CARGO_TARGET_DIR=str(LOADGEN_TARGET))
        if not build(["cargo", "build", "--release", "-q", "--manifest-path", "bench/loadgen/Cargo.toml"],
                     "loadgen", 600, env):
            log("loadgen did not build")
            return 1
    a.amy_bin = find_amy_bin(a.amy_bin)
    if "amy" in servers and not a.amy_bin.exists():
        if a.no_build or not build(["cargo", "build", "--release"], "amy-emperor", 1200):
            log(f"no amy-emperor binary at {a.amy_bin}: skipping amy")
            servers.remove("amy")
    for s, exe in (("uwsgi", VENV / "bin" / "uwsgi"), ("gunicorn", VENV / "bin" / "gunicorn")):
        if s in servers and not exe.exists():
            log(f"{exe} missing (scripts/setup-test-deps.sh): skipping {s}")
            servers.remove(s)

    py = str(VENV / "bin" / "python")
    seed_db = prepare_django_db(py) if "django" in apps else None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = WORK / f"results-{stamp}.jsonl"

    def on_alarm(signum, frame):
        raise RunTimeout()

    def on_stop(signum, frame):
        # Once: a second Ctrl-C (timeout(1) forwards one too) must not cut the cleanup.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGALRM, on_alarm)
    log(f"servers={servers} apps={apps} rounds={a.rounds} results={results}")
    interrupted = False
    for rnd in range(1, a.rounds + 1):
        for server in servers:
            for app in apps:
                run = Run(a, server, app, rnd, seed_db, results, stamp)
                signal.alarm(int(a.run_timeout))
                try:
                    run.execute()
                except (RunTimeout, RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
                    msg = "run timed out" if isinstance(e, RunTimeout) else str(e)
                    run.emit("error", error=msg)
                except KeyboardInterrupt:
                    run.emit("error", error="interrupted")
                    interrupted = True
                finally:
                    signal.alarm(0)
                    run.cleanup()
                if interrupted:
                    break
            if interrupted:
                break
        if interrupted:
            break
    print(f"\nResults: {results}\n")
    print(summarize([results]))
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
