"""The I/O layer: one UDP port driving one :class:`~txutp.engine.UTPContext`.

:class:`UTPMultiplexer` is a :class:`~twisted.internet.protocol.DatagramProtocol`.
It feeds every datagram to the sans-IO context, then *flushes* once per read
batch: on POSIX reactors its port (:class:`_BatchingPort`) reports the end of
each ``doRead`` (which reads up to 256 KiB of datagrams), elsewhere a
``callLater(0)`` scheduled by ``datagramReceived`` does. A flush drains events
into the connections' transports, sends the datagrams due, and re-arms one
reactor timer at the context's earliest deadline. Application calls on a
transport schedule the same flush with ``callLater(0)``, so everything a reactor
turn asks for leaves once (ACK coalescing, as libutp's ``utp_issue_deferred_acks``).

Multiplexers are shared through a registry of ports per reactor, keyed by
``(interface, port)``, so a server and clients that bind its port use one
socket; a multiplexer closes its socket once nobody uses it and its lingering
connections have ended.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import error, udp
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IProtocol, IProtocolFactory, IReactorFDSet
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from .engine import (
    Connected,
    ConnectionLimitError,
    ConnectionReset,
    ConnectionState,
    ConnectionTerminated,
    ConnectionTimedOut,
    DontFragment,
    Event,
    UTPConfig,
    UTPConnection,
    UTPContext,
)

if TYPE_CHECKING:
    from .transport import UTPTransport

__all__ = ["MultiplexerStats", "UTPMultiplexer", "acquireMultiplexer", "activeMultiplexers"]

#: A reactor providing IReactorUDP and IReactorTime (and, for name resolution, IReactorPluggableNameResolver).
Reactor = Any
Address = tuple[str, int]

#: Socket buffer size asked for (libutp and libtorrent collapse on loopback with the 212 992-byte default).
SOCKET_BUFFER_SIZE = 4 * 1024 * 1024
#: Largest datagram read; uTP never sends more than 1472 bytes, but the user protocol might.
MAX_PACKET_SIZE = 65535

#: Bytes read per read batch (one flush each); Twisted's own udp.Port reads 256 KiB.
READ_BATCH_BYTES = 512 * 1024

# Linux <linux/udp.h>: segmentation offload, sending (GSO) and receiving (GRO).
_SOL_UDP = 17
_UDP_SEGMENT = 103
_UDP_GRO = 104
#: The kernel's UDP_MAX_SEGMENTS, and the largest UDP payload of one send.
_GSO_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65507
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
_READ_RETRY_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EMSGSIZE})
_SEND_LOSS_ERRNOS = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})

# Linux <linux/in.h>, <linux/in6.h>: per-socket path MTU discovery mode (not exported by the socket module).
_IP_MTU_DISCOVER = 10
_IPV6_MTU_DISCOVER = 23
_PMTUDISC_DONT = 0
_PMTUDISC_DO = 2

_log = Logger()


@dataclass(slots=True)
class MultiplexerStats:
    """Counters of one multiplexer's socket (the context keeps its own in ``context.stats``)."""

    datagrams_received: int = 0
    datagrams_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    #: Read batches (one flush each).
    batches: int = 0
    #: Datagrams the socket refused to send (EAGAIN, ENOBUFS, ECONNREFUSED, EMSGSIZE, any OSError): treated as loss.
    send_errors: int = 0
    #: sendmsg calls that sent a run of datagrams at once (UDP GSO).
    gso_sends: int = 0
    #: Reads that returned several datagrams coalesced by the kernel (UDP GRO).
    gro_reads: int = 0
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


def _normalizeInterface(interface: str) -> str:
    return "0.0.0.0" if interface == "" else interface


def _makeAddress(host: str, port: int) -> IPv4Address | IPv6Address:
    if host.startswith("::ffff:") and isIPAddress(host[7:]):
        host = host[7:]
    if ":" in host:
        return IPv6Address("UDP", host, port)
    return IPv4Address("UDP", host, port)


class _SharedDatagramTransport:
    """The transport of a user :class:`DatagramProtocol` sharing a uTP port: ``write(data, addr)`` on that port."""

    def __init__(self, mux: UTPMultiplexer) -> None:
        self._mux = mux

    def write(self, data: bytes, addr: Address) -> None:
        """Send ``data`` to ``addr`` from the shared port; errors count as loss, as for uTP."""
        self._mux._sendDatagram(data, addr)

    def getHost(self) -> IPv4Address | IPv6Address:
        """The shared port's address."""
        return self._mux.getHost()


