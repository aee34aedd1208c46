"""The registry of UDP ports (txutp._registry): one multiplexer per (reactor, interface, port), closed when unused."""

from __future__ import annotations

import dataclasses

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial import unittest

from txutp import acquireMultiplexer, activeMultiplexers
from txutp._registry import ephemeralMultiplexer

from .twisted_helpers import FAST, closeAllSockets


class RegistryTests(unittest.TestCase):
    def setUp(self) -> None:
        self.addCleanup(closeAllSockets)

    def acquire(self, port: int = 0, **kwargs: object):
        mux = acquireMultiplexer(reactor, "127.0.0.1", port, **kwargs)  # type: ignore[arg-type]
        mux.hold()
        self.addCleanup(mux.release)
        return mux

    def test_one_multiplexer_per_port(self) -> None:
        mux = self.acquire(config=FAST)
        port = mux.getHost().port
        self.assertIs(acquireMultiplexer(reactor, "127.0.0.1", port), mux)
        self.assertIs(acquireMultiplexer(reactor, "127.0.0.1", port, FAST), mux)
        self.assertIsNot(self.acquire(), mux)  # port 0: a fresh socket
        self.assertIn(mux, activeMultiplexers(reactor))
        self.assertEqual(activeMultiplexers(object()), [])
        self.assertTrue(mux.closeWhenUnused)

    def test_a_port_keeps_its_configuration_and_datagram_protocol(self) -> None:
        mux = self.acquire(config=FAST, datagramProtocol=DatagramProtocol())
        port = mux.getHost().port
        other = dataclasses.replace(FAST, min_rto=0.3)
        self.assertRaises(ValueError, acquireMultiplexer, reactor, "127.0.0.1", port, other)
        self.assertRaises(ValueError, acquireMultiplexer, reactor, "127.0.0.1", port, None, DatagramProtocol())

    def test_interfaces_are_ip_literals(self) -> None:
        self.assertRaises(ValueError, acquireMultiplexer, reactor, "localhost", 0)

    async def test_an_unused_multiplexer_closes_and_leaves_the_registry(self) -> None:
        mux = acquireMultiplexer(reactor, "127.0.0.1", 0)
        mux.hold()
        mux.release()
        self.assertTrue(mux.closed)
        await mux.whenClosed()
        self.assertNotIn(mux, activeMultiplexers(reactor))

    async def test_closed_ports_are_replaced(self) -> None:
        mux = self.acquire()
        port = mux.getHost().port
        await mux.closeNow()
        self.assertNotIn(mux, activeMultiplexers(reactor))
        again = self.acquire(port)
        self.assertIsNot(again, mux)
        self.assertEqual(again.getHost().port, port)

    async def test_clients_share_one_ephemeral_socket(self) -> None:
        first = ephemeralMultiplexer(reactor, "127.0.0.1", FAST)
        first.hold()
        self.assertIs(ephemeralMultiplexer(reactor, "127.0.0.1", FAST), first)
        self.assertIsNot(ephemeralMultiplexer(reactor, "127.0.0.1", None), first)
        await first.closeNow()
        second = ephemeralMultiplexer(reactor, "127.0.0.1", FAST)
        second.hold()
        self.addCleanup(second.release)
        self.assertIsNot(second, first)
