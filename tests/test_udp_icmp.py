"""ICMP errors on a real UDP socket (Linux ``IP_RECVERR``): decoding, and every reactor reading them."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time

import pytest

from txutp import cli
from txutp._udp import SocketError, decodeSocketError, pathErrorOf
from txutp.engine import PathErrorKind

from .test_cli import ROOT, UTPCAT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR is Linux's")


def _extendedError(errno: int, origin: int, type_: int, code: int, info: int, offender: bytes) -> bytes:
    return struct.pack("=IBBBBII", errno, origin, type_, code, 0, info, 0) + offender


def _sockaddrIn(host: str) -> bytes:
    return struct.pack("=H", socket.AF_INET) + b"\0\0" + socket.inet_aton(host) + bytes(8)


def _sockaddrIn6(host: str) -> bytes:
    return struct.pack("=H", socket.AF_INET6) + bytes(6) + socket.inet_pton(socket.AF_INET6, host) + bytes(4)


def test_an_icmp_port_unreachable_decodes_with_its_offender() -> None:
    decoded = decodeSocketError(_extendedError(111, 2, 3, 3, 0, _sockaddrIn("192.0.2.7")))
    assert decoded is not None
    assert (decoded.errno, decoded.origin, decoded.type, decoded.code) == (111, 2, 3, 3)
    assert decoded.offender == ("192.0.2.7", 0)
    error = pathErrorOf(decoded)
    assert error is not None
    assert error.kind is PathErrorKind.REFUSED
    assert str(error) == "port unreachable (ICMP from 192.0.2.7)"


def test_fragmentation_needed_reports_the_largest_udp_payload() -> None:
    v4 = pathErrorOf(SocketError(90, 2, 3, 4, 1400, ("10.0.0.1", 0)))
    v6 = decodeSocketError(_extendedError(90, 3, 2, 0, 1280, _sockaddrIn6("2001:db8::1")))
    assert v4 is not None and v4.kind is PathErrorKind.TOO_BIG and v4.max_datagram == 1400 - 28
    assert v6 is not None and v6.offender == ("2001:db8::1", 0)
    too_big = pathErrorOf(v6)
    assert too_big is not None and too_big.kind is PathErrorKind.TOO_BIG and too_big.max_datagram == 1280 - 48


def test_errors_that_are_not_about_reachability_are_ignored() -> None:
    assert pathErrorOf(SocketError(90, 1, 0, 0, 1400, None)) is None  # local EMSGSIZE: the send reported it
    assert pathErrorOf(SocketError(71, 2, 12, 0, 0, None)) is None  # parameter problem
    unknown_code = pathErrorOf(SocketError(113, 2, 3, 15, 0, None))
    assert unknown_code is not None and unknown_code.kind is PathErrorKind.UNREACHABLE
    host = pathErrorOf(SocketError(113, 3, 1, 3, 0, ("fe80::1", 0)))
    assert host is not None and host.kind is PathErrorKind.UNREACHABLE and host.description == "address unreachable"
    assert decodeSocketError(b"\0" * 8) is None


# One process per reactor: connect to a closed port (refused at once), stay idle (no spinning on the
# error condition), then use the same port for a real exchange (the reactor did not drop it).
_SCRIPT = r"""
import json, resource, sys, time
reactorName = sys.argv[1]
if reactorName == "asyncio":
    import asyncio
    from twisted.internet import asyncioreactor
    asyncioreactor.install(asyncio.new_event_loop())
else:
    __import__(f"twisted.internet.{reactorName}reactor", fromlist=["install"]).install()
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import Factory, Protocol
from txutp import UTPMultiplexer, listenUTP

class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

class Collect(Protocol):
    def __init__(self):
        self.got = Deferred()
    def dataReceived(self, data):
        self.got.callback(data)

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

async def main():
    result = {}
    server = UTPMultiplexer(reactor)
    listenUTP(reactor, 0, server, "127.0.0.1")
    server.startListening(Factory.forProtocol(Echo))
    client = UTPMultiplexer(reactor)
    port = listenUTP(reactor, 0, client, "127.0.0.1")
    closed = __import__("socket").socket(__import__("socket").AF_INET, __import__("socket").SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    closedPort = closed.getsockname()[1]
    closed.close()
    started = time.monotonic()
    try:
        await client.connect(("127.0.0.1", closedPort), Factory.forProtocol(Protocol))
        result["refused"] = "connected?"
    except Exception as e:
        result["refused"] = type(e).__name__
        result["message"] = str(e)
    result["refusedAfter"] = time.monotonic() - started
    before = cpu()
    await task.deferLater(reactor, 0.5, lambda: None)
    result["idleCpu"] = cpu() - before
    result["reading"] = bool(port.connected) and port in reactor.getReaders()
    proto = await client.connect(("127.0.0.1", server.getHost().port), Factory.forProtocol(Collect))
    proto.transport.write(b"still here")
    result["echo"] = (await proto.got).decode()
    result["icmpErrors"] = client.stats.icmp_errors
    print(json.dumps(result))

def run():
    d = ensureDeferred(main())
    d.addErrback(lambda f: print(json.dumps({"error": f.getTraceback()})))
    d.addBoth(lambda _: reactor.stop())

reactor.callWhenRunning(run)
reactor.callLater(20, lambda: (print(json.dumps({"error": "stuck for 20 s"})), reactor.stop()))
reactor.run()
"""


@pytest.mark.parametrize("reactor", ["select", "poll", "epoll", "asyncio"])
def test_every_reactor_reads_icmp_errors_without_spinning_or_dropping_the_port(reactor: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, reactor], capture_output=True, text=True, timeout=40, cwd=ROOT, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout + done.stderr
    result = json.loads(lines[-1])
    assert "error" not in result, result["error"]
    assert result["refused"] == "UTPConnectionRefused", result
    assert "port unreachable (ICMP from 127.0.0.1)" in result["message"]
    assert result["refusedAfter"] < 1.0  # the SYN timeout is 3 s: only ICMP can say it this soon
    assert result["idleCpu"] < 0.25  # half a second idle; a reactor spinning on the error condition burns it all
    assert result["reading"] is True
    assert result["echo"] == "still here"
    assert result["icmpErrors"] >= 1


def test_utpcat_to_a_port_where_nothing_listens_exits_refused_at_once() -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    started = time.monotonic()
    done = subprocess.run(
        [*UTPCAT, "127.0.0.1", str(port)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == cli.EXIT_REFUSED, done.stderr
    assert f"connection to 127.0.0.1:{port} refused: port unreachable" in done.stderr
    assert elapsed < 2.5  # start-up included; the SYN alone would wait 3 s, then 21 s in all
