"""`tieragent run` does the whole job across local midnights (issue 20, "Done when").

Real processes: `tieragent run` (reporting and delivery configured, nothing else), a real
Mosquitto, `tieragent bureau serve`; the simulator's real OPC UA and Modbus servers run in
this test's own thread. Time: an injectable clock shared by all of them: the simulator's
faces and model take a shifted clock, and every `tieragent` process reads the same shift
from TIERAGENT_CLOCK_OFFSET_S (tieragent/clock.py). libfaketime is not used: its
clock_nanosleep interposition makes Python's `time.sleep` fail with EINVAL.

One scenario in three phases (each phase moves the clock as a calendar would):
A. The agent starts 20 s before a local midnight of the factory (Asia/Shanghai). The day's
   report reaches the bureau with no other command within grace + 60 s.
B. The clock moves to 20 s before the next midnight (a day of downtime in between). The
   agent is killed with SIGKILL 2 s after midnight and restarted: that day's report still
   arrives, once.
C. Two days of downtime: the clock moves two days on; after a restart both missed days are
   reported, in order, and the empty day is not coverage (`insufficient_data`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from agent.outbox import Outbox
from bureau.store import SqliteReportStore, StoredReport
from simulator.live import LiveFactory
from simulator.modbus_face import ModbusFaceConfig
from simulator.opcua_face import OpcUaFaceConfig
from simulator.server import SimulatorServer
from tests.e2e.live_support import agent_config, demo_factory
from tests.support.mosquitto import Broker
from tests.support.paths import python_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

ZONE = ZoneInfo("Asia/Shanghai")
GRACE_S = 5.0
LEAD_S = 12.0  # the agent starts this long before midnight


class ShiftedClock:
    """The wall clock everything in the scenario runs on: real time plus `offset`."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def set_to(self, epoch_s: float) -> None:
        self.offset = epoch_s - time.time()


def next_midnight(after: float) -> tuple[float, date]:
    """The next local midnight after `after` and the day it ends."""
    day = datetime.fromtimestamp(after, ZONE).date()
    following = day + timedelta(days=1)
    return datetime(following.year, following.month, following.day, tzinfo=ZONE).timestamp(), day


@contextlib.contextmanager
def simulator(clock: ShiftedClock) -> Iterator[SimulatorServer]:
    """The demo factory on real OPC UA and Modbus servers in a thread of its own."""
    factory = demo_factory()
    server = SimulatorServer(
        LiveFactory(factory, profile="compressed", seed=11, clock=clock),
        opcua=OpcUaFaceConfig(clock=clock), modbus=ModbusFaceConfig(clock=clock),
        control_port=None, clock=clock,
    )
    ready, stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        async def main() -> None:
            async with server:
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.1)

        try:
            asyncio.run(main())
        except BaseException as error:  # reported by the test
            errors.append(error)
            ready.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(60) and not errors, f"simulator did not start: {errors}"
    try:
        yield server
    finally:
        stop.set()
        thread.join(30)


@dataclass
class Site:
    tmp: Path
    clock: ShiftedClock
    broker: Broker
    config: Path
    factory_id: str
    bureau_db: Path
    bureau_key: Path

    def env(self) -> dict[str, str]:
        return python_env(TIERAGENT_CLOCK_OFFSET_S=repr(self.clock.offset))

    def tieragent(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        handle = (self.tmp / log).open("ab")
        return subprocess.Popen([sys.executable, "-m", "tieragent", *args], env=self.env(),
                                stdout=handle, stderr=subprocess.STDOUT)

    def check(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "tieragent", *args], env=self.env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def agent(self) -> subprocess.Popen[bytes]:
        return self.tieragent("run", "--config", str(self.config), "--data-dir",
                              str(self.tmp / "data"), "--metrics-port", "0", log="agent.log")

    def bureau(self) -> subprocess.Popen[bytes]:
        return self.tieragent("bureau", "serve", "--db", str(self.bureau_db), "--key",
                              str(self.bureau_key), "--broker", self.broker.url,
                              log="bureau.log")

    def reports(self) -> list[StoredReport]:
        store = SqliteReportStore(self.bureau_db)
        try:
            return store.reports(self.factory_id)
        finally:
            store.close()

    def report_of(self, day: date) -> list[StoredReport]:
        return [r for r in self.reports() if r.period_key == day.isoformat()]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.tmp.glob("*.log")))


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def bureau_and_agent(site: Site) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`bureau serve` and `run` on the site's clock; stopped (by PID) on exit."""
    started = [site.bureau(), site.agent()]
    try:
        yield started
    finally:
        for process in reversed(started):
            stop(process)


