"""Modbus coalescing against the simulator's Modbus face, counted on the server side: the
fewest requests by default, splits where a device refuses a bridged gap (exception 02), and
those splits carried into a restarted connector."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from connector_helpers import ModbusTestServer, Recorder, running

from connectors.base import SignalBinding
from connectors.config import ModbusAddress, ModbusConnection, ModbusTable, ModbusType
from connectors.modbus import ModbusConnector
from connectors.modbus_codec import Hole
from connectors.sample import Quality, Sample
from simulator.api import ModbusSpec, SignalSpec, SignalValue
from simulator.modbus_face import ModbusFace, ModbusFaceConfig
from tests.support.ports import free_port
from tests.support.waiting import wait_until_async

INTERVAL = 0.25
H = ModbusTable.HOLDING

# (unit, table, type, addresses): every neighbour is 9 unused addresses further on.
GAPPED_MAP: list[tuple[int, str, str, list[int]]] = [
    (1, "holding", "uint16", [10 * i for i in range(30)]),
    (1, "input", "uint32", [11 * i for i in range(5)]),
    (1, "coil", "bool", [10 * i for i in range(10)]),
    (2, "discrete_input", "bool", [10 * i for i in range(4)]),
    (2, "holding", "float32", [0, 11]),
]
# The fewest requests one poll can make: one per (unit, table), except unit 1's holding
# registers, where one read of at most 125 registers holds at most 13 of the 30 values
# (13 values 10 apart span 121 registers, 14 span 131): 3 reads. 3 + 1 + 1 + 1 + 1.
MINIMUM = 7
# With `max_gap: 8` (the former default) no 9-register gap is bridged: one read per value.
ONE_PER_VALUE = 30 + 5 + 10 + 4 + 2


class GappedSource:
    """A LiveSource serving GAPPED_MAP with fixed values (each derived from its address)."""

    def __init__(self) -> None:
        self.specs: list[SignalSpec] = []
        self.values: dict[tuple[str, str], SignalValue] = {}
        for unit, table, kind, addresses in GAPPED_MAP:
            device = f"DEV-{unit}"
            for address in addresses:
                signal = f"{table}-{address}"
                value_type = {"bool": "bool", "float32": "float"}.get(kind, "int")
                self.specs.append(SignalSpec(
                    device, "L1", signal, "process", value_type,  # type: ignore[arg-type]
                    "modbus", modbus=ModbusSpec(table, address, kind),  # type: ignore[arg-type]
                    unit_id=unit,
                ))
                value: bool | int | float = {
                    "bool": address % 20 == 0, "float32": address + 0.5,
                }.get(kind, 1000 + address)
                self.values[(device, signal)] = SignalValue(value, time.time())

    def signal_specs(self) -> list[SignalSpec]:
        return list(self.specs)

    def values_at(self, t: float) -> dict[tuple[str, str], SignalValue]:
        return dict(self.values)


def _bindings(source: GappedSource) -> list[SignalBinding]:
    out = []
    for spec in source.specs:
        assert spec.modbus is not None
        address = ModbusAddress(
            table=ModbusTable(spec.modbus.table),
            address=spec.modbus.address,
            type=ModbusType(spec.modbus.type),
        )
        out.append(SignalBinding(spec.device_id, spec.signal_id, INTERVAL, modbus=address,
                                 unit_id=spec.unit_id))
    return out


def _conn(port: int, **overrides: Any) -> ModbusConnection:
    settings: dict[str, Any] = {"host": "127.0.0.1", "port": port, "timeout_s": 1.0,
                                "reconnect_min_s": 0.05, "reconnect_max_s": 0.3}
    settings.update(overrides)
    return ModbusConnection(**settings)


class PollCounter(Recorder):
    """Records batches and, at each one, the face's request and exception totals so far
    (a batch is handed over once its poll's replies are all in)."""

    def __init__(self, face: ModbusFace) -> None:
        super().__init__()
        self.face = face
        self.marks: list[tuple[int, int]] = []

    async def sink(self, batch: Sequence[Sample]) -> None:
        await super().sink(batch)
        store = self.face.store
        self.marks.append((sum(store.request_counts.values()),
                           sum(store.exception_counts.values())))

    def per_poll(self) -> list[tuple[int, int]]:
        """(requests, exception replies) the server saw for each poll."""
        out, before = [], (0, 0)
        for mark in self.marks:
            out.append((mark[0] - before[0], mark[1] - before[1]))
            before = mark
        return out


def _assert_exact(batch: Sequence[Sample], source: GappedSource) -> None:
    assert len(batch) == len(source.values)
    for sample in batch:
        assert sample.quality == Quality.GOOD, sample
        expected = source.values[(sample.device_id, sample.signal_id)].value
        assert sample.value == expected, sample


async def _polls(face: ModbusFace, connector: ModbusConnector, count: int) -> PollCounter:
    counter = PollCounter(face)
    async with running(connector, counter):
        await wait_until_async(lambda: len(counter.batches) >= count, 10)
    return counter


async def test_default_bridges_nine_register_gaps_to_the_fewest_requests() -> None:
    """If a map's values sit 9 unused addresses apart, then by default every poll reaches the
    server as the fewest requests the block limits allow (7, not 51 as with max_gap 8), and
    every value decodes exactly."""
    source = GappedSource()
    async with ModbusFace(source, ModbusFaceConfig(tick_s=0.05)) as face:
        connector = ModbusConnector("plc", _conn(face.port), _bindings(source))
        assert len(connector.plan(INTERVAL)) == MINIMUM
        counter = await _polls(face, connector, 3)
        explicit = ModbusConnector("plc", _conn(face.port, max_gap=8), _bindings(source))
        face.store.request_counts.clear()
        before = await _polls(face, explicit, 2)
    assert counter.per_poll()[:3] == [(MINIMUM, 0)] * 3
    for batch in counter.batches[:3]:
        _assert_exact(batch, source)
    # `max_gap` set explicitly still caps the bridged stretch.
    assert before.per_poll()[:2] == [(ONE_PER_VALUE, 0)] * 2
    _assert_exact(before.batches[0], source)


async def test_refused_gap_is_split_and_the_split_survives_a_restart() -> None:
    """If the device answers exception 02 for an address inside a bridged gap, then the first
    poll still yields every value exactly, reads are split at that gap from the next poll on
    (no more exceptions), the split is reported through `on_split`, and a connector started
    with the reported splits polls split from its first poll, without exception 02."""
    source = GappedSource()
    reported: list[tuple[Hole, ...]] = []
    async with ModbusFace(source, ModbusFaceConfig(tick_s=0.05)) as face:
        face.set_exception(1, "holding", 55, 2)  # between the values at 50 and 60
        first = ModbusConnector("plc", _conn(face.port), _bindings(source),
                                on_split=reported.append)
        counter = await _polls(face, first, 3)
        split_plan = first.plan(INTERVAL)

        face.store.request_counts.clear()
        face.store.exception_counts.clear()
        restarted = ModbusConnector("plc", _conn(face.port), _bindings(source),
                                    learned_splits=reported[-1], on_split=reported.append)
        assert restarted.plan(INTERVAL) == split_plan
        again = await _polls(face, restarted, 2)
        assert face.exception_count(1, 2) == 0
    # First poll: the 3 holding blocks and 4 other reads, and the failing block bisected.
    assert counter.per_poll()[0] == (MINIMUM + 2, 1)
    # Split at 51..60, unit 1's holding registers still fit in 3 reads: 0-50, 60-180, 190-290.
    assert counter.per_poll()[1:3] == [(MINIMUM, 0)] * 2
    assert [(b.start, b.count) for b in split_plan if (b.unit, b.table) == (1, H)] == [
        (0, 51), (60, 121), (190, 101)]
    for batch in counter.batches[:3]:
        _assert_exact(batch, source)
    assert reported == [(Hole(1, H, 51, 60),)]  # reported once; the restart learned nothing
    assert again.per_poll()[:2] == [(MINIMUM, 0)] * 2
    _assert_exact(again.batches[0], source)


async def test_refusing_signal_is_remembered_until_it_reads_again() -> None:
    """If one value's own address answers exception 02, then it is read alone and reported as
    a split; a connector started with that split reads it alone from the first poll (one
    exception, no bisection); once the address reads again the split is withdrawn."""
    source = GappedSource()
    reported: list[tuple[Hole, ...]] = []
    async with ModbusFace(source, ModbusFaceConfig(tick_s=0.05)) as face:
        face.set_signal_exception("DEV-1", "holding-70", 2)
        first = ModbusConnector("plc", _conn(face.port), _bindings(source),
                                on_split=reported.append)
        await _polls(face, first, 2)
        assert reported == [(Hole(1, H, 70, 71),)]

        face.store.request_counts.clear()
        face.store.exception_counts.clear()
        restarted = ModbusConnector("plc", _conn(face.port), _bindings(source),
                                    learned_splits=reported[-1], on_split=reported.append)
        counter = PollCounter(face)
        async with running(restarted, counter):
            await wait_until_async(lambda: len(counter.batches) >= 1, 10)
            face.clear_faults()
            await wait_until_async(lambda: reported[-1] == (), 10)
    first_poll = counter.batches[0]
    bad = [s for s in first_poll if s.quality != Quality.GOOD]
    assert [(s.signal_id, s.status) for s in bad] == [("holding-70", 2)]
    # Read alone: two holding reads around it become three, plus the value's own read.
    assert counter.per_poll()[0] == (MINIMUM + 1, 1)
    assert len(restarted.plan(INTERVAL)) == MINIMUM  # coalesced again once it reads


async def test_device_refusing_every_gap_converges_to_one_read_per_run() -> None:
    """If a device answers exception 02 for every unused address (a real PLC's sparse map),
    then the first poll still yields every value, and from the second poll on each
    contiguous run is one read with no exception reply."""
    holding = {0: 10, 1: 11, 20: 30, 21: 31, 40: 50, 41: 51}
    bindings = [SignalBinding("PLC-1", f"r{a}", INTERVAL, modbus=ModbusAddress(table=H, address=a),
                              unit_id=1) for a in holding]
    port = free_port()
    connector = ModbusConnector("plc", _conn(port), bindings)
    assert len(connector.plan(INTERVAL)) == 1
    recorder = Recorder()
    async with ModbusTestServer(port, holding=holding) as server, running(connector, recorder):
        await wait_until_async(lambda: len(recorder.batches) >= 3, 10)
    requests = server.requests
    for batch in recorder.batches[:3]:
        assert {s.signal_id: s.value for s in batch} == {f"r{a}": v for a, v in holding.items()}
        assert all(s.quality == Quality.GOOD for s in batch)
    assert [(b.start, b.count) for b in connector.plan(INTERVAL)] == [(0, 2), (20, 2), (40, 2)]
    # First poll: the block, its halves 0-20 and 21-41, then 0 | 1-20, 1 | 20, 21 | 40-41;
    # 4 of these 9 fail.
    assert len(requests) >= 15 and requests[0] == (3, 0, 42)
    assert requests[9:15] == [(3, 0, 2), (3, 20, 2), (3, 40, 2)] * 2
    assert connector.stats.exception_replies == 4
