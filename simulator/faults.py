"""Fault injection: one controller for every fault the reliability tests need.

Tests call the methods in-process; `tieragent sim fault ...` sends the same faults as
JSON commands (`FaultController.apply`) through the control endpoint. Value-level faults
(freeze, counter reset) belong to the model and are delegated to it; protocol-level
faults (stopped face, bad status, exception responses, dropped connections, skewed
timestamps, silent subscriptions) are applied by the faces.

Every applied fault is appended to an optional JSON-lines journal with its wall time,
so tests can compare what a collector saw with when the fault really happened.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from asyncua import ua

from simulator.api import LiveSource
from simulator.modbus_face import ModbusFace
from simulator.opcua_face import OpcUaFace

FaceName = Literal["opcua", "modbus"]
FACES: tuple[FaceName, ...] = ("opcua", "modbus")


class FaultError(Exception):
    """A fault that cannot be applied; str() is one user-facing sentence."""


@runtime_checkable
class ValueFaults(Protocol):
    """The model-side faults (implemented by simulator.live.LiveFactory)."""

    def freeze(self, device_id: str, frozen: bool = True) -> None: ...

    def reset_counters(self, device_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class FaultEvent:
    at: float  # epoch seconds
    action: str
    params: dict[str, Any] = field(default_factory=dict)


def parse_status(status: int | str | None) -> int | None:
    """An OPC UA StatusCode from a name (`BadSensorFailure`), an int or a hex string.

    None, 0 and "Good" mean good. Raises FaultError for an unknown name.
    """
    if status is None or status == 0 or status == "Good":
        return None
    if isinstance(status, int):
        return status
    text = status.strip()
    if text.lower().startswith("0x"):
        try:
            return int(text, 16) or None
        except ValueError:
            raise FaultError(f"{status!r} is not a hexadecimal status code") from None
    code = getattr(ua.StatusCodes, text, None)
    if not isinstance(code, int):
        raise FaultError(f"unknown OPC UA status {status!r}; use a name like BadSensorFailure")
    return code or None


class FaultController:
    """Applies faults to a running simulator. Methods raise FaultError on bad input."""

    def __init__(
        self,
        source: LiveSource,
        opcua: OpcUaFace | None = None,
        modbus: ModbusFace | None = None,
        journal: Path | None = None,
    ) -> None:
        self._source = source
        self._opcua = opcua
        self._modbus = modbus
        self._journal = journal
        self._frozen: set[str] = set()
        self._suspended = False
        self.events: list[FaultEvent] = []
        self._devices = {spec.device_id for spec in source.signal_specs()}

    # --- faces ---------------------------------------------------------------------

    def _face(self, face: str) -> OpcUaFace | ModbusFace:
        chosen = {"opcua": self._opcua, "modbus": self._modbus}.get(face)
        if chosen is None:
            raise FaultError(f"no {face!r} face is running here; choose from {self._faces()}")
        return chosen

    def _faces(self) -> list[str]:
        return [name for name, face in (("opcua", self._opcua), ("modbus", self._modbus)) if face]

    async def stop_face(self, face: FaceName) -> None:
        """Close the face's listener and every connection (clients see refused)."""
        await self._face(face).stop()
        self._record("stop", face=face)

    async def start_face(self, face: FaceName) -> None:
        """Listen again on the same port."""
        await self._face(face).start()
        self._record("start", face=face)

    async def restart_face(self, face: FaceName, down_s: float = 0.0, fast: bool = False) -> None:
        """Stop, stay down `down_s` seconds, start on the same port (sessions are lost).

        `fast` (OPC UA only) restarts the network side and keeps the address space: the
        face accepts connections again within milliseconds of `down_s` instead of after a
        rebuild of seconds (`OpcUaFace.restart`). The journal's "start" is the moment it
        accepts connections again.
        """
        if down_s < 0:
            raise FaultError("down_s cannot be negative")
        target = self._face(face)
        if fast and isinstance(target, OpcUaFace) and target.running:
            self._record("stop", face=face, fast=True)
            await target.restart(down_s, fast=True)
            self._record("start", face=face, fast=True)
            return
        await target.stop()
        self._record("stop", face=face)
        if down_s:
            await asyncio.sleep(down_s)
        await target.start()
        self._record("start", face=face)

    def drop_connections(self, face: FaceName | None = None) -> int:
        """Abort client connections of one face (or all); listeners stay. Returns count."""
        names = [face] if face else self._faces()
        dropped = sum(self._face(name).drop_connections() for name in names)
        self._record("drop_connections", face=face or "all", dropped=dropped)
        return dropped

    # --- values (delegated to the model) ---------------------------------------------

    def _value_faults(self) -> ValueFaults:
        if not isinstance(self._source, ValueFaults):
            raise FaultError("this live source cannot freeze values or reset counters")
        return self._source

    def _check_device(self, device_id: str) -> None:
        if device_id not in self._devices:
            raise FaultError(f"unknown device {device_id!r}; known: {sorted(self._devices)}")

    def freeze(self, device_id: str, frozen: bool = True) -> None:
        """Hold every value of a device where it is (a hung PLC), or release it."""
        self._check_device(device_id)
        self._value_faults().freeze(device_id, frozen)
        (self._frozen.add if frozen else self._frozen.discard)(device_id)
        self._record("freeze", device=device_id, on=frozen)

    def reset_counters(self, device_id: str) -> None:
        """Reset a device's counters to 0 (a PLC restart); the ledger keeps the truth."""
        self._check_device(device_id)
        self._value_faults().reset_counters(device_id)
        self._record("reset_counters", device=device_id)

    # --- protocol-level faults ---------------------------------------------------------

    def set_opcua_status(self, device_id: str, signal_id: str, status: int | str | None) -> None:
        """Serve a status code (e.g. BadSensorFailure, UncertainLastUsableValue) for one
        OPC UA signal; None or "Good" clears it."""
        code = parse_status(status)
        face = self._face("opcua")
        assert isinstance(face, OpcUaFace)
        try:
            face.set_status(device_id, signal_id, code)
        except KeyError as exc:
            raise FaultError(str(exc.args[0])) from None
        self._record("opcua_status", device=device_id, signal=signal_id, status=code)

    def set_modbus_exception(self, device_id: str, signal_id: str, code: int | None) -> None:
        """Answer reads of one Modbus signal with exception `code` (2, 6, ...); None clears."""
        face = self._face("modbus")
        assert isinstance(face, ModbusFace)
        try:
            face.set_signal_exception(device_id, signal_id, code)
        except KeyError as exc:
            raise FaultError(str(exc.args[0])) from None
        except ValueError:
            raise FaultError(f"{code!r} is not a Modbus exception code") from None
        self._record("modbus_exception", device=device_id, signal=signal_id, code=code)

    def set_modbus_exception_at(
        self, unit_id: int, table: str, address: int, code: int | None
    ) -> None:
        """Answer reads touching one (unit, table, address) with exception `code`."""
        face = self._face("modbus")
        assert isinstance(face, ModbusFace)
        try:
            face.set_exception(unit_id, table, address, code)
        except ValueError as exc:
            raise FaultError(str(exc)) from None
        self._record("modbus_exception", unit=unit_id, table=table, address=address, code=code)

    def skew_timestamps(self, seconds: float, device_id: str | None = None) -> None:
        """Shift OPC UA SourceTimestamps by ±seconds (docs/reliability.md C3); 0 clears."""
        if device_id is not None:
            self._check_device(device_id)
        face = self._face("opcua")
        assert isinstance(face, OpcUaFace)
        face.set_timestamp_skew(seconds, device_id)
        self._record("skew", seconds=seconds, device=device_id)

    async def suspend_notifications(self, suspended: bool = True) -> None:
        """Keep OPC UA sessions but send no notifications or keep-alives (docs/reliability.md
        F3)."""
        face = self._face("opcua")
        assert isinstance(face, OpcUaFace)
        await face.suspend_notifications(suspended)
        self._suspended = suspended
        self._record("suspend_notifications", on=suspended)

    async def clear(self) -> None:
        """Undo every fault that has an undo (faces stopped stay stopped)."""
        for device_id in list(self._frozen):
            self._value_faults().freeze(device_id, False)
        self._frozen.clear()
        if self._opcua is not None:
            self._opcua.clear_faults()
            await self._opcua.suspend_notifications(False)
        self._suspended = False
        if self._modbus is not None:
            self._modbus.clear_faults()
        self._record("clear")

    def state(self) -> dict[str, Any]:
        """The faults in force, as JSON-ready data."""
        return {
            "faces": {
                name: {"running": face.running, "port": face.port}
                for name, face in (("opcua", self._opcua), ("modbus", self._modbus))
                if face is not None
            },
            "frozen": sorted(self._frozen),
            "notifications_suspended": self._suspended,
            "events": len(self.events),
        }

    # --- JSON commands -------------------------------------------------------------------

    async def apply(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Run one JSON command, e.g. {"action": "freeze", "device": "CNC-01"}.

        Actions: stop, start, restart (face, down_s, fast), freeze (device, on), reset_counters
        (device), opcua_status (device, signal, status), modbus_exception (device+signal
        or unit+table+address, code), drop_connections (face), skew (seconds, device),
        suspend_notifications (on), clear, status. Raises FaultError on a bad command.
        """
        action = command.get("action")
        handler = self._handlers().get(str(action))
        if handler is None:
            raise FaultError(f"unknown action {action!r}; choose from {sorted(self._handlers())}")
        try:
            result = handler(command)
            if hasattr(result, "__await__"):
                result = await result
        except (KeyError, TypeError, ValueError) as exc:
            raise FaultError(f"bad {action} command: {exc}") from None
        reply: dict[str, Any] = {"ok": True, "action": action}
        if isinstance(result, dict):
            reply.update(result)
        return reply

    def _handlers(self) -> dict[str, Callable[[Mapping[str, Any]], Any]]:
        def face_of(c: Mapping[str, Any]) -> FaceName:
            face = c["face"]
            if face not in FACES:
                raise ValueError(f"face must be one of {FACES}, not {face!r}")
            return face

        async def drop(c: Mapping[str, Any]) -> dict[str, Any]:
            face = c.get("face", "all")
            return {"dropped": self.drop_connections(None if face == "all" else face_of(c))}

        async def modbus_exception(c: Mapping[str, Any]) -> None:
            code = None if c.get("code") is None else int(c["code"])
            if "unit" in c:
                self.set_modbus_exception_at(
                    int(c["unit"]), str(c["table"]), int(c["address"]), code
                )
            else:
                self.set_modbus_exception(str(c["device"]), str(c["signal"]), code)

        return {
            "stop": lambda c: self.stop_face(face_of(c)),
            "start": lambda c: self.start_face(face_of(c)),
            "restart": lambda c: self.restart_face(
                face_of(c), float(c.get("down_s", 0.0)), bool(c.get("fast", False))
            ),
            "freeze": lambda c: self.freeze(str(c["device"]), bool(c.get("on", True))),
            "reset_counters": lambda c: self.reset_counters(str(c["device"])),
            "opcua_status": lambda c: self.set_opcua_status(
                str(c["device"]), str(c["signal"]), c.get("status")
            ),
            "modbus_exception": modbus_exception,
            "drop_connections": drop,
            "skew": lambda c: self.skew_timestamps(float(c["seconds"]), c.get("device")),
            "suspend_notifications": lambda c: self.suspend_notifications(bool(c.get("on", True))),
            "clear": lambda c: self.clear(),
            "status": lambda c: self.state(),
        }

    def _record(self, action: str, **params: Any) -> None:
        event = FaultEvent(time.time(), action, params)
        self.events.append(event)
        if self._journal is not None:
            self._journal.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps({"at": event.at, "action": action, **params}, sort_keys=True)
            with self._journal.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
