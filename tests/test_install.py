"""``pip install`` of a built wheel into a fresh venv: the plugins are found there, outside the checkout.

The fresh venv has no pip of its own (``venv --without-pip``, fast); the test venv's pip installs into it
with ``pip --python``. Twisted and its dependencies come from the package index (or pip's cache).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile

from twisted.trial.unittest import SynchronousTestCase

from .twisted_helpers import tempDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args: str, cwd: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=600, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


class InstallTests(SynchronousTestCase):
    def test_wheel_in_a_fresh_venv(self) -> None:
        work = tempDir(self)
        dist = work.child("dist")
        run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist.path, ROOT)
        wheels = [p for p in dist.listdir() if p.endswith(".whl")]
        self.assertEqual(len(wheels), 1, wheels)
        wheel = dist.child(wheels[0]).path
        names = zipfile.ZipFile(wheel).namelist()
        self.assertIn("twisted/plugins/txutp_plugins.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertIn("txutp/py.typed", names)
        self.assertIn("txutp/engine/_context.py", names)
        self.assertFalse([n for n in names if n.startswith("tests/")])

        venv = work.child("venv")
        run(sys.executable, "-m", "venv", "--without-pip", venv.path)
        python = venv.child("bin").child("python").path
        run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel)
        check = textwrap.dedent(
            """
            import sys
            from twisted.application.service import IServiceMaker
            from twisted.internet.interfaces import (
                IStreamClientEndpointStringParserWithReactor, IStreamServerEndpointStringParser)
            from twisted.plugin import getPlugins
            servers = [p for p in getPlugins(IStreamServerEndpointStringParser) if p.prefix == "utp"]
            clients = [p for p in getPlugins(IStreamClientEndpointStringParserWithReactor) if p.prefix == "utp"]
            makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "utp"]
            assert len(servers) == len(clients) == len(makers) == 1, (servers, clients, makers)
            from twisted.internet import reactor
            from twisted.internet.endpoints import clientFromString, serverFromString
            import txutp
            assert txutp.__file__.startswith(sys.prefix), txutp.__file__
            print(type(serverFromString(reactor, "utp:0")).__name__)
            print(type(clientFromString(reactor, "utp:example.com:6881")).__name__)
            """
        )
        out = run(python, "-c", check, cwd=work.path)
        self.assertEqual(out.split(), ["UTPServerEndpoint", "UTPClientEndpoint"])
        # twistd in that venv lists the plugin.
        help = run(venv.child("bin").child("twistd").path, "--help", cwd=work.path)
        self.assertIn("utp", help.split())
