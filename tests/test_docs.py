"""The README and the docs tell the truth: the "swap TCP for uTP" snippet runs, the demo runs, the commands exist."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT)


def read(*path: str) -> str:
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def section(markdown: str, title: str) -> str:
    start = markdown.index(f"## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else len(markdown)]


def freeUDPPort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_swap_tcp_for_utp_snippet_runs() -> None:
    text = section(read("README.md"), "Swap TCP for uTP")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    code = blocks[0]
    assert '"utp:9000:interface=127.0.0.1"' in code and '"utp:127.0.0.1:9000"' in code
    code = code.replace("9000", str(freeUDPPort()))  # the same program, on a port that is free now
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "HELLO OVER UTP\n"


def test_the_two_commands() -> None:
    readme = read("README.md")
    for script in ("run-demo.sh", "run-tests.sh"):
        assert f"\n    ./{script}\n" in readme, f"the README does not show ./{script}"
        assert os.access(os.path.join(ROOT, script), os.X_OK), f"{script} is not executable"
    assert "exec ./run-tests.sh" in read(".ci", "run")
    assert "sphinx-build -W" in read("run-tests.sh")


def test_demo_runs() -> None:
    """run-demo.sh past its setup, in this environment (it needs utpcat and twistd here)."""
    bin = os.path.dirname(sys.executable)
    if not (os.path.exists(os.path.join(bin, "utpcat")) and os.path.exists(os.path.join(bin, "twistd"))):
        pytest.skip("utpcat or twistd is not installed next to this interpreter")
    result = subprocess.run(
        ["bash", os.path.join(ROOT, "run-demo.sh")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(ENV, TXUTP_DEMO_BIN=bin),
        timeout=120,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert out.count("  match\n") == 2
    assert "file.bin: sha256 match" in out
    assert "demo OK" in out
    assert "Traceback" not in out


def test_docs_pages_are_in_the_toctree() -> None:
    index = read("docs", "index.rst")
    pages = sorted(p[:-4] for p in os.listdir(os.path.join(ROOT, "docs")) if p.endswith(".rst") and p != "index.rst")
    for page in pages:
        assert re.search(rf"^   {re.escape(page)}$", index, re.M), f"docs/{page}.rst is not in the toctree"
