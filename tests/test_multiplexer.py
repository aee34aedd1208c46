"""The multiplexer on a task.Clock over in-memory carriers: flushing, the one timer, accept, connect, close.

No socket is opened (``forbidSockets``): time is the clock's, the network a
``MemoryNetwork`` or a ``FakeDatagramTransport``.
"""

from __future__ import annotations

import dataclasses
import os
import struct

from twisted.internet import error, task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.trial.unittest import SynchronousTestCase

from txutp import UTPConfig, UTPMultiplexer
from txutp.carriers import BatchingCarrier, CarrierAddress, MemoryCarrier, MemoryNetwork
from txutp.engine import ConnectionState
from txutp.trace import read_trace, summarize
from txutp.transport import UTPConnectionReset

from .twisted_helpers import (
    CLIENT,
    FAST,
    SERVER,
    ClockedPair,
    Collector,
    FakeDatagramTransport,
    echoFactory,
    forbidSockets,
)

#: A SYN's type/version byte; its connection id is the big-endian 16 bits at offset 2.
ST_SYN_V1 = 0x41


def timerCalls(clock: task.Clock) -> list[object]:
    return [c for c in clock.getDelayedCalls() if getattr(c.func, "__name__", "") == "_timerFired"]


class FlushTests(SynchronousTestCase):
    def setUp(self) -> None:
        forbidSockets(self)
        self.pair = ClockedPair()
        self.pair.server.startListening(echoFactory())

    def recordBatches(self, carrier: MemoryCarrier) -> list[int]:
        """Count the datagrams of each ``writeBatch`` of ``carrier`` from now on."""
        sizes: list[int] = []
        mux = carrier.protocol
        send = mux._send

        def record(datagrams: list[tuple[bytes, object]]) -> None:
            sizes.append(len(datagrams))
            send(datagrams)

        mux._send = record
        return sizes

    def test_writes_of_one_turn_leave_in_one_flush(self) -> None:
        client = self.pair.connect(Factory.forProtocol(Collector))
        self.pair.run(timeout=1)  # let the handshake's last ACKs settle
        sizes = self.recordBatches(self.pair.clientCarrier)
        for _ in range(5):
            client.transport.write(b"x" * 1000)
        self.assertEqual(sizes, [])  # nothing leaves inside the turn
        self.pair.clock.advance(0)
        self.assertEqual(len(sizes), 1)
        self.assertGreaterEqual(sizes[0], 2)  # packets of several writes, as far as the window allows
        self.pair.run(lambda: len(client.data) == 5000)

    def test_one_flush_per_read_batch(self) -> None:
        client = self.pair.connect(Factory.forProtocol(Collector))
        self.pair.run(timeout=1)
        flushesBefore = self.pair.server.stats.batches
        client.transport.write(b"y" * 20_000)
        self.pair.clock.advance(0)  # the client's flush: the data leave together
        sizes = self.recordBatches(self.pair.serverCarrier)
        self.pair.clock.advance(self.pair.network.delay)  # they arrive together: one read batch
        self.assertEqual(self.pair.server.stats.batches, flushesBefore + 1)
        self.assertEqual(len(sizes), 1)  # the ACKs and the echo of the whole batch in one flush

    def test_the_multiplexer_is_a_batching_carriers_protocol(self) -> None:
        self.assertIsInstance(self.pair.serverCarrier, BatchingCarrier)
        self.assertTrue(self.pair.server._batching)
        plain = UTPMultiplexer(task.Clock())
        FakeDatagramTransport(batching=False).start(plain)
        self.assertFalse(plain._batching)

    def test_one_timer_for_many_connections(self) -> None:
        clients = [self.pair.connect(Factory.forProtocol(Collector)) for _ in range(10)]
        for c in clients:
            c.transport.write(b"z" * 5000)
        for _ in range(50):
            self.pair.clock.advance(0.003)
            self.assertLessEqual(len(timerCalls(self.pair.clock)), 2)  # the client's and the server's
        self.pair.run(lambda: all(len(c.data) == 5000 for c in clients))

    def test_the_timer_is_armed_at_the_engines_deadline(self) -> None:
        """A lost data packet: the one timer is armed at the context's earliest deadline, and recovers it."""
        client = self.pair.connect(Factory.forProtocol(Collector))
        self.pair.run(timeout=1)
        self.pair.network.drop = lambda data, src, dst: src == CLIENT and len(data) > 20  # data, not ACKs
        client.transport.write(b"lost once")
        self.pair.clock.advance(0)
        self.pair.network.drop = None
        [timer] = [c for c in timerCalls(self.pair.clock) if c.func.__self__ is self.pair.client]  # type: ignore[attr-defined]
        self.assertEqual(timer.getTime(), self.pair.client.context.get_timer())
        self.pair.run(lambda: bytes(client.data) == b"lost once", timeout=5)
        self.assertEqual(client.transport.stats().retransmissions, 1)


