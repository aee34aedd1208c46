"""Path MTU discovery: a binary search for the largest datagram the path carries.

Probes are ordinary DATA packets, sent once with the don't-fragment flag (the
datagram comes out of ``datagrams_to_send`` as a :class:`DontFragment`, a
``bytes`` subclass, and the I/O layer sets DF for it). Everything else,
retransmitted probes included, goes without DF, so a datagram that is too big
for the path is fragmented by IP rather than lost for good (as libutp does).

* A probe acknowledged raises the floor to its size; a probe lost (or refused
  locally with ``EMSGSIZE``) lowers the ceiling below its size. A lost probe is
  not congestion.
* The search ends when ceiling - floor <= 16 bytes (libutp), then restarts
  after ``mtu_search_interval`` to find a path that grew.
* Regular packets keep the safe default size until a probe succeeds: if no DF
  probe ever gets through (a path that drops them all), the default is kept.
  Once one does, they follow the search (never above the ceiling) and end at the
  floor.
* Nothing above 1472 bytes (IPv4) / 1452 (IPv6) is ever sent: loopback's MTU is
  65536, and ucat and libtorrent silently truncate larger datagrams.
"""

from __future__ import annotations

__all__ = ["DontFragment", "MTUSearch"]

#: The search stops when the interval is this narrow (libutp).
CONVERGED_WITHIN = 16


class DontFragment(bytes):
    """A datagram to send with the IP don't-fragment flag (a path MTU probe)."""

    __slots__ = ()


class MTUSearch:
    """The state of one connection's path MTU search (sizes are UDP payload bytes)."""

    __slots__ = ("floor", "ceiling", "default", "_lowest", "_highest", "_confirmed", "_interval", "_restart_at")

    def __init__(self, *, default: int, floor: int, ceiling: int, interval: float) -> None:
        self._lowest = min(floor, default)
        self._highest = max(ceiling, default)
        self.default = default
        self.floor = self._lowest
        self.ceiling = self._highest
        self._confirmed = False  # has any probe got through?
        self._interval = interval
        self._restart_at: float | None = None

    @property
    def converged(self) -> bool:
        return self.ceiling - self.floor <= CONVERGED_WITHIN

    @property
    def packet_size(self) -> int:
        """The size for regular packets now."""
        if not self._confirmed:
            return self.default
        if self.converged:
            return self.floor
        return max(self.floor, min(self.default, self.ceiling))

    def probe_size(self, now: float) -> int | None:
        """The size of the next probe, or ``None`` if no probe is wanted now."""
        if self.converged:
            if self._restart_at is None:
                self._restart_at = now + self._interval
                return None
            if now < self._restart_at:
                return None
            # Search again, upwards from what works, in case the path changed.
            self._restart_at = None
            self.ceiling = self._highest
            if self.ceiling - self.floor <= CONVERGED_WITHIN:
                return None
        return (self.floor + self.ceiling + 1) // 2

    def probe_acked(self, size: int) -> None:
        """A probe of ``size`` bytes got through."""
        self._confirmed = True
        if size > self.floor:
            self.floor = min(size, self.ceiling)

    def probe_lost(self, size: int) -> None:
        """A probe of ``size`` bytes was lost or refused as too big."""
        if size - 1 < self.ceiling:
            self.ceiling = max(size - 1, self.floor)
