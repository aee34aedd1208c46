"""A plain TCP bulk flow, the competitor in the LEDBAT benchmark.

    python -m bench.tcp_bulk recv PORT SECONDS
    python -m bench.tcp_bulk send HOST PORT SECONDS [CONGESTION_CONTROL]

The receiver accepts one connection and prints one JSON line: the bytes received
in each second of the run. The sender writes as fast as TCP lets it for SECONDS,
with the given congestion control (default ``cubic``, the loss-based algorithm
most TCP stacks use; BBR, this machine's default, keeps no standing queue and
loses to any flow that does).
"""

from __future__ import annotations

import json
import socket
import sys
import time


def main() -> int:
    mode = sys.argv[1]
    if mode == "recv":
        port, seconds = int(sys.argv[2]), float(sys.argv[3])
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", port))
        srv.listen(1)
        print("READY", flush=True)
        conn, _ = srv.accept()
        conn.settimeout(1.0)
        start = time.monotonic()
        per_second = [0] * int(seconds + 2)
        while time.monotonic() - start < seconds:
            try:
                data = conn.recv(1 << 20)
            except TimeoutError:
                continue
            if not data:
                break
            per_second[min(int(time.monotonic() - start), len(per_second) - 1)] += len(data)
        print(json.dumps({"per_second": per_second}), flush=True)
        return 0
    host, port, seconds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    algorithm = sys.argv[5] if len(sys.argv) > 5 else "cubic"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, algorithm.encode())
    sock.connect((host, port))
    chunk = b"t" * 65536
    end = time.monotonic() + seconds
    sent = 0
    with sock:
        while time.monotonic() < end:
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
    print(json.dumps({"sent": sent, "congestion_control": algorithm}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
