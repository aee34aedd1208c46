"""Events a connection reports to the layer above, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from ._icmp import PathError

__all__ = [
    "Connected",
    "ConnectionAborted",
    "ConnectionClosed",
    "ConnectionReset",
    "ConnectionTerminated",
    "ConnectionTimedOut",
    "DataReceived",
    "EndOfStream",
    "Event",
    "PeerUnreachable",
    "Writable",
]


class Event:
    """Base class of connection events. Do not subclass outside txutp."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Connected(Event):
    """The handshake finished: the connection is established."""


@dataclass(frozen=True, slots=True)
class DataReceived(Event):
    """In-order bytes from the peer (coalesced per batch)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfStream(Event):
    """The peer closed its write side (its FIN) and every byte before it arrived."""


@dataclass(frozen=True, slots=True)
class Writable(Event):
    """The send buffer, which had filled up, drained below its low-water mark."""


@dataclass(frozen=True, slots=True)
class ConnectionTerminated(Event):
    """Base class of the events that end a connection; no event follows one."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed(ConnectionTerminated):
    """Clean end: our data and FIN were acknowledged (and the peer's EOF seen, or we closed reading)."""


@dataclass(frozen=True, slots=True)
class ConnectionReset(ConnectionTerminated):
    """The peer sent RESET. ``refused`` is true when it answered our SYN."""

    refused: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionTimedOut(ConnectionTerminated):
    """The peer stopped answering (handshake or retransmissions exhausted).

    ``path_error`` is the last ICMP error reported about the connection, if any.
    """

    during_handshake: bool = False
    path_error: PathError | None = None


@dataclass(frozen=True, slots=True)
class PeerUnreachable(ConnectionTerminated):
    """The network said our SYN cannot reach the peer (an ICMP error; see ``_icmp.py``).

    ``error.kind`` is ``REFUSED`` (nothing listens: port unreachable) or ``UNREACHABLE``.
    """

    error: PathError


@dataclass(frozen=True, slots=True)
class ConnectionAborted(ConnectionTerminated):
    """We aborted the connection (a RESET was sent)."""
