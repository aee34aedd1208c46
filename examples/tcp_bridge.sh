#!/usr/bin/env bash
# A TCP service reached through uTP by two `twistd utp` forwarders, all on loopback:
#
#   TCP client -> [twistd utp: tcp -> utp] ~~ uTP ~~> [twistd utp: utp -> tcp] -> TCP service
#
# Usage: examples/tcp_bridge.sh      (uses .venv/bin/python if present, else $PYTHON or python3)
#
# On two real machines the same two commands expose, say, SSH over uTP:
#   server$ twistd -n utp --listen utp:6881 --connect tcp:127.0.0.1:22
#   client$ twistd -n utp --listen tcp:2222:interface=127.0.0.1 --connect utp:host=server.example:port=6881
#   client$ ssh -p 2222 localhost
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
TWISTD="$(dirname "$PYTHON")/twistd"
[[ -x "$TWISTD" ]] || TWISTD=twistd

work=$(mktemp -d)
pids=()
cleanup() {  # SIGTERM; what is still up after a second (lingering uTP sockets) gets SIGKILL
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 1
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {  # a free port number of the given socket type on 127.0.0.1
    "$PYTHON" -c "import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" "$1"
}
wait_for() {  # wait until file $1 contains $2
    for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; return 1
}

# The TCP service: a plain HTTP file server with one 2 MB file.
mkdir "$work/site"
head -c 2000000 /dev/urandom > "$work/site/file.bin"
service=$(free_port SOCK_STREAM)
"$PYTHON" -m http.server "$service" --bind 127.0.0.1 --directory "$work/site" > "$work/service.log" 2>&1 &
pids+=($!)

# Expose it over uTP ...
utp=$(free_port SOCK_DGRAM)
"$TWISTD" -n --pidfile= utp --listen "utp:$utp:interface=127.0.0.1" --connect "tcp:127.0.0.1:$service" \
    > "$work/expose.log" 2>&1 &
pids+=($!)
# ... and reach it from a local TCP port.
local=$(free_port SOCK_STREAM)
"$TWISTD" -n --pidfile= utp --listen "tcp:$local:interface=127.0.0.1" --connect "utp:host=127.0.0.1:port=$utp" \
    > "$work/reach.log" 2>&1 &
pids+=($!)
wait_for "$work/expose.log" "starting on $utp"
wait_for "$work/reach.log" "starting on $local"
wait_for "$work/service.log" "Serving HTTP"

echo "TCP service on port $service, exposed on uTP port $utp, reached on TCP port $local"
# A plain TCP HTTP client, through both forwarders.
"$PYTHON" - "$local" "$work/site/file.bin" <<'PY'
import hashlib, sys, time, urllib.request
port, path = sys.argv[1], sys.argv[2]
started = time.monotonic()
body = urllib.request.urlopen(f"http://127.0.0.1:{port}/file.bin", timeout=20).read()
elapsed = time.monotonic() - started
expected = open(path, "rb").read()
print(f"fetched {len(body)} bytes through TCP -> uTP -> TCP in {elapsed:.2f} s")
print("sha256 match" if hashlib.sha256(body).digest() == hashlib.sha256(expected).digest() else "sha256 MISMATCH")
sys.exit(0 if body == expected else 1)
PY
