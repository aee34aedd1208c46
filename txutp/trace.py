"""Per-connection traces: one JSON object per line, written as the connection runs.

A trace is opt-in. Its first line is a header naming the protocol and the
connection; every later line is an event ``{"t": seconds since the start,
"name": ..., fields...}``. The schema is documented in ``docs/observing.rst``
("Seeing what a connection does"); readers ignore event names and fields they
do not know.

:class:`TraceWriter` writes a trace (a buffered file, nothing kept in memory
but the last metrics sample), :func:`trace_file_name` names one,
:func:`read_trace` reads one back and :func:`summarize` adds up what a trace
says a connection did. Pure Python: no Twisted, no matplotlib.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import IO, Any, Protocol

__all__ = [
    "TRACE_FORMAT",
    "TRACE_VERSION",
    "TraceWriter",
    "address_text",
    "read_trace",
    "summarize",
    "trace_directory",
    "trace_file",
    "trace_file_name",
]

#: The header's ``"trace"`` value and the schema version this module writes and reads.
TRACE_FORMAT = "txutp"
TRACE_VERSION = 1

#: The separators that make the shortest valid JSON; one encoder for every line.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def address_text(address: object) -> str:
    """An address as text: ``host:port`` for a ``(host, port)`` pair (``[host]:port`` for IPv6), else ``str()``."""
    if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[0], str):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    twisted_host, twisted_port = getattr(address, "host", None), getattr(address, "port", None)
    if isinstance(twisted_host, str) and isinstance(twisted_port, int):  # IPv4Address / IPv6Address
        return address_text((twisted_host, twisted_port))
    return str(address)


class TraceWriter:
    """Writes one connection's trace, line by line, to a file it opens or one it is given.

    The header is written at once. :meth:`event` writes one event,
    :meth:`packet_sent` and :meth:`packet_received` are the same for the two
    packet events (hand-built lines: they run for every packet), and
    :meth:`metrics` writes a ``"metrics"`` sample when a value changed, at
    most once per ``sample_interval`` seconds; a sample held back by the
    interval is written by the next call after it, or by :meth:`close`.

    ``start`` is the engine clock reading (seconds) that is ``t = 0``; every
    ``now`` given later is on the same clock. A writer given a path opens the
    file (UTF-8) and closes it in :meth:`close`; a writer given an open text
    file flushes it in :meth:`close` and leaves it open. Tracing never breaks
    the connection: after :meth:`close`, or once a write failed (the
    ``OSError`` is kept in :attr:`error`), every call does nothing.
    """

    __slots__ = (
        "_file",
        "_last_sample",
        "_last_sample_time",
        "_owns_file",
        "_pending",
        "_pending_time",
        "error",
        "path",
        "sample_interval",
        "start",
    )

    def __init__(
        self,
        file: str | os.PathLike[str] | IO[str],
        *,
        local: object,
        peer: object,
        recv_id: int,
        send_id: int,
        initiator: bool,
        start: float,
        wall_clock: datetime | None = None,
        congestion_control: str = "ledbat",
        target_delay_us: int = 100_000,
        sample_interval: float = 0.01,
    ) -> None:
        if sample_interval < 0:
            raise ValueError(f"sample_interval must be >= 0, not {sample_interval!r}")
        self.start = start
        self.sample_interval = sample_interval
        #: The write error that stopped the trace, if any.
        self.error: OSError | None = None
        self._last_sample: dict[str, Any] | None = None
        self._last_sample_time = float("-inf")
        self._pending: dict[str, Any] | None = None
        self._pending_time = 0.0
        if isinstance(file, (str, os.PathLike)):
            #: The file's path, or ``None`` for a file object given.
            self.path: str | None = os.fspath(file)
            self._file: IO[str] | None = open(self.path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
            self._owns_file = True
        else:
            self.path = None
            self._file = file
            self._owns_file = False
        when = datetime.now(timezone.utc) if wall_clock is None else wall_clock.astimezone(timezone.utc)
        header = {
            "trace": TRACE_FORMAT,
            "version": TRACE_VERSION,
            "protocol": "uTP (BEP 29)",
            "connection": {
                "local": address_text(local),
                "peer": address_text(peer),
                "recv_id": recv_id,
                "send_id": send_id,
                "initiator": initiator,
            },
            "start": start,
            "wall_clock": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "congestion_control": congestion_control,
            "target_delay_us": target_delay_us,
        }
        self._write(_ENCODE(header) + "\n")

    @property
    def closed(self) -> bool:
        """Closed, or stopped by a write error."""
        return self._file is None

    def _write(self, line: str) -> None:
        file = self._file
        if file is None:
            return
        try:
            file.write(line)
        except OSError as e:
            self.error = e
            self._drop_file()

    def _drop_file(self) -> None:
        file, self._file = self._file, None
        if file is not None and self._owns_file:
            try:
                file.close()
            except OSError as e:
                self.error = self.error or e

    def event(self, now: float, name: str, **fields: Any) -> None:
        """Write event ``name`` that happened at ``now`` (engine clock) with ``fields`` (JSON values)."""
        if self._file is None:
            return
        self._write(_ENCODE({"t": round(now - self.start, 6), "name": name, **fields}) + "\n")

    def packet_sent(
        self,
        now: float,
        type: str,
        seq: int,
        ack: int,
        size: int,
        payload: int,
        sack: int | None = None,
        retransmit: bool = False,
        probe: bool = False,
    ) -> None:
        """Write a ``"packet_sent"`` event: ``type`` is the packet type name (``"DATA"``, ``"STATE"``...)."""
        if self._file is None:
            return
        self._write(
            f'{{"t":{round(now - self.start, 6)!r},"name":"packet_sent","type":"{type}","seq":{int(seq)},'
            f'"ack":{int(ack)},"size":{int(size)},"payload":{int(payload)},'
            f'"sack":{"null" if sack is None else int(sack)},'
            f'"retransmit":{"true" if retransmit else "false"},"probe":{"true" if probe else "false"}}}\n'
        )

    def packet_received(
        self,
        now: float,
        type: str,
        seq: int,
        ack: int,
        size: int,
        payload: int,
        sack: int | None,
        wnd: int,
    ) -> None:
        """Write a ``"packet_received"`` event; ``wnd`` is the window the peer advertised in it."""
        if self._file is None:
            return
        self._write(
            f'{{"t":{round(now - self.start, 6)!r},"name":"packet_received","type":"{type}","seq":{int(seq)},'
            f'"ack":{int(ack)},"size":{int(size)},"payload":{int(payload)},'
            f'"sack":{"null" if sack is None else int(sack)},'
            f'"wnd":{int(wnd)}}}\n'
        )

    def metrics(self, now: float, **values: Any) -> None:
        """Offer a ``"metrics"`` sample (cwnd, in_flight, srtt...): written if it differs from the last
        one written and ``sample_interval`` has passed since that one; otherwise kept as the pending
        sample (the newest offered), which the next call past the interval or :meth:`close` writes."""
        if self._file is None:
            return
        if values == self._last_sample:
            self._pending = None  # back to what the trace already shows
            return
        if now - self._last_sample_time >= self.sample_interval - 1e-9:  # 1 ns: clock arithmetic's rounding
            self._write_sample(now, values)
        else:
            self._pending = values
            self._pending_time = now

    def _write_sample(self, now: float, values: dict[str, Any]) -> None:
        self._last_sample = values
        self._last_sample_time = now
        self._pending = None
        self._write(_ENCODE({"t": round(now - self.start, 6), "name": "metrics", **values}) + "\n")

    def flush(self) -> None:
        """Write the pending metrics sample (at the time it was offered) and flush the file."""
        if self._file is None:
            return
        if self._pending is not None:
            self._write_sample(self._pending_time, self._pending)
        file = self._file
        if file is not None:
            try:
                file.flush()
            except OSError as e:
                self.error = e
                self._drop_file()

    def close(self, now: float | None = None) -> None:
        """Write the pending metrics sample, then close the file (flush it, if it was given open).

        ``now`` is accepted for symmetry with the other calls; nothing is written at it. Idempotent.
        """
        if self._file is None:
            return
        self.flush()
        self._drop_file()


_UNSAFE = re.compile(r"[^A-Za-z0-9.\-]")


def trace_file_name(
    directory: str | os.PathLike[str],
    *,
    local: object,
    peer: object,
    recv_id: int,
    initiator: bool,
    when: datetime,
) -> str:
    """The path, in ``directory``, of a trace of this connection:
    ``utp-<YYYYmmddTHHMMSS>-<local>-<peer>-<recv_id>-<client|server>.jsonl``.

    ``when`` is written in UTC when it carries a time zone. In the addresses every character
    other than letters, digits, ``.`` and ``-`` (``:``, ``[``, ``]``, ``/``...) becomes ``_``, so
    ``[::1]:6881`` is ``___1__6881``.
    """
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    name = "-".join(
        [
            "utp",
            when.strftime("%Y%m%dT%H%M%S"),
            _UNSAFE.sub("_", address_text(local)),
            _UNSAFE.sub("_", address_text(peer)),
            str(int(recv_id)),
            "client" if initiator else "server",
        ]
    )
    return os.path.join(os.fspath(directory), name + ".jsonl")


class _Connection(Protocol):
    """What a tracer factory reads of a new connection (a :class:`txutp.engine.UTPConnection`)."""

    peer_addr: Any
    recv_id: int
    send_id: int
    initiator: bool
    config: Any


def _writer(file: str | os.PathLike[str] | IO[str], conn: _Connection, local: object, now: float) -> TraceWriter:
    config = conn.config
    return TraceWriter(
        file,
        local=local,
        peer=conn.peer_addr,
        recv_id=conn.recv_id,
        send_id=conn.send_id,
        initiator=conn.initiator,
        start=now,
        congestion_control=config.congestion_control,
        target_delay_us=round(config.target_delay * 1_000_000),
    )


TracerFactory = Callable[[Any, float], "TraceWriter | None"]
#: The ``.jsonl`` paths a :func:`trace_file` factory has written in this process.
_FILES_TAKEN: set[str] = set()


def trace_directory(directory: str | os.PathLike[str], local: object = "") -> TracerFactory:
    """A tracer factory (``UTPContext.tracer_factory``): one file per connection in ``directory``.

    The directory is created if missing; file names are :func:`trace_file_name`'s. A
    connection whose file cannot be created is not traced (the error is not raised).
    """
    os.makedirs(directory, exist_ok=True)

    def factory(conn: _Connection, now: float) -> TraceWriter | None:
        path = trace_file_name(
            directory,
            local=local,
            peer=conn.peer_addr,
            recv_id=conn.recv_id,
            initiator=conn.initiator,
            when=datetime.now(timezone.utc),
        )
        try:
            return _writer(path, conn, local, now)
        except OSError:
            return None

    return factory


def trace_file(path: str | os.PathLike[str], local: object = "") -> TracerFactory:
    """A tracer factory that traces the first connection only, to ``path`` (``utpcat --trace``).

    First in the process: factories of several multiplexers given the same path
    (``TXUTP_TRACE``) write one trace, not over each other.
    """
    key = os.path.abspath(path)

    def factory(conn: _Connection, now: float) -> TraceWriter | None:
        if key in _FILES_TAKEN:
            return None
        _FILES_TAKEN.add(key)
        return _writer(path, conn, local, now)

    return factory


def _parse_line(path: str, number: int, line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError as e:
        raise ValueError(f"{path}:{number}: not a JSON line ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}:{number}: not a JSON object")
    return value


def _check_header(path: str, header: dict[str, Any]) -> None:
    if header.get("trace") != TRACE_FORMAT:
        raise ValueError(f'{path}:1: not a txutp trace (the header has no "trace": "{TRACE_FORMAT}")')
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f'{path}:1: the header has no integer "version"')
    if version > TRACE_VERSION:
        raise ValueError(f"{path}:1: trace version {version} is newer than this reader's ({TRACE_VERSION})")


def _events(path: str) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        f.readline()
        number = 1
        for line in f:
            number += 1
            if not line.strip():
                continue
            try:
                event = _parse_line(path, number, line)
            except ValueError:
                if not line.endswith("\n"):
                    return  # the last line, cut short (the writer died mid-line): ignored
                raise
            t, name = event.get("t"), event.get("name")
            if not isinstance(t, (int, float)) or isinstance(t, bool) or not isinstance(name, str):
                raise ValueError(f'{path}:{number}: an event needs a number "t" and a string "name"')
            yield event


def read_trace(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The header of the trace at ``path`` and an iterator over its events (read lazily, in order).

    Raises ``ValueError`` naming the file and line for a header that is not a txutp trace (or is of a
    newer version) at once, and for a malformed event line when the iterator reaches it. Blank lines
    and a last line cut short (no newline: the writer was killed mid-line) are skipped; unknown event
    names and fields are passed through.
    """
    name = os.fspath(path)
    with open(name, encoding="utf-8") as f:
        first = f.readline()
    if not first.strip():
        raise ValueError(f"{name}:1: empty file, no trace header")
    header = _parse_line(name, 1, first)
    _check_header(name, header)
    return header, _events(name)


