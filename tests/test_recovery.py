"""Loss detection and recovery alone (``txutp.engine._recovery``): no connection, no packets, hand-stepped time."""

from __future__ import annotations

import pytest

from txutp.engine import CongestionController, UTPConfig
from txutp.engine._recovery import (
    GIVE_UP,
    MIN_REORDER_WINDOW,
    NOTHING,
    PROBE,
    REORDER_PERSIST,
    RETRANSMIT,
    Recovery,
)

MSS = 1000
RTT = 0.1
ISN = 100


class Recorder(CongestionController):
    """A fixed window that records what recovery tells it, and can be undone."""

    def __init__(self, cwnd: int = 100 * MSS) -> None:
        self.cwnd = cwnd
        self.calls: list[str] = []
        self.limited: list[object] = []

    def on_ack(self, **kwargs: object) -> None:  # type: ignore[override]
        self.calls.append("ack")
        self.limited.append(kwargs["window_limited"])

    def on_loss(self, *, now: float, rtt: float | None) -> None:
        self.calls.append("loss")
        self.cwnd //= 2

    def on_timeout(self, *, now: float, idle: bool) -> None:
        self.calls.append("timeout")
        self.cwnd = MSS

    def undo_snapshot(self) -> object | None:
        return self.cwnd

    def undo(self, snapshot: object) -> None:
        self.calls.append("undo")
        assert isinstance(snapshot, int)
        self.cwnd = snapshot


def make(config: UTPConfig | None = None, rtt: float | None = RTT) -> tuple[Recovery, Recorder]:
    cc = Recorder()
    rec = Recovery(config or UTPConfig(), cc, next_seq=ISN, mss=MSS, peer_wnd=1 << 20, now=0.0)
    if rtt is not None:
        rec.rtt.on_sample(rtt)
    return rec, cc


def send(rec: Recovery, n: int, now: float) -> list[int]:
    return [rec.on_sent(b"x" * MSS, False, now)[0] for _ in range(n)]


def sack_of(ack_nr: int, seqs: list[int]) -> bytes:
    mask = bytearray(4)
    for s in seqs:
        i = (s - ack_nr - 2) & 0xFFFF
        mask[i >> 3] |= 1 << (i & 7)
    return bytes(mask)


def ack(rec: Recovery, ack_nr: int, now: float, sacked: list[int] | None = None, **kw: object) -> int:
    sack = sack_of(ack_nr, sacked) if sacked else None
    return rec.on_ack(
        ack_nr,
        sack,
        int(kw.get("wnd", 1 << 20)),  # type: ignore[call-overload]
        None,
        kw.get("echo"),  # type: ignore[arg-type]
        bool(kw.get("bare", True)),
        now,
    )


def resend_all(rec: Recovery, now: float) -> list[int]:
    out = []
    while (item := rec.next_retransmission(1 << 30, now)) is not None:
        out.append(item[0])
    return out


# --------------------------------------------------------------------------- the record


def test_bytes_in_flight_and_cumulative_ack_with_karn_sample() -> None:
    rec, cc = make(rtt=None)
    s = send(rec, 4, 0.0)
    assert rec.bytes_in_flight == 4 * MSS and list(rec.outstanding) == s
    assert ack(rec, s[1], 0.2) == 2 * MSS
    assert rec.snd_una == s[2] and rec.bytes_in_flight == 2 * MSS
    assert rec.rtt.srtt == pytest.approx(0.2)
    assert cc.calls == ["ack"]


def test_records_acknowledged_on_first_sending_are_reused_fresh() -> None:
    rec, _ = make()
    first = rec.on_sent_run([bytes([i]) * MSS for i in range(4)], 0.0)
    records = [rec.outstanding[(first + i) & 0xFFFF] for i in range(4)]
    lost = rec.find((first + 3) & 0xFFFF)
    assert lost is not None
    rec.mark_lost((first + 3) & 0xFFFF, 0.0)
    resend_all(rec, 0.05)  # sent twice: never reused (its retransmission history matters)
    ack(rec, (first + 3) & 0xFFFF, 0.1)
    assert rec.bytes_in_flight == 0
    spare = rec._spare
    assert spare == records[:3] and all(e.payload == b"" for e in spare)  # no payload kept alive
    second = rec.on_sent_run([b"y" * MSS, b"z" * MSS], 0.2)
    reused = [rec.outstanding[second], rec.outstanding[(second + 1) & 0xFFFF]]
    assert all(any(e is r for r in records[:3]) for e in reused) and lost not in spare
    for entry, payload in zip(reused, (b"y" * MSS, b"z" * MSS)):
        assert entry.payload == payload and entry.sent_at == entry.first_sent_at == 0.2
        assert (entry.transmissions, entry.probe, entry.cause, entry.episode, entry.is_fin) == (1, False, 0, 0, False)
    assert [e.tx for e in reused] == sorted({e.tx for e in reused}) and reused[0].tx > lost.tx
    ack(rec, (second + 1) & 0xFFFF, 0.3)
    assert rec.rtt.srtt is not None and rec.bytes_in_flight == 0
    rec.clear()
    assert rec._spare == []


