"""The Twisted transport of one uTP connection.

:class:`UTPTransport` is what a protocol running over uTP sees as
``self.transport``. It behaves like a TCP transport: writes are buffered and
never block, a registered producer is paused above ``bufferSize`` bytes
buffered and resumed once they drain, ``loseConnection`` flushes then closes,
``loseWriteConnection`` half-closes, ``abortConnection`` resets, pausing the
transport stops ``dataReceived`` and closes the advertised receive window, and
``connectionLost`` is called exactly once, with ``ConnectionDone`` (clean
close), ``ConnectionLost`` (reset by the peer, timed out, socket closed) or
``ConnectionAborted`` (``abortConnection``). An exception raised by a protocol
callback is logged and aborts that connection only, with the exception as the
reason.

A transport is created and driven by its *owner*, the multiplexer that runs
its connection's UDP port or other carrier. The two sides meet at a declared
seam, as Twisted's ``H2Connection`` and ``H2Stream`` do: the transport calls
only the :class:`TransportOwner` methods, and the owner calls only the methods
listed under "Called by the multiplexer" in :class:`UTPTransport`. Nothing
else crosses, in either direction.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet import error
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    ILoggingContext,
    IProducer,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ITransport,
)
from twisted.logger import Logger
from twisted.python import log as legacyLog
from twisted.python.failure import Failure
from zope.interface import implementer

from .engine import (
    ConnectionAborted,
    ConnectionClosed,
    ConnectionReset,
    ConnectionState,
    ConnectionStats,
    ConnectionTerminated,
    ConnectionTimedOut,
    DataReceived,
    EndOfStream,
    Event,
    PathError,
    UTPConnection,
    Writable,
)

__all__ = [
    "TransportOwner",
    "UTPConnectionRefused",
    "UTPConnectionReset",
    "UTPConnectionTimedOut",
    "UTPNoRoute",
    "UTPTransport",
]

_log = Logger()
_sessions = itertools.count()


class UTPConnectionReset(error.ConnectionLost):
    """The peer reset the uTP connection (``ST_RESET``)."""


class UTPConnectionTimedOut(error.ConnectionLost):
    """The peer stopped answering: the uTP connection timed out."""


class UTPConnectionRefused(error.ConnectionRefusedError):
    """A uTP connect was refused: the peer answered RESET, or ICMP said nothing listens (``pathError``)."""

    def __init__(self, message: str, pathError: PathError | None = None) -> None:
        super().__init__(message)  # type: ignore[no-untyped-call]
        self.pathError = pathError


class UTPNoRoute(error.NoRouteError):
    """ICMP said the peer cannot be reached (host or network unreachable): ``pathError`` says how."""

    def __init__(self, message: str, pathError: PathError) -> None:
        super().__init__(message)  # type: ignore[no-untyped-call]
        self.pathError = pathError


class TransportOwner(Protocol):
    """What a :class:`UTPTransport` calls on its owner, the multiplexer of its connection.

    These calls only record what the transport needs; the owner acts on them in
    its next flush, never from inside the call.
    """

    def seconds(self) -> float:
        """The current time: the ``now`` of every engine call."""
        ...

    def scheduleFlush(self) -> None:
        """Flush at the end of this reactor turn: the connection has something to send."""
        ...

    def watch(self, transport: UTPTransport, on: bool) -> None:
        """Call ``transport.afterFlush()`` after every flush (``on``), or stop calling it."""
        ...

    def deliverLater(self, transport: UTPTransport) -> None:
        """Call ``transport.deliverPending()`` in the next flush, and schedule that flush."""
        ...

    def forget(self, transport: UTPTransport) -> None:
        """The transport's connection is over: drop every reference to it."""
        ...


def _logPrefixOf(obj: object) -> str:
    if ILoggingContext.providedBy(obj):
        return str(obj.logPrefix())
    return type(obj).__name__


