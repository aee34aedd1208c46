"""UTPTransport on a task.Clock: its seam with the owner, producers, half-close, abort, close, reading pauses.

No socket is opened: the transports run on ``ClockedPair`` (two multiplexers on
a ``MemoryNetwork``), or, for the seam, on a recording owner.
"""

from __future__ import annotations

import io
import os

from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IConsumer, IHalfCloseableProtocol, IPushProducer, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from txutp.engine import UTPConfig, UTPConnection
from txutp.transport import TransportOwner, UTPConnectionReset, UTPTransport

from .twisted_helpers import CLIENT, SERVER, ClockedPair, Collector, forbidSockets


class RecordingOwner:
    """A TransportOwner that records what its transport asks for."""

    def __init__(self) -> None:
        self.now = 100.0
        self.calls: list[tuple[str, object]] = []
        self.watched = False

    def seconds(self) -> float:
        return self.now

    def scheduleFlush(self) -> None:
        self.calls.append(("scheduleFlush", None))

    def watch(self, transport: UTPTransport, on: bool) -> None:
        self.watched = on
        self.calls.append(("watch", on))

    def deliverLater(self, transport: UTPTransport) -> None:
        self.calls.append(("deliverLater", None))

    def forget(self, transport: UTPTransport) -> None:
        self.calls.append(("forget", None))


class SeamTests(SynchronousTestCase):
    """The transport needs nothing of its owner but the TransportOwner methods."""

    def setUp(self) -> None:
        forbidSockets(self)
        self.owner = RecordingOwner()
        _: TransportOwner = self.owner  # mypy checks the fake against the declared seam
        conn = UTPConnection.connect(UTPConfig(), peer_addr=SERVER, recv_id=1, seq_nr=1, now=self.owner.now)
        self.protocol = Collector()
        self.factory = Factory.forProtocol(Collector)
        self.factory.doStart()
        peer, host = IPv4Address("UDP", *SERVER), IPv4Address("UDP", *CLIENT)
        self.transport = UTPTransport(
            self.owner, conn, self.protocol, peer, host, client=True, clientFactory=self.factory
        )

    def test_interfaces(self) -> None:
        for interface in (ITransport, IConsumer, IPushProducer):
            self.assertTrue(verifyObject(interface, self.transport))

    def test_start_connects_the_protocol(self) -> None:
        self.assertIsNone(self.transport.start())
        self.assertTrue(self.protocol.made.called)
        self.assertIs(self.protocol.transport, self.transport)
        self.assertEqual(self.transport.getPeer(), IPv4Address("UDP", *SERVER))

    def test_write_asks_for_a_flush(self) -> None:
        self.transport.start()
        self.transport.write(b"hello")
        self.assertEqual(self.owner.calls, [("scheduleFlush", None)])
        self.transport.loseConnection()
        self.assertTrue(self.owner.watched)

    def test_carrier_closed_loses_the_connection_and_stops_the_client_factory(self) -> None:
        self.transport.start()
        self.transport.carrierClosed()
        self.assertIsInstance(self.protocol.reason.value, error.ConnectionLost)
        self.assertIn(("forget", None), self.owner.calls)
        self.assertEqual(self.factory.numPorts, 0)
        self.transport.carrierClosed()  # once only
        self.assertEqual(self.owner.calls.count(("forget", None)), 1)


class Server(Collector):
    """Collects; ``servers`` lists every one accepted."""

    servers: list[Server]

    def connectionMade(self) -> None:
        super().connectionMade()
        self.servers.append(self)


@implementer(IHalfCloseableProtocol)
class HalfCloser(Collector):
    """Reads to the peer's EOF, then answers with what it got and closes."""

    def __init__(self) -> None:
        super().__init__()
        self.readLost = False
        self.writeLost = False

    def readConnectionLost(self) -> None:
        self.readLost = True
        self.transport.write(b"got " + bytes(self.data))  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        self.writeLost = True


