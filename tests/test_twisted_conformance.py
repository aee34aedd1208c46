"""Twisted's own connection conformance tests, run against utp endpoints on real reactors.

``ConnectionTestsMixin`` (twisted.internet.test.connectionmixins), ``AbortConnectionMixin`` and
``WriteSequenceTestsMixin`` (twisted.internet.test.test_tcp) plus the pause/half-close tests of
``TCPConnectionTestsBuilder`` rewritten for an endpoint pair. These mixins are private Twisted test
modules: they may change between releases.
"""

from __future__ import annotations

import socket

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime, IReactorUDP
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory
from twisted.internet.test.connectionmixins import (
    ConnectableProtocol,
    ConnectionTestsMixin,
    EndpointCreator,
    runProtocolsWithReactor,
)
from twisted.internet.test.reactormixins import ReactorBuilder
from twisted.internet.test.test_tcp import AbortConnectionMixin, WriteSequenceTestsMixin
from twisted.python import log
from zope.interface import implementer

from txutp import UTPClientEndpoint, UTPServerEndpoint

# The reactors every uTP conformance test runs on (posix reactors with IReactorUDP).
REACTORS = [
    "twisted.internet.selectreactor.SelectReactor",
    "twisted.internet.epollreactor.EPollReactor",
    "twisted.internet.test.reactormixins.AsyncioSelectorReactor",
]


class UTPCreator(EndpointCreator):
    """uTP server and client endpoints on loopback."""

    def server(self, reactor):
        return UTPServerEndpoint(reactor, 0, interface="127.0.0.1")

    def client(self, reactor, serverAddress):
        return UTPClientEndpoint(reactor, serverAddress.host, serverAddress.port, timeout=10)


class UTPBuilder(ReactorBuilder):
    _reactors = REACTORS
    requiredInterfaces = (IReactorUDP, IReactorTime)
    endpoints = UTPCreator()


class UTPConnectionTestsBuilder(UTPBuilder, ConnectionTestsMixin):
    """test_logPrefix, test_writeAfterDisconnect, test_protocolGarbageAfterLostConnection."""


class UTPAbortConnectionTestsBuilder(UTPBuilder, AbortConnectionMixin):
    """The eleven abortConnection tests; each also checks no reader and no delayed call is left."""


class UTPWriteSequenceTestsBuilder(UTPBuilder, WriteSequenceTestsMixin):
    """writeSequence, str rejected, streaming and pull producers with a 500-byte bufferSize."""

    def getConnectedClientAndServer(self, reactor, interface, addressFamily):
        from twisted.test.test_tcp import MyClientFactory, MyServerFactory

        server = MyServerFactory()
        server.protocolConnectionMade = Deferred()
        server.protocolConnectionLost = Deferred()
        client = MyClientFactory()
        client.protocolConnectionMade = Deferred()
        client.protocolConnectionLost = Deferred()
        assert addressFamily == socket.AF_INET
        result = Deferred()
        lost = gatherResults([client.protocolConnectionLost, server.protocolConnectionLost])

        def stop(outcome):
            reactor.stop()
            return outcome

        lost.addBoth(stop)
        started = gatherResults([client.protocolConnectionMade, server.protocolConnectionMade])

        def listening(port):
            UTPClientEndpoint(reactor, interface, port.getHost().port).connect(client)
            started.addCallback(lambda protocols: result.callback((protocols[0], protocols[1], port)))

        UTPServerEndpoint(reactor, 0, interface).listen(server).addCallback(listening).addErrback(log.err)
        return result


