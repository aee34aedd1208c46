"""The timer table alone (``txutp.engine._timers``): arming, stopping, the next deadline, expiry order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from txutp.engine._timers import Timer, TimerTable


def test_a_new_table_has_nothing_armed() -> None:
    table = TimerTable()
    assert table.next() is None
    assert all(table.get(t) is None for t in Timer)
    assert list(table.expired(1e9)) == []


def test_set_get_stop() -> None:
    table = TimerTable()
    table.set(Timer.KEEPALIVE, 29.0)
    table.set(Timer.CONFIRM, 0.3)
    assert table.get(Timer.KEEPALIVE) == 29.0 and table.get(Timer.CONFIRM) == 0.3
    assert table.next() == 0.3
    table.stop(Timer.CONFIRM)
    assert table.get(Timer.CONFIRM) is None and table.next() == 29.0
    table.set(Timer.KEEPALIVE, None)  # setting None stops too
    assert table.next() is None


def test_stop_all() -> None:
    table = TimerTable()
    for i, timer in enumerate(Timer):
        table.set(timer, float(i))
    table.stop_all()
    assert table.next() is None and len(table) == len(Timer)


def test_expired_yields_what_is_due_in_enum_order_and_stops_it() -> None:
    table = TimerTable()
    table.set(Timer.KEEPALIVE, 1.0)
    table.set(Timer.RECOVERY, 2.0)
    table.set(Timer.IDLE, 2.0)
    table.set(Timer.CONFIRM, 3.0)
    assert list(table.expired(0.5)) == []  # an early call runs nothing
    assert list(table.expired(2.0)) == [Timer.IDLE, Timer.RECOVERY, Timer.KEEPALIVE]  # order: the enum's
    assert table.next() == 3.0
    assert list(table.expired(2.0)) == []  # each fires once


def test_a_timer_stopped_while_expiring_is_not_yielded() -> None:
    """What an earlier handler stops (a connection that ended) does not run."""
    table = TimerTable()
    table.set(Timer.IDLE, 1.0)
    table.set(Timer.KEEPALIVE, 1.0)
    ran = []
    for timer in table.expired(5.0):
        ran.append(timer)
        table.stop_all()
    assert ran == [Timer.IDLE]


def test_a_timer_rearmed_while_expiring_keeps_its_new_deadline() -> None:
    table = TimerTable()
    table.set(Timer.CONFIRM, 1.0)
    for timer in table.expired(1.0):
        table.set(timer, 3.0)  # as the confirm timer does: again, later
    assert table.get(Timer.CONFIRM) == 3.0


@given(st.lists(st.tuples(st.sampled_from(list(Timer)), st.none() | st.floats(0, 1e6)), max_size=30))
def test_next_is_the_earliest_armed(operations: list[tuple[Timer, float | None]]) -> None:
    table = TimerTable()
    armed: dict[Timer, float] = {}
    for timer, at in operations:
        table.set(timer, at)
        if at is None:
            armed.pop(timer, None)
        else:
            armed[timer] = at
    assert table.next() == (min(armed.values()) if armed else None)
    now = sorted(armed.values())[len(armed) // 2] if armed else 0.0
    assert list(table.expired(now)) == [t for t in Timer if t in armed and armed[t] <= now]
    assert all(table.get(t) == (armed[t] if armed[t] > now else None) for t in armed)
