"""SYN cookies and per-host limits: a SYN flood keeps nobody out and holds nothing.

The handshake packets are built by hand for the confirming forms of each peer
(txutp's ACK, a libutp or libtorrent first DATA, libutp's keep-alive); the flood
tests run in the simulator with spoofed sources.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from tests.helpers import DATA, RESET, STATE, SYN, ScriptedBits, fields, packet
from txutp.engine import Connected, ConnectionLimitError, DataReceived, UTPConfig, UTPContext
from txutp.engine._cookies import COOKIE_SLOT, LOOK_AHEAD
from txutp.simulator import LinkConfig, Network, StreamApp

PEER = ("10.0.0.9", 4000)
ALWAYS = UTPConfig(syn_cookies="always")


def _cookie_syn(ctx: UTPContext, cid: int, syn_seq: int, now: float, addr: object = PEER) -> int:
    """Send a SYN; return the ISN of the stateless SYN-ACK (and check nothing was kept)."""
    before = len(ctx.connections)
    ctx.receive_datagram(packet(SYN, cid, syn_seq, 0), addr, now)
    [(reply, to)] = ctx.datagrams_to_send(now)
    type_version, _, conn_id, _, _, wnd, isn, ack = fields(reply)
    assert (type_version, conn_id, ack, to) == (STATE, cid, syn_seq, addr)
    assert wnd == ctx.config.recv_buffer_size
    assert len(ctx.connections) == before and ctx.half_open == 0
    return isn


def _events(ctx: UTPContext) -> list[object]:
    out = []
    while (item := ctx.next_event()) is not None:
        out.append(item[1])
    return out


def test_a_libutp_first_data_confirms_a_cookie() -> None:
    ctx = UTPContext(ALWAYS, accepting=True, random_bits=ScriptedBits(strict=False, seed=1))
    isn = _cookie_syn(ctx, 500, 7000, 0.0)
    ctx.receive_datagram(packet(DATA, 501, 7001, (isn - 1) & 0xFFFF, b"hello"), PEER, 0.2)
    conn = ctx.connections[(PEER, 501)]
    assert (conn.send_id, ctx.stats.syn_cookies_accepted) == (500, 1)
    assert _events(ctx) == [Connected(), DataReceived(b"hello")]
    [(ack, _)] = ctx.datagrams_to_send(0.2)
    assert fields(ack)[0] == STATE and fields(ack)[6:] == (isn, 7001)


def test_a_libutp_keepalive_confirms_a_cookie_within_its_lifetime() -> None:
    ctx = UTPContext(ALWAYS, accepting=True, random_bits=ScriptedBits(strict=False, seed=2))
    isn = _cookie_syn(ctx, 500, 7000, 40.0)
    # libutp says nothing until it has data or, 29 s later, a keep-alive with ack_nr - 1.
    ctx.receive_datagram(packet(STATE, 501, 7001, (isn - 2) & 0xFFFF), PEER, 69.0)
    assert (PEER, 501) in ctx.connections
    assert _events(ctx) == [Connected()]


def test_a_txutp_client_connects_and_transfers_through_cookies() -> None:
    net = Network(seed=3)
    a = net.add_host(("10.0.0.1", 6881))
    b = net.add_host(("10.0.0.2", 6881), config=ALWAYS, accepting=True)
    net.link(a, b, LinkConfig(delay=0.03, loss=0.02), LinkConfig(delay=0.03, loss=0.02))
    data = bytes(range(256)) * 800
    served: list[StreamApp] = []
    b.on_accept = lambda conn: served.append(StreamApp(data[::-1])) or served[-1]
    client = a.attach(a.connect(b.address), StreamApp(data))
    assert isinstance(client, StreamApp)
    net.run(until=120, stop=lambda: bool(served) and client.eof and served[0].eof)
    assert bytes(served[0].received) == data and bytes(client.received) == data[::-1]
    stats = b.context.stats
    assert stats.syn_cookies_accepted == 1 and stats.syns_accepted == 1 and b.context.half_open == 0


def test_a_wrong_or_stale_cookie_is_answered_with_reset() -> None:
    ctx = UTPContext(ALWAYS, accepting=True, random_bits=ScriptedBits(strict=False, seed=4))
    isn = _cookie_syn(ctx, 500, 7000, 0.0)
    ctx.receive_datagram(packet(DATA, 501, 7001, isn, b"x"), PEER, 0.1)  # ack_nr off by one
    ctx.receive_datagram(packet(DATA, 501, 7001, (isn - 1) & 0xFFFF, b"x"), ("10.0.0.8", 4000), 0.1)  # elsewhere
    assert ctx.connections == {}
    assert [fields(d)[0] for d, _ in ctx.datagrams_to_send(0.1)] == [RESET, RESET]
    # A cookie lives for its own slot and the next, then no longer.
    ctx.receive_datagram(packet(STATE, 501, 7001, (isn - 1) & 0xFFFF), PEER, 2 * COOKIE_SLOT + 0.1)
    assert ctx.connections == {}
    assert [fields(d)[0] for d, _ in ctx.datagrams_to_send(2 * COOKIE_SLOT + 0.1)] == [RESET]


def test_a_later_data_packet_that_overtook_the_first_gets_no_reset() -> None:
    ctx = UTPContext(ALWAYS, accepting=True, random_bits=ScriptedBits(strict=False, seed=5))
    isn = _cookie_syn(ctx, 500, 7000, 0.0)
    ack = (isn - 1) & 0xFFFF
    for ahead in range(1, LOOK_AHEAD + 1):
        ctx.receive_datagram(packet(DATA, 501, 7001 + ahead, ack, b"later"), PEER, 0.1)
    assert ctx.connections == {} and ctx.datagrams_to_send(0.1) == []  # a RESET would kill the peer
    ctx.receive_datagram(packet(DATA, 501, 7001, ack, b"first"), PEER, 0.2)
    assert _events(ctx) == [Connected(), DataReceived(b"first")]


def test_a_host_gets_its_share_of_the_backlog_then_cookies() -> None:
    config = UTPConfig(max_half_open_per_host=2)
    ctx = UTPContext(config, accepting=True, random_bits=ScriptedBits(strict=False, seed=6))
    for cid in (10, 20, 30, 40):
        ctx.receive_datagram(packet(SYN, cid, cid, 0), PEER, 0.0)
    ctx.receive_datagram(packet(SYN, 50, 50, 0), ("10.0.0.8", 4000), 0.0)
    ctx.datagrams_to_send(0.0)
    assert ctx.half_open == 3 and ctx.stats.syn_cookies_sent == 2 and ctx.stats.half_open_evicted == 0


def test_the_per_host_connection_limit() -> None:
    config = UTPConfig(max_connections_per_host=3, max_half_open_per_host=8)
    ctx = UTPContext(config, accepting=True, random_bits=ScriptedBits(strict=False, seed=7))
    ctx.connect(("10.0.0.9", 1), 0.0)  # outgoing connections count too, on the host's IP
    for cid in (10, 20, 30):
        ctx.receive_datagram(packet(SYN, cid, cid, 0), PEER, 0.0)
    out = ctx.datagrams_to_send(0.0)
    assert len(ctx.connections) == 3
    assert sorted(fields(d)[0] for d, _ in out) == [STATE, STATE, RESET, SYN]  # the fourth: refused at once
    assert ctx.stats.host_limit_refused == 1
    with pytest.raises(ConnectionLimitError, match=r"10\.0\.0\.9 \(max_connections_per_host=3\)"):
        ctx.connect(PEER, 0.0)
    ctx.receive_datagram(packet(SYN, 40, 40, 0), ("10.0.0.8", 4000), 0.0)  # another host: welcome
    assert len(ctx.connections) == 4


def _flood(net: Network, server: object, rate: float, start: float, end: float, seed: int) -> None:
    """Schedule spoofed SYNs from random sources at ``rate`` per second."""
    import random

    rnd = random.Random(seed)
    n = int((end - start) * rate)
    for i in range(n):
        syn = packet(SYN, rnd.getrandbits(16), rnd.getrandbits(16), 0)
        source = (f"198.51.{rnd.randrange(256)}.{rnd.randrange(1, 255)}", rnd.randrange(1024, 65536))
        net.inject(syn, source, server, delay=start + i / rate - net.now)  # type: ignore[arg-type]


@pytest.mark.parametrize("cookies", ["auto", "never"])
def test_genuine_clients_get_through_a_spoofed_syn_flood(cookies: str) -> None:
    """10,000 spoofed SYN/s at 100 ms RTT: with cookies all ten connect; without, none."""
    net = Network(seed=8)
    server = net.add_host(("10.0.0.2", 6881), config=UTPConfig(syn_cookies=cookies), accepting=True)
    data = bytes(range(256)) * 40
    served: list[StreamApp] = []
    server.on_accept = lambda conn: served.append(StreamApp(b"", shutdown_when_sent=False)) or served[-1]
    clients: list[StreamApp] = []
    _flood(net, server, 10_000, 0.0, 4.0, seed=8)
    for i in range(10):
        host = net.add_host((f"10.0.1.{i + 1}", 6881))
        net.link(host, server, LinkConfig(delay=0.05), LinkConfig(delay=0.05))
        net.run(until=0.3 * i + 0.1)
        app = host.attach(host.connect(server.address), StreamApp(data))
        assert isinstance(app, StreamApp)
        clients.append(app)
    net.run(until=30.0, stop=lambda: all(c.done for c in clients))
    connected = sum(1 for s in served if bytes(s.received) == data)
    if cookies == "auto":
        assert connected == 10
        assert server.context.stats.syn_cookies_sent >= 39_000
    else:
        assert connected == 0  # the backlog turns over every 13 ms, a handshake takes 100
    assert server.context.half_open <= server.context.config.backlog


def test_a_syn_flood_beside_a_live_connection_holds_little_memory() -> None:
    """2,000 SYN/s for 40 s while a connection stays live: ≤ 20 MiB held after the flood."""
    ctx = UTPContext(accepting=True, random_bits=ScriptedBits(strict=False, seed=9))
    ctx.receive_datagram(packet(SYN, 500, 7000, 0), PEER, 0.0)
    [(syn_ack, _)] = ctx.datagrams_to_send(0.0)
    ctx.receive_datagram(packet(DATA, 501, 7001, (fields(syn_ack)[6] - 1) & 0xFFFF, b"hi"), PEER, 0.1)
    live = ctx.connections[(PEER, 501)]  # idle from now on: its keep-alive deadline stays earliest
    ctx.datagrams_to_send(0.1)
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for i in range(80_000):
            now = i / 2000
            syn = packet(SYN, (i * 7919) & 0xFFFF, i & 0xFFFF, 0)
            ctx.receive_datagram(syn, (f"198.51.{i % 251}.{i % 253 + 1}", 1024 + i % 60_000), now)
            if i % 50 == 0:
                ctx.datagrams_to_send(now)
                ctx.handle_timer(now)
        ctx.datagrams_to_send(40.0)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert held <= 20 * 2**20, f"{held / 2**20:.1f} MiB held after the flood"
    assert live in ctx.connections.values() and live.state.value == "CONNECTED"
    assert ctx.half_open <= ctx.config.backlog
