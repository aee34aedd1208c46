"""Micro-benchmark of the sans-IO uTP engine's hot path, on one core.

Run from the repository root::

    python -m bench.engine_bench [--repeat N] [--packets N] [--json PATH]

Rows:

1. ``encode_packet`` of a DATA packet with a full (1382-byte) payload;
2. ``decode_packet`` of that datagram;
3. ``decode_packet`` of a STATE packet with a 4-byte selective ACK;
   then a context receiving, from a peer it does not know, that DATA datagram and two hostile
   ones: chains of empty extensions filling 1,472 and 65,507 bytes (bounded to a few times
   the ordinary cost by ``MAX_EXTENSIONS`` and ``MAX_UTP_DATAGRAM``); a SYN answered with a
   SYN cookie, and a DATA datagram for no connection while cookies are out (checked against
   them before its RESET);
4. two :class:`~txutp.engine.UTPContext` objects wired together in memory (no
   loss, no delay): a sender that keeps its send buffer full, a receiver that
   drains ``DataReceived``; every step moves the sender's datagrams into the
   receiver, the receiver's back into the sender, on a virtual clock;
5. the same transfer through :class:`txutp.simulator.Network` over a
   ``LinkConfig(delay=0.001)`` link, to show the simulator's own overhead;
6. row 4 with the receiver's output collected after every datagram (one ACK per DATA);
7. row 4 with both ends traced (``txutp.trace.TraceWriter`` to ``/dev/null``): what
   tracing costs when on; row 4 is the cost when off;
8. row 4 with the sender's datagrams handed to the receiver in UDP GRO runs
   (``UTPContext.receive_run``), as the UDP carrier reads them on Linux.

Each row runs ``--repeat`` times; the table shows the median rate with the
minimum and maximum. Rates of rows 4 to 8 count nominal full data packets
(payload bytes / 1382). The received stream is checked against the sent one
(SHA-256) and a mismatch exits non-zero; the time spent hashing is excluded.
The garbage collector is off while timing, as :mod:`timeit` does.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import txutp.engine
from txutp.engine import (
    Connected,
    ConnectionTerminated,
    DataReceived,
    EndOfStream,
    Event,
    Packet,
    PacketType,
    UTPConfig,
    UTPConnection,
    UTPContext,
    Writable,
    decode_packet,
    encode_packet,
)
from txutp.simulator import LinkConfig, Network
from txutp.trace import TraceWriter

PAYLOAD = 1382  # a full packet's payload on IPv4 with the default 1402-byte packets
STEP = 0.0005  # virtual seconds per step of the in-memory loop
SENDER_ADDR = ("10.0.0.1", 6881)
RECEIVER_ADDR = ("10.0.0.2", 6881)
#: Period of the byte stream sent. Prime to PAYLOAD, so no two packets of a run
#: carry the same bytes and reordering or duplication changes the hash.
BLOCK = 4 * 1024 * 1024 + 1


# ---------------------------------------------------------------------- codec rows


def _time_calls(fn: Callable[[Any], object], arg: object, n: int) -> float:
    """Seconds for ``n`` calls of ``fn(arg)`` (loop overhead included)."""
    calls = range(n)
    t0 = time.perf_counter()
    for _ in calls:
        fn(arg)
    return time.perf_counter() - t0


def codec_cases() -> list[tuple[str, Callable[[Any], object], object]]:
    """The three codec rows as ``(name, function, argument)``, checked to round-trip."""
    payload = random.Random(0).randbytes(PAYLOAD)
    data_pkt = Packet(PacketType.DATA, 0x1234, 0x0BADF00D, 25_000, 1 << 20, 4242, 17, payload)
    state_pkt = Packet(PacketType.STATE, 0x1235, 0x0BADF00D, 25_000, 1 << 20, 17, 4240, b"", b"\x0b\x00\x00\x80")
    data_dgram = encode_packet(data_pkt)
    state_dgram = encode_packet(state_pkt)
    if len(data_dgram) != 20 + PAYLOAD or len(state_dgram) != 20 + 2 + 4:
        raise SystemExit(f"FAIL: unexpected datagram sizes {len(data_dgram)}, {len(state_dgram)}")
    for pkt, dgram in ((data_pkt, data_dgram), (state_pkt, state_dgram)):
        if decode_packet(dgram) != pkt:
            raise SystemExit(f"FAIL: codec round trip changed {pkt._replace(payload=b'...')!r}")
    # Hostile datagrams against an ordinary one, each from a peer the context does not know:
    # chains of empty extensions filling 1,472 and 65,507 bytes.
    ctx = UTPContext()
    peer = ("10.0.0.9", 4000)

    def receive(datagram: bytes) -> bool:
        return ctx.receive_datagram(datagram, peer, 0.0)

    def chain(size: int) -> bytes:
        return data_dgram[:1] + bytes([9]) + data_dgram[2:20] + bytes([9, 0]) * ((size - 20) // 2 - 1) + bytes(2)

    # SYN cookies: a SYN answered without state, and what a packet for no connection costs
    # while cookies are out (its cookie is checked before the RESET).
    cookie_ctx = UTPContext(UTPConfig(syn_cookies="always"), accepting=True)
    syn = data_dgram[:1].replace(b"\x01", b"\x41") + data_dgram[1:20]

    def answer_syn(datagram: bytes) -> bool:
        ok = cookie_ctx.receive_datagram(datagram, peer, 0.0)
        cookie_ctx._out.clear()
        return ok

    answer_syn(syn)  # cookies are out from now on

    return [
        ("codec encode (DATA, 1382 B)", encode_packet, data_pkt),
        ("codec decode (DATA, 1382 B)", decode_packet, data_dgram),
        ("codec decode (STATE + 4 B SACK)", decode_packet, state_dgram),
        ("context receive, unknown peer (DATA)", receive, data_dgram),
        ("  1,472-byte extension chain", receive, chain(1472)),
        ("  65,507-byte extension chain", receive, chain(65_507)),
        ("  SYN answered with a SYN cookie", answer_syn, syn),
        ("  DATA checked for a cookie, then RESET", answer_syn, data_dgram),
    ]


# ---------------------------------------------------------------------- transfer rows


class Source:
    """The byte stream sent: ``total`` bytes repeating one random block."""

    def __init__(self, total: int, seed: int = 7) -> None:
        self.total = total
        self.block = random.Random(seed).randbytes(BLOCK)
        self._twice = self.block + self.block

    def chunk(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes of the stream from ``offset`` (never more than one block)."""
        n = min(n, self.total - offset, BLOCK)
        start = offset % BLOCK
        return self._twice[start : start + n]

    def sha256(self) -> str:
        h = hashlib.sha256()
        full, rest = divmod(self.total, BLOCK)
        for _ in range(full):
            h.update(self.block)
        h.update(self.block[:rest])
        return h.hexdigest()


