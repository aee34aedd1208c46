"""The receiving side of a connection: every packet routed to it.

:meth:`ConnectionReceiving.receive_packet` takes a decoded packet: a repeated
SYN, a RESET (checked as RFC 5961 asks, ``_resets.py``), the SYN-ACK or the
acceptor's proof that completes the handshake, then the ACK fields (to
:class:`~txutp.engine._recovery.Recovery`) and the payload (to the
:class:`~txutp.engine._buffers.ReceiveBuffer`).
:meth:`ConnectionReceiving.receive_in_order_data` is the common case of a bulk
receiver, from raw header fields, at half the cost; it declines everything else.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._buffers import DROPPED, DUPLICATE, EOF_READY
from ._connection_base import TIMER_CONFIRM, TIMER_ZERO_WINDOW_PROBE, ConnectionBase
from ._events import Connected, ConnectionClosed, ConnectionReset, Writable
from ._packet import (
    HEADER_SIZE,
    SEQ_MASK,
    ST_DATA,
    ST_FIN,
    ST_RESET,
    ST_STATE,
    ST_SYN,
    TS_MASK,
    VERSION,
    Packet,
    to_timestamp_us,
)
from ._state import ConnectionState, Input
from ._timers import Timer

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ConnectionReceiving"]

_NO_SAMPLE = 0x7FFFFFFF  # uTorrent bug: treated like 0, "no sample"
_DATA_V1 = (ST_DATA << 4) | VERSION
_TIMESTAMP = struct.Struct(">I")


class ConnectionReceiving(ConnectionBase):
    """Packet processing (mixed into ``UTPConnection``)."""

    __slots__ = ()

    def receive_in_order_data(self: Self, ts: int, wnd: int, seq: int, ack: int, payload: bytes, now: float) -> bool:
        """The receiver's common case, from the raw header fields; ``False`` (nothing changed) otherwise.

        An extension-free DATA packet, next in order, on a connection that reads,
        holds nothing out of order and has nothing of its own unacknowledged or
        unsent, whose ``ack_nr`` acknowledges everything we sent: it only moves
        the payload to the reader and records the peer's window and timestamp.
        :meth:`receive_packet` does the same for it, at twice the cost.
        """
        if self.state is not ConnectionState.CONNECTED:
            return False
        recv = self._recv
        rec = self._recovery
        if (
            seq != (recv.ack_nr + 1) & SEQ_MASK
            or ack != (rec.next_seq - 1) & SEQ_MASK
            or recv.reorder
            or recv.paused
            or recv.discard
            or rec.has_unacked
            or self._send.unsent
        ):
            return False
        self.packets_received += 1
        self._last_heard = now
        if ts:
            self._reply_micro = reply = (int(now * 1_000_000) - ts) & TS_MASK
            if now >= self._next_reverse_sample:
                self._next_reverse_sample = now + 0.01
                rec.cc.on_reverse_delay(now=now, delay_us=reply)
        self._timers[TIMER_CONFIRM] = None
        rec.peer_wnd = wnd
        if wnd >= self.mss:
            self._timers[TIMER_ZERO_WINDOW_PROBE] = None
            self._probe_interval = self.config.initial_rto
        recv.ack_pending = True
        recv.ack_nr = seq
        if payload:
            size = len(payload)
            recv.deliver.append(payload)
            recv.deliver_bytes += size
            recv.received_bytes += size
        if self.wakeup is not None:
            self.wakeup(self)
        return True

    def receive_in_order_run(
        self: Self, headers: Iterator[tuple[int, ...]], view: memoryview, segment: int, now: float
    ) -> int:
        """:meth:`receive_in_order_data` for the longest prefix of a GRO run it covers; return its length.

        ``view`` holds datagrams of ``segment`` bytes back to back (more than a
        header each) and ``headers`` their headers, decoded in one pass
        (``struct.iter_unpack``). Each taken datagram is an extension-free DATA for
        this connection, next in order, with a timestamp, acknowledging everything
        we sent; the run's payloads reach the reader as one piece. The state that
        follows is what the datagrams taken one by one would leave.
        """
        if self.state is not ConnectionState.CONNECTED:
            return 0
        recv = self._recv
        rec = self._recovery
        if recv.reorder or recv.paused or recv.discard or rec.has_unacked or self._send.unsent:
            return 0
        expected = (recv.ack_nr + 1) & SEQ_MASK
        acked = (rec.next_seq - 1) & SEQ_MASK
        recv_id = self.recv_id
        mss = self.mss
        taken = 0
        last_ts = last_wnd = 0
        opened = False  # did any of them advertise room for a packet?
        for first, ext, cid, ts, _, wnd, seq, ack in headers:
            if first != _DATA_V1 or ext or cid != recv_id or seq != expected or ack != acked or not ts:
                break
            taken += 1
            expected = (seq + 1) & SEQ_MASK
            last_ts = ts
            last_wnd = wnd
            if wnd >= mss:
                opened = True
        if not taken:
            return 0
        self.packets_received += taken
        self._last_heard = now
        micros = int(now * 1_000_000)
        if now >= self._next_reverse_sample:  # the run's first datagram takes the sample, as one by one
            self._next_reverse_sample = now + 0.01
            rec.cc.on_reverse_delay(now=now, delay_us=(micros - _TIMESTAMP.unpack_from(view, 4)[0]) & TS_MASK)
        self._reply_micro = (micros - last_ts) & TS_MASK
        self._timers[TIMER_CONFIRM] = None
        rec.peer_wnd = last_wnd
        if opened:
            self._timers[TIMER_ZERO_WINDOW_PROBE] = None
            self._probe_interval = self.config.initial_rto
        recv.ack_pending = True
        recv.ack_nr = (expected - 1) & SEQ_MASK
        payload = b"".join([view[at + HEADER_SIZE : at + segment] for at in range(0, taken * segment, segment)])
        size = len(payload)
        recv.deliver.append(payload)
        recv.deliver_bytes += size
        recv.received_bytes += size
        if self.wakeup is not None:
            self.wakeup(self)
        return taken

    def receive_packet(self, pkt: Packet, now: float) -> None:
        """Process one packet addressed to this connection (already routed by id and address)."""
        state = self.state
        if state is ConnectionState.CLOSED:
            return
        ptype = pkt.type
        self.packets_received += 1
        rec = self._recovery
        if ptype == ST_SYN:
            # A duplicate SYN: our SYN-ACK was lost; ACK it again (while unconfirmed).
            if state is ConnectionState.SYN_RECV and pkt.seq_nr == self._syn_seq:
                self._recv.ack_pending = True
                self._wake()
            else:
                self.dropped_packets += 1
            return
        if ptype == ST_RESET:
            if state is ConnectionState.SYN_RECV and pkt.seq_nr == (self._syn_seq + 1) & SEQ_MASK:
                # The initiator gave up before our SYN-ACK reached it (its ack_nr says nothing yet):
                # its next seq_nr on our connection id is as exact as RFC 5961 asks.
                self._terminate(Input.RESET_RECEIVED, ConnectionReset(), now)
            elif rec.acceptable(pkt.ack_nr, reset=True) and self._reset_exact(pkt, now):
                if state is ConnectionState.LINGER:
                    self._fire(Input.RESET_RECEIVED)
                elif state is ConnectionState.CLOSING and self._send.fin_seq is not None and rec.only_fin_unacked():
                    # Every byte was acknowledged both ways; the peer forgot us before our FIN's
                    # ACK got through (its linger ended). Nothing was lost: a clean close.
                    self._terminate(Input.RESET_RECEIVED, ConnectionClosed(), now)
                else:
                    self._terminate(
                        Input.RESET_RECEIVED, ConnectionReset(refused=state is ConnectionState.SYN_SENT), now
                    )
            else:
                self.dropped_packets += 1
            return
        if not rec.acceptable(pkt.ack_nr):
            self.dropped_packets += 1
            return
        self._last_heard = now
        ts = pkt.timestamp_us
        if ts:
            self._reply_micro = reply = (to_timestamp_us(now) - ts) & TS_MASK
            if now >= self._next_reverse_sample:
                # A few samples a second suffice to follow the clocks' drift.
                self._next_reverse_sample = now + 0.01
                rec.cc.on_reverse_delay(now=now, delay_us=reply)

        if state is ConnectionState.SYN_SENT:
            if ptype == ST_DATA:
                # Data overtook the SYN-ACK. It may not be the acceptor's first packet, so
                # we cannot place it in the stream yet; the peer resends it.
                self.dropped_packets += 1
                return
            # The SYN-ACK: its seq_nr is the acceptor's first future DATA (not incremented).
            # Or a FIN instead: libtorrent refuses a SYN for a torrent it will not serve so;
            # the connection then opens and ends at once (as libutp and libtorrent see it).
            self._recv.ack_nr = (pkt.seq_nr - 1) & SEQ_MASK
            rec.peer_wnd = pkt.wnd_size
            if self._syn_tries == 0:
                rec.rtt.on_sample(now - self._syn_sent_at)
            self._fire(Input.SYN_ACK_RECEIVED)
            self._events.append(Connected())
            # Confirm at once, so a server that speaks first may do so.
            self._recv.ack_pending = True
            if self._send.write_closed:
                self._fire(Input.SHUTDOWN_WRITE)
            if ptype == ST_STATE:
                self._timers.set(Timer.CONFIRM, now + rec.rtt.rto)
                self._wake()
                return
            state = self.state  # the FIN: process it below
        elif state is ConnectionState.SYN_RECV:
            self._fire(Input.PEER_CONFIRMED)
            self._events.append(Connected())
            state = self.state
        elif self.initiator:  # (only an initiator confirms, so only it has a CONFIRM timer)
            if ptype == ST_STATE and pkt.ack_nr == self._syn_seq and rec.next_seq == (self._syn_seq + 1) & SEQ_MASK:
                # A repeated SYN-ACK before we sent any data: our confirming ACK was lost.
                self._recv.ack_pending = True
            elif self._timers[TIMER_CONFIRM] is not None:
                self._timers[TIMER_CONFIRM] = None  # the acceptor has spoken beyond its SYN-ACK

        tsd = pkt.timestamp_diff_us
        if tsd == 0 or tsd == _NO_SAMPLE:
            delay = echo = None
        else:
            delay = tsd
            # The send time, in our clock, of the packet that made the peer send this one.
            echo = (ts - tsd) & TS_MASK if ts else None
        self._process_ack(pkt, delay, echo, now)
        if self.state is ConnectionState.CLOSED:
            return

        if ptype in (ST_DATA, ST_FIN):
            self._process_data(pkt, now)
        self._wake()

    def _reset_exact(self, pkt: Packet, now: float) -> bool:
        """Is a RESET (already within the window) exact? If not, send a challenge ACK (``_resets.py``)."""
        if self.state is ConnectionState.SYN_SENT:
            return True  # it answers our SYN: acceptable() already required its seq_nr
        nxt = self._recovery.next_seq
        resets = self._resets
        if resets.is_exact(pkt.ack_nr, pkt.seq_nr, next_seq=nxt, expected_seq=(self._recv.ack_nr + 1) & SEQ_MASK):
            return True
        if resets.challenge(nxt, self._recovery.rtt.srtt, now):
            self._recv.ack_pending = True
            self._wake()
        return False

    def _process_ack(self, pkt: Packet, delay: int | None, echo: int | None, now: float) -> None:
        rec = self._recovery
        una = rec.snd_una
        rec.on_ack(pkt.ack_nr, pkt.sack, pkt.wnd_size, delay, echo, pkt.type == ST_STATE, now)
        send = self._send
        if rec.snd_una != una:
            send.on_acked(rec.snd_una)
            self._timers[TIMER_CONFIRM] = None
        if rec.peer_wnd >= self.mss or rec.peer_wnd > len(send.unsent):
            self._timers[TIMER_ZERO_WINDOW_PROBE] = None
            self._probe_interval = self.config.initial_rto
        if rec.fin_acked and self.state is not ConnectionState.LINGER:
            self._on_fin_acked(now)
        if send.writable_due():
            self._push_event(Writable())

    def _process_data(self, pkt: Packet, now: float) -> None:
        result = self._recv.on_data(pkt.seq_nr, pkt.payload, pkt.type == ST_FIN)
        if result & DUPLICATE:
            self.duplicate_packets += 1
        elif result & DROPPED:
            self.dropped_packets += 1
        elif result & EOF_READY:
            self._deliver_eof(now)
