"""Real Twisted protocols over uTP on loopback: lines, AMP, the web, TLS, bulk transfer, many connections."""

from __future__ import annotations

import datetime
import errno
import hashlib
import io
import os
import random
import socket

from twisted.internet import error, reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import clientFromString, serverFromString, wrapServerTLS
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.protocols import amp
from twisted.protocols.basic import FileSender, LineReceiver
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.server import Site
from twisted.web.static import File
from zope.interface import implementer

from txutp import UTPClientEndpoint, UTPServerEndpoint
from txutp.engine import UTPConfig

from .twisted_helpers import (
    FAST,
    Collector,
    closeAllSockets,
    echoFactory,
    ourDelayedCalls,
    sleep,
    tempDir,
    waitForAllClosed,
)


class ProtocolTestCase(TestCase):
    def setUp(self) -> None:
        self.addCleanup(closeAllSockets)

    async def listen(self, factory, config: UTPConfig | None = FAST):
        return await UTPServerEndpoint(reactor, 0, "127.0.0.1", config).listen(factory)

    async def connect(self, port, factory, config: UTPConfig | None = FAST):
        return await UTPClientEndpoint(reactor, "127.0.0.1", port.getHost().port, config=config).connect(factory)


class LineEcho(LineReceiver):
    def lineReceived(self, line: bytes) -> None:
        self.sendLine(b"echo: " + line)


class LineClient(LineReceiver):
    def connectionMade(self) -> None:
        self.lines: list[bytes] = []
        self.done: Deferred[None] = Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        if len(self.lines) == 200:
            self.done.callback(None)


class Sum(amp.Command):
    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


class Divide(amp.Command):
    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"result", amp.Float())]
    errors = {ZeroDivisionError: b"ZERO_DIVISION"}


class Calculator(amp.AMP):
    @Sum.responder
    def sum(self, a: int, b: int) -> dict[str, int]:
        return {"total": a + b}

    @Divide.responder
    def divide(self, a: int, b: int) -> dict[str, float]:
        return {"result": a / b}


@implementer(IAgentEndpointFactory)
class UTPAgentEndpoints:
    """Agent.usingEndpointFactory: every http URI is reached over uTP."""

    def endpointForURI(self, uri):
        return UTPClientEndpoint(reactor, uri.host.decode(), uri.port, config=FAST)


def _selfSignedCertificate(directory: FilePath) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certPEM = cert.public_bytes(serialization.Encoding.PEM)
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    directory.makedirs(ignoreExistingDirectory=True)
    directory.child("ca.pem").setContent(certPEM)
    return certPEM, keyPEM


class ProtocolTests(ProtocolTestCase):
    async def test_line_receiver_echo(self) -> None:
        port = await self.listen(Factory.forProtocol(LineEcho))
        client = await self.connect(port, Factory.forProtocol(LineClient))
        for i in range(200):
            client.sendLine(b"line %d" % i)
        await client.done
        self.assertEqual(client.lines, [b"echo: line %d" % i for i in range(200)])
        client.transport.loseConnection()

    async def test_amp(self) -> None:
        port = await self.listen(Factory.forProtocol(Calculator))
        client = await self.connect(port, Factory.forProtocol(amp.AMP))
        results = await gatherResults([client.callRemote(Sum, a=i, b=i * i) for i in range(100)])
        self.assertEqual([r["total"] for r in results], [i + i * i for i in range(100)])
        self.assertEqual((await client.callRemote(Divide, a=1, b=4))["result"], 0.25)
        with self.assertRaises(ZeroDivisionError):
            await client.callRemote(Divide, a=1, b=0)
        client.transport.loseConnection()

    async def test_web_with_agent(self) -> None:
        root = tempDir(self)
        body = os.urandom(300_000)
        root.child("blob.bin").setContent(body)
        root.child("index.html").setContent(b"<h1>hello over uTP</h1>")
        port = await serverFromString(reactor, "utp:0:interface=127.0.0.1").listen(Site(File(root.path)))
        agent = Agent.usingEndpointFactory(reactor, UTPAgentEndpoints())
        base = f"http://127.0.0.1:{port.getHost().port}/"
        response = await agent.request(b"GET", (base + "blob.bin").encode())
        self.assertEqual(response.code, 200)
        self.assertEqual(await readBody(response), body)
        response = await agent.request(b"GET", (base + "index.html").encode())
        self.assertEqual(await readBody(response), b"<h1>hello over uTP</h1>")
        response = await agent.request(b"GET", (base + "missing").encode())
        self.assertEqual(response.code, 404)
        await readBody(response)

    async def test_tls(self) -> None:
        from twisted.internet import ssl

        certs = tempDir(self)
        certPEM, keyPEM = _selfSignedCertificate(certs)
        serverOptions = ssl.PrivateCertificate.loadPEM(keyPEM + certPEM).options()
        port = await wrapServerTLS(serverOptions, UTPServerEndpoint(reactor, 0, "127.0.0.1", FAST)).listen(
            echoFactory()
        )
        p = port.getHost().port
        description = rf"tls:localhost:{p}:trustRoots={certs.path}:endpoint=utp\:127.0.0.1\:{p}"
        client = await clientFromString(reactor, description).connect(Factory.forProtocol(Collector))
        payload = os.urandom(200_000)
        client.transport.write(payload)
        while len(client.data) < len(payload):
            await sleep(0.01)
        self.assertEqual(bytes(client.data), payload)
        self.assertEqual(client.transport.getPeerCertificate().get_subject().commonName, "localhost")
        client.transport.loseConnection()
        await client.lost

    async def test_tls_rejects_an_untrusted_server(self) -> None:
        from twisted.internet import ssl

        certs = tempDir(self)
        certPEM, keyPEM = _selfSignedCertificate(certs)
        serverOptions = ssl.PrivateCertificate.loadPEM(keyPEM + certPEM).options()
        port = await wrapServerTLS(serverOptions, UTPServerEndpoint(reactor, 0, "127.0.0.1", FAST)).listen(
            echoFactory()
        )
        p = port.getHost().port
        other = tempDir(self)
        _selfSignedCertificate(other)  # a different CA
        client = await clientFromString(
            reactor, rf"tls:localhost:{p}:trustRoots={other.path}:endpoint=utp\:127.0.0.1\:{p}"
        ).connect(Factory.forProtocol(Collector))
        client.transport.write(b"x")
        reason = await client.lost
        self.assertNotIsInstance(reason, error.ConnectionDone)
        self.assertEqual(bytes(client.data), b"")
        self.flushLoggedErrors()


