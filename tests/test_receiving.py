"""The receiving side of a connection (``txutp/engine/_receiving.py``): every packet routed to it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import A_ISN, B_ISN, DATA, RESET, STATE, SYN, A, B, Pair, ScriptedBits, drain, fields, packet
from txutp.engine import (
    Connected,
    ConnectionReset,
    ConnectionState,
    DataReceived,
    EndOfStream,
    UTPConnection,
    UTPContext,
    decode_packet,
)


def _in_order(p: Pair, payload: bytes, offset: int = 1) -> tuple[int, int, int, int, bytes]:
    """The raw fields of the client's next DATA packet, as the server's fast path takes them."""
    server = p.server
    seq = (server.final_ack_nr + offset) & 0xFFFF
    return (123, 1 << 20, seq, (server.final_seq_nr - 1) & 0xFFFF, payload)


def test_the_fast_path_takes_in_order_data_and_delivers_it() -> None:
    p = Pair()
    server = p.server
    before = server.packets_received
    assert server.receive_in_order_data(*_in_order(p, b"hello"), now=p.now)
    assert server.final_ack_nr == (A_ISN + 1) & 0xFFFF
    assert server.packets_received == before + 1
    assert [e for _, e in drain(p.b)] == [DataReceived(b"hello")]
    [ack] = p.out_b()
    assert fields(ack)[0] == STATE and fields(ack)[7] == server.final_ack_nr


def test_the_fast_path_declines_what_it_does_not_cover() -> None:
    p = Pair()
    server = p.server
    before = server.packets_received
    assert not server.receive_in_order_data(*_in_order(p, b"x", offset=2), now=p.now)  # a gap
    ts, wnd, seq, ack, payload = _in_order(p, b"x")
    assert not server.receive_in_order_data(ts, wnd, seq, (ack - 1) & 0xFFFF, payload, p.now)  # an old ack_nr
    server.pause_reading()
    assert not server.receive_in_order_data(*_in_order(p, b"x"), now=p.now)
    server.resume_reading(p.now)
    server.send(b"reply", p.now)  # unsent data of its own: the full path
    assert not server.receive_in_order_data(*_in_order(p, b"x"), now=p.now)
    assert server.packets_received == before  # nothing taken
    assert drain(p.b) == []


def test_the_full_path_and_the_fast_path_agree() -> None:
    fast, full = Pair(), Pair()
    assert fast.server.receive_in_order_data(*_in_order(fast, b"same"), now=0.0)
    _, wnd, seq, ack, payload = _in_order(full, b"same")
    full.to_b([packet(DATA, full.server.recv_id, seq, ack, payload, ts=123, wnd=wnd)])
    assert fast.out_b() == full.out_b()
    assert [e for _, e in drain(fast.b)] == [e for _, e in drain(full.b)]


def test_a_repeated_syn_while_unconfirmed_is_answered_again() -> None:
    ctx = UTPContext(accepting=True, random_bits=ScriptedBits(B_ISN))
    syn = packet(SYN, 0x0100, A_ISN, 0)
    ctx.receive_datagram(syn, A, 0.0)
    [first] = ctx.datagrams_to_send(0.0)
    ctx.receive_datagram(syn, A, 1.0)
    [again] = ctx.datagrams_to_send(1.0)
    assert fields(first[0])[6:] == fields(again[0])[6:] == (B_ISN, A_ISN)


def test_a_syn_on_an_established_connection_is_dropped() -> None:
    p = Pair()
    before = p.server.dropped_packets
    p.server.receive_packet(decode_packet(packet(SYN, p.server.recv_id, A_ISN, 0)), p.now)
    assert p.server.dropped_packets == before + 1
    assert p.out_b() == [] and p.server.state is ConnectionState.CONNECTED


def test_data_before_the_syn_ack_is_dropped_and_the_syn_ack_then_connects() -> None:
    ctx = UTPContext(random_bits=ScriptedBits(0x4000, A_ISN))
    conn = ctx.connect(B, 0.0)
    ctx.datagrams_to_send(0.0)
    ctx.receive_datagram(packet(DATA, conn.recv_id, B_ISN + 1, A_ISN, b"early"), B, 0.01)
    assert conn.dropped_packets == 1 and conn.state is ConnectionState.SYN_SENT
    ctx.receive_datagram(packet(STATE, conn.recv_id, B_ISN, A_ISN), B, 0.02)
    assert conn.state is ConnectionState.CONNECTED
    assert [e for _, e in drain(ctx)] == [Connected()]


def test_an_ack_of_data_never_sent_is_dropped() -> None:
    p = Pair()
    before = p.client.dropped_packets
    bogus = packet(DATA, p.client.recv_id, p.server.final_seq_nr, (p.client.final_seq_nr + 100) & 0xFFFF, b"x")
    p.to_a([bogus])
    assert p.client.dropped_packets == before + 1
    assert drain(p.a) == []


def test_data_the_path_delayed_behind_the_peers_later_acks_is_delivered() -> None:
    """A request overtaken by the ACKs its sender sent after it (jitter) carries an old ack_nr: kept.

    Dropping it (libutp's slack of 3 below the oldest unacknowledged packet)
    made libtorrent resend its request until it gave up on the connection.
    """
    p = Pair()
    p.client.send(b"x" * 200 * p.client.mss, p.now)
    while len(bulk := p.out_a()) < 10:  # slow start, until a flight of 10 or more
        p.to_b(bulk)
        p.now += 0.01
        p.to_a(p.out_b())
    drain(p.b)
    p.to_b(bulk[:2])
    p.server.send(b"request", p.now)
    request = [d for d in p.out_b() if fields(d)[0] == DATA]  # acknowledges the first 2
    assert len(request) == 1
    p.to_b(bulk[2:])
    p.to_a(p.out_b())  # the ACK of them all, which overtakes the request
    assert p.client.bytes_in_flight == 0
    p.to_a(request)
    assert p.client.dropped_packets == 0
    assert b"".join(e.data for _, e in drain(p.a) if isinstance(e, DataReceived)) == b"request"


def test_an_exact_reset_ends_the_connection_and_an_inexact_one_draws_a_challenge() -> None:
    p = Pair()
    client = p.client
    client.send(bytes(4 * 1382), p.now)
    first_data = fields(p.out_a()[0])[6]  # in flight: a RESET may acknowledge it and still be inexact
    inexact = packet(RESET, client.recv_id, (client.final_ack_nr + 5) & 0xFFFF, first_data)
    p.to_a([inexact])
    assert client.state is ConnectionState.CONNECTED
    [challenge] = p.out_a()
    assert fields(challenge)[0] == STATE and client.stats().resets_challenged == 1
    exact = packet(RESET, client.recv_id, (client.final_ack_nr + 1) & 0xFFFF, client.final_seq_nr - 1)
    p.to_a([exact])
    assert client.state is ConnectionState.CLOSED
    assert [e for _, e in drain(p.a)] == [ConnectionReset()]


def test_data_and_fin_in_one_batch_deliver_the_data_then_the_end() -> None:
    p = Pair()
    p.client.send(b"last words", p.now)
    p.client.shutdown_write(p.now)
    p.to_b(p.out_a())
    assert [e for _, e in drain(p.b)] == [DataReceived(b"last words"), EndOfStream()]
    assert p.server.peer_fin_received


def _run_of(p: Pair, count: int, *, change: dict[int, dict[str, int]] | None = None) -> list[bytes]:
    """``count`` in-order DATA datagrams of 1,000 payload bytes for the server, as its peer would send them."""
    server = p.server
    out = []
    for i in range(count):
        f = {
            "first": DATA,
            "conn_id": server.recv_id,
            "seq": (server.final_ack_nr + 1 + i) & 0xFFFF,
            "ack": (server.final_seq_nr - 1) & 0xFFFF,
            "ts": 1_000 + 7 * i,
            "wnd": 1 << 20,
        }
        f.update((change or {}).get(i, {}))
        payload = bytes([i]) * 1000
        out.append(packet(f["first"], f["conn_id"], f["seq"], f["ack"], payload, ts=f["ts"], wnd=f["wnd"]))
    return out


@pytest.mark.parametrize(
    "change",
    [
        {},
        {4: {"seq": 0}},  # a gap: the run is taken up to it, the rest goes one by one
        {3: {"ts": 0}},  # no timestamp: the full path
        {5: {"conn_id": 0x1234}},  # another connection's (unknown) datagram mid-run
        {2: {"first": RESET}},
        {6: {"ack": 0}},  # an ACK number we cannot accept
        {0: {"wnd": 10}, 7: {"wnd": 0}},  # the peer's window shuts
        {1: {"wnd": 0}},
    ],
)
def test_a_gro_run_leaves_what_its_datagrams_one_by_one_leave(
    change: dict[int, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[int] = []
    in_one_pass = UTPConnection.receive_in_order_run

    def counting(conn: UTPConnection, *args: Any) -> int:
        taken.append(in_one_pass(conn, *args))
        return taken[-1]

    monkeypatch.setattr(UTPConnection, "receive_in_order_run", counting)
    results = []
    for as_run in (False, True):
        p = Pair()
        p.now = 0.5
        run = _run_of(p, 8, change=change)
        if as_run:
            other = p.b.receive_run(b"".join(run), len(run[0]), A, p.now)
            assert other == []
        else:
            for d in run:
                assert p.b.receive_datagram(d, A, p.now)
        server = p.server
        results.append(
            (
                p.out_b(),
                [e for _, e in drain(p.b)],
                server.stats(),
                server.final_ack_nr,
                server.get_timer(),
                server.cc.stats(),
                p.b.stats.datagrams_received,
            )
        )
    assert results[0] == results[1]
    # The run is taken in one pass up to its first datagram that is not plain in-order data.
    assert taken == [min([i for i, c in change.items() if set(c) - {"wnd"}], default=8)]


def test_a_gro_run_for_a_reader_that_paused_goes_one_by_one() -> None:
    p = Pair()
    p.server.pause_reading()
    run = _run_of(p, 5)
    assert p.b.receive_run(b"".join(run), len(run[0]), A, p.now) == []
    assert p.server.bytes_received == 5000 and drain(p.b) == []
    p.server.resume_reading(p.now)
    assert b"".join(e.data for _, e in drain(p.b) if isinstance(e, DataReceived)) == b"".join(
        bytes([i]) * 1000 for i in range(5)
    )


def test_a_peer_varying_its_run_sizes_leaves_few_decoders_behind() -> None:
    from txutp.engine import _context

    p = Pair()
    held = []
    for size in range(100, 140):
        # Out of order for a live connection: the run is decoded in one pass, then taken one by one.
        seq = (p.server.final_ack_nr + 500) & 0xFFFF
        datagram = packet(DATA, p.server.recv_id, seq, (p.server.final_seq_nr - 1) & 0xFFFF, bytes(size - 20))
        p.b.receive_run(datagram * 3, size, A, p.now)
        held.append(len(_context._RUN_HEADERS))
    assert max(held) == 8