class Clock:
    """The virtual time an application sees (the in-memory loop sets ``t``)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Sender:
    """Keeps the connection's send buffer full until the whole stream is queued, then half-closes."""

    def __init__(self, source: Source, clock: Callable[[], float]) -> None:
        self.source = source
        self.clock = clock
        self.offset = 0
        self.finished = False
        self.error: Event | None = None

    def event(self, conn: UTPConnection, event: Event) -> None:
        if isinstance(event, (Connected, Writable)):
            self.pump(conn)
        elif isinstance(event, ConnectionTerminated):
            self.error = event

    def pump(self, conn: UTPConnection) -> None:
        if self.finished:
            return
        now = self.clock()
        source = self.source
        # Offer a packet more than fits, so the engine owes us a Writable event.
        data = source.chunk(self.offset, conn.send_buffer_free + PAYLOAD)
        if data:
            self.offset += conn.send(data, now)
        if self.offset >= source.total:
            self.finished = True
            conn.shutdown_write(now)


class Receiver:
    """Hashes what arrives; the hashing time is kept apart so it can be excluded."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.received = 0
        self.eof = False
        self.hash_seconds = 0.0
        self.error: Event | None = None

    def event(self, conn: UTPConnection, event: Event) -> None:
        if isinstance(event, DataReceived):
            t0 = time.perf_counter()
            self.hash.update(event.data)
            self.hash_seconds += time.perf_counter() - t0
            self.received += len(event.data)
        elif isinstance(event, EndOfStream):
            self.eof = True
        elif isinstance(event, ConnectionTerminated):
            self.error = event


@dataclass
class Transfer:
    """One timed transfer: engine seconds (hashing excluded) and datagram counts."""

    seconds: float
    datagrams_fwd: int
    datagrams_back: int
    #: DATA datagrams the sender produced (``None`` where not counted: the simulator row).
    data_datagrams: int | None
    info: dict[str, float] = field(default_factory=dict)


def _check(name: str, source: Source, expected: str, sender: Sender, receiver: Receiver) -> None:
    problems = []
    if sender.error is not None or receiver.error is not None:
        problems.append(f"connection ended: sender {sender.error!r}, receiver {receiver.error!r}")
    if not receiver.eof:
        problems.append("no EndOfStream")
    if receiver.received != source.total:
        problems.append(f"received {receiver.received} bytes, sent {source.total}")
    if receiver.hash.hexdigest() != expected:
        problems.append("SHA-256 of the received stream differs from the sent one")
    if problems:
        raise SystemExit(f"FAIL ({name}): " + "; ".join(problems))


def _conn_info(conn: UTPConnection, steps: int) -> dict[str, float]:
    stats = conn.stats()
    return {
        "steps": steps,
        "retransmissions": stats.retransmissions,
        "timeouts": stats.timeouts,
        "final_cwnd": stats.cwnd,
    }


def _trace_to_devnull(conn: UTPConnection, now: float) -> TraceWriter:
    return TraceWriter(
        os.devnull,
        local="bench",
        peer=conn.peer_addr,
        recv_id=conn.recv_id,
        send_id=conn.send_id,
        initiator=conn.initiator,
        start=now,
    )


def run_direct(
    source: Source, expected: str, ack_every_datagram: bool = False, traced: bool = False, gro: bool = False
) -> Transfer:
    """Rows 4, 6 and 7: two contexts joined in memory, stepped on a virtual clock.

    With ``ack_every_datagram`` the receiver's output is collected after every
    datagram (one ACK per DATA packet, the worst case for the sender's ACK path)
    instead of once per batch. With ``traced`` both ends write a trace
    (``txutp.trace``) to ``/dev/null``: the cost of tracing on. With ``gro`` the
    sender's datagrams reach the receiver as the kernel's UDP GRO would hand them over:
    each run of equal-sized ones (up to 64) joined, through ``UTPContext.receive_run``
    (the join, the kernel's work, is timed too).
    """
    sctx = UTPContext(random_bits=random.Random(1).getrandbits)
    rctx = UTPContext(accepting=True, random_bits=random.Random(2).getrandbits)
    if traced:
        sctx.tracer_factory = rctx.tracer_factory = _trace_to_devnull
    clock = Clock()
    sender = Sender(source, clock)
    receiver = Receiver()
    now = 0.0
    conn = sctx.connect(RECEIVER_ADDR, now)
    s_receive, s_next, s_out = sctx.receive_datagram, sctx.next_event, sctx.datagrams_to_send
    r_receive, r_next, r_out = rctx.receive_datagram, rctx.next_event, rctx.datagrams_to_send
    s_event, r_event = sender.event, receiver.event
    refill = 64 * 1024
    max_steps = 1000 + 10 * (source.total // PAYLOAD)
    fwd = back = data_dgrams = steps = 0

    t0 = time.perf_counter()
    while not receiver.eof:
        steps += 1
        if steps > max_steps or sender.error is not None or receiver.error is not None:
            break
        now += STEP
        clock.t = now
        deadline = sctx.get_timer()
        if deadline is not None and deadline <= now:
            sctx.handle_timer(now)
        deadline = rctx.get_timer()
        if deadline is not None and deadline <= now:
            rctx.handle_timer(now)
        out = s_out(now)
        fwd += len(out)
        if gro:
            data_dgrams += sum(1 for data, _ in out if not data[0] >> 4)
            for run, segment in _gro_runs(out):
                if len(run) > segment:
                    rctx.receive_run(run, segment, SENDER_ADDR, now)
                else:
                    r_receive(run, SENDER_ADDR, now)
            out = []
        for data, _ in out:
            if not data[0] >> 4:  # ST_DATA
                data_dgrams += 1
            r_receive(data, SENDER_ADDR, now)
            if ack_every_datagram:
                while (item := r_next()) is not None:
                    r_event(item[0], item[1])
                acks = r_out(now)
                back += len(acks)
                for ack, _ in acks:
                    s_receive(ack, RECEIVER_ADDR, now)
        while (item := r_next()) is not None:
            r_event(item[0], item[1])
        out = r_out(now)
        back += len(out)
        for data, _ in out:
            s_receive(data, RECEIVER_ADDR, now)
        while (item := s_next()) is not None:
            s_event(item[0], item[1])
        if not sender.finished and conn.send_buffer_free >= refill:
            sender.pump(conn)
    elapsed = time.perf_counter() - t0 - receiver.hash_seconds

    _check("in-memory loop", source, expected, sender, receiver)
    return Transfer(elapsed, fwd, back, data_dgrams, _conn_info(conn, steps))


def _gro_runs(out: list[tuple[bytes, object]]) -> list[tuple[bytes, int]]:
    """The datagrams as UDP GRO coalesces them: runs of equal size (the last may be shorter), 64 at most."""
    runs = []
    i = 0
    while i < len(out):
        segment = len(out[i][0])
        j = i + 1
        while j < len(out) and j - i < 64 and len(out[j][0]) <= segment:
            j += 1
            if len(out[j - 1][0]) < segment:
                break
        runs.append((b"".join([d for d, _ in out[i:j]]), segment))
        i = j
    return runs


def run_simulated(source: Source, expected: str) -> Transfer:
    """Row 5: the same transfer through the simulator over a 1 ms link."""
    net = Network(seed=1)
    a = net.add_host(SENDER_ADDR)
    b = net.add_host(RECEIVER_ADDR, accepting=True)
    net.link(a, b, LinkConfig(delay=0.001))
    sender = Sender(source, a.local_time)
    receiver = Receiver()
    b.on_accept = lambda conn: receiver
    conn = a.connect(RECEIVER_ADDR)
    a.attach(conn, sender)

    def stop() -> bool:
        return receiver.eof or sender.error is not None or receiver.error is not None

    max_steps = 1000 + 10 * (source.total // PAYLOAD)
    t0 = time.perf_counter()
    net.run(stop=stop, max_steps=max_steps)
    elapsed = time.perf_counter() - t0 - receiver.hash_seconds

    _check("simulator", source, expected, sender, receiver)
    fwd = net.link_stats(a, b).sent
    back = net.link_stats(b, a).sent
    info = _conn_info(conn, 0)
    del info["steps"]
    info["virtual_seconds"] = round(net.now, 6)
    return Transfer(elapsed, fwd, back, None, info)


# ---------------------------------------------------------------------- reporting


@dataclass
class Row:
    name: str
    packets: int  # packets per repeat
    seconds: list[float]
    payload_bytes: int = 0
    datagrams_fwd: int = 0
    datagrams_back: int = 0
    data_datagrams: int | None = None
    info: dict[str, float] = field(default_factory=dict)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        med = self.median_seconds
        rates = [self.packets / s for s in self.seconds]
        out: dict[str, Any] = {
            "name": self.name,
            "packets": self.packets,
            "seconds": self.seconds,
            "packets_per_second": {"median": self.packets / med, "min": min(rates), "max": max(rates)},
            "us_per_packet": med / self.packets * 1e6,
        }
        if self.payload_bytes:
            out.update(
                payload_bytes=self.payload_bytes,
                payload_mb_per_second=self.payload_bytes / med / 1e6,
                data_datagrams=self.data_datagrams,
                datagrams_fwd=self.datagrams_fwd,
                datagrams_back=self.datagrams_back,
                datagrams_fwd_per_second=self.datagrams_fwd / med,
                datagrams_back_per_second=self.datagrams_back / med,
                info=self.info,
            )
        return out


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        result = fn()
        return time.perf_counter() - t0, result
    finally:
        gc.enable()


def run_all(repeat: int, packets: int, progress: Callable[[str], None]) -> list[Row]:
    rows = []
    for name, fn, arg in codec_cases():
        progress(name)
        _time_calls(fn, arg, min(packets, 10_000))  # warm up
        seconds = [_timed(partial(_time_calls, fn, arg, packets))[0] for _ in range(repeat)]
        rows.append(Row(name, packets, seconds))

    source = Source(packets * PAYLOAD)
    expected = source.sha256()
    transfers: list[tuple[str, Callable[[Source, str], Transfer]]] = [
        ("engine loop encode->decode->receive", run_direct),
        ("same via simulator (1 ms link)", run_simulated),
        ("engine loop, one ACK per DATA", partial(run_direct, ack_every_datagram=True)),
        ("engine loop, both ends traced", partial(run_direct, traced=True)),
        ("engine loop, GRO runs to the receiver", partial(run_direct, gro=True)),
    ]
    for name, run in transfers:
        progress(name)
        results: list[Transfer] = [_timed(partial(run, source, expected))[1] for _ in range(repeat)]
        first = results[0]
        for r in results[1:]:
            if (r.datagrams_fwd, r.datagrams_back, r.data_datagrams) != (
                first.datagrams_fwd,
                first.datagrams_back,
                first.data_datagrams,
            ):
                print(f"warning: {name}: repeats differ in datagram counts (not deterministic)", file=sys.stderr)
        rows.append(
            Row(
                name,
                packets,
                [r.seconds for r in results],
                payload_bytes=source.total,
                datagrams_fwd=first.datagrams_fwd,
                datagrams_back=first.datagrams_back,
                data_datagrams=first.data_datagrams,
                info=first.info,
            )
        )
    return rows


def format_table(rows: list[Row]) -> str:
    header = ["row", "pkts/s", "min", "max", "us/pkt", "MB/s", "dgrams/s fwd", "dgrams/s back"]
    lines = [header]
    for row in rows:
        d = row.as_dict()
        pps = d["packets_per_second"]
        lines.append(
            [
                row.name,
                f"{pps['median']:,.0f}",
                f"{pps['min']:,.0f}",
                f"{pps['max']:,.0f}",
                f"{d['us_per_packet']:.3f}",
                f"{d['payload_mb_per_second']:.1f}" if row.payload_bytes else "-",
                f"{d['datagrams_fwd_per_second']:,.0f}" if row.payload_bytes else "-",
                f"{d['datagrams_back_per_second']:,.0f}" if row.payload_bytes else "-",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="runs per row; the median is reported (default 5)")
    parser.add_argument("--packets", type=int, default=200_000, help="packets per run (default 200000)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.packets < 1:
        parser.error("--repeat and --packets must be positive")

    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"txutp engine bench: {python} on {platform.platform()} ({platform.machine()})")
    print(
        f"repeat={args.repeat} packets={args.packets} payload={PAYLOAD} B; median of repeats, min/max in pkts/s",
        flush=True,
    )
    rows = run_all(args.repeat, args.packets, lambda name: print(f"  running {name} ...", file=sys.stderr))
    print(format_table(rows))
    for row in rows:
        if row.payload_bytes:
            extra = ", ".join(f"{k}={v}" for k, v in row.info.items())
            data = "" if row.data_datagrams is None else f"{row.data_datagrams} DATA datagrams, "
            print(f"{row.name}: {data}{row.datagrams_fwd} fwd / {row.datagrams_back} back per run; {extra}")

    if args.json is not None:
        result = {
            "python": python,
            "platform": platform.platform(),
            "machine": platform.machine(),
            "txutp": str(Path(txutp.engine.__file__).resolve().parent.parent),
            "repeat": args.repeat,
            "packets": args.packets,
            "payload": PAYLOAD,
            "rows": [row.as_dict() for row in rows],
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
