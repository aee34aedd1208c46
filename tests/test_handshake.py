"""Connection establishment: the real peers' conventions, loss of each packet, DRDoS checks."""

from __future__ import annotations

import pytest

from tests.helpers import DATA, STATE, SYN, ScriptedBits, drain, fields, packet
from txutp.engine import (
    Connected,
    ConnectionReset,
    ConnectionState,
    ConnectionTimedOut,
    DataReceived,
    UTPConfig,
    UTPContext,
)
from txutp.simulator import Host, LinkConfig, Network, StreamApp

PEER = ("192.0.2.7", 6881)
WND = 1024 * 1024


# --------------------------------------------------------------------------- byte-exact exchanges


def test_initiator_against_hand_built_libutp_acceptor() -> None:
    """SYN layout, SYN-ACK seq convention (not incremented) and the initiator's ack = seq - 1."""
    ctx = UTPContext(random_bits=ScriptedBits(0x1234, 0xFFF0))
    conn = ctx.connect(PEER, now=1.0)
    [(syn, addr)] = ctx.datagrams_to_send(1.0)
    assert addr == PEER
    assert syn == packet(SYN, 0x1234, 0xFFF0, 0, ts=1_000_000, wnd=WND)
    assert conn.recv_id == 0x1234 and conn.send_id == 0x1235

    # libutp's SYN-ACK: conn id = the SYN's id, seq = the acceptor's ISN (777), ack = SYN seq.
    ctx.receive_datagram(packet(STATE, 0x1234, 777, 0xFFF0, ts=5_000, wnd=WND), PEER, 1.1)
    assert [type(e) for _, e in drain(ctx)] == [Connected]
    [(ack, _)] = ctx.datagrams_to_send(1.1)
    # Confirmed at once: send id, our next seq, ack = SYN-ACK seq - 1, reply = 1.1 s - 5 ms.
    assert ack == packet(STATE, 0x1235, 0xFFF1, 776, ts=1_100_000, ts_diff=1_095_000, wnd=WND)

    # The acceptor's first DATA carries seq 777: it must be delivered, not taken for a duplicate.
    ctx.receive_datagram(packet(DATA, 0x1234, 777, 0xFFF0, b"hello", ts=6_000), PEER, 1.2)
    assert [e for _, e in drain(ctx)] == [DataReceived(b"hello")]
    conn.send(b"x", 1.2)
    [(data, _)] = ctx.datagrams_to_send(1.2)
    assert fields(data)[:3] == (0x01, 0, 0x1235)
    assert fields(data)[6:] == (0xFFF1, 777)
    assert data.endswith(b"x")


def test_acceptor_against_hand_built_libutp_initiator() -> None:
    ctx = UTPContext(accepting=True, random_bits=ScriptedBits(4321))
    ctx.receive_datagram(packet(SYN, 0x0100, 5000, 0, ts=2_000_000, wnd=WND), PEER, 10.0)
    [(synack, _)] = ctx.datagrams_to_send(10.0)
    # ST_STATE, conn id = SYN id, seq = our ISN (not incremented), ack = SYN seq, no delay sample.
    assert synack == packet(STATE, 0x0100, 4321, 5000, ts=10_000_000, ts_diff=0, wnd=WND)
    assert drain(ctx) == []  # nothing reaches the application before the peer proves itself
    [conn] = ctx.connections.values()
    assert conn.state is ConnectionState.SYN_RECV
    assert (conn.recv_id, conn.send_id) == (0x0101, 0x0100)

    # libutp's first DATA: conn id = its send id (SYN id + 1), seq = SYN seq + 1, ack = our ISN - 1.
    ctx.receive_datagram(packet(DATA, 0x0101, 5001, 4320, b"GET /", ts=2_100_000), PEER, 10.1)
    assert [e for _, e in drain(ctx)] == [Connected(), DataReceived(b"GET /")]
    assert conn.state is ConnectionState.CONNECTED
    [(ack, _)] = ctx.datagrams_to_send(10.1)
    assert fields(ack)[0] == STATE and fields(ack)[2] == 0x0100
    assert fields(ack)[6:] == (4321, 5001)


