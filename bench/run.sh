#!/usr/bin/env bash
# The benchmark's one command: installs what it needs (bench/setup.sh: nginx, wrk, and
# bench/.work/venv-bench with uWSGI, gunicorn, Granian, Django, matplotlib), builds
# amy-emperor and the load client, runs every server against the same apps behind the
# same nginx, and writes docs/benchmarks.md with its plots in docs/img/.
#   bench/run.sh [--quick] [--servers amy,uwsgi,gunicorn,granian,nginx] [--apps hello,django] [--rounds N]
# See bench/README.md. BENCH_TIMEOUT caps the whole run (seconds, default 2 h);
# each server x app x round is capped by --run-timeout (default 300 s).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
# What to expect (measured on 2 shared cores, 2026-12-02): setup from nothing ~3 min (pip
# builds uWSGI from its sdist), amy-emperor's release build ~5 min if target/release has
# none, then the measurements: bench.py prints its own estimate (full ~19 min, --quick ~9).
echo "bench/run.sh: setup first (from nothing: ~3 min, plus ~5 min for a first release build of amy-emperor)" >&2
bench/setup.sh
py=bench/.work/venv-bench/bin/python
export BENCH_SETUP_S=$(( $(date +%s) - t0 ))
# SIGTERM first so bench.py stops its nginx and servers; SIGKILL 60 s later at worst.
exec timeout --kill-after=60 "${BENCH_TIMEOUT:-7200}" "$py" bench/bench.py "$@"
