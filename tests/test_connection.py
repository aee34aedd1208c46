"""Connection internals driven packet by packet: ACKs, SACK, retransmission, windows, hostile values."""

from __future__ import annotations

import pytest

from tests.helpers import A_ISN, DATA, FIN, RESET, STATE, SYN, A, B, Pair, ScriptedBits, drain, fields, packet
from txutp.engine import (
    Connected,
    ConnectionClosed,
    ConnectionState,
    ConnectionTimedOut,
    DataReceived,
    RTTEstimator,
    UTPConfig,
    UTPContext,
    decode_packet,
)
from txutp.engine._connection import FIN_RESENDS
from txutp.engine._packet import ST_DATA

# tests/test_sack_holes.py imports Pair (the harness's) and _payloads from here.


def _payloads(n: int, size: int = 1382) -> bytes:
    return b"".join(bytes([i % 256]) * size for i in range(n))


def test_ack_coalesced_per_batch() -> None:
    p = Pair()
    p.client.send(_payloads(10), p.now)
    data = p.out_a()
    assert len(data) == 4  # the initial window: 4 packets
    p.to_b(data)
    acks = p.out_b()
    assert len(acks) == 1
    (kind, _, _, _, _, _, _, ack) = fields(acks[0])
    assert kind == STATE and ack == decode_packet(data[-1]).seq_nr


def test_sack_emitted_for_out_of_order_data_in_multiples_of_4() -> None:
    p = Pair()
    p.client.send(_payloads(4), p.now)
    d = p.out_a()
    p.to_b([d[0], d[2], d[3]])  # the second is lost
    [ack] = p.out_b()
    pkt = decode_packet(ack)
    assert pkt.ack_nr == decode_packet(d[0]).seq_nr
    assert pkt.sack is not None and len(pkt.sack) % 4 == 0 and len(pkt.sack) >= 4
    # bit 0 = ack_nr + 2 (the third packet), bit 1 = ack_nr + 3 (the fourth).
    assert pkt.sack[0] == 0b11 and not any(pkt.sack[1:])
    assert ack[1] == 1  # the first extension is the SACK: never >= 3


def test_sack_holes_are_retransmitted_a_reordering_window_after_a_later_delivery() -> None:
    p = Pair()
    p.client.send(_payloads(4), p.now)
    d = p.out_a()
    p.to_b([d[0], d[2]])  # the second is missing; one packet sent after it arrived
    p.now += 0.05
    p.to_a(p.out_b())
    # Not at once: the second may only be late (reordering is not loss)...
    assert [x for x in p.out_a() if x[0] == DATA] == []
    deadline = p.client.get_timer()
    assert deadline is not None and p.now < deadline <= p.now + p.client.stats().reordering_window
    # ...but once the reordering window has passed since the later packet's delivery, it is lost.
    p.now = deadline
    p.client.handle_timer(p.now)
    out = p.out_a()
    assert decode_packet(out[0]).seq_nr == decode_packet(d[1]).seq_nr
    stats = p.client.stats()
    assert stats.fast_retransmits == 1 and stats.retransmissions == 1
    p.to_b([*out, d[3]])
    assert p.received_by_b() == _payloads(4)


def test_a_late_packet_arriving_within_the_reordering_window_is_not_resent() -> None:
    p = Pair()
    p.client.send(_payloads(4), p.now)
    [late] = p.hold("a", 1)  # the second is overtaken by the two after it
    p.now += 0.05
    p.to_a(p.out_b())  # an ACK that selectively acknowledges them
    p.release()  # late, not lost
    p.pump()
    p.run(p.now + 1.0)
    assert [(side, q.type, q.seq_nr) for side, q in p.pump() if q.type == ST_DATA] == []
    assert p.client.stats().retransmissions == 0
    assert b"".join(e.data for side, e in p.events if side == "b" and isinstance(e, DataReceived)) == _payloads(4)
    assert late.seq_nr == (A_ISN + 2) & 0xFFFF


def test_a_lost_packet_is_resent_once_and_the_stream_completes() -> None:
    p = Pair()
    p.client.send(_payloads(6), p.now)
    [lost] = p.drop("a", 2)
    p.now += 0.05
    sent = [q.seq_nr for side, q in p.pump() if side == "a" and q.type == ST_DATA]  # SACKed: new data goes
    sent += [q.seq_nr for _, side, q in p.run(p.now + 5.0) if side == "a" and q.type == ST_DATA]
    assert sent.count(lost.seq_nr) == 1  # resent once, after the reordering window
    assert b"".join(e.data for side, e in p.events if side == "b" and isinstance(e, DataReceived)) == _payloads(6)
    assert p.client.stats().retransmissions == 1 and p.client.bytes_in_flight == 0


