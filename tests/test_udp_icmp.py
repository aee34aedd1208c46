"""ICMP errors on a real UDP socket (Linux ``IP_RECVERR``): decoding, every reactor reading them (ICMP and
ICMPv6), a port that keeps serving while errors about other destinations arrive, and forged errors about a
live connection."""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import subprocess
import sys
import time
from typing import Any

import pytest
from twisted.internet import error, reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from txutp import UTPMultiplexer, cli, listenUTP
from txutp._udp import SocketError, decodeSocketError, pathErrorOf
from txutp.engine import PathError, PathErrorKind
from txutp.engine._packet import HEADER, ST_DATA
from txutp.transport import UTPConnectionRefused

from .test_cli import ROOT, UTPCAT
from .twisted_helpers import FAST, Collector, echoFactory, sleep

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


# One process per reactor, for each family (127.0.0.1, then ::1: ICMP and ICMPv6): connect to a closed
# port (refused at once), stay idle (no spinning on the error condition), then use the same port for a
# real exchange (the reactor did not drop it).
_SCRIPT = r"""
import json, resource, socket, sys, time
reactorName = sys.argv[1]
if reactorName == "asyncio":
    import asyncio
    from twisted.internet import asyncioreactor
    asyncioreactor.install(asyncio.new_event_loop())
else:
    __import__(f"twisted.internet.{reactorName}reactor", fromlist=["install"]).install()
from twisted.internet import error, reactor, task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import Factory, Protocol
from txutp import UTPMultiplexer, listenUTP

FAMILIES = {"127.0.0.1": socket.AF_INET, "::1": socket.AF_INET6}

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

def closedPort(host):
    closed = socket.socket(FAMILIES[host], socket.SOCK_DGRAM)
    closed.bind((host, 0))
    port = closed.getsockname()[1]
    closed.close()
    return port

async def refuse(host, result):
    server = UTPMultiplexer(reactor)
    listenUTP(reactor, 0, server, host)
    server.startListening(Factory.forProtocol(Echo))
    client = UTPMultiplexer(reactor)
    port = listenUTP(reactor, 0, client, host)
    result["family"] = "inet6" if port.socket.family == socket.AF_INET6 else "inet"
    result["recvErr"] = port.recvErr
    started = time.monotonic()
    try:
        await client.connect((host, closedPort(host)), Factory.forProtocol(Protocol), 2)
        result["refused"] = "connected?"
    except Exception as e:
        result["refused"] = type(e).__name__
        result["isConnectionRefusedError"] = isinstance(e, error.ConnectionRefusedError)
        result["pathError"] = str(getattr(e, "pathError", None))
        result["message"] = str(e)
    result["refusedAfter"] = time.monotonic() - started
    return server, client, port

async def exchange(server, client, port, host, result):
    result["reading"] = bool(port.connected) and port in reactor.getReaders()
    proto = await client.connect((host, server.getHost().port), Factory.forProtocol(Collect))
    proto.transport.write(b"still here")
    result["echo"] = (await proto.got).decode()
    result["icmpErrors"] = client.stats.icmp_errors

async def main():
    results = {host: {} for host in FAMILIES}
    ends = {host: await refuse(host, results[host]) for host in FAMILIES}
    # Both ports had an error queued and drained; one idle half second watches both.
    before = cpu()
    await task.deferLater(reactor, 0.5, lambda: None)
    idleCpu = cpu() - before
    for host in FAMILIES:
        results[host]["idleCpu"] = idleCpu
        await exchange(*ends[host], host, results[host])
    print(json.dumps(results))

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
    results = json.loads(lines[-1])
    assert "error" not in results, results["error"]
    assert list(results) == ["127.0.0.1", "::1"]
    for host, family in (("127.0.0.1", "inet"), ("::1", "inet6")):
        result = results[host]
        assert result["family"] == family and result["recvErr"] is True, result
        assert result["refused"] == "UTPConnectionRefused" and result["isConnectionRefusedError"] is True, result
        # ICMPv6's "port unreachable" (type 1 code 4) from ::1: the IPV6_RECVERR path, not ICMP's
        assert f"port unreachable (ICMP from {host})" in result["message"], result
        assert result["pathError"] == f"port unreachable (ICMP from {host})", result
        assert result["refusedAfter"] < 1.0, result  # the SYN timeout is 3 s: only ICMP can say it this soon
        assert result["idleCpu"] < 0.25, result  # half a second idle; a reactor spinning on the error burns it all
        assert result["reading"] is True, result
        assert result["echo"] == "still here", result
        assert result["icmpErrors"] >= 1, result


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


# ---------------------------------------------------------------------- real ports on the global reactor

LOCALHOST = "127.0.0.1"
#: A transfer of TRANSFER_ROUNDS + 1 chunks (9 MiB): each round writes a chunk, then REFUSALS_PER_ROUND connects
#: are refused one after the other; the last chunk is written after the last refusal.
TRANSFER_ROUNDS = 8
CHUNK = 1024 * 1024
REFUSALS_PER_ROUND = 2


def _closedPorts(count: int) -> list[int]:
    """``count`` distinct UDP ports of 127.0.0.1 where nothing listens (bound together, then closed)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((LOCALHOST, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _portUnreachable() -> PathError:
    """What the port makes of an ICMP "port unreachable" from 127.0.0.1 on its error queue."""
    decoded = decodeSocketError(_extendedError(errno.ECONNREFUSED, 2, 3, 3, 0, _sockaddrIn(LOCALHOST)))
    assert decoded is not None
    error = pathErrorOf(decoded)
    assert error is not None and error.kind is PathErrorKind.REFUSED
    return error


class _Accepting(Factory):
    """Builds a :class:`Collector` per accepted connection; ``first`` fires with the first one."""

    def __init__(self) -> None:
        self.protocols: list[Collector] = []
        self.first: Deferred[Collector] = Deferred()

    def buildProtocol(self, addr: Any) -> Collector:
        proto = Collector()
        proto.factory = self
        self.protocols.append(proto)
        if len(self.protocols) == 1:
            proto.made.addCallback(lambda _: self.first.callback(proto))
        return proto


class _RealPortTestCase(unittest.TestCase):
    def multiplexer(self) -> tuple[UTPMultiplexer, Any]:
        mux = UTPMultiplexer(reactor, FAST)
        port = listenUTP(reactor, 0, mux, LOCALHOST)
        self.addCleanup(mux.closeNow)
        self.assertTrue(port.recvErr)  # the port reads ICMP errors
        return mux, port

    async def connected(self) -> tuple[UTPMultiplexer, Any, Collector, UTPMultiplexer, Any, Collector]:
        """A server and a client multiplexer, both listening, and one connection between them."""
        server, serverPort = self.multiplexer()
        accepting = _Accepting()
        server.startListening(accepting)
        client, clientPort = self.multiplexer()
        client.startListening(echoFactory())
        clientProto = await client.connect((LOCALHOST, server.getHost().port), Factory.forProtocol(Collector), 5)
        clientProto.transport.write(b"go")
        serverProto = await accepting.first
        await self.until(lambda: bytes(serverProto.data) == b"go", "the first bytes")
        serverProto.data.clear()
        return server, serverPort, serverProto, client, clientPort, clientProto

    async def until(self, condition: Any, what: str, timeout: float = 20.0) -> None:
        deadline = reactor.seconds() + timeout
        while not condition():
            if reactor.seconds() > deadline:
                self.fail(f"no {what} after {timeout} s")
            await sleep(0.005)


class ErrorsForOtherDestinationsTests(_RealPortTestCase):
    """A port that carries a live transfer while its own connects to closed ports are refused (ICMP)."""

    async def test_an_error_about_one_destination_costs_no_datagram_to_another(self) -> None:
        mux, _ = self.multiplexer()
        closed = _closedPorts(6)
        for pair in (closed[0:2], closed[2:4], closed[4:6]):
            # Two connects in one flush: the first SYN's ICMP error (loopback answers within the sendto) is
            # pending when the second SYN goes out; the kernel fails that send once with it.
            attempts = [mux.connect((LOCALHOST, port), Factory.forProtocol(Collector), 0.5) for port in pair]
            outcomes = await DeferredList(attempts, consumeErrors=True)
            self.assertEqual(mux.stats.send_errors, 0, "a datagram was lost to an error about another destination")
            for ok, outcome in outcomes:
                self.assertFalse(ok)
                self.assertIsInstance(outcome.value, UTPConnectionRefused)  # not TimeoutError: its own ICMP came

    async def transferWhileRefused(self, refuserIsServer: bool) -> None:
        server, serverPort, serverProto, client, clientPort, clientProto = await self.connected()
        if refuserIsServer:  # the server sends a download and the errors come to its socket
            refuser, refuserPort, sender, receiver, other = server, serverPort, serverProto, clientProto, client
        else:  # the client (listening too) receives the download and the errors come to its socket
            refuser, refuserPort, sender, receiver, other = client, clientPort, serverProto, clientProto, server
        payload = os.urandom((TRANSFER_ROUNDS + 1) * CHUNK)
        closed = _closedPorts(TRANSFER_ROUNDS * REFUSALS_PER_ROUND)
        refusals: list[float] = []  # seconds to each refusal

        async def refused(port: int) -> None:
            started = reactor.seconds()
            with self.assertRaises(UTPConnectionRefused) as caught:
                await refuser.connect((LOCALHOST, port), Factory.forProtocol(Collector), 2)
            self.assertIsInstance(caught.exception, error.ConnectionRefusedError)
            self.assertEqual(str(caught.exception.pathError), "port unreachable (ICMP from 127.0.0.1)")
            self.assertIn("port unreachable (ICMP from 127.0.0.1)", str(caught.exception))
            refusals.append(reactor.seconds() - started)

        for i in range(TRANSFER_ROUNDS):
            sender.transport.write(payload[i * CHUNK : (i + 1) * CHUNK])
            ports = closed[i * REFUSALS_PER_ROUND : (i + 1) * REFUSALS_PER_ROUND]
            # One connect at a time: two SYNs in one flush would lose the second to the pending socket error of
            # the first's ICMP (BatchingUDPPort counts an ECONNREFUSED send as a lost datagram).
            for port in ports:
                await refused(port)
            # Let the chunk flow before the next round: the errors come all along the transfer.
            await self.until(lambda i=i: len(receiver.data) >= i * CHUNK + CHUNK // 2, f"progress in round {i}")
        sender.transport.write(payload[TRANSFER_ROUNDS * CHUNK :])  # so the transfer ran through every refusal
        await self.until(lambda: len(receiver.data) >= len(payload), "complete transfer")

        self.assertTrue(bytes(receiver.data) == payload, "the transfer arrived damaged")
        self.assertEqual(len(refusals), TRANSFER_ROUNDS * REFUSALS_PER_ROUND)
        self.assertLess(max(refusals), 1.0)  # the SYN timeout is 3 s: only ICMP can refuse this soon
        # Every refusal came from the refuser's error queue and counted for the refused connect only.
        self.assertGreaterEqual(refuser.stats.icmp_errors, len(refusals))
        self.assertEqual(refuser.context.stats.path_errors, len(refusals))
        self.assertEqual(other.stats.icmp_errors, 0)
        self.assertEqual(clientProto.transport.stats().path_errors, 0)
        self.assertEqual(serverProto.transport.stats().path_errors, 0)
        # The port is still read and the live connection is all that is left on it.
        self.assertTrue(refuserPort.connected)
        self.assertIn(refuserPort, reactor.getReaders())
        liveTransport = (serverProto if refuserIsServer else clientProto).transport
        self.assertEqual(refuser.connections(), [liveTransport])
        self.assertIsNone(clientProto.reason)
        self.assertIsNone(serverProto.reason)
        # And it still takes new connections: the server connects to the client's listening port (echo).
        echoed = await server.connect((LOCALHOST, client.getHost().port), Factory.forProtocol(Collector), 5)
        echoed.transport.write(b"after the errors")
        await self.until(lambda: bytes(echoed.data) == b"after the errors", "echo")

    async def test_a_listening_port_receiving_a_transfer_has_its_own_connects_refused(self) -> None:
        await self.transferWhileRefused(refuserIsServer=False)

    async def test_a_server_sending_a_transfer_has_its_own_connects_refused(self) -> None:
        await self.transferWhileRefused(refuserIsServer=True)


class ForgedErrorTests(_RealPortTestCase):
    """A "port unreachable" about an established connection, injected where the port hands over its error queue."""

    async def test_a_forged_port_unreachable_does_not_end_an_established_connection(self) -> None:
        server, serverPort, serverProto, client, clientPort, clientProto = await self.connected()
        transport = clientProto.transport
        serverAddress = (LOCALHOST, server.getHost().port)
        sent: list[tuple[bytes, Any]] = []
        realSendto, realSendmsg = clientPort.sendto, clientPort.sendmsg

        def recordingSendto(data: bytes, addr: Any) -> Any:
            sent.append((bytes(data), addr))
            return realSendto(data, addr)

        def recordingSendmsg(buffers: list[bytes], ancillary: list[Any], flags: int, addr: Any) -> Any:
            data = b"".join(buffers)
            [(_, _, segment)] = ancillary  # a run of datagrams of one size (UDP GSO)
            size = struct.unpack("=H", segment)[0]
            sent.extend((data[i : i + size], addr) for i in range(0, len(data), size))
            return realSendmsg(buffers, ancillary, flags, addr)

        clientPort.sendto, clientPort.sendmsg = recordingSendto, recordingSendmsg
        serverPort.stopReading()  # the server hears nothing for now: our DATA stays unacknowledged
        transport.write(b"still")
        await self.until(lambda: any(d[0] >> 4 == ST_DATA for d, _ in sent), "DATA sent")
        datagram, address = next((d, a) for d, a in sent if d[0] >> 4 == ST_DATA)
        self.assertEqual(address, serverAddress)
        _, _, connId, _, _, _, seqNr, _ = HEADER.unpack_from(datagram)

        def inject(quoted: bytes, to: Any) -> None:
            """What BatchingUDPPort.readErrorQueue does with an error, then doRead's end of the batch."""
            client.pathErrorReceived(quoted, to, _portUnreachable())
            client.readBatchDone()

        # (a) about the DATA the connection really sent and has outstanding: a soft error, counted.
        inject(datagram, address)
        self.assertEqual(transport.stats().path_errors, 1)
        self.assertEqual((client.context.stats.path_errors, client.context.stats.path_errors_unmatched), (1, 0))
        # (b) forgeries: another connection id, a sequence number never sent, another destination.
        forgedId = datagram[:2] + ((connId + 0x5555) & 0xFFFF).to_bytes(2, "big") + datagram[4:]
        forgedSeq = datagram[:16] + ((seqNr + 1000) & 0xFFFF).to_bytes(2, "big") + datagram[18:]
        for quoted, to in ((forgedId, address), (forgedSeq, address), (datagram, (LOCALHOST, address[1] + 1))):
            inject(quoted, to)
        self.assertEqual((client.context.stats.path_errors, client.context.stats.path_errors_unmatched), (1, 3))
        self.assertEqual(transport.stats().path_errors, 1)

        # The connection stays up through its retransmissions, and carries data both ways once heard.
        await sleep(0.3)  # past the 0.2 s RTO floor: the DATA went out again, unheard
        self.assertIsNone(clientProto.reason)
        self.assertTrue(transport.connected)
        self.assertEqual(client.connections(), [transport])
        serverPort.startReading()
        await self.until(lambda: bytes(serverProto.data) == b"still", "the DATA")
        serverProto.transport.write(b"up")
        transport.write(b" here")
        await self.until(lambda: bytes(serverProto.data) == b"still here", "more data")
        await self.until(lambda: bytes(clientProto.data) == b"up", "data back")
        self.assertIsNone(clientProto.reason)
        self.assertEqual(client.context.stats.path_errors, 1)
