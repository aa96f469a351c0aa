"""T9 of docs/reliability.md §c: a slow and lossy link. The agent (`tieragent report send` in
its own process, test-profile timers) reaches the broker through a FaultProxy that delays
every chunk 500 ms, carries 2 KB/s each way and is reset (RST) at random moments 30-60 s
apart, while a report is committed every `report_every_s` seconds. The figures: every report
delivered (I1-I8), the agent's reconnects against the resets injected, its RSS growth.

Shared by tests/delivery/test_delivery_chaos.py (a short window, resets closer together)
and bench/soak.py (5 minutes, as the matrix writes it).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from joserfc.jwk import OKPKey

from agent.outbox import Outbox
from tests.support.bureau_receiver import start_bureau
from tests.support.fault_proxy import FaultProxy
from tests.support.invariants import check_invariants
from tests.support.mosquitto import Broker
from tests.support.paths import python_env
from tests.support.reports import FACTORY, commit_nth_day

DELAY_S = 0.5
RATE_BYTES_S = 2048


@dataclass
class SlowLinkFigures:
    seconds: float
    reports: int
    resets: int  # RSTs injected
    reconnects: int  # the agent's reconnects_total
    duplicates: int  # resends the bureau de-duplicated
    drained_after_s: float  # from the end of the window to the last receipt
    rss_start_mb: float  # after start-up (first connection)
    rss_max_mb: float

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_max_mb - self.rss_start_mb


def run_slow_link(
    tmp_path: Path, broker: Broker, duration_s: float, report_every_s: float,
    reset_between_s: tuple[float, float] = (30.0, 60.0), seed: int = 9, keepalive_s: int = 2,
) -> SlowLinkFigures:
    rng = random.Random(seed)
    key = OKPKey.generate_key("Ed25519")
    bureau = start_bureau(tmp_path / "bureau.db", broker.url, {FACTORY: key})
    outbox = Outbox(tmp_path / "outbox.db")
    bureau_key = tmp_path / "bureau.jwk.json"
    bureau_key.write_text(json.dumps(bureau.public))
    try:
        with FaultProxy("127.0.0.1", broker.port) as proxy:
            proxy.delay(DELAY_S)
            proxy.throttle(RATE_BYTES_S)
            agent = subprocess.Popen(
                _send_command(tmp_path, proxy.port, bureau_key, keepalive_s), env=python_env(),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            try:
                process = psutil.Process(agent.pid)
                started = time.monotonic()
                next_report, next_reset = started, started + rng.uniform(*reset_between_s)
                resets, n, rss_start, rss_max = 0, 0, 0.0, 0.0
                while time.monotonic() - started < duration_s:
                    now = time.monotonic()
                    if now >= next_report:
                        commit_nth_day(outbox, key, n)
                        n += 1
                        next_report += report_every_s
                    if now >= next_reset:
                        proxy.reset()
                        resets += 1
                        next_reset += rng.uniform(*reset_between_s)
                    rss = process.memory_info().rss / 2**20
                    if not rss_start and proxy.accepted and now - started > 5:
                        rss_start = rss  # imports done, connected
                    rss_max = max(rss_max, rss)
                    time.sleep(0.2)
                window_end = time.monotonic()
                drained = _wait_drained(outbox, 300, process)
                drained_after_s = time.monotonic() - window_end
            finally:
                agent.terminate()  # by its PID; the agent stops cleanly and prints its metrics
                out, err = agent.communicate(timeout=30)
        assert drained, f"not drained: {outbox.counts()}; agent: {err[-3000:]}"
        check_invariants(outbox, bureau, outputs=[err])
        metrics: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return SlowLinkFigures(
            time.monotonic() - started, n, resets, int(metrics.get("reconnects_total", 0)),
            bureau.receiver.metrics["duplicates_total"], drained_after_s, rss_start, rss_max,
        )
    finally:
        bureau.receiver.stop()


def _wait_drained(outbox: Outbox, timeout_s: float, process: psutil.Process) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if outbox.unacked() == 0:
            return True
        if not process.is_running():
            return False
        time.sleep(0.2)
    return outbox.unacked() == 0


def _send_command(
    tmp_path: Path, proxy_port: int, bureau_key: Path, keepalive_s: int
) -> list[str]:
    return [
        sys.executable, "-m", "tieragent", "report", "send",
        "--outbox", str(tmp_path / "outbox.db"), "--broker", f"mqtt://127.0.0.1:{proxy_port}",
        "--factory", FACTORY, "--bureau-key", str(bureau_key), "--protocol", "5",
        "--keepalive-s", str(keepalive_s), "--receipt-timeout-s", "3", "--reconnect-min-s", "0.1",
        "--reconnect-max-s", "2",
    ]
