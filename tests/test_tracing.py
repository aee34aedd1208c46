"""Traces of real transfers in the simulator: what they say adds up to the connections' own stats."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from txutp.engine import UTPConfig, UTPConnection, UTPContext
from txutp.simulator import LinkConfig, Network, StreamApp
from txutp.trace import read_trace, summarize, trace_directory


def _trace_path(directory: Path) -> Path:
    """The one trace a directory traced by ``trace_directory`` holds."""
    [path] = directory.iterdir()
    return path


def _transfer(tmp_path: Path, seed: int, link: LinkConfig, size: int) -> tuple[UTPConnection, UTPConnection, bytes]:
    net = Network(seed=seed)
    client = net.add_host(("10.0.0.1", 6881))
    server = net.add_host(("10.0.0.2", 6881), accepting=True)
    net.link(client, server, link)
    client.context.tracer_factory = trace_directory(tmp_path / "client", "client")
    server.context.tracer_factory = trace_directory(tmp_path / "server", "server")
    data = random.Random(seed).randbytes(size)
    received = StreamApp(b"", close_on_eof=True)
    accepted: list[UTPConnection] = []

    def accept(conn: UTPConnection) -> StreamApp:
        accepted.append(conn)
        return received

    server.on_accept = accept
    conn = client.connect(server.address)
    client.attach(conn, StreamApp(data))
    net.run(until=600)
    [server_conn] = accepted
    assert bytes(received.received) == data
    return conn, server_conn, data


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_traced_transfer_over_a_lossy_path_adds_up_to_the_stats(tmp_path: Path, seed: int) -> None:
    link = LinkConfig(delay=0.02, jitter=0.004, loss=0.02, bandwidth=2_000_000, buffer=200_000)
    client, server, data = _transfer(tmp_path, seed, link, 2_000_000)
    for conn, name in ((client, "client"), (server, "server")):
        header, events = read_trace(_trace_path(tmp_path / name))
        events = list(events)
        assert header["connection"]["recv_id"] == conn.recv_id
        assert header["connection"]["initiator"] is conn.initiator
        stats = conn.stats()
        summary = summarize(events)
        assert summary["packets_sent"] == stats.packets_sent, name
        assert summary["packets_received"] == stats.packets_received, name
        syn_resends = max(summary["packets_sent_by_type"].get("SYN", 0) - 1, 0)
        assert summary["retransmissions"] + syn_resends == stats.retransmissions, name
        assert summary["payload_bytes_sent"] == stats.bytes_sent, name
        assert summary["timeouts_by_kind"].get("rto", 0) == stats.timeouts, name
        assert summary["timeouts_by_kind"].get("tail_loss_probe", 0) == stats.tail_loss_probes, name
        assert summary["spurious"] == stats.spurious_retransmissions, name
        assert summary["losses"] >= summary["retransmissions"] - summary["timeouts_by_kind"].get("tail_loss_probe", 0)
        states = [e["to"] for e in events if e["name"] == "state"]
        assert states[-1] == "closed" and "connected" in states, (name, states)
        assert events[-1]["name"] == "closed"
        assert all(b["t"] >= a["t"] for a, b in itertools.pairwise(events))
    client_summary = summarize(read_trace(_trace_path(tmp_path / "client"))[1])
    server_summary = summarize(read_trace(_trace_path(tmp_path / "server"))[1])
    assert client_summary["bytes_acked"] == len(data) == client.stats().bytes_sent
    assert server_summary["bytes_received"] == len(data)
    assert client_summary["retransmissions"] > 0 and client_summary["losses"] > 0  # the path really lost some
    rtts = [e for e in read_trace(_trace_path(tmp_path / "client"))[1] if e["name"] == "rtt_sample"]
    assert rtts and all(0.04 <= e["rtt"] < 1.0 for e in rtts)


def test_without_a_tracer_factory_nothing_is_traced(tmp_path: Path) -> None:
    ctx = UTPContext(UTPConfig())
    conn = ctx.connect(("10.0.0.2", 6881), 0.0)
    ctx.datagrams_to_send(0.0)
    assert conn.tracer is None and list(tmp_path.iterdir()) == []


def test_a_factory_may_trace_only_some_connections(tmp_path: Path) -> None:
    ctx = UTPContext(UTPConfig())
    traced = trace_directory(tmp_path, "x")
    ctx.tracer_factory = lambda conn, now: traced(conn, now) if conn.peer_addr[0] == "10.0.0.2" else None
    kept = ctx.connect(("10.0.0.2", 6881), 0.0)
    skipped = ctx.connect(("10.0.0.3", 6881), 0.0)
    ctx.datagrams_to_send(0.0)
    assert kept.tracer is not None and skipped.tracer is None
    [path] = tmp_path.iterdir()
    kept.abort(0.5)
    ctx.datagrams_to_send(0.5)
    events = list(read_trace(path)[1])
    names = [e["name"] for e in events]
    assert [e["type"] for e in events if e["name"] == "packet_sent"] == ["SYN", "RESET"]
    assert names[-1] == "closed" and kept.tracer is None
