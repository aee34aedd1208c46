"""Interop figures: txutp (through its Twisted endpoints) against utp-native (libutp) and libtorrent.

Run from the repository root, after ``tests/peers/setup_peers.sh``::

    .venv/bin/python -m bench.interop_bench [--runs 3] [--size 20000000] [--only NAME ...]
                                            [--loss P] [--json PATH]

Each row is one direction between txutp and a real peer over real UDP on
loopback, run ``--runs`` times (default 3); the table shows the median.

* utp-native (``tests/peers/utp_native_peer.js``), 127.0.0.1 only: a stream of
  ``--size`` bytes each way, with txutp as the client
  (``clientFromString("utp:host=..:port=..")``) and as the server
  (``serverFromString("utp:0:interface=127.0.0.1")``);
* libtorrent (``tests/peers/libtorrent_peer.py``, uTP only), 127.0.0.1 and ::1:
  txutp downloads a ``--size`` torrent from a libtorrent seed over BitTorrent
  (``tests/bittorrent_wire.py``), and libtorrent downloads it from a txutp seeder;
* the ``engine/`` rows: the same, 127.0.0.1 only, with the bare engine on a raw socket
  (``tests/peers/engine_peer.py``, no reactor) in place of the endpoints, which shows what
  the Twisted adapter costs.

Figures:

``MB/s``
    10^6 bytes per second. For a stream, measured at the receiver from the
    connection to the last byte (the EOF). For BitTorrent, measured at txutp from
    the first request to the last piece verified (txutp receiving: its own SHA-1
    check; libtorrent receiving: libtorrent's last HAVE, or its FIN when, complete,
    it closes the connection to us, a seed, instead of announcing the last piece).
    The median of the runs; ``runs`` lists them all.
``txutp retx``
    retransmissions of txutp's connection (``transport.stats().retransmissions``;
    ``fast`` and ``timeouts`` split them), median.
``peer retx``
    libtorrent's ``utp.utp_packet_resend`` session counter (libutp exposes none).

``--loss P`` puts ``tests/peers/udp_relay.py`` between the two, dropping and
reordering a fraction P of the datagrams each way (each DATA packet at most
once). The interop *tests* (``tests/test_interop_*.py``) check correctness;
this script only measures, and is not run by them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import clientFromString, quoteStringArgument, serverFromString

from tests.bittorrent_wire import Downloader, Seeder, Torrent
from tests.interop_helpers import (
    LIBTORRENT_VERSION,
    UTP_NATIVE_VERSION,
    OneProtocolFactory,
    PeerProcess,
    StreamProtocol,
    requireLibtorrent,
    requireUtpNative,
    within,
)
from tests.peers.stream import block, expected
from tests.twisted_helpers import closeAllSockets

Run = dict[str, Any]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.size: int = args.size
        self.loss: float = args.loss
        self.timeout: float = args.timeout
        self.peers: list[PeerProcess] = []
        self.tmp = tempfile.mkdtemp(prefix="txutp-interop-bench-")
        self._torrent: dict[str, Any] | None = None

    def peer(self, p: PeerProcess) -> PeerProcess:
        self.peers.append(p)
        return p

    async def cleanup(self) -> None:
        for p in self.peers:
            p.cleanup()
        self.peers.clear()
        await closeAllSockets()

    async def via(self, host: str, port: int, seed: int) -> int:
        """The port to use to reach host:port: itself, or a lossy relay's (``--loss``)."""
        if not self.loss:
            return port
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        listen = "[::1]:0" if ":" in host else "127.0.0.1:0"
        relay = self.peer(PeerProcess.relay(target, self.loss, self.loss, seed, listen=listen))
        return await relay.ready()

    # ------------------------------------------------------------------ utp-native

    def node(self, *args: str) -> PeerProcess:
        return self.peer(PeerProcess.node(*args, "--linger", "0.3", "--timeout", str(self.timeout)))

    @staticmethod
    def _stats(proto: Any) -> Run:
        st = proto.stats
        return {"retx": st.retransmissions, "fast": st.fast_retransmits, "timeouts": st.timeouts}

    async def txutpClientSends(self, run: int) -> Run:
        peer = self.node("listen", "0", "sink")
        port = await self.via("127.0.0.1", await peer.ready(), run)
        proto = await clientFromString(reactor, f"utp:host=127.0.0.1:port={port}").connect(
            OneProtocolFactory(lambda: StreamProtocol(send=self.size))
        )
        await within(proto.lost, self.timeout, "txutp -> utp-native", peer)
        result = await peer.result()
        assert result["bytes"] == self.size and result["stream_match"], result
        return {"mb_per_s": result["mb_per_s"], **self._stats(proto)}

    async def txutpClientReceives(self, run: int) -> Run:
        peer = self.node("listen", "0", "source", str(self.size))
        port = await self.via("127.0.0.1", await peer.ready(), run)
        proto = await clientFromString(reactor, f"utp:host=127.0.0.1:port={port}").connect(
            OneProtocolFactory(lambda: StreamProtocol(request=b"G"))  # a libutp acceptor waits for our data
        )
        await within(proto.lost, self.timeout, "utp-native -> txutp", peer)
        await peer.result()
        assert proto.received == self.size and proto.receivedIsStream()
        return {"mb_per_s": self.size / 1e6 / (proto.tEof - proto.tMade), **self._stats(proto)}

    async def txutpServer(self, **kw: Any) -> tuple[int, OneProtocolFactory]:
        factory = OneProtocolFactory(lambda: StreamProtocol(**kw))
        port = await serverFromString(reactor, "utp:0:interface=127.0.0.1").listen(factory)
        return port.getHost().port, factory

    async def txutpServerReceives(self, run: int) -> Run:
        port, factory = await self.txutpServer(endWhen="eof")
        port = await self.via("127.0.0.1", port, run)
        peer = self.node("connect", "127.0.0.1", str(port), "source", str(self.size))
        proto = await within(factory.accepted, 30, "utp-native's connection", peer)
        await within(proto.lost, self.timeout, "utp-native -> txutp server", peer)
        await peer.result()
        assert proto.received == self.size and proto.receivedIsStream()
        return {"mb_per_s": self.size / 1e6 / (proto.tEof - proto.tMade), **self._stats(proto)}

    async def txutpServerSends(self, run: int) -> Run:
        port, factory = await self.txutpServer(send=self.size)
        port = await self.via("127.0.0.1", port, run)
        peer = self.node("connect", "127.0.0.1", str(port), "sink")
        proto = await within(factory.accepted, 30, "utp-native's connection", peer)
        await within(proto.lost, self.timeout, "txutp server -> utp-native", peer)
        result = await peer.result()
        assert result["bytes"] == self.size and result["stream_match"], result
        return {"mb_per_s": result["mb_per_s"], **self._stats(proto)}

    # ------------------------------------------------------------------ libtorrent

    def libtorrent(self, *args: str) -> PeerProcess:
        return self.peer(PeerProcess.libtorrent(*args))

    async def torrent(self) -> dict[str, Any]:
        if self._torrent is None:
            maker = PeerProcess.libtorrent("make", "--size", str(self.size), "--dir", self.tmp)
            try:
                self._torrent = await maker.result(120)
            finally:
                maker.cleanup()
        return self._torrent

    async def txutpDownloads(self, run: int, host: str) -> Run:
        seed = self.libtorrent("seed", "--size", str(self.size), "--host", host, "--dir", self.tmp)
        port = await self.via(host, await seed.ready(120), run)
        torrent = Torrent.fromFile(await seed.line("TORRENT "))
        endpoint = clientFromString(reactor, f"utp:host={quoteStringArgument(host)}:port={port}")
        proto = await endpoint.connect(OneProtocolFactory(lambda: Downloader(torrent)))
        await within(proto.done, self.timeout, "download from libtorrent", seed)
        await within(proto.lost, 30, "the end of the connection to libtorrent", seed)
        report = await seed.stop()
        assert not proto.badPieces and proto.fileHash.hexdigest() == expected(self.size)["sha256"]
        assert report["peers"] and all(p["utp"] for p in report["peers"]), report
        st = proto.stats
        return {
            "mb_per_s": self.size / 1e6 / (proto.tDone - proto.tFirstRequest),
            "retx": st.retransmissions,
            "fast": st.fast_retransmits,
            "timeouts": st.timeouts,
            "peer_retx": report["utp_counters"].get("utp_packet_resend"),
        }

    async def libtorrentDownload(self, info: dict[str, Any], host: str, target: int) -> tuple[Any, dict[str, Any]]:
        """libtorrent downloads ``info``'s torrent from ``host:target``; its process and its checked result."""
        peerAddress = f"[{host}]:{target}" if ":" in host else f"{host}:{target}"
        download = self.libtorrent(
            "download", "--torrent", info["torrent"], "--peer", peerAddress, "--host", host,
            "--timeout", str(self.timeout),
        )  # fmt: skip
        result = await download.result(self.timeout + 30)
        assert result["ok"] and result["utp_only"] and result["hashfails"] == 0, result
        return download, result

    async def libtorrentDownloads(self, run: int, host: str) -> Run:
        info = await self.torrent()
        torrent = Torrent.fromFile(info["torrent"])
        factory = OneProtocolFactory(lambda: Seeder(torrent))
        port = await serverFromString(reactor, f"utp:0:interface={quoteStringArgument(host)}").listen(factory)
        target = await self.via(host, port.getHost().port, run)
        download, result = await self.libtorrentDownload(info, host, target)
        seeder = await within(factory.accepted, 1, "libtorrent's connection", download)
        await within(seeder.lost, 30, "the end of libtorrent's connection", download)
        # libtorrent sends HAVE for each piece it verified, except the last: complete, it
        # closes its connections to seeds (close_redundant_connections), which ends ours.
        end = seeder.tLastHave if seeder.haves == torrent.num_pieces else seeder.tEof
        st = seeder.stats
        return {
            "mb_per_s": self.size / 1e6 / (end - seeder.tFirstRequest),
            "retx": st.retransmissions,
            "fast": st.fast_retransmits,
            "timeouts": st.timeouts,
            "peer_retx": result["utp_counters"].get("utp_packet_resend"),
        }

    # ------------------------------------------------------------------ the bare engine

    def engine(self, *args: str) -> PeerProcess:
        return self.peer(PeerProcess.engine(*args, "--linger", "0.3", "--timeout", str(self.timeout)))

    @staticmethod
    def _engineStats(result: dict[str, Any]) -> Run:
        st = result.get("stats") or {}
        return {"retx": st.get("retransmissions"), "fast": st.get("fast_retransmits"), "timeouts": st.get("timeouts")}

    async def engineSends(self, run: int) -> Run:
        peer = self.node("listen", "0", "sink")
        port = await self.via("127.0.0.1", await peer.ready(), run)
        mine = await self.engine("connect", "127.0.0.1", str(port), "source", str(self.size)).result(self.timeout)
        result = await peer.result()
        assert mine["exit"] == 0 and result["bytes"] == self.size and result["stream_match"], (mine, result)
        return {"mb_per_s": result["mb_per_s"], **self._engineStats(mine)}

    async def engineReceives(self, run: int) -> Run:
        peer = self.node("listen", "0", "source", str(self.size))
        port = await self.via("127.0.0.1", await peer.ready(), run)
        mine = await self.engine("connect", "127.0.0.1", str(port), "sink").result(self.timeout)
        await peer.result()
        assert mine["exit"] == 0 and mine["bytes"] == self.size and mine["stream_match"], mine
        return {"mb_per_s": mine["mb_per_s"], **self._engineStats(mine)}

    async def engineDownloads(self, run: int, host: str) -> Run:
        seed = self.libtorrent("seed", "--size", str(self.size), "--host", host, "--dir", self.tmp)
        port = await self.via(host, await seed.ready(120), run)
        torrent = await seed.line("TORRENT ")
        mine = await self.engine("connect", host, str(port), "bt-download", torrent).result(self.timeout)
        report = await seed.stop()
        assert mine["exit"] == 0 and mine["pieces_verified"] == mine["pieces"] and mine["stream_match"], mine
        assert report["peers"] and all(p["utp"] for p in report["peers"]), report
        after = mine["after"]  # as the endpoint row: from the first request to the last piece verified
        return {
            "mb_per_s": self.size / 1e6 / (after["done"] - after["first_request"]),
            **self._engineStats(mine),
            "peer_retx": report["utp_counters"].get("utp_packet_resend"),
        }

    async def engineSeeds(self, run: int, host: str) -> Run:
        info = await self.torrent()
        seeder = self.engine("listen", "0", "bt-seed", info["torrent"], "--host", host)
        target = await self.via(host, await seeder.ready(), run)
        _, result = await self.libtorrentDownload(info, host, target)
        mine = await seeder.result(30)
        assert mine["exit"] == 0, mine
        # As the endpoint row: to libtorrent's last HAVE, or its FIN when it closes instead.
        after = mine["after"]
        end = after["last_have"] if mine["haves"] == mine["pieces"] else after["eof"]
        return {
            "mb_per_s": self.size / 1e6 / (end - after["first_request"]),
            **self._engineStats(mine),
            "peer_retx": result["utp_counters"].get("utp_packet_resend"),
        }


