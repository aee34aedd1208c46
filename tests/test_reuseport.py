"""Several processes on one UDP port (``txutp.reuseport``): the kernel's steering, the id classes, the workers.

* The BPF program runs in the kernel here: datagrams sent to a steered group of
  sockets arrive where :func:`~txutp.reuseport.steer` says, SYN ``X`` with the
  ``X + 1`` that follows it, RESETs with the connection they are about, and
  anything that is not uTP at socket 0.
* The engine opens outgoing connections only on receive ids of its class, so
  every reply and RESET a peer sends steers back to it.
* A worker adopts its socket (in this process, with the environment a
  supervisor would give it), and whole supervisors run as subprocesses: a
  program of ours with three workers (connections spread over all of them,
  outgoing connections from each, a killed worker replaced while the other
  workers' connections carry on) and ``twistd utp`` with ``reuseport=2``.
"""

from __future__ import annotations

import os
import random
import select
import socket
import sys
import textwrap

import pytest
from twisted.internet import error, reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.helpers import DATA, FIN, RESET, STATE, SYN, packet
from txutp import UTPClientEndpoint, UTPConfig, UTPServerEndpoint, acquireMultiplexer
from txutp.engine import Connected, UTPContext, decode_packet
from txutp.reuseport import (
    WORKER_ENV,
    Worker,
    currentWorker,
    openSteeredSockets,
    steer,
    steeringProgram,
    unsupportedReason,
)
from txutp.tap import Options

from .twisted_helpers import FAST, closeAllSockets, sleep, tempDir

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT steering is Linux only")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
TYPES = (DATA, FIN, STATE, RESET, SYN)


def freeUDPPort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deliveredTo(group: list[socket.socket], sender: socket.socket, datagram: bytes) -> int:
    """Send ``datagram`` to the group; return the index of the one socket that receives it."""
    sender.sendto(datagram, group[0].getsockname())
    ready, _, _ = select.select(group, [], [], 2.0)
    assert len(ready) == 1, f"{datagram[:4].hex()} arrived at {len(ready)} sockets"
    assert ready[0].recv(4096) == datagram
    return group.index(ready[0])


# ---------------------------------------------------------------------- the program, in the kernel


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_the_kernel_steers_as_steer_says(workers: int) -> None:
    group = openSteeredSockets("127.0.0.1", 0, workers)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rng = random.Random(workers)
        ids = [*range(24), 65532, 65533, 65534, 65535, *(rng.randrange(65536) for _ in range(8))]
        datagrams = [packet(first, cid, 1, 2, b"payload"[: rng.randrange(8)]) for first in TYPES for cid in ids]
        notUTP = [
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",  # a DHT query
            bytes([0x41, 0]) + b"\x00\x07" + bytes(15),  # a SYN header one byte short
            packet(0x51, 7, 0, 0),  # type 5
            packet(0x42, 7, 0, 0),  # version 2
            b"",
        ]
        for datagram in datagrams + notUTP:
            assert deliveredTo(group, sender, datagram) == steer(datagram, workers), datagram[:4].hex()
        for datagram in notUTP:
            assert steer(datagram, workers) == 0
        # The same facts without the Python twin: a SYN and the packets that follow it meet, and
        # every reply to an id of class k (a multiple of 4) reaches socket k, RESETs included.
        for x in range(0, 64):
            syn = deliveredTo(group, sender, packet(SYN, x, 1, 0))
            assert deliveredTo(group, sender, packet(DATA, (x + 1) & 0xFFFF, 2, 1)) == syn
        for block in range(2 * workers):
            x = 4 * block
            for datagram in (packet(STATE, x, 1, 1), packet(DATA, x, 1, 1), packet(FIN, x, 1, 1)):
                assert deliveredTo(group, sender, datagram) == block % workers
            assert deliveredTo(group, sender, packet(RESET, x, 1, 1)) == block % workers
            assert deliveredTo(group, sender, packet(RESET, x + 1, 1, 1)) == block % workers
    finally:
        sender.close()
        for sock in group:
            sock.close()


