#!/usr/bin/env python3
"""A lossy, delaying UDP relay between one client and one server, for loss tests and benchmarks on loopback.

    udp_relay.py --target HOST:PORT [--listen HOST:PORT] [--drop P] [--reorder P] [--delay S] [--jitter S]
                 [--seed N] [--duration S] [--drop-once] [--log FILE]

Datagrams from the first address that sends to the listen port (the client) go
to the target (the server); datagrams from the target go back to that client.
Each datagram, either way, is dropped with probability ``--drop``. A datagram
that is not dropped waits ``--delay`` seconds (one way: the RTT grows by twice
that) plus, with ``--jitter``, a time drawn uniformly from [0, jitter] for each
datagram independently, so datagrams closer together than the jitter overtake
each other as on a real path with jitter (a time-ordered heap and the select
timeout send each one on time, also at ~10k datagrams/s). When it leaves the
relay a datagram is held back and sent after the next one (or 20 ms later)
with probability ``--reorder``. The random choices are seeded (``--seed``; the
jitter has its own generator, so the drops are the same with and without it).
It prints ``READY <port>`` once bound, and at exit (SIGTERM, SIGINT or
``--duration``) one JSON line of counters: datagrams each way, dropped each
way, ``reordered`` (held back), ``overtaken`` (sent after a datagram of the
same direction that arrived later: the jitter's reordering), ``late_max_ms``
and ``late_mean_ms`` (how long after its time a delayed datagram left),
``send_errors``, ``spared`` (drops undone by ``--drop-once``).
With ``--drop-once`` a uTP DATA or FIN packet is dropped at most once per
sequence number and direction: its retransmission always gets through. A peer
that gives up on a packet after a few transmissions (libtorrent closes the
connection with "timed out" once the oldest unacknowledged packet was sent
``utp_num_resends`` = 3 times, even when only its ACKs were lost) is then not
made to fail by the relay's dice; loss recovery is still exercised on every
dropped packet. ``--log FILE`` writes one line per datagram: time, direction, fate (``fwd``,
``DROP``, ``HOLD``) and the decoded uTP header (type, connection id, seq, ack,
window, payload length, SACK bitmask); a delayed datagram is logged when it
leaves, with ``+<ms>``, the time it spent in the relay.
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


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


TYPES = {0: "DATA", 1: "FIN", 2: "STATE", 3: "RESET", 4: "SYN"}
HOLD_MAX = 0.02  # a datagram held back for --reorder leaves after this long at the latest


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
    p.add_argument("--drop", type=float, default=0.0, help="drop probability per datagram")
    p.add_argument("--reorder", type=float, default=0.0, help="probability to hold a datagram back behind the next")
    p.add_argument("--delay", type=float, default=0.0, help="fixed one-way delay per datagram, seconds")
    p.add_argument("--jitter", type=float, default=0.0, help="extra delay, uniform in [0, S] per datagram, seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=0.0, help="exit after this many seconds (0: on a signal)")
    p.add_argument("--drop-once", action="store_true", help="drop a DATA/FIN packet at most once per seq_nr")
    p.add_argument("--log", help="write a line per datagram (decoded uTP header and fate) here")
    args = p.parse_args(argv)
    if min(args.drop, args.reorder, args.delay, args.jitter) < 0:
        p.error("--drop, --reorder, --delay and --jitter must not be negative")
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
    jitter_rng = random.Random(f"jitter {args.seed}")
    delaying = args.delay > 0 or args.jitter > 0
    client: Any = None
    #: A datagram held back for reordering, per outgoing socket, with the time it was held.
    held: dict[int, tuple[bytes, Any, float] | None] = {id(front): None, id(back): None}
    socks = {id(front): front, id(back): back}
    #: Delayed datagrams: (time due, arrival number, outgoing socket, datagram, address, direction, arrival time).
    queue: list[tuple[float, int, socket.socket, bytes, Any, str, float]] = []
    arrivals = 0
    late_sum, late_n = 0.0, 0
    #: The highest arrival number sent so far, per direction (for ``overtaken``).
    newest_sent = {"c2s": -1, "s2c": -1}
    counts: dict[str, float] = {
        "c2s": 0, "s2c": 0, "dropped_c2s": 0, "dropped_s2c": 0, "reordered": 0, "overtaken": 0,
        "send_errors": 0, "spared": 0, "late_max_ms": 0.0,
    }  # fmt: skip
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

    def receive(out: socket.socket, data: bytes, addr: Any, direction: str, now: float) -> None:
        """A datagram arrived: drop it, queue it for its delay, or pass it on at once."""
        nonlocal arrivals
        counts[direction] += 1
        arrivals += 1
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
                logf.write(f"{now - t0:10.6f} {direction} DROP {describe(data)}\n")
        elif delaying:
            due = now + args.delay + (jitter_rng.uniform(0.0, args.jitter) if args.jitter else 0.0)
            heapq.heappush(queue, (due, arrivals, out, data, addr, direction, now))
        else:
            leave(out, data, addr, direction, arrivals, now)

    def leave(out: socket.socket, data: bytes, addr: Any, direction: str, number: int, arrived: float) -> None:
        """A datagram's time has come: hold it back (``--reorder``) or send it."""
        if number < newest_sent[direction]:
            counts["overtaken"] += 1
        newest_sent[direction] = max(newest_sent[direction], number)
        key = id(out)
        now = time.monotonic()
        stay = f" +{(now - arrived) * 1000:.1f}ms" if delaying else ""
        if held[key] is None and rng.random() < args.reorder:
            held[key] = (data, addr, now)  # goes out after the next datagram (or HOLD_MAX)
            counts["reordered"] += 1
            if logf is not None:
                logf.write(f"{now - t0:10.6f} {direction} HOLD {describe(data)}{stay}\n")
            return
        if logf is not None:
            logf.write(f"{now - t0:10.6f} {direction} fwd  {describe(data)}{stay}\n")
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

    def release(now: float) -> None:
        """Send every delayed datagram that is due."""
        nonlocal late_sum, late_n
        while queue and queue[0][0] <= now:
            due, number, out, data, addr, direction, arrived = heapq.heappop(queue)
            late = (now - due) * 1000
            counts["late_max_ms"] = max(counts["late_max_ms"], late)
            late_sum += late
            late_n += 1
            leave(out, data, addr, direction, number, arrived)

    while not stop and (deadline is None or time.monotonic() < deadline):
        timeout = HOLD_MAX / 2 if any(held.values()) else 0.2
        if queue:
            timeout = min(timeout, max(0.0, queue[0][0] - time.monotonic()))
        r, _, _ = select.select([front, back], [], [], timeout)
        for s in r:
            for _ in range(256):
                try:
                    data, addr = s.recvfrom(65536)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                now = time.monotonic()
                if s is front:
                    client = addr
                    receive(back, data, target, "c2s", now)
                elif client is not None:
                    receive(front, data, client, "s2c", now)
                if queue and queue[0][0] <= now:
                    release(now)  # a long burst must not make the delayed datagrams late
        release(time.monotonic())
        for key in held:
            flush(key, older_than=time.monotonic() - HOLD_MAX)
    if logf is not None:
        logf.close()
    counts["late_max_ms"] = round(counts["late_max_ms"], 3)
    counts["late_mean_ms"] = round(late_sum / late_n, 3) if late_n else 0.0
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
