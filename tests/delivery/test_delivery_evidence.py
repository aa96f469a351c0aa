"""Evidence bundles: export with raw segments from a callback, verify, and detect tampering."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey
from typer.testing import CliRunner

from agent.audit_bundle import BundleReport, export_bundle, verify_bundle
from agent.outbox import Outbox
from agent.protocol.envelope import public_jwk
from agent.protocol.merkle import Segment
from agent.protocol.period import Period
from tests.support.reports import commit_days, segments
from tieragent.commands.report import evidence_app, verify_command


def _segments_for(report: Mapping[str, Any]) -> Iterable[Segment]:
    period = report["period"]
    return segments(Period(period["kind"], period["key"], period["time_zone"]), devices=2)


def _bundle(tmp_path: Path) -> Path:
    key = OKPKey.generate_key("Ed25519")
    outbox = Outbox(tmp_path / "outbox.db")
    items = commit_days(outbox, key, range(1, 4))
    out = tmp_path / "bundle"
    export_bundle(out, [BundleReport(i.jws) for i in items], [public_jwk(key)], _segments_for)
    return out


def test_exported_bundle_verifies(tmp_path: Path) -> None:
    """If a bundle of three chained reports and their raw segments is exported, then verify
    finds no problem and checks every segment."""
    result = verify_bundle(_bundle(tmp_path))
    assert result.problems == []
    assert (result.reports, result.segments) == (3, 3 * 2 * 2 * 24)


def test_changed_raw_sample_is_named(tmp_path: Path) -> None:
    """If one raw sample in one segment file is changed, then verify fails for that report's
    Merkle root and names the segment."""
    bundle = _bundle(tmp_path)
    report_dir = sorted((bundle / "raw").iterdir())[0]
    victim = report_dir / "000007.seg"
    data = bytearray(victim.read_bytes())
    header_end = [i for i, byte in enumerate(data) if byte == ord("\n")][3] + 1
    data[header_end + 24] = 2  # the first sample's quality byte: good -> bad
    victim.write_bytes(bytes(data))
    result = verify_bundle(bundle)
    assert len(result.problems) == 1
    assert "Merkle root does not match" in result.problems[0]
    assert "changed: m0/" in result.problems[0] or "changed: m1/" in result.problems[0]


def test_chain_and_signature_problems_are_named(tmp_path: Path) -> None:
    """If a report file is removed or its signature altered, then verify names the chain gap
    and the signature failure; the CLI exits 1."""
    bundle = _bundle(tmp_path)
    files = sorted((bundle / "reports").iterdir())
    token = files[2].read_text()
    files[2].write_text(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    files[1].unlink()
    result = verify_bundle(bundle)
    text = " | ".join(result.problems)
    assert "report seq 2" in text and "unreadable" in text
    assert "report seq 3" in text and "signature" in text
    runner = CliRunner()
    import typer

    app = typer.Typer()
    app.command()(verify_command)
    outcome = runner.invoke(app, [str(bundle)])
    assert outcome.exit_code == 1 and "FAIL" in outcome.output
    assert evidence_app is not None
