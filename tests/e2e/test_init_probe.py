"""`tieragent init`, `discover --write-config` and `probe`, run as an operator would, against
the simulator's real OPC UA and Modbus servers (`tieragent sim` on free loopback ports)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agent.config import load_config, parse_config
from indicators.vocabulary import Role
from simulator.agent_config import export_agent_config
from simulator.certs import CLIENT_APPLICATION_URI, generate_certificate
from simulator.model import load_factory
from tests.support.ports import free_port
from tieragent.cli import _register_subcommands, app

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "config" / "factories" / "demo.yaml"
TIERAGENT = [sys.executable, "-m", "tieragent"]  # exactly `tieragent`


@dataclass(frozen=True)
class Sim:
    opcua: str
    modbus_host: str
    modbus_port: int


def _start_sim(folder: Path, *extra: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """`tieragent sim` on free ports; its endpoints as printed in its banner."""
    errors = folder / "sim-stderr.txt"
    with errors.open("w") as sink:  # a file, not a pipe: nobody reads it while it runs
        process = subprocess.Popen(
            [*TIERAGENT, "sim", "--factory", str(DEMO), "--profile", "compressed",
             "--opcua-port", "0", "--modbus-port", "0", "--pki-dir", str(folder / "server-pki"),
             *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=sink, text=True,
        )
    assert process.stdout is not None
    banner: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line or line.startswith("Serving"):
            break
        name, _, value = line.partition(": ")
        banner[name] = value.strip()
    if "OPC UA endpoint" not in banner:
        process.kill()
        process.wait()
        raise AssertionError(f"the simulator did not start: {errors.read_text()[-2000:]}")
    return process, banner


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    process, banner = _start_sim(tmp_path_factory.mktemp("sim"), "--security", "none")
    host, _, port = banner["Modbus TCP"].rpartition(":")
    try:
        yield Sim(banner["OPC UA endpoint"], host, int(port))
    finally:
        _stop(process)


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    """`tieragent ARGS` with 200 columns, so that table rows hold each cell on one line."""
    return subprocess.run(
        [*TIERAGENT, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_init_writes_a_config_that_checks_and_collects(sim: Sim, tmp_path: Path) -> None:
    """If `init` is given the factory's identity, the simulator's OPC UA endpoint and its
    Modbus address, then the commented config it writes passes `check-config` unchanged and
    `tieragent run` with it stores samples from the discovered devices."""
    out = tmp_path / "factory.yaml"
    made = _cli(
        "init", "--out", str(out), "--factory-id", "tj-042", "--enterprise-id",
        "91120116MA05TEST42", "--industry-code", "C3484", "--name", "Test Works",
        "--opcua", sim.opcua, "--modbus", f"{sim.modbus_host}:{sim.modbus_port}", "--yes",
    )
    assert made.returncode == 0, made.stderr
    text = out.read_text(encoding="utf-8")
    assert "# unified social credit code" in text and "# check:" in text
    assert "# Modbus" in text and "cannot be browsed" in text
    assert "not_declared" in text and "# delivery:" in text
    checked = _cli("check-config", str(out))
    assert checked.returncode == 0, checked.stderr
    assert "OK" in checked.stdout and "factory tj-042" in checked.stdout
    config = load_config(out)
    assert config.reporting is not None and config.reporting.periods == ("day",)
    assert config.reporting.grace_s == 900 and config.delivery is None
    assert len([d for d in config.devices if d.connection == "opcua-1"]) >= 10
    assert "modbus-1" in config.connections

    assert "keys init --dir data/keys" in made.stderr  # the next step `run` needs
    data = tmp_path / "data"
    unsigned = _cli("run", "--config", str(out), "--data-dir", str(data), "--duration", "1",
                    "--metrics-port", "0")
    assert unsigned.returncode == 2 and "keys init" in unsigned.stderr  # no key: a clear stop
    keyed = _cli("keys", "init", "--dir", str(data / "keys"))
    assert keyed.returncode == 0, keyed.stderr
    ran = _cli("run", "--config", str(out), "--data-dir", str(data), "--duration", "8",
               "--metrics-port", "0", timeout=90)
    assert ran.returncode == 0, ran.stderr
    with sqlite3.connect(data / "agent.db") as db:
        per_device = dict(
            db.execute(
                "SELECT device_id, COUNT(*) FROM samples WHERE quality = 0 GROUP BY device_id"
            ).fetchall()
        )
    assert len(per_device) >= 1 and set(per_device) <= {d.id for d in config.devices}
    assert sum(per_device.values()) >= 10


def test_init_refuses_to_overwrite_fills_placeholders_and_writes_delivery(
    tmp_path: Path,
) -> None:
    """If `init` runs without a terminal and without identity flags, then it writes valid
    placeholders marked CHANGE ME; an existing file is kept unless --force; with a broker
    and the bureau's key, `delivery:` is active."""
    _register_subcommands()
    runner = CliRunner()
    out = tmp_path / "factory.yaml"
    key = tmp_path / "bureau-key.json"
    key.write_text("{}", encoding="utf-8")
    first = runner.invoke(app, ["init", "--out", str(out), "--yes"])
    assert first.exit_code == 0, first.output
    text = out.read_text(encoding="utf-8")
    assert 'factory_id: "CHANGE-ME"' in text and "# CHANGE ME" in text
    config = load_config(out, resolve_secrets=False)
    assert config.devices == () and config.delivery is None

    again = runner.invoke(app, ["init", "--out", str(out), "--yes"])
    assert again.exit_code == 2 and "give --force" in again.output
    forced = runner.invoke(
        app,
        ["init", "--out", str(out), "--yes", "--force", "--factory-id", "f-9",
         "--enterprise-id", "E9", "--industry-code", "C3484", "--modbus", "10.0.0.5:502",
         "--broker", "mqtt://127.0.0.1:1883", "--bureau-key", str(key)],
    )
    assert forced.exit_code == 0, forced.output
    config = load_config(out, resolve_secrets=False)
    assert config.factory.factory_id == "f-9" and config.delivery is not None
    assert config.delivery.broker_url == "mqtt://127.0.0.1:1883"
    assert config.delivery.bureau_key == key.absolute()
    assert config.connections["modbus-1"].port == 502  # type: ignore[union-attr]

    bad = runner.invoke(app, ["init", "--out", str(tmp_path / "x.yaml"), "--yes",
                              "--modbus", "no-port"])
    assert bad.exit_code == 2 and "HOST:PORT" in bad.output
    assert isinstance(bad.exception, SystemExit)  # a message, not a traceback
    zone = runner.invoke(app, ["init", "--out", str(tmp_path / "x.yaml"), "--yes",
                               "--time-zone", "Mars/Base"])
    assert zone.exit_code == 2 and "--time-zone: unknown time zone" in zone.output
    assert not (tmp_path / "x.yaml").exists()


