"""Graceful shutdown: the multiplexer's ``before shutdown`` trigger and :meth:`UTPMultiplexer.finishClosing`.

The program under test (``local``) runs on a :class:`ShutdownReactor`: a
``task.Clock`` with system event triggers kept as ``ReactorBase`` keeps them
(Twisted's own ``_ThreePhaseEvent``), whose ``during shutdown`` phase stops
the carrier as the reactor's ``disconnectAll`` does. Its peer (``remote``)
runs on the same clock without triggers, over a ``MemoryNetwork``; no socket
is opened. One test runs the issue's program for real, in a subprocess.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import error, reactor, task
from twisted.internet.base import _ThreePhaseEvent
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory
from twisted.trial import unittest
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txutp import UTPConfig, UTPMultiplexer, UTPServerEndpoint
from txutp.carriers import MemoryNetwork
from txutp.engine import ConnectionState
from txutp.transport import UTPConnectionReset

from .twisted_helpers import CLIENT, SERVER, Collector, closeAllSockets, forbidSockets, run, sleep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: A short RTO floor, and the default linger (5 s): a closed connection outlives the 2 s grace.
CONFIG = dataclasses.replace(UTPConfig(), min_rto=0.2)
DELAY = 0.01


class ShutdownReactor:
    """``callLater`` and ``seconds`` of a clock, and system event triggers as a real reactor keeps them."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.shutdown = _ThreePhaseEvent()

    def callLater(self, delay: float, f: Callable[..., object], *args: object, **kw: object) -> Any:
        return self.clock.callLater(delay, f, *args, **kw)

    def seconds(self) -> float:
        return self.clock.seconds()

    def addSystemEventTrigger(self, phase: str, eventType: str, f: Callable[..., object], *args: object) -> Any:
        assert eventType == "shutdown", eventType
        return (eventType, self.shutdown.addTrigger(phase, f, *args))

    def removeSystemEventTrigger(self, triggerID: Any) -> None:
        _, handle = triggerID
        self.shutdown.removeTrigger(handle)

    def beforeTriggers(self) -> int:
        return len(self.shutdown.before)

    def fireShutdown(self) -> None:
        self.shutdown.fireEvent()


@implementer(IHalfCloseableProtocol)
class Lingerer(Collector):
    """A peer that reads our EOF and keeps its side open until told to close."""

    def __init__(self) -> None:
        super().__init__()
        self.eof = False

    def readConnectionLost(self) -> None:
        self.eof = True

    def writeConnectionLost(self) -> None:
        pass