def test_libtorrent_style_sack_on_data_with_odd_length_is_accepted() -> None:
    p = Pair()
    p.client.send(_payloads(4), p.now)
    d = p.out_a()
    seqs = [decode_packet(x).seq_nr for x in d]
    p.to_b(d)
    p.received_by_b()
    # The server's DATA acks the first packet and SACKs the others, with a 3-byte SACK (libtorrent).
    srv_seq = decode_packet(p.out_b()[0]).seq_nr  # the server's own next sequence number (an ACK)
    sack = bytes([0b11, 0, 0])
    pkt = packet(DATA, p.client.recv_id, srv_seq, seqs[0], ext=1) + bytes([0, 3]) + sack + b"payload"
    p.to_a([pkt])
    events = drain(p.a)
    assert [e for _, e in events] == [DataReceived(b"payload")]
    # The first is acked, the third and fourth selectively; the second is the hole and is resent.
    rec = p.client._recovery
    assert list(rec.outstanding) == [seqs[1]]
    assert sorted(rec.sacked) == seqs[2:]
    deadline = p.client.get_timer()
    assert deadline is not None
    p.now = deadline
    p.client.handle_timer(p.now)
    assert [decode_packet(x).seq_nr for x in p.out_a() if x[0] == DATA] == [seqs[1]]


def test_three_duplicate_acks_trigger_fast_retransmit() -> None:
    p = Pair()
    p.client.send(_payloads(4), p.now)
    d = p.out_a()
    first = decode_packet(d[0]).seq_nr
    una_ack = (first - 1) & 0xFFFF
    # A peer without SACK repeats its last ACK: three plain duplicate STATE packets, once the
    # first packet is overdue by more than the reordering window.
    p.now = 0.01
    srv_seq = p.server.final_seq_nr
    dup = packet(STATE, p.client.recv_id, srv_seq, una_ack, wnd=1 << 20)
    p.to_a([dup, dup])
    assert p.out_a() == []
    p.to_a([dup])
    [resent] = p.out_a()
    assert decode_packet(resent).seq_nr == first


def test_duplicates_are_suppressed_and_reacked() -> None:
    p = Pair()
    p.client.send(b"once", p.now)
    [d] = p.out_a()
    p.to_b([d, d])
    assert p.received_by_b() == b"once"
    assert p.server.duplicate_packets == 1
    p.out_b()
    p.to_b([d])
    assert p.received_by_b() == b""
    assert len(p.out_b()) == 1  # the ACK is repeated so the sender learns it arrived


def test_tail_loss_probe_then_retransmission_timeout_resends_the_oldest() -> None:
    p = Pair()
    p.client.send(_payloads(2), p.now)
    d = p.out_a()
    # First a tail-loss probe: the newest packet again, well before the RTO.
    deadline = p.client.get_timer()
    assert deadline is not None and deadline < p.client.stats().rto
    p.now = deadline
    p.client.handle_timer(p.now)
    out = p.out_a()
    assert [decode_packet(x).seq_nr for x in out] == [decode_packet(d[1]).seq_nr]
    assert p.client.stats().tail_loss_probes == 1 and p.client.stats().timeouts == 0
    # Then, still nothing heard, the retransmission timeout resends from the oldest.
    while p.client.stats().timeouts == 0:
        deadline = p.client.get_timer()
        assert deadline is not None
        p.now = deadline
        p.client.handle_timer(p.now)
        out = [x for x in p.out_a() if x[0] == DATA]
    assert [decode_packet(x).seq_nr for x in out] == [decode_packet(d[0]).seq_nr]
    assert p.client.stats().timeouts == 1
    # Karn: no RTT sample from the retransmitted packet.
    srtt_before = p.client.stats().rtt
    p.to_b(out)
    p.to_a(p.out_b())
    assert p.client.stats().rtt == srtt_before


def test_advertised_window_follows_the_consumer() -> None:
    config = UTPConfig(recv_buffer_size=20 * 1382, mtu_discovery=False)
    p = Pair(config)
    p.server.pause_reading()
    p.client.send(_payloads(30), p.now)
    for _ in range(10):
        p.to_b(p.out_a())
        p.to_a(p.out_b())
        p.now += 0.01
    windows = [decode_packet(x).wnd_size for x in p.out_b()]
    assert p.server._recv.window() == 0
    assert p.client._recovery.peer_wnd == 0
    assert p.out_a() == []  # the sender stopped
    assert windows == [] or windows[-1] == 0
    p.server.resume_reading(p.now)
    assert len(p.received_by_b()) == 20 * 1382  # the held data, handed over
    update = p.out_b()
    assert len(update) == 1 and decode_packet(update[0]).wnd_size > 0  # an immediate window update
    p.to_a(update)
    assert p.out_a()  # sending resumes


