#!/usr/bin/env python3
"""amy-emperor benchmark: amy-emperor, uWSGI, gunicorn and Granian side by side behind nginx.

Run through `bench/run.sh` (it installs what is missing with `bench/setup.sh`, picks the
bench venv's Python and puts a `timeout` on the whole run). Round by round, server by
server, app by app (interleaved, so slow drifts of a shared machine hit every server
alike) it renders a run folder under `bench/.work/runs/`, starts nginx and the server
there, and measures in this order:

  ready        launch -> first 200 through nginx (10 ms polls)
  throughput   wrk -t2 -c32 through nginx after an unreported warm-up; for the Django
               app also its heavier page (`/report/`, app "django-heavy")
  memory       RSS and PSS of the launched pid (the master) and of its whole tree
  idle         (right after ready, before any load) context switches of the master
               (all its threads) and of the workers over a few idle seconds
  direct       loadgen straight at the server's socket (uwsgi protocol; HTTP for
               gunicorn and Granian), one request per connection as nginx does
  http         (hello) wrk straight at the server's HTTP port: `http-socket` for
               amy-emperor and uWSGI, the bind of gunicorn and Granian, keep-alive
               asked for and not (`Connection: close`); and uWSGI's `http =` router
               (amy-emperor's once `check` accepts the key)
  reload       loadgen through nginx (keep-alive), the ini touched (gunicorn and
               Granian: SIGHUP) at 3 s; failed requests, max/p99 latency in the
               window, touch -> first answer from a new worker, longest gap
  shutdown     SIGTERM to the launched pid -> every process of its tree gone
  broken       on a fresh instance ("restart"), a release whose app raises at
               import, then the same trigger, under load: what the site answers

plus, once a round, nginx's own `return 200` (server "nginx", app "static"): the
ceiling of the nginx path on this machine.

Noise: every load measurement records the CPU the rest of the machine used
(`cpu_foreign_pct`). One above `--foreign-max` is marked `noisy`, repeated up to
`--retries` times, and if it stays noisy it is dropped from the medians (listed in the
report as dropped, never averaged in).

One JSON line per (server, app, round, scenario[, attempt]) goes to
`bench/.work/results-<timestamp>.jsonl`; `bench/report.py` turns it into
`docs/benchmarks.md` and its plots.

Only processes this script started are signalled, by pid, plus the descendants of
the server it launched (its workers), each checked against its /proc start time.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / ".work"
# The app venv of every server (bench/setup.sh): uWSGI, gunicorn, Granian, Django.
VENV = Path(os.environ.get("BENCH_VENV", WORK / "venv-bench"))
LOADGEN_TARGET = WORK / "target-loadgen"
LOADGEN = LOADGEN_TARGET / "release" / "loadgen"
UWSGI_PARAMS = "/etc/nginx/uwsgi_params"
SERVERS = ("amy", "uwsgi", "gunicorn", "granian")
# Variants of amy-emperor: amy-lazy and amy-check when its build has the feature (see
# `probe_features`); amy-pure always (the worker's request path without its native
# part, for the before/after of the same run).
VARIANTS = ("amy-lazy", "amy-check", "amy-pure")
# Variants measured on the headline scenarios (through nginx, direct) and only these.
HEADLINE_VARIANTS = ("amy-pure",)
# What amy-pure runs with: the master (and so every worker) without the native fast path.
PURE_ENV = {"AMY_EMPEROR_NO_NATIVE": "1"}
APPS = ("hello", "django")
# What each app is called in the ini, and where its code comes from.
APP_MODULE = {"hello": "hello:application", "django": "amyish.wsgi:application"}
# The file a broken release replaces, relative to the app folder.
APP_ENTRY = {"hello": "hello.py", "django": "amyish/wsgi.py"}
HEAVY_PATH = "/report/"
# Scenarios repeated when noisy (load measurements whose figure is req/s or latency).
MEASURED = ("throughput", "direct", "http")


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


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def role_of(pid):
    """What a process of a server's tree is, from its title: amy-emperor names each
    process (`amy-emperor worker 1 gen 1`, `amy-emperor template gen 1`, `amy-emperor
    router`), uWSGI too with `auto-procname` (`uWSGI worker 1`, `uWSGI http 1`).
    Anything else (gunicorn's and Granian's workers) is a worker when it is a leaf."""
    t = cmdline(pid)
    for prefix, role in (("amy-emperor worker", "worker"), ("amy-emperor template", "template"),
                         ("amy-emperor router", "router"), ("uWSGI worker", "worker"),
                         ("uWSGI http", "router")):
        if t.startswith(prefix):
            return role
    return None


def roles(pid):
    """{"worker": [...], "template": [...], "router": [...], "other": [...]} below `pid`.
    amy-emperor's template (the app imported once per generation, which forks the
    workers) is a leaf too: it must not be taken for a worker."""
    desc, children = descendants(pid)
    out = {"worker": [], "template": [], "router": [], "other": []}
    for p in desc:
        r = role_of(p)
        if r is None:
            r = "worker" if not children.get(p) else "other"
        out[r].append(p)
    return {k: sorted(v) for k, v in out.items()}


def workers_of(pid):
    """The processes under `pid` that serve requests (not a template, not a router)."""
    return roles(pid)["worker"]


def amy_status(amy_bin, ini, timeout=10):
    """`amy-emperor status --json`: the master's own word on which pid is a worker and
    which a template. None when it does not answer."""
    try:
        r = subprocess.run([str(amy_bin), "status", "--json", str(ini)], capture_output=True, timeout=timeout)
        return json.loads(r.stdout.decode()) if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


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


def pid_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime stime cutime cstime: reaped children (old workers) count too.
        return sum(int(x) for x in fields[11:15])
    except (OSError, IndexError, ValueError):
        return None


class CpuMeter:
    """Busy CPU of the whole machine and the share not used by this benchmark, so a
    run disturbed by other work on a shared machine can be spotted. `pids()` is
    asked again at the end: workers started meanwhile (a reload) are ours too."""

    def __init__(self, pids):
        self.pids = pids
        self.busy0, self.all0 = machine_busy_ticks()
        self.base = {p: pid_ticks(p) for p in pids()}
        self.children0 = self._children()

    @staticmethod
    def _children():
        t = os.times()
        return round((t.children_user + t.children_system) * CLK_TCK)

    def done(self):
        busy, allt = machine_busy_ticks()
        ours = self._children() - self.children0
        for p in set(self.pids()) | set(self.base):
            now = pid_ticks(p)
            if now is not None:
                ours += now - (self.base.get(p) or 0)
            else:
                # Reaped meanwhile (an old worker): its whole life is now in its
                # parent's cutime/cstime, which is ours too; take back what it had
                # before the measurement.
                ours -= self.base.get(p) or 0
        span = max(allt - self.all0, 1)
        return {"cpu_busy_pct": round(100 * (busy - self.busy0) / span, 1),
                "cpu_foreign_pct": round(max(0.0, 100 * (busy - self.busy0 - ours) / span), 1)}


def ctx_switches(pid):
    """Voluntary + involuntary context switches of every thread of `pid`."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


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
    r["read_errors"] = int(m.group(2)) if m else 0
    return r


