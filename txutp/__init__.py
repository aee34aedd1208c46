"""txutp: uTP (BEP 29, the micro transport protocol) as a Twisted transport.

The protocol engine lives in :mod:`txutp.engine` (pure, no Twisted) and the
network simulator in :mod:`txutp.simulator`. Importing :mod:`txutp` imports
neither Twisted nor the reactor: the Twisted-facing names
(:class:`UTPServerEndpoint`, :class:`UTPClientEndpoint`, :class:`UTPTransport`,
:class:`UTPMultiplexer`, :func:`listenUTP` and the port registry's
:func:`acquireMultiplexer`, :func:`activeMultiplexers` and :func:`activeMetrics`) are loaded on first
access. Carriers other than UDP are in :mod:`txutp.carriers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .engine import UTPConfig

if TYPE_CHECKING:
    from ._multiplexer import MultiplexerStats, UTPMultiplexer
    from ._registry import acquireMultiplexer, activeMetrics, activeMultiplexers
    from ._udp import listenUTP
    from .endpoints import UTPClientEndpoint, UTPServerEndpoint
    from .transport import UTPTransport

__all__ = [
    "MultiplexerStats",
    "UTPClientEndpoint",
    "UTPConfig",
    "UTPMultiplexer",
    "UTPServerEndpoint",
    "UTPTransport",
    "__version__",
    "acquireMultiplexer",
    "activeMetrics",
    "activeMultiplexers",
    "listenUTP",
]

_LAZY = {
    "UTPServerEndpoint": "txutp.endpoints",
    "UTPClientEndpoint": "txutp.endpoints",
    "UTPTransport": "txutp.transport",
    "UTPMultiplexer": "txutp._multiplexer",
    "MultiplexerStats": "txutp._multiplexer",
    "listenUTP": "txutp._udp",
    "acquireMultiplexer": "txutp._registry",
    "activeMultiplexers": "txutp._registry",
    "activeMetrics": "txutp._registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'txutp' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
