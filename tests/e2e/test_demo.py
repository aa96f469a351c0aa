"""`tieragent demo` end to end, shortened: the real simulator, agent, amqtt, bureau.

The README's main command runs the same code over the whole year to date with a minute
of live collection; here the history is five days and live collection 10 s, so that the
suite stays fast while every stage still runs for real.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bureau.evidence_verify import verify_evidence_dir
from bureau.store import SqliteReportStore


def test_demo_runs_the_whole_chain(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "tieragent", "demo", "--out", str(out), "--live-seconds", "10",
         "--history-days", "5"],
        capture_output=True, text=True, timeout=300, check=False,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    assert "5 built and signed, 5 acknowledged by signed receipt" in output
    evidence = next((out / "evidence").iterdir())
    assert verify_evidence_dir(evidence).ok
    # The bureau stored exactly the five daily reports, accepted, in chain order.
    store = SqliteReportStore(out / "bureau" / "bureau.db")
    try:
        reports = store.reports("demo-tj-001")
    finally:
        store.close()
    assert [r.state for r in reports] == ["accepted"] * 5
    evaluation = json.loads((evidence / "evaluation.json").read_text())
    assert evaluation["coverage"]["accepted"] == 5
    # Live collection really read the simulator's servers.
    live_line = next(line for line in output.splitlines() if line.startswith("4 live:"))
    samples = int(live_line.split()[2].replace(",", ""))
    assert samples > 500
    # `tieragent verify DIR` routes an evidence folder to the offline verifier, and names
    # the file when one byte of a signed report changes.
    verify = [sys.executable, "-m", "tieragent", "verify", str(evidence)]
    ok = subprocess.run(verify, capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report_file = sorted((evidence / "reports").rglob("*.jws"))[0]
    data = bytearray(report_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    report_file.write_bytes(bytes(data))
    bad = subprocess.run(verify, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1
    assert report_file.name in bad.stdout
