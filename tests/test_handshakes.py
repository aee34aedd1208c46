"""``txutp._handshakes.Handshakes`` alone: connect, expect and accept until the handshake is over.

(The engine's own handshake is ``test_handshake.py``'s; through a whole
multiplexer, ``test_multiplexer.py``'s.) Here the handshakes run under a
:class:`Driver` that does the least a multiplexer does: one engine context on
a ``MemoryNetwork`` carrier, flushed once per reactor turn, and a record of
the transports the handshakes ask for instead of transports. The peer is a
real :class:`~txutp.UTPMultiplexer`. Time is a ``task.Clock``; no socket is
opened.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.internet import error, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocol, IProtocolFactory
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txutp import UTPMultiplexer
from txutp._handshakes import Handshakes
from txutp.carriers import MemoryNetwork, asIAddress
from txutp.engine import ConnectionIdInUse, ConnectionState, UTPConfig, UTPConnection, UTPContext
from txutp.transport import UTPConnectionRefused, UTPConnectionReset

from .twisted_helpers import CLIENT, FAST, SERVER, Collector, echoFactory, forbidSockets, run

PEER = asIAddress(SERVER)


class Driver(DatagramProtocol):
    """The least a multiplexer does for its :class:`Handshakes`, and a record of what they ask of it."""

    def __init__(self, clock: task.Clock, config: UTPConfig = FAST) -> None:
        self.clock = clock
        self.context = UTPContext(config, accepting=False)
        #: ``startTransport`` calls: (connection, protocol, peer, client factory).
        self.started: list[tuple[UTPConnection, IProtocol, IAddress, IProtocolFactory | None]] = []
        #: What ``startTransport`` returns (``UTPTransport.start``: a failure if ``connectionMade`` raised).
        self.startFailure: Failure | None = None
        self.flushRequests = 0
        self.released = 0
        self.listenFactory: IProtocolFactory | None = None
        self._flushCall: IDelayedCall | None = None
        self._timerCall: IDelayedCall | None = None
        self.handshakes = Handshakes(
            clock,
            self.context,
            scheduleFlush=self.scheduleFlush,
            listenFactory=lambda: self.listenFactory,
            startTransport=self.startTransport,
            released=self.release,
        )

    # What the handshakes call.

    def scheduleFlush(self) -> None:
        self.flushRequests += 1
        self._later()

    def startTransport(
        self, conn: UTPConnection, protocol: IProtocol, peer: IAddress, clientFactory: IProtocolFactory | None
    ) -> Failure | None:
        self.started.append((conn, protocol, peer, clientFactory))
        return self.startFailure

    def release(self) -> None:
        self.released += 1

    # The engine's driver.

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.context.receive_datagram(datagram, addr, self.clock.seconds())
        self._later()

    def _later(self) -> None:
        if self._flushCall is None:
            self._flushCall = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        self._flushCall = None
        started = {conn for conn, *_ in self.started}
        while (item := self.context.next_event()) is not None:
            conn, event = item
            if conn not in started:  # a started connection's events go to its transport: none here
                self.handshakes.eventReceived(conn, event)
                started = {conn for conn, *_ in self.started}
        now = self.clock.seconds()
        for datagram, addr in self.context.datagrams_to_send(now):
            self.transport.write(datagram, addr)
        if self._timerCall is not None and self._timerCall.active():
            self._timerCall.cancel()
        self._timerCall = None
        deadline = self.context.get_timer()
        if deadline is not None:
            self._timerCall = self.clock.callLater(max(0.0, deadline - now), self._timerFired)

    def _timerFired(self) -> None:
        self._timerCall = None
        self.context.handle_timer(self.clock.seconds())
        self.flush()


class HandshakeTestCase(SynchronousTestCase):
    def setUp(self, config: UTPConfig = FAST) -> None:
        forbidSockets(self)
        self.clock = task.Clock()
        self.network = MemoryNetwork(self.clock, 0.01)
        self.driver = Driver(self.clock, config)
        self.handshakes = self.driver.handshakes
        self.remote = UTPMultiplexer(self.clock, FAST)
        self.network.listen(CLIENT, self.driver)
        self.network.listen(SERVER, self.remote)

    def outcome(self, d: Deferred[Any], timeout: float = 30.0) -> Any:
        """Run the clock until ``d`` fires: its result, or its failure."""
        results: list[object] = []
        d.addBoth(results.append)
        run(self.clock, lambda: results, timeout)
        return results[0]

    def failureOf(self, d: Deferred[Any], timeout: float = 30.0) -> Failure:
        result = self.outcome(d, timeout)
        self.assertIsInstance(result, Failure)
        assert isinstance(result, Failure)
        return result

    def onlyConnection(self) -> UTPConnection:
        [conn] = self.driver.context.connections.values()
        return conn


class ConnectTests(HandshakeTestCase):
    def connect(self, factory: IProtocolFactory, timeout: float | None = None, **kw: Any) -> Deferred[IProtocol]:
        return self.handshakes.connect(SERVER, PEER, factory, timeout, kw.get("connectionId"))

    def test_a_connect_starts_a_transport_and_fires_with_its_protocol(self) -> None:
        self.remote.startListening(echoFactory())
        factory = Factory.forProtocol(Collector)
        d = self.connect(factory)
        self.assertEqual(len(self.handshakes), 1)  # pending: it keeps the carrier in use
        self.assertEqual(self.driver.flushRequests, 1)  # the SYN is to leave this turn
        protocol = self.outcome(d)
        [(conn, started, peer, clientFactory)] = self.driver.started
        self.assertIsInstance(protocol, Collector)
        self.assertIs(started, protocol)
        self.assertTrue(conn.initiator)
        self.assertIs(conn.state, ConnectionState.CONNECTED)
        self.assertEqual(peer, PEER)
        self.assertIs(clientFactory, factory)  # the transport stops it after connectionLost
        self.assertEqual(factory.numPorts, 1)
        self.assertEqual(len(self.handshakes), 0)
        self.assertEqual(self.driver.released, 0)  # its transport uses the carrier now

    def test_a_connection_id_agreed_out_of_band(self) -> None:
        self.remote.startListening(echoFactory())
        self.outcome(self.connect(Factory.forProtocol(Collector), connectionId=4321))
        self.assertEqual(self.onlyConnection().recv_id, 4321)  # what our SYN carries

    def test_a_refused_connect(self) -> None:
        factory = Factory.forProtocol(Collector)
        failure = self.failureOf(self.connect(factory))  # nothing listens: the peer answers RESET
        failure.trap(UTPConnectionRefused)
        self.assertIn(f"to {PEER}", str(failure.value))
        self.assertEqual(factory.numPorts, 0)  # doStart, then doStop
        self.assertEqual(self.driver.started, [])
        self.assertEqual((len(self.handshakes), self.driver.released), (0, 1))

    def test_a_connect_timeout(self) -> None:
        self.network.drop = lambda *args: True
        d = self.connect(Factory.forProtocol(Collector), timeout=2.0)
        self.clock.advance(0)
        conn = self.onlyConnection()
        start = self.clock.seconds()
        self.failureOf(d).trap(error.TimeoutError)
        self.assertAlmostEqual(self.clock.seconds() - start, 2.0)
        self.assertIs(conn.state, ConnectionState.CLOSED)  # aborted
        self.assertEqual((len(self.handshakes), self.driver.released), (0, 1))

    def test_cancel(self) -> None:
        self.network.drop = lambda *args: True
        d = self.connect(Factory.forProtocol(Collector))
        self.clock.advance(0)
        conn = self.onlyConnection()
        requests = self.driver.flushRequests
        d.cancel()
        self.failureOf(d).trap(error.ConnectingCancelledError)
        self.assertIs(conn.state, ConnectionState.CLOSED)
        self.assertEqual(self.driver.flushRequests, requests + 1)
        self.assertEqual((len(self.handshakes), self.driver.released), (0, 1))
        d.cancel()  # a second cancel changes nothing
        self.assertEqual(self.driver.released, 1)

    def test_over_the_connection_limit(self) -> None:
        self.setUp(dataclasses.replace(FAST, max_connections=1))
        self.network.drop = lambda *args: True
        self.connect(Factory.forProtocol(Collector)).addErrback(lambda f: None)
        factory = Factory.forProtocol(Collector)
        self.failureResultOf(self.connect(factory), error.ConnectError)
        self.assertEqual(factory.numPorts, 0)  # never started
        self.assertEqual(len(self.handshakes), 1)

    def test_a_connection_id_in_use(self) -> None:
        self.network.drop = lambda *args: True
        self.connect(Factory.forProtocol(Collector), connectionId=7).addErrback(lambda f: None)
        self.failureResultOf(self.connect(Factory.forProtocol(Collector), connectionId=7), ConnectionIdInUse)

    def test_buildProtocol_returning_None_fails_with_NoProtocol_and_aborts(self) -> None:
        class Nobody(Factory):
            def buildProtocol(self, addr: object) -> None:
                return None

        self.remote.startListening(echoFactory())
        d = self.connect(Nobody())
        self.clock.advance(0)
        conn = self.onlyConnection()
        self.failureOf(d).trap(error.NoProtocol)
        self.assertIs(conn.state, ConnectionState.CLOSED)  # aborted
        self.assertEqual(self.driver.started, [])
        self.assertEqual(self.driver.released, 1)

    def test_a_transport_that_fails_to_start_fails_the_connect(self) -> None:
        self.remote.startListening(echoFactory())
        self.driver.startFailure = Failure(RuntimeError("connectionMade raised"))
        self.failureOf(self.connect(Factory.forProtocol(Collector))).trap(RuntimeError)
        self.assertEqual(len(self.driver.started), 1)


class ExpectTests(HandshakeTestCase):
    def expect(self, connectionId: int, factory: IProtocolFactory, timeout: float | None = None) -> Deferred[IProtocol]:
        return self.handshakes.expect(SERVER, PEER, connectionId, factory, timeout)

    def test_an_expected_connection_is_accepted_without_listening(self) -> None:
        factory = Factory.forProtocol(Collector)
        d = self.expect(1234, factory)
        self.assertEqual(len(self.handshakes), 1)
        theirs = self.remote.connect(CLIENT, Factory.forProtocol(Collector), connectionId=1234)
        protocol = self.outcome(d)
        [(conn, started, peer, clientFactory)] = self.driver.started
        self.assertIs(started, protocol)
        self.assertFalse(conn.initiator)
        self.assertEqual(conn.send_id, 1234)
        self.assertEqual(peer, PEER)
        self.assertIs(clientFactory, factory)
        self.assertEqual(len(self.handshakes), 0)
        self.assertIsInstance(self.outcome(theirs), Collector)

    def test_an_expect_timeout_forgets_the_id(self) -> None:
        factory = Factory.forProtocol(Collector)
        d = self.expect(1234, factory, timeout=1.0)
        failure = self.failureOf(d)
        failure.trap(error.TimeoutError)
        self.assertIn(f"from {PEER}", str(failure.value))
        self.assertEqual(self.clock.seconds(), 1.0)
        self.assertEqual((factory.numPorts, len(self.handshakes), self.driver.released), (0, 0, 1))
        late = self.remote.connect(CLIENT, Factory.forProtocol(Collector), connectionId=1234)
        self.failureOf(late).trap(error.ConnectionRefusedError)  # nobody expects it, nobody listens
        self.assertEqual(self.driver.started, [])

    def test_cancel(self) -> None:
        d = self.expect(1234, Factory.forProtocol(Collector))
        d.cancel()
        self.failureResultOf(d, error.ConnectingCancelledError)
        self.assertEqual((len(self.handshakes), self.driver.released), (0, 1))

    def test_the_same_id_twice(self) -> None:
        self.expect(1234, Factory.forProtocol(Collector)).addErrback(lambda f: None)
        self.failureResultOf(self.expect(1234, Factory.forProtocol(Collector)), ConnectionIdInUse)
        self.assertEqual(len(self.handshakes), 1)


class AcceptTests(HandshakeTestCase):
    def setUp(self, config: UTPConfig = FAST) -> None:
        super().setUp(config)
        self.driver.context.accepting = True

    def test_a_connection_nobody_waits_for_goes_to_the_listening_factory(self) -> None:
        self.driver.listenFactory = Factory.forProtocol(Collector)
        self.outcome(self.remote.connect(CLIENT, Factory.forProtocol(Collector)))
        run(self.clock, lambda: self.driver.started, 5)
        [(conn, protocol, peer, clientFactory)] = self.driver.started
        self.assertIsInstance(protocol, Collector)
        self.assertFalse(conn.initiator)
        self.assertEqual(peer, PEER)
        self.assertIsNone(clientFactory)  # a listening factory is stopped by stopListening, not per connection
        self.assertEqual(len(self.handshakes), 0)

    def checkAborted(self) -> None:
        theirs = self.outcome(self.remote.connect(CLIENT, Factory.forProtocol(Collector)))
        self.assertIsInstance(self.outcome(theirs.lost), UTPConnectionReset)
        self.assertEqual(self.driver.started, [])

    def test_without_a_listening_factory_the_connection_is_aborted(self) -> None:
        self.checkAborted()

    def test_buildProtocol_raising_is_logged_and_aborts(self) -> None:
        class Broken(Factory):
            def buildProtocol(self, addr: object) -> None:
                raise RuntimeError("broken")

        self.driver.listenFactory = Broken()
        self.checkAborted()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class FailAllTests(HandshakeTestCase):
    def test_every_pending_connection_fails(self) -> None:
        self.network.drop = lambda *args: True
        connecting = self.handshakes.connect(SERVER, PEER, Factory.forProtocol(Collector), 5.0, None)
        expecting = self.handshakes.expect(SERVER, PEER, 1234, Factory.forProtocol(Collector), 5.0)
        self.assertEqual(len(self.handshakes), 2)
        self.handshakes.failAll(error.ConnectError("the uTP port was closed"))
        self.failureResultOf(connecting, error.ConnectError)
        self.failureResultOf(expecting, error.ConnectError)
        self.assertEqual((len(self.handshakes), self.driver.released), (0, 2))
        self.clock.advance(10)  # the timeouts were cancelled
        self.assertEqual(self.driver.released, 2)