class ShutdownTests(SynchronousTestCase):
    def setUp(self, config: UTPConfig = CONFIG, closeWhenUnused: bool = False) -> None:
        forbidSockets(self)
        self.clock = task.Clock()
        self.reactor = ShutdownReactor(self.clock)
        self.network = MemoryNetwork(self.clock, DELAY)
        self.local = UTPMultiplexer(self.reactor, config, closeWhenUnused=closeWhenUnused)
        self.remote = UTPMultiplexer(self.clock, CONFIG)
        self.localCarrier = self.network.listen(CLIENT, self.local)
        self.network.listen(SERVER, self.remote)
        # What the reactor's disconnectAll does once the before phase is over: stop the port.
        self.reactor.shutdown.addTrigger("during", self.localCarrier.stopListening)
        self.peers: list[Lingerer] = []

        class Peers(Factory):
            def buildProtocol(factory, addr: object) -> Lingerer:
                self.peers.append(Lingerer())
                return self.peers[-1]

        self.remote.startListening(Peers())

    def advance(self, until: Callable[[], object] | None = None, timeout: float = 60.0) -> float:
        return run(self.clock, until, timeout)

    def connect(self) -> tuple[Collector, Lingerer]:
        """A connection from local to remote: (local protocol, remote protocol)."""
        results: list[object] = []
        self.local.connect(SERVER, Factory.forProtocol(Collector)).addBoth(results.append)
        self.advance(lambda: results and self.peers and self.peers[-1].transport is not None, timeout=5)
        client = results[0]
        assert isinstance(client, Collector), client
        return client, self.peers[-1]

    def closeAfterAck(self) -> tuple[Collector, Lingerer]:
        """The issue's program: write, close, and (the caller) shut down once our FIN is acknowledged."""
        client, peer = self.connect()
        client.transport.write(b"goodbye")
        client.transport.loseConnection()
        self.advance(lambda: client.lost.called, timeout=5)
        self.assertIsInstance(client.reason.value, error.ConnectionDone)  # type: ignore[attr-defined]
        [conn] = self.local.context.connections.values()
        self.assertIs(conn.state, ConnectionState.LINGER)
        self.assertFalse(conn.peer_fin_received)
        self.assertFalse(conn.close_complete)
        self.assertTrue(peer.eof)
        self.assertEqual(bytes(peer.data), b"goodbye")
        return client, peer

    def shutdown(self) -> Deferred[None]:
        """Fire the reactor's shutdown; the Deferred fires when its before phase is over."""
        done: Deferred[None] = Deferred()
        self.reactor.shutdown.addTrigger("during", done.callback, None)
        self.reactor.fireShutdown()
        return done

    # ------------------------------------------------------------------ (1) waiting for the peer's FIN

    def test_a_lingering_connection_waits_for_the_peers_fin_and_acks_it(self) -> None:
        _, peer = self.closeAfterAck()
        stopped = self.shutdown()
        self.assertNoResult(stopped)
        self.advance(timeout=0.5)  # the peer takes its time: the reactor waits
        self.assertNoResult(stopped)
        self.assertFalse(self.local.closed)
        peer.transport.loseConnection()
        closedAt = self.clock.seconds()
        self.advance(lambda: stopped.called, timeout=1)
        self.assertLess(self.clock.seconds() - closedAt, 3 * DELAY)  # its FIN, our ACK: then at once
        self.assertTrue(self.local.closed)  # the during phase stopped the carrier
        self.advance(lambda: peer.lost.called, timeout=1)
        self.assertIsInstance(peer.reason.value, error.ConnectionDone)  # type: ignore[attr-defined]
        # Our ACK of its FIN did it, not a RESET (which a peer with only its FIN unacked also takes as clean).
        [conn] = self.remote.context.connections.values()
        self.assertIs(conn.state, ConnectionState.LINGER)
        self.advance(timeout=0.5)
        self.assertIs(conn.state, ConnectionState.LINGER)  # no RESET came after it either

    def test_a_complete_close_is_not_waited_for(self) -> None:
        _, peer = self.closeAfterAck()
        peer.transport.loseConnection()
        self.advance(lambda: peer.lost.called, timeout=1)
        [conn] = self.local.context.connections.values()
        self.assertIs(conn.state, ConnectionState.LINGER)  # lingering, as long as linger_time says
        self.assertTrue(conn.close_complete)
        stopped = self.shutdown()
        self.successResultOf(stopped)  # nothing owed: no delay at all
        self.assertTrue(self.local.closed)

    # ------------------------------------------------------------------ (2) the bound

    def test_a_peer_that_never_sends_its_fin_is_reset_after_the_grace(self) -> None:
        _, peer = self.closeAfterAck()
        start = self.clock.seconds()
        stopped = self.shutdown()
        self.advance(lambda: stopped.called, timeout=10)
        self.assertAlmostEqual(self.clock.seconds() - start, 2.0, places=6)  # the default shutdown_grace
        self.advance(lambda: peer.lost.called, timeout=1)
        self.assertLessEqual(self.clock.seconds() - start, 2.0 + 2 * DELAY)  # promptly: no timeout
        self.assertIsInstance(peer.reason.value, UTPConnectionReset)  # type: ignore[attr-defined]

    def test_a_connection_that_cannot_finish_its_close_is_aborted_after_the_grace(self) -> None:
        client, _ = self.connect()
        self.network.drop = lambda data, src, dst: True  # the peer is unreachable: our FIN is never acknowledged
        client.transport.write(b"x" * 10_000)
        client.transport.loseConnection()
        self.clock.advance(0)
        start = self.clock.seconds()
        stopped = self.shutdown()
        self.advance(timeout=1.9)
        self.assertNoResult(stopped)
        self.assertFalse(client.lost.called)
        self.advance(lambda: stopped.called, timeout=0.2)
        self.assertAlmostEqual(self.clock.seconds() - start, 2.0, places=6)
        self.assertIsInstance(client.reason.value, error.ConnectionAborted)  # type: ignore[attr-defined]
        self.assertEqual(self.local.context.connections, {})

    # ------------------------------------------------------------------ (3) nothing to wait for

    def test_nothing_to_wait_for_fires_at_once(self) -> None:
        self.assertEqual(self.reactor.beforeTriggers(), 1)
        stopped = self.shutdown()
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.local.closed)

    def test_finishClosing_with_nothing_to_wait_for(self) -> None:
        self.successResultOf(self.local.finishClosing())
        self.assertEqual(self.clock.getDelayedCalls(), [])  # no bound timer left behind

    def test_open_connections_are_not_waited_for_and_reset_when_the_port_stops(self) -> None:
        client, peer = self.connect()
        stopped = self.shutdown()
        self.clock.advance(0)  # one turn: another shutdown trigger could still have closed it
        self.successResultOf(stopped)
        self.assertIsInstance(client.reason.value, error.ConnectionLost)  # type: ignore[attr-defined]
        self.advance(lambda: peer.lost.called, timeout=2 * DELAY)
        self.assertIsInstance(peer.reason.value, UTPConnectionReset)  # type: ignore[attr-defined]

    def test_a_connection_closed_by_a_later_shutdown_trigger_is_waited_for(self) -> None:
        client, peer = self.connect()
        self.reactor.addSystemEventTrigger("before", "shutdown", client.transport.loseConnection)
        stopped = self.shutdown()
        self.assertNoResult(stopped)
        self.advance(lambda: client.lost.called, timeout=1)
        self.assertIsInstance(client.reason.value, error.ConnectionDone)  # type: ignore[attr-defined]
        self.assertNoResult(stopped)  # now lingering: the peer's FIN is due
        peer.transport.loseConnection()
        self.advance(lambda: stopped.called, timeout=1)
        self.advance(lambda: peer.lost.called, timeout=1)
        self.assertIsInstance(peer.reason.value, error.ConnectionDone)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ (4) the trigger's life

    def test_the_trigger_is_removed_when_the_multiplexer_stops(self) -> None:
        self.assertEqual(self.reactor.beforeTriggers(), 1)
        other = UTPMultiplexer(self.reactor, CONFIG)
        self.network.listen(("10.0.0.3", 1), other)
        self.assertEqual(self.reactor.beforeTriggers(), 2)
        self.successResultOf(other.closeNow())
        self.assertEqual(self.reactor.beforeTriggers(), 1)
        self.successResultOf(self.local.closeNow())
        self.assertEqual(self.reactor.beforeTriggers(), 0)

    def test_a_fired_trigger_is_not_removed_again(self) -> None:
        self.shutdown()
        self.assertTrue(self.local.closed)  # stopped in the during phase: nothing left to remove
        self.assertEqual(self.reactor.beforeTriggers(), 0)
        self.assertEqual(self.flushWarnings(), [])

    def test_a_clock_without_triggers_gets_none(self) -> None:
        mux = UTPMultiplexer(self.clock, CONFIG)
        self.network.listen(("10.0.0.3", 1), mux)
        self.successResultOf(mux.closeNow())

    # ------------------------------------------------------------------ (5) the bound is configurable

    def test_the_grace_comes_from_the_config(self) -> None:
        self.assertEqual(UTPConfig().shutdown_grace, 2.0)
        self.assertEqual(self.local.shutdownGrace, 2.0)
        self.assertRaises(ValueError, UTPConfig, shutdown_grace=-1.0)
        mux = UTPMultiplexer(self.clock, dataclasses.replace(CONFIG, shutdown_grace=0.5))
        self.assertEqual(mux.shutdownGrace, 0.5)

    def checkGrace(self, grace: float) -> None:
        _, peer = self.closeAfterAck()
        start = self.clock.seconds()
        stopped = self.shutdown()
        self.advance(lambda: stopped.called, timeout=10)
        self.assertAlmostEqual(self.clock.seconds() - start, grace, places=6)
        self.advance(lambda: peer.lost.called, timeout=1)
        self.assertIsInstance(peer.reason.value, UTPConnectionReset)  # type: ignore[attr-defined]

    def test_a_shorter_grace_in_the_config(self) -> None:
        self.setUp(dataclasses.replace(CONFIG, shutdown_grace=0.5))
        self.checkGrace(0.5)

    def test_a_longer_grace_on_the_multiplexer(self) -> None:
        self.local.shutdownGrace = 3.5
        self.checkGrace(3.5)

    def test_finishClosing_takes_a_timeout(self) -> None:
        _, peer = self.closeAfterAck()
        start = self.clock.seconds()
        d = self.local.finishClosing(timeout=1.0)
        self.advance(lambda: d.called, timeout=5)
        self.assertAlmostEqual(self.clock.seconds() - start, 1.0, places=6)
        # It resets, it does not stop the carrier (a registry's closes once unused, as always).
        self.assertEqual(self.local.closed, self.local.closeWhenUnused)
        self.advance(lambda: peer.lost.called, timeout=1)
        self.assertIsInstance(peer.reason.value, UTPConnectionReset)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ the edges

    def test_a_linger_ending_during_the_grace_resets_the_peer(self) -> None:
        self.setUp(dataclasses.replace(CONFIG, linger_time=0.0, shutdown_grace=10.0))  # lingers 3 RTO (~0.6 s)
        _, peer = self.closeAfterAck()
        start = self.clock.seconds()
        stopped = self.shutdown()
        self.advance(lambda: stopped.called, timeout=10)
        self.assertLess(self.clock.seconds() - start, 2.0)  # the linger ended, not the grace
        self.advance(lambda: peer.lost.called, timeout=1)
        self.assertIsInstance(peer.reason.value, UTPConnectionReset)  # type: ignore[attr-defined]

    def test_closing_the_carrier_resets_a_lingering_connection_owed_a_fin(self) -> None:
        _, peer = self.closeAfterAck()
        self.successResultOf(self.local.closeNow())
        self.advance(lambda: peer.lost.called, timeout=2 * DELAY)
        self.assertIsInstance(peer.reason.value, UTPConnectionReset)  # type: ignore[attr-defined]


