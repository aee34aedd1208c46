"""The uTP (BEP 29, version 1) wire codec.

A datagram is a 20-byte big-endian header, an optional chain of extensions and a
payload. :func:`decode_packet` turns bytes into a :class:`Packet` and raises
:class:`PacketError`, and nothing else, for anything that is not a well-formed
version-1 uTP packet. :func:`encode_packet` does the reverse.

Extension rules followed here (see ``docs/design.rst``):

* selective ACK (type 1) of any length is accepted on any packet type; we emit
  it in multiples of 4 bytes;
* extension 2 ("extension bits") is parsed and must be 8 bytes long, as libutp
  requires; libtorrent's close reason (type 3) is parsed; unknown types are
  skipped by their length;
* an extension numbered 3 or more is never put first, because libutp refuses
  such datagrams as "not uTP": an empty selective ACK is placed ahead of it.

Every packet the engine sends is written by :func:`write_packet`, which stamps
it with :func:`to_timestamp_us`. Sequence numbers wrap at 2**16 and timestamps
at 2**32 (:data:`SEQ_MASK`, :data:`TS_MASK`); both reference implementations
compare them with "the shorter distance wins" (libutp ``wrapping_compare_less``,
libtorrent ``compare_less_wrap``), as :func:`ts_lt` does.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

__all__ = [
    "EXT_CLOSE_REASON",
    "EXT_EXTENSION_BITS",
    "EXT_SACK",
    "HEADER_SIZE",
    "SEQ_MASK",
    "ST_DATA",
    "ST_FIN",
    "ST_RESET",
    "ST_STATE",
    "ST_SYN",
    "TS_HALF",
    "TS_MASK",
    "Packet",
    "PacketError",
    "PacketType",
    "decode_packet",
    "encode_packet",
    "is_utp_datagram",
    "sack_bitmask",
    "sack_sequence_numbers",
    "to_timestamp_us",
    "ts_lt",
    "write_packet",
]

HEADER_SIZE = 20
VERSION = 1

ST_DATA = 0
ST_FIN = 1
ST_STATE = 2
ST_RESET = 3
ST_SYN = 4

EXT_SACK = 1
EXT_EXTENSION_BITS = 2
EXT_CLOSE_REASON = 3
#: Most extensions decoded in one packet. Real peers send at most three (SACK, libtorrent's
#: extension bits and close reason); a longer chain is an attack on the decoder.
MAX_EXTENSIONS = 8

HEADER = struct.Struct(">BBHIIIHH")
_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from

#: Sequence and acknowledgement numbers are 16 bits and wrap.
SEQ_MASK = 0xFFFF
#: Timestamps, timestamp differences and one-way delays are 32-bit microseconds and wrap.
TS_MASK = 0xFFFFFFFF
TS_HALF = 0x80000000


def to_timestamp_us(now: float) -> int:
    """Convert a time in seconds to uTP's 32-bit microsecond wire timestamp."""
    return int(now * 1_000_000) & TS_MASK


def ts_lt(a: int, b: int) -> bool:
    """Return True if 32-bit timestamp (or delay) ``a`` comes strictly before ``b``.

    The shorter way round wins; exactly half the space apart, neither comes first.
    """
    d = (b - a) & TS_MASK
    return 0 < d < TS_HALF


class PacketType(IntEnum):
    """The five uTP packet types (the high nibble of the first byte)."""

    DATA = ST_DATA
    FIN = ST_FIN
    STATE = ST_STATE
    RESET = ST_RESET
    SYN = ST_SYN


class PacketError(ValueError):
    """Raised by :func:`decode_packet` for any datagram that is not valid uTP."""


class Packet(NamedTuple):
    """One decoded uTP packet.

    ``sack`` is the raw selective-ACK bitmask (``None`` when absent); bit ``j``
    of byte ``k`` stands for sequence number ``ack_nr + 2 + 8*k + j``.
    ``extensions`` holds every other extension as ``(type, body)`` pairs, in
    wire order.
    """

    type: int
    connection_id: int
    timestamp_us: int
    timestamp_diff_us: int
    wnd_size: int
    seq_nr: int
    ack_nr: int
    payload: bytes = b""
    sack: bytes | None = None
    extensions: tuple[tuple[int, bytes], ...] = ()

    @property
    def close_reason(self) -> int | None:
        """libtorrent's close-reason code (extension 3), if present and well-formed."""
        for ext_type, body in self.extensions:
            if ext_type == EXT_CLOSE_REASON and len(body) == 4:
                return int.from_bytes(body[2:4], "big")
        return None


def is_utp_datagram(data: bytes) -> bool:
    """Cheap check used to share a UDP port: version 1 and a known packet type."""
    return len(data) >= HEADER_SIZE and (data[0] & 0x0F) == VERSION and (data[0] >> 4) <= ST_SYN


