"""The interop peers run: a missing one fails the suite with a clear message (never a silent skip),
and the bare-engine peer (``tests/peers/engine_peer.py``, no external dependency) completes a run.
So does libutp's own ``ucat``, which ``setup_peers.sh`` builds for the benchmark anchor
(``tests/peers/ucat.py``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.interop_helpers import ENGINE_PEER, ROOT, SETUP_HINT, requireLibtorrent, requireUtpNative
from tests.peers import ucat
from tests.peers.stream import expected, stream_bytes

SETUP = ROOT / "tests" / "peers" / "setup_peers.sh"


def test_the_peers_are_installed() -> None:
    requireUtpNative()
    requireLibtorrent()
    ucat.requireUcat()


def test_missing_node_fails(tmp_path) -> None:
    with pytest.raises(AssertionError) as info:
        requireUtpNative(node=str(tmp_path / "node"))
    assert "utp-native 2.5.3 unavailable: node is not installed" in str(info.value)
    assert SETUP_HINT in str(info.value)


def test_missing_utp_native_fails(tmp_path) -> None:
    with pytest.raises(AssertionError) as info:
        requireUtpNative(nodeModules=str(tmp_path))
    assert "utp-native is not installed under" in str(info.value)
    assert "setup_peers.sh" in str(info.value)


def test_missing_libtorrent_fails() -> None:
    with pytest.raises(AssertionError) as info:
        requireLibtorrent((sys.executable, "-I", "-S"))  # no site-packages: no libtorrent
    assert "libtorrent 2.1.1 unavailable: the PyPI package libtorrent does not import" in str(info.value)
    assert "setup_peers.sh" in str(info.value)


def test_setup_script_fails_loudly_without_node(tmp_path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink("/usr/bin/dirname" if os.path.exists("/usr/bin/dirname") else "/bin/dirname", bin_dir / "dirname")
    out = subprocess.run(
        ["bash", str(SETUP), sys.executable],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        executable="/bin/bash",
    )
    assert out.returncode != 0
    assert "setup_peers: ERROR: node is not installed" in out.stderr


def test_setup_script_fails_loudly_without_python(tmp_path) -> None:
    out = subprocess.run(
        ["bash", str(SETUP), str(tmp_path / "python")], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode != 0
    assert "setup_peers: ERROR: python interpreter" in out.stderr


def test_the_engine_peer_runs_against_itself() -> None:
    """``engine_peer.py connect ... source N`` into ``engine_peer.py listen 0 sink``: the CLI and result line."""
    peer = [sys.executable, "-m", ENGINE_PEER]
    options = ["--linger", "0.2", "--timeout", "30"]
    sink = subprocess.Popen(
        [*peer, "listen", "0", "sink", *options], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None
        ready = sink.stdout.readline()
        assert ready.startswith("READY "), ready + sink.communicate(timeout=30)[1]
        port = ready.split()[1]
        source = subprocess.run(
            [*peer, "connect", "127.0.0.1", port, "source", "300000", *options],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        out, err = sink.communicate(timeout=30)
    finally:
        sink.kill()
    assert source.returncode == 0, source.stdout + source.stderr
    assert sink.returncode == 0, out + err
    sent, received = json.loads(source.stdout.splitlines()[-1]), json.loads(out.splitlines()[-1])
    assert (sent["mode"], sent["bytes_sent"], sent["error"]) == ("source", 300_000, None)
    assert (received["role"], received["bytes"], received["stream_match"]) == ("listen", 300_000, True)
    assert received["sha256"] == expected(300_000)["sha256"]
    assert [e[1] for e in received["events"]][-2:] == ["EndOfStream", "ConnectionClosed"]


def test_missing_ucat_fails(tmp_path) -> None:
    with pytest.raises(AssertionError) as info:
        ucat.requireUcat(tmp_path)
    message = str(info.value)
    assert f"libutp's ucat unavailable: libutp's ucat is not built ({tmp_path / 'ucat'} is missing)" in message
    assert "setup_peers.sh" in message


def test_setup_script_fails_loudly_without_make(tmp_path) -> None:
    """No ucat built (an empty ``UCAT_BUILD_DIR``) and no ``make`` on the PATH: the script names it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "node", "npm"):
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run setup_peers.sh"
        os.symlink(found, bin_dir / tool)
    out = subprocess.run(
        ["bash", str(SETUP), sys.executable],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path), "UCAT_BUILD_DIR": str(tmp_path / "build")},
        capture_output=True,
        text=True,
        timeout=120,
        executable="/bin/bash",
    )
    assert out.returncode != 0, out.stdout + out.stderr
    assert "setup_peers: ERROR: make is not installed: it is needed to build libutp's ucat" in out.stderr
    assert not (tmp_path / "build" / "ucat").exists()


def test_ucat_moves_a_megabyte(tmp_path) -> None:
    """The built ucat -> ucat over loopback, through the shim: 1 MB arrives intact, the shim reports it."""
    ucat.requireUcat()
    size = 1_000_000
    data = tmp_path / "stream"
    data.write_bytes(stream_bytes(0, size))
    with (tmp_path / "received").open("wb") as out:
        t = ucat.transfer(data, size, sinkOutput=out, timeout=60)
    received = (tmp_path / "received").read_bytes()
    assert hashlib.sha256(received).hexdigest() == expected(size)["sha256"]
    assert (t.received["bytes"], len(received)) == (size, size)
    assert 0 < t.received["first"] <= t.received["last"]
    assert t.received["datagrams_received"] >= size // 1382
    exits = [r for r in t.source if r["event"] == "exit"]
    assert exits and exits[0]["datagrams_sent"] >= size // 1382, t.source
    for reports in (t.sink, t.source):
        sockets = [r for r in reports if r["event"] == "socket"]
        assert len(sockets) == 1, reports
        if os.geteuid() == 0:  # SO_RCVBUFFORCE: Linux reads back twice the 8 MiB granted
            assert (sockets[0]["rcvbuf"], sockets[0]["sndbuf"]) == (2 * ucat.SOCKBUF, 2 * ucat.SOCKBUF)
