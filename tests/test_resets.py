"""ResetValidator: the four exact values, and the challenge ACK's rate limit."""

from __future__ import annotations

import pytest

from txutp.engine._resets import ResetValidator


@pytest.mark.parametrize(
    ("ack_nr", "seq_nr"),
    [(500, 7), (499, 7), (0, 7), (0xFFFF, 7), (123, 41)],
    ids=["our-next-seq", "our-newest-data", "wrap-next", "wrap-newest", "peer-next-seq"],
)
def test_exact_resets(ack_nr: int, seq_nr: int) -> None:
    next_seq = 0 if ack_nr in (0, 0xFFFF) else 500
    assert ResetValidator().is_exact(ack_nr, seq_nr, next_seq=next_seq, expected_seq=41)


def test_anything_else_in_the_window_is_inexact_until_challenged() -> None:
    resets = ResetValidator()
    assert not resets.is_exact(480, 7, next_seq=500, expected_seq=41)
    assert resets.challenge(500, srtt=0.2, now=10.0)
    assert resets.challenge_seq == 500 and resets.challenged == 1
    # The peer that really forgot us answers the challenge exactly.
    assert resets.is_exact(500, 9, next_seq=501, expected_seq=41)


def test_one_challenge_per_rtt_bounded_to_50_ms_and_1_s() -> None:
    resets = ResetValidator()
    assert resets.challenge(1, srtt=0.2, now=0.0)
    assert not resets.challenge(2, srtt=0.2, now=0.19)
    assert resets.challenge(3, srtt=0.2, now=0.2)
    assert resets.challenge(4, srtt=0.001, now=0.26)  # at least 50 ms apart
    assert not resets.challenge(5, srtt=0.001, now=0.29)
    assert not resets.challenge(6, srtt=30.0, now=1.2)  # at most 1 s apart
    assert resets.challenge(7, srtt=30.0, now=1.27)
    assert resets.challenge(8, srtt=None, now=2.3)  # no RTT yet: 1 s
    assert resets.challenged == 5 and resets.challenge_seq == 8
