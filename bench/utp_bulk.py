"""A bulk-transfer peer over txutp's Twisted endpoints, for the benchmarks.

    python -m bench.utp_bulk listen PORT (sink | source N) [--interface ADDR] [--verify]
    python -m bench.utp_bulk connect HOST PORT (sink | source N) [--verify]

``source N`` writes N bytes of the interop stream (``tests/peers/stream.py``, the
same bytes the utp-native and libtorrent peers use) through a streaming producer
and half-closes; ``sink`` reads until the peer's EOF. A connecting sink first sends
one byte, ``G``, because a libutp acceptor cannot send before its client does.
Listeners print ``READY <port>``; every run ends with one JSON line on stdout:
bytes, seconds and MB/s, plus the connection's statistics. ``--verify`` checks the
received bytes against the interop stream (it costs CPU, so benchmarks leave it off).

What ``seconds`` times (``bench.suite`` computes goodput from a sink's): for a sink,
from the connection made to the last byte delivered to the application
(``dataReceived``): not to the EOF, nor to the close. For a source, from the
connection made to the peer's EOF, which a sink sends only once it has read every
byte: never the close handshake. ``eof_seconds`` (to the peer's EOF) and
``close_seconds`` (to ``connectionLost``) are reported beside it, so a close stall
shows as their difference instead of hiding in the goodput. ``cpu_seconds`` is the
process's CPU (``getrusage``) over the same interval as ``seconds``: the transfer's
cost, with no start-up or teardown in it.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.peers import stream

reactor: Any = _reactor


def _cpu() -> float:
    """This process's CPU seconds so far, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


CHUNK = 256 * 1024


