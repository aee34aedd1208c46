"""LEDBAT at a simulated bottleneck, and its delay measurement, on the virtual clock.

The bottleneck is 10 Mbit/s (1.25 MB/s) with a 500 ms buffer (625 kB) and a 20 ms
base RTT, fed through one FIFO queue; the queueing delay is read off the queue.
"""

from __future__ import annotations

import math
import random
import statistics

import pytest

from txutp.engine import LEDBAT, DelayHistory, UTPConfig
from txutp.simulator import Host, LinkConfig, Network, StreamApp

RATE = 1.25e6  # bytes/s
BOTTLENECK = LinkConfig(delay=0.01, bandwidth=RATE, buffer=int(RATE * 0.5))
RETURN = LinkConfig(delay=0.01)
ENDLESS = b"x" * 600_000_000


class Flows:
    """Senders behind one bottleneck towards one receiver; samples rates and queueing delay."""

    def __init__(self, configs: list[UTPConfig], seed: int = 1, clocks: list[tuple[float, float]] | None = None):
        self.net = Network(seed)
        clocks = clocks or [(0.0, 0.0)] * (len(configs) + 1)
        self.receiver = self.net.add_host(
            ("10.0.0.100", 6881), accepting=True, clock_offset=clocks[-1][0], clock_drift_ppm=clocks[-1][1]
        )
        self.senders: list[Host] = []
        for i, config in enumerate(configs):
            host = self.net.add_host(
                (f"10.0.0.{i + 1}", 6881), config=config, clock_offset=clocks[i][0], clock_drift_ppm=clocks[i][1]
            )
            self.net.link(host, self.receiver, RETURN, RETURN)
            self.senders.append(host)
        self.net.bottleneck([(h, self.receiver) for h in self.senders], BOTTLENECK)
        self.sinks: dict[object, StreamApp] = {}

        def accept(conn: object) -> StreamApp:
            app = StreamApp(b"", shutdown_when_sent=False)
            self.sinks[conn.peer_addr] = app  # type: ignore[attr-defined]
            return app

        self.receiver.on_accept = accept
        self.conns = [h.connect(self.receiver.address) for h in self.senders]
        for host, conn in zip(self.senders, self.conns):
            host.attach(conn, StreamApp(ENDLESS))
        self.queue: list[tuple[float, float]] = []  # (time, queueing delay)

    def received(self, host: Host) -> int:
        sink = self.sinks.get(host.address)
        return len(sink.received) if sink else 0

    def run(self, until: float, step: float = 0.1) -> None:
        net = self.net
        while net.now < until - 1e-9:
            net.run(until=min(until, net.now + step))
            self.queue.append((net.now, net.queue_delay(self.senders[0], self.receiver)))

    def delays(self, start: float, end: float) -> list[float]:
        return sorted(q for t, q in self.queue if start <= t <= end)


def test_one_flow_fills_the_bottleneck_and_keeps_the_queue_at_target() -> None:
    flows = Flows([UTPConfig()])
    host = flows.senders[0]
    best = 0.0
    last = 0
    for second in range(1, 11):
        flows.run(second, step=0.1)
        got = flows.received(host)
        best = max(best, (got - last) / RATE)
        last = got
    assert best >= 0.9, f"best one-second utilisation within 10 s: {best:.2f}"
    flows.run(120)
    steady = flows.delays(30, 120)
    median = statistics.median(steady)
    p99 = steady[int(len(steady) * 0.99)]
    assert 0.075 <= median <= 0.125, median
    assert p99 <= 0.125, p99
    utilisation = (flows.received(host) - last) / (RATE * 110)
    assert utilisation >= 0.9, utilisation


def test_ledbat_yields_to_a_loss_based_flow() -> None:
    flows = Flows([UTPConfig(congestion_control="reno"), UTPConfig()], seed=2)
    reno, ledbat = flows.senders
    flows.run(30, step=1.0)
    before = flows.received(reno), flows.received(ledbat)
    flows.run(150, step=1.0)
    reno_share = (flows.received(reno) - before[0]) / (RATE * 120)
    ledbat_share = (flows.received(ledbat) - before[1]) / (RATE * 120)
    assert reno_share >= 0.8, (reno_share, ledbat_share)


