"""Fault matrix rows C1 (wall clock jumps) and C2 (faked monotonic clock), docs/reliability.md §c.

C2 runs the real `tieragent run` under Debian's libfaketime (`faketime`, installed by
.ci/setup). C1's mid-run jumps use an injected clock: libfaketime cannot step the wall clock
alone for Python here, because with `FAKETIME_DONT_FAKE_MONOTONIC=1` (the only way to keep
monotonic time real) its clock_nanosleep interposition makes `time.sleep` fail with EINVAL.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from itertools import pairwise
from pathlib import Path

import pytest
from agent_testkit import cli

from agent.clock_watch import ClockWatch, faked_monotonic, watch_clock
from tests.support.ports import free_port

ROOT = Path(__file__).parents[2]
CONFIG = Path(__file__).with_name("data") / "agent.yaml"
WARNING = "monotonic clock reads"


class SteppedClocks:
    """A monotonic clock advanced by the test, and a wall clock that may be stepped."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall_offset = 1.8e9

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.mono + self.wall_offset


@pytest.mark.parametrize("step_s", [3600.0, -3600.0, 5.0, -2.5])
def test_C1_a_wall_clock_step_is_detected_at_the_next_check(
        step_s: float, caplog: pytest.LogCaptureFixture) -> None:
    """If the wall clock steps by ±1 h (or a few seconds) between two checks made every
    0.5 s, then the next check reports the step's size and direction once (so ≤ 1 s after
    it), and the checks after it stay quiet."""
    clocks = SteppedClocks()
    watch = ClockWatch(clocks.wall, clocks.monotonic)
    found: list[tuple[float, float]] = []
    jump_at = 1010.2
    with caplog.at_level(logging.WARNING, logger="tieragent.clock"):
        for tick in range(40):
            clocks.mono = 1000.0 + 0.5 * tick
            if clocks.mono >= jump_at and clocks.wall_offset == 1.8e9:
                clocks.wall_offset += step_s
            step = watch.check()
            if step is not None:
                found.append((clocks.mono, step))
    assert len(found) == 1 and watch.jumps == 1
    detected_at, step = found[0]
    assert step == pytest.approx(step_s)
    assert 0 <= detected_at - jump_at <= 1.0
    assert ("forward" if step_s > 0 else "backward") in caplog.text


def test_C1_ntp_slew_and_a_running_clock_are_not_jumps() -> None:
    """If the wall clock drifts by 0.5 s over a minute (NTP slewing) or not at all, then no
    jump is reported."""
    clocks = SteppedClocks()
    watch = ClockWatch(clocks.wall, clocks.monotonic)
    for tick in range(120):
        clocks.mono = 1000.0 + 0.5 * tick
        clocks.wall_offset = 1.8e9 + 0.5 * tick / 120
        assert watch.check() is None
    assert watch.jumps == 0


def test_C1_the_watch_task_counts_a_jump_and_stops_with_the_agent() -> None:
    """If the wall clock steps while `watch_clock` runs as in `tieragent run`, then `on_jump`
    receives the step, and setting the stop event ends the task."""
    offset = {"s": 0.0}

    async def scenario() -> list[float]:
        stop = asyncio.Event()
        steps: list[float] = []
        watch = ClockWatch(lambda: time.time() + offset["s"])
        task = asyncio.create_task(watch_clock(watch, stop, steps.append, interval_s=0.05))
        await asyncio.sleep(0.12)
        offset["s"] = -3600.0
        for _ in range(100):  # bounded: 5 s at most
            if steps:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
        return steps

    steps = asyncio.run(scenario())
    assert len(steps) == 1 and steps[0] == pytest.approx(-3600.0, abs=0.5)


