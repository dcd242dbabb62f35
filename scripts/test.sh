#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need if missing,
# then runs the Rust tests (unit + integration with the real binary, real Python
# workers, real nginx and real uWSGI as the config oracle) and the Python
# worker's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-deps.sh
export AMY_TEST_PYTHON="$PWD/.venv-test/bin/python"
# The Python tests take the native module from the built binary's worker bundle.
export AMY_TEST_BINARY="${CARGO_TARGET_DIR:-$PWD/target}/debug/amy-emperor"
cargo build --quiet --all-targets
cargo test --no-fail-fast -- --test-threads="${AMY_TEST_THREADS:-4}"
"$AMY_TEST_PYTHON" -m pytest -q tests/python
