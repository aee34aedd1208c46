"""The engine test harness: scripted randomness, a packet builder, draining, and a pair of contexts.

* :class:`ScriptedBits` stands in for ``random_bits``, so connection ids and
  initial sequence numbers are known in advance.
* :func:`packet` builds a datagram field by field, with the first-byte constants
  :data:`DATA`, :data:`FIN`, :data:`STATE`, :data:`RESET` and :data:`SYN`
  (``type << 4 | version``); :func:`fields` reads a header back.
* :func:`drain` collects a context's pending events.
* :class:`Pair` joins two contexts by hand on a clock the test moves: it pumps
  datagrams until both sides are quiet, runs timers at the deadlines they ask
  for, and drops or holds back (to reorder) what a side sends.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterable
from typing import Any

from txutp.engine import Connected, ConnectionState, DataReceived, Event, Packet, UTPConfig, UTPConnection, UTPContext
from txutp.engine import decode_packet as decode

# The first byte of each packet type, version 1: (type << 4) | 1.
DATA, FIN, STATE, RESET, SYN = 0x01, 0x11, 0x21, 0x31, 0x41
U16 = 0xFFFF

HEADER = struct.Struct(">BBHIIIHH")

#: The addresses, connection id and initial sequence numbers a :class:`Pair` uses.
A = ("10.0.0.1", 6881)  # the initiator
B = ("10.0.0.2", 6881)  # the acceptor
A_ID = 0x4000  # A's recv_id, carried by its SYN; A's send_id is A_ID + 1
A_ISN = 5000  # A's SYN seq_nr
B_ISN = 9000  # B's ISN (the SYN-ACK's seq_nr)


def packet(
    first: int,
    conn_id: int,
    seq_nr: int,
    ack_nr: int,
    payload: bytes = b"",
    *,
    ts: int = 0,
    ts_diff: int = 0,
    wnd: int = 1 << 20,
    ext: int = 0,
) -> bytes:
    """A datagram built by hand: the 20-byte header (``first`` is :data:`DATA`, ... :data:`SYN`,
    or any byte at all), then ``payload`` (extensions included, when ``ext`` says so)."""
    return HEADER.pack(first, ext, conn_id, ts, ts_diff, wnd, seq_nr, ack_nr) + payload


def header(
    first: int,
    conn_id: int,
    seq_nr: int,
    ack_nr: int,
    *,
    ts: int = 0,
    ts_diff: int = 0,
    wnd: int = 1 << 20,
    ext: int = 0,
) -> bytes:
    """A bare 20-byte header: :func:`packet` with no payload (the older name, still used outside the engine tests)."""
    return packet(first, conn_id, seq_nr, ack_nr, ts=ts, ts_diff=ts_diff, wnd=wnd, ext=ext)


def fields(datagram: bytes) -> tuple[int, ...]:
    """The header of a datagram as ``(first, ext, conn_id, ts, ts_diff, wnd, seq, ack)``."""
    return HEADER.unpack_from(datagram)


class ScriptedBits:
    """A ``random_bits`` stand-in: the scripted values first, in order.

    When the script runs out it fails the test (``strict``, so an unexpected draw
    is caught), or continues from a generator seeded with ``seed``. A single list
    of values is accepted too.
    """

    def __init__(self, *values: int | Iterable[int], strict: bool = True, seed: int = 0) -> None:
        self.values: list[int] = []
        for value in values:
            self.values.extend([value] if isinstance(value, int) else value)
        self.strict = strict
        #: Every value returned, in order.
        self.draws: list[int] = []
        self._fallback = random.Random(seed)

    def __call__(self, k: int) -> int:
        if self.values:
            value = self.values.pop(0)
        else:
            assert not self.strict, "the context drew more random values than scripted"
            value = self._fallback.getrandbits(k)
        assert 0 <= value < 1 << k, f"scripted value {value} does not fit {k} bits"
        self.draws.append(value)
        return value


def near_wrap_bits(seed: int, margin: int = 4000) -> Callable[[int], int]:
    """A seeded ``random_bits`` whose 16-bit draws lie within ``margin`` of the 65535 wrap."""
    rng = random.Random(seed)

    def bits(k: int) -> int:
        if k == 16:
            return rng.randrange(65536 - margin, 65536)
        return rng.getrandbits(k)

    return bits


def drain(ctx: UTPContext) -> list[tuple[UTPConnection, Event]]:
    """All pending ``(connection, event)`` pairs of a context."""
    out = []
    while (item := ctx.next_event()) is not None:
        out.append(item)
    return out


def sent(ctx: UTPContext, now: float) -> list[tuple[Packet, Any]]:
    """Decode everything a context sends now, as ``(packet, address)`` pairs."""
    return [(decode(data), addr) for data, addr in ctx.datagrams_to_send(now)]


class Pair:
    """Two contexts joined by hand: initiator ``a`` at :data:`A`, acceptor ``b`` at :data:`B`.

    Nothing crosses unless the test says so, at ``self.now``, which moves only
    when the test moves it (:meth:`pump` and :meth:`run` may). Connection ids and
    initial sequence numbers are :data:`A_ID`, :data:`A_ISN` and :data:`B_ISN`.
    With ``connect`` (the default) the handshake is done: ``client`` and
    ``server`` are the two ends, CONNECTED, and no event is pending. The default
    config has no path MTU discovery, so packet sizes stay fixed.

    Two styles mix freely: :meth:`pump` moves everything until both sides are
    quiet (collecting events in :attr:`events`), while :meth:`out_a`,
    :meth:`to_b` and friends move datagrams one batch at a time. :meth:`drop`
    and :meth:`hold` take what one side sends now (all of it, or the datagrams at
    the given positions) and lose it or keep it back; :meth:`release` delivers
    what was held, after whatever overtook it.
    """

    def __init__(
        self, config: UTPConfig | None = None, client_config: UTPConfig | None = None, *, connect: bool = True
    ) -> None:
        config = config or UTPConfig(mtu_discovery=False)
        self.a = UTPContext(client_config or config, random_bits=ScriptedBits(A_ID, A_ISN, strict=False))
        self.b = UTPContext(config, accepting=True, random_bits=ScriptedBits(B_ISN, strict=False))
        self.now = 0.0
        #: ``(side, event)`` for every event :meth:`pump` collected.
        self.events: list[tuple[str, Event]] = []
        #: When each side last sent something through :meth:`pump`.
        self.last_send: dict[str, float | None] = {"a": None, "b": None}
        self.held: list[tuple[str, bytes]] = []
        if connect:
            self.client, self.server = self.connect()

    def connect(self) -> tuple[UTPConnection, UTPConnection]:
        """Open the connection from ``a`` and pump the handshake through; return both ends."""
        client = self.a.connect(B, self.now)
        self.pump()
        server = self.b.connections[(A, (A_ID + 1) & U16)]
        assert client.state is server.state is ConnectionState.CONNECTED
        assert ("a", Connected()) in self.events and ("b", Connected()) in self.events
        self.events.clear()
        return client, server

    # ------------------------------------------------------------------ one batch at a time

    def out_a(self) -> list[bytes]:
        """What ``a`` sends now."""
        return [d for d, _ in self.a.datagrams_to_send(self.now)]

    def out_b(self) -> list[bytes]:
        return [d for d, _ in self.b.datagrams_to_send(self.now)]

    def to_a(self, datagrams: Iterable[bytes]) -> None:
        """Deliver datagrams to ``a``, as from ``b``."""
        for d in datagrams:
            assert self.a.receive_datagram(d, B, self.now)

    def to_b(self, datagrams: Iterable[bytes]) -> None:
        for d in datagrams:
            assert self.b.receive_datagram(d, A, self.now)

    def received_by_b(self) -> bytes:
        """The data ``b`` has for its application (its other events are dropped)."""
        return b"".join(e.data for _, e in drain(self.b) if isinstance(e, DataReceived))

    # ------------------------------------------------------------------ until quiet

    def pump(self, now: float | None = None) -> list[tuple[str, Packet]]:
        """Deliver until both sides are quiet; return ``(sender, packet)`` for everything moved."""
        if now is not None:
            self.now = now
        log: list[tuple[str, Packet]] = []
        moving = True
        while moving:
            moving = False
            for side, src, dst, addr in (("a", self.a, self.b, A), ("b", self.b, self.a, B)):
                for data, _ in src.datagrams_to_send(self.now):
                    moving = True
                    self.last_send[side] = self.now
                    log.append((side, decode(data)))
                    dst.receive_datagram(data, addr, self.now)
            self.events += [(side, e) for side, ctx in (("a", self.a), ("b", self.b)) for _, e in drain(ctx)]
        return log

    def next_deadline(self) -> float | None:
        """The earlier of the two contexts' timers."""
        deadlines = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
        return min(deadlines) if deadlines else None

    def run(self, until: float) -> list[tuple[float, str, Packet]]:
        """Run both sides' timers at the deadlines they ask for, up to ``until``, pumping after each.

        Returns ``(time, sender, packet)`` for everything moved; ``now`` ends at the last deadline run.
        """
        log = []
        while (t := self.next_deadline()) is not None and t <= until:
            self.now = t
            self.a.handle_timer(t)
            self.b.handle_timer(t)
            log += [(t, side, p) for side, p in self.pump()]
        return log

    # ------------------------------------------------------------------ loss and reordering

    def _take(self, side: str, positions: tuple[int, ...]) -> list[bytes]:
        """Deliver what ``side`` sends now, except the datagrams at ``positions`` (all if none), returned."""
        out = self.out_a() if side == "a" else self.out_b()
        chosen = set(positions) if positions else set(range(len(out)))
        deliver = self.to_b if side == "a" else self.to_a
        deliver([d for i, d in enumerate(out) if i not in chosen])
        return [d for i, d in enumerate(out) if i in chosen]

    def drop(self, side: str, *positions: int) -> list[Packet]:
        """Lose what ``side`` sends now (the datagrams at ``positions``, or all); deliver the rest."""
        return [decode(d) for d in self._take(side, positions)]

    def hold(self, side: str, *positions: int) -> list[Packet]:
        """Keep back what ``side`` sends now (the datagrams at ``positions``, or all); deliver the rest."""
        taken = self._take(side, positions)
        self.held += [(side, d) for d in taken]
        return [decode(d) for d in taken]

    def release(self) -> None:
        """Deliver everything held, in the order it was sent."""
        held, self.held = self.held, []
        for side, d in held:
            (self.to_b if side == "a" else self.to_a)([d])
