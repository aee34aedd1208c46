"""Wrap-around arithmetic for uTP's 16-bit sequence numbers and 32-bit timestamps.

Both reference implementations compare with "the shorter distance wins"
(libutp ``wrapping_compare_less``, libtorrent ``compare_less_wrap``): ``a`` is
before ``b`` when going forward from ``a`` to ``b`` is shorter than going back.
"""

from __future__ import annotations

SEQ_MASK = 0xFFFF
SEQ_HALF = 0x8000
TS_MASK = 0xFFFFFFFF
TS_HALF = 0x80000000


def seq_add(a: int, n: int) -> int:
    """Return ``a + n`` modulo 2**16 (``n`` may be negative)."""
    return (a + n) & SEQ_MASK


def seq_distance(a: int, b: int) -> int:
    """Return how far forward ``b`` is from ``a``: ``(b - a) mod 2**16``."""
    return (b - a) & SEQ_MASK


def seq_lt(a: int, b: int) -> bool:
    """Return True if sequence number ``a`` comes strictly before ``b``."""
    d = (b - a) & SEQ_MASK
    return 0 < d < SEQ_HALF


def seq_le(a: int, b: int) -> bool:
    """Return True if ``a`` comes before ``b`` or equals it."""
    return ((b - a) & SEQ_MASK) < SEQ_HALF


def ts_distance(a: int, b: int) -> int:
    """Return ``(b - a) mod 2**32`` for 32-bit microsecond timestamps."""
    return (b - a) & TS_MASK


def ts_lt(a: int, b: int) -> bool:
    """Return True if 32-bit timestamp ``a`` comes strictly before ``b``."""
    d = (b - a) & TS_MASK
    return 0 < d < TS_HALF


def to_timestamp_us(now: float) -> int:
    """Convert a time in seconds to uTP's 32-bit microsecond wire timestamp."""
    return int(now * 1_000_000) & TS_MASK
