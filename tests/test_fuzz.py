"""Fuzz: garbage and mutated datagrams into contexts with live connections."""

from __future__ import annotations

import contextlib
import hashlib
import random

from txutp.engine import ConnectionClosed, PacketError, UTPConfig, decode_packet
from txutp.simulator import Host, LinkConfig, Network, StreamApp

FUZZ_DATAGRAMS = 100_000


def _mutate(rng: random.Random, sample: bytes) -> bytes:
    buf = bytearray(sample)
    choice = rng.randrange(6)
    if choice == 0 and buf:  # flip bits
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif choice == 1:  # truncate
        del buf[rng.randrange(len(buf) + 1) :]
    elif choice == 2:  # insert bytes
        i = rng.randrange(len(buf) + 1)
        buf[i:i] = rng.randbytes(rng.randint(1, 40))
    elif choice == 3 and len(buf) > 1:  # an extension chain of random shape
        buf[1] = rng.randrange(256)
        buf[20:20] = rng.randbytes(rng.randint(0, 12))
    elif choice == 4 and buf:  # random packet type and connection id
        buf[0] = (rng.randrange(16) << 4) | 1
        if len(buf) >= 4:
            buf[2:4] = rng.randbytes(2)
    else:  # overwrite a header field with extreme values
        if len(buf) >= 20:
            off = rng.choice([4, 8, 12, 16, 18])
            width = 2 if off >= 16 else 4
            buf[off : off + width] = rng.choice([b"\xff", b"\x00", b"\x7f", b"\x80"]) * width
    return bytes(buf)


def _garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(3)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 1500))
    if kind == 1:  # looks like a header, wrong version
        return bytes([(rng.randrange(5) << 4) | rng.choice([0, 2, 3, 15])]) + rng.randbytes(rng.randrange(19, 200))
    return b"d1:ad2:id20:" + rng.randbytes(20) + b"e1:q4:ping1:t2:aa1:y1:qe"  # a DHT ping


def test_decode_raises_only_packet_error() -> None:
    rng = random.Random(5)
    samples = [bytes([0x01, 0]) + rng.randbytes(18) + rng.randbytes(100), bytes([0x21, 1]) + rng.randbytes(30)]
    for _ in range(20_000):
        data = _mutate(rng, rng.choice(samples)) if rng.random() < 0.7 else _garbage(rng)
        with contextlib.suppress(PacketError):
            decode_packet(data)


def test_fuzzed_contexts_keep_live_transfers_intact() -> None:
    """100 000 hostile datagrams at both hosts while two transfers run; nothing breaks."""
    config = UTPConfig(backlog=16)
    net = Network(seed=77)
    a = net.add_host(("10.0.0.1", 6881), config=config, accepting=True)
    b = net.add_host(("10.0.0.2", 6881), config=config, accepting=True)
    net.link(a, b, LinkConfig(delay=0.01, loss=0.02, bandwidth=1e6, buffer=100_000))
    rng = random.Random(77)
    up, down = rng.randbytes(3_000_000), rng.randbytes(3_000_000)

    served: list[StreamApp] = []
    b.on_accept = lambda conn: served.append(StreamApp(down)) or served[-1]
    a.on_accept = lambda conn: None
    client = a.attach(a.connect(b.address), StreamApp(up))
    assert isinstance(client, StreamApp)

    captured: list[bytes] = []

    def capture(src: Host, dest: object, data: bytes) -> bytes:
        if len(captured) < 2000 and rng.random() < 0.1:
            captured.append(data)
        return data

    net.intercept = capture
    net.run(until=0.5)
    assert captured

    strangers = [(f"203.0.113.{i}", 1000 + i) for i in range(1, 60)]
    injected_invalid = {a.address: 0, b.address: 0}
    for i in range(FUZZ_DATAGRAMS):
        target = a if i % 2 else b
        peer = b if target is a else a
        if rng.random() < 0.7:
            # Anything at all (SYNs, RESETs, data with live ids) from addresses that are not the peer.
            data = _mutate(rng, rng.choice(captured)) if rng.random() < 0.8 else _garbage(rng)
            source = rng.choice(strangers)
        else:
            # From the peer's own address, only datagrams that are not valid uTP: those must be dropped.
            data = _garbage(rng)
            try:
                decode_packet(data)
                continue
            except PacketError:
                injected_invalid[target.address] += 1
            source = peer.address
        net.inject(data, source, target, delay=rng.random() * 2.5)  # while the transfers run

    net.run(until=600, stop=lambda: client.done and bool(served) and served[0].done)
    assert net.now > 3.0, "the transfers ended before the fuzzing did"
    net.run(until=net.now + 30)  # whatever fuzz is still in flight

    assert served and isinstance(client.terminated, ConnectionClosed)
    assert isinstance(served[0].terminated, ConnectionClosed)
    assert hashlib.sha256(served[0].received).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(client.received).digest() == hashlib.sha256(down).digest()
    for host in (a, b):
        stats = host.context.stats
        assert stats.datagrams_received > FUZZ_DATAGRAMS * 0.45
        assert stats.not_utp >= injected_invalid[host.address]
        assert len(host.other_datagrams) == stats.not_utp  # handed back untouched, and counted
        assert host.context.half_open <= config.backlog
        assert stats.unknown_connection > 0 and stats.resets_sent > 0
        assert stats.resets_sent <= config.reset_rate * (net.now + 1)
