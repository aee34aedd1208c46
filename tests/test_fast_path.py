"""The receiver's fast path (``UTPConnection.receive_in_order_data``) changes nothing but the cost.

A traced connection always takes the full path (``receive_packet``), so the same
seeded transfer run with and without a tracer that does nothing must put the same
datagrams on the wire, in the same order, and deliver the same bytes.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest

from txutp.engine import UTPConnection
from txutp.simulator import LinkConfig, Network, StreamApp


class NullTracer:
    def event(self, now: float, name: str, **fields: Any) -> None:
        pass

    def packet_sent(self, now: float, *args: Any, **kwargs: Any) -> None:
        pass

    def packet_received(self, now: float, *args: Any) -> None:
        pass

    def metrics(self, now: float, **values: Any) -> None:
        pass

    def close(self, now: float | None = None) -> None:
        pass


def _run(seed: int, link: LinkConfig, *, full_path: bool, taken: list[int]) -> tuple[str, bytes, int]:
    net = Network(seed=seed)
    client = net.add_host(("10.0.0.1", 6881))
    server = net.add_host(("10.0.0.2", 6881), accepting=True)
    net.link(client, server, link)
    if full_path:
        for host in (client, server):
            host.context.tracer_factory = lambda conn, now: NullTracer()
    wire = hashlib.sha256()

    def record(src: Any, dest: Any, data: bytes) -> bytes:
        wire.update(repr(src.address).encode() + data)
        return data

    net.intercept = record
    data = random.Random(seed).randbytes(1_500_000)
    received = StreamApp(b"", shutdown_when_sent=False, close_on_eof=True)
    server.on_accept = lambda conn: received
    conn: UTPConnection = client.connect(server.address)
    client.attach(conn, StreamApp(data))
    net.run(until=300)
    assert bytes(received.received) == data
    return wire.hexdigest(), bytes(received.received), conn.stats().retransmissions


@pytest.mark.parametrize(
    ("seed", "link"),
    [
        (1, LinkConfig(delay=0.01)),
        (2, LinkConfig(delay=0.02, loss=0.02, jitter=0.003)),
        (3, LinkConfig(delay=0.005, reorder=0.05, duplicate=0.01, bandwidth=3_000_000, buffer=150_000)),
    ],
)
def test_the_fast_path_puts_the_same_datagrams_on_the_wire(
    seed: int, link: LinkConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[int] = []
    fast_path = UTPConnection.receive_in_order_data

    def counting(self: UTPConnection, *args: Any) -> bool:
        took = fast_path(self, *args)
        taken.append(took)
        return took

    monkeypatch.setattr(UTPConnection, "receive_in_order_data", counting)
    fast = _run(seed, link, full_path=False, taken=taken)
    assert sum(taken) > 100  # it is taken (most of the time on a clean path)
    full = _run(seed, link, full_path=True, taken=taken)
    assert fast == full


def _one_at_a_time(self: UTPConnection, count: int, now: float) -> None:
    for _ in range(count):
        self._send_new(self._send.take(self.mss), False, now)


@pytest.mark.parametrize(
    ("seed", "link"),
    [
        (4, LinkConfig(delay=0.01)),
        (5, LinkConfig(delay=0.02, loss=0.02, jitter=0.003, bandwidth=2_000_000, buffer=100_000)),
    ],
)
def test_sending_full_packets_as_a_run_puts_the_same_datagrams_on_the_wire(
    seed: int, link: LinkConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[int] = []
    runs = _run(seed, link, full_path=False, taken=taken)
    monkeypatch.setattr(UTPConnection, "_send_run", _one_at_a_time)
    assert _run(seed, link, full_path=False, taken=taken) == runs


def test_a_gro_run_is_received_as_its_datagrams_one_by_one() -> None:
    # UTPContext.receive_run (UDP GRO) against receive_datagram for each datagram: same ACKs, same bytes.
    from txutp.engine import UTPConfig

    from .helpers import A, Pair

    results = []
    for as_run in (False, True):
        pair = Pair(UTPConfig(mtu_discovery=False))
        pair.client.send(b"w" * 300_000, pair.now)  # open the congestion window first
        for _ in range(40):
            pair.pump(pair.now + 0.01)
        assert pair.server.bytes_received == 300_000 and pair.client.stats().cwnd > 60_000
        pair.events.clear()
        pair.client.send(bytes(range(256)) * 200, pair.now)  # 51,200 bytes: 37 full packets and a short one
        datagrams = pair.out_a()
        extra = [b"not utp at all", datagrams[5]]  # a stranger's datagram and a duplicate, mid-run
        segment = len(datagrams[0])
        run = [*datagrams[:10], extra[1], *datagrams[10:-1]]
        if as_run:
            assert all(len(d) == segment for d in run)
            other = pair.b.receive_run(b"".join(run), segment, A, pair.now)
            other += [d for d in (extra[0], datagrams[-1]) if not pair.b.receive_datagram(d, A, pair.now)]
        else:
            other = [d for d in [*run, extra[0], datagrams[-1]] if not pair.b.receive_datagram(d, A, pair.now)]
        acks = pair.out_b()
        data = pair.received_by_b()
        results.append((other, acks, data, pair.server.stats(), pair.b.stats.datagrams_received))
    assert results[0] == results[1]
    assert results[1][0] == [b"not utp at all"]
    assert results[1][2] == bytes(range(256)) * 200
