"""Hostile peers: what a peer can make a context hold or spend is bounded."""

from __future__ import annotations

import gc

import pytest

from tests.helpers import DATA, RESET, STATE, SYN, ScriptedBits, packet
from txutp.engine import (
    ConnectionReset,
    ConnectionTimedOut,
    PacketError,
    UTPConfig,
    UTPConnection,
    UTPContext,
    decode_packet,
)
from txutp.engine import _context as context_module
from txutp.engine._context import MAX_UTP_DATAGRAM
from txutp.engine._packet import MAX_EXTENSIONS
from txutp.simulator import Host, LinkConfig, Network, StreamApp

PEER = ("10.0.0.9", 4000)


def extension_chain(size: int) -> bytes:
    """A DATA packet whose extensions are empty links chained to the end of a ``size``-byte datagram."""
    links = (size - 20) // 2
    return packet(DATA, 7, 1, 0, ext=9) + bytes([9, 0]) * (links - 1) + bytes([0, 0])


# --------------------------------------------------------------------------- the decoder


def test_a_long_extension_chain_stops_at_the_bound() -> None:
    with pytest.raises(PacketError, match="extensions"):
        decode_packet(extension_chain(1472))
    # Real peers' chains still decode: SACK, extension bits, close reason.
    ok = packet(STATE, 7, 1, 0, ext=1) + bytes([2, 4]) + bytes(4) + bytes([3, 8]) + bytes(8) + bytes([0, 4]) + bytes(4)
    assert len(decode_packet(ok).extensions) == 2
    deep = packet(STATE, 7, 1, 0, ext=9) + bytes([9, 0]) * (MAX_EXTENSIONS - 1) + bytes([0, 0])
    assert len(decode_packet(deep).extensions) == MAX_EXTENSIONS


def test_an_oversized_datagram_is_dropped_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = UTPContext(accepting=True)
    decoded: list[bytes] = []

    def spy(data: bytes) -> object:
        decoded.append(data)
        return decode_packet(data)

    monkeypatch.setattr(context_module, "decode_packet", spy)
    assert ctx.receive_datagram(extension_chain(65_507), PEER, 0.0)  # uTP-looking: ours to drop
    assert decoded == [] and ctx.stats.oversized == 1
    assert not ctx.receive_datagram(extension_chain(MAX_UTP_DATAGRAM), PEER, 0.0)  # decoded, refused
    assert len(decoded) == 1 and ctx.stats.not_utp == 1
    assert ctx.datagrams_to_send(0.0) == []  # neither is answered


# --------------------------------------------------------------------------- timers


def _syn(conn_id: int) -> bytes:
    return packet(SYN, conn_id, 1, 0)


@pytest.mark.parametrize("cookies", ["never", "auto"])
def test_a_syn_flood_leaves_no_evicted_connection_referenced(cookies: str) -> None:
    """Evicted (cookies off) or never created (cookies on): either way the flood holds nothing."""
    config = UTPConfig(backlog=128, syn_cookies=cookies)
    ctx = UTPContext(config, accepting=True, random_bits=ScriptedBits(strict=False, seed=1))
    live = ctx.connect(("10.0.0.1", 6881), 0.0)  # a live connection with an early deadline
    ctx.datagrams_to_send(0.0)
    now = 0.0
    for i in range(20_000):  # 2,000 SYN/s for 10 s from many hosts
        now = i / 2000
        ctx.receive_datagram(_syn(i), (f"10.0.{i % 250}.{i % 251 + 1}", 1024 + i % 60_000), now)
        if i % 100 == 0:
            ctx.datagrams_to_send(now)
            ctx.handle_timer(now)
    ctx.datagrams_to_send(now)
    assert ctx.half_open <= config.backlog
    if cookies == "never":
        assert ctx.stats.half_open_evicted >= 20_000 - config.backlog
    else:  # the backlog fills, then SYN-ACKs are stateless
        assert ctx.half_open == config.backlog
        assert ctx.stats.syn_cookies_sent == 20_000 - config.backlog
    # Superseded heap entries are dropped, so evicted connections are not kept alive by them.
    assert len(ctx._timers) <= 2 * len(ctx._registered) + 64
    gc.collect()
    alive = sum(1 for o in gc.get_objects() if isinstance(o, UTPConnection))
    # Bounded by the live ones (stale entries at most twice those, plus slack), not by the flood.
    assert alive <= 3 * (config.backlog + 2) + 64
    assert live in ctx.connections.values()


# --------------------------------------------------------------------------- idle connections


