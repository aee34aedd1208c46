"""One uTP connection as a pure state machine: the handshake, teardown and the glue.

Inputs: :meth:`UTPConnection.receive_packet` (a decoded packet), the user API
(:meth:`send`, :meth:`shutdown_write`, :meth:`close`, :meth:`abort`,
:meth:`pause_reading`, :meth:`resume_reading`) and :meth:`handle_timer`.
Outputs are pulled: :meth:`datagrams_to_send`, :meth:`next_event` and
:meth:`get_timer` (an absolute deadline). Every call takes ``now`` in seconds;
the connection never reads a clock and does no I/O.

The connection owns a :class:`~txutp.engine._recovery.Recovery` (what is in
flight, loss detection, timers of the sending side, congestion control), a
:class:`~txutp.engine._buffers.SendBuffer`, a
:class:`~txutp.engine._buffers.ReceiveBuffer` and a
:class:`~txutp.engine._timers.TimerTable`; it builds every packet (with
:func:`~txutp.engine._packet.write_packet`). :meth:`handle_timer` runs each
timer that is due through ``_ON_TIMER``, a table from timer to method; state
transitions stop the timers of the states left behind (:meth:`_fire`).

Packets are built lazily in :meth:`datagrams_to_send`, so everything a batch
of received datagrams calls for (ACKs, window updates, new data) goes out once,
with fresh timestamps: one ACK per read batch at most, or none when our data
carries it.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from ._buffers import DROPPED, DUPLICATE, EOF_READY, ReceiveBuffer, SendBuffer
from ._config import MAX_DATAGRAM_IPV4, MAX_DATAGRAM_IPV6, UTPConfig
from ._events import (
    Connected,
    ConnectionAborted,
    ConnectionClosed,
    ConnectionReset,
    ConnectionTimedOut,
    DataReceived,
    EndOfStream,
    Event,
    PeerUnreachable,
    Writable,
)
from ._icmp import PathError, PathErrorKind, PathErrorRecord
from ._mtu import DontFragment, MTUSearch
from ._packet import (
    HEADER_SIZE,
    SEQ_MASK,
    ST_DATA,
    ST_FIN,
    ST_RESET,
    ST_STATE,
    ST_SYN,
    TS_MASK,
    VERSION,
    Packet,
    to_timestamp_us,
    write_packet,
)
from ._recovery import GIVE_UP, PROBE, Recovery, SentPacket
from ._resets import ResetValidator
from ._state import ConnectionState, Input, next_state
from ._stats import ConnectionStats
from ._timers import Timer, TimerTable
from ._tracing import Tracer
from .congestion import CongestionController, create_congestion_controller
from .congestion import ledbat as _ledbat  # noqa: F401  (registers "ledbat", the default)
from .congestion import reno as _reno  # noqa: F401  (registers "reno")

__all__ = ["UTPConnection"]

#: The header of a DATA packet up to its sequence number, for runs (``_send_run``).
_DATA_HEAD = struct.Struct(">BBHIII")
_DATA_V1 = (ST_DATA << 4) | VERSION
_NO_SAMPLE = 0x7FFFFFFF  # uTorrent bug: treated like 0, "no sample"
#: Initial guess of the peer's window before it advertised one (libutp: 255 * 1435).
_INITIAL_PEER_WINDOW = 255 * 1435
#: Resends of an initiator's bare confirming ACK (server-speaks-first support).
_CONFIRM_RESENDS = 3
# Timers a path run for every packet touches, as plain indices (an Enum attribute costs ~150 ns).
_CONFIRM = int(Timer.CONFIRM)
_ZERO_WINDOW_PROBE = int(Timer.ZERO_WINDOW_PROBE)
_RECOVERY = int(Timer.RECOVERY)
_KEEPALIVE = int(Timer.KEEPALIVE)
_IDLE = int(Timer.IDLE)

_LIVE_SENDING = frozenset(
    {ConnectionState.CONNECTED, ConnectionState.FIN_SENT, ConnectionState.FIN_RECEIVED, ConnectionState.CLOSING}
)


class UTPConnection:
    """A uTP connection (BEP 29) between us and one peer, with no I/O of its own.

    Create one with :meth:`connect` (initiator) or :meth:`accept` (from a SYN);
    :class:`~txutp.engine.UTPContext` does both and routes datagrams to it.
    """

    __slots__ = (
        "_confirm_tries",
        "_events",
        "_keepalive_due",
        "_last_heard",
        "_last_send",
        "_mtu",
        "_next_reverse_sample",
        "_out",
        "_path_errors",
        "_probe_interval",
        "_probe_seq",
        "_recovery",
        "_recv",
        "_reply_micro",
        "_resets",
        "_send",
        "_syn_sent_at",
        "_syn_seq",
        "_syn_tries",
        "_timers",
        "bytes_sent",
        "config",
        "dropped_packets",
        "duplicate_packets",
        "initiator",
        "lingered",
        "mss",
        "mtu_probes",
        "packet_size",
        "packets_received",
        "packets_sent",
        "peer_addr",
        "recv_id",
        "send_id",
        "state",
        "tracer",
        "transitions",
        "wakeup",
    )

    # ------------------------------------------------------------------ creation

    def __init__(
        self, config: UTPConfig, *, peer_addr: Any, recv_id: int, seq_nr: int, initiator: bool, now: float, ipv6: bool
    ) -> None:
        self.config = config
        self.peer_addr = peer_addr
        self.recv_id = recv_id & SEQ_MASK
        # The initiator's SYN carries its receive id; it sends on the next one.
        self.send_id = (recv_id + 1 if initiator else recv_id - 1) & SEQ_MASK
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
        #: This connection's tracer, if traced (:meth:`set_tracer`; see ``_tracing.py``), and the
        #: state transitions it has yet to report, as ``(old, new)``.
        self.tracer: Tracer | None = None
        self.transitions: list[tuple[ConnectionState, ConnectionState]] = []

        cc = create_congestion_controller(
            config.congestion_control,
            mss=self.mss,
            initial_cwnd=config.initial_cwnd,
            max_cwnd=config.send_buffer_size,
            config=config,
        )
        self._recovery = Recovery(config, cc, next_seq=seq_nr, mss=self.mss, peer_wnd=_INITIAL_PEER_WINDOW, now=now)
        self._recovery.on_probe_outcome = self._probe_outcome
        self._send = SendBuffer(config.send_buffer_size, config.send_buffer_low_water)
        self._recv = ReceiveBuffer(config.recv_buffer_size, config.max_reorder_packets)
        self._timers = TimerTable()
        self._probe_interval = config.initial_rto  # zero-window probes back off
        # KEEPALIVE and IDLE are derived from these once per flush (_arm_moving_timers).
        self._last_send = now
        self._last_heard = now
        self._reply_micro = 0
        self._next_reverse_sample = 0.0

        # Handshake and teardown.
        self._syn_seq = 0
        self._syn_sent_at = now
        self._syn_tries = 0
        self._confirm_tries = 0
        self._keepalive_due = False
        self._resets = ResetValidator()
        self._path_errors = PathErrorRecord()

        self._events: deque[Event] = deque()
        self._out: list[bytes] = []

        # Counters.
        self.bytes_sent = 0
        self.packets_sent = 0
        self.packets_received = 0
        self.duplicate_packets = 0
        self.dropped_packets = 0

    @classmethod
    def connect(
        cls, config: UTPConfig, *, peer_addr: Any, recv_id: int, seq_nr: int, now: float, ipv6: bool = False
    ) -> UTPConnection:
        """Start an outgoing connection: the SYN carries ``recv_id`` and sequence ``seq_nr``."""
        conn = cls(config, peer_addr=peer_addr, recv_id=recv_id, seq_nr=seq_nr, initiator=True, now=now, ipv6=ipv6)
        rec = conn._recovery
        conn._syn_seq = rec.next_seq
        rec.next_seq = rec.snd_una = (rec.next_seq + 1) & SEQ_MASK  # the SYN consumes one sequence number
        conn._send_syn(now)
        return conn

    @classmethod
    def accept(
        cls, config: UTPConfig, *, peer_addr: Any, syn: Packet, seq_nr: int, now: float, ipv6: bool = False
    ) -> UTPConnection:
        """Accept a SYN: reply with the SYN-ACK and wait (``SYN_RECV``) for the peer's proof."""
        conn = cls.accept_cookie(
            config,
            peer_addr=peer_addr,
            recv_id=syn.connection_id + 1,
            syn_seq=syn.seq_nr,
            seq_nr=seq_nr,
            now=now,
            ipv6=ipv6,
        )
        if syn.timestamp_us:
            conn._reply_micro = (to_timestamp_us(now) - syn.timestamp_us) & TS_MASK
        conn._send_syn_ack(now)
        return conn

    @classmethod
    def accept_cookie(
        cls,
        config: UTPConfig,
        *,
        peer_addr: Any,
        recv_id: int,
        syn_seq: int,
        seq_nr: int,
        now: float,
        ipv6: bool = False,
    ) -> UTPConnection:
        """Recreate a connection whose SYN was answered with a SYN cookie (``_cookies.py``).

        It starts in ``SYN_RECV`` as if :meth:`accept` had run, without sending
        anything; the packet that proved the cookie is to be given to
        :meth:`receive_packet` next, which confirms it.
        """
        conn = cls(config, peer_addr=peer_addr, recv_id=recv_id, seq_nr=seq_nr, initiator=False, now=now, ipv6=ipv6)
        conn._syn_seq = conn._recv.ack_nr = syn_seq & SEQ_MASK
        conn._timers.set(Timer.HANDSHAKE, now + config.syn_recv_timeout)
        return conn

    # ------------------------------------------------------------------ user API

    @property
    def cc(self) -> CongestionController:
        """The congestion controller."""
        return self._recovery.cc

    @property
    def send_buffer_free(self) -> int:
        """How many more bytes :meth:`send` would accept now."""
        return self._send.free

    @property
    def bytes_unsent(self) -> int:
        """Bytes accepted by :meth:`send` and not yet put into packets."""
        return len(self._send.unsent)

    @property
    def bytes_in_flight(self) -> int:
        """Payload bytes sent and not yet acknowledged, nor selectively acknowledged, nor presumed lost."""
        return self._recovery.bytes_in_flight

    @property
    def bytes_delivered(self) -> int:
        """Payload bytes the peer acknowledged (cumulatively or selectively) so far."""
        return self._recovery.bytes_delivered

    def set_tracer(self, tracer: Tracer | None) -> None:
        """Report this connection's losses and RTT samples to ``tracer`` (the context reports the rest)."""
        self.tracer = self._recovery.tracer = tracer

    @property
    def bytes_received(self) -> int:
        """Payload bytes received in order."""
        return self._recv.received_bytes

    @property
    def read_paused(self) -> bool:
        return self._recv.paused

    def send(self, data: bytes, now: float) -> int:
        """Queue ``data``; return how many bytes fit in the send buffer.

        When fewer than ``len(data)`` are taken, a :class:`Writable` event follows
        once the buffer drains. Raise ``ValueError`` after :meth:`shutdown_write`.
        """
        if self._send.write_closed or self.state is ConnectionState.CLOSED:
            raise ValueError("cannot send: the write side is closed")
        n = self._send.write(data)
        if n:
            self._wake()
        return n

    def shutdown_write(self, now: float) -> None:
        """Half-close: send a FIN after the queued data; keep reading."""
        if self._send.write_closed or self.state in (ConnectionState.CLOSED, ConnectionState.LINGER):
            return
        self._send.write_closed = True
        if self.state in (ConnectionState.SYN_SENT, ConnectionState.SYN_RECV):
            return  # the FIN follows once connected
        self._fire(Input.SHUTDOWN_WRITE)
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
        self._send.write_closed = True
        self._recv.discard_all()
        self._fire(Input.CLOSE)
        self._wake()

    def discard(self) -> None:
        """Drop an unconfirmed (``SYN_RECV``) connection silently: no packet, no event."""
        if self.state is ConnectionState.SYN_RECV:
            self._fire(Input.TIMED_OUT)
            self._out.clear()

    def abort(self, now: float) -> None:
        """Send a RESET and end the connection at once."""
        if self.state is ConnectionState.CLOSED:
            return
        if self.state is not ConnectionState.LINGER:
            self._out.append(self.reset_packet(now))
            self.packets_sent += 1
        self._terminate(Input.ABORT, ConnectionAborted(), now)

    def reset_packet(self, now: float) -> bytes:
        """The RESET that ends this connection for the peer: :meth:`abort` sends it.

        Its ``seq_nr`` is our next (past our FIN) and its ``ack_nr`` the peer's last
        packet received in order, which the peer's RFC 5961 check takes as exact. A
        caller may send it for a connection past the point where ``abort`` does
        (lingering, or closed after lingering, with the peer's FIN never received).
        """
        return write_packet(
            ST_RESET, self.send_id, now, self._reply_micro, 0, self._recovery.next_seq, self._recv.ack_nr
        )

    def pause_reading(self) -> None:
        """Stop delivering data; our advertised window closes as data arrives."""
        self._recv.pause()

    def resume_reading(self, now: float) -> None:
        """Deliver held data and, if the window had closed, tell the peer at once."""
        recv = self._recv
        if not recv.paused:
            return
        if recv.resume():
            self._deliver_eof(now)
        if recv.sent_window < self.mss * 2 and recv.window() > recv.sent_window:
            recv.ack_pending = True  # immediate window update
        self._wake()

    # ------------------------------------------------------------------ outputs

    def next_event(self) -> Event | None:
        """Return the next pending event, or ``None``."""
        events = self._events
        if not events:
            if not self._recv.deliver:
                return None
            self._flush_delivery()
        return events.popleft()

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Build and return every datagram due now (data, retransmissions, ACKs)."""
        state = self.state
        if state in _LIVE_SENDING:
            self._fill(now)
        if self._recv.ack_pending and state is not ConnectionState.CLOSED and state is not ConnectionState.SYN_SENT:
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
        if self.state in _LIVE_SENDING:
            self._arm_moving_timers()
        return self._timers.next()

    def handle_timer(self, now: float) -> None:
        """Run whatever timers are due at ``now`` (early calls are harmless)."""
        if self.state in _LIVE_SENDING:
            self._arm_moving_timers()
        for timer in self._timers.expired(now):
            self._ON_TIMER[timer](self, now)
        self._wake()

    def _arm_moving_timers(self) -> None:
        """Arm the timers whose deadlines move with every packet, from what they follow.

        Recovery's deadline changes with each ACK and send, the keep-alive with each
        flush, the idle timeout with each packet heard: deriving them here, once per
        flush, keeps per-packet paths free of timer bookkeeping.
        """
        rec = self._recovery
        timers = self._timers
        config = self.config
        timers[_RECOVERY] = rec.deadline()
        timers[_KEEPALIVE] = self._last_send + config.keepalive_interval
        idle = config.idle_timeout
        timers[_IDLE] = None if idle is None or rec.has_unacked else self._last_heard + idle

    # ------------------------------------------------------------------ timers (see _timers.Timer)

    def _on_syn_timer(self, now: float) -> None:
        if self._syn_tries >= self.config.syn_retries:
            self._terminate(
                Input.TIMED_OUT, ConnectionTimedOut(during_handshake=True, path_error=self._path_errors.last), now
            )
        else:
            self._syn_tries += 1
            self._send_syn(now, retry=True)

    def _on_handshake_timer(self, now: float) -> None:
        self._fire(Input.TIMED_OUT)  # never confirmed: vanish silently (libutp e81b42d); nobody above knew it

    def _on_linger_timer(self, now: float) -> None:
        self._fire(Input.LINGER_EXPIRED)
        self.lingered = True

    def _on_idle_timer(self, now: float) -> None:
        # Nothing in flight (the RTO covers that case) and nothing heard, keep-alives included.
        self._terminate(Input.TIMED_OUT, ConnectionTimedOut(path_error=self._path_errors.last), now)

    def _on_recovery_timer(self, now: float) -> None:
        action = self._recovery.on_timer(now)
        if action == GIVE_UP:
            self._terminate(Input.TIMED_OUT, ConnectionTimedOut(path_error=self._path_errors.last), now)
        elif action == PROBE:
            self._send_tail_probe(now)

    def _on_confirm_timer(self, now: float) -> None:
        self._confirm_tries += 1
        rec = self._recovery
        if self._confirm_tries <= _CONFIRM_RESENDS and rec.next_seq == (self._syn_seq + 1) & SEQ_MASK:
            self._recv.ack_pending = True
            self._timers.set(Timer.CONFIRM, now + rec.rtt.rto * (1 << self._confirm_tries))
        # Otherwise given up, or our data (which carries the same proof) took over.

    def _on_keepalive_timer(self, now: float) -> None:
        self._keepalive_due = True
        self._last_send = now

    @property
    def final_seq_nr(self) -> int:
        """Our next sequence number (what a STATE from us carries)."""
        return self._recovery.next_seq

    @property
    def final_ack_nr(self) -> int:
        """The last in-order sequence number received from the peer."""
        return self._recv.ack_nr

    @property
    def peer_fin_received(self) -> bool:
        """The peer's FIN and everything before it arrived: our ACKs now acknowledge its FIN."""
        recv = self._recv
        return recv.eof_seq is not None and recv.ack_nr == recv.eof_seq

    @property
    def close_complete(self) -> bool:
        """Nothing is owed to the peer: ``CLOSED``, or ``LINGER`` with the peer's FIN received and ACKed.

        A connection lingering without it still owes the peer the ACK of a FIN yet to come.
        """
        if self.state is ConnectionState.CLOSED:
            return True
        return self.state is ConnectionState.LINGER and self.peer_fin_received and not self._recv.ack_pending

    def stats(self) -> ConnectionStats:
        """Return a snapshot of this connection's counters and estimates."""
        rec = self._recovery
        congestion = rec.cc.stats()
        return ConnectionStats(
            state=self.state.value,
            rtt=rec.rtt.srtt,
            rto=rec.rtt.rto,
            cwnd=rec.cc.cwnd,
            peer_window=rec.peer_wnd,
            mtu=self.packet_size,
            mtu_probes=self.mtu_probes,
            bytes_sent=self.bytes_sent,
            bytes_received=self._recv.received_bytes,
            packets_sent=self.packets_sent,
            packets_received=self.packets_received,
            retransmissions=rec.retransmissions,
            fast_retransmits=rec.fast_retransmits,
            timeouts=rec.timeouts,
            duplicate_packets=self.duplicate_packets,
            dropped_packets=self.dropped_packets,
            current_delay_us=congestion.current_delay_us,
            base_delay_us=congestion.base_delay_us,
            congestion=congestion,
            tail_loss_probes=rec.tail_loss_probes,
            spurious_retransmissions=rec.spurious_retransmissions,
            undos=rec.undos,
            reordering_window=rec.reorder_window,
            resets_challenged=self._resets.challenged,
            path_errors=self._path_errors.count,
        )

    # ------------------------------------------------------------------ receiving

    def receive_in_order_data(self, ts: int, wnd: int, seq: int, ack: int, payload: bytes, now: float) -> bool:
        """The receiver's common case, from the raw header fields; ``False`` (nothing changed) otherwise.

        An extension-free DATA packet, next in order, on a connection that reads,
        holds nothing out of order and has nothing of its own unacknowledged or
        unsent, whose ``ack_nr`` acknowledges everything we sent: it only moves
        the payload to the reader and records the peer's window and timestamp.
        :meth:`receive_packet` does the same for it, at twice the cost.
        """
        if self.state is not ConnectionState.CONNECTED:
            return False
        recv = self._recv
        rec = self._recovery
        if (
            seq != (recv.ack_nr + 1) & SEQ_MASK
            or ack != (rec.next_seq - 1) & SEQ_MASK
            or recv.reorder
            or recv.paused
            or recv.discard
            or rec.has_unacked
            or self._send.unsent
        ):
            return False
        self.packets_received += 1
        self._last_heard = now
        if ts:
            self._reply_micro = reply = (int(now * 1_000_000) - ts) & TS_MASK
            if now >= self._next_reverse_sample:
                self._next_reverse_sample = now + 0.01
                rec.cc.on_reverse_delay(now=now, delay_us=reply)
        self._timers[_CONFIRM] = None
        rec.peer_wnd = wnd
        if wnd >= self.mss:
            self._timers[_ZERO_WINDOW_PROBE] = None
            self._probe_interval = self.config.initial_rto
        recv.ack_pending = True
        recv.ack_nr = seq
        if payload:
            size = len(payload)
            recv.deliver.append(payload)
            recv.deliver_bytes += size
            recv.received_bytes += size
        if self.wakeup is not None:
            self.wakeup(self)
        return True

    def receive_packet(self, pkt: Packet, now: float) -> None:
        """Process one packet addressed to this connection (already routed by id and address)."""
        state = self.state
        if state is ConnectionState.CLOSED:
            return
        ptype = pkt.type
        self.packets_received += 1
        rec = self._recovery
        if ptype == ST_SYN:
            # A duplicate SYN: our SYN-ACK was lost; ACK it again (while unconfirmed).
            if state is ConnectionState.SYN_RECV and pkt.seq_nr == self._syn_seq:
                self._recv.ack_pending = True
                self._wake()
            else:
                self.dropped_packets += 1
            return
        if ptype == ST_RESET:
            if state is ConnectionState.SYN_RECV and pkt.seq_nr == (self._syn_seq + 1) & SEQ_MASK:
                # The initiator gave up before our SYN-ACK reached it (its ack_nr says nothing yet):
                # its next seq_nr on our connection id is as exact as RFC 5961 asks.
                self._terminate(Input.RESET_RECEIVED, ConnectionReset(), now)
            elif rec.acceptable(pkt.ack_nr, reset=True) and self._reset_exact(pkt, now):
                if state is ConnectionState.LINGER:
                    self._fire(Input.RESET_RECEIVED)
                elif state is ConnectionState.CLOSING and self._send.fin_seq is not None and rec.only_fin_unacked():
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
        if not rec.acceptable(pkt.ack_nr):
            self.dropped_packets += 1
            return
        self._last_heard = now
        ts = pkt.timestamp_us
        if ts:
            self._reply_micro = reply = (to_timestamp_us(now) - ts) & TS_MASK
            if now >= self._next_reverse_sample:
                # A few samples a second suffice to follow the clocks' drift.
                self._next_reverse_sample = now + 0.01
                rec.cc.on_reverse_delay(now=now, delay_us=reply)

        if state is ConnectionState.SYN_SENT:
            if ptype == ST_DATA:
                # Data overtook the SYN-ACK. It may not be the acceptor's first packet, so
                # we cannot place it in the stream yet; the peer resends it.
                self.dropped_packets += 1
                return
            # The SYN-ACK: its seq_nr is the acceptor's first future DATA (not incremented).
            # Or a FIN instead: libtorrent refuses a SYN for a torrent it will not serve so;
            # the connection then opens and ends at once (as libutp and libtorrent see it).
            self._recv.ack_nr = (pkt.seq_nr - 1) & SEQ_MASK
            rec.peer_wnd = pkt.wnd_size
            if self._syn_tries == 0:
                rec.rtt.on_sample(now - self._syn_sent_at)
            self._fire(Input.SYN_ACK_RECEIVED)
            self._events.append(Connected())
            # Confirm at once, so a server that speaks first may do so.
            self._recv.ack_pending = True
            if self._send.write_closed:
                self._fire(Input.SHUTDOWN_WRITE)
            if ptype == ST_STATE:
                self._timers.set(Timer.CONFIRM, now + rec.rtt.rto)
                self._wake()
                return
            state = self.state  # the FIN: process it below
        elif state is ConnectionState.SYN_RECV:
            self._fire(Input.PEER_CONFIRMED)
            self._events.append(Connected())
            state = self.state
        elif self.initiator:  # (only an initiator confirms, so only it has a CONFIRM timer)
            if ptype == ST_STATE and pkt.ack_nr == self._syn_seq and rec.next_seq == (self._syn_seq + 1) & SEQ_MASK:
                # A repeated SYN-ACK before we sent any data: our confirming ACK was lost.
                self._recv.ack_pending = True
            elif self._timers[_CONFIRM] is not None:
                self._timers[_CONFIRM] = None  # the acceptor has spoken beyond its SYN-ACK

        tsd = pkt.timestamp_diff_us
        if tsd == 0 or tsd == _NO_SAMPLE:
            delay = echo = None
        else:
            delay = tsd
            # The send time, in our clock, of the packet that made the peer send this one.
            echo = (ts - tsd) & TS_MASK if ts else None
        self._process_ack(pkt, delay, echo, now)
        if self.state is ConnectionState.CLOSED:
            return

        if ptype in (ST_DATA, ST_FIN):
            self._process_data(pkt, now)
        self._wake()

    def _reset_exact(self, pkt: Packet, now: float) -> bool:
        """Is a RESET (already within the window) exact? If not, send a challenge ACK (``_resets.py``)."""
        if self.state is ConnectionState.SYN_SENT:
            return True  # it answers our SYN: acceptable() already required its seq_nr
        nxt = self._recovery.next_seq
        resets = self._resets
        if resets.is_exact(pkt.ack_nr, pkt.seq_nr, next_seq=nxt, expected_seq=(self._recv.ack_nr + 1) & SEQ_MASK):
            return True
        if resets.challenge(nxt, self._recovery.rtt.srtt, now):
            self._recv.ack_pending = True
            self._wake()
        return False

    def _process_ack(self, pkt: Packet, delay: int | None, echo: int | None, now: float) -> None:
        rec = self._recovery
        una = rec.snd_una
        rec.on_ack(pkt.ack_nr, pkt.sack, pkt.wnd_size, delay, echo, pkt.type == ST_STATE, now)
        send = self._send
        if rec.snd_una != una:
            send.on_acked(rec.snd_una)
            self._timers[_CONFIRM] = None
        if rec.peer_wnd >= self.mss or rec.peer_wnd > len(send.unsent):
            self._timers[_ZERO_WINDOW_PROBE] = None
            self._probe_interval = self.config.initial_rto
        if rec.fin_acked and self.state is not ConnectionState.LINGER:
            self._on_fin_acked(now)
        if send.writable_due():
            self._push_event(Writable())

    def _process_data(self, pkt: Packet, now: float) -> None:
        result = self._recv.on_data(pkt.seq_nr, pkt.payload, pkt.type == ST_FIN)
        if result & DUPLICATE:
            self.duplicate_packets += 1
        elif result & DROPPED:
            self.dropped_packets += 1
        elif result & EOF_READY:
            self._deliver_eof(now)

    def _deliver_eof(self, now: float) -> None:
        recv = self._recv
        if recv.eof_delivered:
            return
        recv.eof_delivered = True
        if not recv.discard:
            self._push_event(EndOfStream())
        self._fire(Input.PEER_EOF)
        if self.state is ConnectionState.CLOSING and self._recovery.fin_acked:
            self._on_fin_acked(now)

    # ------------------------------------------------------------------ sending

    def _fill(self, now: float) -> None:
        """Send retransmissions, then new data and the FIN, as far as the windows allow."""
        rec = self._recovery
        send = self._send
        unsent = send.unsent
        if rec.idle_since is not None and unsent:
            if now - rec.idle_since > rec.rtt.rto:
                rec.cc.on_timeout(now=now, idle=True)  # a window unused for a while is no longer valid
            rec.idle_since = None
        cwnd = rec.cc.cwnd
        peer_wnd = rec.peer_wnd
        window = peer_wnd if peer_wnd < cwnd else cwnd
        if rec.lost:
            out = self._out
            while (item := rec.next_retransmission(window, now)) is not None:
                seq, entry = item
                out.append(self._data_datagram(seq, entry.payload, entry.is_fin, now))
            if rec.lost:
                rec.cwnd_limited = True  # the window is full
                return
        mss = self.mss
        mtu = self._mtu
        if unsent and mtu is not None and self._probe_seq is None and cwnd >= 3 * self.packet_size:
            # A path MTU probe goes first or not at all (the room for it only shrinks).
            probe = mtu.probe_size(now)
            if probe is not None and len(unsent) >= probe - HEADER_SIZE <= window - rec.bytes_in_flight:
                self._send_new(send.take(probe - HEADER_SIZE), False, now, probe=True)
        full = min(len(unsent), window - rec.bytes_in_flight) // mss
        if full > 1:
            self._send_run(full, now)
        while unsent:
            size = len(unsent)
            if size > mss:
                size = mss
            in_flight = rec.bytes_in_flight
            allowed = window - in_flight
            if allowed < size:
                if in_flight > 0 or allowed <= 0:
                    if allowed <= 0 and in_flight == 0 and self._timers.get(Timer.ZERO_WINDOW_PROBE) is None:
                        self._timers.set(Timer.ZERO_WINDOW_PROBE, now + self._probe_interval)
                    break
                size = allowed
            if size < mss and self.config.nagle and send.nagle_seq is not None and not send.write_closed:
                break
            if size < mss:
                send.nagle_seq = rec.next_seq
            self._send_new(send.take(size), False, now)
        # Did the window, not the application, stop us? (Judged here, where it is known,
        # rather than from what is in flight when an ACK arrives: ACKs come in batches.)
        rec.cwnd_limited = bool(unsent)
        if send.write_closed and not unsent and send.fin_seq is None and self.state in _LIVE_SENDING:
            send.fin_seq = rec.next_seq
            self._send_new(b"", True, now)
        if send.writable_due():
            self._push_event(Writable())

    def _send_new(self, payload: bytes, is_fin: bool, now: float, *, probe: bool = False) -> None:
        seq, entry = self._recovery.on_sent(payload, is_fin, now)
        datagram = self._data_datagram(seq, payload, is_fin, now)
        if probe:
            entry.probe = True
            self._probe_seq = seq
            self.mtu_probes += 1
            datagram = DontFragment(datagram)
        self._out.append(datagram)
        self.bytes_sent += len(payload)

    def _send_run(self, count: int, now: float) -> None:
        """Send ``count`` full-size DATA packets at once: one header template, one record call.

        The same datagrams as ``count`` calls of :meth:`_send_new`, at about half the cost.
        """
        mss = self.mss
        send = self._send
        size = count * mss
        chunk = bytes(send.unsent[:size])
        del send.unsent[:size]
        payloads = [chunk[i : i + mss] for i in range(0, size, mss)]
        seq = self._recovery.on_sent_run(payloads, now)
        recv = self._recv
        wnd = recv.window()
        recv.sent_window = wnd
        if not recv.reorder:
            recv.ack_pending = False
        head = _DATA_HEAD.pack(
            _DATA_V1, 0, self.send_id, int(now * 1_000_000) & TS_MASK, self._reply_micro, wnd
        )
        tail = recv.ack_nr.to_bytes(2, "big")
        out = self._out
        for payload in payloads:
            out.append(b"".join((head, seq.to_bytes(2, "big"), tail, payload)))
            seq = (seq + 1) & SEQ_MASK
        self.packets_sent += count
        self.bytes_sent += size

    def _send_tail_probe(self, now: float) -> None:
        """The flight's last packets went unacknowledged: send one packet to draw an ACK (RFC 8985)."""
        send = self._send
        rec = self._recovery
        if send.unsent and self.state in _LIVE_SENDING and rec.peer_wnd >= min(self.mss, len(send.unsent)):
            self._send_new(send.take(min(self.mss, len(send.unsent))), False, now)  # new data, past cwnd
        else:
            rec.probe_with_retransmission(now)
        self._wake()

    def _data_datagram(self, seq: int, payload: bytes, is_fin: bool, now: float) -> bytes:
        """A DATA or FIN datagram, fresh header included; the ACK rides on it."""
        recv = self._recv
        wnd = recv.window()
        recv.sent_window = wnd
        self.packets_sent += 1
        if not recv.reorder:
            recv.ack_pending = False  # with data missing, a STATE still carries the selective ACK
        return write_packet(
            ST_FIN if is_fin else ST_DATA, self.send_id, now, self._reply_micro, wnd, seq, recv.ack_nr, payload
        )

    def _send_state(self, now: float, *, keepalive: bool = False) -> None:
        """A bare ACK (ST_STATE), with a selective ACK when data is missing."""
        recv = self._recv
        recv.ack_pending = False
        wnd = recv.window()
        recv.sent_window = wnd
        ack = recv.ack_nr
        if keepalive:
            ack = (ack - 1) & SEQ_MASK  # libutp's keep-alive form
            sack = None
        else:
            sack = recv.sack(ack)
        seq = self._recovery.next_seq
        self._out.append(write_packet(ST_STATE, self.send_id, now, self._reply_micro, wnd, seq, ack, b"", sack))
        self.packets_sent += 1
        fin_seq = self._send.fin_seq
        if fin_seq is not None and not keepalive:
            # After our FIN, libtorrent drops any packet numbered past the FIN (its own FIN
            # takes no sequence number), while libutp expects FIN + 1: send both forms.
            self._out.append(write_packet(ST_STATE, self.send_id, now, self._reply_micro, wnd, fin_seq, ack, b"", sack))
            self.packets_sent += 1

    def _send_syn(self, now: float, *, retry: bool = False) -> None:
        self._syn_sent_at = now
        # The SYN carries the initiator's receive id.
        self._out.append(write_packet(ST_SYN, self.recv_id, now, 0, self._recv.window(), self._syn_seq, 0))
        self._timers.set(Timer.SYN, now + self.config.syn_timeout * (1 << self._syn_tries))
        self.packets_sent += 1
        if retry:
            self._recovery.count_retransmission()
        self._wake()

    def _send_syn_ack(self, now: float) -> None:
        """ST_STATE with seq_nr = our ISN, not incremented, and ack_nr = the SYN's seq_nr."""
        self._recv.ack_pending = False
        wnd = self._recv.window()
        self._out.append(write_packet(ST_STATE, self.send_id, now, 0, wnd, self._recovery.next_seq, self._syn_seq))
        self.packets_sent += 1

    def _send_zero_window_probe(self, now: float) -> None:
        """The peer's window stayed shut: send one packet anyway so its ACK tells us more."""
        send = self._send
        if self._recovery.has_unacked or not send.unsent or self.state not in _LIVE_SENDING:
            return
        self._send_new(send.take(min(self.mss, len(send.unsent))), False, now)
        self._probe_interval = min(self._probe_interval * 2, self.config.zero_window_probe_max)

    # ------------------------------------------------------------------ path MTU

    def _probe_outcome(self, entry: SentPacket, got_through: bool) -> None:
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
            self._recovery.mss = self.mss
            self._recovery.cc.set_mss(self.mss)

    def datagram_too_big(self, seq_nr: int, size: int, now: float) -> None:
        """Our datagram ``seq_nr`` of ``size`` bytes was refused locally (``EMSGSIZE``).

        A probe is simply lost (its retransmission goes without DF); otherwise the
        search ceiling comes down and the packet is resent.
        """
        rec = self._recovery
        entry = rec.find(seq_nr)
        if entry is None:
            return
        if self._mtu is not None:
            if entry.probe:
                entry.probe = False  # its outcome is decided here, not by the loss that follows
                self._probe_seq = None
            self._mtu.probe_lost(size, too_big=True)
            self._set_packet_size(self._mtu.packet_size)
        rec.mark_lost(seq_nr, now)
        self._wake()

    # ------------------------------------------------------------------ ICMP errors (see _icmp.py)

    def path_error(self, error: PathError, ptype: int, seq_nr: int, now: float) -> bool:
        """The network reported ``error`` about our packet ``ptype``/``seq_nr``; return whether it counts.

        It counts only for a packet we have outstanding: our SYN while in
        ``SYN_SENT``, a DATA or FIN not yet acknowledged, or an ACK carrying a
        sequence number of our send window (RFC 5927).
        """
        state = self.state
        rec = self._recovery
        entry = None
        if state is ConnectionState.CLOSED or state is ConnectionState.LINGER:
            return False
        if ptype == ST_SYN:
            if state is not ConnectionState.SYN_SENT or seq_nr != self._syn_seq:
                return False
        elif ptype in (ST_DATA, ST_FIN):
            entry = rec.find(seq_nr)
            if entry is None:
                return False
        elif ptype == ST_STATE:
            if (rec.next_seq - seq_nr) & SEQ_MASK > (rec.next_seq - rec.snd_una) & SEQ_MASK:
                return False
        else:
            return False
        if error.kind is PathErrorKind.TOO_BIG:
            self._path_errors.record(error)
            limit = error.max_datagram
            if entry is not None and limit is not None and len(entry.payload) + HEADER_SIZE > limit:
                self._path_too_big(seq_nr, len(entry.payload) + HEADER_SIZE, limit, now)
        elif self._path_errors.record(error, syn_try=self._syn_tries if state is ConnectionState.SYN_SENT else None):
            self._terminate(Input.TIMED_OUT, PeerUnreachable(error), now)
        return True

    def _path_too_big(self, seq_nr: int, size: int, limit: int, now: float) -> None:
        """A router dropped our ``size``-byte packet ``seq_nr``: the path takes at most ``limit`` bytes."""
        if self._mtu is not None:
            self._mtu.path_limit(limit)
        self.datagram_too_big(seq_nr, size, now)

    # ------------------------------------------------------------------ teardown

    def _on_fin_acked(self, now: float) -> None:
        if self.state is ConnectionState.CLOSING:
            self._fire(Input.FIN_ACKED)
            rec = self._recovery
            # Long enough for the peer's backed-off retransmissions of its FIN to reach us.
            self._timers.set(Timer.LINGER, now + max(self.config.linger_time, 3 * rec.rtt.rto))
            rec.rto_deadline = None
            rec.loss_deadline = None
            self._push_event(ConnectionClosed())

    def _terminate(self, reason: Input, event: Event, now: float) -> None:
        # Nothing to report for a connection the application never saw (SYN_RECV) or
        # whose end it already heard of (LINGER follows ConnectionClosed).
        announced = self.state is not ConnectionState.SYN_RECV and self.state is not ConnectionState.LINGER
        self._fire(reason)
        self._recovery.clear()
        self._send.clear()
        self._recv.clear()
        if announced:
            self._push_event(event)
        self._wake()

    def _fire(self, event: Input) -> None:
        """Move through ``TRANSITIONS``; the timers of the states left behind stop."""
        new = next_state(self.state, event)
        if new is None:
            return
        if self.tracer is not None:
            self.transitions.append((self.state, new))
        self.state = new
        if new is ConnectionState.CONNECTED:
            self._timers.stop(Timer.SYN)
            self._timers.stop(Timer.HANDSHAKE)
        elif new is ConnectionState.LINGER or new is ConnectionState.CLOSED:
            self._timers.stop_all()

    def _push_event(self, event: Event) -> None:
        if self._recv.deliver:
            self._flush_delivery()
        self._events.append(event)

    def _flush_delivery(self) -> None:
        recv = self._recv
        data = recv.take_delivery()
        if data is None:
            return
        self._events.append(DataReceived(data))
        if recv.window_reopened(self.mss):
            recv.ack_pending = True  # the window reopened: say so

    def _wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup(self)

    def __repr__(self) -> str:
        return (
            f"<UTPConnection {self.state.value} peer={self.peer_addr!r} recv_id={self.recv_id} send_id={self.send_id}>"
        )

    #: What :meth:`handle_timer` runs for each timer that is due.
    _ON_TIMER: ClassVar[dict[Timer, Callable[[UTPConnection, float], None]]] = {
        Timer.SYN: _on_syn_timer,
        Timer.HANDSHAKE: _on_handshake_timer,
        Timer.LINGER: _on_linger_timer,
        Timer.IDLE: _on_idle_timer,
        Timer.RECOVERY: _on_recovery_timer,
        Timer.ZERO_WINDOW_PROBE: _send_zero_window_probe,
        Timer.CONFIRM: _on_confirm_timer,
        Timer.KEEPALIVE: _on_keepalive_timer,
    }
