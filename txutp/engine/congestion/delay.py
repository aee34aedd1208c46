"""One-way delay measurement for LEDBAT: base delay history and current delay.

uTP measures one-way delay with unsynchronised clocks: a sample is the
receiver's clock minus the sender's timestamp, modulo 2**32 µs, so it includes
an unknown clock offset. Only differences from the smallest sample seen lately
(the *base delay*) mean anything: they are the queueing delay we add.

:class:`DelayHistory` keeps the minimum per one-minute slot over ``slots``
slots (libutp: 13 slots, ``DELAY_BASE_HISTORY``; libtorrent: 20), so a route
change that raises the true base delay is forgotten within ``slots`` minutes,
and the minimum of the last 3 samples as the current delay (``CUR_DELAY_SIZE``),
which filters out single delayed packets. All arithmetic wraps at 2**32.
"""

from __future__ import annotations

from .._packet import TS_HALF, TS_MASK, ts_lt

__all__ = ["DelayHistory"]


class DelayHistory:
    """Base delay over a sliding history of minute slots, and the filtered current delay."""

    __slots__ = ("_slots", "_slot_seconds", "_history", "_history_min", "_slot_started", "_base", "_recent", "_count")

    def __init__(self, slots: int = 13, slot_seconds: float = 60.0) -> None:
        if slots < 1:
            raise ValueError("a delay history needs at least one slot")
        self._slots = slots
        self._slot_seconds = slot_seconds
        self._history: list[int] = []  # the minimum of each finished slot, oldest first
        self._history_min: int | None = None  # the minimum of _history, kept up to date
        self._slot_started: float | None = None
        self._base: int | None = None  # minimum of the current slot
        self._recent: list[int] = []  # the last 3 delays above base
        self._count = 0

    @property
    def base(self) -> int | None:
        """The base delay (raw 32-bit sample units), or ``None`` before the first sample."""
        base = self._base
        if base is None:
            return None
        low = self._history_min
        if low is not None and ts_lt(low, base):
            return low
        return base

    @property
    def samples(self) -> int:
        """How many samples were taken."""
        return self._count

    def add_sample(self, sample: int, now: float) -> int:
        """Record a raw sample (µs mod 2**32); return its delay above the base, in µs."""
        sample &= TS_MASK
        self._count += 1
        if self._slot_started is None:
            self._slot_started = now
        elif now - self._slot_started >= self._slot_seconds:
            # Close the current slot (and any skipped ones) and open a new one.
            if self._base is not None:
                self._history.append(self._base)
            del self._history[: max(0, len(self._history) - (self._slots - 1))]
            self._history_min = self._minimum(self._history)
            self._slot_started = now
            self._base = None
        if self._base is None or ts_lt(sample, self._base):
            self._base = sample
        base = self._base
        low = self._history_min
        if low is not None and ts_lt(low, base):
            base = low
        delay = (sample - base) & TS_MASK
        if delay >= TS_HALF:  # cannot happen after the update above, but never trust arithmetic on peer data
            delay = 0
        recent = self._recent
        recent.append(delay)
        if len(recent) > 3:
            del recent[0]
        return delay

    @staticmethod
    def _minimum(values: list[int]) -> int | None:
        low = None
        for value in values:
            if low is None or ts_lt(value, low):
                low = value
        return low

    @property
    def current(self) -> int | None:
        """The current delay above base: the minimum of the last 3 samples (µs)."""
        return min(self._recent) if self._recent else None

    def shift(self, delta: int) -> None:
        """Raise the base by ``delta`` µs (clock-drift compensation) in every slot."""
        if delta <= 0:
            return
        if self._base is not None:
            self._base = (self._base + delta) & TS_MASK
        self._history = [(v + delta) & TS_MASK for v in self._history]
        self._history_min = self._minimum(self._history)
        self._recent = [max(0, d - delta) for d in self._recent]
