"""The shipped carriers (txutp.carriers): uTP over a MemoryNetwork, and inside envelopes on a shared port.

Each carrier passes the same three tests (an echo, a 10 MB transfer, a
half-close) on a task.Clock, with no socket.
"""

from __future__ import annotations

import hashlib
import os

from twisted.internet import error, task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txutp import UTPMultiplexer
from txutp.carriers import BatchingCarrier, CarrierAddress, EnvelopeCarrier, MemoryNetwork, asIAddress
from txutp.engine import is_utp_datagram

from .twisted_helpers import CLIENT, FAST, SERVER, Collector, echoFactory, forbidSockets, run

TEN_MB = 10 * 1024 * 1024


@implementer(IHalfCloseableProtocol)
class Digest(Collector):
    """Hashes what it reads; at the peer's EOF it answers with the digest and closes."""

    def __init__(self) -> None:
        super().__init__()
        self.hash = hashlib.sha256()
        self.count = 0

    def dataReceived(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)

    def readConnectionLost(self) -> None:
        self.transport.write(b"%d %s" % (self.count, self.hash.hexdigest().encode()))  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


class CarrierTests:
    """The tests every carrier passes; subclasses set up ``self.clock``, ``self.server``, ``self.client``."""

    clock: task.Clock
    server: UTPMultiplexer
    client: UTPMultiplexer
    #: The server's address, as the client connects to it.
    serverAddress: object

    def connect(self, factory: Factory) -> Collector:
        results: list[object] = []
        self.client.connect(self.serverAddress, factory).addBoth(results.append)
        run(self.clock, lambda: results, timeout=10)
        assert isinstance(results[0], Collector), results[0]
        return results[0]

    def test_echo(self) -> None:
        self.server.startListening(echoFactory())
        client = self.connect(Factory.forProtocol(Collector))
        client.transport.write(b"hello over a carrier")
        run(self.clock, lambda: bytes(client.data) == b"hello over a carrier", timeout=10)
        client.transport.loseConnection()
        run(self.clock, lambda: client.lost.called, timeout=10)
        self.assertIsInstance(client.reason.value, error.ConnectionDone)  # type: ignore[attr-defined]

    def test_ten_megabytes(self) -> None:
        self.server.startListening(Factory.forProtocol(Digest))
        client = self.connect(Factory.forProtocol(Collector))
        payload = os.urandom(TEN_MB)
        for start in range(0, TEN_MB, 1 << 20):
            client.transport.write(payload[start : start + (1 << 20)])
        client.transport.loseWriteConnection()
        run(self.clock, lambda: client.lost.called, timeout=120)
        expected = b"%d %s" % (TEN_MB, hashlib.sha256(payload).hexdigest().encode())
        self.assertEqual(bytes(client.data), expected)  # type: ignore[attr-defined]
        self.assertIsInstance(client.reason.value, error.ConnectionDone)  # type: ignore[attr-defined]

    def test_half_close(self) -> None:
        self.server.startListening(Factory.forProtocol(Digest))
        client = self.connect(Factory.forProtocol(Digest))
        client.transport.write(b"abc")
        client.transport.loseWriteConnection()
        run(self.clock, lambda: client.lost.called, timeout=10)
        # Our EOF reached the server, whose answer reached us after our half-close.
        self.assertEqual(client.count, len(b"3 ") + 64)  # type: ignore[attr-defined]
        self.assertIsInstance(client.reason.value, error.ConnectionDone)  # type: ignore[attr-defined]


class MemoryCarrierTests(CarrierTests, SynchronousTestCase):
    serverAddress = SERVER

    def setUp(self) -> None:
        forbidSockets(self)
        self.clock = task.Clock()
        self.network = MemoryNetwork(self.clock, delay=0.005)
        self.server = UTPMultiplexer(self.clock, FAST)
        self.client = UTPMultiplexer(self.clock, FAST)
        self.serverCarrier = self.network.listen(SERVER, self.server)
        self.clientCarrier = self.network.listen(CLIENT, self.client)

    def test_it_batches(self) -> None:
        self.assertIsInstance(self.serverCarrier, BatchingCarrier)
        self.assertEqual(self.server.getHost(), IPv4Address("UDP", *SERVER))

    def test_delay_order_drop_and_strangers(self) -> None:
        got: list[tuple[float, bytes, object]] = []

        class Recorder(DatagramProtocol):
            def datagramReceived(self, datagram: bytes, addr: object) -> None:
                got.append((clock.seconds(), datagram, addr))

        clock = task.Clock()
        network = MemoryNetwork(clock, delay=0.25)
        a = network.listen("a", Recorder())
        network.listen("b", Recorder())
        self.assertRaises(ValueError, network.listen, "b", Recorder())
        a.write(b"1", "b")
        a.write(b"2", "b")
        network.drop = lambda data, src, dst: data == b"3"
        a.write(b"3", "b")
        a.write(b"4", "nobody")
        clock.advance(0.2)
        self.assertEqual(got, [])
        clock.advance(0.05)
        self.assertEqual(got, [(0.25, b"1", "a"), (0.25, b"2", "a")])
        self.assertEqual((network.sent, network.lost, network.undeliverable), (4, 1, 1))
        a.stopListening()
        self.assertNotIn("a", network.carriers)
        self.assertEqual(clock.getDelayedCalls(), [])


