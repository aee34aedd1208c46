"""The bare txutp engine as an interop peer: one UDP socket, ``select`` and a :class:`~txutp.engine.UTPContext`.

No reactor drives it: it runs the engine as ``docs/design.rst`` describes (receive a batch, drain
the events, send, re-arm the one timer), so what it shows is the engine's own behaviour, without
the Twisted adapter. Run it from the repository root, after ``tests/peers/setup_peers.sh``::

    python -m tests.peers.engine_peer listen PORT MODE [ARG] [options]
    python -m tests.peers.engine_peer connect HOST PORT MODE [ARG] [options]

The command line, the modes and the result line follow ``utp_native_peer.js`` (README.md):
``sink``, ``source N``, ``echo``, ``pingpong N``, ``reset-after N``. Three more:

``abort-after-send N``
    send N bytes of the interop stream, then ``abort()`` (a RESET) instead of a FIN.
``bt-download TORRENT``, ``bt-download-halfclose TORRENT`` (connect only)
    download over BitTorrent as ``tests/bittorrent_wire.py``'s ``Downloader`` (256 requests
    outstanding, every piece checked against its SHA-1); ``-halfclose`` sends every request at
    once and then half-closes (FIN) while the pieces are still coming.
``bt-seed TORRENT`` (listen only)
    seed as ``tests/bittorrent_wire.py``'s ``Seeder``; the torrent must be of the interop
    stream, as ``libtorrent_peer.py make`` writes it.

Options: ``--host`` (the listen address, default 127.0.0.1), ``--bufsize`` (SO_RCVBUF and
SO_SNDBUF, default 4 MiB), ``--log-packets FILE`` (every datagram in and out, decoded, one line
each), ``--timeout`` (default 120 s), ``--linger`` (keep serving the socket after the
connection ended, default 1 s), ``--batch`` (most datagrams read before the events are drained,
default 1024). For loss, delay or reordering, put ``udp_relay.py`` in front of it.

A listener prints ``READY <port>``. One JSON line goes to stdout at the end: the fields of
``utp_native_peer.js`` (``bytes``, ``sha256``, ``stream_match``, ``bytes_sent``, ``peer_eof``,
``error``, ``seconds``, ``mb_per_s``: a sink from the connection to the EOF, a source to the
ACK of its FIN), the connection's ``events`` with their times, its ``stats``, the ``context``'s
counters and the ``driver``'s. Exit status: 0 success, 2 usage, 3 the connection ended badly
(reset, timed out), 4 overall timeout, 5 echo mismatch or bad piece.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import hashlib
import json
import select
import socket
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure

from tests.bittorrent_wire import Downloader, Seeder, Torrent
from tests.peers.stream import block, expected, stream_bytes
from txutp.engine import (
    Connected,
    ConnectionAborted,
    ConnectionClosed,
    ConnectionTerminated,
    DataReceived,
    EndOfStream,
    Event,
    PacketError,
    PacketType,
    UTPConnection,
    UTPContext,
    Writable,
    decode_packet,
)

CHUNK = 65536
STREAM_MODES = ["sink", "source", "echo", "pingpong", "reset-after", "abort-after-send"]
BT_MODES = ["bt-download", "bt-download-halfclose", "bt-seed"]


class PacketLog:
    """Every datagram in and out, one decoded line each (``--log-packets``)."""

    def __init__(self, path: str | None, t0: float) -> None:
        self.f = open(path, "w") if path else None  # noqa: SIM115
        self.t0 = t0

    def __call__(self, direction: str, data: bytes, addr: Any, now: float) -> None:
        assert self.f is not None
        try:
            p = decode_packet(data)
        except PacketError as e:
            self.f.write(f"{now - self.t0:10.6f} {direction} {addr} not-uTP len={len(data)} ({e})\n")
            return
        extra = f" sack={p.sack.hex()}" if p.sack is not None else ""
        if p.extensions:
            extra += " ext=" + ",".join(f"{t}:{b.hex()}" for t, b in p.extensions)
        self.f.write(
            f"{now - self.t0:10.6f} {direction} {PacketType(p.type).name:5} id={p.connection_id:5} "
            f"seq={p.seq_nr:5} ack={p.ack_nr:5} wnd={p.wnd_size:7} ts={p.timestamp_us:10} "
            f"tsd={p.timestamp_diff_us:10} len={len(p.payload):4} dgram={len(data)}{extra}\n"
        )

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


class Driver:
    """One UDP socket and one :class:`UTPContext`, driven by ``select`` and ``time.monotonic()``."""

    def __init__(self, host: str, port: int, *, listen: bool, bufsize: int, log_path: str | None, batch: int) -> None:
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
        if bufsize:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.ctx = UTPContext(accepting=listen)
        self.log = PacketLog(log_path, time.monotonic())
        self.batch = batch
        self._pending: deque[tuple[bytes, Any]] = deque()
        self.counters: dict[str, Any] = {"datagrams_in": 0, "datagrams_out": 0, "max_batch": 0, "oversize_in": 0}
        self.send_errors: dict[str, int] = {}

    def addr(self, host: str, port: int) -> Any:
        """The address form ``recvfrom`` reports, so replies route to the same connection."""
        return socket.getaddrinfo(host, port, self.family, socket.SOCK_DGRAM)[0][4]

    def _send_pending(self, now: float) -> None:
        pending = self._pending
        log = self.log if self.log.f is not None else None
        while pending:
            data, addr = pending[0]
            try:
                self.sock.sendto(data, addr)
            except BlockingIOError:
                return
            except OSError as e:  # ECONNREFUSED (ICMP port unreachable) and the like
                name = errno.errorcode.get(e.errno or 0, str(e.errno))
                self.send_errors[name] = self.send_errors.get(name, 0) + 1
            pending.popleft()
            self.counters["datagrams_out"] += 1
            if log is not None:
                log("OUT", data, addr, now)

    def service(self, app: App, now: float) -> None:
        """Drain events into the app, let it write, queue what is due; repeat until quiet; send."""
        ctx = self.ctx
        for _ in range(1000):
            busy = False
            while (item := ctx.next_event()) is not None:
                app.on_event(item[0], item[1], now)
                busy = True
            app.pump(now)
            out = ctx.datagrams_to_send(now)
            if out:
                self._pending.extend(out)
                busy = True
            if not busy:
                break
        self._send_pending(now)

    def _receive_batch(self, now: float) -> None:
        log = self.log if self.log.f is not None else None
        n = 0
        while n < self.batch:
            try:
                data, addr = self.sock.recvfrom(65536)
            except BlockingIOError:
                break
            except OSError:  # ICMP errors reported on the socket
                continue
            n += 1
            if len(data) > 1472:
                self.counters["oversize_in"] += 1
            if log is not None:
                log("IN ", data, addr, now)
            self.ctx.receive_datagram(data, addr, now)  # not uTP: nobody else shares this port
        self.counters["datagrams_in"] += n
        self.counters["max_batch"] = max(self.counters["max_batch"], n)

    def run(self, app: App, timeout: float, linger: float) -> bool:
        """Run until the app is finished, then ``linger`` seconds more; False on timeout."""
        ctx = self.ctx
        deadline = time.monotonic() + timeout
        finished_at: float | None = None
        self.service(app, time.monotonic())
        while True:
            now = time.monotonic()
            if app.finished and finished_at is None:
                finished_at = now
            if finished_at is not None and now >= finished_at + linger:
                return True
            if now >= deadline:
                return False
            t = ctx.get_timer()
            wait = 0.05 if t is None else min(0.05, max(0.0, t - now))
            r, _, _ = select.select([self.sock], [self.sock] if self._pending else [], [], wait)
            now = time.monotonic()
            if r:
                self._receive_batch(now)
            t = ctx.get_timer()
            if t is not None and now >= t:
                ctx.handle_timer(now)
            self.service(app, now)

    def close(self) -> None:
        self.sock.close()
        self.log.close()


class App:
    """What runs over the one connection; subclasses implement the hooks and :meth:`finish`."""

    def __init__(self, mode: str, initiator: bool) -> None:
        self.mode = mode
        self.initiator = initiator
        self.conn: UTPConnection | None = None
        self.finished = False
        self.t_start: float | None = None
        self.t_done: float | None = None
        self.events: list[tuple[float, str]] = []
        self.error: str | None = None
        self._blocked = False

    def start(self, conn: UTPConnection | None, now: float) -> None:
        """Called once before running: ``conn`` is the outgoing connection, or None when listening."""
        self.conn = conn
        self.t_start = now

    def note(self, what: str, now: float) -> None:
        self.events.append((round(now - (self.t_start or now), 6), what))

    def on_event(self, conn: UTPConnection, event: Event, now: float) -> None:
        if self.conn is None and isinstance(event, Connected):
            self.conn = conn
            self.t_start = now
        if conn is not self.conn:
            if isinstance(event, Connected):
                conn.abort(now)  # one connection per run
            return
        if isinstance(event, DataReceived):
            if not self.events or self.events[-1][1] != "DataReceived":
                self.note("DataReceived", now)
            self.on_data(event.data, now)
            return
        names: list[str] = [f.name for f in dataclasses.fields(event)] if dataclasses.is_dataclass(event) else []
        detail = ", ".join(f"{name}={getattr(event, name)}" for name in names if getattr(event, name))
        self.note(type(event).__name__ + (f"({detail})" if detail else ""), now)
        if isinstance(event, Connected):
            self.on_connected(now)
        elif isinstance(event, EndOfStream):
            self.on_eof(now)
        elif isinstance(event, Writable):
            self._blocked = False
        elif isinstance(event, ConnectionTerminated):
            self.on_terminated(event, now)

    def on_connected(self, now: float) -> None:
        pass

    def on_data(self, data: bytes, now: float) -> None:
        pass

    def on_eof(self, now: float) -> None:
        pass

    def on_terminated(self, event: ConnectionTerminated, now: float) -> None:
        if not isinstance(event, ConnectionClosed):
            self.error = self.events[-1][1]
        self.finished = True
        if self.t_done is None:
            self.t_done = now

    def pump(self, now: float) -> None:
        pass

    def send(self, data: bytes, now: float) -> int:
        """Send as much of ``data`` as the send buffer takes; remember when it is full."""
        assert self.conn is not None
        if self._blocked:
            return 0
        n = self.conn.send(data, now)
        if n < len(data):
            self._blocked = True
        return n

    def finish(self) -> dict[str, Any]:
        raise NotImplementedError


class StreamApp(App):
    """sink / source / echo / pingpong / reset-after, as in utp_native_peer.js; and abort-after-send."""

    def __init__(self, mode: str, n: int, initiator: bool) -> None:
        super().__init__(mode, initiator)
        self.n = n
        self.rx = hashlib.sha256()
        self.tx = hashlib.sha256()
        self.received = self.sent = 0
        self.peer_eof = self.local_end = self.connected = False
        self.echo_buf = bytearray()

    def on_connected(self, now: float) -> None:
        self.connected = True
        if self.initiator and self.mode in ("sink", "reset-after"):
            self.send(b"G", now)  # a libutp acceptor cannot send before our first DATA: ask
            if self.mode == "sink":
                self.end(now)

    def end(self, now: float) -> None:
        if not self.local_end and self.conn is not None:
            self.local_end = True
            self.conn.shutdown_write(now)

    def on_data(self, data: bytes, now: float) -> None:
        self.received += len(data)
        self.rx.update(data)
        if self.mode == "echo":
            self.echo_buf += data
            if len(self.echo_buf) > 4 * 1024 * 1024 and self.conn is not None and not self.conn.read_paused:
                self.conn.pause_reading()
        elif self.mode == "reset-after" and self.received >= self.n and not self.finished:
            assert self.conn is not None
            self.t_done = now
            self.conn.abort(now)

    def on_eof(self, now: float) -> None:
        self.peer_eof = True
        if self.mode != "source" and self.t_done is None:
            self.t_done = now
        if self.mode in ("sink", "reset-after") or (self.mode in ("source", "pingpong") and self.sent >= self.n):
            self.end(now)  # nothing (more) to send; echo ends in pump once its buffer is sent

    def on_terminated(self, event: ConnectionTerminated, now: float) -> None:
        if self.mode == "source" and self.t_done is None:
            self.t_done = now  # our FIN was acknowledged: every byte arrived
        super().on_terminated(event, now)
        if self.mode in ("reset-after", "abort-after-send") and isinstance(event, ConnectionAborted):
            self.error = None  # we asked for it

    def pump(self, now: float) -> None:
        if not self.connected or self.finished or self._blocked or self.conn is None:
            return
        if self.mode in ("source", "pingpong", "abort-after-send"):
            while self.sent < self.n:
                size = min(CHUNK, self.n - self.sent)
                data = stream_bytes(self.sent, size)
                k = self.send(data, now)
                if k:
                    if self.mode == "pingpong":
                        self.tx.update(data[:k])
                    self.sent += k
                if k < size:
                    return
            if self.mode == "abort-after-send":
                self.t_done = now
                self.conn.abort(now)  # a RESET instead of a FIN
                return
            self.end(now)
        elif self.mode == "echo":
            if self.echo_buf:
                k = self.send(bytes(self.echo_buf[: 1 << 20]), now)
                del self.echo_buf[:k]
                self.sent += k
                if len(self.echo_buf) < 1024 * 1024 and self.conn.read_paused:
                    self.conn.resume_reading(now)
            if self.peer_eof and not self.echo_buf:
                self.end(now)

    def finish(self) -> dict[str, Any]:
        digest = self.rx.hexdigest()
        r: dict[str, Any] = {
            "mode": self.mode,
            "bytes": self.received,
            "sha256": digest,
            "stream_match": digest == expected(self.received)["sha256"],
            "bytes_sent": self.sent,
            "peer_eof": self.peer_eof,
            "local_end": self.local_end,
        }
        if self.mode == "pingpong":
            r["sent_sha256"] = self.tx.hexdigest()
            r["echo_match"] = self.received == self.sent and digest == r["sent_sha256"]
        return r


class HalfClosingDownloader(Downloader):
    """bt-download-halfclose: once every request is out, half-close (FIN) and keep reading."""

    halfClosed = False

    def requestMore(self) -> None:
        super().requestMore()
        if not self.pending and not self.choked and not self.halfClosed:
            self.halfClosed = True
            self.transport.loseWriteConnection()  # type: ignore[union-attr]


class BitTorrentApp(App):
    """A ``tests/bittorrent_wire.py`` peer (a Twisted protocol) on the bare connection.

    The app is the protocol's transport: what it writes is queued and sent as the send buffer
    takes it, and its half-close or close follows the last queued byte.
    """

    def __init__(self, mode: str, torrent_path: str, initiator: bool) -> None:
        super().__init__(mode, initiator)
        self.torrent = Torrent.fromFile(torrent_path)
        self.proto: Downloader | Seeder
        if mode == "bt-seed":
            self.proto = Seeder(self.torrent)
        else:
            halfclose = mode == "bt-download-halfclose"
            self.proto = (HalfClosingDownloader if halfclose else Downloader)(
                self.torrent, 1 << 30 if halfclose else 256
            )
            self.proto.done.addCallback(lambda _: setattr(self, "t_done", time.monotonic()))
        self.outbuf = bytearray()
        self.want_shutdown = self.want_close = self.shut = self.closed = False

    def write(self, data: bytes) -> None:
        self.outbuf += data

    def loseWriteConnection(self) -> None:
        self.want_shutdown = True

    def loseConnection(self) -> None:
        self.want_close = True

    def stats(self) -> Any:
        assert self.conn is not None
        return self.conn.stats()

    def on_connected(self, now: float) -> None:
        self.proto.makeConnection(self)  # type: ignore[no-untyped-call]

    def on_data(self, data: bytes, now: float) -> None:
        self.proto.dataReceived(data)

    def on_eof(self, now: float) -> None:
        self.proto.readConnectionLost()

    def on_terminated(self, event: ConnectionTerminated, now: float) -> None:
        super().on_terminated(event, now)
        reason = ConnectionDone() if isinstance(event, ConnectionClosed) else ConnectionLost(self.error)
        self.proto.connectionLost(Failure(reason))

    def pump(self, now: float) -> None:
        conn = self.conn
        if conn is None or self.finished:
            return
        while self.outbuf and not self._blocked:
            del self.outbuf[: self.send(bytes(self.outbuf[: 1 << 20]), now)]
        if self.outbuf:
            return
        if self.want_close and not self.closed:
            self.closed = self.shut = True
            conn.close(now)
        elif self.want_shutdown and not self.shut:
            self.shut = True
            conn.shutdown_write(now)
            self.note("local shutdown_write", now)

    def finish(self) -> dict[str, Any]:
        p = self.proto
        self.error = self.error or p.error
        r: dict[str, Any] = {"mode": self.mode, "peer_client": p.remotePeerId.decode("latin-1")}
        r.update(messages={str(k): v for k, v in p.counts.items()}, peer_eof=p.tEof is not None)
        r["pieces"] = self.torrent.num_pieces
        after = {"first_request": p.tFirstRequest}  # wall-clock times, relative to the connection
        if isinstance(p, Seeder):
            r.update(bytes_sent=p.sentPayload, requests=p.requests, haves=p.haves)
            after.update(last_have=p.tLastHave, eof=p.tEof)
        else:
            digest = p.fileHash.hexdigest()
            r.update(bytes=p.received, pieces_verified=len(p.verified))
            r.update(
                bad_pieces=p.badPieces, sha256=digest, stream_match=digest == expected(self.torrent.length)["sha256"]
            )
            after.update(first_piece=p.tFirstPiece, done=p.tDone)
        r["after"] = {k: None if t is None else round(t - p.tMade, 4) for k, t in after.items()}
        return r


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One connection as the command line says; returns the result line."""
    listen = args.role == "listen"
    bind = args.host if listen else ("::" if ":" in args.host else "0.0.0.0")
    port = args.port if listen else 0
    drv = Driver(bind, port, listen=listen, bufsize=args.bufsize, log_path=args.log_packets, batch=args.batch)
    app: App
    if args.mode in BT_MODES:
        app = BitTorrentApp(args.mode, args.arg, initiator=not listen)
    else:
        app = StreamApp(args.mode, int(args.arg or 0), initiator=not listen)
    if args.mode in ("source", "pingpong", "bt-seed"):
        block()  # build the stream block before timing
    if listen:
        print(f"READY {drv.port}", flush=True)
    now = time.monotonic()
    app.start(None if listen else drv.ctx.connect(drv.addr(args.host, args.port), now), now)
    ok = drv.run(app, args.timeout, args.linger)
    result: dict[str, Any] = {"role": args.role, **app.finish()}
    result["error"] = app.error if ok else "timeout"
    result["events"] = app.events
    if app.t_start is not None:
        t1 = app.t_done if app.t_done is not None else time.monotonic()
        result["seconds"] = round(t1 - app.t_start, 4)
        moved = max(result.get("bytes", 0), result.get("bytes_sent", 0))
        result["mb_per_s"] = round(moved / 1e6 / result["seconds"], 2) if result["seconds"] > 0 else None
    if app.conn is not None:
        result["stats"] = dataclasses.asdict(app.conn.stats())
    result["context"] = drv.ctx.stats.as_dict()
    result["txutp_module"] = str(Path(sys.modules["txutp.engine"].__file__ or "?").parent)
    result["driver"] = {
        **drv.counters,
        "send_errors": drv.send_errors,
        "rcvbuf": drv.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    }
    drv.close()
    return result