class _PendingConnect:
    """An outgoing connection whose handshake has not finished yet."""

    def __init__(self, factory: IProtocolFactory, deferred: Deferred[IProtocol], address: Any) -> None:
        self.factory = factory
        self.deferred = deferred
        self.address = address
        self.timeoutCall: IDelayedCall | None = None
        self.failure: Failure | None = None


class _BatchingPort(udp.Port):
    """A UDP port that reads in batches and tells its multiplexer when a batch is over.

    With ``UDP_GRO`` (Linux) one ``recvmsg`` returns a run of datagrams from one
    sender coalesced into one buffer plus their segment size; they are split here.
    Without it, datagrams are read one ``recvfrom`` at a time. Either way a batch
    ends after ``READ_BATCH_BYTES`` or when the socket is empty, and the
    multiplexer flushes once for the whole batch.
    """

    protocol: UTPMultiplexer
    gro = False

    def enableGRO(self) -> bool:
        """Ask the kernel to coalesce received datagrams (Linux UDP_GRO); return whether it works."""
        with contextlib.suppress(OSError, AttributeError):
            self.socket.setsockopt(_SOL_UDP, _UDP_GRO, 1)
            self.gro = True
        return self.gro

    def doRead(self) -> None:
        try:
            self._readBatch()
        finally:
            if self.connected:
                self.protocol.readBatchDone()

    def _readBatch(self) -> None:
        sock = self.socket
        received = self.protocol.datagramReceived
        ipv6 = self.addressFamily == socket.AF_INET6
        budget = READ_BATCH_BYTES
        gro = self.gro
        while budget > 0:
            try:
                if gro:
                    data, ancillary, _flags, addr = sock.recvmsg(MAX_PACKET_SIZE, _GRO_CMSG_SPACE)
                else:
                    data, addr = sock.recvfrom(MAX_PACKET_SIZE)
                    ancillary = None
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in _READ_RETRY_ERRNOS:
                    continue  # an ICMP error about an earlier datagram: not fatal for the socket
                raise
            if ipv6:
                addr = addr[:2]
            budget -= len(data)
            segment = 0
            if ancillary:
                for level, kind, value in ancillary:
                    if level == _SOL_UDP and kind == _UDP_GRO:
                        segment = int.from_bytes(value[:4], sys.byteorder)
            if segment and len(data) > segment:
                self.protocol.stats.gro_reads += 1
                for start in range(0, len(data), segment):
                    received(data[start : start + segment], addr)
            else:
                received(data, addr)