def test_two_ledbat_flows_share_fairly() -> None:
    flows = Flows([UTPConfig(), UTPConfig()], seed=3)
    first, second = flows.senders
    flows.run(30, step=1.0)
    before = flows.received(first), flows.received(second)
    flows.run(240, step=1.0)
    a = flows.received(first) - before[0]
    b = flows.received(second) - before[1]
    share = a / (a + b)
    assert 0.35 <= share <= 0.65, share
    assert (a + b) / (RATE * 210) >= 0.85
    # The periodic slowdown is what re-synchronises their base delays.
    assert all(c.stats().congestion.slowdowns >= 2 for c in flows.conns)


def test_goodput_under_random_loss_matches_the_aimd_model() -> None:
    """1 % random loss, 50 ms RTT, no bottleneck: LEDBAT behaves as AIMD here.

    Model: with no queue the delay factor is 1, so the window grows by ``gain`` =
    3000 bytes per RTT and halves on each loss event. The window saws between W/2
    and W; a cycle lasts W/(2·gain) RTTs and carries 3W²/(8·gain·mss) packets, one
    of them lost, so ``W = sqrt(8·gain·mss / (3p))`` and the goodput is
    ``0.75·W / RTT`` (Mathis et al. 1997 with AIMD(3000 B, ½)): 0.50 MB/s here.
    """
    p, rtt, mss, gain = 0.01, 0.05, 1382, 3000
    model = 0.75 * math.sqrt(8 * gain * mss / (3 * p)) / rtt
    net = Network(seed=4)
    a = net.add_host(("10.0.0.1", 1))
    b = net.add_host(("10.0.0.2", 2), accepting=True)
    net.link(a, b, LinkConfig(delay=0.025, loss=p, bandwidth=12.5e6, buffer=10**7), LinkConfig(delay=0.025))
    sinks: list[StreamApp] = []
    b.on_accept = lambda conn: sinks.append(StreamApp(b"", shutdown_when_sent=False)) or sinks[-1]
    data = random.Random(4).randbytes(40_000_000)
    a.attach(a.connect(b.address), StreamApp(data))
    net.run(until=10)
    start = len(sinks[0].received)
    net.run(until=70)
    goodput = (len(sinks[0].received) - start) / 60
    assert 0.7 * model <= goodput <= 1.4 * model, (goodput, model)
    net.run(until=600, stop=lambda: sinks[0].eof)
    assert bytes(sinks[0].received) == data


@pytest.mark.parametrize(
    "clocks",
    [
        [(1.0, 0.0), (0.0, 100.0)],  # sender 1 s ahead; receiver gains 100 ppm
        [(1.0, 0.0), (0.0, -100.0)],  # receiver loses 100 ppm
        [(0.0, 100.0), (1.0, 0.0)],  # sender drifts, receiver 1 s ahead
        [(0.0, -100.0), (1.0, 0.0)],
    ],
)
def test_clock_offset_and_drift_leave_the_delay_in_the_band(clocks: list[tuple[float, float]]) -> None:
    flows = Flows([UTPConfig()], seed=5, clocks=clocks)
    flows.run(300, step=0.2)  # 300 s at 100 ppm: the clocks drift apart by 30 ms
    steady = flows.delays(30, 300)
    assert 0.075 <= statistics.median(steady) <= 0.125
    assert steady[int(len(steady) * 0.99)] <= 0.125
    # And it does not wander as the clocks drift apart (without drift compensation the
    # queue shrinks by about 17 ms over these 270 s in two of the four cases).
    early, late = statistics.median(flows.delays(30, 60)), statistics.median(flows.delays(270, 300))
    assert abs(late - early) <= 0.010, (early, late)


# --------------------------------------------------------------------------- delay measurement


def test_delay_history_base_is_the_minimum_over_the_slots() -> None:
    h = DelayHistory(slots=3, slot_seconds=60)
    assert h.add_sample(5000, 0.0) == 0
    assert h.add_sample(7000, 1.0) == 2000
    assert h.add_sample(4000, 61.0) == 0  # a new slot
    assert h.base == 4000
    h.add_sample(9000, 130.0)
    h.add_sample(9000, 190.0)
    h.add_sample(9500, 250.0)  # the slot holding 4000 has aged out
    assert h.base == 9000


def test_current_delay_is_the_minimum_of_the_last_three_samples() -> None:
    h = DelayHistory()
    h.add_sample(1000, 0.0)
    for sample in (51000, 31000, 41000):
        h.add_sample(sample, 1.0)
    assert h.current == 30000
    h.add_sample(61000, 1.0)
    h.add_sample(71000, 1.0)
    assert h.current == 40000  # the 30000 sample is no longer among the last three


