"""Connection states and the explicit table of legal transitions.

Rule: every change of :class:`ConnectionState` goes through :data:`TRANSITIONS`
(see :meth:`UTPConnection._fire`); an input missing from the table for the current
state changes nothing. Half-close is expressed by the states themselves:
``FIN_SENT`` (our write side closed, still reading) and ``FIN_RECEIVED`` (the
peer's write side closed, still writing).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["TRANSITIONS", "ConnectionState", "Input", "next_state"]


class ConnectionState(Enum):
    """Where a connection is in its life."""

    SYN_SENT = "SYN_SENT"  #: initiator: SYN sent, waiting for the SYN-ACK
    SYN_RECV = "SYN_RECV"  #: acceptor: SYN-ACK sent, waiting for proof the peer saw it
    CONNECTED = "CONNECTED"  #: both directions open
    FIN_SENT = "FIN_SENT"  #: our write side closed (FIN queued or sent), still reading
    FIN_RECEIVED = "FIN_RECEIVED"  #: the peer's EOF delivered, we may still write
    CLOSING = "CLOSING"  #: nothing more to read; waiting for our data and FIN to be acked
    LINGER = "LINGER"  #: closed cleanly; kept a while to re-ACK a retransmitted FIN
    CLOSED = "CLOSED"  #: terminal


class Input(Enum):
    """What can move a connection from one state to another."""

    SYN_ACK_RECEIVED = "SYN_ACK_RECEIVED"  #: initiator got a valid SYN-ACK
    PEER_CONFIRMED = "PEER_CONFIRMED"  #: acceptor got a non-SYN packet with a valid ack_nr
    SHUTDOWN_WRITE = "SHUTDOWN_WRITE"  #: local half-close of the write side
    CLOSE = "CLOSE"  #: local full close: FIN after the data, further input discarded
    PEER_EOF = "PEER_EOF"  #: every byte up to the peer's FIN arrived
    FIN_ACKED = "FIN_ACKED"  #: our FIN (and so all our data) was acknowledged
    LINGER_EXPIRED = "LINGER_EXPIRED"
    RESET_RECEIVED = "RESET_RECEIVED"
    TIMED_OUT = "TIMED_OUT"
    ABORT = "ABORT"  #: local abort (sends RESET)


S = ConnectionState
I = Input  # noqa: E741

#: ``(state, input) -> next state``. Anything absent is ignored.
TRANSITIONS: dict[tuple[ConnectionState, Input], ConnectionState] = {
    (S.SYN_SENT, I.SYN_ACK_RECEIVED): S.CONNECTED,
    (S.SYN_RECV, I.PEER_CONFIRMED): S.CONNECTED,
    (S.CONNECTED, I.SHUTDOWN_WRITE): S.FIN_SENT,
    (S.CONNECTED, I.PEER_EOF): S.FIN_RECEIVED,
    (S.CONNECTED, I.CLOSE): S.CLOSING,
    (S.FIN_SENT, I.PEER_EOF): S.CLOSING,
    (S.FIN_SENT, I.CLOSE): S.CLOSING,
    (S.FIN_RECEIVED, I.SHUTDOWN_WRITE): S.CLOSING,
    (S.FIN_RECEIVED, I.CLOSE): S.CLOSING,
    (S.CLOSING, I.FIN_ACKED): S.LINGER,
    (S.LINGER, I.LINGER_EXPIRED): S.CLOSED,
}
# Ways out that every live state shares.
for _state in (S.SYN_SENT, S.SYN_RECV, S.CONNECTED, S.FIN_SENT, S.FIN_RECEIVED, S.CLOSING, S.LINGER):
    for _input in (I.RESET_RECEIVED, I.TIMED_OUT, I.ABORT):
        TRANSITIONS[(_state, _input)] = S.CLOSED
# Closing before the handshake completes gives up at once.
TRANSITIONS[(S.SYN_SENT, I.CLOSE)] = S.CLOSED
TRANSITIONS[(S.SYN_RECV, I.CLOSE)] = S.CLOSED
del _state, _input


def next_state(state: ConnectionState, event: Input) -> ConnectionState | None:
    """Return the state ``event`` leads to from ``state``, or ``None`` if it is not legal there."""
    return TRANSITIONS.get((state, event))
