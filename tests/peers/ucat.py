"""libutp's own ``ucat``, built by ``setup_peers.sh``, and the shim the benchmark anchor runs it with.

``setup_peers.sh`` copies libutp's source from the utp-native package
(``node/node_modules/utp-native/deps/libutp``: its Makefile, ``ucat.c``, the library) to
``build/libutp/src/`` (git-ignored), runs libutp's Makefile there (``-O3``) and installs its
``ucat-static`` target (libutp linked in; nothing to find at run time) as ``build/libutp/ucat``,
next to ``build/libutp/ucat_shim.so`` built from ``ucat_shim.c``. libutp's and ucat's sources are
used as shipped. ``UCAT_BUILD_DIR`` overrides ``build/libutp`` (for both the script and this module).

The shim (an ``LD_PRELOAD`` library; see ``ucat_shim.c``) gives ucat's UDP socket its buffers
(``UCAT_SHIM_SOCKBUF``), reports the port a ``-p 0`` listener got, and timestamps the bytes ucat
writes to its stdout -- the received stream, as it reaches the application -- reporting the first
and the last once ``UCAT_SHIM_EXPECT`` bytes arrived, with the datagrams sent and received so far.

ucat's usage: ``ucat -l -p PORT`` listens and writes what it receives to stdout; ``ucat HOST PORT``
connects and sends its stdin. Two quirks shape how it is run here:

* a listener whose stdin reaches EOF before a connection exits at once, and ucat only notices an
  EOF that poll() reports as ``POLLIN`` (a pipe whose writer closed shows only ``POLLHUP``): give the
  listener a pipe that stays open;
* once its stdin reached EOF it closes fd 0 but keeps polling it (``POLLNVAL``, at once): it spins
  until libutp destroys the socket, at its next 500 ms timeout check after the close. Stop both
  ends (SIGTERM: the shim reports and exits) once the sink reported the last byte.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PEERS = Path(__file__).resolve().parent
BUILD = Path(os.environ.get("UCAT_BUILD_DIR") or PEERS / "build" / "libutp")
#: Socket buffer ucat gets through the shim in the benchmark: setsockopt(SO_RCVBUF/SO_SNDBUF, 8 MiB)
#: (SO_*BUFFORCE above net.core.*mem_max); Linux reads back twice that.
SOCKBUF = 8 << 20
#: ucat's stdin buffer (``-B``) for a source: what it reads per read() and offers libutp per utp_write().
SOURCE_BUFFER = 1 << 16
UCAT_HINT = "build it with `tests/peers/setup_peers.sh .venv/bin/python` (./run-tests.sh does it)"


def paths(build: Path = BUILD) -> tuple[Path, Path]:
    """``(ucat, shim)`` under ``build``."""
    return build / "ucat", build / "ucat_shim.so"


def ucatProblem(build: Path = BUILD) -> str | None:
    """Why libutp's ucat (with the shim) cannot run (``None``: it can)."""
    ucat, shim = paths(build)
    for what, path in (("libutp's ucat", ucat), ("the ucat shim", shim)):
        if not path.exists():
            return f"{what} is not built ({path} is missing)"
    try:
        out = subprocess.run(
            [str(ucat), "-h"], env={**os.environ, "LD_PRELOAD": str(shim)}, capture_output=True, text=True, timeout=30
        )
    except OSError as e:
        return f"{ucat} does not run: {e}"
    except subprocess.TimeoutExpired:
        return f"{ucat} -h did not exit within 30 s"
    if out.returncode != 1 or "Usage:" not in out.stderr:
        return f"{ucat} -h exited {out.returncode} without its usage: {out.stderr.strip()[-500:]}"
    if "ucat-shim " not in out.stderr:
        return f"{shim} does not load into ucat (LD_PRELOAD): {out.stderr.strip()[-500:]}"
    return None


def requireUcat(build: Path = BUILD) -> None:
    """Raise ``AssertionError`` (a failure, never a skip) unless the built ucat and its shim run."""
    problem = ucatProblem(build)
    if problem is not None:
        raise AssertionError(f"libutp's ucat unavailable: {problem}; {UCAT_HINT}")


def environment(expect: int | None = None, sockbuf: int = SOCKBUF, build: Path = BUILD) -> dict[str, str]:
    """The environment that loads the shim: ``sockbuf`` socket buffers; a sink reports at ``expect`` bytes."""
    env = {**os.environ, "LD_PRELOAD": str(paths(build)[1]), "UCAT_SHIM_SOCKBUF": str(sockbuf)}
    env.pop("UCAT_SHIM_EXPECT", None)
    if expect is not None:
        env["UCAT_SHIM_EXPECT"] = str(expect)
    return env


