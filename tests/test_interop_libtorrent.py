"""Interoperability with libtorrent-rasterbar's own uTP (PyPI ``libtorrent``), over real UDP.

A libtorrent session seeds a torrent over uTP only (TCP disabled both ways) and txutp downloads
it through ``clientFromString(reactor, "utp:...")`` with the minimal BitTorrent peer of
``tests/bittorrent_wire.py``, checking every piece's SHA-1; and the reverse, libtorrent
downloading from a minimal seeder on a txutp ``serverFromString`` endpoint. Each on
127.0.0.1 and ::1, through a lossy, reordering relay, and through one with a 20 ms RTT, 2 ms of
jitter (which reorders datagrams) and 1 % loss. libtorrent's own report
(``tests/peers/libtorrent_peer.py``) must show that its peer connection was uTP.

A missing libtorrent fails these tests (never a skip): install it with
``tests/peers/setup_peers.sh`` (``run-tests.sh`` does).

libtorrent quirks met here (``shared/reference/utp-protocol.md`` §2, §10):

* it refuses (answers the SYN with a FIN) while no torrent is active; its default add-torrent
  flags (paused, auto-managed) leave a torrent inactive until the queue's next tick, so the
  seeding peer announces READY only once the torrent is seeding (txutp reports the refusal as a
  connection opened and ended at once);
* its SACKs have any length (1, 5, 7, 19 bytes... where BEP 29 says multiples of 4) and ride on
  DATA packets too (the BitTorrent requests here); txutp takes both (seen in the lossy runs);
* its FIN numbering: libtorrent's own FIN takes no sequence number, and after our FIN it drops
  any packet numbered past it, while libutp expects FIN + 1; txutp sends each ACK that follows
  its FIN in both forms (seq_nr = FIN + 1 and seq_nr = FIN), so both close;
* it gives up on a connection once its oldest unacknowledged packet was sent 3 times
  (``utp_num_resends``), even when only the ACKs were lost: the lossy relay drops each DATA/FIN
  packet at most once (``udp_relay.py --drop-once``);
* complete, it closes its connections to seeds instead of sending HAVE for the last piece.
"""

from __future__ import annotations

import tempfile
from typing import Any

from twisted.internet import error, reactor
from twisted.internet.endpoints import clientFromString, quoteStringArgument, serverFromString
from twisted.trial.unittest import TestCase

from tests.bittorrent_wire import Downloader, Seeder, Torrent
from tests.interop_helpers import (
    JITTERY_PATH,
    LOSSY_PATH,
    OneProtocolFactory,
    PeerProcess,
    RelayPath,
    requireLibtorrent,
    within,
)
from tests.peers.stream import expected
from tests.twisted_helpers import closeAllSockets

BIG = 20_000_000
LOSSY = 4_000_000
JITTERY = 4_000_000


