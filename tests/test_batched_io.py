"""The multiplexer's batched I/O: UDP GSO runs on send, GRO-coalesced reads split on receive."""

from __future__ import annotations

import errno
import socket
import struct
import sys

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial import unittest

from tests.twisted_helpers import closeAllSockets, sleep
from txutp import acquireMultiplexer
from txutp._udp import _SOL_UDP, _UDP_SEGMENT
from txutp.engine import DontFragment

LINUX = sys.platform.startswith("linux")


class Recorder(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: object) -> None:
        self.received.append(datagram)


def _raw_receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


def _drain(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(65535) for _ in range(count)]


class BatchedIOTests(unittest.TestCase):
    def setUp(self) -> None:
        self.recorder = Recorder()
        self.mux = acquireMultiplexer(reactor, "127.0.0.1", 0, datagramProtocol=self.recorder)
        self.mux.hold()

    async def tearDown(self) -> None:
        self.mux.release()
        await closeAllSockets()

    def test_a_run_of_equal_datagrams_leaves_in_one_sendmsg(self) -> None:
        if not LINUX:
            raise unittest.FailTest("GSO is a Linux feature; this suite runs on Linux")
        sink = _raw_receiver()
        self.addCleanup(sink.close)
        dest = sink.getsockname()
        # One connection's datagrams (bytes 2-3, the uTP connection id, alike): one run.
        out = [(b"\x01\x00\x12\x34" + bytes([i]) * 1396, dest) for i in range(10)] + [(b"\x01\x00\x12\x34tail", dest)]
        self.mux.carrier.writeBatch(out)
        self.assertEqual(_drain(sink, 11), [d for d, _ in out])
        self.assertEqual(self.mux.stats.gso_sends, 1)
        self.assertEqual(self.mux.stats.datagrams_sent, 11)

    def test_runs_break_at_another_address_a_bigger_datagram_and_a_probe(self) -> None:
        a, b = _raw_receiver(), _raw_receiver()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        pa, pb = a.getsockname(), b.getsockname()
        out = [
            (b"1" * 1000, pa),
            (b"2" * 1000, pa),
            (b"3" * 1000, pb),  # another address
            (b"4" * 1000, pb),
            (b"5" * 1200, pb),  # bigger than the run's segments
            (DontFragment(b"6" * 1200), pb),  # a probe always goes alone
            (b"7" * 1200, pb),
        ]
        self.mux.carrier.writeBatch(out)
        self.assertEqual(_drain(a, 2), [b"1" * 1000, b"2" * 1000])
        self.assertEqual(_drain(b, 5), [b"3" * 1000, b"4" * 1000, b"5" * 1200, b"6" * 1200, b"7" * 1200])
        self.assertEqual(self.mux.stats.datagrams_sent, 7)

    def test_a_run_holds_one_connection(self) -> None:
        # A reuseport group steers a GSO send as a whole by its first datagram (txutp.reuseport):
        # datagrams of two connections to one address leave in two runs.
        sink = _raw_receiver()
        self.addCleanup(sink.close)
        dest = sink.getsockname()
        out = [(b"\x01\x00\x00\x08" + b"a" * 996, dest)] * 3 + [(b"\x01\x00\x00\x0c" + b"b" * 996, dest)] * 3
        self.mux.carrier.writeBatch(out)
        self.assertEqual(_drain(sink, 6), [d for d, _ in out])
        self.assertEqual(self.mux.stats.gso_sends, 2)

    def test_without_segmentation_offload_it_falls_back_to_single_sends(self) -> None:
        sink = _raw_receiver()
        self.addCleanup(sink.close)
        dest = sink.getsockname()

        def refuse(*args: object) -> None:
            raise OSError(errno.EIO, "Input/output error")

        self.mux.carrier.sendmsg = refuse
        out = [(b"\x01\x00\x12\x34" + bytes([i]) * 496, dest) for i in range(5)]
        self.mux.carrier.writeBatch(out)
        self.assertEqual(_drain(sink, 5), [d for d, _ in out])
        self.assertFalse(self.mux.carrier.gso)

    def test_a_full_socket_buffer_loses_the_run(self) -> None:
        sink = _raw_receiver()
        self.addCleanup(sink.close)

        def full(*args: object) -> None:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

        self.mux.carrier.sendmsg = full
        self.mux.carrier.writeBatch([(b"x" * 500, sink.getsockname())] * 4)
        self.assertEqual(self.mux.stats.send_errors, 4)
        self.assertTrue(self.mux.carrier.gso)  # congestion, not a missing feature

    async def test_coalesced_reads_are_split_into_datagrams(self) -> None:
        if not LINUX:
            raise unittest.FailTest("GRO is a Linux feature; this suite runs on Linux")
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        dest = ("127.0.0.1", self.mux.getHost().port)
        # Not uTP (first byte 'd'): the user datagram protocol gets each segment on its own.
        segments = [b"d" + bytes([i]) * 299 for i in range(8)] + [b"d-last"]
        sender.sendmsg([b"".join(segments)], [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", 300))], 0, dest)
        for _ in range(100):
            if len(self.recorder.received) >= len(segments):
                break
            await sleep(0.01)
        self.assertEqual(self.recorder.received, segments)
        self.assertTrue(self.mux.port.gro)
        self.assertEqual(self.mux.stats.gro_reads, 1)
        self.assertEqual(self.mux.stats.datagrams_received, len(segments))
