"""Tests for the uTP (BEP 29, version 1) wire codec in ``txutp.engine._packet``: decoding, encoding, the
single writer the engine sends with, and the 32-bit timestamp helpers."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from txutp.engine._packet import (
    EXT_CLOSE_REASON,
    EXT_EXTENSION_BITS,
    EXT_SACK,
    HEADER_SIZE,
    SEQ_MASK,
    ST_DATA,
    ST_FIN,
    ST_RESET,
    ST_STATE,
    ST_SYN,
    TS_HALF,
    TS_MASK,
    Packet,
    PacketError,
    PacketType,
    decode_packet,
    encode_packet,
    is_utp_datagram,
    sack_bitmask,
    sack_sequence_numbers,
    to_timestamp_us,
    ts_lt,
    write_packet,
)

U16 = 0xFFFF
U32 = 0xFFFFFFFF

# ---------------------------------------------------------------------------
# helpers and strategies
# ---------------------------------------------------------------------------


def raw_header(
    first: int,
    ext: int = 0,
    cid: int = 0,
    ts: int = 0,
    tsd: int = 0,
    wnd: int = 0,
    seq: int = 0,
    ack: int = 0,
) -> bytes:
    """Build a 20-byte header by hand (independently of the module's struct)."""
    return (
        bytes((first, ext))
        + cid.to_bytes(2, "big")
        + ts.to_bytes(4, "big")
        + tsd.to_bytes(4, "big")
        + wnd.to_bytes(4, "big")
        + seq.to_bytes(2, "big")
        + ack.to_bytes(2, "big")
    )


def first_byte(ptype: int, version: int = 1) -> int:
    return (ptype << 4) | version


def ext_element(next_type: int, body: bytes) -> bytes:
    return bytes((next_type, len(body))) + body


def expected_roundtrip(packet: Packet) -> Packet:
    """What ``decode_packet(encode_packet(packet))`` must give back.

    encode_packet never puts an extension numbered >= 3 first: without a SACK it
    inserts an all-zero 4-byte SACK ahead of it, which then decodes as ``sack``.
    """
    if packet.sack is None and packet.extensions and packet.extensions[0][0] >= 3:
        return packet._replace(sack=bytes(4))
    return packet


def canonical(packet: Packet) -> Packet:
    """Normalise the payload to bytes (decode of bytearray/memoryview may keep the input's type)."""
    return packet._replace(payload=bytes(packet.payload))


u16s = st.integers(0, U16)
u32s = st.integers(0, U32)
ptypes = st.sampled_from(list(PacketType))

# Valid extensions other than SACK: type 2 needs an 8-byte body, 3..255 any body.
extensions_valid = st.one_of(
    st.tuples(st.just(EXT_EXTENSION_BITS), st.binary(min_size=8, max_size=8)),
    st.tuples(st.integers(3, 255), st.binary(max_size=255)),
)

packets = st.builds(
    Packet,
    type=ptypes,
    connection_id=u16s,
    timestamp_us=u32s,
    timestamp_diff_us=u32s,
    wnd_size=u32s,
    seq_nr=u16s,
    ack_nr=u16s,
    payload=st.binary(max_size=300),
    sack=st.none() | st.binary(max_size=255),
    extensions=st.lists(extensions_valid, max_size=4).map(tuple),
)


# ---------------------------------------------------------------------------
# constants and header layout
# ---------------------------------------------------------------------------


def test_constants():
    assert HEADER_SIZE == 20
    assert (ST_DATA, ST_FIN, ST_STATE, ST_RESET, ST_SYN) == (0, 1, 2, 3, 4)
    assert [int(t) for t in PacketType] == [0, 1, 2, 3, 4]
    assert (EXT_SACK, EXT_EXTENSION_BITS, EXT_CLOSE_REASON) == (1, 2, 3)
    assert issubclass(PacketError, ValueError)


TYPE_BYTES = [
    (PacketType.DATA, 0x01),
    (PacketType.FIN, 0x11),
    (PacketType.STATE, 0x21),
    (PacketType.RESET, 0x31),
    (PacketType.SYN, 0x41),
]


@pytest.mark.parametrize(("ptype", "byte0"), TYPE_BYTES)
def test_header_layout_byte_by_byte(ptype, byte0):
    p = Packet(ptype, 0x1234, 0x89ABCDEF, 0x01020304, 0xFEDCBA98, 0xBEEF, 0x0102, b"PAYLOAD")
    out = encode_packet(p)
    assert len(out) == 20 + 7
    assert out[0] == byte0
    assert out[0] >> 4 == int(ptype)
    assert out[0] & 0x0F == 1
    assert out[1] == 0  # no extension
    # connection_id u16 at offset 2
    assert out[2] == 0x12
    assert out[3] == 0x34
    # timestamp_microseconds u32 at offset 4
    assert out[4:8] == bytes((0x89, 0xAB, 0xCD, 0xEF))
    # timestamp_difference_microseconds u32 at offset 8
    assert out[8:12] == bytes((0x01, 0x02, 0x03, 0x04))
    # wnd_size u32 at offset 12
    assert out[12:16] == bytes((0xFE, 0xDC, 0xBA, 0x98))
    # seq_nr u16 at offset 16
    assert out[16:18] == bytes((0xBE, 0xEF))
    # ack_nr u16 at offset 18
    assert out[18:20] == bytes((0x01, 0x02))
    assert out[20:] == b"PAYLOAD"
    assert out == raw_header(byte0, 0, 0x1234, 0x89ABCDEF, 0x01020304, 0xFEDCBA98, 0xBEEF, 0x0102) + b"PAYLOAD"


@pytest.mark.parametrize(("ptype", "byte0"), TYPE_BYTES)
def test_decode_hand_built_header(ptype, byte0):
    data = raw_header(byte0, 0, 0xA1B2, 0xDEADBEEF, 0x00000001, 0x00100000, 0xFFFF, 0x0000) + b"xyz"
    p = decode_packet(data)
    assert p.type == int(ptype)
    assert p.connection_id == 0xA1B2
    assert p.timestamp_us == 0xDEADBEEF
    assert p.timestamp_diff_us == 1
    assert p.wnd_size == 0x00100000
    assert p.seq_nr == 0xFFFF
    assert p.ack_nr == 0
    assert p.payload == b"xyz"
    assert p.sack is None
    assert p.extensions == ()
    assert p.close_reason is None
    assert is_utp_datagram(data)


def test_decode_bare_header_has_empty_payload():
    p = decode_packet(raw_header(0x21))
    assert p == Packet(ST_STATE, 0, 0, 0, 0, 0, 0, b"", None, ())
    assert isinstance(p.payload, bytes)


def test_extension_chain_layout():
    sack = b"\x05\x00\x00\x80"
    reason = b"\x00\x00\x01\x02"
    p = Packet(ST_FIN, 7, 8, 9, 10, 11, 12, b"pl", sack, ((EXT_CLOSE_REASON, reason),))
    out = encode_packet(p)
    assert out[1] == EXT_SACK
    assert out[20:26] == bytes((EXT_CLOSE_REASON, 4)) + sack
    assert out[26:32] == bytes((0, 4)) + reason
    assert out[32:] == b"pl"
    assert decode_packet(out) == p
    assert decode_packet(out).close_reason == 0x0102


def test_extension_bits_may_come_first():
    p = Packet(ST_SYN, 1, 2, 3, 4, 5, 6, b"", None, ((EXT_EXTENSION_BITS, bytes(8)),))
    out = encode_packet(p)
    assert out[1] == EXT_EXTENSION_BITS
    assert out[20:] == bytes((0, 8)) + bytes(8)
    assert decode_packet(out) == p


@pytest.mark.parametrize("ext_type", [3, 4, 77, 255])
def test_empty_sack_inserted_before_extension_3_or_more(ext_type):
    body = b"\x00\x00\x00\x02"
    p = Packet(ST_FIN, 1, 2, 3, 4, 5, 6, b"data", None, ((ext_type, body),))
    out = encode_packet(p)
    assert out[1] == EXT_SACK
    # inserted SACK: next = ext_type, length 4, all-zero bitmask
    assert out[20:26] == bytes((ext_type, 4, 0, 0, 0, 0))
    assert out[26:32] == bytes((0, 4)) + body
    assert out[32:] == b"data"
    assert decode_packet(out) == p._replace(sack=bytes(4))


# ---------------------------------------------------------------------------
# round trip
# ---------------------------------------------------------------------------


@settings(max_examples=500)
@given(packets)
@example(Packet(ST_DATA, 0, 0, 0, 0, 0, 0))
@example(Packet(ST_SYN, U16, U32, U32, U32, U16, U16, b"\x00" * 10, b"", ()))
@example(Packet(ST_STATE, 1, 2, 3, 4, 5, 6, b"", None, ((3, b"\x00\x00\x00\x07"),)))
@example(Packet(ST_DATA, 1, 2, 3, 4, 5, 6, b"abc", b"\xff" * 255, ((200, b""), (2, bytes(8)))))
def test_roundtrip(packet):
    out = encode_packet(packet)
    assert isinstance(out, bytes)
    decoded = decode_packet(out)
    assert decoded == expected_roundtrip(packet)
    assert isinstance(decoded.payload, bytes)
    assert is_utp_datagram(out)
    # the fixed header is independent of the extensions
    assert out[0] == (int(packet.type) << 4) | 1
    assert out[2:4] == packet.connection_id.to_bytes(2, "big")
    assert out[4:8] == packet.timestamp_us.to_bytes(4, "big")
    assert out[8:12] == packet.timestamp_diff_us.to_bytes(4, "big")
    assert out[12:16] == packet.wnd_size.to_bytes(4, "big")
    assert out[16:18] == packet.seq_nr.to_bytes(2, "big")
    assert out[18:20] == packet.ack_nr.to_bytes(2, "big")
    assert out.endswith(packet.payload)
    # re-encoding the decoded packet is stable
    assert encode_packet(decoded) == encode_packet(expected_roundtrip(packet))


@given(packets)
def test_encoded_length(packet):
    expected = expected_roundtrip(packet)
    chain = ([expected.sack] if expected.sack is not None else []) + [body for _, body in expected.extensions]
    assert len(encode_packet(packet)) == 20 + sum(2 + len(b) for b in chain) + len(packet.payload)


@given(
    ptypes,
    u16s,
    st.floats(0, 1e7, allow_nan=False),
    u32s,
    u32s,
    u16s,
    u16s,
    st.binary(max_size=100),
    st.none() | st.binary(max_size=255),
)
def test_write_packet_matches_encode_packet(ptype, cid, now, tsd, wnd, seq, ack, payload, sack):
    """The engine's writer and the checked encoder agree byte for byte; the writer stamps ``now``."""
    out = write_packet(ptype, cid, now, tsd, wnd, seq, ack, payload, sack)
    ts = to_timestamp_us(now)
    assert out == encode_packet(Packet(ptype, cid, ts, tsd, wnd, seq, ack, payload, sack))
    assert decode_packet(out) == Packet(ptype, cid, ts, tsd, wnd, seq, ack, payload, sack)


@pytest.mark.parametrize("ptype", list(PacketType))
def test_write_packet_first_byte_is_type_and_version(ptype):
    assert write_packet(ptype, 1, 0.0, 0, 0, 0, 0)[0] == (ptype << 4) | 1


# Any extension list the encoder accepts (type 2 must be 8 bytes): it never puts >= 3 first.
any_extensions = st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=255)), max_size=5).map(
    lambda exts: tuple((t, b.ljust(8, b"\0")[:8] if t == 2 else b) for t, b in exts)
)


