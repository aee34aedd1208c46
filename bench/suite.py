"""The benchmark suite: txutp against the real uTP peers and its own ceilings, side by side.

    .venv/bin/python -m bench.suite [--runs 3] [--size 100000000] [--lossy-size 4194304] [--idle 10000]
                                    [--json bench/results/suite.json] [--rows WORD ...] [--skip-netns]
                                    [--ucat-buffer 65536]

``--rows`` runs only the rows whose names, or groups, contain one of the words (``--rows jitter
loss``: the relay rows; ``--rows ucat``: the libutp anchor and the three rows compared to it:
``.venv/bin/python -m bench.suite --runs 5 --size 104857600 --rows ucat``).

Needs the interop peers and libutp's ``ucat`` (``bash tests/peers/setup_peers.sh`` installs
them, building ucat) and, for the LEDBAT row, root (network namespaces and ``tc``); the ucat
anchor needs root (or CAP_NET_ADMIN) for its 8 MiB socket buffers. Every row runs its peers as separate
processes on loopback, ``--runs`` times, and reports the median; every ratio is
taken against an anchor measured in the same run, because the machine is shared
and its speed drifts. CPU seconds and peak RSS come from ``wait4`` on each
process, minus the same program's start-up cost measured alone (for ucat, ``ucat -h``).
txutp's peer, ``bench.utp_bulk``, reports its own CPU instead (``getrusage`` at the
connection and at the last byte, or for a source the peer's EOF: the interval its goodput
times), because its start-up (the interpreter, the imports and Twisted's plugin scan, about
0.35 s) is most of its process's CPU for 100 MiB and varies run to run by more than the
transfer's own cost; subtracting a separately measured start-up left figures from 0 to 3 µs
per packet for the same transfer.

Goodput is measured at the receiving application, from the connection (ucat: the first byte)
to the last byte it got -- never to the EOF or the close (``bench/utp_bulk.py``'s sink;
utp-native's ``tests/peers/utp_native_peer.js`` sink stops its clock at the EOF, which comes
right behind the last byte) -- over the bytes of the stream the source sent.

CPU per packet, each side (the table's ``CPU a + b us/pkt``: source + sink): the process's CPU
seconds from ``wait4`` minus its program's start-up cost, divided by the *nominal* packet count
``size / 1382`` (1382 bytes: the payload of a full 1402-byte packet, libutp's size on IPv4 and
txutp's initial one), the same divisor for every row, so it is CPU per byte in per-packet units.
The real datagram counts, where a side reports them (txutp's connection statistics; ucat through
its shim), are in the per-run lines and the JSON: ``src_datagrams`` (all the source sent:
retransmissions, SYN and FIN included), ``sink_datagrams`` (all the sink received), and CPU per
real datagram, ``cpu_src_us_per_dgram`` and ``cpu_sink_us_per_dgram``. libutp's are within 0.3 %
of the nominal count; txutp's path-MTU discovery grows its packets on loopback, so it sends some
4 % fewer datagrams than that.

Rows:

0. ``libutp ucat -> ucat (8 MiB socket buffers)``, **the anchor** for bulk speed: libutp's own
   ``ucat`` (``ucat-static``: libutp's Makefile as shipped, ``-O3``, built by ``setup_peers.sh`` from
   the source inside utp-native) on both ends, 100 MiB over loopback. ucat never sets socket
   buffers, and on this kernel ``net.core.{r,w}mem_default`` are read-only inside a network
   namespace (they mirror the host's: a namespace cannot raise them without changing the shared
   machine's global sysctls), so the buffers come from ``tests/peers/ucat_shim.c``, an
   ``LD_PRELOAD`` library that calls ``setsockopt(SO_RCVBUF/SO_SNDBUF, 8 MiB)`` (``SO_*BUFFORCE``
   past ``net.core.*mem_max``) on ucat's UDP socket as it is created; the row fails unless both
   ends report the buffers granted (Linux reads back 16 MiB). libutp and ucat are not patched.
   The source reads a file of the stream on tmpfs (``-B 65536``: its stdin buffer; ``--ucat-buffer``),
   the sink writes to ``/dev/null`` (no pipe, no reader process), and the same shim timestamps
   ucat's ``write()`` of the received bytes to stdout (``CLOCK_MONOTONIC``): goodput = bytes /
   (last write - first write). Once the sink reported the last byte both ucat processes get
   SIGTERM (the shim reports its counters and exits) and their CPU is read then: left alone, ucat
   busy-polls its closed stdin until libutp's 500 ms timeout check destroys the socket, which
   would charge it a spin that is no part of the transfer. The ratios of the rows below are to
   this row, measured in the same runs, interleaved (ucat, txutp -> txutp, txutp -> utp-native,
   utp-native -> txutp, ucat, ...).
1. ``txutp -> txutp``: bulk transfer through the endpoints (``bench.utp_bulk``).
2. ``utp-native -> utp-native`` (4 MiB socket buffers, and as shipped),
   ``libtorrent -> libtorrent``, ``txutp -> utp-native``, ``utp-native -> txutp``.
3. The Twisted raw-UDP ceiling: 1400-byte datagrams one way (``bench.udp_blast``).
4. 10 000 idle connections on one port: RSS per connection, handshakes per second.
5. Goodput through ``tests/peers/udp_relay.py`` at 20 ms each way (40 ms RTT), txutp -> txutp
   and utp-native -> utp-native in the same run (``--lossy-size``, 4 MiB): ``jitter only``
   (2 ms of jitter, which reorders datagrams), ``loss only`` (2 % each way) and ``loss + jitter``.
6. LEDBAT at a 20 Mbit/s ``tbf`` bottleneck in a router namespace: the queueing
   delay a txutp flow adds (UDP probe) and the share a CUBIC TCP flow gets.
7. The multi-process rows (group ``reuseport``: ``--rows reuseport``): ``twistd -n utp --listen
   utp:PORT:interface=127.0.0.1:reuseport=N --echo`` (``txutp.reuseport``), N = 1 and N = 2, interleaved,
   under 8 parallel connections from 2 client processes (``bench.reuseport_load``, 4 connections each,
   each connection on its own UDP socket), each connection sending 16 MiB (``--reuseport-size``) and
   reading it back. Aggregate MB/s = bytes sent + bytes echoed, over the span from the go signal to
   the last echoed byte of any client; ratio N=2 / N=1. Server CPU: utime + stime of the supervisor
   and its workers from ``/proc/<pid>/stat``, read right before the go signal and right after the
   last echoed byte (the transfer, not the start-up); the per-run line also shows ``wait4`` of the
   supervisor, which includes the workers (it reaps them before it exits), start-up included. The
   clients run on the same 2 cores as the server: they cost about what the server does.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tests.peers import ucat
from tests.peers.stream import chunks

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
PEERS = ROOT / "tests" / "peers"
NODE_PEER = [str(PEERS / "utp_native_peer.js")]
MB = 1e6
#: The payload of a full 1402-byte packet on IPv4 (libutp's size; txutp's too): the per-packet divisor.
PAYLOAD = 1382


def bench(name: str) -> list[str]:
    """The command that runs ``bench/<name>.py`` (as ``python -m bench.<name>``; every process runs in ROOT)."""
    return [PY, "-m", f"bench.{name}"]


@dataclass
class Proc:
    """A child process whose CPU time and peak RSS we read when it ends."""

    popen: subprocess.Popen[str]
    cpu: float = 0.0
    maxrss_kib: int = 0
    out: str = ""

    @classmethod
    def start(cls, argv: list[str], netns: str | None = None) -> Proc:
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        return cls(popen)

    def ready(self, timeout: float = 20.0) -> int:
        """Wait for ``READY <port>`` (or ``READY``) and return the port (0 if none)."""
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.popen.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.popen.args} exited: {self.popen.stderr.read() if self.popen.stderr else ''}")
            self.out += line
            if line.startswith("READY"):
                parts = line.split()
                return int(parts[1]) if len(parts) > 1 else 0
        raise RuntimeError(f"{self.popen.args} never became ready")

    def wait(self, timeout: float = 300.0) -> dict[str, Any]:
        """Wait for the end; return the last JSON line it printed."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.popen.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.popen.kill()
                continue
            time.sleep(0.02)
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        self.cpu = usage.ru_utime + usage.ru_stime
        self.maxrss_kib = usage.ru_maxrss
        rest, err = self.popen.communicate()
        self.out += rest
        for line in reversed(self.out.splitlines()):
            if line.startswith("{"):
                return dict(json.loads(line))
        raise RuntimeError(f"{self.popen.args} printed no result; stderr: {err[-2000:]}")

    def stop(self) -> dict[str, Any]:
        """SIGTERM it, then as :meth:`wait`."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.wait(20)


@dataclass
class Row:
    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def extra_median(self, key: str) -> float:
        vals = self.extra.get(key, [])
        return statistics.median(vals) if vals else float("nan")

    def add(self, value: float, **extra: float) -> None:
        self.values.append(value)
        for k, v in extra.items():
            self.extra.setdefault(k, []).append(v)


# ---------------------------------------------------------------------- the rows


def _base_cost() -> dict[str, float]:
    """Start-up CPU of each kind of peer process, to subtract from transfers."""
    costs = {}
    programs: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "python": ([*bench("utp_bulk"), "--startup-only", "listen", "0", "sink"], None),
        "node": (["node", "-e", f"require({str(PEERS / 'node' / 'node_modules' / 'utp-native')!r})"], None),
        "libtorrent": ([PY, "-c", "import libtorrent"], None),
    }
    if ucat.ucatProblem() is None:  # otherwise its row fails, saying why
        programs["ucat"] = ([str(ucat.paths()[0]), "-h"], ucat.environment())
    for name, (argv, env) in programs.items():
        samples = []
        for _ in range(3):
            popen = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            _, _, usage = os.wait4(popen.pid, 0)
            samples.append(usage.ru_utime + usage.ru_stime)
        costs[name] = statistics.median(samples)
    return costs


def bulk(
    listen: list[str],
    connect: Callable[[int], list[str]],
    kinds: tuple[str, str],
    base: dict[str, float],
    size: int,
    netns: tuple[str | None, str | None] = (None, None),
) -> dict[str, float]:
    """One transfer: a listening sink and a connecting source; goodput from the sink's report."""
    sink = Proc.start(listen, netns[1])
    port = sink.ready()
    source = Proc.start(connect(port), netns[0])
    src = source.wait()
    snk = sink.wait()
    if snk.get("bytes") != size or snk.get("error") or src.get("error"):
        raise RuntimeError(f"transfer failed: sink {snk} source {src}")
    # A txutp peer reads its CPU over the timed interval itself; the others are charged their whole
    # process less its start-up.
    cpu_src = src["cpu_seconds"] if "cpu_seconds" in src else max(0.0, source.cpu - base[kinds[0]])
    cpu_sink = snk["cpu_seconds"] if "cpu_seconds" in snk else max(0.0, sink.cpu - base[kinds[1]])
    result = {
        "mb_per_s": size / snk["seconds"] / MB,
        "cpu_s_per_gb": (cpu_src + cpu_sink) / (size / 1e9),
        **per_packet(cpu_src, cpu_sink, size),
        "rss_mib": max(source.maxrss_kib, sink.maxrss_kib) / 1024,
        "retransmissions": float(src.get("stats", {}).get("retransmissions", 0)),
    }
    if "packets_sent" in src.get("stats", {}):  # txutp's connection statistics
        result["src_datagrams"] = float(src["stats"]["packets_sent"])
    if "packets_received" in snk.get("stats", {}):
        result["sink_datagrams"] = float(snk["stats"]["packets_received"])
    return per_datagram(result, cpu_src, cpu_sink)


