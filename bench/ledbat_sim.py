"""LEDBAT and path MTU discovery in the simulator: the figures behind tests/test_ledbat.py and tests/test_mtu.py.

    python -m bench.ledbat_sim

Deterministic (virtual clock, fixed seeds), so it needs no repeats. Bottleneck:
10 Mbit/s, 500 ms FIFO buffer, 20 ms base RTT.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
from typing import Any

from txutp.engine import UTPConfig
from txutp.simulator import Host, LinkConfig, Network, StreamApp

RATE = 1.25e6
BOTTLENECK = LinkConfig(delay=0.01, bandwidth=RATE, buffer=int(RATE * 0.5))
RETURN = LinkConfig(delay=0.01)


def flows(configs: list[UTPConfig], seed: int, clocks: list[tuple[float, float]] | None = None) -> tuple[Any, ...]:
    net = Network(seed)
    clocks = clocks or [(0.0, 0.0)] * (len(configs) + 1)
    rx = net.add_host(("10.0.0.100", 1), accepting=True, clock_offset=clocks[-1][0], clock_drift_ppm=clocks[-1][1])
    senders: list[Host] = []
    for i, c in enumerate(configs):
        h = net.add_host((f"10.0.0.{i + 1}", 1), config=c, clock_offset=clocks[i][0], clock_drift_ppm=clocks[i][1])
        net.link(h, rx, RETURN, RETURN)
        senders.append(h)
    net.bottleneck([(h, rx) for h in senders], BOTTLENECK)
    sinks: dict[Any, StreamApp] = {}

    def accept(conn: Any) -> StreamApp:
        sinks[conn.peer_addr] = StreamApp(b"", shutdown_when_sent=False)
        return sinks[conn.peer_addr]

    rx.on_accept = accept
    conns = [h.connect(rx.address) for h in senders]
    for h, c in zip(senders, conns):
        h.attach(c, StreamApp(b"x" * 600_000_000))
    return net, rx, senders, sinks, conns


def got(sinks: dict[Any, StreamApp], host: Host) -> int:
    s = sinks.get(host.address)
    return len(s.received) if s else 0


def main() -> int:
    rows: list[tuple[str, str]] = []
    # One flow: time to 90 % of the bottleneck, steady queueing delay.
    net, rx, (h,), sinks, (conn,) = flows([UTPConfig()], 1)
    last, t90, q = 0, None, []
    for tenth in range(1, 1201):
        net.run(until=tenth / 10)
        if tenth % 10 == 0:
            now = got(sinks, h)
            if t90 is None and (now - last) >= 0.9 * RATE:
                t90 = tenth / 10
            last = now
        if tenth >= 300:
            q.append(net.queue_delay(h, rx))
    q.sort()
    rows.append(("one flow: first second at >= 90 % of 10 Mbit/s", f"ends at {t90} s"))
    rows.append(
        (
            "one flow: queueing delay, 30-120 s (median / p99)",
            f"{statistics.median(q) * 1000:.1f} / {q[int(len(q) * 0.99)] * 1000:.1f} ms",
        )
    )
    rows.append(("one flow: utilisation 30-120 s", f"{(got(sinks, h)) / (RATE * 120):.1%} (whole run)"))
    # Reno vs LEDBAT; two LEDBAT flows.
    for label, configs, seed, until in (
        ("Reno-like vs LEDBAT (30-150 s)", [UTPConfig(congestion_control="reno"), UTPConfig()], 2, 150),
        ("LEDBAT vs LEDBAT (30-240 s)", [UTPConfig(), UTPConfig()], 3, 240),
    ):
        net, rx, senders, sinks, _conns = flows(configs, seed)
        net.run(until=30)
        before = [got(sinks, s) for s in senders]
        net.run(until=until)
        shares = [(got(sinks, s) - b) / (RATE * (until - 30)) for s, b in zip(senders, before)]
        rows.append((label, " / ".join(f"{x:.1%}" for x in shares)))
    # 1 % loss at 50 ms RTT against the AIMD model.
    p, rtt = 0.01, 0.05
    model = 0.75 * math.sqrt(8 * 3000 * 1382 / (3 * p)) / rtt
    net = Network(4)
    a = net.add_host(("10.0.0.1", 1))
    b = net.add_host(("10.0.0.2", 2), accepting=True)
    net.link(a, b, LinkConfig(delay=0.025, loss=p, bandwidth=12.5e6, buffer=10**7), LinkConfig(delay=0.025))
    sink: list[StreamApp] = []
    b.on_accept = lambda c: sink.append(StreamApp(b"", shutdown_when_sent=False)) or sink[-1]
    a.attach(a.connect(b.address), StreamApp(random.Random(4).randbytes(40_000_000)))
    net.run(until=10)
    start = len(sink[0].received)
    net.run(until=70)
    goodput = (len(sink[0].received) - start) / 60
    rows.append(
        (
            "1 % loss, 50 ms RTT: goodput / AIMD model",
            f"{goodput / 1e6:.3f} / {model / 1e6:.3f} MB/s = {goodput / model:.2f}x",
        )
    )
    # Clock offset and drift.
    for clocks in ([(1.0, 0.0), (0.0, 100.0)], [(0.0, -100.0), (1.0, 0.0)]):
        net, rx, (h,), sinks, _ = flows([UTPConfig()], 5, clocks)
        samples: list[tuple[float, float]] = []
        for tick in range(1, 1501):
            net.run(until=tick / 5)
            samples.append((tick / 5, net.queue_delay(h, rx)))
        early = statistics.median(d for t, d in samples if 30 <= t <= 60)
        late = statistics.median(d for t, d in samples if 270 <= t <= 300)
        rows.append(
            (f"clocks {clocks}: median delay 30-60 s / 270-300 s", f"{early * 1000:.1f} / {late * 1000:.1f} ms")
        )
    # Path MTU discovery.
    for label, link, intercept in (
        ("MTU: 1280-byte path (limit 1252)", LinkConfig(delay=0.01, mtu=1280, bandwidth=5e6, buffer=500_000), None),
        ("MTU: path dropping every probe", LinkConfig(delay=0.01, bandwidth=5e6, buffer=500_000), "drop"),
        ("MTU: unlimited path (limit 1472)", LinkConfig(delay=0.01, bandwidth=5e6, buffer=500_000), None),
    ):
        net = Network(1)
        a = net.add_host(("10.0.0.1", 1))
        b = net.add_host(("10.0.0.2", 2), accepting=True)
        net.link(a, b, link, RETURN)
        if intercept:
            from txutp.engine import DontFragment

            net.intercept = lambda s, d, x: None if isinstance(x, DontFragment) else x
        b.on_accept = lambda c: StreamApp(b"", shutdown_when_sent=False)
        conn = a.connect(b.address)
        a.attach(conn, StreamApp(b"y" * 20_000_000))
        sizes = []
        for tenth in range(1, 101):
            net.run(until=tenth / 10)
            sizes.append(conn.packet_size)
        final = sizes[-1]
        at = next(i for i in range(len(sizes)) if all(s == final for s in sizes[i:])) / 10
        rows.append((label, f"{final} bytes after {at:.1f} s, {conn.mtu_probes} probes"))
    width = max(len(r[0]) for r in rows)
    for what, value in rows:
        print(f"{what.ljust(width)}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
