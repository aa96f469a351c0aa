"""`tieragent demo` end to end, shortened: the real simulator, agent, amqtt, bureau.

The README's main command runs the same code over the whole year to date with a minute
of live collection; here the history is five days and live collection 10 s, so that the
suite stays fast while every stage still runs for real.
"""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bureau.evidence_verify import verify_evidence_dir
from bureau.store import SqliteReportStore


@dataclass(frozen=True)
class DemoRun:
    out: Path
    output: str
    returncode: int


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "tieragent", "demo", "--out", str(out), "--live-seconds", "10",
         "--history-days", "5"],
        capture_output=True, text=True, timeout=300, check=False,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    return DemoRun(out, result.stdout + result.stderr, result.returncode)


def test_Z4_the_demo_leaks_no_private_key(demo_run: DemoRun) -> None:
    """If the demo runs (agent, bureau, simulator and broker, with their logs), then its
    output and every file it wrote except the two private key files hold no PEM private key,
    no private key's `d` and none of its raw bytes, and both key files are 0600."""
    assert demo_run.returncode == 0, demo_run.output[-4000:]
    key_files = [demo_run.out / "agent" / "keys" / "agent-key.pem",
                 demo_run.out / "bureau" / "bureau-key.pem"]
    secrets = [b"PRIVATE KEY"]
    for key_file in key_files:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, key_file
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
        assert isinstance(key, Ed25519PrivateKey)
        raw = key.private_bytes_raw()
        secrets += [raw, base64.urlsafe_b64encode(raw).rstrip(b"="), base64.b64encode(raw)]
    written = [p for p in demo_run.out.rglob("*") if p.is_file() and p not in key_files]
    assert len(written) > 20
    for blob_name, blob in [("output", demo_run.output.encode()),
                            *((str(p), p.read_bytes()) for p in written)]:
        assert not any(secret in blob for secret in secrets), blob_name


def test_demo_runs_the_whole_chain(demo_run: DemoRun) -> None:
    out, output = demo_run.out, demo_run.output
    assert demo_run.returncode == 0, output[-4000:]
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
