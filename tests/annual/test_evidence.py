"""The evidence folder: export, offline verification, and tampering named where it happened."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from annual_scenario import BUREAU_KEY, Scenario
from simdata import BENCHMARKS, DECLARATIONS, FACTORY
from typer import Typer
from typer.testing import CliRunner

from agent.protocol.keys import save_private_key
from bureau.evidence_verify import is_evidence_dir, verify_evidence_dir
from bureau.store import SqliteReportStore
from tieragent.commands.bureau_annual import register

CONDITION = "basic.oee_above_province_avg"


def _copy(evidence: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(evidence, target)
    return target


def _flip_digit(path: Path, start: int) -> None:
    """Change the first digit at or after byte `start` (one byte)."""
    data = bytearray(path.read_bytes())
    index = next(i for i in range(start, len(data)) if chr(data[i]).isdigit())
    data[index] = ord(str((int(chr(data[index])) + 1) % 10))
    path.write_bytes(bytes(data))


def test_the_folder_holds_what_an_evaluator_needs(evidence: Path) -> None:
    """If the evidence is exported, then it has every stored report's JWS as received, the keys
    with validity, the inputs, the evaluation, the HTML and a manifest hashing every file."""
    manifest = json.loads((evidence / "manifest.json").read_text())
    files = manifest["files"]
    assert len([f for f in files if f.startswith("reports/")]) == 54 + 2  # accepted + pending
    assert len([f for f in files if f.startswith("baseline/")]) == 10
    assert len([f for f in files if f.startswith("rejected/")]) == 1
    assert {"evaluation.json", "report.html", "keys.json", "inputs/policy.yaml"} <= set(files)
    keys = json.loads((evidence / "keys.json").read_text())
    assert keys[0]["status"] == "active" and keys[0]["valid_from"].endswith("Z")
    assert is_evidence_dir(evidence) and not is_evidence_dir(evidence / "reports")


def test_reports_in_the_folder_are_the_bytes_the_bureau_received(
    evidence: Path, scenario: Scenario
) -> None:
    """If a report is in the folder, then its file is byte for byte the stored JWS."""
    store = SqliteReportStore(scenario.db)
    stored = {r.report_id: r.jws for r in store.reports(FACTORY)}
    store.close()
    for file in (evidence / "reports").iterdir():
        report_id = file.stem.split("_", 2)[2]
        assert file.read_text(encoding="ascii") == stored[report_id]


def test_the_untouched_folder_verifies_offline(evidence: Path) -> None:
    """If nothing was changed, then every signature, the chain, the recomputed evaluation and
    every number of the HTML agree."""
    result = verify_evidence_dir(evidence)
    assert result.problems == []
    assert result.reports == 67 and result.numbers > 200


def test_a_flipped_byte_in_a_report_is_named(evidence: Path, tmp_path: Path) -> None:
    """If one byte of a signed report changes, then verification fails naming that file and
    report id (signature), and the evaluation no longer recomputes."""
    folder = _copy(evidence, tmp_path)
    target = sorted((folder / "reports").iterdir())[5]
    report_id = target.stem.split("_", 2)[2]
    data = bytearray(target.read_bytes())
    middle = data.index(b".") + 200
    data[middle] = ord("A") if data[middle] != ord("A") else ord("B")
    target.write_bytes(bytes(data))
    problems = verify_evidence_dir(folder).problems
    named = [p for p in problems if report_id in p and "signature" in p]
    assert named, problems
    assert any(p.startswith(f"reports/{target.name}: SHA-256") for p in problems)
    assert any(p.startswith("evaluation.json:") and "coverage" in p for p in problems)


def test_a_flipped_number_in_the_evaluation_is_named(evidence: Path, tmp_path: Path) -> None:
    """If one digit of a condition's measured value in evaluation.json changes, then
    verification names evaluation.json, the condition and the field."""
    folder = _copy(evidence, tmp_path)
    path = folder / "evaluation.json"
    text = path.read_text()
    at = text.index(f'"condition_id": "{CONDITION}"')
    measured = text.index('"measured": ', at) + len('"measured": 0.')
    _flip_digit(path, len(text[:measured].encode()))
    problems = verify_evidence_dir(folder).problems
    assert any(p.startswith("evaluation.json: SHA-256") for p in problems)
    assert any(f"condition_id={CONDITION}].measured" in p for p in problems), problems
    assert any(f"condition {CONDITION}" in p and "report.html" in p for p in problems)


@pytest.mark.parametrize("part", ["text", "data-value"])
def test_a_flipped_number_in_the_html_is_named(evidence: Path, tmp_path: Path, part: str) -> None:
    """If one digit of a number shown in the HTML (its text or its data-value) changes, then
    verification names report.html, the condition and the field."""
    folder = _copy(evidence, tmp_path)
    path = folder / "report.html"
    html = path.read_text()
    match = re.search(rf'<td [^>]*data-condition="{re.escape(CONDITION)}" '
                      r'data-field="measured">', html)
    assert match is not None
    start = match.end() if part == "text" else html.rindex("data-value=", 0, match.end())
    _flip_digit(path, len(html[:start].encode()))
    problems = verify_evidence_dir(folder).problems
    assert any(p.startswith("report.html: SHA-256") for p in problems)
    assert any(p.startswith("report.html: line") and f"condition {CONDITION}" in p
               and "field measured" in p for p in problems), problems


def test_an_edited_manifest_or_an_extra_file_is_named(evidence: Path, tmp_path: Path) -> None:
    """If the manifest is edited or a file is added, then verification says which."""
    folder = _copy(evidence, tmp_path)
    (folder / "reports" / "extra.jws").write_text("x")
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"through": "2025-02-28"',
                                                     '"through": "2025-01-31"'))
    problems = verify_evidence_dir(folder).problems
    assert "reports/extra.jws: present but not listed in the manifest." in problems
    assert any(p.startswith("evaluation.json:") and "period.last_day" in p for p in problems)


# ---- the CLI ---------------------------------------------------------------------------------


def _app() -> Typer:
    app = Typer()
    register(app)
    return app


def bureau_key_file(tmp_path: Path) -> Path:
    """The scenario's bureau key as the PEM file `--key` reads."""
    path = tmp_path / "bureau-key.pem"
    save_private_key(path, BUREAU_KEY, None)
    return path


