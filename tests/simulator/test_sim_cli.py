"""`tieragent sim` and its sub-commands, run as a user would."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from typer.testing import CliRunner

from tieragent.commands.sim import app

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "config" / "factories" / "demo.yaml"
SIM = [sys.executable, "-m", "tieragent", "sim"]  # exactly `tieragent sim`


def _read_banner(process: subprocess.Popen[str], deadline_s: float = 30.0) -> dict[str, str]:
    """Read the startup lines ("Name: value") until "Serving", within a deadline."""
    assert process.stdout is not None
    found: dict[str, str] = {}
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("Serving"):
            return found
        name, _, value = line.partition(": ")
        found[name] = value.strip()
    process.kill()
    raise AssertionError(
        f"no banner; got {found}, stderr: {process.stderr.read() if process.stderr else ''}"
    )


def test_serve_prints_endpoints_takes_faults_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    """If `tieragent sim` serves the demo factory, then it prints its endpoints, answers a
    `fault` command sent to the printed control URL, and exits 0 on SIGINT within a few
    seconds, leaving the ledger behind."""
    ledger = tmp_path / "ledger"
    process = subprocess.Popen(
        [
            *SIM,
            "--factory",
            str(DEMO),
            "--profile",
            "compressed",
            "--opcua-port",
            "0",
            "--modbus-port",
            "0",
            "--security",
            "none",
            "--ledger-dir",
            str(ledger),
            "--pki-dir",
            str(tmp_path / "pki"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = _read_banner(process)
        assert banner["OPC UA endpoint"].startswith("opc.tcp://127.0.0.1:")
        assert banner["Modbus TCP"].startswith("127.0.0.1:")
        control = banner["Control"]
        fault = subprocess.run(
            [*SIM, "fault", "freeze", "--device", "CNC-01", "--control", control],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert fault.returncode == 0, fault.stderr
        assert json.loads(fault.stdout) == {"action": "freeze", "ok": True}
        refused = subprocess.run(
            [*SIM, "fault", "freeze", "--device", "NOPE", "--control", control],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert refused.returncode == 2
        assert "unknown device 'NOPE'" in refused.stderr and "Traceback" not in refused.stderr
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - stopped_at < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert {"intervals.csv", "hourly.csv", "meta.json", "faults.jsonl"} <= {
        p.name for p in ledger.iterdir()
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--factory", "missing.yaml"], "No such file"),
        (["--factory", str(DEMO), "--opcua-port", "70000"], "--opcua-port"),
        (["--factory", str(DEMO), "--profile", "fast"], "unknown profile 'fast'"),
        (["--factory", str(DEMO), "--security", "Basic128Rsa15"], "unknown --security"),
        (["--factory", str(DEMO), "--strict", "--security", "none"], "strict mode forbids"),
        (["--factory", str(DEMO), "--user", "nopassword"], "NAME:PASSWORD"),
        ([], "give the factory"),
        (
            [
                "history",
                "--factory",
                str(DEMO),
                "--start",
                "2026-13-01",
                "--end",
                "2027-01-01",
                "--out",
                "x",
            ],
            "--start wants a date",
        ),
    ],
)
def test_bad_input_gives_a_clear_message_and_exit_2(args: list[str], message: str) -> None:
    """If the user gives a bad file, port, profile or option, then the CLI prints what is
    wrong (no traceback) and exits 2."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_certs_writes_server_and_client_pairs_with_private_keys_0600(tmp_path: Path) -> None:
    """If `certs` runs, then it writes DER certificates carrying the application URI and
    PEM keys readable by the owner only."""
    result = CliRunner().invoke(app, ["certs", "--out", str(tmp_path), "--days", "30"])
    assert result.exit_code == 0, result.output
    for name, uri in (
        ("server", "urn:tieragent:simulator:server"),
        ("client", "urn:tieragent:agent:client"),
    ):
        key = tmp_path / f"{name}_key.pem"
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        cert = x509.load_der_x509_certificate((tmp_path / f"{name}_cert.der").read_bytes())
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert alt.get_values_for_type(x509.UniformResourceIdentifier) == [uri]


def test_agent_config_prints_yaml_for_the_given_endpoints() -> None:
    """If `agent-config` runs, then stdout is YAML naming the given endpoints."""
    result = CliRunner().invoke(
        app,
        [
            "agent-config",
            "--factory",
            str(DEMO),
            "--opcua-endpoint",
            "opc.tcp://127.0.0.1:4999",
            "--modbus-port",
            "5999",
        ],
    )
    assert result.exit_code == 0, result.output
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    connections = config["connections"].values()
    assert {"protocol": "opcua", "endpoint": "opc.tcp://127.0.0.1:4999"} in connections
    assert any(c.get("port") == 5999 for c in connections)


def test_history_writes_ledger_and_samples(tmp_path: Path) -> None:
    """If `history` runs over two days, then the folder holds the ledger and samples."""
    out = tmp_path / "history"
    result = CliRunner().invoke(
        app,
        [
            "history",
            "--factory",
            str(DEMO),
            "--start",
            "2026-03-02",
            "--end",
            "2026-03-04",
            "--out",
            str(out),
            "--sample-interval",
            "3600",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 3
    assert meta["end"] - meta["start"] == 2 * 86400
    assert any((out / "samples").glob("*.npz"))
