"""Path MTU discovery: the search itself, and converging on simulated paths."""

from __future__ import annotations

import random

import pytest

from tests.helpers import DATA, ScriptedBits, drain
from txutp.engine import MAX_DATAGRAM_IPV4, DontFragment, MTUSearch, UTPConfig, UTPContext, decode_packet
from txutp.engine._mtu import MAX_PROBES
from txutp.simulator import Host, LinkConfig, Network, StreamApp

# --------------------------------------------------------------------------- the search


def test_binary_search_converges_within_16_bytes() -> None:
    search = MTUSearch(default=1402, floor=548, ceiling=1472, interval=1800)
    path_limit = 1252
    sizes = []
    while (probe := search.probe_size(0.0)) is not None:
        sizes.append(probe)
        if probe <= path_limit:
            search.probe_acked(probe)
        else:
            search.probe_lost(probe)
    assert sizes[0] == 1010  # the middle of [548, 1472]
    assert len(set(sizes)) <= 7
    # A size the path does not carry is tried MAX_PROBES times before the ceiling comes down.
    assert all(sizes.count(s) == (MAX_PROBES if s > path_limit else 1) for s in set(sizes))
    assert path_limit - 16 <= search.floor <= path_limit < search.ceiling + 1
    assert search.packet_size == search.floor


def test_one_random_loss_of_a_probe_does_not_lower_the_ceiling() -> None:
    search = MTUSearch(default=1402, floor=548, ceiling=1472, interval=1800)
    probe = search.probe_size(0.0)
    assert probe is not None
    search.probe_lost(probe)  # dropped by a lossy path, not for its size
    assert search.ceiling == 1472 and search.probe_size(0.0) == probe
    search.probe_acked(probe)
    while (probe := search.probe_size(0.0)) is not None:
        search.probe_acked(probe)
    assert search.packet_size >= 1472 - 16


def test_a_local_refusal_lowers_the_ceiling_at_once() -> None:
    search = MTUSearch(default=1402, floor=548, ceiling=1472, interval=1800)
    search.probe_lost(1400, too_big=True)
    assert search.ceiling == 1399


def test_default_kept_until_a_probe_gets_through() -> None:
    search = MTUSearch(default=1402, floor=548, ceiling=1472, interval=1800)
    while (probe := search.probe_size(0.0)) is not None:
        assert search.packet_size == 1402
        search.probe_lost(probe)  # a path that drops every DF datagram
    assert search.converged and search.packet_size == 1402


def test_search_restarts_after_the_interval() -> None:
    search = MTUSearch(default=1402, floor=548, ceiling=1472, interval=100)
    while (probe := search.probe_size(0.0)) is not None:
        search.probe_acked(probe) if probe <= 1300 else search.probe_lost(probe)
    assert search.probe_size(50.0) is None
    probe = search.probe_size(100.0)
    assert probe is not None and probe > search.floor  # searching upwards again
    assert search.ceiling == 1472


def test_packet_sizes_stay_within_the_hard_limits() -> None:
    search = MTUSearch(default=1402, floor=548, ceiling=MAX_DATAGRAM_IPV4, interval=1800)
    while (probe := search.probe_size(0.0)) is not None:
        assert probe <= MAX_DATAGRAM_IPV4
        search.probe_acked(probe)  # loopback: everything gets through
    assert 1472 - 16 <= search.packet_size <= 1472


# --------------------------------------------------------------------------- over the simulator


def _transfer(link: LinkConfig, *, config: UTPConfig | None = None, seed: int = 1) -> tuple[Network, Host, object]:
    net = Network(seed)
    a = net.add_host(("10.0.0.1", 6881), config=config)
    b = net.add_host(("10.0.0.2", 6881), accepting=True)
    net.link(a, b, link, LinkConfig(delay=0.01))
    return net, a, b


def _run(net: Network, a: Host, b: Host, size: int = 10_000_000) -> tuple[object, StreamApp, bytes, list[int]]:
    sinks: list[StreamApp] = []
    b.on_accept = lambda conn: sinks.append(StreamApp(b"", shutdown_when_sent=False)) or sinks[-1]
    data = random.Random(size).randbytes(size)
    conn = a.connect(b.address)
    a.attach(conn, StreamApp(data))
    sizes: list[int] = []
    while not (sinks and sinks[0].eof) and net.now < 120:
        net.run(until=net.now + 0.1)
        sizes.append(conn.packet_size)
    return conn, sinks[0], data, sizes


