"""ICMP errors in the engine: which ones count (RFC 5927) and what each does (RFC 1122)."""

from __future__ import annotations

from txutp.engine import (
    ConnectionState,
    ConnectionTimedOut,
    PathError,
    PathErrorKind,
    PeerUnreachable,
    UTPConfig,
    UTPContext,
)

from .helpers import A_ID, B, Pair, ScriptedBits, drain

REFUSED = PathError(PathErrorKind.REFUSED, "port unreachable", offender=("10.0.0.2", 0))
UNREACHABLE = PathError(PathErrorKind.UNREACHABLE, "host unreachable", offender=("10.0.0.254", 0))


def _client() -> tuple[UTPContext, bytes]:
    ctx = UTPContext(UTPConfig(), random_bits=ScriptedBits(A_ID, 5000, strict=False))
    ctx.connect(B, 0.0)
    [(syn, _)] = ctx.datagrams_to_send(0.0)
    return ctx, syn


def test_port_unreachable_about_our_syn_refuses_the_connect_at_once() -> None:
    ctx, syn = _client()
    assert ctx.path_error(syn, B, REFUSED, 0.007)
    [(conn, event)] = drain(ctx)
    assert event == PeerUnreachable(REFUSED)
    assert conn.state is ConnectionState.CLOSED
    assert ctx.connections == {}
    assert ctx.stats.path_errors == 1


def test_an_error_that_does_not_quote_our_syn_is_dropped() -> None:
    ctx, syn = _client()
    forged_seq = syn[:16] + ((int.from_bytes(syn[16:18], "big") + 1) & 0xFFFF).to_bytes(2, "big") + syn[18:]
    forged_id = syn[:2] + ((int.from_bytes(syn[2:4], "big") + 7) & 0xFFFF).to_bytes(2, "big") + syn[4:]
    for quoted, addr in ((forged_seq, B), (forged_id, B), (syn, ("10.0.0.3", 6881)), (syn[:8], B), (b"", B)):
        assert not ctx.path_error(quoted, addr, REFUSED, 0.01)
    assert drain(ctx) == []
    [conn] = ctx.connections.values()
    assert conn.state is ConnectionState.SYN_SENT
    assert ctx.stats.path_errors_unmatched == 5
    assert ctx.stats.path_errors == 0


def test_host_unreachable_ends_the_connect_once_a_resent_syn_is_reported_too() -> None:
    ctx, syn = _client()
    assert ctx.path_error(syn, B, UNREACHABLE, 0.01)
    assert drain(ctx) == []  # one report may be a transient: the SYN is resent as usual
    assert ctx.path_error(syn, B, UNREACHABLE, 0.02)  # the same transmission, reported twice
    assert drain(ctx) == []
    deadline = ctx.get_timer()
    assert deadline is not None and deadline <= 3.0 + 1e-9
    ctx.handle_timer(deadline)
    [(retry, _)] = ctx.datagrams_to_send(deadline)
    assert retry[16:18] == syn[16:18]
    assert ctx.path_error(retry, B, UNREACHABLE, deadline + 0.01)
    [(_, event)] = drain(ctx)
    assert event == PeerUnreachable(UNREACHABLE)


def test_a_connect_that_times_out_carries_the_last_icmp_error() -> None:
    config = UTPConfig(syn_retries=0)
    ctx = UTPContext(config, random_bits=ScriptedBits(A_ID, 5000, strict=False))
    ctx.connect(B, 0.0)
    [(syn, _)] = ctx.datagrams_to_send(0.0)
    assert ctx.path_error(syn, B, UNREACHABLE, 0.01)
    deadline = ctx.get_timer()
    assert deadline is not None
    ctx.handle_timer(deadline)
    [(_, event)] = drain(ctx)
    assert event == ConnectionTimedOut(during_handshake=True, path_error=UNREACHABLE)


def test_errors_about_an_established_connection_are_soft() -> None:
    pair = Pair()
    pair.client.send(b"x" * 3000, pair.now)
    data = pair.out_a()
    assert len(data) == 3
    for error in (REFUSED, UNREACHABLE):
        assert pair.a.path_error(data[0], B, error, pair.now)
    assert pair.client.state is ConnectionState.CONNECTED
    assert drain(pair.a) == []
    assert pair.client.stats().path_errors == 2
    # Once acknowledged, a packet no longer draws an error that counts.
    pair.to_b(data)
    pair.pump()
    assert not pair.a.path_error(data[1], B, REFUSED, pair.now)
    assert pair.client.stats().path_errors == 2


