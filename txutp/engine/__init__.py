"""The sans-IO uTP engine: codec, connections, demultiplexer. No Twisted, no sockets, no clocks.

Every call takes ``now`` (seconds, any monotonic origin); datagrams to send and
timer deadlines are pulled by the caller. See ``docs/design.rst``.
"""

from ._config import MAX_DATAGRAM_IPV4, MAX_DATAGRAM_IPV6, UTPConfig
from ._connection import UTPConnection
from ._context import ENDED_COUNTERS, ConnectionIdInUse, ConnectionLimitError, UTPContext
from ._events import (
    Connected,
    ConnectionAborted,
    ConnectionClosed,
    ConnectionReset,
    ConnectionTerminated,
    ConnectionTimedOut,
    DataReceived,
    EndOfStream,
    Event,
    PeerUnreachable,
    Writable,
)
from ._icmp import PathError, PathErrorKind
from ._mtu import DontFragment, MTUSearch
from ._packet import Packet, PacketError, PacketType, decode_packet, encode_packet, is_utp_datagram
from ._rtt import RTTEstimator
from ._state import TRANSITIONS, ConnectionState, Input
from ._stats import ConnectionStats, ContextStats
from .congestion import (
    CongestionController,
    CongestionStats,
    create_congestion_controller,
    register_congestion_controller,
)
from .congestion.delay import DelayHistory
from .congestion.ledbat import LEDBAT

__all__ = [
    "ENDED_COUNTERS",
    "LEDBAT",
    "MAX_DATAGRAM_IPV4",
    "MAX_DATAGRAM_IPV6",
    "TRANSITIONS",
    "CongestionController",
    "CongestionStats",
    "Connected",
    "ConnectionAborted",
    "ConnectionClosed",
    "ConnectionIdInUse",
    "ConnectionLimitError",
    "ConnectionReset",
    "ConnectionState",
    "ConnectionStats",
    "ConnectionTerminated",
    "ConnectionTimedOut",
    "ContextStats",
    "DataReceived",
    "DelayHistory",
    "DontFragment",
    "EndOfStream",
    "Event",
    "Input",
    "MTUSearch",
    "Packet",
    "PacketError",
    "PacketType",
    "PathError",
    "PathErrorKind",
    "PeerUnreachable",
    "RTTEstimator",
    "UTPConfig",
    "UTPConnection",
    "UTPContext",
    "Writable",
    "create_congestion_controller",
    "decode_packet",
    "encode_packet",
    "is_utp_datagram",
    "register_congestion_controller",
]
