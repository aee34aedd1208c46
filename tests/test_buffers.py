"""The byte-stream buffers alone (``txutp.engine._buffers``): no packets, no connection."""

from __future__ import annotations

from txutp.engine._buffers import (
    ACCEPTED,
    DROPPED,
    DUPLICATE,
    EOF_READY,
    HELD_AS_IS,
    HELD_CHUNK,
    PACKET_OVERHEAD,
    ReceiveBuffer,
    SendBuffer,
)

ISN = 65530  # close to the wrap


def receiver(capacity: int = 1000, max_reorder: int = 10) -> ReceiveBuffer:
    buf = ReceiveBuffer(capacity, max_reorder)
    buf.ack_nr = ISN
    return buf


def seq(i: int) -> int:
    return (ISN + i) & 0xFFFF


# --------------------------------------------------------------------------- sending


def test_send_buffer_takes_what_fits_and_asks_for_writable() -> None:
    buf = SendBuffer(capacity=10, low_water=4)
    assert buf.write(b"0123456") == 7 and not buf.want_writable
    assert buf.write(b"789abc") == 3 and buf.want_writable
    assert buf.free == 0 and len(buf) == 10
    assert buf.take(5) == b"01234"
    assert not buf.writable_due()  # 5 left, above the low-water mark
    buf.take(1)
    assert buf.writable_due() and not buf.writable_due()  # once


def test_nagle_gate_opens_when_the_small_packet_is_acknowledged() -> None:
    buf = SendBuffer(capacity=10, low_water=4)
    buf.nagle_seq = 0xFFFF
    buf.on_acked(0xFFFF)  # snd_una at the small packet: not yet acknowledged
    assert buf.nagle_seq == 0xFFFF
    buf.on_acked(0)  # past it, across the wrap
    assert buf.nagle_seq is None


# --------------------------------------------------------------------------- receiving


def test_in_order_data_is_delivered_and_acknowledged() -> None:
    buf = receiver()
    assert buf.on_data(seq(1), b"ab", False) == ACCEPTED
    assert buf.ack_nr == seq(1) and buf.ack_pending
    assert buf.take_delivery() == b"ab" and buf.take_delivery() is None


def test_reordered_data_waits_then_drains_in_order() -> None:
    buf = receiver()
    assert buf.on_data(seq(3), b"cc", False) == ACCEPTED
    assert buf.on_data(seq(2), b"bb", False) == ACCEPTED
    assert buf.take_delivery() is None and buf.ack_nr == ISN
    assert buf.sack(buf.ack_nr) == bytes([0b11, 0, 0, 0])
    assert buf.window() == 1000 - 4 - 2 * PACKET_OVERHEAD  # each waiting packet is charged its overhead
    buf.on_data(seq(1), b"aa", False)
    assert buf.take_delivery() == b"aabbcc" and buf.ack_nr == seq(3) and buf.sack(buf.ack_nr) is None


def test_duplicates_and_data_too_far_ahead() -> None:
    buf = receiver(max_reorder=4)
    buf.on_data(seq(1), b"a", False)
    assert buf.on_data(seq(1), b"a", False) == DUPLICATE
    assert buf.on_data(seq(3), b"c", False) == ACCEPTED
    assert buf.on_data(seq(3), b"c", False) == DUPLICATE
    assert buf.on_data(seq(10), b"j", False) == DROPPED  # more than max_reorder ahead


def test_what_does_not_fit_the_window_is_dropped() -> None:
    buf = receiver(capacity=10)
    buf.pause()
    assert buf.on_data(seq(1), b"x" * 8, False) == ACCEPTED
    assert buf.window() == 2
    assert buf.on_data(seq(2), b"x" * 8, False) == DROPPED
    assert buf.on_data(seq(3), b"x" * 8, False) == DROPPED  # out of order, no room either


def test_pause_holds_data_and_resume_hands_it_over() -> None:
    buf = receiver()
    buf.pause()
    buf.on_data(seq(1), b"held", False)
    assert buf.take_delivery() is None and buf.window() == 996
    assert buf.resume() is False
    assert buf.take_delivery() == b"held" and buf.window() == 1000


def test_fin_in_order_ends_the_stream_and_nothing_past_it_is_delivered() -> None:
    buf = receiver()
    buf.on_data(seq(3), b"past the end", False)  # a (hostile) packet beyond the FIN
    buf.on_data(seq(1), b"a", False)
    assert buf.on_data(seq(2), b"", True) == ACCEPTED | EOF_READY
    assert buf.take_delivery() == b"a"
    assert buf.on_data(seq(3), b"more", False) == DROPPED


def test_fin_out_of_order_waits_for_the_hole() -> None:
    buf = receiver()
    assert buf.on_data(seq(2), b"", True) == ACCEPTED
    assert buf.on_data(seq(2), b"", True) == DUPLICATE  # a retransmitted FIN is no drop
    assert buf.on_data(seq(1), b"a", False) == ACCEPTED | EOF_READY


def test_an_out_of_order_fin_without_room_is_not_remembered() -> None:
    buf = receiver(capacity=4)
    buf.pause()
    buf.on_data(seq(1), b"full", False)
    assert buf.on_data(seq(3), b"", True) == ACCEPTED  # a FIN takes no room
    buf2 = receiver(capacity=4)
    buf2.pause()
    buf2.on_data(seq(1), b"full", False)
    assert buf2.on_data(seq(3), b"fin with data", True) == DROPPED
    assert buf2.eof_seq is None  # so its retransmission is still taken later
    buf2.resume()
    buf2.take_delivery()
    buf2.on_data(seq(2), b"b", False)
    assert buf2.on_data(seq(3), b"fin", True) & EOF_READY


