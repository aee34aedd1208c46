"""A ping-like delay probe over UDP: how much queueing delay a bulk flow adds.

    python -m bench.delay_probe echo PORT
    python -m bench.delay_probe probe HOST PORT SECONDS [--interval S]

``echo`` returns every datagram to its sender. ``probe`` sends a small
timestamped datagram every ``--interval`` (default 50 ms) for SECONDS and prints
one JSON line with the round-trip times (ms) of those that came back.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["echo", "probe"])
    p.add_argument("args", nargs="+")
    p.add_argument("--interval", type=float, default=0.05)
    ns = p.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if ns.mode == "echo":
        sock.bind(("0.0.0.0", int(ns.args[0])))
        print("READY", flush=True)
        while True:
            data, addr = sock.recvfrom(2048)
            sock.sendto(data, addr)
    host, port, seconds = ns.args[0], int(ns.args[1]), float(ns.args[2])
    rtts: list[float] = []
    end = time.monotonic() + seconds
    next_send = time.monotonic()
    sent = 0
    while time.monotonic() < end + 1.0:
        now = time.monotonic()
        if now >= next_send and now < end:
            sock.sendto(struct.pack("!d", now) + bytes(56), (host, port))
            sent += 1
            next_send += ns.interval
        r, _, _ = select.select([sock], [], [], max(0.0, min(next_send - time.monotonic(), 0.05)))
        if r:
            data, _ = sock.recvfrom(2048)
            (stamp,) = struct.unpack("!d", data[:8])
            rtts.append((time.monotonic() - stamp) * 1000)
    print(json.dumps({"sent": sent, "received": len(rtts), "rtt_ms": rtts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
