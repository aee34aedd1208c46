"""Carriers: what moves a multiplexer's datagrams, and the two shipped besides UDP.

A :class:`~txutp.UTPMultiplexer` is a ``DatagramProtocol``, and runs over any
*carrier*, as any ``DatagramProtocol`` runs over a UDP port: the carrier calls
the multiplexer's ``makeConnection(carrier)`` when it starts,
``datagramReceived(datagram, address)`` for each datagram that arrives and
``doStop()`` when it stops, and offers what :class:`DatagramCarrier` lists.
Addresses are whatever the carrier uses (any hashable value): the engine only
compares them.

The default carrier is the UDP port of :func:`~txutp.listenUTP`. This module
adds :class:`MemoryNetwork` (carriers in memory, for tests, on a reactor or a
``task.Clock``) and :class:`EnvelopeCarrier` (uTP inside another protocol's
datagrams, on a port shared with that protocol). See ``docs/carriers.rst``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import AbstractDatagramProtocol, DatagramProtocol
from zope.interface import implementer

__all__ = [
    "BatchingCarrier",
    "CarrierAddress",
    "DatagramCarrier",
    "EnvelopeCarrier",
    "MemoryCarrier",
    "MemoryNetwork",
    "asIAddress",
]


class DatagramCarrier(Protocol):
    """What a multiplexer calls on its carrier (its ``transport``).

    A carrier also calls the multiplexer, as a port calls its
    ``DatagramProtocol``: ``makeConnection(carrier)`` once, then
    ``datagramReceived(datagram, address)`` per datagram, then ``doStop()``;
    it may call ``datagramTooBig(datagram, address)`` when a datagram exceeded
    the path and ``pathErrorReceived(datagram, address, error)`` for an ICMP
    error about one, ``runReceived(data, segment, address)`` for a run of
    datagrams coalesced in one buffer, and a :class:`BatchingCarrier` calls
    ``readBatchDone()``.
    Twisted's own UDP port (``reactor.listenUDP(port, multiplexer)``) is one.
    """

    def write(self, datagram: bytes, address: Any) -> object:
        """Send ``datagram`` to ``address``; errors it raises count as the datagram's loss."""
        ...

    def getHost(self) -> object:
        """Our own address: an ``IAddress``, or an address as ``write`` takes them."""
        ...

    def stopListening(self) -> object:
        """Stop: call the multiplexer's ``doStop()`` (it may still ``write``); may return a Deferred."""
        ...


@runtime_checkable
class BatchingCarrier(DatagramCarrier, Protocol):
    """A carrier that moves datagrams in batches, as the UDP port does (GRO reads, GSO sends).

    After each batch of ``datagramReceived`` calls it calls the multiplexer's
    ``readBatchDone()``, which flushes once for the whole batch (without a
    ``callLater(0)``); each flush's datagrams come in one :meth:`writeBatch`.
    """

    def writeBatch(self, datagrams: list[tuple[bytes, Any]]) -> None:
        """Send ``(datagram, address)`` pairs in order; errors count as loss and never raise."""
        ...


@implementer(IAddress)
@dataclass(frozen=True)
class CarrierAddress:
    """The ``IAddress`` of a carrier address that is neither an ``IAddress`` nor an IP ``(host, port)``."""

    #: The carrier's own address (``"alice"``, a node id, ...).
    address: Hashable


def asIAddress(address: object) -> IAddress:
    """A carrier address as ``getPeer()``/``getHost()`` give it.

    An IP ``(host, port)`` pair (what UDP uses) and Twisted's IP addresses become
    ``IPv4Address``/``IPv6Address`` of type ``'UDP'`` (an IPv4-mapped IPv6 host
    as IPv4); any other ``IAddress`` is itself; anything else is wrapped in a
    :class:`CarrierAddress`.
    """
    if isinstance(address, (IPv4Address, IPv6Address)):
        return _ipAddress(address.host, address.port)
    if IAddress.providedBy(address):
        return address
    if (
        isinstance(address, tuple)
        and len(address) >= 2
        and isinstance(address[0], str)
        and isinstance(address[1], int)
        and (isIPAddress(address[0]) or isIPv6Address(address[0]))
    ):
        return _ipAddress(address[0], address[1])
    return CarrierAddress(address)


