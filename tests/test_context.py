"""Tests for the demultiplexer ``txutp.engine.UTPContext``: routing, SYN acceptance, RESET policy, timers.

Every datagram is built by hand (``tests.helpers.packet``) and every random draw of the
context (connection ids, initial sequence numbers, the seq_nr of RESET replies)
comes from a scripted source, so the expected bytes are known in advance.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import DATA, FIN, RESET, STATE, SYN, U16, ScriptedBits, drain, packet, sent
from txutp.engine import (
    Connected,
    ConnectionIdInUse,
    ConnectionLimitError,
    ConnectionReset,
    ConnectionState,
    DataReceived,
    UTPConfig,
    UTPContext,
)
from txutp.engine._packet import ST_RESET, ST_STATE, ST_SYN

PEER = ("10.0.0.2", 6881)
OTHER = ("10.0.0.3", 6881)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def run_timers(ctx: UTPContext, until: float) -> list:
    """Drive the context's timers up to ``until`` as an I/O layer would; return what it sent."""
    out = []
    while (deadline := ctx.get_timer()) is not None and deadline <= until:
        ctx.handle_timer(deadline)
        out.extend(sent(ctx, deadline))
    return out


SYN_ID = 0x1234  # the initiator's recv_id, carried by its SYN
SYN_SEQ = 500  # the initiator's ISN
ISN = 1000  # our (acceptor) ISN, scripted


def established(isn: int = ISN, syn_id: int = SYN_ID, syn_seq: int = SYN_SEQ, config: UTPConfig | None = None):
    """An accepting context with one CONNECTED connection from ``PEER``, set up by hand.

    The peer's SYN is accepted (we draw ``isn``), then the peer proves it saw our
    SYN-ACK with a DATA whose ack_nr is ``isn - 1``.
    """
    ctx = UTPContext(config, accepting=True, random_bits=ScriptedBits(isn))
    assert ctx.receive_datagram(packet(SYN, syn_id, syn_seq, 0), PEER, 0.0)
    [(synack, addr)] = sent(ctx, 0.0)
    assert addr == PEER
    assert (synack.type, synack.connection_id, synack.seq_nr, synack.ack_nr) == (ST_STATE, syn_id, isn, syn_seq)
    conn = ctx.connections[(PEER, (syn_id + 1) & U16)]
    assert conn.state is ConnectionState.SYN_RECV
    assert ctx.receive_datagram(packet(DATA, (syn_id + 1) & U16, syn_seq + 1, (isn - 1) & U16, b"hi"), PEER, 0.1)
    assert drain(ctx) == [(conn, Connected()), (conn, DataReceived(b"hi"))]
    assert conn.state is ConnectionState.CONNECTED
    sent(ctx, 0.1)  # the ACK of the data
    return ctx, conn


# ---------------------------------------------------------------------------
# datagrams that are not uTP
# ---------------------------------------------------------------------------

DHT_PING = b"d1:ad2:id20:" + bytes(range(20)) + b"e1:q4:ping1:t2:aa1:y1:qe"

NOT_UTP = [
    pytest.param(DHT_PING, id="dht-ping"),
    pytest.param(b"", id="empty"),
    pytest.param(b"\x01", id="one-byte"),
    pytest.param(packet(DATA, 1, 1, 1)[:19], id="19-byte-header"),
    pytest.param(packet(0x02, 1, 1, 1), id="version-2-data"),
    pytest.param(packet(0x42, 1, 1, 1), id="version-2-syn"),
    pytest.param(packet(0x00, 1, 1, 1), id="version-0"),
    pytest.param(packet(0x71, 1, 1, 1), id="type-7"),
    pytest.param(packet(0x51, 1, 1, 1), id="type-5"),
    pytest.param(packet(0xF1, 1, 1, 1), id="type-15"),
    pytest.param(packet(DATA, 1, 1, 1, b"\x00\x09abc", ext=1), id="extension-runs-past-end"),
    pytest.param(packet(DATA, 1, 1, 1, b"\x00", ext=1), id="truncated-extension-header"),
    pytest.param(packet(DATA, 1, 1, 1, b"\x00\x04abcd", ext=2), id="extension-2-wrong-length"),
]


def assert_ignored(ctx: UTPContext, data: bytes, addr=PEER, now: float = 1.0) -> None:
    before = ctx.stats.not_utp
    assert ctx.receive_datagram(data, addr, now) is False
    assert ctx.stats.not_utp == before + 1
    assert ctx.datagrams_to_send(now) == []
    assert ctx.next_event() is None
    assert ctx.connections == {}
    assert ctx.get_timer() is None


@pytest.mark.parametrize("accepting", [False, True])
@pytest.mark.parametrize("data", NOT_UTP)
def test_not_utp_is_returned_to_the_caller(data, accepting):
    bits = ScriptedBits()  # strict and empty: nothing may be drawn
    ctx = UTPContext(accepting=accepting, random_bits=bits)
    assert_ignored(ctx, data)
    assert ctx.stats.datagrams_received == 1
    assert ctx.stats.unknown_connection == 0
    assert ctx.stats.resets_sent == 0
    assert bits.draws == []


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=19))
def test_short_random_bytes_are_not_utp(data):
    ctx = UTPContext(accepting=True, random_bits=ScriptedBits())
    assert_ignored(ctx, data)


