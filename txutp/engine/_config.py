"""Engine configuration: one frozen dataclass with the reference implementations' defaults."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_DATAGRAM_IPV4", "MAX_DATAGRAM_IPV6", "UTPConfig"]

#: Largest UDP payload we ever send on IPv4 (1500 - 20 - 8). ucat and libtorrent
#: silently truncate anything larger and still ACK it.
MAX_DATAGRAM_IPV4 = 1472
#: Largest UDP payload we ever send on IPv6 (1500 - 40 - 8).
MAX_DATAGRAM_IPV6 = 1452


@dataclass(frozen=True)
class UTPConfig:
    """Tunables of a uTP context and its connections. All times are in seconds.

    Defaults follow libutp and libtorrent (the source of each is noted).
    """

    #: UDP payload size of a full packet on IPv4, header included (libutp 1402).
    packet_size_ipv4: int = 1402
    #: UDP payload size of a full packet on IPv6 (libutp assumes Teredo: 1232).
    packet_size_ipv6: int = 1232
    #: Receive buffer: the most we advertise and buffer per connection (libutp 1 MiB).
    recv_buffer_size: int = 1024 * 1024
    #: Send buffer: the most unsent bytes a connection accepts, and the cap on its
    #: congestion window (libutp's opt_sndbuf, 1 MiB).
    send_buffer_size: int = 1024 * 1024
    #: A ``Writable`` event fires when unsent bytes drop to this after the buffer filled.
    send_buffer_low_water: int = 256 * 1024
    #: Out-of-order packets accepted ahead of the next expected one (libutp 0x3ff).
    max_reorder_packets: int = 1023
    #: First SYN timeout; doubles per retry (libutp and libtorrent: 3 s).
    syn_timeout: float = 3.0
    #: SYN retransmissions before giving up (libutp 2, libtorrent utp_syn_resends 2).
    syn_retries: int = 2
    #: How long an accepted, unconfirmed (SYN_RECV) connection may live. A libutp client
    #: sends nothing after the SYN-ACK until it has data or its 29 s keep-alive, either of
    #: which confirms; when the backlog is full the oldest unconfirmed one makes room.
    syn_recv_timeout: float = 60.0
    #: RTO before the first RTT sample (RFC 6298: 1 s).
    initial_rto: float = 1.0
    #: RTO floor (libtorrent utp_min_timeout 500 ms; libutp uses 1 s).
    min_rto: float = 0.5
    #: RTO ceiling after backoff (libtorrent caps at 60 s).
    max_rto: float = 60.0
    #: Consecutive retransmission timeouts, with nothing at all heard from the peer in
    #: between, before the connection is declared timed out. libutp gives up at the
    #: 5th transmission and libtorrent after 3 resends (resetting its count on any
    #: valid packet, as we do); 8 keeps connections alive through 20 % loss each way
    #: (measured in the simulator) and still ends a dead one within about three minutes.
    max_retransmits: int = 8
    #: Duplicate ACKs, or selectively ACKed packets above a hole, before a fast
    #: retransmit (libutp/libtorrent: 3).
    dup_ack_threshold: int = 3
    #: Keep-alive after this much idle sending time (libutp KEEPALIVE_INTERVAL 29 s).
    keepalive_interval: float = 29.0
    #: A connection with nothing in flight that hears nothing from its peer for this long ends
    #: with ``ConnectionTimedOut`` (the peer vanished: NAT expiry, crash). Peers send keep-alives
    #: every 29 s (libutp, txutp) and BitTorrent peers talk every 2 minutes; ``None`` disables.
    idle_timeout: float | None = 300.0
    #: Longest interval between zero-window probes (libutp probes after 15 s).
    zero_window_probe_max: float = 15.0
    #: How long a closed connection stays to re-ACK the peer's FIN (at least 3 RTOs).
    linger_time: float = 5.0
    #: After lingering, how long the context still re-ACKs the peer's late retransmissions
    #: (TCP's TIME_WAIT; two maximum RTOs) instead of answering them with RESET.
    time_wait: float = 120.0
    #: Hold back an undersized packet while another undersized one is in flight.
    nagle: bool = True
    #: Congestion controller by name (see ``register_congestion_controller``).
    congestion_control: str = "ledbat"
    #: Initial congestion window in bytes (RFC 3390's 4 packets; libutp starts at 1).
    initial_cwnd: int = 4 * 1382
    #: LEDBAT's target for the queueing delay we add (libutp CCONTROL_TARGET, libtorrent
    #: utp_target_delay: 100 ms).
    target_delay: float = 0.100
    #: LEDBAT's most window growth per RTT, in bytes (libutp MAX_CWND_INCREASE_BYTES_PER_RTT,
    #: libtorrent utp_gain_factor: 3000).
    gain: int = 3000
    #: Window multiplier on loss (libtorrent utp_loss_multiplier 50 %; BEP 29: 0.5).
    loss_multiplier: float = 0.5
    #: Least time between two loss reductions of the window (libutp MAX_WINDOW_DECAY,
    #: libtorrent utp_cwnd_reduce_timer: 100 ms); also at most once per RTT.
    cwnd_reduce_interval: float = 0.100
    #: One-minute slots of base-delay history (libutp DELAY_BASE_HISTORY 13; libtorrent 20).
    delay_history_slots: int = 13
    #: Path MTU discovery: probe for larger packets with don't-fragment datagrams.
    mtu_discovery: bool = True
    #: The smallest datagram every path carries: IPv4 576 - 28 (libtorrent 548), IPv6 1280 - 48.
    mtu_floor_ipv4: int = 548
    mtu_floor_ipv6: int = 1232
    #: Search the path MTU again this long after a search ended (libutp: 30 minutes).
    mtu_search_interval: float = 1800.0
    #: LEDBAT++ periodic slowdown: drain the queue now and then so that flows sharing a
    #: bottleneck agree on the base delay (fixes LEDBAT's latecomer unfairness; not in
    #: libutp/libtorrent, in Windows' LEDBAT++).
    ledbat_slowdown: bool = True
    #: Most half-open (SYN_RECV) connections a context keeps (the listen backlog).
    backlog: int = 128
    #: Most connections a context keeps in all (libutp: 3000 sockets).
    max_connections: int = 10_000
    #: Most connections, open or opening, with any one host (IP address; the whole address for
    #: carriers whose addresses are not ``(host, port)``). A peer cannot fill the table alone.
    max_connections_per_host: int = 256
    #: Most half-open (SYN_RECV) connections from any one host; its further SYNs get cookies.
    max_half_open_per_host: int = 16
    #: SYN cookies (stateless SYN-ACKs, see ``_cookies.py``): ``"auto"`` when the backlog or
    #: the host's share of it is full, ``"always"``, or ``"never"`` (a full backlog then drops
    #: its oldest half-open connection, as before).
    syn_cookies: str = "auto"
    #: RESET replies to unknown connections allowed per second (token bucket).
    reset_rate: float = 100.0
    #: For the Twisted layer (the engine does not use it): at reactor shutdown, how long closing
    #: connections get to finish their close handshake before they are reset (``UTPMultiplexer.shutdownGrace``).
    shutdown_grace: float = 2.0
    #: For the Twisted layer (the engine does no I/O): trace connections (``docs/observing.rst``).
    #: A path ending in ``.jsonl`` gets the first connection's trace; any other is a directory
    #: (created if missing) with one file per connection. ``TXUTP_TRACE`` sets it for a process.
    trace: str | None = None
    #: ``(index, count)``: outgoing connections receive only on ids ``X`` that are multiples of 4
    #: with ``(X // 4) % count == index`` (``None``: any id). For one of ``count`` processes
    #: sharing a UDP port (``txutp.reuseport``): the kernel steers each datagram by ``id // 4``,
    #: so the peer's packets (``X``) and its RESETs (``X`` or ``X + 1``) reach this process.
    connection_id_class: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("packet_size_ipv4", "packet_size_ipv6"):
            value = getattr(self, name)
            limit = MAX_DATAGRAM_IPV4 if name.endswith("4") else MAX_DATAGRAM_IPV6
            if not 150 <= value <= limit:
                raise ValueError(f"{name} must be between 150 and {limit}, got {value}")
        for name in (
            "recv_buffer_size",
            "send_buffer_size",
            "backlog",
            "max_connections",
            "max_connections_per_host",
            "max_half_open_per_host",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.syn_cookies not in ("auto", "always", "never"):
            raise ValueError(f"syn_cookies must be 'auto', 'always' or 'never', got {self.syn_cookies!r}")
        if self.recv_buffer_size > 0xFFFFFFFF:
            raise ValueError("recv_buffer_size must fit the 32-bit wnd_size field")
        if not 0 < self.max_reorder_packets < 0x8000:
            raise ValueError("max_reorder_packets must be between 1 and 32767")
        if self.idle_timeout is not None and self.idle_timeout <= self.keepalive_interval:
            raise ValueError("idle_timeout must be longer than keepalive_interval")
        if self.min_rto <= 0 or self.max_rto < self.min_rto:
            raise ValueError("need 0 < min_rto <= max_rto")
        if self.shutdown_grace < 0:
            raise ValueError("shutdown_grace must not be negative")
        if self.connection_id_class is not None:
            cls = self.connection_id_class
            if not (
                isinstance(cls, tuple)
                and len(cls) == 2
                and all(type(v) is int for v in cls)
                and 1 <= cls[1] <= 0x4000
                and 0 <= cls[0] < cls[1]
            ):
                raise ValueError(
                    f"connection_id_class must be (index, count) with 1 <= count <= 16384 and "
                    f"0 <= index < count, not {cls!r}"
                )

    def packet_size(self, ipv6: bool) -> int:
        """Return the UDP payload size of a full packet for the address family."""
        return self.packet_size_ipv6 if ipv6 else self.packet_size_ipv4
