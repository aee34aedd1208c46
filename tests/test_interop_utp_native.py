"""Interoperability with libutp through the npm package utp-native, over real UDP on 127.0.0.1.

txutp runs through its Twisted endpoints (``clientFromString(reactor, "utp:host=..:port=..")``,
``serverFromString(reactor, "utp:0:interface=127.0.0.1")``); utp-native runs as a subprocess
(``tests/peers/utp_native_peer.js``). A missing peer fails these tests (never a skip): install
it with ``tests/peers/setup_peers.sh`` (``run-tests.sh`` does).

utp-native is IPv4 only (its binding formats addresses with ``uv_ip4_name`` and binds ``udp4``
sockets), so there is no ``::1`` variant here; ``test_interop_libtorrent`` covers ``::1``.

libutp quirks met here (``shared/reference/utp-protocol.md`` §5.3, §6.1):

* a libutp acceptor does not send before the initiator's first DATA: whenever txutp connects
  and expects data, it writes first (one request byte ``G``);
* our ST_RESET (``abortConnection``) reaches a listening, receiving utp-native as
  ``UTP_ECONNRESET``. (A utp-native that is itself *sending* does not always surface a
  RESET to JavaScript: libutp stops the connection, but the stream may never emit
  'error' or 'close'. ``tests/peers/engine_peer.py`` shows it (``tests/peers/README.md``); these tests avoid it.)
* libutp never sends ST_RESET on a live connection. ``reset-after`` makes utp-native
  ``destroy()`` the connection: libutp sends a FIN, forgets the connection once the FIN is
  acknowledged and answers the next DATA with ST_RESET. So txutp sees ``readConnectionLost``
  and then ``connectionLost`` with ``UTPConnectionReset`` (a ``ConnectionLost``).
"""

from __future__ import annotations

from twisted.internet import error, reactor
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.trial.unittest import TestCase

from tests.interop_helpers import (
    JITTERY_PATH,
    LOSSY_PATH,
    OneProtocolFactory,
    PeerProcess,
    RelayPath,
    StreamProtocol,
    requireUtpNative,
    within,
)
from tests.peers.stream import expected
from tests.twisted_helpers import closeAllSockets, sleep
from txutp.transport import UTPConnectionReset

BIG = 20_000_000
ECHO = 1_000_000
LOSSY = 2_000_000
JITTERY = 2_000_000
CLEAN_CLOSE = "connectionLost ConnectionDone"


class UtpNativeTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        requireUtpNative()  # fails (never skips) when node or utp-native is missing
        self.addCleanup(closeAllSockets)

    def peer(self, *args: str) -> PeerProcess:
        # The peer keeps its socket open this long after the close, to answer late packets
        # (with ST_RESET after reset-after); a short linger keeps the tests fast.
        p = PeerProcess.node(*args, "--linger", "1" if "reset-after" in args else "0.3")
        self.addCleanup(p.cleanup)
        return p

    def relay(self, target_port: int, seed: int, path: RelayPath = LOSSY_PATH) -> PeerProcess:
        p = PeerProcess.relay(f"127.0.0.1:{target_port}", seed=seed, **path)
        self.addCleanup(p.cleanup)
        return p

    async def connect(self, port: int, **kw: object) -> StreamProtocol:
        """txutp connects through ``clientFromString`` to 127.0.0.1:port."""
        endpoint = clientFromString(reactor, f"utp:host=127.0.0.1:port={port}:timeout=10")
        proto = await endpoint.connect(OneProtocolFactory(lambda: StreamProtocol(**kw)))  # type: ignore[arg-type]
        assert isinstance(proto, StreamProtocol)
        return proto

    #: How a txutp server answers SYNs (``synCookies`` of its endpoint string).
    synCookies = "auto"

    async def listen(self, **kw: object) -> tuple[int, OneProtocolFactory]:
        """A txutp server through ``serverFromString``; its port and factory (``accepted`` fires)."""
        synCookies = self.synCookies
        factory = OneProtocolFactory(lambda: StreamProtocol(**kw))  # type: ignore[arg-type]
        port = await serverFromString(reactor, f"utp:0:interface=127.0.0.1:synCookies={synCookies}").listen(factory)
        if synCookies == "always":  # utp-native's first DATA returned the cookie
            stats = port.multiplexer.context.stats
            self.addCleanup(lambda: self.assertEqual((stats.syn_cookies_sent, stats.syn_cookies_accepted), (1, 1)))
        return port.getHost().port, factory

    def assertStream(self, got_bytes: int, got_sha256: str, n: int) -> None:
        self.assertEqual(got_bytes, n)
        self.assertEqual(got_sha256, expected(n)["sha256"])

    def assertPeerClosedCleanly(self, result: dict[str, object], name: str) -> None:
        """utp-native saw our FIN ('end') and its connection closed ('close') without error."""
        self.assertTrue(result["peer_eof"], f"{name}: utp-native saw no 'end': {result}")
        self.assertIsNone(result["error"], f"{name}: {result}")
        self.assertEqual(result["exit"], 0, f"{name}: {result}")


