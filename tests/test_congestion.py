"""Tests for the congestion-control registry and the Reno-like test controller (``tests.helpers.RenoWindow``)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import RenoWindow
from txutp.engine import (
    CongestionController,
    UTPConfig,
    UTPContext,
    _congestion,
    create_congestion_controller,
    decode_packet,
    register_congestion_controller,
)
from txutp.engine._packet import ST_DATA

MSS = 1000


def window(cwnd: int = 4 * MSS, max_cwnd: int = 100 * MSS) -> RenoWindow:
    return RenoWindow(mss=MSS, initial_cwnd=cwnd, max_cwnd=max_cwnd)


def ack(cc: RenoWindow, acked: int, *, now: float = 0.0, limited: bool = True, rtt: float | None = 0.1) -> None:
    cc.on_ack(now=now, acked_bytes=acked, in_flight=cc.cwnd, delay_us=None, rtt=rtt, window_limited=limited)


# ---------------------------------------------------------------------------
# RenoWindow
# ---------------------------------------------------------------------------


def test_initial_window():
    cc = window()
    assert cc.cwnd == 4 * MSS
    assert cc.ssthresh == 100 * MSS
    assert cc.stats() == {"ssthresh": 100 * MSS}
    assert isinstance(cc, CongestionController)


@pytest.mark.parametrize(
    ("initial", "max_cwnd", "cwnd", "cap"),
    [
        (10, 100 * MSS, MSS, 100 * MSS),  # not below one mss
        (500 * MSS, 100 * MSS, 100 * MSS, 100 * MSS),  # not above the cap
        (4 * MSS, 10, MSS, MSS),  # the cap itself is at least one mss
        (0, 0, MSS, MSS),
    ],
)
def test_initial_window_is_clamped(initial, max_cwnd, cwnd, cap):
    cc = RenoWindow(mss=MSS, initial_cwnd=initial, max_cwnd=max_cwnd)
    assert cc.cwnd == cwnd
    assert cc.max_cwnd == cap


def test_slow_start_grows_by_acked_bytes_when_window_limited():
    cc = window()
    ack(cc, 1500)
    assert cc.cwnd == 4 * MSS + 1500
    ack(cc, 4000)
    assert cc.cwnd == 4 * MSS + 5500


def test_no_growth_when_application_limited():
    cc = window()
    for _ in range(50):
        ack(cc, MSS, limited=False)
    assert cc.cwnd == 4 * MSS


@pytest.mark.parametrize("acked", [0, -1, -MSS])
def test_no_growth_without_acked_bytes(acked):
    cc = window()
    ack(cc, acked)
    assert cc.cwnd == 4 * MSS


def test_congestion_avoidance_after_a_loss():
    cc = window(cwnd=20 * MSS)
    cc.on_loss(now=1.0, rtt=0.1)
    assert cc.cwnd == cc.ssthresh == 10 * MSS
    # Above ssthresh: about one mss per window's worth of ACKed bytes.
    before = cc.cwnd
    ack(cc, MSS)
    assert cc.cwnd == before + MSS * MSS // before
    grown = cc.cwnd
    for _ in range(10):
        ack(cc, MSS)
    assert grown < cc.cwnd <= before + 2 * MSS
    # A tiny ACK still moves it by at least one byte.
    current = cc.cwnd
    ack(cc, 1)
    assert cc.cwnd == current + 1


def test_growth_stops_at_max_cwnd():
    cc = window(cwnd=4 * MSS, max_cwnd=10 * MSS)
    for _ in range(20):
        ack(cc, 3 * MSS)
    assert cc.cwnd == 10 * MSS
    cc.on_loss(now=1.0, rtt=None)
    for _ in range(1000):
        ack(cc, 3 * MSS)
    assert cc.cwnd == 10 * MSS


def test_loss_halves():
    cc = window(cwnd=16 * MSS)
    cc.on_loss(now=10.0, rtt=0.05)
    assert cc.cwnd == 8 * MSS
    assert cc.ssthresh == 8 * MSS


def test_loss_halves_at_most_once_per_100ms_when_rtt_is_small():
    cc = window(cwnd=64 * MSS)
    cc.on_loss(now=10.0, rtt=0.05)
    assert cc.cwnd == 32 * MSS
    for now in (10.0, 10.03, 10.06, 10.099):
        cc.on_loss(now=now, rtt=0.05)
        assert cc.cwnd == 32 * MSS
    cc.on_loss(now=10.101, rtt=0.05)
    assert cc.cwnd == 16 * MSS


def test_loss_halves_at_most_once_per_rtt():
    cc = window(cwnd=64 * MSS)
    cc.on_loss(now=10.0, rtt=1.0)
    for now in (10.1, 10.5, 10.99):
        cc.on_loss(now=now, rtt=1.0)
        assert cc.cwnd == 32 * MSS
    cc.on_loss(now=11.0, rtt=1.0)
    assert cc.cwnd == 16 * MSS


def test_loss_without_rtt_uses_100ms():
    cc = window(cwnd=64 * MSS)
    cc.on_loss(now=0.0, rtt=None)
    cc.on_loss(now=0.05, rtt=None)
    assert cc.cwnd == 32 * MSS
    cc.on_loss(now=0.1, rtt=None)
    assert cc.cwnd == 16 * MSS


def test_loss_never_below_one_mss():
    cc = window(cwnd=3 * MSS)
    for i in range(10):
        cc.on_loss(now=float(i), rtt=0.1)
    assert cc.cwnd == MSS


def test_timeout_not_idle_drops_to_one_mss():
    cc = window(cwnd=40 * MSS)
    cc.on_timeout(now=5.0, idle=False)
    assert cc.cwnd == MSS
    assert cc.ssthresh == 20 * MSS
    # Slow start again, up to ssthresh.
    ack(cc, MSS)
    assert cc.cwnd == 2 * MSS


def test_timeout_not_idle_keeps_ssthresh_at_least_two_mss():
    cc = window(cwnd=2 * MSS)
    cc.on_timeout(now=5.0, idle=False)
    assert cc.cwnd == MSS
    assert cc.ssthresh == 2 * MSS


@pytest.mark.parametrize(("cwnd", "expected"), [(30 * MSS, 20 * MSS), (3000, 2000), (1200, MSS), (MSS, MSS)])
def test_timeout_idle_shrinks_to_two_thirds(cwnd, expected):
    cc = window(cwnd=cwnd)
    cc.on_timeout(now=5.0, idle=True)
    assert cc.cwnd == expected


ops = st.lists(
    st.one_of(
        st.tuples(st.just("ack"), st.integers(-10, 50 * MSS), st.booleans(), st.none() | st.floats(0, 2)),
        st.tuples(st.just("loss"), st.floats(0, 0.5), st.none() | st.floats(0, 2)),
        st.tuples(st.just("timeout"), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    initial=st.integers(0, 200 * MSS),
    max_cwnd=st.integers(0, 200 * MSS),
    operations=ops,
)
def test_window_stays_between_mss_and_max(initial, max_cwnd, operations):
    cc = RenoWindow(mss=MSS, initial_cwnd=initial, max_cwnd=max_cwnd)
    cap = max(max_cwnd, MSS)
    now = 0.0
    last_cut = float("-inf")
    for op in operations:
        before = cc.cwnd
        if op[0] == "ack":
            _, acked, limited, rtt = op
            ack(cc, acked, now=now, limited=limited, rtt=rtt)
            assert cc.cwnd >= before
            if not limited or acked <= 0:
                assert cc.cwnd == before
        elif op[0] == "loss":
            _, dt, rtt = op
            now += dt
            cc.on_loss(now=now, rtt=rtt)
            if now - last_cut < max(rtt or 0.0, 0.1):
                assert cc.cwnd == before
            else:
                assert cc.cwnd == max(before // 2, MSS)
                last_cut = now
        else:
            cc.on_timeout(now=now, idle=op[1])
            last_cut = now
            assert cc.cwnd <= before
        assert MSS <= cc.cwnd <= cap
        assert isinstance(cc.cwnd, int)


# ---------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, so registrations do not leak into other tests."""
    monkeypatch.setattr(_congestion, "_REGISTRY", dict(_congestion._REGISTRY))
    return _congestion._REGISTRY