@settings(max_examples=200, deadline=None)
@given(
    first=st.integers(0, 255).filter(lambda b: (b & 0x0F) != 1 or (b >> 4) > 4),
    rest=st.binary(min_size=19, max_size=60),
)
def test_wrong_version_or_type_is_not_utp(first, rest):
    ctx = UTPContext(accepting=True, random_bits=ScriptedBits())
    assert_ignored(ctx, bytes([first]) + rest)


def test_not_utp_does_not_disturb_a_live_connection():
    ctx, conn = established()
    timer = ctx.get_timer()
    for i, data in enumerate([DHT_PING, b"xyz", packet(0x71, conn.recv_id, 2, 2)]):
        assert ctx.receive_datagram(data, PEER, 1.0) is False
        assert ctx.stats.not_utp == i + 1
    assert ctx.datagrams_to_send(1.0) == []
    assert ctx.next_event() is None
    assert conn.state is ConnectionState.CONNECTED
    assert ctx.get_timer() == timer


# ---------------------------------------------------------------------------
# RESET replies to unknown connections
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ptype", [DATA, STATE, FIN])
def test_unknown_connection_gets_one_reset(ptype):
    ctx = UTPContext(random_bits=ScriptedBits(4242))
    assert ctx.receive_datagram(packet(ptype, 777, 31337, 99, b"payload" if ptype == DATA else b""), PEER, 2.0) is True
    assert ctx.stats.unknown_connection == 1
    [(reset, addr)] = sent(ctx, 2.0)
    assert addr == PEER
    assert reset.type == ST_RESET
    assert reset.connection_id == 777  # the packet's id (libutp)
    assert reset.ack_nr == 31337  # the packet's seq_nr
    assert reset.seq_nr == 4242  # the one random draw
    assert reset.payload == b""
    assert ctx.stats.resets_sent == 1
    assert ctx.next_event() is None
    assert ctx.connections == {}


@pytest.mark.parametrize("ptype", [DATA, STATE, FIN])
def test_same_unknown_packet_answered_once_per_10_seconds(ptype):
    ctx = UTPContext(random_bits=ScriptedBits(1, 2))
    data = packet(ptype, 777, 31337, 99)
    ctx.receive_datagram(data, PEER, 0.0)
    assert len(sent(ctx, 0.0)) == 1
    for now in (0.0, 0.5, 5.0, 9.9):
        assert ctx.receive_datagram(data, PEER, now) is True
        assert sent(ctx, now) == []
    assert ctx.stats.resets_sent == 1
    assert ctx.stats.resets_suppressed == 4
    # The memory lasts 10 s (libutp rst_info); after that the packet is answered again.
    ctx.receive_datagram(data, PEER, 10.5)
    [(reset, _)] = sent(ctx, 10.5)
    assert (reset.type, reset.connection_id, reset.ack_nr, reset.seq_nr) == (ST_RESET, 777, 31337, 2)


def test_reset_memory_is_per_packet():
    """Another seq_nr, id or address is a different packet and gets its own RESET."""
    ctx = UTPContext(random_bits=ScriptedBits(strict=False))
    ctx.receive_datagram(packet(DATA, 777, 1, 0), PEER, 0.0)
    ctx.receive_datagram(packet(DATA, 777, 2, 0), PEER, 0.0)
    ctx.receive_datagram(packet(DATA, 778, 1, 0), PEER, 0.0)
    ctx.receive_datagram(packet(DATA, 777, 1, 0), OTHER, 0.0)
    out = sent(ctx, 0.0)
    assert [(p.connection_id, p.ack_nr, a) for p, a in out] == [
        (777, 1, PEER),
        (777, 2, PEER),
        (778, 1, PEER),
        (777, 1, OTHER),
    ]
    assert ctx.stats.resets_suppressed == 0


@pytest.mark.parametrize("accepting", [False, True])
def test_reset_for_unknown_connection_is_never_answered(accepting):
    bits = ScriptedBits()
    ctx = UTPContext(accepting=accepting, random_bits=bits)
    for i in range(50):
        assert ctx.receive_datagram(packet(RESET, i * 1000 % 65536, i, i), PEER, i * 0.3) is True
        assert ctx.datagrams_to_send(i * 0.3) == []
    assert ctx.stats.unknown_connection == 50
    assert ctx.stats.resets_sent == 0
    assert bits.draws == []
    assert ctx.connections == {}


def test_reset_rate_is_bounded_by_a_token_bucket():
    config = UTPConfig()
    assert config.reset_rate == 100
    ctx = UTPContext(config, random_bits=ScriptedBits(strict=False, seed=7))
    for i in range(10_000):
        ctx.receive_datagram(packet(DATA, i, 1, 0), PEER, 5.0)
    burst = ctx.datagrams_to_send(5.0)
    assert 0 < len(burst) <= config.reset_rate
    assert ctx.stats.resets_sent == len(burst)
    assert ctx.stats.resets_suppressed == 10_000 - len(burst)
    assert ctx.stats.unknown_connection == 10_000

    # Time passes: the bucket refills, more RESETs are allowed, never faster than the rate.
    total = len(burst)
    for step in range(1, 21):
        now = 5.0 + step * 0.5
        for i in range(1000):
            ctx.receive_datagram(packet(DATA, i, 100 + step, 0), PEER, now)
        out = ctx.datagrams_to_send(now)
        assert 0 < len(out) <= config.reset_rate * 0.5 + 1
        total += len(out)
        assert total <= config.reset_rate * (now - 5.0) + config.reset_rate
    assert ctx.stats.resets_sent == total