@settings(max_examples=300)
@given(
    ptypes,
    st.none() | st.binary(max_size=255),
    any_extensions,
    st.binary(max_size=50),
)
def test_encode_never_puts_extension_3_or_more_first(ptype, sack, extensions, payload):
    out = encode_packet(Packet(ptype, 1, 2, 3, 4, 5, 6, payload, sack, extensions))
    assert out[1] in (0, 1, 2)
    if sack is None and not extensions:
        assert out[1] == 0
    elif sack is not None:
        assert out[1] == EXT_SACK
    # walk the chain by hand: it is well-formed and ends exactly before the payload
    ext, pos, seen = out[1], 20, []
    while ext:
        seen.append(ext)
        nxt, length = out[pos], out[pos + 1]
        pos += 2 + length
        ext = nxt
    assert pos <= len(out)
    assert out[pos:] == payload
    assert len(seen) == (sack is not None) + len(extensions) + (
        sack is None and bool(extensions) and extensions[0][0] >= 3
    )


# ---------------------------------------------------------------------------
# extensions on receive
# ---------------------------------------------------------------------------

SACK_LENGTHS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 32, 33, 255]


@pytest.mark.parametrize("length", SACK_LENGTHS)
@pytest.mark.parametrize("ptype", list(PacketType))
def test_sack_any_length_any_type(ptype, length):
    sack = bytes((i * 37 + 1) & 0xFF for i in range(length))
    data = raw_header(first_byte(ptype), EXT_SACK, 5, 6, 7, 8, 9, 10) + ext_element(0, sack) + b"payload!"
    p = decode_packet(data)
    assert p.type == int(ptype)
    assert p.sack == sack
    assert p.extensions == ()
    assert p.payload == b"payload!"
    assert (p.seq_nr, p.ack_nr) == (9, 10)
    assert encode_packet(p) == data