def exit_code(result: dict[str, Any]) -> int:
    if result.get("error") == "timeout":
        return 4
    if result.get("echo_match") is False or result.get("bad_pieces"):
        return 5
    return 3 if result.get("error") else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role", required=True)
    listen = sub.add_parser("listen")
    listen.add_argument("port", type=int)
    connect = sub.add_parser("connect")
    connect.add_argument("host")
    connect.add_argument("port", type=int)
    for p in (listen, connect):
        p.add_argument("mode", choices=STREAM_MODES + BT_MODES)
        p.add_argument("arg", nargs="?", help="a byte count, or a .torrent (bt-*)")
        p.add_argument("--bufsize", type=int, default=4 * 1024 * 1024, help="SO_RCVBUF/SO_SNDBUF (0: the kernel's)")
        p.add_argument("--log-packets", metavar="FILE", help="write every datagram in and out here, decoded")
        p.add_argument("--timeout", type=float, default=120.0, help="give up (exit 4) after this many seconds")
        p.add_argument("--linger", type=float, default=1.0, help="serve the socket this long after the end")
        p.add_argument("--batch", type=int, default=1024, help="most datagrams read per batch (default 1024)")
    listen.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    args = parser.parse_args(argv)
    if args.mode in ("source", "pingpong", "reset-after", "abort-after-send") and not (args.arg or "").isdigit():
        parser.error(f"{args.mode} needs a byte count")
    if args.mode in BT_MODES and (args.arg is None or (args.mode == "bt-seed") != (args.role == "listen")):
        parser.error("bt-download connects, bt-seed listens, and both need a .torrent")
    result = run(args)
    print(json.dumps(result, default=str), flush=True)
    return exit_code(result)


if __name__ == "__main__":
    sys.exit(main())
