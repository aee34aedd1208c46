"""One uTP connection as a pure state machine: creation, the user API, the outputs, the timers.

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
:class:`~txutp.engine._timers.TimerTable`. Its code is in four modules, one
concern each: the fields and shared glue (``_connection_base.py``), the sending
side and every packet built (``_sending.py``), the receiving side
(``_receiving.py``), and this one. :meth:`handle_timer` runs each timer that is
due through ``_ON_TIMER``, a table from timer to method; state transitions stop
the timers of the states left behind (``ConnectionBase._fire``).

Packets are built lazily in :meth:`datagrams_to_send`, so everything a batch
of received datagrams calls for (ACKs, window updates, new data) goes out once,
with fresh timestamps: one ACK per read batch at most, or none when our data
carries it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from ._buffers import ReceiveBuffer, SendBuffer
from ._config import MAX_DATAGRAM_IPV4, MAX_DATAGRAM_IPV6, UTPConfig
from ._connection_base import LIVE_SENDING, TIMER_IDLE, TIMER_KEEPALIVE, TIMER_RECOVERY
from ._events import ConnectionAborted, ConnectionTimedOut, Event, PeerUnreachable
from ._icmp import PathError, PathErrorKind, PathErrorRecord
from ._mtu import MTUSearch
from ._packet import (
    HEADER_SIZE,
    SEQ_MASK,
    ST_DATA,
    ST_FIN,
    ST_RESET,
    ST_STATE,
    ST_SYN,
    TS_MASK,
    Packet,
    to_timestamp_us,
    write_packet,
)
from ._receiving import ConnectionReceiving
from ._recovery import GIVE_UP, PROBE, Recovery
from ._resets import ResetValidator
from ._sending import ConnectionSending
from ._state import ConnectionState, Input
from ._stats import ConnectionStats
from ._timers import Timer, TimerTable
from ._tracing import Tracer
from .congestion import CongestionController, create_congestion_controller
from .congestion import ledbat as _ledbat  # noqa: F401  (registers "ledbat", the default)
from .congestion import reno as _reno  # noqa: F401  (registers "reno")

__all__ = ["UTPConnection"]

#: Initial guess of the peer's window before it advertised one (libutp: 255 * 1435).
_INITIAL_PEER_WINDOW = 255 * 1435
#: Resends of an initiator's bare confirming ACK (server-speaks-first support).
_CONFIRM_RESENDS = 3
#: Resends of our FIN, the peer's FIN received and all else acknowledged, before the close counts as
#: done (libtorrent's utp_fin_resends).
FIN_RESENDS = 2


class UTPConnection(ConnectionSending, ConnectionReceiving):
    """A uTP connection (BEP 29) between us and one peer, with no I/O of its own.

    Create one with :meth:`connect` (initiator) or :meth:`accept` (from a SYN);
    :class:`~txutp.engine.UTPContext` does both and routes datagrams to it.
    """

    __slots__ = ()

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
        conn._open(now)
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
        conn._answer_syn(syn, now)
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

    def _open(self, now: float) -> None:
        rec = self._recovery
        self._syn_seq = rec.next_seq
        rec.next_seq = rec.snd_una = (rec.next_seq + 1) & SEQ_MASK  # the SYN consumes one sequence number
        self._send_syn(now)

    def _answer_syn(self, syn: Packet, now: float) -> None:
        if syn.timestamp_us:
            self._reply_micro = (to_timestamp_us(now) - syn.timestamp_us) & TS_MASK
        self._send_syn_ack(now)

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
        if state in LIVE_SENDING:
            self._fill(now)
        if self._recv.ack_pending and state is not ConnectionState.CLOSED and state is not ConnectionState.SYN_SENT:
            if state is ConnectionState.SYN_RECV:
                self._send_syn_ack(now)
            else:
                self._send_state(now)
        elif self._keepalive_due:
            self._keepalive_due = False
            if state in LIVE_SENDING:
                self._send_state(now, keepalive=True)
        out = self._out
        if out:
            self._out = []
            self._last_send = now
        return out

    def get_timer(self) -> float | None:
        """The earliest absolute time :meth:`handle_timer` must run, or ``None``."""
        if self.state in LIVE_SENDING:
            self._arm_moving_timers()
        return self._timers.next()

    def handle_timer(self, now: float) -> None:
        """Run whatever timers are due at ``now`` (early calls are harmless)."""
        if self.state in LIVE_SENDING:
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
        timers[TIMER_RECOVERY] = rec.deadline()
        timers[TIMER_KEEPALIVE] = self._last_send + config.keepalive_interval
        idle = config.idle_timeout
        timers[TIMER_IDLE] = None if idle is None or rec.has_unacked else self._last_heard + idle

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
        rec = self._recovery
        action = rec.on_timer(now)
        if action == GIVE_UP:
            self._terminate(Input.TIMED_OUT, ConnectionTimedOut(path_error=self._path_errors.last), now)
        elif action == PROBE:
            self._send_tail_probe(now)
        elif (
            rec.rto_count > FIN_RESENDS
            and self.state is ConnectionState.CLOSING
            and self.peer_fin_received
            and rec.only_fin_unacked()
        ):
            # Every byte was acknowledged both ways and only the ACK of our FIN is missing. A peer
            # that sent its FIN and then falls silent took ours and left (libtorrent keeps no
            # TIME-WAIT after its last ACK): nothing was lost, so the close is clean, as on a RESET.
            rec.clear()
            self._on_fin_acked(now)

    def _on_confirm_timer(self, now: float) -> None:
        self._confirm_tries += 1
        rec = self._recovery
        if self._confirm_tries <= _CONFIRM_RESENDS and rec.next_seq == (self._syn_seq + 1) & SEQ_MASK:
            self._recv.ack_pending = True
            self._timers.set(Timer.CONFIRM, now + rec.rtt.rto * (1 << self._confirm_tries))
        # Otherwise given up, or our data (which carries the same proof) took over.

    def _on_zero_window_probe_timer(self, now: float) -> None:
        self._send_zero_window_probe(now)

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

    # ------------------------------------------------------------------ sending

    # ------------------------------------------------------------------ path MTU

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

    # ------------------------------------------------------------------ teardown

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
        Timer.ZERO_WINDOW_PROBE: _on_zero_window_probe_timer,
        Timer.CONFIRM: _on_confirm_timer,
        Timer.KEEPALIVE: _on_keepalive_timer,
    }
