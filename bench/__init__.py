"""Benchmarks only: each module prints a table or one JSON line, and none is run by the tests.

Run them from the repository root as modules, so that the checkout's ``txutp`` and ``tests``
are the ones imported (no ``sys.path`` games)::

    .venv/bin/python -m bench.suite            # the whole suite against the real peers (README)
    .venv/bin/python -m bench.engine_bench     # the sans-IO engine's hot path
    .venv/bin/python -m bench.interop_bench    # txutp against utp-native and libtorrent
    .venv/bin/python -m bench.recovery_sim     # loss recovery in the simulator
    .venv/bin/python -m bench.ledbat_sim       # LEDBAT and path MTU discovery in the simulator

``utp_bulk``, ``udp_blast``, ``idle_conns``, ``delay_probe`` and ``tcp_bulk`` are the processes
``bench.suite`` starts. To compare two trees, run the same command from each tree's root.

The peer programs the interop tests drive (utp-native, libtorrent, the bare engine, the UDP
relay) live in ``tests/peers/`` (see its README).
"""
