"""txutp: uTP (BEP 29, the micro transport protocol) as a Twisted transport.

The protocol engine lives in :mod:`txutp.engine` (pure, no Twisted) and the
network simulator in :mod:`txutp.simulator`. Importing :mod:`txutp` imports
neither Twisted nor the reactor.
"""

from ._version import __version__
from .engine import UTPConfig

__all__ = ["UTPConfig", "__version__"]
