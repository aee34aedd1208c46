"""Tests for the engine's clocks: the RTT estimator, keep-alives, retransmission and SYN timeouts.

Contexts get scripted random sources, so connection ids and initial sequence
numbers are known; time only moves when a test says so, to the deadlines the
context itself asks for with ``get_timer()``.
"""

from __future__ import annotations

import itertools
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txutp.engine import (
    Connected,
    ConnectionState,
    ConnectionTimedOut,
    DataReceived,
    RTTEstimator,
    UTPConfig,
    UTPContext,
    decode_packet,
)
from txutp.engine._packet import ST_DATA, ST_STATE, ST_SYN

DATA, FIN, STATE, RESET, SYN = 0x01, 0x11, 0x21, 0x31, 0x41
U16 = 0xFFFF

A = ("10.0.0.1", 6881)  # the initiator
B = ("10.0.0.2", 6881)  # the acceptor

A_ID = 0x4000  # A's recv_id; A's send_id is A_ID + 1
A_ISN = 5000  # A's SYN seq_nr
B_ISN = 9000  # B's ISN (the SYN-ACK's seq_nr)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


class ScriptedBits:
    """A ``random_bits`` stand-in returning the scripted values, then a seeded sequence."""

    def __init__(self, *values: int, seed: int = 0) -> None:
        self.values = list(values)
        self._fallback = random.Random(seed)

    def __call__(self, k: int) -> int:
        if self.values:
            return self.values.pop(0)
        return self._fallback.getrandbits(k)


def pkt(type_version: int, conn_id: int, seq_nr: int, ack_nr: int, payload: bytes = b"", *, ts=1, tsd=0, wnd=1 << 20):
    return struct.pack(">BBHIIIHH", type_version, 0, conn_id, ts, tsd, wnd, seq_nr, ack_nr) + payload


def decoded(ctx: UTPContext, now: float) -> list:
    return [decode_packet(data) for data, _ in ctx.datagrams_to_send(now)]


def drain(ctx: UTPContext) -> list:
    out = []
    while (item := ctx.next_event()) is not None:
        out.append(item[1])
    return out


class Pair:
    """Two contexts wired back to back with no delay and no loss; datagrams are moved by hand."""

    def __init__(self, config: UTPConfig | None = None) -> None:
        self.a = UTPContext(config, random_bits=ScriptedBits(A_ID, A_ISN))
        self.b = UTPContext(config, accepting=True, random_bits=ScriptedBits(B_ISN))
        self.last_send = {"a": None, "b": None}
        self.events: list = []

    def pump(self, now: float) -> list:
        """Deliver until both sides are quiet; return ``(sender, packet)`` for everything moved."""
        log = []
        moving = True
        while moving:
            moving = False
            for name, src, dst, addr in (("a", self.a, self.b, A), ("b", self.b, self.a, B)):
                for data, _ in src.datagrams_to_send(now):
                    moving = True
                    self.last_send[name] = now
                    log.append((name, decode_packet(data)))
                    dst.receive_datagram(data, addr, now)
            self.events += [(n, e) for n, ctx in (("a", self.a), ("b", self.b)) for e in drain(ctx)]
        return log

    def next_deadline(self) -> float | None:
        deadlines = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
        return min(deadlines) if deadlines else None

    def run(self, until: float) -> list:
        """Fire timers (both sides) at the deadlines they ask for, up to ``until``, pumping after each."""
        log = []
        while (t := self.next_deadline()) is not None and t <= until:
            self.a.handle_timer(t)
            self.b.handle_timer(t)
            log += [(t, name, p) for name, p in self.pump(t)]
        return log

    def connect(self, now: float = 0.0):
        conn_a = self.a.connect(B, now)
        self.pump(now)
        conn_b = self.b.connections[(A, (A_ID + 1) & U16)]
        assert conn_a.state is conn_b.state is ConnectionState.CONNECTED
        assert ("a", Connected()) in self.events and ("b", Connected()) in self.events
        self.events.clear()
        return conn_a, conn_b


def run_timers(ctx: UTPContext, until: float):
    """Drive one context's timers; yield ``(time, packets sent, events)`` at each deadline."""
    while (t := ctx.get_timer()) is not None and t <= until:
        ctx.handle_timer(t)
        yield t, decoded(ctx, t), drain(ctx)


# ---------------------------------------------------------------------------
# RTTEstimator
# ---------------------------------------------------------------------------


def reference_estimates(samples, min_rto, max_rto):
    """libutp's estimator, written out independently."""
    srtt = rttvar = None
    for s in samples:
        if srtt is None:
            srtt, rttvar = s, s / 2
        else:
            rttvar += (abs(srtt - s) - rttvar) / 4
            srtt += (s - srtt) / 8
    return srtt, rttvar, min(max(srtt + 4 * rttvar, min_rto), max_rto)


