"""Tests for a connection's clocks: keep-alives, retransmission and SYN timeouts.

Contexts get scripted random sources, so connection ids and initial sequence
numbers are known; time only moves when a test says so, to the deadlines the
context itself asks for with ``get_timer()``. (The RTT estimator has its own
tests in ``test_rtt.py``; the timer table in ``test_timer_table.py``.)
"""

from __future__ import annotations

import itertools
import struct

import pytest

from tests.helpers import A_ID, A_ISN, B_ISN, STATE, U16, A, B, Pair, ScriptedBits, drain, packet, sent
from txutp.engine import (
    Connected,
    ConnectionState,
    ConnectionTimedOut,
    DataReceived,
    UTPConfig,
    UTPContext,
    decode_packet,
)
from txutp.engine._packet import ST_DATA, ST_STATE, ST_SYN


def decoded(ctx: UTPContext, now: float) -> list:
    return [p for p, _ in sent(ctx, now)]


def events(ctx: UTPContext) -> list:
    return [e for _, e in drain(ctx)]


def run_timers(ctx: UTPContext, until: float):
    """Drive one context's timers; yield ``(time, packets sent, events)`` at each deadline."""
    while (t := ctx.get_timer()) is not None and t <= until:
        ctx.handle_timer(t)
        yield t, decoded(ctx, t), events(ctx)


# ---------------------------------------------------------------------------
# keep-alive
# ---------------------------------------------------------------------------


def send_packets(pair: Pair, side: str, count: int, now: float) -> float:
    """Send ``count`` small DATA packets from one side, each delivered and ACKed before the next."""
    conn = pair.client if side == "a" else pair.server
    for i in range(count):
        conn.send(bytes([65 + i]) * 10, now)
        log = pair.pump(now)
        assert [p.type for n, p in log if n == side] == [ST_DATA]
        now += 0.5
    return now


@pytest.mark.parametrize(
    ("a_packets", "b_packets"),
    [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (3, 2)],
    ids=lambda n: str(n),
)
def test_keepalive_after_29_idle_seconds(a_packets, b_packets):
    config = UTPConfig()
    assert config.keepalive_interval == 29.0
    pair = Pair(config)
    now = send_packets(pair, "a", a_packets, 1.0)
    now = send_packets(pair, "b", b_packets, now)
    received = [e for _, e in pair.events if isinstance(e, DataReceived)]
    assert sum(len(e.data) for e in received) == 10 * (a_packets + b_packets)
    pair.events.clear()
    # Let handshake leftovers (the initiator's confirming ACK resends) play out.
    pair.run(now + 20.0)
    assert pair.events == []

    # Each side's ack_nr: the last sequence number it received in order.
    ack = {"a": (B_ISN - 1 + b_packets) & U16, "b": (A_ISN + a_packets) & U16}
    seq = {"a": (A_ISN + 1 + a_packets) & U16, "b": (B_ISN + b_packets) & U16}
    conns = {"a": pair.client, "b": pair.server}
    ctxs = {"a": pair.a, "b": pair.b}
    keepalives = {"a": [], "b": []}
    end = now + 20.0 + 3 * config.keepalive_interval + 1.0
    while (t := pair.next_deadline()) is not None and t <= end:
        pair.a.handle_timer(t)
        pair.b.handle_timer(t)
        out = {name: ctxs[name].datagrams_to_send(t) for name in ("a", "b")}
        for name, datagrams in out.items():
            if not datagrams:
                continue
            [data] = [d for d, _ in datagrams]
            ka = decode_packet(data)
            assert ka.type == ST_STATE
            assert ka.connection_id == conns[name].send_id
            assert ka.ack_nr == (ack[name] - 1) & U16  # libutp's form: ack_nr - 1
            assert ka.seq_nr == seq[name]
            assert ka.sack is None and ka.payload == b""
            assert t == pytest.approx(pair.last_send[name] + config.keepalive_interval)
            pair.last_send[name] = t
            keepalives[name].append(t)
        # The other side takes the keep-alive silently: no reply, no event, no state change.
        for data, _ in out["a"]:
            assert pair.b.receive_datagram(data, A, t)
        for data, _ in out["b"]:
            assert pair.a.receive_datagram(data, B, t)
        assert decoded(pair.a, t) == [], "A answered a keep-alive"
        assert decoded(pair.b, t) == [], "B answered a keep-alive"
        assert drain(pair.a) == [] and drain(pair.b) == []
        assert pair.client.state is pair.server.state is ConnectionState.CONNECTED
    assert len(keepalives["a"]) >= 3
    assert len(keepalives["b"]) >= 3
    for name in ("a", "b"):
        gaps = [y - x for x, y in zip(keepalives[name], keepalives[name][1:])]
        assert gaps == pytest.approx([config.keepalive_interval] * len(gaps))
    assert pair.client.duplicate_packets == pair.server.duplicate_packets == 0