def test_reset_rate_bucket_is_capped():
    """A long quiet time does not bank more than one second's worth of RESETs."""
    config = UTPConfig(reset_rate=10)
    ctx = UTPContext(config, random_bits=ScriptedBits(strict=False))
    ctx.receive_datagram(packet(DATA, 1, 1, 0), PEER, 0.0)
    assert len(ctx.datagrams_to_send(0.0)) == 1
    for i in range(1000):
        ctx.receive_datagram(packet(DATA, 2, i, 0), PEER, 1000.0)
    assert len(ctx.datagrams_to_send(1000.0)) <= 10


def test_syn_to_non_accepting_context_is_refused_with_reset():
    ctx = UTPContext(accepting=False, random_bits=ScriptedBits(999))
    assert ctx.receive_datagram(packet(SYN, 4321, 77, 0), PEER, 1.0) is True
    [(reset, addr)] = sent(ctx, 1.0)
    assert addr == PEER
    assert (reset.type, reset.connection_id, reset.ack_nr, reset.seq_nr) == (ST_RESET, 4321, 77, 999)
    assert ctx.stats.syns_refused == 1
    assert ctx.stats.syns_accepted == 0
    assert ctx.connections == {}
    assert ctx.half_open == 0
    assert ctx.next_event() is None


def test_refusing_context_ends_the_connect_with_refused_reset():
    """End to end: the refusal RESET carries the SYN's id and seq, which the initiator accepts."""
    client = UTPContext(random_bits=ScriptedBits(0x2000, 300))
    server = UTPContext(accepting=False, random_bits=ScriptedBits(5))
    conn = client.connect(PEER, 0.0)
    [(syn, _)] = client.datagrams_to_send(0.0)
    server.receive_datagram(syn, ("10.0.0.1", 1), 0.05)
    [(reset, _)] = server.datagrams_to_send(0.05)
    client.receive_datagram(reset, PEER, 0.1)
    assert drain(client) == [(conn, ConnectionReset(refused=True))]
    assert conn.state is ConnectionState.CLOSED
    assert client.datagrams_to_send(0.1) == []
    assert client.connections == {}
    assert client.get_timer() is None


# ---------------------------------------------------------------------------
# backlog and connection limits
# ---------------------------------------------------------------------------


def test_backlog_limits_half_open_connections():
    config = UTPConfig(backlog=2, syn_cookies="never")
    bits = ScriptedBits(1111, 2222, 3333)  # one ISN per accepted SYN, and no more
    ctx = UTPContext(config, accepting=True, random_bits=bits)
    for cid in (10, 20, 30):
        assert ctx.receive_datagram(packet(SYN, cid, cid * 100, 0), PEER, 0.0) is True
    out = sent(ctx, 0.0)
    # The third SYN found the backlog full: the oldest unconfirmed connection made room,
    # silently (its SYN-ACK had not even left yet).
    assert [(p.type, p.connection_id, p.seq_nr, p.ack_nr) for p, _ in out] == [
        (ST_STATE, 20, 2222, 2000),
        (ST_STATE, 30, 3333, 3000),
    ]
    assert ctx.half_open == 2
    assert set(ctx.connections) == {(PEER, 21), (PEER, 31)}
    assert ctx.stats.syns_accepted == 3
    assert ctx.stats.half_open_evicted == 1
    assert ctx.stats.syns_refused == 0
    assert ctx.next_event() is None  # an unconfirmed connection is not reported

    # Nobody confirms: the half-open connections vanish silently.
    later = run_timers(ctx, config.syn_recv_timeout + 1.0)
    assert later == []
    assert ctx.half_open == 0
    assert ctx.connections == {}
    assert ctx.next_event() is None
    assert ctx.get_timer() is None
    assert sent(ctx, config.syn_recv_timeout + 2.0) == []
    assert bits.draws == [1111, 2222, 3333]


def test_backlog_frees_up_when_a_connection_is_confirmed():
    ctx = UTPContext(UTPConfig(backlog=1), accepting=True, random_bits=ScriptedBits(1111, 2222))
    ctx.receive_datagram(packet(SYN, 10, 100, 0), PEER, 0.0)
    assert len(sent(ctx, 0.0)) == 1
    assert ctx.half_open == 1
    ctx.receive_datagram(packet(DATA, 11, 101, 1110, b"x"), PEER, 0.1)
    assert ctx.half_open == 0
    ctx.receive_datagram(packet(SYN, 20, 200, 0), PEER, 0.2)
    out = sent(ctx, 0.2)
    assert (ST_STATE, 20, 2222, 200) in [(p.type, p.connection_id, p.seq_nr, p.ack_nr) for p, _ in out]
    assert ctx.half_open == 1
    assert ctx.stats.half_open_evicted == 0