def test_data_beyond_the_receive_buffer_is_dropped_not_buffered() -> None:
    config = UTPConfig(recv_buffer_size=4 * 1382, mtu_discovery=False)
    p = Pair(client_config=UTPConfig(mtu_discovery=False), config=config)
    p.server.pause_reading()
    # A hostile sender ignores the advertised window entirely.
    for i in range(50):
        seq = (p.client.final_seq_nr + i) & 0xFFFF
        pkt = packet(DATA, p.server.recv_id, seq, p.server.final_seq_nr - 1) + bytes(1382)
        p.b.receive_datagram(pkt, A, p.now)
    assert p.server._recv.used <= config.recv_buffer_size
    assert p.server.dropped_packets >= 46


def test_reorder_buffer_is_bounded_by_max_reorder_packets() -> None:
    config = UTPConfig(max_reorder_packets=8, mtu_discovery=False)
    p = Pair(config)
    base = p.client.final_seq_nr
    for i in range(1, 40):
        pkt = packet(DATA, p.server.recv_id, (base + i) & 0xFFFF, p.server.final_seq_nr - 1) + b"x"
        p.b.receive_datagram(pkt, A, p.now)
    assert len(p.server._recv.reorder) == 7  # offsets 2..8 from the next expected packet
    assert p.server.dropped_packets == 39 - 7


def test_huge_peer_window_does_not_lift_our_send_limit() -> None:
    config = UTPConfig(send_buffer_size=64 * 1024, mtu_discovery=False)
    p = Pair(client_config=config)
    # The server claims a 4 GiB window; the client's cwnd cap (the send buffer) still holds.
    p.to_a([packet(STATE, p.client.recv_id, p.server.final_seq_nr, p.client.final_seq_nr - 1, wnd=0xFFFFFFFF)])
    p.client.cc.cwnd = 10**9  # even a runaway controller
    p.client.send(bytes(config.send_buffer_size), p.now)
    p.out_a()
    assert p.client.bytes_in_flight <= 10**9
    assert p.client.bytes_unsent + p.client.bytes_in_flight <= config.send_buffer_size


@pytest.mark.parametrize(("ts_diff", "sampled"), [(0, False), (0x7FFFFFFF, False), (12_345, True)])
def test_no_delay_sample_values(ts_diff: int, sampled: bool) -> None:
    """0 and uTorrent's 0x7FFFFFFF mean "no sample": the controller measures no delay from them."""
    p = Pair()
    p.client.send(b"x", p.now)
    [d] = p.out_a()
    p.to_b([d])
    [ack] = p.out_b()
    forged = ack[:8] + ts_diff.to_bytes(4, "big") + ack[12:]
    before = p.client.stats().congestion.delay_samples
    p.to_a([forged])
    assert p.client.bytes_in_flight == 0  # the ACK counted, with or without a sample
    assert p.client.stats().congestion.delay_samples == before + sampled


def test_hostile_timestamp_values_do_not_break_anything() -> None:
    p = Pair()
    p.client.send(b"x" * 5000, p.now)
    for d in p.out_a():
        p.to_b([d[:4] + (0x80000000).to_bytes(4, "big") + d[8:]])  # timestamps half the space away
    for ack in p.out_b():
        p.to_a([ack[:8] + (0x80000001).to_bytes(4, "big") + ack[12:]])
    assert p.received_by_b() == b"x" * 5000
    assert p.client.bytes_in_flight == 0