def test_rtt_initial_state():
    est = RTTEstimator(1.0, 0.5, 60.0)
    assert est.rto == 1.0
    assert est.srtt is None
    assert est.min_rtt is None
    assert est.latest is None


@pytest.mark.parametrize(("initial", "expected"), [(0.1, 0.5), (1.0, 1.0), (3.0, 3.0), (100.0, 60.0)])
def test_rtt_initial_rto_is_clamped(initial, expected):
    assert RTTEstimator(initial, 0.5, 60.0).rto == expected


def test_rtt_first_sample():
    est = RTTEstimator(1.0, 0.1, 60.0)
    est.on_sample(0.2)
    assert est.srtt == pytest.approx(0.2)
    assert est.rttvar == pytest.approx(0.1)
    assert est.rto == pytest.approx(0.2 + 4 * 0.1)
    assert est.latest == est.min_rtt == 0.2


def test_rtt_ewma_by_hand():
    est = RTTEstimator(1.0, 0.01, 60.0)
    est.on_sample(0.100)  # srtt 0.100, var 0.050
    est.on_sample(0.300)  # var += (0.2 - 0.05)/4 -> 0.0875; srtt += 0.2/8 -> 0.125
    assert est.rttvar == pytest.approx(0.0875)
    assert est.srtt == pytest.approx(0.125)
    est.on_sample(0.125)  # var += (0 - 0.0875)/4 -> 0.065625; srtt unchanged
    assert est.rttvar == pytest.approx(0.065625)
    assert est.srtt == pytest.approx(0.125)
    assert est.rto == pytest.approx(0.125 + 4 * 0.065625)
    assert est.min_rtt == 0.1
    assert est.latest == 0.125


def test_rtt_rto_clamped_to_min_and_max():
    est = RTTEstimator(1.0, 0.5, 60.0)
    est.on_sample(0.01)
    assert est.rto == 0.5
    est = RTTEstimator(1.0, 0.5, 60.0)
    est.on_sample(30.0)
    assert est.rto == 60.0


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(st.floats(0.0, 20.0, allow_nan=False), min_size=1, max_size=40),
    min_rto=st.floats(0.05, 2.0),
    span=st.floats(0.0, 100.0),
)
def test_rtt_matches_the_libutp_formula(samples, min_rto, span):
    max_rto = min_rto + span
    est = RTTEstimator(1.0, min_rto, max_rto)
    for s in samples:
        est.on_sample(s)
    srtt, rttvar, rto = reference_estimates(samples, min_rto, max_rto)
    assert est.srtt == pytest.approx(srtt)
    assert est.rttvar == pytest.approx(rttvar)
    assert est.rto == pytest.approx(rto)
    assert min_rto <= est.rto <= max_rto
    assert est.min_rtt == min(samples)
    assert est.latest == samples[-1]


def test_rtt_negative_sample_is_ignored():
    est = RTTEstimator(1.0, 0.5, 60.0)
    est.on_sample(-0.1)
    assert est.srtt is None
    assert est.rto == 1.0
    est.on_sample(0.4)
    est.on_sample(-5.0)
    assert est.srtt == pytest.approx(0.4)
    assert est.latest == 0.4


def test_rtt_backoff_doubles_up_to_max_rto():
    est = RTTEstimator(1.0, 0.5, 60.0)
    seen = [est.rto]
    for _ in range(10):
        est.backoff()
        seen.append(est.rto)
    assert seen == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60]


def test_rtt_backoff_from_a_measured_rto():
    est = RTTEstimator(1.0, 0.5, 10.0)
    est.on_sample(0.3)  # rto 0.3 + 0.6 = 0.9
    base = est.rto
    assert base == pytest.approx(0.9)
    seen = []
    for _ in range(6):
        est.backoff()
        seen.append(est.rto)
    assert seen == pytest.approx([1.8, 3.6, 7.2, 10.0, 10.0, 10.0])


@settings(max_examples=100, deadline=None)
@given(initial=st.floats(0.01, 100.0), n=st.integers(0, 40))
def test_rtt_backoff_never_exceeds_max_and_never_shrinks(initial, n):
    est = RTTEstimator(initial, 0.2, 60.0)
    prev = est.rto
    for _ in range(n):
        est.backoff()
        assert prev <= est.rto <= 60.0
        assert est.rto == pytest.approx(min(prev * 2, 60.0))
        prev = est.rto


def test_rtt_new_sample_resets_backoff():
    est = RTTEstimator(1.0, 0.5, 60.0)
    est.on_sample(0.2)  # rto 0.6
    for _ in range(4):
        est.backoff()
    assert est.rto == pytest.approx(9.6)
    est.on_sample(0.2)  # var 0.075, srtt 0.2
    assert est.rto == pytest.approx(0.2 + 4 * 0.075)


def test_rtt_reset_backoff():
    est = RTTEstimator(1.0, 0.5, 60.0)
    est.backoff()
    est.backoff()
    assert est.rto == 4.0
    est.reset_backoff()
    assert est.rto == 1.0


