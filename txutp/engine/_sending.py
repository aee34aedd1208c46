"""The sending side of a connection: what goes out, and every packet we build.

:meth:`ConnectionSending._fill` sends retransmissions first, then a path MTU
probe, then runs of full packets (:meth:`~ConnectionSending._send_run`: one
header template, one record call) and the rest one by one, as far as the
congestion window and the peer's window allow; then the FIN. The other packets
are the bare ACK (``ST_STATE``, with a selective ACK when data is missing), the
SYN and the SYN-ACK, tail-loss and zero-window probes. The path MTU glue sits
here too: a probe's outcome, ``EMSGSIZE`` and ICMP "too big" resize packets.
"""

from __future__ import annotations

import struct

from ._connection_base import LIVE_SENDING, ConnectionBase
from ._events import Writable
from ._mtu import DontFragment
from ._packet import HEADER_SIZE, SEQ_MASK, ST_DATA, ST_FIN, ST_STATE, ST_SYN, TS_MASK, VERSION, write_packet
from ._recovery import SentPacket
from ._timers import Timer

__all__ = ["ConnectionSending"]

#: The header of a DATA packet up to its sequence number, for runs (``_send_run``).
_DATA_HEAD = struct.Struct(">BBHIII")
_DATA_V1 = (ST_DATA << 4) | VERSION


