"""Running real uTP peers (utp-native, libtorrent) as subprocesses against txutp's endpoints.

Used by ``tests/test_interop_*.py`` and ``bench/interop_bench.py`` (which also runs the bare
engine as a peer, ``tests/peers/engine_peer.py``, and the UDP relay). The peers
are installed by ``tests/peers/setup_peers.sh`` (``run-tests.sh`` calls it);
a missing peer makes :func:`requireUtpNative` / :func:`requireLibtorrent`
raise ``AssertionError``, so the tests *fail* (they are never skipped).

Peer processes write stdout and stderr to temporary files (no pipe can fill
up and stall them) that are polled from the reactor, so the reactor keeps
running while we wait for ``READY <port>`` or for the final JSON line.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, TypedDict

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.peers.stream import expected, stream_bytes

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "tests" / "peers"
NODE_PEER = PEERS / "utp_native_peer.js"
NODE_MODULES = PEERS / "node" / "node_modules"
LT_PEER = PEERS / "libtorrent_peer.py"
RELAY = PEERS / "udp_relay.py"
#: The bare engine on a raw socket, run as a module (``python -m``) from ROOT.
ENGINE_PEER = "tests.peers.engine_peer"

UTP_NATIVE_VERSION = "2.5.3"
LIBTORRENT_VERSION = "2.1.1"
SETUP_HINT = "install the peers with `tests/peers/setup_peers.sh .venv/bin/python` (./run-tests.sh does it)"
CHUNK = 65536


class RelayPath(TypedDict, total=False):
    """A path's impairments, as :meth:`PeerProcess.relay` (``udp_relay.py``) takes them."""

    drop: float
    reorder: float
    delay: float
    jitter: float


#: Random loss and reordering, no delay: the loss tests.
LOSSY_PATH: RelayPath = {"drop": 0.03, "reorder": 0.03}
#: A 20 ms RTT with 2 ms of jitter each way (datagrams closer together than that overtake each other), 1 % loss.
JITTERY_PATH: RelayPath = {"drop": 0.01, "delay": 0.01, "jitter": 0.002}


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


async def within(d: Deferred[Any], seconds: float, what: str, *peers: PeerProcess) -> Any:
    """``await d``, failing with ``AssertionError`` (naming ``what``, with the peers' output) after ``seconds``.

    ``d`` is polled, not cancelled: it may still fire later without harm.
    """
    deadline = reactor.seconds() + seconds
    while not d.called:
        if reactor.seconds() > deadline:
            raise AssertionError(f"{what}: nothing after {seconds} s\n" + "\n".join(p.describe() for p in peers))
        await sleep(0.02)
    return await d


# ---------------------------------------------------------------------- are the peers there?


