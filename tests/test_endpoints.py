r"""Endpoint strings, plugin discovery, interfaces, and the client endpoint's behaviours on loopback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from twisted.application.service import IServiceMaker
from twisted.internet import error, reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import (
    IConsumer,
    IListeningPort,
    ILoggingContext,
    IPushProducer,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
    ITransport,
)
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

import txutp
from txutp import UTPClientEndpoint, UTPConfig, UTPServerEndpoint, UTPTransport
from txutp._multiplexer import activeMultiplexers
from txutp._parsers import UTPClientParser, UTPServerParser
from txutp.endpoints import UTPListeningPort

from .twisted_helpers import FAST, Collector, closeAllSockets, echoFactory, sleep, waitForAllClosed


class ServerStringTests(TestCase):
    """Every documented server form parses; bad ones raise ValueError naming the key."""

    def parse(self, description: str) -> UTPServerEndpoint:
        endpoint = serverFromString(reactor, description)
        self.assertIsInstance(endpoint, UTPServerEndpoint)
        return endpoint

    def test_forms(self) -> None:
        cases = {
            "utp:6881": (6881, "", None),
            "UTP:6881": (6881, "", None),
            "utp:0": (0, "", None),
            "utp:port=6881": (6881, "", None),
            "utp:6881:interface=127.0.0.1": (6881, "127.0.0.1", None),
            r"utp:6881:interface=\:\:1": (6881, "::1", None),
            r"utp:6881:interface=\:\:": (6881, "::", None),
            "utp:6881:backlog=50": (6881, "", 50),
            "utp:port=6881:interface=127.0.0.1:backlog=7": (6881, "127.0.0.1", 7),
            "utp:6881:backlog=9:synCookies=always": (6881, "", 9),
        }
        for description, (port, interface, backlog) in cases.items():
            endpoint = self.parse(description)
            self.assertEqual((endpoint._port, endpoint._interface), (port, interface), description)
            if backlog is None:
                self.assertIsNone(endpoint._config, description)
            else:
                self.assertEqual(endpoint._config.backlog, backlog, description)

    def test_errors_name_the_key(self) -> None:
        cases = {
            "utp:": "port",
            "utp:interface=127.0.0.1": "port",
            "utp:abc": "port",
            "utp:70000": "port",
            "utp:-1": "port",
            "utp:6881:interface=localhost": "interface",
            "utp:6881:interface=::1": "interface",  # unescaped IPv6: the tokenizer splits it
            "utp:6881:backlog=0": "backlog",
            "utp:6881:backlog=many": "backlog",
            "utp:6881:synCookies=yes": "synCookies",
            "utp:6881:foo=1": "foo",
            "utp:6881:port=6882": "port",
            "utp:6881:7000": "7000",
        }
        for description, key in cases.items():
            with self.assertRaises(ValueError, msg=description) as caught:
                serverFromString(reactor, description)
            self.assertIn(key, str(caught.exception), description)


class ClientStringTests(TestCase):
    """Every documented client form parses; bad ones raise ValueError naming the key."""

    def test_forms(self) -> None:
        cases = {
            "utp:example.com:6881": ("example.com", 6881, 30.0, None, 0),
            "utp:host=example.com:port=6881": ("example.com", 6881, 30.0, None, 0),
            "utp:127.0.0.1:6881:timeout=2.5": ("127.0.0.1", 6881, 2.5, None, 0),
            r"utp:\:\:1:6881": ("::1", 6881, 30.0, None, 0),
            r"utp:host=\:\:1:port=6881:bindAddress=\:\:1": ("::1", 6881, 30.0, "::1", 0),
            "utp:host=h:port=1:timeout=3:bindAddress=127.0.0.1:bindPort=7000": ("h", 1, 3.0, "127.0.0.1", 7000),
            "utp:h:6881:bindPort=6881": ("h", 6881, 30.0, None, 6881),
        }
        for description, expected in cases.items():
            endpoint = clientFromString(reactor, description)
            self.assertIsInstance(endpoint, UTPClientEndpoint)
            got = (endpoint._host, endpoint._port, endpoint._timeout, endpoint._bindAddress, endpoint._bindPort)
            self.assertEqual(got, expected, description)

    def test_nested_in_tls(self) -> None:
        """tls: wraps a utp client description given in endpoint= (colons escaped once more)."""
        endpoint = clientFromString(reactor, r"tls:example.com:443:endpoint=utp\:example.com\:443")
        verifyObject(IStreamClientEndpoint, endpoint)
        self.assertIsInstance(endpoint._wrappedEndpoint, UTPClientEndpoint)

    def test_errors_name_the_key(self) -> None:
        cases = {
            "utp:example.com": "port",
            "utp:port=6881": "host",
            "utp:h:0": "port",
            "utp:h:65536": "port",
            "utp:h:x": "port",
            "utp:h:1:timeout=-1": "timeout",
            "utp:h:1:timeout=0": "timeout",
            "utp:h:1:timeout=soon": "timeout",
            "utp:h:1:bindAddress=localhost": "bindAddress",
            "utp:h:1:bindAddress=": "bindAddress",
            "utp:h:1:bindPort=x": "bindPort",
            "utp:h:1:bindPort=99999": "bindPort",
            "utp:h:1:bogus=1": "bogus",
            "utp:h:1:host=g": "host",
            "utp:h:1:2": "'2'",
        }
        for description, key in cases.items():
            with self.assertRaises(ValueError, msg=description) as caught:
                clientFromString(reactor, description)
            self.assertIn(key, str(caught.exception), description)


class PluginTests(TestCase):
    def test_parsers_found(self) -> None:
        servers = [p for p in getPlugins(IStreamServerEndpointStringParser) if p.prefix == "utp"]
        clients = [p for p in getPlugins(IStreamClientEndpointStringParserWithReactor) if p.prefix == "utp"]
        self.assertEqual([type(p) for p in servers], [UTPServerParser])
        self.assertEqual([type(p) for p in clients], [UTPClientParser])
        verifyObject(IPlugin, servers[0])
        verifyObject(IStreamServerEndpointStringParser, servers[0])
        verifyObject(IPlugin, clients[0])
        verifyObject(IStreamClientEndpointStringParserWithReactor, clients[0])

    def test_service_maker_found(self) -> None:
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "utp"]
        self.assertEqual(len(makers), 1)
        verifyObject(IServiceMaker, makers[0])
        self.assertIn("utp:<port>", makers[0].options().longdesc)

    def test_plugin_module_never_imports_the_reactor(self) -> None:
        code = textwrap.dedent(
            """
            import sys
            import twisted.plugins.txutp_plugins as m
            from twisted.plugin import getPlugins, IPlugin
            list(getPlugins(IPlugin))
            m.utpServerParser, m.utpClientParser, m.utpServiceMaker.tapname
            assert "twisted.internet.reactor" not in sys.modules, "reactor imported"
            print("clean")
            """
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "clean")

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
