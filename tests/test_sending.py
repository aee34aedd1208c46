"""The sending side of a connection (``txutp/engine/_sending.py``): what goes out, and how it is built."""

from __future__ import annotations

import itertools

from tests.helpers import DATA, FIN, STATE, A, Pair, fields, packet
from txutp.engine import DataReceived, UTPConfig, decode_packet
from txutp.engine._icmp import PathError, PathErrorKind
from txutp.engine._packet import ST_DATA, write_packet

MSS = 1382  # the pair's payload per packet (IPv4, no path MTU discovery)


def _data(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def test_a_run_of_full_packets_is_byte_for_byte_what_single_packets_would_be() -> None:
    p = Pair()
    p.client.cc.cwnd = 50 * MSS
    p.now = 1.25
    payload = _data(12 * MSS)
    p.client.send(payload, p.now)
    out = p.out_a()
    assert len(out) == 12
    client = p.client
    first = decode_packet(out[0])
    for i, datagram in enumerate(out):
        pkt = decode_packet(datagram)
        expected = write_packet(
            ST_DATA,
            client.send_id,
            p.now,
            first.timestamp_diff_us,
            first.wnd_size,
            (first.seq_nr + i) & 0xFFFF,
            client.final_ack_nr,
            payload[i * MSS : (i + 1) * MSS],
        )
        assert datagram == expected, i
        assert pkt.timestamp_us == first.timestamp_us
    assert client.bytes_in_flight == 12 * MSS


def test_the_window_bounds_what_goes_out_and_an_ack_releases_more() -> None:
    p = Pair()
    p.client.cc.cwnd = 5 * MSS
    p.client.send(_data(20 * MSS), p.now)
    first = p.out_a()
    assert sum(len(d) - 20 for d in first) == 5 * MSS
    assert p.out_a() == []  # nothing more until an ACK
    p.to_b(first)
    p.to_a(p.out_b())
    assert p.out_a()


def test_the_peers_window_bounds_what_goes_out() -> None:
    p = Pair()
    p.client.cc.cwnd = 50 * MSS
    small = packet(STATE, p.client.recv_id, p.server.final_seq_nr, p.client.final_seq_nr - 1, wnd=3 * MSS)
    p.to_a([small])
    p.client.send(_data(20 * MSS), p.now)
    assert sum(len(d) - 20 for d in p.out_a() if d[0] == DATA) == 3 * MSS


def test_nagle_holds_a_second_small_segment_until_the_first_is_acknowledged() -> None:
    p = Pair()
    p.client.send(b"a" * 100, p.now)
    first = p.out_a()
    assert [len(d) - 20 for d in first] == [100]
    p.to_b(first)
    p.client.send(b"b" * 100, p.now)
    assert p.out_a() == []  # held: a small packet is in flight
    p.client.send(b"c" * 100, p.now)
    p.pump()  # the ACK releases both held writes, in one packet
    received = [e.data for side, e in p.events if side == "b" and isinstance(e, DataReceived)]
    assert b"".join(received) == b"a" * 100 + b"b" * 100 + b"c" * 100


def test_without_nagle_small_segments_go_at_once() -> None:
    p = Pair(UTPConfig(mtu_discovery=False, nagle=False))
    p.client.send(b"a" * 100, p.now)
    p.client.send(b"b" * 100, p.now)
    p.out_a()
    p.client.send(b"c" * 100, p.now)
    assert [len(d) - 20 for d in p.out_a()] == [100]


def test_the_fin_follows_the_queued_data_with_the_next_sequence_number() -> None:
    p = Pair()
    p.client.send(_data(3 * MSS), p.now)
    p.client.shutdown_write(p.now)
    out = [fields(d) for d in p.out_a()]
    assert [f[0] for f in out] == [DATA, DATA, DATA, FIN]
    assert [f[6] for f in out] == [(out[0][6] + i) & 0xFFFF for i in range(4)]


def test_a_shut_peer_window_is_probed_with_backoff() -> None:
    p = Pair()
    shut = packet(STATE, p.client.recv_id, p.server.final_seq_nr, p.client.final_seq_nr - 1, wnd=0)
    p.to_a([shut])
    p.client.send(_data(4 * MSS), p.now)
    assert [d for d in p.out_a() if d[0] == DATA] == []
    probes = []  # when each probe went out
    while len(probes) < 3:
        deadline = p.client.get_timer()
        assert deadline is not None and deadline < 60
        p.now = deadline
        p.client.handle_timer(p.now)
        for probe in [d for d in p.out_a() if d[0] == DATA]:
            assert len(probe) - 20 == MSS
            probes.append(p.now)
            # The peer acknowledges it, its window still shut.
            ack = decode_packet(probe).seq_nr
            p.to_a([packet(STATE, p.client.recv_id, p.server.final_seq_nr, ack, wnd=0)])
            assert [d for d in p.out_a() if d[0] == DATA] == []
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert gaps[1] == 2 * gaps[0]


def test_a_keep_alive_acknowledges_one_before_the_last_packet_received() -> None:
    config = UTPConfig(mtu_discovery=False, keepalive_interval=5.0)
    p = Pair(config)
    assert p.server.get_timer() == 5.0
    p.now = 5.0
    p.server.handle_timer(p.now)
    [keepalive] = p.out_b()
    f = fields(keepalive)
    assert f[0] == STATE and f[7] == (p.server.final_ack_nr - 1) & 0xFFFF  # libutp's form


def test_a_datagram_refused_locally_as_too_big_is_resent() -> None:
    p = Pair(UTPConfig(mtu_discovery=True))
    client = p.client
    client.send(_data(2 * client.mss), p.now)
    [first, *_] = [decode_packet(d) for d in p.out_a() if type(d) is bytes]  # not the path MTU probe
    client.datagram_too_big(first.seq_nr, client.packet_size, p.now)
    assert [decode_packet(d).seq_nr for d in p.out_a() if d[0] == DATA] == [first.seq_nr]
    assert client.stats().retransmissions == 1


def test_an_icmp_too_big_error_shrinks_every_packet_at_once() -> None:
    p = Pair(UTPConfig(mtu_discovery=True))
    client = p.client
    client.send(_data(4 * client.mss), p.now)
    [first, *_] = [decode_packet(d) for d in p.out_a() if type(d) is bytes]  # not the smaller probe
    too_big = PathError(PathErrorKind.TOO_BIG, "fragmentation needed", max_datagram=1280)
    assert client.path_error(too_big, ST_DATA, first.seq_nr, p.now)
    assert client.packet_size == 1280 and client.mss == 1280 - 20
    resent = [decode_packet(d).seq_nr for d in p.out_a()]
    assert resent == [first.seq_nr]  # resent whole: a retransmission keeps its payload


def test_packets_are_sent_to_the_peer_address_only() -> None:
    p = Pair()
    p.client.send(b"x", p.now)
    assert [addr for _, addr in p.a.datagrams_to_send(p.now)] == [p.client.peer_addr]
    assert p.server.peer_addr == A
