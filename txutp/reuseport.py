"""Several processes on one UDP port (Linux): ``SO_REUSEPORT``, steered by uTP connection id.

A :class:`WorkerSupervisor` opens ``N`` UDP sockets on one port with
``SO_REUSEPORT``, attaches a classic BPF program to their group
(``SO_ATTACH_REUSEPORT_CBPF``) and starts ``N`` worker processes, giving
worker ``k`` socket ``k``. For every datagram the kernel runs the program,
which picks the socket, and so the process, from the uTP header
(:func:`steer` is the same function in Python):

* a uTP datagram (at least 20 bytes, version 1, type 0 to 4) goes to worker
  ``(key // 4) % N``, where ``key`` is its connection id (bytes 2-3), plus 1
  for a SYN or a RESET;
* anything else (a DHT's bencoded messages, say) goes to worker 0.

Why that key: a SYN carries the initiator's receive id ``Y`` and every later
packet of the initiator carries ``Y + 1``, so SYN and followers agree; a
RESET carries either the receiver's id or its neighbour below. Worker ``k``
opens its outgoing connections on receive ids ``X`` that are multiples of 4
with ``(X // 4) % N == k`` (``UTPConfig.connection_id_class``), so the peer's
packets (``X``) and RESETs (``X`` or ``X + 1``) come back to it. Ids of
incoming connections are the peer's choice; the program sends them wherever
their SYN went.

A worker is a process started with the environment variable
:data:`WORKER_ENV`; in it an endpoint ``utp:6881:reuseport=N``
(``UTPServerEndpoint(..., reusePort=N)``) adopts the socket it inherited
instead of binding one. Outside a worker such an endpoint fails to listen.

The group keeps its order for the supervisor's whole life, since the
supervisor holds every socket: the kernel numbers a group's sockets in the
order they joined, and when one closes it moves the last into its place, so
a socket closed by the only process holding it would send another worker's
connections astray. A worker that exits leaves its socket in place, with
datagrams for it queued (up to the socket buffer); the supervisor starts a
new worker on the same socket. Connections of the worker that died are lost
with it (the new one answers their packets with RESET); those of the other
workers never notice. A worker whose supervisor is gone (its lifeline pipe
closes) stops its reactor.

``twistd utp --listen utp:6881:reuseport=4 --echo`` is such a supervisor
(``txutp/tap.py``); :class:`WorkerSupervisor` makes one in any program. See
``docs/workers.rst``.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import json
import os
import socket
import struct
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import error
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._multiplexer import Reactor, UTPMultiplexer
from ._udp import adoptUTP
from .engine import UTPConfig

__all__ = [
    "MAX_WORKERS",
    "WORKER_ENV",
    "Worker",
    "WorkerSupervisor",
    "attachSteeringProgram",
    "currentWorker",
    "listenWorker",
    "openSteeredSockets",
    "steer",
    "steeringProgram",
    "unsupportedReason",
]

_log = Logger()

#: The most worker processes on one port.
MAX_WORKERS = 1024
#: The environment variable that makes a process a worker: JSON with its ``index``, the ``count``
#: of workers, the descriptors of its ``sockets`` by ``"interface:port"`` and its ``lifeline``.
WORKER_ENV = "TXUTP_WORKER"

# <asm-generic/socket.h>
_SO_ATTACH_REUSEPORT_CBPF = 51
#: The smallest uTP datagram (the header).
_HEADER_SIZE = 20

# Classic BPF (<linux/filter.h>): class | size | mode, or class | op | source.
_LD_W_LEN = 0x00 | 0x00 | 0x80
_LD_B_ABS = 0x00 | 0x10 | 0x20
_LD_H_ABS = 0x00 | 0x08 | 0x20
_ALU_ADD_K = 0x04 | 0x00
_ALU_AND_K = 0x04 | 0x50
_ALU_RSH_K = 0x04 | 0x70
_ALU_MOD_K = 0x04 | 0x90
_JMP_JA = 0x05 | 0x00
_JMP_JEQ_K = 0x05 | 0x10
_JMP_JGT_K = 0x05 | 0x20
_JMP_JGE_K = 0x05 | 0x30
_RET_A = 0x06 | 0x10
_RET_K = 0x06 | 0x00
_SOCK_FILTER = struct.Struct("=HBBI")


def unsupportedReason() -> str | None:
    """Why this system cannot share a port between workers, or ``None`` if it can (Linux)."""
    if sys.platform.startswith("linux"):
        return None
    return (
        "several processes on one UDP port need Linux (SO_REUSEPORT with a BPF program steering "
        f"by uTP connection id, SO_ATTACH_REUSEPORT_CBPF); this is {sys.platform}"
    )


def _checkCount(workers: int) -> int:
    if type(workers) is not int or not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"the number of workers must be an integer from 1 to {MAX_WORKERS}, not {workers!r}")
    return workers


def steer(datagram: bytes, workers: int) -> int:
    """The index of the worker that the kernel gives ``datagram`` (a UDP payload): the program in Python."""
    if len(datagram) < _HEADER_SIZE or datagram[0] & 0x0F != 1 or datagram[0] >> 4 > 4:
        return 0
    key = (datagram[2] << 8) | datagram[3]
    if datagram[0] >> 4 >= 3:  # RESET, SYN
        key = (key + 1) & 0xFFFF
    return (key >> 2) % workers


def steeringProgram(workers: int) -> list[tuple[int, int, int, int]]:
    """The classic BPF program of :func:`steer`, as ``(code, jt, jf, k)`` instructions.

    The kernel runs it on the UDP payload of each datagram (its length is the
    payload's) and delivers to the group's socket of the index it returns.
    """
    _checkCount(workers)
    return [
        (_LD_W_LEN, 0, 0, 0),  # 0  A = length
        (_JMP_JGE_K, 0, 15, _HEADER_SIZE),  # 1  shorter than a header: not uTP
        (_LD_B_ABS, 0, 0, 0),  # 2  A = type << 4 | version
        (_ALU_AND_K, 0, 0, 0x0F),  # 3
        (_JMP_JEQ_K, 0, 12, 1),  # 4  version 1, or not uTP
        (_LD_B_ABS, 0, 0, 0),  # 5
        (_ALU_RSH_K, 0, 0, 4),  # 6  A = type
        (_JMP_JGT_K, 9, 0, 4),  # 7  beyond SYN: not uTP
        (_JMP_JGE_K, 2, 0, 3),  # 8  RESET or SYN: the key is the id + 1
        (_LD_H_ABS, 0, 0, 2),  # 9  A = connection id
        (_JMP_JA, 0, 0, 3),  # 10
        (_LD_H_ABS, 0, 0, 2),  # 11
        (_ALU_ADD_K, 0, 0, 1),  # 12
        (_ALU_AND_K, 0, 0, 0xFFFF),  # 13
        (_ALU_RSH_K, 0, 0, 2),  # 14 A = key // 4
        (_ALU_MOD_K, 0, 0, workers),  # 15
        (_RET_A, 0, 0, 0),  # 16 the socket of that index
        (_RET_K, 0, 0, 0),  # 17 not uTP: the first socket
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attachSteeringProgram(sock: socket.socket, workers: int) -> None:
    """Attach :func:`steeringProgram` to the ``SO_REUSEPORT`` group of ``sock`` (bound already)."""
    reason = unsupportedReason()
    if reason is not None:
        raise NotImplementedError(reason)
    program = steeringProgram(workers)
    code = ctypes.create_string_buffer(b"".join(_SOCK_FILTER.pack(*ins) for ins in program))
    fprog = _SockFprog(len(program), ctypes.addressof(code))
    # The kernel copies the instructions during the call; ``code`` lives until it returns.
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))


def _normalize(interface: str) -> str:
    return "0.0.0.0" if interface == "" else interface


def _socketKey(interface: str, port: int) -> str:
    host = _normalize(interface)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def openSteeredSockets(interface: str, port: int, workers: int) -> list[socket.socket]:
    """``workers`` UDP sockets bound to ``(interface, port)``, one ``SO_REUSEPORT`` group, steered.

    Socket ``k`` is index ``k`` of the group. Port 0 picks a free port for all
    of them. Raises ``CannotListenError`` if the port is taken (also by a
    group of someone else's: its sockets would come first), and
    ``NotImplementedError`` on systems other than Linux.
    """
    _checkCount(workers)
    reason = unsupportedReason()
    if reason is not None:
        raise NotImplementedError(reason)
    host = _normalize(interface)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        if port:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((host, port))  # EADDRINUSE if anyone has it, reuseport group or not
        for _ in range(workers):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setblocking(False)
            sock.bind((host, port))
            port = sock.getsockname()[1]
        attachSteeringProgram(sockets[0], workers)
    except OSError as e:
        for sock in sockets:
            sock.close()
        raise error.CannotListenError(host, port, e) from e
    return sockets


# ---------------------------------------------------------------------- workers


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process as one of the workers of a :class:`WorkerSupervisor` (:func:`currentWorker`)."""

    #: Its index, 0 to ``count - 1``: the residue class of its outgoing connection ids. Worker 0
    #: also receives every datagram that is not uTP.
    index: int
    #: How many workers share the port.
    count: int
    #: Its inherited socket descriptors by ``"interface:port"`` (``"[::]:6881"`` for IPv6), as
    #: the supervisor was asked for them.
    sockets: Mapping[str, int]
    #: The read end of a pipe that closes when the supervisor exits, or ``None``.
    lifeline: int | None = None

    def toEnvironment(self) -> str:
        """The value of :data:`WORKER_ENV` that describes this worker."""
        return json.dumps(
            {"index": self.index, "count": self.count, "sockets": dict(self.sockets), "lifeline": self.lifeline}
        )


def currentWorker(environ: Mapping[str, str] | None = None) -> Worker | None:
    """This process as a worker (from :data:`WORKER_ENV`), or ``None`` if it is not one."""
    value = (os.environ if environ is None else environ).get(WORKER_ENV)
    if not value:
        return None
    try:
        data = json.loads(value)
        worker = Worker(
            index=int(data["index"]),
            count=int(data["count"]),
            sockets={str(k): int(v) for k, v in data["sockets"].items()},
            lifeline=None if data.get("lifeline") is None else int(data["lifeline"]),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"malformed {WORKER_ENV} {value!r}: {e}") from None
    if not 0 <= worker.index < worker.count:
        raise ValueError(f"malformed {WORKER_ENV} {value!r}: index out of range")
    return worker


#: The multiplexers on adopted sockets, by (reactor, socket key).
_adopted: dict[tuple[Any, str], UTPMultiplexer] = {}
_lifelines: dict[Any, _Lifeline] = {}


def listenWorker(
    reactor: Reactor,
    interface: str,
    port: int,
    workers: int,
    config: UTPConfig | None = None,
    datagramProtocol: DatagramProtocol | None = None,
) -> UTPMultiplexer:
    """The multiplexer on this worker's socket for ``(interface, port)``, adopting it if needed.

    What ``UTPServerEndpoint(reactor, port, interface, config, reusePort=workers)``
    listens on. Its configuration is ``config`` with ``connection_id_class``
    set to this worker's class. Raises ``CannotListenError`` if this process
    is not a worker, is one of another number of workers, or was given no
    socket for ``(interface, port)``.
    """
    _checkCount(workers)
    key = _socketKey(interface, port)
    worker = currentWorker()
    if worker is None:
        raise error.CannotListenError(
            _normalize(interface),
            port,
            OSError(
                f"reuseport={workers}: this process is not a worker of a txutp.reuseport supervisor "
                f"({WORKER_ENV} is not set); start the workers with `twistd utp --listen "
                f"utp:{port}:reuseport={workers} ...` or txutp.reuseport.WorkerSupervisor"
            ),
        )
    fd = worker.sockets.get(key)
    if worker.count != workers or fd is None:
        raise error.CannotListenError(
            _normalize(interface),
            port,
            OSError(
                f"reuseport={workers}: this worker is one of {worker.count}, with sockets for "
                f"{', '.join(sorted(worker.sockets)) or 'nothing'}, not {key}"
            ),
        )
    idClass = (worker.index, worker.count)
    base = config or UTPConfig()
    if base.connection_id_class not in (None, idClass):
        raise ValueError(f"reuseport={workers}: config.connection_id_class must be None or {idClass}")
    config = dataclasses.replace(base, connection_id_class=idClass)
    mux = _adopted.get((reactor, key))
    if mux is not None and not mux.closing:
        if mux.config != config or (datagramProtocol is not None and datagramProtocol is not mux.datagramProtocol):
            raise ValueError(f"the uTP port {key} is already open with another UTPConfig or datagram protocol")
        return mux
    mux = UTPMultiplexer(reactor, config, datagramProtocol=datagramProtocol, closeWhenUnused=True)
    family = socket.AF_INET6 if key.startswith("[") else socket.AF_INET
    adoptUTP(reactor, fd, family, mux, gro=False)  # GRO would coalesce datagrams meant for other workers
    _adopted[(reactor, key)] = mux
    mux.whenClosed().addCallback(
        lambda _: _adopted.pop((reactor, key), None) if _adopted.get((reactor, key)) is mux else None
    )
    if worker.lifeline is not None and reactor not in _lifelines and hasattr(reactor, "addReader"):
        lifeline = _lifelines[reactor] = _Lifeline(reactor, worker.lifeline)
        reactor.addReader(lifeline)
    return mux


@implementer(IReadDescriptor)
class _Lifeline:
    """The read end of the supervisor's pipe: at its end (the supervisor exited) the worker stops."""

    def __init__(self, reactor: Reactor, fd: int) -> None:
        self.reactor = reactor
        self.fd = fd
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "txutp worker lifeline"

    def doRead(self) -> None:
        try:
            data = os.read(self.fd, 512)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.connectionLost(Failure(error.ConnectionDone("the supervisor exited")))

    def connectionLost(self, reason: Failure) -> None:
        self.reactor.removeReader(self)
        _lifelines.pop(self.reactor, None)
        _log.warn("The txutp.reuseport supervisor is gone: stopping this worker")
        if getattr(self.reactor, "running", False):
            with contextlib.suppress(error.ReactorNotRunning):  # already stopping: a SIGTERM came first
                self.reactor.stop()


# ---------------------------------------------------------------------- the supervisor


class _WorkerProcess(ProcessProtocol):
    """One worker process: its output relayed to the supervisor's log, its end reported."""

    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = 0.0
        self.pid: int | None = None
        self.ended: Deferred[None] = Deferred()
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD not in self._partial:
            return
        *lines, self._partial[childFD] = (self._partial[childFD] + data).split(b"\n")
        for line in lines:
            self._relay(line)

    def _relay(self, line: bytes) -> None:
        _log.info("worker {index}: {line}", index=self.index, line=line.decode("utf-8", "replace").rstrip("\r"))

    def processEnded(self, reason: Failure) -> None:
        for fd in (1, 2):
            if self._partial[fd]:
                self._relay(self._partial[fd])
                self._partial[fd] = b""
        self.supervisor.workerEnded(self, reason)
        self.ended.callback(None)


class WorkerSupervisor(Service):
    """Runs ``workers`` processes of ``argv`` sharing the UDP ports of ``sockets``: a twistd service.

    ``sockets`` lists ``(interface, port)`` pairs (port 0: a free one, see
    :attr:`ports`). Starting the service opens each as a steered group
    (:func:`openSteeredSockets`; before twistd sheds privileges, so a port
    below 1024 works), then starts the workers once the reactor runs: process
    ``k`` gets socket ``k`` of each group, a lifeline pipe and
    :data:`WORKER_ENV`, on top of ``env`` (``os.environ`` by default), in
    directory ``path``. Their output goes to this process's log, line by line
    (``relayOutput``), or straight to its standard output and error.

    A worker that exits is started again after ``restartDelay`` seconds,
    doubled (up to 30 s) each time it exits within 10 s of its start.
    Stopping the service sends each worker ``SIGTERM`` (``SIGKILL`` after
    ``stopTimeout`` seconds), then closes the sockets; its Deferred fires when
    the workers have exited.
    """

    def __init__(
        self,
        reactor: Reactor,
        argv: Sequence[str],
        workers: int,
        sockets: Sequence[tuple[str, int]],
        *,
        env: Mapping[str, str] | None = None,
        path: str | None = None,
        restartDelay: float = 1.0,
        stopTimeout: float = 10.0,
        relayOutput: bool = True,
    ) -> None:
        self.reactor = reactor
        self.argv = list(argv)
        self.workers = _checkCount(workers)
        if not sockets:
            raise ValueError("a WorkerSupervisor needs at least one (interface, port) to share")
        self.sockets = [(interface, int(port)) for interface, port in sockets]
        self.env = env
        self.path = path
        self.restartDelay = restartDelay
        self.stopTimeout = stopTimeout
        self.relayOutput = relayOutput
        #: The bound port of each of ``sockets``, once open.
        self.ports: list[int] = []
        #: The running worker processes by index (Twisted ``IProcessTransport``).
        self.processes: dict[int, Any] = {}
        #: How many workers have been started in all (restarts included).
        self.starts = 0
        self._groups: list[list[socket.socket]] = []
        self._protocols: dict[int, _WorkerProcess] = {}
        self._restarts: dict[int, Any] = {}
        self._delays: dict[int, float] = {}
        self._stopping = False

    def privilegedStartService(self) -> None:
        """Open the steered sockets (before twistd sheds privileges)."""
        self._open()
        super().privilegedStartService()  # type: ignore[no-untyped-call]

    def startService(self) -> None:
        """Open the sockets if needed, and start the workers once the reactor runs."""
        self._open()
        self._stopping = False
        super().startService()  # type: ignore[no-untyped-call]
        self.reactor.callWhenRunning(self._startAll)

    def _open(self) -> None:
        if self._groups:
            return
        try:
            for interface, port in self.sockets:
                self._groups.append(openSteeredSockets(interface, port, self.workers))
        except BaseException:
            self._closeSockets()
            raise
        self.ports = [group[0].getsockname()[1] for group in self._groups]
        for (interface, port), bound in zip(self.sockets, self.ports):
            _log.info(
                "Sharing UDP {address} between {workers} uTP workers",
                address=_socketKey(interface, bound) if port == 0 else _socketKey(interface, port),
                workers=self.workers,
            )

    def _startAll(self) -> None:
        if self.running and not self._stopping:
            for index in range(self.workers):
                if index not in self.processes:
                    self._start(index)

    def _start(self, index: int) -> None:
        self._restarts.pop(index, None)
        if not self.running or self._stopping or index in self.processes:
            return
        sockets: dict[str, int] = {}
        childFDs: dict[int, Any] = {0: "w", 1: "r" if self.relayOutput else 1, 2: "r" if self.relayOutput else 2}
        fd = 3
        for (interface, port), group in zip(self.sockets, self._groups):
            childFDs[fd] = group[index].fileno()
            sockets[_socketKey(interface, port)] = fd
            fd += 1
        childFDs[fd] = "w"  # the lifeline: the worker sees its end when this process exits
        worker = Worker(index, self.workers, sockets, lifeline=fd)
        env = dict(os.environ if self.env is None else self.env)
        env[WORKER_ENV] = worker.toEnvironment()
        protocol = _WorkerProcess(self, index)
        protocol.started = self.reactor.seconds()
        try:
            process = self.reactor.spawnProcess(
                protocol, self.argv[0], self.argv, env=env, path=self.path, childFDs=childFDs
            )
        except Exception:
            _log.failure("Could not start uTP worker {index}", index=index)
            self._scheduleRestart(index, protocol.started)
            return
        self.processes[index] = process
        self._protocols[index] = protocol
        protocol.pid = process.pid
        self.starts += 1
        _log.info("uTP worker {index} started (pid {pid})", index=index, pid=process.pid)

    def workerEnded(self, protocol: _WorkerProcess, reason: Failure) -> None:
        """A worker process ended (its protocol says so): start another unless the service stops."""
        index = protocol.index
        if self._protocols.get(index) is not protocol:
            return
        del self._protocols[index]
        del self.processes[index]
        if self._stopping or not self.running:
            _log.info("uTP worker {index} (pid {pid}) exited", index=index, pid=protocol.pid)
            return
        delay = self._scheduleRestart(index, protocol.started)
        _log.warn(
            "uTP worker {index} (pid {pid}) ended: {reason}; starting another in {delay} s",
            index=index,
            pid=protocol.pid,
            reason=reason.getErrorMessage(),
            delay=delay,
        )

    def _scheduleRestart(self, index: int, started: float) -> float:
        if self.reactor.seconds() - started < 10.0:  # dying early: back off
            delay = min(max(self._delays.get(index, 0.0) * 2, self.restartDelay), 30.0)
        else:
            delay = self.restartDelay
        self._delays[index] = delay
        self._restarts[index] = self.reactor.callLater(delay, self._start, index)
        return delay

    def stopService(self) -> Deferred[None]:
        """Stop the workers (``SIGTERM``, then ``SIGKILL``), then close the sockets."""
        self._stopping = True
        super().stopService()  # type: ignore[no-untyped-call]
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        waiting = [protocol.ended for protocol in self._protocols.values()]
        for process in list(self.processes.values()):
            self._signal(process, "TERM")
        if not waiting:
            self._closeSockets()
            return succeed(None)
        kill = self.reactor.callLater(self.stopTimeout, self._killAll)
        done: Deferred[None] = Deferred()

        def ended(_: object) -> None:
            if kill.active():
                kill.cancel()
            self._closeSockets()
            done.callback(None)

        DeferredList(waiting).addCallback(ended)
        return done

    def _killAll(self) -> None:
        for index, process in list(self.processes.items()):
            _log.warn("uTP worker {index} (pid {pid}) did not stop: killing it", index=index, pid=process.pid)
            self._signal(process, "KILL")

    @staticmethod
    def _signal(process: Any, name: str) -> None:
        try:
            process.signalProcess(name)
        except error.ProcessExitedAlready:
            pass
        except OSError as e:  # pragma: no cover - a race with its exit
            if e.errno != errno.ESRCH:
                raise

    def _closeSockets(self) -> None:
        for group in self._groups:
            for sock in group:
                sock.close()
        self._groups = []