def _count(counts: dict[str, int], key: object) -> None:
    k = str(key)
    counts[k] = counts.get(k, 0) + 1


def summarize(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What a trace's events add up to, to compare with :meth:`UTPConnection.stats()
    <txutp.engine.UTPConnection.stats>`.

    Keys: ``events``; ``duration`` (``t`` of the last event); ``packets_sent`` and
    ``packets_received`` (all types), by type in ``packets_sent_by_type`` and
    ``packets_received_by_type``; ``retransmissions`` (packets sent with ``retransmit``);
    ``payload_bytes_sent`` (DATA payload sent for the first time, like ``stats().bytes_sent``),
    ``payload_bytes_retransmitted``, ``payload_bytes_received`` (DATA payload received, duplicates
    included); ``datagram_bytes_sent`` and ``datagram_bytes_received``; ``losses``,
    ``losses_by_reason``, ``timeouts``, ``timeouts_by_kind``, ``spurious``, ``mtu_probes`` (sent);
    ``bytes_acked`` and ``bytes_received`` (the last metrics sample's, or 0).
    """
    summary: dict[str, Any] = {
        "events": 0,
        "duration": 0.0,
        "packets_sent": 0,
        "packets_received": 0,
        "packets_sent_by_type": {},
        "packets_received_by_type": {},
        "retransmissions": 0,
        "payload_bytes_sent": 0,
        "payload_bytes_retransmitted": 0,
        "payload_bytes_received": 0,
        "datagram_bytes_sent": 0,
        "datagram_bytes_received": 0,
        "losses": 0,
        "losses_by_reason": {},
        "timeouts": 0,
        "timeouts_by_kind": {},
        "spurious": 0,
        "mtu_probes": 0,
        "bytes_acked": 0,
        "bytes_received": 0,
    }
    for event in events:
        summary["events"] += 1
        summary["duration"] = event.get("t", summary["duration"])
        name = event.get("name")
        if name == "packet_sent":
            summary["packets_sent"] += 1
            _count(summary["packets_sent_by_type"], event.get("type"))
            summary["datagram_bytes_sent"] += event.get("size", 0)
            payload = event.get("payload", 0) if event.get("type") == "DATA" else 0
            if event.get("probe"):
                summary["mtu_probes"] += 1
            if event.get("retransmit"):
                summary["retransmissions"] += 1
                summary["payload_bytes_retransmitted"] += payload
            else:
                summary["payload_bytes_sent"] += payload
        elif name == "packet_received":
            summary["packets_received"] += 1
            _count(summary["packets_received_by_type"], event.get("type"))
            summary["datagram_bytes_received"] += event.get("size", 0)
            if event.get("type") == "DATA":
                summary["payload_bytes_received"] += event.get("payload", 0)
        elif name == "loss":
            summary["losses"] += 1
            _count(summary["losses_by_reason"], event.get("reason"))
        elif name == "timeout":
            summary["timeouts"] += 1
            _count(summary["timeouts_by_kind"], event.get("kind"))
        elif name == "spurious":
            summary["spurious"] += 1
        elif name == "metrics":
            summary["bytes_acked"] = event.get("bytes_acked", summary["bytes_acked"])
            summary["bytes_received"] = event.get("bytes_received", summary["bytes_received"])
    return summary
