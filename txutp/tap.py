"""The ``twistd utp`` plugin: forward byte streams between any two endpoints, or echo.

``twistd -n utp --listen utp:6881 --connect tcp:127.0.0.1:22`` exposes a TCP
service over uTP; ``twistd -n utp --listen tcp:2222 --connect utp:host=peer:port=6881``
reaches it. Bytes flow both ways with backpressure (each side's transport is
the other's producer) and half-close passes through. ``--echo`` instead of
``--connect`` echoes every byte back (for testing). With ``--listen
utp:6881:reuseport=4`` the process is a supervisor that runs the service in
4 worker processes sharing the port (``txutp.reuseport``, Linux).

This module must not import the reactor at import time: twistd loads it to
parse options before it installs a reactor.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamClientEndpoint, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["EchoFactory", "ForwardingFactory", "Options", "makeService"]

_log = Logger()


class Options(usage.Options):
    """Options of ``twistd utp``."""

    synopsis = "--listen <endpoint> [--listen <endpoint> ...] (--connect <endpoint> | --echo)"
    longdesc = r"""Forward every connection accepted on the --listen endpoints to the --connect endpoint,
bytes both ways with backpressure and half-close passed through; or, with --echo, echo every byte back.

Endpoints are Twisted endpoint strings; txutp adds:
  server  utp:<port>[:interface=<ip>][:backlog=<n>]
  client  utp:<host>:<port>  or  utp:host=<h>:port=<p>[:timeout=<s>][:bindAddress=<ip>][:bindPort=<n>]
IPv6 literals escape their colons: utp:6881:interface=\:\:1, utp:\:\:1:6881.

Examples:
  twistd -n utp --listen utp:6881 --connect tcp:127.0.0.1:22
  twistd -n utp --listen tcp:2222 --connect utp:host=peer.example:port=6881
  twistd -n utp --listen utp:7000 --echo
  twistd -n utp --listen utp:7000 --echo --metrics tcp:9100:interface=127.0.0.1
  twistd -n utp --listen utp:6881:reuseport=4 --connect tcp:127.0.0.1:22

