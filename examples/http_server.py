"""A twisted.web site over uTP: the same Site you would serve over TCP, on a ``utp:`` endpoint.

Usage: python examples/http_server.py [ENDPOINT]     (default: utp:8080:interface=127.0.0.1)

Pages: ``/`` (a greeting) and ``/bytes?n=N`` (N pseudo-random bytes). Fetch them with
``examples/http_client.py``. Without writing any code, ``twistd -n web --listen utp:8080 --path .``
serves a directory over uTP the same way.
"""

import random
import sys

from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.web import resource, server


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return f"hello over uTP, {request.getClientAddress().host}\n".encode()


class Bytes(resource.Resource):
    isLeaf = True

    def render_GET(self, request) -> bytes:
        n = min(int(request.args.get(b"n", [b"1000"])[0]), 64 * 2**20)
        request.setHeader(b"content-type", b"application/octet-stream")
        return random.Random(n).randbytes(n)  # deterministic: the client can check it


async def main(reactor, description: str = "utp:8080:interface=127.0.0.1") -> None:
    root = resource.Resource()
    root.putChild(b"", Hello())
    root.putChild(b"bytes", Bytes())
    port = await serverFromString(reactor, description).listen(server.Site(root))
    print(f"serving http over uTP on {port.getHost().host} UDP port {port.getHost().port}", flush=True)
    await defer.Deferred()  # serve until interrupted


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, *sys.argv[1:])))