def test_a_full_backlog_evicts_the_oldest_unconfirmed_connection():
    """With SYN cookies off, a full backlog makes room by dropping its oldest entry."""
    ctx = UTPContext(
        UTPConfig(backlog=1, syn_cookies="never"), accepting=True, random_bits=ScriptedBits(1111, 2222, 3333)
    )
    ctx.receive_datagram(packet(SYN, 10, 100, 0), PEER, 0.0)
    assert len(sent(ctx, 0.0)) == 1
    ctx.receive_datagram(packet(SYN, 20, 200, 0), PEER, 1.0)
    assert [(p.connection_id, p.seq_nr) for p, _ in sent(ctx, 1.0)] == [(20, 2222)]
    assert set(ctx.connections) == {(PEER, 21)}
    # The evicted one's late confirmation finds nothing and is answered with RESET.
    ctx.receive_datagram(packet(DATA, 11, 101, 1110, b"x"), PEER, 2.0)
    assert [p.type for p, _ in sent(ctx, 2.0)] == [ST_RESET]
    assert ctx.next_event() is None


def test_reset_to_half_open_connection_frees_the_backlog():
    ctx = UTPContext(UTPConfig(backlog=1), accepting=True, random_bits=ScriptedBits(1111, 2222))
    ctx.receive_datagram(packet(SYN, 10, 100, 0), PEER, 0.0)
    sent(ctx, 0.0)
    ctx.receive_datagram(packet(RESET, 11, 101, 1111), PEER, 0.1)
    assert ctx.datagrams_to_send(0.1) == []
    assert ctx.half_open == 0
    assert ctx.connections == {}
    ctx.receive_datagram(packet(SYN, 20, 200, 0), PEER, 0.2)
    assert [(p.type, p.connection_id) for p, _ in sent(ctx, 0.2)] == [(ST_STATE, 20)]


@pytest.mark.parametrize("how", ["abort", "close"])
def test_half_open_connection_ended_locally_frees_the_backlog(how):
    """``half_open`` counts SYN_RECV connections; one ended by abort()/close() is no longer one."""
    ctx = UTPContext(UTPConfig(backlog=1), accepting=True, random_bits=ScriptedBits(1111, 2222))
    ctx.receive_datagram(packet(SYN, 10, 100, 0), PEER, 0.0)
    sent(ctx, 0.0)
    conn = ctx.connections[(PEER, 11)]
    assert conn.state is ConnectionState.SYN_RECV
    getattr(conn, how)(0.5)
    [(reset, _)] = sent(ctx, 0.5)
    assert reset.type == ST_RESET
    assert conn.state is ConnectionState.CLOSED
    assert ctx.connections == {}
    assert ctx.half_open == 0
    # The backlog slot is free again: a new SYN is accepted.
    ctx.receive_datagram(packet(SYN, 20, 200, 0), PEER, 1.0)
    assert [(p.type, p.connection_id, p.seq_nr) for p, _ in sent(ctx, 1.0)] == [(ST_STATE, 20, 2222)]
    assert ctx.stats.syns_refused == 0


def test_repeated_syn_does_not_use_the_backlog_twice():
    ctx = UTPContext(UTPConfig(backlog=2), accepting=True, random_bits=ScriptedBits(1111))
    for _ in range(5):
        ctx.receive_datagram(packet(SYN, 10, 100, 0), PEER, 0.0)
    assert ctx.half_open == 1
    assert ctx.stats.syns_accepted == 1
    assert len(ctx.connections) == 1


def test_max_connections_enforced_for_connect():
    ctx = UTPContext(UTPConfig(max_connections=2), random_bits=ScriptedBits(10, 1, 20, 2))
    ctx.connect(PEER, 0.0)
    ctx.connect(OTHER, 0.0)
    with pytest.raises(RuntimeError):
        ctx.connect(("10.0.0.4", 1), 0.0)
    assert len(ctx.connections) == 2
    assert [p.type for p, _ in sent(ctx, 0.0)] == [ST_SYN, ST_SYN]


def test_max_connections_enforced_for_syns():
    ctx = UTPContext(UTPConfig(max_connections=2), accepting=True, random_bits=ScriptedBits(10, 1, 555))
    ctx.connect(OTHER, 0.0)
    ctx.receive_datagram(packet(SYN, 100, 1, 0), PEER, 0.0)  # accepted: 2 connections
    ctx.receive_datagram(packet(SYN, 200, 2, 0), PEER, 0.0)  # over the limit: unanswered
    out = sent(ctx, 0.0)
    assert sorted((p.type, p.connection_id) for p, _ in out) == [(ST_STATE, 100), (ST_SYN, 10)]
    assert len(ctx.connections) == 2
    assert ctx.half_open == 1
    assert ctx.stats.syns_refused == 1
    assert ctx.stats.resets_sent == 0


def test_closed_connection_frees_its_slot():
    ctx = UTPContext(UTPConfig(max_connections=1), random_bits=ScriptedBits(10, 1, 20, 2))
    conn = ctx.connect(PEER, 0.0)
    sent(ctx, 0.0)
    conn.abort(0.5)
    [(reset, _)] = sent(ctx, 0.5)
    assert reset.type == ST_RESET
    assert ctx.connections == {}
    ctx.connect(PEER, 1.0)
    assert len(ctx.connections) == 1