def decode_packet(data: bytes) -> Packet:
    """Decode one datagram; raise :class:`PacketError` if it is not valid uTP v1."""
    if type(data) is not bytes:
        try:
            data = bytes(data)
        except TypeError:
            raise PacketError(f"not a bytes-like object: {type(data).__name__}") from None
    try:
        first, ext, cid, ts, tsd, wnd, seq, ack = _unpack_header(data)
    except (struct.error, TypeError) as e:
        raise PacketError(f"datagram too short or not bytes: {e}") from None
    if first & 0x0F != VERSION:
        raise PacketError(f"unsupported uTP version {first & 0x0F}")
    ptype = first >> 4
    if ptype > ST_SYN:
        raise PacketError(f"unknown packet type {ptype}")
    if not ext:
        return Packet(ptype, cid, ts, tsd, wnd, seq, ack, data[HEADER_SIZE:])
    sack: bytes | None = None
    others: list[tuple[int, bytes]] = []
    pos = HEADER_SIZE
    end = len(data)
    count = 0
    while ext:
        count += 1
        if count > MAX_EXTENSIONS:
            raise PacketError(f"more than {MAX_EXTENSIONS} extensions")
        if pos + 2 > end:
            raise PacketError("truncated extension header")
        next_ext = data[pos]
        length = data[pos + 1]
        body_end = pos + 2 + length
        if body_end > end:
            raise PacketError(f"extension {ext} of length {length} runs past the datagram")
        body = bytes(data[pos + 2 : body_end])
        if ext == EXT_SACK:
            if sack is None:
                sack = body
        else:
            if ext == EXT_EXTENSION_BITS and length != 8:
                raise PacketError(f"extension 2 must be 8 bytes long, got {length}")
            others.append((ext, body))
        ext = next_ext
        pos = body_end
    return Packet(ptype, cid, ts, tsd, wnd, seq, ack, data[pos:], sack, tuple(others))


def write_packet(
    ptype: int,
    connection_id: int,
    now: float,
    timestamp_diff_us: int,
    wnd_size: int,
    seq_nr: int,
    ack_nr: int,
    payload: bytes = b"",
    sack: bytes | None = None,
) -> bytes:
    """Write one datagram the engine sends: header, optional selective ACK, payload.

    The single writer of every packet on the wire (connections and the
    demultiplexer's stateless replies alike); ``ptype`` is a :class:`PacketType`
    value (the ``ST_*`` ints on hot paths) and the timestamp is
    ``to_timestamp_us(now)``. Fields must be in range (the engine's are);
    :func:`encode_packet` is the checked, general encoder.
    """
    timestamp_us = int(now * 1_000_000) & TS_MASK  # to_timestamp_us(now), inlined: every packet passes here
    if sack is None:
        return (
            _pack_header(
                (ptype << 4) | VERSION, 0, connection_id, timestamp_us, timestamp_diff_us, wnd_size, seq_nr, ack_nr
            )
            + payload
        )
    return (
        _pack_header(
            (ptype << 4) | VERSION, EXT_SACK, connection_id, timestamp_us, timestamp_diff_us, wnd_size, seq_nr, ack_nr
        )
        + bytes((0, len(sack)))
        + sack
        + payload
    )


def encode_packet(packet: Packet) -> bytes:
    """Encode a :class:`Packet`; raise :class:`ValueError` for out-of-range fields."""
    chain: list[tuple[int, bytes]] = []
    if packet.sack is not None:
        chain.append((EXT_SACK, packet.sack))
    chain.extend(packet.extensions)
    if chain and chain[0][0] >= 3:
        # libutp drops any datagram whose first extension is >= 3.
        chain.insert(0, (EXT_SACK, bytes(4)))
    for ext_type, body in chain:
        if not 0 < ext_type < 256:
            raise ValueError(f"extension type {ext_type} out of range 1..255")
        if len(body) > 255:
            raise ValueError(f"extension {ext_type} body longer than 255 bytes")
        if ext_type == EXT_EXTENSION_BITS and len(body) != 8:
            raise ValueError("extension 2 must be 8 bytes long")
    try:
        header = _pack_header(
            (int(packet.type) << 4) | VERSION,
            chain[0][0] if chain else 0,
            packet.connection_id,
            packet.timestamp_us,
            packet.timestamp_diff_us,
            packet.wnd_size,
            packet.seq_nr,
            packet.ack_nr,
        )
    except struct.error as e:
        raise ValueError(f"header field out of range: {e}") from None
    if not 0 <= packet.type <= ST_SYN:
        raise ValueError(f"unknown packet type {packet.type}")
    parts = [header]
    for i, (_ext_type, body) in enumerate(chain):
        next_type = chain[i + 1][0] if i + 1 < len(chain) else 0
        parts.append(bytes((next_type, len(body))))
        parts.append(body)
    parts.append(packet.payload)
    return b"".join(parts)


def sack_bitmask(ack_nr: int, received: object, span: int) -> bytes:
    """Build a selective-ACK bitmask for ``ack_nr``.

    ``received`` supports ``in`` for sequence numbers; ``span`` is how many
    sequence numbers after ``ack_nr + 1`` to cover. The result is a multiple of
    4 bytes long (at least 4), as BEP 29 asks.
    """
    nbytes = max(4, (span + 31) // 32 * 4)
    mask = bytearray(nbytes)
    base = ack_nr + 2
    for i in range(min(span, nbytes * 8)):
        if ((base + i) & 0xFFFF) in received:  # type: ignore[operator]
            mask[i >> 3] |= 1 << (i & 7)
    return bytes(mask)


def sack_sequence_numbers(ack_nr: int, mask: bytes) -> list[int]:
    """Return the sequence numbers a selective-ACK bitmask marks as received."""
    out = []
    base = ack_nr + 2
    for k, byte in enumerate(mask):
        if byte:
            for j in range(8):
                if byte & (1 << j):
                    out.append((base + 8 * k + j) & 0xFFFF)
    return out
