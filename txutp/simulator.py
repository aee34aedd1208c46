"""A deterministic network simulator for uTP engines, on a virtual clock.

Build a :class:`Network` from a seed, add :class:`Host` objects (each runs one
:class:`~txutp.engine.UTPContext` at an address), give each direction between
two hosts a :class:`LinkConfig` (delay, jitter, loss, duplication, reordering,
corruption, a bandwidth-limited FIFO bottleneck with a finite buffer, an MTU),
then :meth:`Network.run`. Every random choice comes from the seed, so a failing
run replays exactly.

Applications are objects with an ``event(conn, event)`` method attached to a
connection with :meth:`Host.attach`; :class:`StreamApp` sends a byte string and
collects what arrives, which covers most tests::

    net = Network(seed=1)
    a = net.add_host(("10.0.0.1", 6881))
    b = net.add_host(("10.0.0.2", 6881), accepting=True)
    net.link(a, b, LinkConfig(delay=0.025, loss=0.01))
    b.on_accept = lambda conn: StreamApp(b"")
    client = a.attach(a.connect(b.address), StreamApp(b"hello", shutdown_when_sent=True))
    net.run(until=60)

Nothing here imports Twisted; the engine is driven exactly as an I/O layer
drives it: datagrams in a batch, then events, then datagrams out, then one timer.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .engine import (
    Connected,
    ConnectionTerminated,
    DataReceived,
    DontFragment,
    EndOfStream,
    Event,
    UTPConfig,
    UTPConnection,
    UTPContext,
    Writable,
)

__all__ = ["Application", "Host", "LinkConfig", "LinkStats", "Network", "StreamApp", "internet_checksum"]

Address = Any


@dataclass(frozen=True)
class LinkConfig:
    """One direction of a path between two hosts. Times in seconds, sizes in bytes."""

    #: One-way propagation delay.
    delay: float = 0.01
    #: Extra delay drawn uniformly from ``[0, jitter]`` per datagram (reorders when large).
    jitter: float = 0.0
    #: Probability a datagram is lost.
    loss: float = 0.0
    #: Probability a datagram is delivered twice.
    duplicate: float = 0.0
    #: Probability a datagram is held back by ``reorder_delay`` (so later ones overtake it).
    reorder: float = 0.0
    reorder_delay: float = 0.02
    #: Probability a datagram has ``corrupt_bits`` random bits flipped in transit.
    corrupt: float = 0.0
    corrupt_bits: int = 1
    #: When true (the default, as on real UDP), the receiver verifies the sender's
    #: 16-bit Internet checksum and drops what fails it; when false, corrupted
    #: datagrams are delivered as they are.
    udp_checksum: bool = True
    #: Bottleneck rate in bytes per second; ``None`` for no bottleneck.
    bandwidth: float | None = None
    #: Bottleneck FIFO capacity in bytes (tail drop); ``None`` for unbounded.
    buffer: int | None = None
    #: The path MTU at the IP level (UDP payload + 28 bytes of headers on IPv4, 48 on IPv6).
    #: A larger datagram sent with don't-fragment (a :class:`~txutp.engine.DontFragment`)
    #: vanishes silently, as behind a router whose ICMP is filtered; others are fragmented.
    mtu: int | None = None
    #: When false, fragments are dropped too: a path MTU black hole.
    fragmentation: bool = True


@dataclass
class LinkStats:
    """What happened on one direction of a link."""

    sent: int = 0
    delivered: int = 0
    lost: int = 0
    queue_drops: int = 0
    mtu_drops: int = 0
    fragmented: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    checksum_drops: int = 0
    bytes_delivered: int = 0
    max_queue_bytes: int = 0


class _Link:
    __slots__ = ("config", "stats", "busy_until")

    def __init__(self, config: LinkConfig) -> None:
        self.config = config
        self.stats = LinkStats()
        self.busy_until = 0.0

    def queue_delay(self, now: float) -> float:
        """Seconds a datagram entering the bottleneck now waits before it starts out."""
        return max(0.0, self.busy_until - now)


class Application(Protocol):
    """What :meth:`Host.attach` accepts: something told about a connection's events."""

    def event(self, conn: UTPConnection, event: Event) -> None: ...