class BulkTests(ProtocolTestCase):
    async def test_20mb_file_sender_with_a_pausing_receiver(self) -> None:
        payload = random.Random(7).randbytes(20 * 1024 * 1024)
        senders: list[Protocol] = []

        class Sender(Protocol):
            def connectionMade(self) -> None:
                senders.append(self)
                d = FileSender().beginFileTransfer(io.BytesIO(payload), self.transport)
                d.addCallback(lambda _: self.transport.loseConnection())

        class Receiver(Protocol):
            def __init__(self) -> None:
                self.hash = hashlib.sha256()
                self.size = 0
                self.pauses = 0
                self.nextPause = 2 * 1024 * 1024
                self.lost: Deferred[None] = Deferred()
                self.windowSeen: list[int] = []

            def dataReceived(self, data: bytes) -> None:
                self.hash.update(data)
                self.size += len(data)
                if self.size >= self.nextPause:
                    self.nextPause += 3 * 1024 * 1024
                    self.pauses += 1
                    self.transport.pauseProducing()
                    reactor.callLater(0.15, self.resume)

            def resume(self) -> None:
                # While we were paused the sender saw our window close.
                self.windowSeen.append(senders[0].transport.stats().peer_window)
                self.transport.resumeProducing()

            def connectionLost(self, reason) -> None:
                self.reason = reason
                self.lost.callback(None)

        port = await self.listen(Factory.forProtocol(Sender))
        receiver = await self.connect(port, Factory.forProtocol(Receiver))
        await receiver.lost
        self.assertTrue(receiver.reason.check(error.ConnectionDone))
        self.assertEqual(receiver.size, len(payload))
        self.assertEqual(receiver.hash.digest(), hashlib.sha256(payload).digest())
        self.assertGreaterEqual(receiver.pauses, 5)
        self.assertEqual(len(receiver.windowSeen), receiver.pauses)
        self.assertLess(min(receiver.windowSeen), 1402)  # the advertised window closed

    async def test_500_concurrent_connections(self) -> None:
        # One host opens all 500: lift the per-host limit (its half-open share stays: SYN cookies).
        config = UTPConfig(min_rto=0.2, linger_time=0.0, backlog=1000, max_connections_per_host=500)
        port = await UTPServerEndpoint(reactor, 0, "127.0.0.1", config).listen(echoFactory())

        class Client(Collector):
            def connectionMade(self) -> None:
                super().connectionMade()
                self.payload = os.urandom(2000)

            def dataReceived(self, data: bytes) -> None:
                super().dataReceived(data)
                if len(self.data) >= len(self.payload):
                    self.transport.loseConnection()

        endpoint = UTPClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=60, config=config)
        clients = await gatherResults([endpoint.connect(Factory.forProtocol(Client)) for _ in range(500)])
        while len(port.multiplexer.connections()) < 500:  # the last confirmations are on their way
            await sleep(0.01)
        self.assertEqual(len(port.multiplexer.connections()), 500)
        # One timer per socket, whatever the number of connections.
        timers = [c for c in reactor.getDelayedCalls() if "_timerFired" in repr(c)]
        self.assertLessEqual(len(timers), 2)
        for client in clients:
            client.transport.write(client.payload)
        reasons = await gatherResults([c.lost for c in clients])
        for client, reason in zip(clients, reasons):
            self.assertIsInstance(reason, error.ConnectionDone)
            self.assertEqual(bytes(client.data), client.payload)
        self.assertEqual(len({c.transport.getHost().port for c in clients}), 1)  # one shared client socket
        while port.multiplexer.connections():  # the server sides end when their FINs are acknowledged
            await sleep(0.01)
        await port.stopListening()
        self.assertTrue(port.multiplexer.closed)
        await waitForAllClosed()
        self.assertEqual(ourDelayedCalls(), [])