def test_delay_history_wraps_at_32_bits() -> None:
    h = DelayHistory()
    h.add_sample(0xFFFFFF00, 0.0)
    assert h.add_sample(0x00000100, 1.0) == 0x200  # 512 µs more, across the wrap
    assert h.base == 0xFFFFFF00


def test_drift_shift_raises_the_base() -> None:
    h = DelayHistory()
    h.add_sample(10_000, 0.0)
    h.add_sample(20_000, 1.0)
    h.shift(3_000)
    assert h.base == 13_000
    assert h.add_sample(20_000, 2.0) == 7_000


@pytest.mark.parametrize("hostile", [0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1])
def test_hostile_delay_samples_cannot_inflate_the_window(hostile: int) -> None:
    cc = LEDBAT(mss=1382, initial_cwnd=10 * 1382, max_cwnd=1 << 20)
    now = 0.0
    for _ in range(50):
        now += 0.02
        cc.on_ack(
            now=now,
            acked_bytes=1382,
            in_flight=10 * 1382,
            delay_us=hostile if _ % 2 else 20_000,
            rtt=0.02,
            window_limited=True,
            rtt_sample=0.02,
        )
        assert cc.delay_us is None or 0 <= cc.delay_us <= 20_000  # clamped to the RTT
        assert 1382 <= cc.cwnd <= 1 << 20


def test_no_growth_when_application_limited() -> None:
    cc = LEDBAT(mss=1000, initial_cwnd=10_000, max_cwnd=1 << 20, config=UTPConfig(ledbat_slowdown=False))
    for i in range(100):
        cc.on_ack(now=i * 0.01, acked_bytes=1000, in_flight=2000, delay_us=5000, rtt=0.05, window_limited=False)
    assert cc.cwnd == 10_000


def test_loss_halves_at_most_once_per_rtt_and_timeout_restarts_slow_start() -> None:
    cc = LEDBAT(mss=1000, initial_cwnd=64_000, max_cwnd=1 << 20)
    cc.on_loss(now=1.0, rtt=0.2)
    assert cc.cwnd == 32_000 and not cc.slow_start
    cc.on_loss(now=1.15, rtt=0.2)  # within one RTT: ignored
    assert cc.cwnd == 32_000
    cc.on_loss(now=1.25, rtt=0.2)
    assert cc.cwnd == 16_000
    cc.on_loss(now=1.30, rtt=None)  # no RTT yet: 100 ms apart at least
    assert cc.cwnd == 16_000
    cc.on_timeout(now=2.0, idle=False)
    assert cc.cwnd == 1000 and cc.slow_start
    cc.cwnd = 9000
    cc.on_timeout(now=3.0, idle=True)
    assert cc.cwnd == 6000


def test_window_never_exceeds_the_peers_advertised_window() -> None:
    cc = LEDBAT(mss=1000, initial_cwnd=4000, max_cwnd=1 << 20)
    for i in range(200):
        cc.on_ack(
            now=i * 0.01,
            acked_bytes=4000,
            in_flight=4000,
            delay_us=1000,
            rtt=0.05,
            window_limited=True,
            peer_window=50_000,
        )
    assert cc.cwnd == 50_000


def test_statistics_are_readable_at_any_time() -> None:
    flows = Flows([UTPConfig()], seed=6)
    conn = flows.conns[0]
    first = conn.stats()
    assert first.state == "SYN_SENT" and first.rtt is None and first.current_delay_us is None
    flows.run(40, step=1.0)
    while conn.stats().congestion.slow_start and flows.net.now < 60:  # not in the middle of a slowdown
        flows.run(flows.net.now + 0.5, step=0.5)
    st = conn.stats()
    assert st.state == "CONNECTED"
    assert st.rtt is not None and 0.02 <= st.rtt <= 0.2
    assert st.rto >= 0.5
    assert st.current_delay_us is not None and 75_000 <= st.current_delay_us <= 125_000
    assert st.base_delay_us is not None
    assert st.mtu == 1458 and st.mtu_probes >= 1  # no MTU limit on this path: the search went up
    assert st.bytes_sent >= flows.received(flows.senders[0]) > 40 * RATE * 0.8
    assert st.packets_sent > 0 and st.packets_received > 0
    assert st.cwnd >= st.mtu
    assert st.congestion.slowdowns >= 1
