"""Parallel echo load on one uTP server, for ``bench.suite``'s reuseport rows.

    python -m bench.reuseport_load PORT CONNECTIONS SIZE

Prints ``READY`` once imported, then waits for a line on stdin ("go"), then opens CONNECTIONS
connections to ``127.0.0.1:PORT``, each from its own UDP socket (its own ephemeral ``bindPort``:
without one, txutp's clients share one socket per address family). Each sends SIZE bytes of the
interop stream (``bench.utp_bulk``'s producer), half-closes, and reads the echoed bytes until the
server's EOF. Ends with one JSON line: ``start`` (``time.monotonic()`` at the go line: system-wide
on Linux, so comparable across processes), ``end`` (the last echoed byte of the last connection),
``sent``, ``echoed`` and ``error`` if any connection failed or came back short.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from bench.utp_bulk import _Source
from txutp import UTPClientEndpoint

reactor: Any = _reactor


@implementer(IHalfCloseableProtocol)
class _Echoed(Protocol):
    def __init__(self, load: _Load, size: int) -> None:
        self.load = load
        self.size = size
        self.received = 0

    def connectionMade(self) -> None:
        source = _Source(self, self.size)  # type: ignore[arg-type]  # it only uses .transport
        self.transport.registerProducer(source, True)  # type: ignore[union-attr]
        source.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.load.last = time.monotonic()

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.load.done(self)


class _Load:
    def __init__(self, port: int, connections: int, size: int) -> None:
        self.port, self.connections, self.size = port, connections, size
        self.start = self.last = 0.0
        self.echoed = 0
        self.finished = 0
        self.errors: list[str] = []

    def go(self) -> None:
        self.start = time.monotonic()
        for _ in range(self.connections):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind(("127.0.0.1", 0))
            bindPort = probe.getsockname()[1]
            probe.close()
            endpoint = UTPClientEndpoint(reactor, "127.0.0.1", self.port, 10, "127.0.0.1", bindPort)
            d = endpoint.connect(Factory.forProtocol(lambda: _Echoed(self, self.size)))
            d.addErrback(self.failed)

    def failed(self, failure: Failure) -> None:
        self.errors.append(failure.getErrorMessage())
        self.count()

    def done(self, proto: _Echoed) -> None:
        self.echoed += proto.received
        if proto.received != self.size:
            self.errors.append(f"echoed {proto.received} of {self.size} bytes")
        self.count()

    def count(self) -> None:
        self.finished += 1
        if self.finished == self.connections:
            reactor.callLater(0, reactor.stop)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    port, connections, size = (int(a) for a in args[:3])
    load = _Load(port, connections, size)
    print("READY", flush=True)
    sys.stdin.readline()
    reactor.callWhenRunning(load.go)
    reactor.callLater(120, lambda: (load.errors.append("timeout"), reactor.stop()))
    reactor.run()
    result: dict[str, Any] = {
        "start": load.start,
        "end": load.last,
        "sent": connections * size,
        "echoed": load.echoed,
    }
    if load.errors:
        result["error"] = "; ".join(sorted(set(load.errors)))
    print(json.dumps(result), flush=True)
    return 0 if not load.errors else 3


if __name__ == "__main__":
    sys.exit(main())
