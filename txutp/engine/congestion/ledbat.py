"""LEDBAT congestion control as libutp and libtorrent implement it.

The window grows while the one-way queueing delay we add stays below
``target_delay`` and shrinks when it exceeds it, in proportion to the distance
from the target::

    delay_factor  = (target - delay) / target
    window_factor = acked_bytes / bytes_in_flight_before_the_ack      (at most 1)
    cwnd         += gain * window_factor * delay_factor               (gain: 3000 bytes per RTT)

Above the target the window instead shrinks by ``cwnd * (delay/target - 1)``
per RTT, at most by half (LEDBAT++'s multiplicative decrease; libutp and
libtorrent shrink linearly, which drains a slow-start overshoot of a deep buffer
only after tens of seconds). ``delay`` is the minimum of the last 3 one-way delay
samples above the base delay (:class:`~txutp.engine.congestion.delay.DelayHistory`), clamped to the RTT, so a
peer that lies about delay cannot make us send faster than loss-based control
would. Slow start (cwnd += acked) runs until the delay reaches 90 % of the
target or cwnd passes ``ssthresh``. No growth while the application, not the
window, limits sending. A loss halves the window at most once per RTT (and at
least 100 ms apart); a timeout drops it to one packet and restarts slow start
(or to 2/3 if the connection was idle). The window never falls below one packet
nor exceeds the peer's advertised window or the send buffer. A reduction that
loss recovery shows to be spurious is undone: window, threshold and slow start
come back as they were before it.
"""

from __future__ import annotations

from typing import NamedTuple

from .._config import UTPConfig
from .._packet import TS_MASK
from . import CongestionController, CongestionStats, register_congestion_controller
from .delay import DelayHistory

__all__ = ["LEDBAT"]

#: A peer's base delay may fall by at most this much per sample and still count as clock drift (libutp).
_MAX_DRIFT_STEP_US = 10_000


class _Snapshot(NamedTuple):
    """What :meth:`LEDBAT.undo` restores."""

    cwnd: int
    ssthresh: int
    slow_start: bool
    last_cut: float
    slowdown_next: float | None
    slowdown_started: float | None
    slowdown_hold_until: float | None


