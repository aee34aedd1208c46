r"""String parsers for ``utp:`` endpoint descriptions (used by ``serverFromString``/``clientFromString``).

Server grammar::

    utp:<port>[:interface=<ip>][:backlog=<n>][:synCookies=auto|always|never][:trace=<path>][:reuseport=<n>]

==============  ========  ==========================================================
key             default   meaning
==============  ========  ==========================================================
``port``        (req.)    UDP port to listen on, 0-65535 (0: any free port); may be
                          given positionally or as ``port=``
``interface``   ``''``    IP literal to bind: ``''`` all IPv4, ``::`` all IPv6 (dual-stack
                          where the OS allows), or one address
``backlog``     128       most half-open (unconfirmed) connections kept
``synCookies``  ``auto``  stateless SYN-ACKs: when the backlog (or one host's share)
                          is full, on every SYN, or never
``trace``       none      trace connections: a directory (one JSON-lines file per
                          connection) or a ``.jsonl`` file (the first connection)
``reuseport``   none      this process is one of ``n`` worker processes sharing the
                          port (Linux; ``docs/workers.rst``): it listens on the
                          socket its supervisor (``twistd utp``) gave it
==============  ========  ==========================================================

Client grammar::

    utp:<host>:<port>[:timeout=<s>][:bindAddress=<ip>][:bindPort=<n>][:trace=<path>]
    utp:host=<host>:port=<port>[:timeout=<s>][:bindAddress=<ip>][:bindPort=<n>][:trace=<path>]

===============  =======  ========================================================
key              default  meaning
===============  =======  ========================================================
``host``         (req.)   host name (resolved by the reactor) or IP literal
``port``         (req.)   UDP port, 1-65535
``timeout``      30       seconds for resolution plus handshake
``bindAddress``  none     local IP literal to bind
``bindPort``     0        local UDP port; a server's port shares its socket
``trace``        none     trace the connection: a directory or a ``.jsonl`` file
===============  =======  ========================================================

IPv6 literals must escape their colons, as Twisted's tokenizer requires:
``utp:6881:interface=\:\:1``, ``utp:\:\:1:6881``, ``utp:host=\:\:1:port=6881``.
Nested in another description (``tls:``), escape the inner colons once more:
``tls:example.com:443:endpoint=utp\:example.com\:443``.

A malformed description raises ``ValueError`` naming the offending key.
These classes import nothing heavy: the endpoints are imported when a string is parsed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import (
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

__all__ = ["UTPClientParser", "UTPServerParser"]

_SERVER_KEYS = ("port", "interface", "backlog", "synCookies", "trace", "reuseport")
_CLIENT_KEYS = ("host", "port", "timeout", "bindAddress", "bindPort", "trace")
_ESCAPE_HINT = r" (IPv6 colons must be escaped, e.g. interface=\:\:1)"


def _collect(
    kind: str, args: tuple[Any, ...], kwargs: dict[str, Any], positional: tuple[str, ...], allowed: tuple[str, ...]
) -> dict[str, str]:
    if len(args) > len(positional):
        extra = args[len(positional)]
        raise ValueError(
            f"utp {kind}: unexpected positional argument {extra!r}; options are key=value, "
            f"one of {', '.join(allowed)}{_ESCAPE_HINT}"
        )
    values: dict[str, str] = {}
    for name, value in zip(positional, args):
        values[name] = str(value)
    for key, value in kwargs.items():
        if key not in allowed:
            raise ValueError(f"utp {kind}: unknown option {key!r}; known options: {', '.join(allowed)}")
        if key in values:
            raise ValueError(f"utp {kind}: option {key!r} given twice")
        values[key] = str(value)
    return values


def _port(kind: str, key: str, value: str, minimum: int) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not minimum <= port <= 65535:
        raise ValueError(f"utp {kind}: {key!r} must be a port number {minimum}-65535, not {value!r}")
    return port


def _ip(kind: str, key: str, value: str) -> str:
    if value and not (isIPAddress(value) or isIPv6Address(value)):
        raise ValueError(f"utp {kind}: {key!r} must be an IP address literal, not {value!r}{_ESCAPE_HINT}")
    return value


@implementer(IPlugin, IStreamServerEndpointStringParser)
class UTPServerParser:
    r"""``utp:<port>[:interface=<ip>][:backlog=<n>][:synCookies=<when>]``: a :class:`~txutp.UTPServerEndpoint`.

    ``port`` (positional or ``port=``, 0-65535), ``interface`` (IP literal,
    default all IPv4; escape IPv6: ``interface=\:\:1``), ``backlog`` (half-open
    connections kept, default 128), ``synCookies`` (``auto``, ``always`` or
    ``never``), ``reuseport`` (this process is one of that many workers sharing
    the port; Linux). Raises ``ValueError`` naming a bad key.
    """

    prefix = "utp"

    def parseStreamServer(self, reactor: Any, *args: Any, **kwargs: Any) -> IStreamServerEndpoint:
        """Parse the arguments of a ``utp:`` server description."""
        return self._parseServer(reactor, *args, **kwargs)

    def _parseServer(self, reactor: Any, *args: Any, **kwargs: Any) -> IStreamServerEndpoint:
        from .endpoints import UTPServerEndpoint
        from .engine import UTPConfig

        values = _collect("server", args, kwargs, ("port",), _SERVER_KEYS)
        if "port" not in values:
            raise ValueError("utp server: 'port' is required, as in utp:6881")
        port = _port("server", "port", values["port"], 0)
        interface = _ip("server", "interface", values.get("interface", ""))
        changes: dict[str, Any] = {}
        if "backlog" in values:
            try:
                backlog = int(values["backlog"])
            except ValueError:
                backlog = 0
            if backlog < 1:
                raise ValueError(f"utp server: 'backlog' must be a positive integer, not {values['backlog']!r}")
            changes["backlog"] = backlog
        if "synCookies" in values:
            if values["synCookies"] not in ("auto", "always", "never"):
                raise ValueError(
                    f"utp server: 'synCookies' must be auto, always or never, not {values['synCookies']!r}"
                )
            changes["syn_cookies"] = values["synCookies"]
        if "trace" in values:
            changes["trace"] = _trace("server", values["trace"])
        reusePort = _reusePort(values["reuseport"]) if "reuseport" in values else None
        config = dataclasses.replace(UTPConfig(), **changes) if changes else None
        return UTPServerEndpoint(reactor, port, interface, config, reusePort=reusePort)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class UTPClientParser:
    r"""``utp:<host>:<port>`` or ``utp:host=<h>:port=<p>``, plus ``timeout``, ``bindAddress``, ``bindPort``.

    ``host`` is a name or an IP literal (escape IPv6: ``utp:\:\:1:6881``),
    ``port`` 1-65535, ``timeout`` seconds (default 30), ``bindAddress`` an IP
    literal, ``bindPort`` 0-65535 (a server's port shares its socket).
    Gives a :class:`~txutp.UTPClientEndpoint`. Raises ``ValueError`` naming a bad key.
    """

    prefix = "utp"

    def parseStreamClient(self, reactor: Any, *args: Any, **kwargs: Any) -> IStreamClientEndpoint:
        """Parse the arguments of a ``utp:`` client description."""
        return self._parseClient(reactor, *args, **kwargs)

    def _parseClient(self, reactor: Any, *args: Any, **kwargs: Any) -> IStreamClientEndpoint:
        from .endpoints import UTPClientEndpoint

        values = _collect("client", args, kwargs, ("host", "port"), _CLIENT_KEYS)
        host = values.get("host", "")
        if not host:
            raise ValueError("utp client: 'host' is required, as in utp:example.com:6881")
        if "port" not in values:
            raise ValueError("utp client: 'port' is required, as in utp:example.com:6881")
        port = _port("client", "port", values["port"], 1)
        timeout: float | None = 30.0
        if "timeout" in values:
            try:
                timeout = float(values["timeout"])
            except ValueError:
                timeout = -1.0
            if not timeout > 0 or timeout != timeout or timeout == float("inf"):
                raise ValueError(
                    f"utp client: 'timeout' must be a positive number of seconds, not {values['timeout']!r}"
                )
        bindAddress = values.get("bindAddress")
        if bindAddress is not None:
            if not bindAddress:
                raise ValueError("utp client: 'bindAddress' must be an IP address literal, not ''")
            _ip("client", "bindAddress", bindAddress)
        bindPort = _port("client", "bindPort", values["bindPort"], 0) if "bindPort" in values else 0
        config = None
        if "trace" in values:
            from .engine import UTPConfig

            config = dataclasses.replace(UTPConfig(), trace=_trace("client", values["trace"]))
        return UTPClientEndpoint(
            reactor, host, port, timeout=timeout, bindAddress=bindAddress, bindPort=bindPort, config=config
        )


def _reusePort(value: str) -> int:
    from .reuseport import MAX_WORKERS, unsupportedReason

    try:
        workers = int(value)
    except ValueError:
        workers = 0
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(
            f"utp server: 'reuseport' must be a number of worker processes from 1 to {MAX_WORKERS}, not {value!r}"
        )
    reason = unsupportedReason()
    if reason is not None:
        raise ValueError(f"utp server: 'reuseport': {reason}")
    return workers


def _trace(side: str, value: str) -> str:
    if not value:
        raise ValueError(f"utp {side}: 'trace' must be a directory or a .jsonl file name, not ''")
    return value
