"""The byte-stream buffers alone (``txutp.engine._buffers``): no packets, no connection."""

from __future__ import annotations

from txutp.engine._buffers import ACCEPTED, DROPPED, DUPLICATE, EOF_READY, ReceiveBuffer, SendBuffer

ISN = 65530  # close to the wrap


def receiver(capacity: int = 100, max_reorder: int = 10) -> ReceiveBuffer:
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
    assert buf.window() == 100 - 4
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
    assert buf.take_delivery() is None and buf.window() == 96
    assert buf.resume() is False
    assert buf.take_delivery() == b"held" and buf.window() == 100


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
    assert buf.take_delivery() is None and buf.window() == 100