def _describe(address: IAddress) -> str:
    """``host:port`` for an IP address, else the address's ``str``."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    return f"{host}:{port}" if host is not None and port is not None else str(address)


@implementer(ITransport, IConsumer, IPushProducer, ILoggingContext)
class UTPTransport:
    """A uTP connection as an ``ITransport``, ``IConsumer``, ``IPushProducer`` and ``ILoggingContext``.

    Also provides ``abortConnection()``, ``loseWriteConnection()`` (half-close,
    delivered to ``IHalfCloseableProtocol``), ``stopReading()``/``startReading()``,
    ``stopConsuming()`` and :meth:`stats`.

    ``owner`` drives ``connection``; ``peer`` and ``host`` are what
    :meth:`getPeer` and :meth:`getHost` return; ``clientFactory``, for a
    connection the application asked for (``connect``, ``expect``), gets its
    ``doStop`` after ``connectionLost``.

    Called by the multiplexer (the owner), and by nothing else:

    * :meth:`start`, once, when the handshake is done;
    * :meth:`eventReceived`, for each engine event of the connection;
    * :meth:`deliverPending`, after :meth:`TransportOwner.deliverLater`;
    * :meth:`afterFlush`, after each flush while :meth:`TransportOwner.watch` is on;
    * :meth:`carrierClosed`, if the port closes under the connection.
    """

    #: Buffered bytes (ours plus the engine's unsent ones) above which a streaming producer is paused.
    bufferSize: int = 2**16

    def __init__(
        self,
        owner: TransportOwner,
        connection: UTPConnection,
        protocol: IProtocol,
        peer: IAddress,
        host: IAddress,
        *,
        client: bool,
        clientFactory: IProtocolFactory | None = None,
    ) -> None:
        self._mux = owner  # the multiplexer, seen only as a TransportOwner
        self.connection = connection
        self.protocol = protocol
        self._peer = peer
        self._host = host
        self._client = client
        self._clientFactory = clientFactory
        self.connected = False
        self.disconnecting = False
        self.disconnected = False
        self.producer: IProducer | None = None
        self.streamingProducer = False
        self._producerPaused = False
        self._buffer: deque[bytes] = deque()
        self._bufferBytes = 0
        self._readPaused = False
        self._pending: deque[Event] = deque()
        self._closeRequested = False
        self._closeIgnoresProducer = False
        self._engineClosed = False
        self._writeCloseRequested = False
        self._writeClosed = False
        self._aborting = False
        self._lossReason: Failure | None = None
        self._lost = False
        self._halfCloseable: Any = IHalfCloseableProtocol(protocol, None)
        prefix = _logPrefixOf(protocol)
        peerHost = getattr(peer, "host", peer)
        self.logstr = f"{prefix},client" if client else f"{prefix},{next(_sessions)},{peerHost}"

    def __repr__(self) -> str:
        return f"<UTPTransport {self.logstr} {_describe(self._peer)} {self.connection.state.value}>"

    # ------------------------------------------------------------------ protocol calls

    def _callSafely(self, f: Callable[..., object], *args: object) -> Failure | None:
        """Call ``f`` in this transport's log context; log and return the failure if it raises."""
        try:
            legacyLog.callWithContext({"system": self.logstr}, f, *args)
        except Exception:
            failure = Failure()
            _log.failure("Unhandled error in a uTP protocol callback ({system})", failure=failure, system=self.logstr)
            return failure
        return None

    def _call(self, f: Callable[..., object], *args: object) -> Failure | None:
        """Like :meth:`_callSafely`, and abort the connection with the failure as the reason."""
        failure = self._callSafely(f, *args)
        if failure is not None:
            self._abortWith(failure)
        return failure

    # ------------------------------------------------------------------ ITransport / IConsumer

    def write(self, data: bytes) -> None:
        """Buffer ``data`` for sending; a no-op once the connection (or its write side) is closed."""
        if not isinstance(data, bytes):
            raise TypeError("Data must be bytes")
        if not data or not self.connected or self._aborting or self._engineClosed or self._writeClosed:
            return
        if self._buffer:
            self._buffer.append(data)
            self._bufferBytes += len(data)
        else:
            try:
                n = self.connection.send(data, self._mux.seconds())
            except ValueError:
                return  # the engine already ended the connection; its event is on the way
            if n < len(data):
                rest = data[n:]
                self._buffer.append(rest)
                self._bufferBytes += len(rest)
        self._mux.scheduleFlush()
        if self._buffer:
            self._mux.watch(self, True)
        if (
            self.producer is not None
            and self.streamingProducer
            and not self._producerPaused
            and self._buffered() > self.bufferSize
        ):
            self._producerPaused = True
            self._call(self.producer.pauseProducing)  # type: ignore[attr-defined]

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """Write every item of ``data`` (all must be bytes)."""
        items = list(data)
        for item in items:
            if not isinstance(item, bytes):
                raise TypeError("Data must be bytes")
        self.write(b"".join(items))

    def loseConnection(self) -> None:
        """Close cleanly once everything written (and a pull or paused producer) is done."""
        if self._lost or self._closeRequested or self._aborting:
            return
        self._closeRequested = True
        self.disconnecting = True
        if self._pending:
            self._mux.deliverLater(self)  # a queued EOF or close must not wait for resumeProducing
        self._mux.watch(self, True)
        self._mux.scheduleFlush()

    def loseWriteConnection(self) -> None:
        """Half-close: send FIN after the buffered data; ``writeConnectionLost`` follows; keep reading."""
        if self._lost or self._closeRequested or self._aborting or self._writeCloseRequested:
            return
        self._writeCloseRequested = True
        self._mux.watch(self, True)
        self._mux.scheduleFlush()

    def abortConnection(self) -> None:
        """Drop everything buffered, send RESET; ``connectionLost`` follows with ``ConnectionAborted``."""
        if self._lost or self._aborting:
            return
        self._doAbort()

    def getPeer(self) -> IAddress:
        """The peer's address: an ``IPv4Address``/``IPv6Address`` of type ``'UDP'`` over UDP.

        Over another carrier: the carrier's address if it provides ``IAddress``,
        else a :class:`~txutp.carriers.CarrierAddress` holding it.
        """
        return self._peer

    def getHost(self) -> IAddress:
        """Our address, in the same form as :meth:`getPeer`."""
        return self._host

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """Register a producer; a pull producer (``streaming`` false) is resumed at once."""
        if self.producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer!r}, because producer {self.producer!r} was never unregistered."
            )
        if self._lost:
            producer.stopProducing()
            return
        self.producer = producer
        self.streamingProducer = bool(streaming)
        self._producerPaused = False
        if not streaming:
            producer.resumeProducing()  # type: ignore[attr-defined]
        self._mux.watch(self, True)
        self._mux.scheduleFlush()

    def unregisterProducer(self) -> None:
        """Forget the producer; a pending close may now proceed."""
        self.producer = None
        self._producerPaused = False
        if not self._lost and (self._closeRequested or self._writeCloseRequested):
            self._mux.watch(self, True)
            self._mux.scheduleFlush()

    def stopConsuming(self) -> None:
        """Unregister the producer and lose the connection."""
        self.unregisterProducer()
        self.loseConnection()

    # ------------------------------------------------------------------ IPushProducer (inbound flow control)

    def pauseProducing(self) -> None:
        """Stop delivering ``dataReceived``; the advertised window closes as data arrives."""
        if self._lost or self._readPaused:
            return
        self._readPaused = True
        self.connection.pause_reading()

    def resumeProducing(self) -> None:
        """Deliver held data again and reopen the window."""
        if self._lost or self._aborting or not self._readPaused:
            return
        self._readPaused = False
        self.connection.resume_reading(self._mux.seconds())
        if self._pending:
            self._mux.deliverLater(self)
        self._mux.scheduleFlush()

    def stopProducing(self) -> None:
        """As ``loseConnection``."""
        self.loseConnection()

    stopReading = pauseProducing
    startReading = resumeProducing

    # ------------------------------------------------------------------ ILoggingContext and extras

    def logPrefix(self) -> str:
        """``"<protocol prefix>,client"`` or ``"<protocol prefix>,<session>,<peer host>"``."""
        return self.logstr

    def stats(self) -> ConnectionStats:
        """The engine's statistics for this connection (RTT, cwnd, retransmissions, ...)."""
        return self.connection.stats()

    # ------------------------------------------------------------------ called by the multiplexer

    def start(self) -> Failure | None:
        """The handshake is done: connect the protocol (``makeConnection``).

        Returns the failure if ``connectionMade`` raised (the connection is then aborted).
        """
        self.connected = True
        return self._call(self.protocol.makeConnection, self)

    def eventReceived(self, event: Event) -> None:
        """Handle one engine event of this connection: now, or once reading resumes."""
        if self._lost:
            return
        if isinstance(event, Writable):
            self.afterFlush()
            return
        if isinstance(event, ConnectionTerminated) and not isinstance(event, ConnectionClosed):
            self._pending.clear()
            self._terminated(event)
            return
        if self._pending or (self._readPaused and not self._closeRequested and not self._aborting):
            self._pending.append(event)
            return
        self._deliver(event)

    def deliverPending(self) -> None:
        """Deliver the events held while reading was paused, as far as reading allows."""
        pending = self._pending
        while pending and not self._lost and (not self._readPaused or self._closeRequested or self._aborting):
            self._deliver(pending.popleft())

    def afterFlush(self) -> None:
        """After a flush: refill the engine, pause or resume producers, finish closes."""
        if self._lost or self._aborting:
            self._mux.watch(self, False)
            return
        self._pushBuffer()
        producer = self.producer
        if producer is not None:
            if self.streamingProducer:
                if self._producerPaused and self._buffered() <= self.bufferSize // 2:
                    self._producerPaused = False
                    self._call(producer.resumeProducing)  # type: ignore[attr-defined]
            else:
                self._pull(producer)
        if self._lost or self._aborting:
            return
        if not self._buffer:
            blocking = self.producer is not None and (not self.streamingProducer or self._producerPaused)
            now = self._mux.seconds()
            if self._closeRequested and not self._engineClosed and (not blocking or self._closeIgnoresProducer):
                self._engineClosed = True
                self.connection.close(now)
                self._mux.scheduleFlush()
            elif self._writeCloseRequested and not self._writeClosed and not self._closeRequested and not blocking:
                self._writeClosed = True
                self.connection.shutdown_write(now)
                self._mux.scheduleFlush()
                if self._halfCloseable is not None:
                    self._call(self._halfCloseable.writeConnectionLost)
        self._mux.watch(self, self._needsWatch())

    def carrierClosed(self) -> None:
        """The port (the carrier) closed under the connection: lose it with ``ConnectionLost``."""
        self._connectionLost(Failure(error.ConnectionLost("the uTP port was closed")))

    # ------------------------------------------------------------------ internals

    def _buffered(self) -> int:
        return self._bufferBytes + self.connection.bytes_unsent

    def _pushBuffer(self) -> None:
        buf = self._buffer
        if not buf:
            return
        conn = self.connection
        now = self._mux.seconds()
        while buf:
            free = conn.send_buffer_free
            if free <= 0:
                break
            chunk = buf[0]
            try:
                n = conn.send(chunk if len(chunk) <= free else chunk[:free], now)
            except ValueError:
                buf.clear()
                self._bufferBytes = 0
                return
            self._bufferBytes -= n
            if n >= len(chunk):
                buf.popleft()
            else:
                buf[0] = chunk[n:]
                break

    def _pull(self, producer: IProducer) -> None:
        """Resume a pull producer until the buffer is full or it stops writing."""
        for _ in range(64):
            if self.producer is not producer or self._lost or self._aborting or self._engineClosed or self._writeClosed:
                break
            before = self._buffered()
            if before >= self.bufferSize:
                break
            if self._call(producer.resumeProducing) is not None:  # type: ignore[attr-defined]
                break
            self._pushBuffer()
            if self._buffered() <= before:
                break  # it wrote nothing: wait for its next write

    def _needsWatch(self) -> bool:
        if self._lost or self._aborting:
            return False
        return bool(
            self._buffer
            or self.producer is not None
            or (self._closeRequested and not self._engineClosed)
            or (self._writeCloseRequested and not self._writeClosed)
        )

    def _deliver(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            if not self._closeRequested and not self._aborting:
                self._call(self.protocol.dataReceived, event.data)
        elif isinstance(event, EndOfStream):
            self._eof()
        elif isinstance(event, ConnectionTerminated):
            self._terminated(event)

    def _eof(self) -> None:
        if self._closeRequested or self._aborting:
            return
        if self._halfCloseable is not None:
            self._call(self._halfCloseable.readConnectionLost)
        else:
            # As TCP: a protocol that cannot half-close loses the connection on the peer's EOF.
            self._closeIgnoresProducer = True
            self.loseConnection()

    def _terminated(self, event: ConnectionTerminated) -> None:
        if isinstance(event, ConnectionClosed):
            reason = Failure(error.ConnectionDone())
        elif isinstance(event, ConnectionReset):
            reason = Failure(UTPConnectionReset("uTP connection reset by peer"))
        elif isinstance(event, ConnectionTimedOut):
            why = "" if event.path_error is None else f" (last ICMP error: {event.path_error})"
            reason = Failure(UTPConnectionTimedOut(f"uTP connection timed out{why}"))
        else:
            reason = self._lossReason or Failure(error.ConnectionAborted())
        if isinstance(event, ConnectionAborted) and self._lossReason is not None:
            reason = self._lossReason
        self._connectionLost(reason)

    def _abortWith(self, failure: Failure) -> None:
        if self._lost:
            return
        self._lossReason = failure
        if not self._aborting:
            self._doAbort()

    def _doAbort(self) -> None:
        self._aborting = True
        self.disconnecting = True
        self._buffer.clear()
        self._bufferBytes = 0
        self._pending.clear()
        conn = self.connection
        if conn.state is ConnectionState.CLOSED:
            self._pending.append(ConnectionAborted())
            self._mux.deliverLater(self)
        else:
            conn.abort(self._mux.seconds())
            self._mux.scheduleFlush()

    def _connectionLost(self, reason: Failure) -> None:
        if self._lost:
            return
        self._lost = True
        self.connected = False
        self.disconnecting = False
        self.disconnected = True
        self._buffer.clear()
        self._bufferBytes = 0
        self._pending.clear()
        self._mux.forget(self)
        producer, self.producer = self.producer, None
        if producer is not None:
            self._callSafely(producer.stopProducing)
        self._callSafely(self.protocol.connectionLost, reason)
        factory, self._clientFactory = self._clientFactory, None
        if factory is not None:
            factory.doStop()