class UnusedCarrierTests(ShutdownTests):
    """The same with a registry-style multiplexer (``closeWhenUnused``)."""

    def setUp(self, config: UTPConfig = CONFIG, closeWhenUnused: bool = True) -> None:
        super().setUp(config, closeWhenUnused)

    def test_the_carrier_closes_once_the_close_is_finished_not_after_the_linger(self) -> None:
        _, peer = self.closeAfterAck()
        closed = self.local.whenClosed()
        self.reactor.shutdown.addTrigger("before", lambda: closed)  # as twistd waits for stopListening()
        self.reactor.fireShutdown()
        peer.transport.loseConnection()
        took = self.advance(lambda: closed.called, timeout=5)
        self.assertLess(took, 3 * DELAY)  # not linger_time (5 s)
        self.advance(lambda: peer.lost.called, timeout=1)
        self.assertIsInstance(peer.reason.value, error.ConnectionDone)  # type: ignore[attr-defined]

    def test_stopListening_from_a_later_trigger_does_not_wait_out_the_linger(self) -> None:
        """twistd's order: the port's trigger first, then the application's ``stopService``."""
        self.local.startListening(Factory.forProtocol(Collector))
        _, peer = self.closeAfterAck()
        peer.transport.loseConnection()
        self.advance(lambda: peer.lost.called, timeout=1)  # complete: local lingers linger_time (5 s)
        self.reactor.addSystemEventTrigger("before", "shutdown", self.local.stopListening)
        stopped = self.shutdown()
        took = self.advance(lambda: stopped.called, timeout=10)
        self.assertLess(took, 0.01)
        self.assertTrue(self.local.closed)


