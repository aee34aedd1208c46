"""The UDP carrier: a batching UDP port for a :class:`~txutp.UTPMultiplexer`.

:func:`listenUTP` binds a :class:`BatchingUDPPort` for a multiplexer, as
``reactor.listenUDP`` binds a port for a ``DatagramProtocol``. The port reads in
batches and ends each with the multiplexer's ``readBatchDone()`` (one flush per
batch), splits the runs of datagrams that the kernel coalesced (UDP GRO), and
sends each flush's runs of equal-sized datagrams with one ``sendmsg`` each (UDP
GSO). It raises the socket buffers, sends without don't-fragment except for the
engine's path MTU probes, counts into the multiplexer's ``stats``, and treats a
refused send as a lost datagram (``EMSGSIZE`` also tells the engine the
datagram was too big). With ``IP_RECVERR`` the kernel fails the send after an
ICMP error once with that error's errno, whatever its destination: such a
send is made again once before it counts as refused. Reactors without file-descriptor sets (IOCP) get a
plain ``reactor.listenUDP`` port instead.

On Linux the port also asks for ICMP errors (``IP_RECVERR``,
``IPV6_RECVERR``) and reads them from the socket's error queue: each is decoded
(:func:`decodeSocketError`) and given to the multiplexer's
``pathErrorReceived``, so that a connect to a port where nothing listens fails
at once (see ``txutp/engine/_icmp.py``). Every reactor on Linux reports a
pending error as readable (select, asyncio) or as an error condition (poll,
epoll: the reactor then calls :meth:`BatchingUDPPort.readConnectionLost`); the
port drains the queue either way, so it neither spins nor is dropped.
Elsewhere ICMP errors stay unseen, as before.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import sys
from typing import Any

from twisted.internet import udp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IHalfCloseableDescriptor, IReactorFDSet
from twisted.python.failure import Failure
from zope.interface import implementer

from ._multiplexer import MultiplexerStats, Reactor, UTPMultiplexer
from .engine import DontFragment, PathError, PathErrorKind

__all__ = ["BatchingUDPPort", "SocketError", "adoptUTP", "decodeSocketError", "listenUTP", "pathErrorOf"]

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
#: With ``IP_RECVERR``, an ICMP error about an earlier datagram (to any destination) fails the next send
#: once with its errno, and that send does not happen: these are sent again once before they count.
_PENDING_ERROR_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EMSGSIZE})
#: Send errors that say the destination has no route from this host.
_NO_ROUTE_ERRNOS = {errno.ENETUNREACH: "network unreachable", errno.EHOSTUNREACH: "host unreachable"}
_SEND_LOSS_ERRNOS = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})

# Linux <linux/in.h>, <linux/in6.h>: per-socket path MTU discovery mode (not exported by the socket module).
_IP_MTU_DISCOVER = 10
_IPV6_MTU_DISCOVER = 23
_PMTUDISC_DONT = 0
_PMTUDISC_DO = 2

# Linux <linux/in.h>, <linux/in6.h>, <linux/errqueue.h>: ICMP errors on the socket's error queue.
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")
_SO_EE_ORIGIN_ICMP = 2
_SO_EE_ORIGIN_ICMP6 = 3
#: Room for one ``sock_extended_err`` and its offender's ``sockaddr_in6``.
_ERR_CMSG_SPACE = socket.CMSG_SPACE(_SOCK_EXTENDED_ERR.size + 28) if hasattr(socket, "CMSG_SPACE") else 0
#: Errors read from the queue per drain, at most (a flood must not hold the reactor).
_ERRQUEUE_BUDGET = 256
# IP and UDP header bytes, to turn an ICMP's link MTU into the largest UDP payload.
_IPV4_UDP_OVERHEAD = 28
_IPV6_UDP_OVERHEAD = 48

#: ICMP (type, code) -> (kind, description); ICMPv4 destination unreachable is type 3, time exceeded 11.
_ICMP4 = {
    (3, 0): (PathErrorKind.UNREACHABLE, "network unreachable"),
    (3, 1): (PathErrorKind.UNREACHABLE, "host unreachable"),
    (3, 2): (PathErrorKind.REFUSED, "protocol unreachable"),
    (3, 3): (PathErrorKind.REFUSED, "port unreachable"),
    (3, 4): (PathErrorKind.TOO_BIG, "fragmentation needed"),
    (3, 6): (PathErrorKind.UNREACHABLE, "network unknown"),
    (3, 7): (PathErrorKind.UNREACHABLE, "host unknown"),
    (3, 9): (PathErrorKind.UNREACHABLE, "network administratively prohibited"),
    (3, 10): (PathErrorKind.UNREACHABLE, "host administratively prohibited"),
    (3, 13): (PathErrorKind.UNREACHABLE, "communication administratively prohibited"),
    (11, 0): (PathErrorKind.UNREACHABLE, "time to live exceeded"),
}
#: ICMPv6: destination unreachable is type 1, packet too big 2, time exceeded 3.
_ICMP6 = {
    (1, 0): (PathErrorKind.UNREACHABLE, "no route to destination"),
    (1, 1): (PathErrorKind.UNREACHABLE, "communication administratively prohibited"),
    (1, 3): (PathErrorKind.UNREACHABLE, "address unreachable"),
    (1, 4): (PathErrorKind.REFUSED, "port unreachable"),
    (1, 5): (PathErrorKind.UNREACHABLE, "source address failed policy"),
    (1, 6): (PathErrorKind.UNREACHABLE, "reject route to destination"),
    (2, 0): (PathErrorKind.TOO_BIG, "packet too big"),
    (3, 0): (PathErrorKind.UNREACHABLE, "hop limit exceeded"),
}


def listenUTP(reactor: Reactor, port: int, multiplexer: UTPMultiplexer, interface: str = "") -> Any:
    """Bind UDP ``port`` (0 for any) on ``interface`` (an IP literal) for ``multiplexer``; return the port.

    On reactors with file-descriptor sets (every POSIX reactor) the port is a
    :class:`BatchingUDPPort`; elsewhere it is ``reactor.listenUDP``'s, and the
    multiplexer flushes after each batch through ``callLater(0)``. Raises
    ``CannotListenError`` if the port cannot be bound.
    """
    if not IReactorFDSet.providedBy(reactor):  # pragma: no cover - IOCP
        return reactor.listenUDP(port, multiplexer, interface=interface, maxPacketSize=MAX_PACKET_SIZE)
    udpPort = BatchingUDPPort(port, multiplexer, interface, MAX_PACKET_SIZE, reactor)
    udpPort.startListening()  # type: ignore[no-untyped-call]
    return udpPort


class SocketError:
    """One entry of a socket's error queue: Linux's ``sock_extended_err`` and its offender."""

    __slots__ = ("errno", "origin", "type", "code", "info", "offender")

    def __init__(self, errno: int, origin: int, type: int, code: int, info: int, offender: tuple[str, int] | None):
        self.errno = errno
        #: ``SO_EE_ORIGIN_*``: 1 local, 2 ICMP, 3 ICMPv6.
        self.origin = origin
        self.type = type
        self.code = code
        #: The MTU for "fragmentation needed" / "packet too big".
        self.info = info
        #: Who sent the ICMP error, as ``(host, 0)``, or ``None``.
        self.offender = offender

    def __repr__(self) -> str:
        return (
            f"SocketError(errno={self.errno}, origin={self.origin}, type={self.type}, code={self.code}, "
            f"info={self.info}, offender={self.offender!r})"
        )


def decodeSocketError(data: bytes) -> SocketError | None:
    """Decode an ``IP_RECVERR`` / ``IPV6_RECVERR`` control message; ``None`` if it is too short."""
    if len(data) < _SOCK_EXTENDED_ERR.size:
        return None
    errno_, origin, type_, code, _pad, info, _data = _SOCK_EXTENDED_ERR.unpack_from(data)
    offender = None
    address = data[_SOCK_EXTENDED_ERR.size :]
    if len(address) >= 8:
        family = int.from_bytes(address[:2], sys.byteorder)
        if family == socket.AF_INET:
            offender = (socket.inet_ntop(socket.AF_INET, address[4:8]), 0)
        elif family == socket.AF_INET6 and len(address) >= 24:
            offender = (socket.inet_ntop(socket.AF_INET6, address[8:24]), 0)
    return SocketError(errno_, origin, type_, code, info, offender)


def pathErrorOf(error: SocketError) -> PathError | None:
    """What an ICMP error means for uTP (``txutp.engine.PathError``), or ``None`` for anything else.

    Errors of local origin (a datagram over a known path MTU) are not ICMP: the
    failed send already reported them.
    """
    if error.origin == _SO_EE_ORIGIN_ICMP:
        table, overhead = _ICMP4, _IPV4_UDP_OVERHEAD
    elif error.origin == _SO_EE_ORIGIN_ICMP6:
        table, overhead = _ICMP6, _IPV6_UDP_OVERHEAD
    else:
        return None
    known = table.get((error.type, error.code))
    if known is None:
        if error.type == (3 if error.origin == _SO_EE_ORIGIN_ICMP else 1):
            known = (PathErrorKind.UNREACHABLE, f"destination unreachable (code {error.code})")
        else:
            return None
    kind, description = known
    maxDatagram = error.info - overhead if kind is PathErrorKind.TOO_BIG and error.info > overhead else None
    return PathError(kind, description, offender=error.offender, max_datagram=maxDatagram)


@implementer(IHalfCloseableDescriptor)
class BatchingUDPPort(udp.Port):
    """A UDP port that reads and sends in batches for its :class:`~txutp.UTPMultiplexer` (a batching carrier).

    With ``UDP_GRO`` (Linux) one ``recvmsg`` returns a run of datagrams from one
    sender coalesced into one buffer plus their segment size; they are split here.
    Without it, datagrams are read one ``recvfrom`` at a time. Either way a batch
    ends after ``READ_BATCH_BYTES`` or when the socket is empty, and the
    multiplexer flushes once for the whole batch.
    """

    protocol: UTPMultiplexer
    #: Receiving with UDP GRO, and sending with UDP GSO (tried on first use; off if the kernel refuses).
    gro = False
    gso = False
    #: ICMP errors are queued on the socket (Linux ``IP_RECVERR``).
    recvErr = False
    #: The socket's ``sendto`` and ``sendmsg`` (a seam for tests that make sending fail).
    sendto: Any = None
    sendmsg: Any = None

    def __init__(self, port: int, multiplexer: UTPMultiplexer, interface: str, maxPacketSize: int, reactor: Any):
        super().__init__(port, multiplexer, interface, maxPacketSize, reactor)  # type: ignore[no-untyped-call]
        #: The multiplexer's counters, which this port keeps for sending and for the socket.
        self.stats: MultiplexerStats = multiplexer.stats
        self._dontFragmentLevels: list[tuple[int, int]] = []

    def _bindSocket(self) -> None:
        super()._bindSocket()  # type: ignore[no-untyped-call]
        sock = self.socket
        self.sendto = sock.sendto
        self.sendmsg = sock.sendmsg
        self._raiseSocketBuffers()
        self._setupDontFragment()
        if sys.platform.startswith("linux"):
            self.gso = True
            self.enableGRO()
            self._enableRecvErr()

    def enableGRO(self) -> bool:
        """Ask the kernel to coalesce received datagrams (Linux UDP_GRO); return whether it works."""
        with contextlib.suppress(OSError, AttributeError):
            self.socket.setsockopt(_SOL_UDP, _UDP_GRO, 1)
            self.gro = True
        return self.gro

    def _enableRecvErr(self) -> None:
        sock = self.socket
        levels = [(socket.IPPROTO_IP, _IP_RECVERR)]
        if sock.family == socket.AF_INET6:
            levels.append((socket.IPPROTO_IPV6, _IPV6_RECVERR))
        try:
            for level, option in levels:
                sock.setsockopt(level, option, 1)
        except OSError:  # pragma: no cover - kernels without the option
            return
        self.recvErr = True

    def stopListening(self) -> Deferred[None]:
        """Close the socket now (``udp.Port`` waits a reactor turn, which a stopping reactor may never run)."""
        if self.connected:
            self.connectionLost(None)  # type: ignore[no-untyped-call]
        return succeed(None)

    # ------------------------------------------------------------------ reading

    def doRead(self) -> None:
        """Read a batch of datagrams (and any ICMP errors), then let the multiplexer flush once."""
        try:
            if not self._readBatch() and self.recvErr:
                self.readErrorQueue()
        finally:
            if self.connected:
                self.protocol.readBatchDone()

    def readConnectionLost(self, reason: Failure) -> None:
        """The poll and epoll reactors saw an error condition with nothing to read: an ICMP error.

        Read the error queue and go on reading; a socket whose condition was
        something else (nothing was queued) is lost, as the reactor meant.
        """
        if self.recvErr and self.readErrorQueue():
            if self.connected:
                self.startReading()  # type: ignore[no-untyped-call]
                self.protocol.readBatchDone()
            return
        self.connectionLost(reason)  # type: ignore[no-untyped-call]

    def readErrorQueue(self) -> int:
        """Read the ICMP errors queued on the socket, telling the multiplexer of each; return how many."""
        sock = self.socket
        ipv6 = self.addressFamily == socket.AF_INET6
        report = self.protocol.pathErrorReceived
        count = 0
        while count < _ERRQUEUE_BUDGET:
            try:
                data, ancillary, _flags, addr = sock.recvmsg(MAX_PACKET_SIZE, _ERR_CMSG_SPACE, _MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            count += 1
            self.stats.icmp_errors += 1
            if ipv6:
                addr = addr[:2]
            for level, kind, value in ancillary:
                if (level, kind) in ((socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR)):
                    decoded = decodeSocketError(value)
                    pathError = pathErrorOf(decoded) if decoded is not None else None
                    if pathError is not None:
                        report(data, addr, pathError)
        return count

    def _readBatch(self) -> bool:
        """Read one batch; return whether a datagram was read and no ICMP error was signalled."""
        sock = self.socket
        received = self.protocol.datagramReceived
        ipv6 = self.addressFamily == socket.AF_INET6
        budget = READ_BATCH_BYTES
        gro = self.gro
        readAny = signalled = False
        while budget > 0:
            try:
                if gro:
                    data, ancillary, _flags, addr = sock.recvmsg(MAX_PACKET_SIZE, _GRO_CMSG_SPACE)
                else:
                    data, addr = sock.recvfrom(MAX_PACKET_SIZE)
                    ancillary = None
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in _READ_RETRY_ERRNOS:
                    signalled = True  # an ICMP error about an earlier datagram: it waits on the error queue
                    continue
                raise
            readAny = True
            if ipv6:
                addr = addr[:2]
            budget -= len(data)
            segment = 0
            if ancillary:
                for level, kind, value in ancillary:
                    if level == _SOL_UDP and kind == _UDP_GRO:
                        segment = int.from_bytes(value[:4], sys.byteorder)
            if segment and len(data) > segment:
                self.stats.gro_reads += 1
                self.protocol.runReceived(data, segment, addr)
            else:
                received(data, addr)
        return readAny and not signalled

    # ------------------------------------------------------------------ sending

    def writeBatch(self, datagrams: list[tuple[bytes, Any]]) -> None:
        """Send the datagrams of one flush, runs of equal-sized ones with one ``sendmsg`` each (GSO)."""
        sendmsg = self.sendmsg
        if not self.gso or sendmsg is None:
            for data, addr in datagrams:
                self.write(data, addr)
            return
        stats = self.stats
        n = len(datagrams)
        i = 0
        while i < n:
            data, addr = datagrams[i]
            size = len(data)
            j = i + 1
            if type(data) is bytes:  # a DontFragment probe goes alone
                total = size
                cid = data[2:4]  # one connection per run: a reuseport group steers a run as one
                last = min(n, i + _GSO_MAX_SEGMENTS)
                while j < last:
                    nxt, nxt_addr = datagrams[j]
                    length = len(nxt)
                    if (
                        nxt_addr != addr
                        or length > size
                        or type(nxt) is not bytes
                        or total + length > _GSO_MAX_BYTES
                        or nxt[2:4] != cid
                    ):
                        break
                    total += length
                    j += 1
                    if length < size:
                        break  # only the last segment may be shorter
            if j - i == 1:
                self.write(data, addr)
                i = j
                continue
            run = datagrams[i:j]
            buffers = [d for d, _ in run]  # a scatter list: the kernel joins them, and GSO splits them again
            segment = [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", size))]
            try:
                try:
                    sendmsg(buffers, segment, 0, addr)
                except OSError as e:
                    if not (self.recvErr and e.errno in _PENDING_ERROR_ERRNOS):
                        raise
                    sendmsg(buffers, segment, 0, addr)  # the error was an earlier datagram's: send this run again
            except BlockingIOError:
                stats.send_errors += j - i  # the socket buffer is full: lost, as on a congested link
            except OSError as e:
                if e.errno in _SEND_LOSS_ERRNOS:
                    stats.send_errors += j - i
                else:
                    # No segmentation offload here after all (EIO, EINVAL, ...): one datagram at a time from now on.
                    self.gso = False
                    for d, a in run:
                        self.write(d, a)
            else:
                stats.datagrams_sent += j - i
                stats.bytes_sent += total
                stats.gso_sends += 1
            i = j

    def write(self, datagram: bytes, addr: Any = None) -> None:
        """Send one datagram; never raises: a refused datagram counts as lost (``EMSGSIZE``: too big)."""
        sendto = self.sendto
        if sendto is None:
            return
        dontFragment = isinstance(datagram, DontFragment) and self._dontFragmentLevels
        try:
            if dontFragment:
                self._setDontFragment(True)
            try:
                try:
                    sendto(datagram, addr)  # udp.Port.write would validate the address each time
                except OSError as e:
                    if not (self.recvErr and e.errno in _PENDING_ERROR_ERRNOS):
                        raise
                    sendto(datagram, addr)  # the error was an earlier datagram's: send this one again
            finally:
                if dontFragment:
                    self._setDontFragment(False)
        except OSError as e:
            self.stats.send_errors += 1
            if e.errno == errno.EMSGSIZE:
                # Bigger than the path MTU the kernel knows (a DF probe, usually).
                self.protocol.datagramTooBig(datagram, addr)
            elif e.errno in _NO_ROUTE_ERRNOS:
                # No route from here: as certain as an error gets (a connect fails at once, as TCP's would).
                error = PathError(PathErrorKind.UNREACHABLE, _NO_ROUTE_ERRNOS[e.errno], local=True)
                self.protocol.pathErrorReceived(datagram, addr, error)
            # EAGAIN, ENOBUFS, ECONNREFUSED, ...: the datagram is lost, as on a congested link
            return
        self.stats.datagrams_sent += 1
        self.stats.bytes_sent += len(datagram)

    # ------------------------------------------------------------------ the socket

    def _raiseSocketBuffers(self) -> None:
        sock = self.socket
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

    def _setupDontFragment(self) -> None:
        """Send without DF by default (IP may fragment); DF only for the engine's path MTU probes (Linux)."""
        if not sys.platform.startswith("linux"):
            return
        sock = self.socket
        levels = [(socket.IPPROTO_IP, _IP_MTU_DISCOVER)]
        if sock.family == socket.AF_INET6:
            levels.append((socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER))
        try:
            for level, option in levels:
                sock.setsockopt(level, option, _PMTUDISC_DONT)
        except OSError:  # pragma: no cover - kernels without the option
            return
        self._dontFragmentLevels = levels

    def _setDontFragment(self, on: bool) -> None:
        sock = self.socket
        value = _PMTUDISC_DO if on else _PMTUDISC_DONT
        for level, option in self._dontFragmentLevels:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, option, value)


