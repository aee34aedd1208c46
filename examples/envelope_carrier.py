"""uTP inside another protocol's datagrams, on one UDP port, with connection ids agreed by that protocol.

Usage: python examples/envelope_carrier.py serve [PORT]      (listens on 127.0.0.1; default 0, which picks one)
       python examples/envelope_carrier.py fetch PORT NAME   (asks for NAME, then reads it over uTP)

The port carries a little text protocol (``GET name``, answered ``OFFER name size id``
or ``NONE name``) and uTP, each uTP datagram sent as ``b"\\x00"`` + the datagram: an
``EnvelopeCarrier`` sorts them. As in the Portal Network, the text protocol agrees on
the uTP connection id: the server ``expect``\\ s a connection from the asker with a
fresh id and offers it; the client ``connect``\\ s with that id and reads the content.
Neither side listens for other uTP connections.
"""

import hashlib
import random
import secrets
import sys

from twisted.internet import defer, task
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

from txutp import UTPConfig, UTPMultiplexer
from txutp.carriers import EnvelopeCarrier

#: Text messages start with a letter, never with this.
TAG = b"\x00"
#: The tag makes every datagram a byte longer, and the port sends no don't-fragment probes.
CONFIG = UTPConfig(mtu_discovery=False)
CATALOGUE = {
    "hello.txt": b"hello from inside the envelopes\n",
    "random.bin": random.Random(29).randbytes(2_000_000),
}


# ---------------------------------------------------------------- the server
class Sender(Protocol):
    def __init__(self, content: bytes) -> None:
        self.content = content

    def connectionMade(self) -> None:
        self.transport.write(self.content)
        self.transport.loseConnection()


class Catalogue(DatagramProtocol):
    """Answers ``GET name`` with an offer, and expects the asker's uTP connection on the offered id."""

    def __init__(self, multiplexer: UTPMultiplexer) -> None:
        self.multiplexer = multiplexer

    def datagramReceived(self, datagram: bytes, addr) -> None:
        words = datagram.split()
        if len(words) != 2 or words[0] != b"GET":
            return
        content = CATALOGUE.get(words[1].decode(errors="replace"))
        if content is None:
            self.transport.write(b"NONE " + words[1], addr)
            return
        connectionId = secrets.randbelow(1 << 16)
        served = self.multiplexer.expect(addr, connectionId, Factory.forProtocol(lambda: Sender(content)), timeout=10)
        served.addErrback(lambda failure: print(f"no transfer to {addr}: {failure.getErrorMessage()}", flush=True))
        self.transport.write(b"OFFER %s %d %d" % (words[1], len(content), connectionId), addr)


async def serve(reactor, port: str = "0") -> None:
    multiplexer = UTPMultiplexer(reactor, CONFIG)
    udp = reactor.listenUDP(int(port), EnvelopeCarrier(multiplexer, TAG, Catalogue(multiplexer)), "127.0.0.1")
    print(f"catalogue and uTP in envelopes on 127.0.0.1 UDP port {udp.getHost().port}", flush=True)
    await defer.Deferred()  # serve until interrupted


# ---------------------------------------------------------------- the client
class Asker(DatagramProtocol):
    def __init__(self) -> None:
        self.answer: defer.Deferred[bytes] = defer.Deferred()

    def datagramReceived(self, datagram: bytes, addr) -> None:
        if not self.answer.called:
            self.answer.callback(datagram)


class Reader(Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason) -> None:
        self.done.callback(bytes(self.data))


async def fetch(reactor, port: str, name: str) -> None:
    multiplexer, asker = UTPMultiplexer(reactor, CONFIG), Asker()
    udp = reactor.listenUDP(0, EnvelopeCarrier(multiplexer, TAG, asker), "127.0.0.1")
    server = ("127.0.0.1", int(port))
    asker.transport.write(b"GET " + name.encode(), server)
    answer = (await asker.answer.addTimeout(5, reactor)).split()
    if answer[0] == b"OFFER":
        size, connectionId = int(answer[2]), int(answer[3])
        reader = Reader()
        await multiplexer.connect(server, Factory.forProtocol(lambda: reader), 5, connectionId=connectionId)
        data = await reader.done
        digest = hashlib.sha256(data).hexdigest()
        print(f"{name}: {len(data)} of {size} bytes over uTP, connection id {connectionId}, sha256 {digest}")
    else:
        print(f"{name}: not in the catalogue")
    await multiplexer.closeNow()
    await udp.stopListening()


def main(reactor, mode: str = "", *args: str):
    if mode == "serve" and len(args) <= 1:
        return defer.ensureDeferred(serve(reactor, *args))
    if mode == "fetch" and len(args) == 2:
        return defer.ensureDeferred(fetch(reactor, *args))
    raise SystemExit(__doc__)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
