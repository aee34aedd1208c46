"""A UDP relay between one client and one server that drops and delays datagrams.

    python bench/lossy_relay.py --target HOST:PORT [--listen HOST:PORT] [--loss P] [--delay S] [--seed N]

Each datagram, either way, is dropped with probability ``--loss`` and otherwise
forwarded ``--delay`` seconds later (one-way; the RTT grows by twice that). It
prints ``READY <port>`` once bound and one JSON line of counters when stopped
(SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import select
import signal
import socket
import sys
import time
from typing import Any


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True)
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    ns = p.parse_args(argv)
    target = _addr(ns.target)
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (front, back):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        s.setblocking(False)
    front.bind(_addr(ns.listen))
    back.bind(("127.0.0.1", 0))
    rng = random.Random(ns.seed)
    queue: list[tuple[float, int, socket.socket, bytes, Any]] = []
    counts = {"forwarded": 0, "dropped": 0}
    client: Any = None
    stop = False
    seq = 0

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"READY {front.getsockname()[1]}", flush=True)
    while not stop:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, data, addr = heapq.heappop(queue)
            try:
                out.sendto(data, addr)
                counts["forwarded"] += 1
            except OSError:
                counts["dropped"] += 1
        timeout = max(0.0, queue[0][0] - now) if queue else 0.1
        readable, _, _ = select.select([front, back], [], [], min(timeout, 0.1))
        now = time.monotonic()
        for s in readable:
            for _ in range(512):
                try:
                    data, addr = s.recvfrom(65536)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                if s is front:
                    client = addr
                    out, dest = back, target
                elif client is not None:
                    out, dest = front, client
                else:
                    continue
                if rng.random() < ns.loss:
                    counts["dropped"] += 1
                    continue
                seq += 1
                heapq.heappush(queue, (now + ns.delay, seq, out, data, dest))
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
