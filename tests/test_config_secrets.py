"""`check-config` and `run` resolve every secret; a config file in any encoding gets a sentence.

Everything goes through the real CLI: exit 2, the file, the key path and the fix, never the
secret's value, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tieragent.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "example-minimal.yaml"
ENV_VAR = "TIERAGENT_TEST_OPCUA_PASSWORD"
KEY = "connections.cell-opcua.security.password"
VALUE = "pa55-w0rd-never-printed"
runner = CliRunner()


def _with_secret(tmp_path: Path, secret: dict[str, str]) -> Path:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    raw["connections"]["cell-opcua"]["security"].update(username="operator", password=secret)
    path = tmp_path / "factory.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def _check(*args: str, env: dict[str, Any] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["check-config", *args], env=env)
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exception is None or isinstance(result.exception, SystemExit), output
    assert "Traceback" not in output
    return result.exit_code, " ".join(output.split())  # a long line may wrap


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed entry point in a fresh interpreter (what a user runs)."""
    environment = {k: v for k, v in os.environ.items() if k != ENV_VAR} | (env or {})
    environment["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "tieragent", *args],
        capture_output=True, text=True, env=environment, timeout=120, check=False,
    )


# --- secrets --------------------------------------------------------------------------


def test_missing_env_var(tmp_path: Path) -> None:
    path = _with_secret(tmp_path, {"env": ENV_VAR})
    code, out = _check(str(path), env={ENV_VAR: None})
    assert code == 2
    assert str(path) in out
    assert f"{KEY}.env" in out
    assert f"environment variable {ENV_VAR} is not set" in out
    assert "use `file:`" in out  # the fix


def test_empty_env_var(tmp_path: Path) -> None:
    path = _with_secret(tmp_path, {"env": ENV_VAR})
    code, out = _check(str(path), env={ENV_VAR: "  "})
    assert code == 2
    assert f"{KEY}.env" in out
    assert f"environment variable {ENV_VAR} is empty" in out


def test_missing_file(tmp_path: Path) -> None:
    secret = tmp_path / "no-such-secret"
    path = _with_secret(tmp_path, {"file": str(secret)})
    code, out = _check(str(path))
    assert code == 2
    assert str(path) in out
    assert f"{KEY}.file" in out
    assert f"secret file {secret} does not exist" in out
    assert "correct the path" in out


def test_unreadable_file(tmp_path: Path) -> None:
    secret = tmp_path / "a-folder"
    secret.mkdir()  # unreadable as a file even for root
    path = _with_secret(tmp_path, {"file": str(secret)})
    code, out = _check(str(path))
    assert code == 2
    assert f"{KEY}.file" in out
    assert f"secret file {secret} cannot be read" in out


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_file_without_permission(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(VALUE, encoding="utf-8")
    secret.chmod(0)
    path = _with_secret(tmp_path, {"file": str(secret)})
    code, out = _check(str(path))
    assert code == 2
    assert "cannot be read (Permission denied)" in out
    assert VALUE not in out


def test_empty_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("\n", encoding="utf-8")
    path = _with_secret(tmp_path, {"file": str(secret)})
    code, out = _check(str(path))
    assert code == 2
    assert f"{KEY}.file" in out
    assert f"secret file {secret} is empty" in out


def test_secret_file_not_utf8_is_not_printed(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_bytes("密码".encode("gbk"))
    path = _with_secret(tmp_path, {"file": str(secret)})
    code, out = _check(str(path))
    assert code == 2
    assert f"secret file {secret} is not UTF-8 text" in out
    assert "密码" not in out


def test_resolved_from_env_and_file(tmp_path: Path) -> None:
    path = _with_secret(tmp_path, {"env": ENV_VAR})
    code, out = _check(str(path), env={ENV_VAR: VALUE})
    assert code == 0, out
    assert "1 secret(s) resolved" in out
    assert VALUE not in out

    secret = tmp_path / "pw"
    secret.write_text(VALUE + "\n", encoding="utf-8")
    path = _with_secret(tmp_path, {"file": str(secret)})
    code, out = _check(str(path))
    assert code == 0, out
    assert "1 secret(s) resolved" in out
    assert VALUE not in out


def test_no_secrets_option_checks_without_resolving(tmp_path: Path) -> None:
    path = _with_secret(tmp_path, {"env": ENV_VAR})
    code, out = _check("--no-secrets", str(path), env={ENV_VAR: None})
    assert code == 0, out
    assert "1 secret(s) not resolved" in out


def test_run_refuses_to_start_without_its_secret(tmp_path: Path) -> None:
    path = _with_secret(tmp_path, {"env": ENV_VAR})
    data = tmp_path / "data"
    result = _cli("run", "--config", str(path), "--data-dir", str(data), "--duration", "1",
                  "--metrics-port", "0")
    assert result.returncode == 2, result.stderr
    assert f"{KEY}.env" in result.stderr
    assert f"environment variable {ENV_VAR} is not set" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (data / "agent.db").exists()  # stopped before opening the store


def test_commands_without_secrets_still_load(tmp_path: Path) -> None:
    path = _with_secret(tmp_path, {"env": ENV_VAR})
    data = tmp_path / "data"
    result = _cli("measures", "--config", str(path), "--period", "2026", "--data-dir", str(data))
    # The configuration loads; the command stops only because there is no store yet.
    assert result.returncode == 1, result.stderr
    assert "does not exist; run `tieragent run`" in result.stderr
    assert "Invalid configuration" not in result.stderr


# --- encodings ------------------------------------------------------------------------


def _example_text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


def test_gbk_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "factory.yaml"
    path.write_bytes(("# 天津示范工厂的配置\n" + _example_text()).encode("gbk"))
    result = _cli("check-config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert str(path) in result.stderr
    assert "is encoded as GBK" in result.stderr
    assert "save it as UTF-8" in result.stderr


def test_binary_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "factory.yaml"
    path.write_bytes(bytes(range(256)) * 8)
    result = _cli("check-config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert str(path) in result.stderr
    assert "is not a text file" in result.stderr


def test_binary_without_nul_bytes(tmp_path: Path) -> None:
    path = tmp_path / "factory.yaml"
    path.write_bytes(bytes(b for b in range(1, 256) if b != 10) * 8)
    code, out = _check(str(path))
    assert code == 2
    assert "is not a text file" in out


def test_utf16_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "factory.yaml"
    path.write_bytes(_example_text().encode("utf-16"))
    code, out = _check(str(path))
    assert code == 2
    assert "is encoded as UTF-16; save it as UTF-8" in out


def test_latin1_file_is_not_called_gbk(tmp_path: Path) -> None:
    path = tmp_path / "factory.yaml"
    path.write_bytes(_example_text().replace("name:", "# café\nname:", 1).encode("latin-1"))
    code, out = _check(str(path))
    assert code == 2
    assert "is not UTF-8 text (byte 0xE9 at line" in out
    assert "GBK" not in out


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "factory.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + ("# 天津示范工厂\n" + _example_text()).encode("utf-8"))
    code, out = _check(str(path))
    assert code == 0, out
    assert "OK" in out
