"""The old home of the congestion-control interface, kept as an alias of :mod:`txutp.engine.congestion`.

Nothing in txutp imports it; it goes once nothing outside does.
"""

from __future__ import annotations

from .congestion import (
    CongestionController,
    CongestionStats,
    create_congestion_controller,
    register_congestion_controller,
)

__all__ = [
    "CongestionController",
    "CongestionStats",
    "create_congestion_controller",
    "register_congestion_controller",
]