def test_discard_after_close_acknowledges_without_keeping() -> None:
    buf = receiver()
    buf.discard_all()
    assert buf.on_data(seq(1), b"thrown away", False) == ACCEPTED
    assert buf.take_delivery() is None and buf.window() == 1000


# --------------------------------------------------------------------------- receive memory


def test_small_held_payloads_are_coalesced_into_chunks_in_order() -> None:
    buf = receiver(capacity=4 * HELD_CHUNK)
    buf.pause()
    sent = [bytes([i % 251]) * (1 + i % (HELD_AS_IS - 1)) for i in range(600)]  # 150 KB, sizes 1 to 511
    for i, payload in enumerate(sent, 1):
        assert buf.on_data(seq(i), payload, False) == ACCEPTED
    total = sum(map(len, sent))
    assert buf.held_bytes == total == buf.used and buf.window() == 4 * HELD_CHUNK - total
    assert len(buf.held) == total // HELD_CHUNK and all(len(c) >= HELD_CHUNK for c in buf.held)
    assert buf.take_delivery() is None
    assert buf.resume() is False
    assert buf.take_delivery() == b"".join(sent) and buf.used == 0 and not buf.held_tail


def test_large_held_payloads_are_kept_as_they_are_between_the_small_ones() -> None:
    buf = receiver(capacity=4 * HELD_CHUNK)
    buf.pause()
    large = [bytes([i]) * HELD_AS_IS for i in range(3)]
    sent = [b"a", b"bc", large[0], large[1], b"d", large[2]]
    for i, payload in enumerate(sent, 1):
        buf.on_data(seq(i), payload, False)
    assert buf.held == [b"abc", large[0], large[1], b"d", large[2]] and buf.held[1] is large[0]
    assert not buf.held_tail and buf.held_bytes == 4 + 3 * HELD_AS_IS == buf.used
    buf.on_data(seq(7), b"ef", False)  # waits in the tail
    buf.resume()
    assert buf.take_delivery() == b"".join(sent) + b"ef"


def test_data_delivered_before_the_pause_comes_before_the_held_data() -> None:
    buf = receiver()
    buf.on_data(seq(1), b"before", False)
    buf.pause()
    buf.on_data(seq(2), b"while", False)
    buf.on_data(seq(3), b" paused", False)
    assert buf.used == 18 and buf.held_bytes == 12
    buf.resume()
    assert buf.take_delivery() == b"beforewhile paused"


def test_held_data_is_thrown_away_by_discard_and_clear() -> None:
    for drop in (ReceiveBuffer.discard_all, ReceiveBuffer.clear):
        buf = receiver(capacity=2 * HELD_CHUNK)
        buf.pause()
        for i in range(1, 250):
            buf.on_data(seq(i), b"x" * 300, False)  # a chunk and a partial tail
        assert buf.held and buf.held_tail
        drop(buf)
        assert buf.held == [] and not buf.held_tail and buf.held_bytes == 0 and buf.used == 0
        buf.resume()
        assert buf.take_delivery() is None


def test_a_fin_after_data_still_held_waits_for_resume() -> None:
    buf = receiver()
    buf.pause()
    buf.on_data(seq(1), b"tail only", False)  # not a whole chunk: only in the tail
    assert buf.on_data(seq(2), b"", True) == ACCEPTED  # no EOF_READY: data is held
    assert buf.resume() is True and buf.take_delivery() == b"tail only"


def test_tiny_out_of_order_packets_are_charged_their_overhead() -> None:
    buf = receiver(capacity=1000, max_reorder=100)
    n = 0
    while buf.on_data(seq(n + 2), b"ab", False) == ACCEPTED:
        n += 1
    assert n == 1500 // (PACKET_OVERHEAD + 2)  # the charge stops at 1.5 x capacity
    assert buf.reorder_bytes == 2 * n and buf.used == n * (PACKET_OVERHEAD + 2) and buf.window() == 0
    assert buf.on_data(seq(n + 2), b"", False) == DROPPED  # an empty packet costs its overhead too
    assert buf.on_data(seq(n + 3), b"", True) == ACCEPTED  # but the one empty FIN is taken
    buf.on_data(seq(1), b"ab", False)
    assert buf.take_delivery() == b"ab" * (n + 1) and buf.used == PACKET_OVERHEAD  # the FIN waits
    assert buf.on_data(seq(n + 2), b"ab", False) == ACCEPTED | EOF_READY
    assert buf.take_delivery() == b"ab" and buf.used == 0 and buf.window() == 1000


def test_full_size_packets_that_fit_the_window_are_taken_despite_their_overhead() -> None:
    buf = receiver(capacity=11 * 1382, max_reorder=100)
    buf.pause()
    for i in range(2, 12):  # all the window but its first packet, which is lost
        assert buf.on_data(seq(i), bytes(1382), False) == ACCEPTED
    assert buf.window() == 1382 - 10 * PACKET_OVERHEAD  # less than the retransmission needs
    assert buf.on_data(seq(1), bytes(1382), False) == ACCEPTED  # but it was sent within the window
    assert buf.reorder == {} and buf.held_bytes == 11 * 1382 and buf.window() == 0


def test_out_of_order_packets_drain_into_the_held_chunks() -> None:
    buf = receiver(capacity=2000, max_reorder=100)
    buf.pause()
    for i in (3, 2, 5, 4):
        buf.on_data(seq(i), bytes([i]) * 3, False)
    assert buf.used == 12 + 4 * PACKET_OVERHEAD
    buf.on_data(seq(1), b"\x01" * 3, False)
    assert buf.reorder == {} and buf.held_bytes == 15 == buf.used and buf.ack_nr == seq(5)
    buf.resume()
    assert buf.take_delivery() == b"".join(bytes([i]) * 3 for i in range(1, 6))
