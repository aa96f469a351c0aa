"""Modbus read splits learned from exception 02, kept across restarts in one JSON file.

The Modbus connector bridges unused addresses to read a device's map in the fewest
requests; a device that refuses a bridged stretch with exception 02 (illegal data address)
teaches it where to split. This file, `modbus-splits.json` in the agent's data directory,
keeps those splits so that a restarted agent starts with them instead of learning them
again with failing requests. The connector knows nothing of it: it gets the splits in and
reports changes through a callback.

Layout, per connection name:

    {"version": 1,
     "connections": {"line2-modbus": {"endpoint": "10.0.0.7:502",
                                      "splits": [{"unit": 1, "table": "holding",
                                                  "start": 40, "end": 48}]}}}

Splits recorded for another endpoint (the connection now points at another device) are
ignored. The file is only an optimisation: a missing or unreadable one means the splits are
learned again, so a problem with it is logged, never raised.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.protocol.keys import write_atomic
from connectors.config import ModbusConnection, ModbusTable
from connectors.modbus_codec import Hole

log = logging.getLogger("tieragent.modbus_splits")

SPLITS_NAME = "modbus-splits.json"
_VERSION = 1


def _endpoint(connection: ModbusConnection) -> str:
    return f"{connection.host}:{connection.port}"


def _hole(item: Any) -> Hole:
    hole = Hole(
        unit=int(item["unit"]),
        table=ModbusTable(item["table"]),
        start=int(item["start"]),
        end=int(item["end"]),
    )
    if not (0 <= hole.start <= hole.end <= 65536 and 0 <= hole.unit <= 255):
        raise ValueError(f"split {item!r} is out of range")
    return hole


def _item(hole: Hole) -> dict[str, Any]:
    return {"unit": hole.unit, "table": hole.table.value, "start": hole.start, "end": hole.end}


class SplitFile:
    """The learned splits of every Modbus connection of one agent, in one file.

    Every change is written at once (atomically: a temporary file renamed over the old
    one), from the event loop; splits are learned rarely, so the writes are few.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connections: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("Learned Modbus splits unreadable; they will be learned again.",
                        extra={"fields": {"file": str(self.path), "error": str(exc)}})
            return {}
        if not isinstance(raw, dict) or raw.get("version") != _VERSION:
            log.warning("Learned Modbus splits in an unknown format; they will be learned again.",
                        extra={"fields": {"file": str(self.path)}})
            return {}
        connections = raw.get("connections")
        return dict(connections) if isinstance(connections, dict) else {}

    def load(self, name: str, connection: ModbusConnection) -> list[Hole]:
        """The splits learned for connection `name` at its current endpoint."""
        entry = self._connections.get(name)
        if not isinstance(entry, dict) or entry.get("endpoint") != _endpoint(connection):
            return []
        holes = []
        for item in entry.get("splits") or []:
            try:
                holes.append(_hole(item))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("A learned Modbus split is malformed; skipped.",
                            extra={"fields": {"file": str(self.path), "connection": name,
                                              "error": str(exc)}})
        return holes

    def recorder(self, name: str, connection: ModbusConnection) -> Callable[[Sequence[Hole]], None]:
        """The `on_split` callback for connection `name`: records its current splits."""

        def record(holes: Sequence[Hole]) -> None:
            self.save(name, connection, holes)

        return record

    def save(self, name: str, connection: ModbusConnection, holes: Sequence[Hole]) -> None:
        """Replace the splits of connection `name` and write the file; logs a failure."""
        self._connections[name] = {"endpoint": _endpoint(connection),
                                   "splits": [_item(hole) for hole in holes]}
        document = {"version": _VERSION, "connections": self._connections}
        data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
        try:
            write_atomic(self.path, data, mode=0o644)
        except OSError as exc:
            log.warning("Learned Modbus splits not saved; they will be learned again after a "
                        "restart.", extra={"fields": {"file": str(self.path), "error": str(exc)}})
            return
        log.info("Learned Modbus splits saved.", extra={"fields": {
            "file": str(self.path), "connection": name, "splits": len(holes)}})
