#!/usr/bin/env python3
"""A libtorrent (PyPI ``libtorrent``) peer that speaks BitTorrent over uTP only.

libtorrent-rasterbar has its own uTP implementation (``utp_stream.cpp``),
independent of libutp. Subcommands::

    libtorrent_peer.py make     --size N --dir DIR [--piece-size B] [--torrent-out PATH]
    libtorrent_peer.py seed     --size N [--dir DIR] [--piece-size B] [--port P] [--torrent-out PATH]
                                [--duration S]
    libtorrent_peer.py download --torrent PATH --peer HOST:PORT [--dir DIR] [--port P] [--timeout S]
                                [--linger S]

* ``make`` writes ``DIR/interop-N.bin`` (the first N bytes of the interop stream,
  :mod:`tests.peers.stream`) and a v1-only .torrent for it (default piece size
  256 KiB), then prints one JSON line ``{"info_hash", "torrent", "file", ...}``.
* ``seed`` does the same (in a temporary directory unless ``--dir``), starts a
  session listening on ``127.0.0.1:P`` (0 = any port) with TCP disabled both ways,
  uTP on, DHT/LSD/UPnP/NAT-PMP off and encryption off, seeds the torrent and
  prints ``INFOHASH <hex>``, ``TORRENT <path>`` and then ``READY <port>`` (the UDP
  port uTP listens on). It stays up until SIGTERM/SIGINT or ``--duration``, then
  prints a JSON summary (uploaded bytes, every peer seen and whether it was uTP).
* ``download`` adds the torrent, connects to ``HOST:PORT`` over uTP only (outgoing
  TCP is disabled), prints progress on stderr and a final JSON line: ``ok``,
  ``bytes``, ``sha256`` of the file, ``stream_match`` (whether it is the interop
  stream), ``seconds``, ``mb_per_s``, ``hashfails`` and ``peers`` (with their uTP
  flag). libtorrent checks every piece's SHA-1 as it arrives; ``ok`` also requires
  that every peer that transferred payload was a uTP peer. Once done it pauses the
  torrent (closing the connection with a FIN) and keeps the session until its uTP
  sockets are closed (at most ``--linger`` seconds), so that a FIN lost on the way
  is retransmitted. Then it has libtorrent write out the blocks it still holds
  (``flush_cache``; ``flushed`` says it confirmed) before it hashes the file: a
  piece passes its hash check before its last blocks reach the file.

libtorrent facts to know (shared reference §10): a TCP listen socket opens even
with incoming TCP disabled (it accepts nothing); the Python peer-info flags lack a
named ``utp_socket`` bit, it is ``1 << 17``; the first payload arrives ~0.5 s after
``connect_peer``. Exit status: 0 success, 1 failure (download incomplete, not uTP,
timeout), 2 usage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import libtorrent as lt
except ImportError as exc:  # pragma: no cover - depends on the machine
    sys.exit(f"libtorrent_peer: cannot import libtorrent ({exc}); run tests/peers/setup_peers.sh")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream import chunks, expected

#: ``peer_info::utp_socket``; the Python bindings have no name for it.
UTP_SOCKET = 1 << 17
SOCKET_BUFFER = 4 * 1024 * 1024


def log(msg: str) -> None:
    print(f"[libtorrent {os.getpid()}] {msg}", file=sys.stderr, flush=True)


def out(line: str) -> None:
    print(line, flush=True)


def session_settings(port: int, host: str) -> dict[str, Any]:
    """uTP only on host:port; nothing that talks to the outside world."""
    return {
        "listen_interfaces": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "enable_incoming_tcp": False,
        "enable_outgoing_tcp": False,
        "enable_incoming_utp": True,
        "enable_outgoing_utp": True,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # Plain BitTorrent handshakes, so a minimal peer in the tests can talk to it.
        "out_enc_policy": int(lt.enc_policy.disabled),
        "in_enc_policy": int(lt.enc_policy.disabled),
        "allow_multiple_connections_per_ip": True,
        "recv_socket_buffer_size": SOCKET_BUFFER,
        "send_socket_buffer_size": SOCKET_BUFFER,
        "alert_mask": int(
            lt.alert.category_t.error_notification
            | lt.alert.category_t.peer_notification
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.connect_notification
            | lt.alert.category_t.storage_notification
        ),
        "user_agent": "txutp-interop/libtorrent-" + lt.__version__,
    }


def start_session(port: int, host: str, timeout: float = 10.0) -> tuple[Any, int]:
    """A session listening for uTP on host:port; return it and the UDP port."""
    ses = lt.session(session_settings(port, host))
    deadline = time.monotonic() + timeout
    udp_port = None
    while udp_port is None:
        if time.monotonic() > deadline:
            raise SystemExit("libtorrent_peer: no UDP listen socket opened")
        ses.wait_for_alert(200)
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_succeeded_alert):
                log(f"listening: {a.message()}")
                if a.socket_type in (lt.socket_type_t.udp, lt.socket_type_t.utp):
                    udp_port = a.port
            elif isinstance(a, lt.listen_failed_alert):
                log(f"listen failed: {a.message()}")
    return ses, udp_port


def make_torrent(size: int, directory: Path, piece_size: int, torrent_out: Path | None) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    name = f"interop-{size}.bin"
    data_path = directory / name
    if not (data_path.exists() and data_path.stat().st_size == size):
        with open(data_path, "wb") as f:
            for c in chunks(size, 1 << 20):
                f.write(c)
    ct = lt.create_torrent(lt.list_files(str(data_path)), piece_size, flags=lt.create_torrent.v1_only)
    ct.set_creator("txutp interop")
    lt.set_piece_hashes(ct, str(directory))
    blob = lt.bencode(ct.generate())
    torrent_path = torrent_out or directory / (name + ".torrent")
    torrent_path.write_bytes(blob)
    ti = lt.torrent_info(str(torrent_path))
    exp = expected(size)
    return {
        "info_hash": str(ti.info_hashes().v1),
        "torrent": str(torrent_path),
        "file": str(data_path),
        "save_path": str(directory),
        "bytes": size,
        "sha256": exp["sha256"],
        "piece_size": piece_size,
        "pieces": ti.num_pieces(),
    }


def torrent_params(ti: Any, save_path: str, flags: Any = None) -> Any:
    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = save_path
    if flags is not None:
        atp.flags |= flags
    return atp


def peer_summary(p: Any) -> dict[str, Any]:
    return {
        "ip": f"{p.ip[0]}:{p.ip[1]}",
        "utp": bool(int(p.flags) & UTP_SOCKET),
        "client": p.client.decode("utf-8", "replace") if isinstance(p.client, bytes) else str(p.client),
        "total_upload": p.total_upload,
        "total_download": p.total_download,
    }


def merge_peers(seen: dict[str, dict[str, Any]], handle: Any) -> None:
    for p in handle.get_peer_info():
        s = peer_summary(p)
        old = seen.get(s["ip"])
        if old is None:
            log(f"peer {s['ip']} utp={s['utp']} client={s['client']!r}")
        else:  # keep the largest totals seen (a disconnected peer vanishes from the list)
            s["utp"] = s["utp"] and old["utp"]
            for k in ("total_upload", "total_download"):
                s[k] = max(s[k], old[k])
            s["client"] = s["client"] or old["client"]
        seen[s["ip"]] = s


#: Transport named by each peer_connect_alert ("... connection to peer (uTP)").
CONNECT_TRANSPORTS: list[str] = []
#: How many cache_flushed_alerts were seen (a torrent's blocks all written to its files).
CACHE_FLUSHES: list[int] = [0]


def utp_counters(ses: Any, timeout: float = 2.0) -> dict[str, int]:
    """The session's uTP counters (packets, losses, timeouts, resends, uTP socket states)."""
    ses.post_session_stats()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            if isinstance(a, lt.session_stats_alert):
                return {k.split(".", 1)[1]: int(v) for k, v in a.values.items() if "utp" in k}
    return {}


