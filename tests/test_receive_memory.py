"""Receive memory: what tiny packets make a receive buffer hold stays within 2 x its capacity.

Measured with :mod:`tracemalloc`: what the buffer (or a whole context) still
holds of what was allocated while the packets came, against a paused reader and a
full reorder map.
"""

from __future__ import annotations

import os
import tracemalloc

import pytest

from tests.helpers import ScriptedBits, drain, fields, header
from txutp.engine import DataReceived, UTPConfig, UTPContext
from txutp.engine._buffers import ACCEPTED, ReceiveBuffer

CAPACITY = 64 * 1024
ISN = 65000  # the stream crosses the 16-bit wrap
PEER = ("10.0.0.9", 4000)


def seq(i: int) -> int:
    return (ISN + i) & 0xFFFF


def start_tracing() -> int:
    tracemalloc.start()
    return tracemalloc.get_traced_memory()[0]


def held_since(start: int) -> int:
    """Bytes allocated since ``start`` and still alive; stops tracing."""
    held = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    return held


@pytest.mark.parametrize("size", [1, 2])
def test_a_paused_reader_holds_tiny_packets_within_twice_the_window(size: int) -> None:
    data = os.urandom(2 * CAPACITY)
    start = start_tracing()
    buf = ReceiveBuffer(CAPACITY, 1023)
    buf.ack_nr = ISN
    buf.pause()
    n = 0
    while buf.on_data(seq(n + 1), data[n * size : (n + 1) * size], False) == ACCEPTED:
        n += 1
    held = held_since(start)
    assert held <= 2 * CAPACITY, f"{held / CAPACITY:.2f} bytes held per byte of window"
    assert buf.window() == 0 and buf.held_bytes == n * size == CAPACITY
    assert buf.resume() is False
    assert buf.take_delivery() == data[:CAPACITY]


@pytest.mark.parametrize(
    ("size", "capacity", "max_reorder"),
    [(0, CAPACITY, 0x7FFF), (2, CAPACITY, 0x7FFF), (2, 16 * 1024, 1023)],
)
def test_tiny_out_of_order_packets_fill_the_reorder_map_within_twice_the_window(
    size: int, capacity: int, max_reorder: int
) -> None:
    data = os.urandom(2 * capacity)
    start = start_tracing()
    buf = ReceiveBuffer(capacity, max_reorder)
    buf.ack_nr = ISN
    n = 0  # packets 2 .. n + 1 arrive; packet 1 is missing
    while n < max_reorder - 1 and buf.on_data(seq(n + 2), data[n * size : (n + 1) * size], False) == ACCEPTED:
        n += 1
    held = held_since(start)
    assert held <= 2 * capacity, f"{held / capacity:.2f} bytes held per byte of window"
    assert len(buf.reorder) == n > 0 and buf.window() < 200
    assert buf.on_data(seq(1), b"<", False) == ACCEPTED  # fills the hole: everything drains in order
    assert buf.reorder == {} and buf.used == 1 + n * size
    assert buf.take_delivery() == b"<" + data[: n * size]


def test_a_paused_reader_with_holes_in_the_stream_stays_within_twice_the_window() -> None:
    data = os.urandom(2 * CAPACITY)

    def payload(i: int) -> bytes:  # packet i of the stream, 2 bytes each
        return data[2 * (i - 1) : 2 * i]

    start = start_tracing()
    buf = ReceiveBuffer(CAPACITY, 0x7FFF)
    buf.ack_nr = ISN
    buf.pause()
    for i in range(1, 3000, 2):  # the first 3,000 packets, a hole before each that comes later
        buf.on_data(seq(i + 1), payload(i + 1), False)
        buf.on_data(seq(i), payload(i), False)
    last = 3002  # then every other packet until they are refused
    while buf.on_data(seq(last), payload(last), False) == ACCEPTED:
        last += 2
    held = held_since(start)
    assert held <= 2 * CAPACITY, f"{held / CAPACITY:.2f} bytes held per byte of window"
    assert buf.window() == 0 and buf.held_bytes == 6000 and len(buf.reorder) > 600
    for i in range(3001, last, 2):  # the holes, still paused: each drains the packet after it
        assert buf.on_data(seq(i), payload(i), False) == ACCEPTED
    assert buf.reorder == {} and buf.held_bytes == 2 * (last - 1)
    buf.resume()
    assert buf.take_delivery() == data[: 2 * (last - 1)]


def test_a_paused_connection_fed_tiny_packets_holds_within_twice_its_window() -> None:
    ctx = UTPContext(
        UTPConfig(recv_buffer_size=CAPACITY, mtu_discovery=False), accepting=True, random_bits=ScriptedBits([7000])
    )
    assert ctx.receive_datagram(header(0x41, 100, 1, 0), PEER, 0.0)  # SYN: we receive on 101
    [(syn_ack, _)] = ctx.datagrams_to_send(0.0)
    acked = fields(syn_ack)[6] - 1  # what the peer acknowledges: the SYN-ACK's seq_nr less one
    data = os.urandom(2 * CAPACITY)

    def packet(i: int) -> bytes:  # DATA packet i of the stream, 2 bytes each
        return header(0x01, 101, 1 + i, acked) + data[2 * (i - 1) : 2 * i]

    assert ctx.receive_datagram(packet(1), PEER, 0.0)
    assert len(drain(ctx)) == 2  # Connected, then the first two bytes
    [conn] = ctx.connections.values()
    conn.pause_reading()
    ctx.datagrams_to_send(0.0)
    window = -1
    start = start_tracing()
    for i in range(2, CAPACITY // 2 + 100):  # past the window
        ctx.receive_datagram(packet(i), PEER, i / 1e4)
        if i % 64 == 0:
            for datagram, _ in ctx.datagrams_to_send(i / 1e4):
                window = fields(datagram)[5]
    held = held_since(start)
    assert held <= 2 * CAPACITY, f"{held / CAPACITY:.2f} bytes held per byte of window"
    assert window == 0 and drain(ctx) == []
    conn.resume_reading(1.0)
    received = b"".join(e.data for _, e in drain(ctx) if isinstance(e, DataReceived))
    assert received == data[2 : 2 + CAPACITY]
