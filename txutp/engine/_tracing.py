"""Tracing a connection: what the engine tells a tracer, when one is set (off by default).

The engine does no I/O: a caller that wants traces sets
``UTPContext.tracer_factory``, which is asked for a :class:`Tracer` (such as
:class:`txutp.trace.TraceWriter`, which writes JSON lines) for each new
connection. The context then reports every packet the connection sends and
receives and, after each flush, a metrics sample and what changed since the
last one (state, timeouts, tail-loss probes, spurious retransmissions, undos,
the packet size, ICMP errors); loss recovery reports each packet it declares
lost and each RTT sample. The schema is in ``docs/observing.rst``.

With no tracer the cost is one attribute test per received datagram and per
connection flushed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ._mtu import DontFragment
from ._packet import EXT_SACK, HEADER, HEADER_SIZE, SEQ_MASK, ST_DATA, ST_FIN, Packet
from ._state import ConnectionState
from ._stats import ConnectionStats

__all__ = ["PACKET_TYPE_NAMES", "ConnectionTrace", "TracedConnection", "Tracer", "TracerFactory"]

#: Packet type names as traces write them, by type number.
PACKET_TYPE_NAMES = ("DATA", "FIN", "STATE", "RESET", "SYN")


class Tracer(Protocol):
    """What the engine calls on a connection's tracer (``txutp.trace.TraceWriter`` is one)."""

    def event(self, now: float, name: str, **fields: Any) -> None: ...

    def packet_sent(
        self,
        now: float,
        type: str,
        seq: int,
        ack: int,
        size: int,
        payload: int,
        sack: int | None = None,
        retransmit: bool = False,
        probe: bool = False,
    ) -> None: ...

    def packet_received(
        self, now: float, type: str, seq: int, ack: int, size: int, payload: int, sack: int | None, wnd: int
    ) -> None: ...

    def metrics(self, now: float, **values: Any) -> None: ...

    def close(self, now: float | None = None) -> None: ...


class TracedConnection(Protocol):
    """What tracing reads of a connection (a :class:`~txutp.engine.UTPConnection`)."""

    initiator: bool
    transitions: list[tuple[ConnectionState, ConnectionState]]

    @property
    def bytes_in_flight(self) -> int: ...

    @property
    def bytes_delivered(self) -> int: ...

    def stats(self) -> ConnectionStats: ...


#: Called by the context for each new connection, with the time: its tracer, or ``None`` for none.
TracerFactory = Callable[[Any, float], "Tracer | None"]


def _sack_count(mask: bytes | None) -> int | None:
    return None if mask is None else sum(bin(b).count("1") for b in mask)


class ConnectionTrace:
    """The context's record of one traced connection: its tracer and what the trace last showed."""

    __slots__ = ("tracer", "_newest_seq", "_seen", "_last_flush")

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self._newest_seq: int | None = None
        self._seen: dict[str, Any] = {}
        self._last_flush = 0.0

    def received(self, pkt: Packet, size: int, now: float) -> None:
        """A packet arrived for the connection (already decoded)."""
        self.tracer.packet_received(
            now,
            PACKET_TYPE_NAMES[pkt.type],
            pkt.seq_nr,
            pkt.ack_nr,
            size,
            len(pkt.payload),
            _sack_count(pkt.sack),
            pkt.wnd_size,
        )

    def sent(self, datagrams: list[bytes], now: float) -> None:
        """The connection sent ``datagrams`` (read back from their headers)."""
        packet_sent = self.tracer.packet_sent
        for data in datagrams:
            first, ext, _, _, _, _, seq, ack = HEADER.unpack_from(data)
            ptype = first >> 4
            payload = len(data) - HEADER_SIZE
            sack = None
            if ext == EXT_SACK and len(data) >= HEADER_SIZE + 2:
                length = data[HEADER_SIZE + 1]
                sack = _sack_count(data[HEADER_SIZE + 2 : HEADER_SIZE + 2 + length])
                payload -= 2 + length
            retransmit = False
            if ptype in (ST_DATA, ST_FIN):
                newest = self._newest_seq
                if newest is not None and (newest - seq) & SEQ_MASK < 0x8000:
                    retransmit = True
                else:
                    self._newest_seq = seq
            packet_sent(
                now,
                PACKET_TYPE_NAMES[ptype] if ptype < len(PACKET_TYPE_NAMES) else str(ptype),
                seq,
                ack,
                len(data),
                payload,
                sack,
                retransmit,
                type(data) is DontFragment,
            )

    def flushed(self, conn: TracedConnection, now: float) -> None:
        """After the connection's flush: a metrics sample, and an event for each thing that changed."""
        self._last_flush = now
        stats = conn.stats()
        seen = self._seen
        tracer = self.tracer
        if "state" not in seen:
            tracer.event(now, "state", **{"from": None, "to": "syn_sent" if conn.initiator else "syn_recv"})
            seen["state"] = True
        for old, new in conn.transitions:
            tracer.event(now, "state", **{"from": old.value.lower(), "to": new.value.lower()})
        conn.transitions.clear()
        for counter, name, fields in (
            ("timeouts", "timeout", {"kind": "rto"}),
            ("tail_loss_probes", "timeout", {"kind": "tail_loss_probe"}),
            ("spurious_retransmissions", "spurious", {}),
            ("undos", "undo", {}),
        ):
            value = getattr(stats, counter)
            if value != seen.get(counter, 0):
                for _ in range(value - seen.get(counter, 0)):
                    tracer.event(now, name, **fields)
                seen[counter] = value
        if stats.mtu != seen.get("mtu"):
            if "mtu" in seen:
                tracer.event(now, "mtu", size=stats.mtu, probes=stats.mtu_probes)
            seen["mtu"] = stats.mtu
        if stats.path_errors != seen.get("path_errors", 0):
            tracer.event(now, "icmp", count=stats.path_errors)
            seen["path_errors"] = stats.path_errors
        congestion = stats.congestion
        tracer.metrics(
            now,
            cwnd=stats.cwnd,
            in_flight=conn.bytes_in_flight,
            peer_wnd=stats.peer_window,
            srtt=stats.rtt,
            rto=stats.rto,
            current_delay_us=stats.current_delay_us,
            base_delay_us=stats.base_delay_us,
            bytes_acked=conn.bytes_delivered,
            bytes_received=stats.bytes_received,
            ssthresh=getattr(congestion, "ssthresh", None),
            slow_start=getattr(congestion, "slow_start", None),
        )

    def ended(self, reason: str) -> None:
        """The connection ended (``reason``: the terminating event's name); the tracer is closed."""
        self.tracer.event(self._last_flush, "closed", reason=reason)
        self.tracer.close(self._last_flush)