@implementer(IPushProducer)
class _Source:
    def __init__(self, proto: BulkProtocol, total: int) -> None:
        self.proto = proto
        self.remaining = total
        self.offset = 0
        self.paused = False
        block = stream.block()
        self.size = len(block)
        self.block = block * (2 + CHUNK // len(block))

    def resumeProducing(self) -> None:
        self.paused = False
        transport = self.proto.transport
        assert transport is not None
        block, size = self.block, self.size
        while not self.paused and self.remaining > 0:
            n = min(CHUNK, self.remaining)
            start = self.offset % size
            transport.write(block[start : start + n])
            self.offset += n
            self.remaining -= n
        if self.remaining == 0 and not self.paused:
            transport.unregisterProducer()
            transport.loseWriteConnection()  # type: ignore[attr-defined]
            self.remaining = -1

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True
        self.remaining = 0


@implementer(IHalfCloseableProtocol)
class BulkProtocol(Protocol):
    def __init__(self, result: dict[str, Any], mode: str, total: int, connecting: bool, verify: bool) -> None:
        self.result = result
        self.mode = mode
        self.total = total
        self.connecting = connecting
        self.verify = verify
        self.received = 0
        self.chunks: list[bytes] = []
        self.started = 0.0
        self.lastByte = 0.0
        self.cpuStarted = 0.0
        self.cpuAtEnd: float | None = None  # at the last byte (a sink) or the peer's EOF (a source)

    def connectionMade(self) -> None:
        self.started = time.perf_counter()
        self.cpuStarted = _cpu()
        transport: Any = self.transport
        if self.result.get("report"):
            self._report()
        if self.mode == "source":
            source = _Source(self, self.total)
            transport.registerProducer(source, True)
            source.resumeProducing()
        elif self.connecting:
            transport.write(b"G")
            transport.loseWriteConnection()

    def _report(self) -> None:
        stats = getattr(self.transport, "stats", None)
        if stats is not None and self.transport is not None:
            s = stats()
            print(
                f"t={time.perf_counter() - self.started:.1f} cwnd={s.cwnd} delay_us={s.current_delay_us} "
                f"rtt={s.rtt} rtx={s.retransmissions} timeouts={s.timeouts} {s.congestion}",
                file=sys.stderr,
                flush=True,
            )
            reactor.callLater(1.0, self._report)

    def dataReceived(self, data: bytes) -> None:
        self.lastByte = time.perf_counter()
        if self.mode == "sink":
            self.cpuAtEnd = _cpu()
        self.received += len(data)
        if self.verify:
            self.chunks.append(data)

    def readConnectionLost(self) -> None:
        self.result["eof_seconds"] = time.perf_counter() - self.started
        if self.mode == "source":
            self.cpuAtEnd = _cpu()
        if self.mode == "sink":
            self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        end = time.perf_counter()
        result = self.result
        closeSeconds = end - self.started
        if self.mode == "sink" and self.received:
            seconds = self.lastByte - self.started  # the last byte at the application
        else:
            seconds = result.get("eof_seconds", closeSeconds)  # a source: the peer read everything
        result.update(
            bytes=self.received,
            seconds=seconds,
            close_seconds=closeSeconds,
            mb_per_s=(self.received if self.mode == "sink" else self.total) / seconds / 1e6,
            reason=reason.getErrorMessage() if not reason.check(Exception) else "",
            clean=type(reason.value).__name__ == "ConnectionDone",
        )
        if self.cpuAtEnd is not None:
            result["cpu_seconds"] = self.cpuAtEnd - self.cpuStarted  # over the interval ``seconds`` times
        stats = getattr(self.transport, "stats", None)
        if stats is not None:
            s = stats()
            result["stats"] = {
                "retransmissions": s.retransmissions,
                "fast_retransmits": s.fast_retransmits,
                "timeouts": s.timeouts,
                "tail_loss_probes": s.tail_loss_probes,
                "spurious_retransmissions": s.spurious_retransmissions,
                "undos": s.undos,
                "reordering_window": s.reordering_window,
                "congestion": s.congestion.as_dict(),
                "packets_sent": s.packets_sent,
                "packets_received": s.packets_received,
                "mtu": s.mtu,
                "rtt": s.rtt,
            }
        if self.verify and self.mode == "sink":
            data = b"".join(self.chunks)
            result["stream_match"] = data == stream.stream_bytes(0, len(data))
        reactor.callLater(0.2, reactor.stop)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("role", choices=["listen", "connect"])
    p.add_argument("args", nargs="+")
    p.add_argument("--interface", default="127.0.0.1")
    p.add_argument("--verify", action="store_true")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument(
        "--startup-only",
        action="store_true",
        help="exit once the endpoint is built (imports, Twisted's plugin scan): the start-up cost to subtract",
    )
    p.add_argument("--report", action="store_true", help="print the connection's statistics every second on stderr")
    ns = p.parse_args(argv)
    args = list(ns.args)
    if ns.role == "listen":
        port, mode, rest = int(args[0]), args[1], args[2:]
    else:
        host, port, mode, rest = args[0], int(args[1]), args[2], args[3:]
    total = int(rest[0]) if mode == "source" else 0
    result: dict[str, Any] = {"role": ns.role, "mode": mode}
    if ns.report:
        result["report"] = True

    def factory() -> Factory:
        return Factory.forProtocol(lambda: BulkProtocol(result, mode, total, ns.role == "connect", ns.verify))

    if ns.role == "listen":
        interface = ns.interface.replace(":", "\\:")
        endpoint = serverFromString(reactor, f"utp:{port}:interface={interface}")
        if ns.startup_only:
            return 0
        d = endpoint.listen(factory())
        d.addCallback(lambda lp: print(f"READY {lp.getHost().port}", flush=True))
    else:
        endpoint = clientFromString(reactor, f"utp:host={host.replace(':', chr(92) + ':')}:port={port}:timeout=10")
        if ns.startup_only:
            return 0
        d = endpoint.connect(factory())

    def failed(f: Failure) -> None:
        result["error"] = f.getErrorMessage()
        reactor.stop()

    d.addErrback(failed)
    reactor.callLater(ns.timeout, lambda: (result.setdefault("error", "timeout"), reactor.stop()))
    reactor.run()
    print(json.dumps(result), flush=True)
    return 0 if "error" not in result else 3


if __name__ == "__main__":
    sys.exit(main())
