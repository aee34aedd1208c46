"""A toy DHT sharing its UDP port with a uTP server, as BitTorrent clients do.

Usage: python examples/dht_shared_port.py serve [PORT]     (listens on 127.0.0.1; default 6881, 0 picks one)
       python examples/dht_shared_port.py check PORT       (a DHT ping, then a uTP echo, to that one port)

uTP datagrams go to the uTP connections; every other datagram on the port (here:
bencoded KRPC pings, as in BEP 5) goes to the ``datagramProtocol`` given to
``UTPServerEndpoint``, whose ``transport.write(data, addr)`` answers from the same port.
"""

import os
import sys

from twisted.internet import defer, task
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

from txutp import UTPClientEndpoint, UTPServerEndpoint


# ---------------------------------------------------------------- a little bencode (BEP 3)
def bencode(value) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(value.items())) + b"e"
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    raise TypeError(value)


def bdecode(data: bytes):
    def parse(i: int):
        c = data[i : i + 1]
        if c == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1 : end]), end + 1
        if c in (b"d", b"l"):
            items, i = [], i + 1
            while data[i : i + 1] != b"e":
                item, i = parse(i)
                items.append(item)
            return (dict(zip(items[::2], items[1::2])) if c == b"d" else items), i + 1
        colon = data.index(b":", i)
        start = colon + 1
        return data[start : start + int(data[i:colon])], start + int(data[i:colon])

    value, end = parse(0)
    if end != len(data):
        raise ValueError("trailing bytes")
    return value


# ---------------------------------------------------------------- the two protocols on one port
class ToyDHT(DatagramProtocol):
    """Answers KRPC ``ping`` queries with our node id; ignores anything else."""

    node_id = os.urandom(20)

    def datagramReceived(self, datagram: bytes, addr) -> None:
        try:
            message = bdecode(datagram)
            query, tid = message[b"q"], message[b"t"]
        except (ValueError, KeyError, TypeError, IndexError):
            return  # not KRPC: drop it
        if query == b"ping":
            reply = {b"t": tid, b"y": b"r", b"r": {b"id": self.node_id}}
            self.transport.write(bencode(reply), addr)  # sent from the shared port


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


async def serve(reactor, port: str = "6881") -> None:
    endpoint = UTPServerEndpoint(reactor, int(port), interface="127.0.0.1", datagramProtocol=ToyDHT())
    listening = await endpoint.listen(Factory.forProtocol(Echo))
    print(f"uTP echo and DHT on 127.0.0.1 UDP port {listening.getHost().port}", flush=True)
    await defer.Deferred()  # serve until interrupted


# ---------------------------------------------------------------- checking it from outside
class Pinger(DatagramProtocol):
    def __init__(self) -> None:
        self.answer: defer.Deferred[bytes] = defer.Deferred()

    def datagramReceived(self, datagram: bytes, addr) -> None:
        if not self.answer.called:
            self.answer.callback(datagram)


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"hello from uTP")
        self.transport.loseWriteConnection()  # Echo closes after our EOF

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason) -> None:
        self.lost.callback(self.data)


async def check(reactor, port: str) -> None:
    pinger = Pinger()
    udp = reactor.listenUDP(0, pinger, interface="127.0.0.1")
    query = {b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": os.urandom(20)}}
    udp.write(bencode(query), ("127.0.0.1", int(port)))
    reply = bdecode(await pinger.answer.addTimeout(5, reactor))
    print(f"DHT ping answered by node {reply[b'r'][b'id'].hex()}")
    await udp.stopListening()
    client = Collect()
    await UTPClientEndpoint(reactor, "127.0.0.1", int(port), timeout=5).connect(Factory.forProtocol(lambda: client))
    print(f"uTP echo on the same port: {(await client.lost).decode()!r}")


def main(reactor, mode: str = "", *args: str):
    if mode == "serve":
        return defer.ensureDeferred(serve(reactor, *args))
    if mode == "check" and args:
        return defer.ensureDeferred(check(reactor, *args))
    raise SystemExit(__doc__)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