@settings(max_examples=200)
@given(ptypes, st.binary(max_size=255), st.binary(max_size=200))
def test_sack_any_length_hypothesis(ptype, sack, payload):
    data = raw_header(first_byte(ptype), EXT_SACK) + ext_element(0, sack) + payload
    p = decode_packet(data)
    assert p.sack == sack
    assert p.payload == payload


def test_libtorrent_style_data_with_3_byte_sack_and_close_reason():
    data = (
        raw_header(0x01, EXT_SACK, 1000, 1, 2, 65536, 40, 30)
        + ext_element(EXT_CLOSE_REASON, b"\x0b\x00\x01")
        + ext_element(0, b"\x00\x00\x00\x01")
        + b"hello"
    )
    p = decode_packet(data)
    assert p.type == ST_DATA
    assert p.sack == b"\x0b\x00\x01"
    assert p.extensions == ((EXT_CLOSE_REASON, b"\x00\x00\x00\x01"),)
    assert p.close_reason == 1
    assert p.payload == b"hello"
    assert sack_sequence_numbers(p.ack_nr, p.sack) == [32, 33, 35, 48]


@pytest.mark.parametrize("ext_type", [4, 5, 17, 128, 254, 255])
def test_unknown_extension_is_skipped_payload_intact(ext_type):
    data = (
        raw_header(0x01, EXT_SACK, seq=3, ack=2)
        + ext_element(ext_type, b"\x01\x00\x00\x00")
        + ext_element(0, b"opaque body")
        + b"the payload"
    )
    p = decode_packet(data)
    assert p.sack == b"\x01\x00\x00\x00"
    assert p.extensions == ((ext_type, b"opaque body"),)
    assert p.payload == b"the payload"
    assert p.close_reason is None


@pytest.mark.parametrize("ext_type", [3, 4, 99, 255])
def test_first_extension_3_or_more_accepted_on_receive(ext_type):
    # e.g. libtorrent's FIN carrying only a close reason
    body = b"\x00\x00\x00\x05" if ext_type == EXT_CLOSE_REASON else b"zz"
    data = raw_header(0x11, ext_type) + ext_element(0, body) + b"tail"
    assert is_utp_datagram(data)
    p = decode_packet(data)
    assert p.type == ST_FIN
    assert p.sack is None
    assert p.extensions == ((ext_type, body),)
    assert p.payload == b"tail"