# ---------------------------------------------------------------------------
# RESET on an established connection: id conventions and validation
# ---------------------------------------------------------------------------


def test_reset_with_our_recv_id_ends_the_connection():
    ctx, conn = established()
    assert conn.recv_id == SYN_ID + 1 and conn.send_id == SYN_ID
    # libtorrent form: the peer's send id (our recv id), ack_nr = the last seq it got from us.
    assert ctx.receive_datagram(packet(RESET, conn.recv_id, SYN_SEQ + 2, ISN - 1), PEER, 1.0) is True
    assert drain(ctx) == [(conn, ConnectionReset(refused=False))]
    assert conn.state is ConnectionState.CLOSED
    assert ctx.datagrams_to_send(1.0) == []  # a RESET is never answered
    assert ctx.connections == {}
    assert ctx.get_timer() is None


@pytest.mark.parametrize("ack_nr", [ISN, ISN - 1], ids=["ack=our-seq", "ack=our-last-seq"])
def test_reset_with_our_send_id_ends_the_connection(ack_nr):
    """libutp's reply for an unknown connection echoes the id we sent with: our send id."""
    ctx, conn = established()
    assert ctx.receive_datagram(packet(RESET, conn.send_id, 4242, ack_nr), PEER, 1.0) is True
    assert drain(ctx) == [(conn, ConnectionReset(refused=False))]
    assert conn.state is ConnectionState.CLOSED
    assert ctx.datagrams_to_send(1.0) == []
    assert ctx.connections == {}


def established_initiator():
    """A context with one CONNECTED outgoing connection (recv_id 0x2000, ISN 300); the SYN-ACK is hand-built."""
    ctx = UTPContext(random_bits=ScriptedBits(0x2000, 300))
    conn = ctx.connect(PEER, 0.0)
    sent(ctx, 0.0)
    ctx.receive_datagram(packet(STATE, 0x2000, 7000, 300), PEER, 0.1)
    assert drain(ctx) == [(conn, Connected())]
    sent(ctx, 0.1)
    return ctx, conn


@pytest.mark.parametrize("form", ["recv_id", "send_id"])
def test_reset_ends_an_outgoing_connection_with_either_id(form):
    ctx, conn = established_initiator()
    assert (conn.recv_id, conn.send_id) == (0x2000, 0x2001)
    cid = conn.recv_id if form == "recv_id" else conn.send_id
    ctx.receive_datagram(packet(RESET, cid, 7000, 300), PEER, 1.0)
    assert drain(ctx) == [(conn, ConnectionReset(refused=False))]
    assert conn.state is ConnectionState.CLOSED
    assert ctx.datagrams_to_send(1.0) == []
    assert ctx.connections == {}


def test_reset_send_id_form_across_the_id_wrap():
    """Initiator id 0xFFFF: our recv id is 0 and our send id 0xFFFF."""
    ctx, conn = established(syn_id=0xFFFF)
    assert (conn.recv_id, conn.send_id) == (0, 0xFFFF)
    ctx.receive_datagram(packet(RESET, 0xFFFF, 1, ISN), PEER, 1.0)
    assert drain(ctx) == [(conn, ConnectionReset(refused=False))]


@pytest.mark.parametrize("form", ["recv_id", "send_id"])
def test_reset_from_another_address_is_ignored(form):
    ctx, conn = established()
    cid = conn.recv_id if form == "recv_id" else conn.send_id
    assert ctx.receive_datagram(packet(RESET, cid, SYN_SEQ + 2, ISN - 1), OTHER, 1.0) is True
    assert ctx.next_event() is None
    assert conn.state is ConnectionState.CONNECTED
    assert ctx.datagrams_to_send(1.0) == []
    assert ctx.connections == {(PEER, conn.recv_id): conn}


@pytest.mark.parametrize("form", ["recv_id", "send_id"])
@pytest.mark.parametrize("offset", [5, 100, 20_000, 40_000, -5, -1000])
def test_reset_with_ack_nr_far_outside_what_we_sent_is_ignored(form, offset):
    ctx, conn = established()
    cid = conn.recv_id if form == "recv_id" else conn.send_id
    ack_nr = (ISN + offset) & U16
    dropped = conn.dropped_packets
    assert ctx.receive_datagram(packet(RESET, cid, SYN_SEQ + 2, ack_nr), PEER, 1.0) is True
    assert ctx.next_event() is None
    assert conn.state is ConnectionState.CONNECTED
    assert conn.dropped_packets == dropped + 1
    assert ctx.datagrams_to_send(1.0) == []
    # The connection still works.
    ctx.receive_datagram(packet(DATA, conn.recv_id, SYN_SEQ + 2, ISN - 1, b"more"), PEER, 1.1)
    assert drain(ctx) == [(conn, DataReceived(b"more"))]


def test_reset_with_unrelated_id_from_the_peer_is_ignored():
    ctx, conn = established()
    ctx.receive_datagram(packet(RESET, (conn.recv_id + 7) & U16, 1, ISN - 1), PEER, 1.0)
    assert ctx.next_event() is None
    assert conn.state is ConnectionState.CONNECTED
    assert ctx.datagrams_to_send(1.0) == []