def arrived(site: Site, day: date, deadline_s: float) -> list[StoredReport]:
    assert wait_until(lambda: bool(site.report_of(day)), deadline_s, 0.5), (
        f"no report of {day} at the bureau\n{site.logs()}")
    return site.report_of(day)


def test_run_reports_each_day_after_midnight_kill_and_downtime(tmp_path: Path) -> None:
    clock = ShiftedClock()
    midnight, day_a = next_midnight(time.time() + 86_400)  # a midnight tomorrow or later
    clock.set_to(midnight - LEAD_S)
    with Broker(tmp_path) as broker, simulator(clock) as sim:
        raw = agent_config(demo_factory(), sim)
        factory_id = raw["factory"]["factory_id"]
        site = Site(tmp_path, clock, broker, tmp_path / "agent.yaml", factory_id,
                    tmp_path / "bureau.db", tmp_path / "bureau-key.pem")
        site.check("bureau", "init-key", "--key", str(site.bureau_key))
        (tmp_path / "bureau.jwk.json").write_text(
            site.check("bureau", "show-key", "--key", str(site.bureau_key)))
        site.check("keys", "init", "--dir", str(tmp_path / "data" / "keys"))
        site.check("bureau", "enroll", "--db", str(site.bureau_db), "--factory", factory_id,
                   "--jwk", str(tmp_path / "data" / "keys" / "agent-key.jwk.json"))
        raw["reporting"] = {"periods": ["day"], "grace_s": GRACE_S, "check_every_s": 1.0}
        raw["delivery"] = {"broker_url": broker.url, "bureau_key": "bureau.jwk.json",
                           "receipt_timeout_s": 5.0, "reconnect_min_s": 0.2,
                           "reconnect_max_s": 2.0}
        site.config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")

        # A. Across midnight, nothing but `run`: the day's report within grace + 60 s.
        clock.set_to(midnight - LEAD_S)
        with bureau_and_agent(site) as processes:
            started = time.monotonic()
            (report_a,) = arrived(site, day_a, LEAD_S + GRACE_S + 60)
            assert time.monotonic() - started <= LEAD_S + GRACE_S + 60
            assert report_a.state == "accepted" and report_a.seq == 1
            # The hour closed and the report was built in child processes: the collecting
            # process never loaded pandas (its C extensions would be mapped).
            assert "/pandas/" not in Path(f"/proc/{processes[1].pid}/maps").read_text()

        # B. Next midnight: SIGKILL 2 s after it, restart; the report arrives once.
        midnight_b, day_b = next_midnight(midnight + 1)
        clock.set_to(midnight_b - LEAD_S)
        with bureau_and_agent(site) as processes:
            assert wait_until(lambda: clock() >= midnight_b + 2, LEAD_S + 10)
            processes[1].kill()  # SIGKILL, no clean-up
            processes[1].wait(10)
            processes.append(site.agent())
            arrived(site, day_b, GRACE_S + 60)
            time.sleep(3)  # a duplicate, if any, would be stored by now
        assert [r.period_key for r in site.reports()] == [day_a.isoformat(), day_b.isoformat()]

        # C. Two days of downtime: both missed days reported on restart, in order.
        day_c = day_b + timedelta(days=1)
        day_d = day_b + timedelta(days=2)
        clock.set_to(midnight_b + 2 * 86_400 + 1)  # Shanghai has no DST
        with bureau_and_agent(site):
            arrived(site, day_d, GRACE_S + 60)
        stored = site.reports()
        assert [r.period_key for r in stored] == [
            day_a.isoformat(), day_b.isoformat(), day_c.isoformat(), day_d.isoformat()]
        assert [r.seq for r in stored] == [1, 2, 3, 4]
        assert [r.received_at for r in stored] == sorted(r.received_at for r in stored)
        assert all(r.state == "accepted" for r in stored)
        # Day C has the minutes collected after midnight B (derived before its report was
        # built, though the restart came two days later); the agent was down all of day D:
        # reported as such, never as a coverage day.
        evaluations = [r.payload()["evaluation"] for r in stored]
        assert [e["coverage"]["day_share"] for e in evaluations] == [1, 1, 1, 0]
        assert {c["status"] for c in evaluations[3]["conditions"]} == {"insufficient_data"}
        assert evaluations[3]["tier_reached"] is None
        outbox = Outbox(tmp_path / "data" / "outbox.db")
        try:
            assert outbox.counts()["acked"] == 4 and outbox.unacked() == 0
        finally:
            outbox.close()
