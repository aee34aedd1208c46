"""``utpcat``: netcat over uTP (also ``python -m txutp``).

::

    utpcat -l [-k] [-s ADDR] [-6] PORT     listen on UDP PORT; accept one connection (-k: one after another)
    utpcat [-s ADDR] [-b PORT] HOST PORT   connect to HOST (a name or an IP literal, IPv6 too)

Standard input goes to the connection and what arrives goes to standard output,
raw bytes, flow-controlled both ways (a slow reader stops the sender, a full
send buffer stops reading standard input). At the end of standard input the
connection is half-closed (FIN) and utpcat keeps reading until the peer's end
of stream; it exits once both directions are done. A progress line (bytes,
rate, RTT) goes to standard error when it is a terminal or with ``-v``; ``-v``
also prints the connection's final statistics.

Exit status: see :data:`EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from twisted.internet import error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IHalfCloseableProtocol, IListeningPort, IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ._version import __version__
from .engine import UTPConfig

__all__ = ["EXIT_CODES", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_TIMEOUT = 4
EXIT_RESET = 5
EXIT_NOHOST = 6
EXIT_BIND = 7
EXIT_UNREACHABLE = 8
EXIT_INTERRUPTED = 130

#: Exit status of ``utpcat`` and what it means.
EXIT_CODES = {
    EXIT_OK: "success: both directions ended cleanly",
    EXIT_ERROR: "any other error (the connection was lost, an I/O error)",
    EXIT_USAGE: "bad arguments",
    EXIT_REFUSED: "connection refused (the peer answered RESET, or ICMP port unreachable: nothing listens)",
    EXIT_TIMEOUT: "timed out (connecting, waiting for a connection with -l -w, or a dead peer)",
    EXIT_RESET: "connection reset by the peer",
    EXIT_NOHOST: "host name not found",
    EXIT_BIND: "cannot bind the local address or port",
    EXIT_UNREACHABLE: "the network said the host cannot be reached (ICMP host or network unreachable)",
    EXIT_INTERRUPTED: "interrupted by SIGINT (143: SIGTERM); the connection is reset",
}

#: Most time spent after the end waiting for the socket to close (a closed connection lingers ~3 RTO
#: to re-acknowledge a retransmitted FIN, as TCP's TIME_WAIT).
LINGER_CAP = 10.0

#: utpcat's engine configuration: no fixed linger beyond ``3 * RTO``, so that it exits promptly.
CONFIG = dataclasses.replace(UTPConfig(), linger_time=0.0)


class UsageError(Exception):
    """A bad command line (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, no usage dump
        raise UsageError(message)


def _port(text: str, minimum: int) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        port = -1
    if not minimum <= port <= 65535:
        raise UsageError(f"invalid port {text!r} (expected {minimum}-65535)")
    return port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}")
    return value


def buildParser() -> argparse.ArgumentParser:
    """The argument parser of ``utpcat``."""
    codes = "\n".join(f"  {code:3d}  {meaning}" for code, meaning in EXIT_CODES.items())
    parser = _Parser(
        prog="utpcat",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="utpcat [options] HOST PORT\n       utpcat -l [options] [ADDR] PORT",
        description="Read standard input into a uTP connection and the connection into standard output.",
        epilog="examples:\n"
        "  utpcat -l 9000 > received.bin                # receive a file\n"
        "  utpcat 127.0.0.1 9000 < file.bin             # send it\n"
        "  utpcat -6 -l -s ::1 9000                     # listen on IPv6 loopback\n"
        "  utpcat -w 5 peer.example 6881                # give up connecting after 5 s\n\n"
        "exit status:\n" + codes,
    )
    parser.add_argument("-l", "--listen", action="store_true", help="listen for a connection instead of connecting")
    parser.add_argument(
        "-k", "--keep-listening", action="store_true", help="with -l: accept connections one after another"
    )
    parser.add_argument(
        "-s",
        "--source",
        metavar="ADDR",
        help="local IP address: the interface to listen on (-l), or the source address to connect from",
    )
    parser.add_argument("-b", "--bind-port", metavar="PORT", help="local UDP port to connect from (default: any)")
    family = parser.add_mutually_exclusive_group()
    family.add_argument("-4", dest="family", action="store_const", const=4, help="IPv4 only")
    family.add_argument(
        "-6", dest="family", action="store_const", const=6, help="IPv6 (with -l: listen on ::, dual-stack)"
    )
    parser.add_argument(
        "-w",
        "--wait",
        metavar="SECONDS",
        type=_seconds,
        help="give up connecting after SECONDS (default 30); with -l, give up waiting for a connection",
    )
    parser.add_argument("-d", "--no-stdin", action="store_true", help="do not read standard input (half-close at once)")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress line and final statistics on stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line, even on a terminal")
    parser.add_argument(
        "--trace",
        metavar="PATH",
        help="write a trace of the connection (JSON lines): to PATH if it ends in .jsonl, else one file per"
        " connection in the directory PATH; plot it with python -m txutp.plot",
    )
    parser.add_argument("--version", action="version", version=f"utpcat (txutp) {__version__}")
    parser.add_argument("address", nargs="+", metavar="HOST PORT", help=argparse.SUPPRESS)
    return parser


