"""Export the agent configuration that reads the simulated factory.

`export_agent_config` returns a plain dict in the shape of agent.config.FactoryConfig
(schema tieragent/config/v1), built from the simulator's own model only: the simulator
does not import the agent. Non-networked devices appear with connection none, so the
inventory is complete. OPC UA node ids are `ns=2;s=<path>` because the simulator's OPC UA
face registers its namespace (urn:tieragent:simulator) first, at index 2.

Regenerate config/demo-agent.yaml with:
    python -m simulator.agent_config config/factories/demo.yaml config/demo-agent.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from simulator.device_model import COUNT_ROLES, SignalDef, SimDevice
from simulator.model import FactoryError, SimFactory, load_factory

OPCUA_NAMESPACE_URI = "urn:tieragent:simulator"
OPCUA_NAMESPACE_INDEX = 2
OPCUA_CONNECTION = "sim-opcua"
MODBUS_CONNECTION = "sim-modbus"
DEMO_OPCUA_ENDPOINT = "opc.tcp://127.0.0.1:4840"
DEMO_MODBUS_HOST = "127.0.0.1"
DEMO_MODBUS_PORT = 5020
REQUIRED_ROLES = frozenset({"state", "energy_kwh", "auto_mode", *COUNT_ROLES})


def opcua_node_id(path: str) -> str:
    return f"ns={OPCUA_NAMESPACE_INDEX};s={path}"


def _signal(factory: SimFactory, device: SimDevice, signal: SignalDef) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": signal.id,
        "role": signal.role,
        "required": signal.role in REQUIRED_ROLES,
    }
    if signal.unit:
        out["unit"] = signal.unit
    if signal.role == "state":
        out["state_map"] = device.state_preset
    if signal.role in COUNT_ROLES:
        out["counter_bits"] = factory.counter_bits(device, signal)
    if device.face == "opcua":
        out["opcua"] = {"node": opcua_node_id(factory.opcua_path(device, signal))}
    elif signal.modbus is not None:
        m = signal.modbus
        address: dict[str, Any] = {"table": m.table, "address": m.address, "type": m.type}
        # Only non-default encodings are written, so the unusual ones stand out.
        if m.word_order != "big":
            address["word_order"] = m.word_order
        if m.byte_order != "big":
            address["byte_order"] = m.byte_order
        if m.scale != 1.0:
            address["scale"] = m.scale
        if m.offset != 0.0:
            address["offset"] = m.offset
        out["modbus"] = address
    return out


def _device(factory: SimFactory, device: SimDevice, cycle_scale: float) -> dict[str, Any]:
    connection = {"opcua": OPCUA_CONNECTION, "modbus": MODBUS_CONNECTION}.get(device.face, "none")
    out: dict[str, Any] = {
        "id": device.id,
        "name": device.name,
        "line": device.line,
        "process_step": device.process_step,
        "key_process": device.key_process,
        "kind": device.kind,
        "digital": device.digital,
        "connection": connection,
    }
    if device.face == "modbus":
        out["unit_id"] = device.unit_id
    out["ideal_cycle_time_s"] = round(device.ideal_cycle_time_s * cycle_scale, 9)
    if device.networked:
        out["signals"] = [_signal(factory, device, s) for s in factory.signals_of(device)]
    return out


def export_agent_config(
    factory: SimFactory,
    opcua_endpoint: str,
    modbus_host: str,
    modbus_port: int,
    *,
    profile: str = "normal",
) -> dict[str, Any]:
    """A dict that validates as agent.config.FactoryConfig for this factory.

    `profile` scales the declared ideal cycle times the way the simulator runs them.
    """
    identity = factory.identity
    connections: dict[str, Any] = {}
    faces = {d.face for d in factory.devices}
    if "opcua" in faces:
        connections[OPCUA_CONNECTION] = {"protocol": "opcua", "endpoint": opcua_endpoint}
    if "modbus" in faces:
        connections[MODBUS_CONNECTION] = {
            "protocol": "modbus",
            "host": modbus_host,
            "port": modbus_port,
        }
    cycle_scale = factory.profile(profile).cycle_time_scale
    return {
        "schema": "tieragent/config/v1",
        "factory": {
            "enterprise_id": identity.enterprise_id,
            "factory_id": identity.factory_id,
            "name": identity.name,
            "time_zone": identity.time_zone,
            "industry_code": identity.industry_code,
            "industry_type": identity.industry_type,
            "province": identity.province,
        },
        "connections": connections,
        "devices": [_device(factory, d, cycle_scale) for d in factory.devices],
    }


def render_agent_config(factory: SimFactory, source: str, **kwargs: Any) -> str:
    """The export as YAML text with a header naming its source."""
    config = export_agent_config(
        factory,
        kwargs.pop("opcua_endpoint", DEMO_OPCUA_ENDPOINT),
        kwargs.pop("modbus_host", DEMO_MODBUS_HOST),
        kwargs.pop("modbus_port", DEMO_MODBUS_PORT),
        **kwargs,
    )
    header = (
        f"# Generated from {source} by simulator/agent_config.py; do not edit by hand.\n"
        "# Regenerate: python -m simulator.agent_config "
        f"{source} config/demo-agent.yaml\n"
    )
    return header + yaml.safe_dump(
        config, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m simulator.agent_config FACTORY.yaml OUT.yaml", file=sys.stderr)
        return 2
    source, target = argv
    try:
        factory = load_factory(Path(source))
    except FactoryError as exc:
        print(exc, file=sys.stderr)
        return 2
    Path(target).write_text(render_agent_config(factory, source), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
