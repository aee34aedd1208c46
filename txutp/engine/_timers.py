"""A connection's timers: one optional deadline per :class:`Timer`, in a table.

:class:`~txutp.engine.UTPConnection` arms and stops timers by name;
``get_timer()`` is :meth:`TimerTable.next` and ``handle_timer()`` runs each of
:meth:`TimerTable.expired` through a table from :class:`Timer` to method (as
quinn-proto's ``TimerTable``). Adding a timer is one member here and one
method there. The three deadlines that move with every packet (recovery's, the
keep-alive's, the idle timeout's) are written into the table from what they
follow once per flush, before either call, rather than on every packet.

Timers that are due together run in the order of the enum, which is the order
their effects reach the wire: a connection that went idle ends before anything
is resent; a retransmission goes out before a zero-window probe.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum

__all__ = ["Timer", "TimerTable"]


class Timer(IntEnum):
    """The timers of one connection, in the order :meth:`TimerTable.expired` yields them."""

    #: Initiator (``SYN_SENT``): resend the SYN, or give up.
    SYN = 0
    #: Acceptor (``SYN_RECV``): the peer never proved it saw our SYN-ACK; vanish.
    HANDSHAKE = 1
    #: Closed cleanly (``LINGER``): stop re-acknowledging the peer's FIN.
    LINGER = 2
    #: Nothing in flight and nothing heard for ``idle_timeout``: the peer is gone.
    IDLE = 3
    #: Loss recovery's one deadline: retransmission timeout, tail-loss probe or RACK's
    #: reordering timer (:meth:`~txutp.engine._recovery.Recovery.deadline`).
    RECOVERY = 4
    #: The peer's window stayed shut: send a packet anyway.
    ZERO_WINDOW_PROBE = 5
    #: Initiator: resend the ACK that confirms the handshake (a server may speak first).
    CONFIRM = 6
    #: Nothing sent for ``keepalive_interval``.
    KEEPALIVE = 7


_TIMERS = tuple(Timer)


class TimerTable(list[float | None]):
    """One optional absolute deadline per :class:`Timer`: a list indexed by the timer.

    :meth:`set`, :meth:`stop` and :meth:`get` say what they do; a path run for every
    packet may index the list directly (``table[i] = None`` with a plain ``int``),
    which on CPython 3.11 costs about a third of a method call and a fifth of an
    ``Enum`` attribute lookup.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__([None] * len(_TIMERS))

    def set(self, timer: Timer, at: float | None) -> None:
        """Arm ``timer`` for ``at`` (``None`` stops it)."""
        self[timer] = at

    def stop(self, timer: Timer) -> None:
        self[timer] = None

    def get(self, timer: Timer) -> float | None:
        """When ``timer`` is due, or ``None`` if it is not armed."""
        return self[timer]

    def stop_all(self) -> None:
        self[:] = [None] * len(_TIMERS)

    def next(self) -> float | None:
        """The earliest deadline armed, or ``None``."""
        earliest = None
        for at in self:
            if at is not None and (earliest is None or at < earliest):
                earliest = at
        return earliest

    def expired(self, now: float) -> Iterator[Timer]:
        """Stop and yield each timer due at ``now``, in :class:`Timer` order.

        Lazily: a timer stopped by the handling of one yielded before it is not
        yielded (a connection that ended runs nothing more).
        """
        for timer in _TIMERS:
            deadline = self[timer]
            if deadline is not None and deadline <= now:
                self[timer] = None
                yield timer
