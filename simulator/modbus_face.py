"""Modbus TCP face: the live source's Modbus signals served by one pymodbus server.

Each device is a unit id with its own four tables (coils, discrete inputs, holding and
input registers), laid out from its `ModbusSpec`s and refreshed every tick. A table is as
long as its highest mapped address, so reading past it gives exception 0x02 like a real
device, while unmapped gaps inside it read as 0 (collectors bridge them).

The face counts requests per (unit id, function code), so a test can prove that a
collector coalesces reads, and the exception responses it sends per (unit id, exception
code), so a test can prove that a collector stopped provoking them. It answers chosen
addresses with a chosen exception code (0x02 illegal address, 0x06 busy, ...). The
simulator is read-only: writes get 0x01.

Register encoding (what a collector must decode): the value becomes
`round((value - offset) / scale)` for integer types (`(value - offset) / scale` for
floats), is packed big-endian, split into 16-bit words most significant first;
`word_order: little` reverses the words and `byte_order: little` swaps the two bytes
inside each word. Integers wider than their type wrap (two's complement), as in a PLC.
Strings are UTF-8, NUL-padded to `length` registers, and follow the same word/byte order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer

from simulator.api import LiveSource, ModbusSpec, ModbusTableName, SignalSpec
from simulator.opcua_face import FaceStats, free_port

_log = logging.getLogger(__name__)

_INT_BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}
_FLOAT_FORMAT = {"float32": ">f", "float64": ">d"}
_READ_TABLE: dict[int, ModbusTableName] = {1: "coil", 2: "discrete_input", 3: "holding", 4: "input"}
BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete_input"})


def register_width(spec: ModbusSpec) -> int:
    """Registers (or bits) a value occupies."""
    if spec.table in BIT_TABLES:
        return 1
    if spec.type == "string":
        if spec.length is None:
            raise ValueError("a string register needs a length")
        return spec.length
    if spec.type == "bool":
        return 1
    bits = _INT_BITS.get(spec.type) or (32 if spec.type == "float32" else 64)
    return bits // 16


def encode_registers(spec: ModbusSpec, value: bool | int | float | str) -> list[int]:
    """The table words (or 0/1 bits) that carry `value` under `spec`. Pure."""
    if spec.table in BIT_TABLES or spec.type == "bool":
        return [1 if value else 0]
    if spec.type == "string":
        size = 2 * register_width(spec)
        raw = str(value).encode("utf-8")[:size].ljust(size, b"\0")
    elif spec.type in _FLOAT_FORMAT:
        raw = struct.pack(_FLOAT_FORMAT[spec.type], (float(value) - spec.offset) / spec.scale)
    else:
        bits = _INT_BITS[spec.type]
        if spec.scale == 1.0 and spec.offset == 0.0 and not isinstance(value, float):
            number = int(value)  # exact for 64-bit counters, no float round trip
        else:
            number = round((float(value) - spec.offset) / spec.scale)
        raw = (number % (1 << bits)).to_bytes(bits // 8, "big")
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if spec.word_order == "little":
        words.reverse()
    if spec.byte_order == "little":
        words = [word[::-1] for word in words]
    return [int.from_bytes(word, "big") for word in words]


class RegisterStore(ModbusServerContext):
    """The server's datastore: per-unit tables, request counters, injected exceptions.

    pymodbus serves any context object whose `async_getValues`/`async_setValues` answer
    values or an `ExcCodes`; subclassing the (deprecated in 4.0) context keeps its type.
    """

    def __init__(self, sizes: Mapping[int, Mapping[str, int]]) -> None:
        # No super().__init__(): it builds pymodbus' own simulator devices, which this
        # store replaces; `old_simulator` routes the server's calls to the methods below.
        self.old_simulator = True
        self.simdevices = []
        self._tables: dict[int, dict[str, list[int]]] = {
            unit: {table: [0] * size for table, size in tables.items()}
            for unit, tables in sizes.items()
        }
        self.request_counts: Counter[tuple[int, int]] = Counter()
        self.exception_counts: Counter[tuple[int, int]] = Counter()
        self.exceptions: dict[tuple[int, str, int], int] = {}

    def device_ids(self) -> list[int]:
        return sorted(self._tables)

    def put(self, unit: int, table: str, address: int, words: Sequence[int]) -> None:
        self._tables[unit][table][address : address + len(words)] = words

    def peek(self, unit: int, table: str, address: int, count: int) -> list[int]:
        return self._tables[unit][table][address : address + count]

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        self.request_counts[(device_id, func_code)] += 1
        tables = self._tables.get(device_id)
        if tables is None:
            raise NoSuchIdException(f"unit id {device_id} is not simulated")
        table = _READ_TABLE.get(func_code)
        if table is None:
            return self._refuse(device_id, ExcCodes.ILLEGAL_FUNCTION)
        for offset in range(count):
            code = self.exceptions.get((device_id, table, address + offset))
            if code is not None:
                return self._refuse(device_id, ExcCodes(code))
        data = tables.get(table, [])
        if address + count > len(data):
            return self._refuse(device_id, ExcCodes.ILLEGAL_ADDRESS)
        window = data[address : address + count]
        if table in BIT_TABLES:
            return [bool(bit) for bit in window]
        return window

    async def async_setValues(
        self,
        device_id: int,
        func_code: int,
        address: int,
        values: Sequence[int] | Sequence[bool],
    ) -> ExcCodes | None:
        self.request_counts[(device_id, func_code)] += 1
        if device_id not in self._tables:
            raise NoSuchIdException(f"unit id {device_id} is not simulated")
        return self._refuse(device_id, ExcCodes.ILLEGAL_FUNCTION)

    def _refuse(self, device_id: int, code: ExcCodes) -> ExcCodes:
        self.exception_counts[(device_id, int(code))] += 1
        return code


@dataclass(frozen=True, slots=True)
class ModbusFaceConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port chosen at the first start and kept across restarts
    tick_s: float = 0.1
    clock: Callable[[], float] = time.time  # the wall clock values are read at

    def problems(self) -> list[str]:
        found = []
        if not (0 < self.tick_s <= 10):
            found.append(f"tick_s must be in (0, 10], not {self.tick_s}")
        if not (0 <= self.port <= 65535):
            found.append(f"port {self.port} is out of range 0..65535")
        return found


def _layout(specs: Iterable[SignalSpec]) -> dict[int, dict[str, int]]:
    sizes: dict[int, dict[str, int]] = {}
    claimed: dict[tuple[int, str, int], str] = {}
    for spec in specs:
        if spec.modbus is None or spec.unit_id is None:
            raise ValueError(
                f"Modbus signal {spec.device_id}/{spec.signal_id} has no register or unit id"
            )
        if not (0 <= spec.unit_id <= 247):
            raise ValueError(f"{spec.device_id}: unit id {spec.unit_id} is out of range 0..247")
        width = register_width(spec.modbus)
        tables = sizes.setdefault(spec.unit_id, {name: 0 for name in _READ_TABLE.values()})
        end = spec.modbus.address + width
        tables[spec.modbus.table] = max(tables[spec.modbus.table], end)
        for address in range(spec.modbus.address, end):
            where = (spec.unit_id, spec.modbus.table, address)
            if where in claimed:
                raise ValueError(
                    f"{spec.device_id}/{spec.signal_id} overlaps {claimed[where]} at unit "
                    f"{spec.unit_id} {spec.modbus.table} {address}"
                )
            claimed[where] = f"{spec.device_id}/{spec.signal_id}"
    return sizes


class ModbusFace:
    """Serves a LiveSource over Modbus TCP. Use `start()`/`stop()` (or `async with`)."""

    def __init__(self, source: LiveSource, config: ModbusFaceConfig) -> None:
        problems = config.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self._source = source
        self._config = config
        self._specs = [spec for spec in source.signal_specs() if spec.face == "modbus"]
        self.store = RegisterStore(_layout(self._specs))
        self._by_signal = {(spec.device_id, spec.signal_id): spec for spec in self._specs}
        self._port = config.port
        self._server: ModbusTcpServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.stats = FaceStats()

    async def __aenter__(self) -> ModbusFace:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def host(self) -> str:
        return self._config.host

    @property
    def port(self) -> int:
        return self._port

    @property
    def specs(self) -> list[SignalSpec]:
        return list(self._specs)

    def spec(self, device_id: str, signal_id: str) -> SignalSpec:
        return self._by_signal[(device_id, signal_id)]

    async def start(self) -> None:
        """Refresh the tables and listen. Raises OSError if the port is taken."""
        if self._server is not None:
            return
        self.refresh()
        attempts = 5 if self._port == 0 else 1
        for attempt in range(attempts):
            if self._config.port == 0 and (self._port == 0 or attempt > 0):
                self._port = free_port(self._config.host)
            server = ModbusTcpServer(self.store, address=(self._config.host, self._port))
            try:
                await server.serve_forever(background=True)
            except RuntimeError as exc:  # pymodbus reports a failed bind this way
                await server.shutdown()
                if attempt == attempts - 1:
                    raise OSError(f"cannot listen on {self._config.host}:{self._port}") from exc
                continue
            self._server = server
            break
        self._task = asyncio.create_task(self._run(), name="modbus-face-update")

    async def stop(self) -> None:
        """Close every connection and the listener. Idempotent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()

    async def restart(self, down_s: float = 0.0) -> None:
        await self.stop()
        if down_s > 0:
            await asyncio.sleep(down_s)
        await self.start()

    # --- fault hooks -----------------------------------------------------------------

    def set_exception(self, unit_id: int, table: str, address: int, code: int | None) -> None:
        """Answer any read touching (unit, table, address) with exception `code`."""
        if table not in BIT_TABLES and table not in ("holding", "input"):
            raise ValueError(f"unknown Modbus table {table!r}")
        if code is None:
            self.store.exceptions.pop((unit_id, table, address), None)
        else:
            self.store.exceptions[(unit_id, table, address)] = int(ExcCodes(code))

    def set_signal_exception(self, device_id: str, signal_id: str, code: int | None) -> None:
        """Answer reads of any register of one signal with `code`; None clears it.

        Raises KeyError for an unknown signal, ValueError for an unknown code.
        """
        key = (device_id, signal_id)
        if key not in self._by_signal:
            raise KeyError(f"no Modbus signal {device_id}/{signal_id}")
        spec = self._by_signal[key]
        assert spec.modbus is not None and spec.unit_id is not None
        for address in range(
            spec.modbus.address, spec.modbus.address + register_width(spec.modbus)
        ):
            self.set_exception(spec.unit_id, spec.modbus.table, address, code)

    def drop_connections(self) -> int:
        """Close every client TCP connection (the listener stays up). Returns how many."""
        if self._server is None:
            return 0
        connections = list(self._server.active_connections.values())
        for connection in connections:
            connection.close()
        return len(connections)

    def clear_faults(self) -> None:
        self.store.exceptions.clear()

    def request_count(self, unit_id: int, function_code: int) -> int:
        return self.store.request_counts[(unit_id, function_code)]

    def exception_count(self, unit_id: int, code: int) -> int:
        """Exception responses with `code` sent for unit `unit_id` (0x0B not included:
        pymodbus answers an unknown unit itself)."""
        return self.store.exception_counts[(unit_id, code)]

    # --- internals -------------------------------------------------------------------

    def refresh(self) -> None:
        """Write the source's current values into the tables."""
        values = self._source.values_at(self._config.clock())
        writes = 0
        for key, spec in self._by_signal.items():
            current = values.get(key)
            if current is None:
                continue
            assert spec.modbus is not None and spec.unit_id is not None
            words = encode_registers(spec.modbus, current.value)
            if (
                self.store.peek(spec.unit_id, spec.modbus.table, spec.modbus.address, len(words))
                != words
            ):
                self.store.put(spec.unit_id, spec.modbus.table, spec.modbus.address, words)
                writes += 1
        self.stats.writes += writes

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self._config.tick_s
        next_at = loop.time()
        while True:
            started = loop.time()
            try:
                self.refresh()
            except Exception:
                # A bad value must not stop the face; it is logged and counted.
                self.stats.tick_errors += 1
                if self.stats.tick_errors <= 3:
                    _log.exception("Modbus face refresh failed.")
            elapsed = loop.time() - started
            self.stats.ticks += 1
            self.stats.max_tick_s = max(self.stats.max_tick_s, elapsed)
            next_at += tick
            delay = next_at - loop.time()
            if delay < 0:
                self.stats.overruns += 1
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)