def test_converges_on_a_1280_byte_path() -> None:
    # IP MTU 1280: the largest IPv4 UDP payload is 1252; DF probes above it vanish silently.
    net, a, b = _transfer(LinkConfig(delay=0.01, mtu=1280, bandwidth=5e6, buffer=500_000))
    data_sizes: list[int] = []

    def watch(src: Host, dest: object, data: bytes) -> bytes:
        if src is a and data[0] == DATA and not isinstance(data, DontFragment):
            data_sizes.append(len(data))
        return data

    net.intercept = watch
    conn, sink, data, sizes = _run(net, a, b)
    assert bytes(sink.received) == data
    assert 1252 - 16 <= conn.packet_size <= 1252
    converged_at = next(i for i, s in enumerate(sizes) if s == conn.packet_size) * 0.1
    assert converged_at <= 2.0  # within 2 s of virtual time
    assert all(s == conn.packet_size for s in sizes[int(converged_at / 0.1) :])
    # Before it converged, too-big regular packets were fragmented, not lost for good.
    assert net.link_stats(a, b).fragmented > 0
    assert max(data_sizes[-100:]) <= 1252


def test_a_path_that_drops_every_probe_keeps_the_default() -> None:
    net, a, b = _transfer(LinkConfig(delay=0.01, bandwidth=5e6, buffer=500_000))
    dropped = []

    def firewall(src: Host, dest: object, data: bytes) -> bytes | None:
        if isinstance(data, DontFragment):
            dropped.append(len(data))
            return None
        return data

    net.intercept = firewall
    conn, sink, data, sizes = _run(net, a, b)
    assert bytes(sink.received) == data
    assert set(sizes) == {1402}
    assert 1 <= len(dropped) <= 8 * MAX_PROBES  # the search gave up instead of probing forever
    assert conn.stats().timeouts == 0  # lost probes were not taken for congestion collapse


def test_loopback_like_path_uses_the_largest_safe_datagram_never_more() -> None:
    net, a, b = _transfer(LinkConfig(delay=0.001, mtu=65536))
    biggest = 0

    def watch(src: Host, dest: object, data: bytes) -> bytes:
        nonlocal biggest
        biggest = max(biggest, len(data))
        return data

    net.intercept = watch
    conn, sink, data, _ = _run(net, a, b)
    assert bytes(sink.received) == data
    assert 1472 - 16 <= conn.packet_size <= 1472
    assert biggest <= MAX_DATAGRAM_IPV4


def test_discovery_can_be_switched_off() -> None:
    net, a, b = _transfer(LinkConfig(delay=0.001), config=UTPConfig(mtu_discovery=False))
    probes = []
    net.intercept = lambda src, dest, data: probes.append(data) or data if isinstance(data, DontFragment) else data
    _conn, _sink, _data, sizes = _run(net, a, b)
    assert probes == [] and set(sizes) == {1402}


def test_emsgsize_on_a_probe_counts_it_lost_and_resends_without_df() -> None:
    ctx = UTPContext(random_bits=ScriptedBits(100, 1000))
    peer = ("192.0.2.1", 1)
    conn = ctx.connect(peer, 0.0)
    ctx.datagrams_to_send(0.0)
    # The SYN-ACK, with a large window; then enough data for probes.
    ctx.receive_datagram(bytes.fromhex("2100 0064 00000000 00000000 00100000 0bb8 03e8".replace(" ", "")), peer, 0.01)
    drain(ctx)
    conn.cc.cwnd = 100_000
    conn.send(bytes(200_000), 0.02)
    out = ctx.datagrams_to_send(0.02)
    probes = [d for d, _ in out if isinstance(d, DontFragment)]
    assert len(probes) == 1
    probe = probes[0]
    ctx.datagram_too_big(probe, peer, 0.03)
    assert conn._mtu is not None and conn._mtu.ceiling == len(probe) - 1
    resent = [d for d, _ in ctx.datagrams_to_send(0.03) if decode_packet(d).seq_nr == decode_packet(probe).seq_nr]
    assert len(resent) == 1 and not isinstance(resent[0], DontFragment)
    assert decode_packet(resent[0]).payload == decode_packet(probe).payload


@pytest.mark.parametrize("ipv6", [False, True])
def test_config_refuses_datagrams_above_the_hard_limit(ipv6: bool) -> None:
    with pytest.raises(ValueError, match="packet_size"):
        UTPConfig(packet_size_ipv6=1453) if ipv6 else UTPConfig(packet_size_ipv4=1473)