def wrk_argv(url, conns, seconds, close=False):
    argv = ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    return argv + [url]


# ---------------------------------------------------------------- rendering


def is_amy(server):
    return server == "amy" or server.startswith("amy-")


def ini_text(server, app, d, a, ports):
    lines = [
        "[uwsgi]",
        "master = true",
        f"processes = {a.processes}",
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
    if "http_socket" in ports:
        lines.append(f"http-socket = 127.0.0.1:{ports['http_socket']}")
    if "http_router" in ports:
        lines.append(f"http = 127.0.0.1:{ports['http_router']}")
    if server == "uwsgi":
        # uWSGI reloads on a touch only when told to watch the file.
        lines.append(f"touch-reload = {d}/amy_uwsgi.ini")
        # Process titles (`uWSGI worker 1`, `uWSGI http 1`) so that its `http =` router
        # is not taken for a worker; amy-emperor names its processes by itself.
        lines.append("auto-procname = true")
    if server == "amy-lazy":
        lines.append("lazy-apps = true")
    if server == "amy-check":
        lines += ["reload-check = /", "reload-check-host = localhost"]
    return "\n".join(lines) + "\n"


def env_text(app, d):
    lines = ["# benchmark environment (AMY keeps its secrets here)", "BENCH_SECRET=never-in-a-log"]
    if app == "django":
        lines += ["DJANGO_SETTINGS_MODULE=amyish.settings", f"AMYISH_DB={d}/app/db.sqlite3"]
    return "\n".join(lines) + "\n"


def nginx_conf(d, port, upstream_kind, target):
    if upstream_kind == "uwsgi":
        upstream = f"uwsgi_pass unix:{target};\n            include {UWSGI_PARAMS};"
    elif upstream_kind == "static":
        upstream = 'default_type text/plain;\n            return 200 "Hello from nginx itself: the ceiling of this path.\\n";'
    else:
        # Plain proxy_pass as most sites run it: a new upstream connection per request.
        upstream = (
            f"proxy_pass http://{target};\n"
            "            proxy_set_header Host $host;"
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
    if app in ("hello", "static"):
        appdir.mkdir(parents=True)
        shutil.copy(BENCH / "apps" / "hello.py", appdir / "hello.py")
    else:
        shutil.copytree(BENCH / "apps" / "amyish", appdir, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
        shutil.copy(seed_db, appdir / "db.sqlite3")


BROKEN = '''"""A broken release: the benchmark's broken-release scenario put this in place."""

raise RuntimeError("broken release: this app fails at import")
'''


def parse_env_file(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def probe_features(amy_bin):
    """Which amy-emperor features this build has. A key: `check` on an ini holding it
    exits 0 and names it in no warning ("unknown key ... ignored", "not supported").
    Not with `strict = true`: uWSGI's strict mode rejects every key uWSGI does not
    know, amy-emperor's own `reload-check` included. Preload: a short start of hello
    with 2 workers shows a template process (`status --json` lists it under
    `templates`; its title says `template`)."""
    feats = {}
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        d = Path(tmp)
        (d / "app").mkdir()
        shutil.copy(BENCH / "apps" / "hello.py", d / "app" / "hello.py")
        base = ["[uwsgi]", f"socket = {d}/app.sock", f"home = {VENV}", f"chdir = {d}/app",
                "module = hello:application", "processes = 2", f"pidfile = {d}/app.pid"]
        for name, key, line in (("http_router", "http", "http = 127.0.0.1:18999"),
                                ("reload_check", "reload-check", "reload-check = /")):
            ini = d / f"{name}.ini"
            ini.write_text("\n".join(base + [line]) + "\n")
            try:
                r = subprocess.run([str(amy_bin), "check", str(ini)], capture_output=True, timeout=30)
                out = (r.stdout + r.stderr).decode(errors="replace")
            except (OSError, subprocess.SubprocessError) as e:
                r, out = None, str(e)
            named = any(f'"{key}"' in ln for ln in out.splitlines() if "warning" in ln)
            feats[name] = r is not None and r.returncode == 0 and not named
            feats[name + "_probe"] = {"exit": None if r is None else r.returncode, "output": out.strip()[-300:]}
        ini = d / "preload.ini"
        ini.write_text("\n".join(base) + "\n")
        reaper = Reaper()
        try:
            p = reaper.spawn([str(amy_bin), "start", str(ini)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=d)
            ws = wait_until(lambda: len(workers_of(p.pid)) >= 2 and workers_of(p.pid), 30, 0.05) or []
            st = amy_status(amy_bin, ini) or {}
            templates = [t.get("pid") for t in st.get("templates") or []]
            feats["preload"] = bool(ws) and (bool(templates) or bool(roles(p.pid)["template"]))
            feats["preload_probe"] = {"workers": len(ws), "status_templates": len(templates),
                                      "titled_templates": len(roles(p.pid)["template"])}
        finally:
            reaper.stop_all()
    return feats


# ---------------------------------------------------------------- plan


def plan_steps(server, app, rnd, a):
    """The scenarios of one server x app in round `rnd`. The headline ones (through
    nginx, direct; ready, memory and shutdown come with them) run every round; the
    others (idle, HTTP, reload, broken release, the lazy-apps and reload-check
    variants) in the first `--side-rounds` rounds only, so that 3 rounds of the
    headline fit in the time. [] means: this pair does not run."""
    side = rnd <= a.side_rounds
    if server == "nginx":
        return ["throughput"]
    if server in HEADLINE_VARIANTS:
        return ["ready", "throughput", "memory", "direct", "shutdown"] if app == "hello" else []
    if server in VARIANTS:
        # amy-lazy's start and memory differ from amy's every round; amy-check's do not.
        # "warm": a short load first, so that memory is taken after load as for amy.
        if not side:
            return ["ready", "warm", "memory", "shutdown"] if server == "amy-lazy" else []
        return ["ready", "warm", "memory", "reload", "shutdown", "restart", "broken"]
    steps = ["ready"] + (["idle"] if side else []) + ["throughput", "memory", "direct"]
    if side:
        # A broken release may leave no server at all (uWSGI, gunicorn): it comes
        # last, on a fresh instance, so the stop before it was of a healthy one.
        steps += ["http", "reload", "shutdown", "restart", "broken"]
    else:
        steps += ["shutdown"]
    return steps


def http_vias(server, app, a):
    if app != "hello" or server not in SERVERS:
        return []
    return ["http_socket"] + (["http_router"] if server == "uwsgi" or (
        server == "amy" and a.features.get("http_router")) else [])


def estimate_s(server, app, rnd, a):
    """Seconds one server x app of round `rnd` takes on a quiet machine, no repeats."""
    pages = 2 if app == "django" else 1
    start = 3.0 if app == "django" else 1.5
    cost = {"ready": start + 0.5, "restart": start + 0.5, "idle": 2 + a.idle_seconds + 0.3,
            "throughput": pages * (a.warmup + a.duration + 0.3), "warm": pages * (a.warmup + 1.2),
            "memory": 0.3,
            "direct": pages * (a.direct_duration + 0.3),
            "http": len(http_vias(server, app, a)) * (1 + 2 * a.http_duration + 0.6),
            "reload": a.reload_duration + 3.5, "shutdown": STOP_S.get(server, 0.5),
            # The instance a broken release leaves is stopped by the cleanup (5 s grace).
            "broken": a.broken_duration + 0.5 + min(5.0, STOP_S.get(server, 0.5))}
    steps = plan_steps(server, app, rnd, a)
    return (1.0 + sum(cost[s] for s in steps)) if steps else 0.0


# SIGTERM -> tree gone, seconds, as measured (Granian waits for its workers' own timeout).
STOP_S = {"uwsgi": 2.5, "gunicorn": 1.5, "granian": 9.0}


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
        self.ports = {}

    def emit(self, scenario, app=None, **fields):
        rec = {"server": self.server, "app": app or self.app, "round": self.round, "scenario": scenario,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields, "run_dir": str(self.d)}
        with open(self.results, "a") as f:
            f.write(json.dumps(rec) + "\n")
        shown = {k: v for k, v in fields.items() if not isinstance(v, (dict, list))}
        log(f"{self.server}/{app or self.app} r{self.round} {scenario}: {shown}")

    @property
    def proto(self):
        if self.server == "nginx":
            return "static"
        return "http" if self.server in ("gunicorn", "granian") else "uwsgi"

    def render(self):
        self.d.mkdir(parents=True)
        (self.d / "nginx-tmp").mkdir()
        self.port = free_port()
        if self.server == "nginx":
            (self.d / "nginx.conf").write_text(nginx_conf(self.d, self.port, "static", None))
            return
        render_app(self.app, self.d, self.seed_db)
        (self.d / "broken.py").write_text(BROKEN)
        for via in http_vias(self.server, self.app, self.a):
            self.ports[via] = free_port()
        if self.server == "granian":
            self.ports["http_socket"] = free_port()
        self.ini.write_text(ini_text(self.server, self.app, self.d, self.a, self.ports))
        (self.d / "uwsgi_env").write_text(env_text(self.app, self.d))
        # As a site keeps it: the env file holds secrets.
        (self.d / "uwsgi_env").chmod(0o600)
        target = f"127.0.0.1:{self.ports['http_socket']}" if self.server == "granian" else f"unix:{self.sock}:"
        (self.d / "nginx.conf").write_text(nginx_conf(self.d, self.port, self.proto, 
                                                      self.sock if self.proto == "uwsgi" else target))

    def server_argv(self):
        if is_amy(self.server):
            return [str(self.a.amy_bin), "start", str(self.ini)]
        if self.server == "uwsgi":
            return [str(VENV / "bin" / "uwsgi"), "--ini", str(self.ini)]
        if self.server == "granian":
            return [str(VENV / "bin" / "granian"), "--interface", "wsgi", "--workers", str(self.a.processes),
                    "--host", "127.0.0.1", "--port", str(self.ports["http_socket"]), "--no-ws",
                    "--working-dir", str(self.d / "app"), "--pid-file", str(self.d / "app.pid"),
                    "--no-access-log", APP_MODULE[self.app]]
        argv = [str(VENV / "bin" / "gunicorn"), "--workers", str(self.a.processes), "--worker-class", "sync",
                "--bind", f"unix:{self.sock}"]
        if "http_socket" in self.ports:
            argv += ["--bind", f"127.0.0.1:{self.ports['http_socket']}"]
        return argv + ["--pid", str(self.d / "app.pid"), "--chdir", str(self.d / "app"), APP_MODULE[self.app]]

    def server_env(self):
        env = dict(os.environ)
        if self.server in ("gunicorn", "granian"):
            # No for-readline there: export the env file as a site would.
            env.update(parse_env_file(self.d / "uwsgi_env"))
        # Every other server runs with the native path as built, whatever the caller has.
        for k in PURE_ENV:
            env.pop(k, None)
        if self.server == "amy-pure":
            env.update(PURE_ENV)
        return env

    def start_nginx(self):
        with open(self.d / "nginx.out", "wb") as out:
            self.nginx = self.reaper.spawn(
                ["nginx", "-p", str(self.d), "-c", str(self.d / "nginx.conf"), "-g", "daemon off;"],
                stdout=out, stderr=subprocess.STDOUT)
        if not wait_until(lambda: http_status(self.port, timeout=0.5)[0] is not None, 10):
            raise RuntimeError(f"nginx did not answer on port {self.port} (see {self.d}/nginx-error.log)")

    def scenario_ready(self, scenario="ready"):
        (self.d / "command.txt").write_text(" ".join(self.server_argv()) + "\n")
        t0 = time.monotonic()
        with open(self.d / "server.log", "ab") as out:
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
        # Workers only: amy-emperor's template is a leaf of the tree too.
        all_up = wait_until(lambda: len(workers_of(self.server_proc.pid)) >= n, 30, 0.005)
        all_ms = (time.monotonic() - t0) * 1e3 if all_up else None
        rs = roles(self.server_proc.pid)
        self.emit(scenario, ready_ms=round(ready_ms, 1), workers=len(rs["worker"]), templates=len(rs["template"]),
                  all_workers_up=bool(all_up), all_workers_ms=None if all_ms is None else round(all_ms, 1),
                  pid=self.server_proc.pid)

    def our_pids(self):
        pids = [self.nginx.pid] + descendants(self.nginx.pid)[0]
        if self.server_proc is not None:
            pids += [self.server_proc.pid] + descendants(self.server_proc.pid)[0]
        return pids

    def measured(self, scenario, app, fn):
        """Runs a load measurement; a noisy one (foreign CPU above the threshold) is
        recorded as such and repeated, at most --retries times."""
        for attempt in range(1, self.a.retries + 2):
            cpu = CpuMeter(self.our_pids)
            r = fn()
            r.update(cpu.done())
            noisy = r["cpu_foreign_pct"] > self.a.foreign_max
            self.emit(scenario, app=app, attempt=attempt, noisy=noisy, **r)
            if not noisy:
                return
            if time.monotonic() > self.a.round_deadline:
                log(f"{self.server}/{app} {scenario}: noisy, no time left in this round's budget to repeat it")
                return

    def wrk(self, url, seconds, close=False):
        argv = wrk_argv(url, self.a.conns, seconds, close)
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=seconds + 30,
                           check=False)
        out = r.stdout.decode(errors="replace")
        with open(self.d / "wrk.log", "a") as f:
            f.write(f"$ {' '.join(argv)}\n{out}\n")
        r = parse_wrk(out)
        # A read error is also how wrk sees a server that closes after each answer
        # without `Connection: close` (uWSGI's http-socket): counted apart, the answers
        # themselves were complete.
        r["errors"] = r.pop("non2xx") + r.pop("socket_errors") - r["read_errors"]
        return r

    def pages(self):
        return [(self.app, "/")] + ([("django-heavy", HEAVY_PATH)] if self.app == "django" else [])

    def scenario_throughput(self):
        for app, path in self.pages():
            url = f"http://127.0.0.1:{self.port}{path}"
            self.wrk(url, self.a.warmup)
            self.measured("throughput", app, lambda: self.wrk(url, self.a.duration))

    def amy_roles(self):
        """amy-emperor: which pid is a worker and which a template, as the master says
        (`status --json`), checked against the process titles `roles` reads."""
        rs = roles(self.server_proc.pid)
        if not is_amy(self.server):
            return rs, None
        st = amy_status(self.a.amy_bin, self.ini)
        if st is None:
            return rs, False
        ws = sorted(w["pid"] for w in st.get("workers") or [] if w.get("pid"))
        ts = sorted(t["pid"] for t in st.get("templates") or [] if t.get("pid"))
        match = ws == rs["worker"] and ts == rs["template"]
        if not match:
            log(f"{self.server}: status --json workers {ws} templates {ts}, titles say {rs}")
            rs = dict(rs, worker=ws, template=ts)
        return rs, match

    def scenario_warm(self):
        """Load without a figure (variants that skip throughput): the memory taken next
        is then after load, as for the servers measured after their throughput run."""
        for _, path in self.pages():
            self.wrk(f"http://127.0.0.1:{self.port}{path}", self.a.warmup + 1)

    def scenario_memory(self):
        """total = master + template + workers (uWSGI: master + workers, its master is
        the template); the `http =` router apart; `tree_*` is everything below the pid."""
        master = self.server_proc.pid
        rs, match = self.amy_roles()

        def rss(ps):
            return sum(status_kib(p, "VmRSS") or 0 for p in ps)

        def pss(ps):
            return sum(pss_kib(p) or 0 for p in ps)

        core = [master, *rs["template"], *rs["worker"]]
        tree = [master, *descendants(master)[0]]
        self.emit("memory", master_rss_kib=status_kib(master, "VmRSS"), master_pss_kib=pss_kib(master),
                  templates=len(rs["template"]), template_rss_kib=rss(rs["template"]) if rs["template"] else None,
                  template_pss_kib=pss(rs["template"]) if rs["template"] else None,
                  workers=len(rs["worker"]), workers_rss_kib=rss(rs["worker"]), workers_pss_kib=pss(rs["worker"]),
                  router_rss_kib=rss(rs["router"]) if rs["router"] else None,
                  router_pss_kib=pss(rs["router"]) if rs["router"] else None,
                  total_rss_kib=rss(core), total_pss_kib=pss(core),
                  tree_rss_kib=rss(tree), tree_pss_kib=pss(tree), processes_in_tree=len(tree),
                  roles_match_status=match)

    def scenario_idle(self):
        """Wake-ups with no traffic: what the master (and each idle worker) costs a
        machine that hosts many sites. Measured right after start, before any load
        (after a load run, Django workers are still busy with the backlog)."""
        # Roles first: `status --json` talks to the master, so not inside the window.
        rs, _ = self.amy_roles()
        time.sleep(2.0)
        master = self.server_proc.pid
        workers, templates = rs["worker"], rs["template"]

        def total(ps):
            v = [ctx_switches(p) for p in ps]
            return None if any(x is None for x in v) else sum(v)

        m0, t0_, w0 = ctx_switches(master), total(templates), {p: ctx_switches(p) for p in workers}
        t0 = time.monotonic()
        time.sleep(self.a.idle_seconds)
        span = time.monotonic() - t0
        m1, t1_ = ctx_switches(master), total(templates)
        w = [ctx_switches(p) - w0[p] for p in workers if w0.get(p) is not None and ctx_switches(p) is not None]
        mw = None if m0 is None or m1 is None else (m1 - m0) / span
        tw = (t1_ - t0_) / span if templates and t0_ is not None and t1_ is not None else None
        self.emit("idle", seconds=round(span, 2), master_wakeups_per_s=None if mw is None else round(mw, 1),
                  template_wakeups_per_s=None if tw is None else round(tw, 1),
                  supervisor_wakeups_per_s=None if mw is None else round(mw + (tw or 0), 1),
                  workers_wakeups_per_s=round(sum(w) / span, 1) if w else None, workers=len(w),
                  templates=len(templates))

    def direct_argv(self, path, seconds):
        if self.proto == "uwsgi":
            mode, target = "uwsgi", str(self.sock)
        elif self.server == "granian":
            mode, target = "http-close", f"127.0.0.1:{self.ports['http_socket']}"
        else:
            mode, target = "http-unix", str(self.sock)
        return [str(LOADGEN), "--mode", mode, "--target", target, "--conns", str(self.a.conns),
                "--duration", str(seconds), "--req-timeout", "10", "--path", path]

    def scenario_direct(self):
        for app, path in self.pages():
            argv = self.direct_argv(path, self.a.direct_duration)
            self.measured("direct", app, lambda: run_json(argv, timeout=self.a.direct_duration + 20,
                                                          log_path=self.d / "loadgen.log"))

    def scenario_http(self):
        """HTTP straight at the server (no nginx), hello only: the app does not matter here."""
        # Not `self.ports`: Granian's bind is there for every app (it is its only socket).
        targets = [(via, self.ports[via]) for via in http_vias(self.server, self.app, self.a)]
        for via, port in targets:
            url = f"http://127.0.0.1:{port}/"
            self.wrk(url, 1)
            for close in (False, True):
                self.measured(f"{via}_{'close' if close else 'ka'}", self.app,
                              lambda: self.wrk(url, self.a.http_duration, close))

    def settle(self, cap):
        """Waits until the worker set has been the same for 2 s; returns ms waited."""
        t0 = time.monotonic()
        last, since = None, time.monotonic()
        while time.monotonic() - t0 < cap:
            if not self.server_proc.alive():
                return (time.monotonic() - t0) * 1e3, False
            cur = workers_of(self.server_proc.pid)
            if cur != last:
                last, since = cur, time.monotonic()
            elif time.monotonic() - since >= 2.0 and len(cur) >= self.a.processes:
                return (time.monotonic() - t0) * 1e3, True
            time.sleep(0.05)
        return (time.monotonic() - t0) * 1e3, False

    def trigger(self, before=""):
        if self.server in ("gunicorn", "granian"):
            # No file watch there: SIGHUP is the reload.
            return f"{before}kill -HUP {self.server_proc.pid}", "SIGHUP"
        return f"{before}touch {self.ini}", "touch ini"

    def reload_like(self, scenario, duration, at, before=""):
        cmd, how = self.trigger(before)
        argv = [str(LOADGEN), "--mode", "http", "--target", f"127.0.0.1:{self.port}", "--conns",
                str(self.a.conns), "--duration", str(duration), "--req-timeout", "10",
                "--trigger-at", str(at), "--trigger-cmd", cmd, "--timeline-ms", "100"]
        before_pids = workers_of(self.server_proc.pid)
        cpu = CpuMeter(self.our_pids)
        r = run_json(argv, timeout=duration + 20, log_path=self.d / "loadgen.log")
        r.update(cpu.done())
        r["noisy"] = r["cpu_foreign_pct"] > self.a.foreign_max_reload
        return r, how, before_pids

    def scenario_reload(self):
        r, how, before = self.reload_like("reload", self.a.reload_duration, self.a.reload_at)
        settle_ms, settled = self.settle(self.a.settle_cap)
        after = workers_of(self.server_proc.pid)
        self.emit("reload", trigger=how, workers_replaced=not (set(before) & set(after)),
                  settle_ms=round(settle_ms), settled=settled, **r)

    def scenario_broken(self):
        entry = self.d / "app" / APP_ENTRY[self.app]
        r, how, before = self.reload_like("broken", self.a.broken_duration, 2,
                                          before=f"cp {self.d / 'broken.py'} {entry} && ")
        alive = self.server_proc.alive()
        status, pid = http_status(self.port, timeout=5)
        tail = [b for b in r.get("timeline", []) if b[0] >= (self.a.broken_duration - 2 - 2) * 1000]
        self.emit("broken", trigger=f"app raises at import, then {how}", server_alive=alive,
                  status_after=status, old_pid_after=pid in before if pid else None,
                  ok_last_2s=sum(b[1] for b in tail), failed_last_2s=sum(b[2] for b in tail), **r)

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
        # Recorded; now out of the way of the restart.
        if self.sock.is_socket():
            self.sock.unlink()

    def execute(self):
        steps = plan_steps(self.server, self.app, self.round, self.a)
        self.render()
        self.start_nginx()
        if self.server == "nginx":
            self.server_proc = None
        for step in steps:
            if step == "restart":
                self.scenario_ready("restart")
            else:
                getattr(self, f"scenario_{step}")()

    def cleanup(self):
        self.reaper.stop_all()
        # Leave no socket behind, whoever forgot it (the figure was recorded above).
        if self.sock.is_socket():
            self.sock.unlink()
        shutil.rmtree(self.d / "nginx-tmp", ignore_errors=True)


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


def first_line(argv):
    try:
        r = subprocess.run(argv, capture_output=True, timeout=30)
        out = (r.stdout + r.stderr).decode(errors="replace").strip().splitlines()
        return out[0] if out else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_info(a):
    """The machine and every version, for the report's first table."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = status_kib_meminfo()
    py = str(VENV / "bin" / "python")
    git = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem / 1048576, 1) if mem else None,
        "kernel": platform.release(), "os": first_line(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
        "python": first_line([py, "-c", "import sys; print(sys.version.split()[0])"]),
        "django": first_line([py, "-c", "import django; print(django.__version__)"]),
        "uwsgi": first_line([str(VENV / "bin" / "uwsgi"), "--version"]),
        "gunicorn": first_line([str(VENV / "bin" / "gunicorn"), "--version"]),
        "granian": first_line([str(VENV / "bin" / "granian"), "--version"]),
        "nginx": first_line(["nginx", "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "amy_emperor": first_line([str(a.amy_bin), "--version"]),
        "commit": git + ("+local changes" if dirty not in ("", "?") else ""),
    }


def status_kib_meminfo():
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round, short durations, report in bench/.work/report")
    ap.add_argument("--servers", default=",".join(SERVERS) + ",nginx",
                    help="amy,uwsgi,gunicorn,granian and nginx (the return-200 ceiling)")
    ap.add_argument("--apps", default=",".join(APPS))
    ap.add_argument("--rounds", type=int, help="rounds of the headline scenarios (default 3, quick 1)")
    ap.add_argument("--side-rounds", type=int,
                    help="rounds (the first ones) that also run idle, HTTP, reload, broken release and the "
                         "lazy-apps / reload-check variants (default 1)")
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--duration", type=float, help="wrk seconds (default 6, quick 4)")
    ap.add_argument("--total", type=float, default=1560,
                    help="seconds the whole command aims at, setup and builds included (default 26 min): the "
                         "rounds' budget is what setup and builds left, never less than the estimate")
    ap.add_argument("--budget", type=float,
                    help="seconds for all rounds (default: from --total; quick: the estimate + 1 min): a round "
                         "past its share (by the estimate) repeats no noisy measurement, so a busy machine cannot "
                         "stretch the command")
    ap.add_argument("--foreign-max", type=float, default=20.0,
                    help="a load measurement whose foreign CPU %% is above this is noisy (default 20)")
    ap.add_argument("--foreign-max-reload", type=float, default=50.0,
                    help="a reload or broken-release run above this foreign CPU %% is dropped (default 50)")
    ap.add_argument("--retries", type=int, default=2, help="repeats of a noisy measurement (default 2)")
    ap.add_argument("--no-variants", action="store_true", help="skip amy-lazy / amy-check / amy-pure")
    ap.add_argument("--amy-bin", help="amy-emperor binary (default: $CARGO_TARGET_DIR or target/ release build)")
    ap.add_argument("--no-build", action="store_true", help="never run cargo build for amy-emperor")
    ap.add_argument("--run-timeout", type=float, default=300, help="cap on one server x app x round, seconds")
    ap.add_argument("--report-dir", help="where benchmarks.md and img/ go (default docs/, quick bench/.work/report)")
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.side_rounds = min(a.rounds, a.side_rounds if a.side_rounds is not None else 1)
    a.warmup = 1 if a.quick else 2
    a.duration = int(a.duration or (4 if a.quick else 6))
    a.direct_duration = 3 if a.quick else 5
    a.http_duration = 3 if a.quick else 4
    a.idle_seconds = 2 if a.quick else 3
    # Long enough for a server that boots the new generation under load before it
    # switches (the window must close inside the run).
    a.reload_duration = 8 if a.quick else 12
    a.reload_at = 3
    a.broken_duration = 6 if a.quick else 7
    a.settle_cap = 30 if a.quick else 70
    a.ready_timeout = 60
    a.stop_timeout = 30
    # run.sh measures bench/setup.sh and passes it on, so the wall time is the command's.
    a.setup_s = float(os.environ.get("BENCH_SETUP_S") or 0)
    a.build_s = None
    report_dir = Path(a.report_dir) if a.report_dir else (WORK / "report" if a.quick else ROOT / "docs")
    servers = [s for s in a.servers.split(",") if s]
    apps = [x for x in a.apps.split(",") if x]
    for s in servers:
        if s not in SERVERS + VARIANTS + ("nginx",):
            ap.error(f"unknown server {s!r} (known: {', '.join(SERVERS + VARIANTS + ('nginx',))})")
    for x in apps:
        if x not in APPS:
            ap.error(f"unknown app {x!r} (known: {', '.join(APPS)})")
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            ap.error(f"{tool} not found (bench/setup.sh installs it)")

    t_start = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    if not LOADGEN.exists() or any(p.stat().st_mtime > LOADGEN.stat().st_mtime
                                   for p in (BENCH / "loadgen" / "src").iterdir()):
        env = dict(os.environ, CARGO_TARGET_DIR=str(LOADGEN_TARGET))
        if not build(["cargo", "build", "--release", "-q", "--manifest-path", "bench/loadgen/Cargo.toml"],
                     "loadgen", 600, env):
            log("loadgen did not build")
            return 1
    explicit_bin = bool(a.amy_bin)
    a.amy_bin = find_amy_bin(a.amy_bin)
    # Always (unless told which binary): a release binary left from an older commit
    # would be measured as this one. Up to date, cargo answers in a second or two.
    if any(is_amy(s) for s in servers) and not a.no_build and not explicit_bin:
        t_build = time.monotonic()
        if not build(["cargo", "build", "--release", "-q"], "amy-emperor", 1500):
            log("amy-emperor did not build")
            return 1
        a.build_s = round(time.monotonic() - t_build, 1)
    if not a.amy_bin.exists():
        log(f"no amy-emperor binary at {a.amy_bin}: skipping amy")
        servers = [s for s in servers if not is_amy(s)]
    for s, exe in (("uwsgi", "uwsgi"), ("gunicorn", "gunicorn"), ("granian", "granian")):
        if s in servers and not (VENV / "bin" / exe).exists():
            log(f"{VENV / 'bin' / exe} missing (bench/setup.sh): skipping {s}")
            servers.remove(s)
    a.features = probe_features(a.amy_bin) if a.amy_bin.exists() else {}
    if "amy" in servers and not a.no_variants:
        if a.features.get("preload") and "amy-lazy" not in servers:
            servers.append("amy-lazy")
        if a.features.get("reload_check") and "amy-check" not in servers:
            servers.append("amy-check")
        if "amy-pure" not in servers:
            servers.append("amy-pure")

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

    interrupted = False
    app_servers = [s for s in servers if s != "nginx"]

    def round_plan(rnd):
        # Rotate the order each round so no server always runs first (or last).
        k = (rnd - 1) % max(1, len(app_servers))
        order = app_servers[k:] + app_servers[:k]
        plan = ([("nginx", "static")] if "nginx" in servers else []) + [(s, x) for s in order for x in apps]
        return [(s, x) for s, x in plan if plan_steps(s, x, rnd, a)]

    est = [sum(estimate_s(s, x, rnd, a) for s, x in round_plan(rnd)) for rnd in range(1, a.rounds + 1)]
    used = a.setup_s + (time.monotonic() - t_start)
    if a.budget is None:
        # --quick is a smoke run: a minute of repeats at most.
        a.budget = sum(est) + 60 if a.quick else max(sum(est), a.total - used)
    log(f"estimate: {sum(est) / 60:.1f} min of measurements on a quiet machine (rounds: "
        f"{', '.join(f'{e / 60:.1f}' for e in est)} min; each noisy repeat adds its length), budget "
        f"{a.budget / 60:.1f} min, side scenarios in {a.side_rounds} of {a.rounds} rounds; setup and builds took "
        f"{used / 60:.1f} min, so the command should end in about {(used + sum(est)) / 60:.1f} min")
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGALRM, on_alarm)
    meta = {"scenario": "meta", "server": "-", "app": "-", "round": 0, "argv": sys.argv[1:],
            "command": "bench/run.sh " + " ".join(sys.argv[1:]), "servers": servers, "apps": apps,
            "rounds": a.rounds, "side_rounds": a.side_rounds, "processes": a.processes, "conns": a.conns, "durations": {
                "warmup": a.warmup, "wrk": a.duration, "direct": a.direct_duration, "http": a.http_duration,
                "idle": a.idle_seconds, "reload": a.reload_duration, "reload_at": a.reload_at,
                "broken": a.broken_duration},
            "foreign_max": a.foreign_max, "foreign_max_reload": a.foreign_max_reload, "retries": a.retries,
            "budget_s": a.budget,
            "estimate_s": round(sum(est)), "total_s": a.total, "features": a.features,
            "machine": machine_info(a), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(results, "a") as f:
        f.write(json.dumps(meta) + "\n")
    log(f"servers={servers} apps={apps} rounds={a.rounds} features="
        f"{ {k: v for k, v in a.features.items() if not k.endswith('_probe')} } results={results}")
    t_rounds = time.monotonic()
    for rnd in range(1, a.rounds + 1):
        # A round's share of the budget follows its estimated length.
        a.round_deadline = t_rounds + a.budget * sum(est[:rnd]) / max(sum(est), 1.0)
        t_round = time.monotonic()
        for server, app in round_plan(rnd):
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
        log(f"round {rnd} took {(time.monotonic() - t_round) / 60:.1f} min (estimate {est[rnd - 1] / 60:.1f})")
        if interrupted:
            break
    with open(results, "a") as f:
        f.write(json.dumps({"scenario": "meta_end", "server": "-", "app": "-", "round": 0,
                            "wall_s": round(time.monotonic() - t_start + a.setup_s, 1),
                            "bench_s": round(time.monotonic() - t_start, 1), "setup_s": a.setup_s,
                            "estimate_s": round(sum(est)), "build_s": a.build_s,
                            "rounds_s": round(time.monotonic() - t_rounds, 1),
                            "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    print(f"\nResults: {results}\n")
    if not a.no_report:
        sys.path.insert(0, str(BENCH))
        import report

        md = report.generate([results], report_dir)
        print(f"Report: {md}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
