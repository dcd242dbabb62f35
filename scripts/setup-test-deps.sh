#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, idempotently:
# nginx (real uwsgi_pass peer), wrk (benchmark), and a Python venv at .venv-test
# holding Django (the small Django test app), uWSGI (the differential `--show-config`
# oracle and benchmark anchor), uwsgi-tools (`uwsgi_curl`, an independent uwsgi
# client), uwsgitop, gunicorn (benchmark anchor), pytest and prometheus-client
# (the real Prometheus text parser for tests/metrics.rs), gevent (tests/gevent.rs:
# `gevent = N` workers, and uWSGI's gevent loop as the benchmark anchor).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-test-deps: need root to apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The package starts a system nginx on :80; our tests run their own instances.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
  [ -f /run/nginx.pid ] && kill "$(cat /run/nginx.pid)" 2>/dev/null || true
fi

venv=.venv-test
stamp=$venv/.deps-v3
if [ ! -f "$stamp" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "django>=4.2,<6" "uwsgi==2.0.31" uwsgi-tools uwsgitop "gunicorn" pytest prometheus-client gevent
  touch "$stamp"
fi
echo "setup-test-deps: ok ($("$venv/bin/python" -c 'import django,sys;print("python",sys.version.split()[0],"django",django.__version__)'); uwsgi $("$venv/bin/uwsgi" --version))"