class EnvelopeCarrierTests(CarrierTests, SynchronousTestCase):
    """uTP in envelopes tagged ``b"\\xffU"``, on memory ports shared with a chat protocol."""

    serverAddress = SERVER
    tag = b"\xffU"

    def setUp(self) -> None:
        forbidSockets(self)
        self.clock = task.Clock()
        self.network = MemoryNetwork(self.clock, delay=0.005)
        self.wire: list[bytes] = []
        self.network.drop = lambda data, src, dst: bool(self.wire.append(data))
        self.chat: list[tuple[bytes, object]] = []
        chat = self.chat

        class Chat(DatagramProtocol):
            def datagramReceived(self, datagram: bytes, addr: object) -> None:
                chat.append((datagram, addr))

        self.server = UTPMultiplexer(self.clock, FAST)
        self.client = UTPMultiplexer(self.clock, FAST)
        self.serverChat, self.clientChat = Chat(), Chat()
        self.serverEnvelope = EnvelopeCarrier(self.server, self.tag, self.serverChat)
        self.clientEnvelope = EnvelopeCarrier(self.client, self.tag, self.clientChat)
        self.serverPort = self.network.listen(SERVER, self.serverEnvelope)
        self.network.listen(CLIENT, self.clientEnvelope)

    def test_envelopes_on_the_wire_and_other_messages_pass_through(self) -> None:
        self.server.startListening(echoFactory())
        client = self.connect(Factory.forProtocol(Collector))
        client.transport.write(b"inside")
        self.clientChat.transport.write(b"hello, chat", SERVER)  # type: ignore[union-attr]
        run(self.clock, lambda: bytes(client.data) == b"inside" and self.chat, timeout=10)
        self.assertEqual(self.chat, [(b"hello, chat", CLIENT)])
        utp = [d for d in self.wire if d.startswith(self.tag)]
        self.assertEqual(len(utp) + 1, len(self.wire))
        self.assertTrue(all(is_utp_datagram(d[len(self.tag) :]) for d in utp))
        self.assertEqual(self.server.getHost(), IPv4Address("UDP", *SERVER))
        self.assertEqual(self.server.stats.other_protocol, 0)  # the envelope sorted them

    def test_stopping_the_envelope_keeps_the_port_for_the_other_protocol(self) -> None:
        self.server.startListening(echoFactory())
        client = self.connect(Factory.forProtocol(Collector))
        self.server.closeNow()
        run(self.clock, lambda: client.lost.called, timeout=10)
        self.assertTrue(self.server.closed)
        self.assertIn(SERVER, self.network.carriers)
        self.clientChat.transport.write(b"still there?", SERVER)  # type: ignore[union-attr]
        run(self.clock, lambda: self.chat, timeout=1)
        self.assertEqual(self.chat, [(b"still there?", CLIENT)])

    def test_the_port_closing_stops_both(self) -> None:
        self.serverPort.stopListening()
        self.assertTrue(self.server.closed)
        self.assertIsNone(self.serverChat.transport)

    def test_a_tag_is_needed(self) -> None:
        self.assertRaises(ValueError, EnvelopeCarrier, self.server, b"")


class AddressTests(SynchronousTestCase):
    def test_ip_addresses(self) -> None:
        self.assertEqual(asIAddress(("127.0.0.1", 5)), IPv4Address("UDP", "127.0.0.1", 5))
        self.assertEqual(asIAddress(("::ffff:127.0.0.1", 5)), IPv4Address("UDP", "127.0.0.1", 5))
        self.assertEqual(asIAddress(("::1", 5, 0, 0)), asIAddress(("::1", 5)))
        self.assertEqual(asIAddress(IPv4Address("TCP", "10.1.2.3", 5)), IPv4Address("UDP", "10.1.2.3", 5))

    def test_other_addresses(self) -> None:
        self.assertEqual(asIAddress("alice"), CarrierAddress("alice"))
        self.assertEqual(asIAddress(("peer.example", 5)), CarrierAddress(("peer.example", 5)))
        node = CarrierAddress(b"\x01" * 32)
        self.assertIs(asIAddress(node), node)
        self.assertEqual(hash(CarrierAddress("x")), hash(CarrierAddress("x")))