@pytest.mark.parametrize("bad_ack", [4321, 4316, 4320 + 100, 0, 4321 + 32768])
def test_drdos_check_rejects_wrong_ack_nr(bad_ack: int) -> None:
    ctx = UTPContext(accepting=True, random_bits=ScriptedBits(4321))
    ctx.receive_datagram(packet(SYN, 0x0100, 5000, 0), PEER, 0.0)
    ctx.datagrams_to_send(0.0)
    [conn] = ctx.connections.values()
    ctx.receive_datagram(packet(DATA, 0x0101, 5001, bad_ack, b"amplify me"), PEER, 0.1)
    assert drain(ctx) == []
    assert ctx.datagrams_to_send(0.1) == []
    assert conn.state is ConnectionState.SYN_RECV
    assert conn.dropped_packets == 1


@pytest.mark.parametrize("good_ack", [4320, 4317])
def test_drdos_check_accepts_ack_within_window(good_ack: int) -> None:
    ctx = UTPContext(accepting=True, random_bits=ScriptedBits(4321))
    ctx.receive_datagram(packet(SYN, 0x0100, 5000, 0), PEER, 0.0)
    ctx.datagrams_to_send(0.0)
    ctx.receive_datagram(packet(DATA, 0x0101, 5001, good_ack, b"hi"), PEER, 0.1)
    assert [e for _, e in drain(ctx)] == [Connected(), DataReceived(b"hi")]


def test_spoofed_syn_yields_exactly_one_syn_ack_and_nothing_more() -> None:
    config = UTPConfig()
    ctx = UTPContext(config, accepting=True)
    ctx.receive_datagram(packet(SYN, 0x4242, 100, 0), PEER, 0.0)
    sent = ctx.datagrams_to_send(0.0)
    now = 0.0
    while (deadline := ctx.get_timer()) is not None:
        now = deadline
        ctx.handle_timer(now)
        sent += ctx.datagrams_to_send(now)
        assert drain(ctx) == []
    assert len(sent) == 1 and fields(sent[0][0])[0] == STATE
    assert now >= config.syn_recv_timeout
    assert ctx.connections == {} and ctx.half_open == 0


def test_duplicate_syn_is_acked_again() -> None:
    ctx = UTPContext(accepting=True, random_bits=ScriptedBits(9000))
    syn = packet(SYN, 0x0100, 5000, 0)
    ctx.receive_datagram(syn, PEER, 0.0)
    [(first, _)] = ctx.datagrams_to_send(0.0)
    ctx.receive_datagram(syn, PEER, 3.0)
    [(second, _)] = ctx.datagrams_to_send(3.0)
    assert first[:4] == second[:4] and first[8:] == second[8:]  # same but the timestamp
    assert len(ctx.connections) == 1


def test_syn_to_a_closed_port_is_refused() -> None:
    net = Network(seed=1)
    a = net.add_host(("10.0.0.1", 1000))
    b = net.add_host(("10.0.0.2", 2000))  # not accepting
    net.link(a, b, LinkConfig(delay=0.01))
    app = a.attach(a.connect(b.address), StreamApp(b"data"))
    net.run(until=5)
    assert isinstance(app.terminated, ConnectionReset) and app.terminated.refused


# --------------------------------------------------------------------------- loss of each packet


def _pair(seed: int = 3) -> tuple[Network, Host, Host]:
    net = Network(seed=seed)
    a = net.add_host(("10.0.0.1", 1000))
    b = net.add_host(("10.0.0.2", 2000), accepting=True)
    net.link(a, b, LinkConfig(delay=0.02))
    return net, a, b


def _drop_nth(net: Network, src: Host, type_version: int, nth: int = 1) -> list[float]:
    """Drop the ``nth`` datagram of that type sent by ``src``; return when each such datagram left."""
    times: list[float] = []

    def intercept(host: Host, dest: object, data: bytes) -> bytes | None:
        if host is src and data[0] == type_version:
            times.append(net.now)
            if len(times) == nth:
                return None
        return data

    net.intercept = intercept
    return times


