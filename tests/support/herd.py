"""T10 of docs/reliability.md §c, the thundering herd: N agent processes connected to one
Mosquitto, the broker restarted on the same port; do their reconnects spread out?

Each agent is `tests.support.herd_agent` in its own process (a real Publisher, test-profile
timers), started and stopped here by PID. The figures: the most agents connecting in any
100 ms bin after the restart (the matrix: at most 20 % of them), and when the last one is
back, counted from the moment the restarted broker listens (the matrix: reconnect cap +
jitter + 2 s; the publisher's jitter lies inside the cap, so the bound is cap + 2 s).
Shared by tests/delivery/test_delivery_chaos.py (20 agents) and bench/soak.py (50).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from joserfc.jwk import OKPKey

from agent.protocol.envelope import public_jwk
from tests.support.mosquitto import Broker
from tests.support.paths import python_env
from tests.support.waiting import wait_until

RECONNECT_MAX_S = 2.0  # herd_agent's cap
BIN_S = 0.1


@dataclass
class HerdFigures:
    agents: int
    reconnected: int
    busiest_bin: int  # most agents connecting in one 100 ms bin after the restart
    last_back_s: float  # the last agent's reconnect, seconds after the broker listened again
    offsets: list[float]  # every agent's reconnect, seconds after the broker listened again

    @property
    def busiest_share(self) -> float:
        return self.busiest_bin / self.agents


class _Agent:
    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(command, env=python_env(), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.connects: list[float] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("connected "):
                self.connects.append(float(line.split()[1]))

    def stop(self) -> str:
        """Close its stdin (it exits), kill it by PID if it does not; its stderr."""
        assert self.process.stdin is not None
        assert self.process.stderr is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.reader.join(5)
        return self.process.stderr.read()


def run_herd(tmp_path: Path, agents: int) -> tuple[HerdFigures, list[str]]:
    """Start `agents` agents, restart the broker once they are all connected, wait for them
    all to come back; the figures and every agent's stderr."""
    bureau_jwk = tmp_path / "bureau.jwk.json"
    bureau_jwk.write_text(json.dumps(public_jwk(OKPKey.generate_key("Ed25519"))))
    with Broker(tmp_path, "max_connections -1") as broker:
        herd = [
            _Agent([sys.executable, "-m", "tests.support.herd_agent", broker.url,
                    f"herd-{n:03d}", str(tmp_path / f"outbox-{n:03d}.db"), str(bureau_jwk)])
            for n in range(agents)
        ]
        errors: list[str] = []
        try:
            assert wait_until(lambda: all(a.connects for a in herd), 60 + agents), (
                f"{sum(bool(a.connects) for a in herd)}/{agents} agents connected"
            )
            time.sleep(1.0)  # settled: none is in its first seconds
            broker.stop()
            broker.start()
            listening_at = time.monotonic()
            back = wait_until(
                lambda: all(a.connects[-1] > listening_at for a in herd),
                RECONNECT_MAX_S + 10, step=0.02,
            )
        finally:
            errors = [a.stop() for a in herd]
        offsets = sorted(
            min(t for t in a.connects if t > listening_at) - listening_at
            for a in herd if a.connects[-1] > listening_at
        )
    bins = Counter(int(offset // BIN_S) for offset in offsets)
    figures = HerdFigures(agents, len(offsets), max(bins.values(), default=0),
                          max(offsets, default=float("inf")), offsets)
    assert back or figures.reconnected < agents
    return figures, errors
