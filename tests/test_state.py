"""Tests for the connection state machine table in ``txutp.engine._state``."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txutp.engine import TRANSITIONS, ConnectionState, Input
from txutp.engine._state import next_state

S = ConnectionState
I = Input  # noqa: E741

LIVE = [s for s in S if s is not S.CLOSED]
TERMINATING = [I.RESET_RECEIVED, I.TIMED_OUT, I.ABORT]


def test_the_table_only_holds_states_and_inputs():
    for (state, event), target in TRANSITIONS.items():
        assert isinstance(state, S)
        assert isinstance(event, I)
        assert isinstance(target, S)
        assert next_state(state, event) is target


@pytest.mark.parametrize("state", LIVE, ids=lambda s: s.name)
@pytest.mark.parametrize("event", TERMINATING, ids=lambda e: e.name)
def test_every_live_state_can_be_ended(state, event):
    assert next_state(state, event) is S.CLOSED


@pytest.mark.parametrize("event", list(I), ids=lambda e: e.name)
def test_closed_is_terminal(event):
    assert next_state(S.CLOSED, event) is None
    assert not [key for key in TRANSITIONS if key[0] is S.CLOSED]


def test_linger_leaves_only_to_closed():
    exits = {event: target for (state, event), target in TRANSITIONS.items() if state is S.LINGER}
    assert set(exits.values()) == {S.CLOSED}
    assert set(exits) == {I.LINGER_EXPIRED, *TERMINATING}


def test_half_close_diamond():
    # Our side first.
    assert next_state(S.CONNECTED, I.SHUTDOWN_WRITE) is S.FIN_SENT
    assert next_state(S.FIN_SENT, I.PEER_EOF) is S.CLOSING
    # The peer's side first.
    assert next_state(S.CONNECTED, I.PEER_EOF) is S.FIN_RECEIVED
    assert next_state(S.FIN_RECEIVED, I.SHUTDOWN_WRITE) is S.CLOSING
    # Then the common tail.
    assert next_state(S.CLOSING, I.FIN_ACKED) is S.LINGER
    assert next_state(S.LINGER, I.LINGER_EXPIRED) is S.CLOSED


def test_full_close_goes_to_closing_from_every_open_state():
    for state in (S.CONNECTED, S.FIN_SENT, S.FIN_RECEIVED):
        assert next_state(state, I.CLOSE) is S.CLOSING


def test_close_before_the_handshake_gives_up():
    assert next_state(S.SYN_SENT, I.CLOSE) is S.CLOSED
    assert next_state(S.SYN_RECV, I.CLOSE) is S.CLOSED


def test_handshake_transitions():
    assert next_state(S.SYN_SENT, I.SYN_ACK_RECEIVED) is S.CONNECTED
    assert next_state(S.SYN_RECV, I.PEER_CONFIRMED) is S.CONNECTED
    # Each side completes the handshake only its own way.
    assert next_state(S.SYN_SENT, I.PEER_CONFIRMED) is None
    assert next_state(S.SYN_RECV, I.SYN_ACK_RECEIVED) is None


def test_fin_acked_only_when_nothing_is_left_to_read():
    """Our FIN being ACKed ends a connection only from CLOSING; FIN_SENT keeps reading."""
    assert [state for (state, event) in TRANSITIONS if event is I.FIN_ACKED] == [S.CLOSING]


def reachable(starts):
    seen = set(starts)
    queue = deque(starts)
    while queue:
        state = queue.popleft()
        for (src, _event), dst in TRANSITIONS.items():
            if src is state and dst not in seen:
                seen.add(dst)
                queue.append(dst)
    return seen


def test_every_state_is_reachable_from_a_handshake():
    assert reachable([S.SYN_SENT, S.SYN_RECV]) == set(S)


@pytest.mark.parametrize("start", [S.SYN_SENT, S.SYN_RECV], ids=lambda s: s.name)
def test_each_handshake_start_reaches_every_later_state(start):
    assert reachable([start]) == set(S) - ({S.SYN_SENT, S.SYN_RECV} - {start})


def test_closed_is_reachable_from_every_state():
    """No live state is a dead end: each can still reach CLOSED, and cleanly via LINGER where it is open."""
    for state in LIVE:
        assert S.CLOSED in reachable([state])
    for state in (S.CONNECTED, S.FIN_SENT, S.FIN_RECEIVED, S.CLOSING):
        assert S.LINGER in reachable([state])


def test_no_state_returns_to_the_handshake():
    for (_state, _event), target in TRANSITIONS.items():
        assert target not in (S.SYN_SENT, S.SYN_RECV)


ABSENT = [(state, event) for state in S for event in I if (state, event) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), ABSENT, ids=lambda x: x.name)
def test_next_state_is_none_outside_the_table(state, event):
    assert next_state(state, event) is None


def test_some_pairs_are_absent():
    assert (S.CONNECTED, I.SYN_ACK_RECEIVED) in ABSENT
    assert (S.FIN_SENT, I.SHUTDOWN_WRITE) in ABSENT
    assert (S.FIN_RECEIVED, I.PEER_EOF) in ABSENT
    assert (S.CLOSING, I.CLOSE) in ABSENT
    assert (S.LINGER, I.FIN_ACKED) in ABSENT
    assert len(ABSENT) + len(TRANSITIONS) == len(S) * len(I)


@settings(max_examples=300, deadline=None)
@given(start=st.sampled_from(list(S)), events=st.lists(st.sampled_from(list(I)), max_size=40))
def test_random_input_sequences(start, events):
    state = start
    closed = state is S.CLOSED
    for event in events:
        new = next_state(state, event)
        if new is not None:
            assert new in S
            assert (state, event) in TRANSITIONS
            state = new
        else:
            assert (state, event) not in TRANSITIONS
        assert isinstance(state, S)
        if closed:
            assert state is S.CLOSED
        closed = state is S.CLOSED
