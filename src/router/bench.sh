#!/bin/bash
# Router vs http-socket vs uWSGI's http router: hello app, 2 workers each,
# wrk keep-alive and Connection: close, interleaved rounds.
set -u
# Usage: cargo build --release; src/router/bench.sh   (needs wrk, the test venv)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
AMY=$REPO/target/release/amy-emperor
UWSGI=$REPO/.venv-test/bin/uwsgi
VENV=$REPO/.venv-test
D=${BENCH_DIR:-/tmp/rtbench}
mkdir -p $D
cp $REPO/tests/apps/hello.py $REPO/src/router/slowloris.py $D/
cd $D
cat > router.ini <<INI
[uwsgi]
chdir = $D
module = hello
home = $VENV
processes = 2
http = 127.0.0.1:19101
http-keepalive = 1
pidfile = $D/router.pid
logto = $D/router.log
disable-logging = true
INI
cat > direct.ini <<INI
[uwsgi]
chdir = $D
module = hello
home = $VENV
processes = 2
http-socket = 127.0.0.1:19102
pidfile = $D/direct.pid
logto = $D/direct.log
disable-logging = true
INI
$AMY start router.ini >/dev/null 2>&1 & P1=$!
$AMY start direct.ini >/dev/null 2>&1 & P2=$!
$UWSGI --master --processes 2 --wsgi-file hello.py --http 127.0.0.1:19103 --http-keepalive --http-auto-chunked --disable-logging --logto $D/uwsgi.log & P3=$!
sleep 4
run() { # name port extra-args...
  local name=$1 port=$2; shift 2
  local out; out=$(wrk -t1 -c${C:-32} -d${DUR:-5s} --latency --timeout 5s "$@" http://127.0.0.1:$port/ 2>&1)
  local rps p99 err
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  err=$(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr '\n' ' ')
  local idle; idle=$(awk '/^cpu / {print $5}' /proc/stat)
  echo "$name rps=$rps p99=$p99 load=$(cut -d" " -f1 /proc/loadavg) $err"
}
for round in 1 2 3; do
  for t in "router 19101" "direct 19102" "uwsgi 19103"; do
    set -- $t
    run "$1-ka" $2
    run "$1-close" $2 -H 'Connection: close'
  done
done
# slowloris: 300 trickling connections, then 5 s of normal close-per-request traffic
for t in "router 19101" "direct 19102" "uwsgi 19103"; do
  set -- $t
  python3 slowloris.py $2 300 12 & S=$!
  sleep 2
  C=8 run "$1-slowloris" $2 -H 'Connection: close'
  wait $S
done
kill -TERM $P1 $P2; kill -INT $P3; wait