@dataclass
class StreamApp:
    """Sends ``data`` (respecting the send buffer) and collects everything received.

    With ``shutdown_when_sent`` it half-closes once all of ``data`` is queued; with
    ``close_on_eof`` it closes fully when the peer's EOF arrives.
    """

    data: bytes = b""
    shutdown_when_sent: bool = True
    close_on_eof: bool = False
    received: bytearray = field(default_factory=bytearray)
    connected: bool = False
    eof: bool = False
    terminated: Event | None = None
    sent: int = 0
    now: Callable[[], float] = field(default=lambda: 0.0, repr=False)

    def event(self, conn: UTPConnection, event: Event) -> None:
        if isinstance(event, DataReceived):
            self.received += event.data
        elif isinstance(event, Connected):
            self.connected = True
            self.pump(conn)
        elif isinstance(event, Writable):
            self.pump(conn)
        elif isinstance(event, EndOfStream):
            self.eof = True
            if self.close_on_eof:
                conn.close(self.now())
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event

    def pump(self, conn: UTPConnection) -> None:
        """Queue as much of ``data`` as the connection takes."""
        now = self.now()
        if self.sent < len(self.data):
            chunk = self.data[self.sent : self.sent + conn.send_buffer_free]
            self.sent += conn.send(chunk, now)
        if self.sent >= len(self.data) and self.shutdown_when_sent:
            conn.shutdown_write(now)

    @property
    def done(self) -> bool:
        """The connection ended (cleanly or not)."""
        return self.terminated is not None


class Host:
    """One simulated machine: a :class:`UTPContext` bound to ``address``.

    Its clock may run ``clock_offset`` seconds ahead and drift by
    ``clock_drift_ppm`` parts per million; the engine only ever sees local time.
    """

    def __init__(
        self,
        network: Network,
        address: Address,
        *,
        config: UTPConfig | None,
        accepting: bool,
        clock_offset: float,
        clock_drift_ppm: float,
        random_bits: Callable[[int], int] | None = None,
    ) -> None:
        self.network = network
        self.address = address
        self.context = UTPContext(config, accepting=accepting, random_bits=random_bits or network.random.getrandbits)
        self.clock_offset = clock_offset
        self.clock_rate = 1.0 + clock_drift_ppm * 1e-6
        #: Called with each accepted connection; returns its application (or ``None``).
        self.on_accept: Callable[[UTPConnection], Application | None] | None = None
        #: Datagrams that were not uTP, as ``(data, source)`` (what a DHT would get).
        self.other_datagrams: list[tuple[bytes, Address]] = []
        self.apps: dict[UTPConnection, Application] = {}
        self._timer_at: float | None = None
        #: The engine's own deadline for ``_timer_at``: converting it to network
        #: time and back may round one ulp short, and the timer must still fire.
        self._timer_deadline = 0.0

    def local_time(self, t: float | None = None) -> float:
        """This host's clock at network time ``t`` (default: now)."""
        return self.clock_offset + (self.network.now if t is None else t) * self.clock_rate

    def _global_time(self, local: float) -> float:
        return (local - self.clock_offset) / self.clock_rate

    def connect(self, address: Address) -> UTPConnection:
        """Open a uTP connection to another host's address."""
        conn = self.context.connect(address, self.local_time())
        self.network._touch(self)
        return conn

    def attach(self, conn: UTPConnection, app: Application) -> Application:
        """Send ``conn``'s events to ``app``; a :class:`StreamApp` also gets this host's clock."""
        if isinstance(app, StreamApp):
            app.now = self.local_time
        self.apps[conn] = app
        self.network._touch(self)
        return app

    def service(self) -> None:
        """Drain events into applications, send what is due and re-arm the timer."""
        ctx = self.context
        net = self.network
        while True:
            while (item := ctx.next_event()) is not None:
                conn, event = item
                app = self.apps.get(conn)
                if app is None and isinstance(event, Connected) and not conn.initiator and self.on_accept:
                    app = self.on_accept(conn)
                    if app is not None:
                        if isinstance(app, StreamApp):
                            app.now = self.local_time
                        self.apps[conn] = app
                if app is not None:
                    app.event(conn, event)
            out = ctx.datagrams_to_send(self.local_time())
            if not out:
                break
            for data, dest in out:
                net._transmit(self, data, dest)
        deadline = ctx.get_timer()
        if deadline is None:
            self._timer_at = None
            return
        at = max(self._global_time(deadline), net.now)
        self._timer_deadline = deadline
        if self._timer_at != at:
            self._timer_at = at
            net._schedule(at, _TIMER, self, None, None)