class ConnectionSending(ConnectionBase):
    """Packet assembly and the decisions of what to send (mixed into ``UTPConnection``)."""

    __slots__ = ()

    def _fill(self, now: float) -> None:
        """Send retransmissions, then new data and the FIN, as far as the windows allow."""
        rec = self._recovery
        send = self._send
        unsent = send.unsent
        if rec.idle_since is not None and unsent:
            if now - rec.idle_since > rec.rtt.rto:
                rec.cc.on_timeout(now=now, idle=True)  # a window unused for a while is no longer valid
            rec.idle_since = None
        cwnd = rec.cc.cwnd
        peer_wnd = rec.peer_wnd
        window = peer_wnd if peer_wnd < cwnd else cwnd
        if rec.lost:
            out = self._out
            while (item := rec.next_retransmission(window, now)) is not None:
                seq, entry = item
                out.append(self._data_datagram(seq, entry.payload, entry.is_fin, now))
            if rec.lost:
                rec.cwnd_limited = True  # the window is full
                return
        mss = self.mss
        mtu = self._mtu
        if unsent and mtu is not None and self._probe_seq is None and cwnd >= 3 * self.packet_size:
            # A path MTU probe goes first or not at all (the room for it only shrinks).
            probe = mtu.probe_size(now)
            if probe is not None and len(unsent) >= probe - HEADER_SIZE <= window - rec.bytes_in_flight:
                self._send_new(send.take(probe - HEADER_SIZE), False, now, probe=True)
        full = min(len(unsent), window - rec.bytes_in_flight) // mss
        if full > 1:
            self._send_run(full, now)
        while unsent:
            size = len(unsent)
            if size > mss:
                size = mss
            in_flight = rec.bytes_in_flight
            allowed = window - in_flight
            if allowed < size:
                if in_flight > 0 or allowed <= 0:
                    if allowed <= 0 and in_flight == 0 and self._timers.get(Timer.ZERO_WINDOW_PROBE) is None:
                        self._timers.set(Timer.ZERO_WINDOW_PROBE, now + self._probe_interval)
                    break
                size = allowed
            if size < mss and self.config.nagle and send.nagle_seq is not None and not send.write_closed:
                break
            if size < mss:
                send.nagle_seq = rec.next_seq
            self._send_new(send.take(size), False, now)
        # Did the window, not the application, stop us? (Judged here, where it is known,
        # rather than from what is in flight when an ACK arrives: ACKs come in batches.)
        rec.cwnd_limited = bool(unsent)
        if send.write_closed and not unsent and send.fin_seq is None and self.state in LIVE_SENDING:
            send.fin_seq = rec.next_seq
            self._send_new(b"", True, now)
        if send.writable_due():
            self._push_event(Writable())

    def _send_new(self, payload: bytes, is_fin: bool, now: float, *, probe: bool = False) -> None:
        seq, entry = self._recovery.on_sent(payload, is_fin, now)
        datagram = self._data_datagram(seq, payload, is_fin, now)
        if probe:
            entry.probe = True
            self._probe_seq = seq
            self.mtu_probes += 1
            datagram = DontFragment(datagram)
        self._out.append(datagram)
        self.bytes_sent += len(payload)

    def _send_run(self, count: int, now: float) -> None:
        """Send ``count`` full-size DATA packets at once: one header template, one record call.

        The same datagrams as ``count`` calls of :meth:`_send_new`, at about half the
        cost: each payload goes from the send buffer into its datagram, and the
        in-flight record's copy is sliced from the datagram (bytes: a view would be
        one more object for the garbage collector to follow per packet in flight).
        """
        mss = self.mss
        unsent = self._send.unsent
        size = count * mss
        rec = self._recovery
        recv = self._recv
        wnd = recv.window()
        recv.sent_window = wnd
        if not recv.reorder:
            recv.ack_pending = False
        head = _DATA_HEAD.pack(_DATA_V1, 0, self.send_id, int(now * 1_000_000) & TS_MASK, self._reply_micro, wnd)
        tail = recv.ack_nr.to_bytes(2, "big")
        seq = rec.next_seq
        with memoryview(unsent) as view:
            datagrams = [
                b"".join((head, ((seq + k) & SEQ_MASK).to_bytes(2, "big"), tail, view[at : at + mss]))
                for k, at in enumerate(range(0, size, mss))
            ]
        del unsent[:size]
        rec.on_sent_run([d[HEADER_SIZE:] for d in datagrams], now)
        self._out += datagrams
        self.packets_sent += count
        self.bytes_sent += size

    def _send_tail_probe(self, now: float) -> None:
        """The flight's last packets went unacknowledged: send one packet to draw an ACK (RFC 8985)."""
        send = self._send
        rec = self._recovery
        if send.unsent and self.state in LIVE_SENDING and rec.peer_wnd >= min(self.mss, len(send.unsent)):
            self._send_new(send.take(min(self.mss, len(send.unsent))), False, now)  # new data, past cwnd
        else:
            rec.probe_with_retransmission(now)
        self._wake()

    def _data_datagram(self, seq: int, payload: bytes, is_fin: bool, now: float) -> bytes:
        """A DATA or FIN datagram, fresh header included; the ACK rides on it."""
        recv = self._recv
        wnd = recv.window()
        recv.sent_window = wnd
        self.packets_sent += 1
        if not recv.reorder:
            recv.ack_pending = False  # with data missing, a STATE still carries the selective ACK
        return write_packet(
            ST_FIN if is_fin else ST_DATA, self.send_id, now, self._reply_micro, wnd, seq, recv.ack_nr, payload
        )

    def _send_state(self, now: float, *, keepalive: bool = False) -> None:
        """A bare ACK (ST_STATE), with a selective ACK when data is missing."""
        recv = self._recv
        recv.ack_pending = False
        wnd = recv.window()
        recv.sent_window = wnd
        ack = recv.ack_nr
        if keepalive:
            ack = (ack - 1) & SEQ_MASK  # libutp's keep-alive form
            sack = None
        else:
            sack = recv.sack(ack)
        seq = self._recovery.next_seq
        self._out.append(write_packet(ST_STATE, self.send_id, now, self._reply_micro, wnd, seq, ack, b"", sack))
        self.packets_sent += 1
        fin_seq = self._send.fin_seq
        if fin_seq is not None and not keepalive:
            # After our FIN, libtorrent drops any packet numbered past the FIN (its own FIN
            # takes no sequence number), while libutp expects FIN + 1: send both forms.
            self._out.append(write_packet(ST_STATE, self.send_id, now, self._reply_micro, wnd, fin_seq, ack, b"", sack))
            self.packets_sent += 1

    def _send_syn(self, now: float, *, retry: bool = False) -> None:
        self._syn_sent_at = now
        # The SYN carries the initiator's receive id.
        self._out.append(write_packet(ST_SYN, self.recv_id, now, 0, self._recv.window(), self._syn_seq, 0))
        self._timers.set(Timer.SYN, now + self.config.syn_timeout * (1 << self._syn_tries))
        self.packets_sent += 1
        if retry:
            self._recovery.count_retransmission()
        self._wake()

    def _send_syn_ack(self, now: float) -> None:
        """ST_STATE with seq_nr = our ISN, not incremented, and ack_nr = the SYN's seq_nr."""
        self._recv.ack_pending = False
        wnd = self._recv.window()
        self._out.append(write_packet(ST_STATE, self.send_id, now, 0, wnd, self._recovery.next_seq, self._syn_seq))
        self.packets_sent += 1

    def _send_zero_window_probe(self, now: float) -> None:
        """The peer's window stayed shut: send one packet anyway so its ACK tells us more."""
        send = self._send
        if self._recovery.has_unacked or not send.unsent or self.state not in LIVE_SENDING:
            return
        self._send_new(send.take(min(self.mss, len(send.unsent))), False, now)
        self._probe_interval = min(self._probe_interval * 2, self.config.zero_window_probe_max)

    # ------------------------------------------------------------------ path MTU

    def _probe_outcome(self, entry: SentPacket, got_through: bool) -> None:
        """A path MTU probe was acknowledged or lost; resize regular packets accordingly."""
        entry.probe = False
        self._probe_seq = None
        mtu = self._mtu
        if mtu is None:
            return
        size = len(entry.payload) + HEADER_SIZE
        if got_through:
            mtu.probe_acked(size)
        else:
            mtu.probe_lost(size)
        self._set_packet_size(mtu.packet_size)

    def _set_packet_size(self, size: int) -> None:
        if size != self.packet_size:
            self.packet_size = size
            self.mss = size - HEADER_SIZE
            self._recovery.mss = self.mss
            self._recovery.cc.set_mss(self.mss)

    def datagram_too_big(self, seq_nr: int, size: int, now: float) -> None:
        """Our datagram ``seq_nr`` of ``size`` bytes was refused locally (``EMSGSIZE``).

        A probe is simply lost (its retransmission goes without DF); otherwise the
        search ceiling comes down and the packet is resent.
        """
        rec = self._recovery
        entry = rec.find(seq_nr)
        if entry is None:
            return
        if self._mtu is not None:
            if entry.probe:
                entry.probe = False  # its outcome is decided here, not by the loss that follows
                self._probe_seq = None
            self._mtu.probe_lost(size, too_big=True)
            self._set_packet_size(self._mtu.packet_size)
        rec.mark_lost(seq_nr, now)
        self._wake()

    def _path_too_big(self, seq_nr: int, size: int, limit: int, now: float) -> None:
        """A router dropped our ``size``-byte packet ``seq_nr``: the path takes at most ``limit`` bytes."""
        if self._mtu is not None:
            self._mtu.path_limit(limit)
        self.datagram_too_big(seq_nr, size, now)
