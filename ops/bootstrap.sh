#!/usr/bin/env bash
# Create .venv and install tierq into it (editable), with the extras named in $1 (e.g. "dev",
# or "a,b"). Skips the install when pyproject.toml has not changed since the last one and that
# one brought every extra asked for: the stamp records what is installed, so the tests' `dev`
# install also serves the demo, and running ./ops/demo.sh and ./ops/test.sh in turn installs
# nothing. An install keeps the extras already there (for the same pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
python="${PYTHON:-python3}"
"$python" - <<'PY' || { echo "tierq needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

[ -x .venv/bin/python ] || "$python" -m venv .venv
# The stamp: "<sha256 of pyproject.toml> <extras installed, comma-separated and sorted>".
stamp=".venv/.tierq-installed"
project="$(sha256sum pyproject.toml | cut -d' ' -f1)"
{ read -r stamped_project stamped_extras < "$stamp"; } 2>/dev/null || true
installed=""
[ "${stamped_project:-}" = "$project" ] && installed="${stamped_extras:-}"
# Extras as a sorted, comma-separated set: "dev", "a,b"; empty for none.
extras_set() { tr ', ' '\n\n' | sed '/^$/d' | sort -u | paste -sd, -; }
wanted="$(printf '%s' "$extras" | extras_set)"
needed="$(printf '%s,%s' "$installed" "$wanted" | extras_set)"
if [ "${stamped_project:-}" != "$project" ] || [ "$needed" != "$installed" ]; then
  target="."
  [ -n "$needed" ] && target=".[$needed]"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
  echo "$project $needed" > "$stamp"
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