class AcceptTests(SynchronousTestCase):
    def setUp(self) -> None:
        forbidSockets(self)
        self.pair = ClockedPair()

    def test_accept_builds_the_protocol_with_the_peer_address(self) -> None:
        peers: list[object] = []
        servers: list[Collector] = []

        class Server(Factory):
            def buildProtocol(self, addr: object) -> Collector:
                peers.append(addr)
                servers.append(Collector())
                return servers[-1]

        self.pair.server.startListening(Server())
        client = self.pair.connect(Factory.forProtocol(Collector))
        self.pair.run(lambda: servers and servers[0].transport is not None)
        self.assertEqual(peers, [IPv4Address("UDP", *CLIENT)])
        self.assertEqual(servers[0].transport.getPeer(), IPv4Address("UDP", *CLIENT))
        self.assertEqual(servers[0].transport.getHost(), IPv4Address("UDP", *SERVER))
        self.assertEqual(client.transport.getPeer(), IPv4Address("UDP", *SERVER))
        self.assertEqual(client.transport.getHost(), IPv4Address("UDP", *CLIENT))
        self.assertEqual(self.pair.server.connections(), [servers[0].transport])

    def test_no_listener_refuses(self) -> None:
        d = self.pair.client.connect(SERVER, Factory.forProtocol(Collector))
        self.assertRaises(error.ConnectionRefusedError, self.pair.result, d)

    def test_a_second_listener_is_refused(self) -> None:
        self.pair.server.startListening(echoFactory())
        self.assertRaises(error.CannotListenError, self.pair.server.startListening, echoFactory())

    def test_buildProtocol_returning_None_aborts(self) -> None:
        class Nobody(Factory):
            def buildProtocol(self, addr: object) -> None:
                return None

        self.pair.server.startListening(Nobody())
        client = self.pair.connect(Factory.forProtocol(Collector))
        self.pair.run(lambda: client.lost.called)
        self.assertIsInstance(client.reason.value, UTPConnectionReset)

    def test_addresses_that_are_not_ip(self) -> None:
        """Over a carrier with other addresses, getPeer and getHost wrap them in CarrierAddress."""
        clock = task.Clock()
        network = MemoryNetwork(clock)
        alice, bob = UTPMultiplexer(clock, FAST), UTPMultiplexer(clock, FAST)
        network.listen("alice", alice)
        network.listen("bob", bob)
        alice.startListening(echoFactory())
        results: list[Collector] = []
        bob.connect("alice", Factory.forProtocol(Collector)).addCallback(results.append)
        clock.advance(0)
        clock.advance(0)
        [client] = results
        self.assertEqual(client.transport.getPeer(), CarrierAddress("alice"))
        self.assertEqual(client.transport.getHost(), CarrierAddress("bob"))
        self.assertEqual(bob.getHost(), CarrierAddress("bob"))
        client.transport.write(b"ping")
        clock.advance(0)
        clock.advance(0)
        self.assertEqual(bytes(client.data), b"ping")