# ---------------------------------------------------------------------------
# timers
# ---------------------------------------------------------------------------


def test_no_timer_without_connections():
    ctx = UTPContext(accepting=True)
    assert ctx.get_timer() is None
    ctx.handle_timer(100.0)  # harmless
    assert ctx.get_timer() is None
    assert ctx.datagrams_to_send(100.0) == []


def test_timer_after_connect_is_the_syn_timeout():
    config = UTPConfig()
    ctx = UTPContext(config, random_bits=ScriptedBits(10, 1))
    conn = ctx.connect(PEER, 7.0)
    # The documented order: events, then datagrams, then re-arm the timer.
    assert drain(ctx) == []
    [(syn, _)] = sent(ctx, 7.0)
    assert syn.type == ST_SYN
    assert ctx.get_timer() == 7.0 + config.syn_timeout
    assert conn.get_timer() == 7.0 + config.syn_timeout


def test_early_handle_timer_changes_nothing():
    config = UTPConfig()
    ctx = UTPContext(config, random_bits=ScriptedBits(10, 1))
    conn = ctx.connect(PEER, 0.0)
    sent(ctx, 0.0)
    for now in (0.0, 1.0, 2.999):
        ctx.handle_timer(now)
        assert ctx.datagrams_to_send(now) == []
        assert ctx.next_event() is None
        assert conn.state is ConnectionState.SYN_SENT
        assert ctx.get_timer() == config.syn_timeout
    # The real deadline still works.
    ctx.handle_timer(config.syn_timeout)
    [(syn, _)] = sent(ctx, config.syn_timeout)
    assert syn.type == ST_SYN


def test_stale_timer_entry_is_harmless():
    """The SYN_RECV deadline is stale once the connection is confirmed; firing at it does nothing."""
    config = UTPConfig(syn_recv_timeout=10.0)  # before the first keep-alive is due
    ctx, conn = established(config=config)
    assert ctx.get_timer() <= conn.get_timer()
    stale = config.syn_recv_timeout  # the handshake deadline armed when the SYN was accepted
    assert stale < conn.get_timer()
    ctx.handle_timer(stale)
    assert ctx.datagrams_to_send(stale) == []
    assert ctx.next_event() is None
    assert conn.state is ConnectionState.CONNECTED
    assert ctx.get_timer() == conn.get_timer() > stale


def test_timer_moves_earlier_when_a_connection_needs_it():
    config = UTPConfig(syn_recv_timeout=10.0)
    ctx, conn = established(config=config)
    conn.send(b"data", 1.0)
    [(data, _)] = sent(ctx, 1.0)
    assert data.payload == b"data"
    assert ctx.get_timer() == conn.get_timer() < config.syn_recv_timeout


# ---------------------------------------------------------------------------
# connection ids
# ---------------------------------------------------------------------------


def test_connect_ids_and_syn_fields():
    bits = ScriptedBits(0x1234, 4000)  # recv_id, then ISN
    ctx = UTPContext(random_bits=bits)
    conn = ctx.connect(PEER, 1.0)
    assert (conn.recv_id, conn.send_id) == (0x1234, 0x1235)
    [(syn, addr)] = sent(ctx, 1.0)
    assert addr == PEER
    assert (syn.type, syn.connection_id, syn.seq_nr, syn.ack_nr) == (ST_SYN, 0x1234, 4000, 0)
    assert ctx.connections == {(PEER, 0x1234): conn}


def test_connect_send_id_wraps():
    ctx = UTPContext(random_bits=ScriptedBits(0xFFFF, 1))
    conn = ctx.connect(PEER, 0.0)
    assert (conn.recv_id, conn.send_id) == (0xFFFF, 0)
    [(syn, _)] = sent(ctx, 0.0)
    assert syn.connection_id == 0xFFFF


def test_connect_retries_an_id_in_use():
    # Second connect draws 5 (taken), 4 (its send id 5 is taken), then 9.
    bits = ScriptedBits(5, 100, 5, 4, 9, 200)
    ctx = UTPContext(random_bits=bits)
    first = ctx.connect(PEER, 0.0)
    second = ctx.connect(PEER, 0.0)
    assert first.recv_id == 5
    assert (second.recv_id, second.send_id) == (9, 10)
    assert bits.draws == [5, 100, 5, 4, 9, 200]
    [(s1, _), (s2, _)] = sent(ctx, 0.0)
    assert (s1.connection_id, s1.seq_nr) == (5, 100)
    assert (s2.connection_id, s2.seq_nr) == (9, 200)


def test_connect_avoids_an_id_that_is_another_connections_send_id():
    """A RESET may carry either of a connection's ids, so two connections to one peer must not share one.

    Our first connection has ids {5, 6}. A second one with recv_id 6 would make a
    libutp-style RESET for the first (which carries its send id, 6) land on the second.
    """
    ctx = UTPContext(random_bits=ScriptedBits(5, 100, 6, 20, 200, strict=False))
    first = ctx.connect(PEER, 0.0)
    second = ctx.connect(PEER, 0.0)
    assert (first.recv_id, first.send_id) == (5, 6)
    assert {second.recv_id, second.send_id}.isdisjoint({first.recv_id, first.send_id})
    sent(ctx, 0.0)
    # The peer knows nothing of our first connection and answers it libutp's way: id = our send id.
    ctx.receive_datagram(packet(RESET, first.send_id, 4242, 100), PEER, 0.5)
    assert drain(ctx) == [(first, ConnectionReset(refused=True))]
    assert first.state is ConnectionState.CLOSED
    assert second.state is ConnectionState.SYN_SENT