def _ipAddress(host: str, port: int) -> IPv4Address | IPv6Address:
    if host.startswith("::ffff:") and isIPAddress(host[7:]):
        host = host[7:]
    if ":" in host:
        return IPv6Address("UDP", host, port)
    return IPv4Address("UDP", host, port)


# ---------------------------------------------------------------------- in memory


class MemoryNetwork:
    """A datagram network in memory: carriers that exchange datagrams on a clock, with no socket.

    ``clock`` is a reactor or a ``task.Clock`` (anything with ``callLater`` and
    ``seconds``). Every datagram arrives ``delay`` seconds after it was sent
    (``0``: at the clock's next turn), in the order sent; a datagram to an
    address nobody listens on is dropped. :attr:`drop` may lose datagrams on
    purpose. Datagrams that arrive at the same time are delivered as one read
    batch. For loss, reordering and bottlenecks at scale, see
    :mod:`txutp.simulator`.
    """

    def __init__(self, clock: IReactorTime, delay: float = 0.0) -> None:
        self.clock = clock
        self.delay = delay
        #: ``drop(datagram, source, destination)``: return true to lose that datagram.
        self.drop: Callable[[bytes, Hashable, Hashable], bool] | None = None
        #: Datagrams sent, lost (:attr:`drop`) and not delivered (nobody at the address).
        self.sent = 0
        self.lost = 0
        self.undeliverable = 0
        self.carriers: dict[Hashable, MemoryCarrier] = {}
        self._queue: deque[tuple[float, Hashable, Hashable, bytes]] = deque()
        self._call: IDelayedCall | None = None
        self._delivering = False

    def listen(self, address: Hashable, protocol: AbstractDatagramProtocol) -> MemoryCarrier:
        """Start ``protocol`` (a multiplexer, or any ``DatagramProtocol``) at ``address``; return its carrier."""
        if address in self.carriers:
            raise ValueError(f"{address!r} is already in use on this network")
        carrier = MemoryCarrier(self, address, protocol)
        self.carriers[address] = carrier
        protocol.makeConnection(carrier)  # type: ignore[arg-type]
        return carrier

    def _send(self, source: Hashable, destination: Hashable, datagram: bytes) -> None:
        self.sent += 1
        if self.drop is not None and self.drop(datagram, source, destination):
            self.lost += 1
            return
        if type(datagram) is not bytes:
            datagram = bytes(datagram)  # a DontFragment probe: on the wire it is just bytes
        self._queue.append((self.clock.seconds() + self.delay, source, destination, datagram))
        if self._call is None and not self._delivering:
            self._call = self.clock.callLater(self.delay, self._deliver)

    def _deliver(self) -> None:
        self._call = None
        self._delivering = True
        batch: dict[MemoryCarrier, None] = {}
        try:
            queue = self._queue
            now = self.clock.seconds()
            while queue and queue[0][0] <= now:
                _, source, destination, datagram = queue.popleft()
                carrier = self.carriers.get(destination)
                if carrier is None:
                    self.undeliverable += 1
                    continue
                batch[carrier] = None
                carrier.protocol.datagramReceived(datagram, source)  # type: ignore[arg-type]
        finally:
            self._delivering = False
            for carrier in batch:
                if carrier.connected:
                    carrier._batchDone()
            if self._queue and self._call is None:
                self._call = self.clock.callLater(max(0.0, self._queue[0][0] - self.clock.seconds()), self._deliver)