def test_reset_when_only_our_fin_is_unacknowledged_is_a_clean_close() -> None:
    from txutp.engine import ConnectionClosed, ConnectionReset

    p = Pair()
    p.client.send(b"all of it", p.now)
    p.to_b(p.out_a())
    p.to_a(p.out_b())  # the data is acknowledged
    p.client.close(p.now)
    [fin] = p.out_a()
    assert fin[0] == FIN  # the FIN never arrives; the peer has forgotten us and answers with RESET
    p.server.abort(p.now)
    [reset] = p.out_b()
    # A RESET naming neither our newest packet nor the sequence number we expect is challenged.
    p.to_a([packet(RESET, p.client.send_id, fields(reset)[6] + 5, fields(reset)[7])])
    challenge = p.out_a()[0]  # (after our FIN, ACKs go out in libutp's and libtorrent's forms)
    assert challenge[0] == STATE and p.client.stats().resets_challenged == 1
    assert drain(p.a) == []
    # txutp's own abort RESET carries the sequence number we expect next: exact.
    p.to_a([reset])
    assert [e for _, e in drain(p.a)] == [ConnectionClosed()]

    q = Pair()
    q.client.send(b"never acknowledged", q.now)
    q.client.close(q.now)
    [_, fin] = q.out_a()
    q.to_a([packet(RESET, q.client.send_id, 4321, fields(fin)[6])])  # the answer to our FIN: exact
    assert [e for _, e in drain(q.a)] == [ConnectionReset()]


def _silenced_fin(both_fins: bool) -> tuple[Pair, list[tuple[float, list[bytes]]]]:
    """The client closes after the data; its FIN's ACK never comes back. Return what it sent when."""
    p = Pair()
    p.client.send(b"all of it", p.now)
    p.to_b(p.out_a())
    p.to_a(p.out_b())  # the data is acknowledged
    if both_fins:
        p.server.close(p.now)
        p.to_a(p.out_b())  # the server's FIN: the client's reader sees the end
        assert p.client.peer_fin_received
    p.client.close(p.now)
    sent = [(p.now, [d for d in p.out_a() if d[0] == FIN])]
    drain(p.a)
    while (deadline := p.a.get_timer()) is not None and deadline < 600:  # the server is gone
        p.now = deadline
        p.a.handle_timer(p.now)
        sent.append((p.now, [d for d in p.out_a() if d[0] == FIN]))
        if any(isinstance(e, (ConnectionClosed, ConnectionTimedOut)) for _, e in drain(p.a)):
            break
    return p, sent


def test_a_fin_unanswered_after_both_fins_ends_cleanly_after_two_resends() -> None:
    """The peer's FIN came, everything was acknowledged, then silence: it took our FIN and left.

    libtorrent keeps no TIME-WAIT after acknowledging our FIN; when that last
    ACK is lost the close ends as done (not after 2 minutes of timeouts).
    """
    p, sent = _silenced_fin(both_fins=True)
    fins = [t for t, datagrams in sent for _ in datagrams]
    stats = p.client.stats()
    assert len(fins) == 1 + stats.tail_loss_probes + FIN_RESENDS  # and not at the third timeout
    assert p.client.state is ConnectionState.LINGER
    assert p.now - fins[0] < 4.0  # three RTOs (0.5 s, then backed off)
    assert stats.timeouts == FIN_RESENDS + 1


def test_a_fin_unanswered_before_the_peers_fin_times_out() -> None:
    """Without the peer's FIN, its data may still be on the way: no early end."""
    p, sent = _silenced_fin(both_fins=False)
    assert len([t for t, datagrams in sent for _ in datagrams]) > 1 + FIN_RESENDS
    assert p.client.state is ConnectionState.CLOSED


def test_time_wait_reacks_late_retransmissions_after_linger() -> None:
    p = Pair()
    p.client.send(b"data", p.now)
    p.client.shutdown_write(p.now)
    sent = p.out_a()  # DATA and FIN
    assert [x[0] for x in sent] == [0x01, 0x11]
    p.to_b(sent)
    p.server.close(p.now)
    p.to_a(p.out_b())  # the server's ACK and FIN
    p.to_b(p.out_a())  # the client's ACK of the server's FIN
    drain(p.a)
    drain(p.b)
    assert p.server.state.value == "LINGER"
    while (deadline := p.b.get_timer()) is not None:  # the server lingers, then is forgotten
        p.now = deadline
        p.b.handle_timer(p.now)
        p.out_b()
    assert p.b.connections == {}
    # A late copy of the client's FIN is re-ACKed (TIME_WAIT), not answered with RESET.
    p.b.receive_datagram(sent[1], A, p.now)
    [reply] = p.out_b()
    assert fields(reply)[0] == STATE and fields(reply)[7] == decode_packet(sent[1]).seq_nr
    # Something new from that connection is answered with RESET.
    fresh = packet(DATA, p.server.recv_id, (decode_packet(sent[1]).seq_nr + 1) & 0xFFFF, 0) + b"new"
    p.b.receive_datagram(fresh, A, p.now)
    [reset] = p.out_b()
    assert fields(reset)[0] == RESET
    # After TIME_WAIT, even the old FIN gets a RESET.
    p.now += p.b.config.time_wait + 1
    p.b.receive_datagram(sent[1], A, p.now)
    [reset] = p.out_b()
    assert fields(reset)[0] == RESET


