"""The deterministic byte stream that every interop peer sends and checks.

The stream is a period-``PERIOD`` repetition of a block built from a SHA-256
chain::

    h[0]   = sha256(b"txutp-interop-stream")
    h[i+1] = sha256(h[i])
    BLOCK  = (h[0] + h[1] + ...)[:PERIOD]
    byte k of the stream = BLOCK[k % PERIOD]

``PERIOD`` = 1 048 573 is a prime, so it is prime to every packet size and
power of two: a packet delivered at the wrong offset, duplicated or dropped
changes the SHA-256 of the received stream. ``tests/peers/utp_native_peer.js``
implements the same definition (``makeBlock``).

Run as a script, it prints the expected ``{"bytes": N, "sha256": ...}`` of the
first N bytes: ``python tests/peers/stream.py 20000000``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from functools import lru_cache

__all__ = ["PERIOD", "SEED", "block", "chunks", "expected", "stream_bytes"]

SEED = b"txutp-interop-stream"
PERIOD = 1_048_573


@lru_cache(maxsize=1)
def block() -> bytes:
    """The first ``PERIOD`` bytes of the SHA-256 chain."""
    out = bytearray()
    h = hashlib.sha256(SEED).digest()
    while len(out) < PERIOD:
        out += h
        h = hashlib.sha256(h).digest()
    return bytes(out[:PERIOD])


def stream_bytes(offset: int, n: int) -> bytes:
    """Bytes ``offset`` to ``offset + n`` of the stream."""
    b = block()
    out = bytearray()
    pos = offset % PERIOD
    while n > 0:
        take = min(n, PERIOD - pos)
        out += b[pos : pos + take]
        n -= take
        pos = 0
    return bytes(out)


def chunks(total: int, size: int = 65536) -> Iterator[bytes]:
    """The first ``total`` bytes of the stream, in chunks of at most ``size``."""
    offset = 0
    while offset < total:
        n = min(size, total - offset)
        yield stream_bytes(offset, n)
        offset += n


def expected(total: int) -> dict[str, object]:
    """``{"bytes": total, "sha256": hex}`` of the first ``total`` bytes."""
    h = hashlib.sha256()
    for c in chunks(total, 1 << 20):
        h.update(c)
    return {"bytes": total, "sha256": h.hexdigest()}


if __name__ == "__main__":
    print(json.dumps(expected(int(sys.argv[1]))))
