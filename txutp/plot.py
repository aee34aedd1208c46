"""Plots of connection traces: ``python -m txutp.plot TRACE [TRACE ...] [-o out.png] [--title TEXT]``.

Four panels on one time axis (seconds since each trace's start): the congestion
window and bytes in flight (KiB); the queueing delay against LEDBAT's target
(ms); RTT samples and the smoothed RTT (ms); goodput (Mbit/s, over a sliding
window, from the bytes the peer acknowledged or, for a receiver, the bytes
received in order). Losses and timeouts are vertical lines on every panel,
retransmissions ticks along its top edge. Several traces share one figure, each
in its own colour. From Python, :func:`plot_traces` can also mark moments
(``markers``: another flow's start and stop, say) with labelled vertical lines.

matplotlib is an optional extra (``pip install 'txutp[plot]'``), imported only
when a plot is drawn, without pyplot (the Agg canvas; no display needed).
"""

from __future__ import annotations

import argparse
import os
import sys
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .trace import read_trace

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["MISSING_MATPLOTLIB", "TraceSeries", "goodput", "load_series", "main", "plot_traces"]

#: The line printed (to stderr, exit status 2) when matplotlib is not installed.
MISSING_MATPLOTLIB = "txutp.plot needs matplotlib: pip install 'txutp[plot]'"

_KIB = 1024.0
#: Colours of the marks for one trace; with several, each trace's marks take its own colour.
_MARK_STYLES: dict[str, tuple[str, Literal["-", ":", "--"]]] = {
    "loss": ("tab:red", "-"),
    "retransmission": ("tab:orange", "-"),
    "timeout": ("black", "--"),
}
#: The colour of the ``markers`` of :func:`plot_traces`.
_MARKER_COLOUR = "tab:purple"


@dataclass
class TraceSeries:
    """What one trace holds, as time series (times in seconds since its start)."""

    path: str
    label: str
    target_delay_us: int
    metrics_t: list[float] = field(default_factory=list)
    cwnd: list[float] = field(default_factory=list)
    in_flight: list[float] = field(default_factory=list)
    #: Queueing delay (``current_delay_us``) where it was known.
    delay_t: list[float] = field(default_factory=list)
    delay_us: list[float] = field(default_factory=list)
    srtt_t: list[float] = field(default_factory=list)
    srtt: list[float] = field(default_factory=list)
    rtt_t: list[float] = field(default_factory=list)
    rtt: list[float] = field(default_factory=list)
    #: Cumulative payload bytes delivered: acknowledged by the peer, or received in order.
    delivered_t: list[float] = field(default_factory=list)
    delivered: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    retransmissions: list[float] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)
    duration: float = 0.0


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def load_series(path: str) -> TraceSeries:
    """Read the trace at ``path`` into a :class:`TraceSeries` (``ValueError`` for a malformed trace)."""
    header, events = read_trace(path)
    connection = header.get("connection") or {}
    label = os.path.basename(path)
    if isinstance(connection, dict) and connection.get("local") and connection.get("peer"):
        label += f" ({connection['local']} \u2192 {connection['peer']})"
    target = _number(header.get("target_delay_us"))
    series = TraceSeries(path=path, label=label, target_delay_us=int(target if target is not None else 100_000))
    acked_t: list[float] = []
    acked: list[float] = []
    received_t: list[float] = []
    received: list[float] = []
    for event in events:
        t = float(event["t"])
        series.duration = max(series.duration, t)
        name = event["name"]
        if name == "metrics":
            cwnd, in_flight = _number(event.get("cwnd")), _number(event.get("in_flight"))
            if cwnd is not None and in_flight is not None:
                series.metrics_t.append(t)
                series.cwnd.append(cwnd / _KIB)
                series.in_flight.append(in_flight / _KIB)
            delay = _number(event.get("current_delay_us"))
            if delay is not None:
                series.delay_t.append(t)
                series.delay_us.append(delay)
            srtt = _number(event.get("srtt"))
            if srtt is not None:
                series.srtt_t.append(t)
                series.srtt.append(srtt * 1000.0)
            value = _number(event.get("bytes_acked"))
            if value is not None:
                acked_t.append(t)
                acked.append(value)
            value = _number(event.get("bytes_received"))
            if value is not None:
                received_t.append(t)
                received.append(value)
        elif name == "rtt_sample":
            rtt = _number(event.get("rtt"))
            if rtt is not None:
                series.rtt_t.append(t)
                series.rtt.append(rtt * 1000.0)
        elif name == "loss":
            series.losses.append(t)
        elif name == "packet_sent" and event.get("retransmit"):
            series.retransmissions.append(t)
        elif name == "timeout":
            series.timeouts.append(t)
    # A sender's goodput is what the peer acknowledged; a receiver's, what arrived in order.
    if (acked[-1] if acked else 0.0) >= (received[-1] if received else 0.0):
        series.delivered_t, series.delivered = acked_t, acked
    else:
        series.delivered_t, series.delivered = received_t, received
    return series


