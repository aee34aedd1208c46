"""An echo server on any Twisted endpoint string: ``utp:`` is just another endpoint type.

Usage: python examples/echo_server.py [ENDPOINT]      (default: utp:9000:interface=127.0.0.1)

Try ``tcp:9000`` instead and nothing else changes. Stop it with Ctrl-C.
"""

import sys

from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol


class Echo(Protocol):
    """Sends every byte back. Like TCP, the connection closes after the peer's end of stream."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


async def main(reactor, description: str = "utp:9000:interface=127.0.0.1") -> None:
    endpoint = serverFromString(reactor, description)  # the "utp:" parser comes from txutp's Twisted plugin
    port = await endpoint.listen(Factory.forProtocol(Echo))
    address = port.getHost()  # an IPv4Address/IPv6Address of type 'UDP'
    print(f"echo server listening on {address.host} UDP port {address.port}", flush=True)
    await defer.Deferred()  # serve until interrupted


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, *sys.argv[1:])))