@pytest.mark.parametrize(
    ("who", "type_version", "server_speaks_first"),
    [
        ("client", SYN, False),
        ("server", STATE, False),  # SYN-ACK
        ("client", STATE, True),  # the initiator's confirming ACK, server speaks first
        ("client", STATE, False),  # the confirming ACK, client speaks first
        ("client", DATA, False),  # the client's first DATA
        ("server", DATA, True),  # the server's first DATA
    ],
)
def test_handshake_survives_loss_of_each_packet(who: str, type_version: int, server_speaks_first: bool) -> None:
    net, a, b = _pair()
    client_data = b"" if server_speaks_first else b"client hello " * 100
    server_data = b"server banner " * 100
    served: list[StreamApp] = []

    def accept(conn: object) -> StreamApp:
        served.append(StreamApp(server_data, shutdown_when_sent=False))
        return served[-1]

    b.on_accept = accept
    seen = _drop_nth(net, a if who == "client" else b, type_version)
    client = a.attach(a.connect(b.address), StreamApp(client_data, shutdown_when_sent=False))
    assert isinstance(client, StreamApp)
    net.run(until=30, stop=lambda: bool(served) and len(client.received) == len(server_data))
    assert seen, "the packet to lose was never sent"
    assert client.connected and served and served[0].connected
    assert bytes(client.received) == server_data
    net.run(until=net.now + 30)
    assert bytes(served[0].received) == client_data
    assert client.terminated is None and served[0].terminated is None


def test_syn_retransmitted_with_backoff_then_timed_out() -> None:
    config = UTPConfig()
    net = Network(seed=2)
    a = net.add_host(("10.0.0.1", 1000), config=config)
    b = net.add_host(("10.0.0.2", 2000), accepting=True)
    net.link(a, b, LinkConfig(delay=0.02))
    times: list[float] = []

    def black_hole(host: Host, dest: object, data: bytes) -> bytes | None:
        if host is a:
            times.append(net.now)
        return None

    net.intercept = black_hole
    app = a.attach(a.connect(b.address), StreamApp(b"x"))
    net.run(until=100)
    assert times == pytest.approx([0.0, 3.0, 9.0])
    assert isinstance(app.terminated, ConnectionTimedOut) and app.terminated.during_handshake
    assert net.now == pytest.approx(100)


def test_unconfirmed_acceptor_times_out_silently() -> None:
    config = UTPConfig(syn_recv_timeout=4.0)
    ctx = UTPContext(config, accepting=True)
    ctx.receive_datagram(packet(SYN, 7, 1, 0), PEER, 0.0)
    ctx.datagrams_to_send(0.0)
    assert ctx.half_open == 1 and ctx.get_timer() == pytest.approx(4.0)
    ctx.handle_timer(4.0)
    assert ctx.datagrams_to_send(4.0) == [] and drain(ctx) == []
    assert ctx.connections == {} and ctx.half_open == 0


def test_an_initiator_that_gives_up_before_the_syn_ack_resets_the_half_open_connection() -> None:
    # Happy Eyeballs abandons its losing attempts this way: the RESET's ack_nr says nothing
    # (no SYN-ACK arrived), but its seq_nr is the one after the SYN's, on the SYN's id.
    client = UTPContext(UTPConfig(), random_bits=ScriptedBits(7, 100, strict=False))
    server = UTPContext(UTPConfig(), accepting=True)
    conn = client.connect(PEER, 0.0)
    [(syn, _)] = client.datagrams_to_send(0.0)
    server.receive_datagram(syn, ("192.0.2.1", 6881), 0.0)
    server.datagrams_to_send(0.0)  # the SYN-ACK is still on its way
    assert server.half_open == 1
    conn.abort(0.01)
    [(reset, _)] = client.datagrams_to_send(0.01)
    # A RESET one seq_nr off, or on another id, is not taken.
    for wrong in (packet(0x31, 8, 102, 0), packet(0x31, 9, 101, 0)):
        server.receive_datagram(wrong, ("192.0.2.1", 6881), 0.02)
    assert server.half_open == 1
    server.receive_datagram(reset, ("192.0.2.1", 6881), 0.02)
    assert server.datagrams_to_send(0.02) == []
    assert server.half_open == 0 and server.connections == {}
    assert drain(server) == []
