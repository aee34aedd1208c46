"""uTP endpoints: ``UTPServerEndpoint`` and ``UTPClientEndpoint``.

Any Twisted protocol runs over uTP through these (or through the ``utp:``
endpoint strings, see ``docs/endpoints.rst``)::

    from txutp import UTPServerEndpoint, UTPClientEndpoint
    port = await UTPServerEndpoint(reactor, 6881).listen(factory)
    proto = await UTPClientEndpoint(reactor, "peer.example", 6881).connect(factory)

Sockets are shared through a registry of ports per reactor: a server on port
6881 and clients created with ``bindPort=6881`` use one UDP socket, as
BitTorrent clients do. Clients without a bind address share one ephemeral
socket per address family (and configuration). A socket closes when no
listening port, connection or connection attempt uses it any more.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import zip_longest
from typing import Any, Generic, TypeVar

from twisted.internet import error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IResolutionReceiver,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from ._multiplexer import Reactor, UTPMultiplexer
from ._registry import acquireMultiplexer, activeMultiplexers, ephemeralMultiplexer
from .engine import UTPConfig

__all__ = ["UTPClientEndpoint", "UTPListeningPort", "UTPServerEndpoint"]


@implementer(IListeningPort)
class UTPListeningPort:
    """A listening uTP port, as returned by :meth:`UTPServerEndpoint.listen`."""

    def __init__(self, multiplexer: UTPMultiplexer) -> None:
        self.multiplexer = multiplexer
        self._stopped = False

    def startListening(self) -> None:
        """Nothing to do: the port listens from the moment it is returned."""

    def stopListening(self) -> Deferred[None]:
        """Stop accepting connections. The socket closes too once no client connection uses it.

        Connections already accepted stay up (as with TCP). The Deferred fires
        when listening stopped and, if nothing else uses the socket, once the
        socket is closed (after lingering connections, at most
        ``max(linger_time, 3 RTO)``; at reactor shutdown, once they have had
        their answer: see :meth:`UTPMultiplexer.finishClosing
        <txutp.UTPMultiplexer.finishClosing>`).
        """
        if self._stopped:
            return self.multiplexer.whenClosed() if not self.multiplexer.inUse else succeed(None)
        self._stopped = True
        return self.multiplexer.stopListening()

    def getHost(self) -> IAddress:
        """The address listened on (for UDP, type ``'UDP'``)."""
        return self.multiplexer.getHost()


@implementer(IStreamServerEndpoint)
class UTPServerEndpoint:
    """Listen for uTP connections on a UDP ``port`` (0 for any) of ``interface``.

    ``interface`` is an IP literal: ``''`` (all IPv4), ``'::'`` (all IPv6; also
    IPv4 where the OS makes such sockets dual-stack, as Linux does by default),
    or one address. ``config`` tunes the engine (a port already open, e.g. by a
    client with ``bindPort``, keeps its configuration). ``datagramProtocol``
    receives the datagrams that are not uTP and can send on the same port.

    ``reusePort=N`` (Linux; ``utp:6881:reuseport=N``) says that this process is
    one of ``N`` workers sharing the port, started by a
    :class:`txutp.reuseport.WorkerSupervisor` (``twistd utp`` is one): it
    listens on the socket the supervisor gave it (:func:`txutp.reuseport.listenWorker`),
    and fails with ``CannotListenError`` in any other process. See ``docs/workers.rst``.
    """

    def __init__(
        self,
        reactor: Reactor,
        port: int,
        interface: str = "",
        config: UTPConfig | None = None,
        *,
        datagramProtocol: DatagramProtocol | None = None,
        reusePort: int | None = None,
    ) -> None:
        self._reactor = reactor
        self._port = port
        self._interface = interface
        self._config = config
        self._datagramProtocol = datagramProtocol
        self._reusePort = reusePort

    @property
    def reusePortGroup(self) -> tuple[str, int, int] | None:
        """``(interface, port, workers)`` of the port this endpoint shares with ``reusePort`` workers, or ``None``."""
        return None if self._reusePort is None else (self._interface, self._port, self._reusePort)

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Start listening; fails with ``CannotListenError`` if the port cannot be had."""
        try:
            if self._reusePort is not None:
                from .reuseport import listenWorker

                mux = listenWorker(
                    self._reactor, self._interface, self._port, self._reusePort, self._config, self._datagramProtocol
                )
            else:
                mux = acquireMultiplexer(
                    self._reactor, self._interface, self._port, self._config, self._datagramProtocol
                )
            mux.hold()
            try:
                mux.startListening(protocolFactory)
            finally:
                mux.release()
        except Exception:
            return fail(Failure())
        d: Deferred[IListeningPort] = Deferred()
        d.callback(UTPListeningPort(mux))
        return d