_DELIVER = 0
_TIMER = 1


class Network:
    """Hosts, the links between them and the virtual clock; everything seeded by ``seed``."""

    def __init__(self, seed: int = 0) -> None:
        self.random = random.Random(seed)
        self.now = 0.0
        self.hosts: dict[Address, Host] = {}
        self._links: dict[tuple[Address, Address], _Link] = {}
        self._queue: list[tuple[float, int, int, Host, bytes | None, Address]] = []
        self._seq = 0
        self._touched: dict[Host, None] = {}
        #: If set, sees every datagram before the link does, as ``intercept(src, dst, data)``,
        #: and returns the datagram to send on (possibly altered) or ``None`` to drop it.
        self.intercept: Callable[[Host, Address, bytes], bytes | None] | None = None

    def add_host(
        self,
        address: Address,
        *,
        config: UTPConfig | None = None,
        accepting: bool = False,
        clock_offset: float = 0.0,
        clock_drift_ppm: float = 0.0,
        random_bits: Callable[[int], int] | None = None,
    ) -> Host:
        """Add a host at ``address`` (a ``(host, port)`` tuple).

        ``random_bits`` overrides where its connection ids and initial sequence
        numbers come from (default: the network's seeded generator).
        """
        host = Host(
            self,
            address,
            config=config,
            accepting=accepting,
            clock_offset=clock_offset,
            clock_drift_ppm=clock_drift_ppm,
            random_bits=random_bits,
        )
        self.hosts[address] = host
        return host

    def link(self, a: Host, b: Host, forward: LinkConfig | None = None, backward: LinkConfig | None = None) -> None:
        """Join ``a`` and ``b``: ``forward`` is a→b, ``backward`` b→a (default: same as forward)."""
        forward = forward or LinkConfig()
        self._links[(a.address, b.address)] = _Link(forward)
        self._links[(b.address, a.address)] = _Link(backward or forward)

    def bottleneck(self, pairs: list[tuple[Host, Host]], config: LinkConfig) -> None:
        """Send every ``src → dst`` in ``pairs`` through one shared queue (a router's bottleneck).

        The reverse directions are left as they are (use :meth:`link` first to set them).
        """
        shared = _Link(config)
        for src, dst in pairs:
            self._links[(src.address, dst.address)] = shared

    def link_stats(self, src: Host, dst: Host) -> LinkStats:
        """Counters of the direction ``src`` → ``dst``."""
        return self._links[(src.address, dst.address)].stats

    def queue_delay(self, src: Host, dst: Host) -> float:
        """Current queueing delay at the bottleneck ``src`` → ``dst``, in seconds."""
        return self._links[(src.address, dst.address)].queue_delay(self.now)

    def inject(self, data: bytes, source: Address, dest: Host, delay: float = 0.0) -> None:
        """Deliver a raw datagram to ``dest`` as if from ``source`` (for fuzzing and spoofing)."""
        self._schedule(self.now + delay, _DELIVER, dest, data, source)

    def run(
        self,
        until: float | None = None,
        stop: Callable[[], bool] | None = None,
        max_steps: int | None = None,
    ) -> float:
        """Advance the clock until ``until``, until ``stop()`` is true, or until nothing is left.

        Returns the network time reached.
        """
        for host in self.hosts.values():
            self._touch(host)  # whatever applications did between runs goes out first
        self._service_touched()
        queue = self._queue
        steps = 0
        while queue:
            if stop is not None and stop():
                break
            at = queue[0][0]
            if until is not None and at > until:
                self.now = until
                break
            _, _, kind, host, data, source = heapq.heappop(queue)
            self.now = at
            if kind == _TIMER:
                if host._timer_at != at:
                    continue
                host._timer_at = None
                host.context.handle_timer(max(host.local_time(at), host._timer_deadline))
            else:
                local = host.local_time(at)
                ctx = host.context
                assert data is not None
                if not ctx.receive_datagram(data, source, local):
                    host.other_datagrams.append((data, source))
                # Everything arriving at this host at this instant is one batch.
                while queue and queue[0][0] == at and queue[0][2] == _DELIVER and queue[0][3] is host:
                    _, _, _, _, data, source = heapq.heappop(queue)
                    assert data is not None
                    if not ctx.receive_datagram(data, source, local):
                        host.other_datagrams.append((data, source))
            host.service()
            self._service_touched()
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        else:
            if until is not None:
                self.now = max(self.now, until)
        return self.now

    # ------------------------------------------------------------------ internals

    def _touch(self, host: Host) -> None:
        self._touched[host] = None

    def _service_touched(self) -> None:
        while self._touched:
            host = next(iter(self._touched))
            del self._touched[host]
            host.service()

    def _schedule(self, at: float, kind: int, host: Host, data: bytes | None, source: Address) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, host, data, source))

    def _transmit(self, src: Host, data: bytes, dest: Address) -> None:
        if self.intercept is not None:
            altered = self.intercept(src, dest, data)
            if altered is None:
                return
            data = altered
        dst = self.hosts.get(dest)
        link = self._links.get((src.address, dest))
        if dst is None or link is None:
            return  # no route
        cfg = link.config
        stats = link.stats
        stats.sent += 1
        rnd = self.random.random
        size = len(data)
        wire_size = size
        if cfg.mtu is not None:
            overhead = 48 if ":" in str(dest[0]) else 28
            if size + overhead > cfg.mtu:
                if isinstance(data, DontFragment) or not cfg.fragmentation:
                    stats.mtu_drops += 1
                    return
                # IP fragments: each one can be lost, and each carries its own IP header.
                fragments = -(-(size + 8) // (cfg.mtu - overhead + 8))
                stats.fragmented += 1
                for _ in range(fragments - 1):
                    if cfg.loss and rnd() < cfg.loss:
                        stats.lost += 1
                        return
                wire_size = size + (fragments - 1) * (overhead - 8)
        if isinstance(data, DontFragment):
            data = bytes(data)
        if cfg.loss and rnd() < cfg.loss:
            stats.lost += 1
            return
        now = self.now
        if cfg.bandwidth:
            start = link.busy_until if link.busy_until > now else now
            if cfg.buffer is not None:
                queued = (start - now) * cfg.bandwidth
                if queued + wire_size > cfg.buffer:
                    stats.queue_drops += 1
                    return
                if queued + wire_size > stats.max_queue_bytes:
                    stats.max_queue_bytes = int(queued + wire_size)
            link.busy_until = start + wire_size / cfg.bandwidth
            depart = link.busy_until
        else:
            depart = now
        copies = 2 if cfg.duplicate and rnd() < cfg.duplicate else 1
        if copies == 2:
            stats.duplicated += 1
        for _ in range(copies):
            arrive = depart + cfg.delay
            if cfg.jitter:
                arrive += rnd() * cfg.jitter
            if cfg.reorder and rnd() < cfg.reorder:
                stats.reordered += 1
                arrive += cfg.reorder_delay
            payload = data
            if cfg.corrupt and rnd() < cfg.corrupt:
                stats.corrupted += 1
                payload = self._corrupt(data, cfg.corrupt_bits)
                if cfg.udp_checksum and internet_checksum(payload) != internet_checksum(data):
                    stats.checksum_drops += 1
                    continue
            stats.delivered += 1
            stats.bytes_delivered += size
            self._schedule(arrive, _DELIVER, dst, payload, src.address)

    def _corrupt(self, data: bytes, bits: int) -> bytes:
        buf = bytearray(data)
        if not buf:
            return data
        for _ in range(bits):
            i = self.random.randrange(len(buf))
            buf[i] ^= 1 << self.random.randrange(8)
        return bytes(buf)


def internet_checksum(data: bytes) -> int:
    """The 16-bit ones'-complement sum of RFC 1071, as UDP uses it."""
    if len(data) % 2:
        data = data + b"\x00"
    total = sum(memoryview(data).cast("H"))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
