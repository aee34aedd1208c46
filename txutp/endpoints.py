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

from typing import Any

from twisted.internet import error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IResolutionReceiver,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from ._multiplexer import Reactor, UTPMultiplexer
from ._registry import acquireMultiplexer, ephemeralMultiplexer
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
        ``max(linger_time, 3 RTO)``).
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
    """

    def __init__(
        self,
        reactor: Reactor,
        port: int,
        interface: str = "",
        config: UTPConfig | None = None,
        *,
        datagramProtocol: DatagramProtocol | None = None,
    ) -> None:
        self._reactor = reactor
        self._port = port
        self._interface = interface
        self._config = config
        self._datagramProtocol = datagramProtocol

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Start listening; fails with ``CannotListenError`` if the port cannot be had."""
        try:
            mux = acquireMultiplexer(self._reactor, self._interface, self._port, self._config, self._datagramProtocol)
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


@implementer(IStreamClientEndpoint)
class UTPClientEndpoint:
    """Connect over uTP to ``host`` (a name, resolved by the reactor's resolver, or an IP literal) and ``port``.

    ``timeout`` bounds name resolution plus handshake (seconds; ``None`` leaves
    only the engine's SYN timeout, 21 s by default). ``bindAddress`` and
    ``bindPort`` choose the local socket; with ``bindPort`` equal to a server's
    port on the same interface the connection shares that server's socket.
    Without either, clients share one ephemeral socket. Of the resolved
    addresses the first IPv4 one is used (or the first IPv6 one, if none, or
    if ``bindAddress`` is IPv6).
    """

    def __init__(
        self,
        reactor: Reactor,
        host: str,
        port: int,
        timeout: float | None = 30,
        bindAddress: str | None = None,
        bindPort: int = 0,
        config: UTPConfig | None = None,
    ) -> None:
        self._reactor = reactor
        self._host = host
        self._port = port
        self._timeout = timeout
        self._bindAddress = bindAddress
        self._bindPort = bindPort
        self._config = config

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect; the Deferred fires with the protocol after ``connectionMade``.

        Failures: ``ConnectionRefusedError`` (the peer answered RESET),
        ``TimeoutError``, ``DNSLookupError``, ``ConnectBindError``,
        ``ConnectingCancelledError`` (the Deferred was cancelled).
        """
        reactor = self._reactor
        deadline = None if self._timeout is None else reactor.seconds() + self._timeout
        connecting: list[Deferred[IProtocol]] = []
        finished = [False]
        timeoutCall: list[Any] = []

        def cancel(d: Deferred[IProtocol]) -> None:
            if connecting:
                connecting[0].cancel()  # fails with ConnectingCancelledError
            else:
                finish(Failure(error.ConnectingCancelledError(HostnameAddress(self._host.encode(), self._port))))

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

        def resolved(addresses: list[IPv4Address | IPv6Address]) -> None:
            if finished[0]:
                return
            address = self._choose(addresses)
            if address is None:
                finish(Failure(error.DNSLookupError(f"no usable address for {self._host!r}")))
                return
            remaining = None if deadline is None else max(0.0, deadline - reactor.seconds())
            try:
                mux = self._multiplexer(address)
            except error.CannotListenError as e:
                finish(Failure(error.ConnectBindError(str(e))))
                return
            except Exception:
                finish(Failure())
                return
            mux.hold()
            try:
                d = mux.connect(address, protocolFactory, remaining)
            except Exception:
                finish(Failure())
                return
            finally:
                mux.release()
            while timeoutCall:
                timeoutCall.pop().cancel()
            connecting.append(d)
            d.addBoth(finish)

        if isIPAddress(self._host) or isIPv6Address(self._host):
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

    def _choose(self, addresses: list[IPv4Address | IPv6Address]) -> tuple[str, int] | None:
        bind = self._bindAddress
        v4: list[IPv4Address | IPv6Address] = [a for a in addresses if isinstance(a, IPv4Address)]
        v6: list[IPv4Address | IPv6Address] = [a for a in addresses if isinstance(a, IPv6Address)]
        if bind and isIPAddress(bind):
            candidates = v4
        elif bind and isIPv6Address(bind) and bind != "::":
            candidates = v6
        elif bind == "::":
            candidates = v6 + v4
        else:
            candidates = v4 + v6
        if not candidates:
            return None
        return (candidates[0].host, self._port)

    def _multiplexer(self, address: tuple[str, int]) -> UTPMultiplexer:
        ipv6 = isIPv6Address(address[0])
        bind = self._bindAddress
        if bind is None:
            bind = "::" if ipv6 else ""
        if self._bindPort:
            return acquireMultiplexer(self._reactor, bind, self._bindPort, self._config)
        if self._bindAddress is not None:
            return acquireMultiplexer(self._reactor, bind, 0, self._config)
        return ephemeralMultiplexer(self._reactor, bind, self._config)


def _address(host: str, port: int) -> IPv4Address | IPv6Address:
    return IPv6Address("UDP", host, port) if ":" in host else IPv4Address("UDP", host, port)
