#!/usr/bin/env python3
"""Where a worker's request goes: one amy-emperor worker serving hello, profiled.

    bench/.work/venv-bench/bin/python bench/profile.py callgrind [--seconds 20] [--amy-bin P]
    bench/.work/venv-bench/bin/python bench/profile.py cprofile  [--seconds 10]
    bench/.work/venv-bench/bin/python bench/profile.py pyspy     [--seconds 10]

One worker (`processes = 1`) behind amy-emperor's master, loaded straight on its
socket by `bench/loadgen` (uwsgi protocol, nginx's vars, one request per
connection, 4 connections). The worker's interpreter is swapped for a wrapper
(`home =` points at a scratch venv whose `bin/python` execs the bench venv's
python under the tool), so the master, the contract and the worker source are the
real ones.

- callgrind: instructions per request (repeatable on a noisy machine: the figure
  for before/after). Instrumentation is switched on only around the load
  (`callgrind_control`), so start-up and import are not counted. Prints Ir per
  request and the top C functions by inclusive cost.
- cprofile: deterministic Python-level costs (a `sitecustomize` enables cProfile in
  the worker's main thread and dumps it after the load); prints per-call µs.
- pyspy: sampled Python stacks (py-spy from the bench venv), self time per function.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the harness's process helpers and paths)

SITE = '''import cProfile, os, threading, time, signal
_p = cProfile.Profile()
_out = os.environ["BENCH_CPROFILE_OUT"]
def _dump(*a):
    _p.disable()
    _p.dump_stats(_out + ".%d" % os.getpid())
signal.signal(signal.SIGUSR2, _dump)
_p.enable()
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tool", choices=("callgrind", "cprofile", "pyspy"))
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--amy-bin", default=str(bench.find_amy_bin(None)))
    ap.add_argument("--out", default=str(bench.WORK / "profile"))
    a = ap.parse_args()
    seconds = a.seconds or (20 if a.tool == "callgrind" else 10)
    out = Path(a.out) / f"{a.tool}-{time.strftime('%H%M%S')}"
    d = out / "run"
    (d / "app").mkdir(parents=True)
    shutil.copy(bench.BENCH / "apps" / "hello.py", d / "app" / "hello.py")
    real_py = bench.VENV / "bin" / "python"
    venv = d / "venv"
    (venv / "bin").mkdir(parents=True)
    extra_env = []
    if a.tool == "callgrind":
        cmd = (f'exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file={out}/callgrind.out.%p '
               f'-q {real_py} "$@"')
    else:
        cmd = f'exec {real_py} "$@"'
    if a.tool == "cprofile":
        (d / "site").mkdir()
        (d / "site" / "sitecustomize.py").write_text(SITE)
        extra_env = [f"env = PYTHONPATH={d / 'site'}", f"env = BENCH_CPROFILE_OUT={out}/cprofile.out"]
    wrapper = venv / "bin" / "python"
    wrapper.write_text(f"#!/bin/sh\n{cmd}\n")
    wrapper.chmod(0o755)
    ini = d / "amy_uwsgi.ini"
    ini.write_text("\n".join(["[uwsgi]", "master = true", "processes = 1", f"socket = {d}/app.sock",
                              f"pidfile = {d}/app.pid", f"home = {venv}", f"chdir = {d}/app",
                              "module = hello:application", "disable-logging = true", *extra_env]) + "\n")
    reaper = bench.Reaper()
    try:
        with open(d / "server.log", "wb") as log:
            master = reaper.spawn([a.amy_bin, "start", str(ini)], cwd=d, stdout=log, stderr=subprocess.STDOUT)
        ws = bench.wait_until(lambda: bench.workers_of(master.pid), 120, 0.1)
        if not ws or not bench.wait_until(lambda: (d / "app.sock").exists(), 60, 0.1):
            raise SystemExit(f"worker did not start (see {d}/server.log)")
        w = ws[0]
        # Warm-up (and readiness: the first answer).
        bench.run_json([str(bench.LOADGEN), "--mode", "uwsgi", "--target", str(d / "app.sock"), "--conns", "1",
                        "--duration", "3" if a.tool == "callgrind" else "1"], 60, out / "loadgen.log")
        if a.tool == "callgrind":
            subprocess.run(["callgrind_control", "--instr=on", str(w)], check=True, capture_output=True)
        spy = None
        if a.tool == "pyspy":
            spy = subprocess.Popen([str(bench.VENV / "bin" / "py-spy"), "record", "--pid", str(w), "--duration",
                                    str(int(seconds)), "--rate", "1000", "--format", "raw", "--nonblocking",
                                    "-o", str(out / "pyspy.txt")], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        r = bench.run_json([str(bench.LOADGEN), "--mode", "uwsgi", "--target", str(d / "app.sock"), "--conns",
                            str(a.conns), "--duration", str(seconds)], seconds + 60, out / "loadgen.log")
        n = r["ok"]
        print(f"requests served under the tool: {n} ({r['rps']} req/s)")
        if a.tool == "callgrind":
            subprocess.run(["callgrind_control", "--instr=off", str(w)], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "--dump", str(w)], check=True, capture_output=True)
            time.sleep(1)
            files = sorted(out.glob(f"callgrind.out.{w}*"), key=lambda p: p.stat().st_size)
            summary = summarize_callgrind(files[-1], n)
            print(summary)
            (out / "summary.txt").write_text(summary)
        elif a.tool == "cprofile":
            os.kill(w, signal.SIGUSR2)
            time.sleep(1)
            import pstats

            st = pstats.Stats(str(out / f"cprofile.out.{w}"))
            rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:25]
            lines = [f"{'µs/request self':>16} {'µs/request incl':>16} {'calls/req':>9}  function"]
            for (fn, line, name), (cc, nc, tt, ct, _) in rows:
                lines.append(f"{tt / n * 1e6:16.2f} {ct / n * 1e6:16.2f} {nc / n:9.2f}  {Path(fn).name}:{line} {name}")
            print("\n".join(lines))
            (out / "summary.txt").write_text("\n".join(lines) + "\n")
        else:
            spy.wait(timeout=seconds + 60)
            print(summarize_pyspy(out / "pyspy.txt"))
        json.dump(r, open(out / "load.json", "w"))
    finally:
        reaper.stop_all()
    print(f"output: {out}")


def summarize_callgrind(path, n):
    r = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=99", str(path)],
                       capture_output=True, text=True)
    lines = r.stdout.splitlines()
    total = None
    for line in lines:
        if "PROGRAM TOTALS" in line:
            total = int(line.split()[0].replace(",", ""))
    out = [f"instructions per request: {total / n:,.0f} (total {total:,} Ir over {n} requests)" if total else
           "no total"]
    body = [x for x in lines if x.strip() and x.lstrip()[0].isdigit() and "PROGRAM TOTALS" not in x][:30]
    out.append("top functions by self instructions (Ir per request):")
    for x in body:
        ir = int(x.split()[0].replace(",", ""))
        out.append(f"  {ir / n:10,.0f}  {x.split(None, 2)[-1][:110]}")
    return "\n".join(out)


def summarize_pyspy(path):
    """py-spy raw output: 'frame;frame;... count' lines. Self samples per leaf function."""
    self_s, total = {}, 0
    incl = {}
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        leaf = frames[-1]
        self_s[leaf] = self_s.get(leaf, 0) + c
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c
    out = [f"{total} samples; self % / inclusive % per function:"]
    for f, c in sorted(self_s.items(), key=lambda kv: -kv[1])[:25]:
        out.append(f"  {100 * c / total:5.1f}%  {100 * incl[f] / total:5.1f}%  {f[:120]}")
    return "\n".join(out)


if __name__ == "__main__":
    main()
