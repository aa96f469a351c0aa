"""The running simulator: a live source behind OPC UA and Modbus faces, a fault
controller, its control endpoint, and the ground-truth ledger flushed to disk.

    async with SimulatorServer(source, opcua=OpcUaFaceConfig(), modbus=ModbusFaceConfig(),
                               ledger_dir=Path("ledger")) as sim:
        sim.opcua_endpoint, sim.modbus_address, sim.control_url, sim.faults

Ports 0 pick free loopback ports; the properties report the real ones. The ledger is
rewritten every `ledger_interval_s` and once more on stop, each file atomically, so a
crash loses at most one interval of ledger and never leaves a torn file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from simulator.api import LiveSource
from simulator.control import ControlServer
from simulator.faults import FaultController
from simulator.modbus_face import ModbusFace, ModbusFaceConfig
from simulator.opcua_face import OpcUaFace, OpcUaFaceConfig

_log = logging.getLogger(__name__)


@runtime_checkable
class LedgerSource(Protocol):
    """A live source that can write its ground truth up to a wall time."""

    def write_ledger(self, out_dir: Path, until: float) -> Any: ...


class SimulatorServer:
    """Starts and stops everything together. Not reusable after stop."""

    def __init__(
        self,
        source: LiveSource,
        *,
        opcua: OpcUaFaceConfig | None = OpcUaFaceConfig(),
        modbus: ModbusFaceConfig | None = ModbusFaceConfig(),
        control_port: int | None = 0,  # None = no control endpoint
        ledger_dir: Path | None = None,
        ledger_interval_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self._clock = clock
        self.opcua = OpcUaFace(source, opcua) if opcua is not None else None
        self.modbus = ModbusFace(source, modbus) if modbus is not None else None
        journal = ledger_dir / "faults.jsonl" if ledger_dir is not None else None
        self.faults = FaultController(source, self.opcua, self.modbus, journal=journal)
        self._control = (
            ControlServer(self.faults, port=control_port, status=self.describe)
            if control_port is not None
            else None
        )
        self._ledger_dir = ledger_dir
        self._ledger_interval_s = ledger_interval_s
        self._ledger_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.ledger_writes = 0

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def opcua_endpoint(self) -> str | None:
        return self.opcua.endpoint_url if self.opcua is not None else None

    @property
    def modbus_address(self) -> tuple[str, int] | None:
        return (self.modbus.host, self.modbus.port) if self.modbus is not None else None

    @property
    def control_url(self) -> str | None:
        return self._control.url if self._control is not None else None

    def describe(self) -> dict[str, Any]:
        """Endpoints as JSON-ready data (also served at GET /status)."""
        modbus = self.modbus_address
        return {
            "opcua_endpoint": self.opcua_endpoint,
            "modbus": f"{modbus[0]}:{modbus[1]}" if modbus else None,
            "control_url": self.control_url,
            "ledger_dir": str(self._ledger_dir) if self._ledger_dir else None,
        }

    async def start(self) -> None:
        """Start the faces and the control endpoint; on failure stop what started."""
        if self._ledger_dir is not None and not isinstance(self.source, LedgerSource):
            raise TypeError("a ledger_dir needs a source with write_ledger(out_dir, until)")
        try:
            if self.opcua is not None:
                await self.opcua.start()
            if self.modbus is not None:
                await self.modbus.start()
            if self._control is not None:
                await self._control.start()
        except BaseException:
            await self.stop()
            raise
        if self._ledger_dir is not None:
            self._ledger_dir.mkdir(parents=True, exist_ok=True)
            self._ledger_task = asyncio.create_task(self._flush_ledger_forever(), name="ledger")

    async def stop(self) -> None:
        """Stop everything, then write the ledger one last time. Idempotent."""
        if self._ledger_task is not None:
            # Let a flush in progress finish: two writers would share the temp files.
            self._stopping.set()
            await self._ledger_task
            self._ledger_task = None
            try:
                self.flush_ledger()
            except (OSError, ValueError):
                _log.exception("Writing the final ledger failed.")
        if self._control is not None:
            await self._control.stop()
        for face in (self.modbus, self.opcua):
            if face is not None:
                await face.stop()

    def flush_ledger(self) -> None:
        """Write the ledger up to now into ledger_dir (each file atomically)."""
        if self._ledger_dir is None or not isinstance(self.source, LedgerSource):
            return
        self.source.write_ledger(self._ledger_dir, self._clock())
        self.ledger_writes += 1

    async def _flush_ledger_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._ledger_interval_s)
                return
            try:
                # In a thread: formatting a long ledger must not stall the faces' ticks
                # (the live source is thread-safe).
                await asyncio.to_thread(self.flush_ledger)
            except (OSError, ValueError):
                # A full or read-only disk must not stop the faces; the next flush retries.
                _log.exception("Writing the ledger failed.")