@dataclasses.dataclass
class Options:
    """Parsed command line."""

    listen: bool
    keep: bool
    host: str
    port: int
    source: str | None
    bindPort: int
    family: int | None
    wait: float | None
    noStdin: bool
    verbose: bool
    quiet: bool
    trace: str | None = None


def parseArguments(argv: Sequence[str]) -> Options:
    """Parse ``argv`` (without the program name); raise :class:`UsageError`."""
    ns = buildParser().parse_args(list(argv))
    positional: list[str] = ns.address
    if ns.listen:
        if len(positional) == 1:
            host, portText = ns.source or "", positional[0]
        elif len(positional) == 2:
            if ns.source is not None:
                raise UsageError("give the address to listen on once: -s ADDR or ADDR PORT")
            host, portText = positional
        else:
            raise UsageError("with -l give [ADDR] PORT")
        port = _port(portText, 0)
        if ns.bind_port is not None:
            raise UsageError("-b is for connecting; with -l the port to listen on is PORT")
        if host and not (isIPAddress(host) or isIPv6Address(host)):
            raise UsageError(f"the address to listen on must be an IP literal, not {host!r}")
        if ns.family == 6:
            if not host:
                host = "::"
            elif not isIPv6Address(host):
                raise UsageError(f"-6 with an IPv4 address {host!r}")
        elif ns.family == 4 and host and not isIPAddress(host):
            raise UsageError(f"-4 with an IPv6 address {host!r}")
    else:
        if ns.keep_listening:
            raise UsageError("-k needs -l")
        if len(positional) != 2:
            raise UsageError("give HOST PORT (or -l [ADDR] PORT to listen)")
        host, portText = positional
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host:
            raise UsageError("empty host name")
        port = _port(portText, 1)
    bindPort = 0 if ns.bind_port is None else _port(ns.bind_port, 0)
    source = None if ns.listen else ns.source
    if source is not None and not (isIPAddress(source) or isIPv6Address(source)):
        raise UsageError(f"the source address must be an IP literal, not {source!r}")
    if not ns.listen:
        if ns.family == 6:
            if isIPAddress(host) or (source is not None and isIPAddress(source)):
                raise UsageError("-6 with an IPv4 address")
            source = source or "::"
        elif ns.family == 4:
            if isIPv6Address(host) or (source is not None and isIPv6Address(source)):
                raise UsageError("-4 with an IPv6 address")
            source = source or "0.0.0.0"
        if bindPort and source is None:
            source = "::" if isIPv6Address(host) else ""
    return Options(
        listen=ns.listen,
        keep=ns.keep_listening,
        host=host,
        port=port,
        source=source,
        bindPort=bindPort,
        family=ns.family,
        wait=ns.wait,
        noStdin=ns.no_stdin,
        verbose=ns.verbose,
        quiet=ns.quiet,
        trace=ns.trace or None,
    )


# ---------------------------------------------------------------------- formatting


def formatBytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def formatRate(n: float) -> str:
    """Bytes per second, human readable."""
    return formatBytes(n) + "/s"


