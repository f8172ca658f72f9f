#!/usr/bin/env bash
# The demo, end to end: installs into .venv, then runs `tierq demo` (see README). An install
# already there serves it, the tests' `dev` one included (ops/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ops/bootstrap.sh
exec .venv/bin/tierq demo "$@"