def test_acks_in_one_batch_do_not_make_a_window_limited_sender_look_idle() -> None:
    rec, cc = make()
    cc.cwnd = 10 * MSS
    s = send(rec, 10, 0.0)
    rec.cwnd_limited = True  # the connection stopped at the window with data waiting
    for i in range(10):  # ten ACKs read in one batch: nothing is sent between them
        ack(rec, s[i], 0.1)
    assert cc.limited == [True] * 10


def test_an_application_limited_sender_is_not_window_limited() -> None:
    rec, cc = make()
    s = send(rec, 2, 0.0)  # two packets in a 100-packet window: all the application had
    ack(rec, s[1], 0.1)
    assert cc.limited == [False]


def test_acceptable_ack_numbers_are_what_we_sent() -> None:
    rec, _ = make()
    s = send(rec, 3, 0.0)
    assert rec.acceptable(s[2]) and rec.acceptable(ISN - 1)
    assert not rec.acceptable(s[2] + 1)
    assert rec.acceptable(s[2] + 1, reset=True)
    assert not rec.acceptable(ISN - 10)


def test_an_ack_the_path_delayed_stays_acceptable_down_to_the_widest_span() -> None:
    """RFC 5961's SND.UNA - MAX.SND.WND: a packet overtaken by the peer's later ACKs is not dropped."""
    rec, _ = make()
    assert rec.max_span == 0
    s = send(rec, 20, 0.0)
    assert rec.max_span == 20
    ack(rec, s[9], 0.1)
    assert rec.max_span == 20  # acknowledging does not shrink it
    s += send(rec, 5, 0.1)  # 15 in flight: not wider
    assert rec.max_span == 20
    ack(rec, s[24], 0.2)  # everything acknowledged
    assert rec.acceptable(s[9]) and rec.acceptable(s[1])  # the peer's ACK of 0.1 s ago, and older
    assert not rec.acceptable(s[0])  # 24 behind: more than was ever in flight, plus the slack of 3
    assert not rec.acceptable(s[24] + 1)
    rec.max_span = 0xFFFF  # (tiny packets, a huge window): still nothing ahead of what we sent
    assert rec.acceptable((s[24] - 0x7FFF) & 0xFFFF)
    assert not rec.acceptable(s[24] + 1) and not rec.acceptable((s[24] + 0x8000) & 0xFFFF)


def test_an_old_ack_leaves_the_window_and_the_flight_alone() -> None:
    rec, cc = make()
    s = send(rec, 10, 0.0)
    ack(rec, s[5], 0.1, wnd=50_000)
    calls = list(cc.calls)
    assert ack(rec, s[2], 0.11, wnd=0) == 0  # overtaken by the ACK of s[5]: its window is older too
    assert rec.peer_wnd == 50_000 and rec.snd_una == s[6] and rec.dup_acks == 0
    assert cc.calls == calls
    assert ack(rec, s[2], 0.12, sacked=[s[7]]) == MSS  # its SACK is still true
    assert s[7] not in rec.outstanding and rec.snd_una == s[6]


# --------------------------------------------------------------------------- RACK


def test_a_hole_is_lost_only_a_reordering_window_after_a_later_delivery() -> None:
    rec, cc = make()
    s = send(rec, 4, 0.0)
    ack(rec, s[0], 0.1, [s[2], s[3]])
    assert not rec.lost and rec.loss_deadline is not None
    window = rec.reorder_window
    assert window == pytest.approx(RTT / 4)  # min_RTT / 4
    assert rec.loss_deadline == pytest.approx(0.0 + 0.1 + window)
    assert rec.on_timer(rec.loss_deadline - 1e-6) == NOTHING and not rec.lost
    assert rec.on_timer(rec.loss_deadline) == RETRANSMIT
    assert list(rec.lost) == [s[1]] and cc.calls.count("loss") == 1
    assert resend_all(rec, 0.13) == [s[1]]
    assert rec.fast_retransmits == rec.retransmissions == 1


def test_a_packet_overtaken_but_arriving_within_the_window_is_not_lost() -> None:
    rec, cc = make()
    s = send(rec, 4, 0.0)
    ack(rec, s[0], 0.1, [s[2], s[3]])
    ack(rec, s[3], 0.11)  # the late one arrived, 10 ms behind
    assert rec.on_timer(0.2) == NOTHING
    assert not rec.lost and "loss" not in cc.calls and rec.bytes_in_flight == 0


