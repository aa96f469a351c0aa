"""`report send --config` takes its settings from the `delivery:` section, and a report the
bureau rejects is quarantined: `--until-drained` exits 1 naming it, `report release` queues
it again. Real Mosquitto, real bureau receiver, real CLI processes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from joserfc.jwk import OKPKey

from agent.outbox import ACKED, PENDING, REJECTED, Outbox
from agent.protocol.envelope import Kind, sign_compact
from tests.support.bureau_receiver import start_bureau
from tests.support.mosquitto import Broker
from tests.support.reports import FACTORY, commit_days, day, make_report

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, broker_url: str, bureau_public: dict[str, str]) -> Path:
    key_file = tmp_path / "bureau.jwk"
    key_file.write_text(json.dumps(bureau_public), encoding="utf-8")
    config = tmp_path / "agent.yaml"
    base = (ROOT / "config" / "demo-agent.yaml").read_text(encoding="utf-8")
    config.write_text(
        base + f"""
delivery:
  broker_url: {broker_url}
  bureau_key: bureau.jwk
  keepalive_s: 5
  receipt_timeout_s: 3
  reconnect_min_s: 0.1
  reconnect_max_s: 2
""",
        encoding="utf-8",
    )
    return config


def _tieragent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tieragent", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False,
    )


def test_send_with_config_delivers_and_quarantine_exits_1(
    tmp_path: Path, mosquitto: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tieragent.bureau")
    agent_key = OKPKey.generate_key("Ed25519")
    bureau = start_bureau(tmp_path / "bureau.db", mosquitto.url, {FACTORY: agent_key})
    data = tmp_path / "data"
    data.mkdir()
    outbox = Outbox(data / "outbox.db")
    commit_days(outbox, agent_key, range(1, 3))
    # seq 3 is addressed to another bureau: a rejection that names the report ("aud").
    period = day(3)
    outbox.commit_report(
        FACTORY, period.slot(0),
        lambda seq, prev: make_report(agent_key, period, seq, prev, aud="another-bureau"),
        lambda payload: sign_compact(payload, agent_key, Kind.REPORT),
    )
    outbox.close()
    config = _config(tmp_path, mosquitto.url, bureau.public)
    try:
        # No --broker, --bureau-key or --factory: all from the config's delivery: section.
        sent = _tieragent("report", "send", "--config", str(config), "--data-dir", str(data),
                          "--until-drained", "--timeout-s", "30")
        assert sent.returncode == 1, sent.stderr[-2000:]
        assert "1 report(s) quarantined" in sent.stderr
        assert "Traceback" not in sent.stderr
        outbox = Outbox(data / "outbox.db")
        states = {item.seq: (item.state, item.last_error) for item in outbox.items()}
        assert states[1][0] == states[2][0] == ACKED
        assert states[3][0] == REJECTED and "aud" in (states[3][1] or "")
        rejected_id = next(item.report_id for item in outbox.items() if item.seq == 3)
        outbox.close()
        # The bureau's log line says what was refused and why, without opening SQLite.
        (line,) = [r for r in caplog.records if r.getMessage().startswith("Report rejected")]
        assert line.getMessage() == "Report rejected: aud (Report is addressed to another bureau.)."
        assert line.fields["report_id"] == rejected_id and line.fields["seq"] == 3  # type: ignore[attr-defined]
        assert [r.seq for r in bureau.receiver.store.reports(FACTORY)] == [1, 2]

        released = _tieragent("report", "release", rejected_id, "--outbox",
                              str(data / "outbox.db"))
        assert released.returncode == 0, released.stderr
        outbox = Outbox(data / "outbox.db")
        assert outbox.get(rejected_id).state == PENDING  # type: ignore[union-attr]
        outbox.close()
    finally:
        bureau.receiver.stop()


def test_send_config_errors_name_the_key(tmp_path: Path) -> None:
    config = _config(tmp_path, "mqtt://127.0.0.1:1", {"kty": "OKP"})  # no crv, no x
    data = tmp_path / "data"
    data.mkdir()
    Outbox(data / "outbox.db").close()
    bad_key = _tieragent("report", "send", "--config", str(config), "--data-dir", str(data),
                         timeout=30)
    assert bad_key.returncode == 2, bad_key.stderr
    assert "delivery.bureau_key" in bad_key.stderr and "Traceback" not in bad_key.stderr
    missing = _tieragent("report", "send", "--data-dir", str(data), timeout=30)
    assert missing.returncode == 2
    assert "--config FILE with a delivery: section" in missing.stderr