V4, V6 = "127.0.0.1", "::1"
#: (name, peer, direction, txutp's role, address, method name, extra args)
ROWS: list[tuple[str, str, str, str, str, str, tuple[Any, ...]]] = [
    ("utp-native/tx-client-send", "utp-native", "txutp -> peer", "client", V4, "txutpClientSends", ()),
    ("utp-native/tx-client-recv", "utp-native", "peer -> txutp", "client", V4, "txutpClientReceives", ()),
    ("utp-native/tx-server-send", "utp-native", "txutp -> peer", "server", V4, "txutpServerSends", ()),
    ("utp-native/tx-server-recv", "utp-native", "peer -> txutp", "server", V4, "txutpServerReceives", ()),
    ("libtorrent/tx-download-v4", "libtorrent", "peer -> txutp", "client", V4, "txutpDownloads", (V4,)),
    ("libtorrent/tx-seed-v4", "libtorrent", "txutp -> peer", "server", V4, "libtorrentDownloads", (V4,)),
    ("libtorrent/tx-download-v6", "libtorrent", "peer -> txutp", "client", V6, "txutpDownloads", (V6,)),
    ("libtorrent/tx-seed-v6", "libtorrent", "txutp -> peer", "server", V6, "libtorrentDownloads", (V6,)),
    ("engine/utp-native-send", "utp-native", "txutp -> peer", "engine client", V4, "engineSends", ()),
    ("engine/utp-native-recv", "utp-native", "peer -> txutp", "engine client", V4, "engineReceives", ()),
    ("engine/libtorrent-download-v4", "libtorrent", "peer -> txutp", "engine client", V4, "engineDownloads", (V4,)),
    ("engine/libtorrent-seed-v4", "libtorrent", "txutp -> peer", "engine server", V4, "engineSeeds", (V4,)),
]


