#!/usr/bin/env bash
# The test command: installs into .venv (with the dev extra), lints, type-checks, runs pytest,
# then smoke-runs the benchmarks and the profiler (that they run, not their figures).
# Tests start their own simulator and workers, and an embedded Redis when none answers at
# TIERQ_TEST_REDIS_URL (default redis://127.0.0.1:6379/15). Extra arguments go to pytest.
# Beware: the tests FLUSH that database when they start. By default that is database 15 of
# whatever Redis answers at 127.0.0.1:6379, yours included; point TIERQ_TEST_REDIS_URL at a
# database you can lose (TIERQ_TEST_REDIS_URL=redis://127.0.0.1:6379/9 ./ops/test.sh). The
# benchmark smoke runs then write (without flushing) to database 13 (TIERQ_BENCH_REDIS_URL;
# benchmarks.dropin's default is database 12, benchmarks.fairness's 11, which deletes only the
# keys of its own prefixes).
set -euo pipefail
cd "$(dirname "$0")/.."
ops/bootstrap.sh dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python ops/typecheck.py
.venv/bin/pytest "$@"
out="$(mktemp -d)"
.venv/bin/python -m benchmarks.throughput --quick --out "$out/throughput.json"
.venv/bin/python -m benchmarks.rate_limits --quick --out "$out/rate_limits.json"
.venv/bin/python -m benchmarks.dropin --quick --out "$out/dropin.json"
.venv/bin/python -m benchmarks.fairness --quick --out "$out/fairness.json"
.venv/bin/python -m benchmarks.spend --quick --out "$out/spend.json"
.venv/bin/python -m benchmarks.profile_worker --only tierq --latency-ms 0 --jobs 500 --out-dir "$out"
