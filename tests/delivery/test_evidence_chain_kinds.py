"""The agent's audit bundle of a chain that is more than day reports (issue 17): the bundle
takes the reports of any kind signed between the exported ones, so it verifies; a sequence
number missing from the slice the bundle declares still fails."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey
from typer.testing import CliRunner

from agent.audit_bundle import BundleReport, export_bundle, verify_bundle
from agent.config import load_config
from agent.outbox import Outbox, OutboxItem
from agent.protocol.envelope import public_jwk
from agent.protocol.merkle import Segment
from agent.protocol.period import Period
from agent.store.store import Store
from tests.support.chain_reports import commit, commit_mixed
from tests.support.reports import segments
from tieragent.cli import _register_subcommands, app

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "demo-agent.yaml"  # factory demo-tj-001, as tests.support.reports
DAY = "2025-02-27"  # seq 1 and its revision, seq 6; a month and a year report lie between


def _segments_for(report: Mapping[str, Any]) -> Iterable[Segment]:
    period = report["period"]
    return segments(Period(period["kind"], period["key"], period["time_zone"]), devices=1)


def _export(tmp_path: Path, with_between: bool = True) -> Path:
    """Feb 27 (seq 1 and its revision seq 6) with the chain's seq 2-5 between them."""
    key = OKPKey.generate_key("Ed25519")
    items = commit_mixed(Outbox(tmp_path / "outbox.db"), key, with_segments=True)
    chosen = [i for i in items if i.period_slot.split("/")[1] == DAY]
    between = [i for i in items if chosen[0].seq < i.seq < chosen[-1].seq and i not in chosen]
    out = tmp_path / "bundle"
    export_bundle(
        out,
        [BundleReport(i.jws) for i in chosen],
        [public_jwk(key)],
        _segments_for,
        chain=[BundleReport(i.jws) for i in between] if with_between else (),
    )
    return out


def _manifest(bundle: Path) -> dict[str, Any]:
    return dict(json.loads((bundle / "manifest.json").read_text()))


def _drop(bundle: Path, seq: int) -> None:
    """Take the report of `seq` out of the bundle: its file and its manifest entry."""
    manifest = _manifest(bundle)
    (entry,) = [e for e in manifest["reports"] if e["seq"] == seq]
    manifest["reports"].remove(entry)
    (bundle / entry["file"]).unlink()
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_a_bundle_with_the_reports_between_verifies(tmp_path: Path) -> None:
    """If a day and its revision are exported with the day, month and year reports signed
    between them, then the bundle declares seq 1..6, checks raw segments for the day's two
    reports only, and verifies."""
    bundle = _export(tmp_path)
    manifest = _manifest(bundle)
    assert manifest["chain"] == {"first_seq": 1, "last_seq": 6}
    roles = [(e["seq"], e["role"], e["period"]["kind"]) for e in manifest["reports"]]
    assert roles == [(1, "period", "day"), (2, "chain", "day"), (3, "chain", "month"),
                     (4, "chain", "day"), (5, "chain", "year"), (6, "period", "day")]
    assert len(list((bundle / "raw").iterdir())) == 2
    result = verify_bundle(bundle)
    assert result.problems == []
    assert (result.reports, result.segments) == (6, 2 * 2 * 24)


@pytest.mark.parametrize(
    ("seq", "message"),
    [
        (3, "report seq 4 (2025-03-01): chain gap after seq 2 (seq 3 not in the bundle)."),
        (6, "chain: seq 6 not in the bundle (the manifest declares seq 1..6)."),
        (1, "chain: seq 1 not in the bundle (the manifest declares seq 1..6)."),
    ],
)
def test_a_seq_missing_from_the_declared_slice_fails(
    tmp_path: Path, seq: int, message: str
) -> None:
    """If a report of the declared slice is taken out of the bundle (file and manifest entry),
    whether a month report between or the exported report at either end, then verify fails
    naming the missing seq."""
    bundle = _export(tmp_path)
    _drop(bundle, seq)
    assert message in verify_bundle(bundle).problems