def test_the_group_keeps_its_order_while_the_supervisor_holds_the_sockets() -> None:
    """Why the supervisor holds every socket: a worker's copy closing changes nothing, the last copy does."""
    group = openSteeredSockets("127.0.0.1", 0, 3)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        toOne = packet(DATA, 4, 1, 1)  # steered to index 1
        assert deliveredTo(group, sender, toOne) == 1
        copy = socket.socket(fileno=os.dup(group[1].fileno()))  # a worker's descriptor
        copy.close()
        assert deliveredTo(group, sender, toOne) == 1
        group[1].close()  # the only holder: the kernel moves the last socket into index 1
        rest = [group[0], group[2]]
        assert rest[deliveredTo(rest, sender, toOne)] is group[2]
    finally:
        sender.close()
        for sock in group:
            sock.close()


def test_a_taken_port_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        plain.bind(("127.0.0.1", 0))
        with pytest.raises(error.CannotListenError):
            openSteeredSockets("127.0.0.1", plain.getsockname()[1], 2)
    # Someone else's reuseport socket would come first in the group: refused too.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        stranger.bind(("127.0.0.1", 0))
        with pytest.raises(error.CannotListenError):
            openSteeredSockets("127.0.0.1", stranger.getsockname()[1], 2)


def test_the_program_and_its_limits() -> None:
    program = steeringProgram(7)
    assert len(program) == 18
    assert (0x94, 0, 0, 7) in program  # A %= 7
    for bad in (0, -1, 1025, 2.0):
        with pytest.raises(ValueError, match="number of workers"):
            steeringProgram(bad)  # type: ignore[arg-type]
    assert unsupportedReason() is None


def test_elsewhere_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.internet.endpoints import serverFromString

    monkeypatch.setattr(sys, "platform", "darwin")
    assert "need Linux" in (unsupportedReason() or "")
    with pytest.raises(NotImplementedError, match="need Linux"):
        openSteeredSockets("127.0.0.1", 0, 2)
    with pytest.raises(ValueError, match=r"'reuseport'.*need Linux.*darwin"):
        serverFromString(None, "utp:6881:reuseport=2")


# ---------------------------------------------------------------------- the engine's id classes


def _reply(context: UTPContext, out: list[bytes], datagrams: list[tuple[bytes, object]], addr: object) -> None:
    for data, _ in datagrams:
        out.append(data)
        context.receive_datagram(data, addr, 0.0)