def median(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


async def main(args: argparse.Namespace) -> int:
    rows = [r for r in ROWS if not args.only or any(o in r[0] for o in args.only)]
    if any(r[1] == "utp-native" for r in rows):
        requireUtpNative()
    if any(r[1] == "libtorrent" for r in rows):
        requireLibtorrent()
    block()  # build the interop stream before timing anything
    bench = Bench(args)
    table: list[dict[str, Any]] = []
    for name, peer, direction, role, address, method, extra in rows:
        runs: list[Run] = []
        errors: list[str] = []
        for run in range(args.runs):
            fn: Callable[..., Awaitable[Run]] = getattr(bench, method)
            t0 = time.monotonic()
            try:
                r = await fn(run + 1, *extra)
            except Exception as e:  # a failed run is recorded, not fatal
                errors.append(f"{type(e).__name__}: {str(e)[:2000]}")
                r = None
            finally:
                await bench.cleanup()
            if r is not None:
                r["wall_s"] = round(time.monotonic() - t0, 2)
                runs.append(r)
            print(f"{name} run {run + 1}: {r if r is not None else errors[-1]}", file=sys.stderr, flush=True)
        version = UTP_NATIVE_VERSION if peer == "utp-native" else LIBTORRENT_VERSION
        table.append(
            {
                "name": name,
                "peer": f"{peer} {version}",
                "direction": direction,
                "txutp": role,
                "address": address,
                "bytes": args.size,
                "loss": args.loss,
                "ok": f"{len(runs)}/{args.runs}",
                "mb_per_s": median([r["mb_per_s"] for r in runs]),
                "runs_mb_per_s": [round(r["mb_per_s"], 1) for r in runs],
                "txutp_retx": median([r["retx"] for r in runs]),
                "txutp_fast": median([r["fast"] for r in runs]),
                "txutp_timeouts": median([r["timeouts"] for r in runs]),
                "peer_retx": median([r.get("peer_retx") for r in runs]),
                "errors": errors,
                "runs": runs,
            }
        )
    shutil.rmtree(bench.tmp, ignore_errors=True)
    print_table(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": table}, indent=1, default=str))
    return 0 if all(not row["errors"] for row in table) else 1


def print_table(table: list[dict[str, Any]]) -> None:
    def fmt(v: Any, digits: int = 1) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.{digits}f}" if not v.is_integer() else str(int(v))
        return str(v)

    cols = [
        ("peer", "peer"),
        ("direction", "direction"),
        ("txutp", "txutp is"),
        ("address", "address"),
        ("ok", "ok"),
        ("mb_per_s", "MB/s (median)"),
        ("runs_mb_per_s", "runs"),
        ("txutp_retx", "txutp retx"),
        ("txutp_fast", "fast"),
        ("txutp_timeouts", "timeouts"),
        ("peer_retx", "peer retx"),
    ]
    cells = [[h for _, h in cols]] + [
        [", ".join(map(str, row[k])) if isinstance(row[k], list) else fmt(row[k]) for k, _ in cols] for row in table
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    sizes = {row["bytes"] for row in table}
    losses = {row["loss"] for row in table}
    print(f"interop figures: {', '.join(map(str, sizes))} bytes per run, loss {', '.join(map(str, losses))}")
    for i, r in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        for e in row["errors"]:
            print(f"! {row['name']}: {e.splitlines()[0]}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="runs per row (the table shows the median; default 3)")
    p.add_argument("--size", type=int, default=20_000_000, help="bytes per transfer (default 20 000 000)")
    p.add_argument("--only", nargs="*", help="only rows whose name contains one of these (utp-native, v6, seed, ...)")
    p.add_argument("--loss", type=float, default=0.0, help="drop and reorder this fraction each way (a relay)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per run before it counts as failed")
    p.add_argument("--json", help="write every run's figures here")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    code = await main(args)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    arguments = parse()
    task.react(lambda _reactor: defer.ensureDeferred(run(arguments)))
