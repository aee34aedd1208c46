"""A Prometheus collector for a running txutp server's metrics, and a Twisted web resource serving it.

:class:`UTPCollector` turns a metrics mapping (from a callable, read at every
scrape) into Prometheus metric families, named ``txutp_<key>``:

* a number is one metric; a mapping of numbers is one family with a label
  (``{"drops": {"malformed": 3}}`` is ``txutp_drops_total{kind="malformed"} 3``);
  the label is named after a ``_by_<label>`` suffix of the key
  (``connections_by_state`` gives ``state="connected"``), ``kind`` otherwise;
* a key is a **gauge** (a level that goes up and down) when it is in
  :data:`GAUGES` or in the collector's ``gauges`` argument; every other key is
  a **counter** (a total since the server started, exposed with the
  ``_total`` suffix);
* values that are not numbers (``None`` before a first measurement) are left out.

prometheus_client is an optional extra (``pip install 'txutp[prometheus]'``),
imported when a collector is made. :func:`metrics_resource` is a
``twisted.web`` resource rendering the text exposition, to put in any Site
(a twistd ``.tac`` file, say).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["GAUGES", "MISSING_PROMETHEUS_CLIENT", "MetricsSource", "UTPCollector", "metrics_resource"]

#: The message of the ``ImportError`` raised without prometheus_client.
MISSING_PROMETHEUS_CLIENT = "txutp.prometheus needs prometheus_client: pip install 'txutp[prometheus]'"

#: A metrics mapping: flat numbers, and mappings of numbers that become one labelled family.
MetricsSource = Callable[[], Mapping[str, Any]]

#: Keys that are gauges (levels); every other key is a counter (a running total).
GAUGES = frozenset(
    {
        "connections",
        "connections_by_state",
        "half_open",
        "listening",
        "bytes_in_flight",
        "rcvbuf",
        "sndbuf",
    }
)

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def _require_prometheus_client() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError as e:
        raise ImportError(MISSING_PROMETHEUS_CLIENT) from e


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float))


def _label_name(key: str) -> str:
    _, by, label = key.rpartition("_by_")
    return label if by and label else "kind"


class UTPCollector:
    """A prometheus_client custom collector of the metrics mapping ``source()`` returns at each scrape.

    Register it with a ``CollectorRegistry`` (``registry.register(UTPCollector(source))``);
    registering calls ``source`` once, for :meth:`describe`. ``gauges`` adds keys to :data:`GAUGES`.
    """

    def __init__(self, source: MetricsSource, *, gauges: Iterable[str] = (), prefix: str = "txutp_") -> None:
        _require_prometheus_client()
        self.source = source
        self.gauges = GAUGES | frozenset(gauges)
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        """One metric family per key of the current mapping, in its order."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for key, value in self.source().items():
            name = self.prefix + _INVALID.sub("_", key)
            gauge = key in self.gauges
            documentation = f"txutp {key.replace('_', ' ')}" + ("" if gauge else " (total)")
            if isinstance(value, Mapping):
                label = _label_name(key)
                family = (GaugeMetricFamily if gauge else CounterMetricFamily)(name, documentation, labels=[label])
                for item, number in value.items():
                    if _is_number(number):
                        family.add_metric([str(item)], float(number))
                yield family
            elif _is_number(value):
                yield (GaugeMetricFamily if gauge else CounterMetricFamily)(name, documentation, value=float(value))

    def describe(self) -> Iterator[Metric]:
        """The families :meth:`collect` yields now (the registry checks names with them)."""
        return self.collect()


class _MetricsPage(Resource):
    """The Prometheus text exposition of one collector, on GET."""

    isLeaf = True

    def __init__(self, source: MetricsSource) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        collector = UTPCollector(source)  # first: the clear ImportError without prometheus_client
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry()
        self.registry.register(collector)

    def render_GET(self, request: IRequest) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


def metrics_resource(source: MetricsSource) -> Resource:
    """A ``twisted.web`` resource serving ``source()`` as Prometheus metrics (a private registry
    holding one :class:`UTPCollector`): ``root.putChild(b"metrics", metrics_resource(source))``."""
    return _MetricsPage(source)
