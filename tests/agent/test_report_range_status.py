"""`tieragent report --from/--to` (every day of a range), `report release` (quarantine back to
pending) and `tieragent status` (the data directory at a glance), on a backfilled store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from agent.outbox import PENDING, REJECTED, Outbox
from tieragent.cli import _register_subcommands, app

ROOT = Path(__file__).resolve().parents[2]
FACTORY = ROOT / "config" / "factories" / "demo.yaml"
CONFIG = ROOT / "config" / "demo-agent.yaml"
TZ = "Asia/Shanghai"


@dataclass
class Agent:
    """A demo-factory store with 2026-01-01 and -02 backfilled, and keys."""

    data: Path
    keys: Path
    runner: CliRunner

    def invoke(self, *args: str) -> Any:
        return self.runner.invoke(app, list(args))

    def report(self, *args: str) -> Any:
        return self.invoke("report", "--config", str(CONFIG), "--data-dir", str(self.data),
                           "--key-dir", str(self.keys), *args)

    @property
    def outbox(self) -> Path:
        return self.data / "outbox.db"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    _register_subcommands()
    tmp = tmp_path_factory.mktemp("range")
    made = Agent(tmp / "data", tmp / "keys", CliRunner())
    history = tmp / "history"
    for args in (
        ["sim", "history", "-f", str(FACTORY), "--start", "2026-01-01", "--end", "2026-01-03",
         "--out", str(history), "--sample-interval", "900"],
        ["backfill", "--config", str(CONFIG), "--history", str(history), "--data-dir",
         str(made.data)],
        ["keys", "init", "--dir", str(made.keys)],
    ):
        result = made.invoke(*args)
        assert result.exit_code == 0, (args, result.output)
    yield made


def _no_traceback(result: Any) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_range_builds_every_day_oldest_first_then_skips_them(agent: Agent) -> None:
    """If a range of days is reported, then every day is built oldest first (an empty day
    says so); the same range again builds nothing and says all are already queued."""
    result = agent.report("--from", "2025-12-31", "--to", "2026-01-02")
    assert result.exit_code == 0, result.output
    assert "Built 3 day report(s)" in result.stdout and "1 without data" in result.stdout
    assert "0 already queued" in result.stdout
    outbox = Outbox(agent.outbox)
    try:
        slots = [i.period_slot for i in outbox.items()]
    finally:
        outbox.close()
    assert slots[:3] == ["day/2025-12-31/0", "day/2026-01-01/0", "day/2026-01-02/0"]
    again = agent.report("--from", "2025-12-31", "--to", "2026-01-02")
    assert again.exit_code == 0, again.output
    assert "Built 0 day report(s)" in again.stdout and "3 already queued" in again.stdout


def test_range_stops_at_the_first_day_not_over(agent: Agent) -> None:
    """If the range reaches a day that is not over, then the days before it are built and the
    command stops there with exit 2, naming the day and without a traceback."""
    today = datetime.now(ZoneInfo(TZ)).date()
    first = today - timedelta(days=2)
    result = agent.report("--from", first.isoformat(), "--to", (today + timedelta(1)).isoformat())
    assert result.exit_code == 2, result.output
    assert "stopped at day" in result.stderr and "is not over" in result.stderr
    assert f"Built: {first.isoformat()}" in result.stdout
    _no_traceback(result)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--period", "2026-01-01", "--from", "2026-01-01", "--to", "2026-01-02"), "not both"),
        (("--from", "2026-01-01"), "both --from and --to"),
        (("--from", "2026-01-02", "--to", "2026-01-01"), "before --from"),
        (("--from", "2026-13-01", "--to", "2026-01-01"), "is not a day"),
    ],
)
def test_range_option_mistakes_exit_2(agent: Agent, args: tuple[str, ...], message: str) -> None:
    result = agent.report(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    _no_traceback(result)


def _reject_first(agent: Agent, reason: str) -> str:
    outbox = Outbox(agent.outbox)
    try:
        item = next(i for i in outbox.items() if i.state == PENDING)
        assert outbox.apply_receipt(item.report_id, item.payload_sha256, "rejected",
                                    "receipt.jws", reason)
        return item.report_id
    finally:
        outbox.close()


def test_release_a_rejected_report_then_status_shows_it_pending(agent: Agent) -> None:
    """If a rejected report is released, then it is pending again without its rejection
    receipt, `report status` lists it pending and `status` no longer lists it quarantined."""
    if not agent.outbox.is_file():
        assert agent.report("--period", "2026-01-01").exit_code == 0
    report_id = _reject_first(agent, "chain: prev_sha256 does not match")
    shown = agent.invoke("status", "--data-dir", str(agent.data), "--json")
    assert shown.exit_code == 0, shown.output
    quarantined = json.loads(shown.stdout)["outbox"]["quarantined"]
    assert [(q["report_id"], q["reason"]) for q in quarantined] == [
        (report_id, "chain: prev_sha256 does not match")
    ]
    result = agent.invoke("report", "release", "--outbox", str(agent.outbox), report_id)
    assert result.exit_code == 0, result.output
    assert f"Released {report_id}" in result.stdout and "chain: prev_sha256" in result.stdout
    outbox = Outbox(agent.outbox)
    try:
        item = outbox.get(report_id)
    finally:
        outbox.close()
    assert item is not None and item.state == PENDING
    assert item.receipt_jws is None and item.last_error is None and item.attempts == 0
    status = agent.invoke("report", "status", "--outbox", str(agent.outbox))
    assert status.exit_code == 0, status.output
    line = next(row for row in status.stdout.splitlines() if item.period_slot in row)
    assert f" {PENDING} " in line
    again = agent.invoke("report", "release", "--outbox", str(agent.outbox), report_id)
    assert again.exit_code == 2 and "is pending" in again.stderr
    _reject_first(agent, "schema")
    every = agent.invoke("report", "release", "--outbox", str(agent.outbox), "--all")
    assert every.exit_code == 0 and "1 report(s) pending again" in every.stdout
    none = agent.invoke("report", "release", "--outbox", str(agent.outbox), "--all")
    assert none.exit_code == 0 and "nothing released" in none.stdout


def test_release_mistakes_exit_2(agent: Agent, tmp_path: Path) -> None:
    """Unknown ids, a missing outbox (not created), and neither or both of id and --all."""
    if not agent.outbox.is_file():
        assert agent.report("--period", "2026-01-01").exit_code == 0
    missing = tmp_path / "outbox.db"
    for args, message in (
        (("--outbox", str(agent.outbox), "nope"), "has no report nope"),
        (("--outbox", str(missing), "--all"), "does not exist"),
        (("--outbox", str(agent.outbox)), "or --all"),
        (("--outbox", str(agent.outbox), "x", "--all"), "or --all"),
    ):
        result = agent.invoke("report", "release", *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr
        _no_traceback(result)
    assert not missing.exists()


def test_status_shows_outbox_quarantine_and_devices(agent: Agent) -> None:
    """If `status` reads the data directory, then it shows the outbox by state, the last
    receipt, quarantined reports with their reason, the oldest pending report's age, and per
    device the last sample; as a table of at most 80 columns without raw Python values, and as
    JSON."""
    if not agent.outbox.is_file():
        assert agent.report("--period", "2026-01-01").exit_code == 0
    report_id = _reject_first(agent, "indicators: recomputed values differ from the report")
    try:
        result = agent.invoke("status", "--data-dir", str(agent.data), "--json")
        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)
        outbox, store = shown["outbox"], shown["store"]
        assert outbox["counts"][REJECTED] == 1 and outbox["counts"][PENDING] >= 1
        assert outbox["last_receipt_at"].endswith("Z")
        assert outbox["oldest_open_age_s"] >= 0 and outbox["oldest_open_report_id"]
        assert outbox["quarantined"][0]["report_id"] == report_id
        assert store["size_bytes"] > 0 and store["devices"]
        assert all(d["last_sample_at"].startswith("2026-01-0") for d in store["devices"])
        assert all(d["age_s"] > 0 for d in store["devices"])
        table = agent.invoke("status", "--data-dir", str(agent.data))
        assert table.exit_code == 0, table.output
        text = table.stdout
        assert max(len(line) for line in text.splitlines()) <= 80
        for word in ("pending", "rejected", "last receipt", "oldest pending", "recomputed",
                     store["devices"][0]["device_id"], "Store size on disk"):
            assert word in text, word
        for raw in ("None", "{", "[]"):
            assert raw not in text, raw
    finally:
        agent.invoke("report", "release", "--outbox", str(agent.outbox), "--all")


def test_status_of_a_folder_without_agent_files_exits_2(tmp_path: Path) -> None:
    _register_subcommands()
    result = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "neither agent.db nor outbox.db" in result.stderr
    _no_traceback(result)
    assert not (tmp_path / "outbox.db").exists()
