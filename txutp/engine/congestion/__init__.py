"""Congestion control: the interface of a connection's controller, the registry, the statistics.

A connection owns one :class:`CongestionController` and asks it for ``cwnd``,
the number of payload bytes it may have in flight. The controller is told about
acknowledged bytes (with the peer's one-way delay sample, for delay-based
control), losses and timeouts; it never sees packets or sockets.

Controllers are found by name (``UTPConfig.congestion_control``) with
:func:`create_congestion_controller`. The registry knows no implementation:
each module registers its own when imported. The engine ships two, both
registered by the connection module:

* ``"ledbat"`` (:mod:`.ledbat`), the default: delay-based, yields to other traffic;
* ``"reno"`` (:mod:`.reno`): loss-based and TCP-like, for peers that want uTP to
  compete as TCP does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass

__all__ = [
    "CongestionController",
    "CongestionStats",
    "create_congestion_controller",
    "register_congestion_controller",
]


@dataclass(frozen=True, slots=True)
class CongestionStats:
    """What a controller reports in :attr:`ConnectionStats.congestion <txutp.engine.ConnectionStats>`.

    ``None`` is "not applicable to this controller" (a loss-based one measures no
    delay) or "not measured yet".
    """

    #: Slow-start threshold, bytes.
    ssthresh: int | None = None
    #: In slow start (the window doubles per RTT).
    slow_start: bool | None = None
    #: Queueing delay our packets meet (one-way delay above the base delay), µs, filtered
    #: as the controller uses it.
    current_delay_us: int | None = None
    #: The base one-way delay as measured (raw µs, clock offset included).
    base_delay_us: int | None = None
    #: One-way delay samples taken (the ACKs that carried one).
    delay_samples: int | None = None
    #: LEDBAT++ periodic slowdowns.
    slowdowns: int | None = None
    #: Window reductions for loss (undone ones included).
    loss_reductions: int | None = None

    def as_dict(self) -> dict[str, int | bool | None]:
        """The figures as a plain dictionary (JSON-ready)."""
        return asdict(self)


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

    def stats(self) -> CongestionStats:
        """Controller-specific figures for per-connection statistics."""
        return CongestionStats()


ControllerFactory = Callable[..., CongestionController]
_REGISTRY: dict[str, ControllerFactory] = {}


def register_congestion_controller(name: str, factory: ControllerFactory) -> None:
    """Make ``factory(mss=..., initial_cwnd=..., max_cwnd=..., config=...)`` available by name."""
    _REGISTRY[name] = factory


def create_congestion_controller(name: str, **kwargs: object) -> CongestionController:
    """Build the controller registered as ``name``; raise ``ValueError`` if unknown."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown congestion controller {name!r}; known: {sorted(_REGISTRY)}") from None
    return factory(**kwargs)
