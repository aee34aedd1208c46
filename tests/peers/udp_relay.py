#!/usr/bin/env python3
"""A lossy UDP relay between one client and one server, for loss tests on loopback.

    udp_relay.py --target HOST:PORT [--listen HOST:PORT] [--drop P] [--reorder P] [--seed N]
                 [--duration S] [--drop-once] [--log FILE]

Datagrams from the first address that sends to the listen port (the client) go
to the target (the server); datagrams from the target go back to that client.
Each datagram, either way, is dropped with probability ``--drop``; a datagram
is held back and sent after the next one with probability ``--reorder``. The
random choices are seeded (``--seed``). It prints ``READY <port>`` once bound,
and at exit (SIGTERM, SIGINT or ``--duration``) one JSON line of counters.
With ``--drop-once`` a uTP DATA or FIN packet is dropped at most once per
sequence number and direction: its retransmission always gets through. A peer
that gives up on a packet after a few transmissions (libtorrent closes the
connection with "timed out" once the oldest unacknowledged packet was sent
``utp_num_resends`` = 3 times, even when only its ACKs were lost) is then not
made to fail by the relay's dice; loss recovery is still exercised on every
dropped packet. ``--log FILE`` writes one line per datagram: time, direction, fate (``fwd``,
``DROP``, ``HOLD``) and the decoded uTP header (type, connection id, seq, ack,
window, payload length, SACK bitmask).
"""

from __future__ import annotations

import argparse
import json
import random
import select
import signal
import socket
import sys
import time
from typing import Any


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


TYPES = {0: "DATA", 1: "FIN", 2: "STATE", 3: "RESET", 4: "SYN"}


def describe(data: bytes) -> str:
    """A uTP header in one line (for ``--log``)."""
    if len(data) < 20 or data[0] & 0x0F != 1:
        return f"not-uTP len={len(data)}"
    kind = TYPES.get(data[0] >> 4, str(data[0] >> 4))
    cid, wnd, seq, ack = (
        int.from_bytes(data[2:4], "big"),
        int.from_bytes(data[12:16], "big"),
        int.from_bytes(data[16:18], "big"),
        int.from_bytes(data[18:20], "big"),
    )
    ext, pos, sack = data[1], 20, ""
    while ext and pos + 2 <= len(data):
        nxt, length = data[pos], data[pos + 1]
        if ext == 1:
            sack = " sack=" + data[pos + 2 : pos + 2 + length].hex()
        ext, pos = nxt, pos + 2 + length
    return f"{kind:5} id={cid:5} seq={seq:5} ack={ack:5} wnd={wnd:7} len={len(data) - pos:4}{sack}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help="server HOST:PORT")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (default 127.0.0.1:0)")
    p.add_argument("--drop", type=float, default=0.0)
    p.add_argument("--reorder", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=0.0)
    p.add_argument("--drop-once", action="store_true", help="drop a DATA/FIN packet at most once per seq_nr")
    p.add_argument("--log", help="write a line per datagram (decoded uTP header and fate) here")
    args = p.parse_args(argv)
    logf = open(args.log, "w") if args.log else None  # noqa: SIM115
    t0 = time.monotonic()

    target = parse_addr(args.target)
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    front = socket.socket(family, socket.SOCK_DGRAM)  # faces the client
    back = socket.socket(family, socket.SOCK_DGRAM)  # faces the server
    for s in (front, back):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        s.setblocking(False)
    front.bind(parse_addr(args.listen))
    back.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    rng = random.Random(args.seed)
    client: Any = None
    #: A datagram held back for reordering, per outgoing socket, with the time it was held.
    held: dict[int, tuple[bytes, Any, float] | None] = {id(front): None, id(back): None}
    socks = {id(front): front, id(back): back}
    counts = {"c2s": 0, "s2c": 0, "dropped_c2s": 0, "dropped_s2c": 0, "reordered": 0, "send_errors": 0, "spared": 0}
    #: (direction, connection id, seq_nr) of the DATA/FIN packets dropped (``--drop-once``).
    dropped_packets: set[tuple[str, int, int]] = set()
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"READY {front.getsockname()[1]}", flush=True)
    deadline = time.monotonic() + args.duration if args.duration else None

    def forward(out: socket.socket, data: bytes, addr: Any, direction: str) -> None:
        counts[direction] += 1
        drop = rng.random() < args.drop
        if drop and args.drop_once and len(data) >= 20 and data[0] >> 4 in (0, 1) and data[0] & 0x0F == 1:
            key = (direction, int.from_bytes(data[2:4], "big"), int.from_bytes(data[16:18], "big"))
            if key in dropped_packets:
                drop = False
                counts["spared"] += 1
            else:
                dropped_packets.add(key)
        if drop:
            counts["dropped_" + direction] += 1
            if logf is not None:
                logf.write(f"{time.monotonic() - t0:10.6f} {direction} DROP {describe(data)}\n")
            return
        key = id(out)
        if held[key] is None and rng.random() < args.reorder:
            held[key] = (data, addr, time.monotonic())  # goes out after the next datagram (or 20 ms)
            counts["reordered"] += 1
            if logf is not None:
                logf.write(f"{time.monotonic() - t0:10.6f} {direction} HOLD {describe(data)}\n")
            return
        if logf is not None:
            logf.write(f"{time.monotonic() - t0:10.6f} {direction} fwd  {describe(data)}\n")
        send(out, data, addr)
        flush(key)

    def send(out: socket.socket, data: bytes, addr: Any) -> None:
        try:
            out.sendto(data, addr)
        except OSError:
            counts["send_errors"] += 1

    def flush(key: int, older_than: float | None = None) -> None:
        h = held[key]
        if h is not None and (older_than is None or h[2] < older_than):
            held[key] = None
            send(socks[key], h[0], h[1])

    while not stop and (deadline is None or time.monotonic() < deadline):
        r, _, _ = select.select([front, back], [], [], 0.01 if any(held.values()) else 0.2)
        for s in r:
            for _ in range(256):
                try:
                    data, addr = s.recvfrom(65536)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                if s is front:
                    client = addr
                    forward(back, data, target, "c2s")
                elif client is not None:
                    forward(front, data, client, "s2c")
        for key in held:
            flush(key, older_than=time.monotonic() - 0.02)
    if logf is not None:
        logf.close()
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
