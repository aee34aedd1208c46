"""Many idle uTP connections on one server port: memory per connection and handshakes per second.

    python -m bench.idle_conns server
    python -m bench.idle_conns client PORT COUNT

The server listens on 127.0.0.1 (``READY <port>``) and keeps every connection
open; on SIGUSR1 it prints one JSON line with its connection count and resident
set size (VmRSS), so the orchestrator can take the RSS before and after. The
client opens COUNT connections through one shared socket, keeping at most 500
handshakes in flight, and prints ``{"connected", "seconds", "handshakes_per_s"}``
once all are up, then keeps them open until killed. Both ends are 127.0.0.1, so
the per-host limits are raised to the connection count (and the backlog's share to
the backlog: every handshake is stateful, as before SYN cookies).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.protocol import Factory, Protocol

from txutp import UTPClientEndpoint, UTPServerEndpoint
from txutp.engine import UTPConfig

reactor: Any = _reactor
#: One host opens every connection: lift the per-host limits out of the way.
CONFIG = UTPConfig(backlog=1024, max_connections_per_host=20_000, max_half_open_per_host=1024)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Idle(Protocol):
    live = 0

    def connectionMade(self) -> None:
        Idle.live += 1

    def connectionLost(self, reason: Any = None) -> None:
        Idle.live -= 1


def server() -> None:
    d = UTPServerEndpoint(reactor, 0, "127.0.0.1", CONFIG).listen(Factory.forProtocol(Idle))
    d.addCallback(lambda lp: print(f"READY {lp.getHost().port}", flush=True))
    signal.signal(
        signal.SIGUSR1,
        lambda *_: reactor.callFromThread(
            lambda: print(json.dumps({"connections": Idle.live, "rss_kib": rss_kib()}), flush=True)
        ),
    )


def client(port: int, count: int) -> None:
    endpoint = UTPClientEndpoint(reactor, "127.0.0.1", port, timeout=30, config=CONFIG)
    factory = Factory.forProtocol(Idle)
    started = time.perf_counter()
    state = {"opened": 0, "done": 0, "failed": 0}

    def launch() -> None:
        while state["opened"] < count and state["opened"] - state["done"] < 500:
            state["opened"] += 1
            d = endpoint.connect(factory)
            d.addCallbacks(lambda _: finished(True), lambda f: finished(False))

    def finished(ok: bool) -> None:
        state["done"] += 1
        if not ok:
            state["failed"] += 1
        if state["done"] == count:
            seconds = time.perf_counter() - started
            print(
                json.dumps(
                    {
                        "connected": Idle.live,
                        "failed": state["failed"],
                        "seconds": seconds,
                        "handshakes_per_s": (count - state["failed"]) / seconds,
                    }
                ),
                flush=True,
            )
        else:
            reactor.callLater(0, launch)

    reactor.callWhenRunning(launch)


def main() -> int:
    if sys.argv[1] == "server":
        server()
    else:
        client(int(sys.argv[2]), int(sys.argv[3]))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
