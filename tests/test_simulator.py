"""The simulator itself: its clocks and its event loop."""

from __future__ import annotations

from txutp.simulator import Network


def test_a_timer_fires_on_a_host_whose_clock_conversion_rounds_down() -> None:
    # Host clocks are affine in network time, so converting an engine deadline to
    # network time and back can land one ulp short of it. The timer must still
    # fire there, not be re-armed at the same instant forever.
    net = Network(seed=1)
    client = net.add_host(("10.0.0.1", 6881), clock_offset=3.7, clock_drift_ppm=80)
    server = net.add_host(("10.0.0.2", 6881), accepting=True)
    net.run(until=5.0142)
    conn = client.connect(server.address)  # no link: the SYN is lost and must be resent
    deadline = client.context.get_timer()
    assert deadline is not None
    fires_at = client._global_time(deadline)
    assert client.local_time(fires_at) < deadline, "the scenario no longer rounds down; pick another instant"
    sent_before = conn.stats().packets_sent

    end = fires_at + 0.001
    assert net.run(until=end, max_steps=1000) == end
    assert conn.stats().packets_sent == sent_before + 1
