"""Shared helpers for the engine tests."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterable

from txutp.engine import CongestionController, Event, UTPContext, register_congestion_controller
from txutp.engine._packet import decode_packet

HEADER = struct.Struct(">BBHIIIHH")


def header(
    type_version: int,
    conn_id: int,
    seq_nr: int,
    ack_nr: int,
    *,
    ts: int = 0,
    ts_diff: int = 0,
    wnd: int = 1 << 20,
    ext: int = 0,
) -> bytes:
    """A hand-built 20-byte uTP header (DATA 0x01, FIN 0x11, STATE 0x21, RESET 0x31, SYN 0x41)."""
    return HEADER.pack(type_version, ext, conn_id, ts, ts_diff, wnd, seq_nr, ack_nr)


def fields(datagram: bytes) -> tuple[int, ...]:
    """The header of a datagram as ``(type_version, ext, conn_id, ts, ts_diff, wnd, seq, ack)``."""
    return HEADER.unpack_from(datagram)


class ScriptedBits:
    """A ``random_bits`` source that returns the given values, then seeded random ones."""

    def __init__(self, values: Iterable[int], seed: int = 0) -> None:
        self.values = list(values)
        self.rng = random.Random(seed)

    def __call__(self, k: int) -> int:
        if self.values:
            return self.values.pop(0) & ((1 << k) - 1)
        return self.rng.getrandbits(k)


def drain(ctx: UTPContext) -> list[tuple[object, Event]]:
    """All pending ``(connection, event)`` pairs of a context."""
    out = []
    while (item := ctx.next_event()) is not None:
        out.append(item)
    return out


def types_of(datagrams: Iterable[bytes]) -> list[int]:
    """Packet types of a list of datagrams."""
    return [decode_packet(d).type for d in datagrams]


def near_wrap_bits(seed: int, margin: int = 4000) -> Callable[[int], int]:
    """A seeded ``random_bits`` whose 16-bit draws lie within ``margin`` of the 65535 wrap."""
    rng = random.Random(seed)

    def bits(k: int) -> int:
        if k == 16:
            return rng.randrange(65536 - margin, 65536)
        return rng.getrandbits(k)

    return bits


class RenoWindow(CongestionController):
    """A loss-based, Reno-like window for tests: slow start, +1 packet per RTT, halve on loss.

    It stands in for TCP when measuring how LEDBAT yields (registered as ``"reno"``).
    """

    def __init__(self, *, mss: int, initial_cwnd: int, max_cwnd: int, config: object = None) -> None:
        self.mss = mss
        self.max_cwnd = max(max_cwnd, mss)
        self.cwnd = max(min(initial_cwnd, self.max_cwnd), mss)
        self.ssthresh = self.max_cwnd
        self._last_cut = float("-inf")

    def on_ack(
        self,
        *,
        now: float,
        acked_bytes: int,
        in_flight: int,
        delay_us: int | None,
        rtt: float | None,
        window_limited: bool,
        rtt_sample: float | None = None,
        peer_window: int | None = None,
    ) -> None:
        if not window_limited or acked_bytes <= 0:
            return
        if self.cwnd < self.ssthresh:
            self.cwnd += acked_bytes
        else:
            self.cwnd += max(1, self.mss * acked_bytes // self.cwnd)
        self.cwnd = min(self.cwnd, self.max_cwnd)

    def on_loss(self, *, now: float, rtt: float | None) -> None:
        if now - self._last_cut < max(rtt or 0.0, 0.1):
            return
        self._last_cut = now
        self.cwnd = max(self.cwnd // 2, self.mss)
        self.ssthresh = self.cwnd

    def on_timeout(self, *, now: float, idle: bool) -> None:
        self._last_cut = now
        if idle:
            self.cwnd = max(self.cwnd * 2 // 3, self.mss)
        else:
            self.ssthresh = max(self.cwnd // 2, 2 * self.mss)
            self.cwnd = self.mss

    def stats(self) -> dict[str, float]:
        return {"ssthresh": self.ssthresh}


register_congestion_controller("reno", RenoWindow)