@implementer(IResolutionReceiver)
class _Receiver:
    def __init__(self) -> None:
        self.addresses: list[IPv4Address | IPv6Address] = []
        self.deferred: Deferred[list[IPv4Address | IPv6Address]] = Deferred()

    def resolutionBegan(self, resolutionInProgress: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        if isinstance(address, (IPv4Address, IPv6Address)):
            self.addresses.append(address)

    def resolutionComplete(self) -> None:
        self.deferred.callback(self.addresses)


def _interleaveFamilies(addresses: Iterable[IPv4Address | IPv6Address]) -> list[IPv4Address | IPv6Address]:
    """``addresses`` in RFC 8305 §4 order: families alternating, IPv6 first, each in the resolver's order.

    A host that appears twice is kept once (where it first appeared).
    """
    seen: set[str] = set()
    byFamily: tuple[list[IPv4Address | IPv6Address], list[IPv4Address | IPv6Address]] = ([], [])
    for address in addresses:
        if address.host not in seen:
            seen.add(address.host)
            byFamily[0 if isinstance(address, IPv6Address) else 1].append(address)
    return [address for pair in zip_longest(*byFamily) for address in pair if address is not None]


_Target = TypeVar("_Target")
_Result = TypeVar("_Result")


class _HappyEyeballs(Generic[_Target, _Result]):
    """Connection attempts raced as RFC 8305 §5 says; :attr:`result` fires with the first to succeed.

    ``attempt(target)`` starts one attempt and returns its Deferred;
    cancelling that Deferred must abandon the attempt. The first target is
    tried at once, each next one ``delay`` seconds after the previous one
    started, or at once when an attempt fails. When one succeeds,
    :attr:`won` becomes true, no other attempt starts and those still
    running are cancelled; a success that arrives anyway (an attempt that
    could not be stopped) goes to ``discard``. If every attempt fails,
    :attr:`result` fails with the failure of the last to fail. Cancelling
    :attr:`result` cancels every attempt and the pending start, and fails
    it with ``ConnectingCancelledError(address)``.
    """

    def __init__(
        self,
        clock: IReactorTime,
        targets: Iterable[_Target],
        attempt: Callable[[_Target], Deferred[_Result]],
        delay: float,
        discard: Callable[[_Result], object],
        address: IAddress,
    ) -> None:
        self._clock = clock
        self._waiting = deque(targets)
        self._attempt = attempt
        self._delay = delay
        self._discard = discard
        self._address = address
        self._running: list[Deferred[_Result]] = []
        self._nextStart: IDelayedCall | None = None
        self._done = False
        #: An attempt succeeded (the others are being, or have been, cancelled).
        self.won = False
        self.result: Deferred[_Result] = Deferred(self._cancel)

    def start(self) -> Deferred[_Result]:
        """Start the first attempt; return :attr:`result`."""
        if not self._waiting:
            raise ValueError("nothing to connect to")
        self._startNext()
        return self.result

    def _startNext(self) -> None:
        self._cancelNextStart()
        target = self._waiting.popleft()
        try:
            attempt = self._attempt(target)
        except Exception:
            attempt = fail()
        self._running.append(attempt)
        if self._waiting:
            self._nextStart = self._clock.callLater(self._delay, self._startNext)
        attempt.addBoth(self._attemptEnded, attempt)

    def _attemptEnded(self, outcome: _Result | Failure, attempt: Deferred[_Result]) -> None:
        self._running.remove(attempt)
        if self._done:
            if not isinstance(outcome, Failure):
                self._discard(outcome)
            return  # a loser's failure (its cancellation, mostly) is of no interest
        if not isinstance(outcome, Failure):
            self.won = True
            self._abandon()
            self.result.callback(outcome)
        elif self._waiting:
            self._startNext()
        elif not self._running:
            self._done = True
            self.result.errback(outcome)

    def _cancelNextStart(self) -> None:
        if self._nextStart is not None and self._nextStart.active():
            self._nextStart.cancel()
        self._nextStart = None

    def _abandon(self) -> None:
        """Start nothing more and cancel every running attempt."""
        self._done = True
        self._cancelNextStart()
        self._waiting.clear()
        for attempt in list(self._running):
            attempt.cancel()

    def _cancel(self, result: Deferred[_Result]) -> None:
        self._abandon()
        result.errback(Failure(error.ConnectingCancelledError(self._address)))


def _abortLateWinner(protocol: IProtocol) -> None:
    """A connection made after another attempt won: reset it."""
    transport = getattr(protocol, "transport", None)
    if transport is not None:
        transport.abortConnection()


def _holdAfterLosing(reactor: Reactor, mux: UTPMultiplexer) -> None:
    """Keep a losing attempt's socket open for the engine's SYN timeout, to reset the peer's half-open connection.

    The RESET sent when the attempt is cancelled acknowledges nothing, so a
    peer that got the SYN cannot tell it from a forged one and keeps its
    half-open connection. Its SYN-ACK, if it arrives while the socket is
    open, is answered with a RESET that acknowledges it, which the peer takes.
    """
    mux.hold()
    release = reactor.callLater(mux.config.syn_timeout, mux.release)
    mux.whenClosed().addCallback(lambda _: release.cancel() if release.active() else None)


@implementer(IStreamClientEndpoint)
class UTPClientEndpoint:
    """Connect over uTP to ``host`` (a name, resolved by the reactor's resolver, or an IP literal) and ``port``.

    ``timeout`` bounds name resolution plus handshake (seconds; ``None`` leaves
    only the engine's SYN timeout, 21 s by default). ``bindAddress`` and
    ``bindPort`` choose the local socket; with ``bindPort`` equal to a server's
    port on the same interface the connection shares that server's socket.
    Without either, clients share one ephemeral socket per address family.

    A name's addresses are dialled with Happy Eyeballs (RFC 8305): IPv6 and
    IPv4 alternating, IPv6 first; one attempt at once, the next
    ``attemptDelay`` seconds later (0.3 by default, as Twisted's
    ``HostnameEndpoint``) or as soon as an attempt fails. The first handshake
    to complete wins and the other attempts are cancelled: each sends a
    RESET, and its socket stays open for the engine's SYN timeout (3 s by
    default) to answer a late SYN-ACK with a RESET the peer accepts. An IPv4
    ``bindAddress`` limits the addresses to IPv4, an IPv6 one other than
    ``::`` to IPv6. An IP literal is one attempt.
    """

    #: Seconds between the starts of two connection attempts (RFC 8305's Connection Attempt Delay).
    attemptDelay: float = 0.3

    def __init__(
        self,
        reactor: Reactor,
        host: str,
        port: int,
        timeout: float | None = 30,
        bindAddress: str | None = None,
        bindPort: int = 0,
        config: UTPConfig | None = None,
        *,
        attemptDelay: float | None = None,
    ) -> None:
        self._reactor = reactor
        self._host = host
        self._port = port
        self._timeout = timeout
        self._bindAddress = bindAddress
        self._bindPort = bindPort
        self._config = config
        if attemptDelay is not None:
            if not attemptDelay >= 0:
                raise ValueError(f"attemptDelay must be a number of seconds >= 0, not {attemptDelay!r}")
            self.attemptDelay = attemptDelay

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect; the Deferred fires with the protocol after ``connectionMade``.

        Failures (of the last attempt to fail, when a name has several
        addresses): ``ConnectionRefusedError`` (the peer answered RESET),
        ``TimeoutError``, ``DNSLookupError`` (also when no address has the
        family of ``bindAddress``), ``ConnectBindError``,
        ``ConnectingCancelledError`` (the Deferred was cancelled).
        """
        reactor = self._reactor
        deadline = None if self._timeout is None else reactor.seconds() + self._timeout
        literal = isIPAddress(self._host) or isIPv6Address(self._host)
        target = _address(self._host, self._port) if literal else HostnameAddress(self._host.encode(), self._port)
        racing: list[_HappyEyeballs[tuple[str, int], IProtocol]] = []
        finished = [False]
        timeoutCall: list[Any] = []

        def cancel(d: Deferred[IProtocol]) -> None:
            if racing:
                racing[0].result.cancel()  # fails with ConnectingCancelledError
            else:
                finish(Failure(error.ConnectingCancelledError(target)))

        result: Deferred[IProtocol] = Deferred(cancel)

        def finish(outcome: Any) -> None:
            while timeoutCall:
                call = timeoutCall.pop()
                if call.active():
                    call.cancel()
            if finished[0]:
                return
            finished[0] = True
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        def attempt(address: tuple[str, int]) -> Deferred[IProtocol]:
            remaining = None if deadline is None else deadline - reactor.seconds()
            if remaining is not None and remaining <= 0:
                return fail(error.TimeoutError(f"connecting to {self._host!r} timed out"))
            try:
                mux = self._multiplexer(address)
            except error.CannotListenError as e:
                return fail(error.ConnectBindError(str(e)))
            mux.hold()
            try:
                connecting = mux.connect(address, protocolFactory, remaining)
            finally:
                mux.release()
            connecting.addErrback(lost, mux)
            return connecting

        def lost(failure: Failure, mux: UTPMultiplexer) -> Failure:
            if failure.check(error.ConnectingCancelledError) and racing and racing[0].won:
                _holdAfterLosing(reactor, mux)
            return failure

        def resolved(addresses: list[IPv4Address | IPv6Address]) -> None:
            if finished[0]:
                return
            try:
                candidates = self._candidates(addresses)
            except error.DNSLookupError:
                finish(Failure())
                return
            while timeoutCall:
                timeoutCall.pop().cancel()
            race = _HappyEyeballs(reactor, candidates, attempt, self.attemptDelay, _abortLateWinner, target)
            racing.append(race)
            race.start().addBoth(finish)

        if literal:
            resolved([_address(self._host, self._port)])
        else:
            receiver = _Receiver()
            if self._timeout is not None:
                timeoutCall.append(
                    reactor.callLater(
                        self._timeout,
                        lambda: finish(Failure(error.TimeoutError(f"resolving {self._host!r} timed out"))),
                    )
                )
            receiver.deferred.addCallbacks(resolved, finish)
            try:
                reactor.nameResolver.resolveHostName(
                    receiver, self._host, self._port, addressTypes=[IPv4Address, IPv6Address], transportSemantics="UDP"
                )
            except Exception:
                finish(Failure())
        return result

    def _family(self) -> type[IPv4Address] | type[IPv6Address] | None:
        """The address family ``bindAddress`` fixes: ``None`` without one, or for dual-stack ``::``."""
        bind = self._bindAddress
        if bind is None or bind == "::":
            return None
        if bind == "" or isIPAddress(bind):
            return IPv4Address
        if isIPv6Address(bind):
            return IPv6Address
        return None  # not an IP literal: the attempt fails with acquireMultiplexer's ValueError

    def _candidates(self, addresses: Sequence[IPv4Address | IPv6Address]) -> list[tuple[str, int]]:
        """The ``(host, port)`` pairs to try, in Happy Eyeballs order; ``DNSLookupError`` if there is none."""
        family = self._family()
        usable = [a for a in addresses if family is None or isinstance(a, family)]
        if not usable:
            if addresses and family is not None:
                name = "IPv4" if family is IPv4Address else "IPv6"
                raise error.DNSLookupError(
                    f"{self._host!r} has no {name} address (bindAddress {self._bindAddress!r} is {name})"
                )
            raise error.DNSLookupError(f"no usable address for {self._host!r}")
        return [(a.host, self._port) for a in _interleaveFamilies(usable)]

    def _multiplexer(self, address: tuple[str, int]) -> UTPMultiplexer:
        ipv6 = isIPv6Address(address[0])
        bind = self._bindAddress
        if bind is None:
            bind = "::" if ipv6 else ""
        if self._bindPort:
            try:
                return acquireMultiplexer(self._reactor, bind, self._bindPort, self._config)
            except error.CannotListenError:
                if self._bindAddress is not None or ipv6 or not self._dualStackOnBindPort():
                    raise
                # An IPv6 attempt holds [::]:bindPort, which is dual-stack: the IPv4 attempt shares it.
                return acquireMultiplexer(self._reactor, "::", self._bindPort, self._config)
        if self._bindAddress is not None:
            return acquireMultiplexer(self._reactor, bind, 0, self._config)
        return ephemeralMultiplexer(self._reactor, bind, self._config)

    def _dualStackOnBindPort(self) -> bool:
        """One of our sockets is open on ``[::]:bindPort``."""
        wildcard = IPv6Address("UDP", "::", self._bindPort)
        return any(mux.getHost() == wildcard and not mux.closing for mux in activeMultiplexers(self._reactor))


def _address(host: str, port: int) -> IPv4Address | IPv6Address:
    return IPv6Address("UDP", host, port) if ":" in host else IPv4Address("UDP", host, port)
