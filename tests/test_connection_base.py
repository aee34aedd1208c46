"""What both sides of a connection share (``txutp/engine/_connection_base.py``): fields, transitions, events."""

from __future__ import annotations

from typing import Any

from tests.helpers import A_ISN, B_ISN, SYN, A, Pair, ScriptedBits, drain, packet
from txutp.engine import (
    ConnectionClosed,
    ConnectionReset,
    ConnectionState,
    DataReceived,
    EndOfStream,
    PacketType,
    UTPConfig,
    UTPConnection,
    UTPContext,
)
from txutp.engine._connection_base import LIVE_SENDING, ConnectionBase
from txutp.engine._receiving import ConnectionReceiving
from txutp.engine._sending import ConnectionSending

SYN_TYPE = PacketType.SYN


def test_a_connection_is_its_two_sides_over_one_set_of_fields() -> None:
    assert UTPConnection.__mro__[1:4] == (ConnectionSending, ConnectionReceiving, ConnectionBase)
    # Every field is declared once, in the base: no instance dictionary, no slot declared twice.
    assert not hasattr(Pair().client, "__dict__")
    for cls in (UTPConnection, ConnectionSending, ConnectionReceiving):
        assert cls.__slots__ == ()
    assert set(ConnectionBase.__annotations__) == set(ConnectionBase.__slots__)


def test_live_sending_states() -> None:
    assert {s.name for s in LIVE_SENDING} == {"CONNECTED", "FIN_SENT", "FIN_RECEIVED", "CLOSING"}


def test_the_handshake_timers_stop_once_connected() -> None:
    p = Pair(UTPConfig(mtu_discovery=False, keepalive_interval=20.0))
    # The acceptor's handshake timeout stopped: only the keep-alive is left.
    assert p.server.get_timer() == 20.0
    # The initiator's SYN is never resent (its CONFIRM timer resends the bare ACK, not the SYN).
    log = p.run(until=19.0)
    assert log and all(pkt.type != SYN_TYPE for _, side, pkt in log if side == "a")


def test_after_the_close_only_the_linger_timer_is_left() -> None:
    p = Pair()
    p.client.close(p.now)
    p.server.close(p.now)
    p.pump()
    assert p.client.state is ConnectionState.LINGER
    deadline = p.client.get_timer()
    assert deadline is not None and 0 < deadline <= max(UTPConfig().linger_time, 3 * UTPConfig().initial_rto)
    p.now = deadline
    p.client.handle_timer(p.now)
    assert p.client.state is ConnectionState.CLOSED and p.client.lingered
    assert p.client.get_timer() is None


def test_data_already_received_is_reported_before_the_event_that_follows_it() -> None:
    p = Pair()
    p.server.send(b"bye", p.now)
    p.to_a(p.out_b())
    p.server.shutdown_write(p.now)
    p.to_a(p.out_b())
    p.client.close(p.now)
    p.to_b(p.out_a())
    p.to_a(p.out_b())
    events = [e for _, e in drain(p.a)]
    assert events[:2] == [DataReceived(b"bye"), EndOfStream()]
    assert ConnectionClosed() in events


def test_a_connection_the_application_never_saw_ends_without_an_event() -> None:
    ctx = UTPContext(accepting=True, random_bits=ScriptedBits(B_ISN))
    ctx.receive_datagram(packet(SYN, 0x0100, A_ISN, 0), A, 0.0)
    ctx.datagrams_to_send(0.0)
    [conn] = ctx.connections.values()
    assert conn.state is ConnectionState.SYN_RECV
    conn.abort(0.0)
    assert conn.state is ConnectionState.CLOSED
    assert drain(ctx) == []


def test_a_reset_is_announced_once_and_empties_the_buffers() -> None:
    p = Pair()
    p.client.send(bytes(10_000), p.now)
    p.server.abort(p.now)
    p.to_a(p.out_b())
    assert [e for _, e in drain(p.a)] == [ConnectionReset()]
    assert p.client.bytes_unsent == 0 and p.client.bytes_in_flight == 0
    p.client.abort(p.now)  # already over: nothing more
    assert drain(p.a) == []


def test_a_traced_connection_keeps_its_transitions_for_the_tracer() -> None:
    class Tracer:
        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: None

    p = Pair()
    p.client.set_tracer(Tracer())  # type: ignore[arg-type]
    p.client.shutdown_write(p.now)
    assert p.client.transitions == [(ConnectionState.CONNECTED, ConnectionState.FIN_SENT)]
    untraced = p.server
    untraced.shutdown_write(p.now)
    assert untraced.transitions == []


def test_a_woken_connection_calls_its_wakeup_with_itself() -> None:
    p = Pair()
    woken: list[UTPConnection] = []
    p.client.wakeup = woken.append
    p.client.send(b"x", p.now)
    assert woken == [p.client]