PROGRAM = textwrap.dedent(
    """
    import sys
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol
    from txutp import UTPClientEndpoint, UTPConfig

    class Bye(Protocol):
        def connectionMade(self):
            self.transport.write(b"goodbye")
            self.transport.loseConnection()

        def connectionLost(self, reason):
            print("lost", reason.type.__name__, flush=True)
            reactor.stop()  # as soon as our FIN is acknowledged

    # A generous grace, so that a loaded machine cannot make the test fail; it ends with our FIN.
    config = UTPConfig(shutdown_grace=20.0)
    endpoint = UTPClientEndpoint(reactor, "127.0.0.1", int(sys.argv[1]), config=config)
    endpoint.connect(Factory.forProtocol(Bye)).addErrback(lambda f: (print(f), reactor.stop()))
    reactor.run()
    print("exited", flush=True)
    """
)


class RealReactorTests(unittest.TestCase):
    """The issue's program in a subprocess, on a real reactor and loopback UDP."""

    async def test_a_program_that_stops_at_once_still_answers_the_peers_fin(self) -> None:
        self.addCleanup(closeAllSockets)
        peers: list[Lingerer] = []

        class Peers(Factory):
            def buildProtocol(self, addr: object) -> Lingerer:
                peers.append(Lingerer())
                return peers[-1]

        port = await UTPServerEndpoint(reactor, 0, "127.0.0.1").listen(Peers())  # closed by closeAllSockets
        env = dict(os.environ, PYTHONPATH=ROOT)
        process = subprocess.Popen(
            [sys.executable, "-c", PROGRAM, str(port.getHost().port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        deadline = time.monotonic() + 30
        while not (peers and peers[0].eof):
            self.assertLess(time.monotonic(), deadline, "the program never closed its connection")
            await sleep(0.02)
        await sleep(0.3)  # the program's FIN is acknowledged: it is shutting down and waits for ours
        self.assertIsNone(process.poll(), "the program exited without answering our FIN")
        peers[0].transport.loseConnection()
        closedAt = time.monotonic()
        reason = await peers[0].lost
        self.assertIsInstance(reason, error.ConnectionDone)
        while process.poll() is None:
            self.assertLess(time.monotonic(), closedAt + 10, "the program did not exit once its peer's FIN came")
            await sleep(0.02)
        out, err = process.communicate()
        self.assertEqual(process.returncode, 0, err)
        self.assertEqual(out.decode().split("\n")[:2], ["lost ConnectionDone", "exited"])
