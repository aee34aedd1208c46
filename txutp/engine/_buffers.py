"""The byte stream's buffers: what we have yet to send, and what arrived but is not delivered yet.

:class:`SendBuffer` holds the bytes the application gave us and not yet put
into packets, with the end-of-stream (FIN) decision, the Nagle gate and the
low-water mark that produces ``Writable``. :class:`ReceiveBuffer` puts arriving
payloads in order: ``ack_nr`` is its in-order edge, the reorder map holds what
came early, and in-order payloads wait in the deliver queue (or, while the
application paused reading, in the held queue). Neither builds packets nor
raises events: they return what happened and the connection acts on it.

Memory: the payloads the receive buffer holds (reorder map, held and deliver
queues) count against ``recv_buffer_size``, the most we advertise; out-of-order
packets are also charged :data:`PACKET_OVERHEAD` each and small held payloads are
coalesced, so tiny packets cannot make it hold more than about twice that.
"""

from __future__ import annotations

from ._packet import SEQ_MASK, sack_bitmask

__all__ = [
    "ACCEPTED",
    "DROPPED",
    "DUPLICATE",
    "EOF_READY",
    "HELD_AS_IS",
    "HELD_CHUNK",
    "PACKET_OVERHEAD",
    "ReceiveBuffer",
    "SendBuffer",
]

# What ReceiveBuffer.on_data reports (bit flags).
ACCEPTED = 1  # stored or delivered
DUPLICATE = 2  # already had it
DROPPED = 4  # no room, too far ahead, or past the end of the stream
EOF_READY = 8  # the stream is complete up to the peer's FIN: end it (once nothing is held)

#: What an out-of-order packet costs beyond its payload while it waits in the reorder
#: map (the kernel's "truesize"): charged against the window with the payload.
#: Measured with tracemalloc on CPython 3.11, 2-byte payloads, 8 to 40,000 entries:
#: 93 to 121 bytes an entry (bytes header 33, int key 28, dict slot 36 to 60 with the
#: table's fill), some 15 more once the allocator rounds each object up to 16 bytes.
#: A full 1382-byte packet is charged 9 % more than its payload.
PACKET_OVERHEAD = 128
#: While reading is paused, in-order payloads smaller than HELD_AS_IS are copied into
#: chunks of HELD_CHUNK bytes, so small packets leave no per-packet objects; larger ones
#: are held as they are (a bytes object and a list slot cost them under 10 %).
HELD_CHUNK = 64 * 1024
HELD_AS_IS = 512


class SendBuffer:
    """Bytes accepted from the application and not yet sent, and the end of our stream."""

    __slots__ = ("capacity", "fin_seq", "low_water", "nagle_seq", "unsent", "want_writable", "write_closed")

    def __init__(self, capacity: int, low_water: int) -> None:
        self.capacity = capacity
        self.low_water = low_water
        self.unsent = bytearray()
        #: The application wants a ``Writable`` once the buffer drains to ``low_water``.
        self.want_writable = False
        #: No more data will come (half-close or close); the FIN follows the last byte.
        self.write_closed = False
        #: Our FIN's sequence number once sent.
        self.fin_seq: int | None = None
        #: An undersized packet in flight (Nagle holds the next undersized one back).
        self.nagle_seq: int | None = None

    def __len__(self) -> int:
        return len(self.unsent)

    @property
    def free(self) -> int:
        """How many more bytes :meth:`write` would accept now."""
        free = self.capacity - len(self.unsent)
        return free if free > 0 else 0

    def write(self, data: bytes) -> int:
        """Take as much of ``data`` as fits; return how much. A full buffer asks for ``Writable``."""
        room = self.capacity - len(self.unsent)
        n = len(data)
        if n >= room:
            self.want_writable = True
            if n > room:
                n = max(room, 0)
                data = data[:n]
        if n:
            self.unsent += data
        return n

    def take(self, size: int) -> bytes:
        """Remove and return the next ``size`` bytes (the payload of one packet)."""
        unsent = self.unsent
        payload = bytes(unsent[:size])
        del unsent[:size]
        return payload

    def writable_due(self) -> bool:
        """Has the buffer drained enough for the ``Writable`` the application waits for? (Once.)"""
        if self.want_writable and len(self.unsent) <= self.low_water:
            self.want_writable = False
            return True
        return False

    def on_acked(self, snd_una: int) -> None:
        """The peer acknowledged everything below ``snd_una``: the undersized packet may be among it."""
        nagle = self.nagle_seq
        if nagle is not None and ((snd_una - nagle - 1) & SEQ_MASK) < 0x7FFF:
            self.nagle_seq = None

    def clear(self) -> None:
        self.unsent.clear()