def test_abort_while_lingering_reports_nothing_more() -> None:
    from txutp.engine import ConnectionClosed

    p = Pair()
    p.client.close(p.now)
    p.to_b(p.out_a())
    p.server.close(p.now)
    p.to_a(p.out_b())
    p.to_b(p.out_a())
    assert [e for _, e in drain(p.a)] == [ConnectionClosed()]
    assert p.client.state.value == "LINGER"
    p.client.abort(p.now)
    assert drain(p.a) == []


# --------------------------------------------------------------------------- interop quirks


def test_fin_instead_of_syn_ack_opens_and_ends_the_connection() -> None:
    """libtorrent answers a SYN for a torrent it will not serve with a FIN (no SYN-ACK)."""
    from txutp.engine import EndOfStream

    ctx = UTPContext(random_bits=ScriptedBits(0x3000, 900))
    ctx.connect(B, 0.0)
    ctx.datagrams_to_send(0.0)
    ctx.receive_datagram(packet(FIN, 0x3000, 4444, 900), B, 0.05)
    assert [e for _, e in drain(ctx)] == [Connected(), EndOfStream()]
    acks = [fields(d) for d, _ in ctx.datagrams_to_send(0.05)]
    assert acks and all(f[0] == STATE and f[7] == 4444 for f in acks)  # the FIN is acknowledged at once


def test_acks_after_our_fin_come_in_both_numberings() -> None:
    """libtorrent drops packets numbered past our FIN; libutp expects FIN + 1: we send both."""
    p = Pair()
    p.client.shutdown_write(p.now)
    [fin] = p.out_a()
    fin_seq = decode_packet(fin).seq_nr
    p.server.send(b"reply", p.now)
    p.to_a(p.out_b())
    states = [fields(d) for d in p.out_a() if d[0] == STATE]
    assert sorted(f[6] for f in states) == sorted([fin_seq, (fin_seq + 1) & 0xFFFF])
    assert len({f[7] for f in states}) == 1  # the same ACK


def test_a_keep_alive_confirms_a_libutp_client_that_never_sends() -> None:
    """A libutp client sends nothing after the SYN-ACK until data or its 29 s keep-alive."""
    ctx = UTPContext(accepting=True, random_bits=ScriptedBits(4321))
    ctx.receive_datagram(packet(SYN, 0x0100, 5000, 0), A, 0.0)
    ctx.datagrams_to_send(0.0)
    assert drain(ctx) == []
    keepalive = packet(STATE, 0x0101, 5001, 4321 - 2)  # libutp: its ack_nr (ISN - 1) minus one
    ctx.receive_datagram(keepalive, A, 29.0)
    assert [e for _, e in drain(ctx)] == [Connected()]


def test_dup_acks_resend_the_oldest_again_when_its_retransmission_is_lost() -> None:
    p = Pair()
    rtt = RTTEstimator(1.0, 0.5, 60.0)
    rtt.on_sample(0.04)  # a round trip measured (the pair's own handshake took no time)
    p.client._recovery.rtt = rtt
    p.client.send(_payloads(6), p.now)
    sent = p.out_a()
    first = decode_packet(sent[0]).seq_nr
    dup = packet(STATE, p.client.recv_id, p.server.final_seq_nr, (first - 1) & 0xFFFF)  # no SACK: libutp-like
    p.now = 0.05
    p.to_a([dup, dup, dup])
    assert [decode_packet(d).seq_nr for d in p.out_a()] == [first]
    p.now = 0.06
    p.to_a([dup])  # more duplicates right away: the retransmission may still be in flight
    assert [decode_packet(d).seq_nr for d in p.out_a() if d[0] == DATA] == []
    p.now = 0.06 + 2 * (p.client.stats().rtt or 1.0)
    p.to_a([dup])  # still duplicates more than an RTT later: it was lost too
    assert [decode_packet(d).seq_nr for d in p.out_a() if d[0] == DATA] == [first]


def test_a_long_batch_is_acknowledged_once_at_its_end() -> None:
    p = Pair()
    p.client.cc.cwnd = 100 * 1382
    p.client.send(_payloads(20), p.now)
    data = p.out_a()
    assert len(data) == 20
    p.to_b(data)
    acks = [decode_packet(d).ack_nr for d in p.out_b()]
    assert acks == [decode_packet(data[-1]).seq_nr]
