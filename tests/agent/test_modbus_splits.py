"""Learned Modbus read splits kept in the data directory, and wired into the connectors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from agent_testkit import modbus_config

from agent.modbus_splits import SPLITS_NAME, SplitFile
from agent.runtime import build_connectors
from connectors.config import ModbusConnection, ModbusTable
from connectors.modbus import ModbusConnector
from connectors.modbus_codec import Hole

H = ModbusTable.HOLDING
PLC = ModbusConnection(host="10.0.0.7", port=502)


def test_splits_round_trip_through_the_file(tmp_path: Path) -> None:
    """If splits are saved for two connections, then a new reader of the file gets each
    connection's own splits, and no temporary file is left beside it."""
    path = tmp_path / "data" / SPLITS_NAME
    splits = SplitFile(path)
    splits.save("a", PLC, [Hole(1, H, 51, 60), Hole(2, ModbusTable.COIL, 7, 7)])
    splits.recorder("b", PLC)((Hole(3, ModbusTable.INPUT, 0, 2),))
    again = SplitFile(path)
    assert again.load("a", PLC) == [Hole(1, H, 51, 60), Hole(2, ModbusTable.COIL, 7, 7)]
    assert again.load("b", PLC) == [Hole(3, ModbusTable.INPUT, 0, 2)]
    assert again.load("c", PLC) == []
    assert [p.name for p in path.parent.iterdir()] == [SPLITS_NAME]
    assert json.loads(path.read_text())["version"] == 1


def test_splits_of_another_endpoint_or_a_broken_file_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If the connection now points at another device, or the file is damaged, then no split
    is applied (they are learned again) and a damaged file is logged, never raised."""
    path = tmp_path / SPLITS_NAME
    SplitFile(path).save("a", PLC, [Hole(1, H, 51, 60)])
    assert SplitFile(path).load("a", ModbusConnection(host="10.0.0.8", port=502)) == []
    document = json.loads(path.read_text())
    document["connections"]["a"]["splits"].append({"unit": 1, "table": "nope", "start": 0})
    path.write_text(json.dumps(document))
    with caplog.at_level(logging.WARNING):
        assert SplitFile(path).load("a", PLC) == [Hole(1, H, 51, 60)]
        path.write_text("{not json")
        assert SplitFile(path).load("a", PLC) == []
    assert len(caplog.records) == 2


def test_a_failing_write_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If the data directory cannot be written, then saving logs a warning and polling (the
    caller) goes on."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING):
        SplitFile(blocker / SPLITS_NAME).save("a", PLC, [Hole(1, H, 51, 60)])
    assert "not saved" in caplog.text


def test_build_connectors_applies_and_records_splits(tmp_path: Path) -> None:
    """If the data directory holds a split for a Modbus connection, then the built connector
    plans with it from the start, and splits it learns are written back to the file."""
    config = modbus_config()
    connection = config.connections["plc"]
    assert isinstance(connection, ModbusConnection)
    path = tmp_path / SPLITS_NAME
    plain = build_connectors(config)["plc"]
    assert isinstance(plain, ModbusConnector) and len(plain.plan(1.0)) == 1  # 0..8 in one read
    SplitFile(path).save("plc", connection, [Hole(1, H, 5, 5)])  # a seam between 3-4 and 5-6
    connector = build_connectors(config, splits_file=path)["plc"]
    assert isinstance(connector, ModbusConnector)
    assert [(b.start, b.count) for b in connector.plan(1.0)] == [(0, 5), (5, 4)]
    assert connector._on_split is not None
    connector._on_split((Hole(1, H, 5, 5), Hole(1, H, 7, 7)))
    assert SplitFile(path).load("plc", connection) == [Hole(1, H, 5, 5), Hole(1, H, 7, 7)]
