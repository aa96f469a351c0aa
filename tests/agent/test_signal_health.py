"""Signal health (issue 16 item 2): an unmapped state code, a bad status, a value outside its
valid_range and a counter reset are each counted per device, signal and cause, stored per
hour, logged once with a recovery line, exported in /metrics and carried in the report's
data_quality section, which the bureau's schema accepts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from agent_testkit import T0, modbus_config, sample
from prometheus_client import generate_latest

from agent.metrics import AgentMetrics
from agent.outbox import Outbox
from agent.protocol.envelope import Kind, unverified_payload
from agent.protocol.keys import init_keys
from agent.protocol.report import schema_errors
from agent.reporter import ReportContext, build_period_report
from agent.signal_health import SignalHealth
from agent.store import Store
from indicators.policy import DEFAULT_POLICY, PolicyFiles

CONFIG = Path(__file__).with_name("data") / "agent.yaml"


def _store(tmp_path: Path) -> Store:
    config = modbus_config(temp_range=(0.0, 100.0))
    store = Store.open(tmp_path / "agent.db", config)
    store.resume(T0)
    return store


def _events(store: Store, batch: list) -> dict[tuple[str, str], tuple[int, bool, str]]:
    result = store.ingest(batch)
    assert result.error is None
    return {(e.key.signal_id, e.key.cause): (e.count, e.active, e.detail)
            for e in result.signal_issues}


def test_each_cause_is_counted_stored_and_recovers(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = _events(store, [
        sample("state", T0 + 1, 1),
        sample("state", T0 + 2, 42),  # not in the plain map
        sample("temp", T0 + 1, 20.0),
        sample("temp", T0 + 2, 250.0),  # outside [0, 100]
        sample("good", T0 + 1, 100),
        sample("good", T0 + 2, 5),  # back without a wrap: a reset
        sample("reject", T0 + 2, None, quality="bad", status=2),  # Modbus exception 02
    ])
    assert first[("state", "unmapped_state")] == (1, True, "code 42 not in the state map")
    assert first[("temp", "out_of_range")] == (1, True, "value 250.0 outside [0, 100]")
    assert first[("good", "counter_reset")][0] == 1
    assert first[("reject", "bad_status")] == (
        1, True, "Modbus exception 02 (illegal address)")
    # The next good samples: every active problem is seen to end.
    second = _events(store, [
        sample("state", T0 + 3, 2), sample("temp", T0 + 3, 21.0),
        sample("reject", T0 + 3, 0),
    ])
    assert second[("state", "unmapped_state")][:2] == (0, False)
    assert second[("temp", "out_of_range")][:2] == (0, False)
    assert second[("reject", "bad_status")][:2] == (0, False)
    rows = store.signal_issues(T0, T0 + 3600)
    assert [(r["signal_id"], r["cause"], r["samples"]) for r in rows] == [
        ("good", "counter_reset", 1), ("reject", "bad_status", 1),
        ("state", "unmapped_state", 1), ("temp", "out_of_range", 1)]
    assert store.signal_issues(T0 + 3600, T0 + 7200) == []
    store.close()


def test_health_logs_once_and_on_recovery_and_exports_counters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    metrics = AgentMetrics()
    health = SignalHealth(metrics.registry)
    caplog.set_level(logging.INFO, logger="tieragent.signals")
    for n in range(3):  # the same unmapped code three times: one warning
        health.update(store.ingest([sample("state", T0 + 1 + n, 42)]).signal_issues)
    health.update(store.ingest([sample("state", T0 + 10, 1)]).signal_issues)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "Device M1 signal state: state code outside its state map (code 42 not in the state "
        "map).",
        "Device M1 signal state: recovered from unmapped_state.",
    ]
    exported = generate_latest(metrics.registry).decode()
    assert ('tieragent_signal_problems_total{cause="unmapped_state",device="M1",signal="state"}'
            ' 3.0') in exported
    assert ('tieragent_signal_problem_active{cause="unmapped_state",device="M1",'
            'signal="state"} 0.0') in exported
    store.close()


def test_the_report_carries_the_periods_signal_issues(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.ingest([sample("state", T0 + 60 * n, 42 if n == 5 else 1) for n in range(30)])
    store.ingest([sample("temp", T0 + 100, -5.0)], advance_to=T0 + 2 * 86400)
    keys = tmp_path / "keys"
    init_keys(keys, None)
    outbox = Outbox(tmp_path / "outbox.db")
    context = ReportContext(
        config=store.config, config_path=CONFIG, store=store, outbox=outbox, key_dir=keys,
        policy=PolicyFiles(DEFAULT_POLICY).load(), now=lambda: T0 + 3 * 86400,
    )
    day = "2026-01-01"  # T0 is 2026-01-01 08:00 in Asia/Shanghai
    built = build_period_report(context, day)
    report = unverified_payload(built.item.jws, Kind.REPORT)
    assert schema_errors(report) == []
    issues = report["data_quality"]["signal_issues"]
    assert [(i["device_id"], i["signal_id"], i["cause"], i["samples"]) for i in issues] == [
        ("M1", "state", "unmapped_state", 1), ("M1", "temp", "out_of_range", 1)]
    assert issues[1]["detail"] == "value -5.0 outside [0, 100]"
    outbox.close()
    store.close()