With utp:<port>:reuseport=<n> (Linux) this process opens the port for n worker processes,
runs the service in each, and starts a worker again if it exits; every --listen must then be
such an endpoint, with the same n.
"""
    optFlags = [["echo", None, "Echo every byte back instead of forwarding."]]
    optParameters = [
        ["connect", "c", None, "Client endpoint string to forward each connection to."],
        [
            "metrics",
            None,
            None,
            "Server endpoint string (e.g. tcp:9100:interface=127.0.0.1) to serve Prometheus metrics on,"
            " at /metrics (needs txutp[prometheus]).",
        ],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["listen"] = []
        self["shared"] = []
        #: The plugin's own arguments, as given (the workers of a reuseport=N supervisor get them).
        self.arguments: list[str] = []

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """Parse ``options`` (``sys.argv[1:]`` by default), remembering them for worker processes."""
        self.arguments = list(sys.argv[1:] if options is None else options)
        usage.Options.parseOptions(self, options)

    def opt_listen(self, description: str) -> None:
        """Server endpoint string to accept connections on (repeatable)."""
        self["listen"].append(description)

    opt_l = opt_listen

    def postOptions(self) -> None:
        """Require at least one --listen and exactly one of --connect and --echo."""
        if not self["listen"]:
            raise usage.UsageError("give at least one --listen endpoint")
        if bool(self["connect"]) == bool(self["echo"]):
            raise usage.UsageError("give exactly one of --connect <endpoint> and --echo")
        self["shared"] = _sharedPorts(self["listen"])
        if self["shared"]:
            if len(self["shared"]) != len(self["listen"]) or len({n for _, _, n in self["shared"]}) != 1:
                raise usage.UsageError(
                    "with utp:<port>:reuseport=<n>, every --listen must be such an endpoint, with the same n"
                    " (each worker process runs them all)"
                )
            if self["metrics"]:
                raise usage.UsageError("--metrics cannot be combined with reuseport=<n> (every worker would serve it)")


def _sharedPorts(descriptions: list[str]) -> list[tuple[str, int, int]]:
    """``(interface, port, workers)`` of each ``utp:`` description with ``reuseport=<n>``."""
    from twisted.internet.endpoints import serverFromString

    shared = []
    for description in descriptions:
        if not description.startswith("utp:"):
            continue
        try:
            endpoint = serverFromString(None, description)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        group = getattr(endpoint, "reusePortGroup", None)
        if group is not None:
            shared.append(group)
    return shared


def _halfClose(transport: ITransport) -> None:
    loseWrite = getattr(transport, "loseWriteConnection", None)
    if loseWrite is not None:
        loseWrite()
    else:
        transport.loseConnection()


@implementer(IHalfCloseableProtocol)
class _ForwardingProtocol(Protocol):
    """One side of a forwarded connection; ``peer`` is the other side once connected."""

    def __init__(self) -> None:
        self.peer: _ForwardingProtocol | None = None
        self._early: list[bytes] = []
        self.readClosed = False
        self.writeClosed = False

    def pair(self, peer: _ForwardingProtocol) -> None:
        """Join with ``peer``: flush early data, make each transport the other's producer."""
        self.peer = peer
        assert self.transport is not None and peer.transport is not None
        if self._early:
            peer.transport.write(b"".join(self._early))
            self._early.clear()
        peer.transport.registerProducer(self.transport, True)  # type: ignore[attr-defined]
        if self.readClosed:
            peer.transport.unregisterProducer()  # type: ignore[attr-defined]
            _halfClose(peer.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self._early.append(data)

    def readConnectionLost(self) -> None:
        """Our peer-facing input ended: pass the EOF on as a half-close of the other side."""
        self.readClosed = True
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.unregisterProducer()  # type: ignore[attr-defined]
            _halfClose(peer.transport)
        self._maybeDone()

    def writeConnectionLost(self) -> None:
        """Our output is half-closed."""
        self.writeClosed = True
        self._maybeDone()

    def _maybeDone(self) -> None:
        if self.readClosed and self.writeClosed and self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        peer, self.peer = self.peer, None
        if peer is not None and peer.transport is not None:
            peer.peer = None
            peer.transport.unregisterProducer()  # type: ignore[attr-defined]
            if reason.check(ConnectionDone):
                peer.transport.loseConnection()
            else:
                abort = getattr(peer.transport, "abortConnection", None)
                (abort or peer.transport.loseConnection)()


class _InboundProtocol(_ForwardingProtocol):
    """The accepted side: connects outward, holding its input until the other side is up."""

    factory: ForwardingFactory

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.pauseProducing()  # type: ignore[attr-defined]
        outbound = _ForwardingProtocol()
        self._connecting: Deferred[Protocol] | None = self.factory.connect(outbound)
        self._connecting.addCallbacks(self._connected, self._failed)

    def _connected(self, outbound: Protocol) -> None:
        self._connecting = None
        assert isinstance(outbound, _ForwardingProtocol) and self.transport is not None
        if not self.transport.connected:  # type: ignore[attr-defined]
            outbound.transport.loseConnection()  # type: ignore[union-attr]
            return
        outbound.peer = self
        outbound.pair(self)
        self.pair(outbound)
        self.transport.resumeProducing()  # type: ignore[attr-defined]

    def _failed(self, failure: Failure) -> None:
        self._connecting = None
        _log.failure("Could not connect to {endpoint}", failure=failure, endpoint=self.factory.description)
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        connecting = getattr(self, "_connecting", None)
        if connecting is not None:
            self._connecting = None
            connecting.addErrback(lambda f: None)
            connecting.cancel()
        super().connectionLost(reason)


class ForwardingFactory(Factory):
    """Accepts connections and forwards each to the client endpoint ``description``."""

    protocol = _InboundProtocol  # type: ignore[assignment]

    def __init__(self, reactor: Any, description: str) -> None:
        self.reactor = reactor
        self.description = description

    def connect(self, outbound: Protocol) -> Deferred[Protocol]:
        """Open the outgoing side for one accepted connection."""
        from twisted.internet.endpoints import clientFromString, connectProtocol

        endpoint: IStreamClientEndpoint = clientFromString(self.reactor, self.description)
        connected: Deferred[Protocol] = connectProtocol(endpoint, outbound)
        return connected


@implementer(IHalfCloseableProtocol)
class _EchoProtocol(Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class EchoFactory(Factory):
    """Echoes every byte back; closes after the peer's EOF."""

    protocol = _EchoProtocol


def makeService(options: Options) -> IService:
    """Build the service: one endpoint service per ``--listen``."""
    from twisted.application import strports
    from twisted.internet import reactor

    if options["shared"]:
        from .reuseport import WorkerSupervisor, currentWorker

        if currentWorker() is None:
            argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
            argv += ["--nodaemon", "--pidfile=", "--logfile=-", "utp", *options.arguments]
            sockets = [(interface, port) for interface, port, _ in options["shared"]]
            return WorkerSupervisor(reactor, argv, options["shared"][0][2], sockets)
    factory: Factory = EchoFactory() if options["echo"] else ForwardingFactory(reactor, options["connect"])
    service = MultiService()
    for description in options["listen"]:
        strports.service(description, factory).setServiceParent(service)
    if options["metrics"]:
        strports.service(options["metrics"], metricsSite(reactor)).setServiceParent(service)
    return service


def metricsSite(reactor: Any) -> Any:
    """A ``twisted.web`` site serving the reactor's uTP metrics (``activeMetrics``) to Prometheus at ``/metrics``."""
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from ._registry import activeMetrics
    from .prometheus import metrics_resource

    root = Resource()
    root.putChild(b"metrics", metrics_resource(lambda: activeMetrics(reactor)))
    return Site(root)
