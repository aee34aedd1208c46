"""The Twisted raw-UDP ceiling: how many 1400-byte datagrams a Twisted UDP port moves one way.

    python -m bench.udp_blast recv [--seconds S]
    python -m bench.udp_blast send PORT [--seconds S]

The receiver (a plain ``DatagramProtocol`` on ``reactor.listenUDP``, socket buffers
raised as txutp raises them) prints ``READY <port>``, counts datagrams and bytes
and, once nothing arrived for a second after the first, prints one JSON line
(the rate over the busy period). The sender writes 1400-byte datagrams with
``transport.write`` as fast as the reactor lets it, for ``--seconds``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.protocol import DatagramProtocol

reactor: Any = _reactor
SIZE = 1400
BUFFER = 4 * 1024 * 1024


def _raise_buffers(port: Any) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        port.socket.setsockopt(socket.SOL_SOCKET, opt, BUFFER)


class Counter(DatagramProtocol):
    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.first = 0.0
        self.last = 0.0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        now = time.perf_counter()
        if not self.count:
            self.first = now
        self.count += 1
        self.bytes += len(data)
        self.last = now


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("role", choices=["recv", "send"])
    p.add_argument("port", nargs="?", type=int, default=0)
    p.add_argument("--seconds", type=float, default=2.0)
    ns = p.parse_args(argv)
    if ns.role == "recv":
        counter = Counter()
        port = reactor.listenUDP(0, counter, interface="127.0.0.1", maxPacketSize=65535)
        _raise_buffers(port)
        print(f"READY {port.getHost().port}", flush=True)

        def check() -> None:
            if counter.count and time.perf_counter() - counter.last > 1.0:
                seconds = max(counter.last - counter.first, 1e-9)
                print(
                    json.dumps(
                        {
                            "datagrams": counter.count,
                            "seconds": seconds,
                            "datagrams_per_s": counter.count / seconds,
                            "mb_per_s": counter.bytes / seconds / 1e6,
                        }
                    ),
                    flush=True,
                )
                reactor.stop()
            else:
                reactor.callLater(0.2, check)

        reactor.callLater(0.2, check)
        reactor.callLater(60, reactor.stop)
    else:
        sender = DatagramProtocol()
        port = reactor.listenUDP(0, sender, interface="127.0.0.1")
        _raise_buffers(port)
        payload = b"x" * SIZE
        dest = ("127.0.0.1", ns.port)
        end = time.perf_counter() + ns.seconds
        sent = 0

        def burst() -> None:
            nonlocal sent
            write = port.write
            for _ in range(2000):
                try:
                    write(payload, dest)
                    sent += 1
                except OSError:
                    pass
            if time.perf_counter() < end:
                reactor.callLater(0, burst)
            else:
                print(json.dumps({"sent": sent}), flush=True)
                reactor.stop()

        reactor.callLater(0, burst)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
