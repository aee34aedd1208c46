"""ICMP errors about our datagrams: what a carrier reports and what each may do.

A carrier that reads them (the UDP carrier on Linux, from the socket's error
queue) hands :meth:`~txutp.engine.UTPContext.path_error` the datagram the error
quotes, its destination and a :class:`PathError`. ICMP is unauthenticated, so
(RFC 5927) an error counts only when the quoted uTP header names a connection
and a packet that connection really has outstanding; then (RFC 1122 §4.2.3.9,
as Linux's TCP does before a connection is established):

* ``REFUSED`` (port or protocol unreachable) about our SYN ends the connect at
  once; about anything later it is a soft error.
* ``UNREACHABLE`` (host, network, prohibited, TTL) about our SYN ends the connect
  once a resent SYN is reported too (3 s by default, instead of 21 s of silence),
  or at once when our own host reported it (``local``: sending failed for want
  of a route, as a TCP connect would fail); otherwise it is a soft error.
* ``TOO_BIG`` ("fragmentation needed", "packet too big") about a packet larger
  than the reported limit lowers the path MTU search's ceiling to the limit.

Soft errors are counted (``ConnectionStats.path_errors``) and the last one is
the reason a connection that then times out carries (``ConnectionTimedOut``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["PathError", "PathErrorKind", "PathErrorRecord"]


class PathErrorKind(Enum):
    """What an ICMP error says about the path to the peer."""

    #: Port or protocol unreachable: nothing listens there.
    REFUSED = "refused"
    #: Host or network unreachable, administratively prohibited, TTL exceeded.
    UNREACHABLE = "unreachable"
    #: The datagram was larger than a link on the path takes (``max_datagram``).
    TOO_BIG = "too big"


@dataclass(frozen=True, slots=True)
class PathError:
    """One ICMP error, as the carrier decoded it."""

    kind: PathErrorKind
    #: What the error said, for people: "port unreachable", "host unreachable", ...
    description: str
    #: Who sent it (a router or the peer's host), as the carrier gives addresses; ``None`` if unknown.
    offender: Any = None
    #: ``TOO_BIG`` only: the largest datagram (UDP payload) the path takes, or ``None``.
    max_datagram: int | None = None
    #: Our own host said so (a send failed: no route), not an ICMP message: nothing to doubt.
    local: bool = False

    def __str__(self) -> str:
        if self.local:
            return f"{self.description} (this host)"
        if self.offender is None:
            return self.description
        host = self.offender[0] if isinstance(self.offender, tuple) else self.offender
        return f"{self.description} (ICMP from {host})"


class PathErrorRecord:
    """One connection's ICMP errors, already checked against what it sent: counted, the last kept."""

    __slots__ = ("count", "last", "_syn_reports")

    def __init__(self) -> None:
        #: Errors accepted (``ConnectionStats.path_errors``).
        self.count = 0
        #: The last error other than ``TOO_BIG``: the reason a later timeout carries.
        self.last: PathError | None = None
        self._syn_reports = 0  # a bit per SYN transmission reported

    def record(self, error: PathError, *, syn_try: int | None = None) -> bool:
        """Count ``error``; return whether it ends a connect (``syn_try``: the SYN's transmission it concerns)."""
        self.count += 1
        if error.kind is PathErrorKind.TOO_BIG:
            return False
        self.last = error
        if syn_try is None:
            return False  # a soft error
        self._syn_reports |= 1 << syn_try
        return error.kind is PathErrorKind.REFUSED or error.local or self._syn_reports.bit_count() >= 2