@pytest.mark.parametrize(("index", "count"), [(0, 1), (1, 2), (2, 3), (4, 5), (6, 7), (63, 64)])
def test_outgoing_connections_take_ids_of_their_class(index: int, count: int) -> None:
    context = UTPContext(UTPConfig(connection_id_class=(index, count)))
    ids = set()
    for i in range(300):
        conn = context.connect((f"10.0.{i // 200}.{i % 200 + 1}", 6881), 0.0)
        ids.add(conn.recv_id)
    for _ in range(200):  # one peer: the ids of its connections keep their distance, still in class
        ids.add(context.connect(("10.9.9.9", 6881), 0.0).recv_id)
    assert all(x % 4 == 0 and (x // 4) % count == index for x in ids)
    assert len(ids) >= min(300, (0x4000 // count) // 2)  # spread over the class, not a few ids
    syns = [decode_packet(data) for data, _ in context.datagrams_to_send(0.0)]
    assert {p.connection_id for p in syns} == ids
    # What the peer sends back carries the id (or the next one, in a RESET): it all steers home.
    for x in ids:
        for first, cid in ((STATE, x), (DATA, x), (FIN, x), (RESET, x), (RESET, x + 1)):
            assert steer(packet(first, cid, 1, 1), count) == index


def test_replies_and_resets_from_real_peers_steer_home() -> None:
    """Run a connection between two contexts; everything the acceptor sends, and a stranger's RESET, steer to k."""
    index, count = 2, 3
    a = UTPContext(UTPConfig(connection_id_class=(index, count), mtu_discovery=False))
    b = UTPContext(UTPConfig(mtu_discovery=False), accepting=True)
    A, B = ("10.0.0.1", 6881), ("10.0.0.2", 6881)
    conn = a.connect(B, 0.0)
    conn.send(b"x" * 20_000, 0.0)
    fromB: list[bytes] = []
    for _ in range(50):
        _reply(b, [], a.datagrams_to_send(0.0), A)
        while (item := b.next_event()) is not None:
            if isinstance(item[1], Connected):
                item[0].send(b"y" * 30_000, 0.0)
        _reply(a, fromB, b.datagrams_to_send(0.0), B)
        while a.next_event() is not None:
            pass
    assert len(fromB) > 10
    assert all(steer(d, count) == index for d in fromB)
    # A stranger (the peer after a restart) answers our DATA with a RESET carrying the DATA's id.
    stranger = UTPContext()
    conn.send(b"z" * 100, 0.0)
    for data, _ in a.datagrams_to_send(0.0):
        stranger.receive_datagram(data, A, 0.0)
    resets = [d for d, _ in stranger.datagrams_to_send(0.0)]
    assert resets and all(d[0] == RESET for d in resets)
    assert all(steer(d, count) == index for d in resets)


def test_an_id_outside_the_class_is_refused() -> None:
    context = UTPContext(UTPConfig(connection_id_class=(1, 4)))
    for bad in (5, 6, 7, 8, 16 * 4):  # not a multiple of 4, or the wrong quarter
        with pytest.raises(ValueError, match=r"outside this context's connection_id_class \(1, 4\)"):
            context.connect(("10.0.0.1", 6881), 0.0, connection_id=bad)
    assert context.connect(("10.0.0.1", 6881), 0.0, connection_id=4 * (1 + 4 * 3)).recv_id == 52
    # Incoming connections keep the peer's ids: nothing to choose.
    server = UTPContext(UTPConfig(connection_id_class=(1, 4)), accepting=True)
    server.receive_datagram(packet(SYN, 1001, 7, 0), ("10.0.0.2", 6881), 0.0)
    assert [recv for _, recv in server.connections] == [1002]


@pytest.mark.parametrize("bad", [(0, 0), (2, 2), (-1, 3), (0, 16385), (0.0, 2), [0, 2], (0, 2, 1), (True, 2)])
def test_the_class_is_validated(bad: object) -> None:
    with pytest.raises(ValueError, match="connection_id_class"):
        UTPConfig(connection_id_class=bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- endpoint strings and twistd options


def test_the_endpoint_string() -> None:
    from twisted.internet.endpoints import serverFromString

    endpoint = serverFromString(reactor, "utp:6881:interface=127.0.0.1:reuseport=3")
    assert isinstance(endpoint, UTPServerEndpoint)
    assert endpoint.reusePortGroup == ("127.0.0.1", 6881, 3)
    assert serverFromString(reactor, "utp:6881").reusePortGroup is None  # type: ignore[attr-defined]
    for bad in ("0", "-1", "x", "1025", ""):
        with pytest.raises(ValueError, match="'reuseport' must be a number of worker processes from 1 to 1024"):
            serverFromString(reactor, f"utp:6881:reuseport={bad}")


def test_twistd_options() -> None:
    options = Options()
    options.parseOptions(["--listen", "utp:6881:reuseport=2", "--listen", "utp:6882:reuseport=2", "--echo"])
    assert options["shared"] == [("", 6881, 2), ("", 6882, 2)]
    assert options.arguments[-1] == "--echo"
    for args, message in (
        (["--listen", "utp:6881:reuseport=2", "--listen", "tcp:8080"], "every --listen"),
        (["--listen", "utp:6881:reuseport=2", "--listen", "utp:6882:reuseport=3"], "same n"),
        (["--listen", "utp:6881:reuseport=2", "--metrics", "tcp:9100"], "--metrics"),
        (["--listen", "utp:6881:reuseport=zero"], "'reuseport' must be"),
    ):
        with pytest.raises(usage.UsageError, match=message):
            Options().parseOptions([*args, "--echo"])


def test_the_worker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_ENV, raising=False)
    assert currentWorker() is None
    worker = Worker(2, 3, {"[::]:6881": 3, "0.0.0.0:6882": 4}, lifeline=5)
    monkeypatch.setenv(WORKER_ENV, worker.toEnvironment())
    assert currentWorker() == worker
    for bad in ("{", '{"index": 3, "count": 3, "sockets": {}}', '{"index": 0}'):
        monkeypatch.setenv(WORKER_ENV, bad)
        with pytest.raises(ValueError, match=WORKER_ENV):
            currentWorker()


# ---------------------------------------------------------------------- a worker, in this process


@implementer(IHalfCloseableProtocol)
class Banner(Protocol):
    """Says who it is, then echoes; closes after the peer's EOF."""

    name = "here"

    def connectionMade(self) -> None:
        self.transport.write(f"{self.name}\n".encode())

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class Client(Protocol):
    """Collects what arrives: ``banner`` fires with the first line."""

    def __init__(self) -> None:
        self.received = b""
        self.banner: Deferred[str] = Deferred()
        self.lost: Deferred[object] = Deferred()
        self.waiting: tuple[bytes, Deferred[None]] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.banner.called and b"\n" in self.received:
            line, self.received = self.received.split(b"\n", 1)
            self.banner.callback(line.decode())
        if self.waiting is not None and self.received.endswith(self.waiting[0]):
            done = self.waiting[1]
            self.waiting = None
            done.callback(None)

    def expect(self, payload: bytes) -> Deferred[None]:
        """Send ``payload``; fire when it has come back."""
        done: Deferred[None] = Deferred()
        self.waiting = (payload, done)
        self.transport.write(payload)
        return done

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(reason.value)


class InProcessWorkerTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.addCleanup(closeAllSockets)
        self.group = openSteeredSockets("127.0.0.1", 0, 2)
        self.port = self.group[0].getsockname()[1]
        self.addCleanup(lambda: [sock.close() for sock in self.group])
        # What a supervisor gives worker 1 of 2 (no lifeline: nothing must stop this reactor).
        worker = Worker(1, 2, {f"127.0.0.1:{self.port}": self.group[1].fileno()})
        os.environ[WORKER_ENV] = worker.toEnvironment()
        self.addCleanup(os.environ.pop, WORKER_ENV, None)

    async def test_a_worker_serves_its_share_and_connects_out(self) -> None:
        endpoint = UTPServerEndpoint(reactor, self.port, "127.0.0.1", reusePort=2)
        listening = await endpoint.listen(Factory.forProtocol(Banner))
        mux = listening.multiplexer
        self.addCleanup(mux.closeNow)
        self.assertEqual(mux.config.connection_id_class, (1, 2))
        self.assertFalse(mux.carrier.gro)  # coalescing would mix datagrams of other workers
        self.assertEqual(listening.getHost().port, self.port)
        # A SYN steered to socket 1 is ours; one steered to socket 0 (no worker there) goes unanswered.
        client = acquireMultiplexer(reactor, "127.0.0.1", 0)
        client.hold()
        self.addCleanup(client.release)
        # One socket for two connections: without this, a GSO send could carry the first one's FIN
        # and the second one's SYN together, and the kernel steers a GSO send by its first datagram.
        client.carrier.gso = False
        served = await client.connect(("127.0.0.1", self.port), Factory.forProtocol(Client), 5, connectionId=3)
        self.assertEqual(await served.banner, "here")
        await served.expect(b"echo me")
        served.transport.loseConnection()
        with self.assertRaises(error.TimeoutError):
            await client.connect(("127.0.0.1", self.port), Factory.forProtocol(Client), 0.5, connectionId=7)
        # Outgoing connections from the shared port: their replies come back to socket 1, every time.
        peers = []

        class Recording(Banner):
            def connectionMade(self) -> None:
                peers.append(self.transport.getPeer().port)
                super().connectionMade()

        echo = await UTPServerEndpoint(reactor, 0, "127.0.0.1", FAST).listen(Factory.forProtocol(Recording))
        self.addCleanup(echo.stopListening)
        target = ("127.0.0.1", echo.getHost().port)
        for i in range(8):
            out = await mux.connect(target, Factory.forProtocol(Client), 5)
            self.assertEqual(await out.banner, "here")
            await out.expect(b"outgoing %d" % i)
            out.transport.loseConnection()
        self.assertEqual(peers, [self.port] * 8)
        # The same endpoint again (another listen on a live port) is refused, as any second listener.
        with self.assertRaises(error.CannotListenError):
            await endpoint.listen(Factory.forProtocol(Banner))

    async def test_outside_a_worker_listening_fails_clearly(self) -> None:
        os.environ.pop(WORKER_ENV)
        with self.assertRaises(error.CannotListenError) as caught:
            await UTPServerEndpoint(reactor, self.port, "127.0.0.1", reusePort=2).listen(Factory())
        self.assertIn("not a worker", str(caught.exception))
        os.environ[WORKER_ENV] = Worker(0, 3, {"127.0.0.1:9": 5}).toEnvironment()
        with self.assertRaises(error.CannotListenError) as caught:
            await UTPServerEndpoint(reactor, self.port, "127.0.0.1", reusePort=2).listen(Factory())
        self.assertIn("one of 3, with sockets for 127.0.0.1:9", str(caught.exception))


# ---------------------------------------------------------------------- whole supervisors, as subprocesses

#: A program that is a supervisor of ``workers`` copies of itself, or, run by one, a worker: each
#: says who it is on every accepted connection, then echoes, and connects out five times.
PROGRAM = textwrap.dedent(
    """
    import os, sys
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, ensureDeferred
    from twisted.internet.interfaces import IHalfCloseableProtocol
    from twisted.internet.protocol import Factory, Protocol
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from zope.interface import implementer
    from txutp import UTPServerEndpoint
    from txutp.reuseport import WorkerSupervisor, currentWorker

    port, workers, echoPort = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    worker = currentWorker()
    if worker is None:
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
        argv = [sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
        supervisor = WorkerSupervisor(reactor, argv, workers, [("127.0.0.1", port)], restartDelay=0.1)
        supervisor.setName("supervisor")
        supervisor.startService()
        reactor.addSystemEventTrigger("before", "shutdown", supervisor.stopService)
        reactor.run()
        sys.exit(0)

    @implementer(IHalfCloseableProtocol)
    class Banner(Protocol):
        def connectionMade(self):
            self.transport.write(f"worker {worker.index} pid {os.getpid()}\\n".encode())
        def dataReceived(self, data):
            self.transport.write(data)
        def readConnectionLost(self):
            self.transport.loseConnection()
        def writeConnectionLost(self):
            pass

    class Out(Protocol):
        def __init__(self):
            self.data = b""
            self.done = Deferred()
        def dataReceived(self, data):
            self.data += data
            if self.data.endswith(b"!"):
                self.transport.loseConnection()
        def connectionLost(self, reason):
            self.done.callback(self.data)

    async def main():
        endpoint = UTPServerEndpoint(reactor, port, "127.0.0.1", reusePort=workers)
        listening = await endpoint.listen(Factory.forProtocol(Banner))
        print(f"ready {worker.index}", flush=True)
        ok = 0
        for i in range(5):
            proto = await listening.multiplexer.connect(("127.0.0.1", echoPort), Factory.forProtocol(Out), 10)
            proto.transport.write(b"out %d!" % i)
            ok += (await proto.done).endswith(b"out %d!" % i)
        print(f"outgoing {ok}/5", flush=True)

    ensureDeferred(main()).addErrback(lambda f: print(f"main failed: {f.getErrorMessage()}", flush=True))
    reactor.run()
    """
)


class Output(ProcessProtocol):
    """A subprocess whose output is collected; ``waitFor`` fires once a line appears."""

    def __init__(self) -> None:
        self.output = b""
        self.waiters: list[tuple[bytes, int, Deferred[None]]] = []
        self.ended: Deferred[None] = Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data
        for waiter in list(self.waiters):
            if self.output.count(waiter[0]) >= waiter[1]:
                self.waiters.remove(waiter)
                waiter[2].callback(None)

    def waitFor(self, text: bytes, count: int = 1, timeout: float = 20.0) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        if self.output.count(text) >= count:
            done.callback(None)
            return done
        waiter = (text, count, done)
        self.waiters.append(waiter)

        def expired() -> None:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
                output = self.output.decode(errors="replace")
                done.errback(AssertionError(f"no {count} x {text!r} within {timeout} s:\n{output}"))

        call = reactor.callLater(timeout, expired)
        done.addBoth(lambda result: (call.cancel() if call.active() else None, result)[1])
        return done

    def processEnded(self, reason: object) -> None:
        for _, _, done in self.waiters:
            done.errback(AssertionError("the process ended:\n" + self.output.decode(errors="replace")))
        self.waiters = []
        self.ended.callback(None)


class SupervisorTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.addCleanup(closeAllSockets)

    def spawn(self, argv: list[str]) -> Output:
        proto = Output()
        env = dict(os.environ, PYTHONPATH=ROOT)
        env.pop(WORKER_ENV, None)
        process = reactor.spawnProcess(proto, argv[0], argv, env=env, path=ROOT)

        async def stop() -> None:
            if not proto.ended.called:
                process.signalProcess("KILL")
                await proto.ended

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return proto

    async def connect(self, port: int) -> Client:
        """One connection from its own socket (txutp's shared client socket would batch several
        connections' datagrams into one GSO send, which the kernel steers as one)."""
        endpoint = UTPClientEndpoint(reactor, "127.0.0.1", port, timeout=10, bindAddress="127.0.0.1")
        client = await endpoint.connect(Factory.forProtocol(Client))
        assert isinstance(client, Client)
        return client

    async def exchange(self, port: int, payload: bytes) -> tuple[int, int]:
        """Connect, check the echo of ``payload``; return the (worker, pid) that served it."""
        client = await self.connect(port)
        banner = await client.banner
        await client.expect(payload)
        client.transport.loseConnection()
        _, index, _, pid = banner.split()
        return int(index), int(pid)

    async def test_three_workers_share_a_port(self) -> None:
        """Connections spread over the workers; each connects out; a killed worker is replaced, the rest carry on."""
        outgoing = []

        class Recording(Banner):
            def connectionMade(self) -> None:
                outgoing.append(self.transport.getPeer().port)

        echo = await UTPServerEndpoint(reactor, 0, "127.0.0.1", FAST).listen(Factory.forProtocol(Recording))
        self.addCleanup(echo.stopListening)
        script = tempDir(self).child("program.py")
        script.setContent(PROGRAM.encode())
        port = freeUDPPort()
        supervisor = self.spawn([sys.executable, script.path, str(port), "3", str(echo.getHost().port)])
        await supervisor.waitFor(b": outgoing 5/5", 3)
        self.assertEqual(outgoing, [port] * 15)  # every worker's outgoing connections left from the shared port

        served = await gatherResults([Deferred.fromCoroutine(self.exchange(port, os.urandom(3000))) for _ in range(30)])
        pids = {index: pid for index, pid in served}
        self.assertEqual(sorted(pids), [0, 1, 2])  # every worker served some

        # Live connections on workers 0 and 2; then worker 1 dies.
        live: dict[int, Client] = {}
        for _ in range(60):
            if len(live) == 2:
                break
            client = await self.connect(port)
            index = int((await client.banner).split()[1])
            if index != 1 and index not in live:
                live[index] = client
            else:
                client.transport.loseConnection()
        self.assertEqual(sorted(live), [0, 2])
        os.kill(pids[1], 9)
        # Connections made while it is down wait in its socket for the next worker 1.
        served = await gatherResults([Deferred.fromCoroutine(self.exchange(port, os.urandom(2000))) for _ in range(15)])
        await supervisor.waitFor(b"uTP worker 1 started", 2)
        await supervisor.waitFor(b": outgoing 5/5", 4)  # the new worker 1's outgoing connections too
        while 1 not in {index for index, _ in served}:
            served.append(await self.exchange(port, b"x"))
        newPids = {index: pid for index, pid in served}
        self.assertNotEqual(newPids[1], pids[1])
        self.assertEqual((newPids.get(0, pids[0]), newPids.get(2, pids[2])), (pids[0], pids[2]))
        for client in live.values():  # untouched by worker 1's death
            await client.expect(b"still here")
            client.transport.loseConnection()
        await gatherResults([client.lost for client in live.values()])

        supervisor.transport.signalProcess("TERM")
        await supervisor.ended
        out = supervisor.output.decode()
        self.assertIn(f"uTP worker 1 (pid {pids[1]}) ended", out)
        for index in range(3):
            self.assertIn(f"uTP worker {index} (pid {newPids.get(index, pids[index])}) exited", out)
        self.assertNotIn("Traceback", out)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
            again.bind(("127.0.0.1", port))  # the supervisor closed every socket

    async def test_twistd_utp_with_reuseport(self) -> None:
        port = freeUDPPort()
        twistd = self.spawn(
            [TWISTD, "-n", "--pidfile=", "utp", "--listen", f"utp:{port}:interface=127.0.0.1:reuseport=2", "--echo"]
        )
        await twistd.waitFor(b"EchoFactory starting on", 2)
        self.assertIn(b"uTP worker 0 started", twistd.output)
        self.assertIn(b"uTP worker 1 started", twistd.output)

        async def echo(payload: bytes) -> bytes:
            client = await self.connect(port)
            await client.expect(payload)
            client.transport.loseConnection()
            return client.received

        payloads = [os.urandom(8).hex().encode() for _ in range(10)]
        self.assertEqual(await gatherResults([Deferred.fromCoroutine(echo(p)) for p in payloads]), payloads)
        twistd.transport.signalProcess("TERM")
        await twistd.ended
        self.assertIn(b"uTP worker 0 (pid", twistd.output)
        self.assertIn(b"Server Shut Down.", twistd.output)
        self.assertNotIn(b"Traceback", twistd.output)

    async def test_workers_stop_when_their_supervisor_is_gone(self) -> None:
        script = tempDir(self).child("program.py")
        script.setContent(PROGRAM.encode())
        echo = await UTPServerEndpoint(reactor, 0, "127.0.0.1", FAST).listen(Factory.forProtocol(Banner))
        self.addCleanup(echo.stopListening)
        supervisor = self.spawn([sys.executable, script.path, str(freeUDPPort()), "2", str(echo.getHost().port)])
        await supervisor.waitFor(b": ready", 2)
        lines = [line for line in supervisor.output.splitlines() if b"started (pid" in line]
        pids = [int(line.split(b"pid ")[1].split(b")")[0]) for line in lines]
        self.assertEqual(len(pids), 2)
        supervisor.transport.signalProcess("KILL")
        await supervisor.ended
        for _ in range(100):
            if not [pid for pid in pids if _alive(pid)]:
                break
            await sleep(0.05)
        self.assertEqual([pid for pid in pids if _alive(pid)], [])


def _alive(pid: int) -> bool:
    """The process runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def test_a_worker_already_stopping_when_its_supervisor_vanishes_stops_quietly() -> None:
    from twisted.internet import error
    from twisted.python.failure import Failure

    from txutp.reuseport import _Lifeline

    class StoppingReactor:
        running = True  # still running its shutdown triggers: stop() was called already
        removed: list[object] = []

        def removeReader(self, reader: object) -> None:
            self.removed.append(reader)

        def stop(self) -> None:
            raise error.ReactorNotRunning("Can't stop reactor that isn't running.")

    read, write = os.pipe()
    os.close(write)
    try:
        reactor = StoppingReactor()
        lifeline = _Lifeline(reactor, read)  # type: ignore[arg-type]
        lifeline.connectionLost(Failure(error.ConnectionDone("the supervisor exited")))  # must not raise
        assert reactor.removed == [lifeline]
    finally:
        os.close(read)
