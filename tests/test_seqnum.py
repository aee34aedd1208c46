"""Tests for the wrap-around arithmetic in ``txutp.engine._seqnum``."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from txutp.engine._seqnum import (
    SEQ_HALF,
    SEQ_MASK,
    TS_HALF,
    TS_MASK,
    seq_add,
    seq_distance,
    seq_le,
    seq_lt,
    to_timestamp_us,
    ts_distance,
    ts_lt,
)

M16 = 2**16
M32 = 2**32

seqs = st.integers(0, M16 - 1)
stamps = st.integers(0, M32 - 1)


def test_constants():
    assert SEQ_MASK == M16 - 1
    assert SEQ_HALF == M16 // 2
    assert TS_MASK == M32 - 1
    assert TS_HALF == M32 // 2


# ---------------------------------------------------------------------------
# 16-bit sequence numbers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "n", "expected"),
    [
        (0, 0, 0),
        (0, 1, 1),
        (65534, 1, 65535),
        (65535, 1, 0),
        (65535, 2, 1),
        (65000, 1000, 464),
        (0, -1, 65535),
        (5, -10, 65531),
        (100, 65536, 100),
        (100, -65536, 100),
        (1, 65535, 0),
        (0, 32768, 32768),
    ],
)
def test_seq_add(a, n, expected):
    assert seq_add(a, n) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (5, 5, 0),
        (0, 1, 1),
        (1, 0, 65535),
        (65535, 0, 1),
        (0, 65535, 65535),
        (65530, 4, 10),
        (4, 65530, 65526),
        (0, 32768, 32768),
        (32768, 0, 32768),
    ],
)
def test_seq_distance(a, b, expected):
    assert seq_distance(a, b) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (0, 1),
        (1, 2),
        (65534, 65535),
        (65535, 0),  # wrap 65535 -> 0
        (65535, 1),
        (65530, 10),
        (0, 32767),  # just under half the space
        (32769, 0),  # 0 is 32767 ahead of 32769
        (40000, 100),
        (100, 32867),
    ],
)
def test_seq_lt_pairs(a, b):
    assert seq_lt(a, b)
    assert not seq_lt(b, a)
    assert seq_le(a, b)
    assert not seq_le(b, a)


def test_seq_lt_wrap():
    assert seq_lt(65535, 0)
    assert not seq_lt(0, 65535)
    assert seq_le(65535, 0)
    assert not seq_le(0, 65535)
    assert seq_distance(65535, 0) == 1
    assert seq_add(65535, 1) == 0


@pytest.mark.parametrize("a", [0, 1, 100, 32767, 32768, 65535])
def test_seq_equal_is_le_not_lt(a):
    assert not seq_lt(a, a)
    assert seq_le(a, a)


def test_seq_lt_near_half():
    # the shorter distance wins
    assert seq_lt(0, 32767)  # forward 32767 < back 32769
    assert not seq_lt(32767, 0)
    assert not seq_lt(0, 32769)  # forward 32769 > back 32767
    assert seq_lt(32769, 0)
    assert seq_lt(65535, 32766)
    assert not seq_lt(65535, 32767)  # exactly half: tie


@pytest.mark.parametrize("a", [0, 1, 12345, 32767, 32768, 65535])
def test_seq_tie_at_half_neither_is_less(a):
    b = (a + 32768) % M16
    assert seq_distance(a, b) == seq_distance(b, a) == 32768
    assert not seq_lt(a, b)
    assert not seq_lt(b, a)
    assert not seq_le(a, b)
    assert not seq_le(b, a)


@settings(max_examples=500)
@given(seqs, seqs)
@example(0, 32768)
@example(65535, 0)
@example(0, 65535)
@example(32767, 65535)
def test_seq_lt_shorter_distance_wins(a, b):
    forward = (b - a) % M16
    backward = (a - b) % M16
    assert seq_lt(a, b) == (forward < backward)
    assert seq_le(a, b) == (forward <= backward and forward != M16 // 2)
    assert seq_le(a, b) == (a == b or seq_lt(a, b))


@settings(max_examples=500)
@given(seqs, seqs)
@example(0, 32768)
def test_seq_lt_antisymmetric_and_trichotomy(a, b):
    assert not (seq_lt(a, b) and seq_lt(b, a))
    outcomes = [seq_lt(a, b), seq_lt(b, a), a == b, seq_distance(a, b) == 32768]
    assert outcomes.count(True) == 1


@settings(max_examples=500)
@given(seqs, st.integers(1, 32767))
@example(65535, 1)
@example(65535, 32767)
@example(0, 32767)
@example(32768, 32767)
def test_seq_lt_forward_below_half(a, n):
    b = seq_add(a, n)
    assert seq_lt(a, b)
    assert not seq_lt(b, a)
    assert seq_le(a, b)
    assert seq_distance(a, b) == n


@settings(max_examples=300)
@given(seqs, st.integers(32769, 65535))
@example(0, 65535)
def test_seq_forward_beyond_half_is_behind(a, n):
    b = seq_add(a, n)
    assert seq_lt(b, a)
    assert not seq_lt(a, b)


@given(seqs, st.integers(-(2**20), 2**20))
def test_seq_add_and_distance(a, n):
    b = seq_add(a, n)
    assert 0 <= b < M16
    assert b == (a + n) % M16
    assert seq_distance(a, b) == n % M16
    assert seq_add(b, -n) == a


@given(seqs, seqs)
def test_seq_distance_inverts_add(a, b):
    d = seq_distance(a, b)
    assert 0 <= d < M16
    assert seq_add(a, d) == b
    assert (seq_distance(a, b) + seq_distance(b, a)) % M16 == 0


# ---------------------------------------------------------------------------
# 32-bit timestamps
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (0, 0, 0),
        (0, 1, 1),
        (2**32 - 1, 0, 1),
        (0, 2**32 - 1, 2**32 - 1),
        (2**32 - 10, 5, 15),
        (0, 2**31, 2**31),
        (1_000_000, 999_999, 2**32 - 1),
    ],
)
def test_ts_distance(a, b, expected):
    assert ts_distance(a, b) == expected


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
    assert ts_distance(a, b) == forward


@settings(max_examples=300)
@given(stamps, st.integers(1, 2**31 - 1))
@example(2**32 - 1, 1)
def test_ts_lt_forward_below_half(a, n):
    b = (a + n) % M32
    assert ts_lt(a, b)
    assert not ts_lt(b, a)
    assert ts_distance(a, b) == n


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
    d = ts_distance(to_timestamp_us(now), to_timestamp_us(later))
    # float rounding of large times: allow a small error (a double near 2e9 s has ~0.24 us resolution)
    expected = round((later - now) * 1e6)
    assert abs(((d - expected + 2**31) % M32) - 2**31) <= 2
