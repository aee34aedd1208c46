"""File transfer over uTP with a progress line: a receiver that listens, a sender that connects.

Usage: python examples/send_file.py receive PORT OUTPUT       (listens on 127.0.0.1; PORT 0 picks one)
       python examples/send_file.py send HOST PORT INPUT

The sender streams the file with ``FileSender`` (a pull producer: it reads the next
chunk only when uTP's send buffer has room) and prints bytes, rate and RTT from
``transport.stats()``. Both sides print the SHA-256 of what they moved.
"""

import hashlib
import os
import sys
import time

from twisted.internet import defer, task
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import FileSender
from zope.interface import implementer

from txutp import UTPClientEndpoint, UTPServerEndpoint


class Receiver(Protocol):
    """Writes what arrives to ``path``; done when the sender closes."""

    def __init__(self, path: str, done: defer.Deferred) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed in connectionLost
        self.hash = hashlib.sha256()
        self.size = 0
        self.done = done

    def dataReceived(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)

    def connectionLost(self, reason) -> None:
        self.file.close()
        self.done.callback(self)


@implementer(IHalfCloseableProtocol)
class Sender(Protocol):
    """Streams ``path`` with a FileSender, then half-closes and waits for the receiver to close."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.file = open(self.path, "rb")  # noqa: SIM115 - closed in connectionLost
        self.started = time.monotonic()
        sender = FileSender()
        sending = sender.beginFileTransfer(self.file, self.transport)  # registers itself as the producer
        sending.addCallback(lambda _: self.transport.loseWriteConnection())  # all sent: FIN

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason) -> None:
        self.file.close()
        self.done.callback(None)


def progress(transport, total: int, started: float) -> None:
    stats = transport.stats()
    elapsed = max(time.monotonic() - started, 1e-6)
    rtt = f"{stats.rtt * 1000:.1f} ms" if stats.rtt is not None else "-"
    sent = min(stats.bytes_sent, total)
    sys.stderr.write(
        f"\r{sent / 2**20:8.1f} / {total / 2**20:.1f} MiB  {sent / elapsed / 2**20:6.1f} MiB/s  rtt {rtt}  "
    )
    sys.stderr.flush()


async def receive(reactor, port: str, output: str) -> None:
    done: defer.Deferred[Receiver] = defer.Deferred()
    endpoint = UTPServerEndpoint(reactor, int(port), interface="127.0.0.1")
    listening = await endpoint.listen(Factory.forProtocol(lambda: Receiver(output, done)))
    print(f"receiving on 127.0.0.1 UDP port {listening.getHost().port}", flush=True)
    receiver = await done
    print(f"received {receiver.size} bytes, sha256 {receiver.hash.hexdigest()}")
    # Returning stops the reactor, which closes the socket. (``await listening.stopListening()`` would
    # wait for the closed connection's linger, up to 5 s, to re-acknowledge a late FIN.)


async def send(reactor, host: str, port: str, path: str) -> None:
    total = os.path.getsize(path)
    protocol = await UTPClientEndpoint(reactor, host, int(port), timeout=10).connect(
        Factory.forProtocol(lambda: Sender(path))
    )
    ticker = task.LoopingCall(progress, protocol.transport, total, protocol.started)
    ticker.start(0.2)
    await protocol.done
    ticker.stop()
    progress(protocol.transport, total, protocol.started)
    sys.stderr.write("\n")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    print(f"sent {total} bytes, sha256 {digest.hexdigest()}")


def main(reactor, mode: str, *args: str):
    if mode == "receive":
        return defer.ensureDeferred(receive(reactor, *args))
    if mode == "send":
        return defer.ensureDeferred(send(reactor, *args))
    raise SystemExit(__doc__)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    task.react(main, sys.argv[1:])