def test_discover_prints_devices_to_paste(sim: Sim) -> None:
    """If `discover` prints (no --write-config), then its output is the `connections:` and
    `devices:` sections: one device per simulator machine, valid once an identity is added."""
    found = _cli("discover", sim.opcua)
    assert found.returncode == 0, found.stderr
    raw = yaml.safe_load(found.stdout)
    assert set(raw) == {"connections", "devices"}
    raw["factory"] = {"enterprise_id": "E", "factory_id": "f", "industry_code": "C3484"}
    config = parse_config(raw)
    ids = {d.id for d in config.devices}
    assert {"CNC-01", "ROB-05", "TST-02"} <= ids and len(ids) == 12
    for device in config.devices:
        assert device.signal(Role.STATE) is not None, device.id
        assert device.signal(Role.IDEAL_CYCLE_TIME_S) is not None, device.id


def _sim_config(sim: Sim) -> dict[str, Any]:
    return export_agent_config(
        load_factory(DEMO), sim.opcua, sim.modbus_host, sim.modbus_port, profile="compressed"
    )


def _write(raw: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _signal(raw: dict[str, Any], device_id: str, signal_id: str) -> dict[str, Any]:
    device = next(d for d in raw["devices"] if d["id"] == device_id)
    return next(s for s in device["signals"] if s["id"] == signal_id)  # type: ignore[no-any-return]


def test_discover_writes_state_maps_right_for_nine_in_ten_devices(sim: Sim, tmp_path: Path
                                                                   ) -> None:
    """If discover writes a config from the simulator's OPC UA server (codes named by their
    EnumStrings where the device publishes them, plain integers elsewhere), then it passes
    check-config unchanged and at least 90 % of the devices get the simulator's own state
    map (issue 16)."""
    written = tmp_path / "found.yaml"
    found = _cli("discover", sim.opcua, "--write-config", str(written), timeout=120)
    assert found.returncode == 0, found.stderr
    checked = _cli("check-config", str(written))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def state_maps(raw: dict[str, Any]) -> dict[str, str | None]:
        return {d["id"]: s.get("state_map") for d in raw["devices"]
                for s in d.get("signals", []) if s["role"] == "state"}

    truth = _sim_config(sim)
    expected = {device: preset for device, preset in state_maps(truth).items()
                if next(d for d in truth["devices"] if d["id"] == device)["connection"]
                == "sim-opcua"}
    guessed = state_maps(yaml.safe_load(written.read_text(encoding="utf-8")))
    right = [device for device, preset in expected.items() if guessed.get(device) == preset]
    print(f"state maps right for {len(right)} of {len(expected)} OPC UA devices")
    assert len(expected) >= 10 and len(right) >= 0.9 * len(expected), (expected, guessed)


def test_probe_reads_every_signal_over_opcua_and_modbus(sim: Sim, tmp_path: Path) -> None:
    """If every mapped signal is right, then probe prints a table per device with values
    and good quality, and exits 0."""
    config = _write(_sim_config(sim), tmp_path / "sim.yaml")
    probed = _cli("probe", "--config", str(config), "--timeout", "10")
    assert probed.returncode == 0, probed.stdout + probed.stderr
    assert "CNC-01 (sim-opcua)" in probed.stdout and "CNC-05 (sim-modbus)" in probed.stdout
    assert "all good" in probed.stdout and "Not connected" in probed.stdout


def test_probe_names_each_problem_and_exits_1(sim: Sim, tmp_path: Path) -> None:
    """If one node id is wrong, one Modbus address does not exist and one state map lacks
    the device's codes, then probe names each cause on its row and exits 1."""
    raw = _sim_config(sim)
    state = _signal(raw, "CNC-01", "state")
    state["opcua"]["node"] = state["opcua"]["node"] + "_typo"
    _signal(raw, "CNC-05", "energy_kwh")["modbus"]["address"] = 9000
    raw["state_maps"] = {"tiny": {99: "running"}}
    _signal(raw, "CNC-02", "state")["state_map"] = "tiny"
    _signal(raw, "CNC-03", "spindle_temp")["valid_range"] = [1000.0, 2000.0]
    probed = _cli("probe", "--config", str(_write(raw, tmp_path / "c.yaml")))
    assert probed.returncode == 1, probed.stdout + probed.stderr
    flat = " ".join(probed.stdout.split())
    assert "bad BadNodeIdUnknown" in flat and "node not found: check opcua.node" in flat
    assert "exception 02" in flat and "illegal address" in flat
    assert "not in state map tiny" in flat
    assert "outside valid_range [1000, 2000]" in flat
    assert "4 problem(s)" in flat and "Traceback" not in probed.stderr


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            return str(answer.read().decode())
    except OSError:
        return ""


def test_run_warns_of_each_misconfiguration_within_an_interval(sim: Sim, tmp_path: Path
                                                                ) -> None:
    """If a node id is wrong, a state map lacks the device's codes and a value lies outside
    its valid_range, then the running agent names device, signal and cause for each in
    /metrics and in one log line each, within a collection interval of its first samples."""
    raw = _sim_config(sim)
    state = _signal(raw, "CNC-01", "state")
    state["opcua"]["node"] = state["opcua"]["node"] + "_typo"
    raw["state_maps"] = {"tiny": {99: "running"}}
    _signal(raw, "CNC-02", "state")["state_map"] = "tiny"
    _signal(raw, "CNC-03", "spindle_temp")["valid_range"] = [1000.0, 2000.0]
    config = _write(raw, tmp_path / "c.yaml")
    interval_s = load_config(config).collection.default_interval_s
    port = free_port()
    log_file = tmp_path / "run.log"
    expected = [
        ('cause="bad_status",device="CNC-01",signal="state"',
         "Device CNC-01 signal state: bad status from the source (BadNodeIdUnknown)"),
        ('cause="unmapped_state",device="CNC-02",signal="state"',
         "Device CNC-02 signal state: state code outside its state map (code"),
        ('cause="out_of_range",device="CNC-03",signal="spindle_temp"',
         "Device CNC-03 signal spindle_temp: value outside the signal's valid_range (value"),
    ]
    with log_file.open("w") as sink:
        agent = subprocess.Popen(
            [*TIERAGENT, "run", "--config", str(config), "--data-dir", str(tmp_path / "data"),
             "--metrics-port", str(port), "--duration", "40"],
            cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, text=True,
        )
    try:
        first_samples = all_seen = None
        deadline = time.monotonic() + 35
        while time.monotonic() < deadline and all_seen is None:
            text = _metrics(port)
            if first_samples is None and 'tieragent_samples_total{device="CNC-03"}' in text:
                first_samples = time.monotonic()
            problems = [line for line in text.splitlines()
                        if line.startswith("tieragent_signal_problems_total{")]
            if all(any(series in line for line in problems) for series, _ in expected):
                all_seen = time.monotonic()
            time.sleep(0.1)
        assert first_samples is not None and all_seen is not None, _metrics(port)
        # Group commit (0.5 s) and the poll above add to the interval.
        assert all_seen - first_samples <= interval_s + 1.5, (all_seen - first_samples)
        print(f"all three problems in /metrics {all_seen - first_samples:.2f} s after the "
              f"first samples (interval {interval_s:g} s)")
    finally:
        agent.terminate()
        agent.wait(timeout=30)
    logged = log_file.read_text()
    for _, line in expected:
        assert logged.count(line) == 1, (line, logged[-3000:])
    assert "Traceback" not in logged
    status = _cli("status", "--data-dir", str(tmp_path / "data"), "--json")
    assert status.returncode == 0, status.stderr
    seen = {(i["device_id"], i["signal_id"], i["cause"])
            for i in json.loads(status.stdout)["store"]["signal_issues"]}
    assert {("CNC-01", "state", "bad_status"), ("CNC-02", "state", "unmapped_state"),
            ("CNC-03", "spindle_temp", "out_of_range")} <= seen


def test_probe_unreachable_connection_is_one_line(tmp_path: Path) -> None:
    """If neither server can be reached, then probe says so once per connection, with the
    reason, no traceback, and exits 1; a configuration that does not load exits 2."""
    raw = export_agent_config(load_factory(DEMO), f"opc.tcp://127.0.0.1:{free_port()}",
                              "127.0.0.1", free_port())
    probed = _cli("probe", "--config", str(_write(raw, tmp_path / "c.yaml")), "--timeout", "3")
    assert probed.returncode == 1 and "Traceback" not in probed.stderr
    flat = " ".join(probed.stdout.split())
    assert "connection sim-opcua: cannot read" in flat and "Cannot reach" in flat
    assert "connection sim-modbus: cannot read" in flat
    (tmp_path / "bad.yaml").write_text("factory: {}\n", encoding="utf-8")
    broken = _cli("probe", "--config", str(tmp_path / "bad.yaml"))
    assert broken.returncode == 2 and "Invalid configuration" in broken.stderr


def test_discover_over_a_secured_endpoint_with_user_and_trust_list(tmp_path: Path) -> None:
    """If the simulator offers only Basic256Sha256 with a user name, then `discover` with
    the client certificate, the trust list and the password from the environment writes a
    config that passes check-config; an untrusted server certificate or security None is
    refused with a sentence, not a traceback."""
    process, banner = _start_sim(tmp_path, "--security", "basic256sha256", "--strict",
                                 "--user", "agent:s3cret")
    try:
        url = banner["OPC UA endpoint"]
        client = generate_certificate(tmp_path / "client", "client", CLIENT_APPLICATION_URI)
        trusted = tmp_path / "client" / "pki" / "trusted"
        trusted.mkdir(parents=True)
        shutil.copy(tmp_path / "server-pki" / "server_cert.der", trusted / "server.der")
        secure = ["--security-policy", "Basic256Sha256", "--mode", "SignAndEncrypt",
                  "--cert", str(client.certificate), "--private-key", str(client.private_key),
                  "--username", "agent", "--password-env", "SIM_PASSWORD"]
        out = tmp_path / "secure.yaml"
        env = {"SIM_PASSWORD": "s3cret"}
        found = _cli("discover", url, *secure, "--write-config", str(out), env=env)
        assert found.returncode == 0, found.stderr
        text = out.read_text(encoding="utf-8")
        assert "policy: Basic256Sha256" in text and "password: {env: SIM_PASSWORD}" in text
        checked = _cli("check-config", str(out), env=env)
        assert checked.returncode == 0, checked.stderr
        assert len(load_config(out).devices) >= 10

        untrusted = [*secure, "--pki-dir", str(tmp_path / "empty-pki")]
        refused = _cli("discover", url, *untrusted, env=env)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert "not trusted" in refused.stderr
        plain = _cli("discover", url)
        assert plain.returncode == 2 and "Traceback" not in plain.stderr
        assert "offers no unsecured endpoint" in plain.stderr
        assert "Basic256Sha256/SignAndEncrypt" in plain.stderr  # what the server offers
        assert "--security-policy" in plain.stderr and plain.stderr.startswith("Error:")
    finally:
        _stop(process)