def test_keepalive_is_not_a_duplicate_ack():
    """Keep-alives (ack_nr - 1) arriving while we have data in flight never trigger a fast retransmit."""
    pair = Pair()
    send_packets(pair, "a", 1, 1.0)
    send_packets(pair, "b", 1, 2.0)
    conn_b = pair.server
    # B sends more data; it is lost.
    conn_b.send(b"lost", 3.0)
    [lost] = decoded(pair.b, 3.0)
    assert lost.type == ST_DATA and lost.payload == b"lost"
    a_ack = (B_ISN + 0) & U16  # A received B's packet B_ISN only
    a_seq = (A_ISN + 2) & U16
    a_id = pair.client.send_id
    wnd = pair.client.config.recv_buffer_size
    # A's keep-alive, five times over (wnd unchanged, so a real dup ACK would count).
    for i in range(5):
        assert pair.b.receive_datagram(packet(STATE, a_id, a_seq, (a_ack - 1) & U16, wnd=wnd), A, 3.01 + i * 0.01)
        assert decoded(pair.b, 3.01 + i * 0.01) == []
    assert conn_b.stats().fast_retransmits == 0
    assert conn_b.state is ConnectionState.CONNECTED
    assert drain(pair.b) == []
    # Control: three genuine duplicate ACKs of the same packet do trigger the fast retransmit.
    for i in range(3):
        pair.b.receive_datagram(packet(STATE, a_id, a_seq, a_ack, wnd=wnd), A, 3.1 + i * 0.01)
    [resent] = decoded(pair.b, 3.2)
    assert (resent.type, resent.seq_nr, resent.payload) == (ST_DATA, lost.seq_nr, b"lost")
    assert conn_b.stats().fast_retransmits == 1


def test_no_keepalive_while_sending():
    """Anything sent restarts the 29 s: a connection that keeps talking sends no keep-alive."""
    config = UTPConfig()
    pair = Pair(config)
    pair.run(10.0)
    for step in range(1, 8):
        now = 10.0 + step * 20.0
        log = pair.run(now - 0.001)
        assert [p for _, name, p in log if name == "a"] == []
        pair.client.send(b"ping", now)
        pair.pump(now)
    assert pair.client.get_timer() == pytest.approx(now + config.keepalive_interval)


# ---------------------------------------------------------------------------
# retransmission timeout
# ---------------------------------------------------------------------------


def connected_initiator(config: UTPConfig | None = None, rtt: float = 0.1):
    """A context with one CONNECTED outgoing connection; the peer's SYN-ACK is hand-built."""
    ctx = UTPContext(config, random_bits=ScriptedBits(A_ID, A_ISN))
    conn = ctx.connect(B, 0.0)
    [syn] = decoded(ctx, 0.0)
    assert (syn.type, syn.connection_id, syn.seq_nr) == (ST_SYN, A_ID, A_ISN)
    ctx.receive_datagram(packet(STATE, A_ID, B_ISN, A_ISN), B, rtt)
    assert events(ctx) == [Connected()]
    decoded(ctx, rtt)  # the confirming ACK
    return ctx, conn


def retransmissions_until_timeout(ctx, conn, payload: bytes, start: float):
    """Send one DATA with a silent peer; return (send times of that DATA, packets, event time, events).

    The first resend is the tail-loss probe (RFC 8985), a PTO after the original; then one per
    retransmission timeout, backed off.
    """
    conn.send(payload, start)
    [first] = [p for p in decoded(ctx, start) if p.type == ST_DATA]
    times, packets = [start], [first]
    for t, out, evs in run_timers(ctx, 10_000.0):
        data = [p for p in out if p.type == ST_DATA]
        if data:
            times.append(t)
            packets += data
        if evs:
            return times, packets, t, evs
    raise AssertionError("the connection never timed out")