def _chain(types: list[int]) -> bytes:
    data = raw_header(0x01, types[0])
    for i, t in enumerate(types):
        nxt = types[i + 1] if i + 1 < len(types) else 0
        data += ext_element(nxt, bytes([t]) * (t % 7))
    return data + b"end"


def test_chain_of_unknown_extensions_up_to_the_bound():
    from txutp.engine._packet import MAX_EXTENSIONS

    types = list(range(4, 4 + MAX_EXTENSIONS))
    p = decode_packet(_chain(types))
    assert p.extensions == tuple((t, bytes([t]) * (t % 7)) for t in types)
    assert p.payload == b"end"


def test_a_chain_longer_than_any_peer_sends_is_refused():
    from txutp.engine._packet import MAX_EXTENSIONS

    with pytest.raises(PacketError, match="extensions"):
        decode_packet(_chain(list(range(4, 5 + MAX_EXTENSIONS))))


def test_zero_length_extensions_and_payload_looking_like_extension():
    data = raw_header(0x01, 9) + ext_element(10, b"") + ext_element(0, b"") + b"\x01\x04\x00\x00"
    p = decode_packet(data)
    assert p.extensions == ((9, b""), (10, b""))
    assert p.payload == b"\x01\x04\x00\x00"


def test_two_sacks_payload_intact():
    data = raw_header(0x21, EXT_SACK) + ext_element(EXT_SACK, b"\x01\x00\x00\x00") + ext_element(0, b"\x02") + b"p"
    p = decode_packet(data)
    assert p.sack in (b"\x01\x00\x00\x00", b"\x02")
    assert p.payload == b"p"
    assert all(t != EXT_SACK for t, _ in p.extensions)


@given(st.integers(0, U16), ptypes)
def test_close_reason_parsed(code, ptype):
    body = b"\x00\x00" + code.to_bytes(2, "big")
    data = raw_header(first_byte(ptype), EXT_CLOSE_REASON) + ext_element(0, body) + b"x"
    p = decode_packet(data)
    assert p.close_reason == code
    assert p.extensions == ((EXT_CLOSE_REASON, body),)
    assert p.payload == b"x"
    # also after a SACK, as libtorrent writes it
    data2 = raw_header(first_byte(ptype), EXT_SACK) + ext_element(EXT_CLOSE_REASON, bytes(4)) + ext_element(0, body)
    assert decode_packet(data2).close_reason == code
    # and via the encoder
    assert decode_packet(encode_packet(Packet(ptype, 0, 0, 0, 0, 0, 0, b"", None, ((3, body),)))).close_reason == code


@pytest.mark.parametrize("length", [0, 1, 2, 3, 5, 6, 8, 255])
def test_close_reason_ignored_unless_length_4(length):
    body = (b"\x00\x00\x01\x00" + bytes(255))[:length]
    assert len(body) == length
    data = raw_header(0x11, EXT_CLOSE_REASON) + ext_element(0, body) + b"pl"
    p = decode_packet(data)
    assert p.extensions == ((EXT_CLOSE_REASON, body),)
    assert p.close_reason is None
    assert p.payload == b"pl"


def test_close_reason_absent():
    assert Packet(ST_FIN, 0, 0, 0, 0, 0, 0).close_reason is None
    assert Packet(ST_FIN, 0, 0, 0, 0, 0, 0, b"", b"\x00\x00\x00\x07", ((9, b"\x00\x00\x00\x07"),)).close_reason is None


def test_close_reason_first_well_formed_one_wins():
    p = Packet(ST_FIN, 0, 0, 0, 0, 0, 0, b"", None, ((3, b"\x00"), (3, b"\x00\x00\x01\x01"), (3, b"\x00\x00\x00\x02")))
    assert p.close_reason == 0x0101


@pytest.mark.parametrize("length", [0, 1, 4, 7, 9, 16, 255])
def test_extension_bits_wrong_length_rejected(length):
    data = raw_header(0x41, EXT_EXTENSION_BITS) + ext_element(0, bytes(length))
    with pytest.raises(PacketError):
        decode_packet(data)
    # also when it is not the first extension
    data = raw_header(0x41, EXT_SACK) + ext_element(EXT_EXTENSION_BITS, bytes(4)) + ext_element(0, bytes(length))
    with pytest.raises(PacketError):
        decode_packet(data)


def test_extension_bits_length_8_accepted():
    body = b"\x00\x00\x00\x00\x00\x10\x00\x00"
    data = raw_header(0x41, EXT_EXTENSION_BITS, 1, 2, 3, 4, 5, 6) + ext_element(0, body) + b"s"
    p = decode_packet(data)
    assert p.extensions == ((EXT_EXTENSION_BITS, body),)
    assert p.payload == b"s"
    assert encode_packet(p) == data


# ---------------------------------------------------------------------------
# malformed input
# ---------------------------------------------------------------------------


def decode_outcome(data):
    """Return the decoded Packet, or the PacketError; any other exception propagates (test failure)."""
    try:
        return decode_packet(data)
    except PacketError as e:
        return e


