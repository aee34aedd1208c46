"""The endpoints on loopback with the real reactor: interfaces, connect and listen, failures, cancellation,
port sharing, IPv6, and the lazy exports of the endpoint classes. (The ``utp:`` strings: test_parsers.py.)"""

from __future__ import annotations

import time

from twisted.internet import error, reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import (
    IConsumer,
    IListeningPort,
    ILoggingContext,
    IPushProducer,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

import txutp
from txutp import UTPClientEndpoint, UTPConfig, UTPServerEndpoint, UTPTransport, activeMultiplexers
from txutp.endpoints import UTPListeningPort

from .twisted_helpers import FAST, Collector, closeAllSockets, echoFactory, sleep, waitForAllClosed


class LazyExportTests(TestCase):
    """``txutp`` exports the endpoint classes (and the rest of the Twisted side) lazily."""

    def test_lazy_exports(self) -> None:
        for name in ("UTPServerEndpoint", "UTPClientEndpoint", "UTPTransport", "UTPMultiplexer", "UTPConfig"):
            self.assertIn(name, txutp.__all__)
            self.assertIsNotNone(getattr(txutp, name))
        self.assertIs(txutp.UTPTransport, UTPTransport)
        with self.assertRaises(AttributeError):
            txutp.NoSuchThing  # noqa: B018


class EndpointTests(TestCase):
    """Endpoints on loopback with the real reactor."""

    def setUp(self) -> None:
        self.addCleanup(closeAllSockets)

    async def listen(self, factory: Factory | None = None, interface: str = "127.0.0.1", **kw) -> UTPListeningPort:
        port = await UTPServerEndpoint(reactor, 0, interface, kw.pop("config", FAST), **kw).listen(
            factory or echoFactory()
        )
        return port

    async def test_interfaces(self) -> None:
        port = await self.listen()
        verifyObject(IListeningPort, port)
        verifyObject(IStreamServerEndpoint, UTPServerEndpoint(reactor, 0))
        verifyObject(IStreamClientEndpoint, UTPClientEndpoint(reactor, "127.0.0.1", 1))
        self.assertEqual(port.getHost().type, "UDP")
        client = await UTPClientEndpoint(reactor, "127.0.0.1", port.getHost().port, config=FAST).connect(
            Factory.forProtocol(Collector)
        )
        transport = client.transport
        for iface in (ITransport, IConsumer, IPushProducer, ILoggingContext):
            verifyObject(iface, transport)
        self.assertIsInstance(transport, UTPTransport)
        self.assertEqual(transport.getPeer(), IPv4Address("UDP", "127.0.0.1", port.getHost().port))
        self.assertEqual(transport.getHost().type, "UDP")
        self.assertEqual(transport.stats().state, "CONNECTED")
        with self.assertRaises(TypeError):
            transport.write("text")
        transport.loseConnection()
        await client.lost

    async def test_resolves_localhost(self) -> None:
        port = await self.listen()
        client = await clientFromString(reactor, f"utp:localhost:{port.getHost().port}:timeout=10").connect(
            Factory.forProtocol(Collector)
        )
        self.assertEqual(client.transport.getPeer().host, "127.0.0.1")
        client.transport.write(b"ping")
        while bytes(client.data) != b"ping":
            await sleep(0.01)
        client.transport.loseConnection()
        await client.lost

    async def test_unknown_host(self) -> None:
        with self.assertRaises(error.DNSLookupError):
            await UTPClientEndpoint(reactor, "no-such-host.invalid", 6881, timeout=10).connect(Factory())

    async def test_connect_timeout_against_a_silent_port(self) -> None:
        silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        started = time.monotonic()
        with self.assertRaises(error.TimeoutError):
            await clientFromString(reactor, f"utp:127.0.0.1:{silent.getHost().port}:timeout=0.5").connect(
                Factory.forProtocol(Protocol)
            )
        self.assertLess(time.monotonic() - started, 3)
        await waitForAllClosed()

    async def test_refused_by_a_port_that_does_not_listen(self) -> None:
        port = await self.listen()
        await port.stopListening()
        # A client-only socket answers SYNs with RESET.
        holder = await self.listen()
        holder.multiplexer.context.accepting = False
        with self.assertRaises(error.ConnectionRefusedError):
            await UTPClientEndpoint(reactor, "127.0.0.1", holder.getHost().port, timeout=5).connect(Factory())

    async def test_a_connect_over_the_per_host_limit_fails_at_once(self) -> None:
        silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        endpoint = UTPClientEndpoint(
            reactor, "127.0.0.1", silent.getHost().port, config=UTPConfig(max_connections_per_host=1)
        )
        first = endpoint.connect(Factory.forProtocol(Protocol))  # pending: nobody answers
        with self.assertRaises(error.ConnectError) as caught:
            await endpoint.connect(Factory.forProtocol(Protocol))
        self.assertIn("max_connections_per_host=1", str(caught.exception))
        first.cancel()
        with self.assertRaises(error.ConnectingCancelledError):
            await first
        await waitForAllClosed()

    async def test_cancellation(self) -> None:
        silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        d = UTPClientEndpoint(reactor, "127.0.0.1", silent.getHost().port).connect(Factory.forProtocol(Protocol))
        await sleep(0.05)
        d.cancel()
        with self.assertRaises(error.ConnectingCancelledError):
            await d
        await waitForAllClosed()

    async def test_cancellation_while_resolving(self) -> None:
        d = UTPClientEndpoint(reactor, "localhost", 9).connect(Factory.forProtocol(Protocol))
        d.cancel()
        with self.assertRaises(error.ConnectingCancelledError):
            await d
        await sleep(0.2)  # let the resolver thread finish

    async def test_bind_port_shares_the_server_socket(self) -> None:
        """A client bound to a server's port uses its socket; stopListening keeps it while the client lives."""
        here = await self.listen()
        there = await self.listen()
        herePort = here.getHost().port
        client = await clientFromString(
            reactor, f"utp:127.0.0.1:{there.getHost().port}:bindAddress=127.0.0.1:bindPort={herePort}"
        ).connect(Factory.forProtocol(Collector))
        self.assertEqual(client.transport.getHost(), IPv4Address("UDP", "127.0.0.1", herePort))
        mux = here.multiplexer
        self.assertIs(client.transport._mux, mux)
        self.assertEqual(len([m for m in activeMultiplexers(reactor) if m.getHost().port == herePort]), 1)
        stopped = here.stopListening()
        await stopped
        self.assertFalse(mux.closed)  # the client connection still uses the socket
        client.transport.write(b"still here")
        while bytes(client.data) != b"still here":
            await sleep(0.01)
        client.transport.loseConnection()
        await client.lost
        await mux.whenClosed()
        self.assertTrue(mux.closed)
        # The port is free again.
        again = await UTPServerEndpoint(reactor, herePort, "127.0.0.1", FAST).listen(echoFactory())
        self.assertEqual(again.getHost().port, herePort)

    async def test_second_listen_on_a_port_fails(self) -> None:
        port = await self.listen()
        with self.assertRaises(error.CannotListenError):
            await UTPServerEndpoint(reactor, port.getHost().port, "127.0.0.1").listen(echoFactory())

    async def test_config_mismatch(self) -> None:
        port = await self.listen()
        other = UTPConfig(backlog=3)
        with self.assertRaises(ValueError):
            await UTPClientEndpoint(
                reactor, "127.0.0.1", 9, bindAddress="127.0.0.1", bindPort=port.getHost().port, config=other
            ).connect(Factory())

    async def test_ipv6(self) -> None:
        port = await serverFromString(reactor, r"utp:0:interface=\:\:1").listen(echoFactory())
        self.assertEqual(port.getHost(), IPv6Address("UDP", "::1", port.getHost().port))
        client = await clientFromString(reactor, rf"utp:\:\:1:{port.getHost().port}").connect(
            Factory.forProtocol(Collector)
        )
        self.assertEqual(client.transport.getPeer(), IPv6Address("UDP", "::1", port.getHost().port))
        client.transport.write(b"six")
        while bytes(client.data) != b"six":
            await sleep(0.01)
        client.transport.loseConnection()
        await client.lost

    async def test_dual_stack_any(self) -> None:
        """A server on '::' accepts IPv4 clients (Linux dual-stack default); peers show as IPv4."""
        peers: list[object] = []

        class Record(Protocol):
            def connectionMade(self) -> None:
                peers.append(self.transport.getPeer())
                self.transport.write(b"hi")

        port = await UTPServerEndpoint(reactor, 0, "::", FAST).listen(Factory.forProtocol(Record))
        client = await UTPClientEndpoint(reactor, "127.0.0.1", port.getHost().port, config=FAST).connect(
            Factory.forProtocol(Collector)
        )
        while bytes(client.data) != b"hi":
            await sleep(0.01)
        self.assertEqual(peers, [IPv4Address("UDP", "127.0.0.1", client.transport.getHost().port)])
        # And a client bound to '::' reaches an IPv4 server.
        v4 = await self.listen()
        viaV6 = await UTPClientEndpoint(reactor, "127.0.0.1", v4.getHost().port, bindAddress="::", config=FAST).connect(
            Factory.forProtocol(Collector)
        )
        viaV6.transport.write(b"x")
        while bytes(viaV6.data) != b"x":
            await sleep(0.01)
        for c in (client, viaV6):
            c.transport.loseConnection()
            await c.lost

    async def test_build_protocol_none_refuses(self) -> None:
        class Refuse(Factory):
            def buildProtocol(self, addr):
                return None

        port = await self.listen(Refuse())
        client = UTPClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5)
        proto = await client.connect(Factory.forProtocol(Collector))
        # The server resets the confirmed connection at once.
        reason = await proto.lost
        self.assertIsInstance(reason, error.ConnectionLost)

    async def test_client_factory_none_fails_connect(self) -> None:
        port = await self.listen()

        class Nothing(Factory):
            def buildProtocol(self, addr):
                return None

        with self.assertRaises(error.NoProtocol):
            await UTPClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(Nothing())

    async def test_stop_listening_closes_the_socket_cleanly(self) -> None:
        """After the last connection and stopListening, the socket closes by itself; nothing is left."""
        servers: list[Collector] = []

        class Server(Collector):
            def connectionMade(self) -> None:
                servers.append(self)
                self.transport.write(b"abc")

        port = await self.listen(Factory.forProtocol(Server))
        client = await UTPClientEndpoint(reactor, "127.0.0.1", port.getHost().port, config=FAST).connect(
            Factory.forProtocol(Collector)
        )
        while bytes(client.data) != b"abc":
            await sleep(0.01)
        client.transport.loseConnection()
        await client.lost
        await servers[0].lost
        await port.stopListening()
        self.assertTrue(port.multiplexer.closed)
        await waitForAllClosed()
        self.assertEqual([c for c in reactor.getDelayedCalls() if "UTP" in repr(c)], [])
        self.assertNotIn(port.multiplexer.port, reactor.getReaders())