def _hostPort(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describeFailure(failure: Failure, target: str) -> tuple[int, str]:
    """Map a connect or connection failure to ``(exit status, one-line message)``."""
    from .transport import UTPConnectionReset, UTPConnectionTimedOut

    value = failure.value
    pathError = getattr(value, "pathError", None)
    icmp = "" if pathError is None else f": {pathError}"
    if isinstance(value, error.ConnectionRefusedError):
        return EXIT_REFUSED, f"connection to {target} refused{icmp}"
    if isinstance(value, error.NoRouteError):
        return EXIT_UNREACHABLE, f"cannot reach {target}{icmp}"
    if isinstance(value, (error.TimeoutError, UTPConnectionTimedOut)):
        what = "connection to" if isinstance(value, error.TimeoutError) else "connection with"
        _, icmpSeen, lastError = str(value).partition("(last ICMP error: ")
        why = f" (last ICMP error: {lastError.rstrip('.')}" if icmpSeen else ""
        return EXIT_TIMEOUT, f"{what} {target} timed out{why}"
    if isinstance(value, UTPConnectionReset):
        return EXIT_RESET, f"connection with {target} reset by peer"
    if isinstance(value, error.DNSLookupError):
        return EXIT_NOHOST, f"cannot resolve {target.rsplit(':', 1)[0].strip('[]')!r}"
    if isinstance(value, (error.CannotListenError, error.ConnectBindError)):
        detail = value.socketError if isinstance(value, error.CannotListenError) else value.osError
        reason = getattr(detail, "strerror", None) or str(detail or value)
        return EXIT_BIND, f"cannot bind {target}: {reason}"
    if isinstance(value, error.ConnectionDone):
        return EXIT_OK, ""
    if isinstance(value, error.ConnectionLost):
        return EXIT_ERROR, f"connection with {target} lost"
    text = str(value).strip() or type(value).__name__
    return EXIT_ERROR, text.splitlines()[0]


# ---------------------------------------------------------------------- the two sides


def _closeStdout() -> None:
    """Close standard output for real, so that the reader sees EOF now.

    ``StandardIO.loseWriteConnection`` only stops writing; the descriptor stays
    open (twisted/twisted#3597). Put ``/dev/null`` in its place instead of
    closing it, so that descriptor 1 is never reused by something else.
    """
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
        finally:
            os.close(devnull)


@implementer(IPushProducer)
class _StdinProducer:
    """Standard input as the connection's producer; ``stopProducing`` (connection gone) does not close stdio."""

    def __init__(self, stdio: Any) -> None:
        self.stdio = stdio

    def pauseProducing(self) -> None:
        self.stdio.pauseProducing()

    def resumeProducing(self) -> None:
        self.stdio.resumeProducing()

    def stopProducing(self) -> None:
        self.stdio.pauseProducing()


@implementer(IHalfCloseableProtocol)
class _Stdio(Protocol):
    """Standard input and output (``twisted.internet.stdio.StandardIO``'s protocol)."""

    def __init__(self, cat: Cat) -> None:
        self.cat = cat
        self.eof = False
        self.outputClosed = False
        self.whenOutputClosed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.cat.stdinData(data)

    def readConnectionLost(self) -> None:
        self.eof = True
        self.cat.stdinEnded()

    def writeConnectionLost(self) -> None:
        self._outputClosed()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._outputClosed()
        if not self.eof:
            self.eof = True
            self.cat.stdinEnded()

    def _outputClosed(self) -> None:
        if not self.outputClosed:
            self.outputClosed = True
            _closeStdout()
            self.whenOutputClosed.callback(None)
            self.cat.stdoutClosed()


@implementer(IHalfCloseableProtocol)
class _Net(Protocol):
    """The uTP connection's protocol."""

    def __init__(self, cat: Cat) -> None:
        self.cat = cat
        self.readClosed = False
        self.writeClosed = False
        #: We half-closed before the peer's FIN came: our last ACK may need re-sending (linger).
        self.closedWriteFirst = False
        self.started = time.monotonic()
        self.received = 0
        self.sent = 0
        self.finalStats: Any = None

    def connectionMade(self) -> None:
        self.started = time.monotonic()
        self.cat.netConnected(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.cat.netData(data)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.sent += len(data)
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.readClosed = True
        self.cat.netEnded(self)
        self._maybeDone()

    def writeConnectionLost(self) -> None:
        self.writeClosed = True
        self.closedWriteFirst = not self.readClosed
        self._maybeDone()

    def _maybeDone(self) -> None:
        if self.readClosed and self.writeClosed and self.transport is not None:
            self.transport.loseConnection()

    def stats(self) -> Any:
        if self.finalStats is not None:
            return self.finalStats
        stats = getattr(self.transport, "stats", None)
        return stats() if stats is not None else None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.finalStats = self.stats()
        self.cat.netLost(self, reason)


class _ServerFactory(Factory):
    def __init__(self, cat: Cat) -> None:
        self.cat = cat

    def buildProtocol(self, addr: Any) -> Protocol | None:
        if self.cat.net is not None or self.cat.finishing:
            return None  # busy: the connection is reset
        return _Net(self.cat)


# ---------------------------------------------------------------------- the session


class Cat:
    """One run of utpcat on ``reactor``; :attr:`exitCode` is set once the reactor stopped."""

    def __init__(self, reactor: Any, options: Options, stderr: IO[str]) -> None:
        self.reactor = reactor
        self.options = options
        self.stderr = stderr
        self.exitCode: int | None = None
        self.net: _Net | None = None
        self.lastNet: _Net | None = None
        self.stdio: Any = None
        self.stdioProtocol: _Stdio | None = None
        self.early: list[bytes] = []
        self.port: IListeningPort | None = None
        self.finishing = False
        self.connections = 0
        self.waitCall: Any = None
        self.progressCall: Any = None
        self.progressShown = False
        tty = False
        with contextlib.suppress(AttributeError, ValueError):
            tty = stderr.isatty()
        self.tty = tty
        self.progress = not options.quiet and (tty or options.verbose)
        self.lastProgress = 0.0
        if options.listen:
            self.target = _hostPort(options.host or "0.0.0.0", options.port)
        else:
            self.target = _hostPort(options.host, options.port)

    # -------------------------------------------------------------- messages

    def say(self, message: str) -> None:
        """One line on stderr (clearing a progress line first)."""
        if self.progressShown and self.tty:
            self.stderr.write("\r\x1b[K")
            self.progressShown = False
        self.stderr.write(f"utpcat: {message}\n")
        self.stderr.flush()

    def info(self, message: str) -> None:
        if self.options.verbose:
            self.say(message)

    # -------------------------------------------------------------- start

    def start(self) -> None:
        """Listen or connect."""
        from .endpoints import UTPClientEndpoint, UTPServerEndpoint

        options = self.options
        config = CONFIG if options.trace is None else dataclasses.replace(CONFIG, trace=options.trace)
        if options.listen:
            endpoint = UTPServerEndpoint(self.reactor, options.port, options.host, config)
            listening = endpoint.listen(_ServerFactory(self))
            listening.addCallbacks(self.listening, self.failed)
        else:
            client = UTPClientEndpoint(
                self.reactor,
                options.host,
                options.port,
                timeout=options.wait if options.wait is not None else 30.0,
                bindAddress=options.source,
                bindPort=options.bindPort,
                config=config,
            )
            connecting = client.connect(Factory.forProtocol(lambda: _Net(self)))
            connecting.addErrback(self.failed)

    def listening(self, port: IListeningPort) -> None:
        self.port = port
        host = port.getHost()
        self.target = _hostPort(host.host, host.port)  # type: ignore[attr-defined]
        self.info(f"listening on {self.target}")
        if self.options.wait is not None:
            self.waitCall = self.reactor.callLater(self.options.wait, self.waitedTooLong)

    def waitedTooLong(self) -> None:
        self.waitCall = None
        if self.net is None and not self.finishing:
            self.say(f"no connection to {self.target} within {self.options.wait:g} s")
            self.finish(EXIT_TIMEOUT)

    def failed(self, failure: Failure) -> None:
        if self.finishing:
            return
        code, message = describeFailure(failure, self.target)
        if message:
            self.say(message)
        self.finish(code or EXIT_ERROR)

    # -------------------------------------------------------------- the connection

    def netConnected(self, net: _Net) -> None:
        assert net.transport is not None
        self.net = self.lastNet = net
        self.connections += 1
        if self.waitCall is not None and self.waitCall.active():
            self.waitCall.cancel()
        self.waitCall = None
        peer = net.transport.getPeer()
        host = net.transport.getHost()
        peerText = _hostPort(peer.host, peer.port)  # type: ignore[attr-defined]
        if self.options.listen:
            self.info(f"connection from {peerText}")
            if not self.options.keep and self.port is not None:
                self.port.stopListening()  # a second client is refused
        else:
            local = host.host if host.host not in ("0.0.0.0", "::") else "local"  # type: ignore[attr-defined]
            self.info(f"connected to {peerText} from {local} port {host.port}")  # type: ignore[attr-defined]
        if self.stdio is None:
            from twisted.internet.stdio import StandardIO

            self.stdioProtocol = _Stdio(self)
            self.stdio = StandardIO(self.stdioProtocol, reactor=self.reactor)
            if self.options.noStdin:
                self.stdio.pauseProducing()
        stdioProtocol = self.stdioProtocol
        assert stdioProtocol is not None
        if self.early:
            net.write(b"".join(self.early))
            self.early.clear()
        if not stdioProtocol.outputClosed:
            self.stdio.registerProducer(net.transport, True)  # a slow stdout pauses the connection
        if self.options.noStdin or stdioProtocol.eof:
            net.transport.loseWriteConnection()  # type: ignore[attr-defined]
        else:
            net.transport.registerProducer(_StdinProducer(self.stdio), True)  # type: ignore[attr-defined]
            self.stdio.resumeProducing()
        if self.progress and self.progressCall is None:
            from twisted.internet.task import LoopingCall

            self.progressCall = LoopingCall(self.showProgress)
            self.progressCall.clock = self.reactor
            self.progressCall.start(0.5 if self.tty else 1.0, now=False)

    def netData(self, data: bytes) -> None:
        if self.stdio is not None:
            self.stdio.write(data)

    def netEnded(self, net: _Net) -> None:
        """The peer's end of stream: close standard output (unless -k keeps serving)."""
        if not self.options.keep and self.stdio is not None:
            self.stdio.unregisterProducer()
            self.stdio.loseWriteConnection()

    def netLost(self, net: _Net, reason: Failure) -> None:
        if self.net is net:
            self.net = None
        if self.stdio is not None:
            self.stdio.unregisterProducer()
        code, message = describeFailure(reason, self.target)
        if self.finishing:
            return
        if message:
            self.say(message)
        self.showStatistics(net)
        if self.options.keep and code in (EXIT_OK, EXIT_RESET, EXIT_TIMEOUT, EXIT_ERROR):
            if self.stdio is not None and not self.stdioProtocol.eof:  # type: ignore[union-attr]
                self.stdio.pauseProducing()  # until the next connection
            return
        # Linger (as TCP's TIME_WAIT) only if the peer's FIN came last: our ACK of it may be lost.
        self.finish(code, linger=code == EXIT_OK and net.closedWriteFirst)

    # -------------------------------------------------------------- standard I/O

    def stdinData(self, data: bytes) -> None:
        net = self.net
        if net is not None and net.transport is not None and not net.writeClosed:
            net.write(data)
        elif self.options.keep:
            self.early.append(data)
            self.stdio.pauseProducing()

    def stdinEnded(self) -> None:
        net = self.net
        if net is not None and net.transport is not None:
            net.transport.unregisterProducer()  # type: ignore[attr-defined]
            net.transport.loseWriteConnection()  # type: ignore[attr-defined]

    def stdoutClosed(self) -> None:
        """Standard output went away (a closed pipe, or our own close)."""
        net = self.net
        if net is not None and not net.readClosed and net.transport is not None:
            net.transport.loseConnection()  # nobody reads any more: discard what comes, end cleanly

    # -------------------------------------------------------------- progress and statistics

    def _line(self, net: _Net) -> str:
        elapsed = max(time.monotonic() - net.started, 1e-6)
        stats = net.stats()
        rtt = "-" if stats is None or stats.rtt is None else f"{stats.rtt * 1000:.1f} ms"
        return (
            f"sent {formatBytes(net.sent)}, received {formatBytes(net.received)} in {elapsed:.1f} s "
            f"({formatRate((net.sent + net.received) / elapsed)}), rtt {rtt}"
        )

    def showProgress(self) -> None:
        net = self.net or self.lastNet
        if net is None:
            return
        line = self._line(net)
        if self.tty:
            self.stderr.write("\r\x1b[K" + line)
            self.progressShown = True
        else:
            self.stderr.write(line + "\n")
        self.stderr.flush()

    def showStatistics(self, net: _Net) -> None:
        if not self.options.verbose:
            return
        self.say(self._line(net))
        stats = net.stats()
        if stats is not None:
            self.say(
                f"packets sent {stats.packets_sent}, received {stats.packets_received}, "
                f"retransmissions {stats.retransmissions} (fast {stats.fast_retransmits}, "
                f"timeouts {stats.timeouts}, tail-loss probes {stats.tail_loss_probes}, "
                f"spurious {stats.spurious_retransmissions}, undone {stats.undos}), "
                f"reordering window {stats.reordering_window * 1000:.1f} ms, "
                f"duplicates {stats.duplicate_packets}, mtu {stats.mtu}, cwnd {formatBytes(stats.cwnd)}"
            )

    # -------------------------------------------------------------- the end

    def interrupt(self, code: int) -> None:
        """SIGINT/SIGTERM: reset the connection and stop."""
        if self.finishing:
            return
        net = self.net
        if net is not None and net.transport is not None:
            net.transport.abortConnection()  # type: ignore[attr-defined]
        self.finish(code, linger=False)

    def finish(self, code: int, linger: bool = True) -> None:
        """Flush standard output, let the closed connection linger (capped), then stop the reactor."""
        if self.finishing:
            return
        self.finishing = True
        self.exitCode = code
        if self.waitCall is not None and self.waitCall.active():
            self.waitCall.cancel()
        if self.progressCall is not None and self.progressCall.running:
            self.progressCall.stop()
        if self.progressShown and self.tty:
            self.showProgress()  # the final figures
            self.stderr.write("\n")
            self.progressShown = False
        waits: list[Deferred[Any]] = []
        if self.stdio is not None and self.stdioProtocol is not None and not self.stdioProtocol.outputClosed:
            self.stdio.loseConnection()
            waits.append(self.stdioProtocol.whenOutputClosed)
        if self.port is not None:
            self.port.stopListening()
        if linger:
            from ._registry import activeMultiplexers

            waits.extend(mux.whenClosed() for mux in activeMultiplexers(self.reactor))
        if not waits:
            self.reactor.callLater(0, self._stop)
            return
        cap = self.reactor.callLater(LINGER_CAP, self._stop)

        def done(_: object) -> None:
            if cap.active():
                cap.cancel()
            self._stop()

        DeferredList(waits, consumeErrors=True).addCallback(done)

    def _stop(self) -> None:
        if self.reactor.running:
            self.reactor.stop()


def _blockingModes() -> dict[int, bool]:
    modes = {}
    for fd in (0, 1):
        with contextlib.suppress(OSError):
            modes[fd] = os.get_blocking(fd)
    return modes


def _restoreBlocking(modes: dict[int, bool]) -> None:
    """StandardIO makes stdin/stdout non-blocking; give them back as found (they may be a shared terminal)."""
    for fd, blocking in modes.items():
        with contextlib.suppress(OSError):
            os.set_blocking(fd, blocking)


def main(argv: Sequence[str] | None = None) -> int:
    """Run utpcat with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    try:
        options = parseArguments(argv)
    except UsageError as e:
        sys.stderr.write(f"utpcat: {e} (see utpcat --help)\n")
        return EXIT_USAGE
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    cat = Cat(reactor, options, sys.stderr)

    def installSignals() -> None:
        for signum, code in ((signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, 128 + signal.SIGTERM)):
            signal.signal(signum, lambda *_, code=code: reactor.callFromThread(cat.interrupt, code))
        cat.start()

    reactor.callWhenRunning(installSignals)
    modes = _blockingModes()
    try:
        reactor.run()
    finally:
        _restoreBlocking(modes)
    if cat.exitCode is None:
        return EXIT_INTERRUPTED
    return cat.exitCode


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