class ReceiveBuffer:
    """Reassembly of the peer's stream, flow control, and what our next ACK must say.

    Memory bound: :attr:`used` charges the payloads held (reorder map, held and
    deliver queues) plus :data:`PACKET_OVERHEAD` per out-of-order packet, and the
    window advertised is ``capacity`` less that. A packet to reorder or hold is
    dropped if the payloads would pass ``capacity`` or the charge 1.5 x ``capacity``
    (the slack lets in full-size packets sent against a window advertised before
    their overhead showed). Payloads under :data:`HELD_AS_IS` bytes are held
    coalesced into :data:`HELD_CHUNK` chunks. So one buffer holds at most about
    2 x ``capacity`` whatever the packet sizes (tracemalloc: 1.4 x at most, with
    2-byte packets reordered; tests/test_receive_memory.py). Only the deliver queue
    keeps one object per packet, until the application takes its events.
    """

    __slots__ = (
        "ack_nr",
        "ack_pending",
        "capacity",
        "deliver",
        "deliver_bytes",
        "discard",
        "eof_delivered",
        "eof_seq",
        "held",
        "held_bytes",
        "held_tail",
        "max_reorder",
        "paused",
        "received_bytes",
        "reorder",
        "reorder_charge",
        "sent_window",
    )

    def __init__(self, capacity: int, max_reorder: int) -> None:
        self.capacity = capacity
        self.max_reorder = max_reorder
        #: The last sequence number received in order.
        self.ack_nr = 0
        self.reorder: dict[int, bytes] = {}
        #: What the reorder map is charged: its payloads plus PACKET_OVERHEAD each.
        self.reorder_charge = 0
        #: The peer's FIN, once seen, and whether the end of stream was reported.
        self.eof_seq: int | None = None
        self.eof_delivered = False
        #: Reading paused by the application: in-order data is held, the window closes.
        self.paused = False
        #: Closed by us: data is acknowledged and thrown away.
        self.discard = False
        #: Held data: chunks and large payloads, then the chunk being filled (``held_bytes``: both).
        self.held: list[bytes] = []
        self.held_tail = bytearray()
        self.held_bytes = 0
        self.deliver: list[bytes] = []
        self.deliver_bytes = 0
        self.received_bytes = 0
        #: Something arrived that our next packet must acknowledge.
        self.ack_pending = False
        #: The window our last packet advertised.
        self.sent_window = capacity

    # ------------------------------------------------------------------ arrivals

    def on_data(self, seq: int, payload: bytes, is_fin: bool) -> int:
        """Place one DATA or FIN packet; return ACCEPTED, DUPLICATE or DROPPED, maybe with EOF_READY."""
        self.ack_pending = True
        d = (seq - self.ack_nr) & SEQ_MASK
        if d == 0 or d >= 0x8000:
            return DUPLICATE
        eof = self.eof_seq
        if eof is not None and ((seq - eof - 1) & SEQ_MASK) < 0x7FFF:
            return DROPPED  # past the FIN
        size = len(payload)
        if d == 1:
            if size and not self._take_in_order(payload):
                return DROPPED
            self.ack_nr = seq
            if is_fin:
                self.eof_seq = seq  # anything held past it is not part of the stream
            elif self.reorder:
                self._drain_reorder()
            if self.eof_seq is not None and self.ack_nr == self.eof_seq:
                self.reorder.clear()
                self.reorder_charge = 0
                if not self.held_bytes:
                    return ACCEPTED | EOF_READY
            return ACCEPTED
        # Out of order.
        if d > self.max_reorder:
            return DROPPED
        reorder = self.reorder
        if seq in reorder:
            return DUPLICATE
        if not self._room_for(size, PACKET_OVERHEAD) and (size or not is_fin):
            return DROPPED  # (an empty FIN is taken anyway: there is only ever one)
        if is_fin:
            self.eof_seq = seq
            for s in [s for s in reorder if ((s - seq - 1) & SEQ_MASK) < 0x7FFF]:
                self.reorder_charge -= len(reorder.pop(s)) + PACKET_OVERHEAD
        reorder[seq] = payload
        self.reorder_charge += size + PACKET_OVERHEAD
        return ACCEPTED

    def _take_in_order(self, payload: bytes) -> bool:
        size = len(payload)
        if self.discard:
            return True
        if self.paused:
            if not self._room_for(size, 0):
                return False
            self._hold(payload)
        else:
            self.deliver.append(payload)
            self.deliver_bytes += size
        self.received_bytes += size
        return True

    def _hold(self, payload: bytes) -> None:
        """Keep an in-order payload while reading is paused: small ones are coalesced."""
        held, tail = self.held, self.held_tail
        if len(payload) >= HELD_AS_IS:
            if tail:
                held.append(bytes(tail))
                tail.clear()
            held.append(payload)
        else:
            tail += payload
            if len(tail) >= HELD_CHUNK:
                held.append(bytes(tail))
                tail.clear()
        self.held_bytes += len(payload)

    def _room_for(self, size: int, overhead: int) -> bool:
        """May we store ``size`` more payload bytes, charged ``overhead`` on top?"""
        charge = self.reorder_charge + self.held_bytes + self.deliver_bytes + size
        payloads = charge - PACKET_OVERHEAD * len(self.reorder)
        return payloads <= self.capacity and charge + overhead <= self.capacity + (self.capacity >> 1)

    def _drain_reorder(self) -> None:
        reorder = self.reorder
        nxt = (self.ack_nr + 1) & SEQ_MASK
        while nxt in reorder:
            payload = reorder.pop(nxt)
            self.reorder_charge -= len(payload) + PACKET_OVERHEAD
            if payload:
                self._take_in_order(payload)
            self.ack_nr = nxt
            nxt = (nxt + 1) & SEQ_MASK

    # ------------------------------------------------------------------ the application

    def take_delivery(self) -> bytes | None:
        """The in-order bytes ready for the application, joined, or ``None``."""
        deliver = self.deliver
        if not deliver:
            return None
        data = deliver[0] if len(deliver) == 1 else b"".join(deliver)
        deliver.clear()
        self.deliver_bytes = 0
        return data

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> bool:
        """Deliver what was held; return whether the end of stream is now due."""
        self.paused = False
        if self.held_bytes:
            if self.held_tail:
                self.held.append(bytes(self.held_tail))
            self.deliver.extend(self.held)
            self.deliver_bytes += self.held_bytes
            self._drop_held()
        return self.eof_seq is not None and self.ack_nr == self.eof_seq and not self.eof_delivered

    def discard_all(self) -> None:
        """We closed: throw away what is held and whatever comes."""
        self.discard = True
        self._drop_held()

    def clear(self) -> None:
        self.reorder.clear()
        self.reorder_charge = 0
        self._drop_held()

    def _drop_held(self) -> None:
        self.held.clear()
        self.held_tail.clear()
        self.held_bytes = 0

    # ------------------------------------------------------------------ what to advertise

    @property
    def reorder_bytes(self) -> int:
        """Payload bytes in the reorder map."""
        return self.reorder_charge - PACKET_OVERHEAD * len(self.reorder)

    @property
    def used(self) -> int:
        """Bytes charged against ``capacity``: payloads, plus the reorder map's per-packet overhead."""
        return self.reorder_charge + self.held_bytes + self.deliver_bytes

    def window(self) -> int:
        """The receive window to advertise now."""
        free = self.capacity - self.reorder_charge - self.held_bytes - self.deliver_bytes
        return free if free > 0 else 0

    def window_reopened(self, mss: int) -> bool:
        """Did our last advertisement all but close the window, which is open again now?"""
        return self.sent_window < mss * 2 and self.window() >= mss * 2

    def sack(self, ack_nr: int) -> bytes | None:
        """The selective ACK bitmask for packets past ``ack_nr + 1`` that we hold, or ``None``."""
        reorder = self.reorder
        if not reorder:
            return None
        span = max((s - ack_nr - 2) & SEQ_MASK for s in reorder) + 1
        return sack_bitmask(ack_nr, reorder, min(span, 32 * 8))