def test_a_connection_that_then_times_out_says_what_icmp_reported() -> None:
    pair = Pair(UTPConfig(mtu_discovery=False, max_retransmits=2))
    pair.client.send(b"x" * 100, pair.now)
    [data] = pair.out_a()
    assert pair.a.path_error(data, B, UNREACHABLE, pair.now)
    events = []
    while pair.client.state is not ConnectionState.CLOSED:
        deadline = pair.a.get_timer()
        assert deadline is not None
        pair.now = deadline
        pair.a.handle_timer(deadline)
        pair.out_a()  # lost
        events += [e for _, e in drain(pair.a)]
    assert events == [ConnectionTimedOut(path_error=UNREACHABLE)]


def test_fragmentation_needed_lowers_the_path_mtu_ceiling_for_a_probe_we_sent() -> None:
    pair = Pair(UTPConfig(mtu_discovery=True))
    client = pair.client
    client.send(b"x" * 200_000, pair.now)
    for _ in range(30):  # grow the window until a probe goes out
        out = pair.out_a()
        probes = [d for d in out if type(d) is not bytes]
        if probes:
            break
        pair.to_b(out)
        pair.to_a(pair.out_b())
    else:
        raise AssertionError("no path MTU probe was sent")
    [probe] = probes
    size = len(probe)
    limit = size - 100
    too_big = PathError(PathErrorKind.TOO_BIG, "fragmentation needed", max_datagram=limit)
    # A limit above what we sent is no news; a forged seq names no packet of ours.
    assert pair.a.path_error(probe, B, PathError(PathErrorKind.TOO_BIG, "x", max_datagram=size + 10), pair.now)
    forged = probe[:16] + ((int.from_bytes(probe[16:18], "big") + 5000) & 0xFFFF).to_bytes(2, "big") + probe[18:]
    assert not pair.a.path_error(forged, B, too_big, pair.now)
    retransmissions = client.stats().retransmissions
    assert pair.a.path_error(probe, B, too_big, pair.now)
    later = pair.out_a()
    assert client.stats().retransmissions > retransmissions  # the probe is resent, without DF
    assert all(type(d) is bytes for d in later)
    # The search goes on below the reported limit: every later probe fits it.
    later_probes = []
    for _ in range(200):
        pair.to_b(later)
        pair.to_a(pair.out_b())
        later = pair.out_a()
        later_probes += [len(d) for d in later if type(d) is not bytes]
    assert later_probes
    assert max(later_probes) <= limit


def test_no_route_from_this_host_ends_the_connect_at_once() -> None:
    ctx, syn = _client()
    no_route = PathError(PathErrorKind.UNREACHABLE, "network unreachable", local=True)
    assert ctx.path_error(syn, B, no_route, 0.0)
    [(_, event)] = drain(ctx)
    assert event == PeerUnreachable(no_route)
    assert str(no_route) == "network unreachable (this host)"


def test_fragmentation_needed_with_mtu_1280_brings_the_packet_size_down_at_once() -> None:
    pair = Pair(UTPConfig(mtu_discovery=True))
    client = pair.client
    client.send(b"x" * 100_000, pair.now)
    sent = pair.out_a()
    full = [d for d in sent if len(d) == 1402]
    assert full and client.stats().mtu == 1402
    too_big = PathError(PathErrorKind.TOO_BIG, "fragmentation needed", max_datagram=1280 - 28)
    assert pair.a.path_error(full[0], B, too_big, pair.now)
    assert client.stats().mtu == 1252
    pair.to_b(sent)
    pair.to_a(pair.out_b())
    later = pair.out_a()
    assert later and max(len(d) for d in later) <= 1252
    # A limit under the configured floor is not believed below it.
    tiny = PathError(PathErrorKind.TOO_BIG, "fragmentation needed", max_datagram=100)
    assert pair.a.path_error(later[-1], B, tiny, pair.now)
    assert client.stats().mtu == UTPConfig().mtu_floor_ipv4