class RobustnessTests(ProtocolTestCase):
    async def test_garbage_datagrams_do_not_disturb_connections(self) -> None:
        port = await self.listen(echoFactory())
        client = await self.connect(port, Factory.forProtocol(Collector))
        payload = os.urandom(3 * 1024 * 1024)
        client.transport.write(payload)
        rnd = random.Random(1)
        target = ("127.0.0.1", port.getHost().port)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        conn = client.transport.connection
        for i in range(2000):
            kind = i % 4
            if kind == 0:
                data = rnd.randbytes(rnd.randrange(0, 1500))  # noise
            elif kind == 1:
                data = bytes([0x42, 0]) + rnd.randbytes(rnd.randrange(18, 100))  # bad version
            elif kind == 2:  # well-formed uTP for random connections (answered by rate-limited RESETs)
                data = bytes([0x21, 0]) + rnd.randbytes(18)
            else:  # DATA on the live connection's id, spoofed from another port (wrong address: unknown)
                data = bytes([0x01, 0]) + conn.send_id.to_bytes(2, "big") + rnd.randbytes(16) + b"spoof"
            sock.sendto(data, target)
            if i % 200 == 0:
                await sleep(0)
        while len(client.data) < len(payload):
            await sleep(0.02)
        self.assertEqual(bytes(client.data), payload)
        stats = port.multiplexer.stats
        self.assertGreaterEqual(stats.garbage_dropped, 900)
        # Datagrams are handled in read batches, one flush per batch.
        self.assertLess(stats.batches, stats.datagrams_received / 2)
        self.assertGreaterEqual(port.multiplexer.context.stats.unknown_connection, 500)
        client.transport.loseConnection()
        reason = await client.lost
        self.assertIsInstance(reason, error.ConnectionDone)

    async def test_user_datagram_protocol_shares_the_port(self) -> None:
        received: list[tuple[bytes, object]] = []

        class DHT(DatagramProtocol):
            def datagramReceived(self, data, addr):
                received.append((data, addr))
                self.transport.write(b"pong:" + data, addr)

        dht = DHT()
        port = await UTPServerEndpoint(reactor, 0, "127.0.0.1", FAST, datagramProtocol=dht).listen(echoFactory())
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        sock.sendto(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe", ("127.0.0.1", port.getHost().port))
        client = await self.connect(port, Factory.forProtocol(Collector))
        client.transport.write(b"utp too")
        while bytes(client.data) != b"utp too":
            await sleep(0.01)
        reply = await _recv(sock)
        self.assertTrue(reply.startswith(b"pong:d1:ad2:id"))
        big = b"B" * 60_000  # datagrams are read up to 65 535 bytes
        sock.sendto(big, ("127.0.0.1", port.getHost().port))
        self.assertEqual(await _recv(sock), b"pong:" + big)
        self.assertEqual([len(data) for data, _ in received], [len(reply) - 5, 60_000])
        self.assertEqual(received[0][1], sock.getsockname())
        self.assertEqual(port.multiplexer.stats.other_protocol, 2)
        self.assertEqual(dht.transport.getHost().port, port.getHost().port)
        client.transport.loseConnection()
        await client.lost

    async def test_exception_in_a_callback_aborts_only_that_connection(self) -> None:
        class Fragile(Protocol):
            def dataReceived(self, data: bytes) -> None:
                if data.startswith(b"boom"):
                    raise RuntimeError("protocol bug")
                self.transport.write(data)

        port = await self.listen(Factory.forProtocol(Fragile))
        bad = await self.connect(port, Factory.forProtocol(Collector))
        good = await self.connect(port, Factory.forProtocol(Collector))
        bad.transport.write(b"boom")
        reason = await bad.lost
        self.assertIsInstance(reason, error.ConnectionLost)  # reset by the server
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        good.transport.write(b"fine")
        while bytes(good.data) != b"fine":
            await sleep(0.01)
        good.transport.loseConnection()
        self.assertIsInstance(await good.lost, error.ConnectionDone)

    async def test_half_close(self) -> None:
        @implementer(IHalfCloseableProtocol)
        class Upper(Protocol):
            def connectionMade(self) -> None:
                self.got = b""

            def dataReceived(self, data: bytes) -> None:
                self.got += data

            def readConnectionLost(self) -> None:
                self.transport.write(self.got.upper())  # we can still write after the peer's EOF
                self.transport.loseConnection()

            def writeConnectionLost(self) -> None:
                pass

        events: list[str] = []

        @implementer(IHalfCloseableProtocol)
        class Client(Collector):
            def readConnectionLost(self) -> None:
                events.append("read")

            def writeConnectionLost(self) -> None:
                events.append("write")
                self.transport.write(b"ignored after the half-close")

        port = await self.listen(Factory.forProtocol(Upper))
        client = await self.connect(port, Factory.forProtocol(Client))
        client.transport.write(b"hello")
        client.transport.loseWriteConnection()
        reason = await client.lost
        self.assertIsInstance(reason, error.ConnectionDone)
        self.assertEqual(bytes(client.data), b"HELLO")
        self.assertEqual(events, ["write", "read"])

    async def test_not_half_closeable_loses_the_connection_on_eof(self) -> None:
        servers: list[Collector] = []

        class Server(Collector):
            def connectionMade(self) -> None:
                servers.append(self)

        port = await self.listen(Factory.forProtocol(Server))
        client = await self.connect(port, Factory.forProtocol(Collector))
        client.transport.write(b"bye")
        client.transport.loseWriteConnection()
        while not servers:
            await sleep(0.01)
        self.assertIsInstance(await servers[0].lost, error.ConnectionDone)
        self.assertEqual(bytes(servers[0].data), b"bye")
        self.assertIsInstance(await client.lost, error.ConnectionDone)

    async def test_send_errors_count_as_loss(self) -> None:
        port = await self.listen(echoFactory())
        client = await self.connect(port, Factory.forProtocol(Collector))
        mux = client.transport._mux
        realWrite, realSendmsg = mux.carrier.sendto, mux.carrier.sendmsg
        calls = [0]

        def flaky() -> None:
            calls[0] += 1
            if calls[0] % 7 == 0:
                raise OSError(errno.ENOBUFS, "No buffer space available")
            if calls[0] % 11 == 0:
                raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

        def flakyWrite(data, addr):
            flaky()
            return realWrite(data, addr)

        def flakySendmsg(*args):
            flaky()
            return realSendmsg(*args)

        mux.carrier.sendto, mux.carrier.sendmsg = flakyWrite, flakySendmsg
        payload = os.urandom(500_000)
        client.transport.write(payload)
        while len(client.data) < len(payload):
            await sleep(0.02)
        self.assertEqual(bytes(client.data), payload)
        self.assertGreater(mux.stats.send_errors, 10)
        self.assertGreater(client.transport.stats().retransmissions, 0)
        client.transport.loseConnection()
        await client.lost

    async def test_socket_buffers_raised(self) -> None:
        port = await self.listen(echoFactory())
        stats = port.multiplexer.stats
        # Linux reports twice what it granted; the default is 212 992.
        self.assertGreater(stats.rcvbuf, 2 * 212_992)
        self.assertGreater(stats.sndbuf, 2 * 212_992)

    async def test_reactor_shutdown_style_close_loses_connections(self) -> None:
        """Closing the socket under live connections ends them with ConnectionLost and leaves nothing behind."""
        from txutp.transport import UTPConnectionReset

        servers: list[Collector] = []

        class Server(Collector):
            def connectionMade(self) -> None:
                servers.append(self)
                self.transport.write(b"hi")

        port = await self.listen(Factory.forProtocol(Server))
        client = await self.connect(port, Factory.forProtocol(Collector))
        while bytes(client.data) != b"hi":
            await sleep(0.01)
        await port.multiplexer.closeNow()
        self.assertIsInstance(await servers[0].lost, error.ConnectionLost)
        # The server's socket reset its connections on the way out: the client learns at once.
        self.assertIsInstance(await client.lost, UTPConnectionReset)
        await waitForAllClosed()
        self.assertEqual(ourDelayedCalls(), [])


def _recv(sock: socket.socket) -> Deferred[bytes]:
    """Read one datagram from a blocking socket without blocking the reactor (polling)."""
    result: Deferred[bytes] = Deferred()
    sock.setblocking(False)

    def poll(tries: int) -> None:
        try:
            data, _ = sock.recvfrom(65535)
        except BlockingIOError:
            if tries > 500:
                result.errback(AssertionError("no reply"))
            else:
                reactor.callLater(0.01, poll, tries + 1)
            return
        result.callback(data)

    poll(0)
    return result


class PathMTUTests(ProtocolTestCase):
    async def test_probes_carry_dont_fragment_and_emsgsize_reaches_the_engine(self) -> None:
        from txutp._udp import _IP_MTU_DISCOVER, _PMTUDISC_DO, _PMTUDISC_DONT
        from txutp.engine import DontFragment

        port = await self.listen(echoFactory())
        client = await self.connect(port, Factory.forProtocol(Collector))
        mux = client.transport._mux
        sock = mux.port.socket
        self.assertEqual(sock.getsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER), _PMTUDISC_DONT)
        realWrite = mux.carrier.sendto
        modes: list[tuple[bool, int]] = []
        tooBig: list[int] = []

        def recordingWrite(data, addr):
            modes.append((isinstance(data, DontFragment), sock.getsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER)))
            if isinstance(data, DontFragment) and (len(data) in tooBig or len(tooBig) < 2):
                if len(data) not in tooBig:
                    tooBig.append(len(data))
                raise OSError(errno.EMSGSIZE, "Message too long")  # every time, as the kernel does
            return realWrite(data, addr)

        mux.carrier.sendto = recordingWrite
        payload = os.urandom(2 * 1024 * 1024)
        client.transport.write(payload)
        while len(client.data) < len(payload):
            await sleep(0.02)
        self.assertEqual(bytes(client.data), payload)
        self.assertTrue(any(df for df, _ in modes), "no path MTU probe was sent")
        for df, mode in modes:
            self.assertEqual(mode, _PMTUDISC_DO if df else _PMTUDISC_DONT)
        self.assertEqual(sock.getsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER), _PMTUDISC_DONT)
        self.assertEqual(len(tooBig), 2)
        self.assertGreaterEqual(mux.stats.send_errors, 2)
        # The refused sizes became the ceiling of the search.
        self.assertLess(client.transport.stats().mtu, max(tooBig))
        client.transport.loseConnection()
        await client.lost


