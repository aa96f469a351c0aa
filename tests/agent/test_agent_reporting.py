"""Store -> signed report: `tieragent report --period`, and its audit bundle."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from agent.outbox import Outbox
from agent.protocol.envelope import Kind, unverified_payload
from agent.protocol.report import indicator_mismatches, recompute_indicators
from tieragent.cli import _register_subcommands, app

ROOT = Path(__file__).resolve().parents[2]


def test_report_from_backfilled_store(tmp_path: Path) -> None:
    """Three simulated days backfilled, a day report built from the store and queued."""
    runner = CliRunner()
    _register_subcommands()
    history, data, keys = tmp_path / "hist", tmp_path / "data", tmp_path / "keys"
    factory = ROOT / "config" / "factories" / "demo.yaml"
    config = ROOT / "config" / "demo-agent.yaml"
    steps = [
        ["sim", "history", "-f", str(factory), "--start", "2026-03-01", "--end", "2026-03-03",
         "--out", str(history)],
        ["backfill", "--config", str(config), "--history", str(history), "--data-dir", str(data)],
        ["keys", "init", "--dir", str(keys)],
        ["report", "--config", str(config), "--period", "2026-03-02", "--data-dir", str(data),
         "--key-dir", str(keys)],
    ]
    for args in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    outbox = Outbox(data / "outbox.db")
    (item,) = outbox.items()
    payload = unverified_payload(item.jws, Kind.REPORT)
    assert item.seq == 1 and item.state == "pending"
    assert payload["period"]["key"] == "2026-03-02"
    assert payload["raw_data"]["segment_count"] > 0
    assert payload["factory_id"] == "demo-tj-001"
    # The indicators come from the tier evaluation (computed once); they must be exactly what
    # anyone recomputes from the report's own rows, and all of them, with no baseline values.
    recomputed = recompute_indicators(payload)
    assert set(payload["indicators"]) == set(recomputed)
    assert indicator_mismatches(payload["indicators"], recomputed) == []
    assert payload["indicators"]["oee"]["value"] is not None
    again = runner.invoke(app, steps[-1])
    assert again.exit_code == 0
    assert len(outbox.items()) == 1  # the same period is not signed twice
    bad = runner.invoke(app, ["report", "--config", str(config), "--period", "2026-13",
                              "--data-dir", str(data), "--key-dir", str(keys)])
    assert bad.exit_code == 2
    assert "Traceback" not in bad.output

    # The audit bundle carries the raw segments behind the report; verify checks the
    # Merkle root against them and names a changed sample's segment.
    bundle = tmp_path / "bundle"
    exported = runner.invoke(app, ["evidence", "export", "--config", str(config), "--period",
                                   "2026-03", "--out", str(bundle), "--data-dir", str(data),
                                   "--key-dir", str(keys)])
    assert exported.exit_code == 0, exported.output
    verified = runner.invoke(app, ["verify", str(bundle)])
    assert verified.exit_code == 0, verified.output
    segment = sorted((bundle / "raw").rglob("*.seg"))[5]
    data_bytes = bytearray(segment.read_bytes())
    data_bytes[-2] ^= 0x01  # inside the last sample's value
    segment.write_bytes(bytes(data_bytes))
    tampered = runner.invoke(app, ["verify", str(bundle)])
    assert tampered.exit_code != 0
    assert "Merkle root does not match" in tampered.output
