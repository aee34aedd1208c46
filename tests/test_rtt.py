"""The RTT estimator alone: libutp's smoothing, the RTO clamp and backoff (``txutp.engine._rtt``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txutp.engine import RTTEstimator


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
