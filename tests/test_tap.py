"""The twistd plugins as subprocesses: ``twistd -n utp`` forwarding, and ``twistd -n web --listen utp:...``."""

from __future__ import annotations

import os
import socket
import sys

from twisted.internet import error, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from txutp import UTPClientEndpoint

from .twisted_helpers import closeAllSockets, sleep, tempDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def freePort(kind: int) -> int:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
    finally:
        sock.close()


class Twistd(ProcessProtocol):
    """A twistd subprocess; ``ready`` fires once its log shows ``marker``."""

    def __init__(self, marker: bytes) -> None:
        self.output = b""
        self.marker = marker
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and self.marker in self.output:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: object) -> None:
        if not self.ready.called:
            self.ready.errback(AssertionError("twistd exited early:\n" + self.output.decode(errors="replace")))
        self.ended.callback(None)


@implementer(IHalfCloseableProtocol)
class HalfCloseEcho(Protocol):
    """Echoes; after the peer's EOF, closes once everything is written back."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class Exchange(Protocol):
    """Sends ``payload``, half-closes, and collects the reply until the connection ends."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = bytearray()
        self.readClosed = False
        self.done: Deferred[object] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.readClosed = True
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason) -> None:
        self.done.callback(reason.value)


class TwistdTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.addCleanup(closeAllSockets)

    async def start(self, *args: str, marker: bytes = b"starting on", stopSignal: str = "KILL") -> Twistd:
        proto = Twistd(marker)
        env = dict(os.environ, PYTHONPATH=ROOT)
        process = reactor.spawnProcess(proto, TWISTD, [TWISTD, "-n", "--pidfile=", *args], env=env, path=ROOT)

        async def stop() -> None:
            if not proto.ended.called:
                process.signalProcess(stopSignal)
            await proto.ended

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        await proto.ready
        return proto

    async def test_forwarding_both_ways(self) -> None:
        """TCP client -> twistd utp (tcp->utp) -> twistd utp (utp->tcp) -> TCP echo, and a uTP client direct."""
        echo = reactor.listenTCP(0, Factory.forProtocol(HalfCloseEcho), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        utpPort = freePort(socket.SOCK_DGRAM)
        tcpPort = freePort(socket.SOCK_STREAM)
        exposing = await self.start(
            "utp", "--listen", f"utp:{utpPort}:interface=127.0.0.1", "--connect", f"tcp:127.0.0.1:{echo.getHost().port}"
        )
        reaching = await self.start(
            "utp", "--listen", f"tcp:{tcpPort}:interface=127.0.0.1", "--connect", f"utp:host=127.0.0.1:port={utpPort}"
        )
        payload = os.urandom(2 * 1024 * 1024)
        # A uTP client straight to the uTP side.
        direct = Exchange(payload)
        await connectProtocol(UTPClientEndpoint(reactor, "127.0.0.1", utpPort, timeout=10), direct)
        reason = await direct.done
        self.assertEqual(len(direct.received), len(payload))
        self.assertEqual(bytes(direct.received), payload)
        self.assertTrue(direct.readClosed)  # the echo server's close came back as a half-close
        self.assertIsInstance(reason, error.ConnectionDone)
        # A plain TCP client through both forwarders.
        chained = Exchange(payload)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", tcpPort), chained)
        reason = await chained.done
        self.assertEqual(bytes(chained.received), payload)
        self.assertTrue(chained.readClosed)
        self.assertIsInstance(reason, error.ConnectionDone)
        self.assertIn(b"EchoFactory" if False else b"ForwardingFactory starting on", exposing.output)
        self.assertIn(b"ForwardingFactory starting on", reaching.output)

    async def test_echo(self) -> None:
        port = freePort(socket.SOCK_DGRAM)
        twistd = await self.start("utp", "--listen", f"utp:{port}:interface=127.0.0.1", "--echo", stopSignal="TERM")
        exchange = Exchange(b"ping" * 1000)
        await connectProtocol(UTPClientEndpoint(reactor, "127.0.0.1", port, timeout=10), exchange)
        await exchange.done
        self.assertEqual(bytes(exchange.received), b"ping" * 1000)
        # A clean shutdown on SIGTERM (after the closed connection's linger).
        twistd.transport.signalProcess("TERM")
        await twistd.ended
        self.assertIn(b"Server Shut Down.", twistd.output)
        self.assertNotIn(b"Traceback", twistd.output)

    async def test_metrics_for_prometheus(self) -> None:
        port = freePort(socket.SOCK_DGRAM)
        metricsPort = freePort(socket.SOCK_STREAM)
        await self.start(
            "utp",
            "--listen",
            f"utp:{port}:interface=127.0.0.1",
            "--echo",
            "--metrics",
            f"tcp:{metricsPort}:interface=127.0.0.1",
        )
        exchange = Exchange(b"ping" * 1000)
        await connectProtocol(UTPClientEndpoint(reactor, "127.0.0.1", port, timeout=10), exchange)
        await exchange.done
        response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{metricsPort}/metrics".encode())
        text = (await readBody(response)).decode()
        self.assertEqual(response.code, 200)
        samples = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        self.assertGreaterEqual(samples["txutp_syns_accepted_total"], 1)
        self.assertGreaterEqual(samples["txutp_bytes_received_total"], 4000)  # the echoed payload, at least
        self.assertEqual(samples["txutp_listening"], 1)
        self.assertIn("txutp_connections", samples)  # a gauge: no _total

    async def test_web_over_utp(self) -> None:
        root = tempDir(self)
        body = os.urandom(100_000)
        root.child("file.bin").setContent(body)
        port = freePort(socket.SOCK_DGRAM)
        await self.start(
            "web", "--listen", f"utp:{port}:interface=127.0.0.1", "--path", root.path, marker=b"Site starting on"
        )

        @implementer(IAgentEndpointFactory)
        class OverUTP:
            def endpointForURI(self, uri):
                return UTPClientEndpoint(reactor, uri.host.decode(), uri.port, timeout=10)

        agent = Agent.usingEndpointFactory(reactor, OverUTP())
        response = await agent.request(b"GET", f"http://127.0.0.1:{port}/file.bin".encode())
        self.assertEqual(response.code, 200)
        self.assertEqual(await readBody(response), body)
        await sleep(0)

    async def test_bad_options(self) -> None:
        proto = Twistd(b"never")
        env = dict(os.environ, PYTHONPATH=ROOT)
        reactor.spawnProcess(proto, TWISTD, [TWISTD, "-n", "--pidfile=", "utp", "--echo"], env=env, path=ROOT)
        with self.assertRaises(AssertionError):
            await proto.ready
        await proto.ended
        self.assertIn(b"--listen", proto.output)