class MemoryCarrier:
    """One address on a :class:`MemoryNetwork` (a :class:`BatchingCarrier`); made by :meth:`MemoryNetwork.listen`."""

    def __init__(self, network: MemoryNetwork, address: Hashable, protocol: AbstractDatagramProtocol) -> None:
        self.network = network
        self.address = address
        self.protocol = protocol
        self.connected = True

    def __repr__(self) -> str:
        return f"<MemoryCarrier {self.address!r}>"

    def write(self, datagram: bytes, address: Hashable) -> None:
        """Send ``datagram`` to the carrier at ``address``."""
        self.network._send(self.address, address, datagram)

    def writeBatch(self, datagrams: list[tuple[bytes, Any]]) -> None:
        """Send each ``(datagram, address)`` pair."""
        send, source = self.network._send, self.address
        for datagram, address in datagrams:
            send(source, address, datagram)

    def getHost(self) -> Hashable:
        """This carrier's address on the network."""
        return self.address

    def stopListening(self) -> Deferred[None]:
        """Stop the protocol (``doStop``, while it can still send), then leave the network."""
        if self.connected:
            self.connected = False
            try:
                self.protocol.doStop()
            finally:
                if self.network.carriers.get(self.address) is self:
                    del self.network.carriers[self.address]
        return succeed(None)

    def _batchDone(self) -> None:
        batchDone = getattr(self.protocol, "readBatchDone", None)
        if batchDone is not None:
            batchDone()


# ---------------------------------------------------------------------- inside another protocol


class EnvelopeCarrier(DatagramProtocol):
    """uTP inside another protocol's datagrams, on a port shared with that protocol.

    Give it to the port (``reactor.listenUDP(6881, EnvelopeCarrier(mux, b"\\x00", other))``)
    and it starts ``multiplexer`` over itself: every uTP datagram is sent as
    ``tag + datagram``, and every datagram that arrives starting with ``tag``
    goes to the multiplexer without it. Every other datagram goes to
    ``other``, a ``DatagramProtocol`` whose transport is the port itself (or
    is dropped, without one). Choose a ``tag`` that the other protocol's
    messages never start with.

    The tag makes every datagram ``len(tag)`` bytes longer, and the port does
    not see the engine's don't-fragment probes: give the multiplexer a
    ``UTPConfig`` with ``mtu_discovery=False`` (and packet sizes lowered by
    ``len(tag)`` if they are near the path MTU). :meth:`stopListening`
    stops the multiplexer only; the port and ``other`` stay up.
    """

    def __init__(self, multiplexer: AbstractDatagramProtocol, tag: bytes, other: DatagramProtocol | None = None):
        if not tag:
            raise ValueError("an envelope needs a tag of at least one byte")
        self.multiplexer = multiplexer
        self.tag = tag
        self.other = other
        self.carrying = False
        #: The port below (kept while it closes, so that the multiplexer's last RESETs still leave).
        self.port: Any = None

    def startProtocol(self) -> None:
        """The port is up: start the other protocol on it, and the multiplexer on this carrier."""
        self.port = port = self.transport
        assert port is not None
        if self.other is not None:
            self.other.makeConnection(port)
        self.carrying = True
        self.multiplexer.makeConnection(self)  # type: ignore[arg-type]

    def stopProtocol(self) -> None:
        """The port is closing: stop the multiplexer and the other protocol."""
        self.stopListening()
        if self.other is not None:
            self.other.doStop()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """A datagram on the port: unwrap it for the multiplexer, or pass it to the other protocol."""
        tag = self.tag
        if datagram.startswith(tag):
            if self.carrying:
                self.multiplexer.datagramReceived(datagram[len(tag) :], addr)
        elif self.other is not None:
            self.other.datagramReceived(datagram, addr)

    # The carrier, for the multiplexer.

    def write(self, datagram: bytes, address: Any) -> None:
        """Send a uTP ``datagram`` in its envelope."""
        if self.port is not None:
            self.port.write(self.tag + datagram, address)

    def getHost(self) -> object:
        """The port's address."""
        return self.port.getHost() if self.port is not None else None

    def stopListening(self) -> None:
        """Stop the multiplexer; the port keeps running for the other protocol."""
        if self.carrying:
            self.carrying = False
            self.multiplexer.doStop()
