"""The CLI's basics: `--version`, and paths that must exist are checked, never created."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tieragent.cli import _register_subcommands, app

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "demo-agent.yaml"


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    _register_subcommands()
    return CliRunner()


def test_version_prints_the_package_version() -> None:
    """If `tieragent --version` runs (the installed way, a new process), then it prints the
    package version and exits 0."""
    proc = subprocess.run([sys.executable, "-m", "tieragent", "--version"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"tieragent {version('tieragent')}"


@pytest.mark.parametrize(
    "args",
    [
        ["report", "status", "--outbox"],
        ["report", "send", "--broker", "mqtt://127.0.0.1:1", "--factory", "f-1",
         "--bureau-key", "bureau.jwk", "--until-drained", "--outbox"],
    ],
)
def test_an_outbox_that_does_not_exist_is_named_not_created(
    runner: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    """If --outbox names no file (a typo), then exit 2 naming it, and nothing is created."""
    (tmp_path / "bureau.jwk").write_text('{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}')
    outbox = tmp_path / "typo" / "outbox.db"
    result = runner.invoke(app, [a.replace("bureau.jwk", str(tmp_path / "bureau.jwk"))
                                 for a in args] + [str(outbox)])
    assert result.exit_code == 2, result.output
    assert str(outbox) in result.stderr and "does not exist" in result.stderr
    assert not outbox.exists() and not outbox.parent.exists()


def test_report_and_evidence_need_an_existing_store(runner: CliRunner, tmp_path: Path) -> None:
    """If --data-dir holds no agent.db, then `report` and `evidence export` exit 2 naming it,
    and create no store: an empty store would sign a report of nothing."""
    data = tmp_path / "typo"
    report = runner.invoke(app, ["report", "--config", str(CONFIG), "--period", "2026-01-01",
                                 "--data-dir", str(data), "--key-dir", str(tmp_path / "keys")])
    assert report.exit_code == 2, report.output
    assert str(data / "agent.db") in report.stderr
    export = runner.invoke(app, ["evidence", "export", "--config", str(CONFIG), "--period",
                                 "2026", "--out", str(tmp_path / "bundle"), "--data-dir",
                                 str(data), "--key-dir", str(tmp_path / "keys")])
    assert export.exit_code == 2, export.output
    assert str(data / "agent.db") in export.stderr
    assert not data.exists()