class TxutpClientTests(UtpNativeTestCase):
    """txutp connects to a utp-native server."""

    async def test_send_20mb(self) -> None:
        peer = self.peer("listen", "0", "sink")
        proto = await self.connect(await peer.ready(), send=BIG)
        await within(proto.lost, 30, "the txutp connection's end", peer)
        result = await peer.result()
        self.assertStream(result["bytes"], result["sha256"], BIG)
        self.assertPeerClosedCleanly(result, "utp-native sink")
        # We half-closed after the last byte; utp-native ended its side once it saw our FIN.
        self.assertEqual(proto.events, ["writeConnectionLost", "readConnectionLost", CLEAN_CLOSE])
        self.assertEqual(proto.received, 0)

    async def test_receive_20mb(self) -> None:
        peer = self.peer("listen", "0", "source", str(BIG))
        # The libutp acceptor sends nothing before our first DATA: request with "G", then
        # half-close at once and read the 20 MB on the half-open connection.
        proto = await self.connect(await peer.ready(), request=b"G")
        await within(proto.lost, 30, "the txutp connection's end", peer)
        result = await peer.result()
        self.assertStream(proto.received, proto.hash.hexdigest(), BIG)
        self.assertEqual(proto.events, ["writeConnectionLost", "readConnectionLost", CLEAN_CLOSE])
        self.assertPeerClosedCleanly(result, "utp-native source")
        self.assertEqual(result["bytes"], 1)  # our "G"
        self.assertEqual(result["bytes_sent"], BIG)

    async def test_echo_1mb(self) -> None:
        peer = self.peer("listen", "0", "echo")
        proto = await self.connect(await peer.ready(), send=ECHO)
        await within(proto.lost, 30, "the txutp connection's end", peer)
        result = await peer.result()
        self.assertStream(proto.received, proto.hash.hexdigest(), ECHO)
        self.assertStream(result["bytes"], result["sha256"], ECHO)
        self.assertEqual(result["bytes_sent"], ECHO)
        self.assertEqual(proto.events, ["writeConnectionLost", "readConnectionLost", CLEAN_CLOSE])
        self.assertPeerClosedCleanly(result, "utp-native echo")

    async def test_reset_by_utp_native(self) -> None:
        peer = self.peer("listen", "0", "reset-after", "100000")
        proto = await self.connect(await peer.ready(), send=BIG)
        reason = await within(proto.lost, 30, "the txutp connection's end", peer)
        result = await peer.result()
        self.assertGreaterEqual(result["bytes"], 100000)
        self.assertTrue(result["stream_match"], result)
        # libutp's destroy(): FIN first (EOF here), then RESET for our next DATA.
        self.assertEqual(proto.events, ["readConnectionLost", "connectionLost UTPConnectionReset"])
        self.assertIsInstance(reason, UTPConnectionReset)
        self.assertIsInstance(reason, error.ConnectionLost)
        self.assertLess(proto.sent, BIG)

    async def test_abort_resets_utp_native(self) -> None:
        peer = self.peer("listen", "0", "sink")
        proto = await self.connect(await peer.ready(), send=ECHO, endWhen="eof")  # no FIN of ours
        while not proto.allSent:
            await sleep(0.02)
        await sleep(0.1)
        proto.transport.abortConnection()
        reason = await within(proto.lost, 30, "the txutp connection's end", peer)
        result = await peer.result()
        self.assertIsInstance(reason, error.ConnectionAborted)
        self.assertEqual(proto.events, ["connectionLost ConnectionAborted"])
        # libutp matched our ST_RESET to the connection: utp-native reports it as an error.
        self.assertEqual(result["error"], "UTP_ECONNRESET", result)
        self.assertFalse(result["peer_eof"], result)
        self.assertTrue(result["stream_match"], result)

    async def test_send_over_a_lossy_path(self) -> None:
        peer = self.peer("listen", "0", "sink")
        relay = self.relay(await peer.ready(), seed=5)
        proto = await self.connect(await relay.ready(), send=LOSSY)
        await within(proto.lost, 30, "the txutp connection's end", peer, relay)
        result = await peer.result()
        counts = await relay.stop()
        self.assertStream(result["bytes"], result["sha256"], LOSSY)
        self.assertPeerClosedCleanly(result, "utp-native sink behind a lossy relay")
        self.assertEqual(proto.events, ["writeConnectionLost", "readConnectionLost", CLEAN_CLOSE])
        # Data went client -> server; libutp ACKs once per read batch, so few ACKs to drop.
        self.assertGreater(counts["dropped_c2s"], 0, counts)
        self.assertGreater(proto.stats.retransmissions, 0)

    async def test_send_over_a_jittery_lossy_path(self) -> None:
        peer = self.peer("listen", "0", "sink")
        relay = self.relay(await peer.ready(), seed=7, path=JITTERY_PATH)
        proto = await self.connect(await relay.ready(), send=JITTERY)
        await within(proto.lost, 30, "the txutp connection's end", peer, relay)
        result = await peer.result(15)
        counts = await relay.stop()
        self.assertStream(result["bytes"], result["sha256"], JITTERY)
        self.assertPeerClosedCleanly(result, "utp-native sink behind a jittery, lossy relay")
        self.assertEqual(proto.events, ["writeConnectionLost", "readConnectionLost", CLEAN_CLOSE])
        self.assertGreater(counts["dropped_c2s"], 0, counts)
        self.assertGreater(counts["overtaken"], 0, counts)  # the jitter reordered datagrams
        self.assertGreater(proto.stats.retransmissions, 0)


