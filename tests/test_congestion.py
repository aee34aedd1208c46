"""The congestion-control package (``txutp.engine.congestion``): the interface, the registry, the statistics record.

The controllers have their own tests: ``test_ledbat.py`` and ``test_reno.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import STATE, packet
from txutp.engine import (
    LEDBAT,
    CongestionController,
    CongestionStats,
    UTPConfig,
    UTPContext,
    congestion,
    create_congestion_controller,
    decode_packet,
    register_congestion_controller,
)
from txutp.engine._packet import ST_DATA

MSS = 1000


# ---------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, so registrations do not leak into other tests."""
    monkeypatch.setattr(congestion, "_REGISTRY", dict(congestion._REGISTRY))
    return congestion._REGISTRY


def test_the_engine_registers_ledbat_and_reno():
    cc = create_congestion_controller("ledbat", mss=MSS, initial_cwnd=4 * MSS, max_cwnd=100 * MSS, config=UTPConfig())
    assert type(cc) is LEDBAT
    assert type(create_congestion_controller("reno", mss=MSS, initial_cwnd=MSS, max_cwnd=MSS)).__name__ == "RenoWindow"


def test_the_registry_module_knows_no_implementation():
    """``congestion/__init__.py`` imports none of the controllers: each registers itself."""
    tree = ast.parse(Path(congestion.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names]
    assert not {"ledbat", "reno", "delay"} & {part for name in imported if name for part in name.split(".")}


def test_unknown_controller_names_the_known_ones():
    with pytest.raises(ValueError, match="nope") as info:
        create_congestion_controller("nope", mss=MSS, initial_cwnd=MSS, max_cwnd=MSS)
    assert "ledbat" in str(info.value) and "reno" in str(info.value)


def test_unknown_controller_in_config_fails_at_connect(registry):
    ctx = UTPContext(UTPConfig(congestion_control="nope"))
    with pytest.raises(ValueError, match="ledbat"):
        ctx.connect(("10.0.0.2", 1), 0.0)


def test_controller_interface_is_abstract():
    with pytest.raises(TypeError):
        CongestionController()  # type: ignore[abstract]


class FixedWindow(CongestionController):
    """A custom controller: a constant window, recording what it is told."""

    def __init__(self, *, mss: int, initial_cwnd: int, max_cwnd: int, config: UTPConfig) -> None:
        self.cwnd = mss
        self.kwargs = {"mss": mss, "initial_cwnd": initial_cwnd, "max_cwnd": max_cwnd, "config": config}
        self.calls: list[str] = []

    def on_ack(self, *, now, acked_bytes, in_flight, delay_us, rtt, window_limited, **_) -> None:
        self.calls.append("ack")

    def on_loss(self, *, now, rtt) -> None:
        self.calls.append("loss")

    def on_timeout(self, *, now, idle) -> None:
        self.calls.append("timeout")


def test_register_custom_controller(registry):
    register_congestion_controller("fixed", FixedWindow)
    config = UTPConfig()
    cc = create_congestion_controller("fixed", mss=MSS, initial_cwnd=5, max_cwnd=7, config=config)
    assert isinstance(cc, FixedWindow)
    assert cc.kwargs == {"mss": MSS, "initial_cwnd": 5, "max_cwnd": 7, "config": config}
    assert cc.stats() == CongestionStats()  # the default: nothing to report
    # The unknown-name message now lists it too.
    with pytest.raises(ValueError, match="fixed"):
        create_congestion_controller("nope")


def test_registration_does_not_leak(registry):
    assert "fixed" not in registry


def test_connection_uses_the_configured_controller(registry):
    register_congestion_controller("fixed", FixedWindow)
    config = UTPConfig(congestion_control="fixed")
    scripted = iter([100, 5000])  # recv_id, then ISN
    ctx = UTPContext(config, random_bits=lambda k: next(scripted))
    peer = ("10.0.0.2", 6881)
    conn = ctx.connect(peer, 0.0)
    assert isinstance(conn.cc, FixedWindow)
    assert conn.cc.kwargs["mss"] == conn.mss
    assert conn.cc.kwargs["max_cwnd"] == config.send_buffer_size
    assert conn.cc.kwargs["initial_cwnd"] == config.initial_cwnd
    assert conn.cc.kwargs["config"] is config
    ctx.datagrams_to_send(0.0)
    synack = packet(STATE, 100, 9000, 5000, ts=1)
    ctx.receive_datagram(synack, peer, 0.1)
    ctx.datagrams_to_send(0.1)
    # A one-mss window: of five packets' worth, one goes out.
    conn.send(b"x" * (5 * conn.mss), 0.2)
    data = [p for p in (decode_packet(d) for d, _ in ctx.datagrams_to_send(0.2)) if p.type == ST_DATA]
    assert len(data) == 1
    assert len(data[0].payload) == conn.mss
    # Its ACK reaches the controller, and the next packet follows.
    ack_pkt = packet(STATE, 100, 9000, data[0].seq_nr, ts=2)
    ctx.receive_datagram(ack_pkt, peer, 0.3)
    assert conn.cc.calls == ["ack"]
    data = [p for p in (decode_packet(d) for d, _ in ctx.datagrams_to_send(0.3)) if p.type == ST_DATA]
    assert len(data) == 1


def test_connection_stats_carry_the_controllers_record():
    ctx = UTPContext(UTPConfig(congestion_control="reno"))
    stats = ctx.connect(("10.0.0.2", 1), 0.0).stats()
    assert stats.congestion == CongestionStats(ssthresh=stats.congestion.ssthresh, slow_start=True, loss_reductions=0)
    assert stats.current_delay_us is None and stats.base_delay_us is None  # a loss-based controller measures none
    ledbat = UTPContext().connect(("10.0.0.2", 1), 0.0).stats().congestion
    assert (ledbat.slow_start, ledbat.delay_samples, ledbat.current_delay_us, ledbat.base_delay_us) == (
        True,
        0,
        None,
        None,
    )


def test_congestion_stats_as_a_dictionary():
    record = CongestionStats(ssthresh=5, slow_start=False)
    assert record.as_dict() == {
        "ssthresh": 5,
        "slow_start": False,
        "current_delay_us": None,
        "base_delay_us": None,
        "delay_samples": None,
        "slowdowns": None,
        "loss_reductions": None,
    }
