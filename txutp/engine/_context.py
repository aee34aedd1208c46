"""The demultiplexer: many uTP connections behind one UDP socket, still with no I/O.

:class:`UTPContext` is libutp's ``utp_context`` / libtorrent's
``utp_socket_manager`` in sans-IO form. Feed it every datagram with
:meth:`~UTPContext.receive_datagram`; it routes uTP packets by (address,
connection id), accepts SYNs within a backlog, answers packets for unknown
connections with rate-limited RESETs, and returns ``False`` for datagrams that
are not uTP so the caller can hand them to someone else (a DHT, say).

After a batch of datagrams (or a timer, or application calls), drain
:meth:`~UTPContext.next_event`, then send :meth:`~UTPContext.datagrams_to_send`,
then re-arm one timer at :meth:`~UTPContext.get_timer`.
"""

from __future__ import annotations

import heapq
import secrets
import struct
from collections.abc import Callable
from itertools import repeat
from typing import Any

from ._config import UTPConfig
from ._connection import UTPConnection
from ._cookies import SynCookies
from ._events import Event
from ._icmp import PathError
from ._packet import (
    HEADER,
    HEADER_SIZE,
    SEQ_MASK,
    ST_DATA,
    ST_FIN,
    ST_RESET,
    ST_STATE,
    ST_SYN,
    VERSION,
    Packet,
    PacketError,
    decode_packet,
    is_utp_datagram,
    write_packet,
)
from ._state import ConnectionState
from ._stats import ContextStats
from ._tracing import ConnectionTrace, TracerFactory

__all__ = ["ConnectionIdInUse", "ConnectionLimitError", "UTPContext"]

_RESET_MEMORY = 10.0  # seconds a (addr, id, seq) RESET is remembered (libutp rst_info)
_RESET_MEMORY_SIZE = 1000


#: The largest datagram decoded as uTP. libutp and libtorrent never send a UDP payload above
#: an Ethernet MTU (1500 - 28 on IPv4), nor does txutp (1472); anything larger is dropped
#: before the decoder sees it (a 64 KiB chain of empty extensions cost 4,000 ordinary packets).
MAX_UTP_DATAGRAM = 1500
#: Stale timer-heap entries tolerated beyond twice the live ones before the heap is compacted.
_TIMER_SLACK = 64


class ConnectionLimitError(RuntimeError):
    """An outgoing connection would exceed ``max_connections`` or ``max_connections_per_host``."""


class ConnectionIdInUse(ValueError):
    """A caller-chosen connection id clashes with a connection or an expectation towards that address."""


