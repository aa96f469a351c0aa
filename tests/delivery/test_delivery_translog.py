"""The transparency log end to end through a real Mosquitto (docs/reliability.md §b.9): an
agent delivers reports, the bureau quietly removes one it had accepted, and the agent's next
receipt raises the alarm instead of acknowledging the report."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest
from joserfc.jwk import OKPKey
from typer.testing import CliRunner

from agent.outbox import ACKED, Outbox
from agent.publisher import Publisher, PublisherSettings
from bureau.receiver import Receiver
from tests.support.bureau_receiver import start_bureau
from tests.support.dishonest import remove_report
from tests.support.mosquitto import Broker
from tests.support.reports import FACTORY, commit_days
from tests.support.waiting import wait_until


def test_a_report_removed_at_the_bureau_raises_the_agents_alarm(
    tmp_path: Path, mosquitto: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """If three reports are delivered and acknowledged, then the bureau deletes the second
    from its store and its log (leaves numbered again, the last head forgotten, heads signed
    anew with its key after a restart), then the receipt of the fourth report raises the
    agent's alarm: one ERROR line, the `log_alarm_total` metric, the fourth row not
    acknowledged although the bureau stored it, and `tieragent status` showing the alarm."""
    caplog.set_level(logging.WARNING)
    key = OKPKey.generate_key("Ed25519")
    bureau = start_bureau(tmp_path / "bureau.db", mosquitto.url, {FACTORY: key})
    outbox = Outbox(tmp_path / "outbox.db")
    items = commit_days(outbox, key, range(1, 4))
    settings = PublisherSettings(
        broker_url=mosquitto.url, factory_id=FACTORY, bureau_keys=(bureau.public,),
        protocol="5", keepalive_s=2, reconnect_min_s=0.1, reconnect_max_s=2.0,
        receipt_timeout_s=3.0, resend_cap_s=6.0, window=4,
    )
    receiver = bureau.receiver
    with Publisher(settings, outbox) as publisher:
        assert publisher.drain(20), outbox.counts()
        assert publisher.metrics["receipts_verified_total"] == 3
        assert publisher.metrics["log_alarm_total"] == 0
        receiver.stop()
        with sqlite3.connect(tmp_path / "bureau.db", isolation_level=None) as db:
            remove_report(db, items[1].report_id)
        receiver = Receiver(receiver.settings, bureau.key)  # same key, rewritten log
        receiver.start()
        assert receiver.connected.wait(10)
        [fourth] = commit_days(outbox, key, range(4, 5))

        def alarmed() -> bool:
            publisher.step(0.05)
            return publisher.metrics["log_alarm_total"] >= 1

        assert wait_until(alarmed, 15), dict(publisher.metrics)
        row = outbox.get(fourth.report_id)
        assert row is not None and row.state != ACKED  # the receipt acknowledged nothing
        assert receiver.store.get(fourth.report_id) is not None  # the bureau did store it
    receiver.stop()
    errors = [r for r in caplog.records
              if r.levelno >= logging.ERROR and r.name == "tieragent.log_monitor"]
    assert len(errors) == 1 and "transparency log" in errors[0].getMessage()
    from tieragent.cli import _register_subcommands, app

    _register_subcommands()
    shown = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path), "--json"])
    assert shown.exit_code == 0, shown.output
    state = json.loads(shown.output)["outbox"]["log"]
    assert state["alarms"] >= 1 and state["head"]["tree_size"] == 3
    assert state["last_alarm"]["report_id"] == fourth.report_id
    assert "size 3" in state["last_alarm"]["detail"]
    text = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)],
                              env={"COLUMNS": "200"})
    assert text.exit_code == 0 and "ALARM" in text.output