def per_datagram(result: dict[str, float], cpu_src: float, cpu_sink: float) -> dict[str, float]:
    """Add CPU microseconds per real datagram where the sides reported their counts."""
    for side, cpu in (("src", cpu_src), ("sink", cpu_sink)):
        count = result.get(f"{side}_datagrams", float("nan"))
        if count > 0:
            result[f"cpu_{side}_us_per_dgram"] = cpu / count * 1e6
    return result


def per_packet(cpu_src: float, cpu_sink: float, size: int) -> dict[str, float]:
    """CPU microseconds per nominal packet (``size / PAYLOAD``) on each side."""
    packets = size / PAYLOAD
    return {"cpu_src_us_per_pkt": cpu_src / packets * 1e6, "cpu_sink_us_per_pkt": cpu_sink / packets * 1e6}


def ucat_pair(size: int, base: dict[str, float], data: Path, buffer: int) -> dict[str, float]:
    """libutp's ucat -> ucat, 8 MiB socket buffers (the shim), ``data`` (``size`` bytes) over loopback.

    Goodput from the shim's timestamps of the sink's first and last write of received bytes to its
    stdout (``/dev/null``); both ends are stopped (SIGTERM) once it reported, and their CPU read then
    (``tests/peers/ucat.py``'s ``transfer``).
    """
    ucat.requireUcat()
    t = ucat.transfer(data, size, buffer=buffer)
    want = 2 * ucat.SOCKBUF  # what Linux reads back when SOCKBUF was granted
    for name, reports in (("sink", t.sink), ("source", t.source)):
        sockets = [r for r in reports if r["event"] == "socket"]
        if not sockets or min(min(r["rcvbuf"], r["sndbuf"]) for r in sockets) < want:
            raise RuntimeError(
                f"ucat {name} did not get {ucat.SOCKBUF} B socket buffers (needs root or CAP_NET_ADMIN "
                f"above net.core.rmem_max): {sockets}"
            )
    if t.received["bytes"] != size:
        raise RuntimeError(f"ucat sink got {t.received['bytes']} bytes, not {size}")
    exits = [r for r in t.source if r["event"] == "exit"]
    cpu_src = max(0.0, t.sourceUsage.ru_utime + t.sourceUsage.ru_stime - base["ucat"])
    cpu_sink = max(0.0, t.sinkUsage.ru_utime + t.sinkUsage.ru_stime - base["ucat"])
    result = {
        "mb_per_s": size / (t.received["last"] - t.received["first"]) / MB,
        "cpu_s_per_gb": (cpu_src + cpu_sink) / (size / 1e9),
        **per_packet(cpu_src, cpu_sink, size),
        "rss_mib": max(t.sourceUsage.ru_maxrss, t.sinkUsage.ru_maxrss) / 1024,
        "src_datagrams": float(exits[0]["datagrams_sent"]) if exits else float("nan"),
        "sink_datagrams": float(t.received["datagrams_received"]),
    }
    return per_datagram(result, cpu_src, cpu_sink)