def check_decode_is_total(data: bytes) -> None:
    """decode_packet gives a Packet or raises PacketError, for bytes, bytearray and memoryview alike."""
    result = decode_outcome(data)
    for wrapped in (bytearray(data), memoryview(data), memoryview(bytearray(data))):
        other = decode_outcome(wrapped)
        assert type(other) is type(result)
        if isinstance(result, Packet):
            assert canonical(other) == result
    if not isinstance(result, Packet):
        assert not (len(data) >= 20 and data[1] == 0 and is_utp_datagram(data))
        return
    # a successful decode is consistent with the input
    assert isinstance(result.payload, bytes)
    assert data.endswith(result.payload)
    assert is_utp_datagram(data)
    assert result.type == data[0] >> 4
    assert data[0] & 0x0F == 1
    assert (result.extensions == () and result.sack is None) == (data[1] == 0)
    for ext_type, body in result.extensions:
        assert 2 <= ext_type <= 255
        assert len(body) <= 255
        if ext_type == EXT_EXTENSION_BITS:
            assert len(body) == 8
    # the decoded packet re-encodes, and decoding that gives it back
    again = decode_packet(encode_packet(result))
    assert again == expected_roundtrip(result)


@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_decode_arbitrary_bytes(data):
    check_decode_is_total(data)


@settings(max_examples=500)
@given(
    st.integers(0, 15),
    st.integers(0, 15),
    st.integers(0, 255),
    st.binary(min_size=18, max_size=18),
    st.binary(max_size=300),
)
def test_decode_arbitrary_header_and_tail(ptype, version, ext, rest, tail):
    # bias towards the interesting part: a plausible header followed by junk
    check_decode_is_total(bytes(((ptype << 4) | version, ext)) + rest + tail)


@settings(max_examples=500)
@given(
    st.integers(0, 4), st.integers(1, 255), st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255))), st.binary()
)
def test_decode_junk_extension_chain(ptype, ext, elements, tail):
    data = raw_header(first_byte(ptype), ext)
    for nxt, length in elements:
        data += bytes((nxt, length))
    check_decode_is_total(data + tail)


MUTATIONS = ("truncate", "flip", "insert", "delete", "overwrite")


@settings(max_examples=500)
@given(
    packets,
    st.lists(
        st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 10_000), st.binary(min_size=1, max_size=8)),
        min_size=1,
        max_size=4,
    ),
)
def test_decode_mutated_valid_encodings(packet, mutations):
    data = bytearray(encode_packet(packet))
    for kind, where, blob in mutations:
        pos = where % (len(data) + 1)
        if kind == "truncate":
            del data[pos:]
        elif kind == "flip":
            if data:
                data[where % len(data)] ^= 1 << (blob[0] & 7)
        elif kind == "insert":
            data[pos:pos] = blob
        elif kind == "delete":
            del data[pos : pos + len(blob)]
        else:
            data[pos : pos + len(blob)] = blob
    check_decode_is_total(bytes(data))


@settings(max_examples=300)
@given(packets, st.data())
def test_decode_every_truncation_of_chain(packet, data):
    out = encode_packet(packet)
    cut = data.draw(st.integers(0, len(out)))
    check_decode_is_total(out[:cut])
    if cut < 20:
        with pytest.raises(PacketError):
            decode_packet(out[:cut])


@pytest.mark.parametrize("length", [0, 1, 2, 19])
def test_too_short(length):
    data = raw_header(0x01)[:length]
    with pytest.raises(PacketError):
        decode_packet(data)
    assert not is_utp_datagram(data)


def test_exactly_20_bytes_is_fine():
    assert decode_packet(raw_header(0x01)).payload == b""


@pytest.mark.parametrize("version", [0, 2, 3, 15])
@pytest.mark.parametrize("ptype", [0, 1, 2, 3, 4])
def test_bad_version(ptype, version):
    data = raw_header(first_byte(ptype, version)) + b"payload"
    with pytest.raises(PacketError):
        decode_packet(data)
    assert not is_utp_datagram(data)


@pytest.mark.parametrize("ptype", range(5, 16))
def test_bad_type(ptype):
    data = raw_header(first_byte(ptype)) + b"payload"
    with pytest.raises(PacketError):
        decode_packet(data)
    assert not is_utp_datagram(data)


@pytest.mark.parametrize(
    "data",
    [
        # SACK claims 10 bytes, only 5 follow
        raw_header(0x21, EXT_SACK) + bytes((0, 10)) + bytes(5),
        # SACK claims 255 bytes, none follow
        raw_header(0x21, EXT_SACK) + bytes((0, 255)),
        # second extension runs past the end
        raw_header(0x01, EXT_SACK) + ext_element(9, bytes(4)) + bytes((0, 3)) + b"ab",
        # unknown first extension runs past the end
        raw_header(0x01, 200) + bytes((0, 1)),
        # close reason runs past the end
        raw_header(0x11, EXT_CLOSE_REASON) + bytes((0, 4)) + b"\x00\x00\x00",
    ],
)
def test_extension_runs_past_end(data):
    with pytest.raises(PacketError):
        decode_packet(data)
    assert is_utp_datagram(data)  # the header itself is fine


