"""The UDP carrier (txutp._udp) on real loopback sockets: the port listenUTP makes, its send policy, its close.

GSO and GRO themselves are pinned in test_batched_io.py.
"""

from __future__ import annotations

import errno

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from txutp import UTPMultiplexer, listenUTP
from txutp._udp import BatchingUDPPort
from txutp.carriers import BatchingCarrier
from txutp.transport import UTPNoRoute

from .twisted_helpers import FAST, Collector, echoFactory, sleep


class ListenUTPTests(unittest.TestCase):
    def setUp(self) -> None:
        self.mux = UTPMultiplexer(reactor, FAST)
        self.port = listenUTP(reactor, 0, self.mux, "127.0.0.1")
        self.addCleanup(self.mux.closeNow)

    def test_the_port_is_a_batching_carrier_started_from_outside(self) -> None:
        self.assertIsInstance(self.port, BatchingUDPPort)
        self.assertIsInstance(self.port, BatchingCarrier)
        self.assertIs(self.mux.carrier, self.port)
        self.assertIs(self.mux.transport, self.port)
        self.assertEqual(self.mux.getHost(), IPv4Address("UDP", "127.0.0.1", self.port.getHost().port))
        self.assertIs(self.port.stats, self.mux.stats)  # it counts for its multiplexer
        self.assertFalse(self.mux.closeWhenUnused)

    def test_refused_datagrams_count_as_loss(self) -> None:
        def full(data: bytes, addr: object) -> None:
            raise OSError(errno.ENOBUFS, "No buffer space available")

        self.port.sendto = full
        self.port.write(b"x", ("127.0.0.1", 9))
        self.port.writeBatch([(b"y", ("127.0.0.1", 9))])
        self.assertEqual((self.mux.stats.send_errors, self.mux.stats.datagrams_sent), (2, 0))

    def test_emsgsize_tells_the_engine(self) -> None:
        tooBig: list[tuple[bytes, object]] = []
        self.mux.datagramTooBig = lambda data, addr: tooBig.append((data, addr))  # type: ignore[method-assign]

        def refuse(data: bytes, addr: object) -> None:
            raise OSError(errno.EMSGSIZE, "Message too long")

        self.port.sendto = refuse
        self.port.write(b"z" * 1500, ("127.0.0.1", 9))
        self.assertEqual(tooBig, [(b"z" * 1500, ("127.0.0.1", 9))])

    def test_stop_listening_closes_at_once(self) -> None:
        d = self.port.stopListening()
        self.assertTrue(d.called)
        self.assertTrue(self.mux.closed)
        self.assertTrue(self.mux.whenClosed().called)
        self.assertNotIn(self.port, reactor.getReaders())
        self.assertFalse(self.port.connected)


class PlainTwistedPortTests(unittest.TestCase):
    """Twisted's own UDP port is a carrier too: no batching, a flush per reactor turn."""

    async def test_echo_over_listenUDP(self) -> None:
        server, client = UTPMultiplexer(reactor, FAST), UTPMultiplexer(reactor, FAST)
        serverPort = reactor.listenUDP(0, server, interface="127.0.0.1")
        reactor.listenUDP(0, client, interface="127.0.0.1")
        self.assertFalse(isinstance(serverPort, BatchingCarrier))
        server.startListening(echoFactory())
        proto = await client.connect(("127.0.0.1", serverPort.getHost().port), Factory.forProtocol(Collector), 5)
        proto.transport.write(b"plain UDP")
        for _ in range(200):
            if bytes(proto.data) == b"plain UDP":
                break
            await sleep(0.01)
        self.assertEqual(bytes(proto.data), b"plain UDP")
        self.assertGreater(client.stats.datagrams_sent, 1)  # counted by the multiplexer
        proto.transport.loseConnection()
        await proto.lost
        await client.closeNow()
        await server.closeNow()
        self.assertTrue(server.closed and client.closed)


class NoRouteTests(unittest.TestCase):
    async def test_a_connect_with_no_route_from_here_fails_at_once(self) -> None:
        mux = UTPMultiplexer(reactor, FAST)
        port = listenUTP(reactor, 0, mux, "127.0.0.1")
        self.addCleanup(mux.closeNow)

        def noRoute(data: bytes, addr: object) -> None:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")

        port.sendto = noRoute
        started = reactor.seconds()
        with self.assertRaises(UTPNoRoute) as caught:
            await mux.connect(("127.0.0.1", 9), Factory.forProtocol(Collector), 5)
        self.assertLess(reactor.seconds() - started, 1.0)
        self.assertIn("network unreachable (this host)", str(caught.exception))
        self.assertEqual(mux.context.stats.path_errors, 1)
