"""Loss recovery on simulated real paths: the figures behind tests/test_loss_recovery.py.

    python -m bench.recovery_sim [--seeds N]

4 MB one way over a 40 ms RTT path with no bottleneck (both directions alike), for
seeds 1..N: clean, 2 and 5 ms of jitter, 5 % of datagrams held back 20 ms, 2 % loss,
and 2 % loss with 2 ms of jitter. Deterministic (virtual clock), so no repeats are
needed. Prints goodput (mean and minimum over the seeds, Mbit/s) and the sender's
retransmissions and timeouts (totals over the seeds).
"""

from __future__ import annotations

import argparse
import random
import sys

from txutp.simulator import LinkConfig, Network, StreamApp

MB = 1_000_000
PATHS: dict[str, dict[str, float]] = {
    "clean": {},
    "2 ms jitter": {"jitter": 0.002},
    "5 ms jitter": {"jitter": 0.005},
    "reorder 5 % by 20 ms": {"reorder": 0.05, "reorder_delay": 0.02},
    "2 % loss": {"loss": 0.02},
    "2 % loss + 2 ms jitter": {"loss": 0.02, "jitter": 0.002},
}


def transfer(seed: int, size: int, **link: float) -> tuple[float, int, int]:
    """Goodput (Mbit/s), retransmissions and timeouts of one transfer."""
    net = Network(seed=seed)
    a = net.add_host(("10.0.0.1", 6881))
    b = net.add_host(("10.0.0.2", 6881), accepting=True)
    config = LinkConfig(delay=0.02, **link)
    net.link(a, b, config, config)
    received: list[StreamApp] = []
    b.on_accept = lambda conn: received.append(StreamApp(b"")) or received[-1]
    data = random.Random(seed).randbytes(size)
    conn = a.connect(b.address)
    a.attach(conn, StreamApp(data))
    net.run(until=600, stop=lambda: bool(received) and received[0].eof)
    if not received or bytes(received[0].received) != data:
        raise SystemExit(f"FAIL: seed {seed} {link}: the stream arrived damaged or incomplete")
    stats = conn.stats()
    return size * 8 / net.now / 1e6, stats.retransmissions, stats.timeouts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--size", type=int, default=4 * MB)
    ns = p.parse_args(argv)
    print(f"{'path':<24} {'mean Mbit/s':>11} {'min Mbit/s':>10} {'retransmissions':>15} {'timeouts':>8}")
    for name, link in PATHS.items():
        runs = [transfer(seed, ns.size, **link) for seed in range(1, ns.seeds + 1)]
        goodputs = [r[0] for r in runs]
        print(
            f"{name:<24} {sum(goodputs) / len(goodputs):>11.2f} {min(goodputs):>10.2f} "
            f"{sum(r[1] for r in runs):>15} {sum(r[2] for r in runs):>8}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
