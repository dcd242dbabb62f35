#!/usr/bin/env bash
# The benchmark's one command: amy-emperor, uWSGI and gunicorn behind nginx.
#   bench/run.sh [--quick] [--servers amy,uwsgi,gunicorn] [--apps hello,django] [--rounds N]
# See bench/README.md. BENCH_TIMEOUT caps the whole run (seconds, default 2 h);
# each server x app x round is capped by --run-timeout (default 300 s).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv-test/bin/python
if [ ! -x "$py" ]; then
  echo "bench: $py missing; run scripts/setup-test-deps.sh first" >&2
  exit 1
fi
# SIGTERM first so bench.py stops its nginx and servers; SIGKILL 60 s later at worst.
exec timeout --kill-after=60 "${BENCH_TIMEOUT:-7200}" "$py" bench/bench.py "$@"
