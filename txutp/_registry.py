"""The registry of UDP ports per reactor, through which endpoints share sockets.

A uTP server on port 6881 and the clients that bind 6881 use one socket, as
BitTorrent clients do; clients without a bind address share one ephemeral
socket per interface and configuration. Each socket is a
:class:`~txutp.UTPMultiplexer` over a :func:`~txutp.listenUTP` port, registered
under ``(reactor, interface, port)`` until it closes, which it does by itself
once nothing uses it (``closeWhenUnused``). At reactor shutdown each lets its
closing connections finish (:meth:`~txutp.UTPMultiplexer.finishClosing`, for
at most ``config.shutdown_grace`` seconds), then closes at once if nothing
else uses it, rather than after its lingering connections.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.protocol import DatagramProtocol

from ._multiplexer import Reactor, UTPMultiplexer
from ._udp import listenUTP
from .engine import UTPConfig

__all__ = ["acquireMultiplexer", "activeMetrics", "activeMultiplexers", "ephemeralMultiplexer"]

_registry: dict[tuple[Any, str, int], UTPMultiplexer] = {}
_ephemeral: dict[tuple[Any, str, UTPConfig | None], UTPMultiplexer] = {}


def _normalizeInterface(interface: str) -> str:
    return "0.0.0.0" if interface == "" else interface


def acquireMultiplexer(
    reactor: Reactor,
    interface: str,
    port: int,
    config: UTPConfig | None = None,
    datagramProtocol: DatagramProtocol | None = None,
) -> UTPMultiplexer:
    """Return the live multiplexer bound to ``(interface, port)`` on ``reactor``, creating (binding) it if needed.

    ``port`` 0 binds a fresh port. A multiplexer found in the registry keeps its
    configuration; asking for a different ``config`` or ``datagramProtocol`` for
    it raises ``ValueError``. The caller must start using it at once
    (listen, connect or :meth:`~txutp.UTPMultiplexer.hold`), or it closes at the next flush.
    """
    interface = _normalizeInterface(interface)
    if not (isIPAddress(interface) or isIPv6Address(interface)):
        raise ValueError(f"interface must be an IP address literal, not {interface!r}")
    if port:
        mux = _registry.get((reactor, interface, port))
        if mux is not None and not mux.closing:
            if config is not None and config != mux.config:
                raise ValueError(f"the uTP port {interface}:{port} is already open with a different UTPConfig")
            if datagramProtocol is not None and datagramProtocol is not mux.datagramProtocol:
                raise ValueError(f"the uTP port {interface}:{port} already has another datagram protocol")
            return mux
    mux = UTPMultiplexer(reactor, config, datagramProtocol=datagramProtocol, closeWhenUnused=True)
    udpPort = listenUTP(reactor, port, mux, interface)
    key = (reactor, interface, int(udpPort.getHost().port))
    _registry[key] = mux
    mux.whenClosed().addCallback(lambda _: _registry.pop(key, None) if _registry.get(key) is mux else None)
    return mux


def ephemeralMultiplexer(reactor: Reactor, interface: str, config: UTPConfig | None) -> UTPMultiplexer:
    """The shared client socket on an ephemeral port for ``(reactor, interface, config)``."""
    interface = _normalizeInterface(interface)
    key = (reactor, interface, config)
    mux = _ephemeral.get(key)
    if mux is None or mux.closing:
        mux = acquireMultiplexer(reactor, interface, 0, config)
        _ephemeral[key] = mux
        mux.whenClosed().addCallback(lambda _: _ephemeral.pop(key, None) if _ephemeral.get(key) is mux else None)
    return mux


def activeMultiplexers(reactor: Reactor | None = None) -> list[UTPMultiplexer]:
    """The open multiplexers (of ``reactor``, or of every reactor)."""
    return [m for (r, _, _), m in _registry.items() if reactor is None or r is reactor]


def activeMetrics(reactor: Reactor | None = None) -> dict[str, Any]:
    """:meth:`UTPMultiplexer.metrics` added up over the open multiplexers (of ``reactor``, or all).

    Numbers are summed, mappings of numbers summed key by key; what a twistd
    deployment serves to Prometheus (``twistd utp --metrics``, ``txutp.prometheus``).
    """
    total: dict[str, Any] = {}
    for mux in activeMultiplexers(reactor):
        for key, value in mux.metrics().items():
            if isinstance(value, dict):
                inner = total.setdefault(key, {})
                for name, count in value.items():
                    inner[name] = inner.get(name, 0) + count
            else:
                total[key] = total.get(key, 0) + value
    return total
