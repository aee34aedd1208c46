"""The driver: one :class:`~txutp.engine.UTPContext` over one datagram carrier.

:class:`UTPMultiplexer` is a :class:`~twisted.internet.protocol.DatagramProtocol`
for a *carrier* (:mod:`txutp.carriers`): the UDP port of :func:`txutp.listenUTP`,
a port of ``reactor.listenUDP``, a :class:`~txutp.carriers.MemoryNetwork`
address, an :class:`~txutp.carriers.EnvelopeCarrier` or one of yours. The
carrier is made outside the multiplexer and starts it, as ``reactor.listenUDP``
starts its protocol.

The multiplexer feeds every datagram to the sans-IO context, then *flushes*
once per read batch: a batching carrier (the UDP port on POSIX reactors) calls
:meth:`~UTPMultiplexer.readBatchDone` at the end of each batch, and for any
other carrier ``datagramReceived`` schedules a ``callLater(0)``. A flush drains
events into the connections' transports, hands the datagrams due to the
carrier, and re-arms one timer at the context's earliest deadline. Application
calls on a transport schedule the same flush with ``callLater(0)``, so
everything a reactor turn asks for leaves once (ACK coalescing, as libutp's
``utp_issue_deferred_acks``).

At reactor shutdown (a ``before shutdown`` trigger, registered while the
carrier runs) the multiplexer lets the connections being closed finish their
close handshake, for at most :attr:`~UTPMultiplexer.shutdownGrace` seconds,
and resets those that do not (:meth:`~UTPMultiplexer.finishClosing`): a
process that exits takes its connections with it, so every peer must have had
its answer or a RESET by then. Its :class:`~txutp._shutdown.CloseFinisher`
does that; its :class:`~txutp._handshakes.Handshakes` keeps the connections
until their handshake is over (``connect``, ``expect``, accept). Transports
see their multiplexer only as a :class:`~txutp.transport.TransportOwner`. The
registry that shares UDP ports between endpoints is :mod:`txutp._registry`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet import error
from twisted.internet.abstract import isIPAddress
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocol, IProtocolFactory
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._handshakes import Handshakes
from ._shutdown import CloseFinisher
from .carriers import BatchingCarrier, asIAddress
from .engine import ENDED_COUNTERS, ConnectionState, Event, PathError, UTPConfig, UTPConnection, UTPContext
from .transport import UTPTransport

__all__ = ["MultiplexerStats", "UTPMultiplexer"]

#: A reactor or clock providing IReactorTime; the registry's also IReactorUDP (and, for names, a resolver).
Reactor = Any
Datagrams = list[tuple[bytes, Any]]

_log = Logger()


@dataclass(slots=True)
class MultiplexerStats:
    """Counters of one multiplexer and its carrier (the context keeps its own in ``context.stats``).

    The UDP port counts what it sends (leaving out what the socket refused) and
    its socket's features; over other carriers the multiplexer counts what it
    hands over (and, for a carrier without ``writeBatch``, what ``write``
    refused), and the socket's counters stay 0.
    """

    datagrams_received: int = 0
    datagrams_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    #: Read batches (one flush each).
    batches: int = 0
    #: Datagrams the carrier refused to send (EAGAIN, ENOBUFS, ECONNREFUSED, EMSGSIZE, any error): treated as loss.
    send_errors: int = 0
    #: sendmsg calls that sent a run of datagrams at once (UDP GSO).
    gso_sends: int = 0
    #: Reads that returned several datagrams coalesced by the kernel (UDP GRO).
    gro_reads: int = 0
    #: Errors read from the socket's error queue (ICMP, Linux); ``context.stats`` says which counted.
    icmp_errors: int = 0
    #: Non-uTP datagrams dropped because no user datagram protocol was given.
    garbage_dropped: int = 0
    #: Non-uTP datagrams handed to the user datagram protocol.
    other_protocol: int = 0
    #: SO_RCVBUF / SO_SNDBUF as read back after raising them (Linux reports twice what was granted).
    rcvbuf: int = 0
    sndbuf: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dictionary."""
        return asdict(self)