class TxutpServerTests(UtpNativeTestCase):
    """A utp-native client connects to a txutp server."""

    async def test_receive_20mb(self) -> None:
        port, factory = await self.listen(endWhen="eof")
        peer = self.peer("connect", "127.0.0.1", str(port), "source", str(BIG))
        proto = await within(factory.accepted, 15, "utp-native's connection", peer)
        await within(proto.lost, 30, "the txutp connection's end", peer)
        result = await peer.result()
        assert isinstance(proto, StreamProtocol)
        self.assertStream(proto.received, proto.hash.hexdigest(), BIG)
        # utp-native ended after its last byte; we ended on its EOF.
        self.assertEqual(proto.events, ["readConnectionLost", "writeConnectionLost", CLEAN_CLOSE])
        self.assertPeerClosedCleanly(result, "utp-native source")

    async def test_send_20mb(self) -> None:
        port, factory = await self.listen(send=BIG)
        # A connecting sink writes "G" and half-closes at once: its FIN reaches us first.
        peer = self.peer("connect", "127.0.0.1", str(port), "sink")
        proto = await within(factory.accepted, 15, "utp-native's connection", peer)
        await within(proto.lost, 30, "the txutp connection's end", peer)
        result = await peer.result()
        assert isinstance(proto, StreamProtocol)
        self.assertStream(result["bytes"], result["sha256"], BIG)
        self.assertEqual(proto.received, 1)
        self.assertEqual(proto.events, ["readConnectionLost", "writeConnectionLost", CLEAN_CLOSE])
        self.assertPeerClosedCleanly(result, "utp-native sink")

    async def test_echo_1mb(self) -> None:
        port, factory = await self.listen(echo=True, endWhen="eof")
        peer = self.peer("connect", "127.0.0.1", str(port), "pingpong", str(ECHO))
        proto = await within(factory.accepted, 15, "utp-native's connection", peer)
        await within(proto.lost, 30, "the txutp connection's end", peer)
        result = await peer.result()
        assert isinstance(proto, StreamProtocol)
        self.assertTrue(result["echo_match"], result)
        self.assertStream(result["bytes"], result["sha256"], ECHO)
        self.assertStream(proto.received, proto.hash.hexdigest(), ECHO)
        self.assertEqual(proto.sent, ECHO)
        self.assertEqual(proto.events, ["readConnectionLost", "writeConnectionLost", CLEAN_CLOSE])
        self.assertPeerClosedCleanly(result, "utp-native pingpong")

    async def test_reset_by_utp_native(self) -> None:
        port, factory = await self.listen(send=BIG)
        peer = self.peer("connect", "127.0.0.1", str(port), "reset-after", "100000")
        proto = await within(factory.accepted, 15, "utp-native's connection", peer)
        reason = await within(proto.lost, 30, "the txutp connection's end", peer)
        result = await peer.result()
        assert isinstance(proto, StreamProtocol)
        self.assertGreaterEqual(result["bytes"], 100000)
        self.assertTrue(result["stream_match"], result)
        self.assertEqual(proto.events, ["readConnectionLost", "connectionLost UTPConnectionReset"])
        self.assertIsInstance(reason, UTPConnectionReset)
        self.assertIsInstance(reason, error.ConnectionLost)

    async def test_receive_over_a_lossy_path(self) -> None:
        port, factory = await self.listen(endWhen="eof")
        relay = self.relay(port, seed=6)
        peer = self.peer("connect", "127.0.0.1", str(await relay.ready()), "source", str(LOSSY))
        proto = await within(factory.accepted, 15, "utp-native's connection", peer)
        await within(proto.lost, 30, "the txutp connection's end", peer, relay)
        result = await peer.result()
        counts = await relay.stop()
        assert isinstance(proto, StreamProtocol)
        self.assertStream(proto.received, proto.hash.hexdigest(), LOSSY)
        self.assertEqual(proto.events, ["readConnectionLost", "writeConnectionLost", CLEAN_CLOSE])
        self.assertPeerClosedCleanly(result, "utp-native source behind a lossy relay")
        self.assertGreater(counts["dropped_c2s"], 0, counts)  # the data direction

    async def test_receive_over_a_jittery_lossy_path(self) -> None:
        port, factory = await self.listen(endWhen="eof")
        relay = self.relay(port, seed=8, path=JITTERY_PATH)
        peer = self.peer("connect", "127.0.0.1", str(await relay.ready()), "source", str(JITTERY))
        proto = await within(factory.accepted, 15, "utp-native's connection", peer, relay)
        await within(proto.lost, 30, "the txutp connection's end", peer, relay)
        result = await peer.result(15)
        counts = await relay.stop()
        assert isinstance(proto, StreamProtocol)
        self.assertStream(proto.received, proto.hash.hexdigest(), JITTERY)
        self.assertEqual(proto.events, ["readConnectionLost", "writeConnectionLost", CLEAN_CLOSE])
        self.assertPeerClosedCleanly(result, "utp-native source behind a jittery, lossy relay")
        self.assertGreater(counts["dropped_c2s"], 0, counts)  # the data direction
        self.assertGreater(counts["overtaken"], 0, counts)


class TxutpServerThroughSynCookiesTests(TxutpServerTests):
    """The same, with every handshake stateless (``synCookies=always``)."""

    synCookies = "always"