def drain_alerts(ses: Any) -> int:
    """Log the interesting alerts; return how many pieces failed their hash check."""
    hashfails = 0
    for a in ses.pop_alerts():
        if isinstance(a, lt.hash_failed_alert):
            hashfails += 1
        if isinstance(a, lt.cache_flushed_alert):
            CACHE_FLUSHES[0] += 1
        if isinstance(a, lt.peer_connect_alert):
            msg = a.message()
            CONNECT_TRANSPORTS.append("uTP" if "(uTP)" in msg else "TCP" if "(TCP)" in msg else msg)
        if isinstance(
            a,
            lt.peer_connect_alert
            | lt.peer_disconnected_alert
            | lt.peer_error_alert
            | lt.torrent_error_alert
            | lt.hash_failed_alert,
        ):
            log(f"{type(a).__name__}: {a.message()}")
    return hashfails


# ---------------------------------------------------------------------------- commands


def cmd_make(args: argparse.Namespace) -> int:
    torrent_out = Path(args.torrent_out) if args.torrent_out else None
    out(json.dumps(make_torrent(args.size, Path(args.dir), args.piece_size, torrent_out)))
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    tmp = None
    if args.dir:
        directory = Path(args.dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="lt-seed-")
        directory = Path(tmp.name)
    info = make_torrent(args.size, directory, args.piece_size, Path(args.torrent_out) if args.torrent_out else None)
    ses, port = start_session(args.port, args.host)
    ti = lt.torrent_info(info["torrent"])
    atp = torrent_params(ti, info["save_path"], lt.torrent_flags.seed_mode)
    # The default flags are paused + auto_managed: the queue would start the torrent at its next
    # tick, and until then libtorrent refuses incoming connections. Start it now instead (or,
    # with --paused, never: every connection is then refused).
    atp.flags &= ~lt.torrent_flags.auto_managed
    if args.paused:
        atp.flags |= lt.torrent_flags.paused
    else:
        atp.flags &= ~lt.torrent_flags.paused
    handle = ses.add_torrent(atp)
    # An incoming connection is refused (a FIN right after the SYN) while no torrent is active:
    # announce READY only once the torrent is really seeding.
    deadline = time.monotonic() + 30
    while not args.paused:
        st = handle.status()
        if st.state == lt.torrent_status.seeding and not (int(st.flags) & int(lt.torrent_flags.paused)):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"libtorrent_peer: torrent not seeding after 30 s (state {st.state})")
        ses.wait_for_alert(50)
        drain_alerts(ses)
    out(f"INFOHASH {info['info_hash']}")
    out(f"TORRENT {info['torrent']}")
    out(f"READY {port}")

    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    deadline = time.monotonic() + args.duration if args.duration else None
    seen: dict[str, dict[str, Any]] = {}
    last_log = 0.0
    while not stop and (deadline is None or time.monotonic() < deadline):
        ses.wait_for_alert(200)
        drain_alerts(ses)
        merge_peers(seen, handle)
        now = time.monotonic()
        if now - last_log >= 2.0:
            last_log = now
            st = handle.status()
            if st.num_peers:
                log(f"peers={st.num_peers} uploaded={st.total_payload_upload} rate={st.upload_rate / 1e6:.1f} MB/s")
    st = handle.status()
    summary = {
        "role": "seed",
        "info_hash": info["info_hash"],
        "uploaded": st.total_payload_upload,
        "peers": list(seen.values()),
        "all_utp": all(p["utp"] for p in seen.values()),
        "connect_transports": CONNECT_TRANSPORTS,
        "utp_counters": utp_counters(ses),
    }
    out(json.dumps(summary))
    del ses
    if tmp is not None:
        tmp.cleanup()
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    host, _, port_s = args.peer.rpartition(":")
    peer = (host.strip("[]"), int(port_s))
    tmp = None
    if args.dir:
        directory = Path(args.dir)
        directory.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="lt-dl-")
        directory = Path(tmp.name)
    ti = lt.torrent_info(args.torrent)
    ses, _ = start_session(args.port, args.host)
    atp = torrent_params(ti, str(directory))
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)  # start now (see cmd_seed)
    handle = ses.add_torrent(atp)
    total = ti.total_size()
    t0 = time.monotonic()
    handle.connect_peer(peer)
    log(f"connecting to {peer[0]}:{peer[1]} over uTP for {ti.name()} ({total} bytes, {ti.num_pieces()} pieces)")
    seen: dict[str, dict[str, Any]] = {}
    first_payload = None
    last_log = 0.0
    reconnects = 0
    done = False
    hashfails = 0
    while time.monotonic() - t0 < args.timeout:
        ses.wait_for_alert(100)
        hashfails += drain_alerts(ses)
        merge_peers(seen, handle)
        st = handle.status()
        if first_payload is None and st.total_wanted_done > 0:
            first_payload = time.monotonic() - t0
        # Every piece verified and counted (total_wanted_done can reach total_wanted a moment
        # before num_pieces does).
        if st.is_seeding or (st.total_wanted_done == st.total_wanted > 0 and st.num_pieces == ti.num_pieces()):
            done = True
            break
        now = time.monotonic()
        if now - last_log >= 1.0:
            last_log = now
            rate = st.download_rate / 1e6
            log(f"{st.total_wanted_done}/{st.total_wanted} bytes, peers={st.num_peers}, {rate:.1f} MB/s")
            if st.num_peers == 0 and now - t0 > 3.0 * (reconnects + 1) and reconnects < args.reconnects:
                reconnects += 1
                log("no peer: connecting again")
                handle.connect_peer(peer)
    seconds = time.monotonic() - t0
    st = handle.status()
    merge_peers(seen, handle)
    if done and args.linger > 0:
        # Close the peer connections gracefully and keep the session up until libtorrent's uTP
        # sockets are closed (at most --linger seconds): a FIN lost on the way is retransmitted.
        # Deleting the session at once would drop it, leaving the peer with a connection it
        # never hears about again.
        handle.pause()
        linger_end = time.monotonic() + args.linger
        while time.monotonic() < linger_end:
            ses.wait_for_alert(100)
            hashfails += drain_alerts(ses)
            c = utp_counters(ses, timeout=0.5)
            if c and not sum(c.get(k, 0) for k in ("num_utp_connected", "num_utp_fin_sent", "num_utp_close_wait")):
                break
    flushed = False
    if done:
        # Every piece passed its hash check, but libtorrent may still hold the last blocks in its
        # store buffer: have them written to the file before reading it (10 s at most).
        before = CACHE_FLUSHES[0]
        handle.flush_cache()
        flush_end = time.monotonic() + 10.0
        while CACHE_FLUSHES[0] == before and time.monotonic() < flush_end:
            ses.wait_for_alert(100)
            hashfails += drain_alerts(ses)
        flushed = CACHE_FLUSHES[0] > before
        if not flushed:
            log("no cache_flushed_alert within 10 s: the file may still have holes")
    path = directory / ti.name()  # a single-file torrent
    sha = hashlib.sha256()
    got = 0
    if path.exists():
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                sha.update(block)
                got += len(block)
    digest = sha.hexdigest()
    movers = [p for p in seen.values() if p["total_download"] or p["total_upload"]]
    utp_only = bool(seen) and all(p["utp"] for p in seen.values()) and all(t == "uTP" for t in CONNECT_TRANSPORTS)
    result = {
        "role": "download",
        "ok": done and utp_only and st.num_pieces == ti.num_pieces(),
        "bytes": got if done else st.total_wanted_done,
        "total": total,
        "sha256": digest,
        "stream_match": done and digest == expected(total)["sha256"],
        "seconds": round(seconds, 3),
        "first_payload_after": None if first_payload is None else round(first_payload, 3),
        "mb_per_s": round(total / 1e6 / seconds, 2) if done and seconds > 0 else None,
        # Excluding libtorrent's ~0.5 s start-up before the first payload.
        "mb_per_s_from_first_payload": (
            round(total / 1e6 / (seconds - first_payload), 2)
            if done and first_payload is not None and seconds > first_payload
            else None
        ),
        "hashfails": hashfails,
        "flushed": flushed,
        "pieces": st.num_pieces,
        "utp_only": utp_only,
        "connect_transports": CONNECT_TRANSPORTS,
        "utp_counters": utp_counters(ses),
        "peers": list(seen.values()),
        "payload_peers": len(movers),
    }
    out(json.dumps(result))
    del ses
    if tmp is not None:
        tmp.cleanup()
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", help="directory for the data (default: a temporary one)")
        p.add_argument("--piece-size", type=int, default=256 * 1024)
        p.add_argument("--torrent-out", help="where to write the .torrent")

    p = sub.add_parser("make", help="write the data file and its .torrent")
    p.add_argument("--size", type=int, required=True)
    common(p)
    p.set_defaults(func=cmd_make)

    p = sub.add_parser("seed", help="seed over uTP only")
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--duration", type=float, default=0, help="stop after S seconds (default: run until killed)")
    p.add_argument("--paused", action="store_true", help="keep the torrent paused (every connection is refused)")
    common(p)
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("download", help="download from one peer over uTP only")
    p.add_argument("--torrent", required=True)
    p.add_argument("--peer", required=True, help="HOST:PORT")
    p.add_argument("--dir")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--reconnects", type=int, default=3, help="connect_peer again if no peer (default 3)")
    p.add_argument(
        "--linger",
        type=float,
        default=5.0,
        help="once done, pause the torrent (graceful close) and keep the session until its uTP sockets "
        "closed, at most this long (default 5 s)",
    )
    p.set_defaults(func=cmd_download)

    args = parser.parse_args(argv)
    if args.cmd == "make" and not args.dir:
        parser.error("make needs --dir")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
