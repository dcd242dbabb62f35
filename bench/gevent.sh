#!/usr/bin/env bash
# gevent = N against uWSGI's gevent loop, behind the same nginx (uwsgi_pass to a
# unix socket), same app (tests/apps/geventapp.py), same venv (.venv-test, which
# has uWSGI 2.0.31 built with its gevent plugin, and gevent):
#   slow   /sleep?s=0.1        an app waiting 100 ms on an upstream (patched sleep)
#   stream /stream?n=10&...    a response streamed in 10 chunks 20 ms apart
#   lone   /                   LONE requests one at a time, 50 ms apart, on
#                              idle workers: the latency of one request (curl's
#                              time_total through nginx; p50 and p99 of them)
# Each round runs both servers once per app, interleaved; ROUNDS rounds (>= 3),
# DURATION seconds each, wrk with CONNS keep-alive connections to nginx.
# Prints one line per run and the medians. A measurement, not a test.
#
#   bench/gevent.sh [ROUNDS] [DURATION] [CONNS] [LONE]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
DURATION=${2:-10}
CONNS=${3:-200}
LONE=${4:-50}
PROCS=2
GREENLETS=100
VENV=$PWD/.venv-test
# The master is not on the request path (workers accept from nginx's socket
# themselves), so AMY_BIN=target/debug/amy-emperor measures the same thing.
BIN=${AMY_BIN:-$PWD/target/release/amy-emperor}
APPS=$PWD/tests/apps
W=$(mktemp -d /tmp/amy-gevent-bench.XXXXXX)
[ -x "$BIN" ] || cargo build --release -q
PORT=$((20000 + RANDOM % 10000))

cat >"$W/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $W/nginx.pid;
error_log $W/nginx.err warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $W/body; proxy_temp_path $W/proxy; fastcgi_temp_path $W/fcgi;
  uwsgi_temp_path $W/uwsgi; scgi_temp_path $W/scgi;
  server {
    listen 127.0.0.1:$PORT;
    location / { include /etc/nginx/uwsgi_params; uwsgi_pass unix:$W/app.sock; }
  }
}
EOF
/usr/sbin/nginx -c "$W/nginx.conf" -p "$W" &
NGINX=$!

cat >"$W/amy.ini" <<EOF
[uwsgi]
chdir = $APPS
module = geventapp
home = $VENV
master = true
processes = $PROCS
gevent = $GREENLETS
gevent-monkey-patch = true
socket = $W/app.sock
pidfile = $W/amy.pid
disable-logging = true
logto = $W/amy.log
EOF

SERVER=
start_server() {
  rm -f "$W/app.sock"
  case $1 in
    amy) "$BIN" start "$W/amy.ini" >/dev/null 2>&1 & SERVER=$! ;;
    # early: uWSGI's gevent-monkey-patch patches after the preload import, so
    # the app's `from time import sleep` would stay blocking there.
    uwsgi) "$VENV/bin/uwsgi" --master --processes $PROCS --gevent $GREENLETS \
             --gevent-early-monkey-patch --chdir "$APPS" --module geventapp \
             --home "$VENV" --socket "$W/app.sock" --disable-logging \
             --logto "$W/uwsgi.log" --die-on-term >/dev/null 2>&1 & SERVER=$! ;;
  esac
  for _ in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/" && return 0
    sleep 0.1
  done
  echo "gevent.sh: $1 did not come up" >&2
  return 1
}
stop_server() {
  kill -TERM "$SERVER" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
}
cleanup() { stop_server; kill "$NGINX" 2>/dev/null || true; wait "$NGINX" 2>/dev/null || true; }
trap cleanup EXIT

declare -A URIS=([slow]="/sleep?s=0.1" [stream]="/stream?n=10&pause=0.02&size=1024")
: >"$W/results"
# LONE sequential requests 50 ms apart: ms per request, sorted.
lone_run() {
  for _ in $(seq "$LONE"); do
    sleep 0.05
    curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$PORT/"
  done | awk '{printf "%.3f\n", $1 * 1000}' | sort -g
}
pct() { awk -v p="$1" '{x[NR]=$1} END {i=int(NR*p/100+0.5); if (i<1) i=1; print x[i]}'; }
for round in $(seq "$ROUNDS"); do
  for server in amy uwsgi; do
    start_server $server
    sleep 1  # every worker idle again after the readiness probes
    lat=$(lone_run)
    stop_server
    echo "round $round lone $server ok/s - p50 $(pct 50 <<<"$lat")ms p99 $(pct 99 <<<"$lat")ms" | tee -a "$W/results"
  done
  for app in slow stream; do
    for server in amy uwsgi; do
      start_server $server
      out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --timeout 10s --latency "http://127.0.0.1:$PORT${URIS[$app]}")
      stop_server
      # Only 2xx count: uWSGI's listen queue (100) overflows into nginx 502s.
      total=$(awk '/requests in/ {print $1}' <<<"$out")
      non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
      rps=$(awk -v t="$total" -v n="${non2xx:-0}" -v d="$DURATION" 'BEGIN {printf "%.1f", (t - n) / d}')
      p50=$(awk '$1=="50%" {print $2}' <<<"$out")
      p99=$(awk '$1=="99%" {print $2}' <<<"$out")
      errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
      echo "round $round $app $server ok/s $rps p50 $p50 p99 $p99 $errs" | tee -a "$W/results"
    done
  done
done
echo "medians of $ROUNDS rounds ($PROCS workers x $GREENLETS greenlets, wrk -c$CONNS -d${DURATION}s via nginx):"
to_ms() { awk '{v=$1; if (v ~ /ms$/) {sub(/ms$/,"",v); print v} else if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else {sub(/s$/,"",v); print v*1000}}'; }
for app in lone slow stream; do
  for server in amy uwsgi; do
    rows=$(awk -v a=$app -v s=$server '$3==a && $4==s' "$W/results")
    med() { sort -g | awk '{x[NR]=$1} END {print x[int((NR+1)/2)]}'; }
    rps=$(awk '{print $6}' <<<"$rows" | med)
    p50=$(awk '{print $8}' <<<"$rows" | to_ms | med)
    p99=$(awk '{print $10}' <<<"$rows" | to_ms | med)
    errs=$(awk '{for (i = 1; i <= NF; i++) if ($i == "responses:") n += $(i + 1)} END {print n + 0}' <<<"$rows")
    printf '%-7s %-6s %10s 2xx/s  p50 %8s ms  p99 %8s ms  (non-2xx in all rounds: %s)\n' "$app" "$server" "$rps" "$p50" "$p99" "$errs"
  done
done
rm -rf "$W"
