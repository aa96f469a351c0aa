"""Helpers of the connector tests: a recording sink, a connector run as a task, and a real
pymodbus server (free ports and bounded waits come from tests.support).

Every server in these tests is a real asyncua or pymodbus server on 127.0.0.1. Test
modules import these helpers as `connector_helpers` (pytest puts their folder on sys.path).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from connectors.base import Connector, LinkEvent, LinkState
from connectors.sample import Sample


class Recorder:
    """A sink pair that keeps every sample batch and link event, in arrival order."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.batches: list[list[Sample]] = []
        self.links: list[LinkEvent] = []

    async def sink(self, batch: Sequence[Sample]) -> None:
        self.batches.append(list(batch))
        self.samples.extend(batch)

    def link(self, event: LinkEvent) -> None:
        self.links.append(event)

    def latest(self, signal_id: str) -> Sample | None:
        return next((s for s in reversed(self.samples) if s.signal_id == signal_id), None)

    def of(self, signal_id: str) -> list[Sample]:
        return [s for s in self.samples if s.signal_id == signal_id]

    def states(self) -> list[LinkState]:
        return [event.state for event in self.links]


@contextlib.asynccontextmanager
async def running(connector: Connector, recorder: Recorder) -> AsyncIterator[asyncio.Task[None]]:
    """Run a connector in a task for the duration of the block, then cancel it."""
    task = asyncio.create_task(connector.run(recorder.sink, recorder.link))
    try:
        yield task
    finally:
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=10)
        if not done:
            stack = "".join(
                f"\n  {frame.f_code.co_filename}:{frame.f_lineno}" for frame in task.get_stack()
            )
            pytest.fail(
                f"the connector did not stop within 10 s of being cancelled; stuck at:{stack}"
            )
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


# --- a real pymodbus server ------------------------------------------------------------


def _runs(values: dict[int, Any]) -> list[tuple[int, list[Any]]]:
    """Contiguous runs of addresses; the addresses between runs stay invalid on the server."""
    runs: list[tuple[int, list[Any]]] = []
    for address in sorted(values):
        if runs and runs[-1][0] + len(runs[-1][1]) == address:
            runs[-1][1].append(values[address])
        else:
            runs.append((address, [values[address]]))
    return runs


class ModbusTestServer:
    """A pymodbus 3.16 TCP server for one unit on a fixed loopback port, restartable.

    Registers not given are invalid: reading them gets exception response 2. Every request
    the server receives is recorded as (function code, address, count).
    """

    def __init__(
        self,
        port: int,
        *,
        holding: dict[int, int] | None = None,
        input_registers: dict[int, int] | None = None,
        coils: dict[int, bool] | None = None,
        discrete_inputs: dict[int, bool] | None = None,
        unit: int = 1,
    ) -> None:
        self.port = port
        self.unit = unit
        self.holding = dict(holding or {0: 0})
        self.input_registers = dict(input_registers or {0: 0})
        self.coils = dict(coils or {0: False})
        self.discrete_inputs = dict(discrete_inputs or {0: False})
        self.requests: list[tuple[int, int, int]] = []
        self._server: ModbusTcpServer | None = None
        self._task: asyncio.Task[None] | None = None

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests.append((pdu.function_code, pdu.address, pdu.count))
        return pdu

    def _device(self) -> SimDevice:
        def registers(values: dict[int, int]) -> list[SimData]:
            return [
                SimData(start, values=run, datatype=DataType.REGISTERS)
                for start, run in _runs(values)
            ]

        def bits(values: dict[int, bool]) -> list[SimData]:
            return [
                SimData(start, values=run, datatype=DataType.BITS) for start, run in _runs(values)
            ]

        return SimDevice(
            id=self.unit,
            simdata=(
                bits(self.coils),
                bits(self.discrete_inputs),
                registers(self.holding),
                registers(self.input_registers),
            ),
        )

    async def start(self) -> None:
        self._server = ModbusTcpServer(
            self._device(), address=("127.0.0.1", self.port), trace_pdu=self._trace
        )
        self._task = asyncio.create_task(self._server.serve_forever())
        deadline = time.monotonic() + 5
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)
                continue
            writer.close()
            return

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._server = None
        self._task = None

    async def __aenter__(self) -> ModbusTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
