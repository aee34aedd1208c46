"""A missing interop peer fails the suite with a clear message: it is never a silent skip."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.interop_helpers import ROOT, SETUP_HINT, requireLibtorrent, requireUtpNative

SETUP = ROOT / "tests" / "peers" / "setup_peers.sh"


def test_the_peers_are_installed() -> None:
    requireUtpNative()
    requireLibtorrent()


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
