"""Happy Eyeballs (RFC 8305) in ``UTPClientEndpoint``: the address order, the race of attempts on a
``task.Clock``, the endpoint on a ``task.Clock`` over in-memory networks (no socket), and on loopback with the
real reactor and a name that resolves to ``::1`` and ``127.0.0.1``."""

from __future__ import annotations

import dataclasses
import socket
import time
from typing import Any

from twisted.internet import error, reactor, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IHostnameResolver, IHostResolution
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from txutp import UTPClientEndpoint, UTPMultiplexer, UTPServerEndpoint, activeMultiplexers
from txutp import endpoints as endpointsModule
from txutp.carriers import MemoryNetwork
from txutp.endpoints import _abortLateWinner, _HappyEyeballs, _interleaveFamilies

from .twisted_helpers import FAST, Collector, closeAllSockets, echoFactory, forbidSockets, run, sleep

# ---------------------------------------------------------------------- a resolver that answers at once


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class FakeResolver:
    """Resolves the names it knows to their addresses, at once; records every name asked."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.asked: list[str] = []

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        self.asked.append(hostName)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        for host in self.names.get(hostName, []):
            kind = IPv6Address if ":" in host else IPv4Address
            resolutionReceiver.addressResolved(kind("UDP", host, portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


def outcome(d: Deferred[Any]) -> list[object]:
    """A list that gets ``d``'s result (or Failure) once it fires."""
    results: list[object] = []
    d.addBoth(results.append)
    return results


# ---------------------------------------------------------------------- the order


def v4(host: str) -> IPv4Address:
    return IPv4Address("UDP", host, 6881)


def v6(host: str) -> IPv6Address:
    return IPv6Address("UDP", host, 6881)


class OrderTests(SynchronousTestCase):
    """RFC 8305 §4: families alternate, IPv6 first, each family in the resolver's order."""

    def test_interleaved_ipv6_first(self) -> None:
        resolved = [v4("10.0.0.1"), v4("10.0.0.2"), v6("fd00::1"), v4("10.0.0.3"), v6("fd00::2")]
        self.assertEqual(
            _interleaveFamilies(resolved),
            [v6("fd00::1"), v4("10.0.0.1"), v6("fd00::2"), v4("10.0.0.2"), v4("10.0.0.3")],
        )

    def test_one_family_keeps_the_resolver_order(self) -> None:
        self.assertEqual(_interleaveFamilies([v4("10.0.0.2"), v4("10.0.0.1")]), [v4("10.0.0.2"), v4("10.0.0.1")])
        self.assertEqual(_interleaveFamilies([v6("fd00::2"), v6("fd00::1")]), [v6("fd00::2"), v6("fd00::1")])

    def test_duplicates_are_tried_once(self) -> None:
        resolved = [v4("10.0.0.1"), v6("fd00::1"), v4("10.0.0.1"), v6("fd00::1")]
        self.assertEqual(_interleaveFamilies(resolved), [v6("fd00::1"), v4("10.0.0.1")])


# ---------------------------------------------------------------------- the race, with fake attempts


