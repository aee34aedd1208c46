"""The congestion-control interface of a connection, and a simple loss-based window.

A connection owns one :class:`CongestionController` and asks it for ``cwnd``,
the number of payload bytes it may have in flight. The controller is told about
acknowledged bytes (with the peer's one-way delay sample, for delay-based
control), losses and timeouts; it never sees packets or sockets. Controllers
are looked up by name with :func:`create_congestion_controller`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

__all__ = [
    "CongestionController",
    "SimpleWindow",
    "create_congestion_controller",
    "register_congestion_controller",
]


class CongestionController(ABC):
    """What a connection needs from congestion control. All sizes are bytes."""

    #: Payload bytes the connection may have in flight.
    cwnd: int

    @abstractmethod
    def on_ack(
        self,
        *,
        now: float,
        acked_bytes: int,
        in_flight: int,
        delay_us: int | None,
        rtt: float | None,
        window_limited: bool,
    ) -> None:
        """``acked_bytes`` newly acknowledged; ``in_flight`` before this ACK.

        ``delay_us`` is the peer's timestamp_difference (our-to-peer one-way delay
        plus clock offset), ``None`` when the packet carried no sample. ``rtt`` is
        the smoothed RTT if known. ``window_limited`` is true when the sender was
        limited by ``cwnd`` rather than by the application.
        """

    @abstractmethod
    def on_loss(self, *, now: float, rtt: float | None) -> None:
        """A packet was detected lost by duplicate or selective ACKs."""

    @abstractmethod
    def on_timeout(self, *, now: float, idle: bool) -> None:
        """The retransmission timer fired; ``idle`` if nothing was in flight for a while."""

    def stats(self) -> dict[str, float]:
        """Controller-specific figures for per-connection statistics."""
        return {}


class SimpleWindow(CongestionController):
    """A Reno-like window: slow start, additive increase, halve on loss (once per RTT).

    Not delay-based; it is the engine's default until LEDBAT is configured.
    """

    def __init__(self, *, mss: int, initial_cwnd: int, max_cwnd: int) -> None:
        self.mss = mss
        self.max_cwnd = max(max_cwnd, mss)
        self.cwnd = max(min(initial_cwnd, self.max_cwnd), mss)
        self.ssthresh = self.max_cwnd
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
    ) -> None:
        if not window_limited or acked_bytes <= 0:
            return
        if self.cwnd < self.ssthresh:
            self.cwnd += acked_bytes
        else:
            self.cwnd += max(1, self.mss * acked_bytes // self.cwnd)
        if self.cwnd > self.max_cwnd:
            self.cwnd = self.max_cwnd

    def on_loss(self, *, now: float, rtt: float | None) -> None:
        if now - self._last_cut < max(rtt or 0.0, 0.1):
            return
        self._last_cut = now
        self.cwnd = max(self.cwnd // 2, self.mss)
        self.ssthresh = self.cwnd

    def on_timeout(self, *, now: float, idle: bool) -> None:
        self._last_cut = now
        if idle:
            self.cwnd = max(self.cwnd * 2 // 3, self.mss)
        else:
            self.ssthresh = max(self.cwnd // 2, 2 * self.mss)
            self.cwnd = self.mss

    def stats(self) -> dict[str, float]:
        return {"ssthresh": self.ssthresh}


ControllerFactory = Callable[..., CongestionController]
_REGISTRY: dict[str, ControllerFactory] = {"simple": SimpleWindow}


def register_congestion_controller(name: str, factory: ControllerFactory) -> None:
    """Make ``factory(mss=..., initial_cwnd=..., max_cwnd=..., config=...)`` available by name."""
    _REGISTRY[name] = factory


def create_congestion_controller(name: str, **kwargs: object) -> CongestionController:
    """Build the controller registered as ``name``; raise ``ValueError`` if unknown."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown congestion controller {name!r}; known: {sorted(_REGISTRY)}") from None
    if factory is SimpleWindow:
        kwargs.pop("config", None)
    return factory(**kwargs)