@functools.cache
def utpNativeProblem(node: str = "node", nodeModules: str = str(NODE_MODULES)) -> str | None:
    """Why the utp-native peer cannot run (``None``: it can)."""
    script = (
        "const p = require(process.argv[1] + '/utp-native/package.json');"
        "const u = require(process.argv[1] + '/utp-native');"
        "if (typeof u.createServer !== 'function') throw new Error('utp-native does not load');"
        "console.log(p.version)"
    )
    try:
        out = subprocess.run([node, "-e", script, nodeModules], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return f"node is not installed ({node!r} not found; it runs the utp-native peer)"
    except subprocess.TimeoutExpired:
        return "node did not answer within 30 s"
    if out.returncode != 0:
        return f"utp-native is not installed under {nodeModules} or does not load: {out.stderr.strip()[-500:]}"
    version = out.stdout.strip()
    if version != UTP_NATIVE_VERSION:
        return f"utp-native {version} is installed, {UTP_NATIVE_VERSION} is the tested version"
    return None


@functools.cache
def libtorrentProblem(python: tuple[str, ...] = (sys.executable,)) -> str | None:
    """Why the libtorrent peer cannot run with the interpreter ``python`` (``None``: it can)."""
    try:
        out = subprocess.run(
            [*python, "-c", "import libtorrent; print(libtorrent.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except FileNotFoundError:
        return f"python interpreter {python[0]!r} not found"
    except subprocess.TimeoutExpired:
        return "importing libtorrent took more than 60 s"
    if out.returncode != 0:
        return f"the PyPI package libtorrent does not import in {' '.join(python)}: {out.stderr.strip()[-500:]}"
    version = out.stdout.strip()
    if not version.startswith(LIBTORRENT_VERSION + "."):
        return f"libtorrent {version} is installed, {LIBTORRENT_VERSION} is the tested version"
    return None


def requireUtpNative(**kw: str) -> None:
    """Raise ``AssertionError`` (a test failure, never a skip) unless node and utp-native work."""
    problem = utpNativeProblem(**kw)
    if problem is not None:
        raise AssertionError(f"interop peer utp-native {UTP_NATIVE_VERSION} unavailable: {problem}; {SETUP_HINT}")


def requireLibtorrent(python: tuple[str, ...] = (sys.executable,)) -> None:
    """Raise ``AssertionError`` (a test failure, never a skip) unless libtorrent imports."""
    problem = libtorrentProblem(python)
    if problem is not None:
        raise AssertionError(f"interop peer libtorrent {LIBTORRENT_VERSION} unavailable: {problem}; {SETUP_HINT}")


# ---------------------------------------------------------------------- peer processes


class PeerProcess:
    """A peer subprocess; stdout/stderr go to files polled from the reactor."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self.argv = argv
        self._dir = tempfile.mkdtemp(prefix="txutp-peer-")
        self._outPath = os.path.join(self._dir, "stdout")
        self._errPath = os.path.join(self._dir, "stderr")
        with open(self._outPath, "wb") as out, open(self._errPath, "wb") as err:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=ROOT)

    @classmethod
    def node(cls, *args: str) -> PeerProcess:
        return cls(["node", str(NODE_PEER), *args], "utp-native " + " ".join(args[:3]))

    @classmethod
    def libtorrent(cls, *args: str) -> PeerProcess:
        return cls([sys.executable, str(LT_PEER), *args], "libtorrent " + args[0])

    @classmethod
    def engine(cls, *args: str) -> PeerProcess:
        """``tests/peers/engine_peer.py``: txutp's bare engine on a raw UDP socket, no reactor."""
        return cls([sys.executable, "-m", ENGINE_PEER, *args], "engine peer " + " ".join(args[:3]))

    @classmethod
    def relay(
        cls,
        target: str,
        drop: float = 0.0,
        reorder: float = 0.0,
        seed: int = 1,
        listen: str = "127.0.0.1:0",
        dropOnce: bool = True,
        log: str | None = None,
        delay: float = 0.0,
        jitter: float = 0.0,
    ) -> PeerProcess:
        """``udp_relay.py``; by default a DATA/FIN packet is dropped at most once (see its ``--drop-once``).

        ``delay`` and ``jitter`` (seconds, one way) are its ``--delay`` and ``--jitter``.
        """
        argv = [sys.executable, str(RELAY), "--target", target, "--listen", listen]
        argv += ["--drop", str(drop), "--reorder", str(reorder), "--seed", str(seed)]
        argv += ["--delay", str(delay), "--jitter", str(jitter)]
        if dropOnce:
            argv.append("--drop-once")
        if log:
            argv += ["--log", log]
        return cls(argv, "udp relay")

    def stdout(self) -> str:
        with open(self._outPath, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stderr(self) -> str:
        with open(self._errPath, encoding="utf-8", errors="replace") as f:
            return f.read()

    def describe(self) -> str:
        return (
            f"{self.name} (exit {self.process.poll()})\n--- stdout:\n{self.stdout()[-3000:]}"
            f"\n--- stderr:\n{self.stderr()[-4000:]}"
        )

    async def line(self, prefix: str, timeout: float = 30.0) -> str:
        """The first stdout line starting with ``prefix`` (its rest), waiting for it."""
        deadline = reactor.seconds() + timeout
        while True:
            exited = self.process.poll() is not None
            for line in self.stdout().splitlines():
                if line.startswith(prefix):
                    return line[len(prefix) :].strip()
            if exited:
                raise AssertionError(f"{self.name} exited before printing {prefix!r}: {self.describe()}")
            if reactor.seconds() > deadline:
                raise AssertionError(f"no {prefix!r} from {self.name} within {timeout} s: {self.describe()}")
            await sleep(0.02)

    async def ready(self, timeout: float = 30.0) -> int:
        """The port of ``READY <port>``."""
        return int(await self.line("READY ", timeout))

    async def exited(self, timeout: float) -> int:
        deadline = reactor.seconds() + timeout
        while self.process.poll() is None:
            if reactor.seconds() > deadline:
                self.kill()
                raise AssertionError(f"{self.name} still running after {timeout} s: {self.describe()}")
            await sleep(0.02)
        return self.process.returncode

    async def result(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the process to exit; its last JSON stdout line, with ``exit`` (the exit status)."""
        code = await self.exited(timeout)
        for line in reversed(self.stdout().splitlines()):
            if line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                result["exit"] = code
                return result
        raise AssertionError(f"{self.name} printed no JSON result: {self.describe()}")

    async def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM (libtorrent seed, relay: they print their JSON summary then), then :meth:`result`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.result(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)

    def cleanup(self) -> None:
        self.kill()
        for path in (self._outPath, self._errPath):
            with contextlib.suppress(OSError):
                os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)


# ---------------------------------------------------------------------- a stream protocol


@implementer(IPushProducer)
class StreamSender:
    """Writes the first ``total`` bytes of the interop stream as a streaming producer."""

    def __init__(self, protocol: StreamProtocol, total: int) -> None:
        self.protocol = protocol
        self.total = total
        self.offset = 0
        self.paused = False
        self.stopped = False

    def start(self) -> None:
        self.protocol.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        transport = self.protocol.transport
        while not self.paused and not self.stopped and self.offset < self.total:
            n = min(CHUNK, self.total - self.offset)
            data = stream_bytes(self.offset, n)
            self.offset += n
            transport.write(data)  # type: ignore[union-attr]
        if self.offset >= self.total and not self.stopped:
            self.stopped = True
            transport.unregisterProducer()  # type: ignore[union-attr]
            self.protocol.sentAll()

    def stopProducing(self) -> None:
        self.stopped = True


@implementer(IHalfCloseableProtocol)
class StreamProtocol(Protocol):
    """One side of an interop run over a txutp transport, as ``utp_native_peer.js`` is the other.

    * ``request``: bytes written first (``b"G"``: a libutp acceptor cannot send before
      the initiator's first DATA);
    * ``send``: then this many bytes of the interop stream;
    * ``echo``: write back everything received;
    * ``endWhen``: ``"sent"`` ends the write side (``loseWriteConnection``) once all is
      written; ``"eof"`` once all is written *and* the peer ended (echo, sink server).

    It never calls ``loseConnection``: the connection closes by itself once both
    sides ended. ``events`` records ``readConnectionLost``, ``writeConnectionLost``
    and ``connectionLost <reason class>`` in order; ``lost`` fires with the reason's exception.
    """

    def __init__(self, *, request: bytes = b"", send: int = 0, echo: bool = False, endWhen: str = "sent") -> None:
        assert endWhen in ("sent", "eof")
        self.request = request
        self.send = send
        self.echo = echo
        self.endWhen = endWhen
        self.received = 0
        self.hash = hashlib.sha256()
        self.sentHash = hashlib.sha256()
        self.sent = 0
        self.events: list[str] = []
        self.allSent = False
        self.peerEnded = False
        self.ended = False
        self.reason: Failure | None = None
        self.stats: Any = None
        self.made: Deferred[None] = Deferred()
        self.lost: Deferred[BaseException] = Deferred()
        self.tMade = self.tEof = self.tLost = self.tSent = 0.0

    def connectionMade(self) -> None:
        self.tMade = reactor.seconds()
        if self.request:
            self.transport.write(self.request)  # type: ignore[union-attr]
        if self.send:
            StreamSender(self, self.send).start()
        else:
            self.sentAll()
        self.made.callback(None)

    def sentAll(self) -> None:
        self.allSent = True
        self.tSent = reactor.seconds()
        self.sent = self.send
        self._maybeEnd()

    def _maybeEnd(self) -> None:
        if self.ended or not self.allSent or (self.endWhen == "eof" and not self.peerEnded):
            return
        self.ended = True
        self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.hash.update(data)
        if self.echo:
            self.transport.write(data)  # type: ignore[union-attr]
            self.sent += len(data)

    def readConnectionLost(self) -> None:
        self.tEof = reactor.seconds()
        self.events.append("readConnectionLost")
        self.peerEnded = True
        self._maybeEnd()

    def writeConnectionLost(self) -> None:
        self.events.append("writeConnectionLost")

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.tLost = reactor.seconds()
        self.reason = reason
        self.events.append("connectionLost " + type(reason.value).__name__)
        with contextlib.suppress(Exception):
            self.stats = self.transport.stats()  # type: ignore[union-attr]
        self.lost.callback(reason.value)  # the exception: a Failure would errback the Deferred

    def receivedIsStream(self) -> bool:
        """Whether what arrived is the first ``received`` bytes of the interop stream."""
        return self.hash.hexdigest() == expected(self.received)["sha256"]


class OneProtocolFactory(Factory):
    """Builds protocols with ``make()``; ``built`` lists them, ``accepted`` fires with the first."""

    def __init__(self, make: Any) -> None:
        self.make = make
        self.built: list[Protocol] = []
        self.accepted: Deferred[Protocol] = Deferred()

    def buildProtocol(self, addr: Any) -> Protocol:
        proto: Protocol = self.make()
        proto.factory = self
        self.built.append(proto)
        if len(self.built) == 1:
            self.accepted.callback(proto)
        return proto
