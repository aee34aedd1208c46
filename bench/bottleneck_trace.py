"""LEDBAT beside TCP at a real bottleneck: one traced txutp transfer, a CUBIC flow across it for a while, one figure.

    sudo .venv/bin/python -m bench.bottleneck_trace [--seconds 30] [--rate 10mbit] [--buffer-ms 250]
        [--tcp-start 10] [--tcp-seconds 10] [-o docs/_static/ledbat-beside-tcp.png] [--keep DIR]

Needs root (network namespaces and ``tc``). Three namespaces, sender, router and
receiver, joined by two veth pairs; a ``tbf`` qdisc on the router's interface
towards the receiver is the bottleneck (``--rate``, with a tail-drop buffer of
``--buffer-ms`` of queue at that rate). It is in a router, not on the sender's
own interface, because TCP small queues would starve a TCP flow queued behind
txutp's packets in its own host's qdisc (see :class:`Namespaces`). A txutp bulk transfer
runs from the sender namespace to the receiver namespace for ``--seconds``; the
sender's multiplexer traces its connection (``context.tracer_factory``). From
``--tcp-start`` seconds after the txutp connection started, a TCP flow (CUBIC, a
loss-based congestion control that fills the buffer) crosses the same bottleneck
for ``--tcp-seconds``, then stops at once (an RST: no send buffer left to drain),
and txutp runs alone again.

The sender's trace is drawn with :func:`txutp.plot.plot_traces` (the TCP flow's
start and stop marked on every panel) into ``-o``, and a table is printed: txutp's
goodput (from the bytes the receiver acknowledged, as the trace records them),
the TCP flow's goodput (bytes its receiver read), and the median of txutp's
queueing delay and window samples, in each phase: txutp alone (from 2 s, past slow
start, to TCP's start), beside TCP (and that phase's second half, once txutp has
yielded) and after TCP. ``--keep DIR`` keeps the trace and the peers' reports in
DIR. The namespaces are removed whatever happens.

Each peer is this module again, run inside its namespace (``ip netns exec``)::

    python -m bench.bottleneck_trace peer utp-send LOCAL HOST PORT SECONDS TRACE_DIR
    python -m bench.bottleneck_trace peer tcp-recv LOCAL PORT
    python -m bench.bottleneck_trace peer tcp-send HOST PORT START_AT SECONDS

The txutp receiver is ``bench.utp_bulk listen PORT sink``.
"""

from __future__ import annotations

import argparse
import bisect
import glob
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
SENDER_ADDR, SENDER_GATEWAY = "10.231.0.1", "10.231.0.254"
RECEIVER_ADDR, RECEIVER_GATEWAY = "10.231.1.2", "10.231.1.254"
UTP_PORT, TCP_PORT = 7000, 7001
WARMUP = 2.0  # seconds of slow start left out of the "alone" phase


# ---------------------------------------------------------------------- the peers (inside a namespace)


def utp_send(local: str, host: str, port: int, seconds: float, trace_dir: str) -> int:
    """Send as fast as txutp allows for ``seconds`` (then abort), tracing the connection into ``trace_dir``."""
    from twisted.internet import reactor as _reactor
    from twisted.internet.protocol import Factory
    from twisted.python.failure import Failure

    from bench.utp_bulk import BulkProtocol
    from txutp import UTPMultiplexer, listenUTP
    from txutp.trace import trace_directory

    reactor: Any = _reactor
    mux = UTPMultiplexer(reactor)
    udp = listenUTP(reactor, 0, mux, local)
    mux.context.tracer_factory = trace_directory(trace_dir, local=(local, udp.getHost().port))
    result: dict[str, Any] = {"role": "utp-send"}
    factory = Factory.forProtocol(lambda: BulkProtocol(result, "source", 1 << 50, True, False))

    def connected(proto: Any) -> None:
        result["connected_at"] = time.time()
        print(f"CONNECTED {result['connected_at']:.6f}", flush=True)
        reactor.callLater(seconds, proto.transport.abortConnection)  # BulkProtocol stops the reactor

    def failed(f: Failure) -> None:
        result["error"] = f.getErrorMessage()
        reactor.stop()

    mux.connect((host, port), factory, timeout=10).addCallbacks(connected, failed)
    reactor.callLater(seconds + 30, lambda: (result.setdefault("error", "timeout"), reactor.stop()))
    reactor.run()
    print(json.dumps(result), flush=True)
    return 0 if "error" not in result else 3


