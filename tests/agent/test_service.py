"""The service's pure parts (which periods are due, its health reasons) and the checks that
stop `tieragent run` before it starts on a reporting or delivery section that cannot work."""

from __future__ import annotations

import json
import subprocess
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from agent_testkit import cli

from agent.service import ServiceState, due_periods, service_reasons, with_service_health
from agent.service_config import Delivery

ROOT = Path(__file__).parents[2]
CONFIG = Path(__file__).with_name("data") / "agent.yaml"
TZ = "Asia/Shanghai"


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(TZ)).timestamp()


def test_due_periods_wait_for_the_grace_and_come_in_chain_order() -> None:
    first = date(2026, 1, 30)
    # 2026-02-01 ended at 2026-02-02 00:00; with 15 min grace it is due from 00:15.
    before_grace = due_periods(["day", "month"], first, _at("2026-02-02T00:14:00"), TZ, 900)
    assert [p.key for p in before_grace] == ["2026-01-30", "2026-01-31", "2026-01"]
    after_grace = due_periods(["day", "month"], first, _at("2026-02-02T00:15:01"), TZ, 900)
    assert [p.key for p in after_grace] == ["2026-01-30", "2026-01-31", "2026-01", "2026-02-01"]
    # A day before the month it closes, the month before the next day; the year last.
    year_end = due_periods(["day", "month", "year"], date(2026, 12, 31),
                           _at("2027-01-01T01:00:00"), TZ, 900)
    assert [(p.kind, p.key) for p in year_end] == [
        ("day", "2026-12-31"), ("month", "2026-12"), ("year", "2026")]


def test_nothing_is_due_before_the_first_day_ends() -> None:
    assert due_periods(["day"], date(2026, 3, 1), _at("2026-03-01T23:59:59"), TZ, 0) == []


def test_a_stuck_outbox_and_a_build_problem_make_health_degraded() -> None:
    delivery = Delivery(broker_url="mqtt://127.0.0.1:1883", bureau_key=Path("bureau.jwk"),
                        stuck_after_s=3600)
    state = ServiceState()
    now = 1_800_000_000.0
    healthy = with_service_health({"status": "ok", "reasons": []}, state, delivery, now)
    assert healthy["status"] == "ok" and healthy["reasons"] == []
    state.oldest_unacked_at = now - 3599
    assert service_reasons(state, delivery, now) == []
    state.oldest_unacked_at = now - 2 * 3600
    state.outbox_counts = {"pending": 3}
    body = with_service_health({"status": "ok", "reasons": []}, state, delivery, now)
    assert body["status"] == "degraded" and body["outbox"] == {"pending": 3}
    assert body["reasons"][0].startswith("outbox stuck: the oldest undelivered report is 2.0 h")
    state.build_problem = "PeriodDataChanged: 2026-03-01"
    reasons = service_reasons(state, delivery, now)
    assert reasons[0] == "reports cannot be built: PeriodDataChanged: 2026-03-01"
    # The collector's own reasons are kept, first.
    mixed = with_service_health({"status": "degraded", "reasons": ["M1 down"]}, state, None, now)
    assert mixed["reasons"] == ["M1 down", "reports cannot be built: PeriodDataChanged: 2026-03-01"]


def _run(config: Path, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("run", "--config", str(config), "--data-dir", str(data), "--metrics-port", "0",
            "--duration", "3"),
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )


def test_run_refuses_a_reporting_section_without_a_signing_key(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG.read_text() + "reporting:\n  key_dir: nokeys\n")
    result = _run(config, tmp_path / "data")
    assert result.returncode == 2, result.stderr
    assert "reporting.key_dir" in result.stderr and "Traceback" not in result.stderr


def test_run_refuses_a_bureau_key_that_is_not_a_jwk(tmp_path: Path) -> None:
    (tmp_path / "bureau.jwk").write_text(json.dumps({"kty": "OKP"}))
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG.read_text() + (
        "delivery:\n  broker_url: mqtt://127.0.0.1:1\n  bureau_key: bureau.jwk\n"))
    result = _run(config, tmp_path / "data")
    assert result.returncode == 2, result.stderr
    assert "delivery.bureau_key" in result.stderr and "bureau show-key" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_a_broker_url_it_cannot_use(tmp_path: Path) -> None:
    (tmp_path / "bureau.jwk").write_text("{}")
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG.read_text() + (
        "delivery:\n  broker_url: http://127.0.0.1:1\n  bureau_key: bureau.jwk\n"))
    result = _run(config, tmp_path / "data")
    assert result.returncode == 2, result.stderr
    assert "delivery.broker_url" in result.stderr and "Traceback" not in result.stderr
