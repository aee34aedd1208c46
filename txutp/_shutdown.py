"""Closing at reactor shutdown: the connections being closed finish their close, within a bound.

A TCP socket outlives its process, a uTP connection does not: a program that
stops as soon as its own FIN is acknowledged would leave its peer waiting for
an answer to its FIN. :class:`CloseFinisher` is the part of a
:class:`~txutp.UTPMultiplexer` that prevents it (``docs/design.rst``, "Closing
at reactor shutdown"). It knows which connections owe their peer the end of a
close handshake, waits for them, resets those still owing when the bound
expires, and builds the RESETs that ``abort()`` does not send (to a lingering
peer).

The multiplexer owns one, keeps the ``before shutdown`` trigger and
:meth:`~txutp.UTPMultiplexer.finishClosing`, and calls, and nothing else:

* :meth:`CloseFinisher.wait`, from ``finishClosing``;
* :meth:`CloseFinisher.check`, after each flush while :attr:`CloseFinisher.waiting`;
* :meth:`CloseFinisher.resetAll` then :meth:`CloseFinisher.stop`, when its carrier stops.

The finisher calls back only the three callables it was given: ``send``
(datagrams to the carrier, now), ``flush`` (the multiplexer's) and
``disconnecting`` (has the application called ``loseConnection`` on the
connection's transport?).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from .engine import ConnectionState, UTPConnection, UTPContext

__all__ = ["CloseFinisher"]

Datagrams = list[tuple[bytes, Any]]


class CloseFinisher:
    """Waits for the connections of ``context`` being closed to finish their close; resets them after a bound.

    ``clock`` gives the time and the bound's timer. A connection *owes a close*
    if it is being closed and its close handshake is unfinished:

    * one whose application called ``loseConnection`` (``disconnecting``: its
      buffered data and FIN still to be sent and acknowledged), or in ``CLOSING``;
    * one lingering (``LINGER``: our FIN was acknowledged) whose peer has not
      sent its own FIN yet, or whose FIN we have not acknowledged.

    Connections the application keeps open, and handshakes, owe nothing.
    """

    def __init__(
        self,
        clock: IReactorTime,
        context: UTPContext,
        *,
        send: Callable[[Datagrams], None],
        flush: Callable[[], None],
        disconnecting: Callable[[UTPConnection], bool],
    ) -> None:
        self._clock = clock
        self._context = context
        self._send = send
        self._flush = flush
        self._disconnecting = disconnecting
        self._waiters: list[Deferred[None]] = []
        self._boundCall: IDelayedCall | None = None
        #: While waiting: connections known to be still closing.
        self._owing: dict[UTPConnection, None] = {}

    @property
    def waiting(self) -> bool:
        """Someone waits (:meth:`wait`) for the connections being closed."""
        return bool(self._waiters)

    def wait(self, timeout: float) -> Deferred[None]:
        """Wait at most ``timeout`` seconds for every connection that owes a close; then reset the rest.

        The Deferred fires when nothing is left to wait for, as :meth:`check`
        finds (the caller calls it: now, or after its next flush), or after
        ``timeout``, once the connections still owing a close are reset. Calls
        made while one waits share its wait, until the earliest of their deadlines.
        """
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        delay = max(0.0, timeout)
        call = self._boundCall
        if call is None or self._clock.seconds() + delay < call.getTime():
            if call is not None and call.active():
                call.cancel()
            self._boundCall = self._clock.callLater(delay, self._expired)
        return d

    def check(self) -> None:
        """While waiting (after each flush): has every connection being closed finished? Then stop waiting.

        Only the connections known to be closing are looked at, until none is
        left; then every connection, for those closed since. A connection whose
        linger ended before the peer's FIN came gets its RESET now.
        """
        if not self._waiters:
            return
        resets = self._settled()
        owing = self._owing
        if not owing:
            for conn in self._context.connections.values():
                if self._owesClose(conn):
                    owing[conn] = None
        if resets:
            self._send(resets)
        if not owing:
            self.stop()

    def resetAll(self, now: float) -> Datagrams:
        """Abort every connection; return the RESETs that ``abort`` does not send (to lingering peers owed one)."""
        resets = self._settled()
        for conn in list(self._context.connections.values()):
            if conn.state is ConnectionState.LINGER and not conn.close_complete:
                resets.append((conn.reset_packet(now), conn.peer_addr))
            conn.abort(now)
        return resets

    def stop(self) -> None:
        """Stop waiting: cancel the bound, fire every waiter."""
        call, self._boundCall = self._boundCall, None
        if call is not None and call.active():
            call.cancel()
        self._owing.clear()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def _owesClose(self, conn: UTPConnection) -> bool:
        """Is ``conn`` being closed, its close handshake unfinished?"""
        state = conn.state
        if state is ConnectionState.LINGER:
            return not conn.close_complete
        if state is ConnectionState.CLOSING:
            return True
        if state in (ConnectionState.CONNECTED, ConnectionState.FIN_SENT, ConnectionState.FIN_RECEIVED):
            return self._disconnecting(conn)  # loseConnection: flushing its buffer
        return False  # handshakes, and CLOSED

    def _settled(self) -> Datagrams:
        """Forget the closing connections that finished; RESETs for those whose linger ended before the peer's FIN."""
        resets: Datagrams = []
        owing = self._owing
        for conn in list(owing):
            if not self._owesClose(conn):
                del owing[conn]
                if conn.lingered and not conn.peer_fin_received:
                    # The engine gave up on the FIN; now the peer knows.
                    resets.append((conn.reset_packet(self._clock.seconds()), conn.peer_addr))
        return resets

    def _expired(self) -> None:
        """The bound is reached: reset every connection still being closed."""
        self._boundCall = None
        now = self._clock.seconds()
        resets = self._settled()
        for conn in list(self._context.connections.values()):
            if self._owesClose(conn):
                if conn.state is ConnectionState.LINGER:
                    resets.append((conn.reset_packet(now), conn.peer_addr))  # abort() says nothing to a lingering peer
                conn.abort(now)
        if resets:
            self._send(resets)
        self._flush()  # the protocols learn (ConnectionAborted), the RESETs leave
        self.stop()
