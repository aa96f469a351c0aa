"""The evidence HTML in a real headless Chromium: it renders, and the rendered DOM's conditions
table carries the evaluation's numbers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bureau.evidence_verify import _RefCollector, resolve

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,2000",
)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (the browser test "
                    "needs a real headless Chromium)")
    return path


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, timeout=120, check=False,
    )


def test_chromium_renders_the_report_and_its_dom_has_the_conditions(
    evidence: Path, tmp_path: Path
) -> None:
    """If the evidence report is opened in headless Chromium, then it renders to a non-trivial
    screenshot, and the rendered DOM's conditions table has one row per condition with the
    evaluation's status and the measured and threshold values of evaluation.json."""
    page = (evidence / "report.html").resolve().as_uri()
    png = tmp_path / "report.png"
    shot = _run([f"--screenshot={png}", page], tmp_path / "profile-shot")
    assert png.exists(), shot.stderr.decode(errors="replace")[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000

    dom = _run(["--dump-dom", page], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    parser = _RefCollector()
    parser.feed(dom.stdout.decode("utf-8"))
    evaluation = json.loads((evidence / "evaluation.json").read_text())
    conditions = evaluation["evaluation"]["conditions"]
    assert parser.condition_rows == [c["condition_id"] for c in conditions]
    cells = {(a["data-condition"], a["data-field"]): (a, text) for a, text, _ in parser.numbers
             if "data-condition" in a}
    for condition in conditions:
        for field in ("measured", "threshold"):
            attrs, _ = cells[(condition["condition_id"], field)]
            assert json.loads(attrs["data-value"]) == condition[field]
            assert resolve(evaluation, attrs["data-ref"]) == condition[field]
    html = dom.stdout.decode("utf-8")
    for condition in conditions:
        marker = f'data-condition="{condition["condition_id"]}" data-status="{condition["status"]}"'
        assert marker in html
