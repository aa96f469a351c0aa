"""Helpers of the agent tests (and of ingest_worker.py): small configs and sample builders."""

from __future__ import annotations

from typing import Any

from agent.config import FactoryConfig, parse_config
from connectors.sample import Quality, Sample, TimestampOrigin

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def modbus_config(
    interval_s: float = 1.0, counter_bits: int = 32,
    temp_range: tuple[float, float] | None = None, **collection: Any
) -> FactoryConfig:
    """One Modbus device M1 (plain state map, counters, energy, auto) and one unconnected;
    `temp_range`: the process signal temp's valid_range."""
    def reg(address: int, kind: str = "uint16") -> dict[str, Any]:
        return {"table": "holding", "address": address, "type": kind}

    raw = {
        "schema": "tieragent/config/v1",
        "factory": {"enterprise_id": "E1", "factory_id": "f-1", "industry_code": "C3484",
                    "time_zone": "Asia/Shanghai"},
        "collection": {"default_interval_s": interval_s, "counter_bits": counter_bits,
                       **collection},
        "connections": {"plc": {"protocol": "modbus", "host": "127.0.0.1", "port": 5020}},
        "devices": [
            {"id": "M1", "line": "L1", "process_step": "mill", "kind": "cnc", "digital": True,
             "key_process": True, "connection": "plc", "unit_id": 1, "ideal_cycle_time_s": 10,
             "signals": [
                 {"id": "state", "role": "state", "state_map": "plain", "modbus": reg(0)},
                 {"id": "good", "role": "good_count", "modbus": reg(1, "uint32")},
                 {"id": "reject", "role": "reject_count", "modbus": reg(3, "uint32")},
                 {"id": "energy", "role": "energy_kwh", "modbus": reg(5, "float32")},
                 {"id": "auto", "role": "auto_mode", "modbus": reg(7)},
                 {"id": "temp", "role": "process", "required": False, "modbus": reg(8),
                  **({"valid_range": list(temp_range)} if temp_range else {})},
             ]},
            {"id": "MAN-1", "line": "L1", "process_step": "deburr", "kind": "manual",
             "digital": False},
        ],
    }
    return parse_config(raw)


def opcua_config(interval_s: float = 1.0) -> FactoryConfig:
    """One OPC UA device U1 in subscribe mode (state + good count)."""
    raw = {
        "schema": "tieragent/config/v1",
        "factory": {"enterprise_id": "E1", "factory_id": "f-1", "industry_code": "C3484"},
        "collection": {"default_interval_s": interval_s},
        "connections": {"ua": {"protocol": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840"}},
        "devices": [
            {"id": "U1", "line": "L1", "process_step": "mill", "kind": "cnc", "digital": True,
             "connection": "ua", "signals": [
                 {"id": "state", "role": "state", "state_map": "plain",
                  "opcua": {"node": "ns=2;s=U1/State"}},
                 {"id": "good", "role": "good_count", "opcua": {"node": "ns=2;s=U1/Good"}},
             ]},
        ],
    }
    return parse_config(raw)


def sample(signal: str, ts: float, value: Any, *, device: str = "M1", quality: str = "good",
           status: int = 0, latency: float = 0.1) -> Sample:
    return Sample(device_id=device, signal_id=signal, value=value, quality=Quality(quality),
                  source_ts=ts, received_ts=ts + latency, status=status,
                  ts_origin=TimestampOrigin.SOURCE)


def cli(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "tieragent", *args]