@pytest.mark.parametrize(
    "data",
    [
        raw_header(0x21, EXT_SACK),  # no extension header at all
        raw_header(0x21, EXT_SACK) + b"\x00",  # only one byte of it
        raw_header(0x21, 7),
        raw_header(0x21, EXT_SACK) + ext_element(5, bytes(4)),  # chain says another follows; nothing does
        raw_header(0x21, EXT_SACK) + ext_element(5, bytes(4)) + b"\x00",
    ],
)
def test_truncated_extension_header(data):
    with pytest.raises(PacketError):
        decode_packet(data)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, lambda b: memoryview(bytearray(b))])
def test_bytes_like_inputs_decode(wrap):
    plain = raw_header(0x01, 0, 1, 2, 3, 4, 5, 6) + b"payload"
    chained = (
        raw_header(0x01, EXT_SACK, 1, 2, 3, 4, 5, 6) + ext_element(3, b"\x01\x02") + ext_element(0, bytes(4)) + b"pl"
    )
    for data in (plain, chained):
        p = decode_packet(wrap(data))
        assert canonical(p) == decode_packet(data)
        assert bytes(p.payload) == data[-len(p.payload) :]
    for bad in (b"", raw_header(0x01)[:19], raw_header(0x51), raw_header(0x21, EXT_SACK) + b"\x00"):
        with pytest.raises(PacketError):
            decode_packet(wrap(bad))


@pytest.mark.parametrize("bad", [None, 0, 12345, 1.5, "x" * 40, [1] * 40, object()])
def test_non_bytes_input_raises_packet_error(bad):
    with pytest.raises(PacketError):
        decode_packet(bad)


# ---------------------------------------------------------------------------
# is_utp_datagram
# ---------------------------------------------------------------------------

DHT_PING = b"d1:ad2:id20:" + b"abcdefghij0123456789" + b"e1:q4:ping1:t2:aa1:y1:qe"
DHT_RESPONSE = b"d1:rd2:id20:" + b"mnopqrstuvwxyz123456" + b"e1:t2:aa1:y1:re"
TRACKER_CONNECT = bytes.fromhex("0000041727101980") + bytes(4) + b"\x12\x34\x56\x78"


@pytest.mark.parametrize("data", [DHT_PING, DHT_RESPONSE, TRACKER_CONNECT, b"d1:ad2:id20:", b"", b"\x01" * 19])
def test_not_utp(data):
    assert not is_utp_datagram(data)
    with pytest.raises(PacketError):
        decode_packet(data)


@settings(max_examples=500)
@given(st.binary(max_size=100))
@example(DHT_PING)
@example(raw_header(0x41, 255))
def test_is_utp_datagram_agrees_with_decode(data):
    header_ok = len(data) >= 20 and data[0] & 0x0F == 1 and data[0] >> 4 <= 4
    assert is_utp_datagram(data) == header_ok
    assert is_utp_datagram(bytearray(data)) == header_ok
    assert is_utp_datagram(memoryview(data)) == header_ok
    result = decode_outcome(data)
    if isinstance(result, Packet):
        assert header_ok
    elif header_ok:
        # only the extension chain can be at fault
        assert data[1] != 0
    if header_ok and data[1] == 0:
        assert isinstance(result, Packet)


@given(st.binary(max_size=200).map(lambda b: b"d" + b + b"e"))
def test_bencoded_dictionaries_are_never_utp(data):
    assert not is_utp_datagram(data)  # 'd' = 0x64: version nibble 4


# ---------------------------------------------------------------------------
# selective ACK bitmask
# ---------------------------------------------------------------------------


def test_sack_bitmask_explicit_bits():
    assert sack_bitmask(10, {12}, 32) == b"\x01\x00\x00\x00"
    assert sack_bitmask(10, {13}, 32) == b"\x02\x00\x00\x00"
    assert sack_bitmask(10, {19}, 32) == b"\x80\x00\x00\x00"
    assert sack_bitmask(10, {20}, 32) == b"\x00\x01\x00\x00"
    assert sack_bitmask(10, {43}, 32) == b"\x00\x00\x00\x80"
    assert sack_bitmask(10, {12, 14, 21, 43}, 32) == b"\x05\x02\x00\x80"
    # ack_nr + 1 is implicitly missing and cannot be represented; ack_nr itself neither
    assert sack_bitmask(10, {10, 11}, 32) == bytes(4)
    # beyond the span: ignored
    assert sack_bitmask(10, {44}, 32) == bytes(4)


def test_sack_sequence_numbers_explicit():
    assert sack_sequence_numbers(10, b"\x01\x00\x00\x00") == [12]
    assert sack_sequence_numbers(10, b"\x05\x02\x00\x80") == [12, 14, 21, 43]
    assert sack_sequence_numbers(10, bytes(4)) == []
    assert sack_sequence_numbers(10, b"") == []
    assert sack_sequence_numbers(0, b"\xff") == [2, 3, 4, 5, 6, 7, 8, 9]
    # libtorrent-style odd lengths
    assert sack_sequence_numbers(100, b"\x00\x00\x01") == [118]
    assert sack_sequence_numbers(100, b"\x00\x00\x00\x00\x01") == [134]


@pytest.mark.parametrize(
    ("span", "length"),
    [(0, 4), (1, 4), (30, 4), (32, 4), (33, 8), (64, 8), (65, 12), (96, 12), (97, 16), (256, 32), (257, 36)],
)
def test_sack_bitmask_length(span, length):
    assert len(sack_bitmask(0, set(), span)) == length
    assert len(sack_bitmask(0, set(range(65536)), span)) == length


