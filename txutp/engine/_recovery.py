"""Loss detection and recovery for the sending side of one connection.

RACK-TLP (RFC 8985) on uTP's wire: a packet is presumed lost when a packet sent
*after* it was delivered and a reordering window has passed since, not when a
count of packets overtook it, so a path that reorders is not taken for one that
loses. Tail-loss probes repair the last packets of a flight without waiting for
the retransmission timeout; a loss response shown to be spurious is undone.

Invariants (every unacknowledged DATA or FIN packet is in exactly one map):

* ``outstanding``: sent, neither acknowledged (cumulatively or selectively) nor
  presumed lost, in the order of its latest transmission (a retransmission is
  inserted again at the end). ``bytes_in_flight`` is the sum of their payloads.
* ``lost``: presumed lost and waiting to be resent, lowest sequence number
  first (the hole at ``snd_una`` holds the peer's cumulative ACK back).
* ``sacked``: selectively acknowledged, waiting for the cumulative ACK. A SACK
  is never taken back (a uTP receiver keeps what it acknowledged).

``SentPacket.tx`` numbers transmissions in the order they left; ``sent_at`` is
the time of the latest one. The recovery episode that starts with a window
reduction ends when ``snd_una`` passes the sequence number sent last before it;
its loss marks are then resolved one by one as genuine or spurious, and if all
were spurious the reduction is undone (Linux's undo).

Spurious evidence, as uTP has no DSACK: an acknowledgement of a retransmitted
packet arriving sooner than ``min_rtt`` after the retransmission (it was the
original that arrived), or an ACK whose echoed timestamp (the peer's timestamp
minus its timestamp_difference, i.e. the send time of the packet that
triggered it, in our clock) predates the retransmission (Eifel, RFC 3522), or
a packet marked lost and acknowledged before it was resent.
"""

from __future__ import annotations

from collections.abc import Callable

from ._config import UTPConfig
from ._packet import SEQ_MASK, TS_MASK, to_timestamp_us
from ._rtt import RTTEstimator
from ._tracing import Tracer
from .congestion import CongestionController

__all__ = ["GIVE_UP", "NOTHING", "PROBE", "RETRANSMIT", "Recovery", "SentPacket"]

#: Slack below the oldest unacked packet allowed in a peer's ack_nr (libutp ACK_NR_ALLOWED_WINDOW),
#: beyond the most packets ever unacknowledged at once (:attr:`Recovery.max_span`).
ACK_SLACK = 3
#: The reordering window never goes below this: timers cannot resolve less.
MIN_REORDER_WINDOW = 0.001
#: Loss recoveries after the window was last widened before it returns to min_RTT/4 (RFC 8985).
REORDER_PERSIST = 16
#: Timer granularity and the most a uTP peer delays an ACK (it ACKs each read batch at once).
_PTO_GRANULARITY = 0.001
_PTO_ACK_DELAY = 0.010

# What the timer asked for (returned by :meth:`Recovery.on_timer`).
NOTHING = 0
RETRANSMIT = 1  # packets were presumed lost: resend them
PROBE = 2  # a tail-loss probe is due: send new data, or call probe_with_retransmission()
GIVE_UP = 3  # too many timeouts without progress

# Why a packet was marked lost (SentPacket.cause).
_ACK_DETECTED = 1
#: How many acknowledged records a connection keeps for reuse: allocating one per packet, each
#: followed by the garbage collector, cost a bulk sender about a tenth of its time.
_SPARE = 128
_TIMEOUT = 2
_TAIL_PROBE = 3
_OTHER = 4  # MTU probe lost, zero-window probe, EMSGSIZE: not congestion
#: How a trace names each cause (``docs/observing.rst``).
_CAUSE_NAMES = {
    _ACK_DETECTED: "rack",
    _TIMEOUT: "timeout",
    _TAIL_PROBE: "tail_loss_probe",
    _OTHER: "not_congestion",
}