def goodput(times: Sequence[float], delivered: Sequence[float], window: float) -> tuple[list[float], list[float]]:
    """Goodput in Mbit/s over the ``window`` seconds before each point of a regular grid (step ``window / 4``),
    from cumulative byte counts ``delivered`` sampled at ``times`` (a step function between samples)."""
    if not times or window <= 0:
        return [], []

    def at(t: float) -> float:
        i = bisect_right(times, t)
        return delivered[i - 1] if i else 0.0

    step = window / 4
    grid: list[float] = []
    rates: list[float] = []
    for i in range(int(times[-1] / step) + 2):
        t = i * step
        grid.append(t)
        rates.append((at(t) - at(t - window)) * 8 / window / 1e6)
    return grid, rates


def _import_matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(MISSING_MATPLOTLIB) from e
    del matplotlib
    return Figure


def _mark_times(series: TraceSeries) -> dict[str, list[float]]:
    return {"loss": series.losses, "retransmission": series.retransmissions, "timeout": series.timeouts}


def _marks(ax: Axes, series: TraceSeries, colour: str | None) -> None:
    """Losses and timeouts as lines across the panel, retransmissions as ticks along its top edge
    (a retransmission often follows its loss at once: a tick stays visible beside the line)."""
    for kind, times, bottom, width in (
        ("loss", series.losses, 0.0, 0.8),
        ("timeout", series.timeouts, 0.0, 1.5),
        ("retransmission", series.retransmissions, 0.88, 2.5),
    ):
        if not times:
            continue
        kind_colour, style = _MARK_STYLES[kind]
        ax.vlines(
            times,
            bottom,
            1,
            transform=ax.get_xaxis_transform(),
            colors=colour or kind_colour,
            linestyles=style,
            linewidth=width,
            alpha=0.6,
        )


def _legend(ax: Axes, entries: list[tuple[str, dict[str, Any]]]) -> None:
    """A legend beside the panel (never over the curves), from ``(label, Line2D keywords)`` entries."""
    from matplotlib.lines import Line2D

    handles, _ = ax.get_legend_handles_labels()  # the target lines
    handles += [Line2D([], [], label=label, **style) for label, style in entries]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)


def _mark_entries(all_series: Sequence[TraceSeries], several: bool) -> list[tuple[str, dict[str, Any]]]:
    entries = []
    for kind, label, linewidth in (
        ("loss", "loss", 0.8),
        ("retransmission", "retransmission (tick)", 2.5),
        ("timeout", "timeout", 1.5),
    ):
        if any(_mark_times(s)[kind] for s in all_series):
            colour, style = _MARK_STYLES[kind]
            entries.append(
                (label, {"color": "grey" if several else colour, "linestyle": style, "linewidth": linewidth})
            )
    return entries