def tcp_recv(local: str, port: int) -> int:
    """Accept one TCP connection, read it to its end; report ``[wall time, bytes so far]`` every 50 ms."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((local, port))
    server.listen(1)
    server.settimeout(300)
    print("READY", flush=True)
    conn, _ = server.accept()
    total, last = 0, time.time()
    samples = [[last, 0]]
    with conn:
        while True:
            try:
                data = conn.recv(1 << 20)
            except ConnectionResetError:  # the sender's abortive close
                break
            if not data:
                break
            total += len(data)
            now = time.time()
            if now - last >= 0.05:
                samples.append([now, total])
                last = now
    samples.append([time.time(), total])
    print(json.dumps({"role": "tcp-recv", "bytes": total, "samples": samples}), flush=True)
    return 0


def tcp_send(host: str, port: int, start_at: float, seconds: float) -> int:
    """From wall time ``start_at``, send over TCP (CUBIC) for ``seconds``, then reset the connection:
    nothing left in the socket buffer keeps flowing after the stop."""
    time.sleep(max(0.0, start_at - time.time()))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
    sock.connect((host, port))
    started = time.time()
    sock.settimeout(0.05)
    chunk = b"t" * 65536
    sent = 0
    while time.time() < start_at + seconds:
        try:
            sent += sock.send(chunk)
        except TimeoutError:
            continue
    stopped = time.time()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    print(json.dumps({"role": "tcp-send", "started": started, "stopped": stopped, "sent": sent}), flush=True)
    return 0


def peer(argv: list[str]) -> int:
    role, args = argv[0], argv[1:]
    if role == "utp-send":
        return utp_send(args[0], args[1], int(args[2]), float(args[3]), args[4])
    if role == "tcp-recv":
        return tcp_recv(args[0], int(args[1]))
    if role == "tcp-send":
        return tcp_send(args[0], int(args[1]), float(args[2]), float(args[3]))
    raise SystemExit(f"unknown peer role {role!r}")


# ---------------------------------------------------------------------- the namespaces


def rate_bits(rate: str) -> float:
    """``tc``'s rate syntax (``10mbit``, ``500kbit``, ``1gbit``, ``8000bit``) in bits per second."""
    m = re.fullmatch(r"([0-9.]+)\s*([kmg]?)bit", rate.strip().lower())
    if not m:
        raise ValueError(f"a rate like 10mbit, not {rate!r}")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


class Namespaces:
    """Sender, router and receiver namespaces on two veth pairs, a tbf on the router's way to the receiver;
    :meth:`remove` undoes it all.

    The bottleneck is in a router, not on the senders' own interface: there, TCP small queues (a
    socket may have only about a millisecond of its pacing rate in the local qdisc) starve the TCP
    flow behind txutp's queue (0.7 Mbit/s of 10), which no real path does.
    """

    def __init__(self, rate: str, buffer_bytes: int) -> None:
        tag = os.getpid()
        self.sender, self.router, self.receiver = (f"txutp-bt{tag}-{n}" for n in ("snd", "rtr", "rcv"))
        self.rate, self.buffer_bytes = rate, buffer_bytes
        self.burst = max(16_000, int(rate_bits(rate) / 8 / 500))  # 2 ms at the rate, at least 16 kB

    def _run(self, *argv: str) -> None:
        subprocess.run(argv, check=True)

    def create(self) -> None:
        s, r, d = self.sender, self.router, self.receiver
        for ns in (s, r, d):
            self._run("ip", "netns", "add", ns)
            self._run("ip", "-n", ns, "link", "set", "lo", "up")
        self._run("ip", "link", "add", "bt-snd", "netns", s, "type", "veth", "peer", "name", "bt-rs", "netns", r)
        self._run("ip", "link", "add", "bt-rr", "netns", r, "type", "veth", "peer", "name", "bt-rcv", "netns", d)
        for ns, dev, addr in (
            (s, "bt-snd", f"{SENDER_ADDR}/24"),
            (r, "bt-rs", f"{SENDER_GATEWAY}/24"),
            (r, "bt-rr", f"{RECEIVER_GATEWAY}/24"),
            (d, "bt-rcv", f"{RECEIVER_ADDR}/24"),
        ):
            self._run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            self._run("ip", "-n", ns, "link", "set", dev, "up")
        self._run("ip", "-n", s, "route", "add", "default", "via", SENDER_GATEWAY)
        self._run("ip", "-n", d, "route", "add", "default", "via", RECEIVER_GATEWAY)
        self._run("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self._run(
            "tc", "-n", r, "qdisc", "add", "dev", "bt-rr", "root", "tbf",
            "rate", self.rate, "burst", str(self.burst), "limit", str(self.buffer_bytes),
        )  # fmt: skip

    def qdisc_stats(self) -> str:
        out = subprocess.run(
            ["tc", "-s", "-n", self.router, "qdisc", "show", "dev", "bt-rr"], capture_output=True, text=True
        )
        return out.stdout.strip()

    def remove(self) -> None:
        for ns in (self.sender, self.router, self.receiver):
            subprocess.run(["ip", "netns", "del", ns], check=False, stderr=subprocess.DEVNULL)