# ---------------------------------------------------------------------------
# keep-alive
# ---------------------------------------------------------------------------


def send_packets(pair: Pair, side: str, count: int, now: float) -> float:
    """Send ``count`` small DATA packets from one side, each delivered and ACKed before the next."""
    conn = pair.a_conn if side == "a" else pair.b_conn
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
    pair.a_conn, pair.b_conn = pair.connect(0.0)
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
    conns = {"a": pair.a_conn, "b": pair.b_conn}
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
        assert pair.a_conn.state is pair.b_conn.state is ConnectionState.CONNECTED
    assert len(keepalives["a"]) >= 3
    assert len(keepalives["b"]) >= 3
    for name in ("a", "b"):
        gaps = [y - x for x, y in zip(keepalives[name], keepalives[name][1:])]
        assert gaps == pytest.approx([config.keepalive_interval] * len(gaps))
    assert pair.a_conn.duplicate_packets == pair.b_conn.duplicate_packets == 0


def test_keepalive_is_not_a_duplicate_ack():
    """Keep-alives (ack_nr - 1) arriving while we have data in flight never trigger a fast retransmit."""
    pair = Pair()
    pair.a_conn, pair.b_conn = pair.connect(0.0)
    send_packets(pair, "a", 1, 1.0)
    send_packets(pair, "b", 1, 2.0)
    conn_b = pair.b_conn
    # B sends more data; it is lost.
    conn_b.send(b"lost", 3.0)
    [lost] = decoded(pair.b, 3.0)
    assert lost.type == ST_DATA and lost.payload == b"lost"
    a_ack = (B_ISN + 0) & U16  # A received B's packet B_ISN only
    a_seq = (A_ISN + 2) & U16
    a_id = pair.a_conn.send_id
    wnd = pair.a_conn.config.recv_buffer_size
    # A's keep-alive, five times over (wnd unchanged, so a real dup ACK would count).
    for i in range(5):
        assert pair.b.receive_datagram(pkt(STATE, a_id, a_seq, (a_ack - 1) & U16, wnd=wnd), A, 3.01 + i * 0.01)
        assert decoded(pair.b, 3.01 + i * 0.01) == []
    assert conn_b.stats().fast_retransmits == 0
    assert conn_b.state is ConnectionState.CONNECTED
    assert drain(pair.b) == []
    # Control: three genuine duplicate ACKs of the same packet do trigger the fast retransmit.
    for i in range(3):
        pair.b.receive_datagram(pkt(STATE, a_id, a_seq, a_ack, wnd=wnd), A, 3.1 + i * 0.01)
    [resent] = decoded(pair.b, 3.2)
    assert (resent.type, resent.seq_nr, resent.payload) == (ST_DATA, lost.seq_nr, b"lost")
    assert conn_b.stats().fast_retransmits == 1


def test_no_keepalive_while_sending():
    """Anything sent restarts the 29 s: a connection that keeps talking sends no keep-alive."""
    config = UTPConfig()
    pair = Pair(config)
    pair.a_conn, pair.b_conn = pair.connect(0.0)
    pair.run(10.0)
    for step in range(1, 8):
        now = 10.0 + step * 20.0
        log = pair.run(now - 0.001)
        assert [p for _, name, p in log if name == "a"] == []
        pair.a_conn.send(b"ping", now)
        pair.pump(now)
    assert pair.a_conn.get_timer() == pytest.approx(now + config.keepalive_interval)


# ---------------------------------------------------------------------------
# retransmission timeout
# ---------------------------------------------------------------------------


def connected_initiator(config: UTPConfig | None = None, rtt: float = 0.1):
    """A context with one CONNECTED outgoing connection; the peer's SYN-ACK is hand-built."""
    ctx = UTPContext(config, random_bits=ScriptedBits(A_ID, A_ISN))
    conn = ctx.connect(B, 0.0)
    [syn] = decoded(ctx, 0.0)
    assert (syn.type, syn.connection_id, syn.seq_nr) == (ST_SYN, A_ID, A_ISN)
    ctx.receive_datagram(pkt(STATE, A_ID, B_ISN, A_ISN), B, rtt)
    assert drain(ctx) == [Connected()]
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
    ctx.receive_datagram(pkt(STATE, A_ID, B_ISN, A_ISN + 1), B, 3.0)
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
        got = drain(ctx)
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
    ctx.receive_datagram(pkt(STATE, A_ID, B_ISN, A_ISN), B, 3.2)
    assert drain(ctx) == [Connected()]
    assert conn.state is ConnectionState.CONNECTED
    # Karn: the SYN was sent twice, so the 0.2 s (or 3.2 s) is not an RTT sample.
    assert conn.stats().rtt is None
    for _t, out, evs in run_timers(ctx, 25.0):
        assert ST_SYN not in [p.type for p in out]
        assert evs == []
    assert conn.state is ConnectionState.CONNECTED
