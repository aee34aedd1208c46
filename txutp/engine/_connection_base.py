"""What a connection holds, and the glue its sending and receiving sides share.

:class:`~txutp.engine._connection.UTPConnection` is built from three classes,
one concern each, over the fields declared here:

* ``_sending.py``: :class:`~txutp.engine._sending.ConnectionSending` builds every
  packet we send and decides what goes out (the fill, runs, probes, path MTU);
* ``_receiving.py``: :class:`~txutp.engine._receiving.ConnectionReceiving` takes
  the packets routed to the connection (the fast path for in-order data, the
  handshake's replies, RESETs, ACKs and data);
* ``_connection.py``: the connection itself: creation, the user API, the
  outputs, the timers and the statistics.

Both sides end up here for state transitions (:meth:`ConnectionBase._fire`),
events (:meth:`ConnectionBase._push_event`), end of stream and teardown.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._buffers import ReceiveBuffer, SendBuffer
from ._config import UTPConfig
from ._events import ConnectionClosed, DataReceived, EndOfStream, Event
from ._icmp import PathErrorRecord
from ._mtu import MTUSearch
from ._recovery import Recovery
from ._resets import ResetValidator
from ._state import ConnectionState, Input, next_state
from ._timers import Timer, TimerTable
from ._tracing import Tracer

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "LIVE_SENDING",
    "TIMER_CONFIRM",
    "TIMER_IDLE",
    "TIMER_KEEPALIVE",
    "TIMER_RECOVERY",
    "TIMER_ZERO_WINDOW_PROBE",
    "ConnectionBase",
]

#: The states in which the connection sends data, ACKs and keep-alives.
LIVE_SENDING = frozenset(
    {ConnectionState.CONNECTED, ConnectionState.FIN_SENT, ConnectionState.FIN_RECEIVED, ConnectionState.CLOSING}
)
# Timers a path run for every packet touches, as plain indices (an Enum attribute costs ~150 ns).
TIMER_CONFIRM = int(Timer.CONFIRM)
TIMER_ZERO_WINDOW_PROBE = int(Timer.ZERO_WINDOW_PROBE)
TIMER_RECOVERY = int(Timer.RECOVERY)
TIMER_KEEPALIVE = int(Timer.KEEPALIVE)
TIMER_IDLE = int(Timer.IDLE)


class ConnectionBase:
    """The fields of a connection (set by ``UTPConnection.__init__``) and the glue of its two sides."""

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

    config: UTPConfig
    peer_addr: Any
    recv_id: int
    send_id: int
    initiator: bool
    state: ConnectionState
    #: Bytes per datagram, header included, and the payload that leaves (``mss``).
    packet_size: int
    mss: int
    #: Closed cleanly after lingering (the context keeps a TIME_WAIT record then).
    lingered: bool
    #: Called when the connection may have datagrams or events to collect.
    wakeup: Callable[[Self], None] | None
    #: This connection's tracer, if traced (see ``_tracing.py``), and the state
    #: transitions it has yet to report, as ``(old, new)``.
    tracer: Tracer | None
    transitions: list[tuple[ConnectionState, ConnectionState]]
    # Counters.
    bytes_sent: int
    packets_sent: int
    packets_received: int
    duplicate_packets: int
    dropped_packets: int
    mtu_probes: int

    # The parts: what is in flight and congestion control, the two byte buffers, the deadlines.
    _recovery: Recovery
    _send: SendBuffer
    _recv: ReceiveBuffer
    _timers: TimerTable
    _mtu: MTUSearch | None  # the path MTU search, if enabled
    _probe_seq: int | None  # the path MTU probe in flight
    _probe_interval: float  # zero-window probes back off
    # KEEPALIVE and IDLE are derived from these once per flush.
    _last_send: float
    _last_heard: float
    #: Our timestamp_diff_us for the peer: how late its last packet arrived, by our clock.
    _reply_micro: int
    _next_reverse_sample: float
    # Handshake and teardown.
    _syn_seq: int
    _syn_sent_at: float
    _syn_tries: int
    _confirm_tries: int
    _keepalive_due: bool
    _resets: ResetValidator
    _path_errors: PathErrorRecord
    # Outputs waiting to be pulled.
    _events: deque[Event]
    _out: list[bytes]

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

    def _wake(self: Self) -> None:
        if self.wakeup is not None:
            self.wakeup(self)
