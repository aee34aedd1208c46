"""A loss-based, Reno-like window (``congestion_control="reno"``): uTP that competes as TCP does.

LEDBAT (the default) yields to other traffic; some applications want the
opposite, a bulk transfer that takes its share of a bottleneck like a TCP flow
(as aioquic ships Reno beside its other controllers). This window ignores delay:

* slow start: ``cwnd += acked_bytes`` below ``ssthresh``;
* congestion avoidance: about one ``mss`` per window acknowledged
  (``cwnd += mss * acked_bytes / cwnd``, at least one byte);
* a loss halves the window (and sets ``ssthresh`` there), at most once per RTT
  and at least 100 ms apart;
* a timeout drops the window to one packet (``ssthresh``: half the window, at
  least two packets), or to two thirds of it after an idle period;
* no growth while the application, not the window, limits sending; the window
  stays between one ``mss`` and the send buffer.

It also stands in for TCP where the tests and ``bench/ledbat_sim.py`` measure
how LEDBAT yields.
"""

from __future__ import annotations

from .._config import UTPConfig
from . import CongestionController, CongestionStats, register_congestion_controller

__all__ = ["RenoWindow"]

#: Least time between two loss reductions, when the RTT is shorter.
_MIN_CUT_INTERVAL = 0.1


class RenoWindow(CongestionController):
    """Slow start, one packet more per RTT, halved on loss (TCP Reno without fast recovery's inflation)."""

    __slots__ = ("_last_cut", "cwnd", "loss_reductions", "max_cwnd", "mss", "ssthresh")

    def __init__(self, *, mss: int, initial_cwnd: int, max_cwnd: int, config: UTPConfig | None = None) -> None:
        self.mss = mss
        self.max_cwnd = max(max_cwnd, mss)
        self.cwnd = max(min(initial_cwnd, self.max_cwnd), mss)
        self.ssthresh = self.max_cwnd
        self.loss_reductions = 0
        self._last_cut = float("-inf")

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
        if not window_limited or acked_bytes <= 0:
            return
        if self.cwnd < self.ssthresh:
            self.cwnd += acked_bytes
        else:
            self.cwnd += max(1, self.mss * acked_bytes // self.cwnd)
        self.cwnd = min(self.cwnd, self.max_cwnd)

    def on_loss(self, *, now: float, rtt: float | None) -> None:
        if now - self._last_cut < max(rtt or 0.0, _MIN_CUT_INTERVAL):
            return
        self._last_cut = now
        self.loss_reductions += 1
        self.cwnd = max(self.cwnd // 2, self.mss)
        self.ssthresh = self.cwnd

    def on_timeout(self, *, now: float, idle: bool) -> None:
        self._last_cut = now
        if idle:
            self.cwnd = max(self.cwnd * 2 // 3, self.mss)
        else:
            self.ssthresh = max(self.cwnd // 2, 2 * self.mss)
            self.cwnd = self.mss

    def stats(self) -> CongestionStats:
        return CongestionStats(
            ssthresh=self.ssthresh, slow_start=self.cwnd < self.ssthresh, loss_reductions=self.loss_reductions
        )


register_congestion_controller("reno", RenoWindow)