class ConnectTests(SynchronousTestCase):
    def setUp(self) -> None:
        forbidSockets(self)
        self.pair = ClockedPair()
        self.pair.server.startListening(echoFactory())

    def test_connect_timeout(self) -> None:
        self.pair.network.drop = lambda *args: True
        factory = Factory.forProtocol(Collector)
        d = self.pair.client.connect(SERVER, factory, timeout=2.0)
        start = self.pair.clock.seconds()
        self.assertRaises(error.TimeoutError, self.pair.result, d)
        self.assertAlmostEqual(self.pair.clock.seconds() - start, 2.0)
        self.assertEqual(factory.numPorts, 0)  # doStart, then doStop

    def test_the_engine_gives_up_on_an_unanswered_syn(self) -> None:
        self.pair.network.drop = lambda *args: True
        d = self.pair.client.connect(SERVER, Factory.forProtocol(Collector))
        start = self.pair.clock.seconds()
        self.assertRaises(error.TimeoutError, self.pair.result, d)
        syn = UTPConfig().syn_timeout
        self.assertAlmostEqual(self.pair.clock.seconds() - start, syn * (1 + 2 + 4), delta=0.01)

    def test_cancel(self) -> None:
        d = self.pair.client.connect(SERVER, Factory.forProtocol(Collector))
        d.cancel()
        self.assertRaises(error.ConnectingCancelledError, self.pair.result, d)
        self.pair.run(timeout=5)
        self.assertEqual(self.pair.client.context.connections, {})

    def test_connect_on_a_closed_multiplexer(self) -> None:
        self.pair.client.closeNow()
        self.assertRaises(error.ConnectError, self.pair.client.connect, SERVER, Factory.forProtocol(Collector))

    def test_connectionMade_raising_fails_the_connect_and_aborts(self) -> None:
        class Broken(Collector):
            def connectionMade(self) -> None:
                raise RuntimeError("broken")

        d = self.pair.client.connect(SERVER, Factory.forProtocol(Broken))
        self.assertRaises(RuntimeError, self.pair.result, d)
        self.flushLoggedErrors(RuntimeError)


