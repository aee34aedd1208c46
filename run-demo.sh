#!/usr/bin/env bash
# Set up a virtualenv (.venv) with txutp, then show uTP at work on loopback:
#   1. utpcat: a server and a client exchange files over one uTP connection (both ways, sha256-checked);
#   2. twistd serves a directory over uTP (`twistd web --listen utp:...`) and twisted.web's Agent,
#      dialling uTP, fetches a page and a file from it.
# Re-running reuses .venv. Needs Python >= 3.10 with venv, and access to PyPI.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [[ -n "${TXUTP_DEMO_BIN:-}" ]]; then
    BIN=$TXUTP_DEMO_BIN  # (for tests/test_docs.py: an environment that already has txutp, no setup)
else
    if [[ ! -x .venv/bin/python ]]; then
        echo "== setting up .venv"
        "$PY" -m venv .venv
    fi
    # A strict editable install: txutp and its Twisted plugins (the utp: endpoints, `twistd utp`) work from
    # any directory, as after a plain `pip install .`, while edits to the checkout show through.
    export PYTHONWARNINGS=ignore::UserWarning  # setuptools' banner about editable installs
    .venv/bin/python -m pip install --quiet --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet --quiet -e . --config-settings editable_mode=strict
    unset PYTHONWARNINGS
    BIN=$PWD/.venv/bin
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_for() {  # wait until file $1 matches the regular expression $2
    for _ in $(seq 200); do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "timed out waiting for '$2' in $1:" >&2
    cat "$1" >&2
    return 1
}
sha() { sha256sum "$1" | cut -d' ' -f1; }
check() {  # check SENT RECEIVED: print sizes and hashes; fail on a mismatch
    local a b
    a=$(sha "$1")
    b=$(sha "$2")
    printf '  %-14s %9d bytes  sha256 %s\n' "$(basename "$1")" "$(stat -c %s "$1")" "$a"
    printf '  %-14s %9d bytes  sha256 %s\n' "$(basename "$2")" "$(stat -c %s "$2")" "$b"
    if [[ "$a" == "$b" ]]; then echo "  match"; else echo "  MISMATCH" >&2; return 1; fi
}

echo "== txutp demo on loopback ($("$BIN/python" -c 'import sys, twisted, txutp; print(f"Python {sys.version.split()[0]}, Twisted {twisted.__version__}, txutp {txutp.__version__}")'))"

echo
echo "-- 1. utpcat: 20 MiB to a server and 5 MiB back, over one uTP connection"
head -c $((20 * 1024 * 1024)) /dev/urandom > "$work/upload.bin"
head -c $((5 * 1024 * 1024)) /dev/urandom > "$work/reply.bin"
echo "\$ utpcat -v -l -s 127.0.0.1 0 < reply.bin > uploaded.bin          # the server, in the background"
"$BIN/utpcat" -v -l -s 127.0.0.1 0 < "$work/reply.bin" > "$work/uploaded.bin" 2> "$work/server.log" &
server=$!
pids+=("$server")
wait_for "$work/server.log" "listening on .*:[0-9]+"
port=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$work/server.log")
echo "\$ utpcat -v 127.0.0.1 $port < upload.bin > replied.bin"
"$BIN/utpcat" -v 127.0.0.1 "$port" < "$work/upload.bin" > "$work/replied.bin"
wait "$server"
echo "(the server's side)"
cat "$work/server.log"
check "$work/upload.bin" "$work/uploaded.bin"
check "$work/reply.bin" "$work/replied.bin"

echo
echo "-- 2. twistd web over uTP, fetched with twisted.web's Agent over uTP"
mkdir "$work/site"
echo "<h1>hello over uTP</h1>" > "$work/site/index.html"
head -c $((10 * 1024 * 1024)) /dev/urandom > "$work/site/file.bin"
port=$("$BIN/python" -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
echo "\$ twistd -n web --listen utp:$port:interface=127.0.0.1 --path SITE   # in the background"
(cd "$work" && exec "$BIN/twistd" -n --pidfile= web --listen "utp:$port:interface=127.0.0.1" --path site) \
    > "$work/twistd.log" 2>&1 &
pids+=($!)
wait_for "$work/twistd.log" "Site starting on $port"
grep -E "Site starting on|Starting reactor" "$work/twistd.log" | sed 's/^[^[]*/  /'
echo "\$ python examples/http_client.py http://127.0.0.1:$port/index.html"
"$BIN/python" examples/http_client.py "http://127.0.0.1:$port/index.html"
echo "\$ python examples/http_client.py http://127.0.0.1:$port/file.bin"
"$BIN/python" examples/http_client.py "http://127.0.0.1:$port/file.bin" | tee "$work/fetch.txt"
if grep -q "sha256 $(sha "$work/site/file.bin")" "$work/fetch.txt"; then
    echo "  file.bin: sha256 match"
else
    echo "  file.bin: sha256 MISMATCH" >&2
    exit 1
fi

echo
echo "demo OK. Next: README.md (swap TCP for uTP in your program), examples/, docs/, ./run-tests.sh"
