"""`tieragent check-config`: valid examples pass, every user mistake names its key, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agent.config import ConfigError, json_schema, load_config, parse_config
from connectors.config import Secret
from tieragent.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "example-minimal.yaml"
runner = CliRunner()


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def _check(tmp_path: Path, raw: dict | str) -> tuple[int, str]:
    path = tmp_path / "factory.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw), encoding="utf-8")
    result = runner.invoke(app, ["check-config", str(path)])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in output
    return result.exit_code, output


FACTORY_CONFIGS = sorted(
    p for p in (ROOT / "config").glob("*.yaml") if not p.name.startswith("declarations")
)


@pytest.mark.parametrize("path", FACTORY_CONFIGS, ids=lambda p: p.name)
def test_shipped_examples_are_valid(path: Path) -> None:
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 0, result.output


def test_unknown_role_names_the_key(tmp_path: Path) -> None:
    raw = _example()
    raw["devices"][0]["signals"][1]["role"] = "goodcount"
    code, out = _check(tmp_path, raw)
    assert code == 2
    assert "devices[0].signals[1].role" in out
    assert "good_count" in out  # says what to write instead


def test_overlapping_registers(tmp_path: Path) -> None:
    raw = _example()
    raw["devices"][1]["signals"][2]["modbus"]["address"] = 0  # uint32 at 0..1 over state and total
    code, out = _check(tmp_path, raw)
    assert code == 2
    assert "overlap in holding at address" in out
    assert "PRESS-01" in out


def test_bad_endpoint_url(tmp_path: Path) -> None:
    raw = _example()
    raw["connections"]["cell-opcua"]["endpoint"] = "http://127.0.0.1:4840"
    code, out = _check(tmp_path, raw)
    assert code == 2
    assert "connections.cell-opcua.endpoint" in out
    assert "opc.tcp://" in out


def test_missing_certificate_file(tmp_path: Path) -> None:
    raw = _example()
    raw["connections"]["cell-opcua"]["security"] = {
        "policy": "Basic256Sha256",
        "mode": "SignAndEncrypt",
        "certificate": str(tmp_path / "nope.der"),
        "private_key": str(tmp_path / "nope.pem"),
    }
    code, out = _check(tmp_path, raw)
    assert code == 2
    assert "connections.cell-opcua.security" in out
    assert "nope.der" in out


def test_policy_mode_mismatch(tmp_path: Path) -> None:
    raw = _example()
    raw["connections"]["cell-opcua"]["security"] = {"policy": "None", "mode": "Sign"}
    code, out = _check(tmp_path, raw)
    assert code == 2
    assert "policy None goes only with mode None" in out


def test_unknown_connection_and_state_map(tmp_path: Path) -> None:
    raw = _example()
    raw["devices"][0]["connection"] = "cell-opcuaa"
    raw["devices"][1]["signals"][0]["state_map"] = "packml2"
    code, out = _check(tmp_path, raw)
    assert code == 2
    assert "devices[0] (CNC-01).connection: unknown connection 'cell-opcuaa'" in out
    assert "known: cell-opcua, line2-modbus" in out
    assert "unknown 'packml2'" in out


def test_unknown_key_and_missing_key(tmp_path: Path) -> None:
    raw = _example()
    raw["factory"]["timezone"] = "Asia/Shanghai"
    del raw["factory"]["industry_code"]
    code, out = _check(tmp_path, raw)
    assert code == 2
    assert "factory.timezone: unknown key" in out
    assert "factory.industry_code: missing" in out


def test_bad_time_zone_and_modbus_unit(tmp_path: Path) -> None:
    raw = _example()
    raw["factory"]["time_zone"] = "Asia/Tianjin"
    del raw["devices"][1]["unit_id"]
    code, out = _check(tmp_path, raw)
    assert code == 2
    assert "unknown time zone 'Asia/Tianjin'" in out


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    code, out = _check(tmp_path, "factory: [unclosed\n")
    assert code == 2
    assert "not valid YAML" in out and "line" in out
    result = runner.invoke(app, ["check-config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "No such file" in result.output


def test_load_config_raises_config_error_with_every_problem(tmp_path: Path) -> None:
    raw = _example()
    raw["devices"][0]["kind"] = "lathe"
    raw["devices"][2]["line"] = 7  # wrong type
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, "f.yaml")
    keys = {p.key for p in caught.value.problems}
    assert {"devices[0].kind", "devices[2].line"} <= keys


def test_secret_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERAGENT_TEST_SECRET", "s3cret")
    assert Secret(env="TIERAGENT_TEST_SECRET").resolve() == "s3cret"
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    assert Secret(file=secret_file).resolve() == "from-file"
    with pytest.raises(ValueError):
        Secret()


def test_committed_json_schema_is_current() -> None:
    committed = json.loads((ROOT / "config" / "schemas" / "config.schema.json").read_text())
    assert committed == json_schema(), "run: tieragent config-schema"


def test_example_loads_typed() -> None:
    config = load_config(EXAMPLE)
    assert config.factory.factory_id == "example-001"
    press = config.device("PRESS-01")
    assert press.unit_id == 1
    assert config.state_map("plain")[1] == "running"


def test_a_bad_valid_range_is_named_and_printed_as_written(tmp_path: Path) -> None:
    """Config errors print as plain text: "[min, max]" in a message is not eaten as markup."""
    raw = yaml.safe_load((Path(__file__).parent / "agent" / "data" / "agent.yaml").read_text())
    raw["devices"][0]["signals"][0]["valid_range"] = [5, 1]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 2
    assert "devices[0].signals[0].valid_range: give [min, max] with min < max" in result.output
