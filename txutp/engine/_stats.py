"""The engine's statistics records: snapshots and counters for monitoring, with no behaviour.

:class:`ConnectionStats` is what :meth:`UTPConnection.stats() <txutp.engine.UTPConnection.stats>`
returns; :class:`ContextStats` is what a :class:`~txutp.engine.UTPContext` counts
in ``context.stats``. A congestion controller's own figures are a
:class:`~txutp.engine.CongestionStats` (``txutp.engine.congestion``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .congestion import CongestionStats

__all__ = ["ConnectionStats", "ContextStats"]


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
    #: Packets sent again, whatever the cause (SYNs included); the parts below are among them.
    retransmissions: int
    #: Retransmissions of packets that acknowledgements showed lost (RACK, duplicate ACKs).
    fast_retransmits: int
    #: Retransmission timeouts (events, not packets).
    timeouts: int
    duplicate_packets: int
    dropped_packets: int
    #: Queueing delay our packets meet (one-way delay above the base delay), µs, as the
    #: congestion controller filters it; ``None`` before the first sample.
    current_delay_us: int | None
    #: The base one-way delay as measured (raw µs, clock offset included).
    base_delay_us: int | None
    #: The congestion controller's own figures (ssthresh, slow start; delay and slowdowns for LEDBAT).
    congestion: CongestionStats
    #: Tail-loss probes sent (RFC 8985): the last packets of a flight went unacknowledged.
    tail_loss_probes: int = 0
    #: Retransmissions shown unnecessary (the original arrived after all).
    spurious_retransmissions: int = 0
    #: Window reductions undone because every loss behind them proved spurious.
    undos: int = 0
    #: How long a packet may be overtaken before it is presumed lost (RACK's reordering window).
    reordering_window: float = 0.0
    #: RESETs with a plausible but inexact ``ack_nr``, answered with a challenge ACK (RFC 5961).
    resets_challenged: int = 0
    #: ICMP errors accepted for this connection (``_icmp.py``); soft ones only count.
    path_errors: int = 0


@dataclass(slots=True)
class ContextStats:
    """Counters of what a context did with the datagrams it was given."""

    #: Every datagram passed to :meth:`UTPContext.receive_datagram`.
    datagrams_received: int = 0
    #: Datagrams that are not valid uTP (returned to the caller, or dropped by it).
    not_utp: int = 0
    #: uTP packets for no known connection.
    unknown_connection: int = 0
    #: uTP packets that made no sense for their connection (a SYN reusing a live id).
    invalid_packets: int = 0
    resets_sent: int = 0
    #: RESET replies withheld by the rate limit or the per-packet memory.
    resets_suppressed: int = 0
    syns_accepted: int = 0
    #: SYNs refused: not accepting (answered by RESET) or over max_connections (unanswered).
    syns_refused: int = 0
    #: Unconfirmed connections dropped to make room in a full backlog.
    half_open_evicted: int = 0
    #: uTP-looking datagrams larger than any peer sends (``MAX_UTP_DATAGRAM``), dropped undecoded.
    oversized: int = 0
    #: SYNs answered statelessly, and connections created from a returning cookie.
    syn_cookies_sent: int = 0
    syn_cookies_accepted: int = 0
    #: SYNs (or returning cookies) refused because their host had ``max_connections_per_host``.
    host_limit_refused: int = 0
    #: ICMP errors given to a connection, and those that named no packet we have outstanding (dropped).
    path_errors: int = 0
    path_errors_unmatched: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dictionary."""
        return asdict(self)