def test_holes_are_resent_lowest_first() -> None:
    rec, _ = make()
    s = send(rec, 12, 0.0)
    holes = [s[1], s[5], s[8]]
    ack(rec, s[0], 0.1, [x for x in s[2:] if x not in holes])
    rec.on_timer(rec.loss_deadline or 0.0)
    assert resend_all(rec, 0.13) == holes


def test_a_lost_retransmission_is_found_by_transmission_order() -> None:
    rec, _ = make()
    s = send(rec, 4, 0.0)
    ack(rec, s[0], 0.1, [s[2], s[3]])
    rec.on_timer(rec.loss_deadline or 0.0)
    assert resend_all(rec, 0.125) == [s[1]]
    later = send(rec, 2, 0.13)
    # Packets sent after the retransmission arrive; the retransmission does not.
    ack(rec, s[0], 0.23, [s[2], s[3], *later])
    rec.on_timer(rec.loss_deadline or 0.0)
    assert list(rec.lost) == [s[1]]


def test_few_packets_in_flight_still_recover_without_the_rto() -> None:
    rec, _ = make()
    s = send(rec, 2, 0.0)
    ack(rec, s[0] - 1, 0.1, [s[1]])  # the first lost, the second (and last) arrived
    assert rec.on_timer(rec.loss_deadline or 0.0) == RETRANSMIT
    assert rec.timeouts == 0


def test_duplicate_acks_without_sack_find_a_hole_the_sack_cannot_reach() -> None:
    """libutp's SACK covers 32 packets past the hole: beyond it only duplicate ACKs tell."""
    rec, _ = make()
    s = send(rec, 2, 0.0)
    for t in (0.05, 0.06, 0.07):
        ack(rec, s[0] - 1, t)
    assert not rec.lost  # three duplicates, but not yet an RTT plus the reordering window
    ack(rec, s[0] - 1, 0.13)
    assert list(rec.lost) == [s[0]]


# --------------------------------------------------------------------------- spurious retransmissions and undo


def test_an_ack_sooner_than_min_rtt_after_the_retransmission_is_for_the_original() -> None:
    rec, cc = make()
    s = send(rec, 4, 0.0)
    ack(rec, s[0], 0.1, [s[2], s[3]])
    rec.on_timer(rec.loss_deadline or 0.0)
    assert cc.calls.count("loss") == 1 and cc.cwnd == 50 * MSS
    resend_all(rec, 0.13)
    window = rec.reorder_window
    ack(rec, s[3], 0.15)  # 20 ms after the retransmission: the original, merely late
    assert rec.spurious_retransmissions == 1
    assert rec.undos == 1 and "undo" in cc.calls and cc.cwnd == 100 * MSS
    assert rec.reorder_window == pytest.approx(2 * window)  # widened


def test_an_echoed_timestamp_older_than_the_retransmission_shows_it_spurious() -> None:
    rec, cc = make()
    s = send(rec, 4, 0.0)
    ack(rec, s[0], 0.1, [s[2], s[3]])
    rec.on_timer(rec.loss_deadline or 0.0)
    resend_all(rec, 0.13)
    # Too late for the timing rule, but the peer's ACK echoes the original's send time.
    ack(rec, s[3], 0.5, echo=1)
    assert rec.spurious_retransmissions == 1 and rec.undos == 1 and cc.cwnd == 100 * MSS


def test_a_genuine_loss_is_not_undone() -> None:
    rec, cc = make()
    s = send(rec, 4, 0.0)
    ack(rec, s[0], 0.1, [s[2], s[3]])
    rec.on_timer(rec.loss_deadline or 0.0)
    resend_all(rec, 0.13)
    ack(rec, s[3], 0.24, echo=130_000)  # a round trip after the retransmission, echoing it
    assert rec.spurious_retransmissions == 0 and rec.undos == 0 and cc.cwnd == 50 * MSS


def test_a_packet_acknowledged_before_its_resend_undoes_the_reduction() -> None:
    rec, cc = make(UTPConfig(), rtt=RTT)
    cc.cwnd = 2 * MSS  # the window keeps the lost packet from being resent at once
    s = send(rec, 4, 0.0)
    ack(rec, s[0], 0.1, [s[2], s[3]])
    rec.on_timer(rec.loss_deadline or 0.0)
    assert list(rec.lost) == [s[1]]
    ack(rec, s[3], 0.14)
    assert not rec.lost and rec.undos == 1 and rec.retransmissions == 0


