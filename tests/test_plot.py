"""``python -m txutp.plot``: it draws a PNG from a trace, compares several, and says clearly when matplotlib is missing.

The traces drawn are real: the engine's own, written by :func:`~txutp.trace.trace_directory` during a
2 MB transfer in the simulator, over a 2 Mbit/s bottleneck that loses 2 % of the datagrams each way.
"""

from __future__ import annotations

import glob
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from txutp.plot import MISSING_MATPLOTLIB, goodput, load_series, main, plot_traces
from txutp.simulator import LinkConfig, Network, StreamApp
from txutp.trace import TraceWriter, read_trace, summarize, trace_directory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIZE = 2_000_000


def simulated_transfer(directory: Path, *, seed: int = 1, size: int = SIZE) -> tuple[str, str]:
    """Send ``size`` bytes across a lossy 2 Mbit/s bottleneck (200 ms of buffer, 40 ms base RTT) in
    the simulator, both ends traced; return the sender's and the receiver's trace."""
    net = Network(seed=seed)
    client = net.add_host(("10.0.0.1", 6881))
    server = net.add_host(("10.0.0.2", 6881), accepting=True)
    net.link(client, server, LinkConfig(delay=0.02, jitter=0.002, loss=0.02, bandwidth=250_000, buffer=50_000))
    client.context.tracer_factory = trace_directory(directory, local=client.address)
    server.context.tracer_factory = trace_directory(directory, local=server.address)
    data = random.Random(seed).randbytes(size)
    received = StreamApp(b"", close_on_eof=True)
    server.on_accept = lambda conn: received
    client.attach(client.connect(server.address), StreamApp(data))
    net.run(until=600)
    assert bytes(received.received) == data
    [sender] = glob.glob(str(directory / "*-client.jsonl"))
    [receiver] = glob.glob(str(directory / "*-server.jsonl"))
    return sender, receiver


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    return simulated_transfer(tmp_path_factory.mktemp("traces"))


@pytest.fixture(scope="module")
def trace(traces):
    return traces[0]


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        data = f.read(24)
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_real_trace_has_losses_and_metrics(trace):
    """What the plot tests draw: a sender that lost and retransmitted packets, with every series filled."""
    _, events = read_trace(trace)
    summary = summarize(events)
    assert summary["retransmissions"] > 0 and summary["losses"] > 0
    series = load_series(trace)
    assert len(series.losses) == summary["losses"]
    assert len(series.retransmissions) == summary["retransmissions"]
    assert len(series.timeouts) == summary["timeouts"]
    assert len(series.metrics_t) > 100 and series.delay_t and series.srtt_t and series.rtt_t
    assert 0 < max(series.delay_us) <= 300_000  # the queue holds at most 200 ms, plus jitter
    assert all(0.04 <= rtt / 1000 < 1.0 for rtt in series.rtt)  # ms; the base RTT is 40 ms
    assert series.delivered[-1] == summary["bytes_acked"] == SIZE


def test_plot_renders_a_png(trace, tmp_path):
    output = tmp_path / "out.png"
    plot_traces([trace], output, title="one sender")
    width, height = png_size(output)
    assert (width, height) == (1200, 1000)
    assert output.stat().st_size > 30_000  # four panels of curves, not a blank canvas


def test_the_command_writes_trace_dot_png_by_default(trace, tmp_path):
    copy = tmp_path / "conn.jsonl"
    copy.write_bytes(Path(trace).read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "txutp.plot", str(copy)], capture_output=True, text=True, env=ENV, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'conn.png'}\n"
    png_size(tmp_path / "conn.png")


def test_several_traces_in_one_figure(traces, tmp_path):
    sender, receiver = traces
    output = tmp_path / "compare.png"
    assert main([sender, receiver, "-o", str(output), "--title", "both ends"]) == 0
    assert png_size(output) == (1200, 1000)
    assert output.stat().st_size > 30_000


def test_markers_are_labelled_lines_across_every_panel(trace, tmp_path, monkeypatch):
    """``markers`` (another flow's start and stop, say) add a dotted vertical line to each panel and a
    label on the first; the rest of the figure, legends included, is what it was without them."""
    from matplotlib.figure import Figure

    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: drawn.append(figure))  # no rendering
    plot_traces([trace], tmp_path / "plain.png")
    plot_traces([trace], tmp_path / "marked.png", markers=[(2.0, "TCP starts"), (4.5, "TCP stops")])
    plain, marked = drawn

    def vertical(ax):
        return sorted(
            float(line.get_xdata()[0])
            for line in ax.get_lines()
            if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]
        )

    def legend(ax):
        return [t.get_text() for t in ax.get_legend().get_texts()]

    assert len(marked.axes) == len(plain.axes) == 4
    for before, after in zip(plain.axes, marked.axes):
        assert vertical(before) == [] and vertical(after) == [2.0, 4.5]
        assert all(line.get_linestyle() == ":" for line in after.get_lines()[-2:])
        assert legend(before) == legend(after)
        assert after.get_xlim() == before.get_xlim()
    assert [t.get_text() for t in marked.axes[0].texts] == ["TCP starts", "TCP stops"]
    assert all(not ax.texts for ax in [*plain.axes, *marked.axes[1:]])


def test_without_matplotlib_one_clear_line_and_status_2(trace, tmp_path):
    code = (
        "import sys, runpy; sys.modules['matplotlib'] = None; "
        f"sys.argv = ['txutp.plot', {trace!r}, '-o', {str(tmp_path / 'x.png')!r}]; "
        "runpy.run_module('txutp.plot', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=False)
    assert result.returncode == 2
    assert result.stderr == MISSING_MATPLOTLIB + "\n"
    assert "pip install 'txutp[plot]'" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_malformed_trace_is_reported_with_its_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"trace": "txutp", "version": 1}) + '\n{"t": 0, "name": "a"}\n{oops\n', encoding="utf-8")
    assert main([str(bad), "-o", str(tmp_path / "bad.png")]) == 1
    assert f"{bad}:3:" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.jsonl")]) == 1


def test_a_receivers_goodput_comes_from_bytes_received(tmp_path):
    path = str(tmp_path / "receiver.jsonl")
    w = TraceWriter(path, local="a", peer="b", recv_id=1, send_id=2, initiator=False, start=0.0)
    for i in range(101):
        w.metrics(i * 0.01 + 0.003, cwnd=4000, in_flight=0, bytes_acked=0, bytes_received=i * 12_500)
    w.close(1.0)
    series = load_series(path)
    grid, rates = goodput(series.delivered_t, series.delivered, 0.1)
    steady = [r for t, r in zip(grid, rates) if 0.2 <= t <= 0.9]
    assert steady and all(r == pytest.approx(10.0) for r in steady)  # 12.5 kB / 10 ms = 10 Mbit/s


def test_goodput_over_a_sliding_window():
    times = [0.0, 1.0, 2.0, 3.0]
    delivered = [0.0, 125_000.0, 250_000.0, 250_000.0]
    grid, rates = goodput(times, delivered, 1.0)
    assert grid[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]
    by_time = dict(zip(grid, rates))
    assert by_time[1.0] == pytest.approx(1.0)  # 125 kB in the second before t=1: 1 Mbit/s
    assert by_time[2.0] == pytest.approx(1.0)
    assert by_time[3.0] == pytest.approx(0.0)
    assert goodput([], [], 1.0) == ([], [])