@pytest.mark.parametrize("span", [0, 1, 5, 8, 9, 30, 31, 32, 33, 100])
def test_sack_bitmask_bits_beyond_span_are_zero(span):
    everything = set(range(65536))
    mask = sack_bitmask(500, everything, span)
    bits = int.from_bytes(mask, "little")
    assert bits == (1 << span) - 1
    assert sack_sequence_numbers(500, mask) == [502 + i for i in range(span)]


def test_sack_wraparound_explicit():
    # ack_nr 65534: the first bit is sequence number 0
    assert sack_bitmask(65534, {0, 1, 5}, 32) == b"\x23\x00\x00\x00"
    assert sack_sequence_numbers(65534, b"\x23\x00\x00\x00") == [0, 1, 5]
    # ack_nr 65535: the first bit is sequence number 1
    assert sack_bitmask(65535, {1, 8, 9}, 32) == b"\x81\x01\x00\x00"
    assert sack_sequence_numbers(65535, b"\x81\x01\x00\x00") == [1, 8, 9]
    # straddling the wrap: base 65532, offsets 0, 3, 4, 7
    assert sack_bitmask(65530, {65532, 65535, 0, 3}, 32) == b"\x99\x00\x00\x00"
    assert sack_sequence_numbers(65530, b"\x99\x00\x00\x00") == [65532, 65535, 0, 3]
    # 65535 (ack+1 for ack 65534) is not representable
    assert sack_bitmask(65534, {65535}, 32) == bytes(4)
    assert sack_sequence_numbers(65533, b"\x03") == [65535, 0]


@given(u16s, st.integers(0, 63), st.integers(0, 7))
@example(65535, 0, 0)
@example(65534, 0, 0)
@example(65533, 0, 1)
@example(65000, 63, 7)
def test_sack_bit_to_sequence_number(ack_nr, k, j):
    seq = (ack_nr + 2 + 8 * k + j) % 65536
    mask = bytearray(max(4, (k // 4 + 1) * 4))
    mask[k] = 1 << j
    assert sack_sequence_numbers(ack_nr, bytes(mask)) == [seq]
    assert sack_bitmask(ack_nr, {seq}, len(mask) * 8) == bytes(mask)


@settings(max_examples=500)
@given(u16s, st.integers(0, 600), st.sets(st.integers(0, 700)), st.sets(u16s, max_size=20))
@example(65535, 32, {0, 1, 31}, set())
@example(65530, 100, set(range(0, 100, 3)), {65531})
def test_sack_roundtrip(ack_nr, span, offsets, noise):
    received = {(ack_nr + 2 + o) % 65536 for o in offsets} | noise
    mask = sack_bitmask(ack_nr, received, span)
    assert isinstance(mask, bytes)
    assert len(mask) % 4 == 0
    assert len(mask) >= 4
    assert len(mask) == max(4, -(-span // 32) * 4)
    covered = [(ack_nr + 2 + i) % 65536 for i in range(span)]
    assert sack_sequence_numbers(ack_nr, mask) == [s for s in covered if s in received]
    # and through the wire
    p = Packet(ST_STATE, 1, 2, 3, 4, 5, ack_nr, b"", mask)
    q = decode_packet(encode_packet(p))
    assert q.sack == mask
    assert sack_sequence_numbers(q.ack_nr, q.sack) == [s for s in covered if s in received]


@settings(max_examples=300)
@given(u16s, st.binary(max_size=255))
def test_sack_sequence_numbers_any_mask(ack_nr, mask):
    seqs = sack_sequence_numbers(ack_nr, mask)
    assert len(seqs) == sum(bin(b).count("1") for b in mask)
    assert len(set(seqs)) == len(seqs)
    assert all(0 <= s <= U16 for s in seqs)
    # each reported number maps back to a set bit
    for s in seqs:
        i = (s - ack_nr - 2) % 65536
        assert mask[i >> 3] & (1 << (i & 7))
    # re-encoding covers the same numbers
    assert sack_sequence_numbers(ack_nr, sack_bitmask(ack_nr, set(seqs), len(mask) * 8)) == seqs


# ---------------------------------------------------------------------------
# encode_packet: out-of-range fields
# ---------------------------------------------------------------------------

GOOD = Packet(ST_DATA, 1, 2, 3, 4, 5, 6, b"x")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq_nr", 65536),
        ("seq_nr", -1),
        ("ack_nr", 65536),
        ("ack_nr", -1),
        ("connection_id", 65536),
        ("connection_id", -1),
        ("timestamp_us", 2**32),
        ("timestamp_us", -1),
        ("timestamp_diff_us", 2**32),
        ("timestamp_diff_us", -1),
        ("wnd_size", 2**32),
        ("wnd_size", -1),
        ("type", 5),
        ("type", 15),
        ("type", 16),
        ("type", -1),
        ("sack", bytes(256)),
        ("extensions", ((3, bytes(256)),)),
        ("extensions", ((2, bytes(8)), (200, bytes(1000)))),
        ("extensions", ((0, b""),)),
        ("extensions", ((5, b""), (0, b"abc"))),
        ("extensions", ((256, b""),)),
        ("extensions", ((-1, b""),)),
    ],
)
def test_encode_out_of_range_raises_value_error(field, value):
    with pytest.raises(ValueError):
        encode_packet(GOOD._replace(**{field: value}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq_nr", 65535),
        ("seq_nr", 0),
        ("ack_nr", 65535),
        ("connection_id", 65535),
        ("timestamp_us", 2**32 - 1),
        ("timestamp_diff_us", 2**32 - 1),
        ("wnd_size", 2**32 - 1),
        ("type", 4),
        ("sack", bytes(255)),
        ("extensions", ((3, bytes(255)),)),
    ],
)
def test_encode_boundary_values_accepted(field, value):
    p = GOOD._replace(**{field: value})
    assert decode_packet(encode_packet(p)) == expected_roundtrip(p)


@given(
    st.sampled_from(["seq_nr", "ack_nr", "connection_id"]),
    st.one_of(st.integers(max_value=-1), st.integers(min_value=65536)),
)
def test_encode_out_of_range_u16_hypothesis(field, value):
    with pytest.raises(ValueError):
        encode_packet(GOOD._replace(**{field: value}))


@given(
    st.sampled_from(["timestamp_us", "timestamp_diff_us", "wnd_size"]),
    st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32)),
)
def test_encode_out_of_range_u32_hypothesis(field, value):
    with pytest.raises(ValueError):
        encode_packet(GOOD._replace(**{field: value}))


def test_encode_rejects_extension_2_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="extension 2"):
        encode_packet(Packet(ST_DATA, 0, 0, 0, 0, 0, 0, b"", None, ((2, b"abc"),)))


