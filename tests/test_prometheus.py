"""``txutp.prometheus``: a metrics mapping, read through prometheus_client's own registry and text exposition."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from txutp.prometheus import GAUGES, MISSING_PROMETHEUS_CLIENT, UTPCollector, metrics_resource

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Server:
    """A stand-in for a running server: its ``metrics()`` mapping, changed by the test."""

    def __init__(self):
        self.values = {
            "datagrams_received": 1234,
            "datagrams_sent": 1200,
            "bytes_received": 1_700_000,
            "connections": 3,
            "half_open": 1,
            "listening": 1,
            "bytes_in_flight": 42_000,
            "drops": {"malformed": 3, "unknown_connection": 7},
            "connections_by_state": {"connected": 2, "syn_recv": 1},
            "syns_refused_total": 4,
            "smoothed": 0.125,
            "not_measured_yet": None,
            "resets_by_reason": {"rate_limit": None, "memory": 2},
        }
        self.calls = 0

    def metrics(self):
        self.calls += 1
        return self.values


@pytest.fixture
def server():
    return Server()


@pytest.fixture
def registry(server):
    registry = CollectorRegistry()
    registry.register(UTPCollector(server.metrics))
    return registry


def test_flat_counters_and_gauges(registry):
    assert registry.get_sample_value("txutp_datagrams_received_total") == 1234
    assert registry.get_sample_value("txutp_datagrams_sent_total") == 1200
    assert registry.get_sample_value("txutp_bytes_received_total") == 1_700_000
    assert registry.get_sample_value("txutp_syns_refused_total") == 4  # a "_total" key is not doubled
    assert registry.get_sample_value("txutp_smoothed_total") == 0.125
    assert registry.get_sample_value("txutp_connections") == 3
    assert registry.get_sample_value("txutp_half_open") == 1
    assert registry.get_sample_value("txutp_listening") == 1
    assert registry.get_sample_value("txutp_bytes_in_flight") == 42_000


def test_the_kind_of_each_family_follows_the_documented_rule(registry, server):
    kinds = {family.name: family.type for family in registry.collect()}
    for key, value in server.values.items():
        if value is None:
            continue
        name = "txutp_" + (key[: -len("_total")] if key.endswith("_total") else key)
        assert kinds[name] == ("gauge" if key in GAUGES else "counter"), key
    assert "txutp_not_measured_yet" not in kinds and "txutp_not_measured_yet_total" not in kinds


def test_nested_mappings_are_one_labelled_family(registry):
    assert registry.get_sample_value("txutp_drops_total", {"kind": "malformed"}) == 3
    assert registry.get_sample_value("txutp_drops_total", {"kind": "unknown_connection"}) == 7
    assert registry.get_sample_value("txutp_connections_by_state", {"state": "connected"}) == 2
    assert registry.get_sample_value("txutp_connections_by_state", {"state": "syn_recv"}) == 1
    assert registry.get_sample_value("txutp_resets_by_reason_total", {"reason": "memory"}) == 2
    assert registry.get_sample_value("txutp_resets_by_reason_total", {"reason": "rate_limit"}) is None


def test_every_scrape_reads_the_source_again(registry, server):
    server.values["datagrams_received"] = 5000
    server.values["connections_by_state"] = {"connected": 9}
    assert registry.get_sample_value("txutp_datagrams_received_total") == 5000
    assert registry.get_sample_value("txutp_connections_by_state", {"state": "connected"}) == 9
    assert registry.get_sample_value("txutp_connections_by_state", {"state": "syn_recv"}) is None


def test_more_gauges_can_be_named(server):
    registry = CollectorRegistry()
    registry.register(UTPCollector(server.metrics, gauges=["smoothed"]))
    assert registry.get_sample_value("txutp_smoothed") == 0.125
    assert registry.get_sample_value("txutp_smoothed_total") is None


def test_the_exposition_parses_back(registry, server):
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert families["txutp_datagrams_received"].type == "counter"
    assert families["txutp_connections"].type == "gauge"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in families["txutp_drops"].samples}
    assert samples == {
        ("txutp_drops_total", (("kind", "malformed"),)): 3,
        ("txutp_drops_total", (("kind", "unknown_connection"),)): 7,
    }


def test_a_name_clash_with_another_collector_is_refused(server):
    """describe() gives the registry the names, so two collectors of one server cannot both register."""
    registry = CollectorRegistry()
    registry.register(UTPCollector(server.metrics))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(UTPCollector(server.metrics))


def test_the_web_resource_serves_the_text_exposition(server):
    root = Resource()
    root.putChild(b"metrics", metrics_resource(server.metrics))
    request = DummyRequest([b"metrics"])
    page = getChildForRequest(root, request)
    calls = server.calls
    body = page.render(request)
    assert server.calls == calls + 1
    text = body.decode("utf-8")
    assert "# TYPE txutp_datagrams_received_total counter" in text
    assert "txutp_datagrams_received_total 1234.0" in text
    assert "# TYPE txutp_connections gauge" in text
    assert 'txutp_connections_by_state{state="connected"} 2.0' in text
    assert 'txutp_drops_total{kind="malformed"} 3.0' in text
    content_type = request.responseHeaders.getRawHeaders(b"content-type")
    assert content_type and content_type[0].startswith(b"text/plain")


def test_without_prometheus_client_the_error_names_the_extra():
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from txutp.prometheus import UTPCollector, metrics_resource\n"
        "for make in (UTPCollector, metrics_resource):\n"
        "    try:\n"
        "        make(dict)\n"
        "    except ImportError as e:\n"
        "        print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{MISSING_PROMETHEUS_CLIENT}\n" * 2
    assert "pip install 'txutp[prometheus]'" in MISSING_PROMETHEUS_CLIENT