def plot_traces(
    paths: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    title: str | None = None,
    *,
    markers: Sequence[tuple[float, str]] = (),
) -> None:
    """Draw the traces at ``paths`` into one figure saved at ``output`` (its format from the suffix: PNG, SVG, PDF).

    ``markers`` are ``(time, label)`` pairs, times on the figure's axis (seconds since each trace's
    start): each is a dotted vertical line across every panel, labelled at the top of the first
    (when another flow started or stopped, say).

    Raises ``ImportError`` (with :data:`MISSING_MATPLOTLIB`) without matplotlib, ``ValueError`` for a
    malformed trace and ``OSError`` for a file that cannot be read or written.
    """
    if not paths:
        raise ValueError("no trace to plot")
    figure_class = _import_matplotlib()
    all_series = [load_series(os.fspath(p)) for p in paths]
    several = len(all_series) > 1
    figure = figure_class(figsize=(12, 10), layout="constrained")
    axes = figure.subplots(4, 1, sharex=True)
    window_ax, delay_ax, rtt_ax, goodput_ax = axes
    colours = [f"C{i % 10}" for i in range(len(all_series))]
    duration = max(s.duration for s in all_series)
    window = max(duration / 50, 0.05)  # goodput's sliding window
    for target in sorted({s.target_delay_us for s in all_series}):
        delay_ax.axhline(
            target / 1000.0, color="grey", linestyle="--", linewidth=1, label=f"target {target / 1000:g} ms"
        )
    for series, colour in zip(all_series, colours):
        window_ax.step(series.metrics_t, series.cwnd, where="post", color=colour)
        window_ax.step(series.metrics_t, series.in_flight, where="post", color=colour, alpha=0.5, linestyle="-.")
        delay_ax.step(series.delay_t, [d / 1000.0 for d in series.delay_us], where="post", color=colour)
        rtt_ax.plot(series.rtt_t, series.rtt, ".", markersize=2, color=colour, alpha=0.4)
        rtt_ax.step(series.srtt_t, series.srtt, where="post", color=colour)
        goodput_ax.plot(*goodput(series.delivered_t, series.delivered, window), color=colour)
        for ax in axes:
            _marks(ax, series, colour if several else None)
    line = "grey" if several else colours[0]
    panels: list[tuple[Axes, str, str, list[tuple[str, dict[str, Any]]]]] = [
        (
            window_ax,
            "congestion window and bytes in flight",
            "KiB",
            [
                ("cwnd", {"color": line}),
                ("in flight", {"color": line, "alpha": 0.5, "linestyle": "-."}),
                *_mark_entries(all_series, several),
            ],
        ),
        (
            delay_ax,
            "queueing delay (one-way delay above the base delay)",
            "ms",
            [("queueing delay", {"color": line})],
        ),
        (
            rtt_ax,
            "round-trip time",
            "ms",
            [
                ("RTT sample", {"color": line, "marker": ".", "linestyle": "none"}),
                ("smoothed RTT", {"color": line}),
            ],
        ),
        (goodput_ax, "goodput", "Mbit/s", [(f"over {window * 1000:.0f} ms", {"color": line})]),
    ]
    for when, text in markers:
        for ax in axes:
            ax.axvline(when, color=_MARKER_COLOUR, linestyle=":", linewidth=1.5)
        window_ax.annotate(
            text,
            xy=(when, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize="small",
            color=_MARKER_COLOUR,
        )
    for ax, heading, unit, entries in panels:
        ax.set_title(heading, fontsize="medium", loc="left")
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        _legend(ax, entries)
    goodput_ax.set_xlabel("time since the connection's start (s)")
    goodput_ax.set_xlim(0, max(duration, 1e-3))
    if several:
        from matplotlib.lines import Line2D

        figure.legend(
            handles=[Line2D([], [], color=c, linewidth=3, label=s.label) for s, c in zip(all_series, colours)],
            loc="outside lower center",
            fontsize="small",
        )
    if title is None:
        title = f"{len(all_series)} traces" if several else all_series[0].label
    figure.suptitle(title)
    figure.savefig(os.fspath(output), dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0, 1 for a bad or missing trace, 2 without matplotlib)."""
    parser = argparse.ArgumentParser(
        prog="python -m txutp.plot", description="Plot txutp connection traces (JSON lines) into one figure."
    )
    parser.add_argument("traces", nargs="+", metavar="TRACE", help="a trace file written by txutp")
    parser.add_argument("-o", "--output", help="the image to write (default: the first TRACE with .png)")
    parser.add_argument("--title", help="the figure's title (default: the trace's name)")
    args = parser.parse_args(argv)
    output = args.output or os.path.splitext(args.traces[0])[0] + ".png"
    try:
        plot_traces(args.traces, output, title=args.title)
    except ImportError as e:
        if str(e) != MISSING_MATPLOTLIB:
            raise
        print(MISSING_MATPLOTLIB, file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"txutp.plot: {e}", file=sys.stderr)
        return 1
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