def assert_backoff(gaps, max_rto):
    assert all(y >= x - 1e-9 for x, y in itertools.pairwise(gaps)), "gaps between retransmissions must not shrink"
    for x, y in itertools.pairwise(gaps):
        assert y == pytest.approx(min(2 * x, max_rto))
    assert max(gaps) <= max_rto + 1e-9


def pto(srtt: float, rttvar: float) -> float:
    """The tail-loss probe timeout of a connection with these estimates (see _recovery)."""
    return srtt + max(4 * rttvar, 0.001) + 0.010


def test_rto_backoff_and_timeout():
    config = UTPConfig()
    ctx, conn = connected_initiator(config)
    times, packets, end, evs = retransmissions_until_timeout(ctx, conn, b"hello", 1.0)
    # One original transmission, one tail-loss probe, then one retransmission per timeout.
    assert len(times) == 2 + config.max_retransmits
    gaps = [y - x for x, y in itertools.pairwise(times)]
    assert gaps[0] == pytest.approx(pto(0.1, 0.05))  # the handshake measured 0.1 s
    assert conn.stats().tail_loss_probes == 1
    gaps = gaps[1:]
    assert gaps[0] >= config.min_rto
    assert_backoff(gaps, config.max_rto)
    assert gaps[-1] == config.max_rto  # 8 doublings of 0.5 s reach the 60 s cap
    # The last retransmission also times out, after a backed-off RTO, and then the connection gives up.
    assert end - times[-1] == pytest.approx(min(2 * gaps[-1], config.max_rto))
    assert evs == [ConnectionTimedOut(during_handshake=False)]
    assert conn.state is ConnectionState.CLOSED
    assert ctx.connections == {}
    assert ctx.get_timer() is None
    assert ctx.datagrams_to_send(end + 100) == []
    # Every retransmission is the same packet (only the timestamps may change).
    for p in packets:
        assert (p.type, p.connection_id, p.seq_nr, p.ack_nr, p.payload) == (
            ST_DATA,
            A_ID + 1,
            A_ISN + 1,
            B_ISN - 1,
            b"hello",
        )
    stats = conn.stats()
    assert stats.retransmissions == config.max_retransmits + 1
    assert stats.timeouts == config.max_retransmits


def test_rto_cap_with_small_max_rto():
    config = UTPConfig(max_rto=4.0)
    ctx, conn = connected_initiator(config)
    times, _, _, evs = retransmissions_until_timeout(ctx, conn, b"x", 1.0)
    gaps = [y - x for x, y in itertools.pairwise(times)][1:]  # after the tail-loss probe
    assert_backoff(gaps, 4.0)
    assert gaps[:4] == pytest.approx([0.5, 1.0, 2.0, 4.0])
    assert gaps[4:] == pytest.approx([4.0] * (len(gaps) - 4))
    assert evs == [ConnectionTimedOut(during_handshake=False)]


def test_fewer_max_retransmits_time_out_earlier():
    ctx, conn = connected_initiator(UTPConfig())
    _, _, default_end, _ = retransmissions_until_timeout(ctx, conn, b"x", 1.0)
    ctx, conn = connected_initiator(UTPConfig(max_retransmits=3))
    times, _, end, evs = retransmissions_until_timeout(ctx, conn, b"x", 1.0)
    assert len(times) == 2 + 3
    assert evs == [ConnectionTimedOut(during_handshake=False)]
    assert conn.state is ConnectionState.CLOSED
    assert end < default_end
    gaps = [y - x for x, y in itertools.pairwise(times)]
    assert end - times[-1] == pytest.approx(2 * gaps[-1])


def test_ack_resets_backoff_and_timeout_count():
    config = UTPConfig(max_retransmits=3)
    ctx, conn = connected_initiator(config)
    conn.send(b"one", 1.0)
    decoded(ctx, 1.0)
    resend_times = []
    probe = 1.0 + pto(0.1, 0.05)
    for t, out, _ in run_timers(ctx, probe + 0.5 + 1.0 + 0.01):
        if any(p.type == ST_DATA for p in out):
            resend_times.append(t)
    # The tail-loss probe, then two timeouts: the RTO is now 2 s.
    assert resend_times == pytest.approx([probe, probe + 0.5, probe + 1.5])
    assert conn.stats().timeouts == 2
    rtt_before = conn.stats().rtt
    # The peer finally ACKs (the retransmission): backoff and the timeout count are forgotten.
    ctx.receive_datagram(packet(STATE, A_ID, B_ISN, A_ISN + 1), B, 3.0)
    assert conn.stats().rtt == rtt_before  # Karn: no sample from a retransmitted packet
    assert conn.stats().rto == pytest.approx(0.5)
    decoded(ctx, 3.0)
    times, packets, _, evs = retransmissions_until_timeout(ctx, conn, b"two", 3.5)
    assert {p.payload for p in packets} == {b"two"}
    assert times[2] - times[1] == pytest.approx(0.5)  # back to the un-backed-off RTO after the probe
    assert len(times) == 2 + 3  # a probe and three fresh timeouts allowed
    assert evs == [ConnectionTimedOut(during_handshake=False)]


