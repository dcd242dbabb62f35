#!/usr/bin/env bash
# Installs what the benchmark needs, idempotently, into a scratch area:
#   Debian packages (as root): nginx, wrk, gcc (uWSGI builds from its sdist), valgrind
#   bench/.work/venv-bench: the app venv every server runs with (uWSGI 2.0.31, gunicorn,
#   Granian, Django 5.2) plus what the report needs (matplotlib) and py-spy.
# Never touches .venv-test (the test suite's venv).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench/setup.sh: need root to apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" python3-dev >/dev/null
  # The package starts a system nginx on :80; the benchmark runs its own instances.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
  [ -f /run/nginx.pid ] && kill "$(cat /run/nginx.pid)" 2>/dev/null || true
fi

venv=bench/.work/venv-bench
# Bump the stamp when the pins change.
stamp=$venv/.deps-v1
if [ ! -f "$stamp" ]; then
  mkdir -p bench/.work
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "django>=5.2,<5.3" "uwsgi==2.0.31" "gunicorn==27.0.1" "granian==2.8.7" \
    "matplotlib>=3.8" "py-spy"
  touch "$stamp"
fi
echo "bench/setup.sh: ok ($("$venv/bin/python" -c 'import django,sys;print("python",sys.version.split()[0],"django",django.__version__)'); uwsgi $("$venv/bin/uwsgi" --version); $("$venv/bin/granian" --version 2>&1 | head -1))"
