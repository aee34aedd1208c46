#!/usr/bin/env bash
# Set up a virtualenv (.venv) with txutp and its test tools, then run lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,dev]'
echo "== ruff"; .venv/bin/python -m ruff check txutp tests bench
echo "== mypy"; .venv/bin/python -m mypy
echo "== tests"; exec .venv/bin/python -m pytest "$@"