class _SharedDatagramTransport:
    """The transport of a user :class:`DatagramProtocol` sharing the carrier: ``write(data, addr)`` on it."""

    def __init__(self, mux: UTPMultiplexer) -> None:
        self._mux = mux

    def write(self, data: bytes, addr: Any) -> None:
        """Send ``data`` to ``addr`` through the carrier; errors count as loss, as for uTP."""
        self._mux._send([(data, addr)])

    def getHost(self) -> IAddress:
        """The carrier's address."""
        return self._mux.getHost()


class UTPMultiplexer(DatagramProtocol):
    """Every uTP connection on one carrier (a UDP port, or any other), driven by one engine context.

    ``reactor`` needs only ``callLater`` and ``seconds``: a reactor or a
    ``task.Clock``. ``datagramProtocol``, if given, receives the datagrams
    that are not uTP (a DHT sharing the port, say); its transport can
    ``write(data, addr)`` through the same carrier. Without one, such
    datagrams are dropped and counted. With ``closeWhenUnused`` (the
    registry's multiplexers), the carrier is stopped once no listening,
    connection, pending connection or :meth:`hold` needs it and its lingering
    connections have ended; otherwise it runs until :meth:`closeNow`.

    If ``reactor`` has system event triggers (``IReactorCore``), the
    multiplexer adds a ``before shutdown`` trigger while its carrier runs: it
    runs :meth:`finishClosing`, so connections being closed may finish their
    close handshake (for at most :attr:`shutdownGrace` seconds) before the
    reactor stops the carrier, and then, with ``closeWhenUnused``, stops the
    carrier if nothing else needs it.

    Addresses are the carrier's (for UDP, ``(host, port)`` with an IP literal).
    """

    noisy = False

    def logPrefix(self) -> str:
        """``uTP``: the UDP port logs as ``uTP starting on 6881``, ``[uTP (UDP)] ...``."""
        return "uTP"

    def __init__(
        self,
        reactor: Reactor,
        config: UTPConfig | None = None,
        *,
        datagramProtocol: DatagramProtocol | None = None,
        closeWhenUnused: bool = False,
    ) -> None:
        self.reactor = reactor
        self.config = config or UTPConfig()
        self.context = UTPContext(self.config, accepting=False)
        self.stats = MultiplexerStats()
        self.datagramProtocol = datagramProtocol
        self.closeWhenUnused = closeWhenUnused
        #: The carrier, from its ``makeConnection`` on (kept after it stops, unlike ``transport``).
        self.carrier: Any = None
        #: The factory of the listening port, if any.
        self.listenFactory: IProtocolFactory | None = None
        self._host: IAddress = IPv4Address("UDP", "0.0.0.0", 0)
        self._ipv6Carrier = False
        #: How a flush hands its datagrams to the carrier (its ``writeBatch``, or one ``write`` each).
        self._send: Callable[[Datagrams], None] = self._writeEach
        self._batching = False
        self._transports: dict[UTPConnection, UTPTransport] = {}
        self._handshakes = Handshakes(
            reactor,
            self.context,
            scheduleFlush=self.scheduleFlush,
            listenFactory=lambda: self.listenFactory,
            startTransport=self._startTransport,
            released=self._maybeClose,
        )
        self._pendingDelivery: dict[UTPTransport, None] = {}
        self._watched: dict[UTPTransport, None] = {}
        self._holds = 0
        self._flushCall: IDelayedCall | None = None
        self._timerCall: IDelayedCall | None = None
        self._timerAt: float | None = None
        self._flushing = False
        self._dirty = False
        self._closing = False
        self._closed = False
        self._done = False
        self._whenClosed: list[Deferred[None]] = []
        self._readPending = False
        #: At reactor shutdown, how long (seconds) closing connections get to finish their close
        #: (:meth:`finishClosing`); ``config.shutdown_grace`` by default.
        self.shutdownGrace: float = self.config.shutdown_grace
        self._shutdownTrigger: Any = None
        self._shuttingDown = False
        self._finisher = CloseFinisher(
            reactor, self.context, send=self._sendNow, flush=self.flush, disconnecting=self._disconnecting
        )

    def traceConnections(self, path: str | None) -> None:
        """Trace the connections opened from now on (``None``: stop); see ``docs/observing.rst``.

        A ``path`` ending in ``.jsonl`` gets the first connection's trace; any
        other is a directory, created if missing, with one file per connection
        (named by :func:`txutp.trace.trace_file_name`). ``config.trace``, or the
        environment variable ``TXUTP_TRACE``, does this when the carrier starts.
        """
        from .trace import address_text, trace_directory, trace_file

        if path is None:
            self.context.tracer_factory = None
            return
        local = address_text(self._host)
        factory = trace_file(path, local) if path.endswith(".jsonl") else trace_directory(path, local)
        self.context.tracer_factory = factory

    def metrics(self) -> dict[str, Any]:
        """Counters and gauges of this port for monitoring (``docs/observing.rst``; ``txutp.prometheus``).

        Flat numbers (the carrier's and the context's counters, totals of the
        connections' retransmissions, timeouts and the like, live and ended),
        the gauges ``connections``, ``half_open`` and ``listening``, and
        ``connections_by_state``, a mapping from state to count.
        """
        context = self.context
        byState: dict[str, int] = {}
        totals = dict.fromkeys(ENDED_COUNTERS, 0)
        for conn in context.connections.values():
            stats = conn.stats()
            byState[stats.state.lower()] = byState.get(stats.state.lower(), 0) + 1
            for name in ENDED_COUNTERS:
                totals[name] += getattr(stats, name)
        ended = context.ended_totals
        result: dict[str, Any] = {**self.stats.as_dict(), **context.stats.as_dict()}
        for name in ENDED_COUNTERS:
            result[name] = totals[name] + ended.get(name, 0)
        result["connections"] = len(context.connections)
        result["connections_by_state"] = byState
        result["half_open"] = context.half_open
        result["listening"] = int(self.listenFactory is not None)
        return result

    @property
    def port(self) -> Any:
        """The carrier (the name it had when it was always a UDP port)."""
        return self.carrier

    # ------------------------------------------------------------------ the carrier

    def startProtocol(self) -> None:
        """The carrier started us: learn its address and batching, start the user datagram protocol."""
        carrier: Any = self.transport
        self.carrier = carrier
        host = carrier.getHost()
        self._ipv6Carrier = isinstance(host, IPv6Address)
        self._host = asIAddress(host)
        trace = self.config.trace or os.environ.get("TXUTP_TRACE") or None
        if trace is not None and self.context.tracer_factory is None:
            self.traceConnections(trace)
        if isinstance(carrier, BatchingCarrier):
            self._batching = True
            # The UDP port counts what it sends into our stats itself (leaving out what the socket refused).
            self._send = carrier.writeBatch if getattr(carrier, "stats", None) is self.stats else self._writeBatch
        else:
            self._send = self._writeEach
        if self.datagramProtocol is not None:
            self.datagramProtocol.makeConnection(_SharedDatagramTransport(self))  # type: ignore[arg-type]
        addTrigger = getattr(self.reactor, "addSystemEventTrigger", None)
        if addTrigger is not None and self._shutdownTrigger is None:
            self._shutdownTrigger = addTrigger("before", "shutdown", self._beforeShutdown)

    def stopProtocol(self) -> None:
        """The carrier is stopping (we stop it, or the reactor shuts down): end everything at once.

        Live connections are reset (their RESETs still leave: the carrier stops
        right after this returns), so peers learn at once rather than time out;
        so are lingering connections whose peer's FIN has not arrived (we could
        no longer acknowledge it). The reactor's shutdown trigger is removed.
        """
        if self._shutdownTrigger is not None:
            trigger, self._shutdownTrigger = self._shutdownTrigger, None
            self.reactor.removeSystemEventTrigger(trigger)
        now = self.reactor.seconds()
        resets = self._finisher.resetAll(now)
        out = resets + self.context.datagrams_to_send(now)
        if out:
            try:
                self._send(out)
            except Exception:
                _log.failure("Unhandled error while sending the last datagrams of a uTP port")
        self._closed = True
        for call in (self._flushCall, self._timerCall):
            if call is not None and call.active():
                call.cancel()
        self._flushCall = self._timerCall = None
        self._timerAt = None
        self._handshakes.failAll(error.ConnectError("the uTP port was closed"))
        for transport in list(self._transports.values()):
            transport.carrierClosed()
        self._transports.clear()
        self._pendingDelivery.clear()
        self._watched.clear()
        for conn in list(self.context.connections.values()):
            conn.abort(now)
        while self.context.next_event() is not None:
            pass
        self.context.datagrams_to_send(now)  # discard: the carrier has stopped
        if self.listenFactory is not None:
            factory, self.listenFactory = self.listenFactory, None
            factory.doStop()
        if self.datagramProtocol is not None:
            self.datagramProtocol.doStop()
        self._finisher.stop()
        if not self._closing:
            # The carrier stopped by itself (the reactor shut the port down).
            self._fireClosed()

    def _fireClosed(self) -> None:
        self._done = True
        waiters, self._whenClosed = self._whenClosed, []
        for d in waiters:
            d.callback(None)

    def whenClosed(self) -> Deferred[None]:
        """A Deferred that fires once the carrier has stopped."""
        if self._done:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._whenClosed.append(d)
        return d

    @property
    def closed(self) -> bool:
        """The carrier has stopped."""
        return self._closed

    @property
    def closing(self) -> bool:
        """The carrier is stopping or has stopped: no new connection or listening."""
        return self._closing or self._closed

    def getHost(self) -> IAddress:
        """The carrier's address: for UDP an ``IPv4Address``/``IPv6Address`` of type ``'UDP'``.

        Other carriers' addresses are as :func:`~txutp.carriers.asIAddress` gives them.
        """
        return self._host

    def hold(self) -> None:
        """Keep the carrier running until :meth:`release` (while a listen or connect is being set up)."""
        self._holds += 1

    def release(self) -> None:
        """Undo one :meth:`hold`."""
        self._holds -= 1
        self._maybeClose()

    @property
    def inUse(self) -> bool:
        """Someone needs the carrier: a listening port, a connection, a pending connect or expect, a hold."""
        return bool(self.listenFactory is not None or self._transports or self._handshakes or self._holds)

    def _maybeClose(self) -> None:
        """With ``closeWhenUnused``, stop the carrier if nobody uses it and no connection lingers.

        Once the reactor is shutting down, a connection lingering after both
        FINs were exchanged does not hold the carrier: the process is about
        to end, and nothing is owed to its peer.
        """
        if not self.closeWhenUnused or self._closed or self._closing or self.inUse:
            return
        if self._flushing:
            return  # the flush ends by calling this again
        now = self.reactor.seconds()
        aborted = False
        for conn in list(self.context.connections.values()):
            if conn.state not in (ConnectionState.LINGER, ConnectionState.CLOSED):
                conn.abort(now)  # half-open or forgotten: nobody will ever use it
                aborted = True
        if aborted:
            self.scheduleFlush()  # send the RESETs first
        elif all(
            conn.state is ConnectionState.CLOSED or (self._shuttingDown and conn.close_complete)
            for conn in self.context.connections.values()
        ):
            self.closeNow()
        # Otherwise connections linger to re-ACK a last FIN; the flush after their timers comes back here.

    def closeNow(self) -> Deferred[None]:
        """Stop the carrier at once, ending every connection; fires when it has stopped."""
        if self._done:
            return succeed(None)
        d = self.whenClosed()
        if not self._closing:
            self._closing = True
            if self._flushCall is not None and self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
            carrier = self.carrier
            if carrier is None:
                self._carrierStopped(None)
            else:
                stopped = maybeDeferred(carrier.stopListening)
                stopped.addErrback(lambda f: _log.failure("Error stopping the carrier {c!r}", f, c=carrier))
                stopped.addCallback(self._carrierStopped)
        return d

    def _carrierStopped(self, _: object) -> None:
        if not self._closed:
            self.stopProtocol()  # a carrier that stopped without calling doStop
        self._fireClosed()

    # ------------------------------------------------------------------ graceful shutdown

    def finishClosing(self, timeout: float | None = None) -> Deferred[None]:
        """Let the connections being closed finish their close handshake; after ``timeout``, reset the rest.

        The reactor's ``before shutdown`` trigger calls this (with
        :attr:`shutdownGrace`, by default ``config.shutdown_grace``, 2 s), so
        that no peer is left waiting for an answer from a process that is gone;
        an application stopping a carrier of its own can call it first. It
        waits, at most ``timeout`` seconds (default :attr:`shutdownGrace`) of
        the reactor's clock, for every connection that is being closed:

        * one whose application called ``loseConnection`` (its buffered data
          and FIN still to be sent and acknowledged), or in ``CLOSING``;
        * one lingering (``LINGER``: our FIN was acknowledged) whose peer has
          not sent its own FIN yet, or whose FIN we have not acknowledged: it
          is acknowledged when it arrives. A connection lingering after both
          FINs were exchanged is done.

        Connections the application still keeps open, and handshakes, are not
        waited for and not touched (another shutdown trigger may still use
        them); when the reactor then stops the carrier they are reset
        (:meth:`stopProtocol`). Connections closed while this waits, by the
        application or on the peer's FIN, are waited for too. After ``timeout``
        every connection still being closed is reset (a ``ConnectionAborted``
        for its protocol if it has not lost it yet), and its RESET sent at once.

        The Deferred fires when nothing is left to wait for: at once if nothing
        is being closed and no connection is open (an open one may still be
        closed by another shutdown trigger: the multiplexer looks again at the
        end of the reactor turn). Calls made while one waits share its wait,
        until the earliest of their deadlines.
        """
        if timeout is None:
            timeout = self.shutdownGrace
        if self._closed:
            return succeed(None)
        d = self._finisher.wait(timeout)
        if self._transports or self._flushing:
            self.scheduleFlush()  # look again once this turn's other shutdown code ran
        else:
            self._finisher.check()
        return d

    def _beforeShutdown(self) -> Deferred[None]:
        """The reactor's ``before shutdown`` trigger: :meth:`finishClosing`, then stop an unused carrier.

        From now on, with ``closeWhenUnused``, the carrier stops as soon as
        nothing uses it and every lingering connection has had its answer,
        not after ``linger_time``: so a ``stopListening()`` Deferred that a
        shutdown waits for (``twistd`` does) fires at once, whichever of the
        two triggers runs first.
        """
        self._shutdownTrigger = None  # fired: the reactor no longer holds it
        self._shuttingDown = True
        d = self.finishClosing()
        d.addCallback(lambda _: self._maybeClose())
        return d

    def _disconnecting(self, conn: UTPConnection) -> bool:
        """For the finisher: has the application called ``loseConnection`` on ``conn``'s transport?"""
        transport = self._transports.get(conn)
        return transport is not None and transport.disconnecting

    def _sendNow(self, datagrams: Datagrams) -> None:
        """For the finisher: hand ``datagrams`` to the carrier now, outside a flush."""
        self._send(datagrams)

    # ------------------------------------------------------------------ listening

    def startListening(self, factory: IProtocolFactory) -> None:
        """Accept incoming connections for ``factory``; raise ``CannotListenError`` if someone already listens."""
        host = self.getHost()
        if self.listenFactory is not None or self.closing:
            raise error.CannotListenError(
                getattr(host, "host", str(host)),
                getattr(host, "port", 0),
                OSError("a uTP server already listens on this port"),
            )
        self.listenFactory = factory
        self.context.accepting = True
        factory.doStart()
        prefix = factory.logPrefix() if hasattr(factory, "logPrefix") else type(factory).__name__
        _log.info("{prefix} starting on {port!r}", prefix=prefix, port=getattr(host, "port", host))

    def stopListening(self) -> Deferred[None]:
        """Stop accepting; with ``closeWhenUnused``, stop the carrier if nothing else uses it.

        Connections already accepted stay up, as with TCP; if the reactor shuts
        down while they are still open, they end as :meth:`finishClosing` says.
        Fires once listening stopped (and the carrier too, if that left it
        unused: after its lingering connections).
        """
        factory = self.listenFactory
        if factory is None:
            return succeed(None)
        self.listenFactory = None
        self.context.accepting = False
        host = self.getHost()
        _log.info("(uTP Port {port!r} Closed)", port=getattr(host, "port", host))
        factory.doStop()
        self._maybeClose()
        if self._closed or self.inUse or not self.closeWhenUnused:
            return succeed(None)
        return self.whenClosed()

    # ------------------------------------------------------------------ connecting

    def connect(
        self,
        address: Any,
        factory: IProtocolFactory,
        timeout: float | None = None,
        *,
        connectionId: int | None = None,
    ) -> Deferred[IProtocol]:
        """Open a connection to ``address`` for ``factory``.

        ``connectionId`` (0 to 65535) is the id our SYN carries, when it was
        agreed with the peer out of band (the peer :meth:`expect`\\ s it);
        by default it is random. The Deferred fires with the protocol after
        ``connectionMade``, or fails with ``ConnectionRefusedError``,
        ``TimeoutError`` (after ``timeout`` seconds, or the engine's SYN
        timeout), ``NoProtocol``, ``ConnectingCancelledError`` (if cancelled),
        ``ConnectError`` (over ``max_connections`` or
        ``max_connections_per_host``) or
        :class:`~txutp.engine.ConnectionIdInUse`.
        """
        if self.closing:
            raise error.ConnectError("the uTP port is closed")
        target, peer = self.carrierAddress(address), asIAddress(address)
        return self._handshakes.connect(target, peer, factory, timeout, connectionId)

    def expect(
        self, address: Any, connectionId: int, factory: IProtocolFactory, timeout: float | None = None
    ) -> Deferred[IProtocol]:
        """Accept one connection from ``address`` whose SYN carries ``connectionId``, listening or not.

        For ids agreed out of band, as the Portal Network does: the peer
        :meth:`connect`\\ s with the same ``connectionId``. The Deferred fires
        with ``factory``'s protocol after ``connectionMade``, or fails with
        ``TimeoutError`` (no connection within ``timeout`` seconds),
        ``ConnectingCancelledError`` (if cancelled), ``ConnectionRefusedError``
        or ``ConnectError`` (the handshake failed), ``NoProtocol`` or
        :class:`~txutp.engine.ConnectionIdInUse` (the id, or its neighbour, is
        taken by a connection or another expectation from ``address``).
        """
        if self.closing:
            raise error.ConnectError("the uTP port is closed")
        target, peer = self.carrierAddress(address), asIAddress(address)
        return self._handshakes.expect(target, peer, connectionId, factory, timeout)

    def carrierAddress(self, address: Any) -> Any:
        """``address`` as the carrier takes it: an IPv4 ``(host, port)`` is ``('::ffff:host', port)`` on IPv6."""
        if (
            self._ipv6Carrier
            and isinstance(address, tuple)
            and len(address) == 2
            and isinstance(address[0], str)
            and isIPAddress(address[0])
        ):
            return ("::ffff:" + address[0], address[1])
        return address

    # ------------------------------------------------------------------ input (called by the carrier)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Feed one datagram to the context; the flush follows once the read batch is done."""
        stats = self.stats
        stats.datagrams_received += 1
        stats.bytes_received += len(datagram)
        if not self.context.receive_datagram(datagram, addr, self.reactor.seconds()):
            self._notUTP(datagram, addr)
        if self._batching:
            self._readPending = True
        elif self._flushCall is None and not self._flushing:
            stats.batches += 1
            self._flushCall = self.reactor.callLater(0, self._flushNow)

    def runReceived(self, data: bytes, segment: int, addr: Any) -> None:
        """A run of datagrams from ``addr`` coalesced by the kernel (UDP GRO): every ``segment`` bytes of ``data``.

        The same as :meth:`datagramReceived` for each, with one clock reading for the run
        (``UTPContext.receive_run``).
        """
        stats = self.stats
        size = len(data)
        stats.datagrams_received += (size + segment - 1) // segment
        stats.bytes_received += size
        for datagram in self.context.receive_run(data, segment, addr, self.reactor.seconds()):
            self._notUTP(datagram, addr)
        self._readPending = True

    def _notUTP(self, datagram: bytes, addr: Any) -> None:
        """A datagram that is not uTP: the user datagram protocol's, or dropped."""
        if self.datagramProtocol is None:
            self.stats.garbage_dropped += 1
            return
        self.stats.other_protocol += 1
        try:
            self.datagramProtocol.datagramReceived(datagram, addr)
        except Exception:
            _log.failure("Unhandled error in the user datagram protocol")

    def readBatchDone(self) -> None:
        """A batching carrier delivered a batch of datagrams: flush once for all of them."""
        if self._readPending:
            self._readPending = False
            self.stats.batches += 1
            if self._flushCall is not None and self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
            try:
                self.flush()
            except Exception:
                # Never let an error escape into the carrier (the reactor would drop a port's reader).
                _log.failure("Unhandled error while flushing a uTP port")

    def datagramTooBig(self, datagram: bytes, address: Any) -> None:
        """The carrier could not send ``datagram``: larger than the path allows (``EMSGSIZE``).

        The engine then counts a path MTU probe as lost, or resends a regular
        packet once the packet size has come down.
        """
        self.context.datagram_too_big(datagram, address, self.reactor.seconds())

    def pathErrorReceived(self, datagram: bytes, address: Any, error: PathError) -> None:
        """The network reported ``error`` (ICMP) about ``datagram``, which we sent to ``address``.

        ``datagram`` is what the error quotes of ours. The engine decides what it
        means (``txutp/engine/_icmp.py``): a refused connect fails at once; soft
        errors are counted. The carrier ends its read with ``readBatchDone()``.
        """
        if self.context.path_error(datagram, address, error, self.reactor.seconds()):
            if self._batching and not self._flushing:
                self._readPending = True  # in a read batch: its flush follows
            else:
                self.scheduleFlush()  # from a send, or a carrier that does not batch

    # ------------------------------------------------------------------ flushing

    def scheduleFlush(self) -> None:
        """Ask for one flush (events, datagrams, timer) at the end of this reactor turn."""
        if self._flushing:
            self._dirty = True
        elif self._flushCall is None and not self._closed:
            self._flushCall = self.reactor.callLater(0, self._flushNow)

    def _flushNow(self) -> None:
        self._flushCall = None
        self.flush()

    def _timerFired(self) -> None:
        at = self._timerAt
        self._timerCall = None
        self._timerAt = None
        now = self.reactor.seconds()
        if at is not None and now < at:
            now = at  # the reactor may wake a hair early: run what is due at the deadline
        self.context.handle_timer(now)
        self.flush()

    def flush(self) -> None:
        """Drain events into transports, send the datagrams due and re-arm the timer, until quiet."""
        if self._flushing or self._closed:
            return
        self._flushing = True
        ctx = self.context
        try:
            while True:
                self._dirty = False
                busy = False
                if self._pendingDelivery:
                    pending, self._pendingDelivery = self._pendingDelivery, {}
                    for transport in pending:
                        transport.deliverPending()
                    busy = True
                while (item := ctx.next_event()) is not None:
                    busy = True
                    self._dispatch(*item)
                if self._closed:
                    return
                now = self.reactor.seconds()
                out = ctx.datagrams_to_send(now)
                if out:
                    busy = True
                    self._send(out)
                if self._watched:
                    for transport in list(self._watched):
                        transport.afterFlush()
                if self._closed:
                    return
                if not busy and not self._dirty:
                    break
        finally:
            self._flushing = False
        self._armTimer()
        self._maybeClose()
        if self._finisher.waiting:
            self._finisher.check()

    def _armTimer(self) -> None:
        if self._closed:
            return
        deadline = self.context.get_timer()
        if deadline == self._timerAt:
            return
        if self._timerCall is not None and self._timerCall.active():
            self._timerCall.cancel()
        self._timerCall = None
        self._timerAt = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.reactor.seconds())
            self._timerCall = self.reactor.callLater(delay, self._timerFired)

    def _writeBatch(self, datagrams: Datagrams) -> None:
        """Send through a batching carrier that keeps no count of its own."""
        stats = self.stats
        stats.datagrams_sent += len(datagrams)
        stats.bytes_sent += sum([len(data) for data, _ in datagrams])
        self.carrier.writeBatch(datagrams)

    def _writeEach(self, datagrams: Datagrams) -> None:
        """Send through a carrier without ``writeBatch``: one ``write`` each, errors counted as loss."""
        if self.carrier is None:
            return  # not started yet
        write = self.carrier.write
        stats = self.stats
        for data, addr in datagrams:
            try:
                write(data, addr)
            except error.MessageLengthError:
                stats.send_errors += 1
                self.datagramTooBig(data, addr)
            except OSError as e:
                stats.send_errors += 1
                if e.errno == errno.EMSGSIZE:
                    self.datagramTooBig(data, addr)
            except Exception:
                stats.send_errors += 1
                _log.failure("Unhandled error in {carrier!r}.write", carrier=self.carrier)
            else:
                stats.datagrams_sent += 1
                stats.bytes_sent += len(data)

    # ------------------------------------------------------------------ events

    def _dispatch(self, conn: UTPConnection, event: Event) -> None:
        transport = self._transports.get(conn)
        if transport is not None:
            transport.eventReceived(event)
        else:
            self._handshakes.eventReceived(conn, event)

    def _startTransport(
        self, conn: UTPConnection, protocol: IProtocol, peer: IAddress, clientFactory: IProtocolFactory | None
    ) -> Failure | None:
        """Give ``conn``, its handshake done, a transport for ``protocol``; what ``UTPTransport.start`` returns."""
        transport = UTPTransport(
            self, conn, protocol, peer, self._host, client=conn.initiator, clientFactory=clientFactory
        )
        self._transports[conn] = transport
        return transport.start()

    # ------------------------------------------------------------------ the TransportOwner, for transports

    def seconds(self) -> float:
        """The reactor's time."""
        return self.reactor.seconds()  # type: ignore[no-any-return]

    def watch(self, transport: UTPTransport, on: bool) -> None:
        """Call ``transport.afterFlush()`` after each flush, or stop."""
        if on:
            self._watched[transport] = None
        else:
            self._watched.pop(transport, None)

    def deliverLater(self, transport: UTPTransport) -> None:
        """Call ``transport.deliverPending()`` in the next flush."""
        self._pendingDelivery[transport] = None
        self.scheduleFlush()

    def forget(self, transport: UTPTransport) -> None:
        """The transport's connection is over."""
        if self._transports.get(transport.connection) is transport:
            del self._transports[transport.connection]
        self._pendingDelivery.pop(transport, None)
        self._watched.pop(transport, None)
        if not self._flushing:
            self._maybeClose()

    def connections(self) -> list[UTPTransport]:
        """The transports of the connections alive on this carrier."""
        return list(self._transports.values())
