"""The ``utp:`` endpoint-string grammar (``txutp._parsers``) and the plugins that expose it.

Every documented server and client form parses to the right endpoint; a bad one raises
``ValueError`` naming the key. The parsers and ``twistd utp`` are found through Twisted's plugin
system, which must never import the reactor.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from twisted.application.service import IServiceMaker
from twisted.internet import reactor
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import (
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from txutp import UTPClientEndpoint, UTPServerEndpoint
from txutp._parsers import UTPClientParser, UTPServerParser


class ServerStringTests(TestCase):
    """Every documented server form parses; bad ones raise ValueError naming the key."""

    def parse(self, description: str) -> UTPServerEndpoint:
        endpoint = serverFromString(reactor, description)
        self.assertIsInstance(endpoint, UTPServerEndpoint)
        return endpoint

    def test_forms(self) -> None:
        cases = {
            "utp:6881": (6881, "", None),
            "UTP:6881": (6881, "", None),
            "utp:0": (0, "", None),
            "utp:port=6881": (6881, "", None),
            "utp:6881:interface=127.0.0.1": (6881, "127.0.0.1", None),
            r"utp:6881:interface=\:\:1": (6881, "::1", None),
            r"utp:6881:interface=\:\:": (6881, "::", None),
            "utp:6881:backlog=50": (6881, "", 50),
            "utp:port=6881:interface=127.0.0.1:backlog=7": (6881, "127.0.0.1", 7),
            "utp:6881:backlog=9:synCookies=always": (6881, "", 9),
        }
        for description, (port, interface, backlog) in cases.items():
            endpoint = self.parse(description)
            self.assertEqual((endpoint._port, endpoint._interface), (port, interface), description)
            if backlog is None:
                self.assertIsNone(endpoint._config, description)
            else:
                self.assertEqual(endpoint._config.backlog, backlog, description)

    def test_trace(self) -> None:
        endpoint = self.parse("utp:6881:trace=/tmp/traces")
        self.assertEqual(endpoint._config.trace, "/tmp/traces")
        client = clientFromString(reactor, "utp:127.0.0.1:6881:trace=one.jsonl")
        assert isinstance(client, UTPClientEndpoint)
        self.assertEqual(client._config.trace, "one.jsonl")
        for description in ("utp:6881:trace=", "utp:127.0.0.1:6881:trace="):
            with self.assertRaises(ValueError) as caught:
                (clientFromString if "127" in description else serverFromString)(reactor, description)
            self.assertIn("'trace'", str(caught.exception))

    def test_errors_name_the_key(self) -> None:
        cases = {
            "utp:": "port",
            "utp:interface=127.0.0.1": "port",
            "utp:abc": "port",
            "utp:70000": "port",
            "utp:-1": "port",
            "utp:6881:interface=localhost": "interface",
            "utp:6881:interface=::1": "interface",  # unescaped IPv6: the tokenizer splits it
            "utp:6881:backlog=0": "backlog",
            "utp:6881:backlog=many": "backlog",
            "utp:6881:synCookies=yes": "synCookies",
            "utp:6881:foo=1": "foo",
            "utp:6881:port=6882": "port",
            "utp:6881:7000": "7000",
        }
        for description, key in cases.items():
            with self.assertRaises(ValueError, msg=description) as caught:
                serverFromString(reactor, description)
            self.assertIn(key, str(caught.exception), description)


class ClientStringTests(TestCase):
    """Every documented client form parses; bad ones raise ValueError naming the key."""

    def test_forms(self) -> None:
        cases = {
            "utp:example.com:6881": ("example.com", 6881, 30.0, None, 0),
            "utp:host=example.com:port=6881": ("example.com", 6881, 30.0, None, 0),
            "utp:127.0.0.1:6881:timeout=2.5": ("127.0.0.1", 6881, 2.5, None, 0),
            r"utp:\:\:1:6881": ("::1", 6881, 30.0, None, 0),
            r"utp:host=\:\:1:port=6881:bindAddress=\:\:1": ("::1", 6881, 30.0, "::1", 0),
            "utp:host=h:port=1:timeout=3:bindAddress=127.0.0.1:bindPort=7000": ("h", 1, 3.0, "127.0.0.1", 7000),
            "utp:h:6881:bindPort=6881": ("h", 6881, 30.0, None, 6881),
        }
        for description, expected in cases.items():
            endpoint = clientFromString(reactor, description)
            self.assertIsInstance(endpoint, UTPClientEndpoint)
            got = (endpoint._host, endpoint._port, endpoint._timeout, endpoint._bindAddress, endpoint._bindPort)
            self.assertEqual(got, expected, description)

    def test_nested_in_tls(self) -> None:
        """tls: wraps a utp client description given in endpoint= (colons escaped once more)."""
        endpoint = clientFromString(reactor, r"tls:example.com:443:endpoint=utp\:example.com\:443")
        verifyObject(IStreamClientEndpoint, endpoint)
        self.assertIsInstance(endpoint._wrappedEndpoint, UTPClientEndpoint)

    def test_errors_name_the_key(self) -> None:
        cases = {
            "utp:example.com": "port",
            "utp:port=6881": "host",
            "utp:h:0": "port",
            "utp:h:65536": "port",
            "utp:h:x": "port",
            "utp:h:1:timeout=-1": "timeout",
            "utp:h:1:timeout=0": "timeout",
            "utp:h:1:timeout=soon": "timeout",
            "utp:h:1:bindAddress=localhost": "bindAddress",
            "utp:h:1:bindAddress=": "bindAddress",
            "utp:h:1:bindPort=x": "bindPort",
            "utp:h:1:bindPort=99999": "bindPort",
            "utp:h:1:bogus=1": "bogus",
            "utp:h:1:host=g": "host",
            "utp:h:1:2": "'2'",
        }
        for description, key in cases.items():
            with self.assertRaises(ValueError, msg=description) as caught:
                clientFromString(reactor, description)
            self.assertIn(key, str(caught.exception), description)


class PluginTests(TestCase):
    def test_parsers_found(self) -> None:
        servers = [p for p in getPlugins(IStreamServerEndpointStringParser) if p.prefix == "utp"]
        clients = [p for p in getPlugins(IStreamClientEndpointStringParserWithReactor) if p.prefix == "utp"]
        self.assertEqual([type(p) for p in servers], [UTPServerParser])
        self.assertEqual([type(p) for p in clients], [UTPClientParser])
        verifyObject(IPlugin, servers[0])
        verifyObject(IStreamServerEndpointStringParser, servers[0])
        verifyObject(IPlugin, clients[0])
        verifyObject(IStreamClientEndpointStringParserWithReactor, clients[0])

    def test_service_maker_found(self) -> None:
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "utp"]
        self.assertEqual(len(makers), 1)
        verifyObject(IServiceMaker, makers[0])
        self.assertIn("utp:<port>", makers[0].options().longdesc)

    def test_plugin_module_never_imports_the_reactor(self) -> None:
        code = textwrap.dedent(
            """
            import sys
            import twisted.plugins.txutp_plugins as m
            from twisted.plugin import getPlugins, IPlugin
            list(getPlugins(IPlugin))
            m.utpServerParser, m.utpClientParser, m.utpServiceMaker.tapname
            assert "twisted.internet.reactor" not in sys.modules, "reactor imported"
            print("clean")
            """
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "clean")