def test_a_bundle_without_the_reports_between_fails(tmp_path: Path) -> None:
    """If only the day's two reports are bundled (as before issue 17), then seq 2-5 are a gap
    that verify names: a bundle must hold its chain slice whole."""
    problems = verify_bundle(_export(tmp_path, with_between=False)).problems
    assert problems == [
        f"report seq 6 ({DAY} revision 1): chain gap after seq 1 (seq 2..5 not in the bundle)."
    ]


def _agent_dirs(tmp_path: Path) -> tuple[Path, Path, list[OutboxItem]]:
    """An agent's data folder (an empty store, the outbox with the MIXED chain: reports of no
    raw segment, which is what the empty store gives back) and its key folder."""
    key = OKPKey.generate_key("Ed25519")
    data, keys = tmp_path / "data", tmp_path / "keys"
    data.mkdir()
    keys.mkdir()
    Store.open(data / "agent.db", load_config(CONFIG)).close()
    outbox = Outbox(data / "outbox.db")
    items = commit_mixed(outbox, key)
    outbox.close()
    (keys / "agent-key.jwk.json").write_text(json.dumps(public_jwk(key)))
    return data, keys, items


def test_cli_export_of_a_revised_day_verifies(tmp_path: Path) -> None:
    """If `tieragent evidence export --period` names a day whose revision was signed after a
    month and a year report, then the bundle carries those reports too and `tieragent verify`
    passes it (before: "chain gap after seq 1")."""
    data, keys, _ = _agent_dirs(tmp_path)
    _register_subcommands()
    runner = CliRunner()
    bundle = tmp_path / "bundle"
    exported = runner.invoke(app, [
        "evidence", "export", "--config", str(CONFIG), "--period", DAY, "--out", str(bundle),
        "--data-dir", str(data), "--key-dir", str(keys),
    ])
    assert exported.exit_code == 0, exported.output
    verified = runner.invoke(app, ["verify", str(bundle)])
    assert verified.exit_code == 0, verified.output
    assert "6 report(s)" in verified.output
    assert "2 report(s) with their raw segments" in exported.output
    assert "4 other report(s) of the chain" in exported.output


def test_two_reports_of_one_seq_are_named_a_fork(tmp_path: Path) -> None:
    """If a bundle holds two different reports that both claim seq 1 (each the first of its
    own outbox), then verify names the fork rather than a gap."""
    key = OKPKey.generate_key("Ed25519")
    first = commit(Outbox(tmp_path / "a.db"), key, "day", "2025-02-27")
    forked = commit(Outbox(tmp_path / "b.db"), key, "day", "2025-02-28")
    assert (first.seq, forked.seq) == (1, 1)
    bundle = tmp_path / "bundle"
    export_bundle(bundle, [BundleReport(first.jws), BundleReport(forked.jws)], [public_jwk(key)],
                  None)
    problems = verify_bundle(bundle).problems
    assert "report seq 1 (2025-02-28): a second report of seq 1 (a fork)." in problems


def test_cli_export_takes_a_period_not_a_text_prefix(tmp_path: Path) -> None:
    """If `--period` is not a year, month or day ("2025-0"), then export exits 2 naming the
    form (before: it was a text prefix, so "2025-0" exported February and March, and
    "2026-1" would have taken October to December)."""
    data, keys, _ = _agent_dirs(tmp_path)
    _register_subcommands()
    exported = CliRunner().invoke(app, [
        "evidence", "export", "--config", str(CONFIG), "--period", "2025-0", "--out",
        str(tmp_path / "bundle"), "--data-dir", str(data), "--key-dir", str(keys),
    ])
    assert exported.exit_code == 2, exported.output
    assert "YYYY, YYYY-MM or YYYY-MM-DD" in exported.output
    assert not (tmp_path / "bundle").exists()