class CloseTests(SynchronousTestCase):
    def setUp(self) -> None:
        forbidSockets(self)

    def test_closeNow_resets_the_peer_and_loses_connections(self) -> None:
        pair = ClockedPair()
        servers: list[Collector] = []

        class Server(Collector):
            def connectionMade(self) -> None:
                servers.append(self)

        pair.server.startListening(Factory.forProtocol(Server))
        client = pair.connect(Factory.forProtocol(Collector))
        pair.run(lambda: servers)
        closed = pair.server.closeNow()
        self.assertTrue(closed.called)
        self.assertTrue(pair.server.closed)
        self.assertIsInstance(servers[0].reason.value, error.ConnectionLost)
        pair.run(lambda: client.lost.called, timeout=1)
        self.assertIsInstance(client.reason.value, UTPConnectionReset)
        self.assertNotIn(SERVER, pair.network.carriers)  # the carrier stopped
        self.assertEqual([c for c in pair.clock.getDelayedCalls() if c.func.__self__ is pair.server], [])  # type: ignore[attr-defined]

    def test_close_when_unused_waits_for_lingering_connections(self) -> None:
        config = dataclasses.replace(FAST, linger_time=2.0)
        pair = ClockedPair(config, closeWhenUnused=True)
        pair.server.startListening(echoFactory())
        client = pair.connect(Factory.forProtocol(Collector))
        client.transport.write(b"bye")
        pair.run(lambda: bytes(client.data) == b"bye")
        client.transport.loseConnection()
        pair.run(lambda: client.lost.called)
        self.assertIsInstance(client.reason.value, error.ConnectionDone)
        self.assertFalse(pair.client.inUse)
        self.assertFalse(pair.client.closed)  # it lingers, to re-ACK a last FIN
        closedAt = []
        pair.client.whenClosed().addCallback(lambda _: closedAt.append(pair.clock.seconds()))
        start = pair.clock.seconds()
        pair.run(lambda: closedAt, timeout=10)
        self.assertGreaterEqual(closedAt[0] - start, 1.5)
        self.assertTrue(pair.client.closed)
        self.assertFalse(pair.server.closed)  # it listens
        self.assertEqual(pair.server.stopListening().called, False)  # its own connection lingers first
        pair.run(lambda: pair.server.closed, timeout=10)

    def test_without_close_when_unused_the_carrier_stays(self) -> None:
        pair = ClockedPair()
        pair.server.startListening(echoFactory())
        client = pair.connect(Factory.forProtocol(Collector))
        client.transport.loseConnection()
        pair.run(timeout=30)
        self.assertFalse(pair.client.closed)
        self.assertEqual(pair.client.context.connections, {})
        self.assertTrue(pair.server.stopListening().called)
        self.assertFalse(pair.server.closed)

    def test_hold_keeps_the_carrier(self) -> None:
        pair = ClockedPair(closeWhenUnused=True)
        pair.client.hold()
        pair.client.flush()
        self.assertFalse(pair.client.closed)
        pair.client.release()
        self.assertTrue(pair.client.closed)

    def test_the_carrier_stopping_by_itself(self) -> None:
        pair = ClockedPair()
        pair.server.startListening(echoFactory())
        client = pair.connect(Factory.forProtocol(Collector))
        pending = pair.client.connect(SERVER, Factory.forProtocol(Collector))
        pair.clientCarrier.stopListening()
        self.assertTrue(pair.client.whenClosed().called)
        self.assertIsInstance(client.reason.value, error.ConnectionLost)
        self.assertRaises(error.ConnectError, pair.result, pending)


class SharedCarrierTests(SynchronousTestCase):
    def setUp(self) -> None:
        forbidSockets(self)

    def test_datagrams_that_are_not_utp_go_to_the_datagram_protocol(self) -> None:
        clock = task.Clock()
        network = MemoryNetwork(clock)
        got: list[tuple[bytes, object]] = []

        class DHT(DatagramProtocol):
            def datagramReceived(self, datagram: bytes, addr: object) -> None:
                got.append((datagram, addr))
                self.transport.write(b"d1:y1:re", addr)  # type: ignore[union-attr]

        mux = UTPMultiplexer(clock, FAST, datagramProtocol=DHT())
        network.listen(SERVER, mux)
        answers: list[bytes] = []

        class Peer(DatagramProtocol):
            def datagramReceived(self, datagram: bytes, addr: object) -> None:
                answers.append(datagram)

        peer = network.listen(CLIENT, Peer())
        peer.write(b"d1:q4:pinge", SERVER)
        clock.advance(0)
        clock.advance(0)
        self.assertEqual(got, [(b"d1:q4:pinge", CLIENT)])
        self.assertEqual(answers, [b"d1:y1:re"])
        self.assertEqual(mux.stats.other_protocol, 1)
        self.assertEqual(mux.stats.datagrams_sent, 1)  # counted by the memory carrier's multiplexer

    def test_a_plain_carrier_counts_and_survives_write_errors(self) -> None:
        clock = task.Clock()
        carrier = FakeDatagramTransport(CLIENT, batching=False)
        mux = UTPMultiplexer(clock, FAST)
        carrier.start(mux)
        calls = [0]

        def flaky(datagram: bytes, address: object) -> None:
            calls[0] += 1
            if calls[0] == 1:
                raise OSError(105, "No buffer space available")
            carrier.written.append((bytes(datagram), address))

        carrier.write = flaky  # type: ignore[method-assign]
        mux.connect(SERVER, Factory.forProtocol(Collector))
        clock.advance(0)  # the SYN: lost
        self.assertEqual((mux.stats.send_errors, mux.stats.datagrams_sent), (1, 0))
        clock.advance(UTPConfig().syn_timeout)  # resent
        self.assertEqual((mux.stats.send_errors, mux.stats.datagrams_sent), (1, 1))
        [(syn, address)] = carrier.written
        self.assertEqual((syn[0], address), (ST_SYN_V1, SERVER))