def test_create_reno():
    cc = create_congestion_controller("reno", mss=MSS, initial_cwnd=4 * MSS, max_cwnd=100 * MSS, config=UTPConfig())
    assert type(cc) is RenoWindow
    assert cc.cwnd == 4 * MSS


def test_unknown_controller_names_the_known_ones():
    with pytest.raises(ValueError, match="nope") as info:
        create_congestion_controller("nope", mss=MSS, initial_cwnd=MSS, max_cwnd=MSS)
    assert "ledbat" in str(info.value) and "reno" in str(info.value)


def test_unknown_controller_in_config_fails_at_connect(registry):
    ctx = UTPContext(UTPConfig(congestion_control="nope"))
    with pytest.raises(ValueError, match="ledbat"):
        ctx.connect(("10.0.0.2", 1), 0.0)


def test_controller_interface_is_abstract():
    with pytest.raises(TypeError):
        CongestionController()  # type: ignore[abstract]


class FixedWindow(CongestionController):
    """A custom controller: a constant window, recording what it is told."""

    def __init__(self, *, mss: int, initial_cwnd: int, max_cwnd: int, config: UTPConfig) -> None:
        self.cwnd = mss
        self.kwargs = {"mss": mss, "initial_cwnd": initial_cwnd, "max_cwnd": max_cwnd, "config": config}
        self.calls: list[str] = []

    def on_ack(self, *, now, acked_bytes, in_flight, delay_us, rtt, window_limited, **_) -> None:
        self.calls.append("ack")

    def on_loss(self, *, now, rtt) -> None:
        self.calls.append("loss")

    def on_timeout(self, *, now, idle) -> None:
        self.calls.append("timeout")