class UTPMultiplexer(DatagramProtocol):
    """Owns one UDP port and every uTP connection on it.

    ``datagramProtocol``, if given, receives the datagrams that are not uTP
    (a DHT sharing the port, say); its transport can ``write(data, addr)`` on
    the same port. Without one, such datagrams are dropped and counted.
    """

    noisy = False

    def logPrefix(self) -> str:
        """``uTP``: the UDP port logs as ``uTP starting on 6881``, ``[uTP (UDP)] ...``."""
        return "uTP"

    def __init__(
        self, reactor: Reactor, config: UTPConfig | None = None, *, datagramProtocol: DatagramProtocol | None = None
    ) -> None:
        self.reactor = reactor
        self.config = config or UTPConfig()
        self.context = UTPContext(self.config, accepting=False)
        self.stats = MultiplexerStats()
        self.datagramProtocol = datagramProtocol
        self.port: Any = None
        #: The factory of the listening port, if any.
        self.listenFactory: IProtocolFactory | None = None
        self.registryKey: tuple[Any, str, int] | None = None
        self._transports: dict[UTPConnection, UTPTransport] = {}
        self._connecting: dict[UTPConnection, _PendingConnect] = {}
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
        self._whenClosed: list[Deferred[None]] = []
        self._batching = False
        self._readPending = False
        self._dfLevels: list[tuple[int, int]] = []
        self._gso = False
        #: The socket's sendto and sendmsg (a seam for tests that make sending fail).
        self._sendto: Any = None
        self._sendmsg: Any = None

    # ------------------------------------------------------------------ port lifecycle

    def listenOn(self, port: int, interface: str) -> None:
        """Bind the UDP port and raise its socket buffers.

        On reactors with file-descriptor sets (every POSIX reactor) the port is
        a :class:`_BatchingPort`, which flushes right after each read batch, in
        the reactor's I/O callback. Elsewhere it is ``reactor.listenUDP``'s port
        and the flush follows each batch through ``callLater(0)``.
        """
        if IReactorFDSet.providedBy(self.reactor):
            udpPort = _BatchingPort(port, self, interface, MAX_PACKET_SIZE, self.reactor)  # type: ignore[no-untyped-call]
            udpPort.startListening()  # type: ignore[no-untyped-call]
            self.port = udpPort
            self._batching = True
            if sys.platform.startswith("linux"):
                self._gso = True  # tried on first use; turned off if the kernel refuses
                udpPort.enableGRO()
        else:  # pragma: no cover - IOCP
            self.port = self.reactor.listenUDP(port, self, interface=interface, maxPacketSize=MAX_PACKET_SIZE)
        self._raiseSocketBuffers()
        self._setupDontFragment()
        sock = getattr(self.port, "socket", None)
        if sock is not None:
            self._sendto = sock.sendto
            self._sendmsg = sock.sendmsg

    def _raiseSocketBuffers(self) -> None:
        sock = getattr(self.port, "socket", None)
        if sock is None:
            return
        for opt, force, field in (
            (socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", None), "rcvbuf"),
            (socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", None), "sndbuf"),
        ):
            try:
                if sock.getsockopt(socket.SOL_SOCKET, opt) < SOCKET_BUFFER_SIZE:
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER_SIZE)
                    if force is not None and sock.getsockopt(socket.SOL_SOCKET, opt) < SOCKET_BUFFER_SIZE:
                        # Above net.core.*mem_max only with CAP_NET_ADMIN; otherwise keep what we got.
                        with contextlib.suppress(OSError):
                            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER_SIZE)
                setattr(self.stats, field, sock.getsockopt(socket.SOL_SOCKET, opt))
            except OSError:  # pragma: no cover - platforms without the option
                pass

    def startProtocol(self) -> None:
        """Start the user datagram protocol, if any, on the shared port."""
        if self.datagramProtocol is not None:
            self.datagramProtocol.makeConnection(_SharedDatagramTransport(self))  # type: ignore[arg-type]

    def stopProtocol(self) -> None:
        """The socket is going (we close it, or the reactor shuts down): end everything at once.

        Live connections are reset (their RESETs still leave: the socket closes
        right after this returns), so peers learn at once rather than time out.
        """
        now = self.reactor.seconds()
        for conn in list(self.context.connections.values()):
            conn.abort(now)
        port = self.port
        if port is not None and getattr(port, "socket", None) is not None:
            for data, addr in self.context.datagrams_to_send(now):
                with contextlib.suppress(Exception):
                    port.write(data, addr)
        self._closed = True
        self._unregister()
        for call in (self._flushCall, self._timerCall):
            if call is not None and call.active():
                call.cancel()
        self._flushCall = self._timerCall = None
        self._timerAt = None
        for conn, pending in list(self._connecting.items()):
            del self._connecting[conn]
            self._failPending(pending, Failure(error.ConnectError("the uTP socket was closed")))
        for transport in list(self._transports.values()):
            transport._socketClosed()
        self._transports.clear()
        self._pendingDelivery.clear()
        self._watched.clear()
        for conn in list(self.context.connections.values()):
            conn.abort(now)
        while self.context.next_event() is not None:
            pass
        self.context.datagrams_to_send(now)  # discard: the socket is closed
        if self.listenFactory is not None:
            factory, self.listenFactory = self.listenFactory, None
            factory.doStop()
        if self.datagramProtocol is not None:
            self.datagramProtocol.doStop()
        if not self._closing:
            # The reactor closed the port (shutdown); the socket is closed right after this returns.
            self._fireClosed()

    def _fireClosed(self) -> None:
        waiters, self._whenClosed = self._whenClosed, []
        for d in waiters:
            d.callback(None)

    def whenClosed(self) -> Deferred[None]:
        """A Deferred that fires once the socket is closed."""
        if self._closed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._whenClosed.append(d)
        return d

    @property
    def closed(self) -> bool:
        """The socket is closed."""
        return self._closed

    def getHost(self) -> IPv4Address | IPv6Address:
        """The local address of the UDP port, as an ``IPv4Address``/``IPv6Address`` of type ``'UDP'``."""
        addr = self.port.getHost() if self.port is not None else None
        if addr is None:
            return IPv4Address("UDP", "0.0.0.0", 0)
        return _makeAddress(addr.host, addr.port)

    def hold(self) -> None:
        """Keep the socket open until :meth:`release` (while a listen or connect is being set up)."""
        self._holds += 1

    def release(self) -> None:
        """Undo one :meth:`hold`."""
        self._holds -= 1
        self._maybeClose()

    @property
    def inUse(self) -> bool:
        """Someone still needs the socket: a listening port, a connection, a pending connect or a hold."""
        return bool(self.listenFactory is not None or self._transports or self._connecting or self._holds)

    def _maybeClose(self) -> None:
        """Close the socket if nobody uses it and no connection lingers."""
        if self._closed or self._closing or self.inUse:
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
        elif all(conn.state is ConnectionState.CLOSED for conn in self.context.connections.values()):
            self.closeNow()
        # Otherwise connections linger to re-ACK a last FIN; the flush after their timers comes back here.

    def closeNow(self) -> Deferred[None]:
        """Close the socket at once, ending every connection; fires when it is closed."""
        if self._closed:
            return succeed(None)
        d = self.whenClosed()
        if not self._closing:
            self._closing = True
            self._unregister()
            if self._flushCall is not None and self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
            port = self.port
            if port is not None and hasattr(port, "connectionLost"):
                # Close synchronously: udp.Port.stopListening defers this with callLater(0), which a reactor
                # that is stopping may never run, leaving the socket open and a delayed call behind.
                port.connectionLost(None)
                self._fireClosed()  # after the socket itself is closed, so its port can be bound again
            elif port is not None:  # pragma: no cover - non-POSIX reactors
                port.stopListening().addCallback(lambda _: self._fireClosed())
            else:
                self.stopProtocol()
                self._fireClosed()
        return d

    def _unregister(self) -> None:
        key = self.registryKey
        if key is not None:
            self.registryKey = None
            if _registry.get(key) is self:
                del _registry[key]

    # ------------------------------------------------------------------ listening

    def startListening(self, factory: IProtocolFactory) -> None:
        """Accept incoming connections for ``factory``; raise ``CannotListenError`` if someone already listens."""
        host = self.getHost()
        if self.listenFactory is not None or self._closing:
            raise error.CannotListenError(host.host, host.port, OSError("a uTP server already listens on this port"))
        self.listenFactory = factory
        self.context.accepting = True
        factory.doStart()
        prefix = factory.logPrefix() if hasattr(factory, "logPrefix") else type(factory).__name__
        _log.info("{prefix} starting on {port!r}", prefix=prefix, port=host.port)

    def stopListening(self) -> Deferred[None]:
        """Stop accepting; close the socket if nothing else uses it. Fires once listening stopped (and the
        socket closed, if that left it unused)."""
        factory = self.listenFactory
        if factory is None:
            return succeed(None)
        self.listenFactory = None
        self.context.accepting = False
        _log.info("(uTP Port {port!r} Closed)", port=self.getHost().port)
        factory.doStop()
        self._maybeClose()
        if self._closed or self.inUse:
            return succeed(None)
        return self.whenClosed()

    # ------------------------------------------------------------------ connecting

    def connect(self, address: Address, factory: IProtocolFactory, timeout: float | None) -> Deferred[IProtocol]:
        """Open a connection to ``address`` (an IP literal of this socket's family) for ``factory``.

        The Deferred fires with the protocol after ``connectionMade``, or fails
        with ``ConnectionRefusedError``, ``TimeoutError``, ``NoProtocol``,
        ``ConnectingCancelledError`` (if cancelled) or ``ConnectError`` (over
        ``max_connections`` or ``max_connections_per_host``).
        """
        if self._closed or self._closing:
            raise error.ConnectError("the uTP socket is closed")
        addressObject = _makeAddress(*address)
        conn: UTPConnection | None = None

        def cancel(d: Deferred[IProtocol]) -> None:
            if conn is not None and conn in self._connecting:
                pending = self._connecting.pop(conn)
                conn.abort(self.reactor.seconds())
                self._failPending(pending, Failure(error.ConnectingCancelledError(addressObject)))
                self.scheduleFlush()

        try:
            conn = self.context.connect(self.toSocketAddress(address), self.reactor.seconds())
        except ConnectionLimitError as e:
            return fail(error.ConnectError(string=str(e)))
        d: Deferred[IProtocol] = Deferred(cancel)
        pending = _PendingConnect(factory, d, addressObject)
        self._connecting[conn] = pending
        factory.doStart()
        if timeout is not None:
            pending.timeoutCall = self.reactor.callLater(timeout, self._connectTimedOut, conn)
        self.scheduleFlush()
        return d

    def _connectTimedOut(self, conn: UTPConnection) -> None:
        pending = self._connecting.pop(conn, None)
        if pending is None:
            return
        pending.timeoutCall = None
        conn.abort(self.reactor.seconds())
        self._failPending(pending, Failure(error.TimeoutError(f"uTP connection to {pending.address} timed out")))
        self.scheduleFlush()

    def _failPending(self, pending: _PendingConnect, failure: Failure) -> None:
        if pending.timeoutCall is not None and pending.timeoutCall.active():
            pending.timeoutCall.cancel()
        pending.timeoutCall = None
        pending.factory.doStop()
        pending.deferred.errback(failure)
        self._maybeClose()

    def toSocketAddress(self, address: Address) -> Address:
        """Map an IPv4 destination to ``::ffff:a.b.c.d`` on an IPv6 socket."""
        host, port = address
        if self.port is not None and self.port.addressFamily == socket.AF_INET6 and isIPAddress(host):
            return ("::ffff:" + host, port)
        return (host, port)

    # ------------------------------------------------------------------ input

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Feed one datagram to the context; the flush follows once the read batch is done."""
        stats = self.stats
        stats.datagrams_received += 1
        stats.bytes_received += len(datagram)
        if not self.context.receive_datagram(datagram, addr, self.reactor.seconds()):
            if self.datagramProtocol is not None:
                stats.other_protocol += 1
                try:
                    self.datagramProtocol.datagramReceived(datagram, addr)
                except Exception:
                    _log.failure("Unhandled error in the user datagram protocol")
            else:
                stats.garbage_dropped += 1
        if self._batching:
            self._readPending = True
        elif self._flushCall is None and not self._flushing:
            stats.batches += 1
            self._flushCall = self.reactor.callLater(0, self._flushNow)

    def readBatchDone(self) -> None:
        """The port read every datagram available (up to its batch limit): flush once for all of them."""
        if self._readPending:
            self._readPending = False
            self.stats.batches += 1
            if self._flushCall is not None and self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
            try:
                self.flush()
            except Exception:
                # Never let an error escape into doRead: the reactor would drop the port.
                _log.failure("Unhandled error while flushing a uTP socket")

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
                        transport._deliverPending()
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
                    self._sendBatch(out)
                if self._watched:
                    for transport in list(self._watched):
                        transport._afterSend()
                if self._closed:
                    return
                if not busy and not self._dirty:
                    break
        finally:
            self._flushing = False
        self._armTimer()
        self._maybeClose()

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

    def _sendBatch(self, out: list[tuple[bytes, Any]]) -> None:
        """Send the datagrams of one flush, runs of equal-sized ones with one ``sendmsg`` each (GSO)."""
        sendmsg = self._sendmsg
        if not self._gso or sendmsg is None:
            for data, addr in out:
                self._sendDatagram(data, addr)
            return
        stats = self.stats
        n = len(out)
        i = 0
        while i < n:
            data, addr = out[i]
            size = len(data)
            j = i + 1
            if type(data) is bytes:  # a DontFragment probe goes alone
                total = size
                while j < n and j - i < _GSO_MAX_SEGMENTS:
                    nxt, nxt_addr = out[j]
                    length = len(nxt)
                    if nxt_addr != addr or length > size or type(nxt) is not bytes or total + length > _GSO_MAX_BYTES:
                        break
                    total += length
                    j += 1
                    if length < size:
                        break  # only the last segment may be shorter
            if j - i == 1:
                self._sendDatagram(data, addr)
                i = j
                continue
            run = out[i:j]
            try:
                sendmsg([b"".join([d for d, _ in run])], [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", size))], 0, addr)
            except BlockingIOError:
                stats.send_errors += j - i  # the socket buffer is full: lost, as on a congested link
            except OSError as e:
                if e.errno in _SEND_LOSS_ERRNOS:
                    stats.send_errors += j - i
                else:
                    # No segmentation offload here after all (EIO, EINVAL, ...): one datagram at a time from now on.
                    self._gso = False
                    for d, a in run:
                        self._sendDatagram(d, a)
            else:
                stats.datagrams_sent += j - i
                stats.bytes_sent += total
                stats.gso_sends += 1
            i = j

    def _sendDatagram(self, data: bytes, addr: Any) -> None:
        port = self.port
        if port is None or self._closed:
            return
        sendto = self._sendto
        dontFragment = isinstance(data, DontFragment) and self._dfLevels
        try:
            if dontFragment:
                self._setDontFragment(True)
            try:
                if sendto is not None:
                    sendto(data, addr)  # Twisted's write() would validate the address each time
                else:  # pragma: no cover - non-POSIX reactors
                    port.write(data, addr)
            finally:
                if dontFragment:
                    self._setDontFragment(False)
        except error.MessageLengthError:  # pragma: no cover - port.write on non-POSIX reactors
            self.stats.send_errors += 1
            self.context.datagram_too_big(data, addr, self.reactor.seconds())
            return
        except OSError as e:
            self.stats.send_errors += 1
            if e.errno == errno.EMSGSIZE:
                # Bigger than the path MTU the kernel knows (a DF probe, usually).
                self.context.datagram_too_big(data, addr, self.reactor.seconds())
            # EAGAIN, ENOBUFS, ECONNREFUSED, ...: the datagram is lost, as on a congested link
            return
        except error.InvalidAddressError:  # pragma: no cover - port.write on non-POSIX reactors
            self.stats.send_errors += 1
            return
        self.stats.datagrams_sent += 1
        self.stats.bytes_sent += len(data)

    def _setupDontFragment(self) -> None:
        """Send without DF by default (IP may fragment); DF only for the engine's path MTU probes (Linux)."""
        sock = getattr(self.port, "socket", None)
        if sock is None or not sys.platform.startswith("linux"):
            return
        levels = [(socket.IPPROTO_IP, _IP_MTU_DISCOVER)]
        if sock.family == socket.AF_INET6:
            levels.append((socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER))
        try:
            for level, option in levels:
                sock.setsockopt(level, option, _PMTUDISC_DONT)
        except OSError:  # pragma: no cover - kernels without the option
            return
        self._dfLevels = levels

    def _setDontFragment(self, on: bool) -> None:
        sock = self.port.socket
        value = _PMTUDISC_DO if on else _PMTUDISC_DONT
        for level, option in self._dfLevels:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, option, value)

    # ------------------------------------------------------------------ events

    def _dispatch(self, conn: UTPConnection, event: Event) -> None:
        transport = self._transports.get(conn)
        if transport is not None:
            transport._handleEvent(event)
            return
        pending = self._connecting.get(conn)
        if pending is not None:
            if isinstance(event, Connected):
                del self._connecting[conn]
                self._connectionMade(conn, pending)
            elif isinstance(event, ConnectionTerminated):
                del self._connecting[conn]
                if isinstance(event, ConnectionReset):
                    reason: Exception = error.ConnectionRefusedError(f"uTP connection to {pending.address} refused")
                elif isinstance(event, ConnectionTimedOut):
                    reason = error.TimeoutError(f"uTP connection to {pending.address} timed out")
                else:
                    reason = error.ConnectError(f"uTP connection to {pending.address} failed")
                self._failPending(pending, Failure(reason))
            return
        if isinstance(event, Connected) and not conn.initiator:
            self._accept(conn)
        # Anything else concerns a connection nobody above knows any more (lingering, aborted): ignore it.

    def _accept(self, conn: UTPConnection) -> None:
        factory = self.listenFactory
        now = self.reactor.seconds()
        if factory is None:
            conn.abort(now)
            return
        peer = _makeAddress(*conn.peer_addr[:2])
        try:
            protocol = factory.buildProtocol(peer)
        except Exception:
            _log.failure("Unhandled error in buildProtocol of {factory!r}", factory=factory)
            protocol = None
        if protocol is None:
            conn.abort(now)
            return
        from .transport import UTPTransport

        transport = UTPTransport(self, conn, protocol, peer, self.getHost(), client=False)
        self._transports[conn] = transport
        transport._start()

    def _connectionMade(self, conn: UTPConnection, pending: _PendingConnect) -> None:
        if pending.timeoutCall is not None and pending.timeoutCall.active():
            pending.timeoutCall.cancel()
        pending.timeoutCall = None
        now = self.reactor.seconds()
        try:
            protocol = pending.factory.buildProtocol(pending.address)
            if protocol is None:
                raise error.NoProtocol()
        except Exception:
            conn.abort(now)
            self._failPending(pending, Failure())
            return
        from .transport import UTPTransport

        transport = UTPTransport(self, conn, protocol, pending.address, self.getHost(), client=True)
        transport._clientFactory = pending.factory
        self._transports[conn] = transport
        failure = transport._start()
        if failure is not None:
            pending.deferred.errback(failure)
        else:
            pending.deferred.callback(protocol)

    # ------------------------------------------------------------------ transport bookkeeping

    def _forget(self, transport: UTPTransport) -> None:
        if self._transports.get(transport.connection) is transport:
            del self._transports[transport.connection]
        self._pendingDelivery.pop(transport, None)
        self._watched.pop(transport, None)
        if not self._flushing:
            self._maybeClose()

    def _watch(self, transport: UTPTransport, on: bool) -> None:
        if on:
            self._watched[transport] = None
        else:
            self._watched.pop(transport, None)

    def _deliverLater(self, transport: UTPTransport) -> None:
        self._pendingDelivery[transport] = None
        self.scheduleFlush()

    def connections(self) -> list[UTPTransport]:
        """The transports of the connections alive on this socket."""
        return list(self._transports.values())


