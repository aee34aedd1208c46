"""Helpers for the tests that run txutp on a real reactor over loopback."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.filepath import FilePath

from txutp import UTPConfig
from txutp._multiplexer import activeMultiplexers

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