class Proc:
    """A peer process in a namespace: its stdout lines and, at the end, the last JSON line."""

    def __init__(self, netns: str, argv: list[str], log: Path) -> None:
        self.log = log
        self.argv = " ".join(argv)
        self.stderr = open(log, "w")  # noqa: SIM115 - closed in wait()
        self.popen = subprocess.Popen(
            ["ip", "netns", "exec", netns, *argv], stdout=subprocess.PIPE, stderr=self.stderr, text=True, cwd=ROOT
        )
        self.lines: list[str] = []

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.popen.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        raise RuntimeError(f"{self.argv} printed no {prefix!r}; see {self.log}")

    def wait(self, timeout: float) -> dict[str, Any]:
        try:
            out, _ = self.popen.communicate(timeout=timeout)
        finally:
            self.stderr.close()
        self.lines += out.splitlines()
        for line in reversed(self.lines):
            if line.startswith("{"):
                return dict(json.loads(line))
        raise RuntimeError(f"{self.argv} printed no result; see {self.log}")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self.stderr.close()


def peer_argv(*args: object) -> list[str]:
    return [PY, "-m", "bench.bottleneck_trace", "peer", *map(str, args)]


def run(ns: argparse.Namespace, workdir: Path) -> tuple[Path, dict[str, Any], dict[str, Any], str]:
    """Run both flows; return the sender's trace, the TCP sender's and receiver's reports, the qdisc's stats."""
    buffer_bytes = int(rate_bits(ns.rate) / 8 * ns.buffer_ms / 1000)
    nets = Namespaces(ns.rate, buffer_bytes)
    procs: list[Proc] = []
    try:
        nets.create()
        utp_sink = Proc(
            nets.receiver,
            [PY, "-m", "bench.utp_bulk", "listen", str(UTP_PORT), "sink", "--interface", RECEIVER_ADDR,
             "--timeout", str(ns.seconds + 60)],
            workdir / "utp-recv.log",
        )  # fmt: skip
        procs.append(utp_sink)
        utp_sink.expect("READY")
        tcp_sink = Proc(nets.receiver, peer_argv("tcp-recv", RECEIVER_ADDR, TCP_PORT), workdir / "tcp-recv.log")
        procs.append(tcp_sink)
        tcp_sink.expect("READY")
        trace_dir = workdir / "traces"
        sender = Proc(
            nets.sender,
            peer_argv("utp-send", SENDER_ADDR, RECEIVER_ADDR, UTP_PORT, ns.seconds, trace_dir),
            workdir / "utp-send.log",
        )
        procs.append(sender)
        connected = float(sender.expect("CONNECTED").split()[1])
        tcp = Proc(
            nets.sender,
            peer_argv("tcp-send", RECEIVER_ADDR, TCP_PORT, connected + ns.tcp_start, ns.tcp_seconds),
            workdir / "tcp-send.log",
        )
        procs.append(tcp)
        tcp_sent = tcp.wait(ns.tcp_start + ns.tcp_seconds + 60)
        tcp_received = tcp_sink.wait(30)
        utp_result = sender.wait(ns.seconds + 60)
        if "error" in utp_result:
            raise RuntimeError(f"the txutp sender failed: {utp_result}")
        utp_sink.wait(30)
        qdisc = nets.qdisc_stats()
    finally:
        for p in procs:
            p.kill()
        nets.remove()
    [trace] = glob.glob(str(trace_dir / "*.jsonl"))
    (workdir / "tcp.json").write_text(json.dumps({"send": tcp_sent, "recv": tcp_received}))
    return Path(trace), tcp_sent, tcp_received, qdisc


# ---------------------------------------------------------------------- the table


