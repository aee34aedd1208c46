"""AMP (Twisted's asynchronous messaging protocol) over uTP: remote calls on a uTP connection.

Usage: python examples/amp_sum.py server [ENDPOINT]          (default: utp:7000:interface=127.0.0.1)
       python examples/amp_sum.py client [ENDPOINT] A B      (default: utp:127.0.0.1:7000)

The server answers ``Sum`` and ``Divide`` commands; the client calls both and prints the
answers (dividing by zero comes back as a remote ZeroDivisionError).
"""

import sys

from twisted.internet import defer, task
from twisted.internet.endpoints import clientFromString, connectProtocol, serverFromString
from twisted.internet.protocol import Factory
from twisted.protocols import amp


class Sum(amp.Command):
    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


class Divide(amp.Command):
    arguments = [(b"numerator", amp.Integer()), (b"denominator", amp.Integer())]
    response = [(b"result", amp.Float())]
    errors = {ZeroDivisionError: b"ZERO_DIVISION"}


class Calculator(amp.AMP):
    @Sum.responder
    def sum(self, a: int, b: int) -> dict:
        return {"total": a + b}

    @Divide.responder
    def divide(self, numerator: int, denominator: int) -> dict:
        return {"result": numerator / denominator}


class Caller(amp.AMP):
    """A plain AMP client that tells when its connection is gone."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.lost.callback(None)


async def server(reactor, description: str = "utp:7000:interface=127.0.0.1") -> None:
    port = await serverFromString(reactor, description).listen(Factory.forProtocol(Calculator))
    print(f"AMP calculator on {port.getHost().host} UDP port {port.getHost().port}", flush=True)
    await defer.Deferred()  # serve until interrupted


async def client(reactor, description: str = "utp:127.0.0.1:7000", a: str = "2", b: str = "3") -> None:
    protocol = await connectProtocol(clientFromString(reactor, description), Caller())
    answer = await protocol.callRemote(Sum, a=int(a), b=int(b))
    print(f"{a} + {b} = {answer['total']}")
    try:
        answer = await protocol.callRemote(Divide, numerator=int(a), denominator=int(b))
        print(f"{a} / {b} = {answer['result']:g}")
    except ZeroDivisionError:
        print(f"{a} / {b}: the server says ZeroDivisionError")
    protocol.transport.loseConnection()  # a clean close (FIN), not a reset at exit
    await protocol.lost


def main(reactor, mode: str = "", *args: str):
    if mode == "server":
        return defer.ensureDeferred(server(reactor, *args))
    if mode == "client":
        return defer.ensureDeferred(client(reactor, *args))
    raise SystemExit(__doc__)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