def test_same_id_towards_different_addresses_is_fine():
    ctx = UTPContext(random_bits=ScriptedBits(5, 100, 5, 200))
    a = ctx.connect(PEER, 0.0)
    b = ctx.connect(OTHER, 0.0)
    assert a.recv_id == b.recv_id == 5
    assert len(ctx.connections) == 2


def test_many_connects_to_one_address_get_distinct_ids():
    ctx = UTPContext(UTPConfig(max_connections_per_host=2000), random_bits=ScriptedBits(strict=False, seed=3))
    conns = [ctx.connect(PEER, 0.0) for _ in range(2000)]
    out = sent(ctx, 0.0)
    recv_ids = [c.recv_id for c in conns]
    assert len(set(recv_ids)) == len(conns)
    assert len(ctx.connections) == len(conns)
    for conn, (syn, addr) in zip(conns, out):
        assert addr == PEER
        assert syn.type == ST_SYN
        assert syn.connection_id == conn.recv_id
        assert conn.send_id == (conn.recv_id + 1) % 2**16
        assert ctx.connections[(PEER, conn.recv_id)] is conn


def test_packets_are_routed_by_address_and_id():
    """Two connections with the same id from two addresses do not see each other's packets."""
    ctx = UTPContext(accepting=True, random_bits=ScriptedBits(1000, 2000))
    ctx.receive_datagram(packet(SYN, 50, 10, 0), PEER, 0.0)
    ctx.receive_datagram(packet(SYN, 50, 20, 0), OTHER, 0.0)
    sent(ctx, 0.0)
    a = ctx.connections[(PEER, 51)]
    b = ctx.connections[(OTHER, 51)]
    ctx.receive_datagram(packet(DATA, 51, 11, 999, b"from-peer"), PEER, 0.1)
    ctx.receive_datagram(packet(DATA, 51, 21, 1999, b"from-other"), OTHER, 0.1)
    got = drain(ctx)
    assert (a, DataReceived(b"from-peer")) in got
    assert (b, DataReceived(b"from-other")) in got
    assert len([e for e in got if isinstance(e[1], DataReceived)]) == 2


def test_syn_reusing_a_live_id_is_invalid():
    """A SYN whose id + 1 is one of our own outgoing connections is not a repeated SYN."""
    ctx = UTPContext(accepting=True, random_bits=ScriptedBits(10, 1))
    ctx.connect(PEER, 0.0)
    sent(ctx, 0.0)
    ctx.receive_datagram(packet(SYN, 9, 77, 0), PEER, 0.1)
    assert ctx.stats.invalid_packets == 1
    assert ctx.datagrams_to_send(0.1) == []
    assert len(ctx.connections) == 1


# ---------------------------------------------------------------------------
# caller-chosen connection ids (agreed out of band, as the Portal Network does)
# ---------------------------------------------------------------------------


def test_connect_on_a_chosen_id_and_refuse_a_clash():
    ctx = UTPContext(random_bits=ScriptedBits(300, 301, 302, 303))  # one ISN per connection; no id is drawn
    conn = ctx.connect(PEER, 0.0, connection_id=4000)
    assert (conn.recv_id, conn.send_id) == (4000, 4001)
    [(syn, addr)] = sent(ctx, 0.0)
    assert (syn.type, syn.connection_id, syn.seq_nr, addr) == (ST_SYN, 4000, 300, PEER)
    for clash in (3998, 3999, 4000, 4001):  # an id in use, or one a RESET by send id could be taken for
        with pytest.raises(ConnectionIdInUse, match=str(clash)):
            ctx.connect(PEER, 0.0, connection_id=clash)
    assert len(ctx.connections) == 1
    ctx.connect(PEER, 0.0, connection_id=4002)
    ctx.connect(OTHER, 0.0, connection_id=4000)  # the same id towards another address is fine
    ctx.connect(PEER, 0.0, connection_id=0xFFFF)  # sends on 0
    assert ctx.connections[(PEER, 0xFFFF)].send_id == 0


@pytest.mark.parametrize("bad", [-1, 65536, 1.0, True, None])
def test_a_chosen_id_must_be_16_bits(bad):
    ctx = UTPContext(accepting=True, random_bits=ScriptedBits(strict=False))
    with pytest.raises(ValueError, match="0 to 65535") as info:
        ctx.expect(PEER, bad, 0.0)
    assert not isinstance(info.value, ConnectionIdInUse)
    if bad is not None:
        with pytest.raises(ValueError, match="0 to 65535"):
            ctx.connect(PEER, 0.0, connection_id=bad)
    assert ctx.connections == {}