def test_the_reordering_window_decays_after_loss_free_recoveries() -> None:
    rec, _ = make()
    base = rec.reorder_window
    s = send(rec, 4, 0.0)
    ack(rec, s[0], 0.1, [s[2], s[3]])
    rec.on_timer(rec.loss_deadline or 0.0)
    resend_all(rec, 0.13)
    ack(rec, s[3], 0.15)
    assert rec.reorder_window > base
    now = 1.0
    for _ in range(REORDER_PERSIST):
        s = send(rec, 3, now)
        ack(rec, s[0], now + 0.1, [s[2]])
        rec.on_timer(rec.loss_deadline or 0.0)
        resend_all(rec, now + 0.2)
        ack(rec, s[2], now + 0.31, echo=int((now + 0.2) * 1e6))  # genuine: the recovery ends
        now += 1.0
    assert rec.reorder_window == pytest.approx(base)


# --------------------------------------------------------------------------- tail-loss probes


def test_tail_loss_probe_comes_before_the_rto_and_resends_the_newest() -> None:
    rec, cc = make()
    s = send(rec, 3, 0.0)
    deadline = rec.deadline()
    assert deadline is not None and deadline < (rec.rto_deadline or 0.0)
    assert rec.on_timer(deadline) == PROBE
    assert rec.probe_with_retransmission(0.0)
    assert resend_all(rec, deadline) == [s[2]]
    assert rec.tail_loss_probes == 1 and "loss" not in cc.calls
    assert rec.deadline() == rec.rto_deadline  # one probe per flight; then the RTO
    # The probe is acknowledged (it repaired a real loss) and shows the others missing.
    later = deadline + RTT + 0.001
    ack(rec, s[0] - 1, later, [s[2]])
    assert cc.calls.count("loss") >= 1
    rec.on_timer(rec.loss_deadline or later)
    assert resend_all(rec, later) == s[:2]
    assert rec.timeouts == 0


def test_a_probe_answered_by_the_original_is_not_congestion() -> None:
    rec, cc = make()
    s = send(rec, 1, 0.0)
    deadline = rec.deadline() or 0.0
    rec.on_timer(deadline)
    rec.probe_with_retransmission(0.0)
    resend_all(rec, deadline)
    ack(rec, s[0], deadline + 0.01)  # sooner than a round trip: the original's ACK was late
    assert "loss" not in cc.calls and rec.spurious_retransmissions == 1


# --------------------------------------------------------------------------- timeouts and give-up


def test_timeouts_without_progress_give_up_and_stale_acks_do_not_reset_them() -> None:
    config = UTPConfig(max_retransmits=3)
    rec, cc = make(config)
    s = send(rec, 2, 0.0)
    now = 0.0
    results = []
    while True:
        rto = rec.rto_deadline
        assert rto is not None
        now = rto
        result = rec.on_timer(now)
        results.append(result)
        if result == GIVE_UP:
            break
        resend_all(rec, now)
        ack(rec, s[0] - 1, now + 0.01)  # a stale ACK: the peer is there, but nothing moves
    assert results == [RETRANSMIT] * 3 + [GIVE_UP]
    assert rec.timeouts == 3 and cc.calls.count("timeout") == 3


def test_progress_resets_the_timeout_count() -> None:
    rec, _ = make(UTPConfig(max_retransmits=2))
    s = send(rec, 3, 0.0)
    for i in range(3):
        rto = rec.rto_deadline or 0.0
        assert rec.on_timer(rto) == RETRANSMIT
        resend_all(rec, rto)
        ack(rec, s[i], rto + 0.01)  # one packet further each time
        assert rec.rto_count == 0


def test_acks_of_a_closed_window_keep_a_zero_window_probe_alive() -> None:
    rec, _ = make(UTPConfig(max_retransmits=2))
    rec.peer_wnd = 0
    s = send(rec, 1, 0.0)
    for _ in range(5):
        rto = rec.rto_deadline or 0.0
        assert rec.on_timer(rto) == RETRANSMIT
        resend_all(rec, rto)
        ack(rec, s[0] - 1, rto + 0.01, wnd=0)  # "still no room"
    assert rec.rto_count == 0


def test_an_mtu_probe_lost_is_not_congestion() -> None:
    rec, cc = make()
    outcomes: list[bool] = []
    rec.on_probe_outcome = lambda entry, ok: outcomes.append(ok)
    seq, entry = rec.on_sent(b"p" * 1400, False, 0.0)
    entry.probe = True
    later = send(rec, 2, 0.0)
    ack(rec, seq - 1, 0.1, later)
    rec.on_timer(rec.loss_deadline or 0.0)
    assert outcomes == [False] and "loss" not in cc.calls and list(rec.lost) == [seq]


def test_minimum_reordering_window_without_an_rtt() -> None:
    rec, _ = make(rtt=None)
    assert rec.reorder_window == MIN_REORDER_WINDOW
