"""One uTP connection as a pure state machine.

Inputs: :meth:`UTPConnection.receive_packet` (a decoded packet), the user API
(:meth:`send`, :meth:`shutdown_write`, :meth:`close`, :meth:`abort`,
:meth:`pause_reading`, :meth:`resume_reading`) and :meth:`handle_timer`.
Outputs are pulled: :meth:`datagrams_to_send`, :meth:`next_event` and
:meth:`get_timer` (an absolute deadline). Every call takes ``now`` in seconds;
the connection never reads a clock and does no I/O.

Packets are built lazily in :meth:`datagrams_to_send`, so everything a batch
of received datagrams calls for (ACKs, window updates, new data) goes out once,
with fresh timestamps: that is the ACK coalescing the I/O layer relies on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._config import MAX_DATAGRAM_IPV4, MAX_DATAGRAM_IPV6, UTPConfig
from ._congestion import CongestionController, create_congestion_controller
from ._events import (
    Connected,
    ConnectionAborted,
    ConnectionClosed,
    ConnectionReset,
    ConnectionTimedOut,
    DataReceived,
    EndOfStream,
    Event,
    Writable,
)
from ._mtu import DontFragment, MTUSearch
from ._packet import (
    HEADER,
    HEADER_SIZE,
    ST_DATA,
    ST_FIN,
    ST_RESET,
    ST_STATE,
    ST_SYN,
    Packet,
    encode_header,
    sack_bitmask,
)
from ._rtt import RTTEstimator
from ._state import ConnectionState, Input, next_state

__all__ = ["ConnectionStats", "UTPConnection"]

_M16 = 0xFFFF
_M32 = 0xFFFFFFFF
_NO_SAMPLE = 0x7FFFFFFF  # uTorrent bug: treated like 0, "no sample"
#: Slack below the oldest unacked packet allowed in a peer's ack_nr (libutp ACK_NR_ALLOWED_WINDOW).
_ACK_SLACK = 3
#: Most packets resent by one selective ACK (libutp resends at most 4).
_MAX_SACK_RESENDS = 4
#: Initial guess of the peer's window before it advertised one (libutp: 255 * 1435).
_INITIAL_PEER_WINDOW = 255 * 1435
#: Resends of an initiator's bare confirming ACK (server-speaks-first support).
_CONFIRM_RESENDS = 3

_pack = HEADER.pack
_LIVE_SENDING = frozenset(
    {ConnectionState.CONNECTED, ConnectionState.FIN_SENT, ConnectionState.FIN_RECEIVED, ConnectionState.CLOSING}
)
_READING = frozenset({ConnectionState.CONNECTED, ConnectionState.FIN_SENT})


@dataclass(frozen=True)
class ConnectionStats:
    """A snapshot of one connection's counters and estimates (times in seconds)."""

    state: str
    #: Smoothed round-trip time, ``None`` before the first sample.
    rtt: float | None
    rto: float
    #: Congestion window and the peer's advertised window, in bytes.
    cwnd: int
    peer_window: int
    #: UDP payload size of a full packet now (path MTU discovery moves it).
    mtu: int
    mtu_probes: int
    bytes_sent: int
    bytes_received: int
    packets_sent: int
    packets_received: int
    retransmissions: int
    fast_retransmits: int
    timeouts: int
    duplicate_packets: int
    dropped_packets: int
    #: Queueing delay our packets meet (one-way delay above the base delay), µs, as the
    #: congestion controller filters it; ``None`` before the first sample.
    current_delay_us: int | None
    #: The base one-way delay as measured (raw µs, clock offset included).
    base_delay_us: int | None
    #: Controller-specific figures (ssthresh, slow start, slowdowns for LEDBAT).
    congestion: dict[str, float]


def _optional_int(value: float | None) -> int | None:
    return None if value is None or value < 0 else int(value)


class _Sent:
    """A DATA or FIN packet we sent and the peer has not acknowledged yet."""

    __slots__ = ("payload", "is_fin", "sent_at", "transmissions", "sacked", "lost", "fast_resent", "tx", "probe")

    def __init__(self, payload: bytes, is_fin: bool, now: float) -> None:
        self.payload = payload
        self.is_fin = is_fin
        self.sent_at = now
        self.transmissions = 1
        self.sacked = False
        self.lost = False
        self.fast_resent = False
        self.tx = 0  # transmission order of the latest transmission
        self.probe = False  # a path MTU probe whose fate is still unknown