class SentPacket:
    """A DATA or FIN packet sent and not yet acknowledged."""

    __slots__ = ("payload", "is_fin", "sent_at", "first_sent_at", "transmissions", "tx", "probe", "cause", "episode")

    def __init__(self, payload: bytes, is_fin: bool, now: float, tx: int) -> None:
        self.payload = payload
        self.is_fin = is_fin
        self.sent_at = now
        self.first_sent_at = now
        self.transmissions = 1
        self.tx = tx
        #: A path MTU probe whose fate is still unknown.
        self.probe = False
        #: Why it was last marked lost (0: never), and in which recovery episode.
        self.cause = 0
        self.episode = 0


class Recovery:
    """The in-flight record, ACK processing, loss detection, timers and the congestion calls.

    :class:`~txutp.engine.UTPConnection` builds the packets; it tells this object
    what it sent (:meth:`on_sent`, :meth:`next_retransmission`) and what the peer
    acknowledged (:meth:`on_ack`), and runs :meth:`on_timer` at :meth:`deadline`.
    """

    __slots__ = (
        "_episode",
        "_pto_from",
        "_spare",
        "_rack_rtt",
        "_rack_sent_at",
        "_rack_tx",
        "_recovery_point",
        "_reo_mult",
        "_reo_persist",
        "_reo_widened_at",
        "_resend",
        "_resend_dirty",
        "_tx",
        "_undo_genuine",
        "_undo_marks",
        "_undo_state",
        "bytes_delivered",
        "bytes_in_flight",
        "cc",
        "config",
        "cwnd_limited",
        "dup_acks",
        "fast_credit",
        "fast_retransmits",
        "fin_acked",
        "idle_since",
        "loss_deadline",
        "lost",
        "max_span",
        "mss",
        "next_seq",
        "on_probe_outcome",
        "outstanding",
        "peer_wnd",
        "retransmissions",
        "rto_count",
        "rto_deadline",
        "rtt",
        "sacked",
        "snd_una",
        "spurious_retransmissions",
        "tail_loss_probes",
        "tracer",
        "timeouts",
        "tlp_outstanding",
        "undos",
    )

    def __init__(
        self,
        config: UTPConfig,
        cc: CongestionController,
        *,
        next_seq: int,
        mss: int,
        peer_wnd: int,
        now: float,
    ) -> None:
        self.config = config
        self.cc = cc
        self.rtt = RTTEstimator(config.initial_rto, config.min_rto, config.max_rto)
        self.mss = mss
        self.peer_wnd = peer_wnd
        #: The next sequence number to send, and the oldest unacknowledged one.
        self.next_seq = next_seq & SEQ_MASK
        self.snd_una = self.next_seq
        #: The most packets ever unacknowledged at once (RFC 5961's MAX.SND.WND, in packets).
        self.max_span = 0
        self.outstanding: dict[int, SentPacket] = {}
        self.lost: dict[int, SentPacket] = {}
        self.sacked: dict[int, SentPacket] = {}
        #: Records of packets acknowledged on first sending, for the next ones sent (at most ``_SPARE``).
        self._spare: list[SentPacket] = []
        self.bytes_in_flight = 0
        #: Payload bytes the peer acknowledged, cumulatively or selectively, so far.
        self.bytes_delivered = 0
        #: Told of each loss declared and each RTT sample, if set (``_tracing.py``).
        self.tracer: Tracer | None = None
        self._resend: list[int] = []  # sequence numbers of ``lost``, lowest last once sorted
        self._resend_dirty = False
        self._tx = 0
        #: The last fill stopped at the window with data still waiting (set by the connection).
        self.cwnd_limited = False
        #: Retransmissions allowed beyond the window right after a loss is found (RFC 6675).
        self.fast_credit = 0
        self.dup_acks = 0
        self.fin_acked = False
        #: When the last byte in flight was acknowledged (``None`` while sending).
        self.idle_since: float | None = now
        #: Called with a path MTU probe and whether it got through.
        self.on_probe_outcome: Callable[[SentPacket, bool], None] | None = None
        # Timers.
        self.rto_deadline: float | None = None
        self.loss_deadline: float | None = None  # RACK's reordering timer
        self._pto_from: float | None = None  # the last send: the tail-loss probe is due a PTO after it
        self.tlp_outstanding = False
        #: Consecutive retransmission timeouts without snd_una advancing.
        self.rto_count = 0
        # RACK: the latest transmission known delivered, and its round trip.
        self._rack_tx = -1
        self._rack_sent_at = 0.0
        self._rack_rtt = 0.0
        self._reo_mult = 1
        self._reo_persist = 0
        self._reo_widened_at = float("-inf")
        # The recovery episode and what undoing it takes.
        self._episode = 0
        self._recovery_point: int | None = None
        self._undo_state: object | None = None
        self._undo_marks = 0
        self._undo_genuine = False
        # Counters.
        self.retransmissions = 0
        self.fast_retransmits = 0
        self.timeouts = 0
        self.tail_loss_probes = 0
        self.spurious_retransmissions = 0
        self.undos = 0

    # ------------------------------------------------------------------ queries

    @property
    def has_unacked(self) -> bool:
        """Is any DATA or FIN packet unacknowledged?"""
        return bool(self.outstanding or self.lost or self.sacked)

    def only_fin_unacked(self) -> bool:
        """Is everything unacknowledged a FIN (every byte of data acknowledged)?"""
        return all(e.is_fin for d in (self.outstanding, self.lost, self.sacked) for e in d.values())

    def find(self, seq: int) -> SentPacket | None:
        """The unacknowledged packet ``seq``, wherever it is."""
        return self.outstanding.get(seq) or self.lost.get(seq) or self.sacked.get(seq)

    def acceptable(self, ack_nr: int, *, reset: bool = False) -> bool:
        """The DRDoS check: does ``ack_nr`` fall within what we actually sent?

        Allowed: up to the last sequence number used (up to the next one for a
        RESET, which may answer a STATE packet), and down to ``ACK_SLACK`` plus
        :attr:`max_span` below the oldest unacknowledged packet. The second
        term is RFC 5961's ``SND.UNA - MAX.SND.WND``: a packet the path delayed
        behind the peer's later ACKs carries an ACK that old, and its payload
        must not be lost with it. Before we sent any data (a connection still
        unconfirmed) the span is 0 and the check is libutp's. However wide the
        span, an ``ack_nr`` is never taken from the half of the sequence space
        ahead of us.
        """
        nxt = self.next_seq
        back = (nxt - 1 - ack_nr) & SEQ_MASK
        if back <= ((nxt - self.snd_una) & SEQ_MASK) + self.max_span + ACK_SLACK and back < 0x8000:
            return True
        return reset and ack_nr == nxt

    @property
    def reorder_window(self) -> float:
        """How long after a later packet's delivery a packet still missing is presumed lost."""
        rtt = self.rtt
        min_rtt = rtt.min_rtt
        if min_rtt is None:
            return MIN_REORDER_WINDOW
        window = self._reo_mult * min_rtt / 4
        srtt = rtt.srtt
        if srtt is not None and window > srtt:
            window = srtt
        return window if window > MIN_REORDER_WINDOW else MIN_REORDER_WINDOW

    def deadline(self) -> float | None:
        """The earliest time :meth:`on_timer` has something to do, or ``None``."""
        t = self.rto_deadline
        loss = self.loss_deadline
        if loss is not None and (t is None or loss < t):
            t = loss
        pto = self._pto_deadline()
        if pto is not None and (t is None or pto < t):
            t = pto
        return t

    def _pto_deadline(self) -> float | None:
        start = self._pto_from
        if (
            start is None
            or self.tlp_outstanding
            or self.rto_count
            or self.loss_deadline is not None
            or self.lost
            or not self.outstanding
        ):
            return None
        rtt = self.rtt
        srtt = rtt.srtt
        if srtt is None:
            return None
        # RFC 9002's probe timeout, from the last packet sent: uTP peers ACK at the end of each
        # read batch, with no delayed-ACK timer, so TCP's 2*SRTT (which waits one out) is not needed.
        var = 4 * rtt.rttvar
        at = start + srtt + (var if var > _PTO_GRANULARITY else _PTO_GRANULARITY) + _PTO_ACK_DELAY
        rto = self.rto_deadline
        if rto is not None and at >= rto:
            return None
        return at

    # ------------------------------------------------------------------ sending

    def on_sent(self, payload: bytes, is_fin: bool, now: float) -> tuple[int, SentPacket]:
        """A new DATA or FIN packet leaves now; return its sequence number and record."""
        seq = self.next_seq
        self.next_seq = (seq + 1) & SEQ_MASK
        entry = SentPacket(payload, is_fin, now, self._tx)
        self._tx += 1
        self.outstanding[seq] = entry
        self.bytes_in_flight += len(payload)
        span = (seq + 1 - self.snd_una) & SEQ_MASK
        if span > self.max_span:
            self.max_span = span
        self._pto_from = now
        if self.rto_deadline is None:
            self.rto_deadline = now + self.rtt.rto
        return seq, entry

    def on_sent_run(self, payloads: list[bytes], now: float) -> int:
        """New DATA packets leave now, one per payload: :meth:`on_sent` for each; return the first's number."""
        first = seq = self.next_seq
        tx = self._tx
        outstanding = self.outstanding
        spare = self._spare
        total = 0
        for payload in payloads:
            if spare:
                entry = spare.pop()  # acknowledged on first sending: only these fields changed
                entry.payload = payload
                entry.sent_at = entry.first_sent_at = now
                entry.tx = tx
                outstanding[seq] = entry
            else:
                outstanding[seq] = SentPacket(payload, False, now, tx)
            tx += 1
            total += len(payload)
            seq = (seq + 1) & SEQ_MASK
        self.next_seq = seq
        self._tx = tx
        self.bytes_in_flight += total
        span = (seq - self.snd_una) & SEQ_MASK
        if span > self.max_span:
            self.max_span = span
        self._pto_from = now
        if self.rto_deadline is None:
            self.rto_deadline = now + self.rtt.rto
        return first

    def next_retransmission(self, window: int, now: float) -> tuple[int, SentPacket] | None:
        """The lost packet to resend now within ``window`` bytes in flight, lowest first, or ``None``.

        The packet is recorded as sent again; the caller builds its datagram.
        """
        lost = self.lost
        resend = self._resend
        if self._resend_dirty:
            una = self.snd_una
            resend.sort(key=lambda s: (s - una) & SEQ_MASK, reverse=True)
            self._resend_dirty = False
        while resend:
            seq = resend[-1]
            entry = lost.get(seq)
            if entry is None:
                resend.pop()  # acknowledged meanwhile
                continue
            size = len(entry.payload)
            if self.bytes_in_flight + size > window and self.bytes_in_flight > 0:
                if self.fast_credit <= 0:
                    return None
                self.fast_credit -= 1  # a loss just found is repaired at once, whatever the window
            resend.pop()
            del lost[seq]
            entry.transmissions += 1
            entry.sent_at = now
            entry.tx = self._tx
            self._tx += 1
            self.outstanding[seq] = entry
            self.bytes_in_flight += size
            self.retransmissions += 1
            if entry.cause == _ACK_DETECTED:
                self.fast_retransmits += 1
            if self.rto_deadline is None:
                self.rto_deadline = now + self.rtt.rto
            self._pto_from = now
            return seq, entry
        return None

    def probe_with_retransmission(self, now: float) -> bool:
        """A tail-loss probe with no new data to carry it: resend the newest packet in flight."""
        if not self.outstanding:
            return False
        seq = next(reversed(self.outstanding))
        self._mark(seq, self.outstanding.pop(seq), _TAIL_PROBE, now)
        self.fast_credit += 1
        return True

    def count_retransmission(self) -> None:
        """A packet outside this record (a SYN) was sent again."""
        self.retransmissions += 1

    # ------------------------------------------------------------------ acknowledgements

    def on_ack(
        self,
        ack_nr: int,
        sack: bytes | None,
        peer_wnd: int,
        delay_us: int | None,
        echo_us: int | None,
        bare: bool,
        now: float,
    ) -> int:
        """Process the acknowledgement fields of one packet; return the payload bytes newly acknowledged.

        ``echo_us`` is the send time (our clock, µs mod 2**32) of the packet that
        made the peer send this one, or ``None``; ``bare`` is true for a STATE
        packet (only those count as duplicate ACKs).
        """
        old_wnd = self.peer_wnd
        una = self.snd_una
        n = (ack_nr + 1 - una) & SEQ_MASK
        outstanding_count = (self.next_seq - una) & SEQ_MASK
        if n <= outstanding_count:
            self.peer_wnd = peer_wnd
        else:
            # An ACK older than one already taken (the path reordered them): its window is
            # older too (TCP's SND.WL rule); its SACK is still true.
            peer_wnd = old_wnd
        if not self.outstanding and not self.lost and not self.sacked:
            return 0  # nothing in flight: only the window was news
        rtt = self.rtt
        in_flight_before = self.bytes_in_flight
        samples_before = rtt.count
        acked = 0
        rack_tx = self._rack_tx
        rack_at = -1.0
        marked = False
        if 0 < n <= outstanding_count:
            pop = self.outstanding.pop
            spare = self._spare
            newest = -1.0  # the newest once-sent packet acknowledged: the RTT sample (Karn)
            freed = 0  # payload bytes no longer in flight
            for i in range(n):
                seq = (una + i) & SEQ_MASK
                entry = pop(seq, None)
                if entry is not None:
                    freed += len(entry.payload)
                    if entry.transmissions == 1:
                        if entry.sent_at > newest:
                            newest = entry.sent_at
                        if entry.tx > rack_tx:
                            rack_tx = entry.tx
                            rack_at = entry.sent_at
                        if not (entry.is_fin or entry.probe) and len(spare) < _SPARE:
                            entry.payload = b""
                            spare.append(entry)
                            continue
                    elif self._delivered_retransmission(entry, echo_us, now) and entry.tx > rack_tx:
                        rack_tx = entry.tx
                        rack_at = entry.sent_at
                else:
                    entry = self.sacked.pop(seq, None)
                    if entry is None:
                        entry = self.lost.pop(seq, None)
                        if entry is None:
                            continue
                        acked += len(entry.payload)
                        self._delivered_while_lost(entry, now)
                        if entry.tx > rack_tx:
                            rack_tx = entry.tx
                            rack_at = entry.sent_at
                if entry.is_fin:
                    self.fin_acked = True
                if entry.probe and self.on_probe_outcome is not None:
                    self.on_probe_outcome(entry, True)
            self.bytes_in_flight -= freed
            acked += freed
            self.snd_una = (ack_nr + 1) & SEQ_MASK
            self.dup_acks = 0
            self.rto_count = 0
            self.tlp_outstanding = False
            rtt.reset_backoff()
            if newest >= 0:
                rtt.on_sample(now - newest)
                if self.tracer is not None:
                    self.tracer.event(now, "rtt_sample", rtt=now - newest, srtt=rtt.srtt, rto=rtt.rto)
            point = self._recovery_point
            if point is not None and ((self.snd_una - 1 - point) & SEQ_MASK) < 0x8000:
                self._maybe_undo()
                self._end_episode()
        elif n == 0 and outstanding_count and bare and peer_wnd == old_wnd:
            # A duplicate ACK. libutp's SACK covers 32 packets past the hole only, so a lost
            # retransmission of the hole is found this way; the time rule keeps it from
            # taking reordering for loss.
            self.dup_acks += 1
            if self.dup_acks >= self.config.dup_ack_threshold:
                entry = self.outstanding.get(una)
                srtt = rtt.srtt if rtt.srtt is not None else rtt.rto
                if entry is not None and now - entry.sent_at >= srtt + self.reorder_window:
                    marked = self._mark_lost_batch([una], _ACK_DETECTED, now)
        if n == 0 and peer_wnd < self.mss and self.outstanding:
            # The peer answers a zero-window probe: alive, with no room (TCP's persist state).
            self.rto_count = 0
        delivered_later = rack_tx > self._rack_tx
        if delivered_later:
            self._rack_tx = rack_tx
            self._rack_sent_at = rack_at
            self._rack_rtt = now - rack_at
        if sack is not None and (self.outstanding or self.lost):
            rack_tx = self._rack_tx
            acked += self._on_sack(ack_nr, sack, echo_us, now)
            delivered_later = delivered_later or self._rack_tx > rack_tx
        if delivered_later and self.outstanding:
            marked = self._detect_lost(now) or marked
        if acked:
            self.bytes_delivered += acked
            cc = self.cc
            cc.on_ack(
                now=now,
                acked_bytes=acked,
                in_flight=in_flight_before,
                delay_us=delay_us,
                rtt=rtt.srtt,
                window_limited=self.cwnd_limited or in_flight_before + self.mss >= min(cc.cwnd, old_wnd),
                rtt_sample=rtt.latest if rtt.count != samples_before else None,
                peer_window=peer_wnd,
            )
        if marked:
            self.cc.on_loss(now=now, rtt=rtt.srtt)
        self._maybe_undo()
        if self.outstanding or self.lost:
            if n and 0 < n <= outstanding_count:
                self.rto_deadline = now + rtt.rto
        elif not self.sacked:
            self.rto_deadline = None
            self.loss_deadline = None
            if self.idle_since is None:
                self.idle_since = now
        if old_wnd < self.mss <= peer_wnd and not acked:
            # A packet sent into a closed window may have been dropped: send it again.
            entry = self.outstanding.get(self.snd_una)
            if entry is not None:
                self._mark_lost_batch([self.snd_una], _OTHER, now)
        return acked

    def _on_sack(self, ack_nr: int, mask: bytes, echo_us: int | None, now: float) -> int:
        """Apply a selective ACK; return the payload bytes it newly acknowledged."""
        base = (ack_nr + 2) & SEQ_MASK
        span = (self.next_seq - base) & SEQ_MASK
        if span >= 0x8000:
            return 0
        out = self.outstanding
        lost = self.lost
        sacked = self.sacked
        newly = 0
        limit = min(len(mask) * 8, span)
        rack_tx = self._rack_tx
        rack_at = self._rack_sent_at
        newest = -1.0
        for k in range((limit + 7) >> 3):
            byte = mask[k]
            if not byte:
                continue
            for j in range(8):
                if not byte & (1 << j):
                    continue
                i = (k << 3) | j
                if i >= limit:
                    break
                seq = (base + i) & SEQ_MASK
                entry = out.pop(seq, None)
                if entry is not None:
                    size = len(entry.payload)
                    self.bytes_in_flight -= size
                    if entry.transmissions == 1:
                        if entry.sent_at > newest:
                            newest = entry.sent_at
                        delivered = True
                    else:
                        delivered = self._delivered_retransmission(entry, echo_us, now)
                else:
                    entry = lost.pop(seq, None)
                    if entry is None:
                        continue
                    size = len(entry.payload)
                    self._delivered_while_lost(entry, now)
                    delivered = True
                sacked[seq] = entry
                newly += size
                if delivered and entry.tx > rack_tx:
                    rack_tx = entry.tx
                    rack_at = entry.sent_at
                if entry.probe and self.on_probe_outcome is not None:
                    self.on_probe_outcome(entry, True)
        if newest >= 0:
            self.rtt.on_sample(now - newest)
            if self.tracer is not None:
                self.tracer.event(now, "rtt_sample", rtt=now - newest, srtt=self.rtt.srtt, rto=self.rtt.rto)
        if rack_tx > self._rack_tx:
            self._rack_tx = rack_tx
            self._rack_sent_at = rack_at
            self._rack_rtt = now - rack_at
        return newly

    def _delivered_retransmission(self, entry: SentPacket, echo_us: int | None, now: float) -> bool:
        """A packet sent more than once was acknowledged: judge the retransmission.

        Return whether the latest transmission may be the one that arrived (RACK may
        use its time then).
        """
        min_rtt = self.rtt.min_rtt
        spurious = min_rtt is not None and now - entry.sent_at < min_rtt
        if not spurious and echo_us is not None:
            first = to_timestamp_us(entry.first_sent_at)
            latest = to_timestamp_us(entry.sent_at)
            spurious = ((echo_us - first) & TS_MASK) < ((latest - first) & TS_MASK)
        cause = entry.cause
        counted = cause in (_ACK_DETECTED, _TIMEOUT) and entry.episode == self._episode
        if spurious:
            self.spurious_retransmissions += 1
            if cause == _ACK_DETECTED:
                self._widen_reorder_window(now)
            if counted and self._undo_marks:
                self._undo_marks -= 1
            return False
        if cause == _TAIL_PROBE:
            # The probe repaired a real tail loss: that is congestion (RFC 8985 section 7.4).
            self._begin_episode()
            self._undo_genuine = True
            self.cc.on_loss(now=now, rtt=self.rtt.srtt)
        elif counted:
            self._undo_genuine = True
        return True

    def _delivered_while_lost(self, entry: SentPacket, now: float) -> None:
        """A packet presumed lost was acknowledged before it was resent: the mark was spurious."""
        cause = entry.cause
        if cause == _ACK_DETECTED:
            self._widen_reorder_window(now)
        if cause in (_ACK_DETECTED, _TIMEOUT) and entry.episode == self._episode and self._undo_marks:
            self._undo_marks -= 1

    def _widen_reorder_window(self, now: float) -> None:
        srtt = self.rtt.srtt or 0.0
        if now - self._reo_widened_at >= srtt:  # at most once a round trip
            self._reo_widened_at = now
            if self._reo_mult < 64:
                self._reo_mult += 1
        self._reo_persist = REORDER_PERSIST

    # ------------------------------------------------------------------ loss detection

    def _detect_lost(self, now: float) -> bool:
        """RACK: mark lost what was sent before the latest delivered packet, a reordering window ago."""
        self.loss_deadline = None
        rack_tx = self._rack_tx
        wait = self._rack_rtt + self.reorder_window
        doomed: list[int] = []
        # ``outstanding`` is in transmission order, so send times only grow along it.
        for seq, entry in self.outstanding.items():
            if entry.tx >= rack_tx:
                break
            at = entry.sent_at + wait
            if now < at:
                self.loss_deadline = at
                break
            doomed.append(seq)
        if not doomed:
            return False
        return self._mark_lost_batch(doomed, _ACK_DETECTED, now)

    def _mark_lost_batch(self, seqs: list[int], cause: int, now: float) -> bool:
        """Mark outstanding packets lost; return whether that is congestion (the caller tells the controller)."""
        congestion = False
        out = self.outstanding
        for seq in seqs:
            entry = out.pop(seq)
            if entry.probe:
                self._mark(seq, entry, _OTHER, now)  # a lost path MTU probe is not congestion
                continue
            if cause == _OTHER:
                self._mark(seq, entry, cause, now)
                continue
            if not congestion:
                congestion = True
                self._begin_episode()
            self._mark(seq, entry, cause, now)
            self._undo_marks += 1
        if cause == _ACK_DETECTED and congestion:
            self.fast_credit = 1
        return congestion

    def _mark(self, seq: int, entry: SentPacket, cause: int, now: float) -> None:
        """Move ``entry`` (already out of ``outstanding``) to the resend queue."""
        if self.tracer is not None:
            self.tracer.event(now, "loss", seq=seq, reason=_CAUSE_NAMES[cause])
        if entry.probe and self.on_probe_outcome is not None:
            self.on_probe_outcome(entry, False)
        self.bytes_in_flight -= len(entry.payload)
        entry.cause = cause
        entry.episode = self._episode
        self.lost[seq] = entry
        self._resend.append(seq)
        self._resend_dirty = True

    def mark_lost(self, seq: int, now: float) -> None:
        """Resend ``seq`` without taking it for congestion (refused locally, MTU probe lost)."""
        entry = self.outstanding.pop(seq, None)
        if entry is not None:
            self._mark(seq, entry, _OTHER, now)
            self.fast_credit += 1

    # ------------------------------------------------------------------ episodes and undo

    def _begin_episode(self) -> None:
        if self._recovery_point is not None:
            return
        self._episode += 1
        self._recovery_point = (self.next_seq - 1) & SEQ_MASK
        self._undo_state = self.cc.undo_snapshot()
        self._undo_marks = 0
        self._undo_genuine = False

    def _end_episode(self) -> None:
        self._recovery_point = None
        self._undo_state = None
        self._undo_marks = 0
        if self._reo_persist:
            self._reo_persist -= 1
            if not self._reo_persist:
                self._reo_mult = 1

    def _maybe_undo(self) -> None:
        """Undo the episode's reduction once every loss behind it proved spurious."""
        state = self._undo_state
        if state is None or self._undo_marks or self._undo_genuine:
            return
        self._undo_state = None
        self._recovery_point = None
        self.cc.undo(state)
        self.undos += 1

    # ------------------------------------------------------------------ timers

    def on_timer(self, now: float) -> int:
        """Run whichever of the reordering, probe and retransmission timers is due."""
        result = NOTHING
        loss = self.loss_deadline
        if loss is not None and now >= loss:
            self.loss_deadline = None
            if self._detect_lost(now):
                self.cc.on_loss(now=now, rtt=self.rtt.srtt)
            if self.lost:
                result = RETRANSMIT
        rto = self.rto_deadline
        if rto is not None and now >= rto:
            return self._on_rto(now)
        pto = self._pto_deadline()
        if pto is not None and now >= pto:
            self.tlp_outstanding = True
            self.tail_loss_probes += 1
            self.rto_deadline = now + self.rtt.rto
            return PROBE
        return result

    def _on_rto(self, now: float) -> int:
        out = self.outstanding
        if not out and not self.lost:
            self.rto_deadline = None
            return NOTHING
        if self.rto_count >= self.config.max_retransmits:
            return GIVE_UP
        oldest = out.get(self.snd_una)
        if oldest is not None and oldest.probe:
            # The oldest packet is an MTU probe the path dropped: not a congestion timeout.
            self.mark_lost(self.snd_una, now)
            self.rto_deadline = now + self.rtt.rto
            return RETRANSMIT
        self.rto_count += 1
        self.timeouts += 1
        self._begin_episode()
        self.cc.on_timeout(now=now, idle=False)
        self.rtt.backoff()
        self.dup_acks = 0
        self.fast_credit = 0
        self.tlp_outstanding = False
        self.loss_deadline = None
        # Everything in flight is presumed lost; resend from the oldest, paced by cwnd.
        for seq in list(out):
            self._mark(seq, out.pop(seq), _TIMEOUT, now)
            self._undo_marks += 1
        rto = self.rtt.rto
        if self.peer_wnd < self.mss:
            # What is in flight is a zero-window probe: keep probing at least this often.
            rto = min(rto, self.config.zero_window_probe_max)
        self.rto_deadline = now + rto
        return RETRANSMIT

    def clear(self) -> None:
        """Forget everything unacknowledged (the connection ended)."""
        self.outstanding.clear()
        self.lost.clear()
        self.sacked.clear()
        self._spare.clear()
        self._resend.clear()
        self.bytes_in_flight = 0
        self.rto_deadline = None
        self.loss_deadline = None
        self._pto_from = None
