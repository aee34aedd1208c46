"""The byte stream's buffers: what we have yet to send, and what arrived but is not delivered yet.

:class:`SendBuffer` holds the bytes the application gave us and not yet put
into packets, with the end-of-stream (FIN) decision, the Nagle gate and the
low-water mark that produces ``Writable``. :class:`ReceiveBuffer` puts arriving
payloads in order: ``ack_nr`` is its in-order edge, the reorder map holds what
came early, and in-order payloads wait in the deliver queue (or, while the
application paused reading, in the held queue). Neither builds packets nor
raises events: they return what happened and the connection acts on it.

Memory: everything the receive buffer holds (reorder map, held and deliver
queues) counts against ``recv_buffer_size``, which is also the most we advertise.
"""

from __future__ import annotations

from ._packet import sack_bitmask

__all__ = [
    "ACCEPTED",
    "DROPPED",
    "DUPLICATE",
    "EOF_READY",
    "ReceiveBuffer",
    "SendBuffer",
]

_M16 = 0xFFFF

# What ReceiveBuffer.on_data reports (bit flags).
ACCEPTED = 1  # stored or delivered
DUPLICATE = 2  # already had it
DROPPED = 4  # no room, too far ahead, or past the end of the stream
EOF_READY = 8  # the stream is complete up to the peer's FIN: end it (once nothing is held)


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
        if nagle is not None and ((snd_una - nagle - 1) & _M16) < 0x7FFF:
            self.nagle_seq = None

    def clear(self) -> None:
        self.unsent.clear()


class ReceiveBuffer:
    """Reassembly of the peer's stream, flow control, and what our next ACK must say."""

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
        "max_reorder",
        "paused",
        "received_bytes",
        "reorder",
        "reorder_bytes",
        "sent_window",
    )

    def __init__(self, capacity: int, max_reorder: int) -> None:
        self.capacity = capacity
        self.max_reorder = max_reorder
        #: The last sequence number received in order.
        self.ack_nr = 0
        self.reorder: dict[int, bytes] = {}
        self.reorder_bytes = 0
        #: The peer's FIN, once seen, and whether the end of stream was reported.
        self.eof_seq: int | None = None
        self.eof_delivered = False
        #: Reading paused by the application: in-order data is held, the window closes.
        self.paused = False
        #: Closed by us: data is acknowledged and thrown away.
        self.discard = False
        self.held: list[bytes] = []
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
        d = (seq - self.ack_nr) & _M16
        if d == 0 or d >= 0x8000:
            return DUPLICATE
        eof = self.eof_seq
        if eof is not None and ((seq - eof - 1) & _M16) < 0x7FFF:
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
                self.reorder_bytes = 0
                if not self.held:
                    return ACCEPTED | EOF_READY
            return ACCEPTED
        # Out of order.
        if d > self.max_reorder:
            return DROPPED
        reorder = self.reorder
        if seq in reorder:
            return DUPLICATE
        if self.used + size > self.capacity:
            return DROPPED
        if is_fin:
            self.eof_seq = seq
            for s in [s for s in reorder if ((s - seq - 1) & _M16) < 0x7FFF]:
                self.reorder_bytes -= len(reorder.pop(s))
        reorder[seq] = payload
        self.reorder_bytes += size
        return ACCEPTED

    def _take_in_order(self, payload: bytes) -> bool:
        size = len(payload)
        if self.discard:
            return True
        if self.paused:
            if self.used + size > self.capacity:
                return False
            self.held.append(payload)
            self.held_bytes += size
        else:
            self.deliver.append(payload)
            self.deliver_bytes += size
        self.received_bytes += size
        return True

    def _drain_reorder(self) -> None:
        reorder = self.reorder
        nxt = (self.ack_nr + 1) & _M16
        while nxt in reorder:
            payload = reorder.pop(nxt)
            self.reorder_bytes -= len(payload)
            if payload:
                self._take_in_order(payload)
            self.ack_nr = nxt
            nxt = (nxt + 1) & _M16

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
        if self.held:
            self.deliver.extend(self.held)
            self.deliver_bytes += self.held_bytes
            self.held.clear()
            self.held_bytes = 0
        return self.eof_seq is not None and self.ack_nr == self.eof_seq and not self.eof_delivered

    def discard_all(self) -> None:
        """We closed: throw away what is held and whatever comes."""
        self.discard = True
        self.held.clear()
        self.held_bytes = 0

    def clear(self) -> None:
        self.reorder.clear()
        self.reorder_bytes = 0
        self.held.clear()
        self.held_bytes = 0

    # ------------------------------------------------------------------ what to advertise

    @property
    def used(self) -> int:
        return self.reorder_bytes + self.held_bytes + self.deliver_bytes

    def window(self) -> int:
        """The receive window to advertise now."""
        free = self.capacity - self.reorder_bytes - self.held_bytes - self.deliver_bytes
        return free if free > 0 else 0

    def window_reopened(self, mss: int) -> bool:
        """Did our last advertisement all but close the window, which is open again now?"""
        return self.sent_window < mss * 2 and self.window() >= mss * 2

    def sack(self, ack_nr: int) -> bytes | None:
        """The selective ACK bitmask for packets past ``ack_nr + 1`` that we hold, or ``None``."""
        reorder = self.reorder
        if not reorder:
            return None
        span = max((s - ack_nr - 2) & _M16 for s in reorder) + 1
        return sack_bitmask(ack_nr, reorder, min(span, 32 * 8))
