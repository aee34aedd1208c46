"""The trace format (``txutp.trace``): what the writer writes, how file names are made, how traces are read back."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from txutp.trace import TRACE_VERSION, TraceWriter, address_text, read_trace, summarize, trace_file_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEN = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)


def writer(file, start=1000.0, **kw):
    return TraceWriter(
        file,
        local=("127.0.0.1", 6881),
        peer=("::1", 40000),
        recv_id=17,
        send_id=18,
        initiator=True,
        start=start,
        wall_clock=WHEN,
        **kw,
    )


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def write_file(tmp_path, text: str, name: str = "t.jsonl") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


HEADER_LINE = json.dumps({"trace": "txutp", "version": 1, "connection": {"local": "a", "peer": "b"}}) + "\n"


# ---------------------------------------------------------------------- the writer


def test_the_header_is_written_at_once():
    out = io.StringIO()
    writer(out, start=12.5, sample_interval=0.02)
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1
    assert lines(out) == [
        {
            "trace": "txutp",
            "version": TRACE_VERSION,
            "protocol": "uTP (BEP 29)",
            "connection": {
                "local": "127.0.0.1:6881",
                "peer": "[::1]:40000",
                "recv_id": 17,
                "send_id": 18,
                "initiator": True,
            },
            "start": 12.5,
            "wall_clock": "2024-05-06T07:08:09.123456Z",
            "congestion_control": "ledbat",
            "target_delay_us": 100000,
        }
    ]


def test_the_wall_clock_is_utc():
    out = io.StringIO()
    TraceWriter(
        out,
        local="a",
        peer="b",
        recv_id=1,
        send_id=2,
        initiator=False,
        start=0.0,
        wall_clock=datetime(2024, 5, 6, 9, 0, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    assert lines(out)[0]["wall_clock"] == "2024-05-06T07:00:00.000000Z"


def test_event_times_are_relative_to_the_start_and_rounded_to_microseconds():
    out = io.StringIO()
    w = writer(out, start=1000.5)
    w.event(1000.5, "state", **{"from": "syn_sent", "to": "connected"})
    w.event(1000.5000014, "loss", seq=5, reason="time")
    w.event(1002.25, "timeout", kind="rto")
    events = lines(out)[1:]
    assert events == [
        {"t": 0.0, "name": "state", "from": "syn_sent", "to": "connected"},
        {"t": 0.000001, "name": "loss", "seq": 5, "reason": "time"},
        {"t": 1.75, "name": "timeout", "kind": "rto"},
    ]
    assert list(events[0]) == ["t", "name", "from", "to"]  # t and name first


@pytest.mark.parametrize(
    "fields",
    [
        dict(type="DATA", seq=1, ack=65535, size=1420, payload=1400, sack=None, retransmit=False, probe=False),
        dict(type="FIN", seq=65535, ack=0, size=20, payload=0, sack=3, retransmit=True, probe=False),
        dict(type="DATA", seq=9, ack=8, size=1500, payload=1480, sack=0, retransmit=False, probe=True),
    ],
)
def test_the_hand_built_packet_sent_line_is_the_same_json_as_an_event(fields):
    built, generic = io.StringIO(), io.StringIO()
    writer(built).packet_sent(1000.0123456, **fields)
    writer(generic).event(1000.0123456, "packet_sent", **fields)
    assert lines(built)[1] == lines(generic)[1] == {"t": 0.012346, "name": "packet_sent", **fields}
    assert list(lines(built)[1]) == list(lines(generic)[1])


@pytest.mark.parametrize("sack", [None, 0, 12])
def test_the_hand_built_packet_received_line_is_the_same_json_as_an_event(sack):
    fields = dict(type="STATE", seq=100, ack=4000, size=26, payload=0, sack=sack, wnd=1048576)
    built, generic = io.StringIO(), io.StringIO()
    writer(built).packet_received(1001.0, **fields)
    writer(generic).event(1001.0, "packet_received", **fields)
    assert lines(built)[1] == lines(generic)[1] == {"t": 1.0, "name": "packet_received", **fields}


def metric_lines(out: io.StringIO) -> list[tuple[float, int]]:
    return [(e["t"], e["cwnd"]) for e in lines(out)[1:] if e["name"] == "metrics"]


def test_metrics_are_written_when_they_change_at_most_once_per_interval():
    out = io.StringIO()
    w = writer(out, start=0.0, sample_interval=0.01)
    w.metrics(0.000, cwnd=1)  # written: the first sample
    w.metrics(0.001, cwnd=1)  # unchanged: nothing
    w.metrics(0.002, cwnd=2)  # changed within the interval: pending
    w.metrics(0.004, cwnd=3)  # the newer pending sample replaces it
    assert metric_lines(out) == [(0.0, 1)]
    w.metrics(0.011, cwnd=3)  # past the interval: written (now, the newest values)
    w.metrics(0.015, cwnd=3)  # unchanged
    w.metrics(0.030, cwnd=4)  # changed, past the interval: written at once
    assert metric_lines(out) == [(0.0, 1), (0.011, 3), (0.03, 4)]


def test_samples_one_interval_apart_are_all_written_despite_float_rounding():
    out = io.StringIO()
    w = writer(out, start=0.0, sample_interval=0.01)
    times = [i * 0.01 + 0.003 for i in range(200)]  # 0.033 - 0.023 < 0.01 in floating point
    assert any(b - a < 0.01 for a, b in itertools.pairwise(times))
    for i, t in enumerate(times):
        w.metrics(t, cwnd=i)
    assert [c for _, c in metric_lines(out)] == list(range(200))


def test_a_change_undone_within_the_interval_is_not_written():
    out = io.StringIO()
    w = writer(out, start=0.0)
    w.metrics(0.000, cwnd=1, in_flight=0)
    w.metrics(0.002, cwnd=2, in_flight=0)  # pending
    w.metrics(0.004, cwnd=1, in_flight=0)  # back to what was written: nothing pending
    w.close(0.05)
    assert metric_lines(out) == [(0.0, 1)]


def test_close_writes_the_last_pending_sample_at_its_own_time():
    out = io.StringIO()
    w = writer(out, start=10.0)
    w.metrics(10.0, cwnd=1, srtt=None)
    w.metrics(10.003, cwnd=5, srtt=0.05)
    w.event(10.004, "closed", reason="eof")
    w.close(10.5)
    events = lines(out)[1:]
    assert events[-1] == {"t": 0.003, "name": "metrics", "cwnd": 5, "srtt": 0.05}
    assert [e["name"] for e in events] == ["metrics", "closed", "metrics"]


def test_a_zero_interval_writes_every_change():
    out = io.StringIO()
    w = writer(out, start=0.0, sample_interval=0.0)
    for i in range(5):
        w.metrics(0.0, cwnd=i)
    assert [c for _, c in metric_lines(out)] == [0, 1, 2, 3, 4]


def test_close_is_idempotent_and_ends_the_trace(tmp_path):
    path = tmp_path / "trace.jsonl"
    w = writer(str(path))
    w.metrics(1000.0, cwnd=1)
    w.metrics(1000.001, cwnd=2)
    w.close(1000.002)
    assert w.closed
    w.close(1000.003)
    w.event(1000.004, "late")
    w.packet_sent(1000.004, "DATA", 1, 1, 100, 80)
    w.packet_received(1000.004, "STATE", 1, 1, 20, 0, None, 100)
    w.metrics(1000.5, cwnd=3)
    text = path.read_text(encoding="utf-8")
    assert [json.loads(line).get("name") for line in text.splitlines()] == [None, "metrics", "metrics"]


def test_a_file_given_open_is_flushed_not_closed():
    class Recording(io.StringIO):
        flushes = 0

        def flush(self):
            self.flushes += 1
            super().flush()

    out = Recording()
    w = writer(out)
    w.close(1000.0)
    assert not out.closed and out.flushes == 1
    w.close(1000.0)
    assert out.flushes == 1


def test_the_writer_keeps_nothing_but_the_file():
    """Bounded memory: a long trace leaves the writer holding no more than a short one."""
    out = io.StringIO()
    w = writer(out)
    for i in range(10_000):
        w.packet_sent(1000.0 + i * 1e-4, "DATA", i, 0, 1420, 1400)
        w.metrics(1000.0 + i * 1e-4, cwnd=i)
    assert out.getvalue().count("\n") > 10_000
    assert not hasattr(w, "__dict__")  # slots only: no list of events can hide in it
    held = {name: getattr(w, name) for name in TraceWriter.__slots__ if name != "_file"}
    assert not [name for name, value in held.items() if isinstance(value, (list, tuple, io.IOBase))]
    assert all(len(value) == 1 for value in held.values() if isinstance(value, dict))  # one sample: {"cwnd": ...}


def test_a_failing_write_stops_the_trace_without_raising():
    class Full(io.StringIO):
        writes = 0

        def write(self, s):
            self.writes += 1
            if self.writes > 1:
                raise OSError(28, "No space left on device")
            return super().write(s)

    out = Full()
    w = writer(out)
    w.event(1000.0, "state", to="connected")
    assert isinstance(w.error, OSError) and w.closed
    w.packet_sent(1000.1, "DATA", 1, 1, 100, 80)
    w.close(1000.2)
    assert out.writes == 2


def test_the_trace_module_imports_neither_twisted_nor_matplotlib():
    code = "import sys, txutp.trace; print(sorted({'twisted', 'matplotlib'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        check=True,
    )
    assert result.stdout == "[]\n"


# ---------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("local", "peer", "initiator", "expected"),
    [
        (
            ("127.0.0.1", 6881),
            ("10.0.0.2", 51413),
            True,
            "utp-20240506T070809-127.0.0.1_6881-10.0.0.2_51413-17-client.jsonl",
        ),
        (("::", 6881), ("fe80::1/x", 9), False, "utp-20240506T070809-_____6881-_fe80__1_x__9-17-server.jsonl"),
        ("mem:a/b", "[x]", True, "utp-20240506T070809-mem_a_b-_x_-17-client.jsonl"),
    ],
)
def test_trace_file_names_say_which_connection_and_are_safe(tmp_path, local, peer, initiator, expected):
    path = trace_file_name(tmp_path, local=local, peer=peer, recv_id=17, initiator=initiator, when=WHEN)
    assert os.path.dirname(path) == str(tmp_path)
    name = os.path.basename(path)
    assert name == expected
    assert not set(name) & set(':[]/\\ "')


def test_trace_file_names_use_utc():
    when = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    path = trace_file_name("d", local="a", peer="b", recv_id=1, initiator=True, when=when)
    assert os.path.basename(path).startswith("utp-20240506T070809-")


def test_address_text():
    assert address_text(("1.2.3.4", 5)) == "1.2.3.4:5"
    assert address_text(("::1", 5)) == "[::1]:5"
    assert address_text("memory") == "memory"

    class TwistedLike:
        host, port = "::1", 9

    assert address_text(TwistedLike()) == "[::1]:9"


# ---------------------------------------------------------------------- reading


def test_a_written_trace_reads_back(tmp_path):
    path = str(tmp_path / "t.jsonl")
    w = writer(path)
    w.packet_sent(1000.001, "SYN", 1, 0, 20, 0)
    w.event(1000.002, "state", **{"from": "syn_sent", "to": "connected"})
    w.close(1000.003)
    header, events = read_trace(path)
    assert header["connection"]["recv_id"] == 17
    assert [e["name"] for e in events] == ["packet_sent", "state"]


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("", ":1:", "empty"),
        ("not json\n", ":1:", "not a JSON line"),
        ("[1, 2]\n", ":1:", "not a JSON object"),
        ('{"trace": "other", "version": 1}\n', ":1:", "not a txutp trace"),
        ('{"trace": "txutp"}\n', ":1:", "version"),
        ('{"trace": "txutp", "version": 99}\n', ":1:", "newer"),
        (HEADER_LINE + '{"t": 0, "name": "a"}\n{"t": 1, "name": \n{"t": 2, "name": "b"}\n', ":3:", "not a JSON line"),
        (HEADER_LINE + '{"t": 0, "name": "a"}\n\n"just a string"\n', ":4:", "not a JSON object"),
        (HEADER_LINE + '{"name": "a"}\n', ":2:", '"t"'),
        (HEADER_LINE + '{"t": 1, "name": 5}\n', ":2:", '"name"'),
        (HEADER_LINE + '{"t": true, "name": "x"}\n', ":2:", '"t"'),
    ],
)
def test_a_malformed_trace_names_the_file_and_line(tmp_path, text, where, what):
    path = write_file(tmp_path, text, "broken.jsonl")
    with pytest.raises(ValueError) as caught:
        _, events = read_trace(path)
        list(events)
    message = str(caught.value)
    assert message.startswith(path + where), message
    assert what in message


def test_a_last_line_cut_short_and_blank_lines_are_skipped(tmp_path):
    path = write_file(tmp_path, HEADER_LINE + '{"t": 0, "name": "a"}\n\n{"t": 1, "name": "b"}\n{"t": 2, "na')
    _, events = read_trace(path)
    assert [e["name"] for e in events] == ["a", "b"]


def test_unknown_events_and_fields_are_passed_through(tmp_path):
    text = (
        json.dumps({"trace": "txutp", "version": 1, "future_header_field": [1, 2]})
        + "\n"
        + '{"t": 0.5, "name": "quantum_entanglement", "spin": "up"}\n'
        + '{"t": 0.6, "name": "loss", "seq": 3, "reason": "time", "confidence": 0.9}\n'
    )
    header, events = read_trace(write_file(tmp_path, text))
    assert header["future_header_field"] == [1, 2]
    listed = list(events)
    assert listed[0] == {"t": 0.5, "name": "quantum_entanglement", "spin": "up"}
    summary = summarize(listed)
    assert summary["events"] == 2 and summary["losses"] == 1 and summary["losses_by_reason"] == {"time": 1}


# ---------------------------------------------------------------------- summaries


def test_summarize_adds_up_a_hand_made_trace():
    events = [
        {"t": 0.0, "name": "packet_sent", "type": "SYN", "seq": 1, "ack": 0, "size": 20, "payload": 0},
        {"t": 0.05, "name": "packet_received", "type": "STATE", "seq": 9, "ack": 1, "size": 20, "payload": 0},
        {"t": 0.06, "name": "packet_sent", "type": "DATA", "size": 1020, "payload": 1000, "retransmit": False},
        {"t": 0.06, "name": "packet_sent", "type": "DATA", "size": 520, "payload": 500, "retransmit": False},
        {"t": 0.07, "name": "packet_received", "type": "DATA", "size": 320, "payload": 300},
        {"t": 0.08, "name": "packet_received", "type": "DATA", "size": 320, "payload": 300},
        {"t": 0.3, "name": "loss", "seq": 3, "reason": "timeout"},
        {"t": 0.3, "name": "timeout", "kind": "rto"},
        {"t": 0.3, "name": "packet_sent", "type": "DATA", "size": 520, "payload": 500, "retransmit": True},
        {"t": 0.35, "name": "spurious", "seq": 3},
        {"t": 0.4, "name": "packet_sent", "type": "DATA", "size": 1400, "payload": 1380, "probe": True},
        {"t": 0.5, "name": "loss", "seq": 4, "reason": "not_congestion"},
        {"t": 0.6, "name": "metrics", "cwnd": 3000, "bytes_acked": 1000, "bytes_received": 300},
        {"t": 0.7, "name": "metrics", "cwnd": 3000, "bytes_acked": 1500, "bytes_received": 600},
        {"t": 0.8, "name": "packet_sent", "type": "FIN", "size": 20, "payload": 0, "retransmit": False},
        {"t": 0.9, "name": "timeout", "kind": "idle"},
    ]
    assert summarize(events) == {
        "events": 16,
        "duration": 0.9,
        "packets_sent": 6,
        "packets_received": 3,
        "packets_sent_by_type": {"SYN": 1, "DATA": 4, "FIN": 1},
        "packets_received_by_type": {"STATE": 1, "DATA": 2},
        "retransmissions": 1,
        "payload_bytes_sent": 2880,
        "payload_bytes_retransmitted": 500,
        "payload_bytes_received": 600,
        "datagram_bytes_sent": 3500,
        "datagram_bytes_received": 660,
        "losses": 2,
        "losses_by_reason": {"timeout": 1, "not_congestion": 1},
        "timeouts": 2,
        "timeouts_by_kind": {"rto": 1, "idle": 1},
        "spurious": 1,
        "mtu_probes": 1,
        "bytes_acked": 1500,
        "bytes_received": 600,
    }


def test_summarize_agrees_with_what_the_writer_was_told(tmp_path):
    path = str(tmp_path / "t.jsonl")
    w = writer(path)
    for i in range(100):
        w.packet_sent(1000 + i * 0.01, "DATA", i, 0, 1420, 1400, retransmit=i % 10 == 0)
        w.packet_received(1000 + i * 0.01 + 0.005, "STATE", 7, i, 20, 0, None, 65536)
    w.close(1002.0)
    _, events = read_trace(path)
    summary = summarize(events)
    assert summary["packets_sent"] == summary["packets_received"] == 100
    assert summary["retransmissions"] == 10
    assert summary["payload_bytes_sent"] == 90 * 1400 and summary["payload_bytes_retransmitted"] == 10 * 1400
    assert summary["duration"] == pytest.approx(0.995)