def test_C2_the_self_check_tells_a_faked_monotonic_clock_from_time_since_boot() -> None:
    """If the monotonic clock reads like a wall-clock epoch, then the check says so; time
    since boot (minutes or years of uptime) passes."""
    assert faked_monotonic(1.893456e9, 1.893456e9) is not None
    assert faked_monotonic(1.796e9, 1.796e9 + 0.1) is not None
    assert faked_monotonic(1.796e9, 300.0) is None
    assert faked_monotonic(1.796e9, 3 * 365 * 86400.0) is None
    assert faked_monotonic(time.time(), time.monotonic()) is None  # this machine


def _run_briefly(config: Path, data: Path, prefix: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, *cli("run", "--config", str(config), "--data-dir", str(data),
                       "--metrics-port", "0", "--duration", "3")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


def test_C2_run_under_libfaketime_without_the_monotonic_guard_warns(tmp_path: Path) -> None:
    """If `tieragent run` starts under `faketime '2030-01-01'` (libfaketime faking the
    monotonic clock too, the trap of §c C2), then it warns at start, and runs and stops
    normally; without faketime it does not warn."""
    faketime = shutil.which("faketime")
    assert faketime, "Debian's faketime is missing: run `bash .ci/setup`"
    config = tmp_path / "agent.yaml"
    # Nothing listens on this port: the connector retries, the agent keeps running.
    config.write_text(CONFIG.read_text().replace("port: 5020", f"port: {free_port()}"))
    faked = _run_briefly(config, tmp_path / "faked", [faketime, "2030-01-01"])
    assert faked.returncode == 0, faked.stderr
    assert WARNING in faked.stderr and "FAKETIME_DONT_FAKE_MONOTONIC" in faked.stderr
    assert "Traceback" not in faked.stderr
    plain = _run_briefly(config, tmp_path / "plain", [])
    assert plain.returncode == 0, plain.stderr
    assert WARNING not in plain.stderr


@pytest.mark.parametrize("jump_s", [3600.0, -3600.0])
def test_C1_a_clock_step_gives_no_negative_interval_and_exact_counters(
        tmp_path: Path, jump_s: float) -> None:
    """If the gateway's clock steps by ±1 h while a device produces one piece a second, then
    the store derives no negative interval or delta, the state timeline never overlaps
    itself, and once the clock has passed the time it stepped back from, the good counter's
    deltas add up to exactly the pieces produced (samples older than one already seen are
    skipped and the next newer one carries their count: agent/derive/engine.py)."""
    from agent_testkit import T0, modbus_config, sample

    from agent.store import Store

    store = Store.open(tmp_path / "agent.db", modbus_config())
    store.resume(T0)
    clock, produced = T0 + 1000.0, 0
    try:
        for batch_no in range(100):  # 500 s, the step, 4,500 s: past the step back
            if batch_no == 10:
                clock += jump_s  # the wall clock steps; production goes on
            items = []
            for _ in range(50):
                produced += 1
                items += [sample("state", clock, 1 if batch_no % 4 < 2 else 2),
                          sample("good", clock, produced), sample("reject", clock, 0),
                          sample("energy", clock, 0.1 * produced), sample("auto", clock, 1),
                          sample("temp", clock, 20.5)]
                clock += 1.0
            assert store.ingest(items, advance_to=clock - 1.0).error is None
        conn = store._conn
        assert conn.execute('SELECT count(*) FROM intervals WHERE "end" < start').fetchone()[0] == 0
        assert conn.execute('SELECT count(*) FROM deltas WHERE "end" < start OR delta < 0'
                            ).fetchone()[0] == 0
        spans = conn.execute('SELECT start, "end" FROM intervals WHERE device_id = ? '
                             "ORDER BY start", ("M1",)).fetchall()
        assert all(end <= next_start for (_, end), (next_start, _) in pairwise(spans))
        good = conn.execute("SELECT SUM(delta) FROM deltas WHERE role = 'good_count'"
                            ).fetchone()[0]
        assert good == produced - 1  # the first value is the baseline
    finally:
        store.close()
