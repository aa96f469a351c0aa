"""Backfill of the simulator's history equals its ledger; `measures` prints the sums."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from agent_testkit import cli

from agent.config import parse_config
from agent.store import Store
from indicators.timemodel import base_measures
from simulator.agent_config import export_agent_config
from simulator.history import generate_history
from simulator.ledger import load_ledger
from simulator.model import load_factory

ROOT = Path(__file__).parents[2]
START = 1_767_196_800.0  # 2026-01-01T00:00:00+08:00 (Asia/Shanghai)
DAYS = 3


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("backfill")
    factory = load_factory(ROOT / "config" / "factories" / "demo.yaml")
    generate_history(factory, tmp / "history", START, START + DAYS * 86400, seed=11,
                     sample_interval_s=300.0)
    config_file = tmp / "agent.yaml"
    raw = export_agent_config(factory, "opc.tcp://127.0.0.1:4840", "127.0.0.1", 5020)
    config_file.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    proc = subprocess.run(
        cli("backfill", "--config", str(config_file), "--history", str(tmp / "history"),
            "--data-dir", str(tmp / "data")),
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return tmp, config_file, tmp / "data" / "agent.db"


def test_backfilled_base_measures_equal_the_ledger(imported: tuple[Path, Path, Path]) -> None:
    """If the history is imported, then hourly counts, energy and state times equal the
    ledger's (counts exactly, times and energy within 1e-9)."""
    tmp, config_file, db = imported
    config = parse_config(yaml.safe_load(config_file.read_text()))
    ledger = load_ledger(tmp / "history")
    store = Store.open(db, config)
    ours = store.base_measures(START, START + DAYS * 86400)
    store.close()
    networked = sorted(ours["device_id"].unique())
    assert len(networked) == sum(1 for d in config.devices if d.connection != "none")
    hourly = ledger.hourly[ledger.hourly["device_id"].isin(networked)]
    merged = hourly.merge(ours, on=["device_id", "hour_start"], suffixes=("_ledger", ""))
    assert len(merged) == len(hourly) == len(ours) == len(networked) * DAYS * 24
    for column in ("produced", "scrap"):
        assert (merged[f"{column}_ledger"] == merged[column]).all(), column
    np.testing.assert_allclose(merged["energy_kwh"], merged["energy_kwh_ledger"], atol=1e-9)
    # Time elements: the ledger's intervals through the same time model.
    intervals = ledger.intervals[ledger.intervals["device_id"].isin(networked)]
    ideal = {d.id: d.ideal_cycle_time_s for d in config.devices if d.ideal_cycle_time_s}
    truth = base_measures(intervals.assign(auto=intervals["auto"].astype(bool)),
                          pd.DataFrame(columns=["device_id", "role", "start", "end", "delta"]),
                          pd.DataFrame(), ideal)
    both = truth.merge(ours, on=["device_id", "hour_start"], suffixes=("_ledger", ""))
    assert len(both) == len(ours)
    for column in ("pot_s", "pdt_s", "apt_s", "asut_s", "adet_s", "adot_s", "unk_s",
                   "auto_apt_s", "unplanned_stops", "failures"):
        np.testing.assert_allclose(both[column], both[f"{column}_ledger"], atol=1e-9,
                                   err_msg=column)
    # Every grid slot of every required signal arrived.
    assert (ours["samples_expected"] == ours["samples_received"]).all()
    required = sum(s.required for d in config.devices for s in d.signals)
    assert ours["samples_expected"].sum() == required * DAYS * 24 * 12


def test_measures_prints_period_sums_as_json(imported: tuple[Path, Path, Path]) -> None:
    """If `measures --json` is asked for a local day, then it sums exactly that day's hours."""
    tmp, config_file, db = imported
    proc = subprocess.run(
        cli("measures", "--config", str(config_file), "--period", "2026-01-02", "--json",
            "--data-dir", str(db.parent)),
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["start"] == START + 86400 and out["end"] == START + 2 * 86400
    assert out["total"]["pot_s"] == 86400 * len(out["devices"])
    ledger = load_ledger(tmp / "history").hourly
    day = ledger[(ledger["hour_start"] >= out["start"]) & (ledger["hour_start"] < out["end"])]
    day = day[day["device_id"].isin(out["devices"])]
    assert out["total"]["produced"] == day["produced"].sum()


def test_backfill_refuses_to_overlap_existing_data(imported: tuple[Path, Path, Path]) -> None:
    """If the store already holds later data, then an import of another history is refused,
    exit 1; the same history again imports nothing (resumable, agent.backfill)."""
    tmp, config_file, db = imported
    again = subprocess.run(
        cli("backfill", "--config", str(config_file), "--history", str(tmp / "history"),
            "--data-dir", str(db.parent)),
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr
    other = tmp / "other-history"
    shutil.copytree(tmp / "history", other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "note": "another history"}))
    proc = subprocess.run(
        cli("backfill", "--config", str(config_file), "--history", str(other),
            "--data-dir", str(db.parent)),
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 1
    assert "already has data" in proc.stderr and "Traceback" not in proc.stderr


def test_backfill_of_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        cli("backfill", "--config", str(Path(__file__).with_name("data") / "agent.yaml"),
            "--history", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "data")),
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 1 and "meta.json" in proc.stderr
    assert "Traceback" not in proc.stderr
