"""Path MTU discovery: a binary search for the largest datagram the path carries.

Probes are ordinary DATA packets, sent once with the don't-fragment flag (the
datagram comes out of ``datagrams_to_send`` as a :class:`DontFragment`, a
``bytes`` subclass, and the I/O layer sets DF for it). Everything else,
retransmitted probes included, goes without DF, so a datagram that is too big
for the path is fragmented by IP rather than lost for good (as libutp does).

* A probe acknowledged raises the floor to its size; three probes of one size
  lost in a row (RFC 8899's MAX_PROBES), or one refused locally with
  ``EMSGSIZE``, lower the ceiling below it. A lost probe is not congestion.
* An ICMP "fragmentation needed" / "packet too big" about a packet we sent
  larger than the limit it reports brings the ceiling, and every packet, down
  to that limit at once (never below the configured floor, ``mtu_floor_ipv4``
  / ``mtu_floor_ipv6``).
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
#: Probes of one size lost in a row before the path is taken not to carry it (RFC 8899 MAX_PROBES).
MAX_PROBES = 3


class DontFragment(bytes):
    """A datagram to send with the IP don't-fragment flag (a path MTU probe)."""

    __slots__ = ()


class MTUSearch:
    """The state of one connection's path MTU search (sizes are UDP payload bytes)."""

    __slots__ = (
        "floor",
        "ceiling",
        "default",
        "_lowest",
        "_highest",
        "_confirmed",
        "_interval",
        "_restart_at",
        "_losses",
    )

    def __init__(self, *, default: int, floor: int, ceiling: int, interval: float) -> None:
        self._lowest = min(floor, default)
        self._highest = max(ceiling, default)
        self.default = default
        self.floor = self._lowest
        self.ceiling = self._highest
        self._confirmed = False  # has any probe got through?
        self._interval = interval
        self._restart_at: float | None = None
        self._losses = (0, 0)  # (probe size, consecutive losses at that size)

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
        self._losses = (0, 0)
        if size > self.floor:
            self.floor = min(size, self.ceiling)

    def probe_lost(self, size: int, *, too_big: bool = False) -> None:
        """A probe of ``size`` bytes was lost, or refused locally as too big (``too_big``).

        A loss lowers the ceiling only once ``MAX_PROBES`` probes of that size were lost
        in a row (RFC 8899): on a lossy path one random drop must not shrink every packet
        for half an hour. A local refusal is certain and counts at once.
        """
        if not too_big:
            lost_size, count = self._losses
            count = count + 1 if lost_size == size else 1
            self._losses = (size, count)
            if count < MAX_PROBES:
                return
        self._losses = (0, 0)
        if size - 1 < self.ceiling:
            self.ceiling = max(size - 1, self.floor)

    def path_limit(self, limit: int) -> None:
        """A router reported (ICMP) that the path takes at most ``limit`` bytes: no packet goes above it."""
        limit = max(limit, self._lowest)
        if limit < self.ceiling:
            self.ceiling = max(limit, self.floor)
        if limit < self.default:
            self.default = limit
        if limit < self.floor:
            self.floor = limit
