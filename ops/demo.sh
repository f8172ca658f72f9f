#!/usr/bin/env bash
# The demo, end to end: installs into .venv, then runs `tierq demo` (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
ops/bootstrap.sh
exec .venv/bin/tierq demo "$@"