class TransportBehaviourTests(ProtocolTestCase):
    async def test_paused_transport_delivers_nothing_until_resumed(self) -> None:
        servers: list[Collector] = []

        class Paused(Collector):
            def connectionMade(self) -> None:
                servers.append(self)
                self.transport.pauseProducing()

        port = await self.listen(Factory.forProtocol(Paused))
        client = await self.connect(port, Factory.forProtocol(Collector))
        payload = os.urandom(3 * 1024 * 1024)  # more than the 1 MiB receive window
        client.transport.write(payload)
        client.transport.loseConnection()
        await sleep(0.4)
        self.assertEqual(bytes(servers[0].data), b"")
        self.assertFalse(client.lost.called)  # the sender is stuck on our closed window, not done
        servers[0].transport.resumeProducing()
        self.assertIsInstance(await servers[0].lost, error.ConnectionDone)
        self.assertEqual(bytes(servers[0].data), payload)
        self.assertIsInstance(await client.lost, error.ConnectionDone)

    async def test_producer_registration_rules(self) -> None:
        from twisted.internet.interfaces import IPushProducer

        @implementer(IPushProducer)
        class Producer:
            def __init__(self) -> None:
                self.calls: list[str] = []

            def pauseProducing(self) -> None:
                self.calls.append("pause")

            def resumeProducing(self) -> None:
                self.calls.append("resume")

            def stopProducing(self) -> None:
                self.calls.append("stop")

        port = await self.listen(echoFactory())
        client = await self.connect(port, Factory.forProtocol(Collector))
        first, second = Producer(), Producer()
        client.transport.registerProducer(first, True)
        with self.assertRaises(RuntimeError):
            client.transport.registerProducer(second, True)
        client.transport.loseConnection()  # an unpaused streaming producer does not hold the close
        await client.lost
        self.assertEqual(first.calls, ["stop"])
        late = Producer()
        client.transport.registerProducer(late, True)
        self.assertEqual(late.calls, ["stop"])
        client.transport.write(b"after the end")  # a no-op, no error
        client.transport.writeSequence([b"also", b"ignored"])
