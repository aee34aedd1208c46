"""Several SACK holes in one libutp-style ACK: retransmitted lowest first (sans-IO, packet by packet).

Found against a real peer (utp-native behind a lossy relay) and reproduced here without one;
a failing test documents the engine bug (see the interop report for the packet trace).
"""

from __future__ import annotations

from tests.helpers import Pair, header
from tests.test_connection import _payloads
from txutp.engine import UTPConfig, decode_packet


def _libutp_ack(p: Pair, ack_nr: int, sacked: list[int], wnd: int = 1 << 20) -> bytes:
    """A STATE as libutp sends it: ``ack_nr`` and a 4-byte SACK (bit i = ack_nr + 2 + i)."""
    mask = bytearray(4)
    for seq in sacked:
        i = (seq - ack_nr - 2) & 0xFFFF
        if i < 32:
            mask[i >> 3] |= 1 << (i & 7)
    srv_seq = p.server.final_seq_nr
    return header(0x21, p.client.recv_id, srv_seq, ack_nr, ext=1, wnd=wnd) + bytes([0, 4]) + bytes(mask)


def _after_reordering_window(p: Pair) -> None:
    """Let the client's reordering window pass: the holes are lost now, not merely late."""
    deadline = p.client.get_timer()
    assert deadline is not None and deadline - p.now <= p.client.stats().reordering_window + 1e-9
    p.now = deadline
    p.client.handle_timer(p.now)


def test_several_sack_holes_are_retransmitted_lowest_first() -> None:
    """Found against utp-native behind a lossy relay (3 % loss): one libutp ACK showed three holes.

    libutp ACKs once per read batch with a 4-byte SACK, so one ACK can reveal several losses at
    once, and packets more than 33 beyond its ack_nr can never be selectively acknowledged. The
    hole at snd_una must be repaired first: until it is, the peer's cumulative ACK cannot move and
    nothing beyond its SACK range can be acknowledged. txutp marks the holes lost in ascending
    order but queues each fast retransmission with ``appendleft`` (``_mark_lost``), so they go
    out highest first, and the one-packet ``_fast_credit`` is spent on the highest hole; with the
    window full the snd_una hole then waits for the RTO (a 0.5 s stall per occurrence in
    ``python -m bench.interop_bench --loss 0.03``: txutp -> utp-native ran at 1.5-3.4 MB/s against
    33-42 MB/s to libtorrent, whose ACKs are per packet).
    """
    n = 60
    p = Pair(UTPConfig(mtu_discovery=False, initial_cwnd=n * 1382))
    p.client.send(_payloads(n), p.now)
    sent = [decode_packet(d).seq_nr for d in p.out_a()]
    assert len(sent) == n
    s = sent
    holes = [s[1], s[7], s[14]]
    p.now += 0.01
    # The peer got s[0] and everything else up to its SACK range, except the three holes.
    ack = _libutp_ack(p, s[0], [x for x in s[2:] if x not in holes])
    p.to_a([ack])
    _after_reordering_window(p)
    resent = [decode_packet(d).seq_nr for d in p.out_a() if d[0] == 0x01]
    assert resent, "no fast retransmission at all"
    assert resent[0] == s[1], f"the snd_una hole {s[1]} must go first, got {resent}"
    assert resent == sorted(resent, key=lambda x: (x - s[0]) & 0xFFFF), resent


def test_with_the_window_full_the_fast_retransmission_is_the_snd_una_hole() -> None:
    """The same ACK with no room in the window: the one retransmission allowed beyond it
    (``_fast_credit``) must repair snd_una, or the connection waits for the RTO."""
    n = 60
    p = Pair(UTPConfig(mtu_discovery=False, initial_cwnd=n * 1382))
    p.client.send(_payloads(n), p.now)
    s = [decode_packet(d).seq_nr for d in p.out_a()]
    holes = [s[1], s[7], s[14]]
    p.now += 0.01
    # Beyond the SACK range (s[34:]) 26 packets stay in flight; the peer's window is just that.
    ack = _libutp_ack(p, s[0], [x for x in s[2:] if x not in holes], wnd=26 * 1382)
    p.to_a([ack])
    _after_reordering_window(p)
    resent = [decode_packet(d).seq_nr for d in p.out_a() if d[0] == 0x01]
    assert resent == [s[1]], f"expected the snd_una hole {s[1]} alone, got {resent}"