def _connection_id(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEQ_MASK:
        raise ValueError(f"a uTP connection id is an integer from 0 to 65535, not {value!r}")
    return value


def _class_member(id_class: tuple[int, int], bits: int) -> int:
    """A receive id of ``id_class`` (``UTPConfig.connection_id_class``) drawn from the random ``bits``."""
    index, count = id_class
    return 4 * (index + count * (bits % ((0x4000 - index + count - 1) // count)))


def _in_class(recv_id: int, id_class: tuple[int, int]) -> bool:
    return recv_id % 4 == 0 and (recv_id >> 2) % id_class[1] == id_class[0]


def _is_ipv6(addr: Any) -> bool:
    return isinstance(addr, tuple) and bool(addr) and ":" in str(addr[0])


def _count_down(counts: dict[Any, int], key: Any) -> None:
    if counts[key] > 1:
        counts[key] -= 1
    else:
        del counts[key]


_DATA_V1 = (ST_DATA << 4) | VERSION
_RUN_HEADERS: dict[int, struct.Struct] = {}


def _run_headers(segment: int) -> struct.Struct:
    """A header followed by the rest of a ``segment``-byte datagram, skipped: to decode a GRO run in one pass."""
    layout = _RUN_HEADERS.get(segment)
    if layout is None:
        if len(_RUN_HEADERS) >= 8:  # a peer may vary its sizes: keep the few in use
            _RUN_HEADERS.clear()
        layout = _RUN_HEADERS[segment] = struct.Struct(f"{HEADER.format}{segment - HEADER_SIZE}x")
    return layout


#: ``ConnectionStats`` counters kept, summed, for connections that ended (``UTPContext.ended_totals``).
ENDED_COUNTERS = (
    "packets_sent",
    "packets_received",
    "bytes_sent",
    "bytes_received",
    "retransmissions",
    "fast_retransmits",
    "timeouts",
    "tail_loss_probes",
    "spurious_retransmissions",
    "duplicate_packets",
    "dropped_packets",
    "resets_challenged",
    "path_errors",
)


def host_of(addr: Any) -> Any:
    """The host a per-host limit charges: the IP of an ``(ip, port, ...)`` address, else the address."""
    return addr[0] if isinstance(addr, tuple) and addr else addr


class UTPContext:
    """Routes datagrams of one UDP socket to :class:`UTPConnection` objects.

    ``random_bits(k)`` returns ``k`` random bits; it defaults to
    :func:`secrets.randbits` (connection ids and initial sequence numbers must
    be unpredictable) and may be seeded for reproducible simulations.
    ``accepting`` says whether incoming SYNs are accepted (a listening port)
    or answered with RESET.
    """

    def __init__(
        self,
        config: UTPConfig | None = None,
        *,
        accepting: bool = False,
        random_bits: Callable[[int], int] = secrets.randbits,
    ) -> None:
        self.config = config or UTPConfig()
        self.accepting = accepting
        self._random_bits = random_bits
        self.stats = ContextStats()
        #: Live connections by (peer address, our receive id).
        self.connections: dict[tuple[Any, int], UTPConnection] = {}
        self._half_open: dict[UTPConnection, None] = {}
        #: Connections and half-open connections per host (``host_of``), for the per-host limits.
        self._per_host: dict[Any, int] = {}
        self._half_open_per_host: dict[Any, int] = {}
        self._cookies = SynCookies(random_bits)
        #: Caller-chosen ids (``expect``): (address, the SYN's connection id) whose SYN is accepted.
        self._expected: dict[tuple[Any, int], None] = {}
        self._needs_output: dict[UTPConnection, None] = {}
        self._needs_events: dict[UTPConnection, None] = {}
        self._timers: list[tuple[float, int, UTPConnection]] = []
        self._timer_seq = 0
        self._registered: dict[UTPConnection, float] = {}
        self._out: list[tuple[bytes, Any]] = []
        self._reset_tokens = self.config.reset_rate
        self._reset_clock: float | None = None
        self._reset_memory: dict[tuple[Any, int, int], float] = {}
        #: Cleanly closed connections: (addr, recv_id) -> (send_id, seq_nr, ack_nr, expiry).
        self._closed: dict[tuple[Any, int], tuple[int, int, int, float]] = {}
        #: The counters of ``ENDED_COUNTERS`` summed over the connections this context forgot.
        self.ended_totals: dict[str, int] = {}
        #: Asked for a tracer for each new connection (``_tracing.py``); ``None``: no tracing.
        self.tracer_factory: TracerFactory | None = None
        self._traces: dict[UTPConnection, ConnectionTrace] = {}

    # ------------------------------------------------------------------ connections

    def connect(self, addr: Any, now: float, *, connection_id: int | None = None) -> UTPConnection:
        """Open a connection to ``addr``; its SYN is among the next datagrams to send.

        ``connection_id`` is the id the SYN carries (our receive id; we send on
        ``connection_id + 1``), when it was agreed with the peer out of band (the
        Portal Network does so; the peer :meth:`expect`\\ s it). It raises
        :class:`ConnectionIdInUse` if that id, or a neighbour that RESET routing
        could take for it, is in use towards ``addr`` (by a connection or an
        expectation), and ``ValueError`` if it is not in 0..65535 or not in
        ``config.connection_id_class``. By default the id is random (within that class).
        """
        config = self.config
        if len(self.connections) >= config.max_connections:
            raise ConnectionLimitError(
                f"too many uTP connections on this port (max_connections={config.max_connections})"
            )
        if self._per_host.get(host_of(addr), 0) >= config.max_connections_per_host:
            raise ConnectionLimitError(
                f"too many uTP connections with {host_of(addr)} "
                f"(max_connections_per_host={config.max_connections_per_host})"
            )
        id_class = config.connection_id_class
        if connection_id is not None:
            recv_id = _connection_id(connection_id)
            if id_class is not None and not _in_class(recv_id, id_class):
                raise ValueError(
                    f"uTP connection id {recv_id} is outside this context's connection_id_class {id_class}: "
                    f"it must be a multiple of 4 whose quarter is {id_class[0]} modulo {id_class[1]}"
                )
            if not self._id_free(addr, recv_id):
                raise ConnectionIdInUse(f"uTP connection id {recv_id} is in use towards {addr!r}")
        else:
            for _ in range(64):
                bits = self._random_bits(16)
                recv_id = bits if id_class is None else _class_member(id_class, bits)
                if self._id_free(addr, recv_id):
                    break
            else:
                raise RuntimeError(f"no free connection id towards {addr!r}")
        conn = UTPConnection.connect(
            self.config,
            peer_addr=addr,
            recv_id=recv_id,
            seq_nr=self._random_bits(16),
            now=now,
            ipv6=_is_ipv6(addr),
        )
        self._attach(conn, now)
        return conn

    def _id_free(self, addr: Any, recv_id: int) -> bool:
        """Neither id of a connection receiving on ``recv_id`` is in use, nor a neighbour a RESET could match.

        A RESET is routed by its id or, failing that, by the send id of the connection
        on either side of it; so connections towards one address keep their receive
        ids two apart, and an expectation of SYN id ``s`` holds receive id ``s + 1``.
        """
        return all((addr, (recv_id + d) & SEQ_MASK) not in self.connections for d in (-1, 0, 1, 2)) and all(
            (addr, (recv_id + d) & SEQ_MASK) not in self._expected for d in (-2, -1, 0, 1)
        )

    def expect(self, addr: Any, connection_id: int, now: float) -> None:
        """Accept one SYN from ``addr`` whose header carries ``connection_id``, listening or not.

        For ids agreed out of band: the peer :meth:`connect`\\ s with the same id.
        That SYN is accepted even when the context is not ``accepting``, whatever
        the backlog, per-host limits and SYN cookies say, if ``max_connections``
        allows (otherwise it goes unanswered and stays expected); the connection
        receives on ``connection_id + 1``, sends on ``connection_id``, and reports
        ``Connected`` as any accepted one does. The expectation is then used up;
        it does not expire by itself (:meth:`unexpect`). Raises
        :class:`ConnectionIdInUse` on a clash, as :meth:`connect` does, and
        ``ValueError`` for an id outside 0..65535. ``now`` is the time of the call,
        as everywhere.
        """
        syn_id = _connection_id(connection_id)
        if not self._id_free(addr, (syn_id + 1) & SEQ_MASK):
            raise ConnectionIdInUse(f"uTP connection id {syn_id} is in use towards {addr!r}")
        self._expected[(addr, syn_id)] = None

    def unexpect(self, addr: Any, connection_id: int) -> None:
        """Withdraw :meth:`expect` (nothing happens if it was used up or never made)."""
        self._expected.pop((addr, connection_id), None)

    def _attach(self, conn: UTPConnection, now: float) -> None:
        self.connections[(conn.peer_addr, conn.recv_id)] = conn
        host = host_of(conn.peer_addr)
        self._per_host[host] = self._per_host.get(host, 0) + 1
        conn.wakeup = self._wake
        if self.tracer_factory is not None:
            tracer = self.tracer_factory(conn, now)
            if tracer is not None:
                conn.set_tracer(tracer)
                self._traces[conn] = ConnectionTrace(tracer)
        self._wake(conn)
        self._after_activity(conn, now)

    def _wake(self, conn: UTPConnection) -> None:
        self._needs_output[conn] = None
        self._needs_events[conn] = None

    # ------------------------------------------------------------------ input

    def receive_run(self, data: bytes, segment: int, addr: Any, now: float) -> list[bytes]:
        """Process a run of datagrams from ``addr``, one every ``segment`` bytes of ``data`` (UDP GRO).

        The same as :meth:`receive_datagram` for each, but the bulk receiver's
        in-order DATA is read in place, its connection looked up once for the
        run. Returns the datagrams that are not uTP, for the caller.
        """
        if segment < HEADER_SIZE or segment > MAX_UTP_DATAGRAM:
            chunks = [data[i : i + segment] for i in range(0, len(data), segment)]
            return [d for d in chunks if not self.receive_datagram(d, addr, now)]
        other: list[bytes] = []
        unpack = HEADER.unpack_from
        connections = self.connections
        conn_id = -1
        conn: UTPConnection | None = None
        fast = 0
        end = len(data)
        begin = 0
        whole = end // segment
        if whole > 1 and data[0] == _DATA_V1 and not data[1] and segment > HEADER_SIZE:
            # The bulk receiver's run: every header decoded in one pass, taken as far as it is in order.
            conn = connections.get((addr, (data[2] << 8) | data[3]))
            if conn is not None and conn.tracer is None:
                view = memoryview(data)
                headers = _run_headers(segment).iter_unpack(view[: whole * segment])
                fast = conn.receive_in_order_run(headers, view, segment, now)
                begin = fast * segment
        for start in range(begin, end, segment):
            stop = start + segment
            if data[start] == _DATA_V1 and not data[start + 1] and stop <= end:
                _, _, cid, ts, _, wnd, seq, ack = unpack(data, start)
                if cid != conn_id:
                    conn_id = cid
                    conn = connections.get((addr, cid))
                    if conn is not None and conn.tracer is not None:
                        conn = None  # a traced connection takes the full path
                payload = data[start + HEADER_SIZE : stop]
                if conn is not None and conn.receive_in_order_data(ts, wnd, seq, ack, payload, now):
                    fast += 1
                    continue
                conn_id = -1  # the full path may change the table
            if not self.receive_datagram(data[start:stop], addr, now):
                other.append(data[start:stop])
        self.stats.datagrams_received += fast
        return other

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> bool:
        """Process one datagram from ``addr``; return ``False`` if it is not uTP.

        Datagrams that are not uTP are left untouched for the caller (and counted
        in ``stats.not_utp``); nothing here raises for bad input.
        """
        stats = self.stats
        stats.datagrams_received += 1
        if not is_utp_datagram(data):
            stats.not_utp += 1
            return False
        if len(data) > MAX_UTP_DATAGRAM:
            stats.oversized += 1  # no peer sends this: not worth decoding
            return True
        if data[0] == _DATA_V1 and not data[1]:
            # The bulk receiver's case: in-order DATA without extensions, decoded in place.
            _, _, cid, ts, _, wnd, seq, ack = HEADER.unpack_from(data)
            conn = self.connections.get((addr, cid))
            if (
                conn is not None
                and conn.tracer is None
                and conn.receive_in_order_data(ts, wnd, seq, ack, data[HEADER_SIZE:], now)
            ):
                return True
        try:
            pkt = decode_packet(data)
        except PacketError:
            stats.not_utp += 1
            return False
        cid = pkt.connection_id
        ptype = pkt.type
        if ptype == ST_SYN:
            self._on_syn(pkt, addr, now)
            return True
        conn = self.connections.get((addr, cid))
        if conn is None and ptype == ST_RESET:
            # libutp sends RESET with its send id, libtorrent with ours: accept either.
            for candidate in ((addr, (cid - 1) & SEQ_MASK), (addr, (cid + 1) & SEQ_MASK)):
                c = self.connections.get(candidate)
                if c is not None and c.send_id == cid:
                    conn = c
                    break
        if conn is None:
            if ptype != ST_RESET and now < self._cookies.issued_until and self._accept_cookie(pkt, addr, now):
                return True
            stats.unknown_connection += 1
            if ptype != ST_RESET and not self._answer_closed(pkt, addr, now):
                self._reply_reset(pkt.connection_id, pkt.seq_nr, addr, now)
            return True
        if conn.tracer is not None:
            self._traces[conn].received(pkt, len(data), now)
        conn.receive_packet(pkt, now)
        if self._half_open and conn in self._half_open and conn.state is not ConnectionState.SYN_RECV:
            self._leave_half_open(conn)
        return True

    def _on_syn(self, pkt: Packet, addr: Any, now: float) -> None:
        recv_id = (pkt.connection_id + 1) & SEQ_MASK
        existing = self.connections.get((addr, recv_id))
        if existing is not None:
            if existing.send_id == pkt.connection_id and not existing.initiator:
                existing.receive_packet(pkt, now)  # a repeated SYN
            else:
                self.stats.invalid_packets += 1
            return
        config = self.config
        stats = self.stats
        if self._expected and (addr, pkt.connection_id) in self._expected:
            # Agreed out of band: not charged to the backlog, so a SYN flood cannot evict it.
            if len(self.connections) >= config.max_connections:
                stats.syns_refused += 1
                return
            del self._expected[(addr, pkt.connection_id)]
            conn = UTPConnection.accept(
                config, peer_addr=addr, syn=pkt, seq_nr=self._random_bits(16), now=now, ipv6=_is_ipv6(addr)
            )
            stats.syns_accepted += 1
            self._attach(conn, now)
            return
        if not self.accepting:
            stats.syns_refused += 1
            self._reply_reset(pkt.connection_id, pkt.seq_nr, addr, now)
            return
        if len(self.connections) >= config.max_connections:
            # At the limit, leave SYNs unanswered as libutp and libtorrent do.
            stats.syns_refused += 1
            return
        host = host_of(addr)
        if self._per_host.get(host, 0) >= config.max_connections_per_host:
            stats.syns_refused += 1
            stats.host_limit_refused += 1
            self._reply_reset(pkt.connection_id, pkt.seq_nr, addr, now)
            return
        host_full = self._half_open_per_host.get(host, 0) >= config.max_half_open_per_host
        backlog_full = len(self._half_open) >= config.backlog
        mode = config.syn_cookies
        if mode == "always" or (mode == "auto" and (host_full or backlog_full)):
            self._send_cookie(pkt, addr, now)
            return
        if host_full:
            stats.syns_refused += 1  # "never": this host has its share of the backlog
            return
        if backlog_full:
            # The oldest unconfirmed connection makes room, so a flood of spoofed SYNs cannot
            # lock genuine clients out for long.
            oldest = next(iter(self._half_open))
            oldest.discard()
            self._leave_half_open(oldest)
            self._forget(oldest, now)
            self._needs_output.pop(oldest, None)  # it has nothing to say: keep no reference
            self._needs_events.pop(oldest, None)
            stats.half_open_evicted += 1
        conn = UTPConnection.accept(
            config,
            peer_addr=addr,
            syn=pkt,
            seq_nr=self._random_bits(16),
            now=now,
            ipv6=_is_ipv6(addr),
        )
        self._half_open[conn] = None
        self._half_open_per_host[host] = self._half_open_per_host.get(host, 0) + 1
        stats.syns_accepted += 1
        self._attach(conn, now)

    def _send_cookie(self, syn: Packet, addr: Any, now: float) -> None:
        """Answer ``syn`` with a SYN-ACK whose sequence number is a cookie; keep nothing."""
        isn = self._cookies.issue(addr, (syn.connection_id + 1) & SEQ_MASK, syn.seq_nr, now)
        self.stats.syn_cookies_sent += 1
        wnd = self.config.recv_buffer_size
        self._out.append((write_packet(ST_STATE, syn.connection_id, now, 0, wnd, isn, syn.seq_nr), addr))

    def _accept_cookie(self, pkt: Packet, addr: Any, now: float) -> bool:
        """If ``pkt`` (no SYN or RESET, for no known connection, cookies out) returns one, act on it."""
        if not self.accepting:
            return False
        recv_id = pkt.connection_id
        found = self._cookies.check(addr, recv_id, pkt.seq_nr, pkt.ack_nr, pkt.type == ST_STATE, now)
        if found is None:
            return False
        isn, ahead = found
        if ahead:
            self.stats.unknown_connection += 1  # overtook the packet that confirms: no RESET
            return True
        config = self.config
        stats = self.stats
        if len(self.connections) >= config.max_connections:
            return False
        if self._per_host.get(host_of(addr), 0) >= config.max_connections_per_host:
            stats.host_limit_refused += 1
            return False
        conn = UTPConnection.accept_cookie(
            config,
            peer_addr=addr,
            recv_id=recv_id,
            syn_seq=pkt.seq_nr - 1,
            seq_nr=isn,
            now=now,
            ipv6=_is_ipv6(addr),
        )
        stats.syn_cookies_accepted += 1
        stats.syns_accepted += 1
        self._attach(conn, now)
        conn.receive_packet(pkt, now)
        return True

    def _leave_half_open(self, conn: UTPConnection) -> None:
        if conn in self._half_open:
            del self._half_open[conn]
            _count_down(self._half_open_per_host, host_of(conn.peer_addr))

    def _answer_closed(self, pkt: Packet, addr: Any, now: float) -> bool:
        """A late packet of a connection closed cleanly: re-ACK it if we had it; True if handled."""
        closed = self._closed
        while closed:  # expire the oldest records first
            oldest = next(iter(closed))
            if closed[oldest][3] > now:
                break
            del closed[oldest]
        record = closed.get((addr, pkt.connection_id))
        if record is None:
            return False
        send_id, seq_nr, ack_nr, _ = record
        if pkt.type in (ST_DATA, ST_FIN) and ((ack_nr - pkt.seq_nr) & SEQ_MASK) < 0x8000:
            if self._take_reply_token(now):
                self._out.append((write_packet(ST_STATE, send_id, now, 0, 0, seq_nr, ack_nr), addr))
            return True
        return pkt.type == ST_STATE  # its ACKs and keep-alives need no answer; anything new gets a RESET

    def _take_reply_token(self, now: float) -> bool:
        """The token bucket shared by RESETs and TIME_WAIT ACKs."""
        if self._reset_clock is not None:
            self._reset_tokens = min(
                self.config.reset_rate, self._reset_tokens + (now - self._reset_clock) * self.config.reset_rate
            )
        self._reset_clock = now
        if self._reset_tokens < 1:
            return False
        self._reset_tokens -= 1
        return True

    def _reply_reset(self, conn_id: int, seq_nr: int, addr: Any, now: float) -> None:
        """RESET for a packet of an unknown connection: one per (addr, id, seq), rate-limited."""
        key = (addr, conn_id, seq_nr)
        memory = self._reset_memory
        seen = memory.get(key)
        if seen is not None and now - seen < _RESET_MEMORY:
            self.stats.resets_suppressed += 1
            return
        if not self._take_reply_token(now):
            self.stats.resets_suppressed += 1
            return
        if len(memory) >= _RESET_MEMORY_SIZE:
            for k in [k for k, t in memory.items() if now - t >= _RESET_MEMORY] or [next(iter(memory))]:
                del memory[k]
        memory[key] = now
        self.stats.resets_sent += 1
        self._out.append((write_packet(ST_RESET, conn_id, now, 0, 0, self._random_bits(16), seq_nr), addr))

    def datagram_too_big(self, data: bytes, addr: Any, now: float) -> None:
        """Sending ``data`` (one of ours) to ``addr`` failed with ``EMSGSIZE``.

        The I/O layer calls this; a path MTU probe then counts as lost, and a
        regular packet is resent after the packet size comes down.
        """
        if len(data) < HEADER_SIZE:
            return
        _, _, send_id, _, _, _, seq_nr, _ = HEADER.unpack_from(data)
        for recv_id in ((send_id - 1) & SEQ_MASK, (send_id + 1) & SEQ_MASK):
            conn = self.connections.get((addr, recv_id))
            if conn is not None and conn.send_id == send_id:
                conn.datagram_too_big(seq_nr, len(data), now)
                return

    def path_error(self, data: bytes, addr: Any, error: PathError, now: float) -> bool:
        """The network reported ``error`` (ICMP) about ``data``, a datagram we sent to ``addr``.

        ``data`` is what the error quotes of it (at least the 20-byte header is
        needed). Returns whether a connection took it (see ``_icmp.py``); the rest
        are counted in ``stats.path_errors_unmatched`` and dropped.
        """
        conn = None
        ptype = seq_nr = 0
        if len(data) >= HEADER_SIZE:
            type_ver, _, conn_id, _, _, _, seq_nr, _ = HEADER.unpack_from(data)
            ptype = type_ver >> 4
            if (type_ver & 0x0F) == VERSION:
                if ptype == ST_SYN:
                    conn = self.connections.get((addr, conn_id))  # a SYN carries our receive id
                else:
                    for recv_id in ((conn_id - 1) & SEQ_MASK, (conn_id + 1) & SEQ_MASK):
                        conn = self.connections.get((addr, recv_id))
                        if conn is not None and conn.send_id == conn_id:
                            break
                        conn = None
        if conn is None or not conn.path_error(error, ptype, seq_nr, now):
            self.stats.path_errors_unmatched += 1
            return False
        self.stats.path_errors += 1
        self._after_activity(conn, now)
        return True

    # ------------------------------------------------------------------ output

    def next_event(self) -> tuple[UTPConnection, Event] | None:
        """Return the next ``(connection, event)`` pair, or ``None``.

        An accepted connection reports :class:`~txutp.engine.Connected` once the
        peer proved it saw our SYN-ACK; that is the moment to hand it to the
        application.
        """
        pending = self._needs_events
        while pending:
            conn = next(iter(pending))
            event = conn.next_event()
            if event is not None:
                return conn, event
            del pending[conn]
        return None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        """Collect every datagram due now, as ``(data, address)`` pairs."""
        out = self._out
        self._out = []
        while self._needs_output:
            batch = list(self._needs_output)
            self._needs_output.clear()
            for conn in batch:
                addr = conn.peer_addr
                datagrams = conn.datagrams_to_send(now)
                out += zip(datagrams, repeat(addr))
                if conn.tracer is not None:
                    trace = self._traces[conn]
                    trace.sent(datagrams, now)
                    trace.flushed(conn, now)
                self._after_activity(conn, now)
        return out

    def _after_activity(self, conn: UTPConnection, now: float) -> None:
        if conn.state is ConnectionState.CLOSED:
            self._forget(conn, now)
            return
        deadline = conn.get_timer()
        if deadline is None:
            return
        registered = self._registered.get(conn)
        if registered is None or deadline < registered:
            self._registered[conn] = deadline
            self._timer_seq += 1
            heapq.heappush(self._timers, (deadline, self._timer_seq, conn))
            if len(self._timers) > 2 * len(self._registered) + _TIMER_SLACK:
                self._compact_timers()

    def _compact_timers(self) -> None:
        """Drop superseded heap entries (as Twisted's reactor and asyncio do).

        A forgotten or evicted connection must not stay referenced by an old entry
        until it reaches the top: under a SYN flood that pinned every evicted
        half-open connection for its whole timeout.
        """
        registered = self._registered
        timers = self._timers  # in place: handle_timer may be iterating over it
        timers[:] = [entry for entry in timers if registered.get(entry[2]) == entry[0]]
        heapq.heapify(timers)

    def _forget(self, conn: UTPConnection, now: float) -> None:
        trace = self._traces.pop(conn, None)
        if trace is not None:
            trace.flushed(conn, now)
            trace.ended(conn.state.value.lower())
            conn.set_tracer(None)
        key = (conn.peer_addr, conn.recv_id)
        if self.connections.get(key) is conn:
            del self.connections[key]
            stats = conn.stats()
            totals = self.ended_totals
            for name in ENDED_COUNTERS:
                totals[name] = totals.get(name, 0) + getattr(stats, name)
            self._leave_half_open(conn)
            _count_down(self._per_host, host_of(conn.peer_addr))
            if conn.lingered:
                # TIME_WAIT: remember enough to re-ACK the peer's late retransmissions.
                closed = self._closed
                closed[key] = (conn.send_id, conn.final_seq_nr, conn.final_ack_nr, now + self.config.time_wait)
                while len(closed) > self.config.max_connections:
                    del closed[next(iter(closed))]
        if (
            self._registered.pop(conn, None) is not None
            and len(self._timers) > 2 * len(self._registered) + _TIMER_SLACK
        ):
            self._compact_timers()

    def get_timer(self) -> float | None:
        """The earliest deadline of any connection, or ``None``."""
        timers = self._timers
        registered = self._registered
        while timers:
            deadline, _, conn = timers[0]
            if registered.get(conn) == deadline:
                return deadline
            heapq.heappop(timers)
        return None

    def handle_timer(self, now: float) -> None:
        """Run the timers of every connection due at ``now``."""
        timers = self._timers
        registered = self._registered
        while timers and timers[0][0] <= now:
            deadline, _, conn = heapq.heappop(timers)
            if registered.get(conn) != deadline:
                continue
            del registered[conn]
            conn.handle_timer(now)
            self._wake(conn)
            self._after_activity(conn, now)

    @property
    def half_open(self) -> int:
        """Accepted connections still waiting for the peer's confirmation."""
        for conn in [c for c in self._half_open if c.state is not ConnectionState.SYN_RECV]:
            self._leave_half_open(conn)
        return len(self._half_open)