def sinkArgv(host: str = "127.0.0.1", build: Path = BUILD) -> list[str]:
    """A listening ucat on an ephemeral port (the shim reports it: ``{"event": "bound"}``)."""
    return [str(paths(build)[0]), "-n", "-l", "-s", host, "-p", "0"]


def sourceArgv(port: int, host: str = "127.0.0.1", buffer: int = SOURCE_BUFFER, build: Path = BUILD) -> list[str]:
    """A connecting ucat that sends its stdin (give it a file: ucat reads it ``buffer`` bytes at a time)."""
    return [str(paths(build)[0]), "-n", "-B", str(buffer), host, str(port)]


def parseReport(line: str) -> dict[str, Any] | None:
    """The shim's report on ``line`` (``ucat-shim {json}``), or ``None``."""
    if not line.startswith("ucat-shim "):
        return None
    return dict(json.loads(line[len("ucat-shim ") :]))


class _Reports:
    """The shim's reports on a process's stderr, read as they come (every other line is kept as text)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stderr is not None
        self.popen = popen
        self.stderr: IO[bytes] = popen.stderr
        self.text = ""
        self.reports: list[dict[str, Any]] = []

    def _add(self, data: bytes) -> None:
        done = len(self.text) - len(self.text.rpartition("\n")[2])
        self.text += data.decode(errors="replace")
        lines = self.text[done:].split("\n")[:-1]
        self.reports += [r for r in map(parseReport, lines) if r is not None]

    def find(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.reports if r["event"] == event]

    def wait(self, event: str, deadline: float) -> dict[str, Any]:
        """The first report ``event``, waiting for it until ``deadline`` (``time.monotonic()``)."""
        fd = self.stderr.fileno()
        while not self.find(event):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.popen.args}: no {event!r} report in time; stderr: {self.text[-2000:]}")
            if select.select([fd], [], [], left)[0]:
                data = os.read(fd, 65536)
                if not data:
                    raise RuntimeError(f"{self.popen.args} ended before its {event!r} report: {self.text[-2000:]}")
                self._add(data)
        return self.find(event)[0]

    def finish(self) -> None:
        self._add(self.stderr.read())
        self.stderr.close()


@dataclass
class Transfer:
    """One ucat -> ucat transfer: the sink's ``received`` report, every report, each end's ``wait4`` usage."""

    received: dict[str, Any]
    sink: list[dict[str, Any]] = field(default_factory=list)
    source: list[dict[str, Any]] = field(default_factory=list)
    sinkUsage: Any = None
    sourceUsage: Any = None


def transfer(
    data: Path,
    size: int,
    sinkOutput: int | IO[Any] = subprocess.DEVNULL,
    sockbuf: int = SOCKBUF,
    buffer: int = SOURCE_BUFFER,
    timeout: float = 120.0,
    build: Path = BUILD,
) -> Transfer:
    """Send the file ``data`` (``size`` bytes) from a connecting ucat to a listening one on loopback.

    The sink writes what it receives to ``sinkOutput`` (``/dev/null``: no pipe behind it); the shim
    timestamps those writes. Once it has written ``size`` bytes both ends get SIGTERM (see above: the
    measurement is done, and ucat's own teardown would spin), and are reaped with ``os.wait4``.
    """
    procs: list[subprocess.Popen[bytes]] = []
    reports: list[_Reports] = []
    deadline = time.monotonic() + timeout
    try:
        # The listener's stdin: a pipe left open (at EOF it would quit before any connection).
        sink = subprocess.Popen(
            sinkArgv(build=build),
            stdin=subprocess.PIPE,
            stdout=sinkOutput,
            stderr=subprocess.PIPE,
            env=environment(expect=size, sockbuf=sockbuf, build=build),
        )
        procs.append(sink)
        reports.append(_Reports(sink))
        port = int(reports[0].wait("bound", deadline)["port"])
        with data.open("rb") as f:
            source = subprocess.Popen(
                sourceArgv(port, buffer=buffer, build=build),
                stdin=f,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=environment(sockbuf=sockbuf, build=build),
            )
        procs.append(source)
        reports.append(_Reports(source))
        received = reports[0].wait("received", deadline)
    finally:
        for popen in reversed(procs):
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        usages = []
        for popen in procs:
            _, status, usage = os.wait4(popen.pid, 0)
            popen.returncode = os.waitstatus_to_exitcode(status)
            usages.append(usage)
            if popen.stdin is not None:
                popen.stdin.close()
        for r in reports:
            r.finish()
    return Transfer(received, reports[0].reports, reports[1].reports, usages[0], usages[1])