def adoptUTP(
    reactor: Reactor, fileno: int, addressFamily: int, multiplexer: UTPMultiplexer, *, gro: bool = True
) -> Any:
    """Run ``multiplexer`` on a bound UDP socket made elsewhere, the descriptor ``fileno``; return the port.

    As :func:`listenUTP`, but for a socket inherited from a supervisor (``txutp.reuseport``) or
    opened by other means. The socket is duplicated (close ``fileno`` when you like) and made
    non-blocking. With ``gro=False`` UDP GRO is turned off rather than on: a socket of a steered
    ``SO_REUSEPORT`` group must not let the kernel coalesce datagrams that the group's program
    would send to different sockets.
    """
    if not IReactorFDSet.providedBy(reactor):  # pragma: no cover - IOCP
        return reactor.adoptDatagramPort(fileno, addressFamily, multiplexer, MAX_PACKET_SIZE)
    udpPort = _AdoptedUDPPort.adopt(reactor, fileno, addressFamily, multiplexer, gro)
    udpPort.startListening()  # type: ignore[no-untyped-call]
    return udpPort


class _AdoptedUDPPort(BatchingUDPPort):
    """A :class:`BatchingUDPPort` on a socket it did not open (:func:`adoptUTP`)."""

    allowGRO = True

    @classmethod
    def adopt(
        cls, reactor: Any, fileno: int, addressFamily: int, multiplexer: UTPMultiplexer, gro: bool
    ) -> _AdoptedUDPPort:
        port: _AdoptedUDPPort = cls._fromListeningDescriptor(  # type: ignore[no-untyped-call]
            reactor, fileno, addressFamily, multiplexer, MAX_PACKET_SIZE
        )
        port.allowGRO = gro
        return port

    def _bindSocket(self) -> None:
        super()._bindSocket()
        self.socket.setblocking(False)

    def enableGRO(self) -> bool:
        """Turn UDP GRO on as :class:`BatchingUDPPort` does, or off when adopted with ``gro=False``."""
        if self.allowGRO:
            return super().enableGRO()
        with contextlib.suppress(OSError):
            self.socket.setsockopt(_SOL_UDP, _UDP_GRO, 0)
        self.gro = False
        return False