class UTPConnection:
    """A uTP connection (BEP 29) between us and one peer, with no I/O of its own.

    Create one with :meth:`connect` (initiator) or :meth:`accept` (from a SYN);
    :class:`~txutp.engine.UTPContext` does both and routes datagrams to it.
    """

    __slots__ = (
        "_ack_nr",
        "_ack_pending",
        "_confirm_deadline",
        "_confirm_tries",
        "_deliver",
        "_deliver_bytes",
        "_dup_acks",
        "_eof_delivered",
        "_eof_seq",
        "_events",
        "_fast_credit",
        "_fin_acked",
        "_fin_seq",
        "_handshake_deadline",
        "_held",
        "_held_bytes",
        "_idle_since",
        "_in_flight_bytes",
        "_inflight",
        "_keepalive_due",
        "_last_delay_sample",
        "_last_send",
        "_linger_deadline",
        "_mtu",
        "_nagle_seq",
        "_next_reverse_sample",
        "_out",
        "_peer_wnd",
        "_probe_deadline",
        "_probe_interval",
        "_probe_seq",
        "_read_discard",
        "_read_paused",
        "_reorder",
        "_reorder_bytes",
        "_reply_micro",
        "_resend",
        "_rto_deadline",
        "_rtt",
        "_sent_window",
        "_seq_nr",
        "_snd_una",
        "_syn_sent_at",
        "_syn_seq",
        "_syn_tries",
        "_timeouts",
        "_tx_count",
        "_unacked_in_order",
        "_unsent",
        "_want_writable",
        "_write_closed",
        "bytes_received",
        "bytes_sent",
        "cc",
        "config",
        "dropped_packets",
        "duplicate_packets",
        "fast_retransmits",
        "initiator",
        "lingered",
        "mss",
        "mtu_probes",
        "packet_size",
        "packets_received",
        "packets_sent",
        "peer_addr",
        "recv_id",
        "retransmissions",
        "send_id",
        "state",
        "timeout_count",
        "wakeup",
    )

    # ------------------------------------------------------------------ creation

    def __init__(
        self,
        config: UTPConfig,
        *,
        peer_addr: Any,
        recv_id: int,
        send_id: int,
        seq_nr: int,
        initiator: bool,
        now: float,
        ipv6: bool = False,
    ) -> None:
        self.config = config
        self.peer_addr = peer_addr
        self.recv_id = recv_id & _M16
        self.send_id = send_id & _M16
        self.initiator = initiator
        self.state = ConnectionState.SYN_SENT if initiator else ConnectionState.SYN_RECV
        self.packet_size = config.packet_size(ipv6)
        self.mss = self.packet_size - HEADER_SIZE
        self._mtu: MTUSearch | None = None
        if config.mtu_discovery:
            self._mtu = MTUSearch(
                default=self.packet_size,
                floor=config.mtu_floor_ipv6 if ipv6 else config.mtu_floor_ipv4,
                ceiling=MAX_DATAGRAM_IPV6 if ipv6 else MAX_DATAGRAM_IPV4,
                interval=config.mtu_search_interval,
            )
        self._probe_seq: int | None = None  # the path MTU probe in flight
        self.mtu_probes = 0
        #: Closed cleanly after lingering (the context keeps a TIME_WAIT record then).
        self.lingered = False
        #: Called when the connection may have datagrams or events to collect.
        self.wakeup: Callable[[UTPConnection], None] | None = None

        # Sending side.
        self._seq_nr = seq_nr & _M16  # next sequence number to use
        self._snd_una = self._seq_nr  # oldest unacknowledged
        self._inflight: dict[int, _Sent] = {}
        self._tx_count = 0  # transmissions so far, to order them
        self._in_flight_bytes = 0
        self._resend: deque[int] = deque()
        self._fast_credit = 0  # retransmissions allowed beyond the window right after a loss
        self._unsent = bytearray()
        self._write_closed = False
        self._fin_seq: int | None = None
        self._fin_acked = False
        self._peer_wnd = _INITIAL_PEER_WINDOW
        self._want_writable = False
        self._dup_acks = 0
        self._nagle_seq: int | None = None  # an undersized packet in flight
        self._timeouts = 0
        self._rto_deadline: float | None = None
        self._idle_since: float | None = now  # when the last byte in flight was acknowledged
        self._probe_deadline: float | None = None
        self._probe_interval = config.initial_rto
        self._last_send = now
        self._rtt = RTTEstimator(config.initial_rto, config.min_rto, config.max_rto)
        self.cc: CongestionController = create_congestion_controller(
            config.congestion_control,
            mss=self.mss,
            initial_cwnd=config.initial_cwnd,
            max_cwnd=config.send_buffer_size,
            config=config,
        )

        # Receiving side.
        self._ack_nr = 0  # last in-order sequence number received
        self._reorder: dict[int, bytes] = {}
        self._reorder_bytes = 0
        self._eof_seq: int | None = None
        self._eof_delivered = False
        self._read_paused = False
        self._read_discard = False
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._deliver: list[bytes] = []
        self._deliver_bytes = 0
        self._ack_pending = False
        self._unacked_in_order = 0  # in-order packets received since our last ACK
        self._sent_window = config.recv_buffer_size
        self._reply_micro = 0
        self._next_reverse_sample = 0.0
        self._last_delay_sample: int | None = None

        # Handshake and teardown.
        self._syn_seq = 0
        self._syn_sent_at = now
        self._syn_tries = 0
        self._handshake_deadline: float | None = None
        self._confirm_deadline: float | None = None
        self._confirm_tries = 0
        self._linger_deadline: float | None = None
        self._keepalive_due = False

        self._events: deque[Event] = deque()
        self._out: list[bytes] = []

        # Counters.
        self.bytes_sent = 0
        self.bytes_received = 0
        self.packets_sent = 0
        self.packets_received = 0
        self.retransmissions = 0
        self.fast_retransmits = 0
        self.timeout_count = 0
        self.duplicate_packets = 0
        self.dropped_packets = 0

    @classmethod
    def connect(
        cls,
        config: UTPConfig,
        *,
        peer_addr: Any,
        recv_id: int,
        seq_nr: int,
        now: float,
        ipv6: bool = False,
    ) -> UTPConnection:
        """Start an outgoing connection: the SYN carries ``recv_id`` and sequence ``seq_nr``."""
        conn = cls(
            config,
            peer_addr=peer_addr,
            recv_id=recv_id,
            send_id=recv_id + 1,
            seq_nr=seq_nr,
            initiator=True,
            now=now,
            ipv6=ipv6,
        )
        conn._syn_seq = conn._seq_nr
        conn._seq_nr = (conn._seq_nr + 1) & _M16  # the SYN consumes one sequence number
        conn._snd_una = conn._seq_nr
        conn._send_syn(now)
        return conn

    @classmethod
    def accept(
        cls,
        config: UTPConfig,
        *,
        peer_addr: Any,
        syn: Packet,
        seq_nr: int,
        now: float,
        ipv6: bool = False,
    ) -> UTPConnection:
        """Accept a SYN: reply with the SYN-ACK and wait (``SYN_RECV``) for the peer's proof."""
        conn = cls(
            config,
            peer_addr=peer_addr,
            recv_id=syn.connection_id + 1,
            send_id=syn.connection_id,
            seq_nr=seq_nr,
            initiator=False,
            now=now,
            ipv6=ipv6,
        )
        conn._syn_seq = syn.seq_nr
        conn._ack_nr = syn.seq_nr
        conn._note_timestamp(syn, now)
        conn._handshake_deadline = now + config.syn_recv_timeout
        conn._send_syn_ack(now)
        return conn

    # ------------------------------------------------------------------ user API

    @property
    def send_buffer_free(self) -> int:
        """How many more bytes :meth:`send` would accept now."""
        return max(0, self.config.send_buffer_size - len(self._unsent))

    @property
    def bytes_unsent(self) -> int:
        """Bytes accepted by :meth:`send` and not yet put into packets."""
        return len(self._unsent)

    @property
    def bytes_in_flight(self) -> int:
        """Payload bytes sent and not yet acknowledged, nor selectively acknowledged, nor presumed lost."""
        return self._in_flight_bytes

    @property
    def read_paused(self) -> bool:
        return self._read_paused

    def send(self, data: bytes, now: float) -> int:
        """Queue ``data``; return how many bytes fit in the send buffer.

        When fewer than ``len(data)`` are taken, a :class:`Writable` event follows
        once the buffer drains. Raise ``ValueError`` after :meth:`shutdown_write`.
        """
        if self._write_closed or self.state is ConnectionState.CLOSED:
            raise ValueError("cannot send: the write side is closed")
        room = self.config.send_buffer_size - len(self._unsent)
        n = len(data)
        if n >= room:
            # The buffer is full: say when it has room again.
            self._want_writable = True
            if n > room:
                n = max(room, 0)
                data = data[:n]
        if n:
            self._unsent += data
            self._wake()
        return n

    def shutdown_write(self, now: float) -> None:
        """Half-close: send a FIN after the queued data; keep reading."""
        if self._write_closed or self.state in (ConnectionState.CLOSED, ConnectionState.LINGER):
            return
        if self.state in (ConnectionState.SYN_SENT, ConnectionState.SYN_RECV):
            self._write_closed = True  # the FIN follows once connected
            return
        self._write_closed = True
        self._fire(Input.SHUTDOWN_WRITE, now)
        self._wake()

    def close(self, now: float) -> None:
        """Full close: FIN after the queued data; incoming data is acknowledged and discarded.

        Before the handshake completes this aborts. A :class:`ConnectionClosed`
        event follows once our FIN is acknowledged.
        """
        if self.state in (ConnectionState.SYN_SENT, ConnectionState.SYN_RECV):
            self.abort(now)
            return
        if self.state in (ConnectionState.CLOSED, ConnectionState.LINGER, ConnectionState.CLOSING):
            return
        self._write_closed = True
        self._read_discard = True
        self._held.clear()
        self._held_bytes = 0
        self._fire(Input.CLOSE, now)
        self._wake()

    def discard(self) -> None:
        """Drop an unconfirmed (``SYN_RECV``) connection silently: no packet, no event."""
        if self.state is ConnectionState.SYN_RECV:
            self._fire(Input.TIMED_OUT, 0.0)
            self._out.clear()

    def abort(self, now: float) -> None:
        """Send a RESET and end the connection at once."""
        if self.state is ConnectionState.CLOSED:
            return
        if self.state is not ConnectionState.LINGER:
            self._out.append(
                _pack(
                    (ST_RESET << 4) | 1,
                    0,
                    self.send_id,
                    int(now * 1_000_000) & _M32,
                    self._reply_micro,
                    0,
                    self._seq_nr,
                    self._ack_nr,
                )
            )
            self.packets_sent += 1
        self._terminate(Input.ABORT, ConnectionAborted(), now)

    def pause_reading(self) -> None:
        """Stop delivering data; our advertised window closes as data arrives."""
        self._read_paused = True

    def resume_reading(self, now: float) -> None:
        """Deliver held data and, if the window had closed, tell the peer at once."""
        if not self._read_paused:
            return
        self._read_paused = False
        if self._held:
            self._deliver.extend(self._held)
            self._deliver_bytes += self._held_bytes
            self._held.clear()
            self._held_bytes = 0
        if self._eof_seq is not None and self._ack_nr == self._eof_seq and not self._eof_delivered:
            self._deliver_eof(now)
        if self._sent_window < self.mss * 2 and self._receive_window() > self._sent_window:
            self._ack_pending = True  # immediate window update
        self._wake()

    # ------------------------------------------------------------------ outputs

    def next_event(self) -> Event | None:
        """Return the next pending event, or ``None``."""
        events = self._events
        if not events:
            if not self._deliver:
                return None
            self._flush_delivery()
        return events.popleft()

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Build and return every datagram due now (data, retransmissions, ACKs)."""
        state = self.state
        if state in _LIVE_SENDING:
            self._fill(now)
        if self._ack_pending and state is not ConnectionState.CLOSED and state is not ConnectionState.SYN_SENT:
            if state is ConnectionState.SYN_RECV:
                self._send_syn_ack(now)
            else:
                self._send_state(now)
        elif self._keepalive_due:
            self._keepalive_due = False
            if state in _LIVE_SENDING:
                self._send_state(now, keepalive=True)
        out = self._out
        if out:
            self._out = []
            self._last_send = now
        return out

    def get_timer(self) -> float | None:
        """The earliest absolute time :meth:`handle_timer` must run, or ``None``."""
        state = self.state
        if state is ConnectionState.CLOSED:
            return None
        if state is ConnectionState.LINGER:
            return self._linger_deadline
        if state is ConnectionState.SYN_RECV:
            return self._handshake_deadline
        if state is ConnectionState.SYN_SENT:
            return self._syn_sent_at + self.config.syn_timeout * (1 << self._syn_tries)
        t = self._rto_deadline
        for other in (self._probe_deadline, self._confirm_deadline):
            if other is not None and (t is None or other < t):
                t = other
        keepalive = self._last_send + self.config.keepalive_interval
        if t is None or keepalive < t:
            t = keepalive
        return t

    def handle_timer(self, now: float) -> None:
        """Run whatever timers are due at ``now`` (early calls are harmless)."""
        state = self.state
        if state is ConnectionState.CLOSED:
            return
        if state is ConnectionState.LINGER:
            if self._linger_deadline is not None and now >= self._linger_deadline:
                self._fire(Input.LINGER_EXPIRED, now)
                self.lingered = True
            return
        if state is ConnectionState.SYN_RECV:
            if self._handshake_deadline is not None and now >= self._handshake_deadline:
                # Never confirmed: vanish silently (libutp e81b42d); nobody above knew it.
                self._fire(Input.TIMED_OUT, now)
            return
        if state is ConnectionState.SYN_SENT:
            if now >= self._syn_sent_at + self.config.syn_timeout * (1 << self._syn_tries):
                if self._syn_tries >= self.config.syn_retries:
                    self._terminate(Input.TIMED_OUT, ConnectionTimedOut(during_handshake=True), now)
                else:
                    self._syn_tries += 1
                    self._send_syn(now, retry=True)
            return
        if self._rto_deadline is not None and now >= self._rto_deadline:
            self._on_rto(now)
            if self.state is ConnectionState.CLOSED:
                return
        if self._probe_deadline is not None and now >= self._probe_deadline:
            self._probe_deadline = None
            self._send_zero_window_probe(now)
        if self._confirm_deadline is not None and now >= self._confirm_deadline:
            self._confirm_tries += 1
            if self._confirm_tries > _CONFIRM_RESENDS or self._seq_nr != (self._syn_seq + 1) & _M16:
                # Given up, or our data (which carries the same proof) took over.
                self._confirm_deadline = None
            else:
                self._ack_pending = True
                self._confirm_deadline = now + self._rtt.rto * (1 << self._confirm_tries)
        if now >= self._last_send + self.config.keepalive_interval:
            self._keepalive_due = True
            self._last_send = now
        self._wake()

    @property
    def final_seq_nr(self) -> int:
        """Our next sequence number (what a STATE from us carries)."""
        return self._seq_nr

    @property
    def final_ack_nr(self) -> int:
        """The last in-order sequence number received from the peer."""
        return self._ack_nr

    def stats(self) -> ConnectionStats:
        """Return a snapshot of this connection's counters and estimates."""
        congestion = self.cc.stats()
        return ConnectionStats(
            state=self.state.value,
            rtt=self._rtt.srtt,
            rto=self._rtt.rto,
            cwnd=self.cc.cwnd,
            peer_window=self._peer_wnd,
            mtu=self.packet_size,
            mtu_probes=self.mtu_probes,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            packets_sent=self.packets_sent,
            packets_received=self.packets_received,
            retransmissions=self.retransmissions,
            fast_retransmits=self.fast_retransmits,
            timeouts=self.timeout_count,
            duplicate_packets=self.duplicate_packets,
            dropped_packets=self.dropped_packets,
            current_delay_us=_optional_int(congestion.get("current_delay_us")),
            base_delay_us=_optional_int(congestion.get("base_delay_us")),
            congestion=congestion,
        )

    # ------------------------------------------------------------------ receiving

    def ack_nr_acceptable(self, ack_nr: int, *, reset: bool = False) -> bool:
        """The DRDoS check: does ``ack_nr`` fall within what we actually sent?

        Allowed: from ``ACK_SLACK`` below the oldest unacknowledged packet up to
        the last sequence number used (up to the next one for a RESET, which may
        answer a STATE packet).
        """
        last = (self._seq_nr - 1) & _M16
        back = (last - ack_nr) & _M16
        window = ((self._seq_nr - self._snd_una) & _M16) + _ACK_SLACK
        if back <= window:
            return True
        return reset and ack_nr == self._seq_nr

    def receive_packet(self, pkt: Packet, now: float) -> None:
        """Process one packet addressed to this connection (already routed by id and address)."""
        state = self.state
        if state is ConnectionState.CLOSED:
            return
        ptype = pkt.type
        self.packets_received += 1
        if ptype == ST_SYN:
            # A duplicate SYN: our SYN-ACK was lost; ACK it again (while unconfirmed).
            if state is ConnectionState.SYN_RECV and pkt.seq_nr == self._syn_seq:
                self._ack_pending = True
                self._wake()
            else:
                self.dropped_packets += 1
            return
        if ptype == ST_RESET:
            if self.ack_nr_acceptable(pkt.ack_nr, reset=True):
                if state is ConnectionState.LINGER:
                    self._fire(Input.RESET_RECEIVED, now)
                elif (
                    state is ConnectionState.CLOSING
                    and self._fin_seq is not None
                    and all(e.is_fin for e in self._inflight.values())
                ):
                    # Every byte was acknowledged both ways; the peer forgot us before our FIN's
                    # ACK got through (its linger ended). Nothing was lost: a clean close.
                    self._terminate(Input.RESET_RECEIVED, ConnectionClosed(), now)
                else:
                    self._terminate(
                        Input.RESET_RECEIVED, ConnectionReset(refused=state is ConnectionState.SYN_SENT), now
                    )
            else:
                self.dropped_packets += 1
            return
        if not self.ack_nr_acceptable(pkt.ack_nr):
            self.dropped_packets += 1
            return
        self._timeouts = 0  # the peer is alive (libtorrent resets its timeout count likewise)
        ts = pkt.timestamp_us
        if ts:
            self._reply_micro = reply = (int(now * 1_000_000) - ts) & _M32
            if now >= self._next_reverse_sample:
                # A few samples a second suffice to follow the clocks' drift.
                self._next_reverse_sample = now + 0.01
                self.cc.on_reverse_delay(now=now, delay_us=reply)

        if state is ConnectionState.SYN_SENT:
            if ptype == ST_DATA:
                # Data overtook the SYN-ACK. It may not be the acceptor's first packet, so
                # we cannot place it in the stream yet; the peer resends it.
                self.dropped_packets += 1
                return
            # The SYN-ACK: its seq_nr is the acceptor's first future DATA (not incremented).
            # Or a FIN instead: libtorrent refuses a SYN for a torrent it will not serve so;
            # the connection then opens and ends at once (as libutp and libtorrent see it).
            self._ack_nr = (pkt.seq_nr - 1) & _M16
            self._peer_wnd = pkt.wnd_size
            sample = now - self._syn_sent_at
            if self._syn_tries == 0:
                self._rtt.on_sample(sample)
            self._fire(Input.SYN_ACK_RECEIVED, now)
            self._events.append(Connected())
            # Confirm at once, so a server that speaks first may do so.
            self._ack_pending = True
            if self._write_closed:
                self._fire(Input.SHUTDOWN_WRITE, now)
            if ptype == ST_STATE:
                self._confirm_deadline = now + self._rtt.rto
                self._wake()
                return
            state = self.state  # the FIN: process it below
        elif state is ConnectionState.SYN_RECV:
            self._fire(Input.PEER_CONFIRMED, now)
            self._events.append(Connected())
            state = self.state
        elif (
            self.initiator
            and ptype == ST_STATE
            and pkt.ack_nr == self._syn_seq
            and self._seq_nr == (self._syn_seq + 1) & _M16
        ):
            # A repeated SYN-ACK before we sent any data: our confirming ACK was lost.
            self._ack_pending = True
        elif self._confirm_deadline is not None:
            self._confirm_deadline = None  # the acceptor has spoken beyond its SYN-ACK

        tsd = pkt.timestamp_diff_us
        delay = None if (tsd == 0 or tsd == _NO_SAMPLE) else tsd
        if delay is not None:
            self._last_delay_sample = delay
        self._process_ack(pkt, now, delay)
        if self.state is ConnectionState.CLOSED:
            return

        if ptype in (ST_DATA, ST_FIN):
            self._process_data(pkt, now)
        self._wake()

    def _process_ack(self, pkt: Packet, now: float, delay: int | None) -> None:
        ack = pkt.ack_nr
        old_wnd = self._peer_wnd
        self._peer_wnd = pkt.wnd_size
        inflight = self._inflight
        una = self._snd_una
        n = (ack + 1 - una) & _M16
        outstanding = (self._seq_nr - una) & _M16
        acked_bytes = 0
        in_flight_before = self._in_flight_bytes
        samples_before = self._rtt.count
        if 0 < n <= outstanding:
            sample = None
            for i in range(n):
                entry = inflight.pop((una + i) & _M16, None)
                if entry is None:
                    continue
                if entry.is_fin:
                    self._fin_acked = True
                if entry.probe:
                    self._probe_outcome(entry, True)
                if entry.sacked:
                    continue  # already counted when selectively acknowledged
                size = len(entry.payload)
                if not entry.lost:
                    self._in_flight_bytes -= size
                acked_bytes += size
                if entry.transmissions == 1:  # Karn's rule
                    sample = entry.sent_at
            self._snd_una = (ack + 1) & _M16
            self._dup_acks = 0
            self._timeouts = 0
            self._rtt.reset_backoff()
            if sample is not None:
                self._rtt.on_sample(now - sample)
            if (
                self._nagle_seq is not None
                and ((self._snd_una - self._nagle_seq) & _M16) < 0x8000
                and (self._snd_una != self._nagle_seq)
            ):
                self._nagle_seq = None
            self._confirm_deadline = None
        elif n == 0 and outstanding and pkt.type == ST_STATE and pkt.wnd_size == old_wnd:
            self._dup_acks += 1
            if self._dup_acks >= self.config.dup_ack_threshold:
                entry = inflight.get(una)
                # Once per packet; again if duplicate ACKs still come an RTT after the
                # retransmission (it was lost too: libutp's SACK covers only 30 packets).
                if (
                    entry is not None
                    and not entry.lost
                    and (not entry.fast_resent or now - entry.sent_at > (self._rtt.srtt or self._rtt.rto) * 1.25)
                ):
                    probe = entry.probe
                    self._mark_lost(una, entry, fast=True)
                    if not probe:
                        self.cc.on_loss(now=now, rtt=self._rtt.srtt)
        if pkt.sack is not None and inflight:
            acked_bytes += self._process_sack(pkt.ack_nr, pkt.sack, now)
        if acked_bytes:
            cc = self.cc
            cc.on_ack(
                now=now,
                acked_bytes=acked_bytes,
                in_flight=in_flight_before,
                delay_us=delay,
                rtt=self._rtt.srtt,
                window_limited=in_flight_before + self.mss >= min(cc.cwnd, old_wnd),
                rtt_sample=self._rtt.latest if self._rtt.count != samples_before else None,
                peer_window=self._peer_wnd,
            )
        if inflight:
            if n and 0 < n <= outstanding:
                self._rto_deadline = now + self._rtt.rto
        else:
            self._rto_deadline = None
            if self._idle_since is None:
                self._idle_since = now
        if self._peer_wnd >= self.mss or self._peer_wnd > len(self._unsent):
            self._probe_deadline = None
            self._probe_interval = self.config.initial_rto
            # A probe sent into a closed window may have been dropped: send it again.
            if old_wnd < self.mss and inflight and not acked_bytes:
                entry = inflight.get(self._snd_una)
                if entry is not None and not entry.lost and not entry.sacked:
                    self._mark_lost(self._snd_una, entry, fast=False)
        if self._fin_acked and self.state is not ConnectionState.LINGER:
            self._on_fin_acked(now)
        if self._want_writable and len(self._unsent) <= self.config.send_buffer_low_water:
            self._want_writable = False
            self._push_event(Writable())

    def _process_sack(self, ack_nr: int, mask: bytes, now: float) -> int:
        """Apply a selective ACK; return the payload bytes it newly acknowledged.

        A packet not yet acknowledged is presumed lost once ``dup_ack_threshold``
        packets *transmitted after it* were selectively acknowledged (ordering by
        transmission, not sequence number, so a lost retransmission is found too).
        """
        inflight = self._inflight
        base = (ack_nr + 2) & _M16
        outstanding = (self._seq_nr - base) & _M16
        if outstanding >= 0x8000:
            return 0
        newly = 0
        highest = -1
        limit = min(len(mask) * 8, outstanding)
        # The three latest transmissions among selectively acknowledged packets.
        t1 = t2 = t3 = -1
        sample_at = -1.0
        for k in range((limit + 7) >> 3):
            byte = mask[k]
            if not byte:
                continue
            for j in range(8):
                if byte & (1 << j):
                    i = (k << 3) | j
                    if i >= limit:
                        break
                    entry = inflight.get((base + i) & _M16)
                    if entry is None:
                        continue
                    highest = i
                    tx = entry.tx
                    if tx > t3:
                        if tx > t1:
                            t1, t2, t3 = tx, t1, t2
                        elif tx > t2:
                            t2, t3 = tx, t2
                        else:
                            t3 = tx
                    if not entry.sacked:
                        entry.sacked = True
                        if entry.probe:
                            self._probe_outcome(entry, True)
                        size = len(entry.payload)
                        newly += size
                        if not entry.lost:
                            self._in_flight_bytes -= size
                        if entry.transmissions == 1 and entry.sent_at > sample_at:
                            sample_at = entry.sent_at
        if sample_at >= 0:
            self._rtt.on_sample(now - sample_at)
        if highest < 0 or not newly:
            return newly
        # With few packets in flight, fewer confirmations will ever come (early retransmit, RFC 5827).
        k = min(self.config.dup_ack_threshold, 3, max(1, len(inflight) - 1))
        threshold_tx = (t1, t2, t3)[k - 1]
        lost: list[int] = []
        congestion = False
        seq = self._snd_una
        stop = (base + highest) & _M16
        while seq != stop:
            entry = inflight.get(seq)
            if entry is not None and not entry.sacked and not entry.lost and entry.tx < threshold_tx:
                if not entry.probe:
                    congestion = True  # a lost MTU probe is not congestion
                self._mark_lost(seq, entry, fast=True, queue=False)
                lost.append(seq)
                if len(lost) >= _MAX_SACK_RESENDS:
                    break
            seq = (seq + 1) & _M16
        # Lowest first: until the hole at snd_una is repaired, the peer's cumulative ACK cannot move.
        self._resend.extendleft(reversed(lost))
        if congestion:
            self.cc.on_loss(now=now, rtt=self._rtt.srtt)
        return newly

    def _mark_lost(self, seq: int, entry: _Sent, *, fast: bool, queue: bool = True) -> None:
        """Presume ``entry`` lost; queue it for retransmission (first if ``fast``) unless ``queue`` is false."""
        if entry.probe:
            self._probe_outcome(entry, False)
        if not entry.lost:
            entry.lost = True
            if not entry.sacked:
                self._in_flight_bytes -= len(entry.payload)
        if fast:
            entry.fast_resent = True
            self.fast_retransmits += 1
            self._fast_credit = 1
            if queue:
                self._resend.appendleft(seq)
        elif queue:
            self._resend.append(seq)

    def _probe_outcome(self, entry: _Sent, got_through: bool) -> None:
        """A path MTU probe was acknowledged or lost; resize regular packets accordingly."""
        entry.probe = False
        self._probe_seq = None
        mtu = self._mtu
        if mtu is None:
            return
        size = len(entry.payload) + HEADER_SIZE
        if got_through:
            mtu.probe_acked(size)
        else:
            mtu.probe_lost(size)
        self._set_packet_size(mtu.packet_size)

    def _set_packet_size(self, size: int) -> None:
        if size != self.packet_size:
            self.packet_size = size
            self.mss = size - HEADER_SIZE
            self.cc.set_mss(self.mss)

    def datagram_too_big(self, seq_nr: int, size: int, now: float) -> None:
        """Our datagram ``seq_nr`` of ``size`` bytes was refused locally (``EMSGSIZE``).

        A probe is simply lost (its retransmission goes without DF); otherwise the
        search ceiling comes down and the packet is resent.
        """
        entry = self._inflight.get(seq_nr)
        if entry is None:
            return
        if entry.probe:
            self._mark_lost(seq_nr, entry, fast=True)
        else:
            if self._mtu is not None:
                self._mtu.probe_lost(size)
                self._set_packet_size(self._mtu.packet_size)
            if not entry.lost and not entry.sacked:
                self._mark_lost(seq_nr, entry, fast=False)
        self._wake()

    def _process_data(self, pkt: Packet, now: float) -> None:
        seq = pkt.seq_nr
        self._ack_pending = True
        d = (seq - self._ack_nr) & _M16
        if d == 0 or d >= 0x8000:
            self.duplicate_packets += 1
            return
        eof = self._eof_seq
        if eof is not None and ((seq - eof) & _M16) - 1 < 0x7FFF:
            self.dropped_packets += 1  # past the FIN
            return
        payload = pkt.payload
        size = len(payload)
        if d == 1:
            if size and not self._take_in_order(payload):
                return
            self._ack_nr = seq
            self._unacked_in_order += 1
            if self._unacked_in_order >= self.config.ack_every_packets:
                # Within a long batch, ACK now and then: one lost ACK must not stall the sender.
                self._send_state(now)
            if pkt.type == ST_FIN:
                self._eof_seq = seq
            self._drain_reorder()
            if self._eof_seq is not None and self._ack_nr == self._eof_seq:
                self._reorder.clear()
                self._reorder_bytes = 0
                if not self._held:
                    self._deliver_eof(now)
            return
        # Out of order.
        if d > self.config.max_reorder_packets:
            self.dropped_packets += 1
            return
        if seq in self._reorder:
            self.duplicate_packets += 1
            return
        if pkt.type == ST_FIN:
            self._eof_seq = seq
            for s in [s for s in self._reorder if ((s - seq) & _M16) - 1 < 0x7FFF]:
                self._reorder_bytes -= len(self._reorder.pop(s))
        if self._used_receive_buffer() + size > self.config.recv_buffer_size:
            self.dropped_packets += 1
            return
        self._reorder[seq] = payload
        self._reorder_bytes += size

    def _take_in_order(self, payload: bytes) -> bool:
        size = len(payload)
        if self._read_discard:
            return True
        if self._read_paused:
            if self._used_receive_buffer() + size > self.config.recv_buffer_size:
                self.dropped_packets += 1
                return False
            self._held.append(payload)
            self._held_bytes += size
        else:
            self._deliver.append(payload)
            self._deliver_bytes += size
        self.bytes_received += size
        return True

    def _drain_reorder(self) -> None:
        reorder = self._reorder
        if not reorder:
            return
        nxt = (self._ack_nr + 1) & _M16
        while nxt in reorder:
            payload = reorder.pop(nxt)
            self._reorder_bytes -= len(payload)
            if payload:
                self._take_in_order(payload)
            self._ack_nr = nxt
            nxt = (nxt + 1) & _M16

    def _deliver_eof(self, now: float) -> None:
        if self._eof_delivered:
            return
        self._eof_delivered = True
        if not self._read_discard:
            self._push_event(EndOfStream())
        self._fire(Input.PEER_EOF, now)
        if self.state is ConnectionState.CLOSING and self._fin_acked:
            self._on_fin_acked(now)

    def _used_receive_buffer(self) -> int:
        return self._reorder_bytes + self._held_bytes + self._deliver_bytes

    def _receive_window(self) -> int:
        free = self.config.recv_buffer_size - self._reorder_bytes - self._held_bytes - self._deliver_bytes
        return free if free > 0 else 0

    def _note_timestamp(self, pkt: Packet, now: float) -> None:
        if pkt.timestamp_us:
            self._reply_micro = (int(now * 1_000_000) - pkt.timestamp_us) & _M32

    # ------------------------------------------------------------------ sending

    def _fill(self, now: float) -> None:
        """Send retransmissions, then new data and the FIN, as far as the windows allow."""
        if self._idle_since is not None and self._unsent:
            if now - self._idle_since > self._rtt.rto:
                self.cc.on_timeout(now=now, idle=True)  # a window unused for a while is no longer valid
            self._idle_since = None
        cwnd = self.cc.cwnd
        window = self._peer_wnd if self._peer_wnd < cwnd else cwnd
        inflight = self._inflight
        resend = self._resend
        while resend:
            seq = resend[0]
            entry = inflight.get(seq)
            if entry is None or entry.sacked or not entry.lost:
                resend.popleft()
                continue
            size = len(entry.payload)
            if self._in_flight_bytes + size > window and self._in_flight_bytes > 0:
                if not self._fast_credit:
                    return
                # A loss just detected is repaired at once, whatever the window (RFC 6675).
                self._fast_credit -= 1
            resend.popleft()
            self._retransmit(seq, entry, now)
        unsent = self._unsent
        mss = self.mss
        mtu = self._mtu
        while unsent:
            size = len(unsent)
            if size > mss:
                size = mss
            allowed = window - self._in_flight_bytes
            if mtu is not None and self._probe_seq is None and cwnd >= 3 * self.packet_size:
                probe = mtu.probe_size(now)
                if probe is not None and len(unsent) >= probe - HEADER_SIZE <= allowed:
                    payload = bytes(unsent[: probe - HEADER_SIZE])
                    del unsent[: probe - HEADER_SIZE]
                    self._send_new(payload, False, now, probe=True)
                    continue
            if allowed < size:
                if self._in_flight_bytes > 0 or allowed <= 0:
                    if allowed <= 0 and self._in_flight_bytes == 0 and self._probe_deadline is None:
                        self._probe_deadline = now + self._probe_interval
                    break
                size = allowed
            if size < mss and self.config.nagle and self._nagle_seq is not None and not self._write_closed:
                break
            payload = bytes(unsent[:size])
            del unsent[:size]
            if size < mss:
                self._nagle_seq = self._seq_nr
            self._send_new(payload, False, now)
        if self._write_closed and not unsent and self._fin_seq is None and self.state in _LIVE_SENDING:
            self._fin_seq = self._seq_nr
            self._send_new(b"", True, now)
        if self._want_writable and len(unsent) <= self.config.send_buffer_low_water:
            self._want_writable = False
            self._push_event(Writable())

    def _send_new(self, payload: bytes, is_fin: bool, now: float, *, probe: bool = False) -> None:
        seq = self._seq_nr
        self._seq_nr = (seq + 1) & _M16
        entry = _Sent(payload, is_fin, now)
        entry.tx = self._tx_count
        self._tx_count += 1
        self._inflight[seq] = entry
        self._in_flight_bytes += len(payload)
        datagram = self._data_datagram(seq, payload, is_fin, now)
        if probe:
            entry.probe = True
            self._probe_seq = seq
            self.mtu_probes += 1
            datagram = DontFragment(datagram)
        self._out.append(datagram)
        self.bytes_sent += len(payload)

    def _retransmit(self, seq: int, entry: _Sent, now: float) -> None:
        entry.lost = False
        entry.transmissions += 1
        entry.sent_at = now
        entry.tx = self._tx_count
        self._tx_count += 1
        self._in_flight_bytes += len(entry.payload)
        self._out.append(self._data_datagram(seq, entry.payload, entry.is_fin, now))
        self.retransmissions += 1

    def _data_datagram(self, seq: int, payload: bytes, is_fin: bool, now: float) -> bytes:
        """A DATA or FIN datagram, fresh header included; the ACK rides on it."""
        wnd = self._receive_window()
        self._sent_window = wnd
        self.packets_sent += 1
        self._unacked_in_order = 0
        if not self._reorder:
            self._ack_pending = False  # with data missing, a STATE still carries the selective ACK
        if self._rto_deadline is None:
            self._rto_deadline = now + self._rtt.rto
        return (
            _pack(
                0x11 if is_fin else 0x01,
                0,
                self.send_id,
                int(now * 1_000_000) & _M32,
                self._reply_micro,
                wnd,
                seq,
                self._ack_nr,
            )
            + payload
        )

    def _send_state(self, now: float, *, keepalive: bool = False) -> None:
        """A bare ACK (ST_STATE), with a selective ACK when data is missing."""
        self._ack_pending = False
        wnd = self._receive_window()
        self._sent_window = wnd
        ack = self._ack_nr
        if keepalive:
            ack = (ack - 1) & _M16  # libutp's keep-alive form
        sack = None
        if self._reorder and not keepalive:
            span = max((s - ack - 2) & _M16 for s in self._reorder) + 1
            sack = sack_bitmask(ack, self._reorder, min(span, 32 * 8))
        ts = int(now * 1_000_000) & _M32
        self._out.append(encode_header(ST_STATE, self.send_id, ts, self._reply_micro, wnd, self._seq_nr, ack, sack))
        self.packets_sent += 1
        self._unacked_in_order = 0
        if self._fin_seq is not None and not keepalive:
            # After our FIN, libtorrent drops any packet numbered past the FIN (its own FIN
            # takes no sequence number), while libutp expects FIN + 1: send both forms.
            self._out.append(
                encode_header(ST_STATE, self.send_id, ts, self._reply_micro, wnd, self._fin_seq, ack, sack)
            )
            self.packets_sent += 1

    def _send_syn(self, now: float, *, retry: bool = False) -> None:
        self._syn_sent_at = now
        self._out.append(
            _pack(
                (ST_SYN << 4) | 1,
                0,
                self.recv_id,  # the SYN carries the initiator's receive id
                int(now * 1_000_000) & _M32,
                0,
                self._receive_window(),
                self._syn_seq,
                0,
            )
        )
        self.packets_sent += 1
        if retry:
            self.retransmissions += 1
        self._wake()

    def _send_syn_ack(self, now: float) -> None:
        """ST_STATE with seq_nr = our ISN, not incremented, and ack_nr = the SYN's seq_nr."""
        self._ack_pending = False
        self._out.append(
            _pack(
                (ST_STATE << 4) | 1,
                0,
                self.send_id,
                int(now * 1_000_000) & _M32,
                0,
                self._receive_window(),
                self._seq_nr,
                self._syn_seq,
            )
        )
        self.packets_sent += 1

    def _send_zero_window_probe(self, now: float) -> None:
        """The peer's window stayed shut: send one packet anyway so its ACK tells us more."""
        if self._inflight or not self._unsent or self.state not in _LIVE_SENDING:
            return
        size = min(self.mss, len(self._unsent))
        payload = bytes(self._unsent[:size])
        del self._unsent[:size]
        self._send_new(payload, False, now)
        self._probe_interval = min(self._probe_interval * 2, self.config.zero_window_probe_max)

    # ------------------------------------------------------------------ timers and teardown

    def _on_rto(self, now: float) -> None:
        inflight = self._inflight
        if not inflight:
            self._rto_deadline = None
            return
        if self._timeouts >= self.config.max_retransmits:
            self._terminate(Input.TIMED_OUT, ConnectionTimedOut(), now)
            return
        oldest = inflight.get(self._snd_una)
        if oldest is not None and oldest.probe and not oldest.lost:
            # The oldest packet is an MTU probe the path dropped: not a congestion timeout.
            self._mark_lost(self._snd_una, oldest, fast=False)
            self._rto_deadline = now + self._rtt.rto
            return
        self.timeout_count += 1
        self._timeouts += 1
        self.cc.on_timeout(now=now, idle=False)
        self._rtt.backoff()
        self._dup_acks = 0
        # Everything in flight is presumed lost; resend from the oldest, paced by cwnd.
        self._resend.clear()
        self._fast_credit = 0
        for seq, entry in inflight.items():
            if not entry.sacked:
                if not entry.lost:
                    entry.lost = True
                    self._in_flight_bytes -= len(entry.payload)
                entry.fast_resent = False
                self._resend.append(seq)
        rto = self._rtt.rto
        if self._peer_wnd < self.mss:
            # What is in flight is a zero-window probe: keep probing at least this often.
            rto = min(rto, self.config.zero_window_probe_max)
        self._rto_deadline = now + rto

    def _on_fin_acked(self, now: float) -> None:
        state = self.state
        if state is ConnectionState.CLOSING:
            self._fire(Input.FIN_ACKED, now)
            # Long enough for the peer's backed-off retransmissions of its FIN to reach us.
            self._linger_deadline = now + max(self.config.linger_time, 3 * self._rtt.rto)
            self._rto_deadline = None
            self._push_event(ConnectionClosed())

    def _terminate(self, reason: Input, event: Event, now: float) -> None:
        # Nothing to report for a connection the application never saw (SYN_RECV) or
        # whose end it already heard of (LINGER follows ConnectionClosed).
        announced = self.state is not ConnectionState.SYN_RECV and self.state is not ConnectionState.LINGER
        self._fire(reason, now)
        self._inflight.clear()
        self._resend.clear()
        self._unsent.clear()
        self._reorder.clear()
        self._held.clear()
        if announced:
            self._push_event(event)
        self._wake()

    def _fire(self, event: Input, now: float) -> None:
        new = next_state(self.state, event)
        if new is not None:
            self.state = new

    def _push_event(self, event: Event) -> None:
        if self._deliver:
            self._flush_delivery()
        self._events.append(event)

    def _flush_delivery(self) -> None:
        deliver = self._deliver
        data = deliver[0] if len(deliver) == 1 else b"".join(deliver)
        deliver.clear()
        self._deliver_bytes = 0
        self._events.append(DataReceived(data))
        if self._sent_window < self.mss * 2 and self._receive_window() >= self.mss * 2:
            self._ack_pending = True  # the window reopened: say so

    def _wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup(self)

    def __repr__(self) -> str:
        return (
            f"<UTPConnection {self.state.value} peer={self.peer_addr!r} recv_id={self.recv_id} send_id={self.send_id}>"
        )
