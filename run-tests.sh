#!/usr/bin/env bash
# Set up a virtualenv (.venv) with txutp and its test tools, then run lint, types, the docs build and tests.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# A strict editable install (a link tree in build/): the Twisted plugins (utp: endpoints, twistd utp) and
# utpcat work from any directory, as after `pip install .`; re-run after adding files. The warning filter
# silences setuptools' banner about editable installs.
PYTHONWARNINGS=ignore::UserWarning .venv/bin/python -m pip install --quiet -e '.[test,dev,docs]' \
    --config-settings editable_mode=strict
# The real uTP peers of the interop tests (npm utp-native, PyPI libtorrent); a peer that cannot be
# installed stops here with a message naming it (the interop tests would fail without it, never skip).
echo "== interop peers"; tests/peers/setup_peers.sh .venv/bin/python
echo "== ruff"; .venv/bin/python -m ruff check txutp tests bench examples docs
echo "== mypy"; .venv/bin/python -m mypy
echo "== docs"; .venv/bin/sphinx-build -W -E -q -b html docs docs/_build/html
echo "== tests"; exec .venv/bin/python -m pytest "$@"