# ---------------------------------------------------------------------------
# 32-bit timestamps
# ---------------------------------------------------------------------------

M32 = 2**32
stamps = st.integers(0, M32 - 1)


def test_wrap_constants():
    assert SEQ_MASK == 2**16 - 1
    assert TS_MASK == M32 - 1
    assert TS_HALF == M32 // 2


def test_ts_lt_wrap_and_tie():
    assert ts_lt(2**32 - 1, 0)
    assert not ts_lt(0, 2**32 - 1)
    assert ts_lt(2**32 - 100, 100)
    assert ts_lt(0, 2**31 - 1)
    assert not ts_lt(2**31 - 1, 0)
    assert ts_lt(2**31 + 1, 0)
    assert not ts_lt(0, 2**31 + 1)
    # exact tie at half the space: neither is less
    for a in (0, 1, 2**31, 2**32 - 1):
        b = (a + 2**31) % M32
        assert not ts_lt(a, b)
        assert not ts_lt(b, a)
    assert not ts_lt(7, 7)


@settings(max_examples=500)
@given(stamps, stamps)
@example(0, 2**31)
@example(2**32 - 1, 0)
def test_ts_lt_shorter_distance_wins(a, b):
    forward = (b - a) % M32
    backward = (a - b) % M32
    assert ts_lt(a, b) == (forward < backward)
    assert not (ts_lt(a, b) and ts_lt(b, a))


@settings(max_examples=300)
@given(stamps, st.integers(1, 2**31 - 1))
@example(2**32 - 1, 1)
def test_ts_lt_forward_below_half(a, n):
    b = (a + n) % M32
    assert ts_lt(a, b)
    assert not ts_lt(b, a)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (0.0, 0),
        (0, 0),
        (0.25, 250_000),
        (1.5, 1_500_000),
        (1, 1_000_000),
        (4294, 4_294_000_000),
        (4295, 4_295_000_000 - 2**32),  # wraps past 2**32 - 1
        (4295.0, 32_704),
        (2**32, 0),  # 2**32 seconds = 2**32 * 10**6 microseconds = 0 mod 2**32
    ],
)
def test_to_timestamp_us_exact(now, expected):
    result = to_timestamp_us(now)
    assert result == expected
    assert isinstance(result, int)


@given(st.integers(0, 9 * 10**9))
def test_to_timestamp_us_integer_seconds(seconds):
    # integer seconds are exact in a double up to 2**53 microseconds
    assert to_timestamp_us(float(seconds)) == (seconds * 10**6) % M32
    assert to_timestamp_us(seconds) == (seconds * 10**6) % M32


@settings(max_examples=300)
@given(st.floats(0, 2e9, allow_nan=False, allow_infinity=False))
@example(4294.967295)
@example(4294.967296)
@example(1_700_000_000.123456)
def test_to_timestamp_us_in_range(now):
    result = to_timestamp_us(now)
    assert isinstance(result, int)
    assert 0 <= result <= TS_MASK


@settings(max_examples=300)
@given(st.floats(0, 2e9, allow_nan=False, allow_infinity=False), st.integers(0, 2**31 - 1))
@example(4294.967, 1000)
@example(4294.967295, 1)
def test_to_timestamp_us_distance_survives_wrap(now, delta_us):
    later = now + delta_us / 1e6
    d = (to_timestamp_us(later) - to_timestamp_us(now)) & TS_MASK
    # float rounding of large times: allow a small error (a double near 2e9 s has ~0.24 us resolution)
    expected = round((later - now) * 1e6)
    assert abs(((d - expected + 2**31) % M32) - 2**31) <= 2
