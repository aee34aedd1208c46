"""The Reno-like window alone (``txutp.engine.congestion.reno``): slow start, +1 packet per RTT, halve on loss."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txutp.engine import CongestionController, CongestionStats, create_congestion_controller
from txutp.engine.congestion.reno import RenoWindow

MSS = 1000


def window(cwnd: int = 4 * MSS, max_cwnd: int = 100 * MSS) -> RenoWindow:
    return RenoWindow(mss=MSS, initial_cwnd=cwnd, max_cwnd=max_cwnd)


def ack(cc: RenoWindow, acked: int, *, now: float = 0.0, limited: bool = True, rtt: float | None = 0.1) -> None:
    cc.on_ack(now=now, acked_bytes=acked, in_flight=cc.cwnd, delay_us=None, rtt=rtt, window_limited=limited)


def test_registered_as_reno():
    cc = create_congestion_controller("reno", mss=MSS, initial_cwnd=4 * MSS, max_cwnd=100 * MSS)
    assert type(cc) is RenoWindow
    assert cc.cwnd == 4 * MSS


def test_initial_window():
    cc = window()
    assert cc.cwnd == 4 * MSS
    assert cc.ssthresh == 100 * MSS
    assert cc.stats() == CongestionStats(ssthresh=100 * MSS, slow_start=True, loss_reductions=0)
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
    assert cc.stats() == CongestionStats(ssthresh=8 * MSS, slow_start=False, loss_reductions=1)


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
