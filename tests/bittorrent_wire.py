"""Only what the interop tests need of BitTorrent (BEP 3): metainfo, and a downloader and a seeder peer.

Both peers are plain Twisted protocols, so they run over any stream transport;
the tests run them over txutp's endpoints against libtorrent. No extensions
are announced (the reserved bytes are zero), so libtorrent speaks only the
core messages to them: choke, unchoke, interested, have, bitfield, request,
piece, cancel (and keep-alives).
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.peers.stream import stream_bytes

PSTR = b"\x13BitTorrent protocol"
BLOCK = 16 * 1024
CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED, HAVE, BITFIELD, REQUEST, PIECE, CANCEL = range(9)


# ---------------------------------------------------------------------- metainfo


def bdecode(data: bytes, i: int = 0) -> tuple[Any, int]:
    """Decode the bencoded value at ``data[i:]``; return it and the offset after it.

    A dictionary's ``b"info"`` value also records its raw span as ``b"__info_span__"``
    (the info hash is the SHA-1 of those exact bytes).
    """
    c = data[i : i + 1]
    if c == b"i":
        j = data.index(b"e", i)
        return int(data[i + 1 : j]), j + 1
    if c == b"l":
        i += 1
        items = []
        while data[i : i + 1] != b"e":
            v, i = bdecode(data, i)
            items.append(v)
        return items, i + 1
    if c == b"d":
        i += 1
        d: dict[bytes, Any] = {}
        while data[i : i + 1] != b"e":
            k, i = bdecode(data, i)
            start = i
            v, i = bdecode(data, i)
            d[k] = v
            if k == b"info":
                d[b"__info_span__"] = (start, i)
        return d, i + 1
    if not c.isdigit():
        raise ValueError(f"not bencoded at {i}: {data[i : i + 10]!r}")
    colon = data.index(b":", i)
    n = int(data[i:colon])
    return data[colon + 1 : colon + 1 + n], colon + 1 + n


class Torrent:
    """A single-file v1 torrent: info hash, piece length, total length and piece hashes."""

    def __init__(self, raw: bytes) -> None:
        meta, _ = bdecode(raw)
        start, end = meta[b"__info_span__"]
        info = meta[b"info"]
        self.info_hash: bytes = hashlib.sha1(raw[start:end]).digest()
        self.name: bytes = info[b"name"]
        self.piece_length: int = info[b"piece length"]
        self.length: int = info[b"length"]
        pieces: bytes = info[b"pieces"]
        self.hashes = [pieces[k : k + 20] for k in range(0, len(pieces), 20)]
        self.num_pieces = len(self.hashes)
        assert self.num_pieces == -(-self.length // self.piece_length)

    @classmethod
    def fromFile(cls, path: str | Path) -> Torrent:
        return cls(Path(path).read_bytes())

    def pieceSize(self, index: int) -> int:
        if index == self.num_pieces - 1:
            return self.length - index * self.piece_length
        return self.piece_length

    def blocks(self) -> list[tuple[int, int, int]]:
        """Every ``(piece, begin, length)`` request, in order."""
        return [
            (p, off, min(BLOCK, self.pieceSize(p) - off))
            for p in range(self.num_pieces)
            for off in range(0, self.pieceSize(p), BLOCK)
        ]


def message(mid: int, payload: bytes = b"") -> bytes:
    return (len(payload) + 1).to_bytes(4, "big") + bytes((mid,)) + payload


def u32(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, "big") for v in values)


# ---------------------------------------------------------------------- peers


@implementer(IHalfCloseableProtocol)
class BitTorrentPeer(Protocol):
    """Handshake and message framing; ``events`` records the connection's life as in StreamProtocol."""

    def __init__(self, torrent: Torrent) -> None:
        self.torrent = torrent
        self.peer_id = b"-TX0001-" + os.urandom(12)
        self.buffer = bytearray()
        self.gotHandshake = False
        self.remotePeerId = b""
        self.counts: dict[int, int] = {}
        self.events: list[str] = []
        self.reason: Failure | None = None
        self.stats: Any = None
        self.error: str | None = None
        self.lost: Deferred[BaseException] = Deferred()
        self.tMade = self.tLost = 0.0
        self.tEof: float | None = None

    def handshake(self) -> bytes:
        return PSTR + bytes(8) + self.torrent.info_hash + self.peer_id

    def connectionMade(self) -> None:
        self.tMade = reactor.seconds()

    def dataReceived(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.gotHandshake:
            if len(buf) < 68:
                return
            if buf[:20] != PSTR or buf[28:48] != self.torrent.info_hash:
                self.error = f"bad handshake {bytes(buf[:68])!r}"
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            self.remotePeerId = bytes(buf[48:68])
            del buf[:68]
            self.gotHandshake = True
            self.handshakeReceived()
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            length = int.from_bytes(buf[pos : pos + 4], "big")
            if end - pos - 4 < length:
                break
            if length:
                mid = buf[pos + 4]
                self.counts[mid] = self.counts.get(mid, 0) + 1
                self.messageReceived(mid, bytes(buf[pos + 5 : pos + 4 + length]))
            pos += 4 + length
        del buf[:pos]

    def handshakeReceived(self) -> None:
        pass

    def messageReceived(self, mid: int, payload: bytes) -> None:
        pass

    def readConnectionLost(self) -> None:
        self.tEof = reactor.seconds()
        self.events.append("readConnectionLost")
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        self.events.append("writeConnectionLost")

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.tLost = reactor.seconds()
        self.reason = reason
        self.events.append("connectionLost " + type(reason.value).__name__)
        try:
            self.stats = self.transport.stats()  # type: ignore[union-attr]
        except Exception:  # not a txutp transport
            self.stats = None
        self.lost.callback(reason.value)


class Downloader(BitTorrentPeer):
    """Connects, says interested, keeps ``pipeline`` 16 KiB requests outstanding and checks
    every piece's SHA-1; ``done`` fires once every piece arrived, then it closes the connection.
    """

    def __init__(self, torrent: Torrent, pipeline: int = 128) -> None:
        super().__init__(torrent)
        self.pipeline = pipeline
        self.choked = True
        self.pending: deque[tuple[int, int, int]] = deque(torrent.blocks())
        self.outstanding: set[tuple[int, int, int]] = set()
        self.parts: dict[int, dict[int, bytes]] = {}
        self.got: dict[int, int] = {}
        self.verified: list[int] = []
        self.badPieces: list[int] = []
        self.received = 0
        self.fileHash = hashlib.sha256()
        self._nextToHash = 0
        self._doneData: dict[int, bytes] = {}
        self.done: Deferred[None] = Deferred()
        self.tFirstRequest: float | None = None
        self.tFirstPiece: float | None = None
        self.tDone: float | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.write(self.handshake() + message(INTERESTED))  # type: ignore[union-attr]

    def messageReceived(self, mid: int, payload: bytes) -> None:
        if mid == UNCHOKE:
            self.choked = False
            self.requestMore()
        elif mid == CHOKE:
            # Without the fast extension, a choke drops every pending request: ask again later.
            self.choked = True
            self.pending.extendleft(sorted(self.outstanding, reverse=True))
            self.outstanding.clear()
        elif mid == PIECE:
            self.pieceReceived(int.from_bytes(payload[0:4], "big"), int.from_bytes(payload[4:8], "big"), payload[8:])
            self.requestMore()

    def pieceReceived(self, index: int, begin: int, data: bytes) -> None:
        key = (index, begin, len(data))
        if key not in self.outstanding:
            return  # not asked for (or asked again after a choke): ignore
        self.outstanding.discard(key)
        if self.tFirstPiece is None:
            self.tFirstPiece = reactor.seconds()
        self.received += len(data)
        self.parts.setdefault(index, {})[begin] = data
        self.got[index] = self.got.get(index, 0) + len(data)
        if self.got[index] < self.torrent.pieceSize(index):
            return
        parts = self.parts.pop(index)
        piece = b"".join(parts[k] for k in sorted(parts))
        if hashlib.sha1(piece).digest() == self.torrent.hashes[index]:
            self.verified.append(index)
        else:
            self.badPieces.append(index)
        self._doneData[index] = piece
        while self._nextToHash in self._doneData:
            self.fileHash.update(self._doneData.pop(self._nextToHash))
            self._nextToHash += 1
        if len(self.verified) + len(self.badPieces) == self.torrent.num_pieces:
            self.tDone = reactor.seconds()
            self.transport.loseConnection()  # type: ignore[union-attr]
            self.done.callback(None)

    def requestMore(self) -> None:
        requests = []
        while not self.choked and len(self.outstanding) < self.pipeline and self.pending:
            block = self.pending.popleft()
            self.outstanding.add(block)
            requests.append(message(REQUEST, u32(*block)))
        if requests:
            if self.tFirstRequest is None:
                self.tFirstRequest = reactor.seconds()
            self.transport.write(b"".join(requests))  # type: ignore[union-attr]


class Seeder(BitTorrentPeer):
    """Answers the handshake with its own, a full bitfield and an unchoke, and serves every
    request from the interop stream (the torrent must be of the stream, as
    ``libtorrent_peer.py make`` writes it). The downloader's HAVE messages tell when it
    verified each piece (``haves``, ``tLastHave``).
    """

    def __init__(self, torrent: Torrent) -> None:
        super().__init__(torrent)
        self.requests = 0
        self.sentPayload = 0
        self.haves = 0
        self.tFirstRequest: float | None = None
        self.tLastHave: float | None = None

    def handshakeReceived(self) -> None:
        n = self.torrent.num_pieces
        bitfield = bytearray(b"\xff" * ((n + 7) // 8))
        if n % 8:
            bitfield[-1] = (0xFF << (8 - n % 8)) & 0xFF
        self.transport.write(  # type: ignore[union-attr]
            self.handshake() + message(BITFIELD, bytes(bitfield)) + message(UNCHOKE)
        )

    def messageReceived(self, mid: int, payload: bytes) -> None:
        if mid == HAVE:
            self.haves += 1
            self.tLastHave = reactor.seconds()
        elif mid == REQUEST:
            if self.tFirstRequest is None:
                self.tFirstRequest = reactor.seconds()
            index = int.from_bytes(payload[0:4], "big")
            begin = int.from_bytes(payload[4:8], "big")
            length = int.from_bytes(payload[8:12], "big")
            if index >= self.torrent.num_pieces or length > BLOCK or begin + length > self.torrent.pieceSize(index):
                self.error = f"bad request {index} {begin} {length}"
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            data = stream_bytes(index * self.torrent.piece_length + begin, length)
            self.transport.write(message(PIECE, payload[0:8] + data))  # type: ignore[union-attr]
            self.requests += 1
            self.sentPayload += length