class FakeAttempts:
    """The ``attempt`` callable of a race: records each start, leaves each attempt for the test to end."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.started: list[tuple[str, float]] = []
        self.pending: dict[str, Deferred[str]] = {}
        self.cancelled: list[str] = []
        #: Targets whose attempt fails at once, and how.
        self.failAtOnce: dict[str, Exception] = {}
        #: Targets whose attempt connects while it is being cancelled.
        self.connectWhenCancelled: set[str] = set()

    def __call__(self, target: str) -> Deferred[str]:
        self.started.append((target, self.clock.seconds()))
        if target in self.failAtOnce:
            return fail(self.failAtOnce[target])

        def cancel(d: Deferred[str]) -> None:
            self.cancelled.append(target)
            if target in self.connectWhenCancelled:
                d.callback(f"late {target}")
            else:
                d.errback(error.ConnectingCancelledError(target))

        d: Deferred[str] = Deferred(cancel)
        self.pending[target] = d
        return d

    def targets(self) -> list[str]:
        return [target for target, _ in self.started]


class RaceTests(SynchronousTestCase):
    """The race of connection attempts (RFC 8305 §5) on a task.Clock."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.attempts = FakeAttempts(self.clock)
        self.discarded: list[str] = []

    def race(self, *targets: str, delay: float = 0.3) -> Deferred[str]:
        address = IPv4Address("TCP", "0.0.0.0", 0)
        return _HappyEyeballs(self.clock, targets, self.attempts, delay, self.discarded.append, address).start()

    def test_attempts_start_one_delay_apart(self) -> None:
        self.race("a", "b", "c")
        self.assertEqual(self.attempts.started, [("a", 0.0)])
        self.clock.advance(0.29)
        self.assertEqual(self.attempts.targets(), ["a"])
        self.clock.advance(0.01)
        self.assertEqual(self.attempts.started, [("a", 0.0), ("b", 0.3)])
        self.clock.advance(0.3)
        self.assertEqual(self.attempts.started, [("a", 0.0), ("b", 0.3), ("c", 0.6)])
        self.assertEqual(self.clock.getDelayedCalls(), [])  # nothing left to start

    def test_the_delay_is_configurable(self) -> None:
        self.race("a", "b", delay=0.05)
        self.clock.advance(0.05)
        self.assertEqual(self.attempts.started, [("a", 0.0), ("b", 0.05)])

    def test_a_failure_starts_the_next_at_once(self) -> None:
        result = outcome(self.race("a", "b", "c"))
        self.clock.advance(0.1)
        self.attempts.pending["a"].errback(error.ConnectionRefusedError())
        self.assertEqual(self.attempts.started, [("a", 0.0), ("b", 0.1)])
        # The next start is one delay after b's, not after a's.
        self.assertEqual([call.getTime() for call in self.clock.getDelayedCalls()], [0.4])
        self.clock.advance(0.3)
        self.assertEqual(self.attempts.started, [("a", 0.0), ("b", 0.1), ("c", 0.4)])
        self.assertEqual(result, [])

    def test_attempts_that_fail_at_once_start_the_next_at_once(self) -> None:
        self.attempts.failAtOnce = {"a": error.ConnectBindError(), "b": error.ConnectError()}
        result = outcome(self.race("a", "b", "c"))
        self.assertEqual(self.attempts.started, [("a", 0.0), ("b", 0.0), ("c", 0.0)])
        self.assertEqual(result, [])
        self.attempts.pending["c"].callback("c")
        self.assertEqual(result, ["c"])

    def test_an_attempt_that_raises_counts_as_failed(self) -> None:
        def attempt(target: str) -> Deferred[str]:
            if target == "a":
                raise ValueError("bad bind address")
            return self.attempts(target)

        address = IPv4Address("TCP", "0.0.0.0", 0)
        _HappyEyeballs(self.clock, ["a", "b"], attempt, 0.3, self.discarded.append, address).start()
        self.assertEqual(self.attempts.started, [("b", 0.0)])

    def test_the_first_success_wins_and_the_others_are_cancelled(self) -> None:
        result = outcome(self.race("a", "b", "c"))
        self.clock.advance(0.3)
        self.attempts.pending["b"].callback("b")
        self.assertEqual(result, ["b"])
        self.assertEqual(self.attempts.cancelled, ["a"])
        self.assertEqual(self.clock.getDelayedCalls(), [])  # c's start is cancelled
        self.clock.advance(10)
        self.assertEqual(self.attempts.targets(), ["a", "b"])
        self.assertEqual(self.discarded, [])

    def test_a_connection_made_after_the_winner_is_discarded(self) -> None:
        self.attempts.connectWhenCancelled = {"a"}
        result = outcome(self.race("a", "b"))
        self.clock.advance(0.3)
        self.attempts.pending["b"].callback("b")
        self.assertEqual(result, ["b"])
        self.assertEqual(self.discarded, ["late a"])

    def test_all_fail_with_the_failure_of_the_last_to_fail(self) -> None:
        result = outcome(self.race("a", "b"))
        self.clock.advance(0.3)
        self.attempts.pending["b"].errback(error.ConnectionRefusedError("b refused"))
        self.assertEqual(result, [])  # a is still running
        self.attempts.pending["a"].errback(error.TimeoutError("a timed out"))
        [failure] = result
        assert isinstance(failure, Failure)
        failure.trap(error.TimeoutError)
        self.assertIn("a timed out", str(failure.value))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_cancels_every_attempt_and_the_next_start(self) -> None:
        d = self.race("a", "b", "c")
        result = outcome(d)
        self.clock.advance(0.3)
        d.cancel()
        [failure] = result
        assert isinstance(failure, Failure)
        failure.trap(error.ConnectingCancelledError)
        self.assertEqual(sorted(self.attempts.cancelled), ["a", "b"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.attempts.targets(), ["a", "b"])

    def test_the_endpoint_resets_a_late_connection(self) -> None:
        """The endpoint's ``discard`` aborts the late connection (a RESET to the peer)."""
        aborted: list[bool] = []

        class Transport:
            def abortConnection(self) -> None:
                aborted.append(True)

        late = Collector()
        late.transport = Transport()  # type: ignore[assignment]
        _abortLateWinner(late)
        self.assertEqual(aborted, [True])


# ---------------------------------------------------------------------- the endpoint, on a clock, in memory

SERVER6 = ("fd00::1", 6881)
SERVER4 = ("10.0.0.1", 6881)
CLIENT6 = ("fd00::2", 40000)
CLIENT4 = ("10.0.0.2", 40000)
NAMES = {
    "peer.example": ["10.0.0.1", "fd00::1"],  # IPv4 first, as a resolver may give them
    "v4only.example": ["10.0.0.1"],
}


class ClockReactor(task.Clock):
    """A task.Clock with a name resolver: all the reactor an endpoint needs when its sockets are faked."""

    def __init__(self, resolver: FakeResolver) -> None:
        super().__init__()
        self.nameResolver = resolver


class EndpointOnAClockTests(SynchronousTestCase):
    """``UTPClientEndpoint`` with the registry's sockets replaced by multiplexers on two MemoryNetworks
    (one per family, each with its own one-way delay)."""

    def setUp(self) -> None:
        forbidSockets(self)
        self.resolver = FakeResolver(NAMES)
        self.clock = ClockReactor(self.resolver)
        self.clients: dict[str, UTPMultiplexer] = {}
        self.interfaces: list[str] = []
        self.patch(endpointsModule, "ephemeralMultiplexer", self.clientMultiplexer)
        self.patch(endpointsModule, "acquireMultiplexer", lambda r, i, p, config: self.clientMultiplexer(r, i, config))

    def networks(self, delay6: float = 0.01, delay4: float = 0.01) -> None:
        self.net6 = MemoryNetwork(self.clock, delay6)
        self.net4 = MemoryNetwork(self.clock, delay4)

    def server(self, family: int, listening: bool = True) -> UTPMultiplexer:
        """A server on SERVER6 or SERVER4; one not listening refuses (answers SYNs with RESET)."""
        mux = UTPMultiplexer(self.clock, FAST)
        if family == 6:
            self.net6.listen(SERVER6, mux)
        else:
            self.net4.listen(SERVER4, mux)
        if listening:
            mux.startListening(echoFactory())
        return mux

    def clientMultiplexer(self, reactor: object, interface: str, config: object) -> UTPMultiplexer:
        """The client socket of ``interface``'s family (IPv6 for '::' and fd00::2, else IPv4)."""
        self.interfaces.append(interface)
        family = "6" if ":" in interface else "4"
        mux = self.clients.get(family)
        if mux is None or mux.closing:
            mux = UTPMultiplexer(self.clock, FAST, closeWhenUnused=True)
            if family == "6":
                self.net6.listen(CLIENT6, mux)
            else:
                self.net4.listen(CLIENT4, mux)
            self.clients[family] = mux
        return mux

    def connect(self, host: str = "peer.example", **kwargs: Any) -> Deferred[Any]:
        kwargs.setdefault("config", FAST)
        return UTPClientEndpoint(self.clock, host, 6881, **kwargs).connect(Factory.forProtocol(Collector))

    def result(self, d: Deferred[Any], timeout: float = 60.0) -> Any:
        """Run the clock until ``d`` fires; return its result (raise its failure)."""
        results = outcome(d)
        run(self.clock, lambda: results, timeout)
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    def settle(self) -> None:
        """Run the clock until nothing is scheduled any more (the client sockets closed, the network quiet)."""
        run(self.clock, lambda: not self.clock.getDelayedCalls(), timeout=30)

    def test_ipv6_is_tried_first_and_wins_when_it_is_quick(self) -> None:
        self.networks()
        self.server(6)
        self.server(4)
        client = self.result(self.connect())
        self.assertEqual(client.transport.getPeer(), IPv6Address("UDP", *SERVER6))
        self.assertAlmostEqual(self.clock.seconds(), 0.02)
        self.clock.advance(1)
        self.assertEqual(self.interfaces, ["::"])  # no IPv4 attempt was started
        self.assertEqual(self.resolver.asked, ["peer.example"])

    def test_a_slow_ipv6_path_loses_to_ipv4_started_after_the_delay(self) -> None:
        """IPv6 answers in 0.5 s, IPv4 in 0.02 s: IPv4 starts at 0.3 s and wins. The IPv6 server's half-open
        connection goes: the loser's socket stays open to answer its SYN-ACK (0.5 s) with a RESET (0.75 s)."""
        self.networks(delay6=0.25)
        server6 = self.server(6)
        server4 = self.server(4)
        d = self.connect()
        run(self.clock, timeout=0.26)
        self.assertEqual(len(server6.context.connections), 1)  # the IPv6 SYN arrived: half-open
        client = self.result(d)
        self.assertEqual(client.transport.getPeer(), IPv4Address("UDP", *SERVER4))
        self.assertAlmostEqual(self.clock.seconds(), 0.32)
        self.assertEqual(self.interfaces, ["::", ""])
        run(self.clock, lambda: not server6.context.connections, timeout=1)
        self.assertAlmostEqual(self.clock.seconds(), 0.75)
        self.assertEqual(len(server4.connections()), 1)
        self.assertEqual(server6.connections(), [])
        # The loser's socket closes after the SYN timeout (3 s); the winner's stays.
        run(self.clock, lambda: self.clients["6"].closed, timeout=5)
        self.assertAlmostEqual(self.clock.seconds(), 0.32 + FAST.syn_timeout)
        self.assertFalse(self.clients["4"].closed)

    def test_only_ipv4_answers(self) -> None:
        self.networks()
        self.server(4)  # nobody at SERVER6: the IPv6 SYNs are lost
        client = self.result(self.connect())
        self.assertEqual(client.transport.getPeer(), IPv4Address("UDP", *SERVER4))
        self.assertAlmostEqual(self.clock.seconds(), 0.32)
        run(self.clock, lambda: self.clients["6"].closed, timeout=5)
        self.assertAlmostEqual(self.clock.seconds(), 0.32 + FAST.syn_timeout)

    def test_a_refused_ipv6_attempt_starts_ipv4_at_once(self) -> None:
        self.networks()
        self.server(6, listening=False)
        self.server(4)
        client = self.result(self.connect())
        self.assertEqual(client.transport.getPeer(), IPv4Address("UDP", *SERVER4))
        self.assertAlmostEqual(self.clock.seconds(), 0.04)  # refused at 0.02 s, IPv4 connected 0.02 s later

    def test_all_refused(self) -> None:
        self.networks()
        self.server(6, listening=False)
        self.server(4, listening=False)
        self.assertRaises(error.ConnectionRefusedError, self.result, self.connect())
        self.assertEqual(self.interfaces, ["::", ""])
        self.settle()
        self.assertTrue(self.clients["6"].closed and self.clients["4"].closed)

    def test_all_time_out_at_the_deadline(self) -> None:
        self.networks()  # nobody listens anywhere
        self.assertRaises(error.TimeoutError, self.result, self.connect(timeout=2))
        self.assertAlmostEqual(self.clock.seconds(), 2.0)
        self.settle()
        self.assertTrue(self.clients["6"].closed and self.clients["4"].closed)

    def test_no_attempt_starts_after_the_deadline(self) -> None:
        """The IPv6 attempt times out at the deadline, before the attempt delay: the IPv4 one never starts."""
        self.networks()
        self.assertRaises(error.TimeoutError, self.result, self.connect(timeout=0.2))
        self.assertAlmostEqual(self.clock.seconds(), 0.2)
        self.assertEqual(self.interfaces, ["::"])

    def test_cancel_before_the_second_attempt(self) -> None:
        self.networks()
        d = self.connect()
        self.clock.advance(0.1)
        d.cancel()
        self.assertRaises(error.ConnectingCancelledError, self.result, d)
        run(self.clock, lambda: self.clients["6"].closed, timeout=0.01)  # at once (after sending its RESET)
        self.settle()  # returns only once no DelayedCall is left
        self.assertEqual(self.interfaces, ["::"])  # the IPv4 attempt never started

    def test_cancel_with_both_attempts_running(self) -> None:
        self.networks()
        d = self.connect()
        self.clock.advance(0.4)
        self.assertEqual(self.interfaces, ["::", ""])
        d.cancel()
        self.assertRaises(error.ConnectingCancelledError, self.result, d)
        run(self.clock, lambda: self.clients["6"].closed and self.clients["4"].closed, timeout=0.01)
        self.settle()

    def test_an_ipv4_bind_address_tries_ipv4_only(self) -> None:
        self.networks()
        self.server(6)
        self.server(4)
        client = self.result(self.connect(bindAddress="10.0.0.2"))
        self.assertEqual(client.transport.getPeer(), IPv4Address("UDP", *SERVER4))
        self.assertAlmostEqual(self.clock.seconds(), 0.02)
        self.clock.advance(1)
        self.assertEqual(self.interfaces, ["10.0.0.2"])

    def test_an_ipv6_bind_address_tries_ipv6_only(self) -> None:
        self.networks()
        self.server(6, listening=False)
        self.server(4)
        self.assertRaises(error.ConnectionRefusedError, self.result, self.connect(bindAddress="fd00::2"))
        self.assertEqual(self.interfaces, ["fd00::2"])

    def test_no_address_of_the_bind_address_family(self) -> None:
        self.networks()
        with self.assertRaises(error.DNSLookupError) as caught:
            self.result(self.connect("v4only.example", bindAddress="fd00::2"))
        self.assertIn("'v4only.example' has no IPv6 address", str(caught.exception))
        self.assertEqual(self.interfaces, [])

    def test_an_ip_literal_is_one_attempt_without_the_resolver(self) -> None:
        self.networks()
        self.server(4)
        client = self.result(self.connect("10.0.0.1"))
        self.assertEqual(client.transport.getPeer(), IPv4Address("UDP", *SERVER4))
        self.assertEqual(self.resolver.asked, [])
        self.assertEqual(self.interfaces, [""])

    def test_attempt_delay_keyword(self) -> None:
        self.networks()
        self.server(4)
        self.result(self.connect(attemptDelay=0.05))
        self.assertAlmostEqual(self.clock.seconds(), 0.07)
        self.assertRaises(ValueError, UTPClientEndpoint, self.clock, "peer.example", 6881, attemptDelay=-1)


# ---------------------------------------------------------------------- the endpoint on loopback, real reactor


#: A losing attempt's socket stays open for the SYN timeout: 0.5 s here.
QUICK = dataclasses.replace(FAST, syn_timeout=0.5)


def freeDualStackPort() -> int:
    """A UDP port free on both [::] and 0.0.0.0 (a moment ago)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.bind(("::", 0))
        return int(sock.getsockname()[1])
    finally:
        sock.close()


class LoopbackTests(TestCase):
    """A name resolving to ``::1`` and ``127.0.0.1`` (a fake resolver on the real reactor)."""

    def setUp(self) -> None:
        self.addCleanup(closeAllSockets)
        resolver = FakeResolver({"both.example": ["127.0.0.1", "::1"]})
        simpleResolver = reactor.resolver
        previous = reactor.installNameResolver(resolver)

        def restore() -> None:
            reactor.installNameResolver(previous)
            reactor.resolver = simpleResolver

        self.addCleanup(restore)

    def connect(self, port: int, **kwargs: Any) -> Deferred[Any]:
        """Connect to both.example:``port``."""
        endpoint = UTPClientEndpoint(
            reactor, "both.example", port, timeout=kwargs.pop("timeout", 10), config=QUICK, **kwargs
        )
        return endpoint.connect(Factory.forProtocol(Collector))

    def multiplexers(self, family: type[IPv4Address] | type[IPv6Address]) -> list[UTPMultiplexer]:
        return [m for m in activeMultiplexers(reactor) if isinstance(m.getHost(), family)]

    async def test_only_ipv4_listens(self) -> None:
        port = await UTPServerEndpoint(reactor, 0, "127.0.0.1", FAST).listen(echoFactory())
        started = time.monotonic()
        client = await self.connect(port.getHost().port)
        self.assertLess(time.monotonic() - started, 2)  # 0.3 s, not a SYN timeout
        self.assertEqual(client.transport.getPeer(), IPv4Address("UDP", "127.0.0.1", port.getHost().port))
        deadline = time.monotonic() + 2
        while self.multiplexers(IPv6Address) and time.monotonic() < deadline:
            await sleep(0.02)
        self.assertEqual(self.multiplexers(IPv6Address), [])  # the cancelled IPv6 attempt's socket closed
        client.transport.loseConnection()
        await client.lost

    async def test_both_listen_ipv6_wins(self) -> None:
        port = await UTPServerEndpoint(reactor, 0, "::", FAST).listen(echoFactory())  # dual-stack
        client = await self.connect(port.getHost().port)
        self.assertEqual(client.transport.getPeer(), IPv6Address("UDP", "::1", port.getHost().port))
        await sleep(0.4)  # past the attempt delay: no IPv4 attempt follows the win
        self.assertEqual(self.multiplexers(IPv4Address), [])
        self.assertEqual(port.multiplexer.context.stats.syns_accepted, 1)
        self.assertEqual(len(port.multiplexer.context.connections), 1)
        self.assertEqual(len(port.multiplexer.connections()), 1)
        client.transport.loseConnection()
        await client.lost

    async def test_two_attempts_running_leave_one_connection_on_the_server(self) -> None:
        """With no delay both SYNs reach the server; the loser is reset, so the server keeps only the winner's
        connection (not a half-open one besides)."""
        port = await UTPServerEndpoint(reactor, 0, "::", FAST).listen(echoFactory())
        client = await self.connect(port.getHost().port, attemptDelay=0)
        server = port.multiplexer
        deadline = time.monotonic() + 3
        while not (server.context.stats.syns_accepted == 2 and len(server.context.connections) == 1):
            if time.monotonic() > deadline:
                break
            await sleep(0.02)
        self.assertEqual(server.context.stats.syns_accepted, 2)
        self.assertEqual(len(server.context.connections), 1)
        [accepted] = server.connections()
        self.assertEqual(accepted.getPeer().port, client.transport.getHost().port)
        client.transport.write(b"still here")
        while bytes(client.data) != b"still here":
            await sleep(0.01)
        client.transport.loseConnection()
        await client.lost

    async def test_bind_port_shared_by_both_families(self) -> None:
        """With ``bindPort`` and no bindAddress, the IPv6 attempt binds [::]:bindPort (dual-stack), which
        holds the IPv4 wildcard too: the IPv4 attempt connects through that socket."""
        silent = reactor.listenUDP(0, DatagramProtocol(), interface="::1")  # the IPv6 attempt goes unanswered
        self.addCleanup(silent.stopListening)
        port = await UTPServerEndpoint(reactor, silent.getHost().port, "127.0.0.1", FAST).listen(echoFactory())
        bindPort = freeDualStackPort()
        client = await self.connect(port.getHost().port, timeout=5, bindPort=bindPort)
        self.assertEqual(client.transport.getPeer(), IPv4Address("UDP", "127.0.0.1", port.getHost().port))
        self.assertEqual(client.transport.getHost().port, bindPort)
        client.transport.loseConnection()
        await client.lost