# ---------------------------------------------------------------------- the registry

_registry: dict[tuple[Any, str, int], UTPMultiplexer] = {}
_ephemeral: dict[tuple[Any, str, UTPConfig | None], UTPMultiplexer] = {}


def acquireMultiplexer(
    reactor: Reactor,
    interface: str,
    port: int,
    config: UTPConfig | None = None,
    datagramProtocol: DatagramProtocol | None = None,
) -> UTPMultiplexer:
    """Return the live multiplexer bound to ``(interface, port)`` on ``reactor``, creating (binding) it if needed.

    ``port`` 0 binds a fresh port. A multiplexer found in the registry keeps its
    configuration; asking for a different ``config`` or ``datagramProtocol`` for
    it raises ``ValueError``. The caller must start using it at once
    (listen, connect or :meth:`~UTPMultiplexer.hold`), or it closes at the next flush.
    """
    interface = _normalizeInterface(interface)
    if not (isIPAddress(interface) or isIPv6Address(interface)):
        raise ValueError(f"interface must be an IP address literal, not {interface!r}")
    if port:
        mux = _registry.get((reactor, interface, port))
        if mux is not None and not mux._closing and not mux._closed:
            if config is not None and config != mux.config:
                raise ValueError(f"the uTP port {interface}:{port} is already open with a different UTPConfig")
            if datagramProtocol is not None and datagramProtocol is not mux.datagramProtocol:
                raise ValueError(f"the uTP port {interface}:{port} already has another datagram protocol")
            return mux
    mux = UTPMultiplexer(reactor, config, datagramProtocol=datagramProtocol)
    mux.listenOn(port, interface)
    key = (reactor, interface, mux.getHost().port)
    mux.registryKey = key
    _registry[key] = mux
    return mux


def ephemeralMultiplexer(reactor: Reactor, interface: str, config: UTPConfig | None) -> UTPMultiplexer:
    """The shared client socket on an ephemeral port for ``(reactor, interface, config)``."""
    interface = _normalizeInterface(interface)
    key = (reactor, interface, config)
    mux = _ephemeral.get(key)
    if mux is None or mux._closing or mux._closed:
        mux = acquireMultiplexer(reactor, interface, 0, config)
        _ephemeral[key] = mux
        mux.whenClosed().addCallback(lambda _: _ephemeral.pop(key, None) if _ephemeral.get(key) is mux else None)
    return mux


def activeMultiplexers(reactor: Reactor | None = None) -> list[UTPMultiplexer]:
    """The open multiplexers (of ``reactor``, or of every reactor)."""
    return [m for (r, _, _), m in _registry.items() if reactor is None or r is reactor]
