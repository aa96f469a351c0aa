"""`tieragent run` collects without pandas in its memory (issue 20 item 11: RSS on a gateway).

pandas (and the bureau, report and evaluation code) would stay loaded for good in a process
that runs for years; the collecting process hands the work that needs it to short-lived
children: closing an hour (agent.store.base_rows) and building reports (agent.report_pass).
The memory figures themselves are measured in bench/ingest.py, not here.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
from agent_testkit import T0, modbus_config, sample

from agent.store import Store
from tests.support.paths import ROOT, python_env
from tests.support.ports import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from connector_helpers import ModbusTestServer

CONFIG = Path(__file__).with_name("data") / "agent.yaml"
HEAVY = ("pandas", "sqlalchemy", "influxdb_client", "agent.reporter", "bureau")

# `tieragent run ARGS` as `python -m tieragent` runs it, printing at exit which of HEAVY
# the process had imported.
PROBE = (
    "import atexit, runpy, sys\n"
    f"heavy = {HEAVY!r}\n"
    "atexit.register(lambda: print('LOADED', sorted(m for m in heavy if m in sys.modules)))\n"
    "sys.argv = ['tieragent', *sys.argv[1:]]\n"
    "runpy.run_module('tieragent', run_name='__main__', alter_sys=True)\n"
)


async def test_run_collects_without_loading_pandas(tmp_path: Path) -> None:
    modbus_port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG.read_text().replace("port: 5020", f"port: {modbus_port}"))
    data = tmp_path / "data"
    async with ModbusTestServer(modbus_port, holding={i: 1 for i in range(3)}):
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", PROBE, "run", "--config", str(config), "--data-dir",
             str(data), "--metrics-port", "0", "--duration", "6"],
            capture_output=True, text=True, timeout=90, cwd=ROOT, env=python_env(),
        )
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(data / "agent.db") as conn:
        stored = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert stored > 0, done.stderr[-3000:]  # it did collect and store
    loaded = [line for line in done.stdout.splitlines() if line.startswith("LOADED")]
    assert loaded == ["LOADED []"], done.stdout


def test_closing_hours_in_a_child_gives_the_same_rows(tmp_path: Path) -> None:
    """The hour closed in a child process (as `run` does) is the row closed in-process."""
    frames = []
    for name, in_child in (("here", False), ("child", True)):
        store = Store.open(tmp_path / f"{name}.db", modbus_config(interval_s=10.0))
        store.close_hours_in_child = in_child
        store.resume(T0)
        items = []
        for k in range(360):
            t = T0 + 10 * k
            items += [sample("state", t, 1 if k % 50 else 3), sample("auto", t, True),
                      sample("good", t, k), sample("reject", t, k // 60),
                      sample("energy", t, 0.5 * k)]
        store.ingest(items, advance_to=T0 + 2 * 3600 + 5)
        frames.append(store.base_measures(T0, T0 + 2 * 3600))
        store.close()
    assert len(frames[0]) == 2 and frames[0]["samples_received"].sum() > 0
    pd.testing.assert_frame_equal(frames[0], frames[1])