def test_register_custom_controller(registry):
    register_congestion_controller("fixed", FixedWindow)
    config = UTPConfig()
    cc = create_congestion_controller("fixed", mss=MSS, initial_cwnd=5, max_cwnd=7, config=config)
    assert isinstance(cc, FixedWindow)
    assert cc.kwargs == {"mss": MSS, "initial_cwnd": 5, "max_cwnd": 7, "config": config}
    assert cc.stats() == {}
    # The unknown-name message now lists it too.
    with pytest.raises(ValueError, match="fixed"):
        create_congestion_controller("nope")


def test_registration_does_not_leak(registry):
    assert "fixed" not in registry


def test_connection_uses_the_configured_controller(registry):
    register_congestion_controller("fixed", FixedWindow)
    config = UTPConfig(congestion_control="fixed")
    scripted = iter([100, 5000])  # recv_id, then ISN
    ctx = UTPContext(config, random_bits=lambda k: next(scripted))
    peer = ("10.0.0.2", 6881)
    conn = ctx.connect(peer, 0.0)
    assert isinstance(conn.cc, FixedWindow)
    assert conn.cc.kwargs["mss"] == conn.mss
    assert conn.cc.kwargs["max_cwnd"] == config.send_buffer_size
    assert conn.cc.kwargs["initial_cwnd"] == config.initial_cwnd
    assert conn.cc.kwargs["config"] is config
    ctx.datagrams_to_send(0.0)
    synack = struct.pack(">BBHIIIHH", 0x21, 0, 100, 1, 0, 1 << 20, 9000, 5000)
    ctx.receive_datagram(synack, peer, 0.1)
    ctx.datagrams_to_send(0.1)
    # A one-mss window: of five packets' worth, one goes out.
    conn.send(b"x" * (5 * conn.mss), 0.2)
    data = [p for p in (decode_packet(d) for d, _ in ctx.datagrams_to_send(0.2)) if p.type == ST_DATA]
    assert len(data) == 1
    assert len(data[0].payload) == conn.mss
    # Its ACK reaches the controller, and the next packet follows.
    ack_pkt = struct.pack(">BBHIIIHH", 0x21, 0, 100, 2, 0, 1 << 20, 9000, data[0].seq_nr)
    ctx.receive_datagram(ack_pkt, peer, 0.3)
    assert conn.cc.calls == ["ack"]
    data = [p for p in (decode_packet(d) for d, _ in ctx.datagrams_to_send(0.3)) if p.type == ST_DATA]
    assert len(data) == 1
