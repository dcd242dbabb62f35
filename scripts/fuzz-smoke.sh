#!/usr/bin/env bash
# A short smoke of every fuzz target (about a minute of fuzzing in total), for
# .ci/run: the cargo-fuzz targets (ini reader, the expansion passes with the
# typed build, the env-file reader) over their seed corpus and every regression
# input, then the worker's parser fuzzer (tests/python/fuzz_parsers.py). Fails
# on any crash, hang (-timeout) or leak of the fuzzer's checks.
#
# Longer runs: FUZZ_SECONDS=600 scripts/fuzz-smoke.sh, or by hand:
#   cargo +nightly fuzz run -s none expand fuzz/corpus/expand -- -max_total_time=3600
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${FUZZ_SECONDS:-12}"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install --quiet cargo-fuzz
fi
# The env_file and expand targets write their input to a file per run: on a
# disk-backed /tmp that is ~8 ms a write (200 runs/s), on tmpfs 0.1 ms.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    export TMPDIR=/dev/shm
fi
work="$(mktemp -d /tmp/amy-fuzz-smoke.XXXXXX)"
trap 'rm -rf "$work"' EXIT
for target in ini_reader expand env_file; do
    # -s none: the targets are safe Rust; sanitizers would only slow the build.
    cargo +nightly fuzz build -s none "$target" >/dev/null
    mkdir -p "$work/$target"
    # Seeds and regressions are read, new inputs go to a scratch directory.
    rc=0
    cargo +nightly fuzz run -s none "$target" "$work/$target" "fuzz/corpus/$target" "fuzz/regressions/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$work/$target.log" 2>&1 || rc=$?
    grep -E "^stat::number_of_executed_units" "$work/$target.log" | sed "s/^/$target: /" || true
    if [ "$rc" -ne 0 ]; then
        tail -n 30 "$work/$target.log" >&2
        echo "fuzz target $target failed (exit $rc): the input is in fuzz/artifacts/$target/;" \
            "fix it and keep it in fuzz/regressions/$target/" >&2
        exit 1
    fi
done
python="${AMY_TEST_PYTHON:-$PWD/.venv-test/bin/python}"
"$python" tests/python/fuzz_parsers.py --seconds "$((SECONDS_PER_TARGET * 2))"
