"""deploy/tieragent.service passes `systemd-analyze verify` and keeps its hardening.

verify checks that ExecStart's binary exists: the shipped unit points at the gateway's
/opt/tieragent/venv, absent here, so a copy pointing at this checkout's .venv is verified
cleanly, and the shipped unit must fail with that one complaint and no other.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "deploy" / "tieragent.service"
SHIPPED_BIN = "/opt/tieragent/venv/bin/tieragent"
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def _directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    if not Path(ANALYZE).exists():
        pytest.fail("systemd-analyze is missing; .ci/setup installs Debian's systemd package")
    return subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, cwd=unit.parent)


def test_unit_keeps_its_settings() -> None:
    d = _directives()
    assert d["Type"] == ["notify"] and d["Restart"] == ["on-failure"]
    assert d["User"] == ["tieragent"] and "DynamicUser" not in d
    assert d["StateDirectory"] == ["tieragent"]
    assert d["ProtectSystem"] == ["strict"] and d["NoNewPrivileges"] == ["yes"]
    assert d["ReadWritePaths"] == ["/var/lib/tieragent"]
    assert int(d["WatchdogSec"][0]) > 0
    assert sorted(c.split(":")[0] for c in d["LoadCredential"]) == ["key-passphrase",
                                                                      "mqtt-password"]
    (exec_start,) = d["ExecStart"]
    assert exec_start.startswith(f"{SHIPPED_BIN} run ")
    assert "--data-dir /var/lib/tieragent" in exec_start


def test_unit_verifies(tmp_path: Path) -> None:
    tieragent = Path(sys.executable).parent / "tieragent"
    assert tieragent.exists(), tieragent
    copy = tmp_path / "tieragent.service"
    copy.write_text(UNIT.read_text().replace(SHIPPED_BIN, str(tieragent)))
    result = _verify(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""

    # The shipped unit: only the venv it names is missing on this machine.
    shipped = _verify(UNIT)
    problems = [line for line in (shipped.stdout + shipped.stderr).splitlines() if line.strip()]
    assert shipped.returncode != 0 and problems, "verify no longer checks ExecStart?"
    assert all(f"Command {SHIPPED_BIN} is not executable" in line for line in problems), problems
