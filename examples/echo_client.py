"""An echo client on any Twisted endpoint string: sends a message, half-closes, prints the reply.

Usage: python examples/echo_client.py [ENDPOINT] [MESSAGE]   (default: utp:127.0.0.1:9000 "hello, uTP")

IPv6 literals escape their colons: ``utp:\\:\\:1:9000``.
"""

import sys

from twisted.internet import defer, task
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from zope.interface import implementer


@implementer(IHalfCloseableProtocol)
class SendAndCollect(Protocol):
    """Writes ``message``, closes the write side (FIN) and collects everything until the server closes."""

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.reply = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.message)
        self.transport.loseWriteConnection()  # half-close: "that's all I have to say"

    def dataReceived(self, data: bytes) -> None:
        self.reply += data

    def readConnectionLost(self) -> None:  # the server's FIN
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason) -> None:
        self.done.callback(self.reply)


async def main(reactor, description: str = "utp:127.0.0.1:9000", message: str = "hello, uTP") -> None:
    endpoint = clientFromString(reactor, description)
    protocol = await connectProtocol(endpoint, SendAndCollect(message.encode()))
    reply = await protocol.done
    print(f"reply: {reply.decode()!r}")
    stats = protocol.transport.stats()  # uTP extras: RTT, congestion window, retransmissions, ...
    print(f"rtt {stats.rtt * 1000:.1f} ms, {stats.packets_sent} packets sent, {stats.retransmissions} retransmitted")


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, *sys.argv[1:])))
