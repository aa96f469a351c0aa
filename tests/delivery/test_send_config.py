"""`report send --config` takes its settings from the `delivery:` section, and a report the
bureau rejects is quarantined: `--until-drained` exits 1 naming it, `report release` queues
it again. Real Mosquitto, real bureau receiver, real CLI processes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
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
        listed = _tieragent("bureau", "rejections", "--db", str(tmp_path / "bureau.db"),
                            "--json")
        assert listed.returncode == 0, listed.stderr
        (row,) = json.loads(listed.stdout)
        assert (row["report_id"], row["reason"], row["period_key"]) == (
            rejected_id, "aud", period.key)
        table = _tieragent("bureau", "rejections", "--db", str(tmp_path / "bureau.db"))
        assert "aud" in table.stdout and "Rejected reports" in table.stdout
        nothing = _tieragent("bureau", "rejections", "--db", str(tmp_path / "none.db"))
        assert nothing.returncode == 2 and "does not exist" in nothing.stderr
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


def test_reports_of_a_revoked_key_are_quarantined_not_resent_forever(
    tmp_path: Path, mosquitto: Broker
) -> None:
    """If the bureau has revoked the agent's key, then its rejection receipt names the
    report (claimed id, matched with the payload hash), the agent quarantines it with the
    reason `revoked`, counts no forged receipt, and `--until-drained` exits 1 at once."""
    agent_key = OKPKey.generate_key("Ed25519")
    bureau = start_bureau(tmp_path / "bureau.db", mosquitto.url, {FACTORY: agent_key})
    with bureau.receiver.store.transaction():
        bureau.receiver.registry.revoke(agent_key.thumbprint())
    data = tmp_path / "data"
    data.mkdir()
    outbox = Outbox(data / "outbox.db")
    commit_days(outbox, agent_key, range(1, 3))
    outbox.close()
    config = _config(tmp_path, mosquitto.url, bureau.public)
    try:
        sent = _tieragent("report", "send", "--config", str(config), "--data-dir", str(data),
                          "--until-drained", "--timeout-s", "30")
        assert sent.returncode == 1, sent.stderr[-2000:]
        assert "2 report(s) quarantined" in sent.stderr
        summary = json.loads(sent.stdout.strip().splitlines()[-1])
        assert summary.get("receipts_forged_total", 0) == 0
        assert summary["reports_sent_total"] == 2  # each sent once, not resent
        outbox = Outbox(data / "outbox.db")
        assert {(i.state, i.last_error) for i in outbox.items()} == {(REJECTED, "revoked")}
        outbox.close()
    finally:
        bureau.receiver.stop()


@pytest.mark.parametrize("protocol", ["5", "auto"])
def test_a_broker_that_closes_mqtt_5_before_connack(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    """If the broker closes an MQTT 5 CONNECT without a CONNACK, as RabbitMQ's 3.1.1-only MQTT
    face does, then with protocol 5 the connect failure names the protocol and the setting
    that fixes it, once; with auto (the default) the publisher says once that it falls back
    and offers MQTT 3.1.1 from the next attempt on."""
    import socket
    import threading

    from agent.publisher import Publisher, PublisherSettings

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()
    protocol_levels: list[int] = []

    def only_311() -> None:  # reads the CONNECT, refuses anything but level 4 by closing
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                data = conn.recv(1024)
                if len(data) > 8:
                    protocol_levels.append(data[8])  # after fixed header, "MQTT" name

    thread = threading.Thread(target=only_311, daemon=True)
    thread.start()
    caplog.set_level(logging.WARNING, logger="tieragent.publish")
    bureau_key = OKPKey.generate_key("Ed25519")
    outbox = Outbox(tmp_path / "outbox.db")
    publisher = Publisher(PublisherSettings(
        broker_url=f"mqtt://127.0.0.1:{listener.getsockname()[1]}", factory_id=FACTORY,
        bureau_keys=({"kty": "OKP", "crv": "Ed25519", "x": bureau_key.as_dict()["x"]},),
        reconnect_min_s=0.2, reconnect_max_s=0.5, protocol=protocol,  # type: ignore[arg-type]
    ), outbox)
    publisher.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(protocol_levels) < 3:
            publisher.step(0.1)
    finally:
        publisher.stop()
        stop.set()
        thread.join(5)
        listener.close()
        outbox.close()
    assert protocol_levels[:1] == [5]  # it did offer MQTT 5
    lines = [r.getMessage() for r in caplog.records if "Cannot connect" in r.getMessage()]
    fallbacks = [r.getMessage() for r in caplog.records if "refused MQTT 5" in r.getMessage()]
    if protocol == "5":
        assert set(protocol_levels) == {5}
        assert len(lines) == 1, lines  # logged once, not per retry
        assert "speaks only MQTT 3.1.1, set protocol 3.1.1 or auto" in lines[0]
        assert publisher.metrics["connect_failures_total"] >= 3
        assert fallbacks == []
    else:
        assert protocol_levels[1:] and set(protocol_levels[1:]) == {4}  # 3.1.1 from then on
        assert len(fallbacks) == 1 and "using MQTT 3.1.1 from now on" in fallbacks[0]
        assert len(lines) == 1 and "(MQTT 3.1.1)" in lines[0], lines


def test_key_rotation_is_delivered_and_the_retired_private_key_forgotten(
    tmp_path: Path, mosquitto: Broker
) -> None:
    """If the operator rotates with `keys rotate --config` after two reports, then the new key
    signs from seq 3 (read from the outbox), `report send` delivers the statement before the
    reports, the bureau accepts all three with the old key retired from seq 3, and the retired
    private key is deleted from the gateway once the bureau acknowledged a report signed by the
    new key (its public JWK stays). It was kept in keys/retired/ forever before."""
    from agent.protocol.keys import PRIVATE_NAME, init_keys, load_private_key

    data = tmp_path / "data"
    init_keys(data / "keys", None)
    old_key = load_private_key(data / "keys" / PRIVATE_NAME)
    bureau = start_bureau(tmp_path / "bureau.db", mosquitto.url, {FACTORY: old_key})
    outbox = Outbox(data / "outbox.db")
    commit_days(outbox, old_key, range(1, 3))
    outbox.close()
    config = _config(tmp_path, mosquitto.url, bureau.public)
    no_seq = _tieragent("keys", "rotate", "--dir", str(data / "keys"), "--factory", FACTORY)
    assert no_seq.returncode == 2 and "--effective-from-seq" in no_seq.stderr
    rotated = _tieragent("keys", "rotate", "--config", str(config), "--data-dir", str(data))
    assert rotated.returncode == 0, rotated.stderr[-2000:]
    assert "signs from report seq 3" in rotated.stderr
    new_key = load_private_key(data / "keys" / PRIVATE_NAME)
    old_kid, new_kid = old_key.thumbprint(), new_key.thumbprint()
    assert (data / "keys" / "retired" / f"{old_kid}.pem").exists()
    outbox = Outbox(data / "outbox.db")
    commit_days(outbox, new_key, range(3, 4))
    outbox.close()
    try:
        sent = _tieragent("report", "send", "--config", str(config), "--data-dir", str(data),
                          "--until-drained", "--timeout-s", "30")
        assert sent.returncode == 0, sent.stderr[-2000:]
        registry = bureau.receiver.registry
        old, new = registry.get(old_kid), registry.get(new_kid)
        assert old is not None and (old.status, old.until_seq) == ("retired", 3)
        assert new is not None and (new.status, new.from_seq) == ("active", 3)
        stored = bureau.receiver.store.reports(FACTORY)
        assert [(r.seq, r.kid, r.state) for r in stored] == [
            (1, old_kid, "accepted"), (2, old_kid, "accepted"), (3, new_kid, "accepted")]
        assert not (data / "keys" / "retired" / f"{old_kid}.pem").exists()
        assert (data / "keys" / "retired" / f"{old_kid}.jwk.json").exists()
        assert "retired private key was deleted" in sent.stderr
    finally:
        bureau.receiver.stop()
