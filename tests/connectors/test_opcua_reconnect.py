"""The OPC UA reconnect schedule (issue 16 item 4, docs/reliability.md b.4 and F1): an
immediate first retry, delays of at most `reconnect_fast_s` during the first minute of an
outage, and refusals an operator must fix (credentials, trust) backed off to minutes and
logged once, until something changes.

The schedule's clock and the connector's sleep are injected, so minutes of backoff are
checked in well under a second of real time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from pathlib import Path

import pytest
from connector_helpers import Recorder, running
from connector_opcua_server import OpcUaTestServer

from connectors.backoff import ReconnectSchedule
from connectors.base import LinkState, SignalBinding
from connectors.config import OpcUaAddress, OpcUaConnection, OpcUaSecurity, Secret
from connectors.opcua import OpcUaConnector
from tests.support.ports import free_port
from tests.support.waiting import wait_until_async


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def _schedule(clock: FakeClock, **overrides: float) -> ReconnectSchedule:
    settings = {"min_s": 0.5, "fast_s": 4.0, "fast_window_s": 60.0, "max_s": 30.0,
                "refused_max_s": 300.0}
    settings.update(overrides)
    return ReconnectSchedule(clock=clock, rng=random.Random(7), **settings)


def test_first_retry_is_immediate_and_the_first_minute_stays_fast() -> None:
    """If a session is lost and the server stays away, then the first retry is at once,
    every delay in the first 60 s is at most reconnect_fast_s, later ones grow to
    reconnect_max_s, and a success starts the next outage from the beginning again."""
    clock = FakeClock()
    schedule = _schedule(clock)
    delays: list[tuple[float, float]] = []  # (outage age at the failure, delay)
    for _ in range(200):
        age = schedule.outage_s()
        delay = schedule.failed()
        delays.append((age, delay))
        clock.now += delay + 0.001  # a refused connection fails within a millisecond
    assert delays[0] == (0.0, 0.0)
    fast = [d for age, d in delays if age < 60.0]
    assert max(fast) <= 4.0
    # The ceiling follows the outage's age, so a short outage means short delays.
    assert all(d <= max(0.5, age) for age, d in delays if age < 60.0)
    assert len(fast) < 60  # no busy loop: about 20 attempts in the first minute
    slow = [d for age, d in delays if age >= 60.0]
    assert max(slow) <= 30.0 and max(slow) > 15.0
    schedule.succeeded()
    assert schedule.failed() == 0.0


def test_refusals_back_off_to_minutes() -> None:
    """If attempts keep being refused, then the delays start at reconnect_fast_s, double to
    reconnect_refused_max_s and never fall below half their ceiling; a change of the
    settings starts again from the beginning."""
    clock = FakeClock()
    schedule = _schedule(clock)
    delays = []
    for _ in range(9):
        delays.append(schedule.failed(refused=True))
        clock.now += delays[-1]
    ceilings = [4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    retries_at = [sum(delays[: i + 1]) for i in range(len(delays))]
    assert sum(t <= 7.0 for t in retries_at) <= 2  # at most 3 logins in 7 s (was 6)
    assert max(delays) >= 60.0
    schedule.changed()
    assert schedule.failed(refused=True) <= 4.0


def _conn(endpoint: str, password_file: Path) -> OpcUaConnection:
    return OpcUaConnection(
        endpoint=endpoint,
        request_timeout_s=1.0,
        security=OpcUaSecurity(username="operator", password=Secret(file=password_file)),
    )


async def test_wrong_password_backs_off_to_minutes_logged_once_and_retried_on_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If the server rejects the password, then the connector retries at a growing delay
    that reaches more than a minute (not 6 logins in 7 s), logs the refusal once with
    the count kept in its stats, and when the password file is corrected it tries again
    at once and collects."""
    password = tmp_path / "password"
    password.write_text("wrong", encoding="utf-8")
    server = OpcUaTestServer(free_port(), {"State": 1}, users={"operator": "right"})
    clock = FakeClock()
    recorder = Recorder()
    caplog.set_level(logging.DEBUG, logger="connectors.opcua")
    async with server:
        binding = SignalBinding("CNC-01", "State", 1.0,
                                opcua=OpcUaAddress(node=server.node_id("State")))
        connector = OpcUaConnector("cnc", _conn(server.endpoint, password), [binding],
                                   monotonic=clock, sleep=clock.sleep)
        async with running(connector, recorder):
            await wait_until_async(lambda: connector.stats.refusals >= 8, 30)
            delays = list(connector.retry_delays)
            refused_for = clock.now - 1000.0
            password.write_text("right", encoding="utf-8")
            await wait_until_async(lambda: recorder.latest("State") is not None, 10)
    assert connector.stats.sessions == 1 and connector.stats.refusals >= 8
    assert delays[0] >= 2.0 and max(delays) >= 60.0
    # Each delay is in [ceiling / 2, ceiling] and the ceiling doubles: they only grow
    # until the cap.
    assert all(b >= a for a, b in itertools.pairwise(delays[:7]))
    assert refused_for > 200.0  # minutes of refusals, in well under a second of real time
    warnings = [r for r in caplog.records
                if r.levelno >= logging.WARNING and "refused" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "refused the session" in warnings[0].getMessage()
    assert any("security settings changed" in r.getMessage() for r in caplog.records)
    assert any("collecting again" in r.getMessage() for r in caplog.records)
    assert recorder.states()[-1] == LinkState.CONNECTED