class TransportTests(SynchronousTestCase):
    def setUp(self) -> None:
        forbidSockets(self)
        self.pair = ClockedPair()
        self.servers: list[Server] = []

        class S(Server):
            servers = self.servers

        self.serverFactory = Factory.forProtocol(S)
        self.pair.server.startListening(self.serverFactory)

    def connect(self, protocol: type[Protocol] = Collector) -> Collector:
        client = self.pair.connect(Factory.forProtocol(protocol))
        self.pair.run(lambda: self.servers, timeout=5)
        return client  # type: ignore[no-any-return]

    def test_lose_connection_sends_everything_first(self) -> None:
        client = self.connect()
        payload = os.urandom(300_000)
        client.transport.write(payload)
        client.transport.loseConnection()
        self.assertTrue(client.transport.disconnecting)
        self.pair.run(lambda: client.lost.called and self.servers[0].lost.called)
        self.assertEqual(bytes(self.servers[0].data), payload)
        self.assertIsInstance(client.reason.value, error.ConnectionDone)
        self.assertIsInstance(self.servers[0].reason.value, error.ConnectionDone)
        self.assertTrue(client.transport.disconnected)

    def test_write_takes_bytes_only(self) -> None:
        client = self.connect()
        self.assertRaises(TypeError, client.transport.write, "text")
        self.assertRaises(TypeError, client.transport.writeSequence, [b"a", "b"])

    def test_half_close(self) -> None:
        client = self.pair.connect(Factory.forProtocol(HalfCloser))
        self.pair.run(lambda: self.servers, timeout=5)
        server = self.servers[0]
        client.transport.write(b"question")
        client.transport.loseWriteConnection()
        self.pair.run(lambda: client.writeLost, timeout=5)
        self.pair.run(lambda: server.lost.called, timeout=5)
        # The server cannot half-close: at our EOF it closes, as over TCP (after reading everything).
        self.assertEqual(bytes(server.data), b"question")
        self.pair.run(lambda: client.lost.called, timeout=5)
        self.assertIsInstance(client.reason.value, error.ConnectionDone)

    def test_half_close_both_ways(self) -> None:
        answers: list[HalfCloser] = []

        class Answering(HalfCloser):
            def connectionMade(self) -> None:
                super().connectionMade()
                answers.append(self)

        self.pair.server.stopListening()
        self.pair.server.startListening(Factory.forProtocol(Answering))
        client = self.pair.connect(Factory.forProtocol(HalfCloser))
        client.transport.write(b"question")
        client.transport.loseWriteConnection()
        self.pair.run(lambda: client.lost.called)
        self.assertTrue(answers[0].readLost)
        self.assertEqual(bytes(client.data), b"got question")  # written after our half-close
        self.assertTrue(client.writeLost)
        self.assertIsInstance(client.reason.value, error.ConnectionDone)

    def test_abort(self) -> None:
        client = self.connect()
        client.transport.write(b"x" * 100_000)
        client.transport.abortConnection()
        self.pair.run(lambda: client.lost.called and self.servers[0].lost.called)
        self.assertIsInstance(client.reason.value, error.ConnectionAborted)
        self.assertIsInstance(self.servers[0].reason.value, UTPConnectionReset)

    def test_a_raising_callback_aborts_with_its_exception(self) -> None:
        class Raising(Collector):
            def dataReceived(self, data: bytes) -> None:
                raise ZeroDivisionError()

        self.pair.server.stopListening()
        self.pair.server.startListening(Factory.forProtocol(Raising))
        client = self.pair.connect(Factory.forProtocol(Collector))
        client.transport.write(b"boom")
        self.pair.run(lambda: client.lost.called)
        self.assertIsInstance(client.reason.value, UTPConnectionReset)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_paused_reading_holds_data_and_eof(self) -> None:
        client = self.connect()
        server = self.servers[0]
        server.transport.pauseProducing()
        client.transport.write(b"held")
        client.transport.loseConnection()
        self.pair.run(timeout=2)
        self.assertEqual(bytes(server.data), b"")
        self.assertFalse(server.lost.called)
        server.transport.resumeProducing()
        self.pair.run(lambda: server.lost.called)
        self.assertEqual(bytes(server.data), b"held")

    def test_a_streaming_producer_is_paused_and_resumed(self) -> None:
        client = self.connect()
        events: list[str] = []

        @implementer(IPushProducer)
        class Source:
            sent = 0

            def pauseProducing(self) -> None:
                events.append("pause")

            def resumeProducing(self) -> None:
                events.append("resume")
                if Source.sent < 10:
                    Source.sent += 1
                    client.transport.write(b"s" * 100_000)

            def stopProducing(self) -> None:
                events.append("stop")

        source = Source()
        client.transport.registerProducer(source, True)
        self.assertRaises(RuntimeError, client.transport.registerProducer, Source(), True)
        client.transport.write(b"s" * 100_000)  # above bufferSize: paused at once
        self.assertEqual(events, ["pause"])
        self.pair.run(lambda: len(self.servers[0].data) >= 1_100_000)
        self.assertEqual(events[:2], ["pause", "resume"])
        self.assertEqual(events.count("pause"), events.count("resume") + (events[-1] == "pause"))
        client.transport.unregisterProducer()
        client.transport.loseConnection()
        self.pair.run(lambda: client.lost.called)
        self.assertNotIn("stop", events)

    def test_a_pull_producer_is_driven_to_the_end(self) -> None:
        client = self.connect()
        payload = os.urandom(1_000_000)
        sent = FileSender().beginFileTransfer(io.BytesIO(payload), client.transport)
        done: list[object] = []
        sent.addCallback(done.append)
        self.pair.run(lambda: done)
        client.transport.loseConnection()
        self.pair.run(lambda: self.servers[0].lost.called)
        self.assertEqual(bytes(self.servers[0].data), payload)

    def test_producer_is_stopped_when_the_connection_is_lost(self) -> None:
        client = self.connect()
        stopped: list[bool] = []

        @implementer(IPushProducer)
        class Idle:
            def pauseProducing(self) -> None:
                pass

            def resumeProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                stopped.append(True)

        client.transport.registerProducer(Idle(), True)
        self.servers[0].transport.abortConnection()
        self.pair.run(lambda: client.lost.called)
        self.assertEqual(stopped, [True])

    def test_lose_connection_resumes_a_paused_producer_before_closing(self) -> None:
        client = self.connect()
        events: list[str] = []

        @implementer(IPushProducer)
        class Paused:
            def pauseProducing(self) -> None:
                events.append("pause")

            def resumeProducing(self) -> None:
                events.append("resume")

            def stopProducing(self) -> None:
                events.append("stop")

        client.transport.registerProducer(Paused(), True)
        client.transport.write(b"p" * 200_000)  # pauses it
        client.transport.loseConnection()
        self.pair.run(lambda: client.lost.called)
        self.assertEqual(events, ["pause", "resume", "stop"])  # resumed once drained; stopped at the end
        self.assertEqual(len(self.servers[0].data), 200_000)

    def test_stats_and_repr(self) -> None:
        client = self.connect()
        client.transport.write(b"q" * 10_000)
        self.pair.run(lambda: len(self.servers[0].data) == 10_000)
        self.assertGreaterEqual(client.transport.stats().packets_sent, 8)
        self.assertIn("10.0.0.1:6881", repr(client.transport))
        self.assertIsInstance(Failure(UTPConnectionReset()).value, error.ConnectionLost)
