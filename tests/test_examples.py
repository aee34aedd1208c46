"""Every program in examples/ runs as its usage line says, on loopback, as a subprocess."""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
# The checkout root on the path finds twisted/plugins whatever kind of install runs the tests.
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="error::DeprecationWarning:__main__")


def example(name: str) -> str:
    return os.path.join(EXAMPLES, name)


def run(*args: str, timeout: float = 30) -> str:
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


class Server:
    """A server example in the background; ``port`` is read from its first line of output."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=ENV
        )
        self.output = b""
        self._got = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output += line
            self._got.set()

    @property
    def port(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            match = re.search(rb"UDP port (\d+)", self.output)
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            self._got.wait(0.05)
        raise AssertionError(f"no port from {self.process.args}: {self.output!r}")

    def stop(self) -> bytes:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.output


@pytest.fixture
def server():
    started: list[Server] = []

    def start(*args: str) -> Server:
        s = Server(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def test_echo(server) -> None:
    echo = server(example("echo_server.py"), "utp:0:interface=127.0.0.1")
    out = run(example("echo_client.py"), f"utp:127.0.0.1:{echo.port}", "hello, uTP")
    assert out.startswith("reply: 'hello, uTP'\n")
    assert re.search(r"rtt [\d.]+ ms, \d+ packets sent, 0 retransmitted", out)
    assert b"echo server listening on 127.0.0.1 UDP port" in echo.output


def test_send_file(server, tmp_path) -> None:
    data = os.urandom(3_000_000)
    source, copy = tmp_path / "source.bin", tmp_path / "copy.bin"
    source.write_bytes(data)
    receiver = server(example("send_file.py"), "receive", "0", str(copy))
    result = subprocess.run(
        [sys.executable, example("send_file.py"), "send", "127.0.0.1", str(receiver.port), str(source)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=30,
        check=True,
    )
    digest = hashlib.sha256(data).hexdigest()
    assert result.stdout == f"sent 3000000 bytes, sha256 {digest}\n"
    assert re.search(r"2\.9 / 2\.9 MiB +[\d.]+ MiB/s +rtt [\d.]+ ms", result.stderr)  # the progress line
    assert receiver.process.wait(15) == 0
    assert f"received 3000000 bytes, sha256 {digest}".encode() in receiver.output
    assert copy.read_bytes() == data


def test_http(server) -> None:
    web = server(example("http_server.py"), "utp:0:interface=127.0.0.1")
    out = run(example("http_client.py"), f"http://127.0.0.1:{web.port}/")
    assert out.startswith("200 OK, 26 bytes")
    assert out.endswith("hello over uTP, 127.0.0.1\n")
    n = 2_000_000
    out = run(example("http_client.py"), f"http://127.0.0.1:{web.port}/bytes?n={n}")
    assert out.startswith(f"200 OK, {n} bytes")
    assert f"sha256 {hashlib.sha256(random.Random(n).randbytes(n)).hexdigest()}" in out


def test_amp(server) -> None:
    amp = server(example("amp_sum.py"), "server", "utp:0:interface=127.0.0.1")
    assert run(example("amp_sum.py"), "client", f"utp:127.0.0.1:{amp.port}", "6", "4") == "6 + 4 = 10\n6 / 4 = 1.5\n"
    out = run(example("amp_sum.py"), "client", f"utp:127.0.0.1:{amp.port}", "1", "0")
    assert out == "1 + 0 = 1\n1 / 0: the server says ZeroDivisionError\n"


def test_dht_shared_port(server) -> None:
    dht = server(example("dht_shared_port.py"), "serve", "0")
    out = run(example("dht_shared_port.py"), "check", str(dht.port))
    assert re.fullmatch(
        r"DHT ping answered by node [0-9a-f]{40}\nuTP echo on the same port: 'hello from uTP'\n", out
    ), out


def test_envelope_carrier(server) -> None:
    catalogue = server(example("envelope_carrier.py"), "serve", "0")
    digest = hashlib.sha256(random.Random(29).randbytes(2_000_000)).hexdigest()
    out = run(example("envelope_carrier.py"), "fetch", str(catalogue.port), "random.bin")
    assert re.fullmatch(
        rf"random\.bin: 2000000 of 2000000 bytes over uTP, connection id \d+, sha256 {digest}\n", out
    ), out
    assert (
        run(example("envelope_carrier.py"), "fetch", str(catalogue.port), "nothing")
        == "nothing: not in the catalogue\n"
    )


def test_tcp_bridge() -> None:
    result = subprocess.run(
        ["bash", example("tcp_bridge.sh")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(ENV, PYTHON=sys.executable),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fetched 2000000 bytes through TCP -> uTP -> TCP" in result.stdout
    assert "sha256 match" in result.stdout


def test_every_example_is_tested_and_listed() -> None:
    names = sorted(n for n in os.listdir(EXAMPLES) if n.endswith((".py", ".sh")))

    def read(path: str) -> str:
        with open(path, encoding="utf-8") as f:
            return f.read()

    tested = read(__file__)
    listing = read(os.path.join(EXAMPLES, "README.md"))
    for name in names:
        assert f'example("{name}")' in tested, f"{name} has no test"
        assert f"`{name}`" in listing, f"{name} is not in examples/README.md"
        assert "Usage:" in read(example(name)), f"{name} has no usage line"
