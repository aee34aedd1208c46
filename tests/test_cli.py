"""``utpcat`` (``python -m txutp``) as subprocesses on loopback: transfers, half-close, IPv6, errors, exit codes."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from twisted.internet import error
from twisted.python.failure import Failure

from txutp import cli
from txutp.transport import UTPConnectionReset, UTPConnectionTimedOut

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UTPCAT = [sys.executable, "-m", "txutp"]


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class Cat:
    """A utpcat subprocess whose stdout and stderr are collected by threads."""

    def __init__(self, *args: str, stdin: object = subprocess.DEVNULL) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [*UTPCAT, *args], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
        )
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.stdoutClosed = threading.Event()
        self._threads = [
            threading.Thread(target=self._drain, args=(self.process.stdout, self.stdout, self.stdoutClosed)),
            threading.Thread(target=self._drain, args=(self.process.stderr, self.stderr, None)),
        ]
        for t in self._threads:
            t.daemon = True
            t.start()

    @staticmethod
    def _drain(pipe, into: bytearray, closed: threading.Event | None) -> None:
        while True:
            data = pipe.read1(65536)
            if not data:
                break
            into += data
        if closed is not None:
            closed.set()

    def waitForStderr(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.stderr.decode(errors="replace"))
            if match:
                return match
            if self.process.poll() is not None:
                time.sleep(0.1)
                match = re.search(pattern, self.stderr.decode(errors="replace"))
                if match:
                    return match
                raise AssertionError(f"utpcat {self.args} exited {self.process.returncode}: {self.stderr!r}")
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} from utpcat {self.args} within {timeout} s: {self.stderr!r}")

    def listeningPort(self) -> int:
        return int(self.waitForStderr(r"listening on .*:(\d+)\n").group(1))

    def wait(self, timeout: float = 30.0) -> int:
        try:
            code = self.process.wait(timeout)
        finally:
            for t in self._threads:
                t.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()


@pytest.fixture
def cats():
    started: list[Cat] = []

    def start(*args: str, stdin: object = subprocess.DEVNULL) -> Cat:
        cat = Cat(*args, stdin=stdin)
        started.append(cat)
        return cat

    yield start
    for cat in started:
        cat.kill()


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def noTraceback(cat: Cat) -> None:
    assert b"Traceback" not in cat.stderr, cat.stderr.decode(errors="replace")


# ---------------------------------------------------------------------- transfers


def test_transfer_both_ways_sha256(cats, tmp_path) -> None:
    up, down = os.urandom(4 * 1024 * 1024), os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "up").write_bytes(up)
    (tmp_path / "down").write_bytes(down)
    with open(tmp_path / "down", "rb") as serverIn, open(tmp_path / "up", "rb") as clientIn:
        server = cats("-v", "-l", "-s", "127.0.0.1", "0", stdin=serverIn)
        port = server.listeningPort()
        client = cats("-v", "127.0.0.1", str(port), stdin=clientIn)
        assert client.wait() == 0, client.stderr
        assert server.wait() == 0, server.stderr
    assert sha(server.stdout) == sha(up)
    assert sha(client.stdout) == sha(down)
    # -v: who connected, then the final statistics (bytes, rate, RTT, packets).
    assert re.search(rb"connection from 127\.0\.0\.1:\d+", server.stderr)
    assert re.search(rb"connected to 127\.0\.0\.1:%d" % port, client.stderr)
    assert re.search(
        rb"sent 4\.0 MiB, received 3\.0 MiB in [\d.]+ s \([\d.]+ [KMG]?i?B/s\), rtt [\d.]+ ms", client.stderr
    )
    assert b"retransmissions" in client.stderr
    noTraceback(client)
    noTraceback(server)


def test_half_close(cats) -> None:
    """The client's stdin EOF reaches the server as EOF; the server's later output still arrives."""
    server = cats("-v", "-l", "-s", "127.0.0.1", "0", stdin=subprocess.PIPE)
    port = server.listeningPort()
    client = cats("127.0.0.1", str(port), stdin=subprocess.PIPE)
    client.process.stdin.write(b"request\n")
    client.process.stdin.close()  # EOF: the client half-closes
    # The server sees the data, then EOF (its stdout closes) while the connection stays up.
    assert server.stdoutClosed.wait(20), server.stderr
    assert bytes(server.stdout) == b"request\n"
    assert server.process.poll() is None and client.process.poll() is None
    server.process.stdin.write(b"response after the client's EOF\n")
    server.process.stdin.close()
    assert client.wait() == 0, client.stderr
    assert server.wait() == 0, server.stderr
    assert bytes(client.stdout) == b"response after the client's EOF\n"


def test_no_stdin_and_keep_listening(cats) -> None:
    """``-k`` serves connections one after another; ``-d`` sends nothing."""
    server = cats("-v", "-k", "-d", "-l", "-s", "127.0.0.1", "0")
    port = server.listeningPort()
    for word in (b"one\n", b"two\n"):
        client = cats("127.0.0.1", str(port), stdin=subprocess.PIPE)
        client.process.stdin.write(word)
        client.process.stdin.close()
        assert client.wait() == 0, client.stderr
        assert client.stdout == b""
    deadline = time.monotonic() + 10
    while bytes(server.stdout) != b"one\ntwo\n" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bytes(server.stdout) == b"one\ntwo\n"
    assert server.process.poll() is None  # still listening
    server.process.send_signal(signal.SIGINT)
    assert server.wait() == cli.EXIT_INTERRUPTED
    noTraceback(server)


@pytest.mark.skipif(not _ipv6(), reason="no IPv6 loopback")
def test_ipv6_loopback(cats) -> None:
    payload = os.urandom(300_000)
    server = cats("-v", "-6", "-l", "-s", "::1", "0", stdin=subprocess.DEVNULL)
    port = server.listeningPort()
    assert "listening on [::1]:" in server.stderr.decode()
    client = cats("-v", "::1", str(port), stdin=subprocess.PIPE)
    client.process.stdin.write(payload)
    client.process.stdin.close()
    assert client.wait() == 0, client.stderr
    assert server.wait() == 0, server.stderr
    assert sha(server.stdout) == sha(payload)
    assert re.search(rb"connection from \[::1\]:\d+", server.stderr)


# ---------------------------------------------------------------------- errors and exit codes


def test_refused_when_the_server_is_busy(cats) -> None:
    """Without -k the server stops listening after its one connection: the next client is refused."""
    server = cats("-v", "-l", "-s", "127.0.0.1", "0", stdin=subprocess.PIPE)
    port = server.listeningPort()
    first = cats("127.0.0.1", str(port), stdin=subprocess.PIPE)
    server.waitForStderr("connection from")
    second = cats("127.0.0.1", str(port))
    assert second.wait() == cli.EXIT_REFUSED
    assert second.stderr.decode() == f"utpcat: connection to 127.0.0.1:{port} refused\n"
    # Ctrl-C on the server resets the first connection.
    server.process.send_signal(signal.SIGINT)
    assert server.wait() == cli.EXIT_INTERRUPTED
    assert first.wait() == cli.EXIT_RESET
    assert first.stderr.decode() == f"utpcat: connection with 127.0.0.1:{port} reset by peer\n"


def test_unanswered_port_times_out(cats) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        started = time.monotonic()
        client = cats("-w", "1", "127.0.0.1", str(port))  # the socket never answers
        assert client.wait() == cli.EXIT_TIMEOUT
    assert time.monotonic() - started < 15
    assert client.stderr.decode() == f"utpcat: connection to 127.0.0.1:{port} timed out\n"


def test_listen_wait_times_out(cats) -> None:
    server = cats("-l", "-s", "127.0.0.1", "-w", "0.3", "0")
    assert server.wait() == cli.EXIT_TIMEOUT
    assert re.fullmatch(r"utpcat: no connection to 127\.0\.0\.1:\d+ within 0\.3 s\n", server.stderr.decode())


def test_port_in_use(cats) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        server = cats("-l", "-s", "127.0.0.1", str(port))
        assert server.wait() == cli.EXIT_BIND
    assert server.stderr.decode() == f"utpcat: cannot bind 127.0.0.1:{port}: Address already in use\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required"),
        (["-l", "70000"], "invalid port '70000' (expected 0-65535)"),
        (["localhost", "0"], "invalid port '0' (expected 1-65535)"),
        (["localhost", "http"], "invalid port 'http'"),
        (["localhost"], "give HOST PORT"),
        (["-k", "localhost", "1"], "-k needs -l"),
        (["-w", "soon", "localhost", "1"], "invalid number of seconds 'soon'"),
        (["-l", "-s", "example.com", "1"], "must be an IP literal"),
        (["-4", "::1", "1"], "-4 with an IPv6 address"),
        (["-x", "localhost", "1"], "unrecognized arguments: -x"),
    ],
)
def test_bad_arguments(argv: list[str], message: str, capsys) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("utpcat: ") and err.count("\n") == 1  # one line


def test_bad_arguments_subprocess() -> None:
    result = subprocess.run([*UTPCAT, "-l", "port"], capture_output=True, cwd=ROOT, timeout=30)
    assert result.returncode == cli.EXIT_USAGE
    assert result.stderr == b"utpcat: invalid port 'port' (expected 0-65535) (see utpcat --help)\n"
    assert result.stdout == b""


@pytest.mark.parametrize(
    ("exception", "code", "message"),
    [
        (error.ConnectionRefusedError(), cli.EXIT_REFUSED, "connection to peer.example:6881 refused"),
        (error.TimeoutError(), cli.EXIT_TIMEOUT, "connection to peer.example:6881 timed out"),
        (UTPConnectionTimedOut(), cli.EXIT_TIMEOUT, "connection with peer.example:6881 timed out"),
        (UTPConnectionReset(), cli.EXIT_RESET, "connection with peer.example:6881 reset by peer"),
        (error.DNSLookupError("no usable address"), cli.EXIT_NOHOST, "cannot resolve 'peer.example'"),
        (error.ConnectionLost(), cli.EXIT_ERROR, "connection with peer.example:6881 lost"),
        (error.ConnectionDone(), cli.EXIT_OK, ""),
    ],
)
def test_failure_messages(exception: Exception, code: int, message: str) -> None:
    assert cli.describeFailure(Failure(exception), "peer.example:6881") == (code, message)


def test_formatting() -> None:
    assert cli.formatBytes(999) == "999 B"
    assert cli.formatBytes(1536) == "1.5 KiB"
    assert cli.formatBytes(5 * 1024 * 1024) == "5.0 MiB"
    assert cli.formatRate(3 * 1024**3) == "3.0 GiB/s"


def test_console_script() -> None:
    script = os.path.join(os.path.dirname(sys.executable), "utpcat")
    if not os.path.exists(script):
        pytest.skip("utpcat is not installed next to this interpreter")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "utpcat -l [options] [ADDR] PORT" in result.stdout
    assert "exit status:" in result.stdout


def test_entry_point_is_declared() -> None:
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="utpcat")
    assert script.value == "txutp.cli:main"


def test_progress_line_on_a_terminal(cats) -> None:
    """With standard error on a terminal, a progress line is redrawn in place (``\\r``) and finished."""
    import pty

    server = cats("-v", "-d", "-l", "-s", "127.0.0.1", "0")
    port = server.listeningPort()
    master, slave = pty.openpty()
    try:
        client = subprocess.Popen(
            [*UTPCAT, "127.0.0.1", str(port)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=slave, cwd=ROOT
        )
        os.close(slave)
        client.stdin.write(os.urandom(100_000))
        client.stdin.flush()
        time.sleep(1.3)  # long enough for a progress line or two
        client.stdin.close()
        assert client.wait(30) == 0
        output = b""
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            output += data
    finally:
        os.close(master)
    assert server.wait() == 0
    assert re.search(rb"\r\x1b\[Ksent 97\.7 KiB, received 0 B in [\d.]+ s \([\d.]+ [KM]iB/s\), rtt [\d.]+ ms", output)
    assert output.endswith(b"\r\n")  # the last line is finished, not left to be overwritten


def test_trace_writes_a_trace_that_plots(cats, tmp_path) -> None:
    """``--trace FILE`` traces the connection; ``python -m txutp.plot`` draws it."""
    from txutp.trace import read_trace, summarize

    server = cats("-v", "-l", "-s", "127.0.0.1", "--trace", str(tmp_path / "server"), "0", stdin=subprocess.DEVNULL)
    port = server.listeningPort()
    client = cats("--trace", str(tmp_path / "client.jsonl"), "127.0.0.1", str(port), stdin=subprocess.PIPE)
    client.process.stdin.write(b"z" * 200_000)
    client.process.stdin.close()
    assert client.wait() == 0, client.stderr
    assert server.wait() == 0, server.stderr
    assert bytes(server.stdout) == b"z" * 200_000
    header, events = read_trace(tmp_path / "client.jsonl")
    assert header["connection"]["initiator"] is True
    assert summarize(events)["payload_bytes_sent"] == 200_000
    [serverTrace] = (tmp_path / "server").iterdir()
    assert serverTrace.name.endswith("-server.jsonl")
    assert summarize(read_trace(serverTrace)[1])["bytes_received"] == 200_000
    plotted = subprocess.run(
        [sys.executable, "-m", "txutp.plot", tmp_path / "client.jsonl", serverTrace, "-o", tmp_path / "p.png"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert plotted.returncode == 0, plotted.stderr
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