def test_no_rto_without_data_in_flight():
    ctx, conn = connected_initiator()
    sent_types = [p.type for _, out, _ in run_timers(ctx, 200.0) for p in out]
    assert ST_DATA not in sent_types
    assert conn.state is ConnectionState.CONNECTED
    assert conn.stats().timeouts == 0


# ---------------------------------------------------------------------------
# SYN retransmission
# ---------------------------------------------------------------------------


def syn_schedule(config: UTPConfig):
    ctx = UTPContext(config, random_bits=ScriptedBits(A_ID, A_ISN))
    conn = ctx.connect(B, 0.0)
    raw = [d for d, _ in ctx.datagrams_to_send(0.0)]
    times = [0.0]
    end = evs = None
    while (t := ctx.get_timer()) is not None:
        ctx.handle_timer(t)
        out = [d for d, _ in ctx.datagrams_to_send(t)]
        if out:
            times += [t] * len(out)
            raw += out
        got = events(ctx)
        if got:
            end, evs = t, got
            break
    return ctx, conn, times, raw, end, evs


def test_syn_retransmission_schedule():
    config = UTPConfig()
    assert (config.syn_timeout, config.syn_retries) == (3.0, 2)
    ctx, conn, times, raw, end, evs = syn_schedule(config)
    assert times == [0.0, 3.0, 9.0]
    assert end == 21.0
    assert evs == [ConnectionTimedOut(during_handshake=True)]
    assert conn.state is ConnectionState.CLOSED
    assert ctx.connections == {}
    assert ctx.get_timer() is None
    assert ctx.datagrams_to_send(30.0) == []
    # The SYNs are the same bytes except the timestamp field (bytes 4..7).
    for data, t in zip(raw, times):
        assert len(data) == 20
        assert data[:4] == raw[0][:4]
        assert data[8:] == raw[0][8:]
        assert struct.unpack(">I", data[4:8])[0] == int(t * 1_000_000)
        syn = decode_packet(data)
        assert (syn.type, syn.connection_id, syn.seq_nr, syn.ack_nr) == (ST_SYN, A_ID, A_ISN, 0)
    assert conn.stats().retransmissions == 2


@pytest.mark.parametrize(
    ("syn_timeout", "syn_retries", "times", "end"),
    [(3.0, 0, [0.0], 3.0), (1.0, 3, [0.0, 1.0, 3.0, 7.0], 15.0), (0.5, 1, [0.0, 0.5], 1.5)],
)
def test_syn_retransmission_configurable(syn_timeout, syn_retries, times, end):
    config = UTPConfig(syn_timeout=syn_timeout, syn_retries=syn_retries)
    _, _, got_times, _, got_end, evs = syn_schedule(config)
    assert got_times == times
    assert got_end == end
    assert evs == [ConnectionTimedOut(during_handshake=True)]


def test_syn_ack_after_a_retransmitted_syn_connects():
    ctx = UTPContext(random_bits=ScriptedBits(A_ID, A_ISN))
    conn = ctx.connect(B, 0.0)
    decoded(ctx, 0.0)
    ctx.handle_timer(3.0)
    [syn] = decoded(ctx, 3.0)
    assert syn.type == ST_SYN
    ctx.receive_datagram(packet(STATE, A_ID, B_ISN, A_ISN), B, 3.2)
    assert events(ctx) == [Connected()]
    assert conn.state is ConnectionState.CONNECTED
    # Karn: the SYN was sent twice, so the 0.2 s (or 3.2 s) is not an RTT sample.
    assert conn.stats().rtt is None
    for _t, out, evs in run_timers(ctx, 25.0):
        assert ST_SYN not in [p.type for p in out]
        assert evs == []
    assert conn.state is ConnectionState.CONNECTED
