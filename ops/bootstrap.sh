#!/usr/bin/env bash
# Create .venv and install tierq into it (editable), with the extras named in $1 (e.g. "dev").
# Skips the install when pyproject.toml has not changed since the last one.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
python="${PYTHON:-python3}"
"$python" - <<'PY' || { echo "tierq needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

[ -x .venv/bin/python ] || "$python" -m venv .venv
target="."
[ -n "$extras" ] && target=".[$extras]"
stamp=".venv/.tierq-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
  echo "$want" > "$stamp"
fi

# The dev extra's one non-Python tool: KEDA's CRD schemas for the manifest tests, from npm.
if [[ "$extras" == *dev* ]]; then
  if command -v npm >/dev/null 2>&1; then
    lock="ops/tools/package-lock.json"
    tools_stamp="ops/tools/node_modules/.tierq-installed"
    if [ "$(cat "$tools_stamp" 2>/dev/null)" != "$(sha256sum "$lock" | cut -d' ' -f1)" ]; then
      npm ci --prefix ops/tools --no-audit --no-fund --loglevel=error
      sha256sum "$lock" | cut -d' ' -f1 > "$tools_stamp"
    fi
  else
    echo "note: npm not found; the KEDA manifest check will be skipped" >&2
  fi
fi
