"""Only what is true is signed: periods that are over, periods without data said as such, a
rebuild that never passes the old report off as new, and the bureau counting coverage days by
the same rule as the agent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from agent.config import load_config
from agent.outbox import Outbox
from agent.protocol.envelope import Kind, unverified_payload
from agent.protocol.period import Period
from agent.protocol.report import report_has_samples
from agent.reporter import PeriodNotOver, check_period_over
from bureau.annual import DayEntry, evaluate_year
from bureau.store import ACCEPTED
from indicators.policy import DEFAULT_POLICY, EXAMPLE_BENCHMARKS, EXAMPLE_DECLARATIONS, PolicyFiles
from tieragent.cli import _register_subcommands, app

ROOT = Path(__file__).resolve().parents[2]
FACTORY = ROOT / "config" / "factories" / "demo.yaml"
CONFIG = ROOT / "config" / "demo-agent.yaml"
TZ = "Asia/Shanghai"
EXAMPLES = ("--benchmarks", str(EXAMPLE_BENCHMARKS), "--declarations", str(EXAMPLE_DECLARATIONS))


@dataclass
class Agent:
    """A demo-factory store with 2026-01-01 and -02 backfilled and reported (with the example
    files), keys, and a CLI runner."""

    data: Path
    keys: Path
    runner: CliRunner

    def invoke(self, *args: str) -> Any:
        return self.runner.invoke(app, list(args))

    def report(self, period: str, *extra: str) -> Any:
        return self.invoke("report", "--config", str(CONFIG), "--period", period, "--data-dir",
                           str(self.data), "--key-dir", str(self.keys), *extra)

    def backfill(self, tmp: Path, start: str, end: str) -> None:
        """History of the days from `start` up to `end` (exclusive), through backfill."""
        history = tmp / f"hist-{start}"
        for args in (
            ["sim", "history", "-f", str(FACTORY), "--start", start, "--end", end, "--out",
             str(history), "--sample-interval", "900"],
            ["backfill", "--config", str(CONFIG), "--history", str(history), "--data-dir",
             str(self.data)],
        ):
            result = self.invoke(*args)
            assert result.exit_code == 0, (args, result.output)

    def payloads(self) -> list[dict[str, Any]]:
        outbox = Outbox(self.data / "outbox.db")
        try:
            return [unverified_payload(i.jws, Kind.REPORT) for i in outbox.items()]
        finally:
            outbox.close()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    _register_subcommands()
    tmp = tmp_path_factory.mktemp("honest")
    made = Agent(tmp / "data", tmp / "keys", CliRunner())
    made.backfill(tmp, "2026-01-01", "2026-01-03")
    assert made.invoke("keys", "init", "--dir", str(made.keys)).exit_code == 0
    for day in ("2026-01-01", "2026-01-02"):
        result = made.report(day, *EXAMPLES)
        assert result.exit_code == 0, result.output
    yield made


def test_a_period_that_is_not_over_is_refused_naming_when_it_can_be_built(agent: Agent) -> None:
    """If the period is today, the future, or ended less than the grace ago, then no report:
    exit 2 naming the earliest local time (with its zone), and nothing is queued."""
    today = datetime.now(ZoneInfo(TZ)).date().isoformat()
    for period in (today, "2099-01-01", "2099"):
        result = agent.report(period)
        assert result.exit_code == 2, result.output
        assert "is not over" in result.stderr and "can be built from" in result.stderr
        assert "(Asia/Shanghai)" in result.stderr and "Traceback" not in result.output
    assert {p["period"]["key"] for p in agent.payloads()} == {"2026-01-01", "2026-01-02"}
    day = Period.parse("2026-01-10", TZ)
    end = day.bounds()[1]
    with pytest.raises(PeriodNotOver, match=r"2026-01-11 00:15 CST \(Asia/Shanghai\)"):
        check_period_over(day, 900.0, now=end + 899)
    check_period_over(day, 900.0, now=end + 900)  # over: no error
    check_period_over(day, 0.0, now=end)


@pytest.mark.parametrize("with_files", [True, False])
def test_agent_evaluate_and_bureau_annual_reach_the_same_tier(
    agent: Agent, with_files: bool
) -> None:
    """If the agent evaluates the days it has and the bureau evaluates the same days from the
    agent's daily reports with the same files, then both reach the same tier with the same
    condition statuses; without declarations both say not_declared and reach no tier."""
    days = ("2026-01-01", "2026-01-02")
    files = EXAMPLES if with_files else ()
    result = agent.invoke("evaluate", "--config", str(CONFIG), "--period", "2026-01",
                          "--data-dir", str(agent.data), "--json", *files)
    assert result.exit_code == 0, result.output
    at_agent = json.loads(result.stdout)
    entries = [
        DayEntry.from_parts(p["period"]["key"], ACCEPTED, None, p, None)
        for p in agent.payloads()
        if p["period"]["key"] in days
    ]
    policy = (
        PolicyFiles(DEFAULT_POLICY, EXAMPLE_BENCHMARKS, EXAMPLE_DECLARATIONS)
        if with_files
        else PolicyFiles(DEFAULT_POLICY)
    )
    at_bureau = evaluate_year("demo-tj-001", 2026, entries, policy,
                              through=Period.parse(days[-1], TZ).first_day()).evaluation
    assert at_bureau.tier_reached == at_agent["tier_reached"]
    assert {c.condition_id: c.status for c in at_bureau.conditions} == {
        c["condition_id"]: c["status"] for c in at_agent["conditions"]
    }
    declared = {c["status"] for c in at_agent["conditions"] if c["source"] == "declared"}
    if with_files:
        assert at_agent["tier_reached"] is not None
    else:
        assert at_agent["tier_reached"] is None and declared == {"not_declared"}


def test_no_data_period_then_data_arrives_then_a_revision(
    agent: Agent, tmp_path: Path
) -> None:
    """If a day without any sample is reported, then the report says so (coverage 0, every
    condition insufficient_data) and the bureau does not count it as a coverage day. If data
    for it arrives later, then rebuilding it says the data changed and asks for a revision
    instead of printing the old report as new; the revision carries its reason, supersedes
    the first, and the bureau counts the day."""
    first = agent.report("2026-01-03", *EXAMPLES)
    assert first.exit_code == 0, first.output
    assert "No data" in first.stderr
    (empty,) = [p for p in agent.payloads() if p["period"]["key"] == "2026-01-03"]
    assert not report_has_samples(empty)
    evaluation = empty["evaluation"]
    assert evaluation["coverage"]["day_share"] == 0
    assert evaluation["tier_reached"] is None
    assert {c["status"] for c in evaluation["conditions"]} == {"insufficient_data"}

    unchanged = agent.report("2026-01-03", *EXAMPLES)
    assert unchanged.exit_code == 0, unchanged.output
    assert "Already queued" in unchanged.stdout and "unchanged" in unchanged.stdout

    # The day's data arrives late. (A second generator run restarts the counters, so the
    # store also changes 2026-01-02's last hour; that day's report is not rebuilt here.)
    agent.backfill(tmp_path, "2026-01-03", "2026-01-04")
    changed = agent.report("2026-01-03", *EXAMPLES)
    assert changed.exit_code == 2, changed.output
    assert "changed since" in changed.stderr and "--revision 1 --reason" in changed.stderr
    assert "Queued" not in changed.stdout
    no_reason = agent.report("2026-01-03", "--revision", "1", *EXAMPLES)
    assert no_reason.exit_code == 2 and "--reason" in no_reason.stderr
    revised = agent.report("2026-01-03", "--revision", "1", "--reason",
                           "gateway was down; history imported", *EXAMPLES)
    assert revised.exit_code == 0, revised.output
    revisions = {p["revision"]: p for p in agent.payloads() if p["period"]["key"] == "2026-01-03"}
    assert revisions[1]["supersedes"] == empty["report_id"]
    assert revisions[1]["revision_reason"] == "gateway was down; history imported"
    assert report_has_samples(revisions[1])
    assert "revision_reason" not in empty  # reports without a reason are as before

    # The bureau: the empty day counts as no_data, never as an accepted coverage day.
    assert agent.report("2026-01-05", *EXAMPLES).exit_code == 0
    entries = [
        DayEntry.from_parts(p["period"]["key"], ACCEPTED, None, p, None)
        for p in agent.payloads()
    ]
    files = PolicyFiles(DEFAULT_POLICY, EXAMPLE_BENCHMARKS, EXAMPLE_DECLARATIONS)
    without_jan3 = [e for e in entries if not (e.period_key == "2026-01-03" and e.revision)]
    result = evaluate_year("demo-tj-001", 2026, without_jan3, files,
                           through=Period.parse("2026-01-05", TZ).first_day())
    coverage = result.coverage
    assert (coverage["accepted"], coverage["no_data"], coverage["missing"]) == (2, 2, 1)
    assert coverage["no_data_days"] == ["2026-01-03", "2026-01-05"]
    assert result.chain["reports"] and not any(
        r["counted"] for r in result.chain["reports"] if r["period_key"] == "2026-01-05"
    )
    revised_year = evaluate_year("demo-tj-001", 2026, entries, files,
                                 through=Period.parse("2026-01-05", TZ).first_day())
    assert revised_year.coverage["accepted"] == 3
    assert revised_year.coverage["no_data_days"] == ["2026-01-05"]


def test_another_factorys_declarations_are_refused(agent: Agent, tmp_path: Path) -> None:
    """If the declarations file names another factory, then evaluate exits 2 saying so."""
    foreign = tmp_path / "decl.yaml"
    foreign.write_text(EXAMPLE_DECLARATIONS.read_text(encoding="utf-8").replace(
        "factory_id: demo-tj-001", "factory_id: someone-else"), encoding="utf-8")
    result = agent.invoke("evaluate", "--config", str(CONFIG), "--period", "2026-01",
                          "--data-dir", str(agent.data), "--declarations", str(foreign))
    assert result.exit_code == 2, result.output
    assert "someone-else" in result.stderr and "Traceback" not in result.output
    assert load_config(CONFIG).factory.factory_id in result.stderr