class ConnectionIdTests(SynchronousTestCase):
    """Caller-chosen connection ids (``connect(connectionId=)`` and ``expect``)."""

    def setUp(self) -> None:
        forbidSockets(self)
        self.pair = ClockedPair()

    def synIds(self) -> list[int]:
        ids: list[int] = []
        drop = self.pair.network.drop

        def watch(data: bytes, src: object, dst: object) -> bool:
            if data[0] == ST_SYN_V1:
                ids.append(struct.unpack_from("!H", data, 2)[0])
            return bool(drop and drop(data, src, dst))

        self.pair.network.drop = watch
        return ids

    def test_connect_and_expect_with_an_agreed_id(self) -> None:
        ids = self.synIds()
        served = self.pair.server.expect(CLIENT, 4242, echoFactory())
        client = self.pair.connect(Factory.forProtocol(Collector), connectionId=4242)
        server = self.pair.result(served)
        self.assertEqual(ids, [4242])
        self.assertEqual(server.transport.getPeer(), IPv4Address("UDP", *CLIENT))
        client.transport.write(b"by id")
        self.pair.run(lambda: bytes(client.data) == b"by id")
        self.assertFalse(self.pair.server.context.accepting)  # it never listened

    def test_an_unexpected_id_is_refused(self) -> None:
        self.pair.server.expect(CLIENT, 4242, echoFactory())
        d = self.pair.client.connect(SERVER, Factory.forProtocol(Collector), connectionId=4243)
        self.assertRaises(error.ConnectionRefusedError, self.pair.result, d)

    def test_expect_accepts_one_connection_only(self) -> None:
        served = self.pair.server.expect(CLIENT, 7, echoFactory())
        self.pair.connect(Factory.forProtocol(Collector), connectionId=7)
        self.pair.result(served)
        d = self.pair.client.connect(SERVER, Factory.forProtocol(Collector), connectionId=100)
        self.assertRaises(error.ConnectionRefusedError, self.pair.result, d)

    def test_expect_times_out_and_stops_expecting(self) -> None:
        factory = echoFactory()
        served = self.pair.server.expect(CLIENT, 9, factory, timeout=5.0)
        start = self.pair.clock.seconds()
        self.assertRaises(error.TimeoutError, self.pair.result, served)
        self.assertAlmostEqual(self.pair.clock.seconds() - start, 5.0)
        self.assertEqual(factory.numPorts, 0)
        d = self.pair.client.connect(SERVER, Factory.forProtocol(Collector), connectionId=9)
        self.assertRaises(error.ConnectionRefusedError, self.pair.result, d)

    def test_cancel_expect(self) -> None:
        served = self.pair.server.expect(CLIENT, 9, echoFactory())
        served.cancel()
        self.assertRaises(error.ConnectingCancelledError, self.pair.result, served)
        self.assertFalse(self.pair.server.inUse)

    def test_ids_in_use(self) -> None:
        from txutp.engine import ConnectionIdInUse

        self.pair.server.expect(CLIENT, 9, echoFactory())
        self.assertRaises(ConnectionIdInUse, self.pair.result, self.pair.server.expect(CLIENT, 9, echoFactory()))
        self.pair.server.startListening(echoFactory())
        self.pair.connect(Factory.forProtocol(Collector), connectionId=500)
        d = self.pair.client.connect(SERVER, Factory.forProtocol(Collector), connectionId=500)
        self.assertRaises(ConnectionIdInUse, self.pair.result, d)

    def test_expect_on_a_listening_port_takes_precedence(self) -> None:
        accepted: list[object] = []

        class Listener(Factory):
            def buildProtocol(self, addr: object) -> Collector:
                accepted.append(addr)
                return Collector()

        self.pair.server.startListening(Listener())
        served = self.pair.server.expect(CLIENT, 11, Factory.forProtocol(Collector))
        self.pair.connect(Factory.forProtocol(Collector), connectionId=11)
        self.assertIsInstance(self.pair.result(served), Collector)
        self.assertEqual(accepted, [])
        self.assertTrue(all(t.connection.state is ConnectionState.CONNECTED for t in self.pair.server.connections()))