def _idle_pair(seed: int) -> tuple[Network, Host, StreamApp, StreamApp]:
    net = Network(seed=seed)
    a = net.add_host(("10.0.0.1", 6881))
    b = net.add_host(("10.0.0.2", 6881), accepting=True)
    net.link(a, b, LinkConfig(delay=0.02), LinkConfig(delay=0.02))
    served: list[StreamApp] = []
    b.on_accept = lambda conn: served.append(StreamApp(b"", shutdown_when_sent=False)) or served[-1]
    client = StreamApp(b"hello", shutdown_when_sent=False)
    a.attach(a.connect(b.address), client)
    net.run(until=1.0)
    assert served and bytes(served[0].received) == b"hello"
    return net, a, client, served[0]


def test_a_peer_that_vanishes_while_idle_is_reclaimed_within_the_bound() -> None:
    net, a, client, _ = _idle_pair(1)
    vanished_at = net.now
    net.intercept = lambda src, dest, data: None if src is not a else data  # the server's host is gone
    bound = UTPConfig().idle_timeout
    assert bound is not None
    net.run(until=vanished_at + bound + 1, stop=lambda: client.done)
    assert isinstance(client.terminated, ConnectionTimedOut)
    assert net.now - vanished_at <= bound + 0.1
    assert a.context.connections == {}


def test_idle_peers_that_keep_alive_stay_connected() -> None:
    net, a, client, server = _idle_pair(2)
    net.run(until=1800.0)  # half an hour of silence but for keep-alives
    assert client.terminated is None and server.terminated is None
    assert len(a.context.connections) == 1


# --------------------------------------------------------------------------- RESET acceptance


def _bulk_pair(seed: int) -> tuple[Network, Host, Host, StreamApp, UTPConnection]:
    net = Network(seed=seed)
    a = net.add_host(("10.0.0.1", 6881))
    b = net.add_host(("10.0.0.2", 6881), accepting=True)
    net.link(a, b, LinkConfig(delay=0.02, bandwidth=2e6), LinkConfig(delay=0.02))
    served: list[StreamApp] = []
    b.on_accept = lambda conn: served.append(StreamApp(b"", shutdown_when_sent=False)) or served[-1]
    sender = StreamApp(bytes(range(256)) * 8000)
    conn = a.connect(b.address)
    a.attach(conn, sender)
    net.run(until=0.4)
    assert conn.bytes_in_flight > 100 * 1382  # a large window in flight
    return net, a, b, sender, conn


def test_blind_resets_within_the_window_only_draw_challenges() -> None:
    net, a, b, sender, conn = _bulk_pair(11)
    # Every in-flight value but the newest two, from the right address, on both ids: 2,000 guesses.
    rec = conn._recovery
    guesses = [(rec.snd_una + k) & 0xFFFF for k in range(((rec.next_seq - rec.snd_una) & 0xFFFF) - 1)]
    expected = conn._recv.ack_nr + 1  # the seq_nr an aborting txutp peer would send
    for i, ack in enumerate(guesses[:1000]):
        for cid in (conn.recv_id, conn.send_id):
            net.inject(packet(RESET, cid, (expected + 1 + i) & 0xFFFF, ack), b.address, a, delay=i * 0.0005)
    net.run(until=net.now + 0.6)
    assert sender.terminated is None  # none of them ended the connection
    challenged = conn.stats().resets_challenged
    assert 1 <= challenged <= 0.6 / 0.05 + 1  # at most one challenge ACK per RTT (50 ms floor)
    [served] = b.apps.values()
    assert isinstance(served, StreamApp)
    net.run(until=net.now + 60, stop=lambda: served.eof)
    assert bytes(served.received) == sender.data and sender.terminated is None


def test_a_peer_that_forgot_us_still_resets_us_within_a_few_round_trips() -> None:
    net, a, b, sender, _ = _bulk_pair(12)
    forgot_at = net.now

    def forgotten(src: Host, dest: object, data: bytes) -> bytes | None:
        if src is b:
            return None  # b lost all state: it sends nothing of the old connection ...
        if data[0] >> 4 != 3:  # ... and answers each packet as libutp does: RESET, ack_nr = its seq_nr
            f = packet(RESET, decode_packet(data).connection_id, 999, decode_packet(data).seq_nr)
            net.inject(f, b.address, a, delay=0.04)
        return None

    net.intercept = forgotten
    net.run(until=forgot_at + 5, stop=lambda: sender.done)
    assert isinstance(sender.terminated, ConnectionReset)
    assert net.now - forgot_at < 0.5