def _args(scenario: Scenario, *extra: str) -> list[str]:
    return ["--db", str(scenario.db), "--factory", FACTORY, "--year", "2025",
            "--through", "2025-02-28", "--benchmarks", str(BENCHMARKS),
            "--declarations", str(DECLARATIONS), "--baseline-year", "2024", *extra]


def test_cli_evaluate_json_is_the_evidence_evaluation(scenario: Scenario, evidence: Path) -> None:
    """If `evaluate --json` runs with the evidence's arguments, then it prints exactly the
    evaluation stored in the folder; without --json it prints the tables."""
    runner = CliRunner()
    result = runner.invoke(_app(), ["evaluate", *_args(scenario, "--json")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads((evidence / "evaluation.json").read_text())
    table = runner.invoke(_app(), ["evaluate", *_args(scenario)])
    assert table.exit_code == 0 and "2025-02" in table.stdout and "NO DATA" in table.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--factory", "nobody"], "is not enrolled"),
        (["--year", "2019", "--through", "2019-12-31"], "no daily reports for 2019"),
        (["--policy", "/nonexistent.yaml"], "does not exist"),
        (["--db", "/nonexistent.db"], "no bureau database"),
        (["--through", "2025-13-01"], "is not a date"),
        (["--baseline-year", "2025"], "must lie before 2025"),
    ],
)
def test_cli_user_mistakes_exit_2_with_one_sentence(
    scenario: Scenario, change: list[str], message: str
) -> None:
    """If the factory, year, files or options are wrong, then the command says so and exits 2."""
    result = CliRunner().invoke(_app(), ["evaluate", *_args(scenario), *change])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_cli_bad_policy_file_and_used_folder(scenario: Scenario, tmp_path: Path) -> None:
    """If the policy file is invalid or the output folder is not empty, then exit 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy_id: x\n")
    result = CliRunner().invoke(_app(), ["evaluate", *_args(scenario, "--policy", str(bad))])
    assert result.exit_code == 2 and "bad.yaml" in result.stderr
    used = tmp_path / "used"
    used.mkdir()
    (used / "a").write_text("a")
    key = bureau_key_file(tmp_path)
    result = CliRunner().invoke(
        _app(), ["evidence", *_args(scenario, "--out", str(used), "--key", str(key))])
    assert result.exit_code == 2 and "new or empty" in result.stderr


def test_cli_evidence_and_verify(scenario: Scenario, tmp_path: Path) -> None:
    """If `evidence` writes a folder, then `verify-evidence` passes it (exit 0) and fails a
    changed copy (exit 1)."""
    out = tmp_path / "ev"
    runner = CliRunner()
    key = bureau_key_file(tmp_path)
    written = runner.invoke(
        _app(), ["evidence", *_args(scenario, "--out", str(out), "--key", str(key))])
    assert written.exit_code == 0, written.output
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF-") and "report.pdf" in written.output
    assert runner.invoke(_app(), ["verify-evidence", str(out)]).exit_code == 0
    _flip_digit(out / "evaluation.json", 200)
    failed = runner.invoke(_app(), ["verify-evidence", str(out)])
    assert failed.exit_code == 1 and "FAIL evaluation.json" in failed.stdout