class UTPPauseAndHalfCloseTestsBuilder(UTPBuilder):
    """TCPConnectionTestsBuilder's pause and half-close tests, on a uTP endpoint pair."""

    def test_connectionLostAfterPausedTransport(self):
        """A paused transport learns of the clean close only once resumed, after its data."""

        class Pauser(ConnectableProtocol):
            def __init__(self):
                self.events = []

            def dataReceived(self, data):
                self.events.append("paused")
                self.transport.pauseProducing()
                self.reactor.callLater(0.05, self.resume)

            def resume(self):
                self.events.append("resumed")
                self.transport.resumeProducing()

            def connectionLost(self, reason):
                self.events.append("lost")
                ConnectableProtocol.connectionLost(self, reason)

        class Client(ConnectableProtocol):
            def connectionMade(self):
                self.transport.write(b"some bytes for you")
                self.transport.loseConnection()

        pauser = Pauser()
        runProtocolsWithReactor(self, pauser, Client(), self.endpoints)
        self.assertEqual(pauser.events, ["paused", "resumed", "lost"])

    def test_doubleHalfClose(self):
        """readConnectionLost -> loseWriteConnection -> writeConnectionLost -> loseConnection closes cleanly."""

        @implementer(IHalfCloseableProtocol)
        class ListenerProtocol(ConnectableProtocol):
            def readConnectionLost(self):
                self.transport.loseWriteConnection()

            def writeConnectionLost(self):
                self.transport.loseConnection()

        class Client(ConnectableProtocol):
            def connectionMade(self):
                self.transport.loseConnection()

        listener = ListenerProtocol()
        client = Client()
        runProtocolsWithReactor(self, listener, client, self.endpoints)
        from twisted.internet.error import ConnectionDone

        self.assertIsInstance(listener.disconnectReason.value, ConnectionDone)
        self.assertIsInstance(client.disconnectReason.value, ConnectionDone)

    def test_stopStartReading(self):
        """Toggling pauseProducing/resumeProducing loses no byte and reorders none."""

        class Toggler(ConnectableProtocol):
            def connectionMade(self):
                self.data = b""
                self.toggle(3)

            def toggle(self, n):
                self.transport.pauseProducing()
                self.transport.resumeProducing()
                if n:
                    self.reactor.callLater(0, self.toggle, n - 1)

            def dataReceived(self, data):
                self.data += data
                if len(self.data) == 4 * 4096:
                    self.transport.loseConnection()

        class Writer(ConnectableProtocol):
            def connectionMade(self):
                self.transport.write(b"x" * (2 * 4096) + b"y" * (2 * 4096))

        toggler = Toggler()
        runProtocolsWithReactor(self, toggler, Writer(), self.endpoints)
        self.assertEqual(toggler.data, b"x" * (2 * 4096) + b"y" * (2 * 4096))

    def test_resumeProducingWhileDisconnecting(self):
        """After loseConnection, resumeProducing delivers no more data."""
        received = []

        class Server(ConnectableProtocol):
            def connectionMade(self):
                self.transport.pauseProducing()
                self.transport.loseConnection()
                self.transport.resumeProducing()

            def dataReceived(self, data):
                received.append(data)

        class Client(ConnectableProtocol):
            def connectionMade(self):
                self.transport.write(b"ignored")

        runProtocolsWithReactor(self, Server(), Client(), self.endpoints)
        self.assertEqual(received, [])


class UTPGarbageBuilder(UTPBuilder):
    """The reactor keeps no reference to a protocol whose connection ended (also on the server side)."""

    def test_serverProtocolGarbage(self):
        import gc
        import weakref

        refs = []

        class Server(Protocol):
            def connectionMade(self):
                refs.append(weakref.ref(self))
                self.transport.loseConnection()

        reactor = self.buildReactor()
        done = Deferred()

        class Client(Protocol):
            def connectionLost(self, reason):
                done.callback(None)

        def listening(port):
            UTPClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(ClientFactory.forProtocol(Client))
            return done

        d = UTPServerEndpoint(reactor, 0, "127.0.0.1").listen(ServerFactory.forProtocol(Server))
        d.addCallback(listening).addErrback(log.err).addBoth(lambda _: reactor.stop())
        self.runReactor(reactor, timeout=20)
        gc.collect()
        self.assertEqual(len(refs), 1)
        self.assertIsNone(refs[0]())


for _builder in (
    UTPConnectionTestsBuilder,
    UTPAbortConnectionTestsBuilder,
    UTPWriteSequenceTestsBuilder,
    UTPPauseAndHalfCloseTestsBuilder,
    UTPGarbageBuilder,
):
    globals().update(_builder.makeTestCaseClasses())
del _builder
