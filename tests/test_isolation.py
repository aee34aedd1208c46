"""The engine and the simulator must not import Twisted."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_engine_and_simulator_do_not_import_twisted() -> None:
    code = textwrap.dedent(
        """
        import sys
        import txutp
        import txutp.engine
        import txutp.engine._connection, txutp.engine._context, txutp.engine._packet
        import txutp.engine._rtt, txutp.engine._state, txutp.engine.congestion
        import txutp.simulator
        leaked = sorted(m for m in sys.modules if m == "twisted" or m.startswith("twisted."))
        assert not leaked, leaked
        print("clean")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"