class LEDBAT(CongestionController):
    """Delay-based congestion control (BEP 29 / RFC 6817 as deployed by libutp and libtorrent)."""

    __slots__ = (
        "_fraction",
        "_last_cut",
        "loss_reductions",
        "_slowdown_hold_until",
        "_slowdown_next",
        "_slowdown_started",
        "cwnd",
        "delay_us",
        "gain",
        "loss_multiplier",
        "max_cwnd",
        "min_cut_interval",
        "mss",
        "our_delay",
        "slow_start",
        "slowdown_count",
        "slowdowns",
        "ssthresh",
        "target_us",
        "their_delay",
    )

    def __init__(self, *, mss: int, initial_cwnd: int, max_cwnd: int, config: UTPConfig | None = None) -> None:
        config = config or UTPConfig()
        self.mss = mss
        self.max_cwnd = max(max_cwnd, mss)
        self.cwnd = max(min(initial_cwnd, self.max_cwnd), mss)
        self.ssthresh = self.max_cwnd
        self.slow_start = True
        self.target_us = int(config.target_delay * 1_000_000)
        self.gain = config.gain
        self.loss_multiplier = config.loss_multiplier
        self.min_cut_interval = config.cwnd_reduce_interval
        #: One-way delay of our packets towards the peer (their timestamp_difference).
        self.our_delay = DelayHistory(config.delay_history_slots)
        #: One-way delay of the peer's packets towards us (what we echo): tells us about clock drift.
        self.their_delay = DelayHistory(config.delay_history_slots)
        self.delay_us: int | None = None  # the filtered delay used for the last decision
        self._last_cut = float("-inf")
        self.loss_reductions = 0  # windows halved for loss (undone ones included)
        self._fraction = 0.0  # sub-byte growth carried between ACKs
        # Periodic slowdown (LEDBAT++): see _slowdown().
        self.slowdowns = config.ledbat_slowdown
        self.slowdown_count = 0
        self._slowdown_next: float | None = None  # when the next slowdown starts
        self._slowdown_started: float | None = None  # the one under way began then
        self._slowdown_hold_until: float | None = None  # holding the minimal window until then

    def on_ack(
        self,
        *,
        now: float,
        acked_bytes: int,
        in_flight: int,
        delay_us: int | None,
        rtt: float | None,
        window_limited: bool,
        rtt_sample: float | None = None,
        peer_window: int | None = None,
    ) -> None:
        if acked_bytes <= 0:
            return
        if delay_us is not None:
            self.our_delay.add_sample(delay_us, now)
        current = self.our_delay.current
        if current is None:
            # No delay information yet: behave like slow start limited by ssthresh.
            if window_limited and self.slow_start:
                self._grow(acked_bytes, peer_window)
            return
        clamp = rtt_sample if rtt_sample is not None else rtt
        if clamp is not None:
            current = min(current, int(clamp * 1_000_000))
        self.delay_us = current
        if self.slowdowns and rtt is not None and self._slowdown(now, rtt):
            return
        target = self.target_us
        delay_factor = (target - current) / target
        window_factor = min(1.0, acked_bytes / max(in_flight, acked_bytes, 1))
        if delay_factor >= 0:
            linear = self.gain * window_factor * delay_factor
        else:
            # Above the target the window shrinks in proportion to itself (LEDBAT++), at most
            # by half per RTT, so a slow-start overshoot drains in a few RTTs rather than the
            # minutes libutp's linear decrease of 3000 bytes per RTT takes on a deep buffer.
            linear = -min(self.cwnd * -delay_factor, self.cwnd / 2) * window_factor
        if self.slow_start and current >= 0.9 * target and self._slowdown_started is None:
            self._leave_slow_start(now, rtt)
            self.ssthresh = self.cwnd
        if not window_limited:
            # Application-limited: a window we do not use must not grow (but may shrink).
            linear = min(linear, 0.0)
            self._grow(linear, peer_window)
            return
        if self.slow_start:
            if self.cwnd + acked_bytes > self.ssthresh:
                self._leave_slow_start(now, rtt)
                self._grow(linear, peer_window)
            else:
                self._grow(max(float(acked_bytes), linear), peer_window)
        else:
            self._grow(linear, peer_window)

    def _leave_slow_start(self, now: float, rtt: float | None) -> None:
        self.slow_start = False
        if not self.slowdowns or rtt is None:
            return
        started = self._slowdown_started
        if started is not None:
            # The ramp back up after a slowdown ended: the next one comes after 9 times
            # as long, so slowdowns cost about a tenth of the time.
            self._slowdown_next = now + 9 * max(now - started, 2 * rtt)
            self._slowdown_started = None
        elif self._slowdown_next is None:
            self._slowdown_next = now + 2 * rtt  # LEDBAT++'s initial slowdown

    def _slowdown(self, now: float, rtt: float) -> bool:
        """LEDBAT++ periodic slowdown (draft-irtf-iccrg-ledbat-plus-plus, as Windows does).

        Every so often the window drops to 2 packets for 2 RTTs, so the bottleneck
        queue drains and every LEDBAT flow sharing it re-measures the true base
        delay. Without it, a flow that started while the queue was already full
        takes that queue for base delay and starves the others (the "latecomer"
        problem; libutp and libtorrent have it). Returns True while holding.
        """
        hold = self._slowdown_hold_until
        if hold is not None:
            if now < hold:
                return True
            self._slowdown_hold_until = None
            self.slow_start = True  # ramp back up to the old window
            return False
        due = self._slowdown_next
        if due is not None and now >= due and self._slowdown_started is None:
            self.slowdown_count += 1
            self._slowdown_next = None
            self._slowdown_started = now
            self._slowdown_hold_until = now + 2 * rtt
            self.ssthresh = max(self.cwnd, 2 * self.mss)
            self.cwnd = 2 * self.mss
            self._fraction = 0.0
            return True
        return False

    def _grow(self, amount: float, peer_window: int | None) -> None:
        amount += self._fraction
        whole = int(amount)
        self._fraction = amount - whole
        cwnd = self.cwnd + whole
        limit = self.max_cwnd
        if peer_window is not None and peer_window < limit:
            limit = max(peer_window, self.mss)
        if cwnd > limit:
            cwnd = limit
            self._fraction = 0.0
        if cwnd < self.mss:
            cwnd = self.mss
            self._fraction = 0.0
        self.cwnd = cwnd

    def on_reverse_delay(self, *, now: float, delay_us: int) -> None:
        """A sample of the peer-to-us delay; when its base falls, clocks drifted: raise ours."""
        before = self.their_delay.base
        self.their_delay.add_sample(delay_us, now)
        after = self.their_delay.base
        if before is not None and after is not None and after != before:
            fall = (before - after) & TS_MASK
            if 0 < fall <= _MAX_DRIFT_STEP_US:
                self.our_delay.shift(fall)

    def on_loss(self, *, now: float, rtt: float | None) -> None:
        if now - self._last_cut < max(rtt or 0.0, self.min_cut_interval):
            return
        self._last_cut = now
        self.loss_reductions += 1
        self.cwnd = max(int(self.cwnd * self.loss_multiplier), self.mss)
        self.ssthresh = self.cwnd
        if self.slow_start:
            self._leave_slow_start(now, rtt)
        self._fraction = 0.0

    def on_timeout(self, *, now: float, idle: bool) -> None:
        self._last_cut = now
        self._fraction = 0.0
        if idle:
            self.cwnd = max(self.cwnd * 2 // 3, self.mss)
            return
        self.ssthresh = max(self.cwnd // 2, 2 * self.mss)
        self.cwnd = self.mss
        self.slow_start = True
        self._slowdown_hold_until = None

    def undo_snapshot(self) -> object | None:
        return _Snapshot(
            self.cwnd,
            self.ssthresh,
            self.slow_start,
            self._last_cut,
            self._slowdown_next,
            self._slowdown_started,
            self._slowdown_hold_until,
        )

    def undo(self, snapshot: object) -> None:
        """Restore the window, threshold and slow start from before a spurious reduction (Linux's undo).

        The slowdown schedule comes back too: leaving slow start on a loss that never was
        must not bring a periodic slowdown with it.
        """
        if not isinstance(snapshot, _Snapshot):
            return
        if snapshot.cwnd > self.cwnd:
            self.cwnd = min(snapshot.cwnd, self.max_cwnd)
            self._fraction = 0.0
        self.ssthresh = max(self.ssthresh, snapshot.ssthresh)
        self.slow_start = self.slow_start or snapshot.slow_start
        self._last_cut = snapshot.last_cut
        self._slowdown_next = snapshot.slowdown_next
        self._slowdown_started = snapshot.slowdown_started
        self._slowdown_hold_until = snapshot.slowdown_hold_until

    def set_mss(self, mss: int) -> None:
        """The packet size changed (path MTU discovery)."""
        self.mss = mss
        if self.cwnd < mss:
            self.cwnd = mss

    def stats(self) -> CongestionStats:
        return CongestionStats(
            ssthresh=self.ssthresh,
            slow_start=self.slow_start,
            current_delay_us=self.delay_us,
            base_delay_us=self.our_delay.base,
            delay_samples=self.our_delay.samples,
            slowdowns=self.slowdown_count,
            loss_reductions=self.loss_reductions,
        )


register_congestion_controller("ledbat", LEDBAT)
