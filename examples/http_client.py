"""An HTTP client over uTP: twisted.web's ``Agent`` with an endpoint factory that dials uTP.

Usage: python examples/http_client.py URL      (e.g. http://127.0.0.1:8080/bytes?n=1000000)

The URL's host and port name the uTP (UDP) peer. Prints the status, the size and the
SHA-256 of the body, and the rate.
"""

import hashlib
import sys
import time
import warnings

from twisted.internet import defer, task
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from txutp import UTPClientEndpoint

# Twisted warns on every readBody (over TCP too) that its transport proxy lacks abortConnection: noise.
warnings.filterwarnings("ignore", "Using readBody", DeprecationWarning)


@implementer(IAgentEndpointFactory)
class OverUTP:
    """Gives Agent a uTP endpoint for every URL (for https:// wrap it with wrapClientTLS)."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor

    def endpointForURI(self, uri):
        return UTPClientEndpoint(self.reactor, uri.host.decode(), uri.port, timeout=10)


async def main(reactor, url: str = "http://127.0.0.1:8080/") -> None:
    agent = Agent.usingEndpointFactory(reactor, OverUTP(reactor))
    started = time.monotonic()
    response = await agent.request(b"GET", url.encode())
    body = await readBody(response)
    elapsed = time.monotonic() - started
    print(f"{response.code} {response.phrase.decode()}, {len(body)} bytes in {elapsed:.2f} s")
    print(f"sha256 {hashlib.sha256(body).hexdigest()}")
    if len(body) < 200:
        print(body.decode(errors="replace"), end="")


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, *sys.argv[1:])))