def stream_file(size: int) -> Path:
    """The first ``size`` bytes of the interop stream in a file on tmpfs (``/dev/shm``) for ucat to send."""
    shm = Path("/dev/shm")
    fd, name = tempfile.mkstemp(prefix="txutp-bench-", suffix=".stream", dir=shm if shm.is_dir() else None)
    with os.fdopen(fd, "wb") as f:
        for chunk in chunks(size, 1 << 20):
            f.write(chunk)
    return Path(name)


def txutp_sink() -> list[str]:
    return [*bench("utp_bulk"), "listen", "0", "sink"]


def txutp_source(size: int) -> Callable[[int], list[str]]:
    return lambda port: [*bench("utp_bulk"), "connect", "127.0.0.1", str(port), "source", str(size)]


def node_sink(buf: int = 4 << 20) -> list[str]:
    return ["node", *NODE_PEER, "listen", "0", "sink", "--bufsize", str(buf)]


def node_source(size: int, buf: int = 4 << 20) -> Callable[[int], list[str]]:
    return lambda port: [
        "node",
        *NODE_PEER,
        "connect",
        "127.0.0.1",
        str(port),
        "source",
        str(size),
        "--bufsize",
        str(buf),
    ]


def libtorrent_pair(size: int, base: dict[str, float]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        seed = Proc.start(
            [
                PY,
                str(PEERS / "libtorrent_peer.py"),
                "seed",
                "--size",
                str(size),
                "--dir",
                tmp,
                "--torrent-out",
                f"{tmp}/t.torrent",
            ]
        )
        port = seed.ready(120)
        down = Proc.start(
            [
                PY,
                str(PEERS / "libtorrent_peer.py"),
                "download",
                "--torrent",
                f"{tmp}/t.torrent",
                "--peer",
                f"127.0.0.1:{port}",
                "--dir",
                f"{tmp}/down",
                "--timeout",
                "120",
            ]
        )
        result = down.wait(200)
        seed.stop()
    if not result.get("ok"):
        raise RuntimeError(f"libtorrent download failed: {result}")
    cpu = max(0.0, down.cpu - base["libtorrent"]) + max(0.0, seed.cpu - base["libtorrent"])
    return {
        "mb_per_s": float(result["mb_per_s"]),
        "cpu_s_per_gb": cpu / (size / 1e9),
        "rss_mib": max(down.maxrss_kib, seed.maxrss_kib) / 1024,
        "retransmissions": float("nan"),
    }


def udp_ceiling() -> dict[str, float]:
    recv = Proc.start([*bench("udp_blast"), "recv"])
    port = recv.ready()
    send = Proc.start([*bench("udp_blast"), "send", str(port), "--seconds", "2"])
    send.wait()
    r = recv.wait()
    return {"mb_per_s": float(r["mb_per_s"]), "datagrams_per_s": float(r["datagrams_per_s"])}


def idle_connections(count: int) -> dict[str, float]:
    server = Proc.start([*bench("idle_conns"), "server"])
    port = server.ready()
    assert server.popen.stdout is not None

    def rss() -> dict[str, Any]:
        server.popen.send_signal(signal.SIGUSR1)
        line = server.popen.stdout.readline()  # type: ignore[union-attr]
        return dict(json.loads(line))

    before = rss()
    client = Proc.start([*bench("idle_conns"), "client", str(port), str(count)])
    assert client.popen.stdout is not None
    line = client.popen.stdout.readline()
    result = json.loads(line)
    time.sleep(0.5)
    after = rss()
    client.popen.kill()
    server.popen.kill()
    client.popen.wait()
    server.popen.wait()
    if after["connections"] != count:
        raise RuntimeError(f"only {after['connections']} of {count} connections came up")
    return {
        "kib_per_connection": (after["rss_kib"] - before["rss_kib"]) / count,
        "handshakes_per_s": float(result["handshakes_per_s"]),
    }


UCAT_ROW = "libutp ucat -> ucat (8 MiB socket buffers)"
RELAY = PEERS / "udp_relay.py"
#: The relay rows: name -> (title in the summary, what the path does besides its 20 ms each way, target
#: ratio to utp-native).
RELAY_PATHS: dict[str, tuple[str, list[str], str]] = {
    "jitter only": ("2 ms jitter", ["--jitter", "0.002"], ">= 2.0x"),
    "loss only": ("2 % loss", ["--drop", "0.02"], ">= 1.0x"),
    "loss + jitter": ("2 % loss + 2 ms jitter", ["--drop", "0.02", "--jitter", "0.002"], ">= 1.5x"),
}


def relayed(kind: str, size: int, path: list[str], seed: int) -> dict[str, float]:
    """A ``kind`` -> ``kind`` transfer (txutp or utp-native) through the relay, 20 ms each way plus ``path``.

    Each run draws other losses (``seed``); both kinds of one run get the same draws.
    """
    procs: list[Proc] = []
    try:
        sink = Proc.start(txutp_sink() if kind == "txutp" else node_sink())
        procs.append(sink)
        port = sink.ready()
        relay = Proc.start(
            [PY, str(RELAY), "--target", f"127.0.0.1:{port}", "--delay", "0.02", "--seed", str(seed), *path]
        )
        procs.append(relay)
        rport = relay.ready()
        source = Proc.start(txutp_source(size)(rport) if kind == "txutp" else node_source(size)(rport))
        procs.append(source)
        source.wait(120)
        snk = sink.wait(30)
        counts = relay.stop()
    finally:
        for proc in procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait()
    if snk.get("bytes") != size or snk.get("error"):
        raise RuntimeError(f"relayed transfer failed: {snk}")
    return {
        "mb_per_s": size / snk["seconds"] / MB,
        "dropped": float(counts["dropped_c2s"] + counts["dropped_s2c"]),
        "overtaken": float(counts["overtaken"]),
    }


NETNS_SETUP = """
set -e
for n in utpA utpB utpR; do ip netns del $n 2>/dev/null || true; done
ip netns add utpA; ip netns add utpB; ip netns add utpR
ip link add aR type veth peer name rA
ip link add bR type veth peer name rB
ip link set aR netns utpA; ip link set rA netns utpR; ip link set rB netns utpR; ip link set bR netns utpB
ip -n utpA addr add 10.77.0.1/24 dev aR; ip -n utpR addr add 10.77.0.254/24 dev rA
ip -n utpR addr add 10.77.1.254/24 dev rB; ip -n utpB addr add 10.77.1.2/24 dev bR
for n in utpA utpB utpR; do ip -n $n link set lo up; done
ip -n utpA link set aR up; ip -n utpR link set rA up; ip -n utpR link set rB up; ip -n utpB link set bR up
ip -n utpA route add default via 10.77.0.254; ip -n utpB route add default via 10.77.1.254
ip netns exec utpR sysctl -qw net.ipv4.ip_forward=1
tc -n utpR qdisc add dev rB root tbf rate 20mbit burst 32kb limit 4mb
"""
NETNS_TEARDOWN = "for n in utpA utpB utpR; do ip netns del $n 2>/dev/null || true; done"
BOTTLENECK = 20e6 / 8  # bytes/s


def ledbat_bottleneck() -> dict[str, float]:
    """txutp through a router with a 20 Mbit/s tbf and a 1.6 s buffer: added delay, then a TCP flow's share."""
    subprocess.run(["bash", "-c", NETNS_SETUP], check=True)
    procs: list[Proc] = []
    try:
        echo = Proc.start([*bench("delay_probe"), "echo", "9999"], "utpB")
        procs.append(echo)
        echo.ready()

        def probe(seconds: float) -> list[float]:
            p = Proc.start([*bench("delay_probe"), "probe", "10.77.1.2", "9999", str(seconds)], "utpA")
            return sorted(p.wait(seconds + 30)["rtt_ms"])

        idle = statistics.median(probe(2))
        sink = Proc.start([*bench("utp_bulk"), "listen", "7000", "sink", "--interface", "10.77.1.2"], "utpB")
        procs.append(sink)
        sink.ready()
        tcp_sink = Proc.start([*bench("tcp_bulk"), "recv", "7001", "40"], "utpB")
        procs.append(tcp_sink)
        tcp_sink.ready()
        source = Proc.start(
            [*bench("utp_bulk"), "connect", "10.77.1.2", "7000", "source", str(int(BOTTLENECK * 60))],
            "utpA",
        )
        procs.append(source)
        time.sleep(8)  # past slow start
        loaded = probe(10)
        tcp = Proc.start([*bench("tcp_bulk"), "send", "10.77.1.2", "7001", "20", "cubic"], "utpA")
        tcp.wait(60)
        per_second = tcp_sink.wait(60)["per_second"]
        steady = per_second[5:20]  # the TCP flow's seconds 5-20, after its own slow start
        return {
            "added_delay_ms": statistics.median(loaded) - idle,
            "p90_added_delay_ms": loaded[int(len(loaded) * 0.9)] - idle,
            "tcp_share": statistics.mean(steady) / BOTTLENECK,
        }
    finally:
        for p in procs:
            if p.popen.poll() is None:
                p.popen.kill()
        subprocess.run(["bash", "-c", NETNS_TEARDOWN], check=False)


REUSEPORT_CLIENTS = 2  # client processes
REUSEPORT_CONNECTIONS = 8  # connections in all


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree_cpu(pid: int) -> dict[int, float]:
    """utime + stime (seconds) of ``pid`` and of each of its live children, from ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        children = []
    cpu = {}
    for p in (pid, *children):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu[p] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15)
    return cpu


def reuseport_echo(workers: int, size: int) -> dict[str, float]:
    """``twistd utp --echo`` with ``reuseport=workers`` under REUSEPORT_CONNECTIONS parallel echo connections."""
    port = _free_udp_port()
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "twistd.log"
        argv = [str(Path(PY).with_name("twistd")), "-n", "--pidfile=", f"--logfile={log}", "utp"]
        argv += ["--listen", f"utp:{port}:interface=127.0.0.1:reuseport={workers}", "--echo"]
        server = Proc(
            subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp, start_new_session=True
            )
        )
        try:
            deadline = time.monotonic() + 30
            while (log.read_text() if log.exists() else "").count(f"EchoFactory starting on {port}") < workers:
                if server.popen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"twistd utp (reuseport={workers}) did not start: {log.read_text()[-2000:]}")
                time.sleep(0.05)
            per = REUSEPORT_CONNECTIONS // REUSEPORT_CLIENTS
            for _ in range(REUSEPORT_CLIENTS):
                popen = subprocess.Popen(
                    [*bench("reuseport_load"), str(port), str(per), str(size)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                )
                procs.append(Proc(popen))
                procs[-1].ready()
            before = _tree_cpu(server.popen.pid)
            if len(before) != workers + 1:
                raise RuntimeError(f"twistd utp has {len(before) - 1} children, not {workers}")
            for client in procs:
                assert client.popen.stdin is not None
                client.popen.stdin.write("go\n")
                client.popen.stdin.flush()
            results = [client.wait(150) for client in procs]
            after = _tree_cpu(server.popen.pid)
            server.popen.send_signal(signal.SIGTERM)
            _, status, usage = os.wait4(server.popen.pid, 0)
            server.popen.returncode = os.waitstatus_to_exitcode(status)
            server.popen.communicate()
            server_wait4 = usage.ru_utime + usage.ru_stime
        finally:
            if server.popen.poll() is None:  # failed: the workers first, while their pids are still theirs
                for pid in _tree_cpu(server.popen.pid).keys() - {server.popen.pid}:
                    os.kill(pid, signal.SIGKILL)
            for proc in (*procs, server):
                if proc.popen.poll() is None:
                    proc.popen.kill()
                    proc.popen.wait()
    errors = [r["error"] for r in results if r.get("error")]
    if errors:
        raise RuntimeError(f"reuseport={workers}: {errors}")
    moved = sum(r["sent"] + r["echoed"] for r in results)
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    spent = {pid: after.get(pid, cpu) - cpu for pid, cpu in before.items()}
    busiest = max(v for pid, v in spent.items() if pid != server.popen.pid)
    return {
        "mb_per_s": moved / seconds / MB,
        "server_cpu_s": sum(spent.values()),
        "busiest_worker_cpu_s": busiest,
        "server_cpu_wait4_s": server_wait4,
        "seconds": seconds,
    }


# ---------------------------------------------------------------------- the table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--size", type=int, default=100_000_000)
    p.add_argument("--lossy-size", type=int, default=4 << 20, help="bytes per transfer through the relay")
    p.add_argument("--idle", type=int, default=10_000)
    p.add_argument("--json", type=Path)
    p.add_argument("--skip-netns", action="store_true")
    p.add_argument(
        "--rows", nargs="*", default=[], help="run only the rows whose names (or groups: ucat) contain one of these"
    )
    p.add_argument(
        "--reuseport-size", type=int, default=16 << 20, help="bytes each reuseport connection sends (and gets back)"
    )
    p.add_argument(
        "--ucat-buffer", type=int, default=ucat.SOURCE_BUFFER, help="the ucat source's stdin buffer (its -B)"
    )
    ns = p.parse_args(argv)
    size = ns.size
    print(f"txutp benchmark suite: {ns.runs} runs per row, {size / MB:.0f} MB transfers, medians", flush=True)
    base = _base_cost()
    rows: dict[str, Row] = {}

    def selected(name: str, groups: tuple[str, ...] = ()) -> bool:
        return not ns.rows or any(r in n for r in ns.rows for n in (name, *groups))

    def run(
        name: str, fn: Callable[[], dict[str, float]], runs: int | None = None, groups: tuple[str, ...] = ()
    ) -> None:
        if not selected(name, groups):
            return
        row = rows.setdefault(name, Row(name, ""))
        for i in range(runs or ns.runs):
            try:
                result = fn()
            except Exception as e:  # one failed row must not lose the others
                print(f"  {name}: FAILED: {e}", flush=True)
                row.note = str(e)
                continue
            main_key = next(iter(result))
            row.add(result[main_key], **result)
            print(f"  {name} [{i + 1}]: " + ", ".join(f"{k}={v:.3g}" for k, v in result.items()), flush=True)

    # Interleave the runs of the throughput rows so drift hits them alike. The group "ucat": the
    # libutp anchor and the rows compared to it.
    data: list[Path] = []  # the ucat source's file, made once

    def ucat_anchor() -> dict[str, float]:
        if not data:
            data.append(stream_file(size))
        return ucat_pair(size, base, data[0], ns.ucat_buffer)

    transfers: list[tuple[str, Callable[[], dict[str, float]], tuple[str, ...]]] = [
        (UCAT_ROW, ucat_anchor, ()),
        (
            "txutp -> txutp",
            lambda: bulk(txutp_sink(), txutp_source(size), ("python", "python"), base, size),
            ("ucat",),
        ),
        (
            "utp-native -> utp-native (4 MiB buffers)",
            lambda: bulk(node_sink(), node_source(size), ("node", "node"), base, size),
            (),
        ),
        (
            "utp-native -> utp-native (as shipped)",
            lambda: bulk(node_sink(0), node_source(size, 0), ("node", "node"), base, size),
            (),
        ),
        ("libtorrent -> libtorrent", lambda: libtorrent_pair(size, base), ()),
        (
            "txutp -> utp-native",
            lambda: bulk(node_sink(), txutp_source(size), ("python", "node"), base, size),
            ("ucat",),
        ),
        (
            "utp-native -> txutp",
            lambda: bulk(txutp_sink(), node_source(size), ("node", "python"), base, size),
            ("ucat",),
        ),
        ("Twisted raw UDP ceiling", udp_ceiling, ()),
    ]
    try:
        for _ in range(ns.runs):
            for name, fn, groups in transfers:
                run(name, fn, runs=1, groups=groups)
    finally:
        for made in data:
            made.unlink()
    run("10k idle connections", lambda: idle_connections(ns.idle), runs=1)
    for index in range(ns.runs):
        for path_name, (_, path, _) in RELAY_PATHS.items():
            for kind in ("txutp", "utp-native"):
                run(f"{path_name}: {kind}", partial(relayed, kind, ns.lossy_size, path, index + 1), runs=1)
    if not ns.skip_netns:
        run("LEDBAT at 20 Mbit/s", ledbat_bottleneck, runs=1)
    for _ in range(ns.runs):
        for workers in (1, 2):
            run(f"reuseport={workers} echo", partial(reuseport_echo, workers, ns.reuseport_size), 1, ("reuseport",))

    def m(name: str, key: str | None = None) -> float:
        row = rows.get(name)
        if row is None:
            return float("nan")
        return row.median if key is None else row.extra_median(key)

    tx = m("txutp -> txutp")
    table: list[tuple[str, str, str, str]] = []

    def line(what: str, value: str, ratio: str, target: str) -> None:
        table.append((what, value, "" if "nan" in ratio else ratio, target))

    def per_packet_cpu(name: str) -> str:
        return f"CPU {m(name, 'cpu_src_us_per_pkt'):.2f} + {m(name, 'cpu_sink_us_per_pkt'):.2f} us/pkt"

    anchor = m(UCAT_ROW)
    line(UCAT_ROW, f"{anchor:.0f} MB/s, {per_packet_cpu(UCAT_ROW)}", "anchor", "")
    compared = (("txutp -> txutp", ">= 2.0x"), ("txutp -> utp-native", ">= 1.5x"), ("utp-native -> txutp", ">= 1.5x"))
    for name, target in compared:
        v = m(name)
        if name in rows and UCAT_ROW in rows:
            line(f"  {name}", f"{v:.0f} MB/s, {per_packet_cpu(name)}", f"{v / anchor:.2f}x ucat", target)
    cpu_ucat = m(UCAT_ROW, "cpu_s_per_gb")
    if "txutp -> txutp" in rows:
        cpu_tx = m("txutp -> txutp", "cpu_s_per_gb")
        line(
            "  CPU s/GB both ends: txutp, ucat",
            f"{cpu_tx:.2f} s, {cpu_ucat:.2f} s",
            f"{cpu_tx / cpu_ucat:.2f}x ucat",
            "<= 0.6x",
        )

    un_raised, un_shipped = m("utp-native -> utp-native (4 MiB buffers)"), m("utp-native -> utp-native (as shipped)")
    lt, ceiling = m("libtorrent -> libtorrent"), m("Twisted raw UDP ceiling")
    line("txutp -> txutp goodput", f"{tx:.0f} MB/s", "", "")
    line("  vs libtorrent -> libtorrent", f"{lt:.0f} MB/s", f"{tx / lt:.2f}x", ">= 1.5x")
    line("  vs utp-native -> utp-native (4 MiB)", f"{un_raised:.0f} MB/s", f"{tx / un_raised:.2f}x", ">= 1.0x")
    line("  vs utp-native -> utp-native (shipped)", f"{un_shipped:.0f} MB/s", f"{tx / un_shipped:.2f}x", "")
    line("  vs Twisted raw-UDP ceiling", f"{ceiling:.0f} MB/s", f"{tx / ceiling:.2f}x", ">= 0.5x")
    cpu_tx, cpu_un = m("txutp -> txutp", "cpu_s_per_gb"), m("utp-native -> utp-native (4 MiB buffers)", "cpu_s_per_gb")
    line("CPU s/GB, both sides: txutp", f"{cpu_tx:.1f} s", f"{cpu_tx / cpu_un:.2f}x libutp", "<= 3x")
    line("CPU s/GB, both sides: utp-native", f"{cpu_un:.1f} s", "", "")
    line("peak RSS per process: txutp", f"{m('txutp -> txutp', 'rss_mib'):.0f} MiB", "", "")
    for name in ("txutp -> utp-native", "utp-native -> txutp"):
        v = m(name)
        line(name, f"{v:.0f} MB/s", f"{v / un_shipped:.2f}x shipped, {v / un_raised:.2f}x 4 MiB", ">= 1.0x shipped")
    idle_kib = m("10k idle connections", "kib_per_connection")
    line(f"{ns.idle} idle connections", f"{idle_kib:.1f} KiB each", "", "<= 8 KiB")
    line("  handshakes per second", f"{m('10k idle connections', 'handshakes_per_s'):.0f}/s", "", "")
    for path_name, (title, _, target) in RELAY_PATHS.items():
        r_tx, r_un = m(f"{path_name}: txutp"), m(f"{path_name}: utp-native")
        line(f"{title}, 40 ms RTT: txutp", f"{r_tx:.2f} MB/s", f"{r_tx / r_un:.2f}x utp-native", target)
        line(f"{title}, 40 ms RTT: utp-native", f"{r_un:.2f} MB/s", "", "")
    if "LEDBAT at 20 Mbit/s" in rows:
        line(
            "LEDBAT added delay at 20 Mbit/s",
            f"{m('LEDBAT at 20 Mbit/s', 'added_delay_ms'):.0f} ms",
            f"p90 {m('LEDBAT at 20 Mbit/s', 'p90_added_delay_ms'):.0f} ms",
            "<= 120 ms",
        )
        line("  share left to a CUBIC TCP flow", f"{m('LEDBAT at 20 Mbit/s', 'tcp_share'):.0%}", "", ">= 80 %")
    rp1, rp2 = m("reuseport=1 echo"), m("reuseport=2 echo")
    connections = f"{REUSEPORT_CONNECTIONS} conns x {ns.reuseport_size / MB:.1f} MB, echoed"
    for workers, v in ((1, rp1), (2, rp2)):
        name = f"reuseport={workers} echo"
        line(
            f"twistd utp reuseport={workers}, {connections}",
            f"{v:.0f} MB/s, server CPU {m(name, 'server_cpu_s'):.1f} s",
            "anchor" if workers == 1 else f"{rp2 / rp1:.2f}x reuseport=1",
            "",
        )
    table = [r for r in table if "nan" not in r[1]]
    if not table:
        print("no rows measured")
        return 1
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(("row", "value", "ratio", "target"), widths)))
    print("  ".join("-" * w for w in widths))
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    if ns.json:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(
            json.dumps({name: {"values": r.values, "extra": r.extra} for name, r in rows.items()}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