class MetricsAndTraceTests(SynchronousTestCase):
    """``metrics()`` adds up live and ended connections; ``config.trace`` traces each connection."""

    def setUp(self) -> None:
        forbidSockets(self)

    def test_metrics_count_live_and_ended_connections(self) -> None:
        pair = ClockedPair()
        pair.server.startListening(echoFactory())
        self.assertEqual(pair.server.metrics()["listening"], 1)
        client = pair.connect(Factory.forProtocol(Collector))
        client.transport.write(b"m" * 5000)
        pair.run(lambda: len(client.data) == 5000)
        live = pair.server.metrics()
        self.assertEqual(live["connections"], 1)
        self.assertEqual(live["connections_by_state"], {"connected": 1})
        self.assertEqual(live["bytes_received"], 5000)
        self.assertEqual(live["syns_accepted"], 1)
        self.assertGreaterEqual(live["datagrams_received"], 5)
        client.transport.loseConnection()
        pair.run(lambda: not pair.server.context.connections and not pair.client.context.connections)
        ended = pair.server.metrics()
        self.assertEqual((ended["connections"], ended["connections_by_state"]), (0, {}))
        self.assertEqual(ended["bytes_received"], 5000)  # kept once the connection is gone
        self.assertEqual(ended["bytes_sent"], 5000)
        self.assertEqual(pair.client.metrics()["bytes_sent"], 5000)

    def test_config_trace_writes_one_file_per_connection(self) -> None:
        directory = self.mktemp()
        pair = ClockedPair(dataclasses.replace(FAST, trace=directory))
        pair.server.startListening(echoFactory())
        for _ in range(2):
            client = pair.connect(Factory.forProtocol(Collector))
            client.transport.write(b"t" * 3000)
            pair.run(lambda client=client: len(client.data) == 3000)
            client.transport.loseConnection()
        pair.run(lambda: not pair.server.context.connections and not pair.client.context.connections)
        names = sorted(os.listdir(directory))
        self.assertEqual(len(names), 4, names)  # two connections, both ends (one directory for both here)
        self.assertEqual(sum(n.endswith("-client.jsonl") for n in names), 2)
        for name in names:
            summary = summarize(read_trace(os.path.join(directory, name))[1])
            self.assertEqual(summary["payload_bytes_sent"], 3000, name)
            self.assertGreater(summary["packets_received"], 0, name)

    def test_the_environment_variable_traces_a_process(self) -> None:
        path = os.path.join(self.mktemp() + "-dir", "first.jsonl")
        os.makedirs(os.path.dirname(path))
        self.patch(os, "environ", dict(os.environ, TXUTP_TRACE=path))
        pair = ClockedPair()
        pair.server.startListening(echoFactory())
        client = pair.connect(Factory.forProtocol(Collector))
        client.transport.write(b"e" * 100)
        pair.run(lambda: len(client.data) == 100)
        client.transport.loseConnection()
        pair.run(lambda: not pair.client.context.connections)  # the trace is complete once it ends
        header, events = read_trace(path)
        self.assertTrue(header["connection"]["initiator"])  # the client's connection started first
        self.assertIn("packet_sent", {e["name"] for e in events})
        pair.client.traceConnections(None)
        self.assertIsNone(pair.client.context.tracer_factory)