def hostPort(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class LibtorrentTestCase(TestCase):
    timeout = 90

    def setUp(self) -> None:
        requireLibtorrent()  # fails (never skips) when the libtorrent package is missing
        self.addCleanup(closeAllSockets)

    def peer(self, *args: str) -> PeerProcess:
        p = PeerProcess.libtorrent(*args)
        self.addCleanup(p.cleanup)
        return p

    def relay(self, host: str, targetPort: int, seed: int, path: RelayPath) -> PeerProcess:
        p = PeerProcess.relay(hostPort(host, targetPort), seed=seed, listen=hostPort(host, 0), **path)
        self.addCleanup(p.cleanup)
        return p

    def assertUTPPeers(self, report: dict[str, Any]) -> None:
        """libtorrent's report: at least one peer, and every peer connection was uTP."""
        self.assertTrue(report["peers"], report)
        for peer in report["peers"]:
            self.assertTrue(peer["utp"], f"libtorrent's peer connection is not uTP: {report}")
        for transport in report["connect_transports"]:
            self.assertEqual(transport, "uTP", report)

    # ------------------------------------------------------------------ txutp downloads

    async def downloadFromLibtorrent(self, host: str, size: int, path: RelayPath | None = None) -> None:
        seed = self.peer("seed", "--size", str(size), "--host", host)
        seedPort = await seed.ready(60)
        torrent = Torrent.fromFile(await seed.line("TORRENT "))
        self.assertEqual(torrent.length, size)
        relay = None
        port = seedPort
        if path is not None:
            relay = self.relay(host, seedPort, seed=11, path=path)
            port = await relay.ready()
        endpoint = clientFromString(reactor, f"utp:host={quoteStringArgument(host)}:port={port}:timeout=10")
        proto = await endpoint.connect(OneProtocolFactory(lambda: Downloader(torrent)))
        assert isinstance(proto, Downloader)
        self.assertEqual(proto.transport.getPeer().host, host)
        await within(proto.done, 60, "the download from libtorrent", seed)
        reason = await within(proto.lost, 15, "the end of txutp's connection to libtorrent", seed)
        report = await seed.stop()
        self.assertEqual(proto.badPieces, [])
        self.assertEqual(sorted(proto.verified), list(range(torrent.num_pieces)))  # every piece's SHA-1
        self.assertEqual(proto.received, size)
        self.assertEqual(proto.fileHash.hexdigest(), expected(size)["sha256"])
        self.assertIsNone(proto.error)
        self.assertTrue(proto.remotePeerId.startswith(b"-LT"), proto.remotePeerId)
        self.assertIsInstance(reason, error.ConnectionDone)  # our FIN, libtorrent's FIN, both acknowledged
        self.assertUTPPeers(report)
        self.assertGreaterEqual(report["uploaded"], size)
        if relay is not None:
            counts = await relay.stop()
            self.assertGreater(counts["dropped_s2c"], 0, counts)  # the data direction
            self.assertGreater(report["utp_counters"]["utp_packet_resend"], 0, report)  # libtorrent recovered them
            if path and path.get("jitter"):
                self.assertGreater(counts["overtaken"], 0, counts)  # the jitter reordered datagrams

    # ------------------------------------------------------------------ libtorrent downloads

    #: How the txutp server answers SYNs (``synCookies`` of its endpoint string).
    synCookies = "auto"

    async def uploadToLibtorrent(self, host: str, size: int, path: RelayPath | None = None) -> None:
        synCookies = self.synCookies
        with tempfile.TemporaryDirectory(prefix="txutp-lt-") as directory:
            info = await self.peer("make", "--size", str(size), "--dir", directory).result(60)
            torrent = Torrent.fromFile(info["torrent"])
            self.assertEqual(torrent.info_hash.hex(), info["info_hash"])
            factory = OneProtocolFactory(lambda: Seeder(torrent))
            description = f"utp:0:interface={quoteStringArgument(host)}:synCookies={synCookies}"
            port = await serverFromString(reactor, description).listen(factory)
            target = port.getHost().port
            relay = None
            if path is not None:
                relay = self.relay(host, target, seed=12, path=path)
                target = await relay.ready()
            download = self.peer(
                "download", "--torrent", info["torrent"], "--peer", hostPort(host, target), "--host", host,
                "--timeout", "90",
            )  # fmt: skip
            result = await download.result(100)
        seeder = await within(factory.accepted, 1, "libtorrent's connection to the txutp seeder", download)
        assert isinstance(seeder, Seeder)
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["hashfails"], 0, result)  # libtorrent checked every piece's SHA-1
        self.assertTrue(result["flushed"], result)  # and wrote every block before the file was hashed
        self.assertEqual(result["pieces"], torrent.num_pieces)
        self.assertEqual(result["sha256"], expected(size)["sha256"])
        self.assertTrue(result["utp_only"], result)
        self.assertUTPPeers(result)
        self.assertIsNone(seeder.error)
        self.assertTrue(seeder.remotePeerId.startswith(b"-LT"), seeder.remotePeerId)
        self.assertGreaterEqual(seeder.sentPayload, size)
        # libtorrent ends the connection when its session closes: its FIN (EOF here), then ours.
        reason = await within(seeder.lost, 15, "the end of libtorrent's connection", download)
        self.assertIsInstance(reason, error.ConnectionDone)
        self.assertEqual(seeder.events, ["readConnectionLost", "connectionLost ConnectionDone"])
        if synCookies == "always":  # libtorrent's first DATA returned the cookie
            self.assertEqual(port.multiplexer.context.stats.syn_cookies_accepted, 1)
        if relay is not None:
            counts = await relay.stop()
            self.assertGreater(counts["dropped_c2s"], 0, counts)  # the data direction
            self.assertGreater(seeder.stats.retransmissions, 0)  # txutp, the sender, recovered the losses
            if path and path.get("jitter"):
                self.assertGreater(counts["overtaken"], 0, counts)


class TxutpDownloadsTests(LibtorrentTestCase):
    """libtorrent seeds, txutp downloads through ``clientFromString``."""

    async def test_ipv4_20mb(self) -> None:
        await self.downloadFromLibtorrent("127.0.0.1", BIG)

    async def test_ipv6_20mb(self) -> None:
        await self.downloadFromLibtorrent("::1", BIG)

    async def test_lossy_path(self) -> None:
        await self.downloadFromLibtorrent("127.0.0.1", LOSSY, LOSSY_PATH)

    async def test_jittery_lossy_path(self) -> None:
        await self.downloadFromLibtorrent("127.0.0.1", JITTERY, JITTERY_PATH)


class LibtorrentDownloadsTests(LibtorrentTestCase):
    """A txutp seeder on a ``serverFromString`` endpoint; libtorrent downloads."""

    async def test_ipv4_20mb(self) -> None:
        await self.uploadToLibtorrent("127.0.0.1", BIG)

    async def test_ipv6_20mb(self) -> None:
        await self.uploadToLibtorrent("::1", BIG)

    async def test_lossy_path(self) -> None:
        await self.uploadToLibtorrent("127.0.0.1", LOSSY, LOSSY_PATH)

    async def test_jittery_lossy_path(self) -> None:
        await self.uploadToLibtorrent("127.0.0.1", JITTERY, JITTERY_PATH)


class LibtorrentDownloadsThroughSynCookiesTests(LibtorrentDownloadsTests):
    """The same, with every handshake stateless (``synCookies=always``)."""

    synCookies = "always"
