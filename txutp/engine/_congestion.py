"""The congestion-control interface of a connection, and the registry of controllers.

A connection owns one :class:`CongestionController` and asks it for ``cwnd``,
the number of payload bytes it may have in flight. The controller is told about
acknowledged bytes (with the peer's one-way delay sample, for delay-based
control), losses and timeouts; it never sees packets or sockets. Controllers
are looked up by name with :func:`create_congestion_controller`; the engine's
own is ``"ledbat"`` (:mod:`txutp.engine._ledbat`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

__all__ = [
    "CongestionController",
    "create_congestion_controller",
    "register_congestion_controller",
]


class CongestionController(ABC):
    """What a connection needs from congestion control. All sizes are bytes.

    Factories are called as ``factory(mss=..., initial_cwnd=..., max_cwnd=..., config=...)``.
    """

    __slots__ = ()

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
        rtt_sample: float | None = None,
        peer_window: int | None = None,
    ) -> None:
        """``acked_bytes`` were newly acknowledged; ``in_flight`` is what was outstanding before.

        ``delay_us`` is the peer's raw timestamp_difference (our-to-peer one-way
        delay plus the clocks' offset, mod 2**32), ``None`` when the packet carried
        no sample. ``rtt`` is the smoothed RTT, ``rtt_sample`` the newest sample
        (``None`` if this ACK gave none). ``window_limited`` is true when the
        window, not the application, limited sending. ``peer_window`` is the
        peer's advertised window.
        """

    @abstractmethod
    def on_loss(self, *, now: float, rtt: float | None) -> None:
        """A packet was detected lost by duplicate or selective ACKs."""

    @abstractmethod
    def on_timeout(self, *, now: float, idle: bool) -> None:
        """The retransmission timer fired; ``idle`` if nothing was in flight for a while."""

    def undo_snapshot(self) -> object | None:
        """The state a loss response may be undone to, taken before it; ``None``: no undo."""
        return None

    def undo(self, snapshot: object) -> None:  # noqa: B027
        """The loss response since ``snapshot`` was spurious: restore the window it had."""

    def on_reverse_delay(self, *, now: float, delay_us: int) -> None:  # noqa: B027
        """A raw peer-to-us delay sample (what we echo as timestamp_difference)."""

    def set_mss(self, mss: int) -> None:  # noqa: B027
        """The connection's packet payload size changed."""

    def stats(self) -> dict[str, float]:
        """Controller-specific figures for per-connection statistics."""
        return {}


ControllerFactory = Callable[..., CongestionController]
_REGISTRY: dict[str, ControllerFactory] = {}


def register_congestion_controller(name: str, factory: ControllerFactory) -> None:
    """Make ``factory(mss=..., initial_cwnd=..., max_cwnd=..., config=...)`` available by name."""
    _REGISTRY[name] = factory


def create_congestion_controller(name: str, **kwargs: object) -> CongestionController:
    """Build the controller registered as ``name``; raise ``ValueError`` if unknown.

    The registry knows no implementation: each registers itself when imported
    (``_connection.py`` imports LEDBAT, the default).
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown congestion controller {name!r}; known: {sorted(_REGISTRY)}") from None
    return factory(**kwargs)
