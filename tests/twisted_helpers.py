"""Helpers for the Twisted-side tests.

Two tiers: the integration tests run txutp on the real reactor over loopback
(``closeAllSockets``, ``waitForAllClosed``, ...); the adapter tests drive
multiplexers on a ``task.Clock`` over a :class:`~txutp.carriers.MemoryNetwork`
or a :class:`FakeDatagramTransport`, with sockets forbidden (``forbidSockets``,
``ClockedPair``).
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from txutp import UTPConfig, UTPMultiplexer, activeMultiplexers
from txutp.carriers import MemoryNetwork

#: Short RTO floor and no extra linger: sockets close within ~0.6 s of their last connection.
FAST = dataclasses.replace(UTPConfig(), min_rto=0.2, linger_time=0.0)


def tempDir(testCase: object) -> FilePath:
    """A fresh temporary directory, removed after the test (``mktemp`` litters the cwd under pytest)."""
    path = tempfile.mkdtemp(prefix="txutp-test-")
    testCase.addCleanup(shutil.rmtree, path, True)  # type: ignore[attr-defined]
    return FilePath(path)


def sleep(seconds: float) -> Deferred[None]:
    """A Deferred firing after ``seconds`` on the global reactor."""
    return deferLater(reactor, seconds, lambda: None)


async def closeAllSockets() -> None:
    """Close every uTP socket of the global reactor at once (test cleanup)."""
    await gatherResults([mux.closeNow() for mux in activeMultiplexers(reactor)])


async def waitForAllClosed(timeout: float = 10.0) -> None:
    """Wait until every uTP socket of the global reactor closed by itself."""
    deadline = reactor.seconds() + timeout
    while activeMultiplexers(reactor):
        if reactor.seconds() > deadline:
            raise AssertionError(f"uTP sockets still open: {activeMultiplexers(reactor)}")
        await sleep(0.05)


def ourDelayedCalls() -> list[object]:
    """Delayed calls on the global reactor that belong to txutp."""
    return [c for c in reactor.getDelayedCalls() if "UTP" in repr(c) or "Port" in repr(c)]


class Collector(Protocol):
    """Collects bytes; ``lost`` fires with the reason's exception when the connection ends."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: Deferred[object] = Deferred()
        self.made: Deferred[None] = Deferred()
        self.reason: object = None

    def connectionMade(self) -> None:
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object) -> None:
        self.reason = reason
        self.lost.callback(reason.value)  # type: ignore[attr-defined]


class Echo(Protocol):
    """Echoes every byte back; closes (like TCP) on the peer's EOF."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def echoFactory() -> Factory:
    return Factory.forProtocol(Echo)


# ---------------------------------------------------------------------- the adapter tier: no socket, a task.Clock

#: The two ends of a ClockedPair.
SERVER = ("10.0.0.1", 6881)
CLIENT = ("10.0.0.2", 6882)


def forbidSockets(testCase: Any) -> None:
    """Fail the test if anything creates a socket during it."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the adapter tests open no socket")

    testCase.patch(socket, "socket", refuse)


def run(clock: task.Clock, until: Callable[[], object] | None = None, timeout: float = 60.0) -> float:
    """Run ``clock``'s calls in time order until ``until()`` is true, or for ``timeout`` seconds without one.

    Time jumps from one delayed call to the next, so timers fire exactly when
    they are due. Returns the clock time spent; fails if ``until`` never held.
    """
    start = clock.seconds()
    end = start + timeout
    while True:
        if until is not None and until():
            return clock.seconds() - start
        calls = [c.getTime() for c in clock.getDelayedCalls()]
        nxt = min(calls) if calls else None
        if nxt is None or nxt > end:
            clock.advance(max(0.0, end - clock.seconds()))
            if until is not None and not until():
                raise AssertionError(f"still not done after {timeout} s of clock time")
            return clock.seconds() - start
        clock.advance(max(0.0, nxt - clock.seconds()))


class ClockedPair:
    """A server and a client multiplexer on a MemoryNetwork under one task.Clock (one-way ``delay``)."""

    def __init__(self, config: UTPConfig | None = FAST, delay: float = 0.01, *, closeWhenUnused: bool = False) -> None:
        self.clock = task.Clock()
        self.network = MemoryNetwork(self.clock, delay)
        self.server = UTPMultiplexer(self.clock, config, closeWhenUnused=closeWhenUnused)
        self.client = UTPMultiplexer(self.clock, config, closeWhenUnused=closeWhenUnused)
        self.serverCarrier = self.network.listen(SERVER, self.server)
        self.clientCarrier = self.network.listen(CLIENT, self.client)

    def run(self, until: Callable[[], object] | None = None, timeout: float = 60.0) -> float:
        """Run the clock (see :func:`run`)."""
        return run(self.clock, until, timeout)

    def result(self, d: Deferred[Any], timeout: float = 60.0) -> Any:
        """Run the clock until ``d`` fires; return its result (raise its failure)."""
        results: list[object] = []
        d.addBoth(results.append)
        self.run(lambda: results, timeout)
        outcome = results[0]
        if isinstance(outcome, Failure):
            outcome.raiseException()
        return outcome

    def connect(self, factory: Factory, timeout: float = 60.0, **kwargs: Any) -> Any:
        """Connect the client to the server (which must listen); return the protocol, or raise."""
        return self.result(self.client.connect(SERVER, factory, **kwargs), timeout)


class FakeDatagramTransport:
    """A carrier that keeps what its multiplexer sends and sends nothing; tests play the peer.

    ``written`` holds every ``(datagram, address)`` in order; ``batches``, each
    flush's. :meth:`receive` delivers a datagram (and ends the read batch).
    Without ``batching`` it has no ``writeBatch``, as a plain carrier.
    """

    def __init__(self, host: object = SERVER, batching: bool = True) -> None:
        self.host = host
        self.written: list[tuple[bytes, object]] = []
        self.batches: list[list[tuple[bytes, object]]] = []
        self.protocol: DatagramProtocol | None = None
        self.stopped = False
        if batching:
            self.writeBatch = self._writeBatch

    def start(self, protocol: DatagramProtocol) -> FakeDatagramTransport:
        """Start ``protocol`` on this carrier, as a port does."""
        self.protocol = protocol
        protocol.makeConnection(self)  # type: ignore[arg-type]
        return self

    def write(self, datagram: bytes, address: object) -> None:
        self.written.append((bytes(datagram), address))

    def _writeBatch(self, datagrams: list[tuple[bytes, object]]) -> None:
        self.batches.append([(bytes(d), a) for d, a in datagrams])
        self.written.extend(self.batches[-1])

    def getHost(self) -> object:
        return self.host

    def stopListening(self) -> None:
        if not self.stopped and self.protocol is not None:
            self.stopped = True
            self.protocol.doStop()

    def receive(self, datagram: bytes, address: object) -> None:
        """A datagram arrives from ``address``."""
        assert self.protocol is not None
        self.protocol.datagramReceived(datagram, address)  # type: ignore[arg-type]
        batchDone = getattr(self.protocol, "readBatchDone", None)
        if batchDone is not None and hasattr(self, "writeBatch"):
            batchDone()
