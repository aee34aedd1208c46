"""txutp: uTP (BEP 29, the micro transport protocol) as a Twisted transport.

The protocol engine lives in :mod:`txutp.engine` (pure, no Twisted) and the
network simulator in :mod:`txutp.simulator`. Importing :mod:`txutp` imports
neither Twisted nor the reactor: the Twisted-facing names
(:class:`UTPServerEndpoint`, :class:`UTPClientEndpoint`, :class:`UTPTransport`,
:class:`UTPMultiplexer`) are loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .engine import UTPConfig

if TYPE_CHECKING:
    from ._multiplexer import UTPMultiplexer
    from .endpoints import UTPClientEndpoint, UTPServerEndpoint
    from .transport import UTPTransport

__all__ = [
    "UTPClientEndpoint",
    "UTPConfig",
    "UTPMultiplexer",
    "UTPServerEndpoint",
    "UTPTransport",
    "__version__",
]

_LAZY = {
    "UTPServerEndpoint": "txutp.endpoints",
    "UTPClientEndpoint": "txutp.endpoints",
    "UTPTransport": "txutp.transport",
    "UTPMultiplexer": "txutp._multiplexer",
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
