"""Round-trip time estimation and the retransmission timeout (RTO)."""

from __future__ import annotations

__all__ = ["RTTEstimator"]


class RTTEstimator:
    """Smoothed RTT and variance as libutp computes them, with Karn's rule left to the caller.

    First sample: ``srtt = s``, ``rttvar = s/2``; then ``rttvar += (|srtt - s| - rttvar)/4``
    and ``srtt += (s - srtt)/8``. ``rto = clamp(srtt + 4*rttvar, min_rto, max_rto)``,
    doubled per consecutive timeout (:meth:`backoff`) until a new sample arrives.
    Callers feed only samples from packets sent once (Karn's rule).
    """

    __slots__ = ("srtt", "rttvar", "min_rtt", "latest", "count", "_base_rto", "_backoff", "_min_rto", "_max_rto")

    def __init__(self, initial_rto: float, min_rto: float, max_rto: float) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.min_rtt: float | None = None
        self.latest: float | None = None
        self.count = 0  # samples taken
        self._min_rto = min_rto
        self._max_rto = max_rto
        self._base_rto = max(min_rto, min(initial_rto, max_rto))
        self._backoff = 1

    def on_sample(self, rtt: float) -> None:
        """Feed one RTT sample in seconds (from a packet transmitted exactly once)."""
        if rtt < 0:
            return
        self.latest = rtt
        self.count += 1
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        srtt = self.srtt
        if srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar += (abs(srtt - rtt) - self.rttvar) / 4
            self.srtt = srtt + (rtt - srtt) / 8
        self._base_rto = min(max(self.srtt + 4 * self.rttvar, self._min_rto), self._max_rto)
        self._backoff = 1

    @property
    def rto(self) -> float:
        """The current retransmission timeout, backoff included."""
        return min(self._base_rto * self._backoff, self._max_rto)

    def backoff(self) -> None:
        """Double the RTO after a timeout (exponential backoff)."""
        if self._base_rto * self._backoff < self._max_rto:
            self._backoff *= 2

    def reset_backoff(self) -> None:
        """Forget the backoff (new data was acknowledged)."""
        self._backoff = 1
