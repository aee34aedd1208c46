"""The connections of a multiplexer until their handshake is over: ``connect``, ``expect``, accept.

:class:`Handshakes` keeps, for one :class:`~txutp.UTPMultiplexer`, every
connection the application waits for: the Deferred of a ``connect`` or an
``expect``, its factory, its timeout and its cancellation. When the engine
reports a handshake done it builds the protocol (the waiting factory's, or the
listening factory's for a connection nobody waits for: an accept) and has the
multiplexer start its transport; when a handshake the application waits for
fails, times out or is cancelled, it fails the Deferred with the error
Twisted's TCP connect would give.

The multiplexer owns one and calls, and nothing else: :meth:`Handshakes.connect`
and :meth:`Handshakes.expect` (its own ``connect`` and ``expect``, once it has
checked that it is open and translated the address),
:meth:`Handshakes.eventReceived` (for each event of a connection that has no
transport), :meth:`Handshakes.failAll` (when its carrier stops) and ``len()``
(how many are pending: they keep the carrier in use).

The handshakes call back only the callables they were given: ``scheduleFlush``
(the multiplexer's), ``listenFactory`` (the factory accepting connections, if
any), ``startTransport`` (a handshake is done, its protocol built: start a
transport for it, and return what ``UTPTransport.start`` returns) and
``released`` (a pending connection ended without a transport: the carrier may
be unused now).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import error
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocol, IProtocolFactory, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .carriers import asIAddress
from .engine import (
    Connected,
    ConnectionIdInUse,
    ConnectionLimitError,
    ConnectionReset,
    ConnectionTerminated,
    ConnectionTimedOut,
    Event,
    PathErrorKind,
    PeerUnreachable,
    UTPConnection,
    UTPContext,
)
from .transport import UTPConnectionRefused, UTPNoRoute

__all__ = ["Handshakes"]

_M16 = 0xFFFF

_log = Logger()

#: Start a transport for a connection whose handshake is done: (connection, protocol, peer, client factory).
StartTransport = Callable[[UTPConnection, IProtocol, IAddress, "IProtocolFactory | None"], "Failure | None"]


class _Pending:
    """A connection asked for (``connect``, ``expect``) whose handshake has not finished."""

    def __init__(self, factory: IProtocolFactory, deferred: Deferred[IProtocol], address: IAddress) -> None:
        self.factory = factory
        self.deferred = deferred
        self.address = address
        self.timeoutCall: IDelayedCall | None = None


class Handshakes:
    """The handshakes of one engine ``context`` that someone waits for, timed by ``clock``.

    Addresses are the carrier's (``target``, as the engine takes them) and the
    application's (``peer``, an ``IAddress``: what the protocol's factory and
    the errors see).
    """

    def __init__(
        self,
        clock: IReactorTime,
        context: UTPContext,
        *,
        scheduleFlush: Callable[[], None],
        listenFactory: Callable[[], IProtocolFactory | None],
        startTransport: StartTransport,
        released: Callable[[], None],
    ) -> None:
        self._clock = clock
        self._context = context
        self._scheduleFlush = scheduleFlush
        self._listenFactory = listenFactory
        self._startTransport = startTransport
        self._released = released
        self._connecting: dict[UTPConnection, _Pending] = {}
        self._expected: dict[tuple[Any, int], _Pending] = {}

    def __len__(self) -> int:
        """How many connections are pending (each keeps the carrier in use)."""
        return len(self._connecting) + len(self._expected)

    def connect(
        self,
        target: Any,
        peer: IAddress,
        factory: IProtocolFactory,
        timeout: float | None,
        connectionId: int | None,
    ) -> Deferred[IProtocol]:
        """Open a connection to ``target`` for ``factory``, as :meth:`txutp.UTPMultiplexer.connect` says."""
        conn: UTPConnection | None = None

        def cancel(d: Deferred[IProtocol]) -> None:
            if conn is not None and conn in self._connecting:
                pending = self._connecting.pop(conn)
                conn.abort(self._clock.seconds())
                self._failPending(pending, Failure(error.ConnectingCancelledError(peer)))
                self._scheduleFlush()

        now = self._clock.seconds()
        try:
            if connectionId is None:
                conn = self._context.connect(target, now)
            else:
                conn = self._context.connect(target, now, connection_id=connectionId)
        except ConnectionLimitError as e:
            return fail(error.ConnectError(string=str(e)))
        except ConnectionIdInUse:
            return fail()
        d: Deferred[IProtocol] = Deferred(cancel)
        pending = _Pending(factory, d, peer)
        self._connecting[conn] = pending
        factory.doStart()
        if timeout is not None:
            pending.timeoutCall = self._clock.callLater(timeout, self._connectTimedOut, conn)
        self._scheduleFlush()
        return d

    def expect(
        self, target: Any, peer: IAddress, connectionId: int, factory: IProtocolFactory, timeout: float | None
    ) -> Deferred[IProtocol]:
        """Accept one connection from ``target`` whose SYN carries ``connectionId``, as
        :meth:`txutp.UTPMultiplexer.expect` says."""
        key = (target, connectionId & _M16)
        try:
            self._context.expect(target, connectionId, self._clock.seconds())
        except ConnectionIdInUse:
            return fail()

        def cancel(d: Deferred[IProtocol]) -> None:
            self._unexpect(key, Failure(error.ConnectingCancelledError(peer)))

        d: Deferred[IProtocol] = Deferred(cancel)
        pending = _Pending(factory, d, peer)
        self._expected[key] = pending
        factory.doStart()
        if timeout is not None:
            pending.timeoutCall = self._clock.callLater(
                timeout,
                lambda: self._unexpect(key, Failure(error.TimeoutError(f"no uTP connection from {peer} in time"))),
            )
        return d

    def eventReceived(self, conn: UTPConnection, event: Event) -> None:
        """An event of ``conn``, which has no transport.

        For a handshake someone waits for, a ``Connected`` starts its transport
        and a ``ConnectionTerminated`` fails its Deferred. Any other incoming
        connection is accepted on ``Connected`` if a factory listens, and
        aborted if none does.
        """
        if conn in self._connecting:
            self._handshakeEvent(self._connecting, conn, conn, event)
            return
        if conn.initiator:
            return  # a connection nobody above knows any more (cancelled, timed out): ignore it
        if self._expected and (conn.peer_addr, conn.send_id) in self._expected:
            self._handshakeEvent(self._expected, (conn.peer_addr, conn.send_id), conn, event)
            return
        if isinstance(event, Connected):
            self._accept(conn)
        # Anything else concerns a connection nobody above knows any more (lingering, aborted): ignore it.

    def failAll(self, reason: Exception) -> None:
        """Fail every pending connection with ``reason`` (the carrier stopped)."""
        for conn, pending in list(self._connecting.items()):
            del self._connecting[conn]
            self._failPending(pending, Failure(reason))
        for key, pending in list(self._expected.items()):
            del self._expected[key]
            self._failPending(pending, Failure(reason))

    def _accept(self, conn: UTPConnection) -> None:
        factory = self._listenFactory()
        now = self._clock.seconds()
        if factory is None:
            conn.abort(now)
            return
        peer = asIAddress(conn.peer_addr)
        try:
            protocol = factory.buildProtocol(peer)
        except Exception:
            _log.failure("Unhandled error in buildProtocol of {factory!r}", factory=factory)
            protocol = None
        if protocol is None:
            conn.abort(now)
            return
        self._startTransport(conn, protocol, peer, None)

    def _unexpect(self, key: tuple[Any, int], failure: Failure) -> None:
        pending = self._expected.pop(key, None)
        if pending is None:
            return
        address, connectionId = key
        self._context.unexpect(address, connectionId)
        conn = self._context.connections.get((address, (connectionId + 1) & _M16))
        if conn is not None and not conn.initiator and conn.send_id == connectionId:
            conn.abort(self._clock.seconds())  # its SYN came, its handshake did not finish
            self._scheduleFlush()
        self._failPending(pending, failure)

    def _connectTimedOut(self, conn: UTPConnection) -> None:
        pending = self._connecting.pop(conn, None)
        if pending is None:
            return
        pending.timeoutCall = None
        conn.abort(self._clock.seconds())
        self._failPending(pending, Failure(error.TimeoutError(f"uTP connection to {pending.address} timed out")))
        self._scheduleFlush()

    def _failPending(self, pending: _Pending, failure: Failure) -> None:
        if pending.timeoutCall is not None and pending.timeoutCall.active():
            pending.timeoutCall.cancel()
        pending.timeoutCall = None
        pending.factory.doStop()
        pending.deferred.errback(failure)
        self._released()

    def _handshakeEvent(self, waiting: dict[Any, _Pending], key: Any, conn: UTPConnection, event: Event) -> None:
        """An event of a connection someone waits for (``connect`` or ``expect``): made, or failed."""
        pending = waiting[key]
        if isinstance(event, Connected):
            del waiting[key]
            self._connectionMade(conn, pending)
        elif isinstance(event, ConnectionTerminated):
            del waiting[key]
            where = "to" if conn.initiator else "from"
            self._failPending(pending, _handshakeFailed(event, f"{where} {pending.address}"))

    def _connectionMade(self, conn: UTPConnection, pending: _Pending) -> None:
        if pending.timeoutCall is not None and pending.timeoutCall.active():
            pending.timeoutCall.cancel()
        pending.timeoutCall = None
        try:
            protocol = pending.factory.buildProtocol(pending.address)
            if protocol is None:
                raise error.NoProtocol()
        except Exception:
            conn.abort(self._clock.seconds())
            self._failPending(pending, Failure())
            return
        failure = self._startTransport(conn, protocol, pending.address, pending.factory)
        if failure is not None:
            pending.deferred.errback(failure)
        else:
            pending.deferred.callback(protocol)


def _handshakeFailed(event: ConnectionTerminated, direction: str) -> Failure:
    """The failure of a handshake that ended with ``event``, as Twisted's errors say it."""
    if isinstance(event, ConnectionReset):
        return Failure(UTPConnectionRefused(f"uTP connection {direction} refused"))
    if isinstance(event, PeerUnreachable):
        if event.error.kind is PathErrorKind.REFUSED:
            return Failure(UTPConnectionRefused(f"uTP connection {direction} refused: {event.error}", event.error))
        return Failure(UTPNoRoute(f"uTP connection {direction} failed: {event.error}", event.error))
    if isinstance(event, ConnectionTimedOut):
        if event.path_error is not None:
            return Failure(
                error.TimeoutError(f"uTP connection {direction} timed out (last ICMP error: {event.path_error})")
            )
        return Failure(error.TimeoutError(f"uTP connection {direction} timed out"))
    return Failure(error.ConnectError(f"uTP connection {direction} failed"))