def test_a_clash_is_refused_after_the_limits():
    ctx = UTPContext(UTPConfig(max_connections=1), random_bits=ScriptedBits(strict=False))
    ctx.connect(PEER, 0.0, connection_id=10)
    with pytest.raises(ConnectionLimitError):
        ctx.connect(PEER, 0.0, connection_id=10)


def test_an_expected_syn_is_accepted_by_a_context_that_does_not_listen():
    ctx = UTPContext(random_bits=ScriptedBits(1, 2, 777, strict=False))  # not accepting; RESET seqs, then the ISN
    ctx.expect(PEER, 700, 0.0)
    with pytest.raises(ConnectionIdInUse):
        ctx.expect(PEER, 700, 0.0)
    ctx.receive_datagram(packet(SYN, 900, 1, 0), PEER, 0.0)  # another id: refused as before
    ctx.receive_datagram(packet(SYN, 700, 50, 0), OTHER, 0.0)  # another address: refused
    assert [p.type for p, _ in sent(ctx, 0.0)] == [ST_RESET, ST_RESET]
    ctx.receive_datagram(packet(SYN, 700, 50, 0), PEER, 0.0)
    conn = ctx.connections[(PEER, 701)]
    assert (conn.recv_id, conn.send_id, conn.initiator, conn.state) == (701, 700, False, ConnectionState.SYN_RECV)
    [(synack, _)] = sent(ctx, 0.0)
    assert (synack.type, synack.connection_id, synack.seq_nr, synack.ack_nr) == (ST_STATE, 700, 777, 50)
    assert ctx.stats.syns_accepted == 1 and ctx.half_open == 0  # not charged to the backlog
    ctx.receive_datagram(packet(SYN, 700, 50, 0), PEER, 0.05)  # the same SYN again: a repeat, answered
    assert [p.type for p, _ in sent(ctx, 0.05)] == [ST_STATE]
    ctx.receive_datagram(packet(DATA, 701, 51, 776, b"hi"), PEER, 0.1)
    assert drain(ctx) == [(conn, Connected()), (conn, DataReceived(b"hi"))]
    conn.abort(0.1)
    assert [p.type for p, _ in sent(ctx, 0.1)] == [ST_RESET]
    ctx.receive_datagram(packet(SYN, 700, 60, 0), PEER, 0.2)  # the expectation was used up: refused
    assert [p.type for p, _ in sent(ctx, 0.2)] == [ST_RESET] and ctx.connections == {}


def test_unexpect_withdraws_an_expectation():
    ctx = UTPContext(random_bits=ScriptedBits(strict=False))
    ctx.expect(PEER, 800, 0.2)
    ctx.unexpect(PEER, 800)
    ctx.unexpect(PEER, 800)  # nothing expected: nothing happens
    ctx.unexpect(OTHER, 1)
    ctx.receive_datagram(packet(SYN, 800, 70, 0), PEER, 0.3)
    assert [p.type for p, _ in sent(ctx, 0.3)] == [ST_RESET]
    ctx.connect(PEER, 0.3, connection_id=801)  # the id is free again


@pytest.mark.parametrize("syn_id", [697, 698, 699, 700, 701, 702])
def test_an_expectation_and_a_connection_keep_their_ids_apart(syn_id):
    """Expecting SYN id s holds receive id s + 1: the same spacing rule as between connections."""
    ctx = UTPContext(random_bits=ScriptedBits(strict=False))
    ctx.connect(PEER, 0.0, connection_id=700)  # receives on 700, sends on 701
    clash = 697 <= syn_id <= 700  # its connection would receive on 698..701
    if clash:
        with pytest.raises(ConnectionIdInUse):
            ctx.expect(PEER, syn_id, 0.0)
    else:
        ctx.expect(PEER, syn_id, 0.0)
        with pytest.raises(ConnectionIdInUse):
            ctx.connect(PEER, 0.0, connection_id=syn_id + 1)  # the id its connection will receive on


def test_an_expected_syn_is_accepted_over_the_per_host_limit_and_cookies_but_not_max_connections():
    config = UTPConfig(max_connections=2, max_connections_per_host=1, syn_cookies="always")
    ctx = UTPContext(config, accepting=True, random_bits=ScriptedBits(strict=False))
    ctx.connect(PEER, 0.0, connection_id=10)  # PEER's one connection
    sent(ctx, 0.0)
    ctx.expect(PEER, 20, 0.0)
    ctx.receive_datagram(packet(SYN, 20, 5, 0), PEER, 0.0)
    assert (PEER, 21) in ctx.connections and ctx.stats.syn_cookies_sent == 0
    ctx.expect(PEER, 30, 0.0)
    ctx.receive_datagram(packet(SYN, 30, 5, 0), PEER, 0.0)  # max_connections reached: unanswered...
    assert (PEER, 31) not in ctx.connections and ctx.stats.syns_refused == 1
    assert [p.type for p, _ in sent(ctx, 0.0)] == [ST_STATE]  # (the first one's SYN-ACK only)
    ctx.connections[(PEER, 21)].abort(0.1)
    sent(ctx, 0.1)
    ctx.receive_datagram(packet(SYN, 30, 5, 0), PEER, 0.2)  # ...and still expected: its retry gets in
    assert (PEER, 31) in ctx.connections