def trace_wall_start(header: dict[str, Any]) -> float:
    """The wall time (seconds since the epoch) of the trace's ``t = 0``."""
    when = datetime.strptime(header["wall_clock"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return when.timestamp()


def step_at(times: list[float], values: list[float], t: float) -> float:
    i = bisect.bisect_right(times, t)
    return values[i - 1] if i else 0.0


def phase_rows(
    trace: Path, tcp_sent: dict[str, Any], tcp_received: dict[str, Any]
) -> tuple[list[list[str]], float, float]:
    from txutp.trace import read_trace

    header, events = read_trace(trace)
    zero = trace_wall_start(header)
    acked_t: list[float] = []
    acked: list[float] = []
    samples: list[tuple[float, float, float]] = []  # t, queueing delay (ms), cwnd (KiB)
    end = 0.0
    for e in events:
        end = max(end, e["t"])
        if e["name"] != "metrics":
            continue
        if isinstance(e.get("bytes_acked"), int):
            acked_t.append(e["t"])
            acked.append(e["bytes_acked"])
        if isinstance(e.get("current_delay_us"), int) and isinstance(e.get("cwnd"), int):
            samples.append((e["t"], e["current_delay_us"] / 1000, e["cwnd"] / 1024))
    on, off = tcp_sent["started"] - zero, tcp_sent["stopped"] - zero
    tcp_t = [s[0] - zero for s in tcp_received["samples"]]
    tcp_b = [float(s[1]) for s in tcp_received["samples"]]
    rows = []
    for name, a, b in (
        ("txutp alone", WARMUP, on),
        ("beside TCP", on, off),
        ("  its 2nd half", (on + off) / 2, off),
        ("after TCP", off, end),
    ):
        utp = (step_at(acked_t, acked, b) - step_at(acked_t, acked, a)) * 8 / (b - a) / 1e6
        tcp = (step_at(tcp_t, tcp_b, b) - step_at(tcp_t, tcp_b, a)) * 8 / (b - a) / 1e6
        inside = [s for s in samples if a <= s[0] < b]
        delay = statistics.median(s[1] for s in inside) if inside else float("nan")
        cwnd = statistics.median(s[2] for s in inside) if inside else float("nan")
        rows.append([name, f"{a:.1f}-{b:.1f}", f"{utp:.2f}", f"{tcp:.2f}", f"{delay:.0f}", f"{cwnd:.0f}"])
    return rows, on, off


def print_table(rows: list[list[str]]) -> None:
    head = [
        "phase",
        "t (s)",
        "txutp Mbit/s",
        "TCP Mbit/s",
        "txutp queueing delay ms (median)",
        "txutp cwnd KiB (median)",
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["peer"]:
        return peer(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="the txutp transfer's length")
    p.add_argument("--rate", default="10mbit", help="the bottleneck's rate, in tc's syntax")
    p.add_argument("--buffer-ms", type=float, default=250.0, help="the bottleneck's buffer, in ms of queue at --rate")
    p.add_argument("--tcp-start", type=float, default=10.0, help="seconds after the txutp connection started")
    p.add_argument("--tcp-seconds", type=float, default=10.0)
    p.add_argument("-o", "--output", default="docs/_static/ledbat-beside-tcp.png")
    p.add_argument("--keep", type=Path, help="keep the trace and the peers' logs in this directory")
    ns = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.bottleneck_trace needs root (network namespaces and tc)", file=sys.stderr)
        return 2
    from txutp.plot import plot_traces

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a SIGTERM still removes the namespaces
    workdir = ns.keep if ns.keep else Path(tempfile.mkdtemp(prefix="txutp-bottleneck-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        trace, tcp_sent, tcp_received, qdisc = run(ns, workdir)
        rows, on, off = phase_rows(trace, tcp_sent, tcp_received)
        title = (
            f"txutp (LEDBAT) sender at a {ns.rate} tbf bottleneck ({ns.buffer_ms:g} ms buffer); "
            f"a CUBIC TCP flow crosses it from {on:.1f} s to {off:.1f} s"
        )
        Path(ns.output).parent.mkdir(parents=True, exist_ok=True)
        plot_traces([trace], ns.output, title=title, markers=[(on, "TCP starts"), (off, "TCP stops")])
        print(f"bottleneck: tbf rate {ns.rate}, buffer {ns.buffer_ms:g} ms; txutp for {ns.seconds:g} s, "
              f"TCP (cubic) from {on:.2f} s to {off:.2f} s of the txutp connection")  # fmt: skip
        print_table(rows)
        print(f"\n{qdisc}\n\ntrace: {trace if ns.keep else '(removed; --keep DIR keeps it)'}\nfigure: {ns.output}")
    finally:
        if not ns.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
